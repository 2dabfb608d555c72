"""The in-stream Sigma engine: events in, ECS alerts out.

Dispatch, so an event is only evaluated by rules it can possibly fire:

- by ``event.dataset``: the pipeline gives every protocol rule the condition
  ``event.dataset: ics.<service>``; the engine tests it once per event by picking the
  dataset's group (rules without a service are in every group);
- by anomaly or not: rules that require (or exclude) ``event.action: anomaly`` sit only in
  the half of the group that can match;
- by *anchor*: a field that must hold one of a fixed set of values (e.g.
  ``modbus.function_code`` in {5, 6, 15, 16, 22, 23}) indexes the rule by those values.

What dispatch has tested is left out of the condition a candidate still runs
(``Compiled.residual``).

The hot path, transaction events of a protocol dataset, runs one function per dataset
generated as Python source at load time (``codegen``): field reads hoisted, anchors as one
dict lookup per anchor field, residual conditions inline. It answers with an int (rules
evaluated, and one bit per matching rule); what to do for a set of matching rules (alerts
to record, correlations to feed in order) is a ``_Plan`` built once per set and cached.
A matcher's answers are kept by the values of the fields its rules read for the event
(``_Verdicts``), so a request shape a plant repeats is matched once; what a plan feeds
(correlations, de-duplication) still sees every event.
Anomalies, unknown datasets and events of odd shapes (a list where a string belongs) take
the general path (``_candidates``: index lookups and compiled closures; whole predicates for
odd dispatch fields), which gives the same answers; the tests hold the two paths to each
other and to the naive evaluator.

Value-count correlations fed by the same base rule and grouped alike (the Modbus function
code and unit id sweeps) share one group table (``correlation.SharedValueCount``). Event
time is parsed once per second of timestamps; the rest of a stamp is its fraction.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from detectors.alerts import Deduplicator, RuleMeta, event_identity
from detectors.sigma.codegen import Candidate, Matcher, build
from detectors.sigma.correlation import Correlation, Firing, SharedValueCount, group_key
from detectors.sigma.fields import nested_path
from detectors.sigma.nodes import And, Const, Eq, Node, Not, Or, Predicate, Test, value_key
from detectors.sigma.pack import (
    SHIPPED_RULES,
    LoadedCorrelation,
    LoadedRule,
    Pack,
    Problem,
    RuleLoadError,
    load_cached,
    resolve_placeholders,
)
from sensor.logs import LazyLogger
from sensor.timestamps import parse_timestamp

log = LazyLogger(__name__)  # logging imported at the first message

Event = dict[str, Any]
# what ``SigmaEngine.process`` answers for an event that raised no alert (nearly every one):
# one list for all of them, not a new empty one per event; read by callers, never added to
_NO_ALERTS: Final[list[Event]] = []


@dataclass(slots=True)
class _Rule:
    index: int
    meta: RuleMeta
    predicate: Predicate  # the whole condition
    check: Predicate  # what is left to test once dispatch has found the rule (anchor removed)
    output: bool
    feeds: tuple[tuple[int, str], ...]  # (correlation index, name the correlation knows it by)
    bit: int = 0  # this rule's bit in a matcher's answer (see codegen)
    anchor: tuple[str, frozenset[Any]] | None = None
    node: Node | None = None  # the tree of ``check``


@dataclass(slots=True)
class _Plan:
    """What to do for one set of matching rules (built once per set, then reused)."""

    count: int  # rules matched
    outputs: tuple[RuleMeta, ...]  # alerts to record, in rule order
    # (correlation index, base rule names, group-by sources, shared state) in the order they
    # are fed; several names when one event matched several base rules of one correlation;
    # a SharedValueCount step feeds all its members (index: the first member's).
    steps: tuple[tuple[int, tuple[str, ...], tuple[str, ...], SharedValueCount | None], ...]


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
        self.rules: tuple[_Rule, ...] = tuple(r for r, _ in rules)
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
            found: Sequence[_Rule]
            if t is int:
                found = table.get(v, ())
            elif t is str:
                found = table.get(v.casefold(), ())
            elif t is list:
                several: list[_Rule] = []
                for x in v:
                    k = value_key(x)
                    if k is not None:
                        several.extend(table.get(k, ()))
                found = several
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
        self.anomaly = _Index(
            [(r, lr.compiled.anchor) for r, lr in rules if lr.compiled.kind != "transaction"]
        )
        self.transaction = _Index(
            [(r, lr.compiled.anchor) for r, lr in rules if lr.compiled.kind != "anomaly"]
        )


class _Verdicts:
    """What the generated matcher of one dataset answered, by the values of exactly the
    fields its rules read: a repeated request shape is matched once.

    The fields are those the matcher reads for every event (``top``: its anchor fields and
    those of the rules without an anchor), then, for each anchor field, those of the rules
    its value reaches (``branches``: anchor field's place in ``top``, lookup key -> fields),
    as the matcher itself reads them. The answer is a function of those values alone (the
    dataset and that the event is no anomaly chose the matcher): no rule test keeps state
    or reads the clock; the top values decide which other fields follow them in a key, so
    equal keys are equal values of the same fields. A key is made only of text, ints and
    None, compared by type too (``True == 1`` and ``1.0 == 1`` in Python, not to a rule):
    any other value goes to the matcher. Correlations, thresholds and de-duplication are
    fed after it, for every event."""

    def __init__(
        self,
        top: tuple[str, ...],
        branches: tuple[tuple[int, dict[Any, tuple[str, ...]]], ...],
        matcher: Matcher,
    ) -> None:
        self.top = top
        self.branches = branches
        self.matcher = matcher
        self.cache: dict[tuple[Any, ...], int] = {}
        # text value as the event has it -> the fields its branch reads (the matcher looks
        # its casefolded text up)
        self._texts: list[dict[str, tuple[str, ...]]] = [{} for _ in branches]

    @property
    def fields(self) -> frozenset[str]:
        """Every field a key can hold."""
        out = set(self.top)
        for _, table in self.branches:
            for names in table.values():
                out.update(names)
        return frozenset(out)

    def match(self, event: Event) -> int:
        values: list[Any] = []
        if not _key_values(event, self.top, values):
            return self.matcher(event)
        for n, (place, table) in enumerate(self.branches):
            v = values[place]
            if type(v) is str:
                texts = self._texts[n]
                more = texts.get(v)
                if more is None:
                    more = table.get(v.casefold(), ())
                    if len(texts) < _MAX_VERDICTS:
                        texts[v] = more
            else:
                more = table.get(v, ())
            if not _key_values(event, more, values):
                return self.matcher(event)
        key = tuple(values)
        cache = self.cache
        r = cache.get(key)
        if r is None:
            r = self.matcher(event)
            if len(cache) >= _MAX_VERDICTS:  # shapes are few on a plant; bounded all the same
                cache.clear()
            cache[key] = r
        return r


_MAX_VERDICTS: Final = 4096


def _key_values(event: Event, names: tuple[str, ...], values: list[Any]) -> bool:
    """The values of ``names`` in ``event`` appended to ``values`` (a verdict key's); False
    at the first that a key cannot hold (anything but text, an int or None)."""
    for name in names:
        v = event.get(name)
        if v is not None:
            t = type(v)
            if t is not str and t is not int:
                return False
        values.append(v)
    return True


def _verdicts(rules: Sequence[_Rule], matcher: Matcher) -> _Verdicts | None:
    """The verdict cache of a dataset's matcher over ``rules`` (its transaction rules), or
    None when one reads more than named flat fields (a test on the whole event, a key inside
    a list of objects): such a dataset is always matched in full."""
    top: list[str] = []
    always: set[str] = set()
    by_anchor: dict[str, dict[Any, set[str]]] = {}
    for rule in rules:
        reads: set[str] = set()
        if rule.node is not None and not _flat_fields(rule.node, reads):
            return None
        if rule.anchor is None:
            always |= reads
            continue
        field, keys = rule.anchor
        if field not in top:
            top.append(field)
        table = by_anchor.setdefault(field, {})
        for k in keys:
            table.setdefault(k, set()).update(reads)
    top += sorted(always - set(top))
    hoisted = set(top)
    branches = tuple(
        (
            top.index(field),
            {k: tuple(sorted(reads - hoisted)) for k, reads in table.items()},
        )
        for field, table in by_anchor.items()
    )
    return _Verdicts(tuple(top), branches, matcher)


def _flat_fields(node: Node, out: set[str]) -> bool:
    """Adds the fields ``node`` reads to ``out``; False if it reads anything else."""
    if isinstance(node, Eq) or isinstance(node, Test):  # noqa: SIM101 - the compiled build
        if nested_path(node.field) is not None:
            return False
        out.add(node.field)
        return True
    if isinstance(node, Const):
        return True
    if isinstance(node, Not):
        return _flat_fields(node.item, out)
    if isinstance(node, And) or isinstance(node, Or):  # noqa: SIM101
        return all(_flat_fields(item, out) for item in node.items)
    return False  # Whole: exists, null, field references, keywords


_INF = float("inf")


def event_time(event: Event) -> float:
    """Event time in epoch seconds: ``@timestamp`` is a number inside the process; text
    (events read from a file or a test) goes through the one parser. 0 when unreadable."""
    stamp = event.get("@timestamp")
    if type(stamp) is float:
        return stamp
    ts = parse_timestamp(stamp)
    return 0.0 if ts is None else ts


def _load_pack(paths: list[Path], values: Mapping[str, list[str]]) -> Pack:
    """A full load (pySigma: imported only when the pack is not in the cache)."""
    from detectors.sigma.loader import load_pack

    return load_pack(paths, values)


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
                c.kind,
                c.rule_names,
                c.group_by,
                c.timespan,
                c.threshold,
                c.op,
                c.value_field,
                c.aliases,
                max_groups=max_correlation_groups,
            )
            self._correlations.append((c, state))
            for rid, name in zip(c.rules, c.rule_names, strict=True):
                feeds.setdefault(rid, []).append((ci, name))
        self.rules: list[LoadedRule] = pack.rules
        # Value-count correlations fed one after the other by the same base rule, grouped
        # alike, share their group table: (first correlation index) -> (shared state, indexes).
        self._shared: dict[int, tuple[SharedValueCount, tuple[int, ...]]] = {}
        for chain in feeds.values():
            run: list[tuple[int, str]] = []
            for ci, name in [*chain, (-1, "")]:
                if run and ci >= 0 and self._can_share(run[0], (ci, name)):
                    run.append((ci, name))
                    continue
                if len(run) > 1:
                    shared = SharedValueCount([self._correlations[i][1] for i, _ in run], run[0][1])
                    self._shared[run[0][0]] = (shared, tuple(i for i, _ in run))
                run = [(ci, name)]
        # A matcher answers with the count of rules it evaluated in the low bits and one
        # bit per matching rule above them.
        self._shift = len(pack.rules).bit_length()
        self._low = (1 << self._shift) - 1
        compiled: list[tuple[_Rule, LoadedRule]] = []
        for i, r in enumerate(pack.rules):
            cr = _Rule(
                i,
                r.meta,
                r.compiled.predicate,
                r.compiled.residual,
                r.output,
                tuple(feeds.get(r.meta.id, ())),
                1 << (i + self._shift),
                r.compiled.anchor,
                r.compiled.residual_node,
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
        # Generated matchers for transaction events of each dataset (the hot path).
        self._fast: dict[str, Matcher] = {}
        self._sources: dict[str, str] = {}
        self._legends: dict[str, str] = {}  # the values bound to the names in the source
        for n, ds in enumerate(sorted(self._groups)):
            index = self._groups[ds].transaction
            cands = [
                Candidate(r.bit, r.anchor, r.node if r.node is not None else Const(True), r.meta.id)
                for r in sorted(index.rules, key=lambda r: r.index)
            ]
            fn, source, legend = build(f"match_{n}", cands, self._match_slow)
            self._fast[ds] = fn
            self._sources[ds] = source
            self._legends[ds] = legend
        # Verdict caches of the generated matchers (see ``_Verdicts``): by dataset, for those
        # whose rules read only flat fields.
        self._verdicts: dict[str, _Verdicts] = {}
        for ds in sorted(self._groups):
            verdicts = _verdicts(self._groups[ds].transaction.rules, self._fast[ds])
            if verdicts is not None:
                self._verdicts[ds] = verdicts
        self._plans: dict[int, _Plan] = {}
        self._interned: dict[tuple[str, ...], tuple[str, ...]] = {}
        # Counters (``stats``): plain attributes, which the compiled build keeps as machine ints.
        self._events = 0
        self._evaluations = 0
        self._matches = 0
        self._alerts = 0
        self._errors = 0

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
        extra_dirs: tuple[Path, ...] = (),
    ) -> SigmaEngine:
        """Load and compile a rule pack (None: the shipped ``rules/``), with the rules of
        ``extra_dirs`` too (the rules the province pushed to a sensor).

        Placeholder values: ``site_config`` wins over ``placeholders`` (e.g. from a baseline).
        With ``strict`` any refused rule raises :class:`RuleLoadError` listing every problem;
        otherwise refused rules are logged, kept in ``problems`` and left out.
        """
        values = resolve_placeholders(site_config, placeholders)
        dirs = [Path(rules_dir)] if rules_dir is not None else None
        if extra_dirs:
            dirs = [*(dirs or [SHIPPED_RULES]), *map(Path, extra_dirs)]
        paths = dirs if dirs is not None else [SHIPPED_RULES]
        pack = load_cached(paths, values, lambda: _load_pack(paths, values))
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
        """Offer one event to the rules; returns the alerts that are complete now (when none,
        often one shared empty list: the caller reads it, never adds to it).

        Never raises: a failure (a bug, an event of a shape nothing expected) is counted in
        ``stats["errors"]``, logged once, and the event skipped."""
        # One function (no inner call): this runs for every event.
        try:
            self._events += 1
            dedup = self._dedup
            stamp = event.get("@timestamp")
            ts: float = stamp if type(stamp) is float else event_time(event)  # a number, as a rule
            # next_due is finite exactly when alerts are held; most events raise none and get
            # the shared empty list (a new list is made once a rule matched)
            out: list[Event] = dedup.tick(ts) if ts >= dedup.next_due else _NO_ALERTS
            # Dispatch (as in _candidates, the common case inlined: this runs for every event).
            ds = event.get("event.dataset")
            fn = self._fast.get(ds) if type(ds) is str else None  # type: ignore[arg-type]
            if fn is not None:
                action = event.get("event.action")
                if type(action) is str and action[:1] not in "aA":  # not an anomaly
                    verdicts = self._verdicts.get(ds)  # type: ignore[arg-type]
                    r = fn(event) if verdicts is None else verdicts.match(event)
                else:
                    r = self._match_slow(event)
            else:
                r = self._match_slow(event)
            low = self._low
            self._evaluations += r & low
            if r <= low:  # no rule matched
                if out:
                    self._alerts += len(out)
                return out
            if out is _NO_ALERTS:
                out = []
            mask = r >> self._shift
            plan = self._plans.get(mask)
            if plan is None:
                plan = self._plan(mask)
            self._matches += plan.count
            for meta in plan.outputs:
                out.extend(dedup.add(meta, event, ts))
            if plan.steps:
                eid = event.get("event.id")
                if type(eid) is not str or not eid:
                    eid = event_identity(event)
                correlations = self._correlations
                last: tuple[str, ...] | None = None
                key: tuple[Any, ...] | None = None
                for ci, names, sources, shared in plan.steps:
                    if len(names) > 1:
                        out.extend(self._correlate(ci, names, event, ts, eid, {}))
                        continue
                    if sources is not last:  # correlations grouping by the same fields share it
                        last = sources
                        key = None
                        if len(sources) == 2:  # group_key()'s usual case inlined
                            a = event.get(sources[0])
                            b = event.get(sources[1])
                            if a is not None and b is not None:
                                ta, tb = type(a), type(b)
                                if (ta is str or ta is int) and (tb is str or tb is int):
                                    key = (a, b)
                                else:
                                    key = group_key(sources, event)
                        else:
                            key = group_key(sources, event)
                    if shared is not None:
                        fired = shared.feed(key, event, ts, eid)
                        if fired is not None:
                            members = self._shared[ci][1]
                            for member, member_firing in fired:
                                out.extend(
                                    self._fired(
                                        correlations[members[member]][0], member_firing, event, ts
                                    )
                                )
                        continue
                    corr, state = correlations[ci]
                    firing = state.feed_key(names[0], key, event, ts, eid)
                    if firing is not None:
                        out.extend(self._fired(corr, firing, event, ts))
            if out:
                self._alerts += len(out)
            return out
        except Exception:
            self._errors += 1
            if self._errors == 1:
                log.exception("event could not be processed by the Sigma engine")
            return []

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
            anomalous = action == "anomaly" or (
                action[:1] in "aA" and action.casefold() == "anomaly"
            )
            index = group.anomaly if anomalous else group.transaction
        elif action is None:
            index = group.transaction
        else:
            return self._all, False
        return index.candidates(event), True

    def _match_slow(self, event: Event) -> int:
        """The general path (anomalies, unknown datasets, odd shapes), answering like a
        generated matcher: rules evaluated in the low bits, one bit per matching rule."""
        candidates, residual = self._candidates(event)
        r = len(candidates)
        for rule in candidates:
            if (rule.check if residual else rule.predicate)(event):
                r |= rule.bit
        return r

    def _can_share(self, a: tuple[int, str], b: tuple[int, str]) -> bool:
        (ca, na), (cb, nb) = a, b
        x, y = self._correlations[ca][1], self._correlations[cb][1]
        return (
            na == nb
            and x.kind == y.kind == "value_count"
            and x.rule_names == y.rule_names == [na]
            and x.sources(na) == y.sources(na)
            and x.timespan == y.timespan
            and x.max_groups == y.max_groups >= 1
            and x._shared is None
            and y._shared is None
        )

    def _plan(self, mask: int) -> _Plan:
        matched = [r for r in self._all if mask >> r.index & 1]
        feeds = [f for r in matched for f in r.feeds]
        correlations = self._correlations

        def sources(ci: int, name: str) -> tuple[str, ...]:
            # One object per distinct tuple: the event's group key is reused by identity.
            src = correlations[ci][1].sources(name)
            return self._interned.setdefault(src, src)

        single: list[tuple[int, tuple[str, ...]]]
        if len(feeds) > 1 and len({ci for ci, _ in feeds}) < len(feeds):
            # One event matched several base rules of one correlation.
            by_corr: dict[int, list[str]] = {}
            for ci, name in feeds:
                by_corr.setdefault(ci, []).append(name)
            single = [(ci, tuple(names)) for ci, names in by_corr.items()]
        else:
            single = [(ci, (name,)) for ci, name in feeds]
        steps: list[tuple[int, tuple[str, ...], tuple[str, ...], SharedValueCount | None]] = []
        i = 0
        while i < len(single):
            ci, names = single[i]
            shared = self._shared.get(ci)
            if shared is not None:
                # Members are only ever fed together, one after the other (see __init__).
                members = shared[1]
                assert tuple(c for c, _ in single[i : i + len(members)]) == members
                steps.append((ci, names, sources(ci, names[0]), shared[0]))
                i += len(members)
                continue
            steps.append((ci, names, sources(ci, names[0]), None))
            i += 1
        plan = _Plan(len(matched), tuple(r.meta for r in matched if r.output), tuple(steps))
        if len(self._plans) < 4096:  # combinations seen are few; bounded all the same
            self._plans[mask] = plan
        return plan

    def _correlate(
        self,
        ci: int,
        names: list[str] | tuple[str, ...],
        event: Event,
        ts: float,
        eid: str,
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

    def _fired(
        self, corr: LoadedCorrelation, firing: Firing, event: Event, ts: float
    ) -> list[Event]:
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
            corr.meta,
            event,
            ts,
            key=f"corr:{key}",
            event_ids=firing.event_ids,
            start=firing.start_ts,
            extra=extra,
        )

    def tick(self, now: float) -> list[Event]:
        """Release held alerts whose de-duplication window ended before ``now`` (epoch s).

        A live sensor calls this from time to time with the capture clock, so a quiet
        network still delivers its last alerts."""
        out = self._dedup.tick(now)
        self._alerts += len(out)
        return out

    def flush(self) -> list[Event]:
        """End of input: every held alert. Correlation windows still open are dropped (their
        condition was not met)."""
        out = self._dedup.flush()
        self._alerts += len(out)
        return out

    def absence_summary(self) -> str | None:
        return None  # rules speak only through alerts

    def changed_findings(self, final: bool = False) -> list[Event]:
        return []

    def matching_rules(self, event: Event) -> list[str]:
        """Ids of the rules whose condition ``event`` meets (alerting rules and the base rules
        of correlations alike), found by the same dispatch and matchers as :meth:`process`,
        without touching correlation or de-duplication state (for comparing with queries run
        over stored events)."""
        ds = event.get("event.dataset")
        fn = self._fast.get(ds) if type(ds) is str else None  # type: ignore[arg-type]
        action = event.get("event.action")
        if fn is not None and type(action) is str and action[:1] not in "aA":
            r = fn(event)
        else:
            r = self._match_slow(event)
        mask = r >> self._shift
        return [rule.meta.id for rule in self._all if mask >> rule.index & 1]

    def generated_source(self) -> str:
        """The Python source of the generated matchers (one per dataset), for review, each
        after a comment legend of the values bound to its names."""
        return "".join(
            f"# transaction events of event.dataset == {ds!r}; names bound:\n"
            f"{self._legends[ds]}{src}\n"
            for ds, src in sorted(self._sources.items())
        )

    @property
    def stats(self) -> dict[str, int]:
        s = {
            "events": self._events,
            "evaluations": self._evaluations,
            "matches": self._matches,
            "alerts": self._alerts,
            "errors": self._errors,
        }
        s["rules"] = len(self.pack.rules)
        s["correlations"] = len(self.pack.correlations)
        s["refused"] = len([p for p in self.problems if p.severity == "error"])
        s["alerts_pending"] = self._dedup.pending
        s["alerts_merged"] = self._dedup.merged
        s["alerts_forced"] = self._dedup.forced
        s["correlation_groups"] = sum(st.groups for _, st in self._correlations)
        s["correlation_evicted"] = sum(st.evicted for _, st in self._correlations)
        return s
