"""S7comm-plus PDUs (protocol id 0x72, S7-1200/1500): the public header structure of a
reassembled message (version, integrity digest, opcode, function, sequence number, session
id, the response's return value, the object a CreateObject answer creates). Item bodies are
not decoded (``s7comm_plus.body_decoded: false``)."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from sensor.protocols.s7comm.anomalies import Anomaly
from sensor.protocols.s7comm.identity import plus_module
from sensor.protocols.s7comm.tables import PLUS_OPCODES

OPCODE_REQUEST, OPCODE_RESPONSE, OPCODE_NOTIFICATION, OPCODE_RESPONSE2 = 0x31, 0x32, 0x33, 0x02
CREATE_OBJECT = 0x04CA


@dataclass(slots=True)
class PlusPdu:
    ts: float
    to_server: bool
    opcode: int
    function_code: int
    seq: int
    fields: dict[str, object]
    failed: bool = False
    device: dict[str, str] = field(default_factory=dict)


def decode_plus(
    to_server: bool, version: int, body: bytes, ts: float, fragments: int = 1
) -> PlusPdu | tuple[Anomaly, str] | None:
    """One reassembled S7comm-plus message: its PDU, an anomaly (code, message), or None for
    what carries no transaction (keep-alives)."""
    f: dict[str, object] = {"s7comm_plus.version": version, "s7comm_plus.fragments": fragments}
    i = 0
    if version == 3:  # integrity digest (length byte + digest) precedes the data
        if not body:
            return Anomaly.S7PLUS_SHORT_PDU, "S7comm-plus V3 PDU without its digest"
        dig = body[0]
        f["s7comm_plus.integrity"] = True
        f["s7comm_plus.digest_length"] = dig
        i = 1 + dig
    else:
        f["s7comm_plus.integrity"] = False
    if version in (0xFE, 0xFF) or i >= len(body):
        return None
    opcode = body[i]
    f["s7comm_plus.opcode"] = opcode
    f["s7comm_plus.opcode_name"] = PLUS_OPCODES.get(opcode, f"0x{opcode:02x}")
    f["s7comm_plus.data_length"] = len(body) - i
    f["s7comm_plus.body_decoded"] = False
    if opcode == OPCODE_NOTIFICATION:  # subscription object id first
        if len(body) >= i + 5:
            f["s7comm_plus.subscription_id"] = int.from_bytes(body[i + 1 : i + 5], "big")
        return PlusPdu(ts, to_server, opcode, -1, -1, f)
    if opcode not in (OPCODE_REQUEST, OPCODE_RESPONSE, OPCODE_RESPONSE2) or len(body) < i + 9:
        return (
            Anomaly.S7PLUS_SHORT_PDU,
            f"S7comm-plus opcode 0x{opcode:02x} with a {len(body) - i}-byte header",
        )
    func, seq = struct.unpack_from(">HxxH", body, i + 3)
    pdu = PlusPdu(ts, to_server, opcode, func, seq, f)
    f["s7comm_plus.function_code"] = func
    f["s7comm_plus.sequence_number"] = seq
    if opcode == OPCODE_REQUEST:
        if len(body) >= i + 14:
            f["s7comm_plus.session_id"] = int.from_bytes(body[i + 9 : i + 13], "big")
            f["s7comm_plus.transport_flags"] = body[i + 13]
        return pdu
    if len(body) >= i + 10:
        f["s7comm_plus.transport_flags"] = body[i + 9]
        j = i + 10
        retval, j = vlq(body, j)
        if retval is not None:
            # 64 bits, kept signed so that stores with 64-bit integers take it as it is
            f["s7comm_plus.return_value"] = retval - (1 << 64) if retval >> 63 else retval
            error_code = (retval & 0xFFFF) - 0x10000 if retval & 0x8000 else retval & 0xFFFF
            f["s7comm_plus.error_code"] = error_code
            if error_code < 0:
                pdu.failed = True
            if func == CREATE_OBJECT and j < len(body):  # CreateObject answer: object ids
                count = body[j]
                object_id, _ = vlq(body, j + 1, 5)
                if count and object_id is not None:
                    f["s7comm_plus.created_object_id"] = object_id
                if not to_server:
                    pdu.device = plus_module(body)
    return pdu


def vlq(buf: bytes, i: int, max_bytes: int = 9) -> tuple[int | None, int]:
    """S7comm-plus variable-length unsigned integer: 7 bits per byte while the high bit says
    more follow; the last possible byte (the 9th for 64-bit, the 5th for 32-bit values)
    carries 8 bits. Returns (value, next offset), value None when the buffer ends first."""
    value = 0
    for k in range(max_bytes):
        if i + k >= len(buf):
            return None, i + k
        b = buf[i + k]
        if k == max_bytes - 1:
            return (value << 8) | b, i + k + 1
        value = (value << 7) | (b & 0x7F)
        if not b & 0x80:
            return value, i + k + 1
    return None, i + max_bytes
