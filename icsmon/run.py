"""Wiring of one sensor run: engine -> detectors -> sink and printer. No logic of its own
beyond the order in which the parts are called: the loop itself is ``icsmon.loop`` (compiled),
whose names are also this module's; here, the detectors a run loads."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from detectors.detector import Detector
from icsmon.loop import ASSET_FLUSH_INTERVAL, TICK_INTERVAL, Detectors, Run, RunEngine

if TYPE_CHECKING:
    from detectors.findings import FindingTracker

__all__ = [
    "ASSET_FLUSH_INTERVAL",
    "TICK_INTERVAL",
    "Detectors",
    "Run",
    "RunEngine",
    "load_detectors",
]


def load_detectors(
    rules: Path | None,
    no_rules: bool,
    site_config: Path | None,
    baseline: Path | None,
    learn: str | None = None,
    findings: bool = True,
    content: Path | None = None,
    watchlist: bool = False,
    pushed_rules: Path | None = None,
) -> Detectors:
    """The Sigma engine (unless ``no_rules``) and the baseline detector (with ``baseline``);
    with ``learn``, the baseline is learned from the first DURATION and written to ``baseline``;
    with ``content``, the province's indicator watchlist is matched; with ``watchlist`` a
    watchlist detector is there even without ``content`` (empty, version 0), so content the
    province pushes to a running sensor (``content.update``) takes effect without a restart;
    ``pushed_rules``: the folder of the Sigma rules the province pushed (loaded with the pack
    when it holds any)."""
    parts: list[Detector] = []
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
    source: dict[str, Any] = {}
    if not no_rules:
        from detectors.sigma import SigmaEngine

        extra = (
            (pushed_rules,) if pushed_rules is not None and any(pushed_rules.glob("*.yml")) else ()
        )
        parts.append(
            SigmaEngine.load(
                rules, site_config=site_config, placeholders=placeholders, extra_dirs=extra
            )
        )
        source = {
            "index": len(parts) - 1,
            "rules": rules,
            "site_config": site_config,
            "placeholders": placeholders,
        }
    if base is not None:
        parts.append(BaselineDetector(base))
    if findings:
        parts.append(_finding_tracker(site_config, placeholders))
    if learner is not None:
        parts.append(learner)
    if content is not None or watchlist:
        from detectors.content import WatchlistDetector, empty_package, load_package

        parts.append(
            WatchlistDetector(load_package(content) if content is not None else empty_package())
        )
    return Detectors(parts, rule_source=source)


def _finding_tracker(
    site_config: Path | None, learned: dict[str, list[str]] | None
) -> FindingTracker:
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
