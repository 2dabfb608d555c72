"""The datagram side of the dissector contract (sensor/protocols/base.py): UDP flows, their
orientation, ports and heuristics, on the published DNP3-over-UDP captures (re-encoded with
other ports where a test needs them)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sensor.engine import Engine, EngineConfig
from tests.support.pcapgen import frames_of, with_udp_ports, write_pcap


@pytest.fixture()
def en_spon(public_pcaps: Path) -> Path:
    """Enable unsolicited over UDP: master 192.168.80.160:1128, outstation .12:20000."""
    return public_pcaps / "dnp3" / "zeek__dnp3_udp_en_spon.pcap"


def _events(path: Path, **config: object) -> tuple[list[dict], dict]:
    engine = Engine(EngineConfig(**config))  # type: ignore[arg-type]
    return list(engine.replay([path])), engine.stats


def test_udp_flow_is_one_flow_with_udp_fields(en_spon: Path) -> None:
    events, stats = _events(en_spon)
    assert stats["udp_datagrams"] == 4 and stats["flows"] == 1 and stats["flows_dissected"] == 1
    assert stats["tcp_segments"] == 0 and stats["other_transport"] == 0
    actions = [e["event.action"] for e in events]
    assert actions == ["enable-unsolicited", "request-link-status"]
    for e in events:
        assert e["network.transport"] == "udp"
        assert (e["source.ip"], e["source.port"]) == ("192.168.80.160", 1128)
        assert (e["destination.ip"], e["destination.port"]) == ("192.168.80.12", 20000)
    # Community ID v1 of a UDP flow hashes protocol 17 (checked against the reference package)
    import communityid

    flow = communityid.FlowTuple.make_udp("192.168.80.160", "192.168.80.12", 1128, 20000)
    assert events[0]["network.community_id"] == communityid.CommunityID().calc(flow)


def test_both_ends_on_the_port_are_oriented_by_the_dir_bit(en_spon: Path, tmp_path: Path) -> None:
    """Master and outstation both on UDP 20000, and the outstation's datagram first: the
    protocol's own direction bit (``datagram_to_server``) makes the master the client."""
    frames = [(ts, lt, with_udp_ports(data, {1128: 20000})) for ts, lt, data in frames_of(en_spon)]
    frames = frames[1:2] + frames[:1] + frames[2:]  # a response before the request
    events, _ = _events(write_pcap(tmp_path / "both.pcap", frames))
    assert events
    for e in events:
        assert (e["source.ip"], e["source.port"]) == ("192.168.80.160", 20000)
        assert e["destination.ip"] == "192.168.80.12"


def test_datagrams_no_dissector_wants_keep_no_state(en_spon: Path, tmp_path: Path) -> None:
    frames = [(ts, lt, with_udp_ports(d, {20000: 20001})) for ts, lt, d in frames_of(en_spon)]
    path = write_pcap(tmp_path / "other.pcap", frames)
    events, stats = _events(path, heuristics=())
    assert events == [] and stats["udp_datagrams"] == 4 and stats["flows"] == 0
    # the same datagrams on a UDP port assigned to DNP3, and found by its probe
    for config in ({"heuristics": (), "udp_ports": {20001: "dnp3"}}, {"heuristics": ("dnp3",)}):
        events, stats = _events(path, **config)
        assert [e["event.action"] for e in events] == ["enable-unsolicited", "request-link-status"]
        assert stats["flows"] == 1


def test_a_udp_port_for_a_tcp_only_protocol_is_refused() -> None:
    with pytest.raises(ValueError, match="does not run over UDP"):
        Engine(EngineConfig(udp_ports={5020: "modbus"}))


def test_ip_fragments_of_a_datagram_are_reassembled(en_spon: Path, tmp_path: Path) -> None:
    """A datagram split into IPv4 fragments reaches the dissector whole."""
    import struct

    frames = frames_of(en_spon)
    ts, lt, data = frames[0]
    ip = data[14:]
    ihl = (ip[0] & 0x0F) * 4
    body = ip[ihl:]
    cut = 16  # fragment offsets are in units of 8 octets

    def fragment(part: bytes, offset: int, more: bool) -> bytes:
        head = bytearray(ip[:ihl])
        struct.pack_into("!H", head, 2, ihl + len(part))
        struct.pack_into("!H", head, 6, (0x2000 if more else 0) | offset // 8)
        struct.pack_into("!H", head, 10, 0)
        return data[:14] + bytes(head) + part

    parts = [(ts, lt, fragment(body[:cut], 0, True)), (ts, lt, fragment(body[cut:], cut, False))]
    events, stats = _events(write_pcap(tmp_path / "frag.pcap", parts + frames[1:]))
    assert stats["ip_fragments"] == 2
    assert [e["event.action"] for e in events] == ["enable-unsolicited", "request-link-status"]
