"""The store written by a process of its own: the sensor's way to keep SQLite off its core.

A sensor (``icsmon replay``, ``icsmon sense``) spends as much CPU storing its events as
decoding them, most of it inside SQLite. ``WriterStore`` is the sensor's side: ``write``
serialises each flat document once (compact JSON, ``pipeline.docs.dumps``) and sends it in
blocks through a pipe to a child process (``python -m pipeline.store.process``) that owns
the file's write connection and runs the ordinary ``Store`` writer on what it reads:
batches, de-duplication, merges, retries, shedding and retention are that writer's, so a
document is stored exactly as ``Store.write`` stores it. On a machine with a core to spare
the two halves run side by side.

An event goes as its row's columns (a small JSON array) and its JSON, which the child
stores as it is, never parsed; other kinds go as their JSON. Events travel in frames of
their own (EVENTS: ``EventsFrame``), which the child takes apart in a few calls whatever
their number (``decode_events``) and hands to the store as a run
(``Store.write_event_rows``): the rows go into SQLite by multi-row statements, each block
of documents is compressed straight from the frame, with no Python work and no bytes
object per event. With ``sense --workers`` the capture workers make the frames
(``encode_events``) and write them straight into pipes of their own that the child reads
beside the sensor's (``inputs``): the sensor's process never carries the store's bytes
(about 1 KiB per event, read from a worker and written again to the child: 1-1.5 µs of CPU
per event in the two). ``write_encoded`` still passes on a frame given to it.

Guarantees, as the in-process store's:

- bounded memory and back-pressure: the parent holds at most ``BLOCK_DOCS`` events and as
  many other documents, the pipe about 1 MiB, the child its store's ``max_pending``; a
  child that cannot keep up makes ``write`` wait (a full disk does not: the child's store then sheds, events first);
- the child's start: a file that cannot be opened is the same one-line ``StoreError``, raised
  by the constructor (or by ``ready``: a sensor starts the child first of all, by
  ``pipeline.store.launch``, and waits for it when its sink is made);
- everything written is committed when ``flush`` or ``close`` returns; ``close`` raises a
  ``StoreError`` naming the file when documents could not be written;
- a sensor that dies (even by SIGKILL) closes the pipe: the child writes everything it was
  sent and exits. A child that dies makes one error line naming the file; later documents
  are counted as dropped and ``close`` raises.

Queries (``search_events``..., the edge's hunts and evidence) read the file through their own
read-only connections, as ``Store``'s do; ``flush`` first when they must see the latest.
"""

from __future__ import annotations

import functools
import gc
import json
import os
import queue
import signal
import struct
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, BinaryIO

import orjson

from pipeline import kinds as doc_kinds
from pipeline.docs import dumps, dumps_or_raise
from pipeline.store.frames import EventsFrame, encode_events  # noqa: F401 (workers' frames)
from pipeline.store.launch import WriterProcess
from pipeline.store.queries import StoreQueries
from pipeline.store.schema import IDLE_CHECKPOINT_PAGES, StoreError, store_error
from pipeline.store.writer import WRITERS, DocRun
from sensor.logs import LazyLogger

log = LazyLogger(__name__)  # logging imported at the first message

BLOCK_DOCS = 1000  # documents per block sent to the writer
BLOCK_AGE_S = 0.25  # a block older than this goes even when short (a quiet sensor's alerts)
# Documents per transaction in the writer process (``Store``'s batch_size, unless given):
# each commit writes every page its batch touched (the indexes' hot pages again each time),
# so 8,000 costs about 0.4 µs per event less than 2,000; but while it commits the writer
# reads nothing, and 8,000 events' commit outlasts what the 1 MiB pipe holds of a sensor's
# output: the sensor then waits on the pipe, and the default replay took 2.7-3.0 s wall
# against 2.2-2.55 with 2,000 (alternated, load 1.3). What a crash can lose is the same:
# a busy sensor's batch commits within a fraction of a second, a quiet one's within the
# flush interval (1 s), and a killed sensor's writer writes all it was sent.
WRITER_BATCH = 2000

