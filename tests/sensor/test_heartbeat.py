"""Heartbeats: built from the counters at start, per interval and at a clean stop; replayed
captures give the same heartbeats every time (capture time); a live sensor beats while idle."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sensor.capture import CaptureReader
from sensor.events import Context
from sensor.heartbeat import COUNTERS, Heartbeats
from tests.support.netns import (
    SENSE,
    capture_ready,
    iface_index,
    in_ns,
    netns,  # noqa: F401 - the fixture: a namespace with a veth pair
    tcpreplay,
    wait_on_child,
)

REPO = Path(__file__).resolve().parents[2]
POLLING = REPO / "pcaps" / "modbus" / "modbus_polling.pcap"
ATTACK = REPO / "pcaps" / "modbus" / "modbus_attack.pcap"
TRAIN = REPO / "pcaps" / "baseline" / "train.pcap"  # 39 s of polling
ICSMON = str(Path(sys.executable).parent / "icsmon")


def test_start_interval_and_stop_with_traffic_per_interval() -> None:
    hb = Heartbeats(Context("site-1", "sensor-1", "ent-1"), interval_s=60, version="9.9")
    assert hb.due(1000.0)  # the start heartbeat is due at once
    start = hb.start(1000.5, {"packets": 0})
    assert start["icsmon.sensor.reason"] == "start"
    assert start["event.kind"] == "state" and start["event.dataset"] == "icsmon.heartbeat"
    assert start["observer.name"] == "sensor-1" and start["labels.site"] == "site-1"
    assert start["organization.id"] == "ent-1" and start["observer.version"] == "9.9"
    assert {f"icsmon.sensor.{c}" for c in COUNTERS} <= set(start)
    # aligned to multiples of the interval, so heartbeats of many sensors line up
    assert not hb.due(1019.9) and hb.due(1020.0)
    beat = hb.beat(1020.0, {"packets": 500, "alerts": 2})
    assert beat["icsmon.sensor.traffic"] == 500 and beat["icsmon.sensor.alerts"] == 2
    assert beat["icsmon.sensor.uptime_s"] == 19.5
    # several intervals without a chance to beat: one heartbeat, the traffic since the last
    assert hb.due(1300.0)
    late = hb.beat(1300.0, {"packets": 520})
    assert late["icsmon.sensor.traffic"] == 20 and not hb.due(1319.0)
    stop = hb.stop(1310.0, {"packets": 520})
    assert stop["icsmon.sensor.reason"] == "stop" and stop["icsmon.sensor.traffic"] == 0
    assert not hb.due(1e12)  # nothing after a stop
    ids = {d["event.id"] for d in (start, beat, late, stop)}
    assert len(ids) == 4
    again = Heartbeats(Context("site-1", "sensor-1", "ent-1"), interval_s=60, version="9.9")
    assert again.start(1000.5, {"packets": 0})["event.id"] == start["event.id"]  # deterministic


def test_interval_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        Heartbeats(Context("s", "o"), interval_s=0)


def _replay_heartbeats(
    tmp_path: Path,
    name: str,
    *extra: str,
    env: dict | None = None,
    captures: tuple[Path, ...] = (ATTACK, POLLING),
) -> list[dict]:
    out = tmp_path / f"{name}.jsonl"
    subprocess.run(
        [
            ICSMON,
            "replay",
            *map(str, captures),
            "--site",
            "s1",
            "--observer",
            "o1",
            "--sink",
            "jsonl",
            "--out",
            str(out),
            *extra,
        ],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    )
    docs = [json.loads(line) for line in out.read_text().splitlines()]
    return [d for d in docs if d.get("event", {}).get("dataset") == "icsmon.heartbeat"]


def test_replay_beats_in_capture_time_and_the_same_every_time(tmp_path: Path) -> None:
    beats = _replay_heartbeats(tmp_path, "a")
    frames = [f for p in (ATTACK, POLLING) for batch in CaptureReader(p).batches() for f in batch]
    reasons = [b["icsmon"]["sensor"]["reason"] for b in beats]
    assert reasons[0] == "start" and reasons[-1] == "stop"
    start, stop = beats[0], beats[-1]
    first_ts = frames[0][0]
    assert start["@timestamp"].startswith(time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(first_ts)))
    assert start["icsmon"]["sensor"]["packets"] == 0  # the state before the first packet
    assert stop["icsmon"]["sensor"]["packets"] == len(frames)
    assert sum(b["icsmon"]["sensor"]["traffic"] for b in beats) == len(frames)
    assert stop["icsmon"]["sensor"]["bytes"] == sum(len(f[2]) for f in frames)
    assert stop["icsmon"]["sensor"]["alerts"] > 0 and stop["icsmon"]["sensor"]["pdus"] > 0
    assert _replay_heartbeats(tmp_path, "b") == beats  # same capture, same heartbeats, same ids


def test_replay_interval_comes_from_the_configuration(tmp_path: Path) -> None:
    env = dict(os.environ, ICSMON_SENSOR_HEARTBEAT_INTERVAL="1")
    beats = _replay_heartbeats(tmp_path, "c", env=env, captures=(TRAIN,))
    # 39 s of capture time: a start, a stop, and between them a heartbeat in each second
    # that saw an event (a replay's clock moves with its events; polling here comes in bursts)
    seconds = [int(b["icsmon"]["sensor"]["uptime_s"]) for b in beats[1:-1]]
    assert len(beats) > 10 and seconds == sorted(set(seconds))
    # 60 s (the default), aligned to whole minutes: 12:52:50 to 12:53:30 crosses one
    default = _replay_heartbeats(tmp_path, "d", captures=(TRAIN,))
    assert [b["@timestamp"][11:16] for b in default] == ["12:52", "12:53", "12:53"]
    env["ICSMON_SENSOR_HEARTBEAT_INTERVAL"] = "0"
    proc = subprocess.run(
        [ICSMON, "replay", str(POLLING), "--sink", "none"], env=env, capture_output=True, text=True
    )
    assert proc.returncode == 2 and "heartbeat_interval" in proc.stderr
    assert "Traceback" not in proc.stderr


# -- a live sensor ---------------------------------------------------------------------------


def _stored_beats(db: Path) -> list[dict]:
    if not db.exists():
        return []
    try:
        conn = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)
        try:
            rows = conn.execute("SELECT doc FROM heartbeats ORDER BY ts").fetchall()
        finally:
            conn.close()
    except sqlite3.Error:  # created but not yet initialised
        return []
    return [json.loads(r[0]) for r in rows]


@pytest.mark.live
def test_a_live_sensor_beats_while_idle_and_at_a_clean_stop(netns: str, tmp_path: Path) -> None:  # noqa: F811
    ns = netns
    db = tmp_path / "live.db"
    env = dict(os.environ, ICSMON_SENSOR_HEARTBEAT_INTERVAL="1")
    proc = subprocess.Popen(
        in_ns(
            ns,
            ICSMON,
            "sense",
            "--iface",
            SENSE,
            "--no-rules",
            "--store",
            str(db),
            "--site",
            "s1",
            "--observer",
            "live-1",
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        ifindex = iface_index(ns, SENSE)
        wait_on_child("icsmon sense to listen", lambda: capture_ready(ns, ifindex), proc)
        # no packet at all: the sensor still says it is alive, with no traffic
        wait_on_child("three heartbeats while idle", lambda: len(_stored_beats(db)) >= 3, proc)
        idle = _stored_beats(db)
        assert idle[0]["icsmon.sensor.reason"] == "start"
        assert all(b["icsmon.sensor.traffic"] == 0 for b in idle)
        tcpreplay(ns, POLLING)
        wait_on_child(
            "a heartbeat that saw traffic",
            lambda: any(b["icsmon.sensor.traffic"] for b in _stored_beats(db)),
            proc,
        )
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stderr
    beats = _stored_beats(db)
    assert beats[-1]["icsmon.sensor.reason"] == "stop"
    assert beats[-1]["icsmon.sensor.packets"] == sum(b["icsmon.sensor.traffic"] for b in beats) > 0
    assert beats[-1]["icsmon.sensor.events"] > 0
    stamps = [b["@timestamp"] for b in beats]
    assert stamps == sorted(stamps)
    assert all(b["icsmon.sensor.started"] == beats[0]["@timestamp"] for b in beats)
