"""OPC UA binary encoding (Part 6): a bounds-checked reader of the built-in types
(integers, strings, NodeIds, Variants, DataValues, ExtensionObjects, DiagnosticInfos...) over
one message body, with caps on strings, arrays and nesting."""

from __future__ import annotations

import base64
import math
import struct
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from sensor.protocols.opcua.tables import BUILTIN_TYPES

MAX_STRING = 1024  # characters kept of any string in a record
MAX_BYTES_HEX = 64  # bytes of a ByteString value kept (as hex)
MAX_DEPTH = 8  # nesting of Variant / DiagnosticInfo / DataValue before declaring the body malformed
MAX_ARRAY_VALUES = 100  # elements kept of one array value: an event carries a sample, not the bulk


_U8 = struct.Struct("<B").unpack_from
_U16 = struct.Struct("<H").unpack_from
_U32 = struct.Struct("<I").unpack_from
_I32 = struct.Struct("<i").unpack_from
_BASIC = {
    2: struct.Struct("<b"),
    3: struct.Struct("<B"),
    4: struct.Struct("<h"),
    5: struct.Struct("<H"),
    6: struct.Struct("<i"),
    7: struct.Struct("<I"),
    8: struct.Struct("<q"),
    9: struct.Struct("<Q"),
    10: struct.Struct("<f"),
    11: struct.Struct("<d"),
    13: struct.Struct("<q"),
    19: struct.Struct("<I"),
}
_EPOCH_1601 = datetime(1601, 1, 1, tzinfo=UTC)


class DecodeError(Exception):
    """The body does not follow the encoding (internal: becomes an anomaly, never escapes)."""


