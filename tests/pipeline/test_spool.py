"""The on-disk spool: order, persistence across reopen, torn tails, the bound and its victims."""

from __future__ import annotations

from collections import deque
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.kinds import sensor_kinds
from pipeline.spool import Spool

KINDS = sensor_kinds()  # the kinds a sensor spools (advisories are the centre's)


def drain(spool: Spool, kind: str, step: int = 7) -> list[bytes]:
    out = []
    while True:
        recs = spool.read(kind, step)
        if not recs:
            return out
        out += [r.value for r in recs]
        spool.ack(kind, recs)


def test_fifo_per_kind_and_keys(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=1 << 20, segment_bytes=4096)
    for i in range(500):
        spool.append("event", b"site-a", b"e%d" % i)
        if i % 50 == 0:
            spool.append("alert", None, b"a%d" % i)
    assert spool.pending("event") == 500 and spool.pending("alert") == 10
    first = spool.read("alert", 1)[0]
    assert first.key is None and first.value == b"a0"
    assert spool.read("event", 1)[0].key == b"site-a"
    assert drain(spool, "event") == [b"e%d" % i for i in range(500)]
    assert drain(spool, "alert") == [b"a%d" % i for i in range(0, 500, 50)]
    assert spool.pending() == 0
    # Consumed segments are deleted, not kept around.
    assert spool.size_bytes() == 0
    assert not list((tmp_path / "event").glob("*.seg"))
    spool.close()


def test_read_does_not_consume_and_reopen_resumes_at_cursor(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=1 << 20, segment_bytes=1024)
    for i in range(100):
        spool.append("event", None, b"%03d" % i)
    assert [r.value for r in spool.read("event", 3)] == [b"000", b"001", b"002"]
    assert [r.value for r in spool.read("event", 3)] == [b"000", b"001", b"002"]
    spool.ack("event", spool.read("event", 42))
    spool.close()

    again = Spool(tmp_path, max_bytes=1 << 20, segment_bytes=1024)
    assert again.pending("event") == 58
    again.append("event", None, b"new")
    assert drain(again, "event") == [b"%03d" % i for i in range(42, 100)] + [b"new"]
    again.close()


def test_torn_tail_is_cut_and_counted(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=1 << 20, segment_bytes=1 << 16)
    for i in range(10):
        spool.append("alert", b"k", b"alert-%d" % i)
    spool.close()
    seg = next((tmp_path / "alert").glob("*.seg"))
    size = seg.stat().st_size
    with open(seg, "r+b") as fh:  # a power cut in the middle of the last record
        fh.truncate(size - 3)
    again = Spool(tmp_path, max_bytes=1 << 20, segment_bytes=1 << 16)
    assert again.stats()["corrupt"] == 1
    assert drain(again, "alert") == [b"alert-%d" % i for i in range(9)]
    again.close()


def test_flipped_byte_stops_at_the_damaged_record(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=1 << 20, segment_bytes=1 << 16)
    for i in range(10):
        spool.append("event", None, b"event-%d" % i)
    spool.close()
    seg = next((tmp_path / "event").glob("*.seg"))
    data = bytearray(seg.read_bytes())
    data[len(data) // 2] ^= 0xFF
    seg.write_bytes(bytes(data))
    again = Spool(tmp_path, max_bytes=1 << 20, segment_bytes=1 << 16)
    values = drain(again, "event")
    assert 0 < len(values) < 10
    assert values == [b"event-%d" % i for i in range(len(values))]
    assert again.stats()["corrupt"] == 1
    again.close()


def test_full_spool_drops_oldest_events_never_alerts(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=64 * 1024, segment_bytes=8 * 1024)
    payload = b"x" * 200
    for i in range(20):
        assert spool.append("alert", None, b"alert-%02d" % i + payload)
    for i in range(2000):  # far more events than fit
        spool.append("event", None, b"%06d" % i + payload)
    stats = spool.stats()
    assert spool.size_bytes() <= 64 * 1024
    assert stats["events_dropped"] > 0
    assert stats["alerts_refused"] == 0
    assert drain(spool, "alert") == [b"alert-%02d" % i + payload for i in range(20)]
    events = drain(spool, "event")
    # What survives is the newest events, still in order, and the count adds up.
    assert events[-1].startswith(b"001999")
    ids = [int(v[:6]) for v in events]
    assert ids == sorted(ids) and ids == list(range(ids[0], 2000))
    assert len(events) + stats["events_dropped"] == 2000
    spool.close()


def test_assets_go_after_events_and_alerts_are_refused_only_when_nothing_else_is_left(
    tmp_path: Path,
) -> None:
    spool = Spool(tmp_path, max_bytes=32 * 1024, segment_bytes=4 * 1024)
    body = b"y" * 500
    for _ in range(20):
        spool.append("asset", None, body)
    for _ in range(20):
        spool.append("event", None, body)
    accepted = sum(spool.append("alert", None, body) for _ in range(80))
    stats = spool.stats()
    assert stats["events_dropped"] == 20  # every event went first...
    assert stats["assets_dropped"] == 20  # ...then every asset...
    assert stats["alerts_refused"] == 80 - accepted > 0  # ...and only then alerts are refused
    assert spool.pending("alert") == accepted
    assert spool.size_bytes() <= 32 * 1024
    spool.close()


def test_second_process_on_the_same_folder_is_refused(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=1 << 20, segment_bytes=4096)
    with pytest.raises(OSError, match="in use"):
        Spool(tmp_path, max_bytes=1 << 20, segment_bytes=4096)
    spool.close()
    Spool(tmp_path, max_bytes=1 << 20, segment_bytes=4096).close()


ops = st.lists(
    st.one_of(
        st.tuples(st.just("append"), st.sampled_from(KINDS), st.binary(max_size=300)),
        st.tuples(st.just("ack"), st.sampled_from(KINDS), st.integers(0, 20)),
        st.tuples(st.just("reopen"), st.just("alert"), st.just(0)),
    ),
    max_size=120,
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ops)
def test_matches_a_plain_queue_across_reopens(
    tmp_path_factory: pytest.TempPathFactory, steps: list
) -> None:
    # Large enough that nothing is evicted: then the spool must behave exactly like a FIFO.
    folder = tmp_path_factory.mktemp("spool")
    spool = Spool(folder, max_bytes=1 << 22, segment_bytes=1024)
    model: dict[str, deque[bytes]] = {kind: deque() for kind in KINDS}
    for op, kind, arg in steps:
        if op == "append":
            spool.append(kind, b"k", arg)
            model[kind].append(arg)
        elif op == "ack":
            recs = spool.read(kind, arg)
            assert [r.value for r in recs] == list(model[kind])[:arg]
            spool.ack(kind, recs)
            for _ in recs:
                model[kind].popleft()
        else:
            spool.close()
            spool = Spool(folder, max_bytes=1 << 22, segment_bytes=1024)
        assert spool.pending() == sum(len(q) for q in model.values())
    for kind in KINDS:
        assert drain(spool, kind) == list(model[kind])
    spool.close()
