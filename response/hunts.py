"""Hunts the province asks sensors for: "has this already happened here?".

The request is a signed ``hunt.request`` envelope (``pipeline.control``) keyed by sensor: the
rules to run (Sigma YAML text, a new rule the sensor may not have yet, and/or ids of rules in
the sensor's own pack), a time range (whole epoch seconds) and what the province allows it to
cost (events, seconds). The sensor's :class:`HuntRequestHandler` runs the hunt over its own
store with the stream's engine (``detectors.hunt``), bounded by its own caps whatever the
request asks (events, wall time, held alerts and correlation groups, alerts written), writes
the alerts it raises like any other alert (they reach the province through Kafka, marked with
the hunt's id), and answers with one ``response`` document: the summary (status, events
scanned, time covered, matches, alerts raised, new and already raised, why it stopped early).

The Receiver refuses, before any handler runs, what the province did not sign (unsigned,
tampered, expired, replayed, addressed to another sensor); the handler refuses a request it
cannot serve (no rules, a rule that does not load, rules too large) with the reason.

At the centre, :func:`hunt_state` turns the responses of one hunt into its progress per
sensor.
"""

from __future__ import annotations

import logging
import tempfile
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from detectors.hunt import Hunt, HuntError, field_warnings, load_hunt_engine
from detectors.sigma.loader import RuleLoadError
from pipeline.control import Envelope, register, response_doc

log = logging.getLogger(__name__)

HUNT_REQUEST = register(
    "hunt.request",
    "run Sigma rules over the sensor's stored events for a time range; answer with a summary",
)

MAX_RULE_BYTES = 256 * 1024  # all rule texts of one request together


@dataclass(frozen=True, slots=True)
class HuntLimits:
    """What one requested hunt may cost at most (the sensor's caps; a request may ask for
    less, never more)."""

    max_events: int = 10_000_000
    max_seconds: float = 600.0
    max_alerts: int = 10_000  # written; the summary still counts the rest
    max_pending_alerts: int = 2_000  # the engine's held alerts (memory)
    max_correlation_groups: int = 5_000  # the engine's correlation groups (memory)


def request_payload(
    hunt_id: str,
    rules: Mapping[str, str] | None = None,
    rule_ids: Iterable[str] = (),
    since: float | None = None,
    until: float | None = None,
    max_events: int | None = None,
    max_seconds: int | None = None,
) -> dict[str, Any]:
    """The payload of a ``hunt.request``: ``rules`` maps a file name to Sigma YAML text."""
    payload: dict[str, Any] = {"hunt_id": hunt_id}
    if rules:
        payload["rules"] = dict(rules)
    ids = [str(r) for r in rule_ids]
    if ids:
        payload["rule_ids"] = ids
    for key, value in (
        ("since", since),
        ("until", until),
        ("max_events", max_events),
        ("max_seconds", max_seconds),
    ):
        if value is not None:
            payload[key] = int(value)  # envelopes carry no floats
    return payload


class Refused(ValueError):
    """A request the sensor will not serve; the message is the reason it answers with."""