# Frames the child reads ahead of its store (each at most a block, or a worker's batch):
# what keeps the pipe drained while a transaction commits, and bounds the child's memory.
READ_AHEAD_FRAMES = 8

# Frames parent -> child: one byte of operation, four of length, the payload. EVENTS holds
# events only (``EventsFrame``), DOCS any other kind (``encode``'s lines, by newlines).
_HEAD = struct.Struct("<cI")
DOCS, EVENTS, FLUSH, STATS, CLOSE = b"D", b"E", b"F", b"S", b"C"


def write_frame(write: Callable[[memoryview], int | None], op: bytes, payload: bytes) -> None:
    """One frame into the pipe to the writer process, whole: a write that a signal cut short
    is followed by the rest. The header goes by a write of its own: joining it to the payload
    copied the payload (a worker's whole batch, in the sensor's busiest process: 0.03 µs per
    event). Raises ``OSError`` when the pipe is broken."""
    for part in (_HEAD.pack(op, len(payload)), payload):
        view = memoryview(part)
        while view:
            view = view[write(view) or 0 :]


def send_events(fd: int, payload: bytes) -> bool:
    """An EVENTS frame (``encode_events``'s payload) into a pipe that the writer process reads
    as one of its ``inputs`` (a capture worker's own); False when the pipe is broken."""
    try:
        write_frame(functools.partial(os.write, fd), EVENTS, payload)
    except OSError:
        return False
    return True


