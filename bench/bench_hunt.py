"""Events per second of ``icsmon hunt`` over a large embedded store, full rule pack.

The store is built from the bench capture (``bench_modbus.build_capture``: pymodbus
conversations of pcaps/modbus/ repeated over many connections), decoded by the sensor engine
and written by the store writer as ``icsmon replay --store`` does (events only, no rules),
then grown to ``--events`` by copying its rows inside SQLite, each copy with new event ids and
times moved on by the span of the original (so correlation windows keep sliding and no two
events share an id). Contenders, each a child process over the same store, wall clock with
start-up, peak RSS (``VmHWM``, bench/childproc.py):

- bare scan: the store's events read in the hunt's order and each document parsed with
  orjson, nothing else: the floor cost of reading history in this language;
- hunt (in process): ``Hunt(SigmaEngine.load()).run(store.scan_events())``, dry run;
- icsmon hunt --dry-run: the command a user runs (progress off: not a terminal).

Prints a table and one JSON line. No asserts.

    .venv/bin/python bench/bench_hunt.py --events 1000000
    .venv/bin/python bench/bench_hunt.py --events 10000000 --store /var/tmp/hunt.db --keep
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sqlite3
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from childproc import run_measured  # noqa: E402

TARGET = 100_000  # events per second, from the issue

BARE = """
import sys
from pipeline.store import Store
n = 0
with Store.open(sys.argv[1], readonly=True) as store:
    for event in store.scan_events():
        n += 1
print(f"events={n}", file=sys.stderr)
"""

IN_PROCESS = """
import sys
from detectors.hunt import Hunt
from detectors.sigma import SigmaEngine
from pipeline.store import Store
with Store.open(sys.argv[1], readonly=True) as store:
    s = Hunt(SigmaEngine.load(), dry_run=True).run(store.scan_events())
