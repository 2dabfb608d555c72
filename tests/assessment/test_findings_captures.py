"""Every finding kind shows up on a capture made with a real stack that exhibits it, and not
on one that does not (pcaps/README.md says how each was made). Findings are made at the
sensor: the replay path a user runs (engine -> detectors), no centre involved."""

from __future__ import annotations

from pathlib import Path

import pytest

from detectors.findings import KINDS, FindingTracker, SiteConfigError, read_segments
from icsmon.run import load_detectors
from sensor.engine import Engine, EngineConfig

PCAPS = Path(__file__).resolve().parents[2] / "pcaps"
BASELINE = PCAPS / "baseline" / "train.baseline.json"

# kind -> (captures that exhibit it, captures that do not)
CASES: dict[str, tuple[list[str], list[str]]] = {
    "opcua-security-mode-none": (
        ["opcua/opcua_anonymous.pcap", "opcua/opcua_legacy_policies.pcap"],
        ["opcua/opcua_ca_signed.pcap", "opcua/opcua_sign.pcap"],
    ),
    "opcua-deprecated-security-policy": (
        ["opcua/opcua_legacy_policies.pcap"],
        ["opcua/opcua_anonymous.pcap", "opcua/opcua_sign.pcap", "opcua/opcua_ca_signed.pcap"],
    ),
    "opcua-anonymous-session": (
        ["opcua/opcua_anonymous.pcap"],
        ["opcua/opcua_username.pcap", "opcua/opcua_ca_signed.pcap"],
    ),
    "opcua-password-in-clear": (
        ["opcua/opcua_username.pcap"],
        ["opcua/opcua_ca_signed.pcap", "opcua/opcua_anonymous.pcap"],
    ),
    "opcua-self-signed-certificate": (
        ["opcua/opcua_sign.pcap", "opcua/opcua_legacy_policies.pcap"],
        ["opcua/opcua_ca_signed.pcap"],
    ),
    "opcua-expired-certificate": (
        ["opcua/opcua_legacy_policies.pcap"],
        ["opcua/opcua_ca_signed.pcap", "opcua/opcua_sign.pcap"],
    ),
    "s7-no-protection-level": (["s7comm/s7_unprotected.pcap"], ["s7comm/s7_protected.pcap"]),
    "s7-plc-stop-without-password": (
        ["s7comm/s7_unprotected.pcap", "s7comm/s7_control.pcap", "baseline/attack_plc_stop.pcap"],
        ["s7comm/s7_protected.pcap", "baseline/clean.pcap"],
    ),
    "s7-program-transfer-without-password": (
        [
            "s7comm/s7_unprotected.pcap",
            "s7comm/s7_blocks.pcap",
            "baseline/attack_program_upload.pcap",
        ],
        ["s7comm/s7_protected.pcap", "s7comm/s7_read_write.pcap"],
    ),
    "modbus-multiple-masters": (
        ["modbus/modbus_two_masters.pcap", "baseline/attack_new_host_write.pcap"],
        ["modbus/modbus_writes.pcap", "baseline/train.pcap"],
    ),
    "firmware-observed": (
        ["modbus/modbus_identification.pcap", "opcua/opcua_anonymous.pcap"],
        ["modbus/modbus_polling.pcap", "opcua/opcua_ca_signed.pcap"],
    ),
}


def findings(capture: str, site_config: Path | None = None, baseline: Path | None = None) -> dict:
    engine = Engine(EngineConfig(site="plant-1", observer="sensor-1", organization="ent-1"))
    detectors = load_detectors(None, True, site_config, baseline)
    for event in engine.replay([PCAPS / capture]):
        detectors.process(event)
    detectors.flush()
    return {f["finding.kind"]: f for f in detectors.findings(final=True)}


@pytest.mark.parametrize("kind", sorted(CASES))
def test_kind_on_its_captures_and_not_on_others(kind: str) -> None:
    positive, negative = CASES[kind]
    for capture in positive:
        assert kind in findings(capture), f"{kind} not found on {capture}"
    for capture in negative:
        assert kind not in findings(capture), f"{kind} found on {capture}"


