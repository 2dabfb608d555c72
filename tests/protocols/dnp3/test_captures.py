"""The dnp3py captures (pcaps/dnp3/): what the records and the asset records say about a real
outstation and master: select-before-operate, time, unsolicited data, restart, and the device
attributes (group 0) and link addresses in the asset records."""

from __future__ import annotations

from sensor.engine import Engine, EngineConfig
from tests.support import REPO

CAPTURES = REPO / "pcaps" / "dnp3"


def replay(name: str) -> tuple[list[dict], dict[str, dict]]:
    engine = Engine(EngineConfig(site="substation-1"))
    events = list(engine.replay([CAPTURES / name]))
    assets = {doc["host.ip"]: doc for doc in engine.changed_assets()}
    return events, assets


def test_operations_transactions() -> None:
    events, _ = replay("dnp3_operations.pcap")
    by_action: dict[str, list[dict]] = {}
    for ev in events:
        by_action.setdefault(ev["event.action"], []).append(ev)
    assert not by_action.get("anomaly")
    select, operate = by_action["select"], by_action["operate"]
    # select-before-operate: CROB point 0 latch on, then analog output 1 = 55, each paired
    assert [(e["dnp3.object_types"], e["dnp3.points"]) for e in select] == [
        (["g12v1"], [0]),
        (["g41v1"], [1]),
    ]
    assert [e["dnp3.control_status"] for e in operate] == [["success"], ["success"]]
    assert operate[1]["dnp3.values"] == [55]
    assert {e["ics.pairing"] for e in select + operate} == {"paired"}
    write_time = next(e for e in by_action["write"] if e["dnp3.object_types"] == ["g50v1"])
    assert write_time["dnp3.time"].endswith("Z") and write_time["event.outcome"] == "success"
    unsolicited = by_action["unsolicited-response"][0]
    assert unsolicited["dnp3.unsolicited"] is True and unsolicited["ics.pairing"] == "response-only"
    assert by_action["confirm"][0]["dnp3.unsolicited"] is True
    restart = by_action["cold-restart"][0]
    assert restart["ics.operation"] == "control"
    assert restart["dnp3.response.object_types"] == ["g52v2"]  # the time delay


def test_device_attributes_and_link_addresses_reach_the_asset_records() -> None:
    events, assets = replay("dnp3_operations.pcap")
    read = next(e for e in events if e.get("dnp3.object_types") == ["g0v254"])
    assert read["dnp3.attributes"] == {
        "manufacturer_name": "Example Energy",
        "product_name_and_model": "RTU-560 Feeder",
        "software_version": "3.1.4",
        "serial_number": "SN-0042",
    }
    outstation, master = assets["127.0.8.10"], assets["127.0.8.2"]
    assert outstation["asset.roles"] == ["dnp3-server"]
    assert outstation["asset.dnp3.link_addresses"] == [10]
    assert (outstation["ics.device.vendor"], outstation["ics.device.product"]) == (
        "Example Energy",
        "RTU-560 Feeder",
    )
    assert (outstation["ics.device.firmware"], outstation["ics.device.serial"]) == (
        "3.1.4",
        "SN-0042",
    )
    assert master["asset.roles"] == ["dnp3-client"]
    assert master["asset.dnp3.link_addresses"] == [1]
    assert "ics.device.vendor" not in master


def test_a_scan_of_link_addresses_does_not_become_the_outstation_addresses() -> None:
    """The sweep asks for link addresses 1..16; only 10 answers: the outstation's record
    keeps 10, the scanner's its own address 100."""
    events, assets = replay("dnp3_attack_sweep.pcap")
    asked = {e["dnp3.outstation"] for e in events if e["source.ip"] == "127.0.8.67"}
    assert asked == set(range(1, 17))
    assert assets["127.0.8.10"]["asset.dnp3.link_addresses"] == [10]
    assert assets["127.0.8.67"]["asset.dnp3.link_addresses"] == [100]