class Reader:
    """A bounds-checked little-endian cursor over one message body."""

    __slots__ = ("buf", "pos", "end", "max_items", "truncated")

    def __init__(self, buf: bytes, max_items: int, pos: int = 0) -> None:
        self.buf = buf
        self.pos = pos
        self.end = len(buf)
        self.max_items = max_items
        self.truncated = False

    def need(self, n: int) -> int:
        p = self.pos
        if n < 0 or p + n > self.end:
            raise DecodeError(f"needs {n} bytes at offset {p}, {self.end - p} left")
        self.pos = p + n
        return p

    def u8(self) -> int:
        return self.buf[self.need(1)]

    def boolean(self) -> bool:
        return self.buf[self.need(1)] != 0

    def u16(self) -> int:
        return _U16(self.buf, self.need(2))[0]

    def u32(self) -> int:
        return _U32(self.buf, self.need(4))[0]

    def i32(self) -> int:
        return _I32(self.buf, self.need(4))[0]

    def f64(self) -> float:
        return struct.unpack_from("<d", self.buf, self.need(8))[0]

    def skip(self, n: int) -> None:
        self.need(n)

    def raw(self) -> bytes | None:
        """ByteString / String bytes; None for the null (-1) encoding."""
        n = self.i32()
        if n == -1:
            return None
        if n < -1:
            raise DecodeError(f"negative length {n}")
        p = self.need(n)
        return bytes(self.buf[p : p + n])

    def string(self) -> str | None:
        data = self.raw()
        if data is None:
            return None
        text = data.decode("utf-8", "replace")
        return text if len(text) <= MAX_STRING else text[:MAX_STRING]

    def skip_raw(self) -> int:
        """Skip a ByteString; returns its length (-1 for null)."""
        n = self.i32()
        if n > 0:
            self.need(n)
        elif n < -1:
            raise DecodeError(f"negative length {n}")
        return n

    def count(self) -> int:
        """An array length; -1 (null) reads as 0. Each element takes at least one byte."""
        n = self.i32()
        if n < -1 or n > self.end - self.pos:
            raise DecodeError(f"array length {n} with {self.end - self.pos} bytes left")
        return max(n, 0)

    def array(self, item: Callable[[], object]) -> list:
        n = self.count()
        out = []
        keep = self.max_items
        for i in range(n):
            v = item()
            if i < keep:
                out.append(v)
            else:
                self.truncated = True
        return out

    def strings(self) -> list[str | None]:
        return self.array(self.string)

    def guid(self) -> str:
        p = self.need(16)
        return str(uuid.UUID(bytes_le=bytes(self.buf[p : p + 16])))

    def node_id(self) -> str:
        mask = self.u8()
        return self._node_id_body(mask & 0x3F)

    def _node_id_body(self, enc: int) -> str:
        if enc == 0:
            return f"i={self.u8()}"
        if enc == 1:
            ns = self.u8()
            ident = self.u16()
            return f"ns={ns};i={ident}" if ns else f"i={ident}"
        if enc == 2:
            ns = self.u16()
            ident = self.u32()
            return f"ns={ns};i={ident}" if ns else f"i={ident}"
        if enc == 3:
            ns = self.u16()
            s = self.string()
            return f"ns={ns};s={s or ''}" if ns else f"s={s or ''}"
        if enc == 4:
            ns = self.u16()
            g = self.guid()
            return f"ns={ns};g={g}" if ns else f"g={g}"
        if enc == 5:
            ns = self.u16()
            b = self.raw() or b""
            text = base64.b64encode(b[:MAX_STRING]).decode()
            return f"ns={ns};b={text}" if ns else f"b={text}"
        raise DecodeError(f"NodeId encoding {enc}")

    def expanded_node_id(self) -> str:
        mask = self.u8()
        body = self._node_id_body(mask & 0x3F)
        if mask & 0x80:
            uri = self.string()
            if uri:
                body = f"nsu={uri};" + body.split(";", 1)[-1]
        if mask & 0x40:
            body = f"svr={self.u32()};" + body
        return body

    def numeric_node_id(self) -> tuple[int | None, str]:
        """A NodeId as (numeric id when ns=0 and numeric, text)."""
        start = self.pos
        mask = self.u8()
        enc = mask & 0x3F
        if enc == 0:
            v = self.u8()
            return v, f"i={v}"
        if enc == 1 and self.pos < self.end and self.buf[self.pos] == 0:
            self.pos += 1
            v = self.u16()
            return v, f"i={v}"
        if enc == 2 and self.end - self.pos >= 6 and _U16(self.buf, self.pos)[0] == 0:
            self.pos += 2
            v = self.u32()
            return v, f"i={v}"
        self.pos = start
        text = self.expanded_node_id()
        return None, text

    def qualified_name(self) -> str:
        ns = self.u16()
        name = self.string() or ""
        return f"{ns}:{name}"

    def localized_text(self) -> str | None:
        mask = self.u8()
        if mask & 0x01:
            self.skip_raw()
        if mask & 0x02:
            return self.string()
        return None

    def diagnostic_info(self, depth: int = 0) -> None:
        if depth > MAX_DEPTH:
            raise DecodeError("DiagnosticInfo nested too deep")
        mask = self.u8()
        for bit in (0x01, 0x02, 0x08, 0x04):
            if mask & bit:
                self.need(4)
        if mask & 0x10:
            self.skip_raw()
        if mask & 0x20:
            self.need(4)
        if mask & 0x40:
            self.diagnostic_info(depth + 1)

    def diagnostic_infos(self) -> None:
        for _ in range(self.count()):
            self.diagnostic_info()

    def extension_object(self) -> tuple[int | None, str, bytes | None]:
        """(numeric type id, type id text, binary body or None)."""
        num, text = self.numeric_node_id()
        enc = self.u8()
        if enc == 0:
            return num, text, None
        if enc in (1, 2):
            body = self.raw()
            return num, text, body if enc == 1 else None
        raise DecodeError(f"ExtensionObject encoding {enc}")

    def status_code(self) -> int:
        return self.u32()

    def data_value(self, depth: int = 0) -> dict:
        mask = self.u8()
        out: dict = {"type": None, "value": None}
        if mask & 0x01:
            out = self.variant(depth + 1)
        if mask & 0x02:
            code = self.u32()
            if code:
                out = dict(out)
                out["status_code"] = code
        if mask & 0x04:
            self.need(8)
        if mask & 0x10:
            self.need(2)
        if mask & 0x08:
            self.need(8)
        if mask & 0x20:
            self.need(2)
        return out

    def variant(self, depth: int = 0) -> dict:
        if depth > MAX_DEPTH:
            raise DecodeError("Variant nested too deep")
        mask = self.u8()
        type_id = mask & 0x3F
        tname = BUILTIN_TYPES.get(type_id)
        if type_id == 0:
            return {"type": None, "value": None}
        if tname is None:
            raise DecodeError(f"Variant type {type_id}")
        if mask & 0x80:
            n = self.count()
            values = []
            keep = min(self.max_items, MAX_ARRAY_VALUES)
            for i in range(n):
                v = self.scalar(type_id, depth)
                if i < keep:
                    values.append(v)
                else:
                    self.truncated = True
            if mask & 0x40:
                self.array(self.i32)
            return {"type": tname, "value": values}
        return {"type": tname, "value": self.scalar(type_id, depth)}

    def scalar(self, type_id: int, depth: int) -> object:
        st = _BASIC.get(type_id)
        if st is not None:
            v = st.unpack_from(self.buf, self.need(st.size))[0]
            if type_id == 13:
                return datetime_text(v)
            if type_id in (10, 11) and not math.isfinite(v):
                return str(v)
            return v
        if type_id == 1:
            return self.boolean()
        if type_id in (12, 16):
            return self.string()
        if type_id == 14:
            return self.guid()
        if type_id == 15:
            b = self.raw()
            return None if b is None else b[:MAX_BYTES_HEX].hex()
        if type_id == 17:
            return self.node_id()
        if type_id == 18:
            return self.expanded_node_id()
        if type_id == 20:
            return self.qualified_name()
        if type_id == 21:
            return self.localized_text()
        if type_id == 22:
            # a structure icsmon does not decode: its type and size, as text (one JSON type per field)
            _num, text, body = self.extension_object()
            return f"{text} ({0 if body is None else len(body)} bytes)"
        if type_id == 23:
            return self.data_value(depth + 1)
        if type_id == 24:
            return self.variant(depth + 1)
        if type_id == 25:
            self.diagnostic_info(depth + 1)
            return None
        raise DecodeError(f"built-in type {type_id}")


def datetime_text(ticks: int) -> str | None:
    """OPC UA DateTime (100 ns since 1601) as ISO 8601; None for the 'no time' values."""
    if ticks <= 0 or ticks >= 0x7FFFFFFFFFFFFFFF:
        return None
    try:
        return (
            (_EPOCH_1601 + timedelta(microseconds=ticks // 10)).isoformat().replace("+00:00", "Z")
        )
    except OverflowError:
        return None
