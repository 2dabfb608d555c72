"""The user's path: the commands people run, against ``tshark -T fields``, in one run.

    .venv/bin/python bench/bench_user_path.py                     # 200,000 packets, best of 2
    .venv/bin/python bench/bench_user_path.py --repeat 3 --keep --file /tmp/poll.pcap
    .venv/bin/python bench/bench_user_path.py --only store          # the store line alone

1. Builds a capture by repeating the pymodbus polling conversation of
   ``pcaps/modbus/modbus_polling.pcap`` (bench_modbus.build_capture: one client address, a
   new client port per repetition, 64 connections interleaved, checksums recomputed), about
   200,000 packets (~67,000 transactions).
2. Runs, as child processes on that file, output to /dev/null, each round in turn:
   the commands of the table below and ``tshark -r F -Y mbtcp -T fields -e mbtcp.trans_id
   -e modbus.func_code``, then the baseline's (``icsmon baseline learn F -o B``, ``icsmon
   replay F --baseline B``); the store, when there is one, is a new file each time. Prints
   seconds (wall and the child's CPU time) and the ratio to tshark (its time / the
   command's time: above 1 is faster than tshark).
   Below the table, each command's icsmon process: time on a CPU, waiting for one, blocked,
   and its store writer process's CPU (``pipeline/store/process.py``).
3. The store line: the events of the capture (decoded once, in this process) written
   through ``Store.write`` (the store's writer) against a plain ``executemany`` of the same
   rows into a table of the same columns (the JSON document as stored, the id's index
   only, one transaction), in documents per second of CPU, and the bytes each leaves on
   disk per event; and, to split the gap, the same ``executemany`` into the store's own
   tables and indexes; then the store's writer process's loop (``serve``, fed the events
   as the sensor frames them) in µs of CPU per event.
4. Start-up: two of the commands on a capture of a few packets, against ``python -c pass``
   and tshark on the same capture (what a run costs besides its packets).

Numbers only, nothing asserted: the machine is shared, compare ratios within one run.
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_modbus import Result, build_capture, measure  # noqa: E402

PYTHON = sys.executable
ICSMON = shutil.which("icsmon", path=str(Path(PYTHON).parent)) or "icsmon"

# (name, arguments after ``icsmon replay F``, uses a store): the table
COMMANDS: tuple[tuple[str, tuple[str, ...], bool], ...] = (
    ("alerts, no rules", ("--format", "jsonl", "--sink", "none", "--no-rules"), False),
    ("alerts, rules", ("--format", "jsonl", "--sink", "none"), False),
    ("default (rules, store)", (), True),
    ("default, --no-store-events", ("--no-store-events",), True),
    (
        "events jsonl, no rules",
        ("--events", "--format", "jsonl", "--sink", "none", "--no-rules"),
        False,
    ),
    ("events jsonl, rules, store", ("--events", "--format", "jsonl"), True),
)


# Below the table, the baseline's commands: (name, arguments after ``icsmon``, F the
# capture, B a baseline learned from it by the first, in every round before the second)
BASELINE_COMMANDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("baseline learn", ("baseline", "learn", "F", "-o", "B")),
    (
        "alerts, rules, baseline",
        ("replay", "F", "--format", "jsonl", "--sink", "none", "--baseline", "B"),
    ),
)


def command_line(args: tuple[str, ...], store: bool) -> str:
    extra = " --store S" if store else ""
    return f"`icsmon replay F {' '.join(args)}{extra}`".replace("  ", " ").replace(" `", "`")


def run_commands(path: Path, total: int, rounds: int, workdir: Path) -> dict[str, Result]:
    tshark = shutil.which("tshark")
    contenders: list[tuple[str, list[str], bool]] = []
    if tshark:
        contenders.append(
            (
                "tshark -T fields",
                [
                    tshark,
                    "-r",
                    str(path),
                    "-Y",
                    "mbtcp",
                    "-T",
                    "fields",
                    "-e",
                    "mbtcp.trans_id",
                    "-e",
                    "modbus.func_code",
                ],
                False,
            )
        )
    else:
        print("tshark not installed: no ratios")
    store = workdir / "bench.db"
    for name, args, uses_store in COMMANDS:
        argv = [ICSMON, "replay", str(path), *args]
        if uses_store:
            argv += ["--store", str(store)]
        contenders.append((name, argv, uses_store))
    baseline = workdir / "bench.baseline.json"
    for name, args in BASELINE_COMMANDS:
        files = {"F": str(path), "B": str(baseline)}
        contenders.append((name, [ICSMON, *(files.get(a, a) for a in args)], False))
    best: dict[str, Result] = {}
    for round_no in range(1, rounds + 1):
        for name, argv, _uses_store in contenders:
            for suffix in ("", "-wal", "-shm"):
                Path(f"{store}{suffix}").unlink(missing_ok=True)
            res = measure(name, argv, total)
            print(f"round {round_no}: {name}: {res.seconds:.2f} s", flush=True)
            # kept: the round with the least CPU time (the steadier measure on a shared
            # machine: waiting for a CPU does not count)
            if name not in best or res.cpu_seconds < best[name].cpu_seconds:
                best[name] = res
    return best


def print_commands(best: dict[str, Result]) -> None:
    ref = best.get("tshark -T fields")
    print("\n| command | seconds (wall) | seconds (CPU) | against tshark -T fields (wall / CPU) |")
    print("| --- | ---: | ---: | ---: |")
    if ref:
        print(f"| `tshark -T fields` | {ref.seconds:.2f} | {ref.cpu_seconds:.2f} | 1.0x |")

    def row(label: str, r: Result) -> None:
        ratio = ""
        if ref:
            ratio = f"{ref.seconds / r.seconds:.1f}x / {ref.cpu_seconds / r.cpu_seconds:.1f}x"
        print(f"| {label} | {r.seconds:.2f} | {r.cpu_seconds:.2f} | {ratio} |")

    for name, args, uses_store in COMMANDS:
        if (r := best.get(name)) is not None:
            row(command_line(args, uses_store), r)
    print(
        "\n| the baseline's commands | seconds (wall) | seconds (CPU) | against tshark (wall / CPU) |"
    )
    print("| --- | ---: | ---: | ---: |")
    for name, args in BASELINE_COMMANDS:
        if (r := best.get(name)) is not None:
            row(f"`icsmon {' '.join(args)}`", r)
    # Below the table: where each command's wall time went. The icsmon process itself: on a
    # CPU, waiting for one (other work on the machine), blocked (disk, pipe, lock); its store
    # writer process (pipeline/store/process.py) runs beside it: its CPU is the rest of the
    # CPU column.
    print("\nwall time of the icsmon process: on a CPU / waiting for a CPU / blocked; its writer")
    for name, args, uses_store in COMMANDS:
        r = best.get(name)
        if r is not None:
            blocked = r.seconds - r.main_cpu_s - r.main_wait_s
            print(
                f"  {command_line(args, uses_store)}: {r.main_cpu_s:.2f} / {r.main_wait_s:.2f}"
                f" / {blocked:.2f} s; writer process {r.cpu_seconds - r.main_cpu_s:.2f} s CPU"
            )


# -- the store line ------------------------------------------------------------------------


def decoded_events(path: Path) -> list[dict]:
    from sensor.engine import Engine, EngineConfig

    return list(Engine(EngineConfig()).replay([path]))


def store_rate(events: list[dict], workdir: Path) -> float:
    """Documents per second of CPU time through ``Store.write`` (the sensor's sink), from the
    first write to the end of ``close`` (every thread of this process counts: SQLite's work
    too; waiting for a busy CPU does not). Opening the file (the schema) is not timed, as the
    yardstick's table is made before its clock starts."""
    from pipeline.store import Store

    path = workdir / "store_line.db"
    st = Store(path)
    start = time.process_time()
    for event in events:
        st.write("event", event)
    st.close()
    seconds = time.process_time() - start
    FILE_BYTES["store"] = _file_bytes(path)
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    return len(events) / seconds


FILE_BYTES: dict[str, int] = {}  # the last file each contender wrote, bytes (WAL included)


def _file_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in (path, Path(f"{path}-wal")) if p.exists())


