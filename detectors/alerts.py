"""Alerts (docs/schema.md): ECS documents built from a rule match, and burst de-duplication.

An alert is the triggering event's fields (source, destination, network, the protocol
fields that fired it) plus ``rule.*`` from the rule's metadata, ``event.severity`` from its
level and ``threat.*`` from its ``attack.t0xxx`` tags. Its ``event.id`` is derived from the
rule and the first triggering event, so replaying a capture gives the same ids.

De-duplication: matches of the same rule on the same flow (``network.community_id``; for a
correlation, the same group) within ``window`` seconds of *event time* become one alert,
held until the window ends (a later event, :meth:`Deduplicator.tick` or
:meth:`Deduplicator.flush`), whose ``icsmon.alert.count`` says how many matches it stands for.
A window of 0 emits every match at once.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from detectors.attack_ics import FRAMEWORK, TACTIC_NAMES, TACTICS, TECHNIQUES
from sensor.digests import blake2b

SEVERITY: dict[str, int] = {
    "informational": 1,
    "low": 21,
    "medium": 47,
    "high": 73,
    "critical": 99,
}

_INF = float("inf")
MAX_EVENT_IDS = 100  # triggering event ids kept per alert (the count keeps going)

# Event fields an alert does not inherit: they describe the event, not the alert.
_NOT_INHERITED = frozenset({"event.id", "event.kind", "event.category", "event.duration", "ts"})


@dataclass(frozen=True, slots=True)
class RuleMeta:
    """What an alert needs to know about the rule that fired."""

    id: str
    name: str
    level: str
    description: str = ""
    author: str = ""
    references: tuple[str, ...] = ()
    techniques: tuple[str, ...] = ()  # T0xxx ids from the tags
    tactics: tuple[str, ...] = ()  # tactic short names from tags (plus the techniques')
    tags: tuple[str, ...] = ()
    path: str = ""
    correlation: str | None = None  # correlation type, None for a single-event rule

    @property
    def severity(self) -> int:
        return SEVERITY.get(self.level, SEVERITY["medium"])


def _digest(*parts: Any) -> str:
    return blake2b(
        "|".join(str(p) for p in parts).encode("utf-8", "surrogatepass"), digest_size=16
    ).hexdigest()


def event_identity(event: dict[str, Any]) -> str:
    """The event's id, or a stable digest of what identifies it when it has none."""
    eid = event.get("event.id")
    if eid:
        return str(eid)
    return _digest(
        event.get("@timestamp"),
        event.get("network.community_id"),
        event.get("event.action"),
        event.get("source.ip"),
        event.get("source.port"),
    )


_LIST_FIELDS = (
    "event.category",
    "rule.reference",
    "threat.technique.id",
    "threat.technique.name",
    "threat.technique.reference",
    "threat.tactic.id",
    "threat.tactic.name",
    "tags",
)
#: id(rule) -> (rule, the fields an alert takes from it): the same for every alert of a rule
_RULE_FIELDS: dict[int, tuple[RuleMeta, dict[str, Any]]] = {}


def _rule_fields(rule: RuleMeta) -> dict[str, Any]:
    hit = _RULE_FIELDS.get(id(rule))
    if hit is not None and hit[0] is rule:
        return hit[1]
    techniques = [TECHNIQUES[t] for t in rule.techniques if t in TECHNIQUES]
    tactics: list[str] = []
    for name in (*rule.tactics, *(tac for t in techniques for tac in t.tactics)):
        if name not in tactics:
            tactics.append(name)
    fields = {
        "event.kind": "alert",
        "event.category": ["network", "intrusion_detection"],
        "event.severity": rule.severity,
        "event.id": None,  # per alert; here for its place in the document
        "rule.id": rule.id,
        "rule.name": rule.name,
        "rule.description": rule.description,
        "rule.author": rule.author,
        "rule.reference": list(rule.references),
        "rule.ruleset": "sigma",
        "threat.framework": FRAMEWORK,
        "threat.technique.id": [t.id for t in techniques],
        "threat.technique.name": [t.name for t in techniques],
        "threat.technique.reference": [t.reference for t in techniques],
        "threat.tactic.id": [TACTICS[t] for t in tactics],
        "threat.tactic.name": [TACTIC_NAMES[t] for t in tactics],
        "icsmon.alert.count": 1,
        "icsmon.alert.event_ids": None,
        "tags": list(rule.tags),
    }
    if len(_RULE_FIELDS) >= 100_000:  # rule packs reloaded many times over: start afresh
        _RULE_FIELDS.clear()
    _RULE_FIELDS[id(rule)] = (rule, fields)
    return fields


