"""The assessment routes of the posture API: the scope's assessment (risk with its parts,
findings by kind, exposure by advisory with affected assets by city and industry), who is
affected by one advisory, an asset with its findings, advisories and risk, and accepting a
finding. Tenancy as everywhere: the scope becomes a site list intersected with the
caller's, and whatever lies outside answers 404 like a missing object.

The domain is ``assessment/``; this module only fetches the scope's documents through the
query interface and the posture state, and hands them over.
"""

import threading
import time
from typing import Any

from fastapi import FastAPI, HTTPException, Query
from pydantic import BaseModel, Field

from assessment.assess import SiteInfo, assess
from assessment.catalog import Catalog, CatalogError
from assessment.findings import RESOLVE_AFTER_S, lifecycle
from assessment.matching import Matcher, identifiers
from assessment.risk import asset_pressures, site_pressures
from pipeline.docs import nest
from pipeline.query import AlertFilter, QueryBackend

MAX_ASSETS = 200_000  # assets fetched for one scope's assessment
MAX_FINDINGS = 1_000_000
ALERT_DAYS = 7  # open alerts of the last week weigh in the risk
MAX_ALERTS = 10_000


class AcceptBody(BaseModel):
    reason: str = Field(min_length=1, max_length=1000)


class AssessmentData:
    """Fetches a scope's documents and assesses them."""

    EXPOSURE_TTL_S = 60.0  # how long the province-wide exposure behind the scores is reused

    def __init__(self, backend: QueryBackend, state: Any, catalog: Catalog | None) -> None:
        self.backend = backend
        self.state = state
        self.catalog = catalog
        self._matcher: tuple[int, Matcher] | None = None
        self.resolve_after_s = RESOLVE_AFTER_S
        self._exposure: tuple[float, Any, dict[str, dict[str, float]]] | None = None
        self._exposure_lock = threading.Lock()
        self._decisions = 0  # bumped by each accept / reopen: the exposure is recomputed

    def matcher(self) -> Matcher | None:
        if self.catalog is None:
            return None
        advisories = self.catalog.advisories()
        key = id(advisories)
        if self._matcher is None or self._matcher[0] != key:
            self._matcher = (key, Matcher(advisories))
        return self._matcher[1]

    def sites(self, sites: list[str] | None) -> dict[str, SiteInfo]:
        org = self.state.org()
        out = {}
        for sid, s in org.sites.items():
            if sites is not None and sid not in sites:
                continue
            ent = org.enterprises.get(s.enterprise_id, {})
            out[sid] = SiteInfo(
                sid,
                s.enterprise_id,
                ent.get("name", s.enterprise_id),
                s.city_id,
                s.industry,
                s.criticality,
            )
        return out

    def assets(self, sites: list[str] | None) -> list[dict]:
        # a scope without sites sees nothing (None: every site)
        return self.backend.all_assets(sites, MAX_ASSETS)

    def findings(self, sites: list[str] | None, asset_id: str | None = None) -> list[dict]:
        if sites is not None and not sites:
            return []
        return self.backend.search_findings(sites, asset_id=asset_id, limit=MAX_FINDINGS)[1]

    # -- decisions ----------------------------------------------------------------------------

    def accept(self, finding_id: str, reason: str, user: str) -> None:
        if self.catalog is None:
            raise CatalogError("no assessment catalog")
        self.catalog.accept(finding_id, reason, user)
        self._decisions += 1

    def reopen(self, finding_id: str) -> bool:
        if self.catalog is None:
            return False
        done = self.catalog.reopen(finding_id)
        self._decisions += 1
        return done

    # -- the exposure behind the posture score ------------------------------------------------

    def site_exposure(self, now: float | None = None) -> dict[str, dict[str, float]]:
        """Per site, the criticality-weighted pressures of its assets' open findings, matched
        advisories and exposure (``assessment/risk.py``): the risk part of the posture score
        (posture/scoring.py). Computed for the whole province at once and reused for
        ``EXPOSURE_TTL_S`` by every scope and caller (each sums its own sites only), and at
        once again after an import or a decision."""
        matcher = self.matcher()
        key = (id(matcher), self._decisions)
        with self._exposure_lock:
            got = self._exposure
            if (
                got is not None
                and got[1] == key
                and time.monotonic() - got[0] < self.EXPOSURE_TTL_S
            ):
                return got[2]
            now = time.time() if now is None else now
            assets = self.assets(None)
            acceptances = self.catalog.acceptances() if self.catalog else {}
            findings = lifecycle(self.findings(None), now, acceptances, self.resolve_after_s)
            matches = matcher.match(assets) if matcher is not None else []
            crit = {s: info.criticality for s, info in self.sites(None).items()}
            out = site_pressures(asset_pressures(findings, matches, (), crit), _site_of(assets))
            self._exposure = (time.monotonic(), key, out)
            return out

    def invalidate(self) -> None:
        """Forget the cached exposure (a test that changed assets or findings)."""
        with self._exposure_lock:
            self._exposure = None

    def exposure(self, advisory_id: str, sites: list[str]) -> list[dict]:
        """The matches of one advisory among the assets of ``sites`` (the response desk's
        check that a notice about it was acted on)."""
        matcher = self.matcher()
        adv = matcher.advisories.get(advisory_id) if matcher else None
        if adv is None or not sites:
            return []
        return [m.doc() for m in Matcher([adv]).match(self.assets(sites))]

    def alerts(self, sites: list[str] | None, now: float | None = None) -> list[dict]:
        if sites is not None and not sites:
            return []
        now = time.time() if now is None else now
        _total, docs = self.backend.search_alerts(
            AlertFilter(
                since=now - ALERT_DAYS * 86400,
                until=now + 60,
                sites=list(sites) if sites is not None else None,
                limit=MAX_ALERTS,
            )
        )
        closed = self.closed_ids([d.get("event.id") for d in docs])
        return [d for d in docs if d.get("event.id") not in closed]

    def closed_ids(self, ids: list[Any]) -> set[str]:
        lookup = getattr(self.state, "alert_states", None)
        if lookup is None:
            return set()
        states = lookup([str(i) for i in ids if i])
        return {k for k, v in states.items() if v.get("status") == "closed"}

    def coverage(self, sites: list[str] | None, now: float | None = None) -> dict:
        """Coverage of the scope's enterprises (assessment/coverage.py): heartbeats where the
        back end keeps them, else each sensor's newest event."""
        from assessment.coverage import (
            STALE_AFTER_S,
            EnterpriseInfo,
            coverage,
            signals_from_heartbeats,
        )

        now = time.time() if now is None else now
        org = self.state.org()
        site_ids = list(org.sites) if sites is None else [s for s in sites if s in org.sites]
        ents: dict[str, EnterpriseInfo] = {}
        sensors: list[str] = []
        for sid in site_ids:
            site = org.sites[sid]
            e = org.enterprises.get(site.enterprise_id, {})
            info = ents.setdefault(
                site.enterprise_id,
                EnterpriseInfo(
                    site.enterprise_id,
                    e.get("name", site.enterprise_id),
                    site.city_id,
                    site.industry,
                    e.get("grade"),
                    bool(e.get("key_connected")),
                ),
            )
            info.sensors.extend(site.sensors)
            sensors.extend(site.sensors)
        # each sensor's newest heartbeat (Elasticsearch: the small latest-heartbeats index),
        # however old: a sensor heard from long ago is stale, not never onboarded
        signals = signals_from_heartbeats(
            self.backend.latest(
                "heartbeat", AlertFilter(until=now + 60, sites=site_ids), size=len(sensors) + 100
            )
        )
        if sensors:
            last = self.backend.last_seen_by(
                AlertFilter(since=now - STALE_AFTER_S, until=now + 60, sites=site_ids),
                "observer.name",
                size=len(sensors) + 100,
                kind="event",
            )
            from assessment.coverage import SensorSignal

            for name, ts in last:
                signals.setdefault(name, SensorSignal(name)).last_event = ts
        return coverage(ents.values(), signals, now)

    def assess(
        self, sites: list[str] | None, assets: list[dict] | None = None, now: float | None = None
    ):
        acceptances = self.catalog.acceptances() if self.catalog else {}
        return assess(
            self.assets(sites) if assets is None else assets,
            self.findings(sites),
            self.alerts(sites, now),
            self.sites(sites),
            self.matcher(),
            acceptances,
            now=now,
            resolve_after_s=self.resolve_after_s,
        )


