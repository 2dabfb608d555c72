"""Posture computations over a QueryBackend plus the posture state.

Everything heavy is an aggregation in the back end (terms, pair terms, date histogram,
max per sensor); Python only folds the aggregated buckets (at most one row per site and
severity value) into scores. No function here pulls alert documents in bulk.
"""

from __future__ import annotations

import heapq
import time
from collections import defaultdict
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

from pipeline.docs import nest
from pipeline.query import AlertFilter, AssetFilter, QueryBackend
from posture.access import Principal, Scope, can_see_site
from posture.scoring import (
    BAND_WEIGHT,
    BANDS,
    CRITICALITY_WEIGHT,
    RISK_PARTS,
    Pressure,
    band,
    score,
    site_risk,
)
from posture.state import OrgIndex, PostureState, epoch_of

# How far back sensor health looks for a sensor's newest heartbeat (Elasticsearch keeps the
# newest per sensor in one small index; the embedded store groups its heartbeats in this
# window). A sensor silent for longer shows as "no heartbeat in 24 h".
SENSOR_LOOKBACK_S = 86400
# Operations that change the process or the device (ics.operation): the controls table
CONTROL_OPERATIONS = ("control", "write", "program")
CONTROL_FIELDS = (
    "source.ip",
    "destination.ip",
    "network.protocol",
    "ics.operation",
    "ics.function",
)
# Shared by all requests; tasks never wait on other tasks, so it cannot deadlock.
_POOL = ThreadPoolExecutor(max_workers=8, thread_name_prefix="posture-query")


def trend_interval(span_s: float) -> int:
    """Histogram bucket width: at most about 50 bars whatever the range."""
    for width in (300, 900, 3600, 3 * 3600, 6 * 3600, 86400):
        if span_s / width <= 50:
            return width
    return 86400