def build_alert(
    rule: RuleMeta,
    event: dict[str, Any],
    *,
    count: int = 1,
    event_ids: list[str] | None = None,
    start: float | str | None = None,
    end: float | str | None = None,
    extra: dict[str, Any] | None = None,
    key: str = "",
    owned: bool = False,
) -> dict[str, Any]:
    """A flat ECS alert for ``rule`` fired by ``event`` (the first of ``event_ids``);
    ``owned``: ``event`` is a copy no one else holds, made into the alert in place."""
    ids = list(event_ids) if event_ids else [event_identity(event)]
    alert = event if owned else dict(event)
    for name in _NOT_INHERITED:
        if name in alert:
            del alert[name]
    alert.update(_rule_fields(rule))
    for name in _LIST_FIELDS:  # each alert its own lists
        alert[name] = alert[name][:]
    alert["event.id"] = _digest("alert", rule.id, key, ids[0])
    alert["icsmon.alert.count"] = count
    alert["icsmon.alert.event_ids"] = ids[:MAX_EVENT_IDS]
    if start:
        alert["event.start"] = start
    if end:
        alert["event.end"] = end
    if extra:
        alert.update(extra)
    return alert


@dataclass(slots=True)
class _Pending:
    rule: RuleMeta
    event: dict[str, Any]
    key: str
    first_ts: float
    first_time: float | str | None  # @timestamp: a number inside the process, text in old callers
    last_time: float | str | None
    count: int
    event_ids: list[str]
    extra: dict[str, Any] | None


class Deduplicator:
    """Holds alerts for ``window`` seconds of event time, merging repeats of (rule, flow)."""

    def __init__(self, window: float = 60.0, max_pending: int = 10_000) -> None:
        self.window = float(window)
        self.max_pending = max_pending
        self._pending: OrderedDict[tuple[str, str], _Pending] = OrderedDict()
        self.merged = 0  # matches folded into an earlier alert
        self.emitted = 0
        self.forced = 0  # alerts released early because max_pending was reached
        self.next_due = _INF  # event time at which the oldest held alert is due

    @staticmethod
    def flow_key(event: dict[str, Any]) -> str:
        cid = event.get("network.community_id")
        if cid:
            return str(cid)
        return "|".join(
            str(event.get(k))
            for k in ("source.ip", "source.port", "destination.ip", "destination.port")
        )

    def add(
        self,
        rule: RuleMeta,
        event: dict[str, Any],
        ts: float,
        *,
        key: str | None = None,
        event_ids: list[str] | None = None,
        start: float | str | None = None,
        extra: dict[str, Any] | None = None,
        keep_first: bool = False,
    ) -> list[dict[str, Any]]:
        """Record a match at event time ``ts``; returns alerts whose window has ended.

        A repeat replaces the held alert's ``extra`` with its own (a correlation's latest
        count), or leaves the first one's with ``keep_first`` (the alert then describes its
        first match throughout)."""
        out = self.tick(ts) if ts >= self.next_due else []
        ids = event_ids or [event_identity(event)]
        group = key if key is not None else self.flow_key(event)
        when = event.get("@timestamp")
        if self.window <= 0:
            self.emitted += 1
            out.append(
                build_alert(
                    rule,
                    event,
                    count=1,
                    event_ids=ids,
                    start=start or when,
                    end=when,
                    extra=extra,
                    key=group,
                )
            )
            return out
        slot = (rule.id, group)
        pending = self._pending.get(slot)
        if pending is not None:
            self.merged += 1
            pending.count += 1
            pending.last_time = when
            room = MAX_EVENT_IDS - len(pending.event_ids)
            if room > 0:  # ids of later matches are new events: no membership test needed
                pending.event_ids.extend(ids[:room])
            if extra and not keep_first:
                pending.extra = extra
            return out
        self._pending[slot] = _Pending(
            rule, dict(event), group, ts, start or when, when, 1, list(ids[:MAX_EVENT_IDS]), extra
        )
        if len(self._pending) > self.max_pending:
            self.forced += 1
            out.append(self._release(next(iter(self._pending))))
        if len(self._pending) == 1 or slot not in self._pending:
            self._update_due()
        return out

    def _release(self, slot: tuple[str, str]) -> dict[str, Any]:
        p = self._pending.pop(slot)
        self._update_due()
        self.emitted += 1
        return build_alert(
            p.rule,
            p.event,  # the held copy, made into the alert
            count=p.count,
            event_ids=p.event_ids,
            start=p.first_time,
            end=p.last_time,
            extra=p.extra,
            key=p.key,
            owned=True,
        )

    def tick(self, now: float) -> list[dict[str, Any]]:
        """Release alerts whose window ended before ``now`` (event time, epoch seconds)."""
        out: list[dict[str, Any]] = []
        pending = self._pending
        while pending:
            slot, p = next(iter(pending.items()))
            if now < p.first_ts + self.window:
                break
            out.append(self._release(slot))
        return out

    def flush(self) -> list[dict[str, Any]]:
        out = [self._release(slot) for slot in list(self._pending)]
        return out

    @property
    def pending(self) -> int:
        return len(self._pending)

    def _update_due(self) -> None:
        # Event time at which the oldest held alert is released (inf: none held).
        self.next_due = (
            next(iter(self._pending.values())).first_ts + self.window if self._pending else _INF
        )
