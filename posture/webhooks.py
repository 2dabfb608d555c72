"""Notifications: POST each new high-severity alert to the webhooks of its enterprise / city.

One pass (:meth:`WebhookDispatcher.run_once`) finds new alerts per webhook with a search in
the back end (since the webhook's cursor, minus a look-back for late-arriving alerts), queues
one delivery per (webhook, alert) -- the UNIQUE key makes re-finding an alert harmless --
and tries every due delivery. A failed delivery is retried with exponential back-off until
``max_attempts``. The body is the alert as nested ECS JSON; ``X-Icsmon-Signature`` carries
an HMAC-SHA256 of the body with the webhook's secret so receivers can verify the sender.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import threading
import time
import urllib.error
import urllib.request
from typing import Any

from pipeline.docs import nest
from pipeline.query import AlertFilter, QueryBackend
from posture.state import PostureState

log = logging.getLogger("icsmon.posture.webhooks")

LATE_ARRIVAL_S = 600.0  # alerts can reach the store this long after their @timestamp
PAGE = 200


# Response objects whose changes an enterprise's webhooks receive (its own notices and
# warnings); city
# webhooks also receive incidents and campaigns touching the city.
ENTERPRISE_KINDS = ("notice", "warning", "content-push")
CITY_KINDS = ("notice", "incident", "report", "campaign", "warning", "content-push")


def notify_change(state: PostureState, entry: dict[str, Any]) -> int:
    """Queue one delivery per webhook whose city or enterprise the audited change touches.

    The body names the object, the action and the states, never another tenant: an
    enterprise's webhook sees its own enterprise only. Delivered by the next pass."""
    kind = entry["object_kind"]
    queued = 0
    for hook in state.webhooks():
        if hook["scope_kind"] == "enterprise":
            if kind not in ENTERPRISE_KINDS or hook["scope_id"] not in entry["enterprises"]:
                continue
            enterprises = [hook["scope_id"]]
        else:
            if kind not in CITY_KINDS or hook["scope_id"] not in entry["cities"]:
                continue
            org = state.org()
            enterprises = [
                e
                for e in entry["enterprises"]
                if org.enterprises.get(e, {}).get("city_id") == hook["scope_id"]
            ]
        body = {
            "type": f"icsmon.{kind}.{entry['action']}",
            "object": {"kind": kind, "id": entry["object_id"]},
            "action": entry["action"],
            "from": entry["from_state"],
            "to": entry["to_state"],
            "at": entry["at"],
            "actor": entry["actor"],
            "enterprises": enterprises,
            "audit_seq": entry["seq"],
        }
        payload = json.dumps(body, ensure_ascii=False)
        if state.enqueue_delivery(hook["id"], f"change-{entry['seq']}", payload, entry["at"]):
            queued += 1
    return queued


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class WebhookDispatcher:
    def __init__(
        self,
        backend: QueryBackend,
        state: PostureState,
        *,
        max_attempts: int = 6,
        backoff_s: float = 30.0,
        timeout_s: float = 5.0,
    ) -> None:
        self.backend = backend
        self.state = state
        self.max_attempts = max_attempts
        self.backoff_s = backoff_s
        self.timeout_s = timeout_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _sites(self, hook: dict[str, Any]) -> list[str]:
        org = self.state.org()
        if hook["scope_kind"] == "city":
            return org.sites_of_city(hook["scope_id"])
        return org.sites_of_enterprise(hook["scope_id"])

    def collect(self, now: float) -> int:
        """Queue deliveries for alerts that arrived since each webhook's cursor."""
        queued = 0
        for hook in self.state.webhooks():
            sites = self._sites(hook)
            if not sites:  # an empty site list would mean "every site": never send those
                continue
            since = max(hook["created"], hook["cursor"] - LATE_ARRIVAL_S)
            offset = 0
            while True:
                _, docs = self.backend.search_alerts(
                    AlertFilter(
                        since=since,
                        min_severity=hook["min_severity"],
                        sites=sites,
                        limit=PAGE,
                        offset=offset,
                    )
                )
                for doc in docs:
                    body = json.dumps(nest(doc), ensure_ascii=False, default=str)
                    if self.state.enqueue_delivery(hook["id"], str(doc["event.id"]), body, now):
                        queued += 1
                if len(docs) < PAGE:
                    break
                offset += PAGE
            self.state.set_webhook_cursor(hook["id"], now)
        return queued

    def deliver(self, now: float) -> dict[str, int]:
        """Try every due delivery once; returns counts of delivered / retrying / failed."""
        counts = {"delivered": 0, "retrying": 0, "failed": 0}
        for d in self.state.due_deliveries(now):
            body = d["payload"].encode()
            req = urllib.request.Request(
                d["url"],
                data=body,
                method="POST",
                headers={
                    "Content-Type": "application/json",
                    "User-Agent": "icsmon-posture",
                    "X-Icsmon-Delivery": str(d["id"]),
                    "X-Icsmon-Signature": sign(d["secret"], body),
                },
            )
            error: str | None = None
            try:
                with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                    if not 200 <= resp.status < 300:
                        error = f"HTTP {resp.status}"
            except urllib.error.HTTPError as exc:
                error = f"HTTP {exc.code}"
            except (urllib.error.URLError, OSError, ValueError) as exc:
                error = type(exc).__name__ + ": " + str(getattr(exc, "reason", exc))
            if error is None:
                self.state.record_attempt(d["id"], True, now, None, None)
                counts["delivered"] += 1
                continue
            attempts = d["attempts"] + 1
            if attempts >= self.max_attempts:
                self.state.record_attempt(d["id"], False, now, error, None)
                counts["failed"] += 1
                # The URL may embed credentials: log the webhook id, never the URL or secret.
                log.warning(
                    "webhook %s: giving up on alert %s after %d attempts: %s",
                    d["webhook_id"],
                    d["alert_id"],
                    attempts,
                    error,
                )
            else:
                next_try = now + self.backoff_s * 2 ** (attempts - 1)
                self.state.record_attempt(d["id"], False, now, error, next_try)
                counts["retrying"] += 1
        return counts

    def run_once(self, now: float | None = None) -> dict[str, int]:
        now = time.time() if now is None else now
        queued = self.collect(now)
        return {"queued": queued, **self.deliver(now)}

    def start(self, interval_s: float = 15.0) -> None:
        def loop() -> None:
            while not self._stop.wait(interval_s):
                try:
                    self.run_once()
                except Exception:  # keep notifying after a store outage
                    log.exception("webhook pass failed")

        self._thread = threading.Thread(target=loop, name="posture-webhooks", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=10)
