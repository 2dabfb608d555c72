"""Evidence at the edge: a bounded ring of recent raw packets, and per-alert captures.

The ring keeps the newest frames the sensor read, bounded by bytes and by age (capture
time). When an alert fires, :meth:`AlertCaptures.arm` takes that flow's frames from the ring
for the seconds before the alert and keeps collecting the flow's frames for the seconds
after; when that window has passed (or the sensor stops) the frames are written as a pcap
file named after the alert, which Wireshark opens. Each capture is bounded (bytes and
frames), and so is the folder (oldest files removed first, by bytes and age).

Both are fed whole batches of frames (``Engine.tap``): the ring's per-frame cost is a deque
append and a length sum; frames are matched to armed flows only while a capture is open.
The ring may be read from another thread (an evidence request: ``flow_frames``); a lock
taken once per batch keeps that reader off a deque being changed.
Matching reads the addresses and ports from the frame (``flow_of``); a capture does not
depend on the dissectors, so a flow that confused them is still recorded as it was.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import struct
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from operator import itemgetter
from pathlib import Path

from sensor import decode as dec

log = logging.getLogger(__name__)

Frame = tuple[float, int, bytes]
_third = itemgetter(2)

# pcap with nanosecond timestamps (magic a1b23c4d), version 2.4, snaplen 262144
_PCAP_HEADER = struct.Struct("<IHHiIII")
_PCAP_RECORD = struct.Struct("<IIII")
PCAP_MAGIC_NS = 0xA1B23C4D


def pcap_chunks(frames: Iterable[Frame], linktype: int) -> Iterator[bytes]:
    """A pcap file's bytes, header first, then each frame's record and bytes."""
    yield _PCAP_HEADER.pack(PCAP_MAGIC_NS, 2, 4, 0, 0, 262144, linktype)
    for ts, _lt, data in frames:
        sec = int(ts)
        nsec = min(999_999_999, max(0, round((ts - sec) * 1e9)))
        yield _PCAP_RECORD.pack(sec, nsec, len(data), len(data))
        yield data


def pcap_bytes(frames: Iterable[Frame], linktype: int) -> bytes:
    return b"".join(pcap_chunks(frames, linktype))


def write_pcap(path: Path, frames: Iterable[Frame], linktype: int) -> int:
    """Frames to a pcap file (written to a temporary name, then renamed); bytes written."""
    tmp = path.with_name(path.name + ".part")
    size = 0
    with open(tmp, "wb") as fh:
        for chunk in pcap_chunks(frames, linktype):
            fh.write(chunk)
            size += len(chunk)
    os.replace(tmp, path)
    return size


def flow_key(
    source_ip: object, destination_ip: object, source_port: object, destination_port: object
) -> tuple[bytes, bytes, int, int] | None:
    """The key ``flow_of`` gives a frame, from a document's addresses and ports (an alert's,
    a request's); None when they are not an IP address pair with ports."""
    try:
        src = ipaddress.ip_address(str(source_ip)).packed
        dst = ipaddress.ip_address(str(destination_ip)).packed
    except ValueError:
        return None
    if type(source_port) is not int or type(destination_port) is not int:
        return None
    return src, dst, source_port, destination_port


def flow_of(linktype: int, data: bytes) -> tuple[bytes, bytes, int, int] | None:
    """(source address, destination address, source port, destination port) of a TCP frame
    (IPv4 or IPv6, any link type the sensor decodes); None for anything else."""
    link = dec.link_payload(linktype, data)
    if isinstance(link, str):
        return None
    etype, off, _smac, _dmac = link
    if etype == dec.ETH_IPV4:
        if len(data) < off + 20 or data[off + 9] != 6:
            return None
        ihl = (data[off] & 0x0F) * 4
        src, dst = data[off + 12 : off + 16], data[off + 16 : off + 20]
        tcp = off + ihl
    elif etype == dec.ETH_IPV6:
        r = dec.ipv6_payload(data, off)
        if isinstance(r, str) or r[2] != 6:
            return None
        src, dst = r[0], r[1]
        seg = r[3]
        if len(seg) < 4:
            return None
        return src, dst, seg[0] << 8 | seg[1], seg[2] << 8 | seg[3]
    else:
        return None
    if len(data) < tcp + 4:
        return None
    return src, dst, data[tcp] << 8 | data[tcp + 1], data[tcp + 2] << 8 | data[tcp + 3]


def _same_flow(key: tuple[bytes, bytes, int, int], want: tuple[bytes, bytes, int, int]) -> bool:
    return key == want or (key[0], key[1], key[2], key[3]) == (want[1], want[0], want[3], want[2])


class PacketRing:
    """The newest frames, at most ``max_bytes`` of them and none older than ``max_age_s``
    (capture time) behind the newest."""

    def __init__(self, max_bytes: int = 64 << 20, max_age_s: float = 300.0) -> None:
        self.max_bytes = max_bytes
        self.max_age_s = max_age_s
        self.frames: deque[Frame] = deque()
        self.bytes = 0
        self.stats = {"frames": 0, "evicted": 0}
        self._lock = threading.Lock()

    def add(self, frames: list[Frame]) -> None:
        if not frames:
            return
        with self._lock:
            self.frames.extend(frames)
            self.bytes += sum(map(len, map(_third, frames)))
            self.stats["frames"] += len(frames)
            ring = self.frames
            if self.bytes > self.max_bytes or ring[0][0] < frames[-1][0] - self.max_age_s:
                horizon = frames[-1][0] - self.max_age_s
                while ring and (self.bytes > self.max_bytes or ring[0][0] < horizon):
                    self.bytes -= len(ring.popleft()[2])
                    self.stats["evicted"] += 1

    def span(self) -> tuple[float, float] | None:
        """Capture times of the oldest and newest frame held, or None when empty."""
        with self._lock:
            return (self.frames[0][0], self.frames[-1][0]) if self.frames else None

    def flow_frames(
        self, flow: tuple[bytes, bytes, int, int], since: float, until: float
    ) -> list[Frame]:
        """The ring's frames of one flow (either direction) within [since, until]."""
        with self._lock:
            held = list(self.frames)
        out: list[Frame] = []
        for frame in held:
            ts = frame[0]
            if ts < since or ts > until:
                continue
            key = flow_of(frame[1], frame[2])
            if key is not None and _same_flow(key, flow):
                out.append(frame)
        return out


