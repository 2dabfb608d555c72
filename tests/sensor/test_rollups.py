"""Rollups: one document per conversation series per interval, from real captures; the
counts add up to the events they summarise; the same capture gives the same rollups."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from sensor.engine import Engine, EngineConfig
from sensor.events import Context, iso_timestamp
from sensor.rollups import MODBUS_BLOCK, Rollups

REPO = Path(__file__).resolve().parents[2]
PCAPS = REPO / "pcaps"
TRAIN = PCAPS / "baseline" / "train.pcap"  # 39 s of a small plant polling three protocols
WRITES = PCAPS / "modbus" / "modbus_writes.pcap"
ICSMON = str(Path(sys.executable).parent / "icsmon")
CTX = Context("site-r", "sensor-r", "ent-r")


def events_of(*paths: Path) -> list[dict]:
    return list(Engine(EngineConfig(site="site-r", observer="sensor-r")).replay(paths))


def roll(events: list[dict], interval: float = 60.0, **kw) -> tuple[list[dict], Rollups]:
    r = Rollups(CTX, interval, **kw)
    out: list[dict] = []
    for ev in events:
        out += r.add(ev)
    return out + r.flush(), r


def test_every_event_is_counted_once_in_its_series() -> None:
    events = events_of(TRAIN)
    docs, r = roll(events, interval=10.0)
    assert r.stats["events"] == len(events) and r.stats["late"] == 0
    assert sum(d["icsmon.rollup.transactions"] for d in docs) == len(events)
    # per (client, server, protocol, function): the same totals as counting events by hand
    by_series = Counter()
    for d in docs:
        key = (d["source.ip"], d["destination.ip"], d["network.protocol"], d["ics.function"])
        by_series[key] += d["icsmon.rollup.transactions"]
    by_hand = Counter()
    for ev in events:
        function = ev.get("ics.function") or ev.get("event.action")
        if ev.get("event.action") == "anomaly":
            function = ev.get("error.type")
        by_hand[(ev["source.ip"], ev["destination.ip"], ev["network.protocol"], function)] += 1
    assert by_series == by_hand
    outcomes = Counter(ev.get("event.outcome") for ev in events)
    assert sum(d["icsmon.rollup.success"] for d in docs) == outcomes["success"]
    assert sum(d["icsmon.rollup.exception"] for d in docs) == outcomes["failure"]
    # intervals are aligned to multiples of 10 s; first and last time inside each
    for d in docs:
        start = d["@timestamp"]  # epoch seconds until output, like the events' times
        assert isinstance(start, float) and start % 10.0 == 0.0
        assert start <= d["event.start"] <= d["event.end"] < start + 10.0 + r.grace_s
        assert d["event.kind"] == "metric" and d["event.dataset"] == "icsmon.rollup"


def test_response_times_and_pairing_follow_the_events() -> None:
    events = [e for e in events_of(TRAIN) if e.get("event.action") != "anomaly"]
    docs, _ = roll(events)
    for d in docs:
        if "icsmon.rollup.response_time.min" in d:
            assert (
                d["icsmon.rollup.response_time.min"]
                <= d["icsmon.rollup.response_time.mean"]
                <= d["icsmon.rollup.response_time.max"]
            )
    durations = [e["event.duration"] for e in events if isinstance(e.get("event.duration"), int)]
    assert min(d.get("icsmon.rollup.response_time.min", 1 << 62) for d in docs) == min(durations)
    assert max(d.get("icsmon.rollup.response_time.max", -1) for d in docs) == max(durations)
    assert (
        sum(d["icsmon.rollup.requests"] for d in docs)
        >= sum(d["icsmon.rollup.responses"] for d in docs)
        > 0
    )


def test_objects_at_a_useful_grain() -> None:
    docs, _ = roll(events_of(TRAIN, WRITES, PCAPS / "s7comm" / "s7_read_write.pcap"))
    objects = {(d["network.protocol"], d["ics.function"], d["icsmon.rollup.object"]) for d in docs}
    modbus = {o for p, f, o in objects if p == "modbus" and f == "read_holding_registers"}
    assert modbus and all(o.startswith("unit ") and " holding_registers " in o for o in modbus)
    low, high = next(iter(modbus)).rsplit(" ", 1)[1].split("-")
    assert int(high) - int(low) == MODBUS_BLOCK - 1 and int(low) % MODBUS_BLOCK == 0
    assert ("s7comm", "read_var", "DB1") in objects
    assert any(p == "opcua" and o.startswith("ns=") for p, _, o in objects)


def test_written_values_min_and_max() -> None:
    docs, _ = roll(events_of(WRITES))
    single = [d for d in docs if d["ics.function"] == "write_single_register"]
    assert single and single[0]["icsmon.rollup.written.min"] == 1234
    assert single[0]["icsmon.rollup.written.max"] == 1234
    reads = [d for d in docs if d["ics.operation"] == "read"]
    assert reads and all("icsmon.rollup.written.min" not in d for d in reads)


def test_enip_series_by_tag_object_and_io_connection(public_pcaps: Path) -> None:
    """EtherNet/IP: a series per tag (element index dropped), per CIP object, per implicit
    I/O connection; tag writes give the values written."""
    docs, _ = roll(
        events_of(PCAPS / "enip" / "enip_tags.pcap", PCAPS / "enip" / "enip_dangerous.pcap")
    )
    objects = {
        (d["ics.function"], d["icsmon.rollup.object"])
        for d in docs
        if d["network.protocol"] == "enip"
    }
    assert {
        ("write_tag", "Counter"),
        ("read_tag", "Setpoints"),
        ("reset", "class 0x01 instance 1"),
    } <= objects
    speed = next(
        d for d in docs if d["icsmon.rollup.object"] == "Speed" and d["ics.function"] == "write_tag"
    )
    assert speed["icsmon.rollup.written.min"] == speed["icsmon.rollup.written.max"] == 12.5
    io, _ = roll(events_of(public_pcaps / "enip" / "ndpi__cip_io.pcap"))
    assert sorted(d["icsmon.rollup.object"] for d in io) == [
        "io connection 0x003a7b78",
        "io connection 0x7691b4eb",
    ]


def test_telecontrol_objects_and_set_points() -> None:
    """DNP3: the outstation and the object types; IEC 104: the station and a block of
    information object addresses; the set points written (DNP3 analog output blocks by
    select/operate, IEC 104 C_SE_NC_1) as the written range of their series."""
    docs, _ = roll(
        events_of(PCAPS / "dnp3" / "dnp3_train.pcap", PCAPS / "iec104" / "iec104_train.pcap")
    )
    objects = {(d["network.protocol"], d["ics.function"], d["icsmon.rollup.object"]) for d in docs}
    assert ("dnp3", "read", "outstation 10 g60v2 g60v3 g60v4") in objects
    assert ("iec104", "read", "ca 1 ioa 200-299") in objects
    operate = [
        d
        for d in docs
        if (d["network.protocol"], d["ics.function"], d["icsmon.rollup.object"])
        == ("dnp3", "operate", "outstation 10 g41v1")
    ]
    assert min(d["icsmon.rollup.written.min"] for d in operate) == 40
    assert max(d["icsmon.rollup.written.max"] for d in operate) == 60
    setpoint = [
        d
        for d in docs
        if (d["network.protocol"], d["icsmon.rollup.object"]) == ("iec104", "ca 1 ioa 6000-6099")
    ]
    assert {d["ics.function"] for d in setpoint} == {"set_point_short_float"}
    assert min(d["icsmon.rollup.written.min"] for d in setpoint) == 45
    assert max(d["icsmon.rollup.written.max"] for d in setpoint) == 55


def test_an_interval_waits_for_late_answers_and_a_late_event_is_a_new_part() -> None:
    base = {
        "network.protocol": "modbus",
        "source.ip": "10.0.0.1",
        "destination.ip": "10.0.0.2",
        "destination.port": 502,
        "ics.function": "read_coils",
        "ics.operation": "read",
        "event.outcome": "success",
        "ics.pairing": "paired",
        "modbus.unit_id": 1,
        "modbus.function_code": 1,
        "modbus.address": 0,
    }

    def ev(ts: float) -> dict:  # text, as from Kafka or a file: the one parser reads it
        return {**base, "@timestamp": iso_timestamp(ts)}

    r = Rollups(CTX, interval_s=60.0, grace_s=5.0)
    assert r.add(ev(1_800_000_010.0)) == []
    assert r.add(ev(1_800_000_061.0)) == []  # next interval, within the grace: first stays open
    assert r.add(ev(1_800_000_059.5)) == []  # a late answer to an old request still counts
    closed = r.add(ev(1_800_000_066.0))
    assert [d["icsmon.rollup.transactions"] for d in closed] == [2]
    late = r.add(ev(1_800_000_020.0))  # its interval was sent: it opens again ...
    assert late == []
    again = r.advance(1_800_000_070.0)  # ... and goes as a second part with its own id
    assert [d["icsmon.rollup.transactions"] for d in again] == [1]
    assert again[0]["event.id"] != closed[0]["event.id"] and r.stats["late"] == 1
    assert again[0]["@timestamp"] == closed[0]["@timestamp"]


def test_a_scan_cannot_grow_the_series_without_bound() -> None:
    r = Rollups(CTX, interval_s=60.0, max_series=100)
    for i in range(5000):
        r.add(
            {
                "@timestamp": iso_timestamp(1_800_000_000.0 + i / 1000),
                "network.protocol": "modbus",
                "source.ip": f"10.1.{i // 250}.{i % 250}",
                "destination.ip": "10.0.0.2",
                "destination.port": 502,
                "ics.function": "read_coils",
                "event.outcome": "success",
            }
        )
    docs = r.flush()
    assert len(docs) <= 100 + 10 + 1
    assert sum(d["icsmon.rollup.transactions"] for d in docs) == 5000
    assert r.stats["folded"] > 0 and r.stats["overflow"] > 0


def test_replay_prints_the_same_rollups_every_time(tmp_path: Path) -> None:
    runs = []
    for _ in range(2):
        proc = subprocess.run(
            [
                ICSMON,
                "replay",
                str(TRAIN),
                "--rollups",
                "--format",
                "jsonl",
                "--sink",
                "none",
                "--site",
                "s",
                "--observer",
                "o",
                "--no-rules",
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        runs.append([json.loads(line) for line in proc.stdout.splitlines()])
    assert runs[0] == runs[1] and runs[0]
    assert all(d["event"]["dataset"] == "icsmon.rollup" for d in runs[0])
    ids = [d["event"]["id"] for d in runs[0]]
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize("interval", [1.0, 60.0])
def test_rollups_cut_what_is_sent(interval: float) -> None:
    events = events_of(TRAIN)
    docs, _ = roll(events, interval=interval)
    # a benchmark reports the ratio (bench/bench_rollups.py); here only its direction
    assert len(docs) < len(events)
