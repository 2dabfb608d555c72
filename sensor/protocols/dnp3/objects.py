"""DNP3 application objects (IEEE 1815 clause 4.2.2.7 and annex A): object headers (group,
variation, qualifier, range) and the object data that follows them.

Every header is decoded (what a fragment reads, writes or reports); the data of the objects
that matter for security is decoded value by value: control relay output blocks (group 12),
analog output blocks (41), time and date (50, 52), file control (70), internal indications
(80) and device attributes (0). Other data is skipped by its size; a group/variation whose
size is not known stops the decoding of the fragment there (``decode_error`` says where).
"""

from __future__ import annotations

import struct
import time

from sensor.protocols.dnp3.tables import (
    ATTRIBUTES,
    CONTROL_STATUS,
    CROB_OPERATIONS,
    CROB_TCC,
    FILE_MODES,
    FILE_STATUS,
    GROUPS,
)

# octets per object of each fixed-size group/variation (key: group << 8 | variation)
_SIZES: dict[tuple[int, int], tuple[int, ...]] = {
    # group: sizes of variations 1, 2, ...
    1: (0, 1),
    2: (1, 7, 3),
    3: (0, 1),
    4: (1, 7, 3),
    10: (0, 1),
    11: (1, 7),
    12: (11, 11, 0),
    13: (1, 7),
    20: (5, 3, 5, 3, 4, 2, 4, 2),
    21: (5, 3, 5, 3, 11, 9, 11, 9, 4, 2, 4, 2),
    22: (5, 3, 5, 3, 11, 9, 11, 9),
    23: (5, 3, 5, 3, 11, 9, 11, 9),
    30: (5, 3, 4, 2, 5, 9),
    31: (5, 3, 11, 9, 4, 2, 5, 9),
    32: (5, 3, 11, 9, 5, 9, 11, 15),
    33: (5, 3, 11, 9, 5, 9, 11, 15),
    34: (2, 4, 4),
    40: (5, 3, 5, 9),
    41: (5, 3, 5, 9),
    42: (5, 3, 11, 9, 5, 9, 11, 15),
    43: (5, 3, 11, 9, 5, 9, 11, 15),
    50: (6, 10, 6, 11),
    51: (6, 6),
    52: (2, 2),
    101: (2, 4, 8),
    102: (1,),
    121: (5,),
    122: (5, 11),
}  # type: ignore[assignment]
SIZES: dict[int, int] = {
    g << 8 | (v + 1): size for g, sizes in _SIZES.items() for v, size in enumerate(sizes)
}
# packed objects: bits per point
PACKED: dict[int, int] = {
    1 << 8 | 1: 1,
    3 << 8 | 1: 2,
    10 << 8 | 1: 1,
    12 << 8 | 3: 1,
    80 << 8 | 1: 1,
}
# groups whose variation is the octet length of each object
LENGTH_IS_VARIATION = frozenset((110, 111, 112, 113))

_RANGE_SIZES = {0: 1, 1: 2, 2: 4, 3: 1, 4: 2, 5: 4, 7: 1, 8: 2, 9: 4, 11: 1}
_PREFIX_SIZES = (0, 1, 2, 4, 1, 2, 4, 0)
_INT = {1: "<B", 2: "<H", 4: "<I"}
_CROB = struct.Struct("<BBIIB")
_AOB = {
    1: struct.Struct("<iB"),
    2: struct.Struct("<hB"),
    3: struct.Struct("<fB"),
    4: struct.Struct("<dB"),
}
_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")

MAX_STRING = 256  # characters kept of a file name or attribute text


class Malformed(Exception):
    """Object data shorter than its header says, or a header that cannot be read."""


def _uint(data: bytes, pos: int, size: int) -> int:
    if pos + size > len(data):
        raise Malformed(f"object header cut short at octet {pos}")
    return int.from_bytes(data[pos : pos + size], "little")


