"""The in-stream Sigma engine: events in, ECS alerts out.

Dispatch, so an event is only evaluated by rules it can possibly fire:

- by ``event.dataset``: the pipeline gives every protocol rule the condition
  ``event.dataset: ics.<service>``; the engine tests it once per event by picking the
  dataset's group (rules without a service are in every group);
- by anomaly or not: rules that require (or exclude) ``event.action: anomaly`` sit only in
  the half of the group that can match;
- by *anchor*: a field that must hold one of a fixed set of values (e.g.
  ``modbus.function_code`` in {5, 6, 15, 16, 22, 23}) indexes the rule by those values.

What dispatch has tested is left out of the compiled predicate a candidate still runs
(``Compiled.residual``). Events of odd shapes (a list where a string belongs) bypass the
shortcuts and meet every rule's whole predicate, so the answer never depends on dispatch.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from detectors.alerts import Deduplicator, RuleMeta, event_identity
from detectors.sigma.compiler import Predicate, value_key
from detectors.sigma.correlation import Correlation, Firing
from detectors.sigma.loader import (
    LoadedCorrelation,
    LoadedRule,
    Pack,
    Problem,
    RuleLoadError,
    load_pack,
    resolve_placeholders,
)

log = logging.getLogger(__name__)

Event = dict[str, Any]


@dataclass(slots=True)
class _Rule:
    index: int
    meta: RuleMeta
    predicate: Predicate  # the whole condition
    check: Predicate  # what is left to test once dispatch has found the rule (anchor removed)
    output: bool
    feeds: tuple[tuple[int, str], ...]  # (correlation index, name the correlation knows it by)


class _Index:
    """Rules indexed by their anchor value; rules without an anchor are always candidates."""

    def __init__(self, rules: list[tuple[_Rule, tuple[str, frozenset[Any]] | None]]) -> None:
        always: list[_Rule] = []
        tables: dict[str, dict[Any, list[_Rule]]] = {}
        for rule, anchor in rules:
            if anchor is None:
                always.append(rule)
                continue
            field, keys = anchor
            table = tables.setdefault(field, {})
            for k in keys:
                table.setdefault(k, []).append(rule)
        self.always: tuple[_Rule, ...] = tuple(always)
        self.tables: tuple[tuple[str, dict[Any, tuple[_Rule, ...]]], ...] = tuple(
            (f, {k: tuple(v) for k, v in t.items()}) for f, t in tables.items()
        )

    def candidates(self, event: Event) -> list[_Rule] | tuple[_Rule, ...]:
        hits: list[_Rule] | None = None
        for field, table in self.tables:
            v = event.get(field)
            if v is None:
                continue
            t = type(v)
            if t is int:
                found = table.get(v, ())
            elif t is str:
                found = table.get(v.casefold(), ())
            elif t is list:
                found = []
                for x in v:
                    k = value_key(x)
                    if k is not None:
                        found.extend(table.get(k, ()))
            else:
                k = value_key(v)
                found = table.get(k, ()) if k is not None else ()
            if found:
                hits = list(found) if hits is None else hits + list(found)
        if hits is None:
            return self.always
        hits.extend(self.always)
        if len(hits) > 1:
            # Rule order, each rule once (a list-valued field can hit one rule twice).
            unique: dict[int, _Rule] = {r.index: r for r in hits}
            return [unique[i] for i in sorted(unique)]
        return hits


class _Group:
    """The rules an event of one dataset is offered to, split by anomaly / transaction."""

    def __init__(self, rules: list[tuple[_Rule, LoadedRule]]) -> None:
        self.anomaly = _Index([(r, lr.compiled.anchor) for r, lr in rules if lr.compiled.kind != "transaction"])
        self.transaction = _Index([(r, lr.compiled.anchor) for r, lr in rules if lr.compiled.kind != "anomaly"])


_second_cache: dict[str, float] = {}


def event_time(event: Event) -> float:
    """Event time in epoch seconds from ``@timestamp`` (ISO 8601 or a number)."""
    ts = event.get("@timestamp")
    if type(ts) is str:
        # Fast path for the sensor's own format, 2026-11-26T10:00:00.123456Z: events of
        # one second share the parse of their first 19 characters.
        if len(ts) == 27 and ts[19] == "." and ts[26] == "Z":
            head = ts[:19]
            sec = _second_cache.get(head)
            if sec is None:
                try:
                    sec = datetime.fromisoformat(head + "+00:00").timestamp()
                except ValueError:
                    sec = None
                if sec is not None:
                    if len(_second_cache) > 4096:
                        _second_cache.clear()
                    _second_cache[head] = sec
            frac = ts[20:26]
            if sec is not None and frac.isdigit():
                return sec + int(frac) / 1e6
        try:
            return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()
        except ValueError:
            return 0.0
    if isinstance(ts, int | float) and not isinstance(ts, bool):
        return float(ts)
    if isinstance(ts, datetime):
        return ts.timestamp()
    return 0.0


class SigmaEngine:
    """Compiled rule pack with correlation state and alert de-duplication."""

    def __init__(
        self,
        pack: Pack,
        *,
        dedup_window: float = 60.0,
        max_pending_alerts: int = 10_000,
        max_correlation_groups: int = 10_000,
    ) -> None:
        self.pack = pack
        self.problems: list[Problem] = list(pack.problems)
        self._dedup = Deduplicator(dedup_window, max_pending_alerts)
        self._correlations: list[tuple[LoadedCorrelation, Correlation]] = []
        feeds: dict[str, list[tuple[int, str]]] = {}
        for ci, c in enumerate(pack.correlations):
            state = Correlation(
                c.kind, c.rule_names, c.group_by, c.timespan, c.threshold, c.op,
                c.value_field, c.aliases, max_groups=max_correlation_groups,
            )
            self._correlations.append((c, state))
            for rid, name in zip(c.rules, c.rule_names, strict=True):
                feeds.setdefault(rid, []).append((ci, name))
        self.rules: list[LoadedRule] = pack.rules
        compiled: list[tuple[_Rule, LoadedRule]] = []
        for i, r in enumerate(pack.rules):
            cr = _Rule(
                i, r.meta, r.compiled.predicate, r.compiled.residual,
                r.output, tuple(feeds.get(r.meta.id, ())),
            )
            compiled.append((cr, r))
        # Dispatch by event.dataset: a rule whose dataset test was hoisted sits only in its
        # dataset's group; every other rule in every group (and in the fallback group).
        datasets = {lr.compiled.dataset for _, lr in compiled if lr.compiled.dataset}
        anywhere = [(cr, lr) for cr, lr in compiled if lr.compiled.dataset is None]
        self._groups: dict[str, _Group] = {
            ds: _Group([(cr, lr) for cr, lr in compiled if lr.compiled.dataset == ds] + anywhere)
            for ds in datasets
        }
        self._fallback = _Group(anywhere)
        self._all: tuple[_Rule, ...] = tuple(cr for cr, _ in compiled)
        self._last_second: str | None = None
        self._time_second: str | None = None  # see _time()
        self._time_base = 0.0
        self._stats = {
            "events": 0,
            "evaluations": 0,
            "matches": 0,
            "alerts": 0,
            "errors": 0,
        }

    # --- construction -------------------------------------------------------------------

    @classmethod
    def load(
        cls,
        rules_dir: Path | None = None,
        site_config: Path | None = None,
        placeholders: Mapping[str, list[str]] | None = None,
        *,
        strict: bool = True,
        dedup_window: float = 60.0,
        max_pending_alerts: int = 10_000,
        max_correlation_groups: int = 10_000,
    ) -> SigmaEngine:
        """Load and compile a rule pack (None: the shipped ``rules/``).

        Placeholder values: ``site_config`` wins over ``placeholders`` (e.g. from a baseline).
        With ``strict`` any refused rule raises :class:`RuleLoadError` listing every problem;
        otherwise refused rules are logged, kept in ``problems`` and left out.
        """
        values = resolve_placeholders(site_config, placeholders)
        pack = load_pack([Path(rules_dir)] if rules_dir is not None else None, values)
        errors = [p for p in pack.problems if p.severity == "error"]
        if errors and strict:
            raise RuleLoadError(errors)
        for p in errors:
            log.error("rule refused: %s", p)
        return cls(
            pack,
            dedup_window=dedup_window,
            max_pending_alerts=max_pending_alerts,
            max_correlation_groups=max_correlation_groups,
        )

    # --- processing ---------------------------------------------------------------------

    def process(self, event: Event) -> list[Event]:
        """Offer one event to the rules; returns the alerts that are complete now.

        Never raises: a failure (a bug, an event of a shape nothing expected) is counted in
        ``stats["errors"]``, logged once, and the event skipped."""
        try:
            return self._process(event)
        except Exception:
            self._stats["errors"] += 1
            if self._stats["errors"] == 1:
                log.exception("event could not be processed by the Sigma engine")
            return []

    def _time(self, event: Event) -> float:
        """event_time() with the last second's parse kept: consecutive events mostly share it."""
        stamp = event.get("@timestamp")
        if type(stamp) is str and len(stamp) == 27 and stamp[26] == "Z" and stamp[19] == ".":
            if stamp[:19] == self._time_second:
                frac = stamp[20:26]
                if frac.isdigit():
                    return self._time_base + int(frac) / 1e6
            ts = event_time(event)
            sec = _second_cache.get(stamp[:19])  # filled by event_time's own fast path
            if sec is not None:
                self._time_second = stamp[:19]
                self._time_base = sec  # same float event_time adds to: identical results
            return ts
        return event_time(event)

    def _candidates(self, event: Event) -> tuple[list[_Rule] | tuple[_Rule, ...], bool]:
        """(rules to test, whether to test their residual rather than the whole predicate)."""
        ds = event.get("event.dataset")
        if type(ds) is str:
            group = self._groups.get(ds)
            if group is None:
                group = self._groups.get(ds.casefold(), self._fallback)
        elif ds is None:
            group = self._fallback
        else:  # an odd shape (a list...): no shortcuts, every rule's whole predicate
            return self._all, False
        action = event.get("event.action")
        if type(action) is str:
            anomalous = action == "anomaly" or (action[:1] in "aA" and action.casefold() == "anomaly")
            index = group.anomaly if anomalous else group.transaction
        elif action is None:
            index = group.transaction
        else:
            return self._all, False
        return index.candidates(event), True

    def _process(self, event: Event) -> list[Event]:
        stats = self._stats
        stats["events"] += 1
        out: list[Event] = []
        ts: float | None = None
        dedup = self._dedup
        if dedup.pending:
            # Held alerts are released at most once per second of event time: most events
            # share their second with the previous one and skip the timestamp parse.
            stamp = event.get("@timestamp")
            second = stamp[:19] if type(stamp) is str else None
            if second is None or second != self._last_second:
                self._last_second = second
                ts = self._time(event)
                if ts >= dedup.next_due:
                    out.extend(dedup.tick(ts))
        matched: list[_Rule] | None = None
        # Dispatch (as in _candidates, inlined: this runs for every event).
        ds = event.get("event.dataset")
        action = event.get("event.action")
        group = self._groups.get(ds) if type(ds) is str else None  # type: ignore[arg-type]
        if group is not None and type(action) is str and action != "anomaly" and action[:1] not in "aA":
            candidates = group.transaction.candidates(event)
            stats["evaluations"] += len(candidates)
            for rule in candidates:
                if rule.check(event):
                    if matched is None:
                        matched = [rule]
                    else:
                        matched.append(rule)
        else:
            candidates, residual = self._candidates(event)
            stats["evaluations"] += len(candidates)
            for rule in candidates:
                if (rule.check if residual else rule.predicate)(event):
                    if matched is None:
                        matched = [rule]
                    else:
                        matched.append(rule)
        if matched is None:
            if out:
                stats["alerts"] += len(out)
            return out
        stats["matches"] += len(matched)
        if ts is None:
            ts = self._time(event)
        feeds: list[tuple[int, str]] | None = None
        for rule in matched:
            if rule.output:
                out.extend(dedup.add(rule.meta, event, ts))
            if rule.feeds:
                feeds = list(rule.feeds) if feeds is None else feeds + list(rule.feeds)
        if feeds is not None:
            eid = event_identity(event)
            keys: dict[tuple[str, ...], Any] = {}  # group keys shared by correlations
            if len(feeds) > 1 and len({ci for ci, _ in feeds}) < len(feeds):
                # One event matched several base rules of one correlation.
                by_corr: dict[int, list[str]] = {}
                for ci, name in feeds:
                    by_corr.setdefault(ci, []).append(name)
                for ci, names in by_corr.items():
                    out.extend(self._correlate(ci, names, event, ts, eid, keys))
            else:
                correlations = self._correlations
                for ci, name in feeds:
                    corr, state = correlations[ci]
                    firing = state.feed(name, event, ts, eid, keys)
                    if firing is not None:
                        out.extend(self._fired(corr, firing, event, ts))
        stats["alerts"] += len(out)
        return out

    def _correlate(
        self, ci: int, names: list[str] | tuple[str, ...], event: Event, ts: float, eid: str,
        keys: dict[tuple[str, ...], Any],
    ) -> list[Event]:
        corr, state = self._correlations[ci]
        if len(names) == 1:
            firing = state.feed(names[0], event, ts, eid, keys)
            return [] if firing is None else self._fired(corr, firing, event, ts)
        if corr.kind in ("event_count", "value_count"):
            names = names[:1]  # one event counts once, whichever base rules it matched
        elif corr.kind == "temporal_ordered":
            # Later steps first, so one event cannot complete two steps of the same chain.
            names = sorted(names, key=corr.rule_names.index, reverse=True)
        out: list[Event] = []
        for name in names:
            firing = state.feed(name, event, ts, eid, keys)
            if firing is not None:
                out.extend(self._fired(corr, firing, event, ts))
        return out

    def _fired(self, corr: LoadedCorrelation, firing: Firing, event: Event, ts: float) -> list[Event]:
        key = "|".join(f"{k}={v}" for k, v in firing.group.items()) or "all"
        extra = {
            "icsmon.correlation.type": corr.kind,
            "icsmon.correlation.value": firing.value,
            "icsmon.correlation.timespan": corr.timespan,
            # The group as one keyword (nested objects with dotted keys would not index
            # well); the values themselves are in the alert's own fields.
            "icsmon.correlation.group_by": list(firing.group),
            "icsmon.correlation.key": key,
            "icsmon.correlation.rules": list(corr.rules),
        }
        return self._dedup.add(
            corr.meta, event, ts, key=f"corr:{key}", event_ids=firing.event_ids,
            start=_iso_from(firing.start_ts), extra=extra,
        )

    def tick(self, now: float) -> list[Event]:
        """Release held alerts whose de-duplication window ended before ``now`` (epoch s).

        A live sensor calls this from time to time with the capture clock, so a quiet
        network still delivers its last alerts."""
        out = self._dedup.tick(now)
        self._stats["alerts"] += len(out)
        return out

    def flush(self) -> list[Event]:
        """End of input: every held alert. Correlation windows still open are dropped (their
        condition was not met)."""
        out = self._dedup.flush()
        self._stats["alerts"] += len(out)
        return out

    @property
    def stats(self) -> dict[str, int]:
        s = dict(self._stats)
        s["rules"] = len(self.pack.rules)
        s["correlations"] = len(self.pack.correlations)
        s["refused"] = len([p for p in self.problems if p.severity == "error"])
        s["alerts_pending"] = self._dedup.pending
        s["alerts_merged"] = self._dedup.merged
        s["alerts_forced"] = self._dedup.forced
        s["correlation_groups"] = sum(st.groups for _, st in self._correlations)
        s["correlation_evicted"] = sum(st.evicted for _, st in self._correlations)
        return s


def _iso_from(ts: float) -> str:
    from datetime import UTC

    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
