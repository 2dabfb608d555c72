"""Modbus/TCP connection parser: MBAP framing over the reassembled stream, request and
response PDUs of every public function code, pairing by (transaction id, unit id).

Compiled with mypyc at install (``sensor.COMPILED``): the hot loop is typed for it.
"""

from __future__ import annotations

import math
import re
import struct
from typing import Final

from sensor.events import with_room
from sensor.protocols.base import ParserLimits, Record, anomaly, event_type, kebab
from sensor.protocols.facts import MODBUS_HEURISTIC_DEFAULT, MODBUS_NAME, MODBUS_PORTS
from sensor.protocols.modbus.anomalies import Anomaly

# Final: the compiled build reads a Final module name as a constant or a C global, the others
# by a lookup in the module's dictionary each time (this module runs for every PDU)
NAME: Final = MODBUS_NAME
PORTS = MODBUS_PORTS
HEURISTIC_DEFAULT = MODBUS_HEURISTIC_DEFAULT

_MBAP: Final = struct.Struct(">HHHB")
_PRINTABLE = re.compile(rb"[\x20-\x7e]{4,}")
_H: Final = struct.Struct(">H")
_HH: Final = struct.Struct(">HH")
_HHH: Final = struct.Struct(">HHH")
_HHHH: Final = struct.Struct(">HHHH")

FUNCTIONS: dict[int, str] = {
    1: "read_coils",
    2: "read_discrete_inputs",
    3: "read_holding_registers",
    4: "read_input_registers",
    5: "write_single_coil",
    6: "write_single_register",
    7: "read_exception_status",
    8: "diagnostics",
    11: "get_comm_event_counter",
    12: "get_comm_event_log",
    15: "write_multiple_coils",
    16: "write_multiple_registers",
    17: "report_server_id",
    20: "read_file_record",
    21: "write_file_record",
    22: "mask_write_register",
    23: "read_write_multiple_registers",
    24: "read_fifo_queue",
    43: "encapsulated_interface_transport",
    90: "unity_umas",  # Schneider Electric's proprietary function (not public Modbus)
}
USER_DEFINED = frozenset(range(65, 73)) | frozenset(range(100, 111))

OPERATION: dict[int, str] = {
    1: "read",
    2: "read",
    3: "read",
    4: "read",
    7: "diagnostic",
    8: "diagnostic",
    11: "diagnostic",
    12: "diagnostic",
    5: "write",
    6: "write",
    15: "write",
    16: "write",
    17: "diagnostic",
    20: "read",
    21: "write",
    22: "write",
    23: "write",
    24: "read",
    43: "diagnostic",
}

EXCEPTIONS: Final[dict[int, str]] = {
    1: "illegal_function",
    2: "illegal_data_address",
    3: "illegal_data_value",
    4: "server_device_failure",
    5: "acknowledge",
    6: "server_device_busy",
    7: "negative_acknowledge",
    8: "memory_parity_error",
    10: "gateway_path_unavailable",
    11: "gateway_target_device_failed_to_respond",
}

DIAGNOSTICS: Final[dict[int, str]] = {
    0: "return_query_data",
    1: "restart_communications_option",
    2: "return_diagnostic_register",
    3: "change_ascii_input_delimiter",
    4: "force_listen_only_mode",
    10: "clear_counters_and_diagnostic_register",
    11: "return_bus_message_count",
    12: "return_bus_communication_error_count",
    13: "return_bus_exception_error_count",
    14: "return_server_message_count",
    15: "return_server_no_response_count",
    16: "return_server_nak_count",
    17: "return_server_busy_count",
    18: "return_bus_character_overrun_count",
    20: "clear_overrun_counter_and_flag",
}

DEVICE_OBJECTS: dict[int, str] = {
    0: "vendor_name",
    1: "product_code",
    2: "major_minor_revision",
    3: "vendor_url",
    4: "product_name",
    5: "model_name",
    6: "user_application_name",
}

