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

    def stats(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for part in self.parts:
            for key, value in (getattr(part, "stats", None) or {}).items():
                if isinstance(value, int):
                    out[f"{type(part).__name__.lower()}.{key}"] = value
        return out


def load_detectors(
    rules: Path | None, no_rules: bool, site_config: Path | None, baseline: Path | None
) -> Detectors:
    parts: list[Any] = []
    placeholders = None
    base = None
    if baseline is not None:
        from detectors.baseline import Baseline, BaselineDetector

        base = Baseline.load(baseline)
        placeholders = base.placeholders()
    if not no_rules:
        from detectors.sigma import SigmaEngine

        parts.append(SigmaEngine.load(rules, site_config=site_config, placeholders=placeholders))
    if base is not None:
        parts.append(BaselineDetector(base))
    return Detectors(parts)


class Run:
    """Feeds events through detectors into the sink; yields what the user asked to see."""

    def __init__(
        self, engine: Engine, detectors: Detectors, sink: Any | None, store_events: bool = True
    ) -> None:
        self.engine = engine
        self.detectors = detectors
        self.sink = sink
        self.store_events = store_events
        self.alerts = 0
        self._last_assets = time.monotonic()

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
            if sink is not None and time.monotonic() - self._last_assets > ASSET_FLUSH_INTERVAL:
                self._last_assets = time.monotonic()
                self.write_assets()
        for alert in detectors.flush():
            self.alerts += 1
            if sink is not None:
                sink.write("alert", alert)
            if not want_events:
                yield alert
        self.write_assets()

    def write_assets(self) -> None:
        if self.sink is None:
            return
        for asset in self.engine.changed_assets():
            self.sink.write("asset", asset)
