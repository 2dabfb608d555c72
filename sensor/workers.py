"""Capture on every core: N worker processes on one interface, one merged stream of events.

    pool = WorkerPool(iface, workers=2, engine_config=EngineConfig(site="plant-7"))
    pool.start()
    for event in pool.events():    # every worker's events, as they arrive
        ...
    pool.engine.stats              # the workers' engine counters, summed
    pool.capture_stats()           # their sockets' counters (kernel drops...), summed

How the work is split:

- The parent opens the N capture sockets (``sensor.live.open_fanout``: one ``PACKET_FANOUT``
  group, flow hash, so both directions of a connection reach the same socket), drops its
  privileges, then forks the workers, each keeping one socket and its memory-mapped ring.
- A worker runs an :class:`~sensor.engine.Engine` on its share of the flows: decoding, TCP
  reassembly, the dissectors, pairing requests with answers, and the anomalies those find
  (the per-flow detection). It sends its events to the parent in batches over a
  pipe (at most ``BATCH`` events, or what ``FLUSH_S`` gathered), with its counters and the
  asset observations that changed once per tick. Given ``encode`` (the store's
  ``pipeline.store.process.encode_events``), it also makes each batch into the frame the store
  keeps, so that work is spread over the workers; given ``send_frame`` too (the store's
  ``send_events``), it writes that frame into a pipe of its own to the store's writer process
  (``store_inputs``: their read ends, for the store), so the frames' bytes never pass through
  the parent; the parent learns what was sent (``store_frames``,
  ``on_encoded``: the events a frame could not hold go the ordinary way). A worker whose
  store pipe broke sends its frames to the parent instead (``on_encoded`` gets the frame).
  A parent that cannot keep up fills the pipe,
  the worker waits, and its ring absorbs the burst; a ring that overflows is counted as kernel
  drops, as in one process: memory stays bounded.
- The parent sees the merged stream. Everything that spans flows runs there: the Sigma rules
  and their correlations (a sweep across servers is a value count over many flows), the
  baseline (new talkers, polling series that reconnect on new ports, sweeps), the findings,
  rollups, heartbeats and every sink. So a sensor with N workers has one store writer, one
  Kafka producer stream and one heartbeat, and its detectors see what one process would.

Stopping: ``stop()`` (signal-safe) asks every worker to stop; each drains its ring, closes its
flows (``Engine.finish``), sends what remains and exits; ``events()`` ends when all have.
"""

from __future__ import annotations

import contextlib
import fcntl
import gc
import logging
import marshal
import os
import pickle
import signal
import time
from collections.abc import Callable, Iterator
from multiprocessing import connection, get_context
from typing import Any

from sensor.engine import Engine, EngineConfig
from sensor.events import Context
from sensor.live import CaptureError, LiveSource, open_fanout

__all__ = ["WorkerPool", "MergedEngine", "settle"]

log = logging.getLogger(__name__)

Encoded = tuple[bytes, int, list[int]]  # a batch's store frame, its events, those not encoded

BATCH = 512  # events per message from a worker
FLUSH_S = 0.1  # a partial batch waits at most about this long while traffic flows
TICK_S = 1.0  # how often the parent's on_tick runs, traffic or not
# A batch with its store lines is about 1 KiB per event: in a pipe of 64 KiB (Linux's
# default) each batch would take a dozen wake-ups of both ends
PIPE_BYTES = 1 << 20
GC_THRESHOLD = 50_000  # allocations between the collector's youngest-generation walks
_SUMMED_CAPTURE = ("packets", "bytes", "truncated", "link_errors", "kernel_packets", "kernel_drops")


