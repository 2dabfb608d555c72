"""Retro-hunting: the stream's Sigma rules over stored history.

A hunt picks rules from a pack (all of it, a folder, a file, a rule id), reads stored events
of a time range and scope in time order (the sensor's embedded store at the edge,
Elasticsearch at the centre: ``pipeline.store.Store.scan_events`` / ``pipeline.es``), and runs
them through the same :class:`detectors.sigma.SigmaEngine` as a live sensor, correlations and
de-duplication windows included, so a hunt and a live run over the same events raise the same
alerts (same ids). Each alert it raises carries the hunt's id (``icsmon.hunt.id``) and the
version of the rule that fired (``rule.version``: the first 16 hex digits of the SHA-256 of
the rule file, as content packages fingerprint rules). Alerts already raised (the same
``event.id``, or the same rule over any of the same triggering events) are counted and not
written again.

Memory is bounded by the engine's own caps (held alerts, correlation groups) and the page
size of the scan; nothing grows with the number of events scanned.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from detectors.sigma.engine import SigmaEngine
from detectors.sigma.loader import (
    SHIPPED_RULES,
    Pack,
    RuleLoadError,
    check_known,
    load_pack,
    resolve_placeholders,
)

Event = dict[str, Any]

#: Events between two calls of the progress callback.
PROGRESS_EVERY = 20_000


class HuntError(ValueError):
    """A hunt cannot start (no rule selected, a bad selection); the message is one line."""


@dataclass(frozen=True, slots=True)
class Scope:
    """Which stored events a hunt reads: ``[since, until)`` in epoch seconds, and sites and
    sensors (empty: all)."""

    since: float | None = None
    until: float | None = None
    sites: tuple[str, ...] = ()
    observers: tuple[str, ...] = ()

    def as_doc(self) -> dict[str, Any]:
        return {
            "since": self.since,
            "until": self.until,
            "sites": list(self.sites),
            "observers": list(self.observers),
        }


@dataclass(slots=True)
class Summary:
    """What a hunt did: the answer a sensor sends back, and the line ``icsmon hunt`` prints."""

    hunt_id: str
    rules: int = 0  # alerting rules and correlations selected
    events: int = 0  # events scanned
    first: float | None = None  # time of the first and last event scanned (epoch s)
    last: float | None = None
    matches: int = 0  # rule matches (before de-duplication into alerts)
    alerts: int = 0  # alerts the hunt raised
    new: int = 0  # ... of which written (not raised before)
    known: int = 0  # ... of which already raised (not written again)
    errors: int = 0  # events the engine could not process
    elapsed_s: float = 0.0
    dry_run: bool = False
    stopped: str | None = None  # why the hunt ended early (a cap), None when it ran through
    by_rule: dict[str, int] = field(default_factory=dict)  # alerts per rule id

    @property
    def rate(self) -> float:
        return self.events / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def as_doc(self) -> dict[str, Any]:
        return {
            "hunt_id": self.hunt_id,
            "rules": self.rules,
            "events": self.events,
            "first": self.first,
            "last": self.last,
            "matches": self.matches,
            "alerts": self.alerts,
            "new": self.new,
            "known": self.known,
            "errors": self.errors,
            "elapsed_s": round(self.elapsed_s, 3),
            "events_per_s": round(self.rate, 1),
            "dry_run": self.dry_run,
            "stopped": self.stopped,
            "by_rule": dict(sorted(self.by_rule.items())),
        }


def new_hunt_id() -> str:
    return "hunt-" + uuid.uuid4().hex[:16]


def _rule_version(path: str, cache: dict[str, str]) -> str:
    version = cache.get(path)
    if version is None:
        try:
            version = hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]
        except OSError:
            version = ""
        cache[path] = version
    return version


def _selected(path: str, wanted_files: Sequence[Path]) -> bool:
    if not path:
        return False
    p = Path(path).resolve()
    return any(p == w or w in p.parents for w in wanted_files)


def select_pack(
    pack: Pack, selection: Sequence[str] = (), *, base: Path | None = None
) -> tuple[Pack, list[str]]:
    """The part of ``pack`` a hunt runs: rules and correlations whose id, file or folder is in
    ``selection`` (empty: the whole pack), plus the base rules the chosen correlations read
    (kept silent unless chosen themselves). Paths are taken relative to the working folder,
    else to ``base``. Returns (pack, selection items that matched nothing)."""
    if not selection:
        return pack, []
    ids: set[str] = set()
    files: list[Path] = []
    unmatched: list[str] = []
    for item in selection:
        candidates = [Path(item)] + ([base / item] if base is not None else [])
        found = next((c for c in candidates if c.exists()), None)
        if found is not None:
            files.append(found.resolve())
        else:
            ids.add(item)
    chosen_rules = {
        r.meta.id
        for r in pack.rules
        if r.meta.id in ids or (r.name and r.name in ids) or _selected(r.meta.path, files)
    }
    chosen_corrs = [
        c for c in pack.correlations if c.meta.id in ids or _selected(c.meta.path, files)
    ]
    feeding = {rid for c in chosen_corrs for rid in c.rules}
    rules = []
    for r in pack.rules:
        if r.meta.id in chosen_rules:
            rules.append(r)
        elif r.meta.id in feeding or (r.name and r.name in feeding):
            rules.append(replace(r, output=False))
    known = (
        {r.meta.id for r in pack.rules}
        | {r.name for r in pack.rules if r.name}
        | {c.meta.id for c in pack.correlations}
    )
    unmatched = sorted(i for i in ids if i not in known)
    matched_files = {p for p in files if any(_selected(x.meta.path, [p]) for x in rules)}
    matched_files |= {p for p in files if any(_selected(c.meta.path, [p]) for c in chosen_corrs)}
    unmatched += [str(p) for p in files if p not in matched_files]
    return Pack(rules, chosen_corrs, list(pack.problems), dict(pack.placeholders)), unmatched


def field_warnings(pack: Pack) -> list[str]:
    """Rules of ``pack`` that name fields no event carries (a typo matches nothing, silently):
    one line each, for the hunt to say before it runs."""
    return [
        f"{p.path}:{p.line}: [{p.rule_id}] {p.message}"
        for p in check_known(pack)
        if "field" in p.message
    ]


def load_hunt_engine(
    selection: Sequence[str] = (),
    rules_dir: Path | None = None,
    site_config: Path | None = None,
    placeholders: dict[str, list[str]] | None = None,
    *,
    dedup_window: float = 60.0,
    max_pending_alerts: int = 10_000,
    max_correlation_groups: int = 10_000,
) -> SigmaEngine:
    """The engine of a hunt: the pack of ``rules_dir`` (the shipped one by default) narrowed
    to ``selection``, with the stream's defaults. RuleLoadError when a rule is refused;
    HuntError when the selection names nothing in the pack."""
    values = resolve_placeholders(site_config, placeholders)
    root = rules_dir or SHIPPED_RULES
    try:
        pack = load_pack([root], values)
    except Exception as exc:  # pySigma raises on a file that is not YAML at all
        text = str(exc).strip().splitlines()
        raise HuntError(f"{root}: the rules do not load: {text[0] if text else exc!r}") from None
    errors = [p for p in pack.problems if p.severity == "error"]
    if errors:
        raise RuleLoadError(errors)
    chosen, unmatched = select_pack(pack, selection, base=root if root.is_dir() else None)
    if unmatched:
        raise HuntError(f"no rule in {root} matches {', '.join(unmatched)}")
    if not any(r.output for r in chosen.rules) and not chosen.correlations:
        raise HuntError(f"no alerting rule selected in {root}")
    return SigmaEngine(
        chosen,
        dedup_window=dedup_window,
        max_pending_alerts=max_pending_alerts,
        max_correlation_groups=max_correlation_groups,
    )


@dataclass(slots=True)
class Hunt:
    """One hunt: an engine, an id, and where its alerts go.

    ``known(alert)`` says whether an alert was already raised (it is then counted, not
    written); ``write(alert)`` takes the hunt's new alerts (flat documents); both are left out
    of a dry run."""

    engine: SigmaEngine
    hunt_id: str = field(default_factory=new_hunt_id)
    known: Callable[[Event], bool] | None = None
    write: Callable[[Event], None] | None = None
    dry_run: bool = False
    max_events: int | None = None  # stop after this many events (a requested hunt's cap)
    max_seconds: float | None = None  # stop after this long (wall time)
    progress: Callable[[int, float | None], None] | None = None  # (events so far, event time)
    cancelled: Callable[[], bool] | None = None  # asked to stop (the sensor is stopping)
    _versions: dict[str, str] = field(default_factory=dict)
    _paths: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for r in self.engine.pack.rules:
            self._paths[r.meta.id] = r.meta.path
        for c in self.engine.pack.correlations:
            self._paths[c.meta.id] = c.meta.path

    def run(self, events: Iterable[Event]) -> Summary:
        """Offer ``events`` (in time order, ``@timestamp`` as epoch seconds) to the engine;
        alerts go to ``write`` as they are released. Returns the summary."""
        summary = Summary(self.hunt_id, dry_run=self.dry_run)
        summary.rules = sum(1 for r in self.engine.pack.rules if r.output) + len(
            self.engine.pack.correlations
        )
        started = time.monotonic()
        engine = self.engine
        deadline = started + self.max_seconds if self.max_seconds else None
        cap = self.max_events
        n = 0
        ts: Any = None
        first: Any = None
        for event in events:
            n += 1
            ts = event.get("@timestamp")
            if first is None:
                first = ts
            alerts = engine.process(event)
            if alerts:
                self._take(alerts, summary)
            if n & 1023 == 1:  # from the first event on, every 1024
                if deadline is not None and time.monotonic() > deadline:
                    summary.stopped = f"time cap of {self.max_seconds:g} s reached"
                    break
                if self.cancelled is not None and self.cancelled():
                    summary.stopped = "cancelled"
                    break
            if n % PROGRESS_EVERY == 0 and self.progress is not None:
                self.progress(n, ts if isinstance(ts, (int, float)) else None)
            if cap is not None and n >= cap:
                summary.stopped = f"cap of {cap} events reached"
                break
        self._take(self.engine.flush(), summary)
        summary.events = n
        summary.first = float(first) if isinstance(first, (int, float)) else None
        summary.last = float(ts) if isinstance(ts, (int, float)) else None
        stats = self.engine.stats
        summary.matches = stats["matches"]
        summary.errors = stats["errors"]
        summary.elapsed_s = time.monotonic() - started
        if self.progress is not None:
            self.progress(n, summary.last)
        return summary

    def _take(self, alerts: list[Event], summary: Summary) -> None:
        for alert in alerts:
            summary.alerts += 1
            rid = str(alert.get("rule.id"))
            summary.by_rule[rid] = summary.by_rule.get(rid, 0) + 1
            if self.dry_run:
                continue
            if self.known is not None and self.known(alert):
                summary.known += 1
                continue
            alert["icsmon.hunt.id"] = self.hunt_id
            alert["rule.version"] = _rule_version(self._paths.get(rid, ""), self._versions)
            summary.new += 1
            if self.write is not None:
                self.write(alert)


__all__ = [
    "Hunt",
    "HuntError",
    "Scope",
    "Summary",
    "load_hunt_engine",
    "new_hunt_id",
    "select_pack",
]
