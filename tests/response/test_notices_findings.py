"""Notices from findings and advisories, verified from the telemetry.

Real captures from asyncua on loopback (pcaps/opcua): a server offering SecurityMode None
makes an ``opcua-security-mode-none`` finding at the sensor; the notice asks to turn it off;
after the reply, the same server seen again with SignAndEncrypt only (opcua_encrypted.pcap)
confirms the fix, while the old capture seen again shows it is still there.

Advisories: the pymodbus server of pcaps/modbus/modbus_identification.pcap reports Acme PLC 200
firmware 2.4.1, affected by ACME-2026-001 (fixed in 2.4.2); the same capture with the firmware
string rewritten to 2.4.2 (the device updated) confirms the fix.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from assessment.catalog import Catalog
from pipeline.store import Store
from posture import seed
from posture.app import create_app
from posture.orgfile import parse_org
from posture.state import PostureState
from response.policy import load_policy
from response.service import Background, Response
from tests.response.captures import OPCUA, REPO, replay, shifted, tool

MODBUS = REPO / "pcaps" / "modbus"


@pytest.fixture()
def world(tmp_path: Path) -> Iterator[dict[str, Any]]:
    registry = seed.make_registry(n_enterprises=4, n_sites=4, cities=2, seed=3)
    rows = seed.registry_sites(registry)
    store_path = tmp_path / "icsmon.db"
    Store.open(store_path).close()
    state = PostureState(tmp_path / "icsmon.posture.db")
    state.import_org(parse_org(registry, "test registry"))
    backend = Store.open(store_path, readonly=True)
    policy = load_policy()
    policy.verify_finding_quiet_s = 0  # the tests do not wait ten minutes
    desk = Response(state.path, backend, policy)
    catalog = Catalog(tmp_path / "icsmon.assessment.db")
    catalog.import_paths([REPO / "tests" / "assessment" / "csaf"])
    client = TestClient(create_app(backend, state, response=desk, catalog=catalog))
    tokens = {
        "province": state.create_token("p", "province-analyst", None),
        "ent": state.create_token("e", "enterprise-operator", rows[0]["enterprise"]),
        "other": state.create_token("o", "enterprise-operator", rows[1]["enterprise"]),
    }
    yield {
        "client": client,
        "rows": rows,
        "store": store_path,
        "tmp": tmp_path,
        "h": {k: {"Authorization": f"Bearer {v}"} for k, v in tokens.items()},
        "desk": desk,
        "backend": backend,
        "state": state,
    }
    client.close()
    desk.close()
    backend.close()
    state.close()


def security_mode_none(w: dict[str, Any]) -> dict[str, Any]:
    site = w["rows"][0]
    pcap = shifted(OPCUA / "opcua_anonymous.pcap", w["tmp"] / "before.pcap", time.time() - 3600)
    replay(pcap, w["store"], site)
    _, found = w["backend"].search_findings(sites=[site["site"]], kind="opcua-security-mode-none")
    assert len(found) == 1
    return found[0]


def issue(w: dict[str, Any], finding: dict[str, Any]) -> str:
    r = w["client"].post(
        "/api/notices",
        headers=w["h"]["province"],
        json={
            "subject_kind": "finding",
            "subject_ref": finding["finding.id"],
            "enterprise": w["rows"][0]["enterprise"],
            "title": "OPC UA accepts SecurityMode None",
            "actions": ["Offer only Sign and SignAndEncrypt endpoints"],
        },
    )
    assert r.status_code == 201, r.text
    notice = r.json()
    assert notice["indicators"]["finding.id"] == [finding["finding.id"]]
    assert notice["indicators"]["asset.id"] == [finding["asset.id"]]
    return notice["id"]


def answer(w: dict[str, Any], nid: str) -> None:
    c, h = w["client"], w["h"]["ent"]
    for to in ("acknowledged", "in-progress"):
        assert (
            c.post(f"/api/notices/{nid}/transition", headers=h, json={"to": to}).status_code == 200
        )
    r = c.post(
        f"/api/notices/{nid}/reply", headers=h, json={"text": "Endpoints without security removed"}
    )
    assert r.status_code == 200, r.text
    time.sleep(0.01)


def offer(w: dict[str, Any], nid: str) -> dict[str, Any]:
    r = w["client"].get(f"/api/notices/{nid}/verification", headers=w["h"]["province"])
    assert r.status_code == 200, r.text
    return r.json()


def test_the_finding_no_longer_observed_confirms_the_fix(world: dict[str, Any]) -> None:
    finding = security_mode_none(world)
    nid = issue(world, finding)
    answer(world, nid)
    got = offer(world, nid)
    assert got["reason"] == "asset-not-seen-since-reply" and not got["available"]
    # The same server, seen again, now only with SignAndEncrypt.
    after = shifted(OPCUA / "opcua_encrypted.pcap", world["tmp"] / "after.pcap", time.time())
    replay(after, world["store"], world["rows"][0])
    got = offer(world, nid)
    assert got["available"] is True and got["reason"] == "confirmed", got
    s = got["supports"]
    assert s["asset_id"] == finding["asset.id"] and s["finding_kind"] == "opcua-security-mode-none"
    assert s["finding_last_seen"] < s["since"] <= s["asset_last_seen"]
    r = world["client"].post(
        f"/api/notices/{nid}/verify", headers=world["h"]["province"], json={"use_telemetry": True}
    )
    assert r.status_code == 200 and r.json()["state"] == "verified"
    verify = next(e for e in r.json()["audit"] if e["action"] == "verify")
    assert verify["detail"]["supports"]["finding_id"] == finding["finding.id"]


def test_the_finding_seen_again_is_still_observed(world: dict[str, Any]) -> None:
    finding = security_mode_none(world)
    nid = issue(world, finding)
    answer(world, nid)
    again = shifted(OPCUA / "opcua_anonymous.pcap", world["tmp"] / "again.pcap", time.time())
    replay(again, world["store"], world["rows"][0])
    got = offer(world, nid)
    assert got["reason"] == "still-observed" and not got["available"]
    r = world["client"].post(
        f"/api/notices/{nid}/verify", headers=world["h"]["province"], json={"use_telemetry": True}
    )
    assert r.status_code == 422


def test_a_finding_elsewhere_is_not_found_and_the_quiet_time_holds(world: dict[str, Any]) -> None:
    finding = security_mode_none(world)
    other = world["rows"][1]["enterprise"]
    r = world["client"].post(
        "/api/notices",
        headers=world["h"]["province"],
        json={
            "subject_kind": "finding",
            "subject_ref": finding["finding.id"],
            "enterprise": other,
            "title": "x",
            "actions": ["x"],
        },
    )
    assert r.status_code == 404  # the finding is not at that enterprise
    r = world["client"].post(
        "/api/notices",
        headers=world["h"]["province"],
        json={
            "subject_kind": "finding",
            "subject_ref": "no-such-finding",
            "enterprise": world["rows"][0]["enterprise"],
            "title": "x",
            "actions": ["x"],
        },
    )
    assert r.status_code == 404
    nid = issue(world, finding)
    answer(world, nid)
    after = shifted(OPCUA / "opcua_encrypted.pcap", world["tmp"] / "after.pcap", time.time())
    replay(after, world["store"], world["rows"][0])
    world["desk"].policy.verify_finding_quiet_s = 600  # the shipped ten minutes
    got = offer(world, nid)
    assert got["reason"] == "too-early" and got["supports"]["quiet_needed_s"] == 600
    assert (
        world["client"].get(f"/api/notices/{nid}", headers=world["h"]["other"]).status_code == 404
    )


def test_a_finding_notice_verifies_itself_once_the_finding_is_gone(world: dict[str, Any]) -> None:
    finding = security_mode_none(world)
    nid = issue(world, finding)
    answer(world, nid)
    background = Background(world["desk"], world["state"].org)
    # the asset not seen since the reply: nothing to verify yet
    assert background.run_once(campaigns=False)["verified"] == []
    after = shifted(OPCUA / "opcua_encrypted.pcap", world["tmp"] / "after.pcap", time.time())
    replay(after, world["store"], world["rows"][0])
    done = background.run_once(campaigns=False)["verified"]
    assert [d["notice"] for d in done] == [nid] and done[0]["automatic"] is True
    got = world["client"].get(f"/api/notices/{nid}", headers=world["h"]["ent"]).json()
    assert got["state"] == "verified"
    entry = next(e for e in got["audit"] if e["action"] == "verify")
    assert entry["actor"] == "icsmon" and entry["detail"]["method"] == "telemetry"
    assert entry["detail"]["supports"]["finding_id"] == finding["finding.id"]
    assert background.run_once(campaigns=False)["verified"] == []  # once only


def test_a_finding_still_observed_is_not_verified_automatically(world: dict[str, Any]) -> None:
    finding = security_mode_none(world)
    nid = issue(world, finding)
    answer(world, nid)
    again = shifted(OPCUA / "opcua_anonymous.pcap", world["tmp"] / "again.pcap", time.time())
    replay(again, world["store"], world["rows"][0])
    assert world["desk"].notices.auto_verify() == []
    got = world["client"].get(f"/api/notices/{nid}", headers=world["h"]["province"]).json()
    assert got["state"] == "submitted"


def updated_firmware(src: Path, dst: Path) -> Path:
    """The identification capture of a device updated from 2.4.1 to 2.4.2: the firmware
    strings of the Read Device Identification answers rewritten, checksums fixed."""
    raw = dst.with_suffix(".raw.pcap")
    data = src.read_bytes()
    assert data.count(b"\x052.4.1") >= 1
    raw.write_bytes(data.replace(b"2.4.1", b"2.4.2"))
    import subprocess

    subprocess.run(
        [tool("tcprewrite"), "--fixcsum", f"--infile={raw}", f"--outfile={dst}"],
        check=True,
        capture_output=True,
    )
    return dst


def test_an_advisory_notice_verifies_itself_once_the_firmware_is_updated(
    world: dict[str, Any],
) -> None:
    site = world["rows"][0]
    before = shifted(
        MODBUS / "modbus_identification.pcap", world["tmp"] / "b.pcap", time.time() - 3600
    )
    replay(before, world["store"], site)
    plc = f"{site['site']}:127.0.0.1"
    c, h = world["client"], world["h"]
    r = c.get("/api/advisories/ACME-2026-001", headers=h["province"])
    assert plc in {
        a["asset"]["id"] for a in r.json()["items"] if a["match"]["status"] == "affected"
    }
    r = c.post(
        "/api/notices",
        headers=h["province"],
        json={
            "subject_kind": "advisory",
            "subject_ref": "ACME-2026-001",
            "enterprise": site["enterprise"],
            "title": "Acme PLC 200 below 2.4.2 (ACME-2026-001)",
            "actions": ["Update the PLC firmware to 2.4.2 or later"],
        },
    )
    assert r.status_code == 201, r.text
    notice = r.json()
    assert notice["indicators"]["advisory.id"] == ["ACME-2026-001"]
    assert notice["indicators"]["asset.id"] == [plc]
    nid = notice["id"]
    answer(world, nid)
    # the same old firmware seen again: still affected
    again = shifted(MODBUS / "modbus_identification.pcap", world["tmp"] / "a.pcap", time.time())
    replay(again, world["store"], site)
    got = offer(world, nid)
    assert got["reason"] == "still-observed", got
    assert got["supports"]["affected_now"] == [{"asset.id": plc, "firmware": "2.4.1"}]
    assert world["desk"].notices.auto_verify() == []
    # the device updated
    fixed = updated_firmware(MODBUS / "modbus_identification.pcap", world["tmp"] / "fixed.pcap")
    fixed = shifted(fixed, world["tmp"] / "f.pcap", time.time())
    replay(fixed, world["store"], site)
    got = offer(world, nid)
    assert got["available"] and got["reason"] == "confirmed", got
    assert plc in got["supports"]["assets_seen_since_reply"]
    done = Background(world["desk"], world["state"].org).run_once(campaigns=False)["verified"]
    assert [d["notice"] for d in done] == [nid]
    got = c.get(f"/api/notices/{nid}", headers=h["ent"]).json()
    assert got["state"] == "verified"
