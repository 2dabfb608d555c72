"""Resource limits under hostile traffic, and long-run stability (see bench/README.md, "Limits").

    .venv/bin/python bench/bench_limits.py flood [--flows 1000000] [--max-flows N]
    .venv/bin/python bench/bench_limits.py trickle [--kind cotp|opcua] [--mbytes 64]
    .venv/bin/python bench/bench_limits.py soak [--minutes 10] [--pcap pcaps/baseline/train.pcap]

``flood``: a generated capture of ``--flows`` distinct TCP flows (one SYN each to port 502)
with the real pymodbus conversations of pcaps/modbus/ (polling, writes) spread through it,
replayed by the engine in a child process; prints time, the child's peak RSS (``VmHWM``,
bench/childproc.py), the flow counters, and whether the mixed-in Modbus traffic decoded to the
same events as when replayed alone. ``trickle``: one connection sending ``--mbytes`` MiB that
never completes a PDU. ``soak``: one engine fed the same capture in a loop (timestamps moved
forward each round, as a sensor running for months sees them) for ``--minutes``; prints RSS
at start and end and every minute. Numbers, never asserts.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from childproc import own_peak_rss_mb, run_measured

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sensor.capture import CaptureReader  # noqa: E402
from sensor.engine import Engine, EngineConfig  # noqa: E402
from sensor.flows import FlowLimits  # noqa: E402
from tests.support.floodgen import real_modbus_frames, syn_flood, trickle  # noqa: E402


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def modbus_signature(events) -> list[tuple]:
    """What the real Modbus traffic decoded to, comparable across runs."""
    return sorted(
        (
            e.get("event.action"),
            e.get("modbus.transaction_id"),
            e.get("modbus.function_code"),
            str(e.get("modbus.values")),
            e.get("event.outcome"),
        )
        for e in events
        if e.get("network.protocol") == "modbus"
    )


def child_replay(path: str, max_flows: int, want: str) -> None:
    """Runs in the child: replay, print a JSON line of results."""
    eng = Engine(EngineConfig(limits=FlowLimits(max_flows=max_flows)))
    t = time.perf_counter()
    events = list(eng.replay([path]))
    elapsed = time.perf_counter() - t
    sig = modbus_signature(events)
    expected = json.loads(Path(want).read_text()) if want else None
    print(
        json.dumps(
            {
                "seconds": round(elapsed, 2),
                "stats": eng.stats,
                "errors": eng.errors,
                "modbus_events": len(sig),
                "modbus_same_as_alone": None
                if expected is None
                else [list(x) for x in sig] == expected,
            }
        )
    )


def run_child(args: list[str]) -> tuple[dict, float, float]:
    run = run_measured([sys.executable, __file__, *args], stderr=None)
    if run.returncode:
        raise SystemExit(f"child failed with status {run.returncode}")
    return json.loads(run.stdout), run.wall_s, run.peak_rss_mb


def flood(ns: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        mix = real_modbus_frames()
        alone = Path(tmp) / "alone.pcap"
        syn_flood(alone, 0, mix)
        want = Path(tmp) / "want.json"
        want.write_text(json.dumps([list(x) for x in modbus_signature(Engine().replay([alone]))]))
        path = Path(tmp) / "flood.pcap"
        t = time.perf_counter()
        packets = syn_flood(path, ns.flows, mix)
        gen = time.perf_counter() - t
        print(
            f"generated {packets:,} packets ({path.stat().st_size / 2**20:.1f} MiB) in {gen:.1f} s"
        )
        res, wall, rss = run_child(["_child", str(path), str(ns.max_flows), str(want)])
        s = res["stats"]
        print(
            f"max_flows {ns.max_flows:,}: {res['seconds']} s in the engine ({wall:.1f} s wall with start-up), "
            f"peak RSS {rss:.0f} MB, {packets / res['seconds']:,.0f} packets/s"
        )
        print(
            f"flows {s['flows']:,}, cap-evicted {s['flows_cap_evicted']:,}, idle-evicted {s['flows_idle_evicted']:,}, "
            f"active at end {s['flows_active']}, events {s['events']}, anomalies {s['anomalies']}"
        )
        print(
            f"mixed-in Modbus: {res['modbus_events']} events, same as replayed alone: {res['modbus_same_as_alone']}"
        )


def trickle_cmd(ns: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "trickle.pcap"
        packets = trickle(path, ns.kind, ns.mbytes << 20)
        res, wall, rss = run_child(["_child", str(path), str(FlowLimits().max_flows), ""])
        s = res["stats"]
        print(
            f"{ns.kind}: {packets:,} packets, {ns.mbytes} MiB of payload in one connection, "
            f"{res['seconds']} s, peak RSS {rss:.0f} MB, events {s['events']}, anomalies {s['anomalies']}"
        )


def soak(ns: argparse.Namespace) -> None:
    frames = list(CaptureReader(ns.pcap))
    span = frames[-1][0] - frames[0][0] + 1.0
    eng = Engine(EngineConfig())
    end = time.monotonic() + ns.minutes * 60
    rounds = events = 0
    start_rss = None
    next_report = time.monotonic()
    t0 = time.monotonic()
    while time.monotonic() < end:
        shift = rounds * span
        for _ in eng.run([(ts + shift, lt, data) for ts, lt, data in frames]):
            events += 1
        rounds += 1
        if rounds == 3:  # after warm-up: imports, caches, first flows
            start_rss = _rss_mb()
            print(f"start (after 3 rounds): RSS {start_rss:.1f} MB", flush=True)
        if time.monotonic() >= next_report:
            print(
                f"{(time.monotonic() - t0) / 60:5.1f} min: {rounds} rounds, {events:,} events, "
                f"RSS {_rss_mb():.1f} MB, active flows {eng.nflows}",
                flush=True,
            )
            next_report += 60
    for _ in eng.finish():
        events += 1
    s = eng.stats
    print(
        f"end: {rounds} rounds of {len(frames)} packets in {(time.monotonic() - t0) / 60:.1f} min, {events:,} events, "
        f"RSS start {start_rss} MB, end {_rss_mb():.1f} MB, peak {own_peak_rss_mb():.1f} MB, "
        f"flows {s['flows']:,}, active {eng.nflows}"
    )


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_child":
        child_replay(sys.argv[2], int(sys.argv[3]), sys.argv[4])
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("flood")
    p.add_argument("--flows", type=int, default=1_000_000)
    p.add_argument("--max-flows", type=int, default=FlowLimits().max_flows)
    p = sub.add_parser("trickle")
    p.add_argument("--kind", choices=("cotp", "opcua"), default="cotp")
    p.add_argument("--mbytes", type=int, default=64)
    p = sub.add_parser("soak")
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--pcap", default=str(ROOT / "pcaps/baseline/train.pcap"))
    ns = ap.parse_args()
    {"flood": flood, "trickle": trickle_cmd, "soak": soak}[ns.cmd](ns)


if __name__ == "__main__":
    main()
