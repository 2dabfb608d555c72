"""Detection content pushed to the sensors over the control channel (``content.update``).

The province signs one ``content.update`` per sensor (the envelope: type, id, target sensor,
issued and expiry times, Ed25519 signature; ``pipeline.control``) whose payload is the sealed
content package (``detectors.content``: version, watchlist, rules, SHA-256). The channel's
Receiver refuses and counts unsigned, tampered, expired, replayed and mis-addressed messages
before this handler sees them; the handler then refuses a package whose own digest fails
(``invalid``) or that is no newer than the one running (``stale``), and otherwise swaps the
running watchlist without a restart, keeps the package on disk for the next start and puts its
version into the heartbeats (``icsmon.sensor.content_version``). Every outcome is answered with
one ``response`` document (``icsmon.content.*``), so the province sees what each sensor did.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from detectors.content import ContentUpdater
from pipeline.control import Envelope, Signer, register, response_doc

CONTENT_UPDATE = register(
    "content.update",
    "run this detection content package (indicator watchlist, rules) from now on",
)
# A push stays valid for a day: a sensor cut off for a few hours still takes it on return;
# an older push arriving later is refused as stale by its version anyway.
PUSH_LIFETIME_S = 86_400


def update_payload(package: dict[str, Any]) -> dict[str, Any]:
    """The payload of a ``content.update``: the sealed package, as it is.

    Envelopes carry no floats (one canonical form of the signed bytes): the package's
    ``issued_at`` goes as whole seconds, and the package is sealed again if it had a fraction."""
    from detectors.content import seal

    body = dict(package)
    if isinstance(body.get("issued_at"), float):
        body.pop("sha256", None)
        body["issued_at"] = int(body["issued_at"])
        body = seal(body)
    return {"package": body}


def sign_updates(
    signer: Signer, package: dict[str, Any], sensors: list[str], lifetime_s: int = PUSH_LIFETIME_S
) -> list[dict[str, Any]]:
    """One signed ``content.update`` envelope per sensor (the message id is the sensor's and
    the version's, so a re-send of the same push is refused as replayed)."""
    payload = update_payload(package)
    version = payload["package"].get("version")
    return [
        signer.envelope(
            CONTENT_UPDATE,
            sensor,
            payload,
            lifetime_s=lifetime_s,
            message_id=f"content-{version}-{sensor}",
        )
        for sensor in sensors
    ]


class ContentUpdateHandler:
    """The sensor's answer to ``content.update`` (give it to the Receiver under its type)."""

    type = CONTENT_UPDATE

    def __init__(self, sensor_id: str, updater: ContentUpdater) -> None:
        self.sensor_id = sensor_id
        self.updater = updater

    def __call__(self, envelope: Envelope) -> list[dict]:
        got = self.updater.apply(envelope.payload)
        fields: dict[str, Any] = {
            "icsmon.content.status": got["status"],
            "icsmon.content.version": got["running"],
        }
        if "reason" in got:
            fields["icsmon.control.reason"] = got["status"]  # stale | invalid
            fields["icsmon.control.message"] = got["reason"]
        if "sha256" in got:
            fields["icsmon.content.sha256"] = got["sha256"]
        if "entries" in got:
            fields["icsmon.content.entries"] = got["entries"]
        if "rules" in got:  # what was done with the package's rules: written, kept, ...
            for what, n in got["rules"].items():
                fields[f"icsmon.content.rules_{what}"] = n
        status = "delivered" if got["status"] == "applied" else "refused"
        return [response_doc(envelope, self.sensor_id, status, fields=fields)]


def live_content(
    sensor_id: str,
    detector: Any,
    path: Any = None,
    on_version: Callable[[int], None] | None = None,
    live_rules: Any = None,
) -> ContentUpdateHandler:
    """The handler for a running sensor: ``detector`` is its WatchlistDetector (an empty one,
    version 0, when it started without ``--content``); ``live_rules`` puts the package's
    Sigma rules in place (``icsmon.pushed_rules.LiveRules``)."""
    return ContentUpdateHandler(
        sensor_id, ContentUpdater(detector, path, on_version, live_rules=live_rules)
    )


# -- the province's side: pushes to a scope and what each sensor did ---------------------------

# A control message travels in one Kafka record (1 MiB by default, envelope included).
MAX_PUSH_BYTES = 900 * 1024
PUSH_STATES = ("sent", "applied", "refused", "expired", "not-sent")


class ContentPushes:
    """The province (or a city, within its own) pushes its current content package to the
    registered sensors of a scope: one signed ``content.update`` per sensor, recorded with the
    message id so each sensor's answer (``response`` documents) and its heartbeats
    (``icsmon.sensor.content_version``) give the push's state per sensor:

    ``sent`` (no answer yet), ``applied`` (applied, or the sensor already runs this version or
    a newer one, by its answer or its heartbeat), ``refused`` (with the sensor's reason),
    ``expired`` (no answer before the message expired: the sensor was away for its lifetime),
    ``not-sent`` (Kafka did not take it; the reason)."""

    def __init__(self, db: Any, content: Any) -> None:
        self.db = db
        self.content = content

    def push(
        self,
        who: Any,
        scope: str,
        targets: list[dict[str, Any]],
        send: Callable[[str, dict[str, Any]], dict[str, Any]],
        now: float | None = None,
    ) -> str:
        """Sign and send the current package to ``targets`` (``name``, ``site``, ``enterprise``,
        ``city``: the registered sensors of ``scope``, which the caller resolved within the
        viewer's tenancy); ``send(sensor, payload)`` publishes one envelope and returns it.
        The push's id."""
        import time
        import uuid

        from response.db import Forbidden, Invalid

        if not who.is_analyst:
            raise Forbidden("the province or a city pushes detection content")
        if not targets:
            raise Invalid(f"no registered sensor in {scope}")
        package = self.content.package()
        payload = update_payload(package)
        size = len(Signer.encode({"payload": payload}))
        if size > MAX_PUSH_BYTES:
            raise Invalid(
                f"the content package is {size:,} bytes; a control message carries at most "
                f"{MAX_PUSH_BYTES:,}: remove watchlist entries or rules"
            )
        push_id = f"push-{uuid.uuid4().hex[:16]}"
        rows: list[tuple[Any, ...]] = []
        failure: str | None = None
        for t in sorted(targets, key=lambda t: t["name"]):
            mid, expires, error = None, None, failure
            if failure is None:
                try:
                    envelope = send(t["name"], payload)
                    mid, expires = envelope["id"], int(envelope["expires_at"])
                except Exception as exc:  # Kafka's errors: the rest would wait as long
                    failure = error = f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
            rows.append(
                (push_id, t["name"], t["site"], t["enterprise"], t["city"], mid, expires, error)
            )
        at = time.time() if now is None else now
        with self.db.tx() as conn:
            number = self.db.next_number(conn, "content-push")
            conn.execute(
                "INSERT INTO content_push VALUES (?,?,?,?,?,?,?)",
                (
                    push_id,
                    number,
                    payload["package"]["version"],
                    payload["package"]["sha256"],
                    scope,
                    at,
                    who.name,
                ),
            )
            conn.executemany("INSERT INTO content_push_target VALUES (?,?,?,?,?,?,?,?)", rows)
            self.db.audit(
                conn,
                who,
                "content-push",
                push_id,
                "push",
                sites=[r[2] for r in rows],
                enterprises=[r[3] for r in rows],
                cities=[r[4] for r in rows],
                detail={
                    "scope": scope,
                    "version": payload["package"]["version"],
                    "sensors": len(rows),
                    "not_sent": sum(1 for r in rows if r[7]),
                },
                at=at,
            )
        return push_id

    def _targets(self, who: Any, push_ids: list[str]) -> list[dict[str, Any]]:
        if not push_ids:
            return []
        marks = ",".join("?" * len(push_ids))
        rows = self.db.rows(
            f"SELECT * FROM content_push_target WHERE push_id IN ({marks}) ORDER BY sensor",
            push_ids,
        )
        return [r for r in rows if who.sites is None or r["site"] in who.sites]

    def list(self, who: Any, limit: int = 50) -> list[dict[str, Any]]:
        """Pushes with a sensor the viewer may see, newest first (targets not filled in)."""
        pushes = self.db.rows(
            "SELECT * FROM content_push ORDER BY number DESC LIMIT ?", (max(limit * 20, 200),)
        )
        targets: dict[str, list[dict[str, Any]]] = {}
        for t in self._targets(who, [p["id"] for p in pushes]):
            targets.setdefault(t["push_id"], []).append(t)
        out = [{**p, "targets": targets[p["id"]]} for p in pushes if p["id"] in targets]
        return out[:limit]

    def get(self, who: Any, push_id: str) -> dict[str, Any]:
        from response.db import NotFound

        push = self.db.one("SELECT * FROM content_push WHERE id=?", (push_id,))
        targets = self._targets(who, [push_id]) if push else []
        if push is None or not targets:
            raise NotFound(push_id)
        return {**push, "targets": targets}


def push_view(
    push: dict[str, Any],
    answers: list[dict[str, Any]],
    running: dict[str, Any],
    now: float | None = None,
) -> dict[str, Any]:
    """A push with each sensor's state: ``answers`` are the ``response`` documents to its
    messages, ``running`` each sensor's content version from its newest heartbeat."""
    import time

    now = time.time() if now is None else now
    by_message = {str(a.get("icsmon.control.request_id")): a for a in answers}
    version = int(push["version"])
    rows = []
    for t in push["targets"]:
        answer = by_message.get(str(t["message_id"])) if t["message_id"] else None
        beat = _int(running.get(t["sensor"]))
        said = _int(answer.get("icsmon.content.version")) if answer else None
        row: dict[str, Any] = {
            "sensor": t["sensor"],
            "site": t["site"],
            "enterprise": t["enterprise_id"],
            "city": t["city_id"],
            # the newer of its answer and its last heartbeat (which may not have come yet)
            "running": max((v for v in (beat, said) if v is not None), default=None),
            "answered_at": answer.get("@timestamp") if answer else None,
            "reason": None,
        }
        status = answer.get("icsmon.content.status") if answer else None
        newest = max(v for v in (beat, said, -1) if v is not None)
        if t["error"]:
            row["state"], row["reason"] = "not-sent", t["error"]
        elif status == "applied" or newest >= version:
            row["state"] = "applied"
            if status == "stale":
                row["reason"] = f"already runs version {newest}"
        elif answer is not None:
            row["state"] = "refused"
            row["reason"] = (
                answer.get("icsmon.control.message")
                or answer.get("icsmon.control.reason")
                or answer.get("icsmon.control.status")
            )
        elif t["expires_at"] is not None and now > t["expires_at"]:
            row["state"] = "expired"
        else:
            row["state"] = "sent"
        rows.append(row)
    counts = {s: sum(1 for r in rows if r["state"] == s) for s in PUSH_STATES}
    return {
        "id": push["id"],
        "number": push["number"],
        "version": version,
        "sha256": push["sha256"],
        "scope": push["scope"],
        "issued_at": push["issued_at"],
        "issued_by": push["issued_by"],
        "counts": counts,
        "total": len(rows),
        "sensors": rows,
    }


def _int(value: Any) -> int | None:
    try:
        return int(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None
