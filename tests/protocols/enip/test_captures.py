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


def test_list_commands_over_udp(tshark: str) -> None:
    """cpppo's client asks the list commands over UDP 44818: the same records as over TCP,
    on a UDP flow, and the identity reaches the device's asset."""
    import subprocess

    evs = [e for e in events("enip_udp.pcap") if e.get("network.protocol") == "enip"]
    assert [e["enip.command_name"] for e in evs] == [
        "list_services",
        "list_identity",
        "list_interfaces",
    ]
    assert all(e["network.transport"] == "udp" and e["ics.pairing"] == "paired" for e in evs)
    assert evs[1]["enip.identity.product_name"] == "1756-L61/B LOGIX5561"
    out = subprocess.run([tshark, "-r", str(OWN / "enip_udp.pcap"), "-Y", "enip", "-T", "fields",
                          "-e", "enip.command"], capture_output=True, text=True, check=True).stdout  # fmt: skip
    assert Counter(int(c, 16) for c in out.split()) == Counter({0x04: 2, 0x63: 2, 0x64: 2})


def test_a_short_datagram_is_an_anomaly() -> None:
    """Hand-made edge case: a ListIdentity reply whose header announces more than the
    datagram holds, and an I/O datagram without a sequenced address item."""
    from sensor.protocols import enip

    parser = enip.DatagramParser()
    reply = bytes.fromhex("6300") + (40).to_bytes(2, "little") + bytes(20) + b"\x01\x00"
    recs = parser.datagram(False, reply, 1.0)
    assert [r["error.type"] for r in recs] == ["truncated-pdu"]
    io = bytes.fromhex("0100b1000400") + b"\x01\x00\xaa\xbb"
    assert [r["error.type"] for r in parser.datagram(True, io, 1.1)] == ["bad-io"]
    assert parser.datagram(True, io, 1.2) == []  # once per flow
    assert parser.close(2.0) == []


def test_implicit_io_reports_each_interval_and_counts_losses() -> None:
    """Hand-made edge case: one I/O connection for 150 s at a 10 ms RPI with datagram 500
    lost and 700 repeated: a record per 60 s span, the loss and the repeat counted."""
    from sensor.protocols import enip

    parser = enip.DatagramParser()

    def datagram(seq: int) -> bytes:
        address = (0x1234).to_bytes(4, "little") + seq.to_bytes(4, "little")
        return (b"\x02\x00\x02\x80\x08\x00" + address + b"\xb1\x00\x06\x00" + seq.to_bytes(2, "little")
                + b"\x00\x00\x00\x00")  # fmt: skip

    recs = []
    for n in range(15_000):
        if n == 500:
            continue
        recs += parser.datagram(True, datagram(n), 100.0 + n * 0.01)
        if n == 700:
            recs += parser.datagram(True, datagram(n), 100.0 + n * 0.01)
    recs += parser.close(300.0)
    assert [r["enip.io.packets"] for r in recs] == [6000, 6000, 3000]
    assert recs[0]["enip.io.lost"] == 1 and recs[0]["enip.io.repeated"] == 1
    assert recs[0]["enip.io.mean_interval_us"] == 10_000
    assert sum(r["enip.io.lost"] for r in recs) == 1
