"""The frames of one ``TPACKET_V3`` ring block, read in one call (``sensor.live``'s ring loop).

This is the capture's per-packet work: compiled with mypyc (``sensor.COMPILED``) so that a
live port's packets cost a few C calls each instead of a pass of the interpreter's loop.
It copies each frame out of the block (the kernel reuses the block once it is handed back),
puts back a VLAN tag the NIC stripped, builds the Linux cooked header for cooked sockets,
and skips the outgoing copies a loopback interface shows.
"""

from __future__ import annotations

import struct

# struct tpacket3_hdr: next_offset (byte 0), sec (4), nsec (8), snaplen (12), len (16),
# status (20), mac (24), net (26), rxhash (28), vlan_tci (32), vlan_tpid (36)
_TP3_VLAN_AT = 32
# struct sockaddr_ll after the header (TPACKET_ALIGN(sizeof(tpacket3_hdr)) = 48): family,
# protocol (network order), ifindex, hatype, pkttype, halen, addr
_TP3_SLL = struct.Struct("=H2siHBB8s")
_TP3_SLL_AT = 48
_SLL_HEAD = struct.Struct(">HHH8s")
_VLAN_TAG = struct.Struct(">HH")
TP_STATUS_VLAN_VALID = 0x10
TP_STATUS_VLAN_TPID_VALID = 0x40
PACKET_OUTGOING = 4


def block_frames(
    block: bytes,
    pos: int,
    count: int,
    linktype: int,
    snaplen: int,
    cooked: bool,
    skip_outgoing: frozenset[int],
) -> tuple[list[tuple[float, int, bytes]], int, int]:
    """The ``count`` frames ``(ts, linktype, data)`` of a ring block (a copy: ``block``) whose
    first packet header is at ``pos``; with the bytes delivered and the frames cut at
    ``snaplen``. The header's fields are read byte by byte: native integer work once
    compiled, where a ``struct`` call per field set costs more than the rest of a frame."""
    frames: list[tuple[float, int, bytes]] = []
    nbytes = 0
    truncated = 0
    check_sll = cooked or bool(skip_outgoing)
    for _ in range(count):
        step = _u32(block, pos)
        caplen = _u32(block, pos + 12)
        wire_len = _u32(block, pos + 16)
        status = _u32(block, pos + 20)
        mac = block[pos + 24] | block[pos + 25] << 8
        ts = _u32(block, pos + 4) + _u32(block, pos + 8) * 1e-9
        if check_sll:
            _, proto, ifindex, hatype, pkttype, halen, hwaddr = _TP3_SLL.unpack_from(
                block, pos + _TP3_SLL_AT
            )
            if pkttype == PACKET_OUTGOING and ifindex in skip_outgoing:
                pos += step
                continue  # loopback shows each packet twice: keep one, as libpcap
        else:
            proto, hatype, pkttype, halen, hwaddr = b"", 0, 0, 0, b""
        if caplen > snaplen:
            caplen = snaplen
        if wire_len > caplen:
            truncated += 1
        start = pos + mac
        data: bytes
        if cooked:
            data = _SLL_HEAD.pack(pkttype, hatype, halen, hwaddr) + proto
            data += block[start : start + caplen]
        elif status & TP_STATUS_VLAN_VALID and caplen >= 12:
            tci = _u32(block, pos + _TP3_VLAN_AT)
            tpid = block[pos + _TP3_VLAN_AT + 4] | block[pos + _TP3_VLAN_AT + 5] << 8
            tag = _VLAN_TAG.pack(
                tpid if status & TP_STATUS_VLAN_TPID_VALID else 0x8100, tci & 0xFFFF
            )
            data = block[start : start + 12] + tag + block[start + 12 : start + caplen]
            if len(data) > snaplen:
                data = data[:snaplen]
        else:
            data = block[start : start + caplen]
        nbytes += len(data)
        frames.append((ts, linktype, data))
        pos += step
    return frames, nbytes, truncated


def _u32(b: bytes, at: int) -> int:
    """A little-endian (the host's: x86, arm64) 32-bit field of a ring header."""
    return b[at] | b[at + 1] << 8 | b[at + 2] << 16 | b[at + 3] << 24
