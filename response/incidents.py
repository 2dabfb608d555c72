"""Incidents: a unit above alerts, graded by the policy, with the reporting clock and reports.

An incident is made from one or many alerts, by hand or by a grouping rule (the same values
of some alert fields within a window). Each alert belongs to at most one incident; the
incident records the sites, enterprises and cities it touches. Its state machine is
``INCIDENT_TRANSITIONS``; every change is one audit entry (response.db).

Tenancy: the province sees every incident; a city analyst sees incidents touching their
city, cut to its sites, and may change only incidents lying wholly inside it; enterprise
users see none (they see the notices addressed to them).
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import time
from collections.abc import Mapping
from typing import Any, Protocol

from pipeline.query import AlertFilter, QueryBackend
from response.db import Forbidden, IllegalTransition, Invalid, NotFound, ResponseDB, Viewer
from response.policy import REPORT_KINDS, Policy
from response.workdays import Calendar

INCIDENT_STATES = ("open", "investigating", "contained", "resolved", "closed")
INCIDENT_TRANSITIONS: dict[str, tuple[str, ...]] = {
    "open": ("investigating", "closed"),
    "investigating": ("contained", "resolved", "closed"),
    "contained": ("investigating", "resolved"),
    "resolved": ("investigating", "closed"),
    "closed": ("investigating",),
}
MAX_ALERTS_PER_INCIDENT = 10_000
MAX_ATTACHMENT_BYTES = 5 * 1024 * 1024
MAX_ATTACHMENTS = 50
GROUPING_SCAN_CAP = 50_000  # alerts one grouping pass reads at most


class SiteLike(Protocol):
    id: str
    name: str
    enterprise_id: str
    city_id: str
    industry: str
    criticality: int
    sensors: tuple[str, ...]


class OrgLike(Protocol):
    """The registry as the posture view holds it (posture.state.OrgIndex fits)."""

    province: dict[str, str]
    cities: Mapping[str, dict[str, Any]]
    enterprises: Mapping[str, dict[str, Any]]
    sites: Mapping[str, SiteLike]


def new_id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(8)}"


def alert_epoch(doc: dict[str, Any]) -> float:
    from pipeline.store import to_epoch

    return to_epoch(doc.get("@timestamp")) or 0.0


def as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, list | tuple) else [value]


RESULT_WINDOW = 10_000  # deepest page a search may reach (Elasticsearch's default)
PAGE = 2_000  # alerts per request when reading many (offset paging costs grow with depth)


def page_alerts(backend: QueryBackend, flt: AlertFilter, cap: int) -> list[dict[str, Any]]:
    """Every alert matching ``flt`` (newest first), at most ``cap``.

    Pages within the search's result window, then moves the window's upper time bound down
    to the oldest alert read and goes on, so more than 10,000 alerts can be read; alerts read
    twice at a window's edge are dropped by ``event.id``."""
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    until = flt.until
    while len(out) < cap:
        flt.until, flt.limit, flt.offset = until, PAGE, 0
        oldest: float | None = None
        new = 0
        while True:
            _, docs = backend.search_alerts(flt)
            for d in docs:
                eid = str(d.get("event.id"))
                if eid in seen:
                    continue
                seen.add(eid)
                out.append(d)
                new += 1
                ts = alert_epoch(d)
                oldest = ts if oldest is None else min(oldest, ts)
            if len(docs) < flt.limit:
                return out[:cap]
            if flt.offset + 2 * flt.limit > RESULT_WINDOW:
                break
            flt.offset += flt.limit
        if not new or oldest is None:  # a whole window of one instant: nothing more to gain
            break
        until = oldest + 1e-6  # the edge's instant again (its alerts read once, by id)
    return out[:cap]


