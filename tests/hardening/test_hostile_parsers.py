"""Hostile input to the dissectors (issue 8, "Fuzzing and malformed input"), property-based.

Every dissector is fed random segments, real streams from pcaps/ with bytes flipped, inserted
and cut, and real streams whose framing was broken on purpose. Nothing may raise out of
``feed``/``gap``/``close``, every record keeps the dissector contract
(``tests/hardening/fuzz/common.check_record``), buffers stay under ``ParserLimits.max_buffer``, each
example is bounded by hypothesis's deadline (a loop fails it), and input that is rejected
is counted: an anomaly record, never silence. tests/protocols/s7comm/test_dissector.py and tests/protocols/opcua/test_dissector.py
have their own protocol-specific random tests (the S7 decode-error safety net, OPC UA
truncations); this file covers what is common to all three and Modbus, which had none.
The seed inputs are the per-direction TCP payloads of the real captures (pymodbus,
python-snap7, asyncua); the broken framings are hand-made edits of those, on purpose.
"""

from __future__ import annotations

import struct
from datetime import timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sensor.protocols import dnp3, enip, iec104, modbus, opcua, s7comm
from sensor.protocols.base import ParserLimits
from tests.hardening.fuzz.common import (
    FUZZ_LIMITS,
    check_record,
    decode,
    encode,
    run_parser,
    streams_for,
)

