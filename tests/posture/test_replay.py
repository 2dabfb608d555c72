"""The posture API over what the real sensor writes: captures replayed by `icsmon replay` into
the embedded store as two enterprises' sites, the registry from deploy/org-example.yaml.
Each enterprise sees its own alerts with their evidence, and the other's answer 404."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from pipeline.store import Store, to_epoch
from posture.app import create_app
from posture.orgfile import load_org_file
from posture.state import PostureState
from tests.support import REPO

# (capture, site, enterprise, sensor): two plants of two enterprises in two cities.
PLANTS = [
    ("pcaps/baseline/attack_plc_stop.pcap", "site-0001-a", "ent-0001", "sensor-0001-a"),
    ("pcaps/modbus/modbus_attack.pcap", "site-0003-a", "ent-0003", "sensor-0003-a"),
]


@pytest.fixture(scope="module")
def replayed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, dict]]:
    yield from _serve(tmp_path_factory, PLANTS)


def _serve(
    tmp_path_factory: pytest.TempPathFactory, plants: list[tuple[str, str, str, str]]
) -> Iterator[tuple[TestClient, dict]]:
    """Replay each plant's capture into one store; serve it with the example registry."""
    if not all((REPO / p[0]).is_file() for p in plants):
        pytest.skip("captures not present under pcaps/")
    tmp = tmp_path_factory.mktemp("replay")
    store_path = tmp / "icsmon.db"
    for capture, site, ent, sensor in plants:
        r = subprocess.run(
            [
                sys.executable,
                "-m",
                "icsmon.cli",
                "replay",
                str(REPO / capture),
                "--site",
                site,
                "--org",
                ent,
                "--observer",
                sensor,
                "--sink",
                "store",
                "--store",
                str(store_path),
                "--format",
                "jsonl",
            ],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert r.returncode == 0, r.stderr[-2000:]
    state = PostureState(tmp / "icsmon.posture.db")
    state.import_org(load_org_file(REPO / "deploy" / "org-example.yaml"))
    store = Store.open(store_path, readonly=True)
    tokens = {ent: state.create_token(ent, "enterprise-operator", ent) for _, _, ent, _ in plants}
    tokens["province"] = state.create_token("soc", "province-analyst", None)
    client = TestClient(create_app(store, state))
    yield client, tokens
    client.close()
    store.close()
    state.close()


def golden_alerts(capture: str) -> list[dict]:
    path = REPO / f"{capture}.alerts.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def test_each_enterprise_sees_its_replayed_alerts_only(replayed) -> None:
    client, tokens = replayed
    ids: dict[str, set[str]] = {}
    for capture, site, ent, _ in PLANTS:
        golden = golden_alerts(capture)
        assert golden, f"{capture} has no alerts to show"
        stamps = [to_epoch(a["@timestamp"]) or 0 for a in golden]
        params = {"since": min(stamps) - 1, "until": max(stamps) + 1, "limit": 500}
        page = client.get(
            "/api/alerts", params=params, headers={"Authorization": f"Bearer {tokens[ent]}"}
        ).json()
        assert page["total"] == len(golden)
        assert {i["rule"]["id"] for i in page["items"]} == {a["rule"]["id"] for a in golden}
        assert {i["labels"]["site"] for i in page["items"]} == {site}
        ids[ent] = {i["event"]["id"] for i in page["items"]}
        summary = client.get(
            "/api/summary",
            params={"since": params["since"], "until": params["until"]},
            headers={"Authorization": f"Bearer {tokens[ent]}"},
        ).json()
        assert summary["alerts"]["total"] == len(golden)
        techniques = {t for a in golden for t in a["threat"]["technique"]["id"]}
        assert {k for k, _ in summary["alerts"]["by_technique"]} <= techniques
        assert summary["sensors"]["total"] == {"ent-0001": 3, "ent-0003": 1}[ent]
    # The other enterprise's alerts do not exist for this one; the province sees both.
    (_, _, ent_a, _), (_, _, ent_b, _) = PLANTS
    for alert_id in ids[ent_b]:
        r = client.get(
            f"/api/alerts/{alert_id}", headers={"Authorization": f"Bearer {tokens[ent_a]}"}
        )
        assert r.status_code == 404
    for alert_id in ids[ent_a] | ids[ent_b]:
        r = client.get(
            f"/api/alerts/{alert_id}", headers={"Authorization": f"Bearer {tokens['province']}"}
        )
        assert r.status_code == 200


def test_replayed_alert_detail_has_the_events_that_fired_it(replayed) -> None:
    client, tokens = replayed
    capture, _, ent, _ = PLANTS[0]
    h = {"Authorization": f"Bearer {tokens[ent]}"}
    stamps = [to_epoch(a["@timestamp"]) or 0 for a in golden_alerts(capture)]
    page = client.get(
        "/api/alerts",
        params={"since": min(stamps) - 1, "until": max(stamps) + 1, "limit": 500},
        headers=h,
    ).json()
    with_events = [
        a for a in page["items"] if a.get("icsmon", {}).get("alert", {}).get("event_ids")
    ]
    assert with_events
    for alert in with_events:
        d = client.get(f"/api/alerts/{alert['event']['id']}", headers=h).json()
        want = set(alert["icsmon"]["alert"]["event_ids"])
        got = {e["event"]["id"] for e in d["evidence"]["events"]}
        assert got == want
        assert all(
            e["network"]["community_id"] == alert["network"]["community_id"]
            for e in d["evidence"]["flow"]["events"]
        )
        assert d["org"]["enterprise_name_zh"] == "济南华信化工有限公司"
        assert d["evidence"]["rule"]["id"] == alert["rule"]["id"]


# A substation: the DNP3 and IEC 104 attack captures at one site of one enterprise
SUBSTATION = [
    ("pcaps/dnp3/dnp3_attack_sweep.pcap", "site-0002-a", "ent-0002", "sensor-0002-a"),
    ("pcaps/iec104/iec104_attack_sweep.pcap", "site-0002-a", "ent-0002", "sensor-0002-a"),
]


@pytest.fixture(scope="module")
def substation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, dict]]:
    yield from _serve(tmp_path_factory, SUBSTATION)


