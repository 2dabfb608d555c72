"""Event time: a number (epoch seconds, UTC) inside the process, text only in documents.

``parse_timestamp`` is the one way text comes back in (a Kafka message, a stored document,
a file, user input); ``format_timestamp`` the one way a number becomes ``@timestamp`` text.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any


def parse_timestamp(value: Any) -> float | None:
    """``@timestamp``-like values (ISO 8601 text, epoch seconds, datetime) -> epoch seconds;
    None for anything else (a bad value is the caller's to count, never an exception)."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, datetime):
        dt = value
    elif isinstance(value, str):
        try:
            dt = datetime.fromisoformat(value)
        except ValueError:
            return None
    else:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)  # the schema's timestamps are UTC
    return dt.timestamp()
