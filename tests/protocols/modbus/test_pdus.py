"""The Modbus/TCP parser fed hand-written frames (bytes from the Modbus Application Protocol
specification v1.1b3 and Messaging on TCP/IP v1.0b), and its two ways through a stream held
to each other: a segment that is exactly one frame of standard length takes the single-frame
fast path in ``Parser.feed``; everything else (split frames, several per segment, lengths
255-260 that some vendors send) the framing loop. Both must give the same records."""

from __future__ import annotations

import pytest

from sensor.protocols.modbus.anomalies import Anomaly
from sensor.protocols.modbus.parser import MAX_LENGTH, Parser

TS = 1_800_000_000.0

# MBAP: transaction 0x0001, protocol 0, length, unit 0x11; then the PDU
READ_HOLDING_REQUEST = bytes.fromhex("0001 0000 0006 11 03 006b 0003")  # 3 registers at 107
READ_HOLDING_RESPONSE = bytes.fromhex("0001 0000 0009 11 03 06 022b 0000 0064")  # 555, 0, 100
WRITE_SINGLE_COIL_REQUEST = bytes.fromhex("0002 0000 0006 11 05 00ac ff00")  # coil 172 on
WRITE_SINGLE_COIL_RESPONSE = WRITE_SINGLE_COIL_REQUEST  # the echo
ILLEGAL_ADDRESS_RESPONSE = bytes.fromhex("0001 0000 0003 11 83 02")  # exception 2 to FC 3
STANDARD_MAX_LENGTH = 254  # MBAP length: unit id + the 253-byte PDU the specification allows


def _events(frames: list[tuple[bool, bytes]], split: bool = False) -> list[dict]:
    """Records of one connection; ``split``: every frame in two segments (the loop's way)."""
    parser = Parser()
    out: list[dict] = []
    for i, (to_server, frame) in enumerate(frames):
        ts = TS + i * 0.25  # exact in binary: durations come out whole
        if split:
            out += parser.feed(to_server, frame[:5], ts)
            out += parser.feed(to_server, frame[5:], ts)
        else:
            out += parser.feed(to_server, frame, ts)
    return out + parser.close(TS + 1)


def test_read_holding_registers_pairs_request_and_response() -> None:
    (rec,) = _events([(True, READ_HOLDING_REQUEST), (False, READ_HOLDING_RESPONSE)])
    assert rec["modbus.function_code"] == 3 and rec["modbus.unit_id"] == 0x11
    assert rec["modbus.address"] == 107 and rec["modbus.quantity"] == 3
    assert rec["modbus.values"] == [555, 0, 100]
    assert rec["ics.pairing"] == "paired" and rec["event.duration"] == 250_000_000


def test_write_single_coil_and_exception() -> None:
    recs = _events(
        [
            (True, WRITE_SINGLE_COIL_REQUEST),
            (False, WRITE_SINGLE_COIL_RESPONSE),
            (True, READ_HOLDING_REQUEST),
            (False, ILLEGAL_ADDRESS_RESPONSE),
        ]
    )
    write, refused = recs
    assert write["modbus.function_code"] == 5 and write["modbus.address"] == 172
    assert refused["modbus.exception_code"] == 2


def test_split_segments_decode_like_whole_frames() -> None:
    frames = [
        (True, READ_HOLDING_REQUEST),
        (False, READ_HOLDING_RESPONSE),
        (True, WRITE_SINGLE_COIL_REQUEST),
        (False, WRITE_SINGLE_COIL_RESPONSE),
        (True, READ_HOLDING_REQUEST),
        (False, ILLEGAL_ADDRESS_RESPONSE),
    ]
    assert _events(frames, split=True) == _events(frames)


@pytest.mark.parametrize("length", range(2, MAX_LENGTH + 2))
def test_fast_path_and_framing_loop_agree_on_every_length(length: int) -> None:
    """Lengths 2..261: a write-multiple-registers frame of that MBAP length (most are
    malformed PDUs: they must be the same malformed records either way). Above 254 the fast
    path declines and the loop decodes up to 260 with one ``mbap-oversized`` anomaly; 261 is
    no Modbus header at all."""
    body = bytes((i * 7) & 0xFF for i in range(length - 2))
    frame = bytes.fromhex("0003 0000") + length.to_bytes(2, "big") + b"\x11\x10" + body
    whole = _events([(True, frame)])
    split = _events([(True, frame)], split=True)
    assert whole == split
    codes = [r.get("error.type") for r in whole]
    assert (Anomaly.MBAP_OVERSIZED in codes) == (STANDARD_MAX_LENGTH < length <= MAX_LENGTH)
    if length > MAX_LENGTH:
        assert Anomaly.NOT_MODBUS in codes
    else:
        assert any(r.get("modbus.function_code") == 16 for r in whole)


def test_bits_are_those_of_each_byte_lsb_first_cut_to_the_count() -> None:
    """``_bits`` (a loop of list extends since round 10) against the formula it replaced."""
    from itertools import chain

    from sensor.protocols.modbus.parser import _BIT_ROWS, _bits

    def reference(body: bytes, count: int) -> list[int]:
        out = list(chain.from_iterable(map(_BIT_ROWS.__getitem__, body)))
        return out[:count] if 0 < count < len(out) else out

    for size in range(6):
        body = bytes((0xA5 + 37 * i) & 0xFF for i in range(size))
        for count in range(-1, 8 * size + 3):
            assert _bits(body, count) == reference(body, count), (size, count)
    assert _bits(b"\x01\x80", 16) == [1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]


