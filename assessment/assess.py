"""The assessment of one scope, as plain data: what the posture API serves, what reports
print. Inputs are what the caller already holds (the scope's assets, finding documents and
open alerts from the store or Elasticsearch, the registry's view of its sites, the catalog);
nothing here reads a database or knows about tenants.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from assessment.findings import RESOLVE_AFTER_S, lifecycle
from assessment.matching import Matcher
from assessment.risk import asset_pressures, explain, rollup


@dataclass
class SiteInfo:
    """What the registry says about a site (the caller's view of it)."""

    site: str
    enterprise: str = ""
    enterprise_name: str = ""
    city: str = ""
    industry: str = ""
    criticality: int = 3


@dataclass
class Assessment:
    findings: list[dict]
    matches: list[dict]
    risk: dict
    assets: list[dict]
    by_kind: list[dict]
    by_advisory: list[dict]
    top_assets: list[dict]
    top_enterprises: list[dict] = field(default_factory=list)

    def doc(self) -> dict[str, Any]:
        return {
            "risk": self.risk,
            "findings": {
                "total": len(self.findings),
                "by_state": dict(Counter(f["finding.state"] for f in self.findings)),
                "by_kind": self.by_kind,
            },
            "exposure": {
                "advisories": self.by_advisory,
                "assets_affected": len(
                    {m["asset.id"] for m in self.matches if m["match.status"] == "affected"}
                ),
                "assets_possibly": len(
                    {
                        m["asset.id"]
                        for m in self.matches
                        if m["match.status"] == "possibly-affected"
                    }
                ),
            },
            "top_assets": self.top_assets,
            "top_enterprises": self.top_enterprises,
        }


def assess(
    assets: Iterable[Mapping[str, Any]],
    finding_docs: Iterable[Mapping[str, Any]],
    alerts: Iterable[Mapping[str, Any]],
    sites: Mapping[str, SiteInfo],
    matcher: Matcher | None,
    acceptances: Mapping[str, Mapping[str, Any]] | None = None,
    now: float | None = None,
    resolve_after_s: float = RESOLVE_AFTER_S,
    top: int = 10,
) -> Assessment:
    now = time.time() if now is None else now
    assets = list(assets)
    findings = lifecycle(finding_docs, now, acceptances, resolve_after_s)
    matches = [m.doc() for m in matcher.match(assets)] if matcher is not None else []
    crit = {s: info.criticality for s, info in sites.items()}
    pressures = asset_pressures(findings, matches, alerts, crit)
    site_of = {a["asset.id"]: str(a.get("labels.site") or "") for a in assets}
    for f in findings:
        site_of.setdefault(f["asset.id"], str(f.get("labels.site") or ""))
    scope_risk = rollup(pressures, {}, len(sites) or len({s for s in site_of.values() if s}))

    by_kind: dict[str, dict] = {}
    for f in findings:
        row = by_kind.setdefault(
            f["finding.kind"],
            {
                "kind": f["finding.kind"],
                "title": f.get("finding.title", ""),
                "severity": f.get("finding.severity", 0),
                "category": f.get("finding.category", ""),
                "open": 0,
                "resolved": 0,
                "accepted": 0,
                "assets": 0,
            },
        )
        row[f["finding.state"]] += 1
        row["assets"] += 1
    kinds = sorted(by_kind.values(), key=lambda r: (-r["severity"], -r["open"], r["kind"]))

    advisories = {a.id: a for a in (matcher.advisories.values() if matcher else [])}
    by_adv: dict[str, dict] = {}
    for m in matches:
        adv = advisories.get(m["advisory.id"])
        row = by_adv.setdefault(
            m["advisory.id"],
            {
                "advisory": m["advisory.id"],
                "title": adv.title if adv else "",
                "cves": m["vulnerability.id"],
                "cvss": m["vulnerability.score.base"],
                "exploited": m["vulnerability.exploited"],
                "affected": 0,
                "possibly": 0,
                "by_city": Counter(),
                "by_industry": Counter(),
            },
        )
        row["affected" if m["match.status"] == "affected" else "possibly"] += 1
        info = sites.get(site_of.get(m["asset.id"], ""))
        row["by_city"][info.city if info else "?"] += 1
        row["by_industry"][info.industry if info else "?"] += 1
    exposure = sorted(
        by_adv.values(),
        key=lambda r: (not r["exploited"], -(r["cvss"] or 0), -r["affected"], r["advisory"]),
    )
    for row in exposure:
        row["by_city"] = dict(row["by_city"].most_common())
        row["by_industry"] = dict(row["by_industry"].most_common())

    asset_rows = []
    per_asset_findings: dict[str, int] = Counter(
        f["asset.id"] for f in findings if f["finding.state"] == "open"
    )
    per_asset_adv: dict[str, int] = Counter(m["asset.id"] for m in matches)
    known = {a["asset.id"]: a for a in assets}
    for asset_id, p in pressures.items():
        r = explain(p)
        a = known.get(asset_id, {})
        info = sites.get(site_of.get(asset_id, ""))
        asset_rows.append(
            {
                "asset.id": asset_id,
                "host.ip": a.get("host.ip") or asset_id.rsplit(":", 1)[-1],
                "labels.site": site_of.get(asset_id, ""),
                "enterprise": info.enterprise if info else "",
                "vendor": a.get("ics.device.vendor", ""),
                "product": a.get("ics.device.product") or a.get("ics.device.model", ""),
                "firmware": a.get("ics.device.firmware", ""),
                "findings": per_asset_findings.get(asset_id, 0),
                "advisories": per_asset_adv.get(asset_id, 0),
                **r.doc(),
            }
        )
    asset_rows.sort(key=lambda r: (-r["risk"], r["asset.id"]))

    ent_pressure: dict[str, list] = defaultdict(list)
    for asset_id, p in pressures.items():
        info = sites.get(site_of.get(asset_id, ""))
        if info is not None and info.enterprise:
            ent_pressure[info.enterprise].append((asset_id, p))
    ent_rows = []
    for ent, items in ent_pressure.items():
        n_sites = sum(1 for s in sites.values() if s.enterprise == ent)
        r = rollup(dict(items), {}, n_sites)
        name = next((s.enterprise_name for s in sites.values() if s.enterprise == ent), ent)
        city = next((s.city for s in sites.values() if s.enterprise == ent), "")
        ent_rows.append({"enterprise": ent, "name": name or ent, "city": city, **r.doc()})
    ent_rows.sort(key=lambda r: (-r["risk"], r["enterprise"]))
    return Assessment(
        findings=findings,
        matches=matches,
        risk=scope_risk.doc(),
        assets=asset_rows,
        by_kind=kinds,
        by_advisory=exposure,
        top_assets=asset_rows[:top],
        top_enterprises=ent_rows[:top],
    )
