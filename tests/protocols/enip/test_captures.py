"""What the cpppo / pycomm3 captures in pcaps/enip decode to, and what rules and a learned
baseline make of them (the golden files hold every field; these tests name the facts)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from detectors.baseline import BaselineDetector, BaselineLearner
from sensor.engine import Engine, EngineConfig
from tests.support import PCAPS
from tests.support.enip import record_messages, tshark_messages

OWN = PCAPS / "enip"
CAPTURES = sorted(p.name for p in OWN.glob("*.pcap"))
SERVER, CLIENT = "127.0.0.41", "127.0.0.1"


def events(name: str) -> list[dict]:
    return list(Engine(EngineConfig(site="plant-e")).replay([OWN / name]))


@pytest.mark.parametrize("name", CAPTURES)
def test_own_captures_match_tshark(name: str, tshark: str) -> None:
    """The same tallies as on the published captures: commands, CIP services, classes."""
    records = [e for e in events(name) if e.get("network.protocol") == "enip"]
    assert record_messages(records) == tshark_messages(tshark, OWN / name)
    assert all(e["ics.pairing"] == "paired" for e in records if e["enip.command"] != 0x66)


def test_identity_reaches_the_asset() -> None:
    engine = Engine(EngineConfig(site="plant-e"))
    evs = list(engine.replay([OWN / "enip_identity.pcap"]))
    listed = next(e for e in evs if e.get("enip.command_name") == "list_identity")
    assert listed["enip.identity.vendor_id"] == 1
    assert listed["enip.identity.device_type_name"] == "programmable_logic_controller"
    assert listed["enip.identity.state_name"] is not None
    services = next(e for e in evs if e.get("enip.command_name") == "list_services")
    assert services["enip.services"] == ["Communications"]
    server = next(a for a in engine.changed_assets() if a["host.ip"] == SERVER)
    assert server["ics.device.vendor"] == "Rockwell Automation/Allen-Bradley"
    assert server["ics.device.product"] == "1756-L61/B LOGIX5561"
    assert server["ics.device.firmware"] == "20.011"
    assert server["ics.device.serial"].startswith("0x")
    assert server["asset.roles"] == ["enip-server"]


def test_tags_values_and_multiple_service_packet() -> None:
    evs = [e for e in events("enip_tags.pcap") if "cip.service" in e]
    writes = {e["cip.tag"]: e["cip.values"] for e in evs if e["cip.service"] == "write_tag"}
    assert writes == {
        "Speed": [12.5],
        "Counter[0]": [1, 2, 3, 4],
        "Setpoints[0]": [100, 200, 300, 400, 500],
        "Mode": [2],
    }
    msp = [e for e in evs if "multiple_service_packet" in e.get("cip.via", [])]
    assert [e["cip.multiple_index"] for e in msp] == [0, 1, 2, 3]
    assert {e["cip.multiple_count"] for e in msp} == {4}
    assert all(e["cip.route"] == "1/0" and e["event.outcome"] == "success" for e in msp)
    fragmented = next(e for e in evs if e["cip.service"] == "read_tag_fragmented")
    assert fragmented["cip.values"][:5] == [100, 200, 300, 400, 500]


def test_connected_messaging_pairs_by_connection_and_sequence() -> None:
    evs = [e for e in events("enip_connected.pcap") if e.get("network.protocol") == "enip"]
    opens = [e for e in evs if e.get("cip.service") in ("forward_open", "large_forward_open")]
    assert len(opens) == 2 and all(e["cip.connection.transport_class"] == 3 for e in opens)
    connected = [e for e in evs if e["enip.command_name"] == "send_unit_data"]
    assert connected and all(e["ics.pairing"] == "paired" for e in connected)
    o_t_ids = {e["cip.connection.o_t_id"] for e in opens}
    assert {e["enip.connection_id"] for e in connected} <= o_t_ids
    closes = [e for e in evs if e.get("cip.service") == "forward_close"]
    assert {e["cip.connection.serial"] for e in closes} == {
        e["cip.connection.serial"] for e in opens
    }


def test_dangerous_services_fire_their_rules() -> None:
    from icsmon.run import load_detectors

    detectors = load_detectors(None, False, None, None)
    alerts = [a for ev in events("enip_dangerous.pcap") for a in detectors.process(ev)]
    fired = Counter(a["rule.name"] for a in alerts + detectors.flush())
    for name in (
        "EtherNet/IP Device Reset",
        "EtherNet/IP Controller Mode Change (Stop or Start)",
        "EtherNet/IP Firmware Update",
        "EtherNet/IP Program or File Transfer",
        "EtherNet/IP Output Data Written by Explicit Message",
        "EtherNet/IP Write From a Host Outside the Known Clients",
    ):
        assert fired[name], (name, fired)


def test_baseline_learns_clients_operations_tags_and_values() -> None:
    learner = BaselineLearner()
    for name in ("enip_tags.pcap", "enip_connected.pcap"):
        for ev in events(name):
            learner.observe(ev)
    baseline = learner.result()
    assert baseline.placeholders()["enip_clients"] == [CLIENT]
    assert SERVER in baseline.placeholders()["plcs"]
    detector = BaselineDetector(baseline)
    alerts = [a for ev in events("enip_dangerous.pcap") for a in detector.process(ev)]
    alerts += detector.flush()
    messages = " | ".join(a["message"] for a in alerts)
    assert "Mode" in messages  # Mode = 0 is outside the learned value (2)
    new = [a["message"] for a in alerts if a["rule.id"] == "baseline-new-operation"]
    assert new and "reset class=0x01" in new[0]  # the first dangerous service, never learned


def test_published_set_is_counted(public_pcaps: Path, tshark: str) -> None:
    """A one-line check that the helper reads tshark's view: the ListIdentity capture."""
    path = public_pcaps / "enip" / "digitalbond__enip_test.pcap"
    assert tshark_messages(tshark, path)["commands"] == Counter({0x63: 2})
