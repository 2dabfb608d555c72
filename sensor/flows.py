"""Flows: TCP connections (orientation, per-direction reassembly) and UDP flows; eviction,
memory caps.

Each direction of a connection is a byte stream with sequence tracking: in-order payload goes
straight to the dissector; out-of-order segments wait (bounded) until the hole fills;
retransmissions and overlaps are trimmed to what was not delivered yet; a hole that will
never fill (the peer acknowledged past it, the buffer cap is hit, or the flow ends) becomes a
*gap*: the dissector is told how many bytes were lost and resynchronises. A sensor starts on
a running network, so a direction without a handshake starts at its first seen segment.

Orientation (who is the client): the SYN sender; else the side talking *to* a dissector's
port; else the higher (ephemeral) port. A UDP flow (one per pair of endpoints, only for
datagrams a dissector wants) is oriented by the dissector's UDP port; when both ends use it,
by the protocol itself where it says (``datagram_to_server`` in ``sensor/protocols/base.py``),
else the first sender is the client.
"""

from __future__ import annotations

import _socket as socket  # what socket re-exports; socket builds its enums at import, ~1.7 ms
import base64
import heapq
import struct
from dataclasses import dataclass
from typing import Any

from sensor.digests import sha1
from sensor.protocols.base import ParserLimits

SEQ_MASK = 0xFFFFFFFF
HALF = 0x80000000

FIN = 0x01
SYN = 0x02
RST = 0x04
PSH = 0x08
ACK = 0x10

TCP = 6  # IP protocol numbers (``Flow.transport``)
UDP = 17

_PORTS = struct.Struct("!BxHH")


def community_id(
    saddr: bytes, daddr: bytes, sport: int, dport: int, proto: int = 6, seed: int = 0
) -> str:
    """Community ID v1 (corelight's spec) from raw addresses: the smaller endpoint goes first.
    Written here rather than through the ``communityid`` package because that one parses
    address strings and costs ~18 us per flow; tests check both agree."""
    if (saddr, sport) > (daddr, dport):
        saddr, daddr, sport, dport = daddr, saddr, dport, sport
    digest = sha1(
        struct.pack("!H", seed) + saddr + daddr + _PORTS.pack(proto, sport, dport)
    ).digest()
    return "1:" + base64.b64encode(digest).decode()


@dataclass(frozen=True, slots=True)
class FlowLimits:
    max_flows: int = 65536  # flows tracked at once; beyond, the least recently active are evicted
    idle_timeout: float = 600.0  # seconds of capture time without a packet before eviction
    max_ooo_bytes: int = 256 * 1024  # out-of-order bytes held per direction
    max_ooo_total: int = 64 << 20  # out-of-order bytes held over all flows
    parser: ParserLimits = ParserLimits()


class Direction:
    """One direction of a TCP connection."""

    __slots__ = ("next_seq", "ooo", "ooo_bytes", "fin", "bytes", "packets")

    def __init__(self) -> None:
        self.next_seq: int | None = None  # next byte expected; None before the first segment
        self.ooo: dict[int, bytes] | None = None  # seq -> payload waiting for a hole to fill
        self.ooo_bytes = 0
        self.fin = False
        self.bytes = 0
        self.packets = 0


class Flow:
    __slots__ = (
        "client",
        "cport",
        "server",
        "sport",
        "cmac",
        "smac",
        "ipver",
        "module",
        "parser",
        "probing",
        "to_client",
        "to_server",
        "first_ts",
        "last_ts",
        "uid",
        "events",
        "base",
        "keys",
        "closed",
        "asset_due",
        "asset_addresses",
        "reported",
        "transport",
    )

    def __init__(self) -> None:
        self.client: bytes = b""
        self.cport: int = 0
        self.server: bytes = b""
        self.sport: int = 0
        self.ipver: int = 4
        self.first_ts: float = 0.0
        self.last_ts: float = 0.0
        self.keys: tuple[bytes, bytes] = (b"", b"")
        self.module: Any = None
        self.parser: Any = None
        self.probing = False  # waiting for the first payload to pick a dissector by heuristic
        self.to_client = Direction()
        self.to_server = Direction()
        self.events = 0
        self.base: dict | None = None
        self.uid = ""
        self.closed = False
        self.asset_due = 0.0  # capture time of the next asset observation of this flow
        # protocol addresses (a DNP3 link address, an IEC 104 common address) already shown to
        # the asset tracker: a new one is observed at once, not at the next refresh
        self.asset_addresses: set[tuple[str, object]] | None = None
        self.reported = 0  # payload bytes already counted in an event's network.bytes
        self.cmac: bytes | None = None
        self.smac: bytes | None = None
        self.transport: int = TCP  # IP protocol number: TCP or UDP

    @property
    def client_ip(self) -> str:
        return ip_str(self.client)

    @property
    def server_ip(self) -> str:
        return ip_str(self.server)

    def community_id(self) -> str:
        return community_id(self.client, self.server, self.cport, self.sport, self.transport)


_ip_cache: dict[bytes, str] = {}  # a plant has few hosts: each address is formatted once


def ip_str(raw: bytes) -> str:
    text = _ip_cache.get(raw)
    if text is None:
        if len(_ip_cache) >= 4096:
            _ip_cache.clear()
        text = _ip_cache[raw] = socket.inet_ntop(
            socket.AF_INET if len(raw) == 4 else socket.AF_INET6, raw
        )
    return text


def evict_candidates(flows: list[Flow], count: int) -> list[Flow]:
    """The ``count`` least recently active flows."""
    return heapq.nsmallest(count, flows, key=lambda f: f.last_ts)
