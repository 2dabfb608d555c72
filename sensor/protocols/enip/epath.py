"""CIP EPATH (padded, as in message router requests and connection paths): port segments
(the route through backplanes and networks), logical segments (class, instance, member,
connection point, attribute, electronic key, service), network segments, simple data and
ANSI extended symbolic segments (Logix tag names, ``Program:Main.Motor[3].Speed``).

``decode`` never reads past the path; a segment it cannot read raises ``PathError``."""

from __future__ import annotations

_ABSENT = -1


class PathError(Exception):
    """A segment that is unknown or runs past the path."""


class Path:
    """What a path names; ``-1`` for the logical values it does not carry."""

    __slots__ = (
        "klass",
        "classes",
        "instance",
        "attribute",
        "member",
        "connection_point",
        "tag",
        "route",
        "key",
        "data",
    )

    def __init__(self) -> None:
        self.klass = _ABSENT  # the last class segment: the object addressed
        self.classes: list[int] = []  # every class segment, when there are several
        self.instance = _ABSENT
        self.attribute = _ABSENT
        self.member = _ABSENT
        self.connection_point = _ABSENT
        self.tag = ""
        self.route = ""  # port/link hops: "1/0" is backplane slot 0
        self.key: dict[str, int] | None = None  # electronic key
        self.data = b""  # simple data segment (connection configuration)


def _logical_value(p: bytes, i: int, fmt: int, n: int) -> tuple[int, int]:
    """(value, segment size) of a logical segment at ``i`` whose format is ``fmt``."""
    if fmt == 0:
        if i + 2 > n:
            raise PathError("8-bit logical segment cut short")
        return p[i + 1], 2
    if fmt == 1:
        if i + 4 > n:
            raise PathError("16-bit logical segment cut short")
        return p[i + 2] | p[i + 3] << 8, 4
    if fmt == 2:
        if i + 6 > n:
            raise PathError("32-bit logical segment cut short")
        return int.from_bytes(p[i + 2 : i + 6], "little"), 6
    raise PathError(f"reserved logical format in segment 0x{p[i]:02x}")


def decode(p: bytes) -> Path:
    path = Path()
    i = 0
    n = len(p)
    tag = ""
    hops: list[str] = []
    elements: list[int] = []
    while i < n:
        seg = p[i]
        kind = seg & 0xE0
        if kind == 0x20:  # logical
            ltype = (seg >> 2) & 7
            fmt = seg & 3
            if ltype == 5:  # special: the electronic key
                if seg != 0x34 or i + 10 > n or p[i + 1] != 4:
                    raise PathError(f"unknown special logical segment 0x{seg:02x}")
                path.key = {
                    "vendor_id": p[i + 2] | p[i + 3] << 8,
                    "device_type": p[i + 4] | p[i + 5] << 8,
                    "product_code": p[i + 6] | p[i + 7] << 8,
                    "major_revision": p[i + 8] & 0x7F,
                    "minor_revision": p[i + 9],
                }
                i += 10
                continue
            if ltype == 7:
                raise PathError("extended logical segment")
            value, size = _logical_value(p, i, fmt, n)
            i += size
            if ltype == 0:
                if path.klass >= 0:  # an object inside another: keep the chain
                    path.classes = (path.classes or [path.klass]) + [value]
                path.klass = value
            elif ltype == 1:
                path.instance = value
            elif ltype == 2:
                if tag:  # an element of the tag before it
                    elements.append(value)
                else:
                    path.member = value
            elif ltype == 3:
                path.connection_point = value
            elif ltype == 4:
                path.attribute = value
            # ltype 6 (service id) names nothing a record needs
        elif seg == 0x91:  # ANSI extended symbolic
            if i + 2 > n:
                raise PathError("symbolic segment cut short")
            size = p[i + 1]
            end = i + 2 + size
            if end > n:
                raise PathError("symbol runs past the path")
            if elements:
                tag += "[" + ",".join(map(str, elements)) + "]"
                elements = []
            name = p[i + 2 : end].decode("latin-1")
            tag = tag + "." + name if tag else name
            i = end + (size & 1)
        elif kind == 0x00:  # port segment
            # [flags|port] [link size, when extended] [16-bit port, when port 15] link
            j = i + 1
            size = 1
            if seg & 0x10:
                if j >= n:
                    raise PathError("port segment cut short")
                size = p[j]
                j += 1
            port = seg & 0x0F
            if port == 15:
                if j + 2 > n:
                    raise PathError("extended port cut short")
                port = p[j] | p[j + 1] << 8
                j += 2
            end = j + size
            if end > n:
                raise PathError("link address runs past the path")
            link = p[j:end].decode("latin-1") if seg & 0x10 else str(p[j])
            i = end + ((end - i) & 1)
            hops.append(f"{port}/{link}")
        elif kind == 0x40:  # network segment
            if i + 2 > n:
                raise PathError("network segment cut short")
            i += 2 + (p[i + 1] * 2 if seg & 0x10 else 0)
        elif seg == 0x80:  # simple data segment
            if i + 2 > n:
                raise PathError("data segment cut short")
            end = i + 2 + p[i + 1] * 2
            if end > n:
                raise PathError("data segment runs past the path")
            path.data = p[i + 2 : end]
            i = end
        elif kind == 0x60:  # symbolic segment (short form)
            size = seg & 0x1F
            if not size:
                raise PathError("extended symbolic segment")
            end = i + 1 + size
            if end > n:
                raise PathError("symbol runs past the path")
            name = p[i + 1 : end].decode("latin-1")
            tag = tag + "." + name if tag else name
            i = end + ((end - i) & 1)
        else:
            raise PathError(f"unknown segment type 0x{seg:02x}")
        if i > n:
            raise PathError("segment padding runs past the path")
    if elements:
        tag += "[" + ",".join(map(str, elements)) + "]"
    path.tag = tag
    if hops:
        path.route = ",".join(hops)
    return path
