"""Sigma correlation rules evaluated on event time, with bounded, expiring state.

Windows slide on the events' own timestamps (capture time), so a replayed capture fires the
same alerts as the live traffic did. A window fires when the condition is met by the events
of the last ``timespan`` seconds; the group's state is then cleared, so a sustained attack
fires once per window's worth of events (and de-duplication merges those).

State per correlation is keyed by the group-by values; each key keeps at most what its
condition needs (``count`` timestamps, ``count`` distinct values, one time per rule), keys
idle longer than the timespan are evicted, and at most ``max_groups`` keys live at once
(least recently updated evicted first, counted in ``stats``). Elasticsearch hunts of the
same rules (ES|QL) use tumbling buckets, so their counts can differ at bucket edges.

Value-count correlations that the same single base rule feeds, with the same group-by
fields, timespan and group limit, can share one group table (:class:`SharedValueCount`):
one key lookup and LRU move per event instead of one per correlation, with each member's
window, firings, expiry and eviction exactly those of a separate :class:`Correlation`.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any

Event = dict[str, Any]

SUPPORTED_TYPES = ("event_count", "value_count", "temporal", "temporal_ordered")
SUPPORTED_OPS = ("gte", "gt")
_UNSET = object()


@dataclass(slots=True)
class Firing:
    """A correlation whose condition was met: the alert is built from this."""

    event: Event  # the event that completed the condition
    group: dict[str, Any]  # group-by field -> value
    value: int  # the count reached (events, distinct values or rules)
    event_ids: list[str]
    start_ts: float  # time of the first event in the window


@dataclass(slots=True)
class _Group:
    last: float = 0.0
    times: deque[tuple[float, str]] = field(default_factory=deque)  # event_count: (ts, id)
    values: dict[Any, tuple[float, str]] = field(default_factory=dict)  # value_count
    steps: dict[int, tuple[float, float, list[str]]] = field(default_factory=dict)  # temporal


class Correlation:
    """One correlation rule's state machine. ``feed`` is called when a base rule matched."""

    def __init__(
        self,
        kind: str,
        rule_names: list[str],
        group_by: list[str],
        timespan: float,
        threshold: int,
        op: str,
        value_field: str | None = None,
        aliases: dict[str, dict[str, str]] | None = None,
        max_groups: int = 10_000,
    ) -> None:
        if kind not in SUPPORTED_TYPES:
            raise ValueError(f"correlation type {kind!r} is not supported")
        if op not in SUPPORTED_OPS:
            raise ValueError(
                f"correlation condition {op!r} is not supported in a stream (only gte/gt: "
                "'fewer than' needs the window to end)"
            )
        self.kind = kind
        self.rule_names = rule_names
        self.group_by = group_by
        self.timespan = float(timespan)
        self.need = threshold + 1 if op == "gt" else threshold  # smallest count that fires
        self.value_field = value_field
        self.aliases = aliases or {}
        self.max_groups = max_groups
        self._groups: OrderedDict[tuple[Any, ...], _Group] = OrderedDict()
        self._latest = float("-inf")
        self._next_expiry = float("-inf")
        # Per base rule: the event fields holding its group-by values and counted value.
        self._sources: dict[str, tuple[str, ...]] = {
            name: tuple(self.aliases.get(g, {}).get(name, g) for g in group_by)
            for name in rule_names
        }
        self._value_source: dict[str, str] = {
            name: self.aliases.get(value_field, {}).get(name, value_field)
            for name in rule_names
            if value_field
        }
        self.evicted = 0
        self.fired = 0
        self._counts_values = kind == "value_count"
        self._recent: _Group | None = None  # the group fed last (skips an LRU move)
        self._shared: SharedValueCount | None = None  # set when a SharedValueCount holds the state

    def _group_key(self, rule_name: str, event: Event) -> tuple[Any, ...] | None:
        return group_key(self._sources[rule_name], event)

    def _expire(self, now: float) -> None:
        horizon = now - self.timespan
        groups = self._groups
        while groups:
            key, group = next(iter(groups.items()))
            if group.last >= horizon:
                break
            del groups[key]
            if group is self._recent:
                self._recent = None

    def sources(self, rule_name: str) -> tuple[str, ...]:
        """The event fields holding the group-by values for events of ``rule_name``."""
        return self._sources[rule_name]

    def group_key(self, rule_name: str, event: Event) -> tuple[Any, ...] | None:
        """The group an event of ``rule_name`` belongs to (None: it cannot be grouped)."""
        return self._group_key(rule_name, event)

    def feed(
        self,
        rule_name: str,
        event: Event,
        ts: float,
        event_id: str,
        keys: dict[tuple[str, ...], Any] | None = None,
    ) -> Firing | None:
        """A base rule matched ``event`` at event time ``ts``. ``keys`` caches group keys
        between the correlations fed by one event."""
        if keys is None:
            key = self._group_key(rule_name, event)
        else:
            sources = self._sources[rule_name]
            key = keys.get(sources, _UNSET)
            if key is _UNSET:
                key = keys[sources] = self._group_key(rule_name, event)
        return self.feed_key(rule_name, key, event, ts, event_id)

    def feed_key(
        self, rule_name: str, key: tuple[Any, ...] | None, event: Event, ts: float, event_id: str
    ) -> Firing | None:
        """``feed`` with the group key already computed (``group_key``)."""
        if key is None:
            return None
        if ts > self._latest:
            self._latest = ts
            if ts >= self._next_expiry:  # sweep idle groups a few times per timespan
                self._expire(ts)
                self._next_expiry = ts + self.timespan / 4
        groups = self._groups
        group = groups.get(key)
        if group is None:
            group = groups[key] = _Group()
            if len(groups) > self.max_groups:
                groups.popitem(last=False)
                self.evicted += 1
        elif self._recent is not group:  # keep LRU order; the same group again needs no move
            groups.move_to_end(key)
        self._recent = group
        if ts > group.last:
            group.last = ts
        if self._counts_values:
            v = event.get(self._value_source[rule_name])
            if v is None:
                return None
            values = group.values
            t = type(v)
            if t is not int and t is not str:
                v = _hashable(v)
            if len(values) < self.need - 1 or (v in values and len(values) < self.need):
                values[v] = (ts, event_id)  # cannot reach the threshold yet: just remember it
                return None
        horizon = ts - self.timespan
        firing: Firing | None = None
        if self.kind == "event_count":
            times = group.times
            times.append((ts, event_id))
            while times and times[0][0] < horizon:
                times.popleft()
            while len(times) > self.need:
                times.popleft()
            if len(times) >= self.need:
                firing = Firing(event, {}, len(times), [i for _, i in times], times[0][0])
        elif self._counts_values:
            values = group.values
            values[v] = (ts, event_id)
            # Fewer distinct values than needed cannot fire: only then look at their age
            # (the dict never holds more than `need` values, so the scan is short).
            if len(values) >= self.need:
                for old in [k for k, (seen, _) in values.items() if seen < horizon]:
                    del values[old]
            if len(values) >= self.need:
                firing = Firing(
                    event,
                    {},
                    len(values),
                    [i for _, i in values.values()],
                    min(t for t, _ in values.values()),
                )
        else:
            firing = self._temporal(group, rule_name, event, ts, event_id, horizon)
        if firing is None:
            return None
        firing.group = dict(zip(self.group_by, key, strict=True))
        # Start afresh: one firing per window's worth of events.
        del self._groups[key]
        self._recent = None
        self.fired += 1
        return firing

    def _temporal(
        self, group: _Group, rule_name: str, event: Event, ts: float, event_id: str, horizon: float
    ) -> Firing | None:
        index = self.rule_names.index(rule_name)
        steps = group.steps
        if self.kind == "temporal":
            steps[index] = (ts, ts, [event_id])
            live = {i: s for i, s in steps.items() if s[0] >= horizon}
            group.steps = live
            if len(live) >= self.need:
                ids = [i for s in live.values() for i in s[2]]
                return Firing(event, {}, len(live), ids, min(s[0] for s in live.values()))
            return None
        # temporal_ordered: steps[i] = (start of the chain, time of step i, ids) for the
        # chain that completed rules 0..i in order and started latest.
        if index == 0:
            steps[0] = (ts, ts, [event_id])
        else:
            prev = steps.get(index - 1)
            if prev is None or prev[0] < horizon or prev[1] > ts:
                return None
            steps[index] = (prev[0], ts, [*prev[2], event_id])
        if index == len(self.rule_names) - 1 and index in steps:
            start, _, ids = steps[index]
            return Firing(event, {}, len(self.rule_names), ids, start)
        return None

    @property
    def groups(self) -> int:
        if self._shared is not None:
            return self._shared.counts[self._shared.members.index(self)]
        return len(self._groups)


