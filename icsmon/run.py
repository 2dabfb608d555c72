"""Wiring of one sensor run: engine -> detectors -> sink and printer. No logic of its own
beyond the order in which the parts are called."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sensor.engine import Engine

ASSET_FLUSH_INTERVAL = 60.0  # seconds of wall time between asset snapshots on long runs
TICK_INTERVAL = 5.0  # seconds of wall time between detector ticks on a live port


@dataclass
class Detectors:
    """The detectors a run applies to each event, in order."""

    parts: list[Any] = field(default_factory=list)

    def process(self, event: dict) -> list[dict]:
        alerts: list[dict] = []
        for part in self.parts:
            found = part.process(event)
            if found:
                alerts.extend(found)
        return alerts

    def flush(self) -> list[dict]:
        alerts: list[dict] = []
        for part in self.parts:
            alerts.extend(part.flush() or [])
        return alerts

    def tick(self, now: float) -> list[dict]:
        """Time passes without traffic (live): detectors that watch for silence speak now."""
        alerts: list[dict] = []
        for part in self.parts:
            tick = getattr(part, "tick", None)
            if tick is not None:
                alerts.extend(tick(now) or [])
        return alerts

    def notes(self) -> list[str]:
        """Lines for the end of a run that are not alerts (e.g. learned conversations that
        never appeared: docs in detectors/README.md, "Absence")."""
        lines = []
        for part in self.parts:
            summary = getattr(part, "absence_summary", None)
            line = summary() if summary is not None else None
            if line:
                lines.append(line)
        return lines

    def findings(self, final: bool = False) -> list[dict]:
        """Finding documents that are new or changed since the last call."""
        out: list[dict] = []
        for part in self.parts:
            changed = getattr(part, "changed_findings", None)
            if changed is not None:
                out.extend(changed(final))
        return out

    def stats(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for part in self.parts:
            for key, value in (getattr(part, "stats", None) or {}).items():
                if isinstance(value, int):
                    out[f"{type(part).__name__.lower()}.{key}"] = value
        return out


def load_detectors(
    rules: Path | None,
    no_rules: bool,
    site_config: Path | None,
    baseline: Path | None,
    learn: str | None = None,
    findings: bool = True,
    content: Path | None = None,
) -> Detectors:
    """The Sigma engine (unless ``no_rules``) and the baseline detector (with ``baseline``);
    with ``learn``, the baseline is learned from the first DURATION and written to ``baseline``;
    with ``content``, the province's indicator watchlist is matched."""
    parts: list[Any] = []
    placeholders = None
    base = None
    learner = None
    if learn is not None:
        from detectors.baseline import LearnThenDetect, parse_duration

        if baseline is None:
            raise ValueError(
                "--learn needs --baseline FILE (where the learned baseline is written)"
            )
        learner = LearnThenDetect(parse_duration(learn), baseline)
    elif baseline is not None:
        from detectors.baseline import Baseline, BaselineDetector

        base = Baseline.load(baseline)
        placeholders = base.placeholders()
    if not no_rules:
        from detectors.sigma import SigmaEngine

        parts.append(SigmaEngine.load(rules, site_config=site_config, placeholders=placeholders))
    if base is not None:
        parts.append(BaselineDetector(base))
    if findings:
        parts.append(_finding_tracker(site_config, placeholders))
    if learner is not None:
        parts.append(learner)
    if content is not None:
        from detectors.content import WatchlistDetector, load_package

        parts.append(WatchlistDetector(load_package(content)))
    return Detectors(parts)


def _finding_tracker(site_config: Path | None, learned: dict[str, list[str]] | None) -> Any:
    """Findings at the sensor: the site's declared segments, and the Modbus masters it
    declares or a baseline learned (writers first: a master that only reads is no writer)."""
    from detectors.findings import FindingTracker, read_segments

    masters: set[str] = set()
    if learned:
        masters.update(learned.get("modbus_writers") or learned.get("modbus_masters") or [])
    if site_config is not None:
        from detectors.sigma.loader import read_site_config

        masters.update(read_site_config(site_config).get("modbus_masters") or [])
    return FindingTracker(segments=read_segments(site_config), masters=masters)


class Run:
    """Feeds events through detectors into the sink; yields what the user asked to see."""

    def __init__(
        self,
        engine: Engine,
        detectors: Detectors,
        sink: Any | None,
        store_events: bool = True,
        live: bool = False,
    ) -> None:
        self.engine = engine
        self.detectors = detectors
        self.sink = sink
        self.store_events = store_events
        self.live = live  # wall time matters: tick the detectors that watch for silence
        self.alerts = 0
        self._last_assets = time.monotonic()
        self._last_tick = time.monotonic()

    def process(self, events: Iterator[dict], want_events: bool) -> Iterator[dict]:
        sink = self.sink
        detectors = self.detectors
        for event in events:
            if sink is not None and self.store_events:
                sink.write("event", event)
            alerts = detectors.process(event)
            if want_events:
                yield event
            for alert in alerts:
                self.alerts += 1
                if sink is not None:
                    sink.write("alert", alert)
                if not want_events:
                    yield alert
            now = time.monotonic()
            if self.live and now - self._last_tick > TICK_INTERVAL:
                self._last_tick = now
                for alert in detectors.tick(time.time()):
                    self.alerts += 1
                    if sink is not None:
                        sink.write("alert", alert)
                    if not want_events:
                        yield alert
            if sink is not None and now - self._last_assets > ASSET_FLUSH_INTERVAL:
                self._last_assets = now
                self.write_assets()
        for alert in detectors.flush():
            self.alerts += 1
            if sink is not None:
                sink.write("alert", alert)
            if not want_events:
                yield alert
        self.write_assets(final=True)

    def write_assets(self, final: bool = False) -> None:
        if self.sink is None:
            return
        for asset in self.engine.changed_assets():
            self.sink.write("asset", asset)
        if _accepts(self.sink, "finding"):
            for finding in self.detectors.findings(final):
                self.sink.write("finding", finding)


def _accepts(sink: Any, kind: str) -> bool:
    kinds = getattr(sink, "kinds", None)
    if kinds is None:
        from pipeline.sinks import KINDS as kinds
    return kind in kinds
