"""TCP reassembly and Modbus framing edge cases, built from a real pymodbus capture by
re-segmenting its packets with scapy (hand-made variations, said so: they are edge cases).

Each case must decode what can be decoded, report what cannot as anomalies, and never raise.
"""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether
from scapy.packet import Raw

from sensor.engine import Engine, EngineConfig
from sensor.protocols import modbus
from tests.support import REPO, pcapgen

SOURCE = REPO / "pcaps" / "modbus" / "modbus_polling.pcap"


def run(path: Path) -> tuple[list[dict], Engine]:
    eng = Engine(EngineConfig())
    return list(eng.replay([path])), eng


def transactions(events: list[dict]) -> list[tuple]:
    return [
        (e["modbus.transaction_id"], e["modbus.function_code"], tuple(e.get("modbus.values") or ()))
        for e in events
        if e.get("network.protocol") == "modbus"
        and e["event.action"] != "anomaly"
        and e["ics.pairing"] == "paired"
    ]


def anomalies(events: list[dict]) -> list[str]:
    return [e["error.type"] for e in events if e["event.action"] == "anomaly"]


def segment(frame: bytes, offset: int, length: int) -> bytes:
    """A copy of ``frame`` carrying ``length`` payload bytes from ``offset``, sequence adjusted."""
    pkt = Ether(frame)
    payload = bytes(pkt[TCP].payload)
    tcp = pkt[TCP].copy()
    tcp.remove_payload()
    tcp.seq = (tcp.seq + offset) & 0xFFFFFFFF
    del tcp.chksum
    ip = pkt[IP].copy()
    ip.remove_payload()
    del ip.len, ip.chksum
    return bytes(
        Ether(src=pkt.src, dst=pkt.dst) / ip / tcp / Raw(payload[offset : offset + length])
    )


def payload_len(frame: bytes) -> int:
    return len(Ether(frame)[TCP].payload)


@pytest.fixture(scope="module")
def frames() -> list:
    return pcapgen.frames_of(SOURCE)


@pytest.fixture(scope="module")
def expected(frames) -> list[tuple]:
    events, _ = run(SOURCE)
    return transactions(events)


def rewrite(tmp_path: Path, frames, fn) -> Path:
    out = []
    for t, lt, d in frames:
        n = payload_len(d)
        out.extend((t, lt, x) for x in (fn(d, n) if n else [d]))
    return pcapgen.write_pcap(tmp_path / "case.pcap", out)


def test_pdu_split_across_segments(tmp_path, frames, expected) -> None:
    path = rewrite(tmp_path, frames, lambda d, n: [segment(d, i, 3) for i in range(0, n, 3)])
    events, eng = run(path)
    assert transactions(events) == expected
    assert not anomalies(events)


def test_several_pdus_in_one_segment(tmp_path, frames, expected) -> None:
    """Requests sent back to back in one segment (a pipelining master): each pair of requests
    travels in the first one's segment, before either response."""
    out: list = []
    pending: int | None = None  # index in out of a request segment waiting for a partner
    for t, lt, d in frames:
        pkt = Ether(d)
        if payload_len(d) and pkt[TCP].dport == 502:
            if pending is None:
                pending = len(out)
                out.append((t, lt, d))
                continue
            first = Ether(out[pending][2])
            both = bytes(first[TCP].payload) + bytes(pkt[TCP].payload)
            tcp = first[TCP].copy()
            tcp.remove_payload()
            del tcp.chksum
            ip = first[IP].copy()
            ip.remove_payload()
            del ip.len, ip.chksum
            out[pending] = (
                out[pending][0],
                lt,
                bytes(Ether(src=first.src, dst=first.dst) / ip / tcp / Raw(both)),
            )
            pending = None
            continue
        out.append((t, lt, d))
    path = pcapgen.write_pcap(tmp_path / "pipelined.pcap", out)
    events, _ = run(path)
    assert sorted(transactions(events)) == sorted(expected)


def test_out_of_order_segments(tmp_path, frames, expected) -> None:
    def swap(d, n):
        half = n // 2
        return [segment(d, half, n - half), segment(d, 0, half)]

    events, eng = run(rewrite(tmp_path, frames, swap))
    assert transactions(events) == expected
    assert eng.stats["out_of_order"] > 0


def test_retransmissions_and_overlaps(tmp_path, frames, expected) -> None:
    def overlap(d, n):
        return [segment(d, 0, n - 2), d, segment(d, 1, n - 1), segment(d, 0, n)]

    events, eng = run(rewrite(tmp_path, frames, overlap))
    assert transactions(events) == expected
    assert eng.stats["retransmissions"] > 0
    assert not anomalies(events)


