"""Campaigns across enterprises: the same indicator at N or more enterprises within a window.

A province-level correlation over every enterprise's alerts. Indicators (policy
``campaigns.indicators``, strongest first):

- ``source-ip``: the alert's source address, when it lies outside the plants' own networks
  (``internal_networks``) and outside the allowlist (carrier NAT, vendor remote access);
- ``write-pattern``: the same written value pattern (protocol, function, address, values);
- ``technique-sequence``: the same ordered ATT&CK techniques from one source at a site;
- ``rule``: the same rule (noisy: off in the default policy).

For each indicator value the alerts are sorted in time; a campaign starts when a window of
``window_hours`` holds alerts of ``min_enterprises`` distinct enterprises, and takes in the
indicator's later alerts while they follow within the window. Repeats inside one enterprise
never make one. A weaker indicator's campaign whose enterprises a stronger one already covers
at an overlapping time is dropped (one attack, one campaign). Detection is idempotent: campaigns are found again by
(kind, indicator, time) and extended, never duplicated.

Also here: the allowlist and the indicator watchlist that early warning pushes to sensors.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import time
from collections import Counter, defaultdict
from typing import Any

from pipeline.query import AlertFilter, QueryBackend
from response.db import SYSTEM, Forbidden, Invalid, NotFound, ResponseDB, Viewer
from response.incidents import OrgLike, alert_epoch, as_list, page_alerts
from response.policy import Policy

DETECT_SCAN_CAP = 200_000
SPREAD_CHUNK = 500  # indicator values per request reading their alerts
WATCH_KINDS = ("ipv4-addr", "ipv6-addr")


def _ip(value: Any) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(str(value))
    except ValueError:
        return None


class Campaigns:
    def __init__(self, db: ResponseDB, policy: Policy, backend: QueryBackend) -> None:
        self.db = db
        self.policy = policy
        self.backend = backend

    # -- allowlist ---------------------------------------------------------------------

    def allowlist(self) -> list[dict[str, Any]]:
        fixed = [{**a, "origin": "policy"} for a in self.policy.allowlist]
        return fixed + [
            {**r, "origin": "state"} for r in self.db.rows("SELECT * FROM allowlist ORDER BY value")
        ]

    def _allowed_networks(self) -> list[Any]:
        return [ipaddress.ip_network(a["value"], strict=False) for a in self.allowlist()]

    def allow(self, who: Viewer, value: str, reason: str) -> dict[str, Any]:
        if not who.is_province:
            raise Forbidden("the province keeps the campaign allowlist")
        try:
            net = ipaddress.ip_network(value.strip(), strict=False)
        except ValueError:
            raise Invalid(f"{value!r} is not an address or network") from None
        if not reason.strip():
            raise Invalid("say why the address is shared (NAT, vendor remote access ...)")
        with self.db.tx() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO allowlist VALUES (?,?,?,?)",
                (str(net), reason.strip(), time.time(), who.name),
            )
            self.db.audit(
                conn,
                who,
                "allowlist",
                str(net),
                "allow",
                sites=[],
                enterprises=[],
                cities=[],
                detail={"reason": reason.strip()},
            )
        return {"value": str(net), "reason": reason.strip()}

    def disallow(self, who: Viewer, value: str) -> None:
        if not who.is_province:
            raise Forbidden("the province keeps the campaign allowlist")
        with self.db.tx() as conn:
            if conn.execute("DELETE FROM allowlist WHERE value=?", (value,)).rowcount != 1:
                raise NotFound(value)
            self.db.audit(
                conn, who, "allowlist", value, "remove", sites=[], enterprises=[], cities=[]
            )

    # -- detection ---------------------------------------------------------------------

    def _keys(
        self,
        doc: dict[str, Any],
        kind: str,
        fields: tuple[str, ...],
        internal: list[Any],
        allowed: list[Any],
    ) -> str | None:
        if kind == "source-ip":
            ip = _ip(doc.get("source.ip"))
            if ip is None or any(ip in n for n in internal) or any(ip in n for n in allowed):
                return None
            return str(ip)
        if kind == "write-pattern":
            values = [doc.get(f) for f in fields]
            if any(v is None or v == [] for v in values):
                return None
            return "|".join(
                json.dumps(v, sort_keys=True) if isinstance(v, list | dict) else str(v)
                for v in values
            )
        if kind == "rule":
            return str(doc.get("rule.id")) if doc.get("rule.id") else None
        return None

    def _sequences(
        self, docs: list[dict[str, Any]], min_length: int, window: float
    ) -> dict[str, list[tuple[float, list[dict[str, Any]]]]]:
        """technique-sequence: per (site, source) session, the ordered distinct techniques."""
        sessions: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
        for d in docs:
            sessions[(str(d.get("labels.site")), str(d.get("source.ip")))].append(d)
        out: dict[str, list[tuple[float, list[dict[str, Any]]]]] = defaultdict(list)
        for group in sessions.values():
            group.sort(key=alert_epoch)
            run: list[dict[str, Any]] = []
            for d in [*group, None]:
                if d is not None and (not run or alert_epoch(d) - alert_epoch(run[-1]) <= window):
                    run.append(d)
                    continue
                seq: list[str] = []
                for x in run:
                    for t in as_list(x.get("threat.technique.id")):
                        if t not in seq:
                            seq.append(str(t))
                if len(seq) >= min_length:
                    out[">".join(seq)].append((alert_epoch(run[0]), run))
                run = [d] if d is not None else []
        return out

    def _indicator_fields(self, kind: str, fields: tuple[str, ...]) -> tuple[str, ...]:
        return {"source-ip": ("source.ip",), "rule": ("rule.id",)}.get(kind, fields)

    def _spread_alerts(
        self,
        flt: AlertFilter,
        kind: str,
        fields: tuple[str, ...],
        internal: list[Any],
        allowed: list[Any],
    ) -> list[dict[str, Any]]:
        """The alerts of the indicator values seen at ``min_enterprises`` or more sites (a
        necessary condition for as many enterprises in one window), found by an aggregation
        in the back end; only those alerts are read."""
        need = self.policy.campaign_min_enterprises
        groups = self.backend.spread(flt, fields, "labels.site", need)
        if kind == "source-ip":  # the plants' own and the shared addresses never count
            groups = [
                g
                for g in groups
                if self._keys({"source.ip": g[0][0]}, kind, fields, internal, allowed)
            ]
        out: list[dict[str, Any]] = []
        for i in range(0, len(groups), SPREAD_CHUNK):
            chunk = groups[i : i + SPREAD_CHUNK]
            match = {f: sorted({g[0][n] for g in chunk}, key=str) for n, f in enumerate(fields)}
            out.extend(
                page_alerts(
                    self.backend,
                    AlertFilter(
                        since=flt.since,
                        until=flt.until,
                        min_severity=flt.min_severity,
                        match=match,
                    ),
                    DETECT_SCAN_CAP,
                )
            )
        return out

    def detect(
        self, org: OrgLike, since: float, until: float, now: float | None = None
    ) -> dict[str, Any]:
        """Find and record the campaigns among every enterprise's alerts in [since, until).

        Address, rule and written-value indicators are grouped in the back end (an
        aggregation: values at ``min_enterprises`` sites or more), so only the alerts behind
        those values are read; the opt-in technique sequence needs every alert of the window
        (up to ``DETECT_SCAN_CAP``)."""
        now = time.time() if now is None else now
        flt = AlertFilter(since=since, until=until, min_severity=self.policy.campaign_min_severity)
        internal, allowed = self.policy.internal_networks, self._allowed_networks()
        window, need = self.policy.campaign_window_s, self.policy.campaign_min_enterprises
        found: list[tuple[str, str, list[dict[str, Any]]]] = []
        read: set[str] = set()
        for ind in self.policy.indicators:
            runs: dict[str, list[dict[str, Any]]] = defaultdict(list)
            if ind.kind == "technique-sequence":
                docs = [
                    d
                    for d in page_alerts(
                        self.backend,
                        AlertFilter(since=since, until=until, min_severity=flt.min_severity),
                        DETECT_SCAN_CAP,
                    )
                    if d.get("labels.site") in org.sites
                ]
                for key, sessions in self._sequences(docs, ind.min_length, window).items():
                    for _, run in sessions:
                        runs[key].extend(run)
            else:
                fields = self._indicator_fields(ind.kind, ind.fields)
                docs = [
                    d
                    for d in self._spread_alerts(flt, ind.kind, fields, internal, allowed)
                    if d.get("labels.site") in org.sites
                ]
                for d in docs:
                    key = self._keys(d, ind.kind, ind.fields, internal, allowed)
                    if key is not None:
                        runs[key].append(d)
            read.update(str(d.get("event.id")) for d in docs)
            for key, alerts in runs.items():
                for group in self._windows(alerts, org, window, need):
                    found.append((ind.kind, key, group))
        # One attack, one campaign: a weaker indicator's group is dropped when a stronger
        # one already covers its enterprises over an overlapping time.
        kept: list[tuple[str, str, list[dict[str, Any]]]] = []
        spans: list[tuple[set[str], float, float]] = []
        for kind, key, group in found:
            ents = {org.sites[str(d["labels.site"])].enterprise_id for d in group}
            lo, hi = alert_epoch(group[0]), alert_epoch(group[-1])
            if any(ents <= e and lo <= b + window and hi >= a - window for e, a, b in spans):
                continue
            spans.append((ents, lo, hi))
            kept.append((kind, key, group))
        made, extended = [], []
        for kind, key, group in kept:
            cid, new = self._record(org, kind, key, group, window, now)
            (made if new else extended).append(cid)
        return {"scanned": len(read), "new": made, "extended": extended}

    @staticmethod
    def _windows(
        alerts: list[dict[str, Any]], org: OrgLike, window: float, need: int
    ) -> list[list[dict[str, Any]]]:
        """Runs of alerts where a window holds ``need`` distinct enterprises (one pass: a
        count of the enterprises inside the sliding window)."""
        timed = sorted(((alert_epoch(a), a) for a in alerts), key=lambda x: x[0])
        ts = [t for t, _ in timed]
        ents = [org.sites[str(a["labels.site"])].enterprise_id for _, a in timed]
        out: list[list[dict[str, Any]]] = []
        inside: Counter[str] = Counter()
        i, lo, n = 0, 0, len(timed)
        while i < n:
            inside[ents[i]] += 1
            while ts[lo] < ts[i] - window:
                inside[ents[lo]] -= 1
                if not inside[ents[lo]]:
                    del inside[ents[lo]]
                lo += 1
            if len(inside) < need:
                i += 1
                continue
            j = i + 1
            while j < n and ts[j] - ts[j - 1] <= window:
                j += 1
            out.append([a for _, a in timed[lo:j]])
            inside.clear()
            i = lo = j
        return out

    def _record(
        self,
        org: OrgLike,
        kind: str,
        key: str,
        group: list[dict[str, Any]],
        window: float,
        now: float,
    ) -> tuple[str, bool]:
        first, last = alert_epoch(group[0]), alert_epoch(group[-1])
        with self.db.tx() as conn:
            row = conn.execute(
                "SELECT * FROM campaign WHERE kind=? AND indicator=? AND last_seen >= ? AND "
                "first_seen <= ? ORDER BY first_seen LIMIT 1",
                (kind, key, first - window, last + window),
            ).fetchone()
            new = row is None
            cid = (
                row["id"]
                if row
                else "cmp-" + hashlib.sha256(f"{kind}|{key}|{first}".encode()).hexdigest()[:16]
            )
            before = set()
            if new:
                conn.execute(
                    "INSERT INTO campaign VALUES (?,?,?,?,?,?,?,?)",
                    (cid, kind, key, first, last, "active", now, now),
                )
            else:
                before = {
                    r[0]
                    for r in conn.execute(
                        "SELECT DISTINCT enterprise_id FROM campaign_alert WHERE campaign_id=?",
                        (cid,),
                    )
                }
                conn.execute(
                    "UPDATE campaign SET first_seen=MIN(first_seen, ?), "
                    "last_seen=MAX(last_seen, ?), updated=? WHERE id=?",
                    (first, last, now, cid),
                )
            for d in group:
                s = org.sites[str(d["labels.site"])]
                conn.execute(
                    "INSERT OR IGNORE INTO campaign_alert VALUES (?,?,?,?,?,?,?,?,?)",
                    (
                        cid,
                        str(d["event.id"]),
                        s.id,
                        s.enterprise_id,
                        s.city_id,
                        s.industry,
                        alert_epoch(d),
                        d.get("rule.id"),
                        json.dumps(as_list(d.get("threat.technique.id"))),
                    ),
                )
            rows = conn.execute(
                "SELECT DISTINCT site_id, enterprise_id, city_id FROM "
                "campaign_alert WHERE campaign_id=?",
                (cid,),
            ).fetchall()
            ents = {r["enterprise_id"] for r in rows}
            scope = {
                "sites": [r["site_id"] for r in rows],
                "enterprises": sorted(ents),
                "cities": sorted({r["city_id"] for r in rows}),
            }
            if new:
                self.db.audit(
                    conn,
                    SYSTEM,
                    "campaign",
                    cid,
                    "detect",
                    **scope,
                    to_state="active",
                    at=now,
                    detail={"kind": kind, "indicator": key, "enterprises": len(ents)},
                )
            elif ents - before:
                self.db.audit(
                    conn,
                    SYSTEM,
                    "campaign",
                    cid,
                    "extend",
                    **scope,
                    at=now,
                    detail={"new_enterprises": sorted(ents - before)},
                )
        return cid, new

    # -- reading ---------------------------------------------------------------------------

    def _visible(self, who: Viewer, cid: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        if who.is_enterprise:
            raise NotFound(cid)
        row = self.db.one("SELECT * FROM campaign WHERE id=?", (cid,))
        if row is None:
            raise NotFound(cid)
        alerts = self.db.rows(
            "SELECT * FROM campaign_alert WHERE campaign_id=? ORDER BY ts", (cid,)
        )
        if not who.sees([a["site_id"] for a in alerts]):
            raise NotFound(cid)
        return row, alerts

    def list(self, who: Viewer, limit: int = 100) -> dict[str, Any]:
        if who.is_enterprise:
            return {"total": 0, "items": []}
        rows = self.db.rows(
            "SELECT id FROM campaign ORDER BY last_seen DESC LIMIT ?", (limit * 10,)
        )
        items = []
        for r in rows:
            try:
                items.append(self.brief(who, r["id"]))
            except NotFound:
                continue
            if len(items) >= limit:
                break
        return {"total": len(items), "items": items}

    def brief(self, who: Viewer, cid: str) -> dict[str, Any]:
        row, alerts = self._visible(who, cid)
        everyone = {a["enterprise_id"] for a in alerts}
        mine = [a for a in alerts if who.sites is None or a["site_id"] in who.sites]
        return {
            "id": row["id"],
            "kind": row["kind"],
            "indicator": row["indicator"],
            "state": row["state"],
            "first_seen": row["first_seen"],
            "last_seen": row["last_seen"],
            "detected_at": row["detected_at"],
            "enterprises_total": len(everyone),
            "enterprises": sorted({a["enterprise_id"] for a in mine}),
            "cities": sorted({a["city_id"] for a in mine}),
            "industries": sorted({a["industry"] for a in mine}),
            "alerts": len(mine),
        }

    def detail(self, who: Viewer, cid: str, org: OrgLike) -> dict[str, Any]:
        out = self.brief(who, cid)
        _, alerts = self._visible(who, cid)
        mine = [a for a in alerts if who.sites is None or a["site_id"] in who.sites]
        out["timeline"] = [
            {
                "at": a["ts"],
                "alert_id": a["alert_id"],
                "site": a["site_id"],
                "enterprise": a["enterprise_id"],
                "city": a["city_id"],
                "industry": a["industry"],
                "rule": a["rule_id"],
                "techniques": json.loads(a["techniques"]),
            }
            for a in mine[:2000]
        ]
        out["enterprise_list"] = [
            {
                "id": e,
                "name": org.enterprises.get(e, {}).get("name", e),
                "name_zh": org.enterprises.get(e, {}).get("name_zh", ""),
                "city": org.enterprises.get(e, {}).get("city_id"),
                "industry": org.enterprises.get(e, {}).get("industry"),
            }
            for e in out["enterprises"]
        ]
        out["techniques"] = sorted({t for a in mine for t in json.loads(a["techniques"])})
        out["audit"] = self.db.audit_trail(who, "campaign", cid)
        return out

    def alerts_of(self, who: Viewer, cid: str) -> list[dict[str, Any]]:
        _, alerts = self._visible(who, cid)
        return [a for a in alerts if who.sites is None or a["site_id"] in who.sites]

    # -- watchlist ---------------------------------------------------------------------------

    def watchlist(self) -> list[dict[str, Any]]:
        return self.db.rows("SELECT * FROM watchlist ORDER BY added_at, value")

    def watch(
        self,
        who: Viewer,
        kind: str,
        value: str,
        source: str,
        source_ref: str,
        valid_until: float | None = None,
    ) -> tuple[str, bool]:
        """Add one indicator (idempotent); returns (id, whether it is new)."""
        if not who.is_province and who.role != "system":
            raise Forbidden("the province keeps the watchlist")
        if kind not in WATCH_KINDS:
            raise Invalid(f"watchlist kinds: {', '.join(WATCH_KINDS)}")
        ip = _ip(value)
        if ip is None or (ip.version == 4) != (kind == "ipv4-addr"):
            raise Invalid(f"{value!r} is not an {kind}")
        wid = "wl-" + hashlib.sha256(f"{kind}|{ip}".encode()).hexdigest()[:16]
        with self.db.tx() as conn:
            cur = conn.execute(
                "INSERT OR IGNORE INTO watchlist VALUES (?,?,?,?,?,?,?,?)",
                (wid, kind, str(ip), source, source_ref, time.time(), who.name, valid_until),
            )
            if cur.rowcount:
                self.db.next_number(conn, "content")  # the sensors' content changes
                self.db.audit(
                    conn,
                    who,
                    "watchlist",
                    wid,
                    "add",
                    sites=[],
                    enterprises=[],
                    cities=[],
                    detail={"kind": kind, "value": str(ip), "source": source, "ref": source_ref},
                )
        return wid, bool(cur.rowcount)

    def unwatch(self, who: Viewer, wid: str) -> None:
        if not who.is_province:
            raise Forbidden("the province keeps the watchlist")
        with self.db.tx() as conn:
            if conn.execute("DELETE FROM watchlist WHERE id=?", (wid,)).rowcount != 1:
                raise NotFound(wid)
            self.db.next_number(conn, "content")
            self.db.audit(
                conn, who, "watchlist", wid, "remove", sites=[], enterprises=[], cities=[]
            )

    def watch_campaign(self, who: Viewer, cid: str) -> list[str]:
        """A source-ip campaign's address onto the watchlist."""
        row, _ = self._visible(who, cid)
        if row["kind"] != "source-ip":
            raise Invalid("only a source-address campaign gives a watchlist address")
        ip = _ip(row["indicator"])
        kind = "ipv4-addr" if ip and ip.version == 4 else "ipv6-addr"
        wid, _ = self.watch(who, kind, row["indicator"], "campaign", cid)
        return [wid]