class WriterStore(StoreQueries):
    """A store whose writes go to a child process (a ``pipeline.sinks.Sink``), and whose
    queries read the file here. ``options`` are ``Store``'s (retention, batch size...)."""

    kinds = tuple(WRITERS)  # the document kinds this sink keeps

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        wait: bool = True,
        inputs: Sequence[int] = (),
        input_frames: Sequence[int] = (),
        process: WriterProcess | None = None,
        **options: Any,
    ) -> None:
        """Starts the writer process (or takes over ``process``, started earlier with its
        path, options and inputs: the others are then not used); unless ``wait`` is False,
        waits for it to have opened the file (:meth:`ready`: a file that cannot be used
        raises a StoreError then).

        ``inputs``: read ends of pipes into which other processes (capture workers) write
        EVENTS frames (``_HEAD`` and an ``encode_events`` payload), handed to the child and
        closed here; ``input_frames``: how many frames each has written so far, as the
        caller learns it (a list it keeps up to date): ``flush`` waits for those too."""
        if process is None:
            process = WriterProcess(path, options, inputs)
        self.path = process.path
        self.readonly = False
        self._process = process
        self._lock = threading.RLock()  # the block, the pipe and the replies
        self._closed = False
        self._init_readers(float(process.options.get("busy_timeout", 10.0)))
        self._block: list[bytes] = []  # documents but events, as lines
        self._events = EventsFrame()
        self._block_since = 0.0
        self._dead = ""  # why the child is gone, once it is
        self._dropped = 0  # documents not handed to the child (it was gone)
        self._rejected = 0  # documents that could not be serialised
        self._last_stats: dict[str, int] = {}
        self._sender: threading.Thread | None = None
        self._input_frames = input_frames
        self._proc = process.proc
        self._to: BinaryIO = process.requests
        self._from: BinaryIO = process.replies
        if wait:
            self.ready()

    def ready(self) -> WriterStore:
        """Wait for the writer process to have opened the file (its start-up, about 0.1-0.25
        s, can overlap other work: ``wait=False``); raises a StoreError naming the file when
        it cannot be used. Called again, it returns at once."""
        if self._sender is not None or self._closed:
            return self
        ready = self._reply()
        if ready is None or "error" in ready:  # the file cannot be used: the child says why
            self._process.end()
            self._closed = True
            if ready is not None:
                raise StoreError(ready["error"])
            raise store_error(
                self.path, f"the store's writer process ended (exit code {self._proc.returncode})"
            )
        self._stop = threading.Event()
        self._sender = threading.Thread(
            target=self._send_loop, name=f"store-send:{self.path.name}", daemon=True
        )
        self._sender.start()
        return self

    def abandon(self) -> None:
        """A store started (``wait=False``) and not wanted after all (a bad rules file, say):
        the writer process ends without writing anything, and a file it created is removed."""
        if self._sender is not None:
            self.close()
            return
        self._closed = True
        self._process.abandon()  # the child sees the end of its input, closes the file, exits

    @classmethod
    def open(cls, path: str | os.PathLike[str] | None = None, **options: Any) -> WriterStore:
        return cls(path, **options)

    # -- the sink ---------------------------------------------------------------------------

    def write(self, kind: str, doc: dict) -> None:
        if kind not in WRITERS:
            if not doc_kinds.get(kind).stored:  # raises for an unknown kind
                return  # a kind the sensor ships but does not keep
            raise ValueError(f"no store table for document kind {kind!r}")
        try:
            with self._lock:
                if not self._block and not self._events:
                    self._block_since = time.monotonic()
                if kind == "event":
                    self._events.add(doc)
                    if len(self._events) >= BLOCK_DOCS:
                        self._send_block()
                    return
                self._block.append(encode(kind, doc))
                if len(self._block) >= BLOCK_DOCS:
                    self._send_block()
        except Exception as exc:  # a value JSON cannot hold: it costs only itself
            with self._lock:
                self._reject(kind, exc)

    def _reject(self, kind: str, doc_error: Exception) -> None:
        """Under the lock: a document JSON cannot hold, counted (and said, the first ten)."""
        self._rejected += 1
        if self._rejected <= 10:
            log.error("%s: rejected a %s document: %s", self.path, kind, doc_error)

    def write_events(self, events: list[dict]) -> None:
        """``write("event", e)`` for each of ``events`` (a block of the engine's), with one
        lock and one size check for the block: the sensor's busiest call."""
        with self._lock:
            if not self._block and not self._events:
                self._block_since = time.monotonic()
            start = 0
            while start < len(events):
                room = BLOCK_DOCS - len(self._events)  # a frame holds at most BLOCK_DOCS
                rejected = self._events.add_all(events, start, start + room)
                start += room
                for _, exc in rejected:
                    self._reject("event", exc)
                if len(self._events) >= BLOCK_DOCS:
                    self._send_block()

    def write_encoded(self, frame: bytes, count: int) -> None:
        """``count`` events already made into an EVENTS frame by :func:`encode_events` (a
        capture worker's batch: ``sensor.workers``): sent to the child as it is."""
        with self._lock:
            if self._events:  # events held here go first: the store keeps the order sent
                self._send_block()
            if self._dead or not self._send(EVENTS, frame):
                self._dropped += count

    def flush(self) -> None:
        """Everything written so far is committed when this returns (and the frames the
        inputs have written, by ``input_frames``)."""
        self._request(FLUSH, orjson.dumps(list(self._input_frames)))

    def stats(self) -> dict[str, int]:
        reply = self._request(STATS)
        counts = dict(reply or self._last_stats)
        counts["dropped"] = counts.get("dropped", 0) + self._dropped
        counts["rejected"] = counts.get("rejected", 0) + self._rejected
        return counts

    def close(self) -> None:
        """Send what is held, let the child write and close the file; raises a StoreError
        naming the file when documents could not be written."""
        if self._closed:
            return
        self.ready()
        assert self._sender is not None
        # the frames the inputs wrote that the sensor knows of: the child waits for those,
        # not for workers that will send nothing more to end (an error path)
        reply = self._request(CLOSE, orjson.dumps(list(self._input_frames)))
        with self._lock:
            self._closed = True  # the sender thread sends nothing more
            self._close_readers()
        # The sender thread is woken only now, and joined once the child is gone: its
        # waking (a switch of threads, some ms on a busy machine) is off the command's path.
        self._stop.set()
        self._process.end()
        self._sender.join()
        if reply is None:  # the child died: what it held may be lost
            raise StoreError(self._dead or str(store_error(self.path, "writer process ended")))
        self._last_stats = {k: v for k, v in reply.items() if isinstance(v, int)}
        if reply.get("error"):
            raise StoreError(reply["error"])
        if self._dropped:
            raise store_error(self.path, f"{self._dropped} documents could not be written")

    def __enter__(self) -> WriterStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the pipe ---------------------------------------------------------------------------

    def _send_loop(self) -> None:
        # A quiet sensor's last documents leave within BLOCK_AGE_S (then the child's store
        # commits them within its flush interval).
        while not self._stop.wait(BLOCK_AGE_S):
            with self._lock:
                if self._closed:  # the close sent the CLOSE (and what was held)
                    return
                if (self._block or self._events) and (
                    time.monotonic() - self._block_since >= BLOCK_AGE_S
                ):
                    self._send_block()

    def _send_block(self) -> None:
        """Under the lock: the held documents to the child (waits while the pipe is full)."""
        events, docs = len(self._events), len(self._block)
        if events and (self._dead or not self._send(EVENTS, self._events.frame())):
            self._dropped += events
        if docs and (self._dead or not self._send(DOCS, b"\n".join(self._block))):
            self._dropped += docs
        self._events, self._block = EventsFrame(), []

    def _send(self, op: bytes, payload: bytes = b"") -> bool:
        # A signal (the sensor's SIGINT/SIGTERM handlers) arriving while the pipe is full ends
        # write(2) after part of a frame: the rest must follow, or the child reads the next
        # frame's bytes as a header.
        try:
            write_frame(self._to.write, op, payload)
        except (BrokenPipeError, OSError, ValueError):
            self._child_gone()
            return False
        return True

    def _request(self, op: bytes, payload: bytes = b"") -> dict[str, Any] | None:
        """Send what is held, then ``op``; the child's answer (None when it is gone)."""
        self.ready()  # its first answer is the start's
        with self._lock:
            if self._closed:
                return None
            if self._block or self._events:
                self._send_block()
            if self._dead or not self._send(op, payload):
                return None
            reply = self._reply()
            if reply is None:
                self._child_gone()
            return reply

    def _reply(self) -> dict[str, Any] | None:
        line = self._from.readline()
        if not line:
            return None
        reply: dict[str, Any] = orjson.loads(line)
        return reply

    def _child_gone(self) -> None:
        if self._dead:
            return
        code = self._proc.poll()
        self._dead = str(
            store_error(
                self.path,
                f"the store's writer process ended (exit code {code})"
                if code is not None
                else "the store's writer process stopped answering",
            )
        )
        log.error("%s", self._dead)