def test_gap_is_recorded_and_the_dissector_resynchronises(tmp_path, frames, expected) -> None:
    payload_frames = [i for i, f in enumerate(frames) if payload_len(f[2])]
    lost = payload_frames[4]  # a request in the middle of the capture never reaches the sensor
    path = pcapgen.write_pcap(tmp_path / "gap.pcap", [f for i, f in enumerate(frames) if i != lost])
    events, eng = run(path)
    assert eng.stats["gaps"] >= 1
    got = transactions(events)
    assert len(got) == len(expected) - 1
    assert got[-1] == expected[-1]  # everything after the gap decodes again


def test_gap_inside_a_pdu(tmp_path, frames, expected) -> None:
    """Lose the middle of a PDU split in three: that transaction is lost, the rest decode."""
    count = {"n": 0}

    def lose_middle(d, n):
        count["n"] += 1
        parts = [segment(d, 0, 4), segment(d, 4, 4), segment(d, 8, n - 8)]
        return [parts[0], parts[2]] if count["n"] == 5 else parts

    events, eng = run(rewrite(tmp_path, frames, lose_middle))
    assert eng.stats["gaps"] == 1
    assert len(transactions(events)) >= len(expected) - 2
    assert transactions(events)[-3:] == expected[-3:]


def test_mid_stream_pick_up(tmp_path, frames, expected) -> None:
    """The sensor starts after the handshake and the first exchanges."""
    payload_frames = [i for i, f in enumerate(frames) if payload_len(f[2])]
    start = payload_frames[6]
    path = pcapgen.write_pcap(tmp_path / "mid.pcap", frames[start:])
    events, _ = run(path)
    got = transactions(events)
    assert got == expected[len(expected) - len(got) :]
    assert len(got) >= len(expected) - 4


def test_mid_stream_pick_up_on_a_response(tmp_path, frames, expected) -> None:
    payload_frames = [i for i, f in enumerate(frames) if payload_len(f[2])]
    path = pcapgen.write_pcap(tmp_path / "resp.pcap", frames[payload_frames[1] :])
    events, _ = run(path)
    first = next(e for e in events if e.get("network.protocol") == "modbus")
    assert first["ics.pairing"] == "response-only"
    assert first["source.port"] != 502 and first["destination.port"] == 502  # oriented by port


def test_snaplen_cut_frames(tmp_path, frames) -> None:
    out = [(t, lt, d[:60] if payload_len(d) > 8 else d) for t, lt, d in frames]
    events, eng = run(pcapgen.write_pcap(tmp_path / "snap.pcap", out))
    assert eng.stats["truncated"] > 0
    assert "truncated-packet" in anomalies(events)


def test_truncated_frames(tmp_path, frames) -> None:
    out = [(t, lt, d[: 14 + 10] if i % 3 == 0 else d) for i, (t, lt, d) in enumerate(frames)]
    events, eng = run(pcapgen.write_pcap(tmp_path / "trunc.pcap", out))
    assert "truncated-packet" in anomalies(events)


def test_zero_length_frames(tmp_path, frames) -> None:
    out = [(t, lt, b"") for t, lt, _d in frames[:5]] + frames
    events, eng = run(pcapgen.write_pcap(tmp_path / "zero.pcap", out))
    assert anomalies(events).count("truncated-frame") == 5


def test_wrong_mbap_length(tmp_path, frames) -> None:
    """An MBAP length of 1 (impossible) and one of 0xFFFF: anomalies, then decoding goes on."""
    n = {"i": 0}

    def corrupt(d, size):
        n["i"] += 1
        if n["i"] in (3, 7):
            pkt = bytearray(d)
            start = len(d) - size
            pkt[start + 4 : start + 6] = struct.pack(">H", 1 if n["i"] == 3 else 0xFFFF)
            return [bytes(pkt)]
        return [d]

    events, _ = run(rewrite(tmp_path, frames, corrupt))
    kinds = anomalies(events)
    assert {"not-modbus", "mbap-bad-header"} & set(kinds)
    assert len(transactions(events)) > 5


def test_parser_on_hostile_bytes_never_raises() -> None:
    """Direct feed of hand-made byte strings (edge cases only)."""
    cases = [
        b"\x00\x01\x00\x00\x00\x06\x01\x03\x00",  # cut inside the PDU
        b"\x00\x01\x00\x00\x00\x02\x01\x83",  # exception without its code
        b"\x00\x01\x00\x00\x00\x03\x01\x10\x00",  # write multiple without body
        b"\x00\x01\x00\x00\x00\x05\x01\x2b\x0e\x01\x00",  # device id request
        b"\x00\x01\x00\x00\x00\x0a\x01\x2b\x0e\x01\x01\x00\x00\x05\xff\xff",  # bad object count
        bytes(range(256)) * 4,
    ]
    for data in cases:
        for to_server in (True, False):
            p = modbus.Parser()
            p.feed(to_server, data, 1.0)
            p.gap(to_server, 2.0, 10)
            p.feed(to_server, data[::-1], 3.0)
            p.close(4.0)
