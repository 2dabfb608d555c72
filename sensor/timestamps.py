"""Event time: a number (epoch seconds, UTC) inside the process, text only in documents.

The sensor carries ``@timestamp`` (and the other time fields, ``TIME_FIELDS``) as a float
from capture to output; a document gets ISO 8601 text where it is written
(``pipeline.docs.nest`` for JSON lines, Kafka and the APIs; the embedded store's writer), by
``format_timestamp``. ``parse_timestamp`` is the one way text comes back in: a Kafka message,
a stored document, a file, user input.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

from sensor.events import iso_timestamp

# The fields of events, alerts, assets and findings that hold a time.
TIME_FIELDS = frozenset(
    {
        "@timestamp",
        "event.start",
        "event.end",
        "event.created",
        "event.ingested",
        "asset.first_seen",
        "asset.last_seen",
        "finding.first_seen",
        "finding.last_seen",
        "icsmon.sensor.started",
    }
)
_TIME_KEYS = tuple(sorted(TIME_FIELDS))  # a fixed order: the same copy for the same input
MAX_EPOCH = 253402300800.0  # 10000-01-01T00:00:00Z: what ISO 8601 text can say

# The sensor's own format, 2026-11-26T10:00:00.123456Z: events of one second share the parse
# of their first 19 characters (events cluster in time).
_second_cache: dict[str, float] = {}


def format_timestamp(ts: float) -> str:
    """Epoch seconds -> ``2026-11-26T10:00:00.123456Z`` (UTC, microseconds)."""
    return iso_timestamp(ts)


def parse_timestamp(value: Any) -> float | None:
    """A time as epoch seconds, from ISO 8601 text (``Z`` or an offset; UTC when it has none;
    a date alone is its midnight), a number of epoch seconds or a datetime. None for anything
    else: text that is not a time, a number outside 1970-9999, NaN, a bool. Never raises."""
    if isinstance(value, float | int) and not isinstance(value, bool):
        ts = float(value)
        return ts if 0.0 <= ts < MAX_EPOCH else None  # NaN fails both comparisons
    if isinstance(value, str):
        if len(value) == 27 and value[19] == "." and value[26] == "Z" and value[20:26].isdigit():
            head = value[:19]
            sec = _second_cache.get(head)
            if sec is None:
                sec = _parse_text(head)
                if sec is None:
                    return None
                if len(_second_cache) > 4096:
                    _second_cache.clear()
                _second_cache[head] = sec
            return sec + int(value[20:26]) / 1e6
        return _parse_text(value)
    if isinstance(value, datetime):
        return _parse_datetime(value)
    return None


def _parse_text(text: str) -> float | None:
    try:
        dt = datetime.fromisoformat(text.strip())
    except ValueError:
        return None
    return _parse_datetime(dt)


def _parse_datetime(dt: datetime) -> float | None:
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)  # the schema's times are UTC
    try:
        ts = dt.timestamp()
    except (OverflowError, ValueError, OSError):
        return None
    return ts if math.isfinite(ts) and 0.0 <= ts < MAX_EPOCH else None


def render_times(doc: dict[str, Any]) -> dict[str, Any]:
    """``doc`` with its number-valued time fields as text (a copy when one changes; the key
    order stays)."""
    out = doc
    for key in _TIME_KEYS:
        value = doc.get(key)
        if value is None or type(value) is str:  # most keys: absent, or text already
            continue
        if isinstance(value, float | int) and not isinstance(value, bool):
            if out is doc:
                out = dict(doc)
            out[key] = format_timestamp(value)
    return out