class MergedEngine:
    """What a sensor run reads from its engine (``icsmon.run.Run``), for N workers: the
    counters summed, the assets they observed, the capture clock of all of them."""

    def __init__(self, config: EngineConfig, workers: int) -> None:
        self.config = config
        self.ctx = Context(config.site, config.observer, config.organization)
        self.errors: list[str] = []
        self.first_ts = 0.0
        self.last_ts = 0.0
        self._stats: list[dict[str, int]] = [{} for _ in range(workers)]
        self._assets: list[dict] = []

    @property
    def stats(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for part in self._stats:
            for key, value in part.items():
                out[key] = out.get(key, 0) + value
        return out

    def changed_assets(self) -> list[dict]:
        """Asset observations received since the last call (the store and the indexer fold
        observations of one asset by ``pipeline.assets.merge_asset``, whichever worker)."""
        out, self._assets = self._assets, []
        return out

    def _update(self, index: int, stats: dict[str, int], first: float, last: float) -> None:
        self._stats[index] = stats
        if first and (not self.first_ts or first < self.first_ts):
            self.first_ts = first
        self.last_ts = max(self.last_ts, last)


class WorkerPool:
    """N capture processes on ``iface``; see the module docstring."""

    def __init__(
        self,
        iface: str,
        workers: int,
        engine_config: EngineConfig,
        bpf: str | None = None,
        user: str | None = None,
        encode: Callable[[list[dict]], Encoded] | None = None,
        send_frame: Callable[[int, bytes], bool] | None = None,
        **capture_options: Any,
    ) -> None:
        if workers < 1:
            raise ValueError("--workers must be at least 1")
        # Opening the sockets may fail (no such interface, no permission, a bad filter): a
        # CaptureError before any process is started.
        self._sources: list[LiveSource] = open_fanout(
            iface, workers, bpf, user=user, **capture_options
        )
        self.iface = iface
        self.linktype = self._sources[0].linktype
        self.fanout_group = self._sources[0].fanout_group
        self.engine = MergedEngine(engine_config, workers)
        self.on_tick: Callable[[], None] | None = None
        # Called with each batch (its events; the frame ``encode`` made of them; how many it
        # holds; the positions of the events it failed on) before its events
        # are yielded. None: the lines are not wanted (``encode`` unused).
        self.on_encoded: Callable[[list[dict], Encoded], None] | None = None
        self._encode = encode
        # With ``encode`` and ``send_frame`` (the store's ``send_events``, which writes a frame
        # into a pipe): a pipe per worker to the store's writer process; the parent keeps
        # the read ends until the store takes them (``store_inputs``)
        self._store_pipes = (
            [os.pipe() for _ in range(workers)]
            if encode is not None and send_frame is not None
            else []
        )
        self._send_frame = send_frame
        for _, write in self._store_pipes:
            with contextlib.suppress(OSError):  # a worker's batch is about 0.5 MiB of frame
                fcntl.fcntl(write, fcntl.F_SETPIPE_SZ, PIPE_BYTES)
        self.store_frames = [0] * len(self._store_pipes)  # frames each worker wrote into its pipe
        self._config = engine_config
        self._capture: list[dict[str, int]] = [{} for _ in range(workers)]
        self._conns: list[connection.Connection] = []
        self._procs: list[Any] = []
        self._stopping = False
        self._failures: list[str] = []

    @property
    def workers(self) -> int:
        return len(self._capture)

    def store_inputs(self) -> list[int]:
        """The read ends of the workers' pipes to the store (after ``start``; given ``encode``):
        for the store's writer process, which owns them from then on."""
        fds = [read for read, _ in self._store_pipes]
        self._store_pipes = []
        return fds

    def start(self) -> None:
        """Fork the workers (before the parent starts any thread: a Kafka producer, the
        control listener). The parent keeps no copy of their sockets."""
        ctx = get_context("fork")
        for index in range(len(self._sources)):
            receive, send = ctx.Pipe(duplex=False)
            with contextlib.suppress(OSError):  # a smaller pipe only means more, shorter waits
                fcntl.fcntl(send.fileno(), fcntl.F_SETPIPE_SZ, PIPE_BYTES)
            # The child closes the read ends it inherits (its own pipe's and earlier workers'):
            # held open there, a worker whose parent died would block on its full pipe for
            # ever instead of getting EPIPE, and no signal could stop it.
            inherited = [receive, *self._conns]
            proc = ctx.Process(
                target=_worker,
                args=(
                    index,
                    self._sources,
                    send,
                    inherited,
                    self._config,
                    self._encode,
                    self._send_frame,
                    self._store_pipes,
                ),
                name=f"icsmon-capture-{index}",
                daemon=True,
            )
            proc.start()
            send.close()
            self._conns.append(receive)
            self._procs.append(proc)
            if self._stopping:  # a stop asked while starting
                _signal(proc.pid)
        for source in self._sources:
            source.release()
        for _, write in self._store_pipes:  # the workers' now: the store sees them end
            os.close(write)

    def stop(self) -> None:
        """Ask every worker to finish (async-signal-safe enough: a flag and kill())."""
        self._stopping = True
        for proc in self._procs:
            _signal(proc.pid)

    def capture_stats(self) -> dict[str, int]:
        """The workers' capture counters, summed; ``ring`` is 1 when every worker has one;
        ``workerN.packets`` tells how the flow hash spread the traffic."""
        out = dict.fromkeys(_SUMMED_CAPTURE, 0)
        out["ring"] = 1
        for index, part in enumerate(self._capture):
            for key in _SUMMED_CAPTURE:
                out[key] += part.get(key, 0)
            out["ring"] = min(out["ring"], part.get("ring", 1))
            out[f"worker{index}.packets"] = part.get("packets", 0)
        out["workers"] = self.workers
        return out

    def failures(self) -> list[str]:
        """Lines for workers that ended in error (an interface that went away, a crash)."""
        return list(self._failures)

    def events(self) -> Iterator[dict]:
        """Every worker's events, merged as they arrive, until every worker has finished."""
        live: dict[Any, int] = {conn: i for i, conn in enumerate(self._conns)}
        next_tick = time.monotonic() + TICK_S
        try:
            while live:
                for conn in connection.wait(list(live), timeout=TICK_S):
                    index = live[conn]  # type: ignore[index]
                    try:
                        kind, payload = loads(conn.recv_bytes())  # type: ignore[union-attr]
                    except (EOFError, OSError):
                        self._lost(index)
                        del live[conn]  # type: ignore[arg-type]
                        continue
                    if kind == "events":
                        events, lines = payload
                        if lines is not None:
                            if not lines[0] and lines[1]:  # written into its store pipe
                                self.store_frames[index] += 1
                                lines = (b"", 0, lines[2])  # nothing left to pass on
                            if self.on_encoded is not None:
                                self.on_encoded(events, lines)
                        yield from events
                    elif kind == "state":
                        stats, capture, first, last, assets = payload
                        self.engine._update(index, stats, first, last)
                        self._capture[index] = capture
                        self.engine._assets.extend(assets)
                    elif kind == "done":
                        if payload:
                            self._failures.append(payload)
                        del live[conn]  # type: ignore[arg-type]
                now = time.monotonic()
                if now >= next_tick:
                    next_tick = now + TICK_S
                    if self.on_tick is not None:
                        self.on_tick()
        finally:
            self.close()

    def _lost(self, index: int) -> None:
        proc = self._procs[index]
        proc.join(timeout=5)
        self._failures.append(
            f"capture worker {index} on {self.iface!r} ended unexpectedly (exit code {proc.exitcode})"
        )

    def close(self) -> None:
        self.stop()
        for proc in self._procs:
            proc.join(timeout=10)
            if proc.is_alive():  # pragma: no cover - a worker stuck past its drain
                proc.kill()
                proc.join()
        for conn in self._conns:
            conn.close()
        self._procs, self._conns = [], []


def settle() -> None:
    """What a long-running process holds from its start (rules, baseline, the engine's
    tables) is left out of the cyclic collector's walks, and the walks come less often: the
    events it makes and drops by the hundred thousand per second hold no cycles."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_THRESHOLD, 50, 50)


def dumps(message: tuple) -> bytes:
    """A message from a worker to the parent. Events hold plain values (str, int, float,
    bool, None, lists, tuples, dicts), which marshal writes and reads back alike, in less
    of the parent's time than pickle (its loop is the sensor's narrowest); anything else
    goes pickled. The parent tells them apart by the first byte (``loads``)."""
    try:
        return marshal.dumps(message, 4)
    except ValueError:  # a value marshal cannot hold (a class instance...)
        return pickle.dumps(message, pickle.HIGHEST_PROTOCOL)


def loads(data: bytes) -> Any:
    """The message ``dumps`` made: a pickle starts with its PROTO opcode, never marshal's."""
    if data[:1] == b"\x80":
        return pickle.loads(data)
    return marshal.loads(data)


