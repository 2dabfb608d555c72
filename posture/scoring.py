"""The posture score: one number from 0 (worst) to 100 (nothing to worry about) per scope.

posture/README.md explains the formula in words; the constants here are that formula.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

# Severity bands over event.severity (0-100), highest first.
BANDS: tuple[tuple[str, int], ...] = (("critical", 90), ("high", 70), ("medium", 40), ("low", 0))
# What one open alert of a band weighs, relative to one medium alert.
BAND_WEIGHT = {"critical": 10.0, "high": 4.0, "medium": 1.0, "low": 0.25}
# Site criticality (1-5, from the registry) multiplies everything that happens at the site.
CRITICALITY_WEIGHT = {1: 0.5, 2: 0.75, 3: 1.0, 4: 1.5, 5: 2.0}

ALERT_MAX, DEVIATION_MAX, HEALTH_MAX, RISK_MAX = 45.0, 10.0, 20.0, 25.0
ALERT_SCALE = 20.0  # weighted open-alert pressure per site per day that costs 63% of ALERT_MAX
DEVIATION_SCALE = 10.0  # weighted open deviations per site per day: 63% of DEVIATION_MAX
RISK_SCALE = 50.0  # exposure pressure per site that costs 63% of RISK_MAX (assessment/risk.py)
#: the parts of the risk penalty: the assessment's pressures other than alerts (already in A)
RISK_PARTS = ("findings", "vulnerabilities", "exposure")

# Score -> rating, for tile colours and wording.
RATINGS: tuple[tuple[str, float], ...] = (
    ("good", 85.0),
    ("guarded", 70.0),
    ("elevated", 50.0),
    ("poor", 0.0),
)


def band(severity: int | float) -> str:
    for name, floor in BANDS:
        if severity >= floor:
            return name
    return "low"


def rating(score: float) -> str:
    for name, floor in RATINGS:
        if score >= floor:
            return name
    return "poor"


@dataclass(slots=True)
class Pressure:
    """What the score is made of, summed over the sites of a scope."""

    sites: int = 0
    alert_pressure: float = 0.0  # sum of BAND_WEIGHT x CRITICALITY_WEIGHT over open alerts
    deviation_pressure: float = 0.0  # sum of CRITICALITY_WEIGHT over open baseline deviations
    sensor_weight: float = 0.0  # sum of CRITICALITY_WEIGHT over registered sensors
    silent_weight: float = 0.0  # the same over silent sensors
    # the assessment's pressures of the scope's assets (assessment/risk.py), each already
    # weighted by its site's criticality: open findings, matched advisories, exposure
    findings: float = 0.0
    vulnerabilities: float = 0.0
    exposure: float = 0.0

    def add(self, other: Pressure) -> None:
        self.sites += other.sites
        self.alert_pressure += other.alert_pressure
        self.deviation_pressure += other.deviation_pressure
        self.sensor_weight += other.sensor_weight
        self.silent_weight += other.silent_weight
        self.findings += other.findings
        self.vulnerabilities += other.vulnerabilities
        self.exposure += other.exposure


def score(p: Pressure, days: float = 1.0) -> dict[str, Any]:
    """Score = 100 - alerts - deviations - sensor health - risk, each part bounded (see
    README).

    Alert and deviation pressures are taken per site and per day of the time range (at least
    one day), so a big city and a small one, or a week and a day, read on the same scale. The
    risk is a state, not a rate: its pressure is taken per site only."""
    sites = max(p.sites, 1)
    per_site = sites * max(days, 1.0)
    alerts = ALERT_MAX * (1.0 - math.exp(-(p.alert_pressure / per_site) / ALERT_SCALE))
    deviations = DEVIATION_MAX * (
        1.0 - math.exp(-(p.deviation_pressure / per_site) / DEVIATION_SCALE)
    )
    health = HEALTH_MAX * (p.silent_weight / p.sensor_weight) if p.sensor_weight else 0.0
    pressures = {part: getattr(p, part) for part in RISK_PARTS}
    raw = sum(pressures.values())
    risk = RISK_MAX * (1.0 - math.exp(-(raw / sites) / RISK_SCALE))
    value = max(0.0, min(100.0, 100.0 - alerts - deviations - health - risk))
    return {
        "score": round(value, 1),
        "rating": rating(value),
        "alerts": round(alerts, 1),
        "deviations": round(deviations, 1),
        "sensor_health": round(health, 1),
        "risk": round(risk, 1),
        # the risk penalty's parts (each pressure's share of it): they add up to ``risk``
        "risk_parts": {
            part: round(risk * v / raw, 1) if raw else 0.0 for part, v in pressures.items()
        },
    }


def site_risk(alert_pressure: float, deviation_pressure: float) -> float:
    """How a site ranks among 'top risky sites': the same pressure the score uses."""
    return round(alert_pressure + deviation_pressure, 2)
