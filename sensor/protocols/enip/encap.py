"""The encapsulation layer: the 24-byte header (command, length, session handle, status,
sender context, options), its plausibility (for framing, resynchronisation and the probe),
and the common packet format (CPF) items of SendRRData, SendUnitData and the list replies."""

from __future__ import annotations

import struct

from sensor.protocols.enip.tables import COMMANDS

HEADER = struct.Struct("<HHII8sI")
HEADER_SIZE = 24
MAX_ITEMS = 16  # CPF items read from one message (the specification uses 2-4)


class CpfError(Exception):
    """CPF items that do not fit the encapsulation data."""


def plausible(buf: bytes, pos: int) -> bool:
    """A header at ``pos`` (24 bytes available): known command, a 16-bit status (stacks
    answer with codes outside the specification's list, cpppo with CIP's 0x08), options 0."""
    command = buf[pos] | buf[pos + 1] << 8
    if command not in COMMANDS:
        return False
    return buf[pos + 10] == 0 and buf[pos + 11] == 0 and not any(buf[pos + 20 : pos + 24])


def resync(buf: bytes, pos: int) -> int:
    """Offset of the next plausible header after ``pos`` (or where one may still start)."""
    n = len(buf)
    i = pos + 1
    while n - i >= HEADER_SIZE:
        if plausible(buf, i):
            return i
        i += 1
    return max(i, pos + 1)


def cpf_items(data: bytes, pos: int) -> list[tuple[int, bytes]]:
    """The items of a CPF list starting at ``pos`` (its item count)."""
    if len(data) < pos + 2:
        raise CpfError("no item count")
    count = data[pos] | data[pos + 1] << 8
    if count > MAX_ITEMS:
        raise CpfError(f"{count} items")
    pos += 2
    items: list[tuple[int, bytes]] = []
    for k in range(count):
        if pos + 4 > len(data):
            raise CpfError(f"item {k} of {count}: header cut short")
        item_type = data[pos] | data[pos + 1] << 8
        length = data[pos + 2] | data[pos + 3] << 8
        end = pos + 4 + length
        if end > len(data):
            raise CpfError(
                f"item {k} (type 0x{item_type:04x}) of {length} bytes runs past the data"
            )
        items.append((item_type, data[pos + 4 : end]))
        pos = end
    return items


def probe(data: bytes) -> bool:
    """A stream that starts with one or more complete encapsulation messages."""
    try:
        pos = 0
        frames = 0
        while len(data) - pos >= HEADER_SIZE:
            if not plausible(data, pos):
                return False
            pos += HEADER_SIZE + (data[pos + 2] | data[pos + 3] << 8)
            frames += 1
        return frames > 0 and pos == len(data)
    except Exception:  # a probe never raises
        return False
