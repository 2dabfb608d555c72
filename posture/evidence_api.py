"""Evidence on demand in the posture API: ask the sensor that raised an alert for the flow's
events and packets, follow the request, download the pcap (the logic of the request and the
answer is ``pipeline.evidence``; the channel ``pipeline.control_kafka``).

(No ``from __future__ import annotations``: FastAPI must see the real types.)

Who may ask: anyone who may see the alert (an enterprise viewer its own enterprise's alerts
only); what the caller may not see answers 404 exactly like what does not exist. One open
request per alert at a time: asking again while one is under way returns it. Every request
is written to the audit trail with who asked.

Routes:

- ``POST /api/alerts/{id}/evidence`` (``before_s``, ``after_s``: the window around the
  alert): signs an ``evidence.request`` for the alert's sensor and publishes it; 202 with the
  request, 503 when this server has no control key or Kafka does not take it;
- ``GET /api/alerts/{id}/evidence``: the alert's requests, newest first, with their state
  (requested, delivered, refused, expired) and the reason;
- ``GET /api/evidence/{request}``: one request, with the events the sensor sent;
- ``GET /api/evidence/{request}/pcap``: the packets as a pcap file (409 while parts are
  missing or when none were sent).
"""

import logging
import time
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException
from fastapi.responses import Response
from pydantic import BaseModel, Field

from pipeline.control import EVIDENCE_REQUEST
from pipeline.docs import nest
from pipeline.evidence import PcapUnavailable, events_of, evidence_state, pcap_of, request_payload
from posture.access import NotVisible, Principal
from posture.service import PostureService
from posture.state import PostureState

log = logging.getLogger("icsmon.posture")

MAX_PCAP_BYTES = 64 << 20  # the largest capture served back


class EvidenceBody(BaseModel):
    before_s: int = Field(default=60, ge=0, le=3600)
    after_s: int = Field(default=60, ge=0, le=3600)


def install(
    app: FastAPI,
    principal: Callable[..., Principal],
    service: PostureService,
    state: PostureState,
    publisher: Any | None,
) -> None:
    """Add the evidence routes to ``app``; ``publisher`` sends requests (None: not set up)."""
    backend = service.backend
    who = Annotated[Principal, Depends(principal)]

    def view(req: dict[str, Any], parts: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        if parts is None:
            parts = backend.responses([req["id"]], payload=False)
        st = evidence_state(req, parts)
        return {
            "id": req["id"],
            "alert_id": req["alert_id"],
            "sensor": req["target"],
            "requested_by": req["requested_by"],
            "requested_at": req["requested_at"],
            "expires_at": req["expires_at"],
            "window": {"start": req["payload"].get("start"), "end": req["payload"].get("end")},
            **st,
            "pcap_available": bool(
                st["state"] == "delivered" and st.get("pcap_bytes") and st.get("complete")
            ),
        }

    def visible_request(p: Principal, request_id: str) -> dict[str, Any]:
        req = state.evidence_request(request_id)
        if req is None or service.visible_alert(p, req["alert_id"]) is None:
            raise NotVisible(request_id)
        return req

    @app.post(
        "/api/alerts/{alert_id}/evidence",
        status_code=202,
        summary="Ask the alert's sensor for its evidence (the flow's events and packets)",
    )
    def request_evidence(p: who, alert_id: str, body: EvidenceBody | None = None) -> Any:
        doc = service.visible_alert(p, alert_id)
        if doc is None:
            raise NotVisible(alert_id)
        body = body or EvidenceBody()
        for req in state.evidence_requests(alert_id, limit=5):
            current = view(req)
            if current["state"] == "requested":
                return current  # under way: one open request per alert
        if publisher is None:
            raise HTTPException(
                503,
                "evidence requests are not configured on this server "
                "(icsmon posture serve --control-key, with Kafka in --config)",
            )
        sensor = doc.get("observer.name")
        if not isinstance(sensor, str) or not sensor:
            raise HTTPException(409, "the alert names no sensor to ask")
        site = doc.get("labels.site")
        registered = state.org().sensor_site.get(sensor)
        if registered is not None and registered != site:
            raise HTTPException(409, f"sensor {sensor} is registered to another site")
        try:
            payload = request_payload(doc, body.before_s, body.after_s)
        except ValueError as exc:
            raise HTTPException(409, str(exc)) from None
        try:
            envelope = publisher.send(EVIDENCE_REQUEST, sensor, payload)
        except Exception as exc:  # Kafka's errors: say it in one line, log the rest
            log.warning("evidence request for %s not sent: %s", alert_id, exc)
            raise HTTPException(503, "the request could not be sent (Kafka unavailable)") from None
        req = state.add_evidence_request(envelope, alert_id, site, p.name)
        return view(req, [])

    @app.get(
        "/api/alerts/{alert_id}/evidence",
        summary="The alert's evidence requests, newest first, with their state",
    )
    def alert_evidence(p: who, alert_id: str) -> dict[str, Any]:
        if service.visible_alert(p, alert_id) is None:
            raise NotVisible(alert_id)
        reqs = state.evidence_requests(alert_id)
        parts = backend.responses([r["id"] for r in reqs], payload=False) if reqs else []
        by_id: dict[str, list[dict[str, Any]]] = {}
        for part in parts:
            by_id.setdefault(str(part.get("icsmon.control.request_id")), []).append(part)
        return {
            "configured": publisher is not None,
            "requests": [view(r, by_id.get(r["id"], [])) for r in reqs],
        }

    @app.get("/api/evidence/{request_id}", summary="One evidence request and what came back")
    def evidence(p: who, request_id: str) -> dict[str, Any]:
        req = visible_request(p, request_id)
        parts = backend.responses([request_id], payload=True)
        out = view(req, parts)
        out["events"] = [nest(e) for e in events_of(req, parts)]
        return out

    @app.get(
        "/api/evidence/{request_id}/pcap",
        summary="The packets the sensor sent, as a pcap file",
        response_class=Response,
    )
    def evidence_pcap(p: who, request_id: str) -> Response:
        req = visible_request(p, request_id)
        parts = backend.responses([request_id], payload=True)
        try:
            data = pcap_of(req, parts, MAX_PCAP_BYTES)
        except PcapUnavailable as exc:
            raise HTTPException(409, str(exc)) from None
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(req["requested_at"]))
        alert = "".join(c for c in req["alert_id"] if c.isalnum())[:24] or "alert"
        name = f"evidence-{alert}-{stamp}.pcap"
        return Response(
            data,
            media_type="application/vnd.tcpdump.pcap",
            headers={
                "Content-Disposition": f'attachment; filename="{name}"',
                "Cache-Control": "no-store",
            },
        )