class PostureService:
    def __init__(
        self,
        backend: QueryBackend,
        state: PostureState,
        silent_after_s: float = 900.0,
        exposure: Callable[[], Mapping[str, Mapping[str, float]]] | None = None,
    ) -> None:
        self.backend = backend
        self.state = state
        self.silent_after_s = silent_after_s
        # per site, the assessment's criticality-weighted pressures (findings,
        # vulnerabilities, exposure): the score's risk part (posture/assessment_api.py)
        self.exposure = exposure

    # -- helpers --------------------------------------------------------------------------

    @staticmethod
    def alert_filter(scope: Scope, **kw: Any) -> AlertFilter:
        return AlertFilter(sites=list(scope.sites) if scope.sites is not None else [], **kw)

    def _pair_queries(
        self, scope: Scope, since: float | None, until: float | None, org: OrgIndex
    ) -> dict[str, Callable[[], Any]]:
        """The two aggregations behind the pressures: per (site, severity), (site, ruleset)."""
        flt = self.alert_filter(scope, since=since, until=until)
        n_sites = len(scope.sites) if scope.sites is not None else len(org.sites)
        size_a = max(n_sites + 100, 100)  # every registered site, and some unregistered ones
        return {
            "site_severity": lambda: self.backend.count_alerts_by_pair(
                flt, "labels.site", "event.severity", size_a=size_a, size_b=101
            ),
            "site_ruleset": lambda: self.backend.count_alerts_by_pair(
                flt, "labels.site", "rule.ruleset", size_a=size_a, size_b=5
            ),
        }

    def _site_pressures(
        self,
        scope: Scope,
        since: float | None,
        until: float | None,
        org: OrgIndex,
        site_severity: list[tuple[str, str, int]],
        site_ruleset: list[tuple[str, str, int]],
    ) -> tuple[dict[str, Pressure], dict[str, dict[str, int]]]:
        """Per site: pressure from open alerts and deviations; and open counts per band."""
        by_sev: dict[tuple[str, int], int] = defaultdict(int)
        for site, sev, n in site_severity:
            by_sev[(site, int(float(sev)))] += n
        deviations: dict[str, int] = defaultdict(int)
        for site, ruleset, n in site_ruleset:
            if ruleset == "baseline":
                deviations[site] += n
        # Closed alerts are known only to the posture state: subtract them (never below 0).
        for site, sev, ruleset, n in self.state.closed_counts(
            list(scope.sites) if scope.sites is not None else None, since, until
        ):
            by_sev[(site, sev)] = max(0, by_sev.get((site, sev), 0) - n)
            if ruleset == "baseline":
                deviations[site] = max(0, deviations.get(site, 0) - n)
        pressures: dict[str, Pressure] = {}
        open_bands: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(BAND_WEIGHT, 0))
        for (site, sev), n in by_sev.items():
            info = org.sites.get(site)
            weight = CRITICALITY_WEIGHT[info.criticality if info else 3]
            p = pressures.setdefault(site, Pressure(sites=1))
            b = band(sev)
            p.alert_pressure += n * BAND_WEIGHT[b] * weight
            open_bands[site][b] += n
        for site, n in deviations.items():
            info = org.sites.get(site)
            p = pressures.setdefault(site, Pressure(sites=1))
            p.deviation_pressure += n * CRITICALITY_WEIGHT[info.criticality if info else 3]
        return pressures, open_bands

    def sensors(self, scope: Scope, now: float | None = None) -> dict[str, Any]:
        """Registered sensors in scope with their newest heartbeat; silent ones listed first.

        States: ``reporting``; ``no-traffic`` (heartbeats come, but its last interval saw no
        packet: the mirror port or the plant is quiet); ``stopped`` (its last heartbeat was a
        clean stop); ``silent`` (no heartbeat for ``silent_after_s``: down or cut off).
        ``stopped`` and ``silent`` sensors count as silent in the score: nothing is watched.
        """
        now = time.time() if now is None else now
        org = self.state.org()
        site_ids = scope.sites if scope.sites is not None else tuple(org.sites)
        registered = [(name, sid) for sid in site_ids for name in org.sites[sid].sensors]
        flt = self.alert_filter(scope, since=now - SENSOR_LOOKBACK_S)
        latest = {
            str(doc.get("observer.name")): doc
            for doc in self.backend.latest("heartbeat", flt, size=len(registered) + 100)
        }
        rows = []
        for name, sid in registered:
            beat = latest.get(name)
            seen = epoch_of(beat.get("@timestamp")) if beat else None
            if seen is None or now - seen > self.silent_after_s:
                state = "silent"
            elif beat is not None and beat.get("icsmon.sensor.reason") == "stop":
                state = "stopped"
            elif beat is not None and beat.get("icsmon.sensor.traffic") == 0:
                state = "no-traffic"
            else:
                state = "reporting"
            info = org.sites[sid]
            row: dict[str, Any] = {
                "name": name,
                "site": sid,
                "enterprise": info.enterprise_id,
                "city": info.city_id,
                "last_seen": seen,
                "silent": state in ("silent", "stopped"),
                "state": state,
            }
            if beat is not None:
                row.update(
                    {
                        key: beat.get(f"icsmon.sensor.{key}")
                        for key in (
                            "traffic",
                            "packets",
                            "kernel_drops",
                            "anomalies",
                            "uptime_s",
                            "content_version",
                        )
                    }
                )
                row["version"] = beat.get("observer.version")
            rows.append(row)
        rows.sort(key=lambda r: (not r["silent"], r["last_seen"] or 0, r["name"]))
        silent_n = sum(1 for r in rows if r["silent"])
        return {
            "total": len(rows),
            "reporting": len(rows) - silent_n,
            "silent": silent_n,
            "no_traffic": sum(1 for r in rows if r["state"] == "no-traffic"),
            "silent_after_s": self.silent_after_s,
            "sensors": rows,
        }

    # -- traffic (rollups) -------------------------------------------------------------------

    def traffic(
        self, scope: Scope, since: float, until: float, top: int = 20, history_days: float = 7.0
    ) -> dict[str, Any]:
        """Who talks to whom, the operations mix, who sends controls (commands, set points,
        restarts, program changes: per client, server, protocol and function) and new
        talkers, from rollups (never events): a new talker is a (client, server, protocol)
        with traffic in the range and none in the ``history_days`` before it."""
        flt = self.alert_filter(scope, since=since, until=until)
        b = self.backend
        calls: dict[str, Callable[[], Any]] = {
            "pairs": lambda: b.rollup_sums(
                flt, ("source.ip", "destination.ip", "network.protocol"), size=max(top, 500)
            ),
            "operations": lambda: b.rollup_sums(flt, ("ics.operation",), size=20),
            "controls": lambda: b.rollup_sums(
                flt, CONTROL_FIELDS, size=top, operations=CONTROL_OPERATIONS
            ),
            "protocols": lambda: b.rollup_sums(flt, ("network.protocol",), size=20),
            "before": lambda: b.rollup_sums(
                self.alert_filter(scope, since=since - history_days * 86400, until=since),
                ("source.ip", "destination.ip", "network.protocol"),
                size=100_000,
            ),
        }
        futures = {name: _POOL.submit(fn) for name, fn in calls.items()}
        got = {name: f.result() for name, f in futures.items()}
        known = {key for key, *_ in got["before"]}
        pairs = got["pairs"]
        return {
            "range": {"since": since, "until": until},
            "talkers": [
                {"client": k[0], "server": k[1], "protocol": k[2], "transactions": n, "bytes": nb}
                for k, n, nb, _ in pairs[:top]
            ],
            "operations": [[k[0], n] for k, n, _, _ in got["operations"]],
            "controls": [
                {
                    "client": k[0],
                    "server": k[1],
                    "protocol": k[2],
                    "operation": k[3],
                    "function": k[4],
                    "transactions": n,
                    "first_seen": first,
                }
                for k, n, _, first in got["controls"]
            ],
            "protocols": [[k[0], n] for k, n, _, _ in got["protocols"]],
            "new_talkers": [
                {
                    "client": k[0],
                    "server": k[1],
                    "protocol": k[2],
                    "transactions": n,
                    "first_seen": first,
                }
                for k, n, _, first in sorted(pairs, key=lambda r: -r[3])
                if k not in known
            ][:top],
            "history_days": history_days,
        }

    # -- summary ---------------------------------------------------------------------------

    def summary(
        self,
        scope: Scope,
        since: float,
        until: float,
        now: float | None = None,
        top: int = 10,
    ) -> dict[str, Any]:
        now = time.time() if now is None else now
        org = self.state.org()
        flt = self.alert_filter(scope, since=since, until=until, limit=0)
        interval = trend_interval(until - since)
        asset_sites = list(scope.sites) if scope.sites is not None else []
        b = self.backend
        # Independent aggregations: sent together, so the page costs the slowest, not the sum.
        calls: dict[str, Callable[[], Any]] = {
            "total": lambda: b.search_alerts(flt)[0],
            "severity": lambda: b.count_alerts_by(flt, "event.severity", size=101),
            "technique": lambda: b.count_alerts_by(flt, "threat.technique.id", size=top),
            "tactic": lambda: b.count_alerts_by(flt, "threat.tactic.name", size=top),
            "protocol": lambda: b.count_alerts_by(flt, "network.protocol", size=10),
            "trend": lambda: b.alert_histogram(flt, interval, "event.severity", size=101),
            "sensors": lambda: self.sensors(scope, now),
            "exposure": lambda: self.exposure() if self.exposure is not None else {},
            "assets_seen": lambda: b.search_assets(
                AssetFilter(sites=asset_sites, last_seen_since=since, limit=0)
            )[0],
            "assets_new": lambda: b.search_assets(
                AssetFilter(sites=asset_sites, first_seen_since=since, limit=0)
            )[0],
            **self._pair_queries(scope, since, until, org),
        }
        facets = getattr(b, "alert_facets", None)
        if facets is not None:
            # The back end can do all alert aggregations in one request, one pass over the
            # alerts: cheaper than seven requests that each filter the same documents.
            n_sites = len(scope.sites) if scope.sites is not None else len(org.sites)
            size_a = max(n_sites + 100, 100)
            for name in (
                "total",
                "severity",
                "technique",
                "tactic",
                "protocol",
                "trend",
                "site_severity",
                "site_ruleset",
            ):
                del calls[name]
            calls["facets"] = lambda: facets(
                flt,
                terms={
                    "severity": ("event.severity", 101),
                    "technique": ("threat.technique.id", top),
                    "tactic": ("threat.tactic.name", top),
                    "protocol": ("network.protocol", 10),
                },
                # Few-valued field outside, sites inside: the same (site, x) counts as sites
                # outside (both sizes cover every value), ~10x cheaper in Elasticsearch, where
                # a sub-aggregation under 6,000 site buckets is the slow part of a summary.
                pairs={
                    "severity_site": ("event.severity", "labels.site", 101, size_a),
                    "ruleset_site": ("rule.ruleset", "labels.site", 5, size_a),
                },
                histogram=(interval, "event.severity", 101),
            )
        futures = {name: _POOL.submit(fn) for name, fn in calls.items()}
        got = {name: f.result() for name, f in futures.items()}
        if "facets" in got:
            got.update(got.pop("facets"))
            got["trend"] = got.pop("histogram")
            got["site_severity"] = [(site, sev, n) for sev, site, n in got.pop("severity_site")]
            got["site_ruleset"] = [(site, rs, n) for rs, site, n in got.pop("ruleset_site")]

        total = got["total"]
        by_severity = dict.fromkeys(BAND_WEIGHT, 0)
        for value, n in got["severity"]:
            by_severity[band(float(value))] += n
        by_technique, by_tactic, by_protocol = got["technique"], got["tactic"], got["protocol"]
        buckets: dict[float, dict[str, int]] = {}
        for start, value, n in got["trend"]:
            row = buckets.setdefault(start, dict.fromkeys(BAND_WEIGHT, 0))
            row[band(float(value if value is not None else 0))] += n
        first = since - since % interval
        trend = [
            {"t": t, **buckets.get(t, dict.fromkeys(BAND_WEIGHT, 0))}
            for t in _range(first, until, interval)
        ]

        pressures, open_bands = self._site_pressures(
            scope, since, until, org, got["site_severity"], got["site_ruleset"]
        )
        exposure = got["exposure"]
        for sid in scope.sites if scope.sites is not None else exposure:
            parts = exposure.get(sid)
            if parts:
                p = pressures.setdefault(sid, Pressure(sites=1))
                for part in RISK_PARTS:
                    setattr(p, part, parts.get(part, 0.0))
        sensors = got["sensors"]
        site_ids = scope.sites if scope.sites is not None else tuple(org.sites)
        total_p = Pressure()
        per_site: dict[str, Pressure] = {}
        for sid in site_ids:
            p = pressures.get(sid, Pressure(sites=1))
            p.sites = 1
            per_site[sid] = p
        # Alerts from sites not in the registry still weigh on the province.
        for sid, p in pressures.items():
            if sid not in per_site and scope.sites is None:
                total_p.add(replace(p, sites=0))
        silent_names = {r["name"] for r in sensors["sensors"] if r["silent"]}
        for sid, p in per_site.items():
            info = org.sites[sid]
            w = CRITICALITY_WEIGHT[info.criticality]
            p.sensor_weight = w * len(info.sensors)
            p.silent_weight = w * sum(1 for s in info.sensors if s in silent_names)
            total_p.add(p)

        days = (until - since) / 86400
        children = self._children(scope, per_site, open_bands, org, days)
        # Rank on raw numbers first; build the rows of the few that are shown.
        ranked = heapq.nsmallest(
            top,
            (
                (-(p.alert_pressure + p.deviation_pressure), sid)
                for sid, p in pressures.items()
                if p.alert_pressure or p.deviation_pressure
            ),
        )
        top_sites = []
        for _, sid in ranked:
            p, info = pressures[sid], org.sites.get(sid)
            top_sites.append(
                {
                    "site": sid,
                    "name": info.name if info else sid,
                    "enterprise": info.enterprise_id if info else None,
                    "city": info.city_id if info else None,
                    "risk": site_risk(p.alert_pressure, p.deviation_pressure),
                    "open": open_bands.get(sid, {}),
                }
            )
        open_total = sum(sum(v.values()) for v in open_bands.values())

        assets_seen, assets_new = got["assets_seen"], got["assets_new"]
        return {
            "scope": self.describe(scope, org),
            "range": {"since": since, "until": until},
            "generated": now,
            "score": score(total_p, days),
            "alerts": {
                "total": total,
                "open": open_total,
                "by_severity": by_severity,
                "by_technique": [[k, n] for k, n in by_technique],
                "by_tactic": [[k, n] for k, n in by_tactic],
                "by_protocol": [[k, n] for k, n in by_protocol],
            },
            "trend": {"interval": interval, "buckets": trend},
            "top_sites": top_sites,
            "children": children,
            "assets": {"seen": assets_seen, "new": assets_new},
            "sensors": {k: v for k, v in sensors.items() if k != "sensors"}
            | {"silent_list": [r for r in sensors["sensors"] if r["silent"]][:50]},
        }

    def _children(
        self,
        scope: Scope,
        per_site: dict[str, Pressure],
        open_bands: dict[str, dict[str, int]],
        org: OrgIndex,
        days: float,
    ) -> list[dict[str, Any]]:
        """The next level down (cities / enterprises / sites), each with its own score."""
        if scope.kind == "province":
            kind, key = "city", lambda s: org.sites[s].city_id
        elif scope.kind in ("city", "industry"):
            kind, key = "enterprise", lambda s: org.sites[s].enterprise_id
        else:
            kind, key = "site", lambda s: s
        groups: dict[str, Pressure] = {}
        opens: dict[str, int] = defaultdict(int)
        for sid, p in per_site.items():
            g = groups.setdefault(key(sid), Pressure())
            g.add(p)
            opens[key(sid)] += sum(open_bands.get(sid, {}).values())
        if kind == "city":  # cities without sites still get a tile
            for cid in org.cities:
                groups.setdefault(cid, Pressure())
        out = []
        for gid, p in groups.items():
            row = {
                "kind": kind,
                "id": gid,
                "open": opens.get(gid, 0),
                "sites": p.sites,
                **score(p, days),
            }
            row.update(self._names(kind, gid, org))
            out.append(row)
        out.sort(key=lambda r: (r["score"], r["id"]))
        return out

    @staticmethod
    def _names(kind: str, ident: str, org: OrgIndex) -> dict[str, Any]:
        if kind == "city":
            c = org.cities.get(ident, {})
            return {"name": c.get("name", ident), "name_zh": c.get("name_zh", "")}
        if kind == "enterprise":
            e = org.enterprises.get(ident, {})
            return {
                "name": e.get("name", ident),
                "name_zh": e.get("name_zh", ""),
                "industry": e.get("industry"),
                "criticality": e.get("criticality"),
                "city": e.get("city_id"),
            }
        if kind == "site":
            s = org.sites.get(ident)
            return {
                "name": s.name if s else ident,
                "name_zh": "",
                "criticality": s.criticality if s else None,
                "enterprise": s.enterprise_id if s else None,
            }
        return {"name": ident, "name_zh": ""}

    def describe(self, scope: Scope, org: OrgIndex) -> dict[str, Any]:
        if scope.kind == "province":
            p = org.province
            return {
                "kind": "province",
                "id": p.get("id"),
                "name": p.get("name", ""),
                "name_zh": p.get("name_zh", ""),
                "path": [],
            }
        out = {"kind": scope.kind, "id": scope.id, **self._names(scope.kind, scope.id or "", org)}
        out["path"] = self._path(scope, org)
        return out

    @staticmethod
    def _path(scope: Scope, org: OrgIndex) -> list[dict[str, str]]:
        """Breadcrumb above the scope: city, enterprise (the caller may not see all of them)."""
        path: list[dict[str, str]] = []
        if scope.kind == "enterprise":
            e = org.enterprises[scope.id or ""]
            path.append({"kind": "city", "id": e["city_id"]})
        elif scope.kind == "site":
            s = org.sites[scope.id or ""]
            path += [
                {"kind": "city", "id": s.city_id},
                {"kind": "enterprise", "id": s.enterprise_id},
            ]
        return path

    # -- alerts ---------------------------------------------------------------------------

    def search(self, flt: AlertFilter) -> tuple[int, list[dict[str, Any]]]:
        total, docs = self.backend.search_alerts(flt)
        states = self.state.alert_states([str(d.get("event.id")) for d in docs])
        items = []
        for d in docs:
            st = states.get(str(d.get("event.id")))
            items.append(self._with_state(d, st))
        return total, items

    @staticmethod
    def _with_state(doc: dict[str, Any], st: dict[str, Any] | None) -> dict[str, Any]:
        out = nest(doc)
        out["workflow"] = {
            "status": st["status"] if st else "open",
            "assignee": st["assignee"] if st else None,
            "close_reason": st["close_reason"] if st else None,
        }
        return out

    def visible_alert(self, p: Principal, alert_id: str) -> dict[str, Any] | None:
        """The flat alert when it exists and ``p`` may see it; otherwise None (the same)."""
        doc = self.backend.get_alert(alert_id)
        if doc is None or not can_see_site(p, self.state.org(), doc.get("labels.site")):
            return None
        return doc

    def detail(self, doc: dict[str, Any]) -> dict[str, Any]:
        alert_id = str(doc["event.id"])
        site = doc.get("labels.site")
        sites = [str(site)] if site else []
        event_ids = doc.get("icsmon.alert.event_ids") or []
        if isinstance(event_ids, str):
            event_ids = [event_ids]
        evidence: list[dict[str, Any]] = []
        if event_ids:
            _, evs = self.backend.search_events(
                AlertFilter(sites=sites, ids=[str(e) for e in event_ids][:100], limit=100)
            )
            evidence = [nest(e) for e in evs]
        flow: list[dict[str, Any]] = []
        flow_total = 0
        cid = doc.get("network.community_id")
        ts = epoch_of(doc.get("@timestamp"))
        if cid:
            flow_total, evs = self.backend.search_events(
                AlertFilter(
                    sites=sites, community_id=str(cid), since=ts - 3600, until=ts + 3600, limit=50
                )
            )
            flow = [nest(e) for e in evs]
        rule = {k.split(".", 1)[1]: v for k, v in doc.items() if k.startswith("rule.")}
        baseline = {k: v for k, v in doc.items() if k.startswith("icsmon.baseline.")}
        out = self._with_state(doc, self.state.alert_states([alert_id]).get(alert_id))
        org = self.state.org()
        info = org.sites.get(str(site)) if site else None
        out["org"] = (
            {
                "site": info.id,
                "site_name": info.name,
                "enterprise": info.enterprise_id,
                "enterprise_name": org.enterprises[info.enterprise_id]["name"],
                "enterprise_name_zh": org.enterprises[info.enterprise_id]["name_zh"],
                "city": info.city_id,
                "industry": info.industry,
                "criticality": info.criticality,
            }
            if info
            else None
        )
        out["evidence"] = {
            "events": evidence,
            "rule": rule,
            "baseline": nest(baseline) if baseline else None,
            "flow": {"community_id": cid, "events_total": flow_total, "events": flow},
        }
        out["notes"] = self.state.notes(alert_id)
        return out


def _range(start: float, stop: float, step: int) -> list[float]:
    out, t = [], start
    while t < stop:
        out.append(float(t))
        t += step
    return out


__all__ = ["PostureService", "BANDS", "trend_interval"]