def encode(kind: str, doc: dict) -> bytes:
    """The line a document of ``kind`` but an event travels to the child as, in a DOCS
    frame (raises for a value JSON cannot hold); events go by :func:`event_parts`."""
    try:
        return kind.encode() + b" " + dumps_or_raise(doc)
    except orjson.JSONEncodeError:  # integers beyond 64 bits: read back by json
        return kind.encode() + b"\t" + dumps(doc)


# -- the child --------------------------------------------------------------------------------


def decode_events(payload: bytes) -> tuple[list[list[Any]], DocRun]:
    """An EVENTS frame's events: their rows' columns and their documents, in a few calls that
    run in C whatever the number of events (no loop over them here, no copy of the
    documents). A frame not made by :class:`EventsFrame` is skipped, with an error line."""
    view = memoryview(payload)
    try:
        a = payload.index(b"\0")
        b = payload.index(b"\0", a + 1)
        rows: list[list[Any]] = orjson.loads(view[:a])
        lengths = orjson.loads(view[a + 1 : b])
        docs = DocRun(view[b + 1 :], lengths)
        if type(rows) is list and len(rows) == len(docs) and docs.whole(lengths):
            return rows, docs
    except (ValueError, TypeError):  # no NULs, JSON that is not, lengths that are not numbers
        pass
    log.error("the store's writer skipped a malformed events frame (%d bytes)", len(payload))
    return [], DocRun(b"", [])


