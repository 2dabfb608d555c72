"""The store written by a process of its own (``pipeline.store.process.WriterStore``): what it
stores is what ``Store`` stores, ``flush`` makes it visible, errors name the file, and a
sensor killed mid-run keeps everything it had sent."""

from __future__ import annotations

import io
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import orjson
import pytest

from pipeline.docs import dumps
from pipeline.query import AlertFilter
from pipeline.store import Store, StoreError
from pipeline.store.frames import EventsFrame
from pipeline.store.launch import WriterProcess
from pipeline.store.process import (
    _HEAD,
    BLOCK_DOCS,
    CLOSE,
    INPUTS_WAIT_S,
    WriterStore,
    decode_events,
    encode_events,
    send_events,
)
from tests.support import REPO
from tests.support.store_samples import corpus


def _rows(path: Path) -> dict[str, list[tuple]]:
    """Every table's rows (documents as stored text), in rowid order."""
    conn = sqlite3.connect(path)
    try:
        tables = [
            r[0]
            for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"
            )
        ]
        return {t: conn.execute(f"SELECT * FROM {t} ORDER BY 1, 2").fetchall() for t in tables}
    finally:
        conn.close()


def _feed(store, events: list[dict], alerts: list[dict], assets: list[dict]) -> None:
    for i, event in enumerate(events):
        # times as numbers (the sensor's) and as text (a re-sent document) both
        doc = dict(event)
        if i % 2:
            doc["@timestamp"] = time.mktime(
                time.strptime(doc["@timestamp"][:19], "%Y-%m-%dT%H:%M:%S")
            )
        store.write("event", doc)
    for alert in alerts:
        store.write("alert", alert)
    for alert in alerts[:20]:  # again, with another triggering event: merged
        store.write("alert", {**alert, "icsmon.alert.event_ids": ["another"]})
    for asset in assets:
        store.write("asset", asset)
    store.write(
        "event",
        {
            "event.kind": "event",
            "odd": b"\x00\xff",
            "set": {3, 1},
            "big": 1 << 70,
            "text": "a b\tc {d}",
        },
    )


def test_it_stores_exactly_what_the_store_stores(tmp_path: Path) -> None:
    events, alerts, assets = corpus(3 * BLOCK_DOCS + 17)
    with Store(tmp_path / "in.db") as direct:
        _feed(direct, events, alerts, assets)
    with WriterStore(tmp_path / "out.db") as offloaded:
        _feed(offloaded, events, alerts, assets)
        offloaded.flush()
        total, _ = offloaded.search_events(AlertFilter(limit=1))
        assert total == len(events) + 1  # visible to this process's queries after flush
    assert offloaded.stats()["events"] == len(events) + 1  # the child's last counters
    assert _rows(tmp_path / "in.db") == _rows(tmp_path / "out.db")


def test_events_by_the_block_are_stored_as_one_by_one(tmp_path: Path, caplog) -> None:
    """``write_events`` (the sensor's blocks of events, some longer than a frame holds) stores
    what ``write`` of each stores, and rejects, counts and names the same documents."""
    events, alerts, assets = corpus(2 * BLOCK_DOCS + 17)
    for i, event in enumerate(events):
        if i % 2:  # times as numbers (the sensor's) and as text both
            event["@timestamp"] = time.mktime(
                time.strptime(event["@timestamp"][:19], "%Y-%m-%dT%H:%M:%S")
            )
    odd = {"event.kind": "event", "odd": b"\x00\xff", "set": {3, 1}, "big": 1 << 70}
    unheld = {"event.id": "x", "@timestamp": 1.0, "keys": {(1, 2): 3}}  # JSON cannot hold it
    events[5:5] = [odd, unheld]
    blocks = [events[:3], events[3:40], events[40 : 40 + BLOCK_DOCS + 300], events[1340:]]
    with WriterStore(tmp_path / "each.db") as each:
        for event in events:
            each.write("event", event)
        for alert in alerts:
            each.write("alert", alert)
    with caplog.at_level(logging.ERROR), WriterStore(tmp_path / "blocks.db") as by_block:
        for block in blocks:
            by_block.write_events(block)
        for alert in alerts:
            by_block.write("alert", alert)
        assert by_block.stats()["rejected"] == 1
    assert each.stats()["rejected"] == 1
    assert "blocks.db: rejected a event document" in caplog.text
    assert _rows(tmp_path / "each.db") == _rows(tmp_path / "blocks.db")


