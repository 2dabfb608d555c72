"""The registry file, the posture command line and the score's documented properties."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from posture.orgfile import OrgFileError, load_org_file, parse_org
from posture.scoring import ALERT_MAX, HEALTH_MAX, RISK_MAX, Pressure, score
from posture.state import PostureState
from tests.support import REPO

EXAMPLE = REPO / "deploy" / "org-example.yaml"


def icsmon(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "icsmon.cli", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )


def test_example_registry_loads() -> None:
    org = load_org_file(EXAMPLE)
    assert org.province_name_zh == "山东"
    sites = {s.id: s for c in org.cities for e in c.enterprises for s in e.sites}
    assert sites["site-0001-a"].criticality == 5  # inherited from its enterprise
    assert sites["site-0001-b"].criticality == 4
    assert sites["site-0001-b"].sensors == ["sensor-0001-b", "sensor-0001-b-2"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda d: d["cities"][0]["enterprises"][0].__setitem__("criticality", 9),
            "cities[0].enterprises[0]: criticality must be an integer from 1 to 5",
        ),
        (
            lambda d: d["cities"][1]["enterprises"][0]["sites"][0].__setitem__("id", "site-0001-a"),
            "cities[1].enterprises[0].sites[0]: duplicate id 'site-0001-a'",
        ),
        (
            lambda d: d["cities"][1]["enterprises"][0]["sites"][0].__setitem__(
                "sensors", ["sensor-0001-a"]
            ),
            "sensor 'sensor-0001-a' is already used",
        ),
        (lambda d: d["cities"][0].pop("name"), "cities[0]: missing 'name'"),
        (lambda d: d["cities"][0].__setitem__("id", "bad id!"), "cities[0]: id 'bad id!'"),
        (lambda d: d.__setitem__("cities", {"x": 1}), "'cities' must be a list of mappings"),
    ],
)
def test_bad_registries_name_file_and_entry(tmp_path: Path, change, message: str) -> None:
    data = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    change(data)
    path = tmp_path / "org.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    with pytest.raises(OrgFileError) as err:
        load_org_file(path)
    assert str(err.value).startswith(f"{path}: ") and message in str(err.value)


def test_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(OrgFileError, match="cannot read"):
        load_org_file(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("province: [unclosed\n", encoding="utf-8")
    with pytest.raises(OrgFileError, match=f"{bad}: not valid YAML"):
        load_org_file(bad)


def test_cli_org_import_tokens_and_errors(tmp_path: Path) -> None:
    state = tmp_path / "posture.db"
    r = icsmon("org", "import", str(EXAMPLE), "--state", str(state))
    assert r.returncode == 0, r.stderr
    assert "4 cities, 5 enterprises, 6 sites, 7 sensors" in r.stdout
    r = icsmon("org", "show", "--state", str(state))
    assert "jinan\tJinan 济南\t2 enterprises\t3 sites" in r.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text("province: {id: x, name: X}\ncities: []\n", encoding="utf-8")
    r = icsmon("org", "import", str(bad), "--state", str(state))
    assert r.returncode == 2 and str(bad) in r.stderr and "no cities" in r.stderr
    r = icsmon(
        "posture",
        "token",
        "create",
        "--role",
        "city-analyst",
        "--scope",
        "jinan",
        "--name",
        "li.ming",
        "--state",
        str(state),
    )
    assert r.returncode == 0, r.stderr
    token = r.stdout.strip()
    assert token.startswith("icsm_") and len(token) > 40
    st = PostureState(state)
    try:
        info = st.lookup_token(token)
        assert info is not None and (info.role, info.scope_id) == ("city-analyst", "jinan")
    finally:
        st.close()
    assert token.encode() not in state.read_bytes()
    listed = icsmon("posture", "token", "list", "--state", str(state)).stdout
    assert "li.ming\tcity-analyst\tjinan" in listed and token not in listed
    r = icsmon(
        "posture",
        "token",
        "create",
        "--role",
        "city-analyst",
        "--scope",
        "atlantis",
        "--name",
        "x",
        "--state",
        str(state),
    )
    assert r.returncode == 2 and "city 'atlantis' is not in the registry" in r.stderr


def test_cli_serve_refuses_a_missing_store(tmp_path: Path) -> None:
    r = icsmon("posture", "serve", "--store", str(tmp_path / "none.db"), "--port", "1")
    assert r.returncode == 2 and "none.db" in r.stderr


def test_import_replaces_the_registry_and_keeps_tokens(tmp_path: Path) -> None:
    st = PostureState(tmp_path / "p.db")
    try:
        st.import_org(load_org_file(EXAMPLE))
        token = st.create_token("a", "enterprise-operator", "ent-0003")
        data = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
        data["cities"] = data["cities"][:2]
        counts = st.import_org(parse_org(data, "smaller"))
        assert counts["cities"] == 2 and set(st.org().cities) == {"jinan", "qingdao"}
        assert st.lookup_token(token) is not None
    finally:
        st.close()


def test_score_properties() -> None:
    calm = score(Pressure(sites=10, sensor_weight=10))
    assert calm["score"] == 100 and calm["rating"] == "good"
    one_critical = score(Pressure(sites=1, alert_pressure=10.0, sensor_weight=1))
    assert one_critical["alerts"] == pytest.approx(ALERT_MAX * (1 - math.exp(-0.5)), abs=0.05)
    worse = score(Pressure(sites=1, alert_pressure=40.0, sensor_weight=1))
    assert worse["score"] < one_critical["score"]
    # Per site and per day: the same pressure spread over more sites or days weighs less.
    assert score(Pressure(sites=4, alert_pressure=40.0))["score"] > worse["score"]
    assert score(Pressure(sites=1, alert_pressure=40.0), days=4)["score"] > worse["score"]
    dark = score(Pressure(sites=3, sensor_weight=3, silent_weight=3))
    assert dark["sensor_health"] == HEALTH_MAX and dark["score"] == 100 - HEALTH_MAX
    floor = score(
        Pressure(
            sites=1,
            alert_pressure=1e9,
            deviation_pressure=1e9,
            sensor_weight=1,
            silent_weight=1,
            findings=1e9,
        )
    )
    assert floor["score"] == 0 and floor["rating"] == "poor"
    # without any risk (no finding, vulnerability or exposure) the risk part is all that is left
    no_risk = score(
        Pressure(
            sites=1, alert_pressure=1e9, deviation_pressure=1e9, sensor_weight=1, silent_weight=1
        )
    )
    assert no_risk["risk"] == 0 and no_risk["score"] == RISK_MAX


def test_seed_community_ids_match_the_reference_library() -> None:
    import communityid

    from posture.seed import community_id

    ref = communityid.CommunityID()
    for src, dst, sport, dport in [
        ("10.0.3.5", "10.0.3.10", 40123, 502),
        ("10.0.3.10", "10.0.3.5", 502, 40123),
        ("192.168.1.20", "10.1.0.1", 102, 50000),
        ("10.0.0.1", "10.0.0.1", 4840, 1024),
    ]:
        want = ref.calc(communityid.FlowTuple.make_tcp(src, dst, sport, dport))
        assert community_id(src, dst, sport, dport) == want


def test_cli_demo_then_serve(tmp_path: Path) -> None:
    import json
    import os
    import socket
    import time
    import urllib.request

    store = tmp_path / "demo.db"
    r = icsmon(
        "posture",
        "demo",
        "--store",
        str(store),
        "--alerts",
        "300",
        "--enterprises",
        "20",
        "--sites",
        "24",
    )
    assert r.returncode == 0, r.stderr
    token = r.stdout.strip()
    assert (tmp_path / "demo.posture.db").is_file()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "icsmon.cli",
            "posture",
            "serve",
            "--store",
            str(store),
            "--port",
            str(port),
            "--no-webhooks",
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(600):  # wait for start-up (not a timed assertion)
            try:
                with urllib.request.urlopen(base + "/healthz", timeout=2):
                    break
            except OSError:
                assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
                time.sleep(0.1)
        req = urllib.request.Request(
            base + "/api/summary", headers={"Authorization": f"Bearer {token}"}
        )
        with urllib.request.urlopen(req, timeout=60) as resp:
            summary = json.load(resp)
        assert summary["scope"]["name_zh"] == "山东" and summary["alerts"]["total"] > 0
        assert len(summary["children"]) == 16
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
    assert token not in out  # the access log shows paths, never the bearer token
    assert "GET /api/summary" in out
