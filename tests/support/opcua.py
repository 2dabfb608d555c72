"""Helpers for the OPC UA tests: TCP streams of a capture fed straight to the dissector, and
tshark's view of the same capture. Also checks the stream helper itself against tshark.

The helper reassembles each TCP direction by sequence number (retransmissions and overlaps
trimmed, out-of-order segments held until the hole fills, a hole that never fills reported
to the parser as ``gap``), which is what the dissector needs to be tested on its own.
"""

from __future__ import annotations

import functools
import socket
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import dpkt

from sensor.protocols import opcua
from sensor.protocols.base import ParserLimits

# files whose OPC UA runs on a port tshark does not know: the decode-as from SOURCES.md
DECODE_AS = {
    "icsnpp__open62541_client-server_mainloop-not-localhost-non-standard-port.pcap": "tcp.port==48010,opcua",
    "iti__opc-ua-ap-method-wireshark-freeze.pcap": "tcp.port==12001,opcua",
}
TSHARK_FIELDS = (
    "tcp.stream",
    "tcp.srcport",
    "opcua.transport.type",
    "opcua.transport.chunk",
    "opcua.servicenodeid.numeric",
    "opcua.RequestHandle",
    "opcua.ServiceResult",
)


def _frames(path: Path) -> Iterator[tuple[float, bytes, int]]:
    with open(path, "rb") as fh:
        head = fh.read(4)
        fh.seek(0)
        reader = dpkt.pcapng.Reader(fh) if head == b"\x0a\x0d\x0d\x0a" else dpkt.pcap.Reader(fh)
        linktype = reader.datalink()
        for ts, buf in reader:
            yield float(ts), buf, linktype


def _ip(buf: bytes, linktype: int) -> dpkt.ip.IP | dpkt.ip6.IP6 | None:
    if linktype == dpkt.pcap.DLT_EN10MB:
        eth = dpkt.ethernet.Ethernet(buf)
        return eth.data if isinstance(eth.data, dpkt.ip.IP | dpkt.ip6.IP6) else None
    if linktype in (dpkt.pcap.DLT_NULL, dpkt.pcap.DLT_LOOP):
        family = int.from_bytes(buf[:4], "little" if buf[0] else "big")
        return (
            dpkt.ip6.IP6(buf[4:])
            if family in (24, 28, 30, socket.AF_INET6)
            else dpkt.ip.IP(buf[4:])
        )
    if linktype == dpkt.pcap.DLT_LINUX_SLL:
        sll = dpkt.sll.SLL(buf)
        return sll.data if isinstance(sll.data, dpkt.ip.IP | dpkt.ip6.IP6) else None
    if linktype in (dpkt.pcap.DLT_RAW, 101):
        return dpkt.ip.IP(buf) if buf[0] >> 4 == 4 else dpkt.ip6.IP6(buf)
    raise ValueError(f"link type {linktype} not handled by the test helper")


class _Half:
    """One direction of a connection: next expected sequence number and held segments."""

    def __init__(self) -> None:
        self.next_seq: int | None = None
        self.held: dict[int, bytes] = {}


def replay_streams(
    path: Path,
    make_parser: Callable[[], opcua.Parser],
    server_ports: tuple[int, ...],
) -> list[dict]:
    """Feed every TCP connection of ``path`` touching ``server_ports`` to its own parser;
    returns all records (in capture order, then close records)."""
    conns: dict[tuple, tuple[opcua.Parser, dict[bool, _Half], float]] = {}
    records: list[dict] = []
    last_ts = 0.0
    for ts, buf, linktype in _frames(path):
        last_ts = ts
        ip = _ip(buf, linktype)
        if ip is None or not isinstance(ip.data, dpkt.tcp.TCP):
            continue
        tcp = ip.data
        if tcp.dport in server_ports:
            key, to_server = (ip.src, tcp.sport, ip.dst, tcp.dport), True
        elif tcp.sport in server_ports:
            key, to_server = (ip.dst, tcp.dport, ip.src, tcp.sport), False
        else:
            continue
        if tcp.flags & dpkt.tcp.TH_SYN and not tcp.flags & dpkt.tcp.TH_ACK and key in conns:
            records += conns.pop(key)[0].close(ts)  # a new connection on the same ports
        if key not in conns:
            conns[key] = (make_parser(), {True: _Half(), False: _Half()}, ts)
        parser, halves, _ = conns[key]
        half = halves[to_server]
        seq = tcp.seq + (1 if tcp.flags & dpkt.tcp.TH_SYN else 0)
        data = bytes(tcp.data)
        if half.next_seq is None:
            half.next_seq = seq
        if data:
            half.held.setdefault(seq, data)
            records += _drain(parser, half, to_server, ts)
        if tcp.flags & (dpkt.tcp.TH_FIN | dpkt.tcp.TH_RST) and half.held:
            records += _drain(parser, half, to_server, ts, force=True)
    for parser, halves, _ in conns.values():
        for to_server, half in halves.items():
            if half.held:
                records += _drain(parser, half, to_server, last_ts, force=True)
        records += parser.close(last_ts)
    return records


