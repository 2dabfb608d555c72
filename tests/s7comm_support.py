"""Test helpers for the S7comm dissector: TCP payloads out of a capture, tshark's view of it.

The TCP helper is deliberately simple (in-order delivery, retransmitted bytes dropped, holes
reported to the parser as gaps): enough to drive a parser from a capture without the engine.
"""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import dpkt

from sensor.protocols import s7comm

S7_PORT = 102


def tcp_segments(path: Path) -> Iterator[tuple[float, str, int, str, int, int, int, bytes]]:
    """(ts, src ip, src port, dst ip, dst port, seq, tcp flags, payload) for each TCP packet."""
    with open(path, "rb") as fh:
        reader = dpkt.pcap.UniversalReader(fh)
        linktype = reader.datalink()
        for ts, frame in reader:
            ip = _ip_of(linktype, frame)
            if ip is None or not isinstance(ip.data, dpkt.tcp.TCP):
                continue
            tcp = ip.data
            family = socket.AF_INET6 if isinstance(ip, dpkt.ip6.IP6) else socket.AF_INET
            yield (
                float(ts),
                socket.inet_ntop(family, ip.src),
                tcp.sport,
                socket.inet_ntop(family, ip.dst),
                tcp.dport,
                tcp.seq,
                tcp.flags,
                bytes(tcp.data),
            )


def _ip_of(linktype: int, frame: bytes) -> dpkt.ip.IP | dpkt.ip6.IP6 | None:
    try:
        if linktype == dpkt.pcap.DLT_EN10MB:
            pkt = dpkt.ethernet.Ethernet(frame).data
        elif linktype == dpkt.pcap.DLT_LINUX_SLL:
            pkt = dpkt.sll.SLL(frame).data
        elif linktype in (dpkt.pcap.DLT_NULL, dpkt.pcap.DLT_LOOP):
            pkt = dpkt.loopback.Loopback(frame).data
        elif linktype in (dpkt.pcap.DLT_RAW, 101):
            pkt = dpkt.ip.IP(frame) if frame[0] >> 4 == 4 else dpkt.ip6.IP6(frame)
        else:
            return None
    except (dpkt.UnpackError, IndexError):
        return None
    return pkt if isinstance(pkt, dpkt.ip.IP | dpkt.ip6.IP6) else None


def parse_capture(path: Path, port: int = S7_PORT, parser_factory=s7comm.Parser) -> list[dict]:
    """Records of the S7 parser over every TCP connection to ``port`` in the capture."""
    parsers: dict[tuple, s7comm.Parser] = {}
    next_seq: dict[tuple, int] = {}
    records: list[dict] = []
    last_ts = 0.0
    for ts, src, sport, dst, dport, seq, flags, payload in tcp_segments(path):
        last_ts = ts
        if dport == port:
            conn, to_server = (src, sport, dst, dport), True
        elif sport == port:
            conn, to_server = (dst, dport, src, sport), False
        else:
            continue
        key = (conn, to_server)
        if flags & dpkt.tcp.TH_SYN:
            next_seq[key] = (seq + 1) & 0xFFFFFFFF
            continue
        if not payload:
            continue
        parser = parsers.setdefault(conn, parser_factory())
        expected = next_seq.get(key, seq)
        delta = (seq - expected) & 0xFFFFFFFF
        if delta >= 0x80000000:  # starts before what we have: retransmission or overlap
            overlap = (expected - seq) & 0xFFFFFFFF
            if overlap >= len(payload):
                continue
            payload = payload[overlap:]
            seq = expected
        elif delta:
            records += parser.gap(to_server, ts, delta)
        records += parser.feed(to_server, payload, ts)
        next_seq[key] = (seq + len(payload)) & 0xFFFFFFFF
    for parser in parsers.values():
        records += parser.close(last_ts)
    return records


def record_pdus(records: list[dict]) -> list[tuple]:
    """The S7comm PDUs the records stand for: (rosctr, function, item count, PDU reference)."""
    pdus = []
    for rec in records:
        if rec.get("network.protocol") != "s7comm" or "s7comm.rosctr" not in rec:
            continue
        rosctr = rec["s7comm.rosctr"]
        ref = rec["s7comm.pdu_reference"]
        func = rec.get("s7comm.function_code") if rosctr != 7 else None
        pdus.append((rosctr, func, rec.get("s7comm.item_count"), ref))
        if "s7comm.response.rosctr" in rec:
            rr = rec["s7comm.response.rosctr"]
            rfunc = rec.get("s7comm.response.function_code") if rr != 7 else None
            pdus.append((rr, rfunc, rec.get("s7comm.response.item_count"), ref))
    return pdus


def tshark_pdus(tshark: str, path: Path) -> list[tuple]:
    """tshark's S7comm PDUs: (rosctr, function, item count, PDU reference) per PDU.

    Every byte is decoded once: tshark's sequence analysis is off (with it on, tshark skips
    segments it judges "spurious retransmissions" even when the first copy was never
    captured), and frames whose bytes all came before (retransmissions, also those that
    resend several earlier segments at once) are dropped here, as the sensor's reassembly
    drops retransmitted bytes.
    """
    cmd = [
        tshark, "-r", str(path), "-o", "tcp.analyze_sequence_numbers:FALSE", "-Y", "s7comm",
        "-T", "fields", "-E", "occurrence=a", "-E", "aggregator=,", "-E", "separator=/t",
        "-e", "frame.number", "-e", "tcp.stream", "-e", "tcp.srcport", "-e", "tcp.seq_raw",
        "-e", "tcp.len", "-e", "s7comm.header.rosctr", "-e", "s7comm.param.func",
        "-e", "s7comm.param.itemcount", "-e", "s7comm.header.pduref",
    ]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    pdus = []
    seen_end: dict[tuple[str, str], int] = {}  # (stream, port) -> end of the bytes seen so far
    for line in out.splitlines():
        frame, stream, sport, seq, tlen, rosctrs, funcs, counts, refs = (line.split("\t") + [""] * 9)[:9]
        end = int(seq) + int(tlen)
        last = seen_end.get((stream, sport))
        if last is not None and 0 <= (last - end) & 0xFFFFFFFF < 0x80000000:
            continue  # nothing new in this frame
        seen_end[(stream, sport)] = end
        rosctr_l = [int(x) for x in rosctrs.split(",") if x]
        func_l = [int(x, 16) for x in funcs.split(",") if x]
        count_l = [int(x) for x in counts.split(",") if x]
        ref_l = [int(x) for x in refs.split(",") if x]
        n = len(rosctr_l)
        if n == 1:
            func = func_l[0] if func_l and rosctr_l[0] != 7 else None
            pdus.append((rosctr_l[0], func, count_l[0] if count_l else None, ref_l[0]))
            continue
        if len(func_l) != n or len(count_l) != n or len(ref_l) != n:
            raise AssertionError(f"frame {frame}: cannot align tshark's fields of {n} PDUs")
        pdus += list(zip(rosctr_l, func_l, count_l, ref_l, strict=True))
    return pdus