def executemany_rate(events: list[dict], workdir: Path) -> float:
    """The yardstick: the same rows (id, time, the indexed columns, the JSON document as the
    store keeps it, times as text) by one plain ``executemany`` into a table of the same
    columns, no index but the id, one transaction. The rows are made in the timed part, one
    at a time as SQLite takes them (a generator, as ``Store.write`` makes them batch by batch):
    building all 84,480 first would time the allocation of some 200 MB of fresh memory (page
    faults, and collections walking every row), which a sink never holds and whose cost
    swings with the machine's load (it made this line read 76% one day, 271% another)."""
    from pipeline.docs import dumps
    from pipeline.store.schema import TABLES
    from sensor.timestamps import render_times

    table = TABLES["event"]
    columns = list(table.columns.values())
    fields = list(table.columns)
    path = workdir / "executemany.db"
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    names = ", ".join(["id", "ts", *columns, "doc"])
    db.execute(f"CREATE TABLE t (id TEXT PRIMARY KEY, ts REAL, {', '.join(columns)}, doc TEXT)")
    marks = ", ".join("?" * (len(columns) + 3))
    start = time.process_time()
    # the document as the store keeps it: times as ISO text (sensor/timestamps.py)
    rows = (
        (
            e["event.id"],
            e["@timestamp"],
            *[e.get(f) for f in fields],
            dumps(render_times(e)).decode(),
        )
        for e in events
    )
    db.execute("BEGIN")
    db.executemany(f"INSERT INTO t ({names}) VALUES ({marks})", rows)
    db.execute("COMMIT")
    db.close()
    seconds = time.process_time() - start
    FILE_BYTES["executemany"] = _file_bytes(path)
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    return len(events) / seconds


