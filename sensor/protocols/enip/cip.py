"""CIP messages (message router requests and responses) as explicit messaging carries them:
the header and path, the service data icsmon reads (tags and their values, attribute lists,
Forward Open / Forward Close, Reset types), and the messages other messages embed (each
request of a Multiple Service Packet, the request an Unconnected Send routes).

``decode_request`` / ``decode_response`` never raise: what does not parse is kept in
``Cip.error`` (one sentence) and the parser reports it as an anomaly."""

from __future__ import annotations

import struct
from collections.abc import Callable

from sensor.protocols.enip.epath import Path, PathError, decode
from sensor.protocols.enip.tables import (
    CLASS_CONNECTION_MANAGER,
    CLASS_FILE,
    CLASS_SYMBOL,
    CLASS_TEMPLATE,
    CM_SERVICES,
    COMMON_SERVICES,
    DATA_TYPES,
    FILE_SERVICES,
    LOGIX_SERVICES,
    SERVICE_FORWARD_CLOSE,
    SERVICE_FORWARD_OPEN,
    SERVICE_LARGE_FORWARD_OPEN,
    SERVICE_MSP,
    SERVICE_UNCONNECTED_SEND,
    STRUCT_TYPES,
)

MAX_DEPTH = 4  # Unconnected Send / Multiple Service Packet nesting followed
MAX_VALUES = 64  # tag values copied into a record
MAX_DATA = 64  # bytes of opaque service data copied (hex) into a record
_EMPTY_PATH = Path()

_FWD_OPEN = struct.Struct("<BBIIHHIB3xIHIHBB")  # Forward Open, up to the path size
_LARGE_FWD_OPEN = struct.Struct("<BBIIHHIB3xIIIIBB")
_FWD_OPEN_REPLY = struct.Struct("<IIHHIIIBx")
_FWD_CLOSE = struct.Struct("<BBHHIBx")
_FWD_CLOSE_REPLY = struct.Struct("<HHIBx")
_H = struct.Struct("<H")
_HH = struct.Struct("<HH")
_HI = struct.Struct("<HI")
_HHI = struct.Struct("<HHI")


class Cip:
    """One CIP message: a request (``response`` False) or a response."""

    __slots__ = ("service", "response", "path", "status", "ext_status", "data", "embedded",
                 "route", "error")  # fmt: skip

    def __init__(self, service: int, response: bool) -> None:
        self.service = service
        self.response = response
        self.path = _EMPTY_PATH
        self.status = 0
        self.ext_status: list[int] = []
        self.data = b""
        self.embedded: list[Cip] = []  # MSP requests/responses, or the routed request
        self.route = ""  # an Unconnected Send's route path (port/link hops)
        self.error = ""


def service_name(code: int, klass: int, symbolic: bool) -> str:
    """The service's name in the context of its target: class-specific codes (0x4b-0x63)
    mean different things to different classes."""
    if code < 0x4B:
        return COMMON_SERVICES.get(code) or f"service_0x{code:02x}"
    if klass == CLASS_CONNECTION_MANAGER:
        name = CM_SERVICES.get(code)
    elif klass == CLASS_FILE:
        name = FILE_SERVICES.get(code)
    elif symbolic or klass in (CLASS_SYMBOL, CLASS_TEMPLATE):
        name = LOGIX_SERVICES.get(code)
        if klass == CLASS_TEMPLATE and code == 0x4C:
            name = "read_template"
    elif klass == 0x67 and code == 0x4B:
        name = "execute_pccc"
    else:
        name = None
    return name or f"service_0x{code:02x}"


