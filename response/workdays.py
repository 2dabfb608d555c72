"""Working days from a calendar file: weekends, public holidays and adjusted working days.

Notice deadlines are counted in working days (calendar_cn.yaml is the shipped calendar and
documents the format). A deadline ends at the end of its last working day in the calendar's
time zone. Outside the years the file covers, only weekends are days off, and
:meth:`Calendar.covers` says so, so a view can warn that the calendar needs its next year.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml

DEFAULT_CALENDAR = Path(__file__).resolve().parent / "calendar_cn.yaml"
_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
MAX_WORKING_DAYS = 400


class CalendarError(ValueError):
    """A calendar file that cannot be used; the message names the file and the entry."""


@dataclass(slots=True)
class Calendar:
    name: str
    tz: ZoneInfo
    weekend: frozenset[int]
    holidays: frozenset[dt.date]
    workdays: frozenset[dt.date]
    years: tuple[int, ...] = field(default=())

    def is_working_day(self, day: dt.date) -> bool:
        if day in self.workdays:
            return True
        return day.weekday() not in self.weekend and day not in self.holidays

    def covers(self, day: dt.date) -> bool:
        return not self.years or day.year in self.years

    def local_date(self, epoch: float) -> dt.date:
        return dt.datetime.fromtimestamp(epoch, self.tz).date()

    def end_of_day(self, day: dt.date) -> float:
        nxt = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), self.tz)
        return nxt.timestamp() - 1.0

    def add_working_days(self, start: float, days: int) -> float:
        """End (epoch s) of the ``days``-th working day after the day of ``start``."""
        if not 0 < days <= MAX_WORKING_DAYS:
            raise ValueError(f"working days must be 1..{MAX_WORKING_DAYS}, got {days}")
        day, left = self.local_date(start), days
        while left:
            day += dt.timedelta(days=1)
            if self.is_working_day(day):
                left -= 1
        return self.end_of_day(day)

    def working_days_between(self, start: float, end: float) -> int:
        """Working days after the day of ``start`` up to and including the day of ``end``."""
        a, b = self.local_date(start), self.local_date(end)
        n = 0
        while a < b:
            a += dt.timedelta(days=1)
            n += self.is_working_day(a)
        return n


def _date(value: Any, where: str) -> dt.date:
    if isinstance(value, dt.date):
        return value
    try:
        return dt.date.fromisoformat(str(value))
    except ValueError:
        raise CalendarError(f"{where}: {value!r} is not a date (YYYY-MM-DD)") from None


def _dates(items: Any, where: str) -> set[dt.date]:
    if items is None:
        return set()
    if not isinstance(items, list):
        raise CalendarError(f"{where}: must be a list of dates or [first, last] ranges")
    out: set[dt.date] = set()
    for i, item in enumerate(items):
        w = f"{where}[{i}]"
        if isinstance(item, list):
            if len(item) != 2:
                raise CalendarError(f"{w}: a range is [first, last]")
            a, b = _date(item[0], w), _date(item[1], w)
            if b < a or (b - a).days > 60:
                raise CalendarError(f"{w}: range must run forward, at most 60 days")
            out.update(a + dt.timedelta(days=k) for k in range((b - a).days + 1))
        else:
            out.add(_date(item, w))
    return out


def parse_calendar(data: Any, source: str = "<calendar>") -> Calendar:
    if not isinstance(data, dict):
        raise CalendarError(f"{source}: expected a mapping (see response/calendar_cn.yaml)")
    try:
        tz = ZoneInfo(str(data.get("timezone", "Asia/Shanghai")))
    except (ZoneInfoNotFoundError, ValueError):
        raise CalendarError(f"{source}: unknown timezone {data.get('timezone')!r}") from None
    weekend = data.get("weekend", ["sat", "sun"])
    if not isinstance(weekend, list) or any(str(d).lower()[:3] not in _DAYS for d in weekend):
        raise CalendarError(f"{source}: weekend must list days like [sat, sun]")
    years = data.get("covers") or []
    if not isinstance(years, list) or not all(isinstance(y, int) for y in years):
        raise CalendarError(f"{source}: covers must list years")
    holidays = _dates(data.get("holidays"), f"{source}: holidays")
    workdays = _dates(data.get("workdays"), f"{source}: workdays")
    if both := holidays & workdays:
        raise CalendarError(f"{source}: {min(both)} is both a holiday and a working day")
    return Calendar(
        name=str(data.get("name") or source),
        tz=tz,
        weekend=frozenset(_DAYS.index(str(d).lower()[:3]) for d in weekend),
        holidays=frozenset(holidays),
        workdays=frozenset(workdays),
        years=tuple(years),
    )


def load_calendar(path: str | Path | None = None) -> Calendar:
    path = Path(path) if path is not None else DEFAULT_CALENDAR
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise CalendarError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    except (UnicodeDecodeError, yaml.YAMLError, ValueError) as exc:  # ValueError: 2026-13-01
        raise CalendarError(f"{path}: not a YAML calendar: {' '.join(str(exc).split())}") from exc
    return parse_calendar(data, str(path))