def _signal(pid: int | None) -> None:
    if pid is not None:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGTERM)


def _worker(
    index: int,
    sources: list[LiveSource],
    out: connection.Connection,
    inherited: list[connection.Connection],
    config: EngineConfig,
    encode: Callable[[list[dict]], Encoded] | None,
    send_frame: Callable[[int, bytes], bool] | None,
    store_pipes: list[tuple[int, int]],
) -> None:
    """One capture process: its socket, an engine, batches of events up the pipe (and their
    store frames into its own pipe to the store's writer process)."""
    for conn in inherited:
        conn.close()
    store_fd = -1
    for i, (read, write) in enumerate(store_pipes):
        os.close(read)
        if i == index:
            store_fd = write
        else:
            os.close(write)
    source = sources[index]
    for i, other in enumerate(sources):
        if i != index:
            other.release()
    stop = lambda *_: source.stop()  # noqa: E731
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    engine = Engine(config)
    batch: list[dict] = []
    send = out.send_bytes
    settle()

    def flush() -> None:
        nonlocal store_fd
        if batch:
            lines = None if encode is None else encode(batch)
            if lines is not None and lines[1] and store_fd >= 0 and send_frame is not None:
                if send_frame(store_fd, lines[0]):
                    lines = (b"", lines[1], lines[2])  # the parent learns it went
                else:  # the store's writer is gone: the parent's store counts what is lost
                    os.close(store_fd)
                    store_fd = -1
            send(dumps(("events", (batch, lines))))
            batch.clear()

    def state() -> None:
        flush()
        payload = (
            engine.stats,
            source.stats(),
            engine.first_ts,
            engine.last_ts,
            engine.changed_assets(),
        )
        send(dumps(("state", payload)))

    source.on_tick = state
    failure = ""
    due = time.monotonic() + FLUSH_S
    try:
        try:
            for event in engine.run(source):
                batch.append(event)
                if len(batch) >= BATCH or time.monotonic() >= due:
                    flush()
                    due = time.monotonic() + FLUSH_S
        except CaptureError as exc:  # the interface went away: what is open is still sent
            failure = str(exc)
        batch.extend(engine.finish())
        state()
        send(dumps(("done", failure)))
    except (BrokenPipeError, KeyboardInterrupt):
        pass  # the parent is gone: nobody to tell
    finally:
        out.close()
        if store_fd >= 0:
            os.close(store_fd)
