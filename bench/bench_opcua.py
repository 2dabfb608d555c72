"""OPC UA decoding benchmark: the icsmon dissector against tshark on the same captures.

    .venv/bin/python bench/bench_opcua.py                 # public + own captures, 20 rounds
    .venv/bin/python bench/bench_opcua.py --rounds 50 --tshark-rounds 3

1. Collects every OPC UA capture in ../shared/pcaps/public/opcua and pcaps/opcua, and cuts
   each TCP connection into the byte feeds the dissector receives (per direction, in order:
   the test helper tests/support/opcua.py, whose byte count the tests check against
   tshark's).
2. icsmon parser: feeds every connection to a fresh ``opcua.Parser`` ``--rounds`` times and
   counts OPC UA messages (chunks, as tshark counts them) and transaction records; no I/O in
   the timed loop. icsmon engine: ``Engine.replay`` over the capture files ``--rounds`` times
   (pcap reading, TCP reassembly, events, assets) for the whole-path rate.
3. tshark: ``tshark -r FILE [-d tcp.port==N,opcua] -Y opcua -T fields -e opcua.transport.type
   -e opcua.servicenodeid.numeric -e opcua.RequestHandle -e opcua.ServiceResult`` per file,
   the fastest of ``--tshark-rounds`` runs, output read and discarded. Reported with and
   without tshark's start-up (the fastest run on a one-packet file, subtracted per file).
4. Prints messages/s, wall-clock and CPU (process CPU for icsmon, children's CPU for tshark:
   the CPU figures hold on a busy machine), and the CPU ratios. Numbers, never an assertion.
"""

from __future__ import annotations

import argparse
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from sensor.engine import Engine, EngineConfig  # noqa: E402
from sensor.protocols import opcua  # noqa: E402
from tests.support.opcua import DECODE_AS, recorded_feeds  # noqa: E402

PUBLIC = REPO.parent / "shared" / "pcaps" / "public" / "opcua"
OWN = REPO / "pcaps" / "opcua"
FIELDS = (
    "opcua.transport.type",
    "opcua.servicenodeid.numeric",
    "opcua.RequestHandle",
    "opcua.ServiceResult",
)


def _ports(path: Path) -> tuple[int, ...]:
    extra = DECODE_AS.get(path.name)
    return (4840,) + ((int(extra.split("==")[1].split(",")[0]),) if extra else ())


def _tshark_cmd(tshark: str, path: Path) -> list[str]:
    cmd = [tshark, "-r", str(path), "-Y", "opcua", "-T", "fields"]
    if path.name in DECODE_AS:
        cmd += ["-d", DECODE_AS[path.name]]
    for field in FIELDS:
        cmd += ["-e", field]
    return cmd


def _cpu_children() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def bench_parser(
    conns: list[list[tuple[bool, bytes, float]]], rounds: int
) -> tuple[int, int, float, float]:
    """(messages, records, wall seconds, CPU seconds) over ``rounds`` passes."""
    messages = 0
    records = 0

    def count(_summary: dict) -> None:
        nonlocal messages
        messages += 1

    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(rounds):
        for feeds in conns:
            parser = opcua.Parser(on_message=count)
            for to_server, data, ts in feeds:
                records += len(parser.feed(to_server, data, ts))
            records += len(parser.close(0.0))
    return messages, records, time.perf_counter() - wall, time.process_time() - cpu


def bench_engine(files: list[Path], rounds: int) -> tuple[int, float, float]:
    events = 0
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(rounds):
        for path in files:
            cfg = EngineConfig(ports={int(p): "opcua" for p in _ports(path)[1:]})
            for _ev in Engine(cfg).replay([path]):
                events += 1
    return events, time.perf_counter() - wall, time.process_time() - cpu


def _run_tshark(cmd: list[str]) -> tuple[str, float, float]:
    cpu = _cpu_children()
    wall = time.perf_counter()
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return out, time.perf_counter() - wall, _cpu_children() - cpu


