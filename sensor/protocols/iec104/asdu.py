"""IEC 60870-5-101/104 ASDUs: the data unit identifier (type, variable structure qualifier,
cause of transmission with its P/N and test bits, originator and common address) and every
information object (3-octet address, element, time tag) of every standard type."""

from __future__ import annotations

import struct

from sensor.protocols.iec104.tables import (
    COMMANDS,
    INITIALIZATION,
    QUALITY,
    RESET_PROCESS,
    SET_POINTS,
    TYPES,
)

_I16 = struct.Struct("<h")
_U16 = struct.Struct("<H")
_I32 = struct.Struct("<i")
_U32 = struct.Struct("<I")
_F32 = struct.Struct("<f")


class Malformed(Exception):
    """An ASDU shorter or longer than its type, count and sequence bit make it."""


def cp56(data: bytes, pos: int) -> str | None:
    """CP56Time2a (7 octets) as ISO 8601 UTC (the standard does not carry a zone: stations
    commonly run on UTC or local time; the time is reported as sent). None when a field is
    out of range."""
    ms = data[pos] | data[pos + 1] << 8
    minute = data[pos + 2] & 0x3F
    hour = data[pos + 3] & 0x1F
    day = data[pos + 4] & 0x1F
    month = data[pos + 5] & 0x0F
    year = 2000 + (data[pos + 6] & 0x7F)
    if ms > 59999 or minute > 59 or hour > 23 or not 1 <= day <= 31 or not 1 <= month <= 12:
        return None
    return (
        f"{year:04d}-{month:02d}-{day:02d}T{hour:02d}:{minute:02d}:"
        f"{ms // 1000:02d}.{ms % 1000:03d}Z"
    )


def _quality(q: int) -> list[str]:
    return [name for bit, name in QUALITY if q & bit]


def _float(value: float) -> float | str:
    return value if value == value and value not in (float("inf"), float("-inf")) else str(value)


class Asdu:
    """What one ASDU says (the record fields are made from it in ``parser``)."""

    __slots__ = (
        "type_id",
        "sq",
        "count",
        "cause",
        "negative",
        "test",
        "originator",
        "common_address",
        "ioas",
        "objects",
        "values",
        "fields",
        "error",
        "truncated",
    )

    def __init__(self) -> None:
        self.type_id = 0
        self.sq = False
        self.count = 0
        self.cause = 0
        self.negative = False
        self.test = False
        self.originator = 0
        self.common_address = 0
        self.ioas: list[int] = []
        self.objects: list[dict] = []
        self.values: list[float | int | str] = []
        self.fields: dict[str, object] = {}
        self.error = ""
        self.truncated = False


def decode_asdu(data: bytes, max_items: int) -> Asdu:
    """The ASDU of an I-format APDU (``data`` starts at the type id). Raises ``Malformed``
    only for a data unit identifier that does not fit; a body that does not match its type
    sets ``Asdu.error`` with what came before it decoded."""
    a = Asdu()
    if len(data) < 6:
        raise Malformed(f"an ASDU of {len(data)} octets (the data unit identifier needs 6)")
    a.type_id = t = data[0]
    a.sq = bool(data[1] & 0x80)
    a.count = n = data[1] & 0x7F
    a.cause = data[2] & 0x3F
    a.negative = bool(data[2] & 0x40)
    a.test = bool(data[2] & 0x80)
    a.originator = data[3]
    a.common_address = data[4] | data[5] << 8
    spec = TYPES.get(t)
    if spec is None:
        a.error = f"type identification {t} is not a standard type; objects not decoded"
        return a
    size = spec[2]
    pos = 6
    end = len(data)
    if size < 0:  # F_SG_NA_1: a segment whose length octet follows the file and section
        if end < pos + 3 + 3:
            raise Malformed("a file segment cut short")
        a.ioas.append(data[pos] | data[pos + 1] << 8 | data[pos + 2] << 16)
        a.fields["iec104.file.name"] = _U16.unpack_from(data, pos + 3)[0]
        return a
    need = (3 + n * size) if a.sq else n * (3 + size)
    if n and end - pos != need:
        a.error = f"{spec[0]} with {n} object(s) needs {need} octets, {end - pos} follow"
        if end - pos < need:
            n = (end - pos - 3) // size if a.sq else (end - pos) // (3 + size)
            n = max(n, 0)
    ioa = 0
    for k in range(n):
        if not a.sq or k == 0:
            ioa = data[pos] | data[pos + 1] << 8 | data[pos + 2] << 16
            pos += 3
        else:
            ioa += 1
        if k < max_items:
            a.ioas.append(ioa)
            a.objects.append(_element(t, data, pos, size, ioa, a))
        else:
            a.truncated = True
        pos += size
    return a