class Incidents:
    def __init__(
        self, db: ResponseDB, policy: Policy, calendar: Calendar, backend: QueryBackend
    ) -> None:
        self.db = db
        self.policy = policy
        self.calendar = calendar
        self.backend = backend

    # -- reading -------------------------------------------------------------------------

    def _row(self, incident_id: str) -> dict[str, Any]:
        row = self.db.one("SELECT * FROM incident WHERE id=?", (incident_id,))
        if row is None:
            raise NotFound(incident_id)
        return row

    def sites_of(self, incident_id: str) -> list[dict[str, Any]]:
        return self.db.rows(
            "SELECT site_id, enterprise_id, city_id FROM incident_site "
            "WHERE incident_id=? ORDER BY site_id",
            (incident_id,),
        )

    def visible(self, who: Viewer, incident_id: str) -> dict[str, Any]:
        """The incident row when ``who`` may see it, else NotFound (same as missing)."""
        if who.is_enterprise:
            raise NotFound(incident_id)
        row = self._row(incident_id)
        if not who.sees([s["site_id"] for s in self.sites_of(incident_id)]):
            raise NotFound(incident_id)
        return row

    def writable(self, who: Viewer, incident_id: str) -> dict[str, Any]:
        row = self.visible(who, incident_id)
        if not who.is_analyst:
            raise Forbidden("this role may not change incidents")
        if not who.owns_all([s["site_id"] for s in self.sites_of(incident_id)]):
            raise Forbidden("this incident reaches beyond your city: the province manages it")
        return row

    def list(
        self, who: Viewer, state: str | None = None, limit: int = 100, offset: int = 0
    ) -> dict[str, Any]:
        if who.is_enterprise:
            return {"total": 0, "items": []}
        where, args = [], []
        if state:
            where.append("i.state=?")
            args.append(state)
        if who.sites is not None:
            marks = ",".join("?" * len(who.sites)) or "''"
            where.append(
                f"i.id IN (SELECT incident_id FROM incident_site WHERE site_id IN ({marks}))"
            )
            args.extend(sorted(who.sites))
        cond = (" WHERE " + " AND ".join(where)) if where else ""
        total = self.db.one(f"SELECT COUNT(*) AS n FROM incident i{cond}", args)
        rows = self.db.rows(
            f"SELECT * FROM incident i{cond} ORDER BY i.number DESC LIMIT ? OFFSET ?",
            [*args, limit, offset],
        )
        now = time.time()
        return {
            "total": total["n"] if total else 0,
            "items": [self._brief(who, r, now) for r in rows],
        }

    def _brief(self, who: Viewer, row: dict[str, Any], now: float) -> dict[str, Any]:
        sites = [
            s for s in self.sites_of(row["id"]) if who.sites is None or s["site_id"] in who.sites
        ]
        clock = self.clock(row, now)
        urgent = next((d for d in clock["deadlines"] if d["state"] in ("overdue", "warning")), None)
        return {
            "id": row["id"],
            "number": row["number"],
            "title": row["title"],
            "state": row["state"],
            "grade": json.loads(row["grade"]),
            "discovered_at": row["discovered_at"],
            "created_at": row["created_at"],
            "sites": [s["site_id"] for s in sites],
            "enterprises": sorted({s["enterprise_id"] for s in sites}),
            "cities": sorted({s["city_id"] for s in sites}),
            "alerts": self._alert_count(row["id"], who),
            "clock": {"reportable": clock["reportable"], "next": urgent},
        }

    def _alert_count(self, incident_id: str, who: Viewer) -> int:
        rows = self.db.rows(
            "SELECT site_id, COUNT(*) AS n FROM incident_alert "
            "WHERE incident_id=? GROUP BY site_id",
            (incident_id,),
        )
        return sum(r["n"] for r in rows if who.sites is None or r["site_id"] in who.sites)

    def detail(
        self, who: Viewer, incident_id: str, org: OrgLike, now: float | None = None
    ) -> dict[str, Any]:
        row = self.visible(who, incident_id)
        now = time.time() if now is None else now
        out = self._brief(who, row, now)
        out["summary"] = row["summary"]
        out["facts"] = json.loads(row["facts"])
        out["origin"] = row["origin"]
        out["created_by"] = row["created_by"]
        out["resolved_at"], out["closed_at"] = row["resolved_at"], row["closed_at"]
        out["clock"] = self.clock(row, now)
        out["affected"] = [
            {
                "site": s["site_id"],
                "site_name": org.sites[s["site_id"]].name
                if s["site_id"] in org.sites
                else s["site_id"],
                "enterprise": s["enterprise_id"],
                "enterprise_name": org.enterprises.get(s["enterprise_id"], {}).get("name", ""),
                "enterprise_name_zh": org.enterprises.get(s["enterprise_id"], {}).get(
                    "name_zh", ""
                ),
                "city": s["city_id"],
                "industry": org.enterprises.get(s["enterprise_id"], {}).get("industry", ""),
            }
            for s in self.sites_of(incident_id)
            if who.sites is None or s["site_id"] in who.sites
        ]
        alerts = [
            a
            for a in self.db.rows(
                "SELECT alert_id, site_id, ts, rule_id, source_ip, techniques, severity FROM "
                "incident_alert WHERE incident_id=? ORDER BY ts",
                (incident_id,),
            )
            if who.sites is None or a["site_id"] in who.sites
        ]
        for a in alerts:
            a["techniques"] = json.loads(a["techniques"])
        out["alert_list"] = alerts[:1000]
        out["assignees"] = [
            r["name"]
            for r in self.db.rows(
                "SELECT name FROM incident_assignee WHERE incident_id=? ORDER BY name",
                (incident_id,),
            )
        ]
        out["notes"] = self.db.rows(
            "SELECT at, author, text FROM response_note WHERE owner_kind='incident'"
            " AND owner_id=? ORDER BY id",
            (incident_id,),
        )
        out["attachments"] = self.attachments("incident", incident_id)
        out["reports"] = self.reports(incident_id)
        out["transitions"] = (
            list(INCIDENT_TRANSITIONS[row["state"]])
            if who.is_analyst and who.owns_all(out["sites"])
            else []
        )
        out["writable"] = bool(out["transitions"])
        out["timeline"] = self.timeline(who, incident_id, alerts)
        return out

    def timeline(
        self, who: Viewer, incident_id: str, alerts: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        """Alerts and every audited change, oldest first."""
        items = [
            {
                "at": a["ts"],
                "kind": "alert",
                "what": a["rule_id"],
                "site": a["site_id"],
                "alert_id": a["alert_id"],
            }
            for a in alerts[:500]
        ]
        for e in self.db.audit_trail(who, "incident", incident_id, limit=1000):
            items.append(
                {
                    "at": e["at"],
                    "kind": "change",
                    "what": e["action"],
                    "actor": e["actor"],
                    "from": e["from_state"],
                    "to": e["to_state"],
                    "detail": e["detail"],
                }
            )
        items.sort(key=lambda x: x["at"])
        return items

    def incident_of_alert(self, alert_id: str) -> dict[str, Any] | None:
        return self.db.one(
            "SELECT i.id, i.number, i.title, i.state, i.level FROM incident_alert a "
            "JOIN incident i ON i.id = a.incident_id WHERE a.alert_id=?",
            (alert_id,),
        )

    # -- grading and the clock ----------------------------------------------------------

    def facts_of(
        self, row: dict[str, Any], sites: list[dict[str, Any]], org: OrgLike
    ) -> dict[str, Any]:
        """Registry facts, then the analysts' entries (which override them)."""
        facts = self.policy.registry_facts(
            [org.sites[s["site_id"]].criticality for s in sites if s["site_id"] in org.sites],
            [org.enterprises.get(s["enterprise_id"], {}).get("grade") for s in sites],
        )
        facts["enterprises_affected"] = len({s["enterprise_id"] for s in sites})
        facts.update(json.loads(row["facts"]) if isinstance(row["facts"], str) else row["facts"])
        return facts

    def clock(self, row: dict[str, Any], now: float) -> dict[str, Any]:
        """Each deadline that applies: due time, warnings, and whether a report met it."""
        grade = json.loads(row["grade"])
        facts = grade.get("facts", {})
        level = row["level"]
        reportable = self.policy.reportable(level)
        submitted: dict[str, float] = {}
        for r in self.db.rows(
            "SELECT kind, MIN(submitted_at) AS at FROM report WHERE "
            "incident_id=? AND submitted_at IS NOT NULL GROUP BY kind",
            (row["id"],),
        ):
            submitted[r["kind"]] = r["at"]
        out = []
        start = row["discovered_at"]
        if reportable:
            for d in self.policy.deadlines:
                if not all(self.policy.holds(c, facts, level) for c in d.conditions):
                    continue
                due = start + d.minutes * 60
                out.append(
                    self._deadline(
                        d.id, d.report, start, due, submitted, now, d.en, d.zh, d.verified
                    )
                )
        if row["resolved_at"] is not None:
            due = self.calendar.add_working_days(row["resolved_at"], self.policy.final_working_days)
            out.append(
                self._deadline(
                    "final-report",
                    "final",
                    row["resolved_at"],
                    due,
                    submitted,
                    now,
                    f"Summary report within {self.policy.final_working_days} working days",
                    f"{self.policy.final_working_days}个工作日内提交总结报告",
                    self.policy.final_verified,
                )
            )
        return {
            "reportable": reportable,
            "report_from_level": self.policy.report_from_level,
            "started_at": start,
            "now": now,
            "deadlines": out,
        }

    def _deadline(
        self,
        ident: str,
        report: str,
        start: float,
        due: float,
        submitted: dict[str, float],
        now: float,
        en: str,
        zh: str,
        verified: bool,
    ) -> dict[str, Any]:
        span = max(due - start, 1.0)
        met = submitted.get(report)
        if met is not None:
            state = "met" if met <= due else "late"
        elif now >= due:
            state = "overdue"
        elif any(now >= start + f * span for f in self.policy.warn_at):
            state = "warning"
        else:
            state = "pending"
        return {
            "id": ident,
            "report": report,
            "due_at": due,
            "state": state,
            "met_at": met,
            "elapsed": min(1.0, max(0.0, ((met or now) - start) / span)),
            "warnings": [start + f * span for f in self.policy.warn_at],
            "en": en,
            "zh": zh,
            "verified": verified,
        }

    def _regrade(self, conn: Any, who: Viewer, incident_id: str, org: OrgLike) -> None:
        row = dict(conn.execute("SELECT * FROM incident WHERE id=?", (incident_id,)).fetchone())
        sites = [
            dict(r)
            for r in conn.execute(
                "SELECT site_id, enterprise_id, city_id FROM incident_site WHERE incident_id=?",
                (incident_id,),
            )
        ]
        facts = self.facts_of(row, sites, org)
        grade = self.policy.grade(facts)
        grade["facts"] = facts
        old = json.loads(row["grade"]) if row["grade"] else {}
        conn.execute(
            "UPDATE incident SET level=?, grade=?, updated=? WHERE id=?",
            (grade["level"], json.dumps(grade, ensure_ascii=False), time.time(), incident_id),
        )
        if old.get("level") != grade["level"] or old.get("rule") != grade["rule"]:
            self.db.audit(
                conn,
                who,
                "incident",
                incident_id,
                "grade",
                **self._scope(sites),
                detail={
                    "level": {"from": old.get("level"), "to": grade["level"]},
                    "rule": grade["rule"],
                    "policy": grade["policy"],
                },
            )

    @staticmethod
    def _scope(sites: list[dict[str, Any]]) -> dict[str, list[str]]:
        return {
            "sites": [s["site_id"] for s in sites],
            "enterprises": [s["enterprise_id"] for s in sites],
            "cities": [s["city_id"] for s in sites],
        }

    # -- changes -------------------------------------------------------------------------

    def _alerts(self, who: Viewer, alert_ids: list[str], org: OrgLike) -> list[dict[str, Any]]:
        if not alert_ids:
            raise Invalid("an incident needs at least one alert")
        if len(alert_ids) > MAX_ALERTS_PER_INCIDENT:
            raise Invalid(f"at most {MAX_ALERTS_PER_INCIDENT} alerts per incident")
        docs = []
        for aid in dict.fromkeys(alert_ids):
            doc = self.backend.get_alert(aid)
            site = doc.get("labels.site") if doc else None
            if doc is None or not who.sees([str(site)]) or site not in org.sites:
                raise NotFound(aid)
            docs.append(doc)
        return docs

    def _link(
        self, conn: Any, incident_id: str, docs: list[dict[str, Any]], org: OrgLike, now: float
    ) -> list[str]:
        added = []
        for doc in docs:
            aid = str(doc["event.id"])
            linked = conn.execute(
                "SELECT incident_id FROM incident_alert WHERE alert_id=?", (aid,)
            ).fetchone()
            if linked:
                if linked[0] == incident_id:
                    continue
                raise Invalid(f"alert {aid} already belongs to incident {linked[0]}")
            site = org.sites[str(doc["labels.site"])]
            conn.execute(
                "INSERT INTO incident_alert VALUES (?,?,?,?,?,?,?,?,?)",
                (
                    aid,
                    incident_id,
                    site.id,
                    alert_epoch(doc),
                    doc.get("rule.id"),
                    doc.get("source.ip"),
                    json.dumps(as_list(doc.get("threat.technique.id"))),
                    int(doc.get("event.severity") or 0),
                    now,
                ),
            )
            conn.execute(
                "INSERT OR IGNORE INTO incident_site VALUES (?,?,?,?)",
                (incident_id, site.id, site.enterprise_id, site.city_id),
            )
            added.append(aid)
        return added

    def create(
        self,
        who: Viewer,
        org: OrgLike,
        *,
        title: str,
        alert_ids: list[str],
        summary: str = "",
        discovered_at: float | None = None,
        facts: dict[str, Any] | None = None,
        origin: str = "manual",
    ) -> str:
        if not who.is_analyst:
            raise Forbidden("only province and city analysts open incidents")
        docs = self._alerts(who, alert_ids, org)
        facts = self._check_facts(facts or {})
        now = time.time()
        earliest = min(alert_epoch(d) for d in docs)
        discovered = earliest if discovered_at is None else discovered_at
        incident_id = new_id("inc")
        with self.db.tx() as conn:
            number = self.db.next_number(conn, "incident")
            conn.execute(
                "INSERT INTO incident VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    incident_id,
                    number,
                    title.strip() or f"Incident {number}",
                    summary,
                    "open",
                    "",
                    "{}",
                    json.dumps(facts),
                    discovered,
                    now,
                    who.name,
                    None,
                    None,
                    origin,
                    now,
                ),
            )
            added = self._link(conn, incident_id, docs, org, now)
            sites = [
                dict(r)
                for r in conn.execute(
                    "SELECT site_id, enterprise_id, city_id FROM incident_site WHERE incident_id=?",
                    (incident_id,),
                )
            ]
            self.db.audit(
                conn,
                who,
                "incident",
                incident_id,
                "create",
                **self._scope(sites),
                to_state="open",
                at=now,
                detail={
                    "number": number,
                    "title": title,
                    "alerts": added,
                    "origin": origin,
                    "discovered_at": discovered,
                },
            )
            self._regrade(conn, who, incident_id, org)
        return incident_id

    def add_alerts(
        self, who: Viewer, org: OrgLike, incident_id: str, alert_ids: list[str]
    ) -> list[str]:
        self.writable(who, incident_id)
        docs = self._alerts(who, alert_ids, org)
        now = time.time()
        with self.db.tx() as conn:
            n = conn.execute(
                "SELECT COUNT(*) FROM incident_alert WHERE incident_id=?", (incident_id,)
            ).fetchone()[0]
            if n + len(docs) > MAX_ALERTS_PER_INCIDENT:
                raise Invalid(f"at most {MAX_ALERTS_PER_INCIDENT} alerts per incident")
            added = self._link(conn, incident_id, docs, org, now)
            sites = self._sites_tx(conn, incident_id)
            if added:
                self.db.audit(
                    conn,
                    who,
                    "incident",
                    incident_id,
                    "add-alerts",
                    **self._scope(sites),
                    detail={"alerts": added},
                )
                self._regrade(conn, who, incident_id, org)
        return added

    @staticmethod
    def _sites_tx(conn: Any, incident_id: str) -> list[dict[str, Any]]:
        return [
            dict(r)
            for r in conn.execute(
                "SELECT site_id, enterprise_id, city_id FROM incident_site WHERE incident_id=?",
                (incident_id,),
            )
        ]

    def _check_facts(self, facts: dict[str, Any]) -> dict[str, Any]:
        out = {}
        for name, value in facts.items():
            spec = self.policy.facts.get(name)
            if spec is None:
                raise Invalid(
                    f"unknown fact {name!r}; the policy knows "
                    f"{', '.join(sorted(self.policy.facts))}"
                )
            if value is None:
                continue
            if spec["type"] == "boolean":
                if not isinstance(value, bool):
                    raise Invalid(f"{name} must be true or false")
            elif isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise Invalid(f"{name} must be a number >= 0")
            out[name] = value
        return out

    def set_facts(
        self, who: Viewer, org: OrgLike, incident_id: str, facts: dict[str, Any]
    ) -> dict[str, Any]:
        """Record impact facts (a None value removes one) and grade again."""
        row = self.writable(who, incident_id)
        old = json.loads(row["facts"])
        merged = {**old, **facts}
        merged = self._check_facts({k: v for k, v in merged.items() if v is not None})
        with self.db.tx() as conn:
            conn.execute(
                "UPDATE incident SET facts=?, updated=? WHERE id=?",
                (json.dumps(merged), time.time(), incident_id),
            )
            sites = self._sites_tx(conn, incident_id)
            self.db.audit(
                conn,
                who,
                "incident",
                incident_id,
                "facts",
                **self._scope(sites),
                detail={"from": old, "to": merged},
            )
            self._regrade(conn, who, incident_id, org)
        return json.loads(self._row(incident_id)["grade"])

    def transition(self, who: Viewer, incident_id: str, to: str, note: str | None = None) -> str:
        row = self.writable(who, incident_id)
        frm = row["state"]
        if to not in INCIDENT_TRANSITIONS.get(frm, ()):
            raise IllegalTransition(f"an incident cannot go from {frm} to {to}")
        if to == "closed" and frm == "open" and not (note and note.strip()):
            raise Invalid("closing an incident that was never investigated needs a note")
        now = time.time()
        with self.db.tx() as conn:
            # The state is checked again inside the transaction: two analysts, one change.
            cur = conn.execute(
                "UPDATE incident SET state=?, updated=?, resolved_at=CASE WHEN ?='resolved' "
                "THEN ? WHEN ?='investigating' THEN NULL ELSE resolved_at END, closed_at="
                "CASE WHEN ?='closed' THEN ? ELSE NULL END WHERE id=? AND state=?",
                (to, now, to, now, to, to, now, incident_id, frm),
            )
            if cur.rowcount != 1:
                raise IllegalTransition("the incident changed meanwhile; reload it")
            if note:
                conn.execute(
                    "INSERT INTO response_note (owner_kind, owner_id, at, author, text) "
                    "VALUES ('incident',?,?,?,?)",
                    (incident_id, now, who.name, note),
                )
            self.db.audit(
                conn,
                who,
                "incident",
                incident_id,
                "transition",
                **self._scope(self._sites_tx(conn, incident_id)),
                from_state=frm,
                to_state=to,
                at=now,
                detail={"note": note} if note else {},
            )
        return to

    def add_note(self, who: Viewer, incident_id: str, text: str) -> None:
        self.writable(who, incident_id)
        with self.db.tx() as conn:
            conn.execute(
                "INSERT INTO response_note (owner_kind, owner_id, at, author, text) "
                "VALUES ('incident',?,?,?,?)",
                (incident_id, time.time(), who.name, text),
            )
            self.db.audit(
                conn,
                who,
                "incident",
                incident_id,
                "note",
                **self._scope(self._sites_tx(conn, incident_id)),
                detail={"text": text},
            )

    def set_assignees(self, who: Viewer, incident_id: str, names: list[str]) -> list[str]:
        self.writable(who, incident_id)
        names = sorted({n.strip() for n in names if n.strip()})
        with self.db.tx() as conn:
            old = [
                r[0]
                for r in conn.execute(
                    "SELECT name FROM incident_assignee WHERE incident_id=? ORDER BY name",
                    (incident_id,),
                )
            ]
            conn.execute("DELETE FROM incident_assignee WHERE incident_id=?", (incident_id,))
            conn.executemany(
                "INSERT INTO incident_assignee VALUES (?,?)", [(incident_id, n) for n in names]
            )
            self.db.audit(
                conn,
                who,
                "incident",
                incident_id,
                "assign",
                **self._scope(self._sites_tx(conn, incident_id)),
                detail={"from": old, "to": names},
            )
        return names

    # -- attachments (incidents and notice replies) -------------------------------------

    def add_attachment(
        self,
        conn: Any,
        who: Viewer,
        owner_kind: str,
        owner_id: str,
        name: str,
        content_type: str,
        data_b64: str,
    ) -> dict[str, Any]:
        try:
            data = base64.b64decode(data_b64, validate=True)
        except ValueError:
            raise Invalid(f"attachment {name!r}: content must be base64") from None
        if len(data) > MAX_ATTACHMENT_BYTES:
            raise Invalid(f"attachment {name!r}: larger than {MAX_ATTACHMENT_BYTES} bytes")
        n = conn.execute(
            "SELECT COUNT(*) FROM response_attachment WHERE owner_kind=? AND owner_id=?",
            (owner_kind, owner_id),
        ).fetchone()[0]
        if n >= MAX_ATTACHMENTS:
            raise Invalid(f"at most {MAX_ATTACHMENTS} attachments")
        meta = {
            "id": new_id("att"),
            "name": name[:200],
            "content_type": content_type[:100],
            "size": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
        }
        conn.execute(
            "INSERT INTO response_attachment VALUES (?,?,?,?,?,?,?,?,?,?)",
            (
                meta["id"],
                owner_kind,
                owner_id,
                meta["name"],
                meta["content_type"],
                meta["size"],
                meta["sha256"],
                data,
                time.time(),
                who.name,
            ),
        )
        return meta

    def attach(
        self, who: Viewer, incident_id: str, name: str, content_type: str, data_b64: str
    ) -> dict[str, Any]:
        self.writable(who, incident_id)
        with self.db.tx() as conn:
            meta = self.add_attachment(
                conn, who, "incident", incident_id, name, content_type, data_b64
            )
            self.db.audit(
                conn,
                who,
                "incident",
                incident_id,
                "attach",
                **self._scope(self._sites_tx(conn, incident_id)),
                detail=meta,
            )
        return meta

    def attachments(self, owner_kind: str, owner_id: str) -> list[dict[str, Any]]:
        return self.db.rows(
            "SELECT id, name, content_type, size, sha256, at, author FROM "
            "response_attachment WHERE owner_kind=? AND owner_id=? ORDER BY at",
            (owner_kind, owner_id),
        )

    # -- reports --------------------------------------------------------------------------

    def reports(self, incident_id: str) -> list[dict[str, Any]]:
        rows = self.db.rows(
            "SELECT * FROM report WHERE incident_id=? ORDER BY created_at", (incident_id,)
        )
        for r in rows:
            r["fields"] = json.loads(r["fields"])
            r["missing"] = [
                f
                for f in self.policy.required_fields(r["kind"])
                if not str(r["fields"].get(f) or "").strip()
            ]
        return rows

    def prefill(self, incident_id: str, org: OrgLike) -> dict[str, str]:
        """What the registry and the alerts already say, for a new report's first items."""
        row = self._row(incident_id)
        sites = self.sites_of(incident_id)
        ents = {s["enterprise_id"] for s in sites}
        alerts = self.db.rows(
            "SELECT rule_id, techniques FROM incident_alert WHERE incident_id=? LIMIT 1000",
            (incident_id,),
        )
        techniques = sorted({t for a in alerts for t in json.loads(a["techniques"])})
        rules = sorted({a["rule_id"] for a in alerts if a["rule_id"]})
        grade = json.loads(row["grade"])
        return {
            "operator": "; ".join(
                org.enterprises[e]["name_zh"] or org.enterprises[e]["name"]
                for e in sorted(ents)
                if e in org.enterprises
            ),
            "facility": "; ".join(
                org.sites[s["site_id"]].name for s in sites if s["site_id"] in org.sites
            ),
            "discovered_at": time.strftime(
                "%Y-%m-%d %H:%M:%S %z", time.localtime(row["discovered_at"])
            ),
            "location": "; ".join(
                sorted(
                    {
                        org.cities[s["city_id"]]["name_zh"] or org.cities[s["city_id"]]["name"]
                        for s in sites
                        if s["city_id"] in org.cities
                    }
                )
            ),
            "incident_type": ", ".join(techniques + rules),
            "harm": f"{grade.get('zh', '')} ({grade.get('level', '')}): {row['title']}",
        }

    def save_report(
        self,
        who: Viewer,
        org: OrgLike,
        incident_id: str,
        kind: str,
        fields: dict[str, str],
        report_id: str | None = None,
    ) -> str:
        """Create a draft (prefilled) or update one; submitted reports never change."""
        self.writable(who, incident_id)
        if kind not in REPORT_KINDS:
            raise Invalid(f"report kind must be one of {', '.join(REPORT_KINDS)}")
        known = {f.id for f in self.policy.fields}
        if bad := sorted(set(fields) - known):
            raise Invalid(f"unknown report fields: {', '.join(bad)}")
        clean = {k: str(v)[:20_000] for k, v in fields.items() if v is not None}
        now = time.time()
        with self.db.tx() as conn:
            scope = self._scope(self._sites_tx(conn, incident_id))
            if report_id is None:
                seq = (
                    conn.execute(
                        "SELECT COUNT(*) FROM report WHERE incident_id=? AND kind=?",
                        (incident_id, kind),
                    ).fetchone()[0]
                    + 1
                )
                if kind in ("first", "final") and seq > 1:
                    raise Invalid(f"this incident already has a {kind} report")
                report_id = new_id("rep")
                merged = {**self.prefill(incident_id, org), **clean}
                conn.execute(
                    "INSERT INTO report VALUES (?,?,?,?,?,?,?,?,?)",
                    (
                        report_id,
                        incident_id,
                        kind,
                        seq,
                        json.dumps(merged, ensure_ascii=False),
                        now,
                        who.name,
                        None,
                        None,
                    ),
                )
                self.db.audit(
                    conn,
                    who,
                    "report",
                    report_id,
                    "create",
                    **scope,
                    detail={"incident": incident_id, "kind": kind, "seq": seq},
                )
            else:
                r = conn.execute(
                    "SELECT * FROM report WHERE id=? AND incident_id=?", (report_id, incident_id)
                ).fetchone()
                if r is None:
                    raise NotFound(report_id)
                if r["submitted_at"] is not None:
                    raise IllegalTransition("a submitted report cannot change; write a follow-up")
                merged = {**json.loads(r["fields"]), **clean}
                conn.execute(
                    "UPDATE report SET fields=? WHERE id=?",
                    (json.dumps(merged, ensure_ascii=False), report_id),
                )
                self.db.audit(
                    conn,
                    who,
                    "report",
                    report_id,
                    "edit",
                    **scope,
                    detail={"incident": incident_id, "fields": sorted(clean)},
                )
        return report_id

    def report(self, who: Viewer, report_id: str) -> dict[str, Any]:
        r = self.db.one("SELECT * FROM report WHERE id=?", (report_id,))
        if r is None:
            raise NotFound(report_id)
        self.visible(who, r["incident_id"])
        return next(x for x in self.reports(r["incident_id"]) if x["id"] == report_id)

    def submit_report(self, who: Viewer, report_id: str) -> dict[str, Any]:
        rep = self.report(who, report_id)
        self.writable(who, rep["incident_id"])
        if rep["submitted_at"] is not None:
            raise IllegalTransition("this report was already submitted")
        if rep["missing"]:
            raise Invalid(f"a {rep['kind']} report needs: {', '.join(rep['missing'])}")
        now = time.time()
        with self.db.tx() as conn:
            conn.execute(
                "UPDATE report SET submitted_at=?, submitted_by=? WHERE id=? AND "
                "submitted_at IS NULL",
                (now, who.name, report_id),
            )
            self.db.audit(
                conn,
                who,
                "report",
                report_id,
                "submit",
                **self._scope(self._sites_tx(conn, rep["incident_id"])),
                from_state="draft",
                to_state="submitted",
                at=now,
                detail={
                    "incident": rep["incident_id"],
                    "kind": rep["kind"],
                    "sha256": hashlib.sha256(
                        json.dumps(rep["fields"], sort_keys=True, ensure_ascii=False).encode()
                    ).hexdigest(),
                },
            )
        return self.report(who, report_id)

    # -- the grouping rule ------------------------------------------------------------

    def propose_groups(
        self, who: Viewer, org: OrgLike, since: float, until: float
    ) -> list[dict[str, Any]]:
        """Groups of not-yet-linked alerts the policy's grouping rules would make incidents."""
        if not who.is_analyst:
            raise Forbidden("only analysts group alerts")
        sites = sorted(who.sites) if who.sites is not None else []
        if who.sites is not None and not sites:
            return []
        used: set[str] = set()
        out = []
        for rule in self.policy.grouping:
            docs = page_alerts(
                self.backend,
                AlertFilter(since=since, until=until, min_severity=rule.min_severity, sites=sites),
                GROUPING_SCAN_CAP,
            )
            ids = [str(d["event.id"]) for d in docs]
            linked = {r["alert_id"] for r in self._linked(ids)}
            keyed: dict[tuple, list[dict[str, Any]]] = {}
            for d in docs:
                aid = str(d["event.id"])
                if aid in linked or aid in used or d.get("labels.site") not in org.sites:
                    continue
                key = tuple(tuple(sorted(map(str, as_list(d.get(f))))) for f in rule.by)
                if any(not k for k in key):
                    continue
                keyed.setdefault(key, []).append(d)
            for key, group in keyed.items():
                group.sort(key=alert_epoch)
                run: list[dict[str, Any]] = []
                for d in [*group, None]:
                    if d is not None and (
                        not run or alert_epoch(d) - alert_epoch(run[0]) <= rule.window_s
                    ):
                        run.append(d)
                        continue
                    if len(run) >= rule.min_alerts:
                        used.update(str(x["event.id"]) for x in run)
                        out.append(
                            {
                                "rule": rule.id,
                                "key": {f: list(k) for f, k in zip(rule.by, key, strict=True)},
                                "alert_ids": [str(x["event.id"]) for x in run],
                                "sites": sorted({str(x["labels.site"]) for x in run}),
                                "first": alert_epoch(run[0]),
                                "last": alert_epoch(run[-1]),
                                "title": f"{run[0].get('rule.name') or run[0].get('rule.id')} "
                                f"({rule.id}: {', '.join('/'.join(k) for k in key)})",
                            }
                        )
                    run = [d] if d is not None else []
        return out

    def _linked(self, ids: list[str]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for i in range(0, len(ids), 500):
            chunk = ids[i : i + 500]
            out += self.db.rows(
                f"SELECT alert_id FROM incident_alert WHERE alert_id IN "
                f"({','.join('?' * len(chunk))})",
                chunk,
            )
        return out

    def apply_groups(self, who: Viewer, org: OrgLike, since: float, until: float) -> list[str]:
        made = []
        for g in self.propose_groups(who, org, since, until):
            made.append(
                self.create(
                    who, org, title=g["title"], alert_ids=g["alert_ids"], origin=f"rule:{g['rule']}"
                )
            )
        return made