def same_schema_rate(events: list[dict], workdir: Path) -> float:
    """Plain ``executemany`` into the store's own tables (``events``, ``event_blocks`` and
    ``event_flows``, their indexes: the schema of ``pipeline.store.schema``), one
    transaction, rows made as SQLite takes them (2,000 at a time, documents as the store
    keeps them: compressed blocks of ``BLOCK_EVENTS``): what the schema itself costs,
    without the store's batching, de-duplication and bookkeeping. Below the target's line,
    for the split."""
    from pipeline.docs import dumps
    from pipeline.store.schema import BLOCK_EVENTS, TABLES, create, pack_events
    from sensor.timestamps import parse_timestamp

    table = TABLES["event"]
    fields = list(table.columns)
    names = ", ".join(["rowid", "id", "ts", *table.columns.values()])
    marks = ", ".join("?" * (len(fields) + 3))
    path = workdir / "same_schema.db"
    db = sqlite3.connect(path, isolation_level=None)
    create(db)
    start = time.process_time()
    db.execute("BEGIN")
    for first in range(0, len(events), 2000):
        batch = events[first : first + 2000]
        db.executemany(
            f"INSERT INTO events ({names}) VALUES ({marks})",
            (
                (first + i, d["event.id"], parse_timestamp(d["@timestamp"]), *map(d.get, fields))
                for i, d in enumerate(batch, 1)
            ),
        )
        docs = [dumps(d) for d in batch]
        blocks = range(0, len(docs), BLOCK_EVENTS)
        db.executemany(
            "INSERT INTO event_blocks (first, last, docs) VALUES (?, ?, ?)",
            (
                (
                    first + j + 1,
                    first + j + len(docs[j : j + BLOCK_EVENTS]),
                    pack_events(docs[j : j + BLOCK_EVENTS]),
                )
                for j in blocks
            ),
        )
        db.executemany(
            "INSERT INTO event_flows (block, community_id) VALUES (?, ?)",
            (
                (first + j + 1, flow)
                for j in blocks
                for flow in {d.get("network.community_id") for d in batch[j : j + BLOCK_EVENTS]}
                if isinstance(flow, str)
            ),
        )
    db.execute("COMMIT")
    db.close()
    seconds = time.process_time() - start
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    return len(events) / seconds