print(f"events={s.events} matches={s.matches} alerts={s.alerts} errors={s.errors}", file=sys.stderr)
"""


def build_store(path: Path, events: int, packets: int) -> tuple[int, float]:
    """A store of at least ``events`` events; returns (events, seconds to build)."""
    from bench_modbus import build_capture

    from icsmon.run import Detectors, Run
    from pipeline.store import Store
    from sensor.engine import Engine, EngineConfig

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        capture = Path(tmp) / "bench.pcap"
        build_capture(capture, packets)
        engine = Engine(EngineConfig(site="bench-site", observer="bench-sensor"))
        store = Store.open(path, batch_size=5000)
        try:
            run = Run(engine, Detectors(), store)
            for _ in run.process(engine.replay([capture]), want_events=False):
                pass
        finally:
            store.close()
    copy_store(path, events)
    conn = sqlite3.connect(path)
    try:
        total = conn.execute("SELECT count(*) FROM events").fetchone()[0]
    finally:
        conn.close()
    return total, time.perf_counter() - t0


def copy_store(path: Path, events: int) -> None:
    """Grow the store to ``events`` by copies of its rows and blocks of documents (whole
    blocks: a few more than asked), each copy with new event ids and later times."""
    import orjson

    from pipeline.store.schema import pack_events, unpack_events

    conn = sqlite3.connect(path)
    try:
        base, lo, hi = conn.execute("SELECT count(*), min(ts), max(ts) FROM events").fetchone()
        span = (hi - lo) + 1.0
        blocks = conn.execute(
            "SELECT first, last, docs FROM event_blocks WHERE last <= (SELECT max(rowid) "
            "FROM events) ORDER BY first"
        ).fetchall()
        flows = conn.execute("SELECT block, community_id FROM event_flows").fetchall()
        copies = 0
        while conn.execute("SELECT count(*) FROM events").fetchone()[0] < events:
            copies += 1
            top = conn.execute("SELECT max(last) FROM event_blocks").fetchone()[0]
            need = events - conn.execute("SELECT count(*) FROM events").fetchone()[0]
            chosen, rows = [], 0
            for block in blocks:
                if rows >= need:
                    break
                chosen.append(block)
                rows += block[1] - block[0] + 1
            end = chosen[-1][1]
            suffix = f".{copies}"
            with conn:
                conn.execute(
                    "INSERT INTO events (rowid, id, ts, site, protocol, action, observer, "
                    "community_id) SELECT rowid + ?, id || ?, ts + ?, site, protocol, "
                    "action, observer, community_id FROM events WHERE rowid <= ?",
                    (top, suffix, span * copies, end),
                )
                for first, last, docs in chosen:
                    lines = []
                    for line in unpack_events(docs):
                        if line:
                            doc = orjson.loads(line)
                            doc["event.id"] = f"{doc['event.id']}{suffix}"
                            line = orjson.dumps(doc)
                        lines.append(line)
                    conn.execute(
                        "INSERT INTO event_blocks (first, last, docs) VALUES (?, ?, ?)",
                        (first + top, last + top, pack_events(lines)),
                    )
                conn.executemany(
                    "INSERT INTO event_flows (block, community_id) VALUES (?, ?)",
                    [(block + top, flow) for block, flow in flows if block <= end],
                )
    finally:
        conn.close()


def measure(name: str, argv: list[str], events: int) -> dict:
    """Run a child to completion: wall time, CPU time and its own peak RSS (``VmHWM``)."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    run = run_measured(argv, env=env)
    out = run.stdout.decode(errors="replace")  # both are a few lines
    err = run.stderr.decode(errors="replace")
    if run.returncode != 0:
        raise SystemExit(f"{name} failed: {err[-800:]}")
    note = out.strip() if out.strip().startswith("{") else (err.strip().splitlines() or [""])[-1]
    return {
        "name": name,
        "seconds": round(run.wall_s, 2),
        "cpu_s": round(run.cpu_s, 2),
        "events_per_s": round(events / run.wall_s),
        "events_per_cpu_s": round(events / max(run.cpu_s, 1e-9)),
        "peak_rss_mb": round(run.peak_rss_mb),
        "note": note[:400],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=1_000_000, help="events in the store")
    ap.add_argument(
        "--packets", type=int, default=1_000_000, help="packets of the bench capture decoded"
    )
    ap.add_argument("--store", type=Path, help="where to build the store (default: a temp dir)")
    ap.add_argument("--keep", action="store_true", help="keep the store (reused when present)")
    args = ap.parse_args()

    tmp = tempfile.TemporaryDirectory()
    path = args.store or Path(tmp.name) / "hunt.db"
    if path.exists():
        with sqlite3.connect(path) as conn:
            events = conn.execute("SELECT count(*) FROM events").fetchone()[0]
        build_s = 0.0
    else:
        events, build_s = build_store(path, args.events, args.packets)
    size_mb = sum(p.stat().st_size for p in path.parent.glob(path.name + "*")) / 2**20
    py = sys.executable
    results = [
        measure("bare scan (SQLite + orjson)", [py, "-c", BARE, str(path)], events),
        measure("hunt, in process (dry run)", [py, "-c", IN_PROCESS, str(path)], events),
        measure(
            "icsmon hunt --dry-run",
            [py, "-m", "icsmon.cli", "hunt", "--store", str(path), "--dry-run", "--json"],
            events,
        ),
    ]
    bare = results[0]["events_per_cpu_s"]
    print(f"\nstore: {events:,} events, {size_mb:,.0f} MB (built in {build_s:.0f} s)")
    print(
        f"{'contender':32} {'events/s':>10} {'ev/CPU s':>10} {'seconds':>8} {'cpu s':>8} "
        f"{'RSS MB':>7} {'of bare':>8} {'of target':>10}"
    )
    # Ratios by CPU time: on a shared machine the steadier measure of the work done.
    for r in results:
        print(
            f"{r['name']:32} {r['events_per_s']:>10,} {r['events_per_cpu_s']:>10,} "
            f"{r['seconds']:>8} {r['cpu_s']:>8} {r['peak_rss_mb']:>7} "
            f"{r['events_per_cpu_s'] / bare:>8.2f} {r['events_per_cpu_s'] / TARGET:>10.2f}"
        )
    print(
        json.dumps(
            {
                "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M"),
                "python": platform.python_version(),
                "machine": f"{platform.machine()}, {os.cpu_count()} cpus",
                "load": os.getloadavg(),
                "events": events,
                "store_mb": round(size_mb),
                "results": results,
            }
        )
    )
    if not args.keep:
        tmp.cleanup()


if __name__ == "__main__":
    main()
