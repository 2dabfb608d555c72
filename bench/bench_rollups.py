"""What rollups cost per event, and how much they cut what a sensor ships.

    .venv/bin/python bench/bench_rollups.py                      # the captures in pcaps/
    .venv/bin/python bench/bench_rollups.py --events 400000 --repeat 5
    .venv/bin/python bench/bench_rollups.py --reduction pcaps/plant/*.pcap

Three measurements, CPU time of this process (``time.process_time``: steadier than the wall
clock on a shared machine), each the best of ``--repeat`` runs:

1. ``Rollups.add`` alone over ``--events`` events: the events of every capture in pcaps/,
   repeated with their times moved forward one capture span at a time (so intervals open
   and close as on a long run), built before timing.
2. The same events through the engine first: the per-event cost of decoding them (the
   captures replayed by ``Engine``), so (1) reads as a share of what the sensor already spends.
3. The user's path: ``icsmon.run.Run`` over the engine's events with a sink that drops
   everything, with and without rollups; the difference is what a sensor pays.

And the reduction: for each capture given to ``--reduction`` (default: the polling captures
of pcaps/), events and rollups at the default 60 s interval, and the ratio.
"""

from __future__ import annotations

import argparse
import glob
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from icsmon.run import Detectors, Run  # noqa: E402
from sensor.engine import Engine, EngineConfig  # noqa: E402
from sensor.events import Context, iso_timestamp  # noqa: E402
from sensor.rollups import Rollups  # noqa: E402

CONFIG = {"site": "bench-site", "observer": "bench-sensor", "organization": "bench-org"}


class NullSink:
    def write(self, kind: str, doc: dict) -> None:
        pass

    def close(self) -> None:
        pass


def captures() -> list[Path]:
    return sorted(p for p in (REPO / "pcaps").rglob("*.pcap") if "plant" not in p.parts)


def decode(paths: list[Path]) -> tuple[list[dict], float]:
    """Every event of the captures, and the engine's CPU seconds for them."""
    t0 = time.process_time()
    engine = Engine(EngineConfig(**CONFIG))
    events = list(engine.replay(paths))
    return events, time.process_time() - t0


def shifted(events: list[dict], n: int) -> list[dict]:
    """``n`` events: the list repeated, each pass moved forward by the span of all captures
    plus a minute (ids and times change, the rest is shared)."""
    from sensor.rollups import _TimeParser

    parse = _TimeParser()
    times = [parse(e["@timestamp"]) or 0.0 for e in events]
    span = max(times) - min(times) + 60.0
    out: list[dict] = []
    k = 0
    while len(out) < n:
        shift = span * k
        for ev, ts in zip(events, times, strict=True):
            copy = dict(ev)
            copy["@timestamp"] = iso_timestamp(ts + shift)
            out.append(copy)
            if len(out) == n:
                break
        k += 1
    return out


def best(repeat: int, fn) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.process_time()
        fn()
        times.append(time.process_time() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--reduction", nargs="*", default=None, help="captures for the reduction table")
    args = ap.parse_args()
    print(f"load average at start: {os.getloadavg()[0]:.2f}")

    paths = captures()
    events, _ = decode(paths)
    print(f"{len(events):,} events from {len(paths)} captures in pcaps/")
    stream = shifted(events, args.events)
    ctx = Context(CONFIG["site"], CONFIG["observer"], CONFIG["organization"])

    def add_all() -> None:
        r = Rollups(ctx)
        add = r.add
        for ev in stream:
            add(ev)
        r.flush()

    def loop_only() -> None:
        for _ev in stream:
            pass

    floor = best(args.repeat, loop_only)
    rollup_s = best(args.repeat, add_all) - floor
    per_event_us = rollup_s / len(stream) * 1e6

    decode_s = best(args.repeat, lambda: decode(paths))
    decode_us = decode_s / len(events) * 1e6

    def user_path(with_rollups: bool) -> None:
        engine = Engine(EngineConfig(**CONFIG))
        run = Run(engine, Detectors(), NullSink(), store_events=True)
        if with_rollups:
            run.rollups = Rollups(engine.ctx)
        for _ in run.process(engine.replay(paths), want_events=False):
            pass
        run.stop()

    plain = best(args.repeat, lambda: user_path(False))
    rolled = best(args.repeat, lambda: user_path(True))
    print()
    print("| measure | CPU per event |")
    print("| --- | ---: |")
    print(f"| Rollups.add alone ({len(stream):,} events) | {per_event_us:.2f} µs |")
    print(f"| engine decode (captures in pcaps/) | {decode_us:.2f} µs |")
    print(f"| Run, no rollups | {plain / len(events) * 1e6:.2f} µs |")
    print(f"| Run, rollups | {rolled / len(events) * 1e6:.2f} µs |")
    print(
        f"rollups / decode: {per_event_us / decode_us:.1%}; "
        f"user path with rollups / without: {rolled / plain:.3f}"
    )

    reduction = (
        args.reduction
        if args.reduction is not None
        else sorted(
            glob.glob(str(REPO / "pcaps" / "baseline" / "train.pcap"))
            + glob.glob(str(REPO / "pcaps" / "baseline" / "clean.pcap"))
            + glob.glob(str(REPO / "pcaps" / "plant" / "*.pcap"))
        )
    )
    if reduction:
        print()
        print("| capture | span | events | rollups | events / rollups |")
        print("| --- | ---: | ---: | ---: | ---: |")
        for path in reduction:
            evs, _ = decode([Path(path)])
            r = Rollups(ctx)
            docs = []
            for ev in evs:
                docs += r.add(ev)
            docs += r.flush()
            parse = r._time
            times = [parse(e["@timestamp"]) or 0.0 for e in evs]
            span = max(times) - min(times) if times else 0.0
            ratio = len(evs) / len(docs) if docs else float("nan")
            print(
                f"| {Path(path).relative_to(REPO) if path.startswith(str(REPO)) else path} "
                f"| {span:.0f} s | {len(evs):,} | {len(docs):,} | {ratio:.1f}x |"
            )
    print(f"\nload average at end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