def writer_loop_us(events: list[dict], workdir: Path) -> float:
    """CPU µs per event of the store's writer process's loop (``pipeline.store.process.serve``
    run here, fed the events as the sensor frames them: ``encode_events`` by ``BLOCK_DOCS``),
    from its first frame to the store closed; its start-up (interpreter, imports) is not in
    it. What ``icsmon replay --store`` and ``sense`` pay per stored event on the other core."""
    import io

    from pipeline.store.process import _HEAD, BLOCK_DOCS, EVENTS, encode_events, serve

    frames = io.BytesIO()
    for first in range(0, len(events), BLOCK_DOCS):
        payload = encode_events(events[first : first + BLOCK_DOCS])[0]
        frames.write(_HEAD.pack(EVENTS, len(payload)) + payload)
    frames.seek(0)
    path = workdir / "writer_loop.db"
    start = time.process_time()
    serve(path, {}, frames, io.BytesIO())
    seconds = time.process_time() - start
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    return seconds / len(events) * 1e6


def run_store_line(path: Path, workdir: Path, rounds: int) -> None:
    events = decoded_events(path)
    # The decoded events are this bench's input, not a sink's state: out of the collector's
    # walks for both contenders alike.
    gc.collect()
    gc.freeze()
    best_store = best_plain = best_schema = 0.0
    best_loop = float("inf")
    for _ in range(rounds):
        best_plain = max(best_plain, executemany_rate(events, workdir))
        best_store = max(best_store, store_rate(events, workdir))
        best_schema = max(best_schema, same_schema_rate(events, workdir))
        best_loop = min(best_loop, writer_loop_us(events, workdir))
    gc.unfreeze()
    print(
        f"\nstore: {len(events):,} events; Store.write {best_store:,.0f} docs/s, plain "
        f"executemany {best_plain:,.0f} docs/s (CPU time of this process, SQLite included): "
        f"{best_store / best_plain:.0%} of it (target >= 80%)"
    )
    n = len(events)
    print(
        f"  bytes on disk per event: the store {FILE_BYTES['store'] / n:,.0f} (documents in "
        f"compressed blocks), the plain table {FILE_BYTES['executemany'] / n:,.0f} (one JSON "
        "text each): the store writes fewer bytes than its yardstick"
    )
    print(
        f"  split: executemany into the store's own tables and indexes {best_schema:,.0f} "
        f"docs/s ({best_schema / best_plain:.0%} of the plain table: the schema's cost); "
        f"Store.write is {best_store / best_schema:.0%} of that (the store's own work)"
    )
    print(
        f"  the writer process's loop (the sensor's store: frames in, store closed; no "
        f"start-up): {best_loop:.2f} µs of CPU per event"
    )


# -- start-up ---------------------------------------------------------------------------------

TINY = Path(__file__).resolve().parent.parent / "pcaps" / "modbus" / "modbus_polling.pcap"

# (name, arguments after ``icsmon replay T``, uses a store): what a run costs before and
# around its packets, on a capture of one short conversation
STARTUP_COMMANDS: tuple[tuple[str, tuple[str, ...], bool], ...] = (
    ("alerts, rules", ("--format", "jsonl", "--sink", "none"), False),
    ("default (rules, store)", (), True),
)


