"""What a sensor ships (``[sensor] events = none | rollups | all``) through the real Kafka,
and the sensor's own store bounded by age and by size, with what was pruned counted."""

from __future__ import annotations

import json
import random
import sqlite3
from collections import Counter
from pathlib import Path

import pytest

from pipeline.sinks import shipped_kinds
from pipeline.store import Store
from sensor.events import iso_timestamp
from tests.support.pipeline import drop_pipe, make_pipe, require_services, topic_messages

REPO = Path(__file__).resolve().parents[2]
TRAIN = REPO / "pcaps" / "baseline" / "train.pcap"
ATTACK = REPO / "pcaps" / "modbus" / "modbus_attack.pcap"


def test_the_settings_name_what_goes() -> None:
    always = {"alert", "asset", "heartbeat", "finding", "response"}  # answers: when asked
    assert shipped_kinds("none") == always
    assert shipped_kinds("rollups") == always | {"rollup"}
    assert shipped_kinds("all") == always | {"rollup", "event"}
    with pytest.raises(ValueError, match="none, rollups, all"):
        shipped_kinds("some")


def _shipped(pipe, kinds=("event", "rollup", "alert", "heartbeat", "asset")) -> Counter:
    out: Counter = Counter()
    for kind in kinds:
        out[kind] = len(topic_messages(pipe, pipe.cfg.topic(kind)))
    return out


@pytest.mark.services
@pytest.mark.parametrize("setting", ["rollups", "none", "all"])
def test_a_sensor_ships_what_its_setting_says_and_keeps_everything(
    tmp_path: Path, setting: str
) -> None:
    require_services()
    pipe = make_pipe(tmp_path)
    # every document in Kafka when the replay ends, even on a machine too busy to answer the
    # first metadata request within the sensor's default 0.2 s (it would spool the rest: seen
    # once in a full run, 9 of 16 alerts in Kafka)
    pipe.env["ICSMON_KAFKA_MAX_BLOCK_MS"] = "30000"
    try:
        pipe.cli("index", "--setup")
        db = tmp_path / "sensor.db"
        args = [
            "replay",
            str(TRAIN),
            str(ATTACK),
            "--site",
            "site-s",
            "--observer",
            "sensor-s",
            "--sink",
            "kafka",
            "--store",
            str(db),
        ]
        if setting != "rollups":  # the default is rollups
            args += ["--ship", setting]
        pipe.cli(*args)
        got = _shipped(pipe)
        with Store.open(db, readonly=True) as store:
            kept = store.counts()
        # the sensor keeps every document in its own store, whatever it ships
        assert kept["event"] > 300 and kept["rollup"] > 0 and kept["alert"] > 0
        assert got["alert"] == kept["alert"] and got["heartbeat"] == kept["heartbeat"] >= 2
        assert got["asset"] > 0
        assert got["event"] == (kept["event"] if setting == "all" else 0)
        assert got["rollup"] == (0 if setting == "none" else kept["rollup"])
        if setting == "rollups":
            print(f"events kept {kept['event']}, rollups shipped {got['rollup']}")
    finally:
        drop_pipe(pipe)


def _event(i: int, ts: float, size: int = 400) -> dict:
    return {
        "@timestamp": iso_timestamp(ts),
        "event.id": f"e{i:08d}",
        "event.kind": "event",
        "event.action": "read-holding-registers",
        "labels.site": "s",
        "observer.name": "o",
        "network.protocol": "modbus",
        # register values as varied as a plant's: the store compresses documents, and
        # these must take room for the size limit to bite
        "modbus.data": random.Random(i).randbytes(size).hex(),
    }


def test_the_store_prunes_by_age_and_counts_it(tmp_path: Path) -> None:
    t0 = 1_800_000_000.0
    with Store.open(tmp_path / "a.db", max_age_s=3600.0, flush_interval=0) as store:
        for i in range(300):  # 300 events over 5 hours
            store.write("event", _event(i, t0 + i * 60))
        store.write("alert", {**_event(9999, t0), "event.kind": "alert", "event.id": "a1"})
        store.retain()
        stats = store.stats()
        kept = store.counts()
    # an hour behind the newest event stays; alerts are never pruned
    assert kept["event"] + stats["events_pruned_age"] == 300
    assert 55 <= kept["event"] <= 62 and kept["alert"] == 1


def test_the_store_stays_within_its_size_and_counts_what_went(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    limit = 4 << 20
    t0 = 1_800_000_000.0
    with Store.open(path, max_bytes=limit, batch_size=500, flush_interval=0) as store:
        for i in range(40_000):  # ~40 MB of events into a 4 MiB store
            store.write("event", _event(i, t0 + i))
            if i % 2000 == 1999:
                store.retain()  # a sensor's writer does every few seconds
        store.retain()
        used = store.used_bytes()
        stats = store.stats()
        kept = store.counts()["event"]
    assert used <= limit
    assert stats["events_pruned_size"] > 30_000 and kept + stats["events_pruned_size"] == 40_000
    # the newest survive
    conn = sqlite3.connect(path)
    try:
        newest = conn.execute("SELECT max(ts) FROM events").fetchone()[0]
    finally:
        conn.close()
    assert newest == t0 + 39_999
    # the file itself stays near the limit (freed pages are reused, plus the WAL)
    assert path.stat().st_size < 3 * limit, path.stat().st_size
    print(json.dumps({"used": used, "file": path.stat().st_size, "kept": kept}))
