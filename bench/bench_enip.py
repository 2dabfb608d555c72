"""EtherNet/IP / CIP decoding benchmark: the icsmon parser and engine against tshark and a
bare struct pass, in one run.

    .venv/bin/python bench/bench_enip.py              # every EtherNet/IP capture, 10 repetitions
    .venv/bin/python bench/bench_enip.py --repeat 3 --shared ../shared/pcaps/public

Captures: every file in ``<shared>/enip`` (published traffic: Logix polling with Multiple
Service Packets of up to 30 tag reads, firmware transfer, Quickdraw attack sessions) and
``pcaps/enip/*.pcap`` (cpppo, pycomm3), repeated ``--repeat`` times.

Contenders:

- parser: ``enip.Parser`` alone, fed the exact byte chunks (and gaps) the engine hands it for
  each connection (recorded once, beforehand): framing, CPF, CIP and EPATH decoding, pairing,
  records (one per CIP service);
- engine: ``Engine(EngineConfig()).replay([file])`` for each file: capture reading, packet
  decoding, flows, TCP reassembly, the parser, ECS events, asset tracking;
- struct pass: the same chunks framed by encapsulation header with ``struct`` and nothing
  else (no CPF, no CIP, no records): the floor of any Python decoder of this stream;
- tshark: ``tshark -r BIG -o tcp.analyze_sequence_numbers:FALSE -Y enip -T fields -e
  enip.command -e cip.service -e cip.class`` on one file holding every capture ``--repeat``
  times (``mergecap -a``), output read and its CIP messages counted; start-up included.

Rates are CIP messages per second (the ``cip.service`` occurrences tshark prints: requests,
replies and the messages Multiple Service Packets and Unconnected Sends embed; ours counted
back from the records the same way) and events per second for ours. No assertion: numbers.
"""

from __future__ import annotations

import argparse
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from sensor.engine import Engine, EngineConfig  # noqa: E402
from sensor.protocols import enip  # noqa: E402

Call = tuple[str, bool, bytes, float, int]  # (feed|gap, to_server, data, ts, gap size)


def captures(shared: Path) -> list[Path]:
    return sorted((shared / "enip").glob("*.pcap*")) + sorted((REPO / "pcaps/enip").glob("*.pcap"))


def record_calls(files: list[Path]) -> list[list[Call]]:
    """What the engine feeds each EtherNet/IP parser, per connection, replaying every capture."""
    connections: list[list[Call]] = []
    original = enip.Parser

    class Recording:
        """Wraps a parser (the compiled one cannot be subclassed) and keeps its input."""

        def __init__(self, *args: object) -> None:
            self.parser = original(*args)
            self.calls: list[Call] = []
            connections.append(self.calls)

        def feed(self, to_server: bool, data: bytes, ts: float) -> list[dict]:
            self.calls.append(("feed", to_server, bytes(data), ts, 0))
            return self.parser.feed(to_server, data, ts)

        def gap(self, to_server: bool, ts: float, size: int) -> list[dict]:
            self.calls.append(("gap", to_server, b"", ts, size))
            return self.parser.gap(to_server, ts, size)

        def close(self, ts: float) -> list[dict]:
            return self.parser.close(ts)

    enip.Parser = Recording  # type: ignore[misc]
    try:
        for path in files:
            for _ in Engine(EngineConfig()).replay([path]):
                pass
    finally:
        enip.Parser = original  # type: ignore[misc]
    return connections


def messages_of(records: list[dict]) -> int:
    """CIP messages behind the records, as tshark counts ``cip.service``."""
    n = 0
    for rec in records:
        if "cip.service_code" not in rec:
            continue
        pairing = rec["ics.pairing"]
        first = rec.get("cip.multiple_index", 0) == 0
        via = rec.get("cip.via", ())
        if pairing != "response-only":
            n += (
                1
                + (first and "unconnected_send" in via)
                + (first and "multiple_service_packet" in via)
            )
        if pairing != "request-only" and "cip.status" in rec:
            n += 1 + (first and "multiple_service_packet" in via)
    return n


def run_parser(connections: list[list[Call]], repeat: int) -> tuple[float, int, int]:
    events = messages = 0
    start = time.perf_counter()
    for _ in range(repeat):
        for calls in connections:
            parser = enip.Parser()
            last = 0.0
            for kind, to_server, data, ts, size in calls:
                recs = (
                    parser.feed(to_server, data, ts)
                    if kind == "feed"
                    else parser.gap(to_server, ts, size)
                )
                events += len(recs)
                messages += messages_of(recs)
                last = ts
            recs = parser.close(last)
            events += len(recs)
            messages += messages_of(recs)
    return time.perf_counter() - start, events, messages


_HEADER = struct.Struct("<HHII8sI")