def test_every_kind_has_a_case() -> None:
    covered = set(CASES) | {
        "modbus-write-from-unlearned-master",
        "engineering-access-outside-segment",
    }
    assert covered == set(KINDS)


def test_write_from_a_master_the_baseline_did_not_learn() -> None:
    kind = "modbus-write-from-unlearned-master"
    found = findings("baseline/attack_new_host_write.pcap", baseline=BASELINE)
    assert found[kind]["source.ips"] == ["127.0.5.66"]
    assert found[kind]["host.ip"] == "127.0.5.10"
    for capture in ("baseline/clean.pcap", "baseline/attack_out_of_range.pcap"):
        assert kind not in findings(capture, baseline=BASELINE)
    assert kind not in findings("baseline/attack_new_host_write.pcap")  # nothing learned


def test_engineering_protocol_from_outside_the_declared_segments(tmp_path: Path) -> None:
    kind = "engineering-access-outside-segment"
    narrow = tmp_path / "narrow.yml"  # the PLC's segment only: the client 127.0.0.1 is outside
    narrow.write_text("segments:\n  control: [127.0.0.16/28]\n", encoding="utf-8")
    wide = tmp_path / "wide.yml"
    wide.write_text("segments:\n  control: [127.0.0.16/28]\n  engineering: [127.0.0.1/32]\n")
    found = findings("s7comm/s7_read_write.pcap", site_config=narrow)
    assert found[kind]["source.ips"] == ["127.0.0.1"] and found[kind]["host.ip"] == "127.0.0.31"
    assert kind not in findings("s7comm/s7_read_write.pcap", site_config=wide)
    assert kind not in findings("s7comm/s7_read_write.pcap")  # no segments declared
    assert kind not in findings("modbus/modbus_writes.pcap", site_config=narrow)  # not engineering


def test_one_finding_per_asset_and_kind_with_bounded_evidence() -> None:
    found = findings("opcua/opcua_legacy_policies.pcap")  # every message of the channel shows it
    old = found["opcua-deprecated-security-policy"]
    assert old["opcua.deprecated_policies"] == ["Basic128Rsa15", "Basic256"]
    assert 2 <= len(old["finding.evidence.event_ids"]) <= 10
    assert old["finding.first_seen"] < old["finding.last_seen"]
    assert old["asset.id"] == "plant-1:127.0.0.21" and old["organization.id"] == "ent-1"
    assert len(found) == len({f["finding.id"] for f in found.values()})


def test_ids_are_deterministic_and_refresh_resends() -> None:
    a = findings("opcua/opcua_username.pcap")
    b = findings("opcua/opcua_username.pcap")
    assert {k: v["finding.id"] for k, v in a.items()} == {k: v["finding.id"] for k, v in b.items()}
    tracker = FindingTracker(site="s", refresh_s=10)
    event = {
        "network.protocol": "modbus",
        "ics.operation": "write",
        "event.outcome": "success",
        "source.ip": "10.0.0.1",
        "destination.ip": "10.0.0.9",
        "@timestamp": 100.0,
        "event.id": "a",
    }
    tracker.process(event)
    tracker.process({**event, "source.ip": "10.0.0.2", "event.id": "b"})
    assert len(tracker.changed_findings()) == 1
    tracker.process({**event, "@timestamp": 105.0, "event.id": "c"})
    assert tracker.changed_findings() == []  # seen again within refresh_s: not re-sent
    tracker.process({**event, "@timestamp": 111.0, "event.id": "d"})
    (doc,) = tracker.changed_findings()
    assert doc["finding.last_seen"].startswith("1970-01-01T00:01:51")


def test_bad_segments_are_one_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "site.yml"
    bad.write_text("segments:\n  control: [10.0.0.300/24]\n", encoding="utf-8")
    with pytest.raises(
        SiteConfigError, match="site.yml: segment 'control': '10.0.0.300/24' is not a CIDR"
    ):
        read_segments(bad)
    bad.write_text("segments:\n  dmz: [10.0.0.0/24]\n", encoding="utf-8")
    with pytest.raises(SiteConfigError, match="unknown segment 'dmz'"):
        read_segments(bad)
