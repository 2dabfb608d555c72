"""S7 value encodings: text fields, block file names (``_0A00001P``), BCD DATE_AND_TIME,
block header times and diagnostic buffer entries."""

from __future__ import annotations

import datetime

from sensor.protocols.s7comm.tables import BLOCK_TYPES

EPOCH_1984 = datetime.datetime(1984, 1, 1)


def ascii_text(raw: bytes) -> str:
    return raw.decode("latin-1").rstrip("\x00 ").strip()


def parse_filename(name: bytes) -> dict[str, object]:
    """``_0A00001P`` -> DB 1 on the passive filesystem (upload/download and PI-service names)."""
    out: dict[str, object] = {"s7comm.block.filename": name.decode("latin-1")}
    text = name.decode("latin-1")
    if text.startswith("_"):
        text = text[1:]
    if len(text) >= 8 and text[2:7].isdigit():
        out["s7comm.block.type"] = BLOCK_TYPES.get(text[0:2].upper(), text[0:2])
        out["s7comm.block.number"] = int(text[2:7])
        out["s7comm.block.filesystem"] = text[7]
    return out


def bcd(b: int) -> int:
    return (b >> 4) * 10 + (b & 0x0F)


def s7_time(raw: bytes) -> str | None:
    """S7 DATE_AND_TIME in BCD (8 bytes; the clock functions prefix 2 bytes)."""
    if len(raw) == 10:
        raw = raw[2:]
    if len(raw) < 8:
        return None
    year = bcd(raw[0])
    year += 2000 if year < 90 else 1900
    month, day, hour, minute, second = (bcd(b) for b in raw[1:6])
    msec = bcd(raw[6]) * 10 + (raw[7] >> 4)
    if not (1 <= month <= 12 and 1 <= day <= 31 and hour < 24 and minute < 60 and second < 60):
        return None
    return f"{year:04d}-{month:02d}-{day:02d}T{hour:02d}:{minute:02d}:{second:02d}.{msec:03d}"


def diag_event(raw: bytes) -> dict[str, object]:
    """One 20-byte diagnostic buffer entry: event id, priority class, OB, time (BCD)."""
    event_id = int.from_bytes(raw[0:2], "big")
    event: dict[str, object] = {
        "event_id": event_id, "event_class": event_id >> 12, "priority_class": raw[2], "ob_number": raw[3],
    }  # fmt: skip
    when = s7_time(raw[12:20])
    if when:
        event["time"] = when
    return event


def s7_block_time(raw: bytes) -> str:
    """Block header time: milliseconds since midnight (4 bytes), days since 1984-01-01 (2)."""
    ms, days = int.from_bytes(raw[0:4], "big"), int.from_bytes(raw[4:6], "big")
    when = EPOCH_1984 + datetime.timedelta(days=days, milliseconds=ms)
    return when.isoformat(timespec="milliseconds")