def decode_request(msg: bytes, depth: int = 0) -> Cip:
    if len(msg) < 2:
        cip = Cip(msg[0] & 0x7F if msg else 0, False)
        cip.error = f"CIP request of {len(msg)} bytes: no path size"
        return cip
    cip = Cip(msg[0] & 0x7F, False)
    end = 2 + msg[1] * 2
    if end > len(msg):
        cip.error = f"request path of {msg[1]} words runs past the {len(msg)}-byte message"
        return cip
    try:
        cip.path = decode(msg[2:end])
    except PathError as exc:
        cip.error = f"request path: {exc}"
    cip.data = msg[end:]
    if depth < MAX_DEPTH:
        if cip.service == SERVICE_MSP:
            _embedded(cip, depth, decode_request)
        elif cip.service == SERVICE_UNCONNECTED_SEND and cip.path.klass == CLASS_CONNECTION_MANAGER:
            _unconnected_send(cip, depth)
    return cip


def decode_response(msg: bytes, depth: int = 0) -> Cip:
    if len(msg) < 4:
        cip = Cip(msg[0] & 0x7F if msg else 0, True)
        cip.error = f"CIP response of {len(msg)} bytes: shorter than its header"
        return cip
    cip = Cip(msg[0] & 0x7F, True)
    cip.status = msg[2]
    words = msg[3]
    end = 4 + words * 2
    if end > len(msg):
        cip.error = f"additional status of {words} words runs past the message"
        return cip
    if words:
        cip.ext_status = [msg[k] | msg[k + 1] << 8 for k in range(4, end, 2)]
    cip.data = msg[end:]
    if cip.service == SERVICE_MSP and depth < MAX_DEPTH and cip.data:
        _embedded(cip, depth, decode_response)
    return cip


def _embedded(cip: Cip, depth: int, decoder: Callable[[bytes, int], Cip]) -> None:
    """The messages of a Multiple Service Packet: a count, offsets from the count, bodies."""
    data = cip.data
    if len(data) < 2:
        cip.error = "multiple service packet without a service count"
        return
    count = data[0] | data[1] << 8
    if 2 + count * 2 > len(data):
        cip.error = f"multiple service packet of {count} services: offsets run past the data"
        return
    offsets = [data[k] | data[k + 1] << 8 for k in range(2, 2 + count * 2, 2)]
    for k, start in enumerate(offsets):
        stop = offsets[k + 1] if k + 1 < count else len(data)
        if not 2 + count * 2 <= start < stop <= len(data):
            cip.error = f"multiple service packet: offset {start} of service {k} is out of range"
            return
        inner = decoder(data[start:stop], depth + 1)
        cip.embedded.append(inner)
        if inner.error and not cip.error:
            cip.error = f"embedded service {k}: {inner.error}"


def _unconnected_send(cip: Cip, depth: int) -> None:
    """Unconnected Send: timing, the embedded request, its route path."""
    data = cip.data
    if len(data) < 4:
        cip.error = "unconnected send of fewer than 4 bytes"
        return
    size = data[2] | data[3] << 8
    end = 4 + size
    if end > len(data):
        cip.error = f"unconnected send: embedded request of {size} bytes runs past the data"
        return
    inner = decode_request(data[4:end], depth + 1)
    cip.embedded.append(inner)
    if inner.error:
        cip.error = f"routed request: {inner.error}"
    end += size & 1
    if end + 2 <= len(data):
        words = data[end]
        route = data[end + 2 : end + 2 + words * 2]
        try:
            inner.route = cip.route = decode(route).route
        except PathError as exc:
            cip.error = cip.error or f"unconnected send route: {exc}"


# -- service data ---------------------------------------------------------------------------


