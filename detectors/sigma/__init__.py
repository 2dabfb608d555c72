"""Sigma rules in the event stream: load with pySigma, compile once, match, correlate, alert."""

from __future__ import annotations

from detectors.sigma.engine import SigmaEngine, event_time
from detectors.sigma.pack import Problem, RuleLoadError, SiteConfigError

__all__ = ["Problem", "RuleLoadError", "SigmaEngine", "SiteConfigError", "event_time"]
