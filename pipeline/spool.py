"""A bounded on-disk queue for documents that could not be sent yet (Kafka unreachable).

One FIFO per document kind (``pipeline.kinds``: ``alert``, ``event``, ``asset``...), each a
folder of numbered segment files. Kinds go to different topics, so order only matters within a kind, and a
per-kind queue lets the spool drop *events* without touching alerts.

Record framing: ``<u32 length of key+value> <u32 crc32(key+value)> <u16 key length>`` then
key and value bytes. A torn or corrupt tail (power loss mid-write) is cut off on open and
counted in ``corrupt``.

Durability: an alert is fsync'd before ``append`` returns; events and assets are fsync'd at
most ``sync_interval`` seconds later (and on roll, ``sync()`` and ``close()``), so a power
cut can lose at most that much of them.

Bound: when the segments on disk would exceed ``max_bytes``, the oldest segments of the least
important kind are deleted first (events, then ... assets: ``kinds.eviction_order()``); the
records lost are counted. Alerts are
never dropped to make room; an alert that does not fit even then is refused (``append``
returns False, counted in ``alerts_refused``), the only way to keep the disk bound.

Disk full (or any write error): the failed record is cut off again (the segment ends at its
last whole record), one error line is logged for the outage, events and assets are counted in
``write_errors`` and dropped, and alerts wait in memory (at most ``max_memory_alerts``, counted
in ``alerts_refused`` beyond that). Every later append, read and sync first retries writing
the waiting alerts, in order; when the disk has room again they reach the spool, the sensor
logs that it recovered, and nothing else changes.

Reading: ``read(kind, n)`` returns the oldest unacknowledged records without consuming them;
``ack(kind, records)`` moves the kind's cursor past them (persisted, so a restart resumes
there) and deletes fully consumed segments.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import struct
import threading
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from pipeline import kinds

log = logging.getLogger(__name__)

HEADER = struct.Struct("<IIH")
MAX_RECORD = 64 << 20  # larger lengths in a header mean corruption, not a record
SEGMENT_SUFFIX = ".seg"


@dataclass(slots=True)
class SpoolRecord:
    kind: str
    key: bytes | None
    value: bytes
    segment: int  # sequence number of its segment
    end: int  # byte offset just past it in that segment


@dataclass(slots=True)
class _Segment:
    seq: int
    path: Path
    size: int = 0
    records: int = 0


@dataclass(slots=True)
class _Queue:
    kind: str
    folder: Path
    segments: list[_Segment] = field(default_factory=list)
    writer: BinaryIO | None = None
    cursor_seq: int = 0  # first unread segment
    cursor_off: int = 0  # offset of the first unread record in it
    consumed_in_cursor_seg: int = 0  # records before cursor_off in that segment
    dirty_since: float | None = None  # unsynced appends since this monotonic time
    next_seq: int = 1  # never reused, so a stale SpoolRecord cannot name a newer segment


class Spool:
    def __init__(
        self,
        directory: str | Path,
        max_bytes: int = 1 << 30,
        segment_bytes: int = 4 << 20,
        sync_interval: float = 1.0,
        max_memory_alerts: int = 10_000,
    ) -> None:
        if max_bytes < 2 * segment_bytes:
            raise ValueError("max_bytes must hold at least two segments")
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self.sync_interval = sync_interval
        self._lock = threading.RLock()
        self.counters: dict[str, int] = {
            "appended": 0,
            "acked": 0,
            **{f"{k.plural}_dropped": 0 for k in kinds.all_kinds() if k.evictable},
            "alerts_refused": 0,
            "corrupt": 0,
            "write_errors": 0,
        }
        self.max_memory_alerts = max_memory_alerts
        self._waiting: list[tuple[str, bytes]] = []  # alerts not written yet (disk full)
        self._write_failing: str | None = None  # the error of the current outage
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OSError(f"spool folder {self.directory}: {exc.strerror}") from exc
        # One process per spool folder: a second sensor on the same folder would interleave.
        self._lock_file = open(self.directory / "lock", "a+b")  # noqa: SIM115 - held while open
        try:
            fcntl.flock(self._lock_file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._lock_file.close()
            raise OSError(
                f"spool folder {self.directory} is in use by another process: give each running "
                "sensor its own (spool.dir, or ICSMON_SPOOL_DIR)"
            ) from None
        self._queues = {kind: self._open_queue(kind) for kind in kinds.sensor_kinds()}
        self._eviction_order = kinds.eviction_order()

    # ---- opening and recovery -------------------------------------------------------

    def _open_queue(self, kind: str) -> _Queue:
        folder = self.directory / kind
        folder.mkdir(exist_ok=True)
        queue = _Queue(kind, folder)
        seqs = sorted(int(p.stem) for p in folder.glob(f"*{SEGMENT_SUFFIX}") if p.stem.isdigit())
        for seq in seqs:
            seg = _Segment(seq, folder / f"{seq:020d}{SEGMENT_SUFFIX}")
            self._scan(seg)
            if seg.size == 0:
                seg.path.unlink(missing_ok=True)
                continue
            queue.segments.append(seg)
        queue.next_seq = (seqs[-1] + 1) if seqs else 1
        cursor_file = folder / "cursor"
        if cursor_file.exists():
            try:
                seq_text, off_text = cursor_file.read_text().split()
                queue.cursor_seq, queue.cursor_off = int(seq_text), int(off_text)
            except (OSError, ValueError):
                log.warning("spool %s: unreadable cursor, replaying the whole queue", folder)
        queue.next_seq = max(queue.next_seq, queue.cursor_seq + 1)
        self._settle_cursor(queue)
        return queue

    def _scan(self, seg: _Segment) -> None:
        """Count the records of a segment; cut a torn or corrupt tail."""
        good = 0
        count = 0
        with open(seg.path, "rb") as fh:
            data = fh.read()
        while good + HEADER.size <= len(data):
            length, crc, key_len = HEADER.unpack_from(data, good)
            end = good + HEADER.size + length
            if length > MAX_RECORD or key_len > length or end > len(data):
                break
            if zlib.crc32(data[good + HEADER.size : end]) != crc:
                break
            good = end
            count += 1
        if good != len(data):
            self.counters["corrupt"] += 1
            log.warning(
                "spool %s: cut %d bytes of torn or corrupt data", seg.path, len(data) - good
            )
            with open(seg.path, "r+b") as fh:
                fh.truncate(good)
                os.fsync(fh.fileno())
        seg.size = good
        seg.records = count

    def _settle_cursor(self, queue: _Queue) -> None:
        """Point the cursor at a live segment and count the records already read in it."""
        segs = queue.segments
        while segs and (
            segs[0].seq < queue.cursor_seq
            or (
                segs[0].seq == queue.cursor_seq
                and queue.cursor_off >= segs[0].size
                and len(segs) > 1
            )
        ):
            self._delete_segment(queue, segs[0])
        if not segs:
            queue.cursor_seq, queue.cursor_off, queue.consumed_in_cursor_seg = queue.next_seq, 0, 0
            return
        if queue.cursor_seq != segs[0].seq or queue.cursor_off > segs[0].size:
            queue.cursor_seq, queue.cursor_off = segs[0].seq, 0
        queue.consumed_in_cursor_seg = self._count_until(segs[0], queue.cursor_off)

    def _count_until(self, seg: _Segment, offset: int) -> int:
        if offset == 0:
            return 0
        count = 0
        pos = 0
        with open(seg.path, "rb") as fh:
            while pos < offset:
                header = fh.read(HEADER.size)
                if len(header) < HEADER.size:
                    break
                length = HEADER.unpack(header)[0]
                fh.seek(length, os.SEEK_CUR)
                pos += HEADER.size + length
                count += 1
        return count

    # ---- writing ----------------------------------------------------------------------

    def append(self, kind: str, key: bytes | None, value: bytes) -> bool:
        """Queue one record; False for a record that cannot be kept (counted): an alert that
        cannot fit in ``max_bytes``, or, while the disk refuses writes, an event or asset or
        an alert beyond ``max_memory_alerts``."""
        key = key or b""
        payload = key + value
        record = HEADER.pack(len(payload), zlib.crc32(payload), len(key)) + payload
        with self._lock:
            if self._waiting and not self._retry_waiting():
                return self._keep_in_memory(kind, record)
            if not self._make_room(len(record), kind):
                self.counters["alerts_refused"] += 1
                log.error("spool full of alerts (%d bytes): alert refused", self.size_bytes())
                return False
            try:
                self._write(kind, record)
            except OSError as exc:
                self._write_failed(exc)
                return self._keep_in_memory(kind, record)
            if self._write_failing is not None:
                self._write_recovered()
            return True

    def _write(self, kind: str, record: bytes) -> None:
        """Append one framed record; on an error the segment is cut back to its last whole
        record (so a torn write never hides the records after it) and the error raised."""
        queue = self._queues[kind]
        seg = queue.segments[-1] if queue.segments and queue.writer else None
        if seg is None or seg.size + len(record) > self.segment_bytes:
            seg = self._roll(queue)
        assert queue.writer is not None
        try:
            queue.writer.write(record)
            queue.writer.flush()
            if kind == "alert":
                os.fsync(queue.writer.fileno())
        except OSError:
            self._cut_back(queue, seg)
            raise
        seg.size += len(record)
        seg.records += 1
        self.counters["appended"] += 1
        now = time.monotonic()
        if kind == "alert":
            pass
        elif queue.dirty_since is None:
            queue.dirty_since = now
        elif now - queue.dirty_since >= self.sync_interval:
            os.fsync(queue.writer.fileno())
            queue.dirty_since = None

    def _cut_back(self, queue: _Queue, seg: _Segment) -> None:
        writer, queue.writer = queue.writer, None
        if writer is not None:
            # The buffered bytes of the failed write must not be written by close() later.
            fd = os.dup(writer.fileno())
            try:
                with contextlib.suppress(OSError):
                    writer.close()
            finally:
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, seg.size)
                os.close(fd)
        if seg.records == 0 and seg is queue.segments[-1]:
            with contextlib.suppress(OSError):
                self._delete_segment(queue, seg)
                self._settle_cursor(queue)
        else:
            with contextlib.suppress(OSError):
                queue.writer = open(seg.path, "ab")  # noqa: SIM115 - kept open across appends

    def _write_failed(self, exc: OSError) -> None:
        self.counters["write_errors"] += 1
        if self._write_failing is None:
            self._write_failing = exc.strerror or str(exc)
            log.error(
                "spool %s: cannot write (%s): alerts wait in memory (up to %d), events "
                "and assets are dropped until it can",
                self.directory,
                self._write_failing,
                self.max_memory_alerts,
            )

    def _write_recovered(self) -> None:
        log.warning(
            "spool %s: writing again after %s (%d records lost meanwhile)",
            self.directory,
            self._write_failing,
            self.counters["write_errors"],
        )
        self._write_failing = None

    def _keep_in_memory(self, kind: str, record: bytes) -> bool:
        if kind == "alert" and len(self._waiting) < self.max_memory_alerts:
            self._waiting.append((kind, record))
            return True
        if kind == "alert":
            self.counters["alerts_refused"] += 1
        else:
            self.counters["write_errors"] += 1
        return False

    def _retry_waiting(self) -> bool:
        """Write the alerts waiting in memory, oldest first; True when none is left."""
        while self._waiting:
            kind, record = self._waiting[0]
            if not self._make_room(len(record), kind):
                return False
            try:
                self._write(kind, record)
            except OSError:
                return False
            self._waiting.pop(0)
        if self._write_failing is not None:
            self._write_recovered()
        return True

    def _roll(self, queue: _Queue) -> _Segment:
        if queue.writer is not None:
            queue.writer.flush()
            os.fsync(queue.writer.fileno())
            queue.writer.close()
            queue.dirty_since = None
        seq = queue.next_seq
        queue.next_seq += 1
        seg = _Segment(seq, queue.folder / f"{seq:020d}{SEGMENT_SUFFIX}")
        queue.writer = open(seg.path, "ab")  # noqa: SIM115 - kept open across appends
        queue.segments.append(seg)
        if len(queue.segments) == 1:
            queue.cursor_seq, queue.cursor_off, queue.consumed_in_cursor_seg = seq, 0, 0
        _fsync_dir(queue.folder)
        return seg

    def _make_room(self, need: int, kind: str) -> bool:
        while self.size_bytes() + need > self.max_bytes:
            victim = None
            for evict_kind in self._eviction_order:
                if self._queues[evict_kind].segments:
                    victim = self._queues[evict_kind]
                    break
            if victim is None:
                return False
            seg = victim.segments[0]
            lost = seg.records - (
                victim.consumed_in_cursor_seg if victim.cursor_seq == seg.seq else 0
            )
            self.counters[f"{kinds.get(victim.kind).plural}_dropped"] += lost
            log.warning("spool full: dropped %d oldest %s records", lost, victim.kind)
            if victim.writer is not None and seg is victim.segments[-1]:
                victim.writer.close()
                victim.writer = None
            self._delete_segment(victim, seg)
            self._settle_cursor(victim)
        return True

    def _delete_segment(self, queue: _Queue, seg: _Segment) -> None:
        if queue.writer is not None and queue.segments and seg is queue.segments[-1]:
            queue.writer.close()
            queue.writer = None
        seg.path.unlink(missing_ok=True)
        queue.segments.remove(seg)

    # ---- reading ----------------------------------------------------------------------

    def read(self, kind: str, max_records: int) -> list[SpoolRecord]:
        """The oldest unacknowledged records of ``kind`` (at most ``max_records``)."""
        out: list[SpoolRecord] = []
        with self._lock:
            if self._waiting:
                self._retry_waiting()
            queue = self._queues[kind]
            if queue.writer is not None:
                queue.writer.flush()
            offset = queue.cursor_off
            for seg in queue.segments:
                if seg.seq < queue.cursor_seq:
                    continue
                if seg.seq > queue.cursor_seq:
                    offset = 0
                with open(seg.path, "rb") as fh:
                    fh.seek(offset)
                    data = fh.read(seg.size - offset)
                pos = 0
                while pos + HEADER.size <= len(data) and len(out) < max_records:
                    length, _crc, key_len = HEADER.unpack_from(data, pos)
                    start = pos + HEADER.size
                    key = data[start : start + key_len] or None
                    value = data[start + key_len : start + length]
                    pos = start + length
                    out.append(SpoolRecord(kind, key, value, seg.seq, offset + pos))
                if len(out) >= max_records:
                    break
        return out

    def ack(self, kind: str, records: list[SpoolRecord]) -> None:
        """The records (a prefix of what ``read`` returned) were delivered: move past them."""
        if not records:
            return
        last = records[-1]
        with self._lock:
            queue = self._queues[kind]
            # Records of segments evicted meanwhile are already gone: nothing to move.
            if not any(seg.seq == last.segment for seg in queue.segments):
                return
            for seg in list(queue.segments):
                if seg.seq < last.segment:
                    self._delete_segment(queue, seg)
            queue.consumed_in_cursor_seg = (
                queue.consumed_in_cursor_seg if queue.cursor_seq == last.segment else 0
            ) + sum(1 for r in records if r.segment == last.segment)
            queue.cursor_seq, queue.cursor_off = last.segment, last.end
            self.counters["acked"] += len(records)
            head = queue.segments[0]
            if queue.cursor_off >= head.size:
                # Fully consumed: delete it (the active segment too; the next append rolls).
                self._delete_segment(queue, head)
                queue.cursor_seq = queue.segments[0].seq if queue.segments else queue.next_seq
                queue.cursor_off = 0
                queue.consumed_in_cursor_seg = 0
            self._write_cursor(queue)

    def _write_cursor(self, queue: _Queue) -> None:
        tmp = queue.folder / "cursor.tmp"
        try:
            tmp.write_text(f"{queue.cursor_seq} {queue.cursor_off}\n")
            os.replace(tmp, queue.folder / "cursor")
        except OSError as exc:  # disk full: a restart replays a little more (ids de-duplicate)
            self._write_failed(exc)

    # ---- state ------------------------------------------------------------------------

    def pending(self, kind: str | None = None) -> int:
        """Records not yet acknowledged (of one kind, or all)."""
        with self._lock:
            wanted = [kind] if kind else list(self._queues)
            total = 0
            for k in wanted:
                queue = self._queues[k]
                total += sum(seg.records for seg in queue.segments)
                total += sum(1 for w in self._waiting if w[0] == k)
                if queue.segments and queue.segments[0].seq == queue.cursor_seq:
                    total -= queue.consumed_in_cursor_seg
            return total

    def size_bytes(self) -> int:
        with self._lock:
            return sum(seg.size for q in self._queues.values() for seg in q.segments)

    def sync(self) -> None:
        with self._lock:
            if self._waiting:
                self._retry_waiting()
            for queue in self._queues.values():
                if queue.writer is not None:
                    try:
                        queue.writer.flush()
                        os.fsync(queue.writer.fileno())
                    except OSError as exc:
                        self._write_failed(exc)
                    queue.dirty_since = None

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {**self.counters, "pending": self.pending(), "bytes": self.size_bytes()}

    def close(self) -> None:
        with self._lock:
            self.sync()
            if self._waiting:
                log.error(
                    "spool %s: %d alerts could not be written before closing (disk full)",
                    self.directory,
                    len(self._waiting),
                )
                self.counters["alerts_refused"] += len(self._waiting)
                self._waiting.clear()
            for queue in self._queues.values():
                if queue.writer is not None:
                    queue.writer.close()
                    queue.writer = None
            if not self._lock_file.closed:
                fcntl.flock(self._lock_file.fileno(), fcntl.LOCK_UN)
                self._lock_file.close()


def _fsync_dir(folder: Path) -> None:
    """Make a new segment's directory entry durable too."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
