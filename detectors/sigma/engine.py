"""The in-stream Sigma engine: events in, ECS alerts out.

Dispatch: rules are grouped by logsource service (``network.protocol`` of the event); a
rule with no service sees every ICS event. Within a group, rules with an *anchor* (a field
that must hold one of a fixed set of values, e.g. ``modbus.function_code`` in {5, 6, 15})
are indexed by that value, so an event is only evaluated by rules it can possibly fire.
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
from detectors.sigma.correlation import Correlation
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
    predicate: Predicate
    output: bool
    correlations: tuple[int, ...]  # indexes into SigmaEngine._correlations
    name: str  # reference name used by correlations (Sigma name or id)


class _Group:
    """The rules one protocol's events are offered to."""

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
        self.size = len(rules)

    def candidates(self, event: Event) -> list[_Rule] | tuple[_Rule, ...]:
        hits: list[_Rule] | None = None
        for field, table in self.tables:
            v = event.get(field)
            if v is None:
                continue
            if type(v) is list:
                found: list[_Rule] = []
                for x in v:
                    k = value_key(x)
                    if k is not None:
                        found.extend(table.get(k, ()))
            else:
                k = value_key(v)
                found = table.get(k, ()) if k is not None else ()  # type: ignore[assignment]
            if found:
                hits = list(found) if hits is None else hits + list(found)
        if hits is None:
            return self.always
        hits.extend(self.always)
        if len(hits) > 1:
            seen: dict[int, _Rule] = {r.index: r for r in hits}
            return [seen[i] for i in sorted(seen)]
        return hits


def event_time(event: Event) -> float:
    """Event time in epoch seconds from ``@timestamp`` (ISO 8601 or a number)."""
    ts = event.get("@timestamp")
    if type(ts) is str:
        try:
            return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()
        except ValueError:
            return 0.0
    if isinstance(ts, int | float):
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
        refs: dict[str, list[int]] = {}
        for ci, c in enumerate(pack.correlations):
            state = Correlation(
                c.kind, c.rule_names, c.group_by, c.timespan, c.threshold, c.op,
                c.value_field, c.aliases, max_groups=max_correlation_groups,
            )
            self._correlations.append((c, state))
            for rid, name in zip(c.rules, c.rule_names, strict=True):
                refs.setdefault(rid, []).append(ci)
        self._names: dict[tuple[int, str], str] = {}
        for ci, c in enumerate(pack.correlations):
            for rid, name in zip(c.rules, c.rule_names, strict=True):
                self._names[(ci, rid)] = name
        self.rules: list[LoadedRule] = pack.rules
        compiled: list[tuple[_Rule, LoadedRule]] = []
        for i, r in enumerate(pack.rules):
            compiled.append(
                (
                    _Rule(i, r.meta, r.compiled.predicate, r.output,
                          tuple(refs.get(r.meta.id, ())), r.name or r.meta.id),
                    r,
                )
            )
        services = {r.service for r in pack.rules if r.service}
        generic = [(cr, lr.compiled.anchor) for cr, lr in compiled if lr.service is None]
        self._groups: dict[str, _Group] = {
            s: _Group(
                [(cr, lr.compiled.anchor) for cr, lr in compiled if lr.service in (s, None)]
            )
            for s in services
        }
        self._generic = _Group(generic)
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
        """Offer one event to the rules; returns the alerts that are complete now."""
        stats = self._stats
        stats["events"] += 1
        group = self._groups.get(event.get("network.protocol"))  # type: ignore[arg-type]
        if group is None:
            group = self._generic
        out: list[Event] = []
        ts: float | None = None
        if self._dedup.pending:
            ts = event_time(event)
            out.extend(self._dedup.tick(ts))
        matched: list[_Rule] | None = None
        candidates = group.candidates(event)
        stats["evaluations"] += len(candidates)
        for rule in candidates:
            try:
                hit = rule.predicate(event)
            except Exception:  # a predicate bug must not stop the sensor: count, log once
                stats["errors"] += 1
                if stats["errors"] == 1:
                    log.exception("rule %s failed on an event", rule.meta.id)
                continue
            if hit:
                if matched is None:
                    matched = [rule]
                else:
                    matched.append(rule)
        if matched is None:
            return out
        stats["matches"] += len(matched)
        if ts is None:
            ts = event_time(event)
        eid = event_identity(event)
        fed: dict[int, list[str]] = {}
        for rule in matched:
            if rule.output:
                out.extend(self._dedup.add(rule.meta, event, ts))
            for ci in rule.correlations:
                fed.setdefault(ci, []).append(self._names[(ci, rule.meta.id)])
        for ci, names in fed.items():
            out.extend(self._correlate(ci, names, event, ts, eid))
        stats["alerts"] += len(out)
        return out

    def _correlate(self, ci: int, names: list[str], event: Event, ts: float, eid: str) -> list[Event]:
        corr, state = self._correlations[ci]
        if corr.kind in ("event_count", "value_count"):
            names = names[:1]  # one event counts once, whichever base rules it matched
        elif corr.kind == "temporal_ordered":
            # Later steps first, so one event cannot complete two steps of the same chain.
            names = sorted(names, key=corr.rule_names.index, reverse=True)
        out: list[Event] = []
        for name in names:
            firing = state.feed(name, event, ts, eid)
            if firing is None:
                continue
            key = "|".join(f"{k}={v}" for k, v in firing.group.items()) or "all"
            extra = {
                "icsmon.correlation.type": corr.kind,
                "icsmon.correlation.value": firing.value,
                "icsmon.correlation.timespan": corr.timespan,
                "icsmon.correlation.group": {k: _plain(v) for k, v in firing.group.items()},
                "icsmon.correlation.rules": list(corr.rules),
            }
            start = _iso_from(firing.start_ts)
            out.extend(
                self._dedup.add(
                    corr.meta, event, ts, key=f"corr:{key}", event_ids=firing.event_ids,
                    start=start, extra=extra,
                )
            )
        return out

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


def _plain(v: Any) -> Any:
    return list(v) if isinstance(v, tuple) else v


def _iso_from(ts: float) -> str:
    from datetime import UTC

    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
