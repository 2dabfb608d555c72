"""Baseline learning and deviation detection.

Usage:

    learner = BaselineLearner()
    for event in events:
        learner.observe(event)
    baseline = learner.result()
    baseline.save("plant.baseline.json")

    detector = BaselineDetector(Baseline.load("plant.baseline.json"), tolerance=0.1)
    alerts = detector.process(event)        # per event
    alerts = detector.flush(now_ts)         # timing checks at end of input / on a clock tick
"""

from __future__ import annotations

from detectors.baseline.accept import accept_alert
from detectors.baseline.detector import BaselineDetector, op_techniques
from detectors.baseline.learner import BaselineLearner, LearnerLimits
from detectors.baseline.live import LearnThenDetect, parse_duration
from detectors.baseline.model import Baseline, BaselineError

__all__ = [
    "Baseline",
    "BaselineDetector",
    "BaselineError",
    "BaselineLearner",
    "LearnThenDetect",
    "LearnerLimits",
    "accept_alert",
    "op_techniques",
    "parse_duration",
]
