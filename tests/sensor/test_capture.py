"""Capture formats and link types: the same real Modbus traffic, re-encoded every way the
readers support, must decode to the same transactions."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest
from scapy.layers.inet import IP, TCP, fragment
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether

from sensor.capture import CaptureError, CaptureReader
from sensor.engine import Engine, EngineConfig
from tests.support import REPO, pcapgen

SOURCE = REPO / "pcaps" / "modbus" / "modbus_polling.pcap"


def transactions(path: Path) -> list[tuple]:
    out = []
    for ev in Engine(EngineConfig()).replay([path]):
        if ev.get("network.protocol") == "modbus" and ev["event.action"] != "anomaly":
            out.append(
                (
                    ev["modbus.transaction_id"],
                    ev["modbus.function_code"],
                    ev.get("modbus.address"),
                    tuple(ev.get("modbus.values") or ()),
                    ev["ics.pairing"],
                )
            )
    return out


@pytest.fixture(scope="module")
def frames() -> list:
    return pcapgen.frames_of(SOURCE)


@pytest.fixture(scope="module")
def expected() -> list[tuple]:
    result = transactions(SOURCE)
    assert len(result) >= 10 and all(t[-1] == "paired" for t in result)
    return result


@pytest.mark.parametrize("order", ["<", ">"])
@pytest.mark.parametrize("nanos", [False, True])
def test_pcap_byte_orders_and_resolutions(tmp_path, frames, expected, order, nanos) -> None:
    path = pcapgen.write_pcap(tmp_path / "x.pcap", frames, order=order, nanos=nanos)
    assert transactions(path) == expected
    ts = [f[0] for f in CaptureReader(path)]
    assert ts == pytest.approx([f[0] for f in frames], abs=2e-6)


@pytest.mark.parametrize("order", ["<", ">"])
@pytest.mark.parametrize("tsresol", [None, 9, 0x80 | 20])
def test_pcapng(tmp_path, frames, expected, order, tsresol) -> None:
    path = tmp_path / "x.pcapng"
    path.write_bytes(pcapgen.pcapng([(1, tsresol, frames)], order=order))
    assert transactions(path) == expected
    ts = [f[0] for f in CaptureReader(path)]
    assert ts == pytest.approx([f[0] for f in frames], abs=2e-6)


def test_pcapng_several_interfaces_with_their_own_link_types(tmp_path, frames, expected) -> None:
    """Requests on an Ethernet interface, responses on a Linux cooked one, another resolution."""
    to_server = [f for f in frames if f[2][36:38] == b"\x01\xf6"]  # TCP destination port 502
    to_client = [(t, 113, pcapgen.eth_to_sll(d)) for t, _l, d in frames if d[36:38] != b"\x01\xf6"]
    path = tmp_path / "multi.pcapng"
    path.write_bytes(pcapgen.pcapng([(1, None, to_server), (113, 9, to_client)]))
    links = {f[1] for f in CaptureReader(path)}
    assert links == {1, 113}
    assert transactions(path) == expected


def test_pcapng_simple_packet_blocks(tmp_path, frames) -> None:
    path = tmp_path / "spb.pcapng"
    path.write_bytes(pcapgen.pcapng([(1, None, frames)], simple=True))
    got = list(CaptureReader(path))
    assert [g[2] for g in got] == [f[2] for f in frames]


def test_gzip(tmp_path, frames, expected) -> None:
    raw = pcapgen.write_pcap(tmp_path / "x.pcap", frames)
    gz = tmp_path / "x.pcap.gz"
    gz.write_bytes(gzip.compress(raw.read_bytes()))
    assert transactions(gz) == expected


@pytest.mark.parametrize(
    ("linktype", "convert"),
    [
        (113, pcapgen.eth_to_sll),
        (276, pcapgen.eth_to_sll2),
        (101, pcapgen.eth_to_raw),
        (228, pcapgen.eth_to_raw),
        (0, pcapgen.eth_to_null),
        (1, lambda f: pcapgen.add_vlan(f, (0x8100, 100))),
        (1, lambda f: pcapgen.add_vlan(f, (0x88A8, 10), (0x8100, 100))),
    ],
    ids=["sll", "sll2", "raw", "ipv4", "null", "vlan", "qinq"],
)
def test_link_types(tmp_path, frames, expected, linktype, convert) -> None:
    path = pcapgen.write_pcap(
        tmp_path / "x.pcap", [(t, linktype, convert(d)) for t, _l, d in frames], linktype=linktype
    )
    assert transactions(path) == expected


def test_ipv6(tmp_path, frames, expected) -> None:
    """The same TCP segments carried over IPv6 (re-encapsulated with scapy)."""
    out = []
    for t, _l, d in frames:
        pkt = Ether(d)
        ip = pkt[IP]
        v6 = (
            Ether(src=pkt.src, dst=pkt.dst)
            / IPv6(src=f"fd00::{ip.src.split('.')[-1]}", dst=f"fd00::{ip.dst.split('.')[-1]}")
            / ip[TCP]
        )
        del v6[TCP].chksum
        out.append((t, 1, bytes(v6)))
    path = pcapgen.write_pcap(tmp_path / "v6.pcap", out)
    assert transactions(path) == expected
    ev = next(
        e for e in Engine(EngineConfig()).replay([path]) if e.get("network.protocol") == "modbus"
    )
    assert ev["network.type"] == "ipv6" and ev["source.ip"].startswith("fd00::")


def test_ipv4_fragments_are_reassembled(tmp_path, frames, expected) -> None:
    out = []
    for t, _l, d in frames:
        pkt = Ether(d)
        if len(pkt[TCP].payload) > 8:
            for frag in fragment(pkt[IP], fragsize=16):
                out.append((t, 1, bytes(Ether(src=pkt.src, dst=pkt.dst) / frag)))
        else:
            out.append((t, 1, d))
    path = pcapgen.write_pcap(tmp_path / "frag.pcap", out)
    eng = Engine(EngineConfig())
    list(eng.replay([path]))
    assert eng.stats["ip_fragments"] > len(frames)
    assert transactions(path) == expected


def test_cut_file_reports_the_packets_before_the_damage(tmp_path, frames, expected) -> None:
    raw = pcapgen.write_pcap(tmp_path / "x.pcap", frames).read_bytes()
    cut = tmp_path / "cut.pcap"
    cut.write_bytes(raw[: len(raw) * 2 // 3])
    eng = Engine(EngineConfig())
    events = [e for e in eng.replay([cut]) if e.get("network.protocol") == "modbus"]
    assert 0 < len(events) < len(expected) + 2
    assert len(eng.errors) == 1 and "cut.pcap" in eng.errors[0] and "truncated" in eng.errors[0]


def test_corrupt_record_length(tmp_path, frames) -> None:
    raw = bytearray(pcapgen.write_pcap(tmp_path / "x.pcap", frames).read_bytes())
    # the fourth record's captured length: skip the file header and three records
    pos = 24
    for _ in range(3):
        pos += 16 + int.from_bytes(raw[pos + 8 : pos + 12], "little")
    raw[pos + 8 : pos + 12] = (0x7FFFFFFF).to_bytes(4, "little")
    bad = tmp_path / "bad.pcap"
    bad.write_bytes(bytes(raw))
    reader = CaptureReader(bad)
    assert len(list(reader)) == 3
    assert "corrupt record length" in reader.error and "after 3 packets" in reader.error


@pytest.mark.parametrize("content", [b"", b"hello, this is not a capture", b"\x0a\x0d"])
def test_not_a_capture(tmp_path, content) -> None:
    path = tmp_path / "notes.txt"
    path.write_bytes(content)
    with pytest.raises(CaptureError, match="notes.txt"):
        CaptureReader(path)


def test_unknown_link_type_is_one_anomaly(tmp_path, frames) -> None:
    path = pcapgen.write_pcap(
        tmp_path / "x.pcap", [(t, 147, d) for t, _l, d in frames], linktype=147
    )
    eng = Engine(EngineConfig())
    events = list(eng.replay([path]))
    assert eng.stats["unsupported_link"] == len(frames)
    assert [e["error.type"] for e in events] == ["unsupported-link-type"]


@pytest.mark.parametrize("order", ["<", ">"])
@pytest.mark.parametrize("nanos", [False, True])
def test_pcap_record_headers_are_read_exactly(tmp_path, order, nanos) -> None:
    """The record header's fields are read byte by byte (``_u32``, not ``struct``): the
    times and lengths are exactly those struct reads, seconds past 2**31 and fields whose
    four bytes all differ included."""
    import struct

    from sensor.capture import _u32

    for value in (0, 1, 0x01020304, 0x7FFFFFFF, 0x80000000, 0x8A1B2C3D, 0xFFFFFFFF):
        raw = b"\xee" + struct.pack(order + "I", value)
        assert _u32(raw, 1, order == "<") == value
    magic, scale = (0xA1B23C4D, 1e-9) if nanos else (0xA1B2C3D4, 1e-6)
    records = [
        (0x8A1B2C3D, 0x0F4239 if not nanos else 0x3B9AC9FF, bytes(range(60))),
        (0x7FFFFFFF, 0x01, bytes(range(1, 255))),
        (0x01020304, 0, b"\x42" * 0x0103),
    ]
    head = struct.pack(order + "IHHiIII", magic, 2, 4, 0, 0, 65535, 1)
    body = b"".join(struct.pack(order + "IIII", s, f, len(d), len(d)) + d for s, f, d in records)
    path = tmp_path / "h.pcap"
    path.write_bytes(head + body)
    got = list(CaptureReader(path))
    assert got == [(s + f * scale, 1, d) for s, f, d in records]