def _alerts_by_protocol(
    client: TestClient, token: str, plants: list[tuple[str, str, str, str]], protocols: tuple
) -> None:
    """Each protocol filter of the alert list returns the golden alerts of its protocol (by
    rule: the ids depend on the site the goldens were made with), and the summary's protocols
    panel counts them."""
    h = {"Authorization": f"Bearer {token}"}
    golden = [a for capture, *_ in plants for a in golden_alerts(capture)]
    stamps = [to_epoch(a["@timestamp"]) or 0 for a in golden]
    window = {"since": min(stamps) - 1, "until": max(stamps) + 1}
    for protocol in protocols:
        want = sorted(a["rule"]["id"] for a in golden if a["network"]["protocol"] == protocol)
        assert want, protocol
        page = client.get(
            "/api/alerts", params={**window, "protocol": protocol, "limit": 500}, headers=h
        ).json()
        assert sorted(i["rule"]["id"] for i in page["items"]) == want
    summary = client.get("/api/summary", params=window, headers=h).json()
    by_protocol = dict(summary["alerts"]["by_protocol"])
    assert by_protocol == {p: sum(a["network"]["protocol"] == p for a in golden) for p in protocols}


def test_telecontrol_alerts_by_protocol(substation) -> None:
    """The protocol filter and the protocols panel know DNP3 and IEC 104."""
    client, tokens = substation
    _alerts_by_protocol(client, tokens["ent-0002"], SUBSTATION, ("dnp3", "iec104"))


# A Rockwell line: the EtherNet/IP tag and dangerous-service captures at one site
ASSEMBLY_LINE = [
    ("pcaps/enip/enip_tags.pcap", "site-0003-a", "ent-0003", "sensor-0003-a"),
    ("pcaps/enip/enip_dangerous.pcap", "site-0003-a", "ent-0003", "sensor-0003-a"),
]


@pytest.fixture(scope="module")
def assembly_line(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, dict]]:
    yield from _serve(tmp_path_factory, ASSEMBLY_LINE)


def test_enip_alerts_by_protocol(assembly_line) -> None:
    """The protocol filter and the protocols panel know EtherNet/IP (mode change, Identity
    reset, firmware and program transfer, writes from unlisted clients)."""
    client, tokens = assembly_line
    _alerts_by_protocol(client, tokens["ent-0003"], ASSEMBLY_LINE, ("enip",))