def startup_lines(workdir: Path, rounds: int) -> None:
    """The commands on a capture of a few packets (``pcaps/modbus/modbus_polling.pcap``): the
    interpreter, imports, the rule pack (from its cache after the first run:
    detectors/sigma/pack.py), the store's writer process; ``python -c pass`` and tshark's
    own start-up for scale."""
    contenders: list[tuple[str, list[str], bool]] = [
        ("python -c pass", [PYTHON, "-c", "pass"], False)
    ]
    if tshark := shutil.which("tshark"):
        fields = ["-T", "fields", "-e", "mbtcp.trans_id", "-e", "modbus.func_code"]
        contenders.append(
            ("tshark -T fields", [tshark, "-r", str(TINY), "-Y", "mbtcp", *fields], False)
        )
    store = workdir / "startup.db"
    for name, args, uses_store in STARTUP_COMMANDS:
        argv = [ICSMON, "replay", str(TINY), *args]
        contenders.append(
            (name, argv + (["--store", str(store)] if uses_store else []), uses_store)
        )
    best: dict[str, Result] = {}
    for _ in range(rounds):
        for name, argv, _uses_store in contenders:
            for suffix in ("", "-wal", "-shm"):
                Path(f"{store}{suffix}").unlink(missing_ok=True)
            res = measure(name, argv, 0)
            if name not in best or res.cpu_seconds < best[name].cpu_seconds:
                best[name] = res
    print(f"\nstart-up: {TINY.name} (a few packets), best of {rounds} by CPU time:\n")
    print("| command | seconds (wall) | seconds (CPU) |")
    print("| --- | ---: | ---: |")
    for name, argv, uses_store in contenders:
        r = best[name]
        label = name
        if argv[0] == ICSMON:
            label = command_line(tuple(argv[3:-2] if uses_store else argv[3:]), uses_store)
            label = label.replace("replay F", "replay T")
        print(f"| {label} | {r.seconds:.2f} | {r.cpu_seconds:.2f} |")


# -- the detectors' cost per event -----------------------------------------------------------


def detector_costs(path: Path, rounds: int) -> None:
    """CPU time per event of each part a run applies to every event, on the decoded events
    of the capture (the engine's own time is the first line, per event too): the rule pack,
    the baseline (learned from this same capture: every event is then normal, the path most
    events take), the findings tracker, the rollups, and the two lines a document becomes:
    the store's (what ``WriterStore.write`` sends its writer process) and the printed one
    (``--format jsonl``).

    The engine is timed as a run uses it, each event dropped once handled; the parts are fed
    the events kept in a list, moved out of the collector's sight first (``gc.freeze``): a
    run holds no such list, and the collector walking it would be counted against them."""
    from detectors.baseline import BaselineDetector, BaselineLearner
    from icsmon.run import load_detectors
    from pipeline.docs import dumps, nest
    from pipeline.store.process import BLOCK_DOCS, EventsFrame
    from sensor.engine import Engine, EngineConfig
    from sensor.rollups import Rollups

    decode = float("inf")
    for _ in range(rounds):
        start = time.process_time()
        for _event in Engine(EngineConfig()).replay([path]):
            pass
        decode = min(decode, time.process_time() - start)
    engine = Engine(EngineConfig())
    events = list(engine.replay([path]))
    gc.freeze()
    learner = BaselineLearner()
    start = time.process_time()
    for event in events:
        learner.observe(event)
    baseline = learner.result()
    learn = time.process_time() - start

    def parts() -> dict[str, object]:
        sigma, findings = load_detectors(None, False, None, None).parts
        return {
            "rule pack (SigmaEngine)": sigma,
            "baseline (BaselineDetector)": BaselineDetector(baseline),
            "findings (FindingTracker)": findings,
            "rollups (Rollups)": Rollups(engine.ctx, 60.0),
            "the store's line (pipeline.store.process.EventsFrame)": _StoreLine(
                EventsFrame, BLOCK_DOCS
            ),
            "the printed line (pipeline.docs.nest, dumps)": _PrintedLine(nest, dumps),
        }

    best: dict[str, float] = {}
    for _ in range(rounds):
        for name, part in parts().items():
            feed = part.add if isinstance(part, Rollups) else part.process  # type: ignore[attr-defined]
            start = time.process_time()
            for event in events:
                feed(event)
            seconds = time.process_time() - start
            best[name] = min(best.get(name, seconds), seconds)
    n = len(events)
    print(f"\n{n:,} events; CPU time per event (best of {rounds}):\n")
    print("| part | µs per event | seconds for the capture |")
    print("| --- | ---: | ---: |")
    print(f"| engine (decode to events, for scale) | {decode / n * 1e6:.1f} | {decode:.2f} |")
    print(f"| baseline learning (once) | {learn / n * 1e6:.1f} | {learn:.2f} |")
    for name, seconds in best.items():
        print(f"| {name} | {seconds / n * 1e6:.1f} | {seconds:.2f} |")
    gc.unfreeze()


