"""Content pushes in the posture API: send the province's current detection content package
(watchlist, Sigma rules) to the sensors of a scope over the control channel, and follow what
each sensor did (the logic is ``response.content_push``; the channel
``pipeline.control_kafka``).

(No ``from __future__ import annotations``: FastAPI must see the real types.)

Who may push: the province anywhere, a city within its own city; an enterprise never (403).
A scope outside the caller's tenancy answers 404 like one that does not exist. Everyone sees
the pushes to the sensors they may see, and only those sensors.

Routes:

- ``POST /api/content/push`` (``scope``: ``province`` | ``city:ID`` | ``enterprise:ID`` |
  ``site:ID``): one signed ``content.update`` per registered sensor of the scope; 201 with
  the push, 503 when this server has no control key (or Kafka takes none), 409 when the scope
  has no registered sensor;
- ``GET /api/content/pushes``: the newest pushes with their counts per state;
- ``GET /api/content/pushes/{id}``: one push, each sensor's state (``sent``, ``applied``,
  ``refused`` with the reason, ``expired``, ``not-sent``) and the version it runs.
"""

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Query
from pydantic import BaseModel, Field

from posture.access import Principal, Scope, resolve_scope
from posture.response_api import viewer_of
from posture.state import PostureState
from response.content_push import CONTENT_UPDATE, PUSH_LIFETIME_S, push_view
from response.db import Forbidden, Invalid
from response.service import Response as ResponseDesk

PUSH_SCOPES = ("province", "city", "enterprise", "site")
ANSWER_CHUNK = 5000  # message ids per query of the sensors' answers


class PushBody(BaseModel):
    scope: str = Field(max_length=200)


def install(
    app: FastAPI,
    desk: ResponseDesk,
    state: PostureState,
    principal: Callable[..., Principal],
    sensors: Callable[[Scope], dict[str, Any]],
    backend: Any,
    publisher: Any | None,
) -> None:
    """Add the content push routes to ``app``; ``publisher`` sends (None: not set up)."""
    Who = Annotated[Principal, Depends(principal)]

    def view(push: dict[str, Any]) -> dict[str, Any]:
        ids = [t["message_id"] for t in push["targets"] if t["message_id"]]
        answers: list[dict[str, Any]] = []
        for i in range(0, len(ids), ANSWER_CHUNK):
            answers += backend.responses(ids[i : i + ANSWER_CHUNK], payload=False)
        sites = tuple(sorted({t["site"] for t in push["targets"]}))
        running = {
            s["name"]: s.get("content_version")
            for s in sensors(Scope("site", None, sites))["sensors"]
        }
        return push_view(push, answers, running)

    @app.post(
        "/api/content/push",
        status_code=201,
        summary="Push the current detection content to the sensors of a scope",
    )
    def push(p: Who, body: PushBody) -> dict[str, Any]:
        v = viewer_of(p, state)
        if not v.is_analyst:
            raise Forbidden("the province or a city pushes detection content")
        kind = body.scope.partition(":")[0]
        if kind not in PUSH_SCOPES:
            raise Invalid("scope must be province, city:ID, enterprise:ID or site:ID")
        scope = resolve_scope(p, state.org(), body.scope)  # 404 outside the caller's tenancy
        targets = [
            {k: s[k] for k in ("name", "site", "enterprise", "city")}
            for s in sensors(scope)["sensors"]
        ]
        if not targets:
            raise HTTPException(409, f"no registered sensor in {body.scope}")
        if publisher is None:
            raise HTTPException(
                503,
                "content pushes are not configured on this server "
                "(icsmon posture serve --control-key, with Kafka in --config)",
            )
        desk.content.province = str(state.org().province.get("id") or "")

        def send(sensor: str, payload: dict[str, Any]) -> dict[str, Any]:
            return publisher.send(CONTENT_UPDATE, sensor, payload, lifetime_s=PUSH_LIFETIME_S)

        push_id = desk.pushes.push(v, scope.key, targets, send)
        return view(desk.pushes.get(v, push_id))

    @app.get("/api/content/pushes", summary="Content pushes, newest first, with their states")
    def pushes(p: Who, limit: Annotated[int, Query(ge=1, le=100)] = 10) -> dict[str, Any]:
        v = viewer_of(p, state)
        return {
            "configured": publisher is not None,
            "version": desk.content.version(),
            "items": [view(x) for x in desk.pushes.list(v, limit)],
        }

    @app.get("/api/content/pushes/{push_id}", summary="One content push, sensor by sensor")
    def one_push(p: Who, push_id: str) -> dict[str, Any]:
        return view(desk.pushes.get(viewer_of(p, state), push_id))