_VALID_FC = frozenset(FUNCTIONS) | USER_DEFINED
MAX_LENGTH: Final = 260  # the specification's limit is 254; some vendors (Schneider UMAS) send 255+
REQUEST_TIMEOUT: Final = 30.0  # seconds of capture time before an unanswered request is reported


def _common_fields(fc: int) -> dict:
    """The fields every transaction of one function code shares."""
    op = OPERATION.get(fc, "other")
    name = function_name(fc)
    return {
        "ics.operation": op,
        "ics.function": name,
        "event.action": kebab(name),
        "event.type": event_type(op),
    }


# A request's record: these six keys, its request and response fields and the common four
# (16 keys for a read); built as a dict display it outgrew its table on the way (and had the
# general table kind), a copy of this template grown as 11 keys would grow it
# (sensor.events.with_room: str keys, 32 slots) takes them all. The values are placeholders,
# each replaced in _pdu (the key order is the display's of before).
_REQUEST: Final[dict] = with_room(
    {
        "ts": 0.0,
        "network.protocol": NAME,
        "modbus.transaction_id": 0,
        "modbus.unit_id": 0,
        "modbus.function_code": 0,
        "modbus.function": "",
    },
    11,
)
# indexed by function code (0-127, the byte without its exception bit): a list read per PDU,
# no hash lookup
_COMMON: Final[list[dict | None]] = [None] * 128  # filled on first use per function code
_NAMES: Final[list[str | None]] = [FUNCTIONS.get(fc) for fc in range(128)]  # public codes' names


def function_name(fc: int) -> str:
    name = FUNCTIONS.get(fc)
    if name:
        return name
    if fc in USER_DEFINED:
        return f"user_defined_{fc}"
    return f"unknown_{fc}"


def probe(data: bytes) -> bool:
    """A stream starting with one or more well-formed MBAP frames (for non-standard ports)."""
    pos = 0
    frames = 0
    while len(data) - pos >= 8:
        _tid, pid, length, _unit = _MBAP.unpack_from(data, pos)
        fc = data[pos + 7] & 0x7F
        if pid != 0 or not 2 <= length <= MAX_LENGTH or fc not in _VALID_FC:
            return False
        pos += 6 + length
        frames += 1
    return frames > 0 and pos == len(data)


def _plausible(buf: bytes, pos: int) -> bool:
    _t, pid, length, _u = _MBAP.unpack_from(buf, pos)
    return pid == 0 and 2 <= length <= MAX_LENGTH and buf[pos + 7] & 0x7F in _VALID_FC


_BIT_ROWS: Final = [
    tuple((b >> i) & 1 for i in range(8)) for b in range(256)
]  # byte -> its bits, LSB first


def _bits(body: bytes, count: int) -> list[int]:
    """The first ``count`` bits of ``body`` (every bit when ``count`` is 0)."""
    # each byte's row extended in place: in the compiled build a loop of list primitives,
    # cheaper than a chain of maps for the few bytes of a usual coil read
    rows = _BIT_ROWS
    out: list[int] = []
    for i in range(len(body)):
        out.extend(rows[body[i]])
    if 0 < count < len(out):
        del out[count:]
    return out


