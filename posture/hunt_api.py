"""Hunts in the posture API: ask the sensors of a scope whether a rule has already fired in
their stored history, follow the answers per site, open the alerts the hunt raised (the logic
of the request, the sensor's answers and their state is ``response.hunts``; the channel
``pipeline.control_kafka``).

(No ``from __future__ import annotations``: FastAPI must see the real types.)

Who may ask: analysts and enterprise operators, over a scope inside their own tenancy (an
enterprise operator its own enterprise or one of its sites); enterprise viewers may follow
hunts, not start them. What the caller may not see answers 404 exactly like what does not
exist. Every hunt is written to the audit trail with who asked.

Routes:

- ``GET /api/hunts/rules``: the rule pack's alerting rules and correlations, to choose from;
- ``POST /api/hunts`` (``scope``, ``rule_ids`` or a pasted ``rule_text``, ``since``/``until``,
  ``max_events``): signs one ``hunt.request`` per sensor registered to the scope's sites and
  publishes them; 202 with the hunt, 400 when a pasted rule does not load (with the reason),
  409 when the scope has no sensor, 503 when this server has no control key or Kafka does not
  take the request;
- ``GET /api/hunts?scope=``: the hunts over scopes the caller may see, newest first, with a
  count of sites per state;
- ``GET /api/hunts/{id}``: one hunt, with its progress per site: ``requested``,
  ``accepted``, ``running`` (events to scan, scanned so far, percent), ``done`` (events
  scanned, time covered, matches, alerts new and already raised, why it stopped early),
  ``refused`` (the reason), ``error``, ``no_answer``. Its alerts are ``GET /api/alerts?hunt={id}``.
"""

import logging
import time
from collections import Counter
from collections.abc import Callable
from functools import lru_cache
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException
from pydantic import BaseModel, Field

from posture.access import NotVisible, Principal, resolve_scope
from posture.state import PostureState
from response.hunts import (
    HuntLimits,
    Refused,
    check_rule_text,
    new_hunt_id,
    pack_rules,
    request_payload,
    send_hunt,
    sensor_progress,
)

log = logging.getLogger("icsmon.posture")

MAX_SENSORS = 5000  # one hunt asks at most this many sensors (a province has thousands)
STATES = ("requested", "accepted", "running", "done", "refused", "error", "no_answer")


class HuntBody(BaseModel):
    scope: str = Field(min_length=1, max_length=200)
    rule_ids: list[str] = Field(default_factory=list, max_length=200)
    rule_text: str | None = Field(default=None, max_length=256 * 1024)
    since: int | None = Field(default=None, ge=0)
    until: int | None = Field(default=None, ge=0)
    max_events: int | None = Field(default=None, ge=1)


@lru_cache(maxsize=1)
def _catalog() -> tuple[dict[str, Any], ...]:
    return tuple(pack_rules())