def _read_exact(stream: BinaryIO, n: int) -> bytes | None:
    chunks: list[bytes] = []
    while n:
        chunk = stream.read(n)
        if not chunk:
            return None
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


END = b"."  # (in the child) an input ended: the sensor's (0) or another writer's


def _read_frames(
    into: BinaryIO, frames: queue.Queue[tuple[bytes, bytes, int]], source: int
) -> None:
    """The child's reader thread of one input (0: the sensor's; 1...: ``inputs``, events
    only): frames off the pipe while the store works on earlier ones (SQLite lets go of the
    interpreter while it inserts and commits), so a commit does not leave the pipe full and
    the sensor waiting on it. ``END`` at the end of the input."""
    try:
        while True:
            head = _read_exact(into, _HEAD.size)
            if head is None:
                return
            op, size = _HEAD.unpack(head)
            payload = _read_exact(into, size) if size else b""
            if payload is None:
                return
            if source and op != EVENTS:  # another writer's input carries events only
                log.error("store writer: input %d sent a %r frame: ignored", source, op)
                continue
            frames.put((op, payload, source))
            if op == CLOSE:
                return
    except (OSError, ValueError) as exc:  # the pipe broke: as the end of the input
        log.error("store writer: reading from input %d: %s", source, exc)
    finally:
        frames.put((END, b"", source))


# After the sensor's CLOSE (or its end), how long the other inputs have to end (their writers
# exit; a worker that does not is killed by its pool within about 10 s) before the store closes
INPUTS_WAIT_S = 20.0
# ... unless the CLOSE said how many frames each input wrote (``input_frames``, as FLUSH
# does) and those are stored, and no frame came for this long: what else an input holds, the
# sensor never saw (an error path: workers that send nothing more, or never were stopped)
INPUTS_QUIET_S = 0.25


