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
