"""What an S7 device says about itself: SZL answers (module and component identification,
protection levels and switch positions, the diagnostic buffer) and the module string of an
S7comm-plus CreateObject answer. Identity goes to ``pdu.device`` (``ics.device.*`` of the
server's record)."""

from __future__ import annotations

import re
import struct
from typing import TYPE_CHECKING

from sensor.protocols.s7comm.tables import MODE_SWITCH, STARTUP_SWITCH
from sensor.protocols.s7comm.values import ascii_text, diag_event

if TYPE_CHECKING:
    from sensor.protocols.s7comm.pdu import Pdu

# The CreateObject answer of an S7-1200/1500 names the module: "1;6ES7 511-1AK00-0AB0;V1.0".
_PLUS_MODULE_RE = re.compile(
    rb"\d;(6E[SP]\d [0-9A-Z]{3}-[0-9A-Z]{5}-[0-9A-Z]{4});V(\d+\.\d+(?:\.\d+)?)"
)


def protection(rec: bytes) -> dict:
    """SZL 0x0132 / 0x0232 index 4 record: the CPU's protection levels and switch positions
    (index, key switch level, assigned level, valid level, mode switch, startup switch)."""
    key, assigned, level, mode, startup = struct.unpack_from(">HHHHH", rec, 2)
    return {
        "s7comm.protection.key_switch_level": key,
        "s7comm.protection.assigned_level": assigned,
        "s7comm.protection.level": level,
        "s7comm.protection.mode_switch": MODE_SWITCH.get(mode, str(mode)),
        "s7comm.protection.startup_switch": STARTUP_SWITCH.get(startup, str(startup)),
    }


def szl(pdu: Pdu, utype: int, body: bytes, max_items: int) -> None:
    """An SZL read: id, index, record count; identity, protection, diagnostic buffer."""
    f = pdu.fields
    szl_id, szl_index = struct.unpack_from(">HH", body, 0)
    f["s7comm.szl.id"], f["s7comm.szl.index"] = szl_id, szl_index
    if utype != 8 or len(body) < 8:
        return
    rec_len, count = struct.unpack_from(">HH", body, 4)
    f["s7comm.szl.record_count"] = count
    records = [body[8 + k * rec_len : 8 + (k + 1) * rec_len] for k in range(min(count, max_items))]
    records = [r for r in records if len(r) == rec_len]
    dev = pdu.device
    if szl_id & 0xFF == 0xA0 and rec_len == 20:  # diagnostic buffer
        pdu.fields["s7comm.diagnostic.events"] = [diag_event(r) for r in records]
    if szl_id & 0xFF == 0x11 and rec_len >= 22:  # module identification
        for r in records:
            index = int.from_bytes(r[0:2], "big")
            if index == 1 and ascii_text(r[2:22]).isprintable() and ascii_text(r[2:22]):
                dev["order_number"] = ascii_text(r[2:22])
                if rec_len == 28:
                    dev["hardware"] = f"{r[25]}" if r[24] == 0 else f"{r[24]}.{r[25]}"
            elif index == 7 and rec_len == 28 and r[24] == ord("V"):
                dev["firmware"] = f"V{r[25]}.{r[26]}.{r[27]}"
    elif szl_id & 0xFF == 0x32 and szl_index == 4 and rec_len >= 12 and records:
        f.update(protection(records[0]))
    elif szl_id & 0xFF == 0x1C and rec_len == 34:  # component identification
        keys = {1: "name", 2: "model", 3: "plant", 5: "serial", 7: "module_type"}
        for r in records:
            index = int.from_bytes(r[0:2], "big")
            text = ascii_text(r[2:34])
            if index in keys and text and text.isprintable():
                dev[keys[index]] = text
    if dev:
        dev.setdefault("vendor", "Siemens")


def plus_module(body: bytes) -> dict[str, str]:
    """Vendor, order number and firmware from the module string of a CreateObject answer."""
    match = _PLUS_MODULE_RE.search(body)
    if not match:
        return {}
    return {
        "vendor": "Siemens",
        "order_number": match.group(1).decode(),
        "firmware": "V" + match.group(2).decode(),
    }