def test_signals_while_the_pipe_is_full_lose_nothing(tmp_path: Path) -> None:
    # The sensor's SIGINT/SIGTERM handlers interrupt a write to a full pipe part-way through
    # a frame (seen live: `sense --workers 2` at 200,000 packets/s, stopped by SIGINT, lost
    # its store). A timer signal every half millisecond makes that happen here.
    events, _, _ = corpus(6 * BLOCK_DOCS)
    padded = [{**event, "pad": "x" * 2000} for event in events]  # blocks above the pipe size
    interrupted = 0

    def count(*_: object) -> None:
        nonlocal interrupted
        interrupted += 1

    previous = signal.signal(signal.SIGALRM, count)
    store = WriterStore(tmp_path / "s.db")
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.0005, 0.0005)
        for event in padded:
            store.write("event", event)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    store.close()  # raises when the child died or documents were dropped
    assert interrupted > 0
    assert store.stats()["events"] == len(padded)


def test_a_file_that_is_no_store_is_one_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "not-a-store.db"
    path.write_bytes(b"this is not SQLite" * 100)
    with pytest.raises(StoreError) as info:
        WriterStore(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_a_writer_that_dies_is_one_error_and_close_raises(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "s.db"
    events, _, _ = corpus(BLOCK_DOCS * 2)
    store = WriterStore(path)
    store._proc.kill()
    store._proc.wait()
    with caplog.at_level(logging.ERROR):
        for event in events:
            store.write("event", event)  # never raises: the sensor goes on
        store.flush()
    gone = [r for r in caplog.records if "writer process ended" in r.getMessage()]
    assert len(gone) == 1 and str(path) in gone[0].getMessage()
    with pytest.raises(StoreError) as info:
        store.close()
    assert str(path) in str(info.value)


KILLED_SENSOR = """
import os, signal, sys
from pipeline.store.process import WriterStore
from tests.support.store_samples import corpus
store = WriterStore(sys.argv[1])
events, _, _ = corpus(int(sys.argv[2]))
for event in events:
    store.write("event", event)
store.stats()  # a round trip: every document is with the writer now, none committed yet
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_sensor_killed_keeps_everything_it_sent(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    n = 2500
    proc = subprocess.run(
        [sys.executable, "-c", KILLED_SENSOR, str(path), str(n)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    deadline = time.monotonic() + 60
    counted = 0
    while time.monotonic() < deadline:  # the writer sees its input end, writes, exits
        if path.exists():
            with Store(path, readonly=True) as store:
                counted = store.counts()["event"]
            if counted == n:
                break
        time.sleep(0.1)
    assert counted == n


def test_a_store_started_early_is_waited_for_later(tmp_path: Path, capfd) -> None:
    """``wait=False``: the writer process starts while the sensor loads its rules; ``ready``
    waits for it (the same one-line error for a bad file); ``abandon`` ends it quietly."""
    events, _, _ = corpus(50)
    store = WriterStore(tmp_path / "s.db", wait=False)
    for event in events[:10]:  # written before it is ready: they wait in the pipe
        store.write("event", event)
    assert store.ready() is store
    for event in events[10:]:
        store.write("event", event)
    store.flush()
    assert store.search_events(AlertFilter(limit=1))[0] == len(events)
    store.close()
    bad = tmp_path / "not-a-store.db"
    bad.write_bytes(b"this is not SQLite" * 100)
    early = WriterStore(bad, wait=False)
    with pytest.raises(StoreError) as info:
        early.ready()
    assert str(bad) in str(info.value) and "\n" not in str(info.value)
    WriterStore(tmp_path / "unwanted.db", wait=False).abandon()  # a bad rules file, say
    assert not list(tmp_path.glob("unwanted.db*"))  # what it made is gone
    WriterStore(tmp_path / "s.db", wait=False).abandon()  # a store that was there stays
    kept = WriterStore(tmp_path / "s.db")
    assert kept.search_events(AlertFilter(limit=1))[0] == len(events)
    kept.close()
    assert "Traceback" not in capfd.readouterr().err


def test_events_sent_again_are_stored_once_as_the_store_does(tmp_path: Path) -> None:
    """Runs of events (the writer process's way, ``Store.write_event_rows``) de-duplicate as
    single events do: an id twice in one batch, and ids stored by an earlier batch; the frame
    a capture worker makes (``encode_events``, ``write_encoded``) goes the same way."""
    events, _, _ = corpus(BLOCK_DOCS + 300)
    twice = [*events[:700], *events[650:750], *events[700:]]  # 50 sent twice in one block
    with Store(tmp_path / "in.db") as direct:
        for event in twice:
            direct.write("event", event)
        direct.flush()
        for event in events[::3]:  # a batch of stored ids only
            direct.write("event", event)
    with WriterStore(tmp_path / "out.db") as offloaded:
        for event in twice:
            offloaded.write("event", event)
        offloaded.flush()
        frame, count, failed = encode_events(events[::3])
        assert failed == [] and count == len(events[::3])
        offloaded.write_encoded(frame, count)
    assert offloaded.stats()["events"] == len(events)
    assert offloaded.stats()["duplicates"] == 100 + count
    assert direct.stats()["duplicates"] == offloaded.stats()["duplicates"]
    assert _rows(tmp_path / "in.db") == _rows(tmp_path / "out.db")


def test_an_events_frame_is_taken_apart_and_a_malformed_one_skipped(caplog) -> None:
    events, _, _ = corpus(600)
    bad: dict = {**events[7]}
    bad["self"] = bad  # a value JSON cannot hold: left out of the frame, its position said
    frame, count, failed = encode_events([*events[:7], bad, *events[7:]])
    assert count == len(events) and failed == [7]
    rows, docs = decode_events(frame)
    assert [row[0] for row in rows] == [event["event.id"] for event in events]
    assert [orjson.loads(docs[i]) for i in range(len(docs))] == [
        orjson.loads(dumps(event)) for event in events
    ]
    assert bytes(docs.head(300).tail(256).span(0, 44)) == b"\n".join(
        dumps(event) for event in events[256:300]
    )
    with caplog.at_level(logging.ERROR):
        for broken in (frame[:-1], frame.replace(b"\0", b"\n", 1), b"", b"[]\0[1]\0x"):
            rows, docs = decode_events(broken)
            assert rows == [] and len(docs) == 0
    assert caplog.text.count("malformed events frame") == 4


def test_a_block_of_events_makes_the_frame_events_one_at_a_time_make() -> None:
    """``EventsFrame.add_all`` makes the rows of a run of usual events in one call: the
    frame and the rejected positions are those of the events added one at a time, whatever
    the block mixes; a row JSON cannot hold (a lone surrogate in a text column) sends its
    run back event by event, and only that event is left out."""
    events, _, _ = corpus(60)
    odd = [dict(event) for event in events[:9]]
    odd[1]["event.id"] = 7  # not a text id: the general way
    odd[2]["@timestamp"] = "2024-01-01T00:00:00Z"
    odd[3]["@timestamp"] = float("nan")
    odd[4]["big"] = 2**70  # a document orjson refuses: the standard library's JSON
    odd[5]["network.protocol"] = "\ud800"  # a row JSON cannot hold, among usual events
    odd[6]["self"] = odd[6]  # nothing JSON can hold
    odd[7]["observer.name"] = 5  # not text: null in its column
    block = [*events[9:30], *odd, *events[30:]]
    by_block = EventsFrame()
    rejected = by_block.add_all(block, 0, len(block))
    failed = []
    one_at_a_time = EventsFrame()
    for i, event in enumerate(block):
        try:
            one_at_a_time.add(event)
        except Exception:
            failed.append(i)
    assert [i for i, _ in rejected] == failed == [21 + 5, 21 + 6]
    assert by_block.frame() == one_at_a_time.frame()
    kept = [event for i, event in enumerate(block) if i not in failed]
    rows, docs = decode_events(by_block.frame())
    assert len(rows) == len(docs) == len(kept) == len(by_block)
    assert [orjson.loads(docs[i]) for i in range(len(docs))] == [
        orjson.loads(dumps(event)) for event in kept
    ]
    assert rows[21 + 1][0] == "7"


def test_runs_of_events_are_shed_oldest_first_when_the_file_stays_locked(
    tmp_path: Path,
) -> None:
    """Over ``max_pending`` while the file is locked, a run of events loses its oldest events
    (events go first, alerts last), and the rest are written once the lock is gone."""
    events, alerts, _ = corpus(40)
    rows, docs = decode_events(encode_events(events)[0])
    path = tmp_path / "l.db"
    st = Store(path, batch_size=1000, flush_interval=0, busy_timeout=0.05, max_pending=30)
    blocker = sqlite3.connect(path, isolation_level=None)
    try:
        blocker.execute("BEGIN EXCLUSIVE")
        for alert in alerts[:5]:
            st.write("alert", alert)
        st.write_event_rows(rows, docs)
        st.flush()  # must not raise
        stats = st.stats()
        assert stats["errors"] == 1 and stats["pending"] == 30 and stats["dropped"] == 15
        blocker.execute("ROLLBACK")
        st.flush()
        assert st.counts()["event"] == 25 and st.counts()["alert"] == 5
        kept = {doc["event.id"] for doc in st.search_events(AlertFilter(limit=100))[1]}
        assert kept == {event["event.id"] for event in events[15:]}
    finally:
        blocker.close()
        st.close()


def test_close_does_not_wait_for_inputs_that_send_nothing_more(tmp_path: Path) -> None:
    """An error path of ``sense --workers``: the sensor closes its store while its workers
    are still there (never stopped, or stuck) and write nothing more. The close stores every
    frame the sensor knows they wrote and ends without waiting for their pipes to end (up to
    ``INPUTS_WAIT_S`` before)."""
    events, _, _ = corpus(600)
    pipes = [os.pipe() for _ in range(2)]
    sent = [0, 0]
    store = WriterStore(tmp_path / "out.db", inputs=[r for r, _ in pipes], input_frames=sent)
    for part in (events[:400], events[400:]):
        assert send_events(pipes[0][1], encode_events(part)[0])
        sent[0] += 1
    ended: list[bool] = []

    def end_the_inputs() -> None:  # what the close waited for before, at the latest
        ended.append(True)
        for _, write in pipes:
            os.close(write)

    timer = threading.Timer(INPUTS_WAIT_S / 2, end_the_inputs)
    timer.start()
    try:
        store.close()
        assert not ended  # it did not wait for the pipes to end
    finally:
        timer.cancel()
        if not ended:
            end_the_inputs()
    assert store.stats()["events"] == 600
    with Store.open(tmp_path / "out.db", readonly=True) as st:
        assert st.counts()["event"] == 600


def test_frames_written_into_inputs_are_stored_and_flush_waits_for_them(
    tmp_path: Path, capfd
) -> None:
    """``sense --workers``: each capture worker writes its frames into a pipe of its own that
    the writer process reads beside the sensor's (``inputs``). ``flush`` waits for the frames
    the sensor knows were written (``input_frames``), ``close`` for the inputs to end; a frame
    an input may not send is ignored with an error line. The file is the one ``Store`` makes
    of the same events in the same order."""
    events, _, _ = corpus(3000)
    pipes = [os.pipe() for _ in range(2)]
    sent = [0, 0]
    store = WriterStore(tmp_path / "out.db", inputs=[r for r, _ in pipes], input_frames=sent)
    order: list[dict] = []

    def from_input(i: int, part: list[dict]) -> None:
        frame, count, failed = encode_events(part)
        assert count == len(part) and not failed
        assert send_events(pipes[i][1], frame)
        sent[i] += 1
        order.extend(part)

    from_input(0, events[:1000])
    store.flush()
    assert store.search_events(AlertFilter(limit=1))[0] == 1000  # flushed: stored and read
    from_input(1, events[1000:1600])
    from_input(1, events[1600:2000])
    store.flush()
    assert store.search_events(AlertFilter(limit=1))[0] == 2000
    for event in events[2000:2500]:  # the sensor's own, between
        store.write("event", event)
    order.extend(events[2000:2500])
    store.flush()
    from_input(0, events[2500:])
    assert send_events(pipes[1][1], b"[]\0[]\0")  # no events: nothing stored
    os.write(pipes[0][1], b"D\x05\x00\x00\x00alert")  # not an events frame
    for _, write in pipes:
        os.close(write)
    store.close()  # after what the inputs sent
    assert store.stats()["events"] == 3000
    with Store(tmp_path / "in.db") as direct:
        for event in order:
            direct.write("event", event)
    assert _rows(tmp_path / "in.db") == _rows(tmp_path / "out.db")
    err = capfd.readouterr().err
    assert "input 1 sent a b'D' frame: ignored" in err and "Traceback" not in err


def test_a_writer_started_first_is_taken_over_by_its_store(tmp_path: Path) -> None:
    """``WriterProcess`` (``pipeline.store.launch``, light to import) starts the child before
    the sensor imports the store's modules; ``WriterStore(process=...)`` waits for it and
    writes through it; when ``close`` returns the child has exited and the file is whole
    (committed, checkpointed: no WAL beside it). Replies are read by the line, buffered."""
    code = "import sys, pipeline.store.launch; print(sorted(m for m in sys.modules if m.startswith('pipeline.store')))"
    loaded = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert loaded.stdout.strip() == "['pipeline.store', 'pipeline.store.launch']"
    events, _, _ = corpus(BLOCK_DOCS + 10)
    path = tmp_path / "s.db"
    started = WriterProcess(path, {"max_events": None})
    store = WriterStore(process=started)
    assert store.path == path and isinstance(store._from, io.BufferedReader)
    store.write_events(events)
    store.close()
    assert started.proc.returncode == 0
    assert not list(tmp_path.glob("s.db-*"))
    with Store(path, readonly=True) as stored:
        assert stored.counts()["event"] == len(events)
    bad = tmp_path / "not-a-store.db"
    bad.write_bytes(b"this is not SQLite" * 100)
    with pytest.raises(StoreError) as info:
        WriterStore(process=WriterProcess(bad, {}))
    assert str(bad) in str(info.value) and "\n" not in str(info.value)
    WriterProcess(tmp_path / "unwanted.db", {}).abandon()
    assert not list(tmp_path.glob("unwanted.db*"))


CHILD_EXIT = """
import atexit, sys
marker, how = sys.argv.pop(1), sys.argv.pop(1)
atexit.register(lambda: open(marker, "w").close())  # runs only in an interpreter's teardown
from pipeline.store import process
if how == "run":
    process.run()
else:
    sys.exit(process.main())
"""


def test_the_writer_ends_without_teardown_once_its_file_is_closed(tmp_path: Path) -> None:
    """The child (``process.run``) ends by ``os._exit`` after its last answer: no
    interpreter teardown for the sensor's ``close`` to wait for (an exit handler, which a
    teardown runs, does not run), and by then the file is committed and closed. Ended the
    ordinary way (``main``), the same handler runs: what the test tells apart."""
    for how in ("run", "main"):
        marker = tmp_path / f"{how}.teardown"
        path = tmp_path / f"{how}.db"
        child = subprocess.run(
            [sys.executable, "-c", CHILD_EXIT, str(marker), how, str(path), "{}"],
            cwd=REPO,
            input=_HEAD.pack(CLOSE, 0),
            capture_output=True,
            timeout=60,
        )
        assert child.returncode == 0, child.stderr
        ready, last = [orjson.loads(line) for line in child.stdout.splitlines()]
        assert ready == {"ready": True} and last["written"] == 0
        assert marker.exists() == (how == "main")
        assert not list(tmp_path.glob(f"{how}.db-*"))  # closed: no WAL left beside it
        with Store(path, readonly=True) as stored:
            assert stored.counts()["event"] == 0


def test_an_idle_writer_checkpoints_what_its_close_would_copy(tmp_path: Path, monkeypatch) -> None:
    """The writer process, its input empty, checkpoints the WAL once the file grew by
    IDLE_CHECKPOINT_PAGES since the last time (``StoreWriter.checkpoint_grown``): the pages
    reach the file itself while the sensor runs, and its close has less to copy. Not before
    that growth, not again without it; the file is whole at the close either way."""
    from pipeline.store import process

    path = tmp_path / "s.db"
    with Store(path) as store:
        assert not store.checkpoint_grown(8)  # the first call takes the file's size as it is
        _feed(store, *corpus(2000))
        store.flush()
        pages = store._conn.execute("PRAGMA page_count").fetchone()[0]
        assert pages > 8 and path.stat().st_size < pages * 4096 // 2  # in the WAL still
        assert not store.checkpoint_grown(pages)  # grown, but not by that much
        assert store.checkpoint_grown(8)
        assert path.stat().st_size == pages * 4096  # every page in the file itself
        assert not store.checkpoint_grown(8)  # nothing grew since
    monkeypatch.setattr(process, "IDLE_CHECKPOINT_PAGES", 8)
    events, _, _ = corpus(3 * BLOCK_DOCS)
    into_r, into_w = os.pipe()
    out_r, out_w = os.pipe()
    path = tmp_path / "served.db"
    with open(into_r, "rb") as into, open(out_w, "wb") as out, open(out_r, "rb") as replies:
        served = threading.Thread(target=process.serve, args=(path, {}, into, out), daemon=True)
        served.start()
        try:
            assert orjson.loads(replies.readline()) == {"ready": True}
            payload, count, _ = encode_events(events)
            assert count == len(events) and send_events(into_w, payload)
            # the frame is stored (a batch of 2,000 commits at once, the rest by a flush),
            # then the writer has nothing to do: its checkpoint puts the pages into the file
            os.write(into_w, _HEAD.pack(process.FLUSH, 0))
            assert orjson.loads(replies.readline())["events"] == len(events)
            deadline = time.monotonic() + 10
            while path.stat().st_size <= 4096 * 8 and time.monotonic() < deadline:
                os.write(into_w, _HEAD.pack(process.STATS, 0))  # a frame: then idle again
                replies.readline()
                time.sleep(0.05)
            assert path.stat().st_size > 4096 * 8  # checkpointed before the close
            os.write(into_w, _HEAD.pack(CLOSE, 0))
            assert orjson.loads(replies.readline())["events"] == len(events)
        finally:
            os.close(into_w)  # the end of its input: the writer closes the file and returns
            served.join(timeout=30)
    assert not list(tmp_path.glob("served.db-*"))
    with Store(path, readonly=True) as stored:
        assert stored.counts()["event"] == len(events)


def test_the_close_wakes_the_sender_thread_once_its_close_is_answered(tmp_path: Path) -> None:
    """``close`` sends what is held and the CLOSE first, and only then wakes the thread that
    sends a quiet sensor's held documents (every BLOCK_AGE_S): its waking, a switch of
    threads that takes some ms on a busy machine, is then off the command's path. The thread
    sends nothing after the CLOSE, and is gone when ``close`` returns, everything stored."""
    path = tmp_path / "s.db"
    events, _, _ = corpus(BLOCK_DOCS + 10)
    store = WriterStore(path)
    woken: list[bool] = []

    class Stop(threading.Event):
        def set(self) -> None:
            woken.append(store._closed)  # closed: the CLOSE was answered
            super().set()

    store._stop = Stop()  # the thread takes it at its next wait (within BLOCK_AGE_S)
    store.write_events(events)
    store.close()
    assert woken == [True]
    assert store._sender is not None and not store._sender.is_alive()
    assert not list(tmp_path.glob("s.db-*"))
    with Store(path, readonly=True) as stored:
        assert stored.counts()["event"] == len(events)