class HuntRequestHandler:
    """The sensor's answer to ``hunt.request``: a capped hunt over its own store.

    ``store`` is the sensor's store (``count_events``, ``scan_events``, ``alert_raised``);
    ``write`` takes each new alert (the sensor's sink: its store, and Kafka)."""

    type = HUNT_REQUEST

    def __init__(
        self,
        sensor_id: str,
        store: Any,
        write: Callable[[dict], None],
        limits: HuntLimits | None = None,
        rules_dir: Path | None = None,
        common: Mapping[str, Any] | None = None,
        site_config: Path | None = None,
    ) -> None:
        self.sensor_id = sensor_id
        self.store = store
        self.write = write
        self.limits = limits or HuntLimits()
        self.rules_dir = rules_dir
        self.site_config = site_config
        self.common = dict(common or {})
        self._lock = threading.Lock()  # one hunt at a time: the store and the CPU are shared
        self.stats = {"hunts": 0, "refused": 0, "events": 0, "alerts": 0}

    def __call__(self, envelope: Envelope) -> list[dict]:
        with self._lock:
            try:
                fields = self._hunt(envelope.payload)
            except Refused as exc:
                self.stats["refused"] += 1
                hunt_id = envelope.payload.get("hunt_id")
                refusal = {
                    "icsmon.control.reason": "bad_request",
                    "icsmon.control.message": str(exc),
                }
                if isinstance(hunt_id, str):
                    refusal["icsmon.hunt.id"] = hunt_id
                return [self._answer(envelope, "refused", refusal)]
            self.stats["hunts"] += 1
            return [self._answer(envelope, "delivered", fields)]

    def _answer(self, envelope: Envelope, status: str, fields: dict[str, Any]) -> dict:
        return response_doc(envelope, self.sensor_id, status, fields={**self.common, **fields})

    def _hunt(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        hunt_id = payload.get("hunt_id")
        if not isinstance(hunt_id, str) or not hunt_id or len(hunt_id) > 128:
            raise Refused("no usable hunt_id")
        texts = payload.get("rules") or {}
        ids = payload.get("rule_ids") or []
        if not isinstance(texts, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in texts.items()
        ):
            raise Refused("rules must map file names to Sigma YAML text")
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise Refused("rule_ids must be a list of rule ids")
        if not texts and not ids:
            raise Refused("no rules to run")
        if sum(len(v.encode()) for v in texts.values()) > MAX_RULE_BYTES:
            raise Refused(f"rules larger than {MAX_RULE_BYTES} bytes")
        since, until = payload.get("since"), payload.get("until")
        for name, value in (("since", since), ("until", until)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                raise Refused(f"{name} must be whole epoch seconds")
        lim = self.limits
        max_events = _capped(payload.get("max_events"), lim.max_events)
        max_seconds = _capped(payload.get("max_seconds"), lim.max_seconds)
        with tempfile.TemporaryDirectory(prefix="icsmon-hunt-") as tmp:
            folder = self.rules_dir  # rule ids of the sensor's own pack (None: the shipped one)
            if texts:  # new rules: the ids, if any, select among them
                folder = Path(tmp)
                for n, text in enumerate(texts.values()):
                    (folder / f"rule-{n:03}.yml").write_text(text, encoding="utf-8")
            try:
                engine = load_hunt_engine(
                    ids,
                    folder,
                    self.site_config,
                    max_pending_alerts=lim.max_pending_alerts,
                    max_correlation_groups=lim.max_correlation_groups,
                )
            except (RuleLoadError, HuntError) as exc:
                raise Refused(str(exc).splitlines()[0]) from None
            warnings = field_warnings(engine.pack)[:10]
            written = 0

            def write(alert: dict) -> None:
                nonlocal written
                if written < lim.max_alerts:
                    written += 1
                    self.write(alert)

            job = Hunt(
                engine,
                hunt_id,
                known=lambda a: self.store.alert_raised(
                    str(a["event.id"]), str(a["rule.id"]), a.get("icsmon.alert.event_ids") or []
                ),
                write=write,
                max_events=max_events,
                max_seconds=max_seconds,
            )
            summary = job.run(self.store.scan_events(since, until))
        self.stats["events"] += summary.events
        self.stats["alerts"] += summary.new
        stopped = summary.stopped
        if summary.new > written:
            stopped = (stopped + "; " if stopped else "") + f"alerts written capped at {written}"
        doc = summary.as_doc()
        return {
            "icsmon.hunt.id": hunt_id,
            "icsmon.hunt.events": summary.events,
            "icsmon.hunt.first": summary.first,
            "icsmon.hunt.last": summary.last,
            "icsmon.hunt.matches": summary.matches,
            "icsmon.hunt.alerts": summary.alerts,
            "icsmon.hunt.new": summary.new,
            "icsmon.hunt.known": summary.known,
            "icsmon.hunt.written": written,
            "icsmon.hunt.rules": summary.rules,
            "icsmon.hunt.elapsed_s": doc["elapsed_s"],
            "icsmon.hunt.stopped": stopped,
            "icsmon.hunt.warnings": warnings,
        }


def _capped(asked: Any, cap: float) -> Any:
    if isinstance(asked, int) and not isinstance(asked, bool) and asked > 0:
        return min(asked, cap)
    return cap


def hunt_state(responses: Iterable[Mapping[str, Any]], hunt_id: str) -> dict[str, dict]:
    """Per sensor (``observer.name``): the answer to the hunt ``hunt_id`` (flat ``response``
    documents of any back end), as the posture view shows it."""
    out: dict[str, dict] = {}
    for doc in responses:
        if doc.get("icsmon.control.type") != HUNT_REQUEST or doc.get("icsmon.hunt.id") != hunt_id:
            continue
        sensor = str(doc.get("observer.name") or "")
        out[sensor] = {
            "status": doc.get("icsmon.control.status"),
            "site": doc.get("labels.site"),
            "events": doc.get("icsmon.hunt.events"),
            "first": doc.get("icsmon.hunt.first"),
            "last": doc.get("icsmon.hunt.last"),
            "matches": doc.get("icsmon.hunt.matches"),
            "alerts": doc.get("icsmon.hunt.alerts"),
            "new": doc.get("icsmon.hunt.new"),
            "stopped": doc.get("icsmon.hunt.stopped"),
            "message": doc.get("icsmon.control.message"),
        }
    return out