def values(type_code: int, data: bytes, count: int) -> list[int | float | None] | None:
    """Up to ``count`` (at most MAX_VALUES) values of an elementary type, or None."""
    spec = DATA_TYPES.get(type_code)
    if spec is None:
        return None
    _name, fmt, size = spec
    n = min(len(data) // size, count, MAX_VALUES)
    if n <= 0:
        return []
    raw = struct.unpack_from(f"<{n}{fmt[1]}", data, 0)
    if fmt[1] in "fd":  # JSON has no NaN or infinity: those become null
        return [round(v, 6) if v == v and abs(v) != float("inf") else None for v in raw]
    return list(raw)


def _type_name(code: int) -> str:
    spec = DATA_TYPES.get(code)
    if spec is not None:
        return spec[0]
    if code in STRUCT_TYPES:
        return "struct"
    return f"type_0x{code:04x}"


def _typed_data(data: bytes, f: dict, prefix: str) -> tuple[int, int]:
    """A data type code (and a structure handle after 0xa0/0xa2): (type code, bytes used)."""
    code = data[0] | data[1] << 8
    f[prefix + "data_type"] = _type_name(code)
    if code in STRUCT_TYPES and len(data) >= 4:
        f["cip.structure_handle"] = data[2] | data[3] << 8
        return code, 4
    return code, 2


def request_fields(cip: Cip, name: str, f: dict) -> None:
    """The fields of a request's service data (``f`` is the record being built)."""
    data = cip.data
    try:
        if name in ("read_tag", "read_tag_fragmented"):
            if len(data) >= 2:
                f["cip.elements"] = data[0] | data[1] << 8
            if len(data) >= 6 and name == "read_tag_fragmented":
                f["cip.offset"] = int.from_bytes(data[2:6], "little")
        elif name in ("write_tag", "write_tag_fragmented"):
            if len(data) < 4:
                raise ValueError(f"{name} of {len(data)} bytes")
            code, used = _typed_data(data, f, "cip.")
            count = data[used] | data[used + 1] << 8
            f["cip.elements"] = count
            body = data[used + 2 :]
            if name == "write_tag_fragmented" and len(body) >= 4:
                f["cip.offset"] = int.from_bytes(body[0:4], "little")
                body = body[4:]
            vals = values(code, body, count)
            if vals is not None:
                f["cip.values"] = vals
            elif body:
                f["cip.data"] = body[:MAX_DATA].hex()
        elif name == "read_modify_write_tag":
            if len(data) >= 2:
                size = data[0] | data[1] << 8
                f["cip.or_mask"] = data[2 : 2 + size].hex()
                f["cip.and_mask"] = data[2 + size : 2 + 2 * size].hex()
        elif name == "get_attribute_list" or name == "set_attribute_list":
            if len(data) >= 2:
                count = data[0] | data[1] << 8
                f["cip.attribute_count"] = count
                if name == "get_attribute_list":
                    n = min(count, (len(data) - 2) // 2, MAX_VALUES)
                    f["cip.attributes"] = list(struct.unpack_from(f"<{n}H", data, 2))
        elif name == "reset":
            if data:
                f["cip.reset_type"] = data[0]
        elif cip.path.klass == CLASS_CONNECTION_MANAGER and cip.service in (
            SERVICE_FORWARD_OPEN,
            SERVICE_LARGE_FORWARD_OPEN,
        ):
            _forward_open(data, cip.service == SERVICE_LARGE_FORWARD_OPEN, f)
        elif cip.path.klass == CLASS_CONNECTION_MANAGER and cip.service == SERVICE_FORWARD_CLOSE:
            if len(data) < _FWD_CLOSE.size:
                raise ValueError(f"forward close of {len(data)} bytes")
            _tick, _timeout, serial, vendor, orig_serial, words = _FWD_CLOSE.unpack_from(data)
            f["cip.connection.serial"] = serial
            f["cip.connection.originator_vendor_id"] = vendor
            f["cip.connection.originator_serial"] = orig_serial
            _connection_path(data[_FWD_CLOSE.size : _FWD_CLOSE.size + words * 2], f)
        elif name in ("set_attribute_single", "set_attributes_all", "set_member") and data:
            f["cip.data"] = data[:MAX_DATA].hex()
    except (ValueError, IndexError, struct.error) as exc:
        cip.error = cip.error or f"{name} request data: {exc}"


def _connection_params(value: int, large: bool) -> tuple[int, str]:
    """(connection size, type) from network connection parameters."""
    if large:
        return value & 0xFFFF, ("null", "multicast", "point_to_point", "reserved")[
            (value >> 29) & 3
        ]
    return value & 0x1FF, ("null", "multicast", "point_to_point", "reserved")[(value >> 13) & 3]


def _forward_open(data: bytes, large: bool, f: dict) -> None:
    spec = _LARGE_FWD_OPEN if large else _FWD_OPEN
    if len(data) < spec.size:
        raise ValueError(f"forward open of {len(data)} bytes")
    (_tick, _timeout, o_t_id, t_o_id, serial, vendor, orig_serial, multiplier,
     o_t_rpi, o_t_params, t_o_rpi, t_o_params, transport, words) = spec.unpack_from(data)  # fmt: skip
    f["cip.connection.o_t_id"] = o_t_id
    f["cip.connection.t_o_id"] = t_o_id
    f["cip.connection.serial"] = serial
    f["cip.connection.originator_vendor_id"] = vendor
    f["cip.connection.originator_serial"] = orig_serial
    f["cip.connection.timeout_multiplier"] = multiplier
    f["cip.connection.o_t_rpi"] = o_t_rpi
    f["cip.connection.t_o_rpi"] = t_o_rpi
    f["cip.connection.o_t_size"], f["cip.connection.o_t_type"] = _connection_params(
        o_t_params, large
    )
    f["cip.connection.t_o_size"], f["cip.connection.t_o_type"] = _connection_params(
        t_o_params, large
    )
    f["cip.connection.transport_class"] = transport & 0x0F
    f["cip.connection.trigger"] = ("cyclic", "change_of_state", "application")[(transport >> 4) & 7] if (transport >> 4) & 7 < 3 else "reserved"  # fmt: skip
    _connection_path(data[spec.size : spec.size + words * 2], f)


def _connection_path(raw: bytes, f: dict) -> None:
    """The target of a connection (Forward Open / Forward Close connection path)."""
    try:
        path = decode(raw)
    except PathError as exc:
        raise ValueError(f"connection path: {exc}") from None
    if path.klass >= 0:
        f["cip.connection.class"] = path.klass
    if path.instance >= 0:
        f["cip.connection.instance"] = path.instance
    if path.connection_point >= 0:
        f["cip.connection.connection_point"] = path.connection_point
    if path.route:
        f["cip.connection.route"] = path.route
    if path.key is not None:
        f["cip.connection.key_vendor_id"] = path.key["vendor_id"]
        f["cip.connection.key_product_code"] = path.key["product_code"]


def response_fields(req: Cip | None, name: str, resp: Cip, f: dict) -> None:
    """The fields of a successful response's data, read in the light of its request."""
    data = resp.data
    try:
        if name in ("read_tag", "read_tag_fragmented") and len(data) >= 2:
            code, used = _typed_data(data, f, "cip.")
            count = f.get("cip.elements", MAX_VALUES)
            vals = values(code, data[used:], count if isinstance(count, int) else MAX_VALUES)
            if vals is not None:
                f["cip.values"] = vals
            else:
                f["cip.response_data"] = data[used : used + MAX_DATA].hex()
        elif resp.service in (SERVICE_FORWARD_OPEN, SERVICE_LARGE_FORWARD_OPEN) and (
            req is None or req.path.klass == CLASS_CONNECTION_MANAGER
        ):
            if len(data) >= _FWD_OPEN_REPLY.size:
                o_t_id, t_o_id, serial, vendor, orig_serial, o_t_api, t_o_api, _size = (
                    _FWD_OPEN_REPLY.unpack_from(data)
                )
                f["cip.connection.o_t_id"] = o_t_id
                f["cip.connection.t_o_id"] = t_o_id
                f["cip.connection.serial"] = serial
                f["cip.connection.o_t_api"] = o_t_api
                f["cip.connection.t_o_api"] = t_o_api
                f.setdefault("cip.connection.originator_vendor_id", vendor)
                f.setdefault("cip.connection.originator_serial", orig_serial)
        elif name in ("get_attribute_single", "get_member") and data:
            f["cip.response_data"] = data[:MAX_DATA].hex()
    except (ValueError, IndexError, struct.error) as exc:
        resp.error = resp.error or f"{name} response data: {exc}"
