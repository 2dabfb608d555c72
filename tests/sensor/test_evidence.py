"""The packet ring and per-alert captures: bounded by bytes and age; an alert's pcap holds
its flow's packets around the alert, byte for byte as captured, and opens in tshark."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from icsmon.run import Run, load_detectors
from sensor.capture import CaptureReader
from sensor.engine import Engine, EngineConfig
from sensor.evidence import AlertCaptures, PacketRing, flow_of

REPO = Path(__file__).resolve().parents[2]
ATTACK = REPO / "pcaps" / "baseline" / "attack_new_host_write.pcap"
TRAIN = REPO / "pcaps" / "baseline" / "train.pcap"


def frames_of(path: Path) -> list:
    return [f for batch in CaptureReader(path).batches() for f in batch]


def test_the_ring_is_bounded_by_bytes_and_by_age() -> None:
    frames = frames_of(TRAIN)
    ring = PacketRing(max_bytes=20_000, max_age_s=1e9)
    for i in range(0, len(frames), 7):
        ring.add(frames[i : i + 7])
    assert ring.bytes <= 20_000 and ring.bytes == sum(len(f[2]) for f in ring.frames)
    assert list(ring.frames) == frames[len(frames) - len(ring.frames) :]  # the newest
    ring = PacketRing(max_bytes=1 << 30, max_age_s=5.0)
    for i in range(0, len(frames), 7):
        ring.add(frames[i : i + 7])
    newest = frames[-1][0]
    assert all(f[0] >= newest - 5.0 for f in ring.frames) and ring.stats["evicted"] > 0


def test_an_alert_gets_its_flows_packets_around_it(tmp_path: Path) -> None:
    engine = Engine(EngineConfig(site="s", observer="o"))
    ring = PacketRing(max_bytes=64 << 20, max_age_s=60.0)
    captures = AlertCaptures(tmp_path / "evidence", ring, before_s=2.0, after_s=2.0)

    def tap(frames):
        ring.add(frames)
        captures.add(frames)

    engine.tap = tap
    run = Run(engine, load_detectors(None, False, None, None), None)
    armed = []
    for alert in run.process(engine.replay([ATTACK]), want_events=False):
        flow = (
            bytes(map(int, alert["source.ip"].split("."))),
            bytes(map(int, alert["destination.ip"].split("."))),
            alert["source.port"],
            alert["destination.port"],
        )
        from sensor.timestamps import parse_timestamp

        ts = parse_timestamp(alert["@timestamp"])
        captures.arm(alert["event.id"], flow, ts, 1)
        armed.append((alert["event.id"], flow, ts))
    written = captures.close_all()
    assert armed and len(list((tmp_path / "evidence").glob("*.pcap"))) == len({a[0] for a in armed})
    every = frames_of(ATTACK)
    alert_id, flow, ts = armed[0]
    path = captures.path(alert_id)
    assert path in written or path.exists()
    got = frames_of(path)
    want = [
        f
        for f in every
        if ts - 2.0 <= f[0] <= ts + 2.0
        and (k := flow_of(f[1], f[2])) is not None
        and {(k[0], k[2]), (k[1], k[3])} == {(flow[0], flow[2]), (flow[1], flow[3])}
    ]
    assert got and [f[2] for f in got] == [f[2] for f in want]  # byte for byte, in order
    assert all(abs(g[0] - w[0]) < 1e-6 for g, w in zip(got, want, strict=True))
    if shutil.which("tshark"):
        out = subprocess.run(
            ["tshark", "-r", str(path), "-T", "fields", "-e", "frame.number"],
            capture_output=True,
            text=True,
            check=True,
        )
        assert len(out.stdout.split()) == len(got)


def test_a_capture_and_the_folder_are_bounded(tmp_path: Path) -> None:
    frames = frames_of(TRAIN)
    ring = PacketRing()
    ring.add(frames)
    key = next(k for f in frames if (k := flow_of(f[1], f[2])) is not None)
    caps = AlertCaptures(
        tmp_path / "ev",
        ring,
        before_s=1e6,
        after_s=1e6,
        max_capture_bytes=2000,
        max_folder_bytes=5000,
    )
    for i in range(6):
        caps.arm(f"alert-{i}", key, frames[-1][0], 1)
        caps.close_all()
    files = list((tmp_path / "ev").glob("*.pcap"))
    assert sum(p.stat().st_size for p in files) <= 5000 and caps.stats["pruned"] > 0
    assert caps.stats["truncated"] == 6
    assert all(p.stat().st_size <= 2000 + 24 + 16 * 64 for p in files)
    caps.arm("../../escape", key, frames[-1][0], 1)
    caps.close_all()
    assert not (tmp_path / "escape.pcap").exists()
    assert list((tmp_path / "ev").glob("*escape*.pcap"))


@pytest.mark.parametrize("junk", [b"", b"\x00" * 10, b"\xff" * 60])
def test_junk_frames_have_no_flow(junk: bytes) -> None:
    assert flow_of(1, junk) is None
