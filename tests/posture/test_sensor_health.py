"""Sensor health reads heartbeats: reporting, no traffic, stopped, silent, never seen."""

from __future__ import annotations

from pathlib import Path

from pipeline.store import Store
from posture.access import Scope
from posture.orgfile import parse_org
from posture.service import PostureService
from posture.state import PostureState
from sensor.events import Context
from sensor.heartbeat import Heartbeats

NOW = 1_795_000_000.0
REGISTRY = {
    "province": {"id": "p", "name": "P"},
    "cities": [
        {
            "id": "c1",
            "name": "C1",
            "enterprises": [
                {
                    "id": "e1",
                    "name": "E1",
                    "industry": "power",
                    "criticality": 3,
                    "sites": [
                        {"id": f"s{i}", "name": f"S{i}", "sensors": [f"n{i}"]} for i in range(5)
                    ],
                }
            ],
        }
    ],
}


def test_sensor_states_come_from_the_newest_heartbeat(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "h.db")
    state = PostureState(tmp_path / "h.posture.db")
    try:
        state.import_org(parse_org(REGISTRY, "test registry"))

        def beats(i: int) -> Heartbeats:
            return Heartbeats(Context(f"s{i}", f"n{i}", "e1"), interval_s=60)

        hb = beats(0)  # reporting: traffic in its last interval
        store.write("heartbeat", hb.start(NOW - 600, {"packets": 0}))
        store.write("heartbeat", hb.beat(NOW - 30, {"packets": 900}))
        hb = beats(1)  # connected, but the mirror port is quiet
        store.write("heartbeat", hb.start(NOW - 600, {"packets": 0}))
        store.write("heartbeat", hb.beat(NOW - 30, {"packets": 0}))
        hb = beats(2)  # stopped cleanly a minute ago
        store.write("heartbeat", hb.start(NOW - 600, {"packets": 0}))
        store.write("heartbeat", hb.stop(NOW - 60, {"packets": 10}))
        hb = beats(3)  # last heard an hour ago
        store.write("heartbeat", hb.start(NOW - 3600, {"packets": 0}))
        # n4 never sent a heartbeat; an event of its site does not count as one
        store.write(
            "event",
            {
                "@timestamp": "2026-11-18T08:26:40Z",
                "event.id": "x",
                "observer.name": "n4",
                "labels.site": "s4",
            },
        )
        store.flush()
        got = PostureService(store, state).sensors(Scope("province", None, None), now=NOW)
        states = {r["name"]: r["state"] for r in got["sensors"]}
        assert states == {
            "n0": "reporting",
            "n1": "no-traffic",
            "n2": "stopped",
            "n3": "silent",
            "n4": "silent",
        }
        assert (got["total"], got["reporting"], got["silent"], got["no_traffic"]) == (5, 2, 3, 1)
        rows = {r["name"]: r for r in got["sensors"]}
        assert rows["n0"]["traffic"] == 900 and rows["n0"]["last_seen"] == NOW - 30
        assert rows["n4"]["last_seen"] is None
        # silent ones first
        assert [r["name"] for r in got["sensors"]][:3] == ["n4", "n3", "n2"]
    finally:
        store.close()
        state.close()
