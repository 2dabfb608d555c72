"""The response routes of the posture API: incidents, reports, notices, campaigns, watchlist,
allowlist, STIX sharing and the response audit trail (the logic is in the response package).

(No ``from __future__ import annotations``: FastAPI must see the real types.)

Tenancy as everywhere in the API: what the caller may not see answers 404 exactly like what
does not exist; what they may see but not change answers 403.
"""

import time
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field

from posture.access import Principal, Scope, visible_sites
from posture.state import PostureState
from response.content import fleet
from response.db import Forbidden, IllegalTransition, Invalid, NotFound, Viewer
from response.incidents import INCIDENT_STATES
from response.notices import NOTICE_STATES, SUBJECT_KINDS
from response.policy import REPORT_KINDS
from response.render import report_document, report_pdf
from response.service import Response as ResponseDesk
from response.sharing import SharingError, export_campaign, export_incident, read_indicators

Text = Annotated[str, Field(max_length=20_000)]
MAX_BUNDLE = 20 * 1024 * 1024  # a STIX bundle to import


class IncidentBody(BaseModel):
    title: str = Field(max_length=500)
    alert_ids: list[str] = Field(min_length=1, max_length=10_000)
    summary: Text = ""
    discovered_at: float | None = None
    facts: dict[str, float | bool | None] = Field(default_factory=dict)


class GroupBody(BaseModel):
    since: float | None = None
    until: float | None = None
    hours: float = Field(default=24, gt=0, le=24 * 400)
    apply: bool = False


class TransitionBody(BaseModel):
    to: str = Field(max_length=40)
    note: Text | None = None


class AlertsBody(BaseModel):
    alert_ids: list[str] = Field(min_length=1, max_length=10_000)


class NoteBody(BaseModel):
    text: Text = Field(min_length=1)


class AssigneesBody(BaseModel):
    names: list[Annotated[str, Field(max_length=200)]] = Field(max_length=50)


class FactsBody(BaseModel):
    facts: dict[str, float | bool | None]


class AttachmentBody(BaseModel):
    name: str = Field(max_length=200)
    content_type: str = Field(default="application/octet-stream", max_length=100)
    data: str = Field(description="base64", max_length=7_000_000)


class ReportBody(BaseModel):
    kind: str = Field(max_length=20)
    fields: dict[str, Text] = Field(default_factory=dict)


class ReportEditBody(BaseModel):
    fields: dict[str, Text]


class NoticeBody(BaseModel):
    subject_kind: str = Field(max_length=20)
    subject_ref: str = Field(max_length=500)
    enterprise: str = Field(max_length=128)
    title: str = Field(max_length=500)
    actions: list[Annotated[str, Field(max_length=2000)]] = Field(min_length=1, max_length=50)
    working_days: int | None = Field(default=None, ge=1, le=400)


class ReplyBody(BaseModel):
    text: Text = Field(min_length=1)
    attachments: list[AttachmentBody] = Field(default_factory=list, max_length=20)


class VerifyBody(BaseModel):
    use_telemetry: bool = True
    note: Text | None = None


class DetectBody(BaseModel):
    since: float | None = None
    until: float | None = None
    hours: float = Field(default=24, gt=0, le=24 * 400)


class WarningBody(BaseModel):
    level: str = Field(max_length=20)
    title: str = Field(max_length=500)
    text: Text = ""
    campaign: str | None = Field(default=None, max_length=64)
    industries: list[Annotated[str, Field(max_length=100)]] | None = Field(
        default=None, max_length=50
    )
    vendors: list[Annotated[str, Field(max_length=200)]] | None = Field(default=None, max_length=50)


class LiftBody(BaseModel):
    note: Text = Field(min_length=1)


class RuleBody(BaseModel):
    yaml: str = Field(max_length=262_144)
    policy: str = Field(default="central", max_length=10)


class AllowBody(BaseModel):
    value: str = Field(max_length=64)
    reason: str = Field(max_length=500)