@dataclass
class _Capture:
    name: str
    flow: tuple[bytes, bytes, int, int]
    until: float
    linktype: int
    frames: list[Frame] = field(default_factory=list)
    bytes: int = 0
    truncated: bool = False


class AlertCaptures:
    """Per-alert pcap files in ``folder`` from the ring and the frames that follow."""

    def __init__(
        self,
        folder: str | os.PathLike[str],
        ring: PacketRing,
        before_s: float = 5.0,
        after_s: float = 5.0,
        max_capture_bytes: int = 4 << 20,
        max_folder_bytes: int = 256 << 20,
        max_age_s: float = 30 * 86400.0,
    ) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.ring = ring
        self.before_s = before_s
        self.after_s = after_s
        self.max_capture_bytes = max_capture_bytes
        self.max_folder_bytes = max_folder_bytes
        self.max_age_s = max_age_s
        self._open: dict[str, _Capture] = {}
        self._closes_at = float("inf")
        self.stats = {"captures": 0, "capture_bytes": 0, "truncated": 0, "pruned": 0, "errors": 0}

    # -- the frame path -------------------------------------------------------------------

    def add(self, frames: list[Frame]) -> None:
        """A batch of frames the sensor read (after the ring took them)."""
        if not self._open:
            return
        for frame in frames:
            key = flow_of(frame[1], frame[2])
            if key is None:
                continue
            for cap in self._open.values():
                if frame[0] <= cap.until and _same_flow(key, cap.flow):
                    self._keep(cap, frame)
        if frames[-1][0] >= self._closes_at:
            self.close_due(frames[-1][0])

    def _keep(self, cap: _Capture, frame: Frame) -> None:
        if cap.bytes + len(frame[2]) > self.max_capture_bytes:
            cap.truncated = True
            return
        cap.frames.append(frame)
        cap.bytes += len(frame[2])

    # -- alerts ---------------------------------------------------------------------------

    def arm(self, name: str, flow: tuple[bytes, bytes, int, int], ts: float, linktype: int) -> None:
        """An alert at ``ts`` on ``flow``: record it as ``<name>.pcap``."""
        if name in self._open or (self.folder / f"{_safe(name)}.pcap").exists():
            return  # the same alert again (a merged repeat): one capture
        cap = _Capture(name, flow, ts + self.after_s, linktype)
        for frame in self.ring.flow_frames(flow, ts - self.before_s, ts + self.after_s):
            self._keep(cap, frame)
        self._open[name] = cap
        self._closes_at = min(self._closes_at, cap.until)

    def arm_alert(self, alert: dict, linktype: int) -> bool:
        """Arm for an alert document (flat): its id, flow and time; False when it names no
        flow (a sensor-wide alert, a silence) or no time."""
        from sensor.timestamps import parse_timestamp

        name = alert.get("event.id")
        key = flow_key(
            alert.get("source.ip"),
            alert.get("destination.ip"),
            alert.get("source.port"),
            alert.get("destination.port"),
        )
        ts = parse_timestamp(alert.get("@timestamp"))
        if not isinstance(name, str) or not name or key is None or ts is None:
            return False
        self.arm(name, key, ts, linktype)
        return True

    def close_due(self, now: float) -> list[Path]:
        """Write the captures whose window ended before ``now``."""
        done = [c for c in self._open.values() if c.until < now]
        return [self._write(c) for c in done if c is not None] if done else []

    def close_all(self) -> list[Path]:
        return [self._write(c) for c in list(self._open.values())]

    def pending(self, name: str) -> bool:
        return name in self._open

    def path(self, name: str) -> Path:
        return self.folder / f"{_safe(name)}.pcap"

    def _write(self, cap: _Capture) -> Path:
        del self._open[cap.name]
        self._closes_at = min((c.until for c in self._open.values()), default=float("inf"))
        path = self.path(cap.name)
        frames = sorted(cap.frames, key=itemgetter(0))
        try:
            size = write_pcap(path, frames, cap.linktype)
        except OSError as exc:  # a full disk costs this capture, never the sensor
            self.stats["errors"] += 1
            log.error("cannot write the evidence capture %s: %s", path, exc)
            return path
        self.stats["captures"] += 1
        self.stats["capture_bytes"] += size
        if cap.truncated:
            self.stats["truncated"] += 1
        self._prune()
        return path

    def _prune(self) -> None:
        """Oldest files first, until the folder is within its bytes and age."""
        try:
            files = sorted(
                (p.stat().st_mtime, p.stat().st_size, p) for p in self.folder.glob("*.pcap")
            )
        except OSError:
            return
        total = sum(size for _, size, _ in files)
        horizon = time.time() - self.max_age_s
        for mtime, size, path in files:
            if total <= self.max_folder_bytes and mtime >= horizon:
                break
            try:
                path.unlink()
            except OSError:
                continue
            total -= size
            self.stats["pruned"] += 1


def _safe(name: str) -> str:
    """A file name from an alert id (ids are hex, but a name must never leave the folder)."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:128] or "alert"
