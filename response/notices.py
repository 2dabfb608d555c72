"""Notices and rectification tickets (通报-整改): the province or a city tells an enterprise what
to fix by when; the enterprise answers with its evidence; the issuer verifies or rejects.

A notice's subject is generic: a kind (``incident``, ``finding``, ``advisory``) and a reference.
Its deadline is counted in working days (response.workdays). States and who moves them:

    issued -> acknowledged -> in-progress -> submitted -> verified -> closed     (enterprise
    submitted -> rejected -> in-progress | submitted                              answers,
    issued | acknowledged | in-progress | rejected -> closed (withdrawn, note)    issuer decides)

Overdue is not a state but a fact (deadline passed, not yet verified or closed); an overdue
notice escalates to the city at its deadline and to the province some working days later
(:meth:`Notices.escalate`, run periodically by the posture server). Where the telemetry can
confirm the fix, :meth:`Notices.verification_offer` says so with the data behind it: for an
incident, the site kept reporting and its rules and sources stopped; for a finding, the asset
was seen again and the finding was not (or the finding is resolved); for an advisory, the assets
it affected were seen again and it matches none of them any more. Notices of the subjects the
policy names (``verification.auto``: findings and advisories) verify themselves once that holds
(:meth:`Notices.auto_verify`, run with the escalation).
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from assessment.findings import RESOLVE_AFTER_S
from pipeline.query import AlertFilter, AssetFilter, QueryBackend
from response.db import SYSTEM, Forbidden, IllegalTransition, Invalid, NotFound, ResponseDB, Viewer
from response.incidents import OrgLike, alert_epoch, new_id, page_alerts
from response.policy import Policy
from response.workdays import Calendar

NOTICE_STATES = (
    "issued",
    "acknowledged",
    "in-progress",
    "submitted",
    "verified",
    "rejected",
    "closed",
)
SUBJECT_KINDS = ("incident", "finding", "advisory")
# (from, to) -> which side may make the change.
ENTERPRISE_MOVES = {
    ("issued", "acknowledged"),
    ("acknowledged", "in-progress"),
    ("rejected", "in-progress"),
}
ISSUER_MOVES = {
    ("submitted", "verified"),
    ("submitted", "rejected"),
    ("verified", "closed"),
    ("issued", "closed"),
    ("acknowledged", "closed"),
    ("in-progress", "closed"),
    ("rejected", "closed"),
}
REPLY_FROM = ("acknowledged", "in-progress", "rejected")  # -> submitted, with the reply
DONE = ("verified", "closed")
MAX_ACTIONS = 50
VERIFY_SCAN_CAP = 10_000


class Notices:
    def __init__(
        self,
        db: ResponseDB,
        policy: Policy,
        calendar: Calendar,
        backend: QueryBackend,
        incidents: Any,
    ) -> None:
        self.db = db
        self.policy = policy
        self.calendar = calendar
        self.backend = backend
        self.incidents = incidents
        # (advisory id, sites) -> the advisory's matches there ({asset.id, match.status,
        # ics.device.firmware ...}); set by the server that holds the advisory catalog.
        self.exposure: Callable[[str, list[str]], list[dict[str, Any]]] | None = None

    # -- who may do what ---------------------------------------------------------------

    @staticmethod
    def _scope(row: dict[str, Any]) -> dict[str, list[str]]:
        return {
            "sites": json.loads(row["sites"]),
            "enterprises": [row["enterprise_id"]],
            "cities": [row["city_id"]],
        }

    def visible(self, who: Viewer, notice_id: str) -> dict[str, Any]:
        row = self.db.one("SELECT * FROM notice WHERE id=?", (notice_id,))
        if row is None:
            raise NotFound(notice_id)
        if who.is_enterprise:
            if row["enterprise_id"] != who.scope_id:
                raise NotFound(notice_id)
        elif not who.sees(json.loads(row["sites"])):
            raise NotFound(notice_id)
        return row

    @staticmethod
    def _can_issue(who: Viewer) -> None:
        if not who.is_analyst:
            raise Forbidden("only the province and cities issue and verify notices")

    # -- reading -------------------------------------------------------------------------

    def list(
        self,
        who: Viewer,
        state: str | None = None,
        overdue: bool | None = None,
        enterprise: str | None = None,
        limit: int = 100,
        offset: int = 0,
        now: float | None = None,
    ) -> dict[str, Any]:
        now = time.time() if now is None else now
        where, args = [], []
        if who.is_enterprise:
            where.append("enterprise_id=?")
            args.append(who.scope_id)
        elif who.role == "city-analyst":
            where.append("city_id=?")
            args.append(who.scope_id)
        if state:
            where.append("state=?")
            args.append(state)
        if enterprise:
            where.append("enterprise_id=?")
            args.append(enterprise)
        if overdue is not None:
            marks = ",".join("?" * len(DONE))
            where.append(
                f"(deadline < ? AND state NOT IN ({marks}))"
                if overdue
                else f"NOT (deadline < ? AND state NOT IN ({marks}))"
            )
            args.extend([now, *DONE])
        cond = (" WHERE " + " AND ".join(where)) if where else ""
        total = self.db.one(f"SELECT COUNT(*) AS n FROM notice{cond}", args)
        rows = self.db.rows(
            f"SELECT * FROM notice{cond} ORDER BY number DESC LIMIT ? OFFSET ?",
            [*args, limit, offset],
        )
        return {"total": total["n"] if total else 0, "items": [self._brief(r, now) for r in rows]}

    def _brief(self, row: dict[str, Any], now: float) -> dict[str, Any]:
        return {
            "id": row["id"],
            "number": row["number"],
            "title": row["title"],
            "subject": {"kind": row["subject_kind"], "ref": row["subject_ref"]},
            "enterprise": row["enterprise_id"],
            "city": row["city_id"],
            "industry": row["industry"],
            "state": row["state"],
            "issued_at": row["issued_at"],
            "issued_by": row["issued_by"],
            "deadline": row["deadline"],
            "working_days": row["working_days"],
            "overdue": row["deadline"] < now and row["state"] not in DONE,
            "escalation": ("none", "city", "province")[row["escalation"]],
            "submitted_at": row["submitted_at"],
            "closed_at": row["closed_at"],
        }

    def detail(self, who: Viewer, notice_id: str, now: float | None = None) -> dict[str, Any]:
        row = self.visible(who, notice_id)
        now = time.time() if now is None else now
        out = self._brief(row, now)
        out["actions"] = json.loads(row["actions"])
        out["indicators"] = json.loads(row["indicators"])
        out["sites"] = json.loads(row["sites"])
        replies = self.db.rows(
            "SELECT id, at, author, text, attachments FROM notice_reply "
            "WHERE notice_id=? ORDER BY id",
            (notice_id,),
        )
        for r in replies:
            r["attachments"] = json.loads(r["attachments"])
        out["replies"] = replies
        out["notes"] = self.db.rows(
            "SELECT at, author, text FROM response_note WHERE owner_kind='notice'"
            " AND owner_id=? ORDER BY id",
            (notice_id,),
        )
        out["moves"] = self.moves(who, row)
        out["can_reply"] = who.role == "enterprise-operator" and row["state"] in REPLY_FROM
        out["audit"] = self.db.audit_trail(who, "notice", notice_id)
        out["calendar_covers_deadline"] = self.calendar.covers(
            self.calendar.local_date(row["deadline"])
        )
        return out

    def moves(self, who: Viewer, row: dict[str, Any]) -> list[str]:
        frm = row["state"]
        if who.role == "enterprise-operator":
            return [t for f, t in sorted(ENTERPRISE_MOVES) if f == frm]
        if who.is_analyst:
            return [t for f, t in sorted(ISSUER_MOVES) if f == frm]
        return []

    # -- changes -------------------------------------------------------------------------

    def issue(
        self,
        who: Viewer,
        org: OrgLike,
        *,
        subject_kind: str,
        subject_ref: str,
        enterprise: str,
        title: str,
        actions: list[str],
        working_days: int | None = None,
        indicators: dict[str, list[str]] | None = None,
        now: float | None = None,
    ) -> str:
        self._can_issue(who)
        if subject_kind not in SUBJECT_KINDS:
            raise Invalid(f"subject kind must be one of {', '.join(SUBJECT_KINDS)}")
        if enterprise not in org.enterprises:
            raise NotFound(enterprise)
        sites = sorted(sid for sid, s in org.sites.items() if s.enterprise_id == enterprise)
        if not sites or not who.owns_all(sites):
            raise NotFound(enterprise)
        actions = [a.strip()[:2000] for a in actions if a and a.strip()]
        if not actions or len(actions) > MAX_ACTIONS:
            raise Invalid(f"a notice needs 1 to {MAX_ACTIONS} required actions")
        days = working_days or self.policy.notice_working_days
        inds = {k: sorted(set(map(str, v)))[:200] for k, v in (indicators or {}).items() if v}
        if subject_kind == "incident":
            self.incidents.visible(who, subject_ref)
            linked = self.db.rows(
                "SELECT site_id, rule_id, source_ip FROM incident_alert WHERE incident_id=?",
                (subject_ref,),
            )
            mine = [a for a in linked if a["site_id"] in sites]
            if not mine:
                raise Invalid(f"incident {subject_ref} has no alert at enterprise {enterprise}")
            # What the fix must stop: the incident's rules and sources at this enterprise.
            inds.setdefault("rule.id", sorted({a["rule_id"] for a in mine if a["rule_id"]}))
            inds.setdefault("source.ip", sorted({a["source_ip"] for a in mine if a["source_ip"]}))
        elif subject_kind == "finding" and self._keeps_findings():
            finding = self.finding(subject_ref.strip(), sites)
            if finding is None:
                raise NotFound(subject_ref)  # not a finding at this enterprise
            # What the fix must make disappear: this finding on this asset.
            inds.setdefault("finding.id", [str(finding["finding.id"])])
            inds.setdefault("finding.kind", [str(finding.get("finding.kind") or "")])
            inds.setdefault("asset.id", [str(finding.get("asset.id") or "")])
        elif subject_kind == "advisory" and self.exposure is not None and subject_ref.strip():
            # What the fix must change: the firmware of the assets the advisory affects here.
            hit = [
                m
                for m in self.exposure(subject_ref.strip(), sites)
                if m.get("match.status") == "affected"
            ]
            inds.setdefault("advisory.id", [subject_ref.strip()])
            inds.setdefault("asset.id", sorted({str(m["asset.id"]) for m in hit})[:200])
        elif not subject_ref.strip():
            raise Invalid("a notice needs a subject reference")
        now = time.time() if now is None else now
        deadline = self.calendar.add_working_days(now, days)
        ent = org.enterprises[enterprise]
        notice_id = new_id("ntc")
        with self.db.tx() as conn:
            number = self.db.next_number(conn, "notice")
            conn.execute(
                "INSERT INTO notice (id, number, subject_kind, subject_ref, enterprise_id, "
                "city_id, industry, sites, title, actions, indicators, issued_at, issued_by, "
                "issuer_role, working_days, deadline, state, updated) "
                "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    notice_id,
                    number,
                    subject_kind,
                    subject_ref.strip()[:500],
                    enterprise,
                    ent["city_id"],
                    ent["industry"],
                    json.dumps(sites),
                    title.strip()[:500] or f"Notice {number}",
                    json.dumps(actions, ensure_ascii=False),
                    json.dumps(inds),
                    now,
                    who.name,
                    who.role,
                    days,
                    deadline,
                    "issued",
                    now,
                ),
            )
            self.db.audit(
                conn,
                who,
                "notice",
                notice_id,
                "issue",
                sites=sites,
                enterprises=[enterprise],
                cities=[ent["city_id"]],
                to_state="issued",
                at=now,
                detail={
                    "number": number,
                    "subject": f"{subject_kind}:{subject_ref}",
                    "deadline": deadline,
                    "working_days": days,
                    "actions": actions,
                },
            )
            if subject_kind == "incident":
                self.db.audit(
                    conn,
                    who,
                    "incident",
                    subject_ref,
                    "notice",
                    sites=sites,
                    enterprises=[enterprise],
                    cities=[ent["city_id"]],
                    at=now,
                    detail={"notice": notice_id, "number": number},
                )
        return notice_id

    def _move(
        self,
        who: Viewer,
        row: dict[str, Any],
        to: str,
        action: str,
        note: str | None,
        extra: dict[str, Any] | None = None,
        now: float | None = None,
    ) -> None:
        frm = row["state"]
        now = time.time() if now is None else now
        with self.db.tx() as conn:
            cur = conn.execute(
                "UPDATE notice SET state=?, updated=?, submitted_at=CASE WHEN ?='submitted' "
                "THEN ? ELSE submitted_at END, closed_at=CASE WHEN ?='closed' THEN ? ELSE "
                "closed_at END WHERE id=? AND state=?",
                (to, now, to, now, to, now, row["id"], frm),
            )
            if cur.rowcount != 1:
                raise IllegalTransition("the notice changed meanwhile; reload it")
            if note:
                conn.execute(
                    "INSERT INTO response_note (owner_kind, owner_id, at, author, text) VALUES "
                    "('notice',?,?,?,?)",
                    (row["id"], now, who.name, note),
                )
            self.db.audit(
                conn,
                who,
                "notice",
                row["id"],
                action,
                **self._scope(row),
                from_state=frm,
                to_state=to,
                at=now,
                detail={**({"note": note} if note else {}), **(extra or {})},
            )

    def transition(self, who: Viewer, notice_id: str, to: str, note: str | None = None) -> str:
        row = self.visible(who, notice_id)
        frm = row["state"]
        if to not in NOTICE_STATES:
            raise Invalid(f"unknown state {to!r}")
        if (frm, to) in ENTERPRISE_MOVES:
            if who.role != "enterprise-operator":
                raise Forbidden("the enterprise answers its own notices")
        elif (frm, to) in ISSUER_MOVES:
            self._can_issue(who)
            if to == "verified":
                raise Invalid("use verify (it records what the verification rests on)")
            if to == "closed" and frm != "verified" and not (note and note.strip()):
                raise Invalid("withdrawing a notice needs a note saying why")
        else:
            raise IllegalTransition(f"a notice cannot go from {frm} to {to}")
        action = {
            "acknowledged": "acknowledge",
            "in-progress": "start",
            "rejected": "reject",
            "closed": "close",
        }.get(to, to)
        self._move(who, row, to, action, note)
        return to

    def reply(
        self,
        who: Viewer,
        notice_id: str,
        text: str,
        attachments: list[dict[str, str]] | None = None,
    ) -> str:
        """The enterprise's answer with its evidence: the notice becomes ``submitted``."""
        row = self.visible(who, notice_id)
        if who.role != "enterprise-operator":
            raise Forbidden("the enterprise answers its own notices")
        if row["state"] not in REPLY_FROM:
            raise IllegalTransition(f"a notice in state {row['state']} takes no reply")
        if not text.strip():
            raise Invalid("a reply needs text")
        now = time.time()
        with self.db.tx() as conn:
            metas = [
                self.incidents.add_attachment(
                    conn,
                    who,
                    "notice",
                    notice_id,
                    a.get("name", "evidence"),
                    a.get("content_type", "application/octet-stream"),
                    a.get("data", ""),
                )
                for a in (attachments or [])
            ]
            conn.execute(
                "INSERT INTO notice_reply (notice_id, at, author, text, attachments) "
                "VALUES (?,?,?,?,?)",
                (notice_id, now, who.name, text, json.dumps(metas)),
            )
            cur = conn.execute(
                "UPDATE notice SET state='submitted', submitted_at=?, updated=? "
                "WHERE id=? AND state=?",
                (now, now, notice_id, row["state"]),
            )
            if cur.rowcount != 1:
                raise IllegalTransition("the notice changed meanwhile; reload it")
            self.db.audit(
                conn,
                who,
                "notice",
                notice_id,
                "submit",
                **self._scope(row),
                from_state=row["state"],
                to_state="submitted",
                at=now,
                detail={"text": text, "attachments": metas},
            )
        return "submitted"

    def attachment(self, who: Viewer, attachment_id: str) -> tuple[dict[str, Any], bytes]:
        """An attachment's metadata and bytes, when its incident or notice is visible."""
        row = self.db.one("SELECT * FROM response_attachment WHERE id=?", (attachment_id,))
        if row is None:
            raise NotFound(attachment_id)
        if row["owner_kind"] == "notice":
            self.visible(who, row["owner_id"])
        else:
            self.incidents.visible(who, row["owner_id"])
        data = row.pop("data")
        return row, data

    # -- findings ---------------------------------------------------------------------------

    def _keeps_findings(self) -> bool:
        return callable(getattr(self.backend, "search_findings", None))

    def finding(self, finding_id: str, sites: list[str]) -> dict[str, Any] | None:
        """The merged finding ``finding_id`` when it lies at one of ``sites``."""
        search = getattr(self.backend, "search_findings", None)
        if search is None:
            return None
        offset = 0
        while True:
            _, docs = search(sites=sites, limit=500, offset=offset)
            for d in docs:
                if str(d.get("finding.id")) == finding_id:
                    return d
            if len(docs) < 500:
                return None
            offset += 500

    def _finding_offer(self, row: dict[str, Any], now: float) -> dict[str, Any]:
        """A finding's fix is confirmed when the asset was seen again after the reply and the
        finding was not, for ``finding_quiet_minutes``."""
        since = row["submitted_at"]
        sites = json.loads(row["sites"])
        inds = json.loads(row["indicators"])
        fid = (inds.get("finding.id") or [row["subject_ref"]])[0]
        finding = self.finding(fid, sites)
        if finding is None:
            return {
                "available": False,
                "reason": "no-telemetry-check",
                "supports": {"subject": "finding", "finding_id": fid},
            }
        asset_id = str(finding.get("asset.id") or "")
        asset_seen = self._assets_seen(sites, since, [asset_id]).get(asset_id)
        events_total, _ = self.backend.search_events(
            AlertFilter(sites=sites, since=since, until=now + 1, limit=0)
        )
        last_seen = alert_epoch({"@timestamp": finding.get("finding.last_seen")})
        quiet = max(self.policy.verify_quiet_s, self.policy.verify_finding_quiet_s)
        supports = {
            "since": since,
            "sites": sites,
            "finding_id": fid,
            "finding_kind": finding.get("finding.kind"),
            "asset_id": asset_id,
            "finding_last_seen": last_seen,
            "asset_last_seen": asset_seen,
            "events_since_reply": events_total,
            "quiet_for_s": now - since,
            "quiet_needed_s": quiet,
            "checked": {"finding.id": [fid], "asset.id": [asset_id]},
        }
        if last_seen >= since:
            reason = "still-observed"
        elif now - last_seen > RESOLVE_AFTER_S:
            reason = "confirmed"  # resolved: not observed for a week, wherever the asset went
            supports["finding_state"] = "resolved"
        elif asset_seen is None:
            reason = "asset-not-seen-since-reply"
        elif now - since < quiet:
            reason = "too-early"
        else:
            reason = "confirmed"
        return {"available": reason == "confirmed", "reason": reason, "supports": supports}

    def _assets_seen(self, sites: list[str], since: float, ids: list[str]) -> dict[str, float]:
        """The newest sighting (epoch s) of each of the assets ``ids`` seen since ``since``."""
        want, out, offset = {i for i in ids if i}, {}, 0
        while want - set(out):
            _, assets = self.backend.search_assets(
                AssetFilter(sites=sites, last_seen_since=since, limit=500, offset=offset)
            )
            for a in assets:
                if a.get("asset.id") in want:
                    out[str(a["asset.id"])] = alert_epoch({"@timestamp": a.get("asset.last_seen")})
            if len(assets) < 500:
                break
            offset += 500
        return out

    def _advisory_offer(self, row: dict[str, Any], now: float) -> dict[str, Any]:
        """An advisory's fix is confirmed when the assets it affected were seen again after
        the reply (their firmware observed anew) and it affects none of the sites' assets."""
        since, sites = row["submitted_at"], json.loads(row["sites"])
        inds = json.loads(row["indicators"])
        adv = (inds.get("advisory.id") or [row["subject_ref"]])[0]
        assert self.exposure is not None
        matches = self.exposure(adv, sites)
        still = [m for m in matches if m.get("match.status") == "affected"]
        before = inds.get("asset.id", [])
        seen = self._assets_seen(sites, since, before)
        quiet = self.policy.verify_finding_quiet_s
        supports = {
            "since": since,
            "sites": sites,
            "advisory_id": adv,
            "affected_at_issue": before,
            "affected_now": [
                {"asset.id": m["asset.id"], "firmware": m.get("ics.device.firmware")}
                for m in still[:50]
            ],
            "possibly_affected_now": sum(1 for m in matches if m.get("match.status") != "affected"),
            "assets_seen_since_reply": seen,
            "quiet_for_s": now - since,
            "quiet_needed_s": quiet,
            "checked": {"advisory.id": [adv], "asset.id": before},
        }
        if still:
            reason = "still-observed"
        elif set(before) - set(seen):
            reason = "asset-not-seen-since-reply"
        elif now - since < quiet:
            reason = "too-early"
        else:
            reason = "confirmed"
        return {"available": reason == "confirmed", "reason": reason, "supports": supports}

    # -- verification ----------------------------------------------------------------------

    def verification_offer(
        self, who: Viewer, notice_id: str, now: float | None = None
    ) -> dict[str, Any]:
        """Whether the telemetry confirms the fix, and the data that says so.

        For an incident: since the reply, the enterprise's sites kept reporting (events from
        their sensors) and no alert matched the notice's indicators (the incident's rules or
        source addresses at those sites)."""
        return self._offer(self.visible(who, notice_id), now)

    def _offer(self, row: dict[str, Any], now: float | None = None) -> dict[str, Any]:
        now = time.time() if now is None else now
        if row["state"] != "submitted":
            return {"available": False, "reason": "not-submitted", "supports": {}}
        if row["subject_kind"] == "finding" and self._keeps_findings():
            return self._finding_offer(row, now)
        if row["subject_kind"] == "advisory" and self.exposure is not None:
            return self._advisory_offer(row, now)
        if row["subject_kind"] != "incident":
            return {
                "available": False,
                "reason": "no-telemetry-check",
                "supports": {"subject": row["subject_kind"]},
            }
        since = row["submitted_at"]
        sites = json.loads(row["sites"])
        inds = json.loads(row["indicators"])
        events_total, events = self.backend.search_events(
            AlertFilter(sites=sites, since=since, until=now + 1, limit=1)
        )
        last_event = alert_epoch(events[0]) if events else None
        alerts = page_alerts(
            self.backend, AlertFilter(sites=sites, since=since, until=now + 1), VERIFY_SCAN_CAP
        )
        rules, sources = set(inds.get("rule.id", [])), set(inds.get("source.ip", []))
        matching = [a for a in alerts if a.get("rule.id") in rules or a.get("source.ip") in sources]
        quiet_for = now - since
        supports = {
            "since": since,
            "sites": sites,
            "events_since_reply": events_total,
            "last_event": last_event,
            "alerts_since_reply": len(alerts),
            "matching_alerts": len(matching),
            "matching_alert_ids": [str(a.get("event.id")) for a in matching[:20]],
            "checked": {"rule.id": sorted(rules), "source.ip": sorted(sources)},
            "quiet_for_s": quiet_for,
            "quiet_needed_s": self.policy.verify_quiet_s,
            "min_events": self.policy.verify_min_events,
        }
        if matching:
            reason = "still-observed"
        elif events_total < self.policy.verify_min_events:
            reason = "no-telemetry-since-reply"
        elif quiet_for < self.policy.verify_quiet_s:
            reason = "too-early"
        else:
            reason = "confirmed"
        return {"available": reason == "confirmed", "reason": reason, "supports": supports}

    def verify(
        self, who: Viewer, notice_id: str, *, use_telemetry: bool, note: str | None = None
    ) -> dict[str, Any]:
        row = self.visible(who, notice_id)
        self._can_issue(who)
        if row["state"] != "submitted":
            raise IllegalTransition(f"a notice cannot go from {row['state']} to verified")
        extra: dict[str, Any] = {"method": "manual"}
        if use_telemetry:
            offer = self.verification_offer(who, notice_id)
            if not offer["available"]:
                raise Invalid(f"the telemetry does not confirm the fix ({offer['reason']})")
            extra = {"method": "telemetry", "supports": offer["supports"]}
        elif not (note and note.strip()):
            raise Invalid("a manual verification needs a note saying what was checked")
        self._move(who, row, "verified", "verify", note, extra)
        return extra

    def auto_verify(self, now: float | None = None) -> list[dict[str, Any]]:
        """Verify the submitted notices of the policy's ``verification.auto`` subjects whose
        fix the telemetry confirms (as the system, with the data in the audit trail)."""
        kinds = self.policy.verify_auto
        if not kinds:
            return []
        now = time.time() if now is None else now
        rows = self.db.rows(
            f"SELECT * FROM notice WHERE state='submitted' AND subject_kind IN "
            f"({','.join('?' * len(kinds))}) ORDER BY number",
            tuple(kinds),
        )
        done = []
        for row in rows:
            offer = self._offer(row, now)
            if not offer["available"]:
                continue
            extra = {"method": "telemetry", "automatic": True, "supports": offer["supports"]}
            try:
                self._move(SYSTEM, row, "verified", "verify", None, extra, now)
            except IllegalTransition:
                continue  # moved meanwhile by someone
            done.append({"notice": row["id"], "subject": row["subject_kind"], **extra})
        return done

    # -- overdue and escalation -------------------------------------------------------

    def escalate(self, now: float | None = None) -> list[dict[str, Any]]:
        """Raise the escalation of overdue notices: city at the deadline, province
        ``escalate_to_province_after_working_days`` later. Returns what changed."""

        now = time.time() if now is None else now
        marks = ",".join("?" * len(DONE))
        rows = self.db.rows(
            f"SELECT * FROM notice WHERE deadline < ? AND escalation < 2 AND "
            f"state NOT IN ({marks})",
            [now, *DONE],
        )
        changed = []
        for row in rows:
            level = 1
            after = self.policy.escalate_after_working_days
            if after == 0 or now > self.calendar.add_working_days(row["deadline"], after):
                level = 2
            if level <= row["escalation"]:
                continue
            with self.db.tx() as conn:
                cur = conn.execute(
                    "UPDATE notice SET escalation=?, updated=? WHERE id=? AND escalation=?",
                    (level, now, row["id"], row["escalation"]),
                )
                if cur.rowcount != 1:
                    continue
                to = ("none", "city", "province")[level]
                self.db.audit(
                    conn,
                    SYSTEM,
                    "notice",
                    row["id"],
                    "escalate",
                    **self._scope(row),
                    at=now,
                    detail={
                        "escalation": {
                            "from": ("none", "city", "province")[row["escalation"]],
                            "to": to,
                        },
                        "deadline": row["deadline"],
                        "state": row["state"],
                    },
                )
            changed.append({"id": row["id"], "escalation": to})
        return changed

    # -- closure rates --------------------------------------------------------------------

    def stats(self, who: Viewer, org: OrgLike, now: float | None = None) -> dict[str, Any]:
        """Per city and per industry: notices issued, closed, open, overdue, closure rate,
        and the mean days from issue to closure."""
        if who.is_enterprise:
            raise NotFound("stats")
        now = time.time() if now is None else now
        where, args = "", []
        if who.role == "city-analyst":
            where, args = " WHERE city_id=?", [who.scope_id]
        rows = self.db.rows(
            f"SELECT city_id, industry, state, deadline, issued_at, closed_at FROM notice{where}",
            args,
        )

        def blank() -> dict[str, Any]:
            return {"issued": 0, "closed": 0, "open": 0, "overdue": 0, "days_to_close": 0.0}

        by: dict[str, dict[str, dict[str, Any]]] = {
            "city": defaultdict(blank),
            "industry": defaultdict(blank),
        }
        total = blank()
        for r in rows:
            done = r["state"] in DONE
            for bucket in (by["city"][r["city_id"]], by["industry"][r["industry"]], total):
                bucket["issued"] += 1
                bucket["closed"] += done
                bucket["open"] += not done
                bucket["overdue"] += (not done) and r["deadline"] < now
                if r["closed_at"]:
                    bucket["days_to_close"] += (r["closed_at"] - r["issued_at"]) / 86400

        def finish(key: str, b: dict[str, Any], kind: str) -> dict[str, Any]:
            names = {}
            if kind == "city":
                c = org.cities.get(key, {})
                names = {"name": c.get("name", key), "name_zh": c.get("name_zh", "")}
            return {
                "id": key,
                **names,
                **b,
                "closure_rate": round(b["closed"] / b["issued"], 4) if b["issued"] else None,
                "days_to_close": round(b["days_to_close"] / b["closed"], 2)
                if b["closed"]
                else None,
            }

        return {
            "total": finish("all", total, "total"),
            "by_city": sorted(
                (finish(k, v, "city") for k, v in by["city"].items()), key=lambda x: x["id"]
            ),
            "by_industry": sorted(
                (finish(k, v, "industry") for k, v in by["industry"].items()), key=lambda x: x["id"]
            ),
        }
