"""Link, network and transport decoding: bytes in, a small tuple out.

Link types: Ethernet (with 802.1Q / 802.1ad / QinQ VLAN tags), Linux cooked SLL and SLL2,
raw IP, IPv4, IPv6, BSD null/loopback (host and network byte order). IPv4 fragments are
reassembled by :class:`Defragmenter` (bounded, timed out); IPv6 extension headers are walked
(fragmented IPv6 is counted and skipped: ICS protocols do not fragment in practice).

Addresses stay as raw ``bytes`` (4 or 16) on the hot path; they become strings only when a
flow is created.
"""

from __future__ import annotations

import struct

LINKTYPE_NULL = 0
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101
LINKTYPE_LOOP = 108
LINKTYPE_LINUX_SLL = 113
LINKTYPE_IPV4 = 228
LINKTYPE_IPV6 = 229
LINKTYPE_LINUX_SLL2 = 276
# DLT_RAW appears with these numbers in files written on some systems
_RAW_ALIASES = (12, 14)

SUPPORTED_LINKTYPES = {
    LINKTYPE_NULL: "BSD loopback",
    LINKTYPE_ETHERNET: "Ethernet",
    LINKTYPE_RAW: "raw IP",
    LINKTYPE_LOOP: "OpenBSD loopback",
    LINKTYPE_LINUX_SLL: "Linux cooked (SLL)",
    LINKTYPE_IPV4: "raw IPv4",
    LINKTYPE_IPV6: "raw IPv6",
    LINKTYPE_LINUX_SLL2: "Linux cooked (SLL2)",
    12: "raw IP",
    14: "raw IP",
}

ETH_IPV4 = 0x0800
ETH_IPV6 = 0x86DD
_VLAN_TYPES = (0x8100, 0x88A8, 0x9100, 0x9200)
_IPV6_EXT = (0, 43, 60, 51)  # hop-by-hop, routing, destination options, AH
_NULL_V6 = (24, 28, 30)  # AF_INET6 on the BSDs and macOS

_u16 = struct.Struct("!H").unpack_from
_tcp_hdr = struct.Struct("!HHIIBB").unpack_from
_ipv4_hdr = struct.Struct("!BxHHHBBxx4s4s").unpack_from
_null_le = struct.Struct("<I").unpack_from
_null_be = struct.Struct(">I").unpack_from

# what a decoded packet is, when it is not a TCP segment we can use
NOT_IP = "not-ip"
TRUNCATED = "truncated"
BAD_HEADER = "bad-header"
FRAGMENT = "fragment"  # held for reassembly
UNSUPPORTED_LINK = "unsupported-link"
NOT_TCP = "not-tcp"


def link_payload(linktype: int, data: bytes) -> tuple[int, int, bytes | None, bytes | None] | str:
    """(ethertype, offset of the network header, source MAC, destination MAC) or a reason."""
    if linktype == LINKTYPE_ETHERNET:
        if len(data) < 14:
            return TRUNCATED
        etype = _u16(data, 12)[0]
        off = 14
        while etype in _VLAN_TYPES:
            if len(data) < off + 4:
                return TRUNCATED
            etype = _u16(data, off + 2)[0]
            off += 4
        return etype, off, data[6:12], data[0:6]
    if linktype == LINKTYPE_LINUX_SLL:
        if len(data) < 16:
            return TRUNCATED
        alen = _u16(data, 4)[0]
        mac = data[6 : 6 + min(alen, 6)] if alen == 6 else None
        etype = _u16(data, 14)[0]
        off = 16
        while etype in _VLAN_TYPES:
            if len(data) < off + 4:
                return TRUNCATED
            etype = _u16(data, off + 2)[0]
            off += 4
        return etype, off, mac, None
    if linktype == LINKTYPE_LINUX_SLL2:
        if len(data) < 20:
            return TRUNCATED
        etype = _u16(data, 0)[0]
        mac = data[12:18] if data[11] == 6 else None
        return etype, 20, mac, None
    if linktype in (LINKTYPE_RAW, *_RAW_ALIASES):
        if not data:
            return TRUNCATED
        v = data[0] >> 4
        if v == 4:
            return ETH_IPV4, 0, None, None
        if v == 6:
            return ETH_IPV6, 0, None, None
        return NOT_IP
    if linktype == LINKTYPE_IPV4:
        return ETH_IPV4, 0, None, None
    if linktype == LINKTYPE_IPV6:
        return ETH_IPV6, 0, None, None
    if linktype in (LINKTYPE_NULL, LINKTYPE_LOOP):
        if len(data) < 4:
            return TRUNCATED
        fam = _null_be(data, 0)[0] if linktype == LINKTYPE_LOOP else _null_le(data, 0)[0]
        if fam > 0xFFFF:  # written on a big-endian host
            fam = _null_be(data, 0)[0]
        if fam == 2:
            return ETH_IPV4, 4, None, None
        if fam in _NULL_V6:
            return ETH_IPV6, 4, None, None
        return NOT_IP
    return UNSUPPORTED_LINK


