"""S7comm / S7comm-plus decoding benchmark: the icsmon parser and engine against tshark.

    .venv/bin/python bench/bench_s7comm.py              # every S7 capture, 20 repetitions
    .venv/bin/python bench/bench_s7comm.py --repeat 5 --shared ../shared/pcaps/public

Captures: every file in ``<shared>/s7comm`` and ``<shared>/s7comm-plus`` (published S7 traffic,
including the 1.5 MB libnodave benchmark capture) and ``pcaps/s7comm/*.pcap`` (python-snap7).

Contenders, each timed over the captures repeated ``--repeat`` times, in this process and run:

- parser: ``s7comm.Parser`` alone, fed the exact byte chunks (and gaps) the engine hands it for
  each connection (recorded once, beforehand): framing, COTP/S7 decoding, pairing, records;
- engine: ``Engine(EngineConfig()).replay([file])`` for each file: capture reading, packet
  decoding, flows, TCP reassembly, the parser, ECS events, asset tracking;
- tshark: ``tshark -r BIG -Y s7comm -T fields -e s7comm.header.rosctr -e s7comm.param.func
  -e s7comm.param.itemcount -e s7comm.header.pduref`` on one file holding every capture
  ``--repeat`` times (``mergecap -a``), output read and its PDUs counted; start-up included.

Rates are S7comm PDUs per second (the PDUs tshark prints; ours counted back from the
transactions, both members of a pair) and events per second for ours. No assertion: numbers.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from sensor.engine import Engine, EngineConfig  # noqa: E402
from sensor.protocols import s7comm  # noqa: E402

Call = tuple[str, bool, bytes, float, int]  # (feed|gap, to_server, data, ts, gap size)


def captures(shared: Path) -> list[Path]:
    files = [
        p for folder in ("s7comm", "s7comm-plus") for p in sorted((shared / folder).glob("*.pcap*"))
    ]
    return files + sorted((REPO / "pcaps" / "s7comm").glob("*.pcap"))


def record_calls(files: list[Path]) -> list[list[Call]]:
    """What the engine feeds each S7 parser, per connection, by replaying every capture once."""
    connections: list[list[Call]] = []
    original = s7comm.Parser

    class Recording(original):  # type: ignore[misc, valid-type]
        def __init__(self, *args: object) -> None:
            super().__init__(*args)
            self.calls: list[Call] = []
            connections.append(self.calls)

        def feed(self, to_server: bool, data: bytes, ts: float) -> list[dict]:
            self.calls.append(("feed", to_server, bytes(data), ts, 0))
            return super().feed(to_server, data, ts)

        def gap(self, to_server: bool, ts: float, size: int) -> list[dict]:
            self.calls.append(("gap", to_server, b"", ts, size))
            return super().gap(to_server, ts, size)

    s7comm.Parser = Recording  # type: ignore[misc]
    try:
        for path in files:
            for _ in Engine(EngineConfig()).replay([path]):
                pass
    finally:
        s7comm.Parser = original  # type: ignore[misc]
    return connections


def pdus_of(records: list[dict]) -> int:
    """S7comm PDUs behind the records (a paired transaction is two PDUs)."""
    n = 0
    for rec in records:
        if rec.get("network.protocol") == "s7comm" and "s7comm.rosctr" in rec:
            n += 2 if "s7comm.response.rosctr" in rec else 1
    return n


def run_parser(connections: list[list[Call]], repeat: int) -> tuple[float, int, int]:
    events = pdus = 0
    start = time.perf_counter()
    for _ in range(repeat):
        for calls in connections:
            parser = s7comm.Parser()
            last = 0.0
            for kind, to_server, data, ts, size in calls:
                recs = (
                    parser.feed(to_server, data, ts)
                    if kind == "feed"
                    else parser.gap(to_server, ts, size)
                )
                events += len(recs)
                pdus += pdus_of(recs)
                last = ts
            recs = parser.close(last)
            events += len(recs)
            pdus += pdus_of(recs)
    return time.perf_counter() - start, events, pdus


def run_engine(files: list[Path], repeat: int) -> tuple[float, int, int]:
    events = pdus = 0
    start = time.perf_counter()
    for _ in range(repeat):
        for path in files:
            batch = [
                e
                for e in Engine(EngineConfig()).replay([path])
                if str(e.get("network.protocol", "")).startswith("s7comm")
            ]
            events += len(batch)
            pdus += pdus_of(batch)
    return time.perf_counter() - start, events, pdus


def run_tshark(files: list[Path], repeat: int, workdir: Path) -> tuple[float, int] | None:
    tshark, mergecap = shutil.which("tshark"), shutil.which("mergecap")
    if not tshark or not mergecap:
        print("tshark/mergecap not installed: tshark line skipped")
        return None
    big = workdir / "s7_all.pcapng"
    subprocess.run(
        [mergecap, "-a", "-F", "pcapng", "-w", str(big), *[str(p) for p in files] * repeat],
        check=True,
    )
    cmd = [
        tshark, "-r", str(big), "-o", "tcp.analyze_sequence_numbers:FALSE", "-Y", "s7comm",
        "-T", "fields", "-e", "s7comm.header.rosctr",
        "-e", "s7comm.param.func", "-e", "s7comm.param.itemcount", "-e", "s7comm.header.pduref",
    ]  # fmt: skip
    start = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    seconds = time.perf_counter() - start
    pdus = sum(len(line.split("\t", 1)[0].split(",")) for line in out.splitlines() if line)
    return seconds, pdus


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=20, help="times each capture is replayed")
    ap.add_argument("--shared", type=Path, default=REPO.parent / "shared" / "pcaps" / "public")
    args = ap.parse_args()
    files = captures(args.shared)
    size = sum(p.stat().st_size for p in files)
    print(
        f"{len(files)} captures, {size / 1e6:.2f} MB, repeated {args.repeat} times; Python {sys.version.split()[0]}"
    )
    connections = record_calls(files)
    print(
        f"{len(connections)} S7 connections, {sum(len(c) for c in connections)} parser calls per repetition"
    )

    rows = []
    seconds, events, pdus = run_parser(connections, args.repeat)
    rows.append(("icsmon parser", seconds, events, pdus))
    seconds, events, pdus = run_engine(files, args.repeat)
    rows.append(("icsmon engine", seconds, events, pdus))
    with tempfile.TemporaryDirectory() as tmp:
        result = run_tshark(files, args.repeat, Path(tmp))
    if result:
        rows.append(("tshark -Y s7comm -T fields", result[0], 0, result[1]))

    print(
        f"\n{'contender':28} {'seconds':>8} {'events':>9} {'events/s':>10} {'S7 PDUs':>9} {'PDUs/s':>10}"
    )
    for name, secs, ev, pd in rows:
        ev_rate = f"{ev / secs:,.0f}" if ev else "-"
        print(f"{name:28} {secs:8.2f} {ev or '-':>9} {ev_rate:>10} {pd:9d} {pd / secs:10,.0f}")
    if result:
        tshark_rate = result[1] / result[0]
        for name, secs, _, pd in rows[:2]:
            print(f"{name} / tshark (S7comm PDUs per second): {pd / secs / tshark_rate:.1f}x")
        if rows[0][3] != result[1]:
            print(
                f"note: PDU counts differ ({rows[0][3]} vs tshark {result[1]}): tshark decodes retransmitted copies too"
            )


if __name__ == "__main__":
    main()
