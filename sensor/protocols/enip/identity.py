"""What an EtherNet/IP device says about itself: the CIP Identity item of a ListIdentity
reply (TCP or UDP), the Identity object (class 0x01) read with Get_Attributes_All,
Get_Attribute_Single or Get_Attribute_List, and the services of a ListServices reply.

``identity_fields`` gives ``enip.identity.*`` (numbers and names) and ``device`` the
``ics.device.*`` values the asset inventory keeps (vendor name, product name, product code,
revision as firmware, serial number, device type as module type)."""

from __future__ import annotations

import struct

from sensor.protocols.enip.tables import DEVICE_TYPES, IDENTITY_STATES, vendor_name

_ID = struct.Struct("<HHHBBHI")  # vendor, device type, product code, revision, status, serial
_SOCKADDR = struct.Struct(">HH4s")


class IdentityError(Exception):
    """An identity body that does not parse."""


def _short_string(data: bytes, pos: int) -> tuple[str, int]:
    if pos >= len(data):
        raise IdentityError("product name length missing")
    size = data[pos]
    end = pos + 1 + size
    if end > len(data):
        raise IdentityError(f"product name of {size} bytes runs past the item")
    return data[pos + 1 : end].decode("latin-1").strip("\x00 "), end


def identity_body(data: bytes, pos: int = 0) -> dict[str, object]:
    """Attributes 1-8 of the Identity object as Get_Attributes_All and ListIdentity lay
    them out: ``enip.identity.*`` fields."""
    if len(data) - pos < _ID.size:
        raise IdentityError(f"identity of {len(data) - pos} bytes, need {_ID.size}")
    vendor, dtype, product, major, minor, status, serial = _ID.unpack_from(data, pos)
    name, end = _short_string(data, pos + _ID.size)
    f: dict[str, object] = {
        "enip.identity.vendor_id": vendor,
        "enip.identity.vendor": vendor_name(vendor),
        "enip.identity.device_type": dtype,
        "enip.identity.device_type_name": DEVICE_TYPES.get(dtype) or f"device_type_{dtype}",
        "enip.identity.product_code": product,
        "enip.identity.revision": f"{major}.{minor:03d}",
        "enip.identity.status": status,
        "enip.identity.serial": f"0x{serial:08x}",
        "enip.identity.product_name": name,
    }
    if end < len(data):
        state = data[end]
        f["enip.identity.state"] = state
        f["enip.identity.state_name"] = IDENTITY_STATES.get(state) or f"state_{state}"
    return f


def list_identity_item(item: bytes) -> dict[str, object]:
    """The CIP Identity item (type 0x0c) of a ListIdentity reply: encapsulation version,
    the device's socket address, then the identity."""
    if len(item) < 18:
        raise IdentityError(f"identity item of {len(item)} bytes")
    f: dict[str, object] = {"enip.identity.encapsulation_version": item[0] | item[1] << 8}
    _family, port, addr = _SOCKADDR.unpack_from(item, 2)
    f["enip.identity.socket_address"] = ".".join(map(str, addr))
    f["enip.identity.socket_port"] = port
    f.update(identity_body(item, 18))
    return f


# Identity object attributes read one by one: id -> (field, size, or 0 for a short string)
_ATTRIBUTES: dict[int, tuple[str, int]] = {
    1: ("vendor_id", 2),
    2: ("device_type", 2),
    3: ("product_code", 2),
    4: ("revision", 2),
    5: ("status", 2),
    6: ("serial", 4),
    7: ("product_name", 0),
    8: ("state", 1),
}


def _attribute(attr: int, data: bytes, pos: int, f: dict[str, object]) -> int:
    """One Identity attribute at ``pos``: its field(s) in ``f``; returns where it ends."""
    name, size = _ATTRIBUTES[attr]
    if size == 0:
        text, end = _short_string(data, pos)
        f["enip.identity.product_name"] = text
        return end
    if pos + size > len(data):
        raise IdentityError(f"identity attribute {attr} cut short")
    value = int.from_bytes(data[pos : pos + size], "little")
    if attr == 4:
        f["enip.identity.revision"] = f"{data[pos]}.{data[pos + 1]:03d}"
    elif attr == 6:
        f["enip.identity.serial"] = f"0x{value:08x}"
    else:
        f["enip.identity." + name] = value
        if attr == 1:
            f["enip.identity.vendor"] = vendor_name(value)
        elif attr == 2:
            f["enip.identity.device_type_name"] = DEVICE_TYPES.get(value) or f"device_type_{value}"
        elif attr == 8:
            f["enip.identity.state_name"] = IDENTITY_STATES.get(value) or f"state_{value}"
    return pos + size


def attribute_single(attr: int, data: bytes) -> dict[str, object]:
    f: dict[str, object] = {}
    if attr in _ATTRIBUTES:
        _attribute(attr, data, 0, f)
    return f


def attribute_list(data: bytes) -> dict[str, object]:
    """A Get_Attribute_List answer: count, then (id, status, value) for each attribute; the
    walk stops at the first attribute it cannot size."""
    f: dict[str, object] = {}
    if len(data) < 2:
        return f
    count = data[0] | data[1] << 8
    pos = 2
    for _ in range(count):
        if pos + 4 > len(data):
            break
        attr = data[pos] | data[pos + 1] << 8
        status = data[pos + 2] | data[pos + 3] << 8
        pos += 4
        if status:
            continue  # no value follows an attribute in error
        if attr not in _ATTRIBUTES:
            break
        pos = _attribute(attr, data, pos, f)
    return f


def device(f: dict[str, object]) -> dict[str, object]:
    """``ics.device.*`` from ``enip.identity.*`` fields."""
    out: dict[str, object] = {}
    if "enip.identity.vendor" in f:
        out["ics.device.vendor"] = f["enip.identity.vendor"]
    name = f.get("enip.identity.product_name")
    if name:
        out["ics.device.product"] = name
        out["ics.device.model"] = name
    if "enip.identity.product_code" in f:
        out["ics.device.product_code"] = str(f["enip.identity.product_code"])
    if "enip.identity.revision" in f:
        out["ics.device.firmware"] = f["enip.identity.revision"]
    if "enip.identity.serial" in f:
        out["ics.device.serial"] = f["enip.identity.serial"]
    if "enip.identity.device_type_name" in f:
        out["ics.device.module_type"] = f["enip.identity.device_type_name"]
    return out


def list_services_items(items: list[tuple[int, bytes]]) -> list[str]:
    """Service names of a ListServices reply (items of type 0x100: version, flags, name)."""
    names: list[str] = []
    for _type, body in items:
        if len(body) >= 4:
            names.append(body[4:20].split(b"\x00", 1)[0].decode("latin-1"))
    return names