MODULES = {
    "modbus": modbus,
    "s7comm": s7comm,
    "opcua": opcua,
    "enip": enip,
    "dnp3": dnp3,
    "iec104": iec104,
}
STREAMS = {name: streams_for(name) for name in MODULES}
# a loop or a quadratic blow-up on inputs this small fails the example
HOSTILE = settings(
    max_examples=150,
    deadline=timedelta(seconds=2),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def buffered(parser) -> list[int]:
    """Bytes each parser holds awaiting a complete PDU, per buffer."""
    if isinstance(parser, modbus.Parser | dnp3.Parser | iec104.Parser):
        return [len(b) for b in parser._buf]
    if isinstance(parser, s7comm.Parser):
        return [n for d in parser._dirs.values() for n in (len(d.buf), len(d.cotp))]
    if isinstance(parser, enip.Parser):
        return [len(b) for b in parser._buf]
    return [len(d.buf) + sum(m.size for m in d.partial.values()) for d in parser._dir]


def test_seed_streams_exist() -> None:
    for name, streams in STREAMS.items():
        assert len(streams) >= 5, name
        # the seeds decode cleanly: the framing-breaking tests below start from clean traffic
        records = [r for s in streams for r in run_parser(MODULES[name], encode(s), ParserLimits())]
        assert sum(r["event.action"] != "anomaly" for r in records) > 50, name


segments = st.lists(st.tuples(st.integers(0, 3), st.binary(max_size=300)), max_size=16)


@pytest.mark.parametrize("name", sorted(MODULES))
@HOSTILE
@given(segs=segments)
def test_random_segments_keep_the_contract(name: str, segs: list[tuple[int, bytes]]) -> None:
    module = MODULES[name]
    parser = module.Parser(FUZZ_LIMITS)
    records = []
    for flags, payload in segs:
        if flags & 2:
            records += parser.gap(bool(flags & 1), 1.0, 5)
        records += parser.feed(bool(flags & 1), payload, 1.0)
        assert max(buffered(parser)) <= FUZZ_LIMITS.max_buffer
    records += parser.close(2.0)
    for rec in records:
        check_record(name, rec)
    if any(p for _f, p in segs) and not any(f & 2 for f, _p in segs):
        # nothing fed disappears silently: it is an event, an anomaly, or (at close) a
        # truncated-PDU anomaly. (After a gap, bytes up to the next header may be the rest of
        # the lost PDU: skipping them silently is allowed, see the S7 test below.)
        assert records


@pytest.mark.parametrize("name", sorted(MODULES))
def test_garbage_after_a_gap_is_reported(name: str) -> None:
    """Regression (S7 found by the property above): after a gap, S7 skipped any amount of
    non-TPKT bytes silently. Up to one maximal PDU may be the rest of the lost one; more is
    an anomaly. Modbus and OPC UA already reported it (OPC UA when the episode ends)."""
    parser = MODULES[name].Parser()
    records = parser.gap(True, 1.0, 100)
    for _ in range(70):
        records += parser.feed(True, b"\xaa" * 1000, 1.0)
    records += parser.close(2.0)  # OPC UA reports a skip episode when it ends (header or close)
    assert any(r["event.action"] == "anomaly" for r in records), name
    assert max(buffered(parser)) <= ParserLimits().max_buffer
    # the rest of a lost PDU, then real traffic: silent skip, the traffic decodes
    stream = STREAMS[name][0]
    parser = MODULES[name].Parser()
    records = parser.gap(stream[0][0], 1.0, 100) + parser.feed(stream[0][0], b"\x00" * 20, 1.0)
    for to_server, payload in stream:
        records += parser.feed(to_server, payload, 1.0)
    assert any(r["event.action"] != "anomaly" for r in records)


def mutate(data: st.DataObject, stream: list[tuple[bool, bytes]]) -> list[tuple[bool, bytes]]:
    out = []
    for to_server, payload in stream:
        buf = bytearray(payload)
        for _ in range(data.draw(st.integers(0, 2))):
            if not buf:
                break
            op = data.draw(st.sampled_from(["flip", "byte", "insert", "cut"]))
            i = data.draw(st.integers(0, len(buf) - 1))
            if op == "flip":
                buf[i] ^= 1 << data.draw(st.integers(0, 7))
            elif op == "byte":
                buf[i] = data.draw(
                    st.sampled_from([0, 0xFF, 0x7F, 0x80, data.draw(st.integers(0, 255))])
                )
            elif op == "insert":
                buf[i:i] = data.draw(st.binary(min_size=1, max_size=8))
            else:
                del buf[i : i + data.draw(st.integers(1, 16))]
        out.append((to_server, bytes(buf)))
    return out


@pytest.mark.parametrize("name", sorted(MODULES))
@HOSTILE
@given(data=st.data())
def test_mutated_real_streams_keep_the_contract(name: str, data: st.DataObject) -> None:
    stream = data.draw(st.sampled_from(STREAMS[name]))
    records = run_parser(MODULES[name], encode(mutate(data, stream)))
    assert records


# -- rejected framing is counted ---------------------------------------------------------


def break_framing(name: str, payload: bytes, how: int) -> bytes:
    """One PDU with its framing header made invalid (hand-made edits of real PDUs)."""
    if name == "modbus":  # protocol id not 0, or a length below 2 / above 260
        tid, _pid, length, unit = struct.unpack_from(">HHHB", payload)
        pid, length = [(1 + how, length), (0, how % 2), (0, 261 + how)][how % 3]
        return struct.pack(">HHHB", tid, pid, length, unit) + payload[7:]
    if name == "s7comm":  # TPKT version not 3 or a length shorter than its header
        return [
            bytes([4 + how % 200]) + payload[1:],
            payload[:2] + struct.pack("!H", how % 7) + payload[4:],
        ][how % 2]
    if name == "enip":  # an unknown command, or options that are not 0
        return [
            struct.pack("<H", 0x0200 + how) + payload[2:],
            payload[:20] + struct.pack("<I", 1 + how) + payload[24:],
        ][how % 2]
    if name == "dnp3":  # no 05 64 start, or a header whose CRC is wrong
        return [
            b"\x05\x65" + payload[2:],
            payload[:8] + bytes([payload[8] ^ (1 + how % 255)]) + payload[9:],
        ][how % 2]
    if name == "iec104":  # no 68 start, or a length octet below 4
        return [
            bytes([0x67 - how % 2]) + payload[1:],
            payload[:1] + bytes([how % 4]) + payload[2:],
        ][how % 2]
    # OPC UA: an unknown message type or a size below the header's
    return [b"XYZ" + payload[3:], payload[:4] + struct.pack("<I", how % 8) + payload[8:]][how % 2]


@pytest.mark.parametrize("name", sorted(MODULES))
@HOSTILE
@given(data=st.data())
def test_broken_framing_is_an_anomaly(name: str, data: st.DataObject) -> None:
    stream = data.draw(st.sampled_from(STREAMS[name]))
    i = data.draw(st.integers(0, len(stream) - 1))
    to_server, payload = stream[i]
    how = data.draw(st.integers(0, 255))
    broken = stream[:i] + [(to_server, break_framing(name, payload, how))] + stream[i + 1 :]
    records = run_parser(MODULES[name], encode(broken), ParserLimits())
    assert any(r["event.action"] == "anomaly" for r in records), (i, how)
    clean = run_parser(MODULES[name], encode(stream[:i]), ParserLimits())
    # what came before the damage is still decoded (closing early may add unanswered requests)
    before = [r["event.action"] for r in clean if r["event.action"] != "anomaly"]
    after = [r["event.action"] for r in records if r["event.action"] != "anomaly"]
    assert len(after) >= len(before) - 1


# -- Modbus specifics: framing accepted, bodies random -----------------------------------


@HOSTILE
@given(
    frames=st.lists(
        st.tuples(st.integers(0, 255), st.binary(max_size=252)),
        min_size=1,
        max_size=FUZZ_LIMITS.max_pending,
    ),
    split=st.integers(1, 300),
)
def test_modbus_every_well_framed_request_is_one_event(
    frames: list[tuple[int, bytes]], split: int
) -> None:
    """Valid MBAP framing with any function byte and body, delivered in arbitrary TCP
    segments: each request becomes exactly one event (request-only at close), and a body
    that does not match its function's layout adds a malformed-pdu anomaly."""
    stream = b"".join(
        struct.pack(">HHHB", tid, 0, 2 + len(body), 1) + bytes([fc]) + body
        for tid, (fc, body) in enumerate(frames)
    )
    segs = [(True, stream[i : i + split]) for i in range(0, len(stream), split)]
    records = run_parser(modbus, encode(segs))
    events = [r for r in records if r["event.action"] != "anomaly"]
    assert [r["modbus.transaction_id"] for r in events] == list(range(len(frames)))
    assert all(r["ics.pairing"] == "request-only" for r in events)
    for tid, (fc, body) in enumerate(frames):
        if fc in (1, 2, 3, 4) and len(body) != 4 or fc & 0x80:
            assert any(
                r.get("error.type") == "malformed-pdu" and r["modbus.transaction_id"] == tid
                for r in records
            ), (fc, body)


# -- the datagram side: DNP3 over UDP ----------------------------------------------------


@HOSTILE
@given(
    grams=st.lists(st.tuples(st.booleans(), st.binary(max_size=600)), max_size=12),
    data=st.data(),
)
def test_dnp3_hostile_datagrams_keep_the_contract(
    grams: list[tuple[bool, bytes]], data: st.DataObject
) -> None:
    """Random datagrams and mutated real frames (each TCP payload of the real captures as a
    datagram) to one DatagramParser: nothing raises, every record keeps the contract, and
    nothing is buffered between datagrams beyond the transport reassembly's cap."""
    real = [seg for stream in STREAMS["dnp3"] for seg in stream]
    grams = grams + mutate(data, data.draw(st.lists(st.sampled_from(real), max_size=8)))
    parser = dnp3.DatagramParser(FUZZ_LIMITS)
    records = []
    for to_server, payload in grams:
        records += parser.datagram(to_server, payload, 1.0)
        assert parser._buf == [b"", b""]
    records += parser.close(2.0)
    for rec in records:
        check_record("dnp3", rec)


def test_decode_splits_segments_as_encoded() -> None:
    segs = [(True, b"a" * 300), (False, b""), (False, b"xyz")]
    assert [(t, p) for t, _g, p in decode(encode(segs))] == [
        (True, b"a" * 255),
        (True, b"a" * 45),
        (False, b""),
        (False, b"xyz"),
    ]


# -- EtherNet/IP over UDP: the datagram side -----------------------------------------------

_IO_DATAGRAM = bytes.fromhex("020002800800") + bytes(8) + bytes.fromhex("b1000600") + bytes(6)
_LIST_IDENTITY = bytes.fromhex("6300") + bytes(22)


@HOSTILE
@given(
    datagrams=st.lists(
        st.tuples(
            st.booleans(),
            st.one_of(
                st.binary(max_size=120),
                st.sampled_from([_IO_DATAGRAM, _LIST_IDENTITY]).flatmap(
                    lambda seed: st.builds(
                        lambda cut, flip, at: bytes(
                            b ^ flip if i == at else b for i, b in enumerate(seed)
                        )[:cut],
                        st.integers(0, len(seed)),
                        st.integers(0, 255),
                        st.integers(0, len(seed) - 1),
                    )
                ),
            ),
        ),
        max_size=20,
    )
)
def test_enip_datagrams_keep_the_contract(datagrams: list[tuple[bool, bytes]]) -> None:
    """Random datagrams and mutated I/O and ListIdentity datagrams (hand-made seeds of the
    two shapes UDP carries) never raise, and every record keeps the contract."""
    parser = enip.DatagramParser(FUZZ_LIMITS)
    records = []
    ts = 1.0
    for to_server, data in datagrams:
        records += parser.datagram(to_server, data, ts)
        assert not parser._stream._buf[0] and not parser._stream._buf[1]  # nothing kept
        ts += 0.01
    records += parser.close(ts)
    for rec in records:
        check_record("enip", rec)
