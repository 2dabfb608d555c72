"""The mixed-plant captures (pcaps/plant/, see pcaps/README.md): decoding, learning,
detection with the default rules and a baseline, and crafting filtered copies of a split."""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Callable
from pathlib import Path

from detectors.baseline import Baseline, BaselineLearner
from icsmon.run import Detectors, load_detectors
from sensor.capture import CaptureReader
from sensor.engine import Engine, EngineConfig

PLANT = Path(__file__).resolve().parents[2] / "pcaps" / "plant"
LABELS = PLANT / "labels.json"
MODBUS_PLC, S7_PLC, OPCUA_SERVER = "127.0.7.10", "127.0.7.20", "127.0.7.30"
HMI, HISTORIAN, ENGINEERING = "127.0.7.11", "127.0.7.12", "127.0.7.13"
CONFIG = {"site": "plant", "observer": "sensor-1", "organization": "org-1"}


def capture(name: str) -> Path:
    path = PLANT / name
    assert path.is_file(), f"{path} missing: run pcaps/plant/make_captures.py"
    return path


@functools.cache
def _events(name: str) -> tuple[dict, ...]:
    return tuple(Engine(EngineConfig(**CONFIG)).replay([capture(name)]))


def events(name: str) -> list[dict]:
    """The decoded events of a split (decoded once per test session; copies are cheap)."""
    return [dict(e) for e in _events(name)]


@functools.cache
def trained() -> Baseline:
    """The baseline learned from the train split (what `icsmon baseline learn train.pcap` gives)."""
    learner = BaselineLearner()
    for event in events("train.pcap"):
        learner.observe(event)
    return learner.result()


def save_baseline(path: Path) -> Path:
    trained().save(path)
    return path


def detect(
    baseline_file: Path, evs: list[dict], rules: bool = True
) -> tuple[list[dict], Detectors]:
    """Alerts of the default rules (with the baseline's placeholders) and the baseline
    detector, as `icsmon replay --baseline FILE` applies them; and the detectors for notes."""
    detectors = load_detectors(None, not rules, None, baseline_file)
    alerts = [a for e in evs for a in detectors.process(e)]
    alerts += detectors.flush()
    return alerts, detectors


Keep = Callable[[float, str, str, int, int], bool]  # (relative time, src, dst, sport, dport)


def craft(source: Path, target: Path, keep: Keep, until: float | None = None) -> Path:
    """Write the frames of ``source`` that ``keep`` accepts (by time since the first frame and
    TCP endpoints), up to ``until`` seconds: a BPF-filtered or cut copy of a real capture."""
    import dpkt

    frames = list(CaptureReader(source))
    start = frames[0][0]
    with target.open("wb") as fh:
        writer = dpkt.pcap.Writer(fh, linktype=1, nano=False)
        for ts, _, data in frames:
            rel = ts - start
            if until is not None and rel > until:
                break
            ip = dpkt.ethernet.Ethernet(data).data
            if not isinstance(ip, dpkt.ip.IP) or not isinstance(ip.data, dpkt.tcp.TCP):
                continue
            src, dst = str(ipaddress.ip_address(ip.src)), str(ipaddress.ip_address(ip.dst))
            if keep(rel, src, dst, ip.data.sport, ip.data.dport):
                writer.writepkt(data, ts=ts)
    return target


def between(a: str, b: str, src: str, dst: str) -> bool:
    return {src, dst} == {a, b}