def ipv6_payload(data: bytes, off: int) -> tuple[bytes, bytes, int, bytes] | str:
    """(src, dst, upper protocol, upper payload) of an IPv6 packet at ``off``."""
    if len(data) < off + 40:
        return TRUNCATED
    plen = _u16(data, off + 4)[0]
    nxt = data[off + 6]
    src = data[off + 8 : off + 24]
    dst = data[off + 24 : off + 40]
    end = off + 40 + plen if plen else len(data)
    pos = off + 40
    while nxt in _IPV6_EXT:
        if len(data) < pos + 2:
            return TRUNCATED
        hl = (data[pos + 1] + 2) * 4 if nxt == 51 else (data[pos + 1] + 1) * 8
        nxt = data[pos]
        pos += hl
    if nxt == 44:
        return FRAGMENT
    if pos > len(data):
        return TRUNCATED
    return src, dst, nxt, data[pos : min(end, len(data))]


class Defragmenter:
    """IPv4 fragment reassembly, bounded in datagrams and bytes, expired on capture time."""

    def __init__(self, max_datagrams: int = 1024, max_bytes: int = 8 << 20, timeout: float = 30.0):
        self.max_datagrams = max_datagrams
        self.max_bytes = max_bytes
        self.timeout = timeout
        self._pending: dict[
            tuple, list
        ] = {}  # key -> [first_ts, total_len|None, {offset: bytes}, header]
        self._bytes = 0
        self.reassembled = 0
        self.dropped = 0
        self.overlaps = 0

    def add(
        self, ts: float, data: bytes, off: int, ihl: int, total: int
    ) -> tuple[bytes, bytes, int, bytes] | None:
        """Feed one fragment (the IPv4 header is at ``off``); the whole datagram when complete."""
        _vhl, _tl, ident, frag, _ttl, proto, src, dst = _ipv4_hdr(data, off)
        key = (src, dst, proto, ident)
        foff = (frag & 0x1FFF) * 8
        more = bool(frag & 0x2000)
        chunk = data[off + ihl : off + total]
        entry = self._pending.get(key)
        if entry is None:
            if (
                len(self._pending) >= self.max_datagrams
                or self._bytes + len(chunk) > self.max_bytes
            ):
                self.expire(ts, force=True)
            if len(self._pending) >= self.max_datagrams:
                self.dropped += 1
                return None
            entry = self._pending[key] = [ts, None, {}]
        parts: dict[int, bytes] = entry[2]
        if foff in parts:
            self.overlaps += 1
            return None
        parts[foff] = chunk
        self._bytes += len(chunk)
        if not more:
            entry[1] = foff + len(chunk)
        size = entry[1]
        if size is None:
            return None
        got = 0
        for o in sorted(parts):
            if o != got:
                if o < got:
                    self.overlaps += 1
                    got = max(got, o + len(parts[o]))
                    continue
                return None
            got += len(parts[o])
        if got < size:
            return None
        buf = bytearray(size)
        for o in sorted(parts):
            piece = parts[o]
            buf[o : o + len(piece)] = piece[: size - o]
        del self._pending[key]
        self._bytes -= sum(len(p) for p in parts.values())
        self.reassembled += 1
        return src, dst, proto, bytes(buf)

    def expire(self, now: float, force: bool = False) -> None:
        """Drop datagrams older than the timeout (or the oldest half when ``force``)."""
        if not self._pending:
            return
        items = sorted(self._pending.items(), key=lambda kv: kv[1][0])
        cut = len(items) // 2 if force else 0
        for i, (key, entry) in enumerate(items):
            if i < cut or now - entry[0] > self.timeout:
                del self._pending[key]
                self._bytes -= sum(len(p) for p in entry[2].values())
                self.dropped += 1
            elif not force:
                break