def _registers(body: bytes, limit: int) -> list[int]:
    n = min(len(body) // 2, limit)
    if n < 0:  # a negative limit: struct's error, as ever
        return list(struct.unpack_from(f">{n}H", body, 0))
    # big-endian pairs byte by byte: in the compiled build a loop of machine operations into
    # a list made at its size (no struct call, no tuple to copy)
    return [body[2 * i] << 8 | body[2 * i + 1] for i in range(n)]


def _nanoseconds(seconds: float) -> int:
    """``round(seconds * 1e9)`` (half to even), by a floor: in the compiled build a primitive,
    where ``round`` is a lookup in builtins and a call through Python per response."""
    ns = seconds * 1e9
    whole = math.floor(ns)
    rest = ns - whole  # exact: a float minus its floor
    if rest > 0.5 or (rest == 0.5 and whole & 1):
        whole += 1
    return whole


class _Malformed(Exception):
    """Internal: a PDU body that does not match its function's layout."""


def _need(pdu: bytes, n: int, what: str) -> None:
    # the decoders test the length first and call this only to fail: no call per good PDU
    if len(pdu) < n:
        raise _Malformed(f"{what}: {len(pdu)} bytes, need {n}")


def decode_request(fc: int, pdu: bytes, f: dict, limits: ParserLimits) -> None:
    """Fill ``f`` with the fields of a request PDU (``pdu`` starts after the function code)."""
    if fc in (1, 2, 3, 4):
        if len(pdu) < 4:
            _need(pdu, 4, "read request")
        # big-endian, byte by byte: machine operations in the compiled build, no call
        f["modbus.address"] = pdu[0] << 8 | pdu[1]
        f["modbus.quantity"] = pdu[2] << 8 | pdu[3]
        if len(pdu) != 4:
            raise _Malformed(f"read request body is {len(pdu)} bytes, expected 4")
    elif fc == 5:
        if len(pdu) < 4:
            _need(pdu, 4, "write single coil")
        addr, value = _HH.unpack_from(pdu, 0)
        f["modbus.address"] = addr
        f["modbus.quantity"] = 1
        f["modbus.values"] = [1 if value == 0xFF00 else 0]
        if value not in (0, 0xFF00):
            raise _Malformed(f"write single coil value 0x{value:04x} is neither 0x0000 nor 0xff00")
    elif fc == 6:
        if len(pdu) < 4:
            _need(pdu, 4, "write single register")
        addr, value = _HH.unpack_from(pdu, 0)
        f["modbus.address"] = addr
        f["modbus.quantity"] = 1
        f["modbus.values"] = [value]
    elif fc in (15, 16):
        if len(pdu) < 5:
            _need(pdu, 5, "write multiple")
        addr, qty = _HH.unpack_from(pdu, 0)
        count = pdu[4]
        f["modbus.address"] = addr
        f["modbus.quantity"] = qty
        body = pdu[5 : 5 + count]
        if fc == 15:
            vals = _bits(body, min(qty, limits.max_items))
        else:
            vals = _registers(body, min(qty, limits.max_items))
        f["modbus.values"] = vals
        if qty > limits.max_items:
            f["modbus.truncated"] = True
        expected = (qty + 7) // 8 if fc == 15 else qty * 2
        if count != expected or len(pdu) - 5 != count:
            raise _Malformed(f"byte count {count} does not match quantity {qty}")
    elif fc == 8:
        if len(pdu) < 2:
            _need(pdu, 2, "diagnostics")
        sub = _H.unpack_from(pdu, 0)[0]
        f["modbus.subfunction"] = sub
        f["modbus.subfunction_name"] = DIAGNOSTICS.get(sub, f"unknown_{sub}")
        data = pdu[2:]
        if len(data) == 2:
            f["modbus.diagnostic_data"] = _H.unpack_from(data, 0)[0]
        elif data:
            f["modbus.data"] = data.hex()
    elif fc == 22:
        if len(pdu) < 6:
            _need(pdu, 6, "mask write register")
        addr, and_mask, or_mask = _HHH.unpack_from(pdu, 0)
        f["modbus.address"] = addr
        f["modbus.quantity"] = 1
        f["modbus.and_mask"] = and_mask
        f["modbus.or_mask"] = or_mask
    elif fc == 23:
        if len(pdu) < 9:
            _need(pdu, 9, "read/write multiple registers")
        ra, rq, wa, wq = _HHHH.unpack_from(pdu, 0)
        count = pdu[8]
        f["modbus.read_address"] = ra
        f["modbus.read_quantity"] = rq
        f["modbus.write_address"] = wa
        f["modbus.write_quantity"] = wq
        f["modbus.address"] = wa
        f["modbus.quantity"] = wq
        f["modbus.values"] = _registers(pdu[9 : 9 + count], min(wq, limits.max_items))
        if count != wq * 2 or len(pdu) - 9 != count:
            raise _Malformed(f"byte count {count} does not match write quantity {wq}")
    elif fc == 24:
        if len(pdu) < 2:
            _need(pdu, 2, "read fifo queue")
        f["modbus.fifo_address"] = _H.unpack_from(pdu, 0)[0]
        f["modbus.address"] = f["modbus.fifo_address"]
    elif fc in (20, 21):
        if len(pdu) < 1:
            _need(pdu, 1, "file record")
        count = pdu[0]
        records: list = []
        pos = 1
        end = min(1 + count, len(pdu))
        while pos + 7 <= end and len(records) < limits.max_items:
            ref = pdu[pos]
            file_no, rec_no, length = _HHH.unpack_from(pdu, pos + 1)
            records.append(
                {"reference_type": ref, "file": file_no, "record": rec_no, "length": length}
            )
            pos += 7
            if fc == 21:
                records[-1]["values"] = _registers(pdu[pos : pos + length * 2], limits.max_items)
                pos += length * 2
        f["modbus.file_records"] = records
        if count != len(pdu) - 1:
            raise _Malformed(f"byte count {count} does not match body length {len(pdu) - 1}")
    elif fc == 43:
        if len(pdu) < 1:
            _need(pdu, 1, "encapsulated interface transport")
        mei = pdu[0]
        f["modbus.mei_type"] = mei
        if mei == 14:
            if len(pdu) < 3:
                _need(pdu, 3, "read device identification")
            f["modbus.read_device_id_code"] = pdu[1]
            f["modbus.object_id"] = pdu[2]
        elif len(pdu) > 1:
            f["modbus.data"] = pdu[1:].hex()
    elif fc in (7, 11, 12, 17):
        if pdu:
            raise _Malformed(f"{function_name(fc)} request carries {len(pdu)} unexpected bytes")
    elif pdu:
        f["modbus.data"] = pdu[:256].hex()


def decode_response(fc: int, pdu: bytes, f: dict, limits: ParserLimits) -> None:
    """Fill ``f`` with the fields of a normal (non-exception) response PDU."""
    if fc in (1, 2, 3, 4):
        if len(pdu) < 1:
            _need(pdu, 1, "read response")
        count = pdu[0]
        body = pdu[1 : 1 + count]
        if fc in (1, 2):
            qty = f.get("modbus.quantity", count * 8)
            f["modbus.values"] = _bits(body, min(qty, limits.max_items))
        else:
            f["modbus.values"] = _registers(body, limits.max_items)
            f.setdefault("modbus.quantity", len(body) // 2)
        if count != len(pdu) - 1:
            raise _Malformed(f"byte count {count} does not match body length {len(pdu) - 1}")
        if fc in (3, 4) and count % 2:
            raise _Malformed(f"odd byte count {count} for registers")
    elif fc in (5, 6):
        if len(pdu) < 4:
            _need(pdu, 4, "write single echo")
        addr, value = _HH.unpack_from(pdu, 0)
        f.setdefault("modbus.address", addr)
        if "modbus.values" not in f:
            f["modbus.values"] = [1 if value == 0xFF00 else 0] if fc == 5 else [value]
    elif fc in (15, 16):
        if len(pdu) < 4:
            _need(pdu, 4, "write multiple response")
        addr, qty = _HH.unpack_from(pdu, 0)
        f.setdefault("modbus.address", addr)
        f.setdefault("modbus.quantity", qty)
    elif fc == 7:
        if len(pdu) < 1:
            _need(pdu, 1, "read exception status")
        f["modbus.exception_status"] = pdu[0]
    elif fc == 8:
        if len(pdu) < 2:
            _need(pdu, 2, "diagnostics response")
        sub = _H.unpack_from(pdu, 0)[0]
        f.setdefault("modbus.subfunction", sub)
        f.setdefault("modbus.subfunction_name", DIAGNOSTICS.get(sub, f"unknown_{sub}"))
        if len(pdu) == 4:
            f["modbus.diagnostic_data"] = _H.unpack_from(pdu, 2)[0]
    elif fc == 11:
        if len(pdu) < 4:
            _need(pdu, 4, "comm event counter")
        f["modbus.status"], f["modbus.event_count"] = _HH.unpack_from(pdu, 0)
    elif fc == 12:
        if len(pdu) < 7:
            _need(pdu, 7, "comm event log")
        f["modbus.status"], f["modbus.event_count"], f["modbus.message_count"] = _HHH.unpack_from(
            pdu, 1
        )
    elif fc == 17:
        if len(pdu) < 1:
            _need(pdu, 1, "report server id")
        count = pdu[0]
        data = pdu[1 : 1 + count]
        f["modbus.server_id"] = data.hex()
        # the layout of the server id is device specific: keep the longest readable text
        text = max(_PRINTABLE.findall(data), key=len, default=b"")
        if text:
            f["ics.device.description"] = text.decode("ascii")[:128]
    elif fc == 22:
        if len(pdu) < 6:
            _need(pdu, 6, "mask write echo")
    elif fc == 23:
        if len(pdu) < 1:
            _need(pdu, 1, "read/write response")
        count = pdu[0]
        f["modbus.read_values"] = _registers(pdu[1 : 1 + count], limits.max_items)
    elif fc == 24:
        if len(pdu) < 4:
            _need(pdu, 4, "read fifo response")
        _count, fifo = _HH.unpack_from(pdu, 0)
        f["modbus.values"] = _registers(pdu[4 : 4 + fifo * 2], limits.max_items)
    elif fc == 20:
        if len(pdu) < 1:
            _need(pdu, 1, "read file record response")
    elif fc == 43:
        if len(pdu) < 1:
            _need(pdu, 1, "encapsulated interface transport response")
        mei = pdu[0]
        f.setdefault("modbus.mei_type", mei)
        if mei == 14:
            _device_identification(pdu, f, limits)
    elif fc not in (21,) and pdu:
        f["modbus.response_data"] = pdu[:256].hex()


def _device_identification(pdu: bytes, f: dict, limits: ParserLimits) -> None:
    if len(pdu) < 6:
        _need(pdu, 6, "read device identification response")
    f["modbus.read_device_id_code"] = pdu[1]
    f["modbus.conformity_level"] = pdu[2]
    f["modbus.more_follows"] = pdu[3]
    count = pdu[5]
    objects: dict[str, str] = {}
    pos = 6
    for _ in range(min(count, limits.max_items)):
        if pos + 2 > len(pdu):
            raise _Malformed("device identification object list is cut short")
        oid, length = pdu[pos], pdu[pos + 1]
        raw = pdu[pos + 2 : pos + 2 + length]
        if len(raw) < length:
            raise _Malformed("device identification object value is cut short")
        objects[DEVICE_OBJECTS.get(oid, f"object_{oid}")] = raw.decode("utf-8", "replace")
        pos += 2 + length
    f["modbus.objects"] = objects
    for key, field in (
        ("vendor_name", "ics.device.vendor"),
        ("product_code", "ics.device.product_code"),
        ("major_minor_revision", "ics.device.firmware"),
        ("model_name", "ics.device.model"),
    ):
        if objects.get(key):
            f[field] = objects[key]
    product = objects.get("product_name") or objects.get("product_code")
    if product:
        f["ics.device.product"] = product


class Parser:
    """One Modbus/TCP connection (its fields: fields.py)."""

    __slots__ = (
        "limits",
        "_buf",
        "_pending",
        "_resync",
        "_not_modbus_reported",
        "_oversized_reported",
    )

    def __init__(self, limits: ParserLimits | None = None) -> None:
        self.limits = limits or ParserLimits()
        self._buf = [b"", b""]  # index 1: to server, 0: to client
        # (transaction id << 8 | unit id) -> the request's time and record: an int key, no
        # tuple made and hashed per PDU (the unit id is one byte, the transaction id two)
        self._pending: dict[int, tuple[float, dict]] = {}
        self._resync = [False, False]
        self._not_modbus_reported = [False, False]
        self._oversized_reported = False

    # -- stream handling --------------------------------------------------------------

    def feed(self, to_server: bool, data: bytes, ts: float) -> list[Record]:
        d = 1 if to_server else 0
        out: list[Record] = []
        tid: int  # typed: machine integers in the compiled build (setup.py)
        pid: int
        length: int
        unit: int
        if not self._buf[d] and len(data) >= 8:
            # the common case: the segment is exactly one complete frame (its MBAP header
            # read byte by byte: machine operations in the compiled build)
            tid = data[0] << 8 | data[1]
            pid = data[2] << 8 | data[3]
            length = data[4] << 8 | data[5]
            unit = data[6]
            if pid == 0 and len(data) == length + 6 and 2 <= length <= 254:
                self._pdu(d, ts, tid, unit, data[7], data[8:], out)
                self._resync[d] = False
                return out
        buf = self._buf[d] + data if self._buf[d] else data
        pos = 0
        n = len(buf)
        unpack = _MBAP.unpack_from
        while n - pos >= 8:
            tid, pid, length, unit = unpack(buf, pos)
            if pid != 0 or length < 2 or length > MAX_LENGTH:
                pos = self._resynchronise(buf, pos, d, ts, out, pid, length)
                continue
            if length > 254 and not self._oversized_reported:
                self._oversized_reported = True
                out.append(
                    anomaly(
                        ts,
                        NAME,
                        Anomaly.MBAP_OVERSIZED,
                        f"MBAP length {length} exceeds the 254 the specification allows",
                        **{"modbus.transaction_id": tid, "modbus.unit_id": unit},
                    )
                )
            end = pos + 6 + length
            if end > n:
                break
            self._pdu(d, ts, tid, unit, buf[pos + 7], buf[pos + 8 : end], out)
            self._resync[d] = False
            pos = end
        rest = buf[pos:] if pos < n else b""
        if len(rest) > self.limits.max_buffer:
            out.append(
                anomaly(
                    ts,
                    NAME,
                    Anomaly.BUFFER_OVERFLOW,
                    f"{len(rest)} bytes without a complete MBAP frame; dropped",
                )
            )
            rest = b""
        self._buf[d] = rest
        return out

    def _resynchronise(
        self, buf: bytes, pos: int, d: int, ts: float, out: list[Record], pid: int, length: int
    ) -> int:
        """Skip to the next plausible MBAP header; report the skipped bytes once per episode."""
        start = pos
        n = len(buf)
        pos += 1
        while n - pos >= 8:
            if _plausible(buf, pos):
                # a candidate must end where the data ends, or where another header starts
                end = pos + 6 + _MBAP.unpack_from(buf, pos)[2]
                if end >= n or (n - end >= 8 and _plausible(buf, end)):
                    break
            pos += 1
        else:
            pos = max(pos, n - 7)
        if not self._resync[d]:
            self._resync[d] = True
            kind = (
                Anomaly.NOT_MODBUS if not self._not_modbus_reported[d] else Anomaly.MBAP_BAD_HEADER
            )
            self._not_modbus_reported[d] = True
            out.append(
                anomaly(
                    ts,
                    NAME,
                    kind,
                    f"bytes that are not a valid MBAP header (protocol id {pid}, length {length}); skipped {pos - start} bytes",
                    **{
                        "modbus.skipped_bytes": pos - start,
                        "modbus.direction": "request" if d else "response",
                    },
                )
            )
        return pos

    def gap(self, to_server: bool, ts: float, size: int) -> list[Record]:
        d = 1 if to_server else 0
        self._buf[d] = b""  # a partial PDU cannot be completed across lost bytes
        self._resync[d] = False
        return []

    def close(self, ts: float) -> list[Record]:
        out: list[Record] = []
        for req_ts, f in self._pending.values():
            out.append(self._unanswered(req_ts, f))
        self._pending.clear()
        for d in (0, 1):
            if self._buf[d]:
                out.append(
                    anomaly(
                        ts,
                        NAME,
                        Anomaly.TRUNCATED_PDU,
                        f"connection ended inside an MBAP frame ({len(self._buf[d])} bytes left)",
                    )
                )
                self._buf[d] = b""
        return out

    # -- PDUs -------------------------------------------------------------------------

    def _pdu(
        self, d: int, ts: float, tid: int, unit: int, fc_byte: int, pdu: bytes, out: list[Record]
    ) -> None:
        limits = self.limits
        fc = fc_byte & 0x7F
        name = _NAMES[fc] or function_name(fc)
        if d:  # request
            # the template's copy, its table the size the whole record needs (_REQUEST)
            f: dict = _REQUEST.copy()
            f["ts"] = ts
            f["modbus.transaction_id"] = tid
            f["modbus.unit_id"] = unit
            f["modbus.function_code"] = fc
            f["modbus.function"] = name
            try:
                if fc_byte & 0x80:
                    raise _Malformed(
                        f"request with the exception bit set (function byte 0x{fc_byte:02x})"
                    )
                decode_request(fc, pdu, f, limits)
            except (_Malformed, struct.error) as exc:
                out.append(self._malformed(ts, tid, unit, fc, "request", exc))
            pending = self._pending
            key = tid << 8 | unit
            if pending:  # an empty table (the usual case) needs none of these checks
                old = pending.pop(key, None)
                if old is not None:
                    out.append(self._unanswered(*old))
                if pending and len(pending) >= limits.max_pending:
                    first = next(iter(pending))
                    out.append(self._unanswered(*pending.pop(first)))
                elif pending:
                    first = next(iter(pending))
                    if ts - pending[first][0] > REQUEST_TIMEOUT:
                        out.append(self._unanswered(*pending.pop(first)))
            pending[key] = (ts, f)
            return
        # response
        req = self._pending.pop(tid << 8 | unit, None) if self._pending else None
        if req is None:
            f = {
                "ts": ts,
                "network.protocol": NAME,
                "modbus.transaction_id": tid,
                "modbus.unit_id": unit,
                "modbus.function_code": fc,
                "modbus.function": name,
                "ics.pairing": "response-only",
            }
            req_fc = fc
        else:
            req_ts, f = req
            f["ics.pairing"] = "paired"
            duration = _nanoseconds(ts - req_ts)
            f["event.duration"] = duration if duration > 0 else 0
            req_fc = f["modbus.function_code"]
            if req_fc != fc:
                out.append(
                    anomaly(
                        ts,
                        NAME,
                        Anomaly.FUNCTION_MISMATCH,
                        f"response function {fc} does not match request function {req_fc}",
                        **{"modbus.transaction_id": tid, "modbus.unit_id": unit},
                    )
                )
        if fc_byte & 0x80:
            code = pdu[0] if pdu else -1
            f["modbus.exception_code"] = code
            f["modbus.exception"] = EXCEPTIONS.get(code, f"unknown_{code}")
            f["event.outcome"] = "failure"
            if len(pdu) != 1:
                out.append(
                    self._malformed(
                        ts,
                        tid,
                        unit,
                        fc,
                        "response",
                        _Malformed(f"exception response body is {len(pdu)} bytes, expected 1"),
                    )
                )
        else:
            f["event.outcome"] = "success"
            try:
                decode_response(fc, pdu, f, limits)
            except (_Malformed, struct.error) as exc:
                out.append(self._malformed(ts, tid, unit, fc, "response", exc))
        # the fields of the request's function code (see _finish), inlined: once per PDU pair
        common = _COMMON[req_fc]
        if common is None:
            common = _COMMON[req_fc] = _common_fields(req_fc)
        f.update(common)
        out.append(f)

    @staticmethod
    def _finish(f: dict) -> dict:
        fc = f["modbus.function_code"]
        common = _COMMON[fc]
        if common is None:
            common = _COMMON[fc] = _common_fields(fc)
        f.update(common)
        return f

    def _unanswered(self, req_ts: float, f: dict) -> dict:
        f["event.outcome"] = "unknown"
        f["ics.pairing"] = "request-only"
        return self._finish(f)

    @staticmethod
    def _malformed(ts: float, tid: int, unit: int, fc: int, side: str, exc: Exception) -> Record:
        return anomaly(
            ts,
            NAME,
            Anomaly.MALFORMED_PDU,
            f"malformed {function_name(fc)} {side}: {exc}",
            **{"modbus.transaction_id": tid, "modbus.unit_id": unit, "modbus.function_code": fc},
        )