def serve(
    path: Path,
    options: dict[str, Any],
    into: BinaryIO,
    out: BinaryIO,
    inputs: Sequence[BinaryIO] = (),
) -> int:
    """The child's loop: documents from ``into`` (and events from ``inputs``) to the store,
    answers to ``out``."""
    from pipeline.store import Store

    def answer(reply: dict[str, Any]) -> None:
        out.write(orjson.dumps(reply) + b"\n")
        out.flush()

    try:
        store = Store(path, **{"batch_size": WRITER_BATCH, **options})
    except StoreError as exc:
        answer({"error": str(exc)})
        return 1
    answer({"ready": True})
    write, write_events, loads = store.write, store.write_event_rows, orjson.loads
    frames: queue.Queue[tuple[bytes, bytes, int]] = queue.Queue(maxsize=READ_AHEAD_FRAMES)
    for source, stream in enumerate((into, *inputs)):
        threading.Thread(
            target=_read_frames, args=(stream, frames, source), name="frames", daemon=True
        ).start()
    open_inputs = set(range(1, 1 + len(inputs)))
    done = [0] * (1 + len(inputs))  # EVENTS frames stored, by input
    flushing: list[int] | None = None  # a FLUSH waiting for the inputs' frames (by count)
    closing: float | None = None  # since when the sensor is done (CLOSE, or its input ended)
    closed: list[int] | None = None  # the frames its CLOSE knew of, by input
    while True:
        if closing is not None:
            if not open_inputs or time.monotonic() - closing > INPUTS_WAIT_S:
                break
            try:
                op, payload, source = frames.get(timeout=INPUTS_QUIET_S)
            except queue.Empty:
                if closed is not None and _all_stored(closed, done, open_inputs):
                    open_inputs.clear()  # nothing the sensor knows of is missing
                    break
                continue
        else:
            try:
                op, payload, source = frames.get_nowait()
            except queue.Empty:  # nothing to do: the close's checkpoint, part of it, now
                store.checkpoint_grown(IDLE_CHECKPOINT_PAGES)
                op, payload, source = frames.get()
        if op == EVENTS:
            write_events(*decode_events(payload))
            done[source] += 1
        elif op == END:
            if source:
                open_inputs.discard(source)
            elif closing is None:  # the sensor is gone: keep what it sent, and the inputs
                closing = time.monotonic()
        elif op == DOCS:
            for line in payload.split(b"\n"):
                start = line.find(b"{")  # the document; the kind and a separator before it
                kind = line[: start - 1].decode()
                if line[start - 1] == 32:  # " ": written by orjson
                    write(kind, loads(memoryview(line)[start:]))
                else:  # "\t": by the standard library's JSON (integers beyond 64 bits)
                    write(kind, json.loads(line[start:]))
        elif op == FLUSH:
            flushing = _flush_targets(payload, len(inputs))
        elif op == STATS:
            answer(store.stats())
        elif op == CLOSE:
            closing = time.monotonic()
            closed = _flush_targets(payload, len(inputs)) if payload else []
            if len(closed) != len(inputs):  # not every input's count: wait for their end
                closed = None
        if flushing is not None and _all_stored(flushing, done, open_inputs):
            store.flush()
            answer(store.stats())
            flushing = None
    if open_inputs:
        log.error("store writer: %d inputs did not end; closing without them", len(open_inputs))
    try:
        store.close()
    except StoreError as exc:
        answer({**store.stats(), "error": str(exc)})
        return 1
    answer(store.stats())
    return 0


def _all_stored(targets: list[int], done: list[int], open_inputs: set[int]) -> bool:
    """Each input's frames up to its target (FLUSH's or CLOSE's) are stored, or it ended."""
    return all(done[i] >= n or i not in open_inputs for i, n in enumerate(targets, 1))


def _flush_targets(payload: bytes, inputs: int) -> list[int]:
    """A FLUSH's frames to wait for, by input (none when it names none, or is malformed)."""
    try:
        targets = orjson.loads(payload) if payload else []
    except orjson.JSONDecodeError:
        targets = None
    if type(targets) is not list or not all(type(n) is int for n in targets):
        log.error(
            "store writer: a malformed flush (%d bytes): not waiting for inputs", len(payload)
        )
        return []
    return targets[:inputs]


def main() -> int:
    # The sensor decides when to stop (a Ctrl-C or a SIGTERM reaches the whole process group):
    # this process ends when its input does, after writing everything it was sent.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # What this process holds lives one batch and makes no cycles: the collector's walks
    # over each batch's fresh documents would be a sixth of its time.
    gc.freeze()
    gc.set_threshold(100_000, 50, 50)
    path, options = Path(sys.argv[1]), json.loads(sys.argv[2])
    inputs = [os.fdopen(fd, "rb") for fd in (json.loads(sys.argv[3]) if len(sys.argv) > 3 else [])]
    # answers go through a copy of stdout; whatever else prints goes to stderr
    answers = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    return serve(path, options, sys.stdin.buffer, answers, inputs)


def run() -> None:
    """The child's process: :func:`main`, then its end without the interpreter's teardown
    (freeing every module and object, a few ms the sensor's ``close`` waits for in
    ``wait``): by then the file is committed and closed and the last answer sent, and
    nothing else is held. An exception still ends it the ordinary way (its traceback)."""
    code = main()
    sys.stdout.flush()  # stderr's copy (answers went through their own, flushed)
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    run()
