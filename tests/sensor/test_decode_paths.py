"""The engine's two ways through a frame give the same events.

``Engine._process`` decodes the common case inline (Ethernet + IPv4 without options + TCP,
in-order data or a bare ACK on a known flow); every other frame goes through the general
path (``_slow`` -> ``_ipv4`` -> ``_l4`` -> ``_tcp`` -> ``_deliver``), which handles the
common case too. ``EngineConfig(fast_path=False)`` sends every frame there: the events,
counters and assets must be the same, on every capture in pcaps/ and on published captures
of each protocol (those skip when /work/shared is absent).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from sensor.engine import Engine, EngineConfig
from tests.support import REPO

OWN = sorted((REPO / "pcaps").glob("*/*.pcap"))
PUBLIC = REPO.parent / "shared" / "pcaps" / "public"
MAX_PUBLIC_BYTES = 4 << 20  # a sample that keeps the test quick on a busy machine


def _run(paths: list[Path], fast_path: bool) -> tuple[list[dict], dict, list[dict]]:
    engine = Engine(EngineConfig(site="s", observer="o", fast_path=fast_path))
    events = list(engine.replay(paths))
    return events, dict(engine.stats), sorted(engine.changed_assets(), key=str)


def _same(paths: list[Path]) -> int:
    fast_events, fast_stats, fast_assets = _run(paths, True)
    general_events, general_stats, general_assets = _run(paths, False)
    assert len(fast_events) == len(general_events)
    for a, b in zip(fast_events, general_events, strict=True):
        assert a == b
    assert fast_stats == general_stats
    assert fast_assets == general_assets
    return len(fast_events)


@pytest.mark.parametrize("capture", OWN, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_own_captures_decode_the_same_either_way(capture: Path) -> None:
    _same([capture])


def _public_sample() -> list[Path]:
    if not PUBLIC.is_dir():
        return []
    out = []
    for folder in sorted(p for p in PUBLIC.iterdir() if p.is_dir()):
        files = sorted(
            (p for p in folder.rglob("*") if p.suffix in (".pcap", ".pcapng", ".cap")),
            key=lambda p: p.stat().st_size,
        )
        # per protocol folder: the largest capture under the cap
        small = [p for p in files if p.stat().st_size <= MAX_PUBLIC_BYTES]
        if small:
            out.append(small[-1])
    return out


@pytest.mark.parametrize("capture", _public_sample(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_published_captures_decode_the_same_either_way(capture: Path) -> None:
    _same([capture])


def test_the_published_sample_is_there() -> None:
    if not PUBLIC.is_dir():
        pytest.skip(f"{PUBLIC}: no published captures here")
    assert _public_sample()