def time48(data: bytes, pos: int) -> str:
    """DNP3 absolute time (milliseconds since 1970-01-01 UTC, 48 bits) as ISO 8601."""
    ms = int.from_bytes(data[pos : pos + 6], "little")
    sec, rest = divmod(ms, 1000)
    if sec > 253402300799:  # past year 9999: keep the number
        return str(ms)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec)) + f".{rest:03d}Z"


def type_name(group: int, variation: int) -> str:
    return f"g{group}v{variation}"


def _text(raw: bytes) -> str:
    return raw[:MAX_STRING].decode("utf-8", "replace").rstrip("\x00")


class Decoded:
    """What the objects of one fragment say, beside the per-header list."""

    __slots__ = ("objects", "points", "values", "operations", "fields", "error", "truncated")

    def __init__(self) -> None:
        self.objects: list[dict] = []
        self.points: list[int] = []  # indexes of outputs commanded or written
        self.values: list[float | int] = []  # analog output values, aligned with the AOB points
        self.operations: list[str] = []  # CROB operations
        self.fields: dict[str, object] = {}  # dnp3.time, dnp3.file.*, attributes, identity
        self.error = ""
        self.truncated = False


def decode_objects(
    data: bytes, pos: int, function: int, headers_only: bool, max_items: int, out: Decoded
) -> None:
    """The object headers (and data) of an application fragment from ``pos`` into ``out``;
    ``Malformed`` when a header or its data does not fit (``out`` keeps what came before)."""
    n = len(data)
    items = 0
    while pos < n:
        if pos + 3 > n:
            raise Malformed(f"object header cut short at octet {pos}")
        group, variation, qualifier = data[pos], data[pos + 1], data[pos + 2]
        pos += 3
        prefix_code = (qualifier >> 4) & 0x07
        range_code = qualifier & 0x0F
        obj: dict = {
            "group": group,
            "variation": variation,
            "type": type_name(group, variation),
            "qualifier": qualifier,
        }
        name = GROUPS.get(group)
        if name:
            obj["name"] = name
        out.objects.append(obj)
        if range_code in (0, 1, 2, 3, 4, 5):
            size = _RANGE_SIZES[range_code]
            start = _uint(data, pos, size)
            stop = _uint(data, pos + size, size)
            pos += 2 * size
            obj["start"] = start
            obj["stop"] = stop
            if stop < start:
                raise Malformed(f"{obj['type']}: range stop {stop} below start {start}")
            count = stop - start + 1
        elif range_code in (7, 8, 9, 11):
            size = _RANGE_SIZES[range_code]
            count = _uint(data, pos, size)
            pos += size
            start = 0
        elif range_code == 6:
            count = 0
            start = 0
            obj["all"] = True
        else:
            raise Malformed(f"{obj['type']}: reserved range code {range_code}")
        obj["count"] = count
        if range_code == 6 or (group == 60 and variation in (1, 2, 3, 4)):
            continue
        if headers_only and prefix_code < 4:
            continue  # requests such as READ name objects; sized ones (g70v5) still carry data
        if group == 0 and variation in (254, 255) and function == 1:
            continue
        # the data of ``count`` objects
        if variation == 0 and group != 0:
            raise Malformed(f"{obj['type']}: variation 0 (any) names objects, it carries no data")
        prefix = _PREFIX_SIZES[prefix_code]
        key = group << 8 | variation
        bits = PACKED.get(key)
        if bits is not None and prefix_code == 0:
            nbytes = (count * bits + 7) // 8
            if pos + nbytes > n:
                raise Malformed(f"{obj['type']}: {count} packed points need {nbytes} octets")
            if group == 80:
                _iin_write(data, pos, start, count, out)
            pos += nbytes
            continue
        size = SIZES.get(key)
        if size is None and group in LENGTH_IS_VARIATION:
            size = variation
        sized_prefix = prefix_code in (4, 5, 6)
        if size is None and not sized_prefix and group != 0:
            out.error = (
                f"{obj['type']}: object size unknown; the rest of the fragment is not decoded"
            )
            return
        points: list[dict] = []
        for k in range(count):
            index = start + k
            if prefix and not sized_prefix:
                index = _uint(data, pos, prefix)
                pos += prefix
            if sized_prefix:
                osize = _uint(data, pos, prefix)
                pos += prefix
            elif group == 0:
                if pos + 2 > n:
                    raise Malformed(f"{obj['type']}: attribute cut short")
                osize = 2 + data[pos + 1]
            else:
                osize = size  # type: ignore[assignment]
            end = pos + osize
            if end > n:
                raise Malformed(f"{obj['type']}: object {k} needs {osize} octets, {n - pos} left")
            if items < max_items:
                point = _value(group, variation, data, pos, end, index, out)
                if point is not None:
                    points.append(point)
                    items += 1
            else:
                out.truncated = True
            pos = end
        if points:
            obj["points"] = points