def _site_of(assets: list[dict]) -> dict[str, str]:
    return {a["asset.id"]: str(a.get("labels.site") or "") for a in assets}


def add_routes(
    app: FastAPI, data: AssessmentData, who: Any, scoped: Any, not_visible: type
) -> None:
    """Register the assessment routes (``who``: the principal dependency; ``scoped``: the
    scope resolver; ``not_visible``: the exception that answers 404)."""

    def site_list(sc: Any) -> list[str] | None:
        return list(sc.sites) if sc.sites is not None else None

    @app.get("/api/assessment", summary="Assessment of a scope: risk, findings, exposure")
    def assessment(p: who, scope: str | None = None, top: int = Query(10, ge=1, le=100)) -> dict:
        sc = scoped(p, scope)
        result = data.assess(site_list(sc))
        doc = result.doc()
        doc["top_assets"] = result.assets[:top]
        doc["scope"] = sc.key if hasattr(sc, "key") else scope
        doc["advisories_loaded"] = len(data.matcher().advisories) if data.matcher() else 0
        doc["coverage"] = data.coverage(site_list(sc))
        return doc

    @app.get("/api/findings", summary="Findings of a scope with their state")
    def findings(
        p: who,
        scope: str | None = None,
        state: str | None = None,
        kind: str | None = None,
        limit: int = Query(200, ge=1, le=5000),
    ) -> dict:
        sc = scoped(p, scope)
        rows = data.assess(site_list(sc), assets=[]).findings
        if state:
            rows = [r for r in rows if r["finding.state"] == state]
        if kind:
            rows = [r for r in rows if r["finding.kind"] == kind]
        return {"total": len(rows), "items": [nest(r) for r in rows[:limit]]}

    def visible_finding(p: Any, finding_id: str) -> dict:
        sc = scoped(p, None)
        for doc in data.findings(site_list(sc)):
            if doc.get("finding.id") == finding_id:
                return doc
        raise not_visible(finding_id)

    @app.post("/api/findings/{finding_id}/accept", summary="Accept a finding with a reason")
    def accept(p: who, finding_id: str, body: AcceptBody) -> dict:
        doc = visible_finding(p, finding_id)
        if not p.can_workflow:
            raise HTTPException(403, "this token is read-only")
        if data.catalog is None:
            raise HTTPException(503, "no assessment catalog")
        data.accept(finding_id, body.reason, p.name)
        data.state.audit(
            p.name,
            "finding-accept",
            {"finding": finding_id, "reason": body.reason},
            site=doc.get("labels.site"),
        )
        return {"id": finding_id, "state": "accepted", "reason": body.reason.strip()}

    @app.post("/api/findings/{finding_id}/reopen", summary="Withdraw a finding's acceptance")
    def reopen(p: who, finding_id: str) -> dict:
        doc = visible_finding(p, finding_id)
        if not p.can_workflow:
            raise HTTPException(403, "this token is read-only")
        data.reopen(finding_id)
        data.state.audit(
            p.name, "finding-reopen", {"finding": finding_id}, site=doc.get("labels.site")
        )
        return {"id": finding_id, "state": "open"}

    @app.get("/api/advisories", summary="Imported advisories, with affected counts in scope")
    def advisories(p: who, scope: str | None = None) -> dict:
        sc = scoped(p, scope)
        matcher = data.matcher()
        if matcher is None:
            return {"total": 0, "items": []}
        counts: dict[str, list[int]] = {}
        for m in matcher.match(data.assets(site_list(sc))):
            c = counts.setdefault(m.advisory_id, [0, 0])
            c[0 if m.status == "affected" else 1] += 1
        items = []
        for adv in matcher.advisories.values():
            row = nest(adv.summary())
            row["affected"], row["possibly"] = counts.get(adv.id, [0, 0])
            items.append(row)
        items.sort(
            key=lambda r: (-r["affected"], not r["advisory"]["exploited"], r["advisory"]["id"])
        )
        return {"total": len(items), "items": items}

    @app.get("/api/advisories/{advisory_id}", summary="Who is affected by one advisory")
    def affected(p: who, advisory_id: str, scope: str | None = None) -> dict:
        sc = scoped(p, scope)
        matcher = data.matcher()
        adv = matcher.advisories.get(advisory_id) if matcher else None
        if adv is None:
            raise not_visible(advisory_id)  # advisories are shared: only a missing one is 404
        sites = data.sites(site_list(sc))
        rows = []
        by_city: dict[str, int] = {}
        by_industry: dict[str, int] = {}
        by_enterprise: dict[str, int] = {}
        assets = data.assets(site_list(sc))
        for m in Matcher([adv]).match(assets):
            doc = m.doc()
            site = m.asset_id.rsplit(":", 1)[0]
            info = sites.get(site)
            doc["labels.site"] = site
            doc["city"] = info.city if info else ""
            doc["industry"] = info.industry if info else ""
            doc["enterprise"] = info.enterprise_name if info else ""
            rows.append(doc)
            if m.status == "affected":
                by_city[doc["city"] or "?"] = by_city.get(doc["city"] or "?", 0) + 1
                by_industry[doc["industry"] or "?"] = by_industry.get(doc["industry"] or "?", 0) + 1
                by_enterprise[doc["enterprise"] or "?"] = (
                    by_enterprise.get(doc["enterprise"] or "?", 0) + 1
                )
        rows.sort(key=lambda r: (r["match.status"] != "affected", r["asset.id"]))
        return {
            "advisory": nest(adv.summary())["advisory"],
            "affected": sum(1 for r in rows if r["match.status"] == "affected"),
            "possibly": sum(1 for r in rows if r["match.status"] != "affected"),
            "by_city": by_city,
            "by_industry": by_industry,
            "by_enterprise": by_enterprise,
            # CPEs and package URLs of its products: matched where assets carry them, or not
            "identifiers": identifiers(adv, assets),
            "items": [nest(r) for r in rows],
        }

    @app.get("/api/assets/{asset_id}", summary="One asset: findings, advisories and risk")
    def asset(p: who, asset_id: str) -> dict:
        sc = scoped(p, None)
        sites = site_list(sc)
        site = asset_id.rsplit(":", 1)[0] if ":" in asset_id else ""
        if sites is not None and site not in sites:
            raise not_visible(asset_id)
        doc = data.backend.get_asset(asset_id)
        if doc is None:
            raise not_visible(asset_id)
        result = data.assess([site] if site else sites, assets=[doc])
        risk = next((r for r in result.assets if r["asset.id"] == asset_id), None)
        return {
            "asset": nest(doc),
            "risk": risk,
            "findings": [nest(f) for f in result.findings if f["asset.id"] == asset_id],
            "advisories": [nest(m) for m in result.matches if m["asset.id"] == asset_id],
        }
