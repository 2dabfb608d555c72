"""Shared by the fuzz targets and the hostile-input property tests: seed streams from the
captures in pcaps/ and the input encoding the parser targets use.

A parser fuzz input is a sequence of segments, each ``[flags][len][payload]``: ``flags`` bit 0
is the direction (1 = to the server), bit 1 asks for a ``gap()`` before the segment; ``len``
is one byte (0-255). A truncated last segment keeps what is there. Seeds are the per-direction
TCP payloads of every connection of the real captures, in capture order.
"""

from __future__ import annotations

import importlib
import struct
from collections.abc import Iterator
from pathlib import Path

from sensor.capture import CaptureReader
from sensor.protocols.base import ParserLimits

ROOT = Path(__file__).resolve().parents[3]
PCAPS = ROOT / "pcaps"
PORTS = {
    "modbus": 502,
    "s7comm": 102,
    "opcua": 4840,
    "enip": 44818,
    "dnp3": 20000,
    "iec104": 2404,
}
# small limits so the fuzzer reaches the overflow paths with small inputs
FUZZ_LIMITS = ParserLimits(max_buffer=2048, max_pending=8, max_items=32)


def tcp_segments(path: Path) -> dict[tuple, list[tuple[bool, bytes]]]:
    """Per connection (client ip, client port, server ip, server port): the TCP payloads of
    both directions in capture order, ``(to_server, payload)``; retransmissions dropped.
    Ethernet + IPv4 + TCP only, which is what the captures in pcaps/ hold."""
    conns: dict[tuple, list[tuple[bool, bytes]]] = {}
    seen: set[tuple] = set()
    for _ts, link, data in CaptureReader(path):
        if link != 1 or len(data) < 34 or data[12:14] != b"\x08\x00" or data[23] != 6:
            continue
        ihl = (data[14] & 0x0F) * 4
        total = struct.unpack_from("!H", data, 16)[0]
        t = 14 + ihl
        sport, dport, seq = struct.unpack_from("!HHI", data, t)
        off = (data[t + 12] >> 4) * 4
        payload = data[t + off : 14 + total]
        if not payload:
            continue
        src, dst = data[26:30], data[30:34]
        if dport in PORTS.values() or (sport not in PORTS.values() and dport < sport):
            key, to_server = (src, sport, dst, dport), True
        else:
            key, to_server = (dst, dport, src, sport), False
        if (key, to_server, seq) in seen:
            continue
        seen.add((key, to_server, seq))
        conns.setdefault(key, []).append((to_server, payload))
    return conns


def streams_for(protocol: str) -> list[list[tuple[bool, bytes]]]:
    """Every connection to the protocol's port in every capture of pcaps/."""
    port = PORTS[protocol]
    out = []
    for path in sorted(PCAPS.glob("*/*.pcap")):
        for key, segs in tcp_segments(path).items():
            if key[3] == port:
                out.append(segs)
    return out


def encode(segments: list[tuple[bool, bytes]]) -> bytes:
    """Segments as a fuzz input (payloads longer than 255 bytes are split)."""
    out = bytearray()
    for to_server, payload in segments:
        for i in range(0, max(len(payload), 1), 255):
            part = payload[i : i + 255]
            out += bytes([1 if to_server else 0, len(part)]) + part
    return bytes(out)


def decode(data: bytes) -> Iterator[tuple[bool, bool, bytes]]:
    """A fuzz input as ``(to_server, gap_before, payload)`` segments."""
    i = 0
    n = len(data)
    while i + 2 <= n:
        flags, length = data[i], data[i + 1]
        yield bool(flags & 1), bool(flags & 2), data[i + 2 : i + 2 + length]
        i += 2 + length


def run_parser(module, data: bytes, limits: ParserLimits = FUZZ_LIMITS) -> list[dict]:
    """Feed a fuzz input to a fresh parser of ``module``; check the parser's contract on every
    call (records are plain dicts with the fields the flow layer needs, anomalies say why).
    Raises AssertionError on a broken contract; any other exception is a parser bug."""
    parser = module.Parser(limits)
    records: list[dict] = []
    ts = 1.0
    for to_server, gap, payload in decode(data):
        if gap:
            records += parser.gap(to_server, ts, 10)
        records += parser.feed(to_server, payload, ts)
        ts += 0.001
    records += parser.close(ts)
    for rec in records:
        check_record(module.NAME, rec)
    return records


_PROTOCOLS = {
    "modbus": ("modbus",),
    "s7comm": ("s7comm", "s7comm-plus"),
    "opcua": ("opcua",),
    "enip": ("enip",),
    "dnp3": ("dnp3",),
    "iec104": ("iec104",),
}


def check_record(name: str, rec: dict) -> None:
    assert isinstance(rec, dict), rec
    assert rec["network.protocol"] in _PROTOCOLS[name], rec
    assert isinstance(rec["event.action"], str) and rec["event.action"], rec
    assert isinstance(rec["ts"], float), rec
    if rec["event.action"] == "anomaly":
        assert rec["error.type"] and rec["error.message"], rec
        assert rec["event.type"] == ["protocol", "error"], rec
        # a closed set: every code is a member of the dissector's Anomaly enum, as plain text
        anomalies = importlib.import_module(f"sensor.protocols.{name}").Anomaly
        assert type(rec["error.type"]) is str and rec["error.type"] in set(anomalies), rec


def pcap_seeds() -> dict[str, bytes]:
    """The capture files of pcaps/, and pcapng re-encodings of a few of them, as bytes."""
    from tests.support.pcapgen import pcapng

    seeds = {p.name: p.read_bytes() for p in sorted(PCAPS.glob("*/*.pcap"))}
    for name in ("modbus_writes.pcap", "s7_control.pcap", "opcua_chunked.pcap"):
        path = next(PCAPS.glob(f"*/{name}"))
        frames = list(CaptureReader(path))
        seeds[name + "ng"] = pcapng([(1, None, frames)])
        seeds[name + "ng.be9"] = pcapng(
            [(1, 9, frames[: len(frames) // 2]), (1, 6, frames[len(frames) // 2 :])], order=">"
        )
    return seeds