def _iin_write(data: bytes, pos: int, start: int, count: int, out: Decoded) -> None:
    cleared = []
    for k in range(min(count, 16)):
        i = start + k
        if not data[pos + k // 8] >> (k % 8) & 1:
            cleared.append(i)
    out.fields["dnp3.iin_written"] = [start + k for k in range(min(count, 16))]
    if 7 in cleared:
        out.fields["dnp3.restart_cleared"] = True


def _value(
    group: int, variation: int, data: bytes, pos: int, end: int, index: int, out: Decoded
) -> dict | None:
    """One object's value for the groups decoded at value level; None for the others."""
    if group == 12 and variation in (1, 2):
        code, count, on, off, status = _CROB.unpack_from(data, pos)
        op = CROB_OPERATIONS.get(code & 0x0F, f"unknown_{code & 0x0F}")
        tcc = CROB_TCC[code >> 6]
        out.points.append(index)
        out.operations.append(op if tcc == "nul" else tcc)
        point = {
            "index": index,
            "code": code,
            "operation": op,
            "tcc": tcc,
            "count": count,
            "on_time": on,
            "off_time": off,
            "status": status & 0x7F,
            "status_name": CONTROL_STATUS.get(status & 0x7F, f"unknown_{status & 0x7F}"),
        }
        if code & 0x20:
            point["clear"] = True
        if code & 0x10:
            point["queue"] = True
        return point
    if group == 41 and variation in _AOB:
        value, status = _AOB[variation].unpack_from(data, pos)
        if isinstance(value, float) and value != value:  # NaN has no JSON form
            value = str(value)
        out.points.append(index)
        out.values.append(value)
        return {
            "index": index,
            "value": value,
            "status": status & 0x7F,
            "status_name": CONTROL_STATUS.get(status & 0x7F, f"unknown_{status & 0x7F}"),
        }
    if group == 50 and variation in (1, 3, 4):
        out.fields["dnp3.time"] = time48(data, pos)
        return None
    if group == 50 and variation == 2:
        out.fields["dnp3.time"] = time48(data, pos)
        out.fields["dnp3.time_interval_ms"] = _U32.unpack_from(data, pos + 6)[0]
        return None
    if group == 52:
        delay = _U16.unpack_from(data, pos)[0]
        out.fields["dnp3.time_delay_ms"] = delay * 1000 if variation == 1 else delay
        return None
    if group == 0:
        return _attribute(variation, data, pos, end, out)
    if group == 70:
        _file(variation, data, pos, end, out)
        return None
    return None


def _attribute(variation: int, data: bytes, pos: int, end: int, out: Decoded) -> dict | None:
    dtype, length = data[pos], data[pos + 1]
    raw = data[pos + 2 : end]
    value: object
    if dtype in (1, 5) or dtype > 6:  # visible string, octet string; lists as text
        value = _text(raw) if dtype == 1 else raw[:MAX_STRING].hex()
    elif dtype == 2 and length <= 8:
        value = int.from_bytes(raw, "little")
    elif dtype == 3 and length <= 8:
        value = int.from_bytes(raw, "little", signed=True)
    elif dtype == 4 and length in (4, 8):
        value = struct.unpack("<f" if length == 4 else "<d", raw)[0]
    else:
        value = raw[:MAX_STRING].hex()
    value = value if isinstance(value, str) else str(value)  # the attributes are a text map
    name = ATTRIBUTES.get(variation, f"attribute_{variation}")
    attrs = out.fields.setdefault("dnp3.attributes", {})
    if isinstance(attrs, dict):
        attrs[name] = value
    return None


def _file(variation: int, data: bytes, pos: int, end: int, out: Decoded) -> None:
    f = out.fields
    size = end - pos
    if variation == 3 and size >= 26:  # file command
        name_off, name_size = _U16.unpack_from(data, pos)[0], _U16.unpack_from(data, pos + 2)[0]
        f["dnp3.file.created"] = time48(data, pos + 4)
        f["dnp3.file.permissions"] = _U16.unpack_from(data, pos + 10)[0]
        f["dnp3.file.size"] = _U32.unpack_from(data, pos + 16)[0]
        mode = _U16.unpack_from(data, pos + 20)[0]
        f["dnp3.file.mode"] = FILE_MODES.get(mode, f"unknown_{mode}")
        f["dnp3.file.max_block_size"] = _U16.unpack_from(data, pos + 22)[0]
        f["dnp3.file.request_id"] = _U16.unpack_from(data, pos + 24)[0]
        start = pos + name_off if name_off >= 26 else pos + 26
        f["dnp3.file.name"] = _text(data[start : min(start + name_size, end)])
    elif variation == 4 and size >= 13:  # file command status
        f["dnp3.file.handle"] = _U32.unpack_from(data, pos)[0]
        f["dnp3.file.size"] = _U32.unpack_from(data, pos + 4)[0]
        f["dnp3.file.max_block_size"] = _U16.unpack_from(data, pos + 8)[0]
        f["dnp3.file.request_id"] = _U16.unpack_from(data, pos + 10)[0]
        status = data[pos + 12]
        f["dnp3.file.status"] = FILE_STATUS.get(status, f"unknown_{status}")
    elif variation == 5 and size >= 8:  # file transport
        f["dnp3.file.handle"] = _U32.unpack_from(data, pos)[0]
        block = _U32.unpack_from(data, pos + 4)[0]
        f["dnp3.file.block"] = block & 0x7FFFFFFF
        f["dnp3.file.last_block"] = bool(block & 0x80000000)
        f["dnp3.file.data_length"] = int(f.get("dnp3.file.data_length", 0)) + size - 8  # type: ignore[call-overload]
    elif variation == 6 and size >= 9:  # file transport status
        f["dnp3.file.handle"] = _U32.unpack_from(data, pos)[0]
        block = _U32.unpack_from(data, pos + 4)[0]
        f["dnp3.file.block"] = block & 0x7FFFFFFF
        f["dnp3.file.last_block"] = bool(block & 0x80000000)
        status = data[pos + 8]
        f["dnp3.file.status"] = FILE_STATUS.get(status, f"unknown_{status}")
    elif variation == 7 and size >= 20:  # file descriptor (a directory entry, GET_FILE_INFO)
        name_off, name_size = _U16.unpack_from(data, pos)[0], _U16.unpack_from(data, pos + 2)[0]
        start = pos + name_off if name_off >= 20 else pos + 20
        names = f.setdefault("dnp3.file.names", [])
        if isinstance(names, list) and len(names) < 64:
            names.append(_text(data[start : min(start + name_size, end)]))
        f["dnp3.file.size"] = _U32.unpack_from(data, pos + 6)[0]
    elif variation == 8:  # file specification string
        f["dnp3.file.name"] = _text(data[pos:end])
    elif variation == 2 and size >= 12:  # authentication: the user name, never the password
        name_off, name_size = _U16.unpack_from(data, pos)[0], _U16.unpack_from(data, pos + 2)[0]
        start = pos + name_off if name_off >= 12 else pos + 12
        f["dnp3.file.user_name"] = _text(data[start : min(start + name_size, end)])
