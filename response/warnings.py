"""Early warning (预警): the province warns the enterprises not yet hit that share the sector
or the vendor of what a campaign (or an analyst) has seen, with a colour level.

Recipients are computed when the warning is issued: enterprises of the given industries, and
enterprises with an asset of one of the given vendors (``ics.device.vendor`` in the assets the
sensors observed), less the enterprises already hit. From a campaign, the industries default to
those hit and the vendors to the devices seen at the hit sites. Each recipient acknowledges its
own warning. Tenancy: an enterprise sees the warnings addressed to it (and no other recipient);
a city sees those with a recipient in the city, cut to it; the province issues and lifts.

Pushing detection content (the watchlist, Sigma rules) to the recipients' sensors goes over the
sensor control channel (issue 12) when it is on main; the warning is the record of who was told.
"""

from __future__ import annotations

import json
import time
from typing import Any

from pipeline.query import AssetFilter, QueryBackend
from response.db import Forbidden, IllegalTransition, Invalid, NotFound, ResponseDB, Viewer
from response.incidents import OrgLike, new_id
from response.policy import Policy

MAX_VENDOR_ASSETS = 100_000


class Warnings:
    def __init__(
        self, db: ResponseDB, policy: Policy, backend: QueryBackend, campaigns: Any
    ) -> None:
        self.db = db
        self.policy = policy
        self.backend = backend
        self.campaigns = campaigns

    def _vendor_sites(self, vendors: list[str]) -> dict[str, str]:
        """site -> the vendor that made it a recipient (assets the sensors observed)."""
        out: dict[str, str] = {}
        for vendor in vendors:
            offset = 0
            while offset < MAX_VENDOR_ASSETS:
                _, docs = self.backend.search_assets(
                    AssetFilter(vendor=vendor, limit=1000, offset=offset)
                )
                for d in docs:
                    out.setdefault(str(d.get("labels.site")), vendor)
                if len(docs) < 1000:
                    break
                offset += 1000
        return out

    def _hit_vendors(self, sites: list[str]) -> list[str]:
        _, docs = self.backend.search_assets(AssetFilter(sites=sites, limit=1000))
        return sorted({str(d["ics.device.vendor"]) for d in docs if d.get("ics.device.vendor")})

    def issue(
        self,
        who: Viewer,
        org: OrgLike,
        *,
        level: str,
        title: str,
        text: str,
        campaign: str | None = None,
        industries: list[str] | None = None,
        vendors: list[str] | None = None,
    ) -> str:
        if not who.is_province:
            raise Forbidden("the province issues early warnings")
        levels = [w["id"] for w in self.policy.warning_levels]
        if level not in levels:
            raise Invalid(f"level must be one of {', '.join(levels)}")
        hit: set[str] = set()
        source_kind, source_ref = "manual", ""
        if campaign:
            alerts = self.campaigns.alerts_of(who, campaign)
            hit = {a["enterprise_id"] for a in alerts}
            source_kind, source_ref = "campaign", campaign
            if industries is None:
                industries = sorted({a["industry"] for a in alerts})
            if vendors is None:
                vendors = self._hit_vendors(sorted({a["site_id"] for a in alerts}))
        industries = sorted(set(industries or []))
        vendors = sorted({v.strip() for v in vendors or [] if v.strip()})
        if not industries and not vendors:
            raise Invalid("a warning goes to industries or to the users of vendors: name one")
        by_vendor = self._vendor_sites(vendors) if vendors else {}
        recipients: dict[str, dict[str, Any]] = {}
        for sid, site in org.sites.items():
            ent = site.enterprise_id
            if ent in hit:
                continue
            reason = (
                "industry"
                if site.industry in industries
                else f"vendor:{by_vendor[sid]}"
                if sid in by_vendor
                else None
            )
            if reason is None:
                continue
            r = recipients.setdefault(
                ent,
                {"city": site.city_id, "industry": site.industry, "sites": [], "reason": reason},
            )
            r["sites"].append(sid)
        if not recipients:
            raise Invalid("no enterprise outside those already hit shares that sector or vendor")
        now = time.time()
        wid = new_id("wrn")
        with self.db.tx() as conn:
            number = self.db.next_number(conn, "warning")
            conn.execute(
                "INSERT INTO warning VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    wid,
                    number,
                    level,
                    title.strip()[:500] or f"Warning {number}",
                    text[:20_000],
                    source_kind,
                    source_ref,
                    json.dumps(industries),
                    json.dumps(vendors),
                    now,
                    who.name,
                    "active",
                    None,
                ),
            )
            for ent, r in sorted(recipients.items()):
                conn.execute(
                    "INSERT INTO warning_recipient VALUES (?,?,?,?,?,?,?,?)",
                    (
                        wid,
                        ent,
                        r["city"],
                        r["industry"],
                        json.dumps(sorted(r["sites"])),
                        r["reason"],
                        None,
                        None,
                    ),
                )
            self.db.audit(
                conn,
                who,
                "warning",
                wid,
                "issue",
                to_state="active",
                at=now,
                sites=[s for r in recipients.values() for s in r["sites"]],
                enterprises=list(recipients),
                cities=[r["city"] for r in recipients.values()],
                detail={
                    "number": number,
                    "level": level,
                    "source": f"{source_kind}:{source_ref}",
                    "recipients": len(recipients),
                },
            )
        return wid

    def _recipients(self, wid: str) -> list[dict[str, Any]]:
        rows = self.db.rows(
            "SELECT * FROM warning_recipient WHERE warning_id=? ORDER BY enterprise_id", (wid,)
        )
        for r in rows:
            r["sites"] = json.loads(r["sites"])
        return rows

    def _mine(self, who: Viewer, recipients: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if who.is_enterprise:
            return [r for r in recipients if r["enterprise_id"] == who.scope_id]
        if who.sites is None:
            return recipients
        return [r for r in recipients if any(s in who.sites for s in r["sites"])]

    def detail(self, who: Viewer, wid: str) -> dict[str, Any]:
        row = self.db.one("SELECT * FROM warning WHERE id=?", (wid,))
        if row is None:
            raise NotFound(wid)
        mine = self._mine(who, self._recipients(wid))
        if not mine and not who.is_province:
            raise NotFound(wid)
        out = {
            k: row[k]
            for k in (
                "id",
                "number",
                "level",
                "title",
                "text",
                "issued_at",
                "issued_by",
                "state",
                "lifted_at",
            )
        }
        out["industries"] = json.loads(row["industries"])
        out["vendors"] = json.loads(row["vendors"])
        # Enterprises learn that a campaign exists, not where it struck.
        out["source"] = (
            {"kind": row["source_kind"], "ref": row["source_ref"]}
            if who.is_analyst
            else {"kind": row["source_kind"]}
        )
        out["recipients"] = [
            {
                k: r[k]
                for k in (
                    "enterprise_id",
                    "city_id",
                    "industry",
                    "reason",
                    "acknowledged_at",
                    "acknowledged_by",
                )
            }
            for r in mine
        ]
        out["recipients_total"] = len(self._recipients(wid)) if who.is_analyst else len(mine)
        out["acknowledged"] = sum(1 for r in mine if r["acknowledged_at"])
        return out

    def list(self, who: Viewer, limit: int = 100) -> dict[str, Any]:
        if who.is_enterprise:
            ids = [
                r["warning_id"]
                for r in self.db.rows(
                    "SELECT warning_id FROM warning_recipient WHERE enterprise_id=?",
                    (who.scope_id,),
                )
            ]
        else:
            ids = [r["id"] for r in self.db.rows("SELECT id FROM warning")]
        items = []
        for wid in ids:
            try:
                items.append(self.detail(who, wid))
            except NotFound:
                continue
        items.sort(key=lambda w: -w["number"])
        return {"total": len(items), "items": items[:limit]}

    def acknowledge(self, who: Viewer, wid: str) -> dict[str, Any]:
        self.detail(who, wid)
        if who.role != "enterprise-operator":
            raise Forbidden("each enterprise acknowledges its own warning")
        now = time.time()
        with self.db.tx() as conn:
            row = conn.execute(
                "SELECT * FROM warning_recipient WHERE warning_id=? AND enterprise_id=?",
                (wid, who.scope_id),
            ).fetchone()
            if row["acknowledged_at"] is not None:
                raise IllegalTransition("already acknowledged")
            conn.execute(
                "UPDATE warning_recipient SET acknowledged_at=?, acknowledged_by=? "
                "WHERE warning_id=? AND enterprise_id=?",
                (now, who.name, wid, who.scope_id),
            )
            self.db.audit(
                conn,
                who,
                "warning",
                wid,
                "acknowledge",
                at=now,
                sites=json.loads(row["sites"]),
                enterprises=[row["enterprise_id"]],
                cities=[row["city_id"]],
                from_state="issued",
                to_state="acknowledged",
            )
        return self.detail(who, wid)

    def lift(self, who: Viewer, wid: str, note: str) -> dict[str, Any]:
        self.detail(who, wid)
        if not who.is_province:
            raise Forbidden("the province lifts early warnings")
        recipients = self._recipients(wid)
        now = time.time()
        with self.db.tx() as conn:
            cur = conn.execute(
                "UPDATE warning SET state='lifted', lifted_at=? WHERE id=? AND state='active'",
                (now, wid),
            )
            if cur.rowcount != 1:
                raise IllegalTransition("this warning was already lifted")
            self.db.audit(
                conn,
                who,
                "warning",
                wid,
                "lift",
                at=now,
                sites=[s for r in recipients for s in r["sites"]],
                enterprises=[r["enterprise_id"] for r in recipients],
                cities=[r["city_id"] for r in recipients],
                from_state="active",
                to_state="lifted",
                detail={"note": note},
            )
        return self.detail(who, wid)