def _element(t: int, data: bytes, pos: int, size: int, ioa: int, a: Asdu) -> dict:
    """One information element (and its time tag) as a dict; numbers go to ``a.values``."""
    obj: dict = {"ioa": ioa}
    value: float | int | str | None = None
    q = -1  # quality descriptor octet, when the type has one
    if t in (1, 2, 30):
        value, q = data[pos] & 0x01, data[pos] & 0xF0
    elif t in (3, 4, 31):
        value, q = data[pos] & 0x03, data[pos] & 0xF0
    elif t in (5, 6, 32):
        v = data[pos] & 0x7F
        value = v - 128 if v & 0x40 else v
        if data[pos] & 0x80:
            obj["transient"] = True
        q = data[pos + 1]
    elif t in (7, 8, 33):
        value, q = _U32.unpack_from(data, pos)[0], data[pos + 4]
    elif t in (9, 10, 34):
        value, q = round(_I16.unpack_from(data, pos)[0] / 32768, 6), data[pos + 2]
    elif t == 21:
        value = round(_I16.unpack_from(data, pos)[0] / 32768, 6)
    elif t in (11, 12, 35):
        value, q = _I16.unpack_from(data, pos)[0], data[pos + 2]
    elif t in (13, 14, 36):
        value, q = _float(_F32.unpack_from(data, pos)[0]), data[pos + 4]
    elif t in (15, 16, 37):
        value = _I32.unpack_from(data, pos)[0]
        seq = data[pos + 4]
        obj["sequence"] = seq & 0x1F
        flags = [
            name
            for bit, name in ((0x20, "carry"), (0x40, "adjusted"), (0x80, "invalid"))
            if seq & bit
        ]
        if flags:
            obj["quality"] = flags
    elif t in (45, 58):
        value = data[pos] & 0x01
        _command_qualifier(data[pos], obj, a)
    elif t in (46, 59, 47, 60):
        value = data[pos] & 0x03
        _command_qualifier(data[pos], obj, a)
    elif t in (48, 61, 110):
        value = round(_I16.unpack_from(data, pos)[0] / 32768, 6)
        _setpoint_qualifier(data[pos + 2], obj, a, t)
    elif t in (49, 62, 111):
        value = _I16.unpack_from(data, pos)[0]
        _setpoint_qualifier(data[pos + 2], obj, a, t)
    elif t in (50, 63, 112):
        value = _float(_F32.unpack_from(data, pos)[0])
        _setpoint_qualifier(data[pos + 4], obj, a, t)
    elif t in (51, 64):
        value = _U32.unpack_from(data, pos)[0]
    elif t == 70:
        coi = data[pos]
        value = coi & 0x7F
        a.fields["iec104.initialization"] = INITIALIZATION.get(coi & 0x7F, f"cause_{coi & 0x7F}")
        if coi & 0x80:
            a.fields["iec104.parameters_changed"] = True
    elif t in (100, 101, 105, 113):
        value = data[pos]
        a.fields["iec104.qualifier"] = data[pos]
        if t == 105:
            a.fields["iec104.reset"] = RESET_PROCESS.get(data[pos], f"qualifier_{data[pos]}")
    elif t == 103:
        a.fields["iec104.time"] = cp56(data, pos) or "invalid"
    elif t in (104, 106) or t == 107:
        value = _U16.unpack_from(data, pos)[0]
    elif t in (120, 121, 122, 123, 124, 126):
        a.fields["iec104.file.name"] = _U16.unpack_from(data, pos)[0]
        if t in (121, 122, 123, 124):
            a.fields["iec104.file.section"] = data[pos + 2]
        if t in (120, 126):
            a.fields["iec104.file.length"] = (
                data[pos + 2] | data[pos + 3] << 8 | data[pos + 4] << 16
            )
    if value is not None:
        obj["value"] = value
        if len(a.values) < 4096:
            a.values.append(value)
    if q > 0:
        obj["quality"] = _quality(q)
    # the time tag closes the element: CP24 (3 octets) or CP56 (7)
    if t in (2, 4, 6, 8, 10, 12, 14, 16) or t in (17, 18, 19):
        obj["time_ms"] = data[pos + size - 3] | data[pos + size - 2] << 8
    elif 30 <= t <= 40 or t in (58, 59, 60, 61, 62, 63, 64, 107, 126):
        stamp = cp56(data, pos + size - 7)
        obj["time"] = stamp or "invalid"
        if t in COMMANDS:
            a.fields["iec104.time"] = stamp or "invalid"
    return obj


def _command_qualifier(octet: int, obj: dict, a: Asdu) -> None:
    select = bool(octet & 0x80)
    obj["select"] = select
    qu = (octet >> 2) & 0x1F
    obj["qualifier"] = qu
    a.fields["iec104.select"] = select
    a.fields["iec104.qualifier"] = qu


def _setpoint_qualifier(octet: int, obj: dict, a: Asdu, t: int) -> None:
    if t in SET_POINTS:
        select = bool(octet & 0x80)
        obj["select"] = select
        a.fields["iec104.select"] = select
    obj["qualifier"] = octet & 0x7F
    a.fields["iec104.qualifier"] = octet & 0x7F
