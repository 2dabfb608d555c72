"""Embedded store: write rate, file size per document and query latency.

    .venv/bin/python bench/bench_store.py                      # 200,000 events, 50,000 alerts
    .venv/bin/python bench/bench_store.py --events 1000000 --alerts 100000 --keep /tmp/s.db
    .venv/bin/python bench/bench_store.py --growth /tmp/poll.pcap --copies 20   # a live store

Documents are the realistic flat documents of the store tests (Modbus, S7comm and OPC UA
events of three sites, the alerts rules would raise on them, their assets), each copy with its
own ``event.id``. Writes go through ``Store.write`` exactly as the sensor's do (batches of
500, WAL). Each query is run once to warm the page cache, then timed as the median of five.
Prints numbers only; nothing is asserted.

``--growth CAPTURE``: how the writer's cost per event grows with the store, as a live
sensor's writer process meets it: the capture's events (the engine's, times as numbers)
``--copies`` times, each copy with new flow ids (a live capture's flows start at new times)
and later times, made into the frames a capture worker sends (``encode_events``, 512 events)
and written through ``Store.write_event_rows`` in the writer process's batches; per copy, the
CPU (user and system: the commits' writes) per event. What is garbage-collected and how
often is set as in the writer process.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import os
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from childproc import own_peak_rss_mb

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline.query import AlertFilter, AssetFilter  # noqa: E402
from pipeline.store import Store  # noqa: E402
from tests.support.store_samples import BASE_TS, SITES, corpus  # noqa: E402


def timed(fn: Callable[[], object], reps: int = 5) -> float:
    fn()
    runs = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - t0)
    return statistics.median(runs) * 1000


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def growth(capture: Path, copies: int, path: Path) -> None:
    """``--growth``: see the module's docstring."""
    from pipeline.store.process import WRITER_BATCH, decode_events, encode_events
    from sensor.engine import Engine, EngineConfig

    events = list(Engine(EngineConfig(site="bench", observer="bench")).replay([capture]))
    span = events[-1]["@timestamp"] - events[0]["@timestamp"] + 1.0

    def frames(copy: int) -> list[bytes]:
        uids: dict[str, str] = {}
        out = []
        for i in range(0, len(events), 512):
            part = []
            for event in events[i : i + 512]:
                uid, _, n = event["event.id"].rpartition("-")
                if uid not in uids:
                    raw = f"{uid}|{copy}".encode()
                    uids[uid] = hashlib.blake2b(raw, digest_size=10).hexdigest()
                part.append(
                    {
                        **event,
                        "event.id": f"{uids[uid]}-{n}",
                        "@timestamp": event["@timestamp"] + copy * span,
                    }
                )
            out.append(encode_events(part)[0])
        return out

    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(f"{path}{suffix}"):
            os.unlink(f"{path}{suffix}")
    gc.freeze()  # as the writer process (pipeline/store/process.py main)
    gc.set_threshold(100_000, 50, 50)
    print(f"{capture}: {len(events):,} events per copy, {copies} copies, store {path}")
    print("| copy | events stored after | µs CPU per event | of it system |")
    print("| ---: | ---: | ---: | ---: |")
    total = 0.0
    with Store(path, batch_size=WRITER_BATCH) as st:
        for copy in range(copies):
            made = frames(copy)
            sys0, cpu0 = resource.getrusage(resource.RUSAGE_SELF).ru_stime, _cpu()
            for frame in made:
                st.write_event_rows(*decode_events(frame))
            st.flush()
            cpu = _cpu() - cpu0
            system = resource.getrusage(resource.RUSAGE_SELF).ru_stime - sys0
            total += cpu
            print(
                f"| {copy} | {len(events) * (copy + 1):,} | {cpu * 1e6 / len(events):.2f} "
                f"| {system * 1e6 / len(events):.2f} |"
            )
    print(f"all: {total * 1e6 / (len(events) * copies):.2f} µs CPU per event")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--alerts", type=int, default=50_000)
    ap.add_argument("--keep", type=Path, help="write the store here and keep it")
    ap.add_argument("--growth", type=Path, metavar="CAPTURE", help="the writer's cost as it grows")
    ap.add_argument("--copies", type=int, default=20, help="copies of the capture (--growth)")
    args = ap.parse_args()
    if args.growth:
        with tempfile.TemporaryDirectory() as folder:
            growth(args.growth, args.copies, args.keep or Path(folder) / "growth.db")
        return

    folder = tempfile.TemporaryDirectory()
    path = args.keep or Path(folder.name) / "bench.db"
    events, alerts, assets = corpus(20_000, seed=3)
    span = 20_000 * 30  # seconds the sample events cover

    t0 = time.perf_counter()
    with Store(path) as st:
        for i in range(args.events):
            ev = events[i % len(events)]
            st.write("event", {**ev, "event.id": f"{ev['event.id']}-{i}"})
    t_events = time.perf_counter() - t0
    size_events = path.stat().st_size

    t0 = time.perf_counter()
    with Store(path) as st:
        for i in range(args.alerts):
            al = alerts[i % len(alerts)]
            st.write("alert", {**al, "event.id": f"{al['event.id']}-{i}"})
        for asset in assets:
            st.write("asset", asset)
    t_alerts = time.perf_counter() - t0
    size_all = path.stat().st_size

    print(f"store: {path}")
    print(
        f"write events: {args.events:,} in {t_events:.1f} s = {args.events / t_events:,.0f}/s, "
        f"{size_events / max(1, args.events):,.0f} bytes/event on disk"
    )
    print(
        f"write alerts: {args.alerts:,} in {t_alerts:.1f} s = {args.alerts / t_alerts:,.0f}/s; "
        f"file {size_all / 1e6:,.1f} MB"
    )
    with Store.open(path, readonly=True) as rd:
        queries: list[tuple[str, Callable[[], object]]] = [
            ("alerts: newest 50 + total", lambda: rd.search_alerts(AlertFilter(limit=50))),
            (
                "alerts: site + severity >= 73",
                lambda: rd.search_alerts(AlertFilter(sites=[SITES[1]], min_severity=73, limit=50)),
            ),
            (
                "alerts: technique T0881",
                lambda: rd.search_alerts(AlertFilter(technique="T0881", limit=50)),
            ),
            (
                "alerts: last hour of data",
                lambda: rd.search_alerts(AlertFilter(since=BASE_TS + span - 3600, limit=50)),
            ),
            (
                "count by labels.site (column)",
                lambda: rd.count_alerts_by(AlertFilter(), "labels.site"),
            ),
            (
                "count by threat.technique.id (side table)",
                lambda: rd.count_alerts_by(AlertFilter(), "threat.technique.id"),
            ),
            (
                "count by threat.tactic.name (side table)",
                lambda: rd.count_alerts_by(AlertFilter(), "threat.tactic.name"),
            ),
            (
                "pairs labels.site x rule.ruleset",
                lambda: rd.count_alerts_by_pair(AlertFilter(), "labels.site", "rule.ruleset"),
            ),
            (
                "count by destination.ip (JSON1)",
                lambda: rd.count_alerts_by(AlertFilter(), "destination.ip"),
            ),
            (
                "histogram 1 h x network.protocol",
                lambda: rd.alert_histogram(AlertFilter(), 3600, "network.protocol"),
            ),
            (
                "last_seen_by observer.name (events)",
                lambda: rd.last_seen_by(AlertFilter(), "observer.name"),
            ),
            ("events: newest 50 + total", lambda: rd.search_events(AlertFilter(limit=50))),
            ("event by id", lambda: rd.get_event(f"{events[7]['event.id']}-{7}")),
            (
                "events: 100 ids",
                lambda: rd.search_events(
                    AlertFilter(
                        ids=[
                            f"{events[i % len(events)]['event.id']}-{i}"
                            for i in range(0, args.events, max(1, args.events // 100))
                        ],
                        limit=100,
                    )
                ),
            ),
            (
                "events: one flow (community_id)",
                lambda: rd.search_events(
                    AlertFilter(community_id=events[0]["network.community_id"], limit=50)
                ),
            ),
            ("assets: all", lambda: rd.search_assets(AssetFilter())),
        ]
        for name, fn in queries:
            print(f"query {name}: {timed(fn):.1f} ms")
    print(f"peak RSS {own_peak_rss_mb():.0f} MB")
    folder.cleanup()


if __name__ == "__main__":
    main()
