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
            fields["icsmon.control.message"] = got["reason"]
        if "sha256" in got:
            fields["icsmon.content.sha256"] = got["sha256"]
        if "entries" in got:
            fields["icsmon.content.entries"] = got["entries"]
        status = "done" if got["status"] == "applied" else "refused"
        return [response_doc(envelope, self.sensor_id, status, fields=fields)]


def live_content(
    sensor_id: str, detector: Any, path: Any = None, on_version: Callable[[int], None] | None = None
) -> ContentUpdateHandler:
    """The handler for a running sensor: ``detector`` is its WatchlistDetector (an empty one,
    version 0, when it started without ``--content``)."""
    return ContentUpdateHandler(sensor_id, ContentUpdater(detector, path, on_version))