def run_struct(connections: list[list[Call]], repeat: int) -> tuple[float, int]:
    """Frame each direction by encapsulation header and unpack it: nothing more."""
    frames = 0
    start = time.perf_counter()
    unpack = _HEADER.unpack_from
    for _ in range(repeat):
        for calls in connections:
            bufs = {True: b"", False: b""}
            for kind, to_server, data, _ts, _size in calls:
                if kind == "gap":
                    bufs[to_server] = b""
                    continue
                buf = bufs[to_server] + data
                pos = 0
                while len(buf) - pos >= 24:
                    _c, length, _s, _st, _ctx, _o = unpack(buf, pos)
                    if pos + 24 + length > len(buf):
                        break
                    pos += 24 + length
                    frames += 1
                bufs[to_server] = buf[pos:]
    return time.perf_counter() - start, frames


def run_engine(files: list[Path], repeat: int) -> tuple[float, int, int]:
    events = messages = 0
    start = time.perf_counter()
    for _ in range(repeat):
        for path in files:
            batch = [
                e
                for e in Engine(EngineConfig()).replay([path])
                if e.get("network.protocol") == "enip"
            ]
            events += len(batch)
            messages += messages_of(batch)
    return time.perf_counter() - start, events, messages


def run_tshark(files: list[Path], repeat: int, workdir: Path) -> tuple[float, int] | None:
    tshark, mergecap = shutil.which("tshark"), shutil.which("mergecap")
    if not tshark or not mergecap:
        print("tshark/mergecap not installed: tshark line skipped")
        return None
    big = workdir / "enip_all.pcapng"
    subprocess.run([mergecap, "-a", "-F", "pcapng", "-w", str(big), *[str(p) for p in files] * repeat],
                   check=True)  # fmt: skip
    cmd = [
        tshark, "-r", str(big), "-o", "tcp.analyze_sequence_numbers:FALSE",
        "-d", "tcp.port==1102,enip", "-Y", "enip && tcp", "-T", "fields", "-E", "occurrence=a",
        "-e", "enip.command", "-e", "cip.service", "-e", "cip.class",
    ]  # fmt: skip
    start = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    seconds = time.perf_counter() - start
    messages = 0
    for line in out.splitlines():
        cols = line.split("\t")
        if len(cols) > 1 and cols[1]:
            messages += len(cols[1].split(","))
    return seconds, messages


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=10, help="times each capture is replayed")
    ap.add_argument("--shared", type=Path, default=REPO.parent / "shared" / "pcaps" / "public")
    args = ap.parse_args()
    files = captures(args.shared)
    size = sum(p.stat().st_size for p in files)
    print(f"{len(files)} captures, {size / 1e6:.2f} MB, repeated {args.repeat} times; "
          f"Python {sys.version.split()[0]}")  # fmt: skip
    connections = record_calls(files)
    print(f"{len(connections)} EtherNet/IP connections, "
          f"{sum(len(c) for c in connections)} parser calls per repetition")  # fmt: skip

    rows = []
    seconds, events, messages = run_parser(connections, args.repeat)
    rows.append(("icsmon parser", seconds, events, messages))
    seconds, events, messages = run_engine(files, args.repeat)
    rows.append(("icsmon engine", seconds, events, messages))
    struct_seconds, frames = run_struct(connections, args.repeat)
    with tempfile.TemporaryDirectory() as tmp:
        result = run_tshark(files, args.repeat, Path(tmp))
    if result:
        rows.append(("tshark -Y enip -T fields", result[0], 0, result[1]))

    print(
        f"\n{'contender':28} {'seconds':>8} {'events':>9} {'events/s':>10} {'CIP msgs':>9} {'msgs/s':>10}"
    )
    for name, secs, ev, msgs in rows:
        ev_rate = f"{ev / secs:,.0f}" if ev else "-"
        print(f"{name:28} {secs:8.2f} {ev or '-':>9} {ev_rate:>10} {msgs:9d} {msgs / secs:10,.0f}")
    print(f"{'struct pass (framing only)':28} {struct_seconds:8.2f} {'-':>9} {'-':>10} "
          f"{frames:9d} encapsulation messages, {frames / struct_seconds:,.0f}/s")  # fmt: skip
    if result:
        tshark_rate = result[1] / result[0]
        for name, secs, _, msgs in rows[:2]:
            print(f"{name} / tshark (CIP messages per second): {msgs / secs / tshark_rate:.1f}x")
        print(f"icsmon parser / struct pass (seconds): {rows[0][1] / struct_seconds:.1f}x slower")
        if rows[0][3] != result[1]:
            print(f"note: message counts differ ({rows[0][3]} vs tshark {result[1]})")


if __name__ == "__main__":
    main()