def bench_tshark(tshark: str, files: list[Path], rounds: int) -> dict[str, float]:
    """Per file, the fastest of ``rounds`` runs (wall and CPU), and the same for a one-packet
    file: tshark's start-up (reading its dissector tables), subtracted for the net figures."""
    with tempfile.TemporaryDirectory() as tmp:
        one = Path(tmp) / "one.pcap"
        subprocess.run(
            ["editcap", "-r", str(files[0]), str(one), "1"], check=True, capture_output=True
        )
        runs = [_run_tshark(_tshark_cmd(tshark, one)) for _ in range(max(3, rounds))]
        start_wall = min(r[1] for r in runs)
        start_cpu = min(r[2] for r in runs)
    result = {"messages": 0.0, "wall": 0.0, "cpu": 0.0, "net_wall": 0.0, "net_cpu": 0.0}
    for path in files:
        runs = [_run_tshark(_tshark_cmd(tshark, path)) for _ in range(rounds)]
        out = runs[0][0]
        result["messages"] += sum(
            len(line.split("\t")[0].split(",")) for line in out.splitlines() if line
        )
        wall = min(r[1] for r in runs)
        cpu = min(r[2] for r in runs)
        result["wall"] += wall
        result["cpu"] += cpu
        result["net_wall"] += max(wall - start_wall, 1e-3)
        result["net_cpu"] += max(cpu - start_cpu, 1e-3)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--rounds",
        type=int,
        default=20,
        help="passes of the icsmon parser/engine over all captures",
    )
    ap.add_argument(
        "--tshark-rounds", type=int, default=2, help="passes of tshark over all captures"
    )
    args = ap.parse_args()
    files = sorted(PUBLIC.glob("*.pcap*")) + sorted(OWN.glob("*.pcap"))
    if not files:
        raise SystemExit(f"no captures in {PUBLIC} or {OWN}")
    conns = [feeds for path in files for feeds in recorded_feeds(path, _ports(path)) if feeds]
    payload = sum(len(d) for feeds in conns for _t, d, _ts in feeds)
    print(f"{len(files)} captures, {len(conns)} connections, {payload} payload bytes per round")

    msgs, recs, secs, cpu = bench_parser(conns, args.rounds)
    per_round = msgs // args.rounds
    print(
        f"icsmon parser : {msgs:8d} messages, {recs} records: {msgs / secs:9.0f} msg/s wall,"
        f" {msgs / cpu:9.0f} msg/s CPU ({payload * args.rounds / cpu / 1e6:.1f} MB/s CPU)"
    )
    events, esecs, ecpu = bench_engine(files, args.rounds)
    print(
        f"icsmon engine : {events:8d} events (same messages): {msgs / esecs:9.0f} msg/s wall,"
        f" {msgs / ecpu:9.0f} msg/s CPU"
    )

    tshark = shutil.which("tshark")
    if not tshark:
        print("tshark not installed: no comparison")
        return
    t = bench_tshark(tshark, files, args.tshark_rounds)
    tm = t["messages"]
    print(
        f"tshark        : {int(tm):8d} messages, best of {args.tshark_rounds} per file: {tm / t['wall']:9.0f} msg/s wall,"
        f" {tm / t['cpu']:9.0f} msg/s CPU; without start-up {tm / t['net_wall']:.0f} wall, {tm / t['net_cpu']:.0f} CPU"
    )
    parser_cpu = per_round / (cpu / args.rounds)
    engine_cpu = per_round / (ecpu / args.rounds)
    print(
        f"ratio (CPU) parser/tshark: {parser_cpu / (tm / t['cpu']):.1f}x, "
        f"without tshark start-up {parser_cpu / (tm / t['net_cpu']):.1f}x"
    )
    print(
        f"ratio (CPU) engine/tshark: {engine_cpu / (tm / t['cpu']):.1f}x, "
        f"without tshark start-up {engine_cpu / (tm / t['net_cpu']):.1f}x"
    )
    if per_round != int(tm):
        print(
            f"note: messages per round differ: icsmon {per_round}, tshark {int(tm)}"
            " (see tests/protocols/opcua/test_conformance.py KNOWN_DIFFERENCES)"
        )


if __name__ == "__main__":
    main()
