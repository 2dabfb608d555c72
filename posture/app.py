"""The posture REST API and dashboard (FastAPI). OpenAPI at /openapi.json (with a token).

(No ``from __future__ import annotations``: FastAPI must see the real dependency types.)

Every /api route takes a bearer token, turns it into a Principal and resolves the requested
scope against it (posture.access). Objects outside the caller's tenancy answer 404 exactly
like objects that do not exist.

Security: only ``/healthz`` and the dashboard's shell (``/`` and ``/static/*``: the login page,
its script, styles and translations, no data) answer without a token; every ``/api`` route and
the OpenAPI description need one. Wrong tokens are rate-limited per client address: after
``auth_failures`` wrong tokens within ``auth_window_s`` seconds every token check from that
address answers 429 (with ``Retry-After``) until the window has passed, so tokens cannot be
guessed quickly. Every response carries a Content-Security-Policy (scripts from this origin
only, no framing), ``X-Content-Type-Options: nosniff``, ``X-Frame-Options: DENY`` and
``Referrer-Policy: no-referrer``. Unexpected errors answer ``{"detail": "internal error"}``
and are logged with the method and path only: never a header, a token or a query string.
"""

import collections
import json
import logging
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field
from starlette.middleware.base import BaseHTTPMiddleware

from pipeline.docs import nest
from pipeline.query import AlertFilter, AssetFilter, QueryBackend
from posture.access import NotVisible, Principal, Scope, can_see_site, resolve_scope
from posture.content_api import install as install_content
from posture.evidence_api import install as install_evidence
from posture.hunt_api import install as install_hunts
from posture.response_api import install as install_response
from posture.service import PostureService
from posture.state import CLOSE_REASONS, PostureState
from posture.webhooks import notify_change
from response.service import Response as ResponseDesk

STATIC = Path(__file__).resolve().parent / "static"
MAX_RANGE_S = 400 * 86400
MAX_WINDOW = 10_000  # deepest page: offset + limit (Elasticsearch's default result window)

NOT_FOUND = "not found"

log = logging.getLogger("icsmon.posture")

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; "
        "form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
}


class SecurityHeaders(BaseHTTPMiddleware):
    async def dispatch(self, request: Request, call_next: Any) -> Any:
        try:
            response = await call_next(request)
        except Exception as exc:  # never a traceback or an exception text to the client
            log.error(
                "internal error on %s %s (%s)", request.method, request.url.path, type(exc).__name__
            )
            response = JSONResponse({"detail": "internal error"}, status_code=500)
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        return response


