"""Event time: a number inside the process, ISO 8601 text in documents, and the one parser
for text coming back in (Kafka, the store, files, user input), on good and bad input."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta, timezone

import pytest

from pipeline.docs import nest
from sensor.timestamps import MAX_EPOCH, format_timestamp, parse_timestamp, render_times

T = datetime(2026, 11, 26, 10, 0, 0, 123456, tzinfo=UTC).timestamp()


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2026-11-26T10:00:00.123456Z", T),
        ("2026-11-26T18:00:00.123456+08:00", T),  # an offset is honoured
        ("2026-11-26T10:00:00.123456", T),  # no offset: UTC
        ("2026-11-26", datetime(2026, 11, 26, tzinfo=UTC).timestamp()),  # a date: its midnight
        (" 2026-11-26T10:00:00.123456Z ", T),
        (T, T),
        (int(T), float(int(T))),
        (datetime(2026, 11, 26, 10, 0, 0, 123456, tzinfo=UTC), T),
        (datetime(2026, 11, 26, 18, 0, 0, 123456, tzinfo=timezone(timedelta(hours=8))), T),
    ],
)
def test_good_input(value, expected) -> None:
    assert parse_timestamp(value) == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        "junk",
        "2026-13-01T00:00:00Z",  # month 13
        "2026-11-26T25:00:00Z",
        "2026-11-26T10:00:00.12x456Z",  # the fast path's shape, not a time
        "9999-12-31T23:59:59+00:00x",
        True,
        False,
        math.nan,
        math.inf,
        -1.0,
        MAX_EPOCH,
        b"2026-11-26",
        ["2026-11-26"],
        {"t": 1},
    ],
)
def test_bad_input_is_none_never_an_exception(value) -> None:
    assert parse_timestamp(value) is None


def test_the_sensors_own_text_round_trips() -> None:
    text = format_timestamp(T)
    assert text == "2026-11-26T10:00:00.123456Z"
    assert format_timestamp(parse_timestamp(text)) == text


def test_documents_get_text_where_they_are_written_and_events_keep_numbers() -> None:
    event = {"@timestamp": T, "event.start": T, "source.ip": "10.0.0.1", "event.end": "x"}
    rendered = render_times(event)
    assert rendered["@timestamp"] == rendered["event.start"] == "2026-11-26T10:00:00.123456Z"
    assert list(rendered) == list(event) and rendered["event.end"] == "x"
    assert event["@timestamp"] == T  # the event itself is left as it was
    nested = nest(event)
    assert nested["@timestamp"] == "2026-11-26T10:00:00.123456Z"
    assert nested["event"]["start"] == "2026-11-26T10:00:00.123456Z"


@pytest.mark.parametrize(
    ("ts", "text"),
    [
        (float("inf"), "9999-12-31T23:59:59.000000Z"),
        (6.77680361916768e16, "9999-12-31T23:59:59.000000Z"),  # a crafted pcapng timestamp
        (float("nan"), "1970-01-01T00:00:00.000000Z"),
        (float("-inf"), "1970-01-01T00:00:00.000000Z"),
        (-5.0, "1970-01-01T00:00:00.000000Z"),
    ],
)
def test_a_time_text_cannot_say_is_clamped_never_an_exception(ts: float, text: str) -> None:
    assert format_timestamp(ts) == text
    assert nest({"@timestamp": ts})["@timestamp"] == text


def test_microseconds_are_six_digits_as_the_number_says() -> None:
    """The microseconds, from table reads: the same digits as the number's own text
    (``str(1000000 + us)[1:]``, the formula before the tables), at the ends of a second,
    around every thousand, and for fractions as close to 1 as a double holds."""
    second = 1_800_000_000
    for us in (0, 1, 9, 10, 99, 100, 999, 1000, 1001, 123456, 999000, 999999):
        ts = second + us / 1e6
        expected = str(1_000_000 + int((ts - second) * 1e6))[1:]
        assert format_timestamp(ts) == f"2027-01-15T08:00:00.{expected}Z"
    for ts in (math.nextafter(float(second + 1), 0.0), 0.9999999999999999):
        sec = int(ts)
        expected = str(1_000_000 + int((ts - sec) * 1e6))[1:]
        assert format_timestamp(ts).endswith(f".{expected}Z"), ts
    for n in range(0, 1_000_000, 997):  # every step of the tables, both halves
        ts = second + n / 1e6
        assert format_timestamp(ts)[20:26] == str(1_000_000 + int((ts - second) * 1e6))[1:]
