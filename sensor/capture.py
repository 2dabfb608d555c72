"""Capture files: pcap (both byte orders, micro/nanosecond) and pcapng (several interfaces,
SHB/IDB/EPB/SPB/OPB, per-interface link type and timestamp resolution), plain or gzip.

A reader is an iterable of frames ``(ts, linktype, data)``: ``ts`` float epoch seconds,
``linktype`` the pcap LINKTYPE_* number, ``data`` the captured bytes. Damage does not raise
out of the iteration: the frames before it are yielded, then iteration stops and
``reader.error`` holds one line saying what was wrong and where. A file that is not a capture
at all raises :class:`CaptureError` when opened.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, Final

Frame = tuple[float, int, bytes]

_CHUNK = 1 << 20
_PCAP_MAGICS = {
    b"\xd4\xc3\xb2\xa1": ("<", 1e-6),
    b"\xa1\xb2\xc3\xd4": (">", 1e-6),
    b"\x4d\x3c\xb2\xa1": ("<", 1e-9),
    b"\xa1\xb2\x3c\x4d": (">", 1e-9),
}
_PCAPNG_SHB = b"\x0a\x0d\x0d\x0a"
# a batch ends after this many bytes of records: the engine holds a batch's events until it
# is done, and small batches keep those in the CPU cache (and out of the garbage collector's
# older generations)
_BATCH_BYTES: Final = 8 * 1024
_MAX_RECORD: Final = 256 * 1024  # larger "packets" mean a corrupt length field, not a jumbo frame
_READ_ERRORS = (OSError, EOFError, gzip.BadGzipFile, zlib.error)
# smallest total length of a pcapng block of each type that carries a body we unpack
_PCAPNG_MIN_BLOCK = {1: 20, 2: 32, 3: 16, 6: 32}


def _u32(buf: bytes, pos: int, little: bool) -> int:
    """The 32-bit unsigned integer at ``pos`` (little- or big-endian): a pcap record header's
    field, read without ``struct`` (a direct C call in the compiled build)."""
    if little:
        return buf[pos] | buf[pos + 1] << 8 | buf[pos + 2] << 16 | buf[pos + 3] << 24
    return buf[pos] << 24 | buf[pos + 1] << 16 | buf[pos + 2] << 8 | buf[pos + 3]


class CaptureError(Exception):
    """A capture that cannot be read at all; the message is one line naming the file."""


def _open(path: Path) -> BinaryIO:
    try:
        raw = path.open("rb")
    except FileNotFoundError:
        raise CaptureError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise CaptureError(f"{path}: is a directory, not a capture file") from None
    except PermissionError:
        raise CaptureError(f"{path}: permission denied") from None
    head = raw.read(2)
    raw.seek(0)
    if head == b"\x1f\x8b":
        return gzip.GzipFile(fileobj=raw, mode="rb")  # type: ignore[return-value]
    return raw


class _ChunkReader:
    """Buffered byte access for the record parsers: few large reads, cheap slices."""

    __slots__ = ("_f", "_read", "buf", "pos", "consumed", "eof", "read_error")

    def __init__(self, f: BinaryIO, initial: bytes = b"") -> None:
        self._f = f
        # a gzip stream cut short raises at its end and the data that read() had decompressed
        # in that call is lost: read1() hands over what it has, one member read at a time
        self._read = f.read1 if isinstance(f, gzip.GzipFile) else f.read
        self.buf = initial
        self.pos = 0
        self.consumed = 0  # file offset of buf[0]
        self.eof = False
        self.read_error: str | None = None

    def need(self, n: int) -> bool:
        """Make at least ``n`` bytes available from ``pos``; False at end of file."""
        while len(self.buf) - self.pos < n:
            if self.eof:
                return False
            try:
                chunk = self._read(max(_CHUNK, n))
            except _READ_ERRORS as exc:
                self.read_error = f"decompression failed ({exc})"
                chunk = b""
            if not chunk:
                self.eof = True
                return False
            self.consumed += self.pos
            self.buf = self.buf[self.pos :] + chunk
            self.pos = 0
        return True

    def offset(self) -> int:
        return self.consumed + self.pos


class CaptureReader:
    """Iterate the frames of a pcap or pcapng file (see the module docstring)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.error: str | None = None
        self.frames = 0
        self._f = _open(self.path)
        try:
            head = self._f.read(4)
        except _READ_ERRORS as exc:
            self._f.close()
            raise CaptureError(f"{self.path}: cannot read ({exc})") from None
        if head in _PCAP_MAGICS:
            self.format = "pcap"
        elif head == _PCAPNG_SHB:
            self.format = "pcapng"
        else:
            self._f.close()
            what = "empty file" if not head else "not a pcap or pcapng file"
            raise CaptureError(f"{self.path}: {what}")
        self._reader = _ChunkReader(self._f, head)

    def __iter__(self) -> Iterator[Frame]:
        for batch in self.batches():
            yield from batch

    def batches(self) -> Iterator[list[Frame]]:
        """The same frames as iteration, a list at a time (every complete record of one read
        block): one generator step per block instead of per frame, for the engine's loop."""
        try:
            if self.format == "pcap":
                yield from self._pcap()
            else:
                for frame in self._pcapng():
                    yield [frame]
        finally:
            self._f.close()

    def close(self) -> None:
        self._f.close()

    def _damage(self, what: str, frames: int) -> None:
        r = self._reader
        cause = r.read_error or what
        self.error = f"{self.path}: {cause} at byte {r.offset()} after {frames} packets"

    # -- pcap -------------------------------------------------------------------------

    def _pcap(self) -> Iterator[list[Frame]]:
        r = self._reader
        if not r.need(24):
            self._damage("truncated pcap file header", 0)
            return
        order, scale = _PCAP_MAGICS[r.buf[0:4]]
        _vmaj, _vmin, _zone, _sig, _snap, network = struct.unpack_from(order + "HHiIII", r.buf, 4)
        linktype: int = network & 0x0FFFFFFF if network & 0xF0000000 else network & 0xFFFF
        r.pos = 24
        rec = struct.Struct(order + "IIII")
        unpack = rec.unpack_from
        little = order == "<"
        nframes = 0
        # typed locals: the compiled build (setup.py) keeps them as machine integers
        sec: int
        frac: int
        incl: int
        end: int
        try:
            while True:
                if len(r.buf) - r.pos < 16 and not r.need(16):
                    if len(r.buf) - r.pos:
                        self._damage("truncated record header", nframes)
                    elif r.read_error:
                        self._damage("", nframes)
                    return
                buf = r.buf
                pos = r.pos
                n = len(buf)
                batch: list[Frame] = []
                # every record wholly inside the buffer; the one that straddles its end (or a
                # damaged one) is left at r.pos for the checks below
                stop = pos + _BATCH_BYTES
                while n - pos >= 16 and pos < stop:
                    # the record header's first three fields byte by byte (_u32): machine
                    # operations in the compiled build, no call through Python, no tuple
                    sec = _u32(buf, pos, little)
                    frac = _u32(buf, pos + 4, little)
                    incl = _u32(buf, pos + 8, little)
                    end = pos + 16 + incl
                    if incl > _MAX_RECORD or end > n:
                        break
                    batch.append((sec + frac * scale, linktype, buf[pos + 16 : end]))
                    pos = end
                r.pos = pos
                if batch:
                    nframes += len(batch)
                    self.frames = nframes
                    yield batch
                    continue
                # the record at r.pos does not fit in the buffer (or is damaged)
                if len(r.buf) - r.pos < 16 and not r.need(16):
                    if len(r.buf) - r.pos:
                        self._damage("truncated record header", nframes)
                    elif r.read_error:
                        self._damage("", nframes)
                    return
                buf = r.buf
                pos = r.pos
                sec, frac, incl, _orig = unpack(buf, pos)
                if incl > _MAX_RECORD:
                    self._damage(f"corrupt record length {incl}", nframes)
                    return
                if not r.need(16 + incl):
                    self._damage("truncated packet record", nframes)
                    return
                buf = r.buf
                pos = r.pos
                end = pos + 16 + incl
                r.pos = end
                nframes += 1
                yield [(sec + frac * scale, linktype, buf[pos + 16 : end])]
        finally:
            self.frames = nframes

    # -- pcapng -----------------------------------------------------------------------

    def _pcapng(self) -> Iterator[Frame]:
        r = self._reader
        order = "<"
        # per interface: (linktype, ticks per second divisor as multiplier, offset seconds, snaplen)
        ifaces: list[tuple[int, float, int, int]] = []
        nframes = 0
        try:
            while True:
                if not r.need(12):
                    if len(r.buf) - r.pos:
                        self._damage("truncated block header", nframes)
                    elif r.read_error:
                        self._damage("", nframes)
                    return
                buf = r.buf
                pos = r.pos
                btype_raw = buf[pos : pos + 4]
                if btype_raw == _PCAPNG_SHB:
                    bom = buf[pos + 8 : pos + 12]
                    if bom == b"\x4d\x3c\x2b\x1a":
                        order = "<"
                    elif bom == b"\x1a\x2b\x3c\x4d":
                        order = ">"
                    else:
                        self._damage("bad pcapng byte-order magic", nframes)
                        return
                    ifaces = []  # a new section starts its own interface list
                btype, blen = struct.unpack_from(order + "II", buf, pos)
                if blen < _PCAPNG_MIN_BLOCK.get(btype, 12) or blen % 4 or blen > _MAX_RECORD + 64:
                    self._damage(f"corrupt block length {blen}", nframes)
                    return
                if not r.need(blen):
                    self._damage("truncated block", nframes)
                    return
                buf = r.buf
                pos = r.pos
                r.pos = pos + blen
                body = pos + 8
                if btype == 6:  # enhanced packet block
                    iface, hi, lo, cap, _orig = struct.unpack_from(order + "IIIII", buf, body)
                    if iface >= len(ifaces) or cap > blen - 32:
                        self._damage(
                            "enhanced packet block with a bad interface or length", nframes
                        )
                        return
                    link, mult, off, _snap = ifaces[iface]
                    nframes += 1
                    yield ((hi << 32) | lo) * mult + off, link, buf[body + 20 : body + 20 + cap]
                elif btype == 3:  # simple packet block: interface 0, no timestamp
                    if not ifaces:
                        self._damage("simple packet block before any interface", nframes)
                        return
                    (orig,) = struct.unpack_from(order + "I", buf, body)
                    link, _mult, _off, snap = ifaces[0]
                    cap = min(orig, snap or orig, blen - 16)
                    nframes += 1
                    yield 0.0, link, buf[body + 4 : body + 4 + cap]
                elif btype == 2:  # obsolete packet block
                    iface, _drops, hi, lo, cap, _orig = struct.unpack_from(
                        order + "HHIIII", buf, body
                    )
                    if iface >= len(ifaces) or cap > blen - 28:
                        self._damage("packet block with a bad interface or length", nframes)
                        return
                    link, mult, off, _snap = ifaces[iface]
                    nframes += 1
                    yield ((hi << 32) | lo) * mult + off, link, buf[body + 20 : body + 20 + cap]
                elif btype == 1:  # interface description block
                    link, _res, snap = struct.unpack_from(order + "HHI", buf, body)
                    mult, off = _idb_options(buf, body + 8, pos + blen - 4, order)
                    ifaces.append((link, mult, off, snap))
                # other blocks (name resolution, statistics, custom, SHB) carry no packets
        finally:
            self.frames = nframes


def _idb_options(buf: bytes, pos: int, end: int, order: str) -> tuple[float, int]:
    """Timestamp resolution (if_tsresol, default microseconds) and offset (if_tsoffset)."""
    mult = 1e-6
    off = 0
    while pos + 4 <= end:
        code, length = struct.unpack_from(order + "HH", buf, pos)
        if code == 0:
            break
        value = buf[pos + 4 : pos + 4 + length]
        if code == 9 and length >= 1:
            v = value[0]
            mult = 2.0 ** -(v & 0x7F) if v & 0x80 else 10.0 ** -(v & 0x7F)
        elif code == 14 and length >= 8:
            (off,) = struct.unpack_from(order + "q", value, 0)
        pos += 4 + ((length + 3) & ~3)
    return mult, off