@pytest.mark.parametrize(
    "seconds",
    [0.0, 2.5e-9, 3.5e-9, -2.5e-9, 0.5e-9, 1.5e-9, 4.9999999999e-7, 267029e-9, 1e-3 + 0.5e-9, 42.0],
)
def test_durations_round_half_to_even_as_round_does(seconds: float) -> None:
    """``_nanoseconds`` replaced ``round(seconds * 1e9)`` (a builtins call per response)."""
    from sensor.protocols.modbus.parser import _nanoseconds

    got = _nanoseconds(seconds)
    assert type(got) is int and got == round(seconds * 1e9)


def test_durations_of_captured_times_round_as_round_does() -> None:
    """Differences of capture times (what a response's duration is made of), many of them."""
    import random

    from sensor.protocols.modbus.parser import _nanoseconds

    rng = random.Random(18)
    for _ in range(50_000):
        start = TS + rng.randrange(10**6) * 1e-6
        end = start + rng.randrange(10**7) * rng.choice((1e-9, 1e-6))
        assert _nanoseconds(end - start) == round((end - start) * 1e9)
    for half in range(-50, 50):  # exact halves: the even neighbour
        assert _nanoseconds(half / 2 * 1e-9) == round(half / 2 * 1e-9 * 1e9)


def test_registers_are_big_endian_pairs_cut_to_the_limit() -> None:
    """``_registers`` (byte by byte since round 10) against ``struct``."""
    import struct

    from sensor.protocols.modbus.parser import _registers

    body = bytes((7 + 91 * i) & 0xFF for i in range(255))
    for size in (0, 1, 2, 3, 20, 21, 252, 253, 255):
        for limit in (0, 1, 5, 126, 127, 128, 4096):
            n = min(size // 2, limit)
            assert _registers(body[:size], limit) == list(struct.unpack_from(f">{n}H", body))
    with pytest.raises(struct.error):
        _registers(b"\x00\x01", -1)


def test_a_request_record_is_the_template_s_copy_at_its_final_size() -> None:
    """A request's record starts as a copy of ``_REQUEST``, whose table was grown for the
    whole record (sensor.events.with_room): the template keeps its placeholders, the record
    has the literal's keys in its order and never outgrows the copied table."""
    import sys

    from sensor.protocols.modbus import parser as modbus

    (rec,) = _events([(True, READ_HOLDING_REQUEST), (False, READ_HOLDING_RESPONSE)])
    template = {  # still its placeholders after parsing
        "ts": 0.0,
        "network.protocol": "modbus",
        "modbus.transaction_id": 0,
        "modbus.unit_id": 0,
        "modbus.function_code": 0,
        "modbus.function": "",
    }
    assert list(modbus._REQUEST.items()) == list(template.items())
    assert list(rec)[:6] == list(template)
    assert rec["ts"] == TS and rec["modbus.transaction_id"] == 1 and rec["modbus.unit_id"] == 0x11
    assert rec["modbus.function"] == "read_holding_registers"
    assert len(rec) == 16 and sys.getsizeof(rec) == sys.getsizeof(modbus._REQUEST.copy())
    # a literal of the same six keys grows on the way to the same record
    literal = {key: None for key in template}
    for key in list(rec)[6:]:
        literal[key] = None
    assert sys.getsizeof(literal) == sys.getsizeof(rec)  # same table in the end ...
    assert sys.getsizeof({key: None for key in template}) < sys.getsizeof(rec)  # ... grown


def test_requests_pair_by_transaction_and_unit() -> None:
    """Pending requests are keyed by transaction id and unit id packed in one int: pairs
    whose naive packings would collide ((1, 0) and (0, 1), (0x100, 0) and (1, 0)...) pair
    with their own responses, in any order, and close() reports the rest in request order."""

    def frame(tid: int, unit: int, address: int, response: bool) -> bytes:
        pdu = (
            bytes([3, 2]) + address.to_bytes(2, "big")
            if response
            else bytes([3]) + (address.to_bytes(2, "big") + (1).to_bytes(2, "big"))
        )
        return (
            tid.to_bytes(2, "big")
            + b"\0\0"
            + (len(pdu) + 1).to_bytes(2, "big")
            + bytes([unit])
            + pdu
        )

    keys = [(1, 0), (0, 1), (0x100, 0), (0, 0), (0xFFFF, 0xFF), (0xFF, 0xFF), (0x1FF, 0)]
    frames = [(True, frame(tid, unit, i, False)) for i, (tid, unit) in enumerate(keys)]
    answered = keys[:5]
    frames += [
        (False, frame(tid, unit, 1000 + keys.index((tid, unit)), True))
        for tid, unit in reversed(answered)
    ]
    recs = _events(frames)
    paired = [r for r in recs if r["ics.pairing"] == "paired"]
    assert [(r["modbus.transaction_id"], r["modbus.unit_id"]) for r in paired] == list(
        reversed(answered)
    )
    for r in paired:  # the request's address, the response's register value
        assert r["modbus.values"] == [1000 + r["modbus.address"]]
    unanswered = [r for r in recs if r["ics.pairing"] == "request-only"]
    assert [(r["modbus.transaction_id"], r["modbus.unit_id"]) for r in unanswered] == keys[5:]


def test_every_function_code_is_named_and_classed_as_function_name_says() -> None:
    """_NAMES and _COMMON are lists indexed by the function code (0-127): each request and
    its answer are named by function_name and carry _common_fields of the request's code."""
    from sensor.protocols.modbus.parser import _common_fields, function_name

    for fc in range(128):
        request = bytes.fromhex("0001 0000 0002 11") + bytes([fc])
        response = bytes.fromhex("0001 0000 0003 11") + bytes([fc | 0x80, 1])
        (rec,) = [r for r in _events([(True, request), (False, response)]) if "ics.pairing" in r]
        assert rec["modbus.function"] == function_name(fc)
        assert {k: rec[k] for k in _common_fields(fc)} == _common_fields(fc)
