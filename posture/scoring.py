"""The posture score: one number from 0 (worst) to 100 (nothing to worry about) per scope.

posture/README.md explains the formula in words; the constants here are that formula.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# Severity bands over event.severity (0-100), highest first.
BANDS: tuple[tuple[str, int], ...] = (("critical", 90), ("high", 70), ("medium", 40), ("low", 0))
# What one open alert of a band weighs, relative to one medium alert.
BAND_WEIGHT = {"critical": 10.0, "high": 4.0, "medium": 1.0, "low": 0.25}
# Site criticality (1-5, from the registry) multiplies everything that happens at the site.
CRITICALITY_WEIGHT = {1: 0.5, 2: 0.75, 3: 1.0, 4: 1.5, 5: 2.0}

ALERT_MAX, DEVIATION_MAX, HEALTH_MAX = 60.0, 15.0, 25.0
ALERT_SCALE = 20.0  # weighted open-alert pressure per site per day that costs 63% of ALERT_MAX
DEVIATION_SCALE = 10.0  # weighted open deviations per site per day: 63% of DEVIATION_MAX

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

    def add(self, other: Pressure) -> None:
        self.sites += other.sites
        self.alert_pressure += other.alert_pressure
        self.deviation_pressure += other.deviation_pressure
        self.sensor_weight += other.sensor_weight
        self.silent_weight += other.silent_weight


def score(p: Pressure, days: float = 1.0) -> dict[str, float | str]:
    """Score = 100 - alerts - deviations - sensor health, each part bounded (see README).

    Pressures are taken per site and per day of the time range (at least one day), so a
    big city and a small one, or a week and a day, read on the same scale."""
    per_site = max(p.sites, 1) * max(days, 1.0)
    alerts = ALERT_MAX * (1.0 - math.exp(-(p.alert_pressure / per_site) / ALERT_SCALE))
    deviations = DEVIATION_MAX * (
        1.0 - math.exp(-(p.deviation_pressure / per_site) / DEVIATION_SCALE)
    )
    health = HEALTH_MAX * (p.silent_weight / p.sensor_weight) if p.sensor_weight else 0.0
    value = max(0.0, min(100.0, 100.0 - alerts - deviations - health))
    return {
        "score": round(value, 1),
        "rating": rating(value),
        "alerts": round(alerts, 1),
        "deviations": round(deviations, 1),
        "sensor_health": round(health, 1),
    }


def site_risk(alert_pressure: float, deviation_pressure: float) -> float:
    """How a site ranks among 'top risky sites': the same pressure the score uses."""
    return round(alert_pressure + deviation_pressure, 2)