class AuthLimiter:
    """Wrong tokens per client address in a sliding window (thread-safe; sync routes run in
    a thread pool)."""

    def __init__(self, limit: int, window_s: float) -> None:
        self.limit = limit
        self.window_s = window_s
        self._failures: dict[str, collections.deque[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, client: str, now: float) -> collections.deque[float]:
        q = self._failures.setdefault(client, collections.deque())
        while q and q[0] <= now - self.window_s:
            q.popleft()
        return q

    def blocked_for(self, client: str) -> float:
        """Seconds until this client may try a token again (0: it may now)."""
        now = time.monotonic()
        with self._lock:
            q = self._recent(client, now)
            if len(q) < self.limit:
                return 0.0
            return max(0.0, q[len(q) - self.limit] + self.window_s - now)

    def failed(self, client: str) -> None:
        now = time.monotonic()
        with self._lock:
            if len(self._failures) > 100_000:  # bounded memory under a spray of addresses
                self._failures.clear()
            self._recent(client, now).append(now)


class AssignBody(BaseModel):
    assignee: str = Field(min_length=0, max_length=200)
    note: str | None = Field(default=None, max_length=10_000)


class CloseBody(BaseModel):
    reason: Literal[CLOSE_REASONS]  # type: ignore[valid-type]
    note: str | None = Field(default=None, max_length=10_000)


class NoteBody(BaseModel):
    text: str = Field(min_length=1, max_length=10_000)


class OptionalNote(BaseModel):
    note: str | None = Field(default=None, max_length=10_000)


class WebhookBody(BaseModel):
    scope: str = Field(description="city:ID or enterprise:ID")
    url: str = Field(max_length=2000)
    min_severity: int = Field(default=70, ge=0, le=100)


def _redact_url(url: str) -> str:
    """Show where a webhook points without credentials or query (they may hold secrets)."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    return urllib.parse.urlunsplit((parts.scheme, host, parts.path, "", ""))


def create_app(
    backend: QueryBackend,
    state: PostureState,
    *,
    silent_after_s: float = 900.0,
    refresh_s: int = 30,
    auth_failures: int = 20,
    auth_window_s: float = 60.0,
    catalog: Any | None = None,
    response: ResponseDesk | None = None,
    control: Any | None = None,
) -> FastAPI:
    """The app over ``backend``; ``control``, a ``pipeline.control_kafka.ControlPublisher``,
    lets analysts ask sensors for evidence (posture/evidence_api.py)."""
    from posture.assessment_api import AssessmentData, add_routes

    assessment = AssessmentData(backend, state, catalog)
    service = PostureService(
        backend, state, silent_after_s=silent_after_s, exposure=assessment.site_exposure
    )
    # Incidents, notices and campaigns keep their tables in the same state file.
    desk = response if response is not None else ResponseDesk(state.path, backend)
    desk.db.listeners.append(lambda entry: notify_change(state, entry))
    app = FastAPI(
        title="icsmon posture",
        description="Provincial ICS security posture: summaries, alerts, workflow, webhooks.",
        version="1",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,  # served below, behind a token
    )
    app.add_middleware(SecurityHeaders)
    app.state.service = service
    app.state.posture_state = state
    app.state.response = desk
    limiter = AuthLimiter(auth_failures, auth_window_s)
    app.state.auth_limiter = limiter

    @app.exception_handler(NotVisible)
    async def _not_visible(_req: Request, _exc: NotVisible) -> JSONResponse:
        return JSONResponse({"detail": NOT_FOUND}, status_code=404)

    def principal(request: Request) -> Principal:
        auth = request.headers.get("authorization", "")
        scheme, _, token = auth.partition(" ")
        presented = scheme.lower() == "bearer" and bool(token.strip())
        client = request.client.host if request.client else "?"
        if presented:
            wait = limiter.blocked_for(client)
            if wait > 0:
                raise HTTPException(
                    429,
                    "too many wrong tokens from this address; try later",
                    headers={"Retry-After": str(int(wait) + 1)},
                )
        info = state.lookup_token(token.strip()) if presented else None
        if info is None:
            if presented:
                limiter.failed(client)
                log.warning(
                    "wrong bearer token from %s on %s %s", client, request.method, request.url.path
                )
            raise HTTPException(
                401, "a valid bearer token is required", headers={"WWW-Authenticate": "Bearer"}
            )
        return Principal.from_token(info)

    Who = Annotated[Principal, Depends(principal)]

    def time_range(since: float | None, until: float | None, hours: float) -> tuple[float, float]:
        until = time.time() if until is None else until
        since = until - hours * 3600 if since is None else since
        if not 0 < until - since <= MAX_RANGE_S:
            raise HTTPException(422, "time range must be positive and at most 400 days")
        return since, until

    def scoped(p: Principal, scope: str | None) -> Scope:
        return resolve_scope(p, state.org(), scope)

    def writable_alert(p: Principal, alert_id: str) -> dict[str, Any]:
        doc = service.visible_alert(p, alert_id)
        if doc is None:
            raise NotVisible(alert_id)
        if not p.can_workflow:
            raise HTTPException(403, "this token is read-only")
        return doc

    # -- pages ---------------------------------------------------------------------------

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/openapi.json", include_in_schema=False)
    def openapi(_p: Who) -> dict[str, Any]:
        return app.openapi()

    @app.get("/api/config", summary="Dashboard settings (no secrets)")
    def config(_p: Who) -> dict[str, Any]:
        return {"refresh_s": refresh_s, "silent_after_s": silent_after_s}

    # -- who and where -------------------------------------------------------------------

    @app.get("/api/me", summary="The caller's role and home scope")
    def me(p: Who) -> dict[str, Any]:
        return {
            "name": p.name,
            "role": p.role,
            "scope": p.home_scope,
            "can_workflow": p.can_workflow,
        }

    @app.get("/api/org", summary="The part of the registry the caller may see")
    def org_tree(p: Who) -> dict[str, Any]:
        org = state.org()
        home = scoped(p, None)
        allowed = set(home.sites) if home.sites is not None else None
        cities: dict[str, dict[str, Any]] = {}
        for sid, s in org.sites.items():
            if allowed is not None and sid not in allowed:
                continue
            c = cities.setdefault(s.city_id, {**org.cities[s.city_id], "enterprises": {}})
            e = org.enterprises[s.enterprise_id]
            ent = c["enterprises"].setdefault(e["id"], {**e, "sites": []})
            ent["sites"].append(
                {
                    "id": sid,
                    "name": s.name,
                    "criticality": s.criticality,
                    "sensors": list(s.sensors),
                }
            )
        if allowed is None:
            for cid, c in org.cities.items():
                cities.setdefault(cid, {**c, "enterprises": {}})
        out = [
            {**c, "enterprises": list(c["enterprises"].values())} for _, c in sorted(cities.items())
        ]
        industries = sorted({e["industry"] for c in out for e in c["enterprises"]})
        return {
            "province": org.province if allowed is None else None,
            "cities": out,
            "industries": industries,
        }

    # -- posture -------------------------------------------------------------------------

    @app.get("/api/summary", summary="Posture of one scope over a time range")
    def summary(
        p: Who,
        scope: Annotated[
            str | None,
            Query(
                description="province | city:ID | industry:NAME | "
                "enterprise:ID | site:ID; default: the caller's"
            ),
        ] = None,
        since: float | None = None,
        until: float | None = None,
        hours: Annotated[float, Query(gt=0, le=9600)] = 24,
        top: Annotated[int, Query(ge=1, le=50)] = 10,
    ) -> dict[str, Any]:
        sc = scoped(p, scope)
        lo, hi = time_range(since, until, hours)
        return service.summary(sc, lo, hi, top=top)

    @app.get(
        "/api/traffic",
        summary="Who talks to whom, operations mix, controls and new talkers, from the sensors' rollups",
    )
    def traffic(
        p: Who,
        scope: str | None = None,
        since: float | None = None,
        until: float | None = None,
        hours: Annotated[float, Query(gt=0, le=9600)] = 24,
        top: Annotated[int, Query(ge=1, le=100)] = 20,
    ) -> dict[str, Any]:
        sc = scoped(p, scope)
        lo, hi = time_range(since, until, hours)
        return service.traffic(sc, lo, hi, top=top)

    @app.get("/api/sensors", summary="Registered sensors in scope: reporting or silent")
    def sensors(p: Who, scope: str | None = None) -> dict[str, Any]:
        return service.sensors(scoped(p, scope))

    # -- alerts --------------------------------------------------------------------------

    @app.get("/api/alerts", summary="Search alerts (newest first) with filters and pagination")
    def alerts(
        p: Who,
        scope: str | None = None,
        site: str | None = None,
        since: float | None = None,
        until: float | None = None,
        hours: Annotated[float, Query(gt=0, le=9600)] = 24 * 30,
        min_severity: Annotated[int | None, Query(ge=0, le=100)] = None,
        technique: str | None = None,
        protocol: str | None = None,
        rule_id: str | None = None,
        q: Annotated[str | None, Query(max_length=200)] = None,
        hunt: Annotated[str | None, Query(max_length=128)] = None,
        limit: Annotated[int, Query(ge=0, le=500)] = 50,
        offset: Annotated[int, Query(ge=0)] = 0,
    ) -> dict[str, Any]:
        sc = scoped(p, scope)
        sites = list(sc.sites) if sc.sites is not None else []
        if site is not None:
            site_scope = scoped(p, f"site:{site}")
            if sc.sites is not None and site not in sc.sites:
                raise NotVisible(site)
            sites = list(site_scope.sites or ())
        if offset + limit > MAX_WINDOW:
            raise HTTPException(422, f"offset + limit must be at most {MAX_WINDOW}")
        # a hunt's alerts carry the times of the history it searched: no default window
        lo, hi = (since, until) if hunt else time_range(since, until, hours)
        flt = AlertFilter(
            since=lo,
            until=hi,
            min_severity=min_severity,
            sites=sites,
            technique=technique,
            protocol=protocol,
            rule_id=rule_id,
            text=q,
            match={"icsmon.hunt.id": [hunt]} if hunt else {},
            limit=limit,
            offset=offset,
        )
        total, items = service.search(flt)
        return {"total": total, "offset": offset, "limit": limit, "items": items}

    @app.get("/api/alerts/{alert_id}", summary="One alert with evidence, workflow and notes")
    def alert_detail(p: Who, alert_id: str) -> dict[str, Any]:
        doc = service.visible_alert(p, alert_id)
        if doc is None:
            raise NotVisible(alert_id)
        out = service.detail(doc)
        # The alert's incident, for those who see incidents (analysts).
        out["incident"] = desk.incidents.incident_of_alert(alert_id) if p.is_analyst else None
        return out

    @app.get("/api/alerts/{alert_id}/audit", summary="Every workflow change of one alert")
    def alert_audit(p: Who, alert_id: str) -> list[dict[str, Any]]:
        if service.visible_alert(p, alert_id) is None:
            raise NotVisible(alert_id)
        return state.audit_trail(alert_id=alert_id)

    @app.post("/api/alerts/{alert_id}/acknowledge", summary="Acknowledge an alert")
    def acknowledge(p: Who, alert_id: str, body: OptionalNote | None = None) -> dict[str, Any]:
        doc = writable_alert(p, alert_id)
        return state.update_alert(
            doc, p.name, "acknowledge", status="acknowledged", note=body.note if body else None
        )

    @app.post("/api/alerts/{alert_id}/assign", summary="Assign an alert (empty name unassigns)")
    def assign(p: Who, alert_id: str, body: AssignBody) -> dict[str, Any]:
        doc = writable_alert(p, alert_id)
        return state.update_alert(doc, p.name, "assign", assignee=body.assignee, note=body.note)

    @app.post("/api/alerts/{alert_id}/close", summary="Close an alert with a reason")
    def close(p: Who, alert_id: str, body: CloseBody) -> dict[str, Any]:
        doc = writable_alert(p, alert_id)
        return state.update_alert(
            doc, p.name, "close", status="closed", close_reason=body.reason, note=body.note
        )

    @app.post("/api/alerts/{alert_id}/reopen", summary="Reopen a closed alert")
    def reopen(p: Who, alert_id: str, body: OptionalNote | None = None) -> dict[str, Any]:
        doc = writable_alert(p, alert_id)
        return state.update_alert(
            doc, p.name, "reopen", status="open", note=body.note if body else None
        )

    @app.post("/api/alerts/{alert_id}/notes", summary="Add a note to an alert")
    def add_note(p: Who, alert_id: str, body: NoteBody) -> dict[str, Any]:
        doc = writable_alert(p, alert_id)
        return state.update_alert(doc, p.name, "note", note=body.text)

    @app.get("/api/workflow", summary="Alerts in a workflow status (acknowledged, closed)")
    def workflow(
        p: Who,
        scope: str | None = None,
        status: Literal["acknowledged", "closed", "open"] = "acknowledged",
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
        offset: Annotated[int, Query(ge=0)] = 0,
    ) -> dict[str, Any]:
        sc = scoped(p, scope)
        total, rows = state.workflow_list(
            list(sc.sites) if sc.sites is not None else None, status, limit, offset
        )
        return {"total": total, "items": rows}

    @app.get("/api/audit", summary="The audit trail of a scope, newest first")
    def audit(
        p: Who, scope: str | None = None, limit: Annotated[int, Query(ge=1, le=1000)] = 200
    ) -> list[dict[str, Any]]:
        sc = scoped(p, scope)
        return state.audit_trail(
            sites=list(sc.sites) if sc.sites is not None else None, limit=limit
        )

    # -- assets --------------------------------------------------------------------------

    @app.get("/api/assets", summary="Assets seen in a scope")
    def assets(
        p: Who,
        scope: str | None = None,
        role: str | None = None,
        vendor: str | None = None,
        new_since: float | None = None,
        limit: Annotated[int, Query(ge=0, le=1000)] = 100,
        offset: Annotated[int, Query(ge=0, le=MAX_WINDOW)] = 0,
    ) -> dict[str, Any]:
        sc = scoped(p, scope)
        total, docs = backend.search_assets(
            AssetFilter(
                sites=list(sc.sites) if sc.sites is not None else [],
                role=role,
                vendor=vendor,
                first_seen_since=new_since,
                limit=limit,
                offset=offset,
            )
        )
        return {"total": total, "items": [nest(d) for d in docs]}

    # -- assessment (posture/assessment_api.py) ------------------------------------------

    app.state.assessment = assessment
    add_routes(app, app.state.assessment, Who, scoped, NotVisible)
    desk.notices.exposure = app.state.assessment.exposure  # advisory notices verify from it

    @app.get(
        "/api/assessment/reports/{period}",
        summary="Weekly or monthly report of a scope (HTML or PDF)",
    )
    def report(
        p: Who,
        period: Literal["weekly", "monthly"],
        scope: str | None = None,
        format: Literal["html", "pdf", "json"] = "pdf",
        lang: Literal["zh", "en"] = "zh",
    ) -> Response:
        from posture.report import render_html, render_pdf, report_data

        sc = scoped(p, scope)
        data = report_data(service, app.state.assessment, sc, period)
        name = f"icsmon-{period}-{sc.key.replace(':', '-')}-{data['until']}"
        if format == "json":
            return JSONResponse(data)
        page = render_html(data, lang)
        if format == "html":
            return Response(
                page,
                media_type="text/html; charset=utf-8",
                headers={"Content-Disposition": f'attachment; filename="{name}.html"'},
            )
        return Response(
            render_pdf(page),
            media_type="application/pdf",
            headers={"Content-Disposition": f'attachment; filename="{name}.pdf"'},
        )

    # -- webhooks ------------------------------------------------------------------------

    def hook_visible(p: Principal, hook: dict[str, Any]) -> bool:
        org = state.org()
        if hook["scope_kind"] == "city":
            if p.role == "province-analyst":
                return True
            return p.role == "city-analyst" and p.scope_id == hook["scope_id"]
        ent = org.enterprises.get(hook["scope_id"])
        if ent is None:
            return p.role == "province-analyst"
        sites = org.sites_of_enterprise(ent["id"])
        return bool(sites) and all(can_see_site(p, org, s) for s in sites)

    def hook_view(hook: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": hook["id"],
            "scope": f"{hook['scope_kind']}:{hook['scope_id']}",
            "url": _redact_url(hook["url"]),
            "min_severity": hook["min_severity"],
            "created": hook["created"],
            "created_by": hook["created_by"],
        }

    @app.get("/api/webhooks", summary="Webhooks of the caller's scope (secrets never shown)")
    def list_webhooks(p: Who) -> list[dict[str, Any]]:
        return [hook_view(h) for h in state.webhooks() if hook_visible(p, h)]

    @app.post(
        "/api/webhooks",
        status_code=201,
        summary="Notify a URL of new alerts of a city or enterprise (secret shown once)",
    )
    def add_webhook(p: Who, body: WebhookBody) -> dict[str, Any]:
        kind, _, ident = body.scope.partition(":")
        if kind not in ("city", "enterprise"):
            raise HTTPException(422, "scope must be city:ID or enterprise:ID")
        scoped(p, body.scope)  # 404 when outside the caller's tenancy
        if not p.can_workflow or (kind == "city" and not p.is_analyst):
            raise HTTPException(403, "this token may not add webhooks here")
        if urllib.parse.urlsplit(body.url).scheme not in ("http", "https"):
            raise HTTPException(422, "url must be http:// or https://")
        hook_id, secret = state.add_webhook(kind, ident, body.url, body.min_severity, p.name)
        state.audit(
            p.name,
            "webhook-add",
            {"webhook": hook_id, "scope": body.scope, "url": _redact_url(body.url)},
        )
        return {
            "id": hook_id,
            "secret": secret,
            "scope": body.scope,
            "url": _redact_url(body.url),
            "min_severity": body.min_severity,
        }

    def own_hook(p: Principal, hook_id: int) -> dict[str, Any]:
        for h in state.webhooks():
            if h["id"] == hook_id and hook_visible(p, h):
                return h
        raise NotVisible(str(hook_id))

    @app.delete("/api/webhooks/{hook_id}", status_code=204, summary="Remove a webhook")
    def delete_webhook(p: Who, hook_id: int) -> None:
        hook = own_hook(p, hook_id)
        if not p.can_workflow:
            raise HTTPException(403, "this token is read-only")
        state.delete_webhook(hook_id)
        state.audit(
            p.name,
            "webhook-delete",
            {"webhook": hook_id, "scope": f"{hook['scope_kind']}:{hook['scope_id']}"},
        )

    @app.get("/api/webhooks/{hook_id}/deliveries", summary="Recent deliveries of a webhook")
    def deliveries(p: Who, hook_id: int) -> list[dict[str, Any]]:
        own_hook(p, hook_id)
        return state.deliveries(hook_id)

    @app.get("/api/i18n", summary="The dashboard's translation table")
    def i18n(_p: Who) -> dict[str, Any]:
        return json.loads((STATIC / "i18n.json").read_text(encoding="utf-8"))

    install_response(app, desk, state, principal, service.sensors)
    install_evidence(app, principal, service, state, control)
    install_content(app, desk, state, principal, service.sensors, backend, control)
    install_hunts(app, principal, state, backend, control)
    return app