def _drain(
    parser: opcua.Parser, half: _Half, to_server: bool, ts: float, force: bool = False
) -> list[dict]:
    out: list[dict] = []
    while half.held:
        assert half.next_seq is not None
        ready = [
            s
            for s in half.held
            if (s - half.next_seq) & 0xFFFFFFFF < 0x80000000 or s == half.next_seq
        ]
        behind = [
            s
            for s in half.held
            if (half.next_seq - s) & 0xFFFFFFFF < 0x80000000 and s != half.next_seq
        ]
        progressed = False
        for s in behind:  # retransmission or overlap: keep only new bytes
            data = half.held.pop(s)
            skip = (half.next_seq - s) & 0xFFFFFFFF
            if skip < len(data):
                half.held[half.next_seq] = data[skip:]
            progressed = True
        if half.next_seq in half.held:
            data = half.held.pop(half.next_seq)
            out += parser.feed(to_server, data, ts)
            half.next_seq = (half.next_seq + len(data)) & 0xFFFFFFFF
            continue
        if progressed:
            continue
        if not force and len(half.held) < 64:
            break
        # a hole that will not fill: report it and continue after it
        nearest = min(ready, key=lambda s: (s - half.next_seq) & 0xFFFFFFFF)
        out += parser.gap(to_server, ts, (nearest - half.next_seq) & 0xFFFFFFFF)
        half.next_seq = nearest
    return out


def parse_capture(path: Path, limits: ParserLimits | None = None) -> tuple[list[dict], list[dict]]:
    """(records, per-chunk message summaries in wire order) for one capture, on the ports
    the dissector owns plus the decode-as port of that file."""
    messages: list[dict] = []
    ports = tuple(opcua.PORTS) + tuple(
        int(d.split("==")[1].split(",")[0]) for n, d in DECODE_AS.items() if n == path.name
    )
    records = replay_streams(path, lambda: opcua.Parser(limits, on_message=messages.append), ports)
    return records, messages


@functools.lru_cache(maxsize=64)
def _tshark_fields(tshark: str, path: Path) -> str:
    """One tshark run per capture per test session (both views read the same output)."""
    cmd = [
        tshark,
        "-r",
        str(path),
        "-Y",
        "opcua",
        "-T",
        "fields",
        "-E",
        "occurrence=a",
        "-E",
        "aggregator=|",
    ]
    if path.name in DECODE_AS:
        cmd += ["-d", DECODE_AS[path.name]]
    for field in TSHARK_FIELDS:
        cmd += ["-e", field]
    return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout


def tshark_messages(tshark: str, path: Path, whole: bool = False) -> list[tuple]:
    """tshark's OPC UA messages: (type, chunk, service type id, request handle) per chunk and
    ("status", ServiceResult) per answer. ``whole``: one (type, service type id, request
    handle) per message instead (tshark puts a chunked message's ids on its first chunk)."""
    out = _tshark_fields(tshark, path)
    rows: list[tuple] = []
    open_messages: set[tuple] = set()  # (stream, sender port): a chunked message is in progress
    for line in out.splitlines():
        stream, sport, types, chunks, tids, handles, results = (
            c.split("|") if c else [] for c in line.split("\t")
        )
        # one frame can hold several messages; ids/handles line up only when every message has
        # them, which holds for the frames these captures contain
        for i, mtype in enumerate(types):
            tid = int(tids[i]) if i < len(tids) else None
            handle = int(handles[i]) if i < len(handles) else None
            chunk = chunks[i] if i < len(chunks) else None
            if not whole:
                rows.append((mtype, chunk, tid, handle))
                continue
            sender = (stream[0], sport[0])
            if sender in open_messages:
                if chunk != "C":
                    open_messages.discard(sender)
                continue
            if chunk == "C":
                open_messages.add(sender)
            rows.append((mtype, tid, handle))
        rows.extend(("status", int(r, 16)) for r in results)
    return rows


def icsmon_messages(messages: list[dict]) -> list[tuple]:
    """The dissector's chunk summaries in tshark's shape. tshark shows a chunked message's
    service type id and request handle on its first chunk; the dissector knows them once the
    message is complete, so they move back to the first chunk here."""
    rows: list[list] = []
    first_chunk: dict[tuple, int] = {}
    for m in messages:
        key = (m["to_server"], m.get("request_id"))
        row = [m["type"], m["chunk"], m.get("service_type_id"), m.get("request_handle")]
        if m["chunk"] == "C" and key not in first_chunk:
            first_chunk[key] = len(rows)
        elif m["chunk"] in ("F", "A") and key in first_chunk:
            first = rows[first_chunk.pop(key)]
            first[2], first[3], row[2], row[3] = row[2], row[3], None, None
        rows.append(row)
        if m["type"] in ("MSG", "OPN", "CLO") and "status_code" in m and m["chunk"] != "A":
            rows.append(["status", m["status_code"]])
    return [tuple(r) for r in rows]


def recorded_feeds(
    path: Path, ports: tuple[int, ...] = (4840,)
) -> list[list[tuple[bool, bytes, float]]]:
    """Per connection, the (to_server, bytes, ts) feeds the dissector would receive, in order:
    real traffic to re-cut, re-order or damage in tests."""
    conns: list[list[tuple[bool, bytes, float]]] = []

    class Recording(opcua.Parser):
        def __init__(self, limits: ParserLimits | None = None) -> None:
            super().__init__(limits)
            self.calls: list[tuple[bool, bytes, float]] = []
            conns.append(self.calls)

        def feed(self, to_server: bool, data: bytes, ts: float) -> list[dict]:
            self.calls.append((to_server, bytes(data), ts))
            return []

    replay_streams(path, Recording, ports)
    return conns


def split_chunks(data: bytes) -> list[bytes]:
    """A direction's bytes cut at UA TCP chunk boundaries (the size field of each header)."""
    chunks = []
    pos = 0
    while pos + 8 <= len(data):
        size = int.from_bytes(data[pos + 4 : pos + 8], "little")
        chunks.append(data[pos : pos + size])
        pos += size
    assert pos == len(data), "the stream does not end on a chunk boundary"
    return chunks
