"""Retention at the centre: each kind's daily indices removed after a configured age.

Elasticsearch's index lifecycle management is not in every build a province runs (the
minimal one here has none), and what is needed is simple: every kind writes one index per
UTC day (``<prefix>-<plural>-YYYY.MM.DD``, ``pipeline.kinds``), so keeping a kind for N days
is deleting its indices whose whole day ended more than N days ago. ``[retention]`` in the
configuration (days per kind, by plural: ``events = 14``) says how long; a kind not named is
kept for ever. ``icsmon index`` prunes at start and every ``[retention] interval_s``;
``icsmon index prune`` once (``--dry-run`` to list).

Only names that are exactly a kind's daily index under this prefix are touched (not the
``<prefix>-latest-*`` indices, not another prefix that starts the same way), by name, never
by wildcard. A document that arrives for a day already past its kind's retention (a sensor's
spool replayed after a long outage) is not indexed: it would bring back the index the next
prune removes (the indexer counts it as ``expired``).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pipeline import kinds

log = logging.getLogger(__name__)

DAY_S = 86400


@dataclass(frozen=True, slots=True)
class DailyIndex:
    kind: str
    name: str
    day: datetime  # the UTC day's start
    docs: int
    bytes: int


def horizon(days: float, now: float) -> float:
    """Epoch seconds before which a kind kept ``days`` days has nothing."""
    return now - days * DAY_S


def expired_day(day_start: datetime, days: float, now: float) -> bool:
    """Whether a whole UTC day (starting at ``day_start``) is older than ``days``."""
    return (day_start + timedelta(days=1)).timestamp() <= horizon(days, now)


def daily_indices(client: Any, prefix: str, kind: str) -> list[DailyIndex]:
    """This prefix's daily indices of ``kind``, oldest first."""
    alias = kinds.get(kind).alias(prefix)
    pattern = re.compile(rf"^{re.escape(alias)}-(\d{{4}})\.(\d{{2}})\.(\d{{2}})$")
    rows = client.cat.indices(
        index=f"{alias}-*", format="json", h="index,docs.count,store.size", bytes="b"
    )
    out: list[DailyIndex] = []
    for row in rows:
        match = pattern.match(str(row.get("index", "")))
        if not match:
            continue
        try:
            day = datetime(*map(int, match.groups()), tzinfo=UTC)
        except ValueError:  # 2026.13.40: not a day, not ours to judge
            continue
        out.append(DailyIndex(kind, row["index"], day, int(row.get("docs.count") or 0), _int(row)))
    return sorted(out, key=lambda d: d.day)


def _int(row: Mapping[str, Any]) -> int:
    try:
        return int(row.get("store.size") or 0)
    except (TypeError, ValueError):
        return 0


def plan(
    client: Any, prefix: str, days_by_kind: Mapping[str, float], now: float | None = None
) -> list[DailyIndex]:
    """The daily indices older than their kind's retention (kinds with 0 days: none)."""
    now = time.time() if now is None else now
    out: list[DailyIndex] = []
    for kind, days in days_by_kind.items():
        if not days or days <= 0:
            continue
        out += [d for d in daily_indices(client, prefix, kind) if expired_day(d.day, days, now)]
    return out


def prune(
    client: Any,
    prefix: str,
    days_by_kind: Mapping[str, float],
    now: float | None = None,
    dry_run: bool = False,
) -> list[DailyIndex]:
    """Delete (unless ``dry_run``) the daily indices past retention; what was (or would be)
    deleted."""
    doomed = plan(client, prefix, days_by_kind, now)
    if dry_run or not doomed:
        return doomed
    for lo in range(0, len(doomed), 50):  # names in the URL: a few at a time
        names = [d.name for d in doomed[lo : lo + 50]]
        client.indices.delete(index=",".join(names), ignore_unavailable=True)
        log.info("retention: deleted %s", ", ".join(names))
    return doomed


class Schedule:
    """Prunes every ``interval_s`` (the indexer calls :meth:`due` from its loop)."""

    def __init__(self, days_by_kind: Mapping[str, float], interval_s: float) -> None:
        self.days = {k: v for k, v in days_by_kind.items() if v and v > 0}
        self.interval_s = interval_s
        self.next_at = 0.0  # at start

    def due(self, mono: float) -> bool:
        return bool(self.days) and mono >= self.next_at

    def done(self, mono: float) -> None:
        self.next_at = mono + self.interval_s
