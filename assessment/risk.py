"""Explainable risk: a number per asset from its parts, rolled up to any scope.

Per asset, four pressures (posture/README.md gives the formula with examples):

    F = sum over its OPEN findings of severity / 10            (firmware-observed counts 0)
    V = sum over its matched advisories of CVSS x k x p        k = 2 known-exploited, else 1
                                                               p = 1 affected, 0.5 possibly
    A = sum over its open alerts of the severity weight        10 / 4 / 1 / 0.25 by band
    X = 10 per open finding of category "exposure"             (reachable from outside)

    raw  = (F + V + A + X) x c                                 c = site criticality weight
    risk = 100 x (1 - e^(-raw / 50))                           0 (nothing) .. 100

A scope (site, enterprise, city, province) sums the raw pressures of its assets and divides
by the number of its sites before the same curve, so a large city and a small one read on
one scale:  risk = 100 x (1 - e^(-(sum raw / sites) / 50)). Each part is reported as its
share of the risk (``parts``: the part's raw pressure / raw x risk), so the parts add up to
the number shown.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

SCALE = 50.0
CRITICALITY_WEIGHT = {1: 0.5, 2: 0.75, 3: 1.0, 4: 1.5, 5: 2.0}
EXPOSURE_POINTS = 10.0
PARTS = ("findings", "vulnerabilities", "alerts", "exposure")


def severity_weight(severity: float) -> float:
    if severity >= 90:
        return 10.0
    if severity >= 70:
        return 4.0
    if severity >= 40:
        return 1.0
    return 0.25


def curve(raw: float) -> float:
    return round(100.0 * (1.0 - math.exp(-max(raw, 0.0) / SCALE)), 1)


@dataclass
class Pressure:
    findings: float = 0.0
    vulnerabilities: float = 0.0
    alerts: float = 0.0
    exposure: float = 0.0
    weight: float = 1.0  # criticality weight

    def raw(self) -> float:
        return (self.findings + self.vulnerabilities + self.alerts + self.exposure) * self.weight

    def add(self, other: Pressure) -> None:
        for part in PARTS:
            setattr(self, part, getattr(self, part) + getattr(other, part) * other.weight)


@dataclass
class Risk:
    risk: float
    raw: float
    parts: dict[str, float] = field(default_factory=dict)
    pressure: dict[str, float] = field(default_factory=dict)

    def doc(self) -> dict[str, Any]:
        return {
            "risk": self.risk,
            "raw": round(self.raw, 2),
            "parts": self.parts,
            "pressure": self.pressure,
        }


def explain(p: Pressure, divisor: float = 1.0, weighted: bool = True) -> Risk:
    """The risk of pressures (already weighted by criticality when ``weighted`` is false)."""
    w = p.weight if weighted else 1.0
    pressure = {part: round(getattr(p, part) * w / divisor, 2) for part in PARTS}
    raw = sum(pressure.values())
    risk = curve(raw)
    parts = {part: round(risk * v / raw, 1) if raw else 0.0 for part, v in pressure.items()}
    return Risk(risk=risk, raw=raw, parts=parts, pressure=pressure)


def asset_pressures(
    findings: Iterable[Mapping[str, Any]],
    matches: Iterable[Any],
    alerts: Iterable[Mapping[str, Any]],
    criticality: Mapping[str, int] | None = None,
) -> dict[str, Pressure]:
    """Pressure per asset id from open findings, advisory matches and open alerts.
    ``criticality`` maps a site to its registry criticality (1-5, default 3)."""
    out: dict[str, Pressure] = defaultdict(Pressure)
    for f in findings:
        if f.get("finding.state", "open") != "open":
            continue
        p = out[f["asset.id"]]
        p.findings += float(f.get("finding.severity") or 0) / 10.0
        if f.get("finding.category") == "exposure":
            p.exposure += EXPOSURE_POINTS
    for m in matches:
        doc = m.doc() if hasattr(m, "doc") else m
        if doc.get("match.state", "open") != "open":
            continue
        cvss = float(doc.get("vulnerability.score.base") or 5.0)
        k = 2.0 if doc.get("vulnerability.exploited") else 1.0
        share = 1.0 if doc.get("match.status") == "affected" else 0.5
        out[doc["asset.id"]].vulnerabilities += cvss * k * share
    for a in alerts:
        asset = a.get("asset.id") or _asset_of_alert(a)
        if asset:
            out[asset].alerts += severity_weight(float(a.get("event.severity") or 0))
    crit = criticality or {}
    for asset_id, p in out.items():
        site = asset_id.rsplit(":", 1)[0] if ":" in asset_id else ""
        p.weight = CRITICALITY_WEIGHT.get(int(crit.get(site, 3)), 1.0)
    return dict(out)


def _asset_of_alert(alert: Mapping[str, Any]) -> str | None:
    ip, site = alert.get("destination.ip"), alert.get("labels.site")
    if not ip:
        return None
    return f"{site}:{ip}" if site else str(ip)


def site_pressures(
    pressures: Mapping[str, Pressure], site_of: Mapping[str, str]
) -> dict[str, dict[str, float]]:
    """Per site, its assets' pressures other than alerts, weighted by criticality (what the
    posture score folds in: alerts weigh there already)."""
    out: dict[str, dict[str, float]] = {}
    for asset_id, p in pressures.items():
        site = site_of.get(asset_id) or (asset_id.rsplit(":", 1)[0] if ":" in asset_id else "")
        row = out.setdefault(site, dict.fromkeys(("findings", "vulnerabilities", "exposure"), 0.0))
        for part in row:
            row[part] += getattr(p, part) * p.weight
    return out


def rollup(pressures: Mapping[str, Pressure], site_of: Mapping[str, str], sites: int) -> Risk:
    """The risk of a scope: its assets' weighted pressures summed, per site."""
    total = Pressure()
    for asset_id, p in pressures.items():
        if asset_id in site_of or not site_of:
            total.add(p)
    return explain(total, divisor=max(sites, 1), weighted=False)
