"""The c104 captures (pcaps/iec104/): what the records and the asset records say about a real
controlled and controlling station: interrogation, select-before-operate, clock
synchronisation, end of initialisation, and the common addresses in the asset records."""

from __future__ import annotations

from sensor.engine import Engine, EngineConfig
from tests.support import REPO

CAPTURES = REPO / "pcaps" / "iec104"


def replay(name: str) -> tuple[list[dict], dict[str, dict]]:
    engine = Engine(EngineConfig(site="substation-1"))
    events = list(engine.replay([CAPTURES / name]))
    assets = {doc["host.ip"]: doc for doc in engine.changed_assets()}
    return events, assets


def test_operations_transactions() -> None:
    events, _ = replay("iec104_operations.pcap")
    assert not [e for e in events if e["event.action"] == "anomaly"]
    gi = [e for e in events if e.get("iec104.type") == "C_IC_NA_1"]
    # station 1 answered with 4 ASDUs of 7 objects; station 2 with one
    assert [(e["iec104.common_address"], e["iec104.interrogation.objects"]) for e in gi] == [
        (1, 7),
        (2, 1),
    ]
    assert all(e["iec104.confirmation"] == "positive" and e["iec104.terminated"] for e in gi)
    setpoints = [e for e in events if e.get("iec104.type") == "C_SE_NC_1"]
    assert [
        (e["iec104.select"], e["iec104.values"], e.get("iec104.terminated")) for e in setpoints
    ] == [
        (True, [47.5], None),
        (False, [47.5], True),
    ]
    clock = next(e for e in events if e.get("iec104.type") == "C_CS_NA_1")
    assert clock["iec104.time"].endswith("Z") and clock["iec104.confirmation"] == "positive"
    init = next(e for e in events if e.get("iec104.type") == "M_EI_NA_1")
    assert init["iec104.initialization"] == "remote_reset"
    spontaneous = [e for e in events if e.get("iec104.cause_name") == "spontaneous"]
    assert {e["iec104.type"] for e in spontaneous} == {"M_ME_NC_1", "M_ME_NB_1"}


def test_common_addresses_reach_the_asset_record() -> None:
    _, assets = replay("iec104_operations.pcap")
    station, master = assets["127.0.9.10"], assets["127.0.9.2"]
    assert station["asset.roles"] == ["iec104-server"]
    assert station["asset.iec104.common_addresses"] == [1, 2]
    assert master["asset.roles"] == ["iec104-client"]
    assert "asset.iec104.common_addresses" not in master


def test_a_sweep_of_common_addresses_keeps_only_the_stations_that_answer() -> None:
    events, assets = replay("iec104_attack_sweep.pcap")
    asked = {
        e["iec104.common_address"]
        for e in events
        if e["source.ip"] == "127.0.9.67" and e.get("iec104.type") == "C_IC_NA_1"
    }
    assert asked == set(range(1, 25))
    assert assets["127.0.9.10"]["asset.iec104.common_addresses"] == [1, 2]