class _StoreLine:
    """An event made into what the store's writer process receives (its row's columns and
    its JSON, added to an events frame; a frame made every ``block`` events), as a part."""

    def __init__(self, frame: Callable[[], Any], block: int) -> None:
        self.new_frame = frame
        self.block = block
        self.frame = frame()

    def process(self, event: dict) -> None:
        self.frame.add(event)
        if len(self.frame) >= self.block:
            self.frame.frame()
            self.frame = self.new_frame()


class _PrintedLine:
    """An event made into its printed JSON line (``--format jsonl``), as a part."""

    def __init__(self, nest: Callable[[dict], dict], dumps: Callable[[dict], bytes]) -> None:
        self.nest = nest
        self.dumps = dumps

    def process(self, event: dict) -> None:
        self.dumps(self.nest(event))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--packets", type=int, default=200_000, help="size of the built capture")
    ap.add_argument("--file", type=Path, help="where to build the capture (default: a temp dir)")
    ap.add_argument("--keep", action="store_true", help="keep the built capture")
    ap.add_argument(
        "--reuse", action="store_true", help="use --file as it is if it exists (and leave it there)"
    )
    ap.add_argument(
        "--repeat", type=int, default=2, help="rounds; the one with the least CPU time is kept"
    )
    ap.add_argument(
        "--only",
        default="commands,startup,store,detectors",
        help="commands, startup, store, detectors",
    )
    args = ap.parse_args()
    only = set(args.only.split(","))

    workdir = Path(tempfile.mkdtemp(prefix="icsmon-bench-"))
    path = args.file or workdir / "modbus_polling.pcap"
    built = False  # a capture this run made goes at the end unless --keep; a reused one stays
    try:
        if args.reuse and path.exists():
            total = sum(1 for _ in _records(path))
        else:
            built = True
            total = build_capture(path, args.packets, ("modbus_polling.pcap",))
        print(f"capture {path}: {total:,} packets, {path.stat().st_size / 1e6:.1f} MB")
        load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
        print(f"Python {sys.version.split()[0]}; {os.cpu_count()} CPUs; load average {load}")
        if "commands" in only:
            print_commands(run_commands(path, total, args.repeat, workdir))
        if "startup" in only:
            startup_lines(workdir, max(args.repeat, 3))
        if "store" in only:
            run_store_line(path, workdir, args.repeat)
        if "detectors" in only:
            detector_costs(path, args.repeat)
        load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
        print(f"load average at the end {load}")
    finally:
        if built and not args.keep:
            path.unlink(missing_ok=True)
        shutil.rmtree(workdir, ignore_errors=True)


def _records(path: Path):
    import struct

    with path.open("rb") as f:
        f.read(24)
        while True:
            head = f.read(16)
            if len(head) < 16:
                return
            caplen = struct.unpack("<IIII", head)[2]
            f.seek(caplen, 1)
            yield caplen


if __name__ == "__main__":
    main()
