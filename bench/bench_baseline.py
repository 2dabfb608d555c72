"""Baseline learning and detection speed, and the load time of a large baseline.

    .venv/bin/python bench/bench_baseline.py [--repeat N] [--conversations N]

Learning and detection run on the events of pcaps/baseline/train.pcap and clean.pcap
(decoded once, replayed ``--repeat`` times with shifted timestamps, so only the baseline
code is timed). Numbers, never asserts.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from detectors.baseline import Baseline, BaselineDetector, BaselineLearner  # noqa: E402
from detectors.baseline.features import event_time  # noqa: E402
from detectors.baseline.model import iso  # noqa: E402
from sensor.engine import Engine, EngineConfig  # noqa: E402


def shifted(events: list[dict], repeat: int, span: float) -> list[dict]:
    out = []
    for rep in range(repeat):
        for e in events:
            copy = dict(e)
            copy["@timestamp"] = iso(event_time(e) + rep * span)
            out.append(copy)
    return out


def span(events: list[dict]) -> float:
    times = [event_time(e) for e in events]
    return max(times) - min(times)


def synthetic_baseline(conversations: int) -> Baseline:
    learner = BaselineLearner()
    t0 = 1_700_000_000.0
    for i in range(conversations):
        client = f"10.{i // 250 % 250}.{i % 250}.{1 + i // 62500}"
        server = f"10.200.{i % 40}.1"
        for k in range(9):
            fc = 6 if k == 8 else 3
            learner.observe(
                {
                    "@timestamp": iso(t0 + k),
                    "source.ip": client,
                    "destination.ip": server,
                    "destination.port": 502,
                    "network.protocol": "modbus",
                    "ics.operation": "write" if fc == 6 else "read",
                    "modbus.function_code": fc,
                    "modbus.unit_id": 1,
                    "modbus.address": i % 100,
                    "modbus.quantity": 1,
                    "modbus.values": [k],
                }
            )
    return learner.result()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--conversations", type=int, default=10_000)
    args = parser.parse_args()
    captures = REPO / "pcaps" / "baseline"
    train = list(Engine(EngineConfig()).replay([captures / "train.pcap"]))
    clean = list(Engine(EngineConfig()).replay([captures / "clean.pcap"]))
    # each copy follows the previous one as if the plant simply went on (one poll period later)
    train_events = shifted(train, args.repeat, span(train) + 0.5)
    learner = BaselineLearner()
    t = time.perf_counter()
    for e in train_events:
        learner.observe(e)
    baseline = learner.result()
    learn_s = time.perf_counter() - t
    clean_events = shifted(clean, args.repeat, span(clean) + 0.5)
    detector = BaselineDetector(baseline)
    t = time.perf_counter()
    alerts = 0
    for e in clean_events:
        alerts += len(detector.process(e))
    alerts += len(detector.flush())
    detect_s = time.perf_counter() - t
    print(
        f"learn:  {len(train_events)} events in {learn_s:.3f} s = {len(train_events) / learn_s:,.0f} events/s"
    )
    print(
        f"detect: {len(clean_events)} events in {detect_s:.3f} s = {len(clean_events) / detect_s:,.0f} events/s"
        f" ({alerts} alerts)"
    )
    big = synthetic_baseline(args.conversations)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "big.json"
        big.save(path)
        t = time.perf_counter()
        loaded = Baseline.load(path)
        load_s = time.perf_counter() - t
        t = time.perf_counter()
        BaselineDetector(loaded)
        ready_s = time.perf_counter() - t
        print(
            f"load:   {args.conversations} conversations, {path.stat().st_size / 1e6:.1f} MB: "
            f"{load_s:.3f} s to load, {ready_s:.3f} s to build the detector"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