def install(
    app: FastAPI,
    principal: Callable[..., Principal],
    state: PostureState,
    backend: Any,
    publisher: Any | None,
) -> None:
    """Add the hunt routes to ``app``; ``publisher`` sends requests (None: not set up)."""
    who = Annotated[Principal, Depends(principal)]

    def visible_hunt(p: Principal, hunt_id: str) -> dict[str, Any]:
        hunt = state.hunt(hunt_id)
        if hunt is None:
            raise NotVisible(hunt_id)
        resolve_scope(p, state.org(), hunt["scope"])  # NotVisible outside the caller's tenancy
        return hunt

    def progress(hunt: dict[str, Any], now: float) -> list[dict[str, Any]]:
        targets = hunt["targets"]
        answers = backend.responses([t["request"] for t in targets], payload=False)
        by_sensor = sensor_progress(
            [t["sensor"] for t in targets],
            answers,
            hunt["id"],
            hunt["expires_at"],
            hunt.get("max_seconds") or HuntLimits().max_seconds,
            now,
        )
        org = state.org()
        rows = []
        for t in targets:
            st = by_sensor[t["sensor"]]
            site = org.sites.get(t["site"])
            rows.append(
                {
                    "sensor": t["sensor"],
                    "site": t["site"],
                    "enterprise": site.enterprise_id if site else None,
                    "city": site.city_id if site else None,
                    "state": st["status"],
                    **{k: v for k, v in st.items() if k not in ("status", "site")},
                }
            )
        return rows

    def view(hunt: dict[str, Any], sites: list[dict[str, Any]]) -> dict[str, Any]:
        counts = Counter(s["state"] for s in sites)
        return {
            "id": hunt["id"],
            "scope": hunt["scope"],
            "requested_by": hunt["requested_by"],
            "requested_at": hunt["requested_at"],
            "expires_at": hunt["expires_at"],
            "rules": hunt["rules"],
            "since": hunt.get("since"),
            "until": hunt.get("until"),
            "sensors": len(sites),
            "states": {s: counts.get(s, 0) for s in STATES},
            "events": sum(s.get("events") or 0 for s in sites),
            "matches": sum(s.get("matches") or 0 for s in sites),
            "alerts": sum(s.get("alerts") or 0 for s in sites),
            "new": sum(s.get("new") or 0 for s in sites),
        }

    @app.get("/api/hunts/rules", summary="The rule pack's alerting rules, to hunt with")
    def hunt_rules(p: who) -> dict[str, Any]:
        return {"rules": list(_catalog())}

    @app.post(
        "/api/hunts",
        status_code=202,
        summary="Ask the sensors of a scope to hunt rules over their stored events",
    )
    def start_hunt(p: who, body: HuntBody) -> dict[str, Any]:
        org = state.org()
        sc = resolve_scope(p, org, body.scope)  # outside the caller's tenancy: 404 first
        if not p.can_workflow:
            raise HTTPException(403, "this token is read-only")
        if sc.kind == "industry":
            raise HTTPException(422, "hunt over a province, city, enterprise or site")
        sites = list(sc.sites) if sc.sites is not None else sorted(org.sites)
        text = (body.rule_text or "").strip()
        known = {r["id"]: r for r in _catalog()}
        unknown = [r for r in body.rule_ids if r not in known]
        if unknown:
            raise HTTPException(400, f"no rule {unknown[0]} in the pack")
        if bool(body.rule_ids) == bool(text):
            raise HTTPException(400, "choose rules of the pack, or paste one: not both")
        rules = [{"id": r, "title": known[r]["title"]} for r in body.rule_ids]
        if text:
            try:
                rules += [{"id": None, "title": title} for title in check_rule_text(text)]
            except Refused as exc:
                raise HTTPException(400, f"the pasted rule does not load: {exc}") from None
        if body.since is not None and body.until is not None and body.until <= body.since:
            raise HTTPException(422, "until must be later than since")
        targets = [(sensor, site) for site in sites for sensor in org.sites[site].sensors]
        if not targets:
            raise HTTPException(409, "no sensor is registered to this scope's sites")
        if len(targets) > MAX_SENSORS:
            raise HTTPException(422, f"more than {MAX_SENSORS} sensors: choose a smaller scope")
        if publisher is None:
            raise HTTPException(
                503,
                "hunt requests are not configured on this server "
                "(icsmon posture serve --control-key, with Kafka in --config)",
            )
        hunt_id = new_hunt_id()
        payload = request_payload(
            hunt_id,
            {"pasted.yml": text} if text else None,
            body.rule_ids,  # ids: each sensor runs them from its own pack
            body.since,
            body.until,
            body.max_events,
        )
        try:
            sent = send_hunt(publisher, [s for s, _ in targets], payload)
        except Exception as exc:  # Kafka's errors: say it in one line, log the rest
            log.warning("hunt %s not sent: %s", hunt_id, exc)
            raise HTTPException(503, "the request could not be sent (Kafka unavailable)") from None
        expires = max(float(e["expires_at"]) for e in sent.values())
        detail = {
            "rules": rules,
            "since": body.since,
            "until": body.until,
            "max_seconds": HuntLimits().max_seconds,
            "targets": [
                {"sensor": s, "site": site, "request": sent[s]["id"]} for s, site in targets
            ],
        }
        hunt = state.add_hunt(hunt_id, sc.key, p.name, expires, detail)
        return {**view(hunt, progress(hunt, time.time())), "sites": progress(hunt, time.time())}

    @app.get("/api/hunts", summary="Hunts over scopes the caller may see, newest first")
    def list_hunts(p: who, limit: int = 50) -> dict[str, Any]:
        out = []
        now = time.time()
        for hunt in state.hunts(limit=200):
            try:
                resolve_scope(p, state.org(), hunt["scope"])
            except NotVisible:
                continue
            out.append(view(hunt, progress(hunt, now)))
            if len(out) >= limit:
                break
        return {"configured": publisher is not None, "can_start": p.can_workflow, "hunts": out}

    @app.get("/api/hunts/{hunt_id}", summary="One hunt and its progress per site")
    def hunt_detail(p: who, hunt_id: str) -> dict[str, Any]:
        hunt = visible_hunt(p, hunt_id)
        sites = progress(hunt, time.time())
        return {**view(hunt, sites), "sites": sites}
