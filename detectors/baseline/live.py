"""Learning on a live port (``icsmon sense --learn DURATION``): learn for a while, save the
baseline, then detect deviations with it, in one detector part."""

from __future__ import annotations

import os
import re

from detectors.baseline.detector import BaselineDetector
from detectors.baseline.features import event_time
from detectors.baseline.learner import BaselineLearner
from detectors.baseline.model import Baseline

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$", re.IGNORECASE)
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str) -> float:
    """``90``, ``90s``, ``30m``, ``12h``, ``7d``, ``2w`` -> seconds (ValueError otherwise)."""
    match = _DURATION.match(text)
    if not match or float(match.group(1)) <= 0:
        raise ValueError(f"not a duration: {text!r} (use e.g. 90s, 30m, 12h, 7d)")
    return float(match.group(1)) * _UNITS[match.group(2).lower()]


class LearnThenDetect:
    """Learns from the first ``duration`` seconds of traffic (event time), writes the baseline
    to ``output``, then raises deviations. Interrupted while learning, it saves what it has."""

    def __init__(
        self,
        duration: float,
        output: str | os.PathLike[str],
        tolerance: float = 0.1,
        base: Baseline | None = None,
    ) -> None:
        self.duration = float(duration)
        self.output = output
        self.tolerance = tolerance
        self.learner: BaselineLearner | None = BaselineLearner(base=base)
        self.detector: BaselineDetector | None = None
        self._start: float | None = None
        self.saved = False

    @property
    def learning(self) -> bool:
        return self.detector is None

    def process(self, event: dict) -> list[dict]:
        if self.detector is not None:
            return self.detector.process(event)
        ts = event_time(event)
        if ts is not None and self._start is None:
            self._start = ts
        if ts is not None and self._start is not None and ts - self._start >= self.duration:
            self.detector = BaselineDetector(self._save(), tolerance=self.tolerance)
            return self.detector.process(event)
        assert self.learner is not None
        self.learner.observe(event)
        return []

    def _save(self) -> Baseline:
        assert self.learner is not None
        baseline = self.learner.result()
        baseline.save(self.output)
        self.saved = True
        self.learner = None
        return baseline

    def tick(self, now_ts: float) -> list[dict]:
        """Live clock tick: timing checks once detecting (nothing while learning)."""
        return self.detector.tick(now_ts) if self.detector is not None else []

    def flush(self, now_ts: float | None = None) -> list[dict]:
        if self.detector is None:
            if self.learner is not None:
                self._save()
            return []
        return self.detector.flush(now_ts)

    def absence_summary(self) -> str | None:
        return self.detector.absence_summary() if self.detector is not None else None

    def changed_findings(self, final: bool = False) -> list[dict]:
        return []

    @property
    def stats(self) -> dict[str, int]:
        if self.detector is not None:
            return dict(self.detector.stats, learning=0)
        return {"learning": 1}