class SharedValueCount:
    """Several value_count correlations fed by the same single base rule, grouped by the
    same fields, with the same timespan and group limit (e.g. the Modbus function code and
    unit id sweeps): one group table, one lookup and one LRU move per event for all of them.

    Each member still has a window of its own per group (a firing clears only the member
    that fired), so the answers are exactly those of separate :class:`Correlation` objects:
    the table's order is the order in which keys were last fed, which, restricted to the
    groups a member holds, is that member's own LRU order; expiry and eviction walk it
    skipping the groups a member does not hold. Members' ``groups``/``evicted``/``fired``
    stay accurate.
    """

    def __init__(self, members: list[Correlation], rule_name: str) -> None:
        first = members[0]
        if (
            not all(
                m.kind == "value_count"
                and m.rule_names == [rule_name]
                and m.sources(rule_name) == first.sources(rule_name)
                and m.timespan == first.timespan
                and m.max_groups == first.max_groups
                for m in members
            )
            or first.max_groups < 1
        ):
            raise ValueError("these correlations cannot share their groups")
        self.members = members
        self.timespan = first.timespan
        self.max_groups = first.max_groups
        self.counts = [0] * len(members)  # groups each member holds
        # (index, member, value field, need - 1, need): need - 1 values cannot fire yet.
        self._members = tuple(
            (i, m, m._value_source[rule_name], m.need - 1, m.need) for i, m in enumerate(members)
        )
        self._order: OrderedDict[tuple[Any, ...], list[_Group | None]] = OrderedDict()
        self._recent: list[_Group | None] | None = None  # the slot fed last
        self._latest = float("-inf")
        self._next_expiry = float("-inf")
        for m in members:
            m._shared = self

    def _expire(self, now: float) -> None:
        horizon = now - self.timespan
        active = list(range(len(self.members)))  # members still sweeping their oldest groups
        emptied: list[tuple[Any, ...]] = []
        for key, slot in self._order.items():
            for i in list(active):
                group = slot[i]
                if group is None:
                    continue  # not one of this member's groups: it does not stop its sweep
                if group.last >= horizon:
                    active.remove(i)
                else:
                    slot[i] = None
                    self.counts[i] -= 1
            if not any(slot):
                emptied.append(key)
            if not active:
                break
        for key in emptied:
            if self._order.pop(key) is self._recent:
                self._recent = None

    def _evict(self, i: int) -> None:
        # The member's least recently fed group (never the slot being fed: it is last).
        for key, slot in self._order.items():
            if slot[i] is not None:
                slot[i] = None
                self.counts[i] -= 1
                self.members[i].evicted += 1
                if not any(slot):
                    del self._order[key]
                return

    def feed(
        self, key: tuple[Any, ...] | None, event: Event, ts: float, event_id: str
    ) -> list[tuple[int, Firing]] | None:
        """The base rule matched ``event``: feed every member, as Correlation.feed_key does.
        Returns (member index, firing) for the members that fired, in member order."""
        if key is None:
            return None
        if ts > self._latest:
            self._latest = ts
            if ts >= self._next_expiry:  # sweep idle groups a few times per timespan
                self._expire(ts)
                self._next_expiry = ts + self.timespan / 4
        order = self._order
        slot = order.get(key)
        if slot is None:
            slot = order[key] = [None] * len(self.members)
        elif slot is not self._recent:
            order.move_to_end(key)
        self._recent = slot
        fired: list[tuple[int, Firing]] | None = None
        sighting: tuple[float, str] | None = None  # (ts, event_id): one tuple for every member
        for i, member, source, below, need in self._members:
            group = slot[i]
            if group is None:
                group = slot[i] = _Group()
                self.counts[i] += 1
                if self.counts[i] > self.max_groups:
                    self._evict(i)
            if ts > group.last:
                group.last = ts
            v = event.get(source)
            if v is None:
                continue
            values = group.values
            t = type(v)
            if t is not int and t is not str:
                v = _hashable(v)
            if sighting is None:
                sighting = (ts, event_id)
            n = len(values)
            if n < below or (n == below and v in values):
                values[v] = sighting  # cannot reach the threshold yet: just remember it
                continue
            values[v] = sighting
            if len(values) >= need:
                horizon = ts - self.timespan
                for old in [k for k, (seen, _) in values.items() if seen < horizon]:
                    del values[old]
            if len(values) >= need:
                firing = Firing(
                    event,
                    dict(zip(member.group_by, key, strict=True)),
                    len(values),
                    [eid for _, eid in values.values()],
                    min(seen for seen, _ in values.values()),
                )
                # Start afresh: one firing per window's worth of events (this member only).
                slot[i] = None
                self.counts[i] -= 1
                member.fired += 1
                if fired is None:
                    fired = []
                fired.append((i, firing))
        if fired is not None and not any(slot):
            del order[key]
            self._recent = None
        return fired


def group_key(sources: tuple[str, ...], event: Event) -> tuple[Any, ...] | None:
    """The group-by values of ``event`` read from ``sources`` (None: it cannot be grouped)."""
    if len(sources) == 2:  # the usual client/server pair, without the loop
        a = event.get(sources[0])
        b = event.get(sources[1])
        if a is None or b is None:
            return None
        ta, tb = type(a), type(b)
        return (
            a if ta is str or ta is int else _hashable(a),
            b if tb is str or tb is int else _hashable(b),
        )
    values = []
    for source in sources:
        v = event.get(source)
        if v is None:
            return None  # an event without the group field cannot be grouped
        t = type(v)
        values.append(v if t is str or t is int else _hashable(v))
    return tuple(values)


def _hashable(v: Any) -> Any:
    """Group and value keys from event values of any shape (lists, objects)."""
    if type(v) is list:
        return tuple(_hashable(x) for x in v)
    if type(v) is dict:
        return repr(sorted(v.items(), key=repr))
    return v