def viewer_of(p: Principal, state: PostureState) -> Viewer:
    """The response package's view of the caller: name, role, the sites they may see."""
    sites = visible_sites(p, state.org())
    return Viewer(p.name, p.role, p.scope_id, frozenset(sites) if sites is not None else None)


def install(
    app: FastAPI,
    desk: ResponseDesk,
    state: PostureState,
    principal: Callable[..., Principal],
    sensors: Callable[[Scope], dict[str, Any]],
) -> None:
    """Add the response routes and their error answers to ``app``."""

    @app.exception_handler(NotFound)
    async def _not_found(_req: Request, _exc: NotFound) -> JSONResponse:
        return JSONResponse({"detail": "not found"}, status_code=404)

    @app.exception_handler(Forbidden)
    async def _forbidden(_req: Request, exc: Forbidden) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=403)

    @app.exception_handler(IllegalTransition)
    async def _illegal(_req: Request, exc: IllegalTransition) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=409)

    @app.exception_handler(Invalid)
    async def _invalid(_req: Request, exc: Invalid) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=422)

    def viewer(p: Annotated[Principal, Depends(principal)]) -> Viewer:
        return viewer_of(p, state)

    Who = Annotated[Viewer, Depends(viewer)]
    org = state.org

    def writer(v: Viewer) -> None:
        if v.role == "enterprise-viewer":
            raise Forbidden("this token is read-only")

    def window(since: float | None, until: float | None, hours: float) -> tuple[float, float]:
        hi = time.time() if until is None else until
        lo = hi - hours * 3600 if since is None else since
        if not 0 < hi - lo <= 400 * 86400:
            raise Invalid("time range must be positive and at most 400 days")
        return lo, hi

    # -- policy and audit ------------------------------------------------------------------

    @app.get("/api/response/policy", summary="The grading and reporting policy in force")
    def policy(v: Who) -> dict[str, Any]:
        return desk.policy.to_json() | {"calendar": desk.calendar.name}

    @app.get("/api/response/audit", summary="The response audit trail the caller may see")
    def audit(
        v: Who, kind: str | None = None, limit: Annotated[int, Query(ge=1, le=1000)] = 200
    ) -> list[dict[str, Any]]:
        return desk.db.audit_trail(v, kind, None, limit)

    @app.get("/api/response/audit/verify", summary="Check the audit trail's hash chain (province)")
    def audit_verify(v: Who) -> dict[str, Any]:
        if not v.is_province:
            raise NotFound("audit")
        return desk.db.verify_audit()

    # -- incidents ------------------------------------------------------------------------

    @app.get("/api/incidents", summary="Incidents the caller may see, newest first")
    def incidents(
        v: Who,
        state: str | None = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 100,
        offset: Annotated[int, Query(ge=0)] = 0,
    ) -> dict[str, Any]:
        if state is not None and state not in INCIDENT_STATES:
            raise Invalid(f"state must be one of {', '.join(INCIDENT_STATES)}")
        return desk.incidents.list(v, state, limit, offset)

    @app.post("/api/incidents", status_code=201, summary="Open an incident from alerts")
    def create_incident(v: Who, body: IncidentBody) -> dict[str, Any]:
        iid = desk.incidents.create(
            v,
            org(),
            title=body.title,
            alert_ids=body.alert_ids,
            summary=body.summary,
            discovered_at=body.discovered_at,
            facts={k: x for k, x in body.facts.items() if x is not None},
        )
        return desk.incidents.detail(v, iid, org())

    @app.post("/api/incidents/group", summary="The grouping rules: propose (or open) incidents")
    def group(v: Who, body: GroupBody) -> dict[str, Any]:
        lo, hi = window(body.since, body.until, body.hours)
        if body.apply:
            return {"created": desk.incidents.apply_groups(v, org(), lo, hi)}
        return {"groups": desk.incidents.propose_groups(v, org(), lo, hi)}

    @app.get(
        "/api/incidents/{incident_id}", summary="One incident: grade, clock, timeline, reports"
    )
    def incident(v: Who, incident_id: str) -> dict[str, Any]:
        return desk.incidents.detail(v, incident_id, org())

    @app.post("/api/incidents/{incident_id}/transition", summary="Move an incident's state")
    def incident_transition(v: Who, incident_id: str, body: TransitionBody) -> dict[str, Any]:
        desk.incidents.transition(v, incident_id, body.to, body.note)
        return desk.incidents.detail(v, incident_id, org())

    @app.post("/api/incidents/{incident_id}/alerts", summary="Add alerts to an incident")
    def incident_alerts(v: Who, incident_id: str, body: AlertsBody) -> dict[str, Any]:
        return {"added": desk.incidents.add_alerts(v, org(), incident_id, body.alert_ids)}

    @app.post("/api/incidents/{incident_id}/notes", summary="Add a note")
    def incident_note(v: Who, incident_id: str, body: NoteBody) -> dict[str, Any]:
        desk.incidents.add_note(v, incident_id, body.text)
        return {"ok": True}

    @app.post("/api/incidents/{incident_id}/assignees", summary="Set who works on the incident")
    def incident_assignees(v: Who, incident_id: str, body: AssigneesBody) -> dict[str, Any]:
        return {"assignees": desk.incidents.set_assignees(v, incident_id, body.names)}

    @app.post("/api/incidents/{incident_id}/facts", summary="Record impact facts and grade again")
    def incident_facts(v: Who, incident_id: str, body: FactsBody) -> dict[str, Any]:
        return desk.incidents.set_facts(v, org(), incident_id, body.facts)

    @app.post("/api/incidents/{incident_id}/attachments", status_code=201, summary="Attach a file")
    def incident_attach(v: Who, incident_id: str, body: AttachmentBody) -> dict[str, Any]:
        return desk.incidents.attach(v, incident_id, body.name, body.content_type, body.data)

    @app.get("/api/incidents/{incident_id}/audit", summary="Every change of one incident")
    def incident_audit(v: Who, incident_id: str) -> list[dict[str, Any]]:
        desk.incidents.visible(v, incident_id)
        return desk.db.audit_trail(v, "incident", incident_id)

    @app.get(
        "/api/incidents/{incident_id}/command", summary="Emergency command view of an incident"
    )
    def command(v: Who, incident_id: str) -> dict[str, Any]:
        out = desk.command(v, incident_id, org())
        sites = tuple(s for e in out["enterprises"] for s in e["sites"])
        health = sensors(Scope("site", None, sites)) if sites else {"sensors": []}
        by_site: dict[str, list[dict[str, Any]]] = {}
        for s in health["sensors"]:
            by_site.setdefault(s["site"], []).append(
                {"name": s["name"], "last_seen": s["last_seen"], "silent": s["silent"]}
            )
        for e in out["enterprises"]:
            e["sensors"] = [x for s in e["sites"] for x in by_site.get(s, [])]
        return out

    @app.get("/api/incidents/{incident_id}/stix", summary="The incident as a STIX 2.1 bundle")
    def incident_stix(v: Who, incident_id: str, include_enterprises: bool = False) -> Any:
        detail = desk.incidents.detail(v, incident_id, org())
        return export_incident(detail, org(), desk.policy.internal_networks, include_enterprises)

    @app.post(
        "/api/incidents/{incident_id}/reports",
        status_code=201,
        summary="Start a report (first, escalation, follow-up, final), prefilled",
    )
    def new_report(v: Who, incident_id: str, body: ReportBody) -> dict[str, Any]:
        if body.kind not in REPORT_KINDS:
            raise Invalid(f"kind must be one of {', '.join(REPORT_KINDS)}")
        rid = desk.incidents.save_report(v, org(), incident_id, body.kind, body.fields)
        return desk.incidents.report(v, rid)

    def report_doc(v: Viewer, report_id: str) -> dict[str, Any]:
        rep = desk.incidents.report(v, report_id)
        inc = desk.incidents.detail(v, rep["incident_id"], org())
        return report_document(rep, inc, desk.policy)

    @app.get("/api/reports/{report_id}", summary="A report as a structured JSON document")
    def get_report(v: Who, report_id: str) -> dict[str, Any]:
        return report_doc(v, report_id)

    @app.get("/api/reports/{report_id}/pdf", summary="A report as PDF")
    def get_report_pdf(v: Who, report_id: str) -> Response:
        doc = report_doc(v, report_id)
        name = f"incident-{doc['incident']['number']}-{doc['kind']}-{doc['seq']}.pdf"
        return Response(
            report_pdf(doc),
            media_type="application/pdf",
            headers={"Content-Disposition": f'attachment; filename="{name}"'},
        )

    @app.post("/api/reports/{report_id}", summary="Edit a draft report")
    def edit_report(v: Who, report_id: str, body: ReportEditBody) -> dict[str, Any]:
        rep = desk.incidents.report(v, report_id)
        desk.incidents.save_report(
            v, org(), rep["incident_id"], rep["kind"], body.fields, report_id
        )
        return desk.incidents.report(v, report_id)

    @app.post(
        "/api/reports/{report_id}/submit", summary="Submit a report (it can no longer change)"
    )
    def submit_report(v: Who, report_id: str) -> dict[str, Any]:
        return desk.incidents.submit_report(v, report_id)

    @app.get("/api/attachments/{attachment_id}", summary="Download an attachment")
    def attachment(v: Who, attachment_id: str) -> Response:
        meta, data = desk.notices.attachment(v, attachment_id)
        # Served as a download, never rendered by the browser: the content is the user's.
        return Response(
            data,
            media_type="application/octet-stream",
            headers={
                "Content-Disposition": f'attachment; filename="{meta["id"]}"',
                "X-Attachment-Name": meta["name"].encode("ascii", "replace").decode(),
            },
        )

    # -- notices --------------------------------------------------------------------------

    @app.get("/api/notices", summary="Notices the caller may see (an enterprise: its own)")
    def notices(
        v: Who,
        state: str | None = None,
        overdue: bool | None = None,
        enterprise: str | None = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 100,
        offset: Annotated[int, Query(ge=0)] = 0,
    ) -> dict[str, Any]:
        if state is not None and state not in NOTICE_STATES:
            raise Invalid(f"state must be one of {', '.join(NOTICE_STATES)}")
        return desk.notices.list(v, state, overdue, enterprise, limit, offset)

    @app.post("/api/notices", status_code=201, summary="Issue a notice to an enterprise")
    def issue(v: Who, body: NoticeBody) -> dict[str, Any]:
        if body.subject_kind not in SUBJECT_KINDS:
            raise Invalid(f"subject_kind must be one of {', '.join(SUBJECT_KINDS)}")
        nid = desk.notices.issue(
            v,
            org(),
            subject_kind=body.subject_kind,
            subject_ref=body.subject_ref,
            enterprise=body.enterprise,
            title=body.title,
            actions=body.actions,
            working_days=body.working_days,
        )
        return desk.notices.detail(v, nid)

    @app.get("/api/notices/stats", summary="Closure rates and overdue counts per city and industry")
    def notice_stats(v: Who) -> dict[str, Any]:
        return desk.notices.stats(v, org())

    @app.get("/api/notices/{notice_id}", summary="One notice with its replies and audit trail")
    def notice(v: Who, notice_id: str) -> dict[str, Any]:
        return desk.notices.detail(v, notice_id)

    @app.post("/api/notices/{notice_id}/transition", summary="Move a notice's state")
    def notice_transition(v: Who, notice_id: str, body: TransitionBody) -> dict[str, Any]:
        desk.notices.transition(v, notice_id, body.to, body.note)
        return desk.notices.detail(v, notice_id)

    @app.post("/api/notices/{notice_id}/reply", summary="The enterprise's reply with its evidence")
    def reply(v: Who, notice_id: str, body: ReplyBody) -> dict[str, Any]:
        desk.notices.reply(v, notice_id, body.text, [a.model_dump() for a in body.attachments])
        return desk.notices.detail(v, notice_id)

    @app.get(
        "/api/notices/{notice_id}/verification",
        summary="Whether the telemetry confirms the fix, with the data",
    )
    def verification(v: Who, notice_id: str) -> dict[str, Any]:
        return desk.notices.verification_offer(v, notice_id)

    @app.post("/api/notices/{notice_id}/verify", summary="Verify the fix (telemetry or by hand)")
    def verify(v: Who, notice_id: str, body: VerifyBody) -> dict[str, Any]:
        desk.notices.verify(v, notice_id, use_telemetry=body.use_telemetry, note=body.note)
        return desk.notices.detail(v, notice_id)

    # -- campaigns, allowlist, watchlist ------------------------------------------------

    @app.get("/api/campaigns", summary="Campaigns across enterprises")
    def campaigns(v: Who, limit: Annotated[int, Query(ge=1, le=500)] = 100) -> dict[str, Any]:
        return desk.campaigns.list(v, limit)

    @app.post("/api/campaigns/detect", summary="Correlate every enterprise's alerts (province)")
    def detect(v: Who, body: DetectBody) -> dict[str, Any]:
        if not v.is_province:
            raise Forbidden("campaign detection runs over every enterprise: province only")
        lo, hi = window(body.since, body.until, body.hours)
        return desk.campaigns.detect(org(), lo, hi)

    @app.get("/api/campaigns/{campaign_id}", summary="One campaign with its timeline")
    def campaign(v: Who, campaign_id: str) -> dict[str, Any]:
        return desk.campaigns.detail(v, campaign_id, org())

    @app.get("/api/campaigns/{campaign_id}/stix", summary="The campaign as a STIX 2.1 bundle")
    def campaign_stix(v: Who, campaign_id: str, include_enterprises: bool = False) -> Any:
        brief = desk.campaigns.brief(v, campaign_id)
        return export_campaign(
            brief, desk.campaigns.alerts_of(v, campaign_id), org(), include_enterprises
        )

    @app.post(
        "/api/campaigns/{campaign_id}/watch", summary="Put the campaign's address on the watchlist"
    )
    def campaign_watch(v: Who, campaign_id: str) -> dict[str, Any]:
        return {"watchlist": desk.campaigns.watch_campaign(v, campaign_id)}

    # -- early warning ----------------------------------------------------------------------

    @app.get("/api/warnings", summary="Early warnings (an enterprise: those addressed to it)")
    def warnings(v: Who, limit: Annotated[int, Query(ge=1, le=500)] = 100) -> dict[str, Any]:
        return desk.warnings.list(v, limit)

    @app.post(
        "/api/warnings",
        status_code=201,
        summary="Warn the enterprises not yet hit that share the sector or vendor",
    )
    def issue_warning(v: Who, body: WarningBody) -> dict[str, Any]:
        wid = desk.warnings.issue(
            v,
            org(),
            level=body.level,
            title=body.title,
            text=body.text,
            campaign=body.campaign,
            industries=body.industries,
            vendors=body.vendors,
        )
        return desk.warnings.detail(v, wid)

    @app.get("/api/warnings/{warning_id}", summary="One early warning and its recipients")
    def warning(v: Who, warning_id: str) -> dict[str, Any]:
        return desk.warnings.detail(v, warning_id)

    @app.post("/api/warnings/{warning_id}/acknowledge", summary="The enterprise acknowledges")
    def acknowledge_warning(v: Who, warning_id: str) -> dict[str, Any]:
        return desk.warnings.acknowledge(v, warning_id)

    @app.post("/api/warnings/{warning_id}/lift", summary="Lift an early warning (province)")
    def lift_warning(v: Who, warning_id: str, body: LiftBody) -> dict[str, Any]:
        return desk.warnings.lift(v, warning_id, body.note)

    @app.get("/api/allowlist", summary="Shared addresses that never make a campaign")
    def allowlist(v: Who) -> list[dict[str, Any]]:
        if not v.is_province:
            raise NotFound("allowlist")
        return desk.campaigns.allowlist()

    @app.post("/api/allowlist", status_code=201, summary="Allow a shared address (province)")
    def allow(v: Who, body: AllowBody) -> dict[str, Any]:
        if not v.is_province:
            raise NotFound("allowlist")
        return desk.campaigns.allow(v, body.value, body.reason)

    @app.delete("/api/allowlist", status_code=204, summary="Remove an allowlist entry (province)")
    def disallow(v: Who, value: str) -> None:
        if not v.is_province:
            raise NotFound("allowlist")
        desk.campaigns.disallow(v, value)

    @app.get("/api/watchlist", summary="Indicators pushed to sensors (province)")
    def watchlist(v: Who) -> list[dict[str, Any]]:
        if not v.is_province:
            raise NotFound("watchlist")
        return desk.campaigns.watchlist()

    @app.post("/api/watchlist/import", summary="Import a STIX 2.1 bundle's address indicators")
    async def watchlist_import(request: Request, v: Who) -> dict[str, Any]:
        if not v.is_province:
            raise NotFound("watchlist")
        declared = request.headers.get("content-length", "0")
        if not declared.isdigit() or int(declared) > MAX_BUNDLE:  # refused before it is read
            raise HTTPException(413, "bundle larger than 20 MiB")
        body = await request.body()
        if len(body) > MAX_BUNDLE:
            raise HTTPException(413, "bundle larger than 20 MiB")
        try:
            found = read_indicators(body)
        except SharingError as exc:
            raise Invalid(str(exc)) from None
        added = 0
        for kind, value, ref in found["addresses"]:
            try:
                _, new = desk.campaigns.watch(v, kind, value, "stix", ref)
            except Invalid:
                found["skipped"] += 1
                continue
            added += new
        return {
            "added": added,
            "indicators": len(found["addresses"]),
            "skipped": found["skipped"],
            "objects": found["objects"],
        }

    @app.get("/api/content", summary="The detection content package for sensors (province)")
    def content(v: Who) -> dict[str, Any]:
        if not v.is_province:
            raise NotFound("content")
        desk.content.province = str(state.org().province.get("id") or "")
        return desk.content.package()

    @app.get("/api/content/fleet", summary="Which content version each sensor runs: who is behind")
    def content_fleet(v: Who) -> dict[str, Any]:
        sites = None if v.sites is None else tuple(sorted(v.sites))
        health = sensors(Scope("site", None, sites)) if sites != () else {"sensors": []}
        return fleet(health["sensors"], desk.content.version())

    @app.get("/api/content/rules", summary="Sigma rules pushed to sensors (province)")
    def content_rules(v: Who) -> list[dict[str, Any]]:
        if not v.is_province:
            raise NotFound("content")
        return desk.content.rules()

    @app.post(
        "/api/content/rules",
        status_code=201,
        summary="Push a Sigma rule to sensors (central or local policy)",
    )
    def push_rule(v: Who, body: RuleBody) -> dict[str, Any]:
        if not v.is_province:
            raise NotFound("content")
        return desk.content.add_rule(v, body.yaml, body.policy)

    @app.delete("/api/content/rules/{rule_id}", status_code=204, summary="Stop pushing a rule")
    def remove_rule(v: Who, rule_id: str) -> None:
        if not v.is_province:
            raise NotFound("content")
        desk.content.remove_rule(v, rule_id)

    @app.delete("/api/watchlist/{watch_id}", status_code=204, summary="Remove a watchlist entry")
    def unwatch(v: Who, watch_id: str) -> None:
        if not v.is_province:
            raise NotFound("watchlist")
        desk.campaigns.unwatch(v, watch_id)
