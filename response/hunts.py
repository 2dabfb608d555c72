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
import queue
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from detectors.hunt import Hunt, HuntError, field_warnings, load_hunt_engine
from detectors.hunt import new_hunt_id as new_hunt_id  # the province names its hunts
from detectors.sigma.loader import SHIPPED_RULES, RuleLoadError, load_pack, resolve_placeholders
from pipeline.control import Envelope, register, response_doc

log = logging.getLogger(__name__)

HUNT_REQUEST = register(
    "hunt.request",
    "run Sigma rules over the sensor's stored events for a time range; answer with a summary",
)

MAX_RULE_BYTES = 256 * 1024  # all rule texts of one request together
#: seconds between two ``running`` answers of a requested hunt (events scanned, percentage)
PROGRESS_EVERY_S = 5.0


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


def rule_texts(paths: Iterable[Path]) -> dict[str, str]:
    """The Sigma YAML a request carries: each file, and the ``.yml``/``.yaml`` files under
    each folder (name -> text). OSError when one cannot be read."""
    out: dict[str, str] = {}
    for path in paths:
        files = (
            sorted(f for f in path.rglob("*") if f.suffix in (".yml", ".yaml"))
            if path.is_dir()
            else [path]
        )
        for f in files:
            out[f"{len(out):03}-{f.name}"] = f.read_text(encoding="utf-8")
    return out


def send_hunt(
    publisher: Any, sensors: Iterable[str], payload: Mapping[str, Any]
) -> dict[str, dict[str, Any]]:
    """The province's side: sign the request (``request_payload``) for each sensor and publish
    it on the control topic (``pipeline.control_kafka.ControlPublisher``); the envelopes sent,
    by sensor. Raises what the publisher raises (Kafka unavailable) at the first failure."""
    return {s: publisher.send(HUNT_REQUEST, s, dict(payload)) for s in sensors}


def pack_rules(rules_dir: Path | None = None) -> list[dict[str, Any]]:
    """The alerting rules and correlations of a pack (the shipped one by default), for the
    province to choose from: id, title, level, techniques, file (relative to the pack)."""
    root = rules_dir or SHIPPED_RULES
    pack = load_pack([root], resolve_placeholders(None, None))
    out: list[dict[str, Any]] = []
    items = [(r.meta, "rule") for r in pack.rules if r.output]
    items += [(c.meta, "correlation") for c in pack.correlations]
    for meta, kind in items:
        path = Path(meta.path)
        out.append(
            {
                "id": meta.id,
                "title": meta.name,
                "level": meta.level,
                "kind": kind,
                "techniques": list(meta.techniques),
                "file": str(path.relative_to(root)) if path.is_relative_to(root) else path.name,
            }
        )
    return sorted(out, key=lambda r: (r["file"], r["title"]))


def check_rule_text(text: str) -> list[str]:
    """The titles of the alerting rules in ``text`` (Sigma YAML: what a province pastes),
    checked as a sensor will load them; Refused with the first problem otherwise."""
    if len(text.encode()) > MAX_RULE_BYTES:
        raise Refused(f"rules larger than {MAX_RULE_BYTES} bytes")
    with tempfile.TemporaryDirectory(prefix="icsmon-hunt-") as tmp:
        (Path(tmp) / "rule-000.yml").write_text(text, encoding="utf-8")
        try:
            engine = load_hunt_engine([], Path(tmp))
        except (RuleLoadError, HuntError) as exc:
            raise Refused(str(exc).replace(tmp + "/", "").splitlines()[0]) from None
    pack = engine.pack
    return [r.meta.name for r in pack.rules if r.output] + [c.meta.name for c in pack.correlations]


class Refused(ValueError):
    """A request the sensor will not serve; the message is the reason it answers with."""


class HuntRequestHandler:
    """The sensor's answer to ``hunt.request``: a capped hunt over its own store.

    ``store`` is the sensor's store (``count_events``, ``scan_events``, ``raised_check``);
    ``write`` takes each new alert (the sensor's sink: its store, and Kafka). Called directly
    it hunts in the caller's thread; a running sensor puts a :class:`HuntWorker` in front."""

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
        self._cancel = threading.Event()
        self.stats = {"hunts": 0, "refused": 0, "events": 0, "alerts": 0}
        self.progress_every_s = PROGRESS_EVERY_S

    def __call__(
        self, envelope: Envelope, started: Callable[[dict], None] | None = None
    ) -> list[dict]:
        """Hunt and answer; ``started`` is handed the ``running`` answer (with the number of
        events to scan) once the rules have loaded, and again with the progress while the
        hunt runs."""
        with self._lock:
            try:
                check_request(envelope.payload)
                fields = self._hunt(envelope, started)
            except Refused as exc:
                return [self.refusal(envelope, str(exc))]
            self.stats["hunts"] += 1
            return [self.answer(envelope, "delivered", fields)]

    def cancel(self) -> None:
        """Stop the hunt under way (the sensor is stopping): it answers with what it did."""
        self._cancel.set()

    def answer(
        self, envelope: Envelope, status: str, fields: Mapping[str, Any], suffix: str = ""
    ) -> dict:
        """A response to ``envelope``; ``suffix`` names an interim answer (``accepted``,
        ``running``) so that it is stored beside the final one, not instead of it."""
        doc = response_doc(envelope, self.sensor_id, status, fields={**self.common, **fields})
        if suffix:
            doc["event.id"] = f"{envelope.id}-{suffix}"
        return doc

    def refusal(self, envelope: Envelope, message: str, reason: str = "bad_request") -> dict:
        self.stats["refused"] += 1
        fields = {"icsmon.control.reason": reason, "icsmon.control.message": message}
        hunt_id = envelope.payload.get("hunt_id")
        if isinstance(hunt_id, str):
            fields["icsmon.hunt.id"] = hunt_id
        return self.answer(envelope, "refused", fields)

    def _hunt(self, envelope: Envelope, started: Callable[[dict], None] | None) -> dict[str, Any]:
        payload = envelope.payload
        hunt_id = str(payload["hunt_id"])
        texts = payload.get("rules") or {}
        ids = payload.get("rule_ids") or []
        since, until = payload.get("since"), payload.get("until")
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
            progress = None
            if started is not None:
                progress = self._running(envelope, hunt_id, started, since, until, max_events)
            written = 0
            raised = self.store.raised_check()  # the alerts stored before this hunt

            def write(alert: dict) -> None:
                nonlocal written
                if written < lim.max_alerts:
                    written += 1
                    self.write(alert)

            job = Hunt(
                engine,
                hunt_id,
                known=lambda a: raised(
                    str(a["event.id"]), str(a["rule.id"]), a.get("icsmon.alert.event_ids") or []
                ),
                write=write,
                max_events=max_events,
                max_seconds=max_seconds,
                progress=progress,
                cancelled=self._cancel.is_set,
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

    def _running(
        self,
        envelope: Envelope,
        hunt_id: str,
        send: Callable[[dict], None],
        since: float | None,
        until: float | None,
        max_events: int,
    ) -> Callable[[int, float | None], None]:
        """Send the ``running`` answer (events to scan), and return the hunt's progress
        callback, which sends it again with the events scanned so far and the percentage at
        most every ``progress_every_s`` seconds. Every copy has the same id: the store and
        Elasticsearch keep the latest, which the posture view shows."""
        total = min(self.store.count_events(since, until), max_events)

        def running(scanned: int) -> dict:
            fields = {
                "icsmon.hunt.id": hunt_id,
                "icsmon.hunt.total": total,
                "icsmon.hunt.scanned": scanned,
                "icsmon.hunt.percent": percent(scanned, total),
            }
            return self.answer(envelope, "running", fields, "running")

        send(running(0))
        last = time.monotonic()

        def progress(scanned: int, _ts: float | None) -> None:
            nonlocal last
            now = time.monotonic()
            if now - last >= self.progress_every_s and scanned < total:
                last = now
                send(running(scanned))

        return progress


def percent(scanned: int, total: int) -> float | None:
    """Events scanned of the events in range, in percent (one decimal); None when the range
    holds none."""
    return round(min(100.0, 100.0 * scanned / total), 1) if total > 0 else None


def check_request(payload: Mapping[str, Any]) -> None:
    """Refused (with the reason) when a request's payload is not one a sensor can serve;
    cheap: run before a request is queued."""
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
    for name in ("since", "until"):
        value = payload.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise Refused(f"{name} must be whole epoch seconds")


class HuntWorker:
    """Requested hunts off the control listener's thread, one at a time, in arrival order.

    Given to the Receiver in place of the handler: a request is checked at once, then queued
    (at most ``max_queued`` waiting; beyond that it is refused as ``busy``) and acknowledged
    with an ``accepted`` answer, so the listener goes on with the next control message while a
    hunt runs for minutes. The worker thread sends ``running`` when a hunt starts and the
    summary when it ends, through ``answer`` (the sensor's Kafka sink)."""

    type = HUNT_REQUEST

    def __init__(
        self,
        handler: HuntRequestHandler,
        answer: Callable[[dict], None],
        max_queued: int = 4,
    ) -> None:
        self.handler = handler
        self.send = answer
        self.max_queued = max_queued
        self._queue: queue.Queue[Envelope | None] = queue.Queue(maxsize=max_queued)
        self.stats = {"queued": 0, "busy": 0, "answers": 0, "errors": 0}
        self._thread = threading.Thread(target=self._run, name="icsmon-hunt", daemon=True)
        self._thread.start()

    def __call__(self, envelope: Envelope) -> list[dict]:
        try:
            check_request(envelope.payload)
        except Refused as exc:
            return [self.handler.refusal(envelope, str(exc))]
        try:
            self._queue.put_nowait(envelope)
        except queue.Full:
            self.stats["busy"] += 1
            message = f"busy: {self.max_queued} hunts already waiting; ask again later"
            return [self.handler.refusal(envelope, message, reason="busy")]
        self.stats["queued"] += 1
        hunt_id = envelope.payload["hunt_id"]
        return [
            self.handler.answer(
                envelope,
                "accepted",
                {"icsmon.hunt.id": hunt_id, "icsmon.hunt.queued": self._queue.qsize()},
                "accepted",
            )
        ]

    def _run(self) -> None:
        while True:
            envelope = self._queue.get()
            try:
                if envelope is None:
                    return
                self._hunt(envelope)
            finally:
                self._queue.task_done()

    def _hunt(self, envelope: Envelope) -> None:
        try:
            for doc in self.handler(envelope, started=self._send):
                self._send(doc)
        except Exception as exc:  # a bug answers with an error, never stops the sensor
            self.stats["errors"] += 1
            log.exception("hunt %s failed", envelope.payload.get("hunt_id"))
            self._send(
                self.handler.answer(
                    envelope,
                    "error",
                    {
                        "icsmon.hunt.id": envelope.payload.get("hunt_id"),
                        "icsmon.control.message": f"{type(exc).__name__}: {exc}",
                    },
                )
            )

    def _send(self, doc: dict) -> None:
        self.stats["answers"] += 1
        self.send(doc)

    def idle(self) -> bool:
        """Nothing queued and no hunt under way."""
        return self._queue.unfinished_tasks == 0

    def close(self, timeout: float = 10.0) -> None:
        """Stop: the hunt under way ends early (and answers with what it did); hunts still
        waiting are not started."""
        self.handler.cancel()
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
            self._queue.task_done()
        try:
            self._queue.put_nowait(None)
        except queue.Full:
            pass
        self._thread.join(timeout)


def _capped(asked: Any, cap: float) -> Any:
    if isinstance(asked, int) and not isinstance(asked, bool) and asked > 0:
        return min(asked, cap)
    return cap


#: how far a hunt got at a sensor, by the status of its answers
_FINAL = ("delivered", "refused", "error")
_RANK = {"accepted": 1, "running": 2, "delivered": 3, "refused": 3, "error": 3}


def hunt_state(responses: Iterable[Mapping[str, Any]], hunt_id: str) -> dict[str, dict]:
    """Per sensor (``observer.name``): where the hunt ``hunt_id`` stands from its answers
    (flat ``response`` documents of any back end): the furthest of ``accepted``, ``running``
    (with the events to scan) and the final one (``delivered`` with the summary, ``refused``
    with the reason, ``error``)."""
    furthest: dict[str, Mapping[str, Any]] = {}
    running: dict[str, Mapping[str, Any]] = {}  # the latest running answer (progress)
    for doc in responses:
        if doc.get("icsmon.control.type") != HUNT_REQUEST or doc.get("icsmon.hunt.id") != hunt_id:
            continue
        sensor = str(doc.get("observer.name") or "")
        status = str(doc.get("icsmon.control.status"))
        if status == "running":
            have_running = running.get(sensor)
            if have_running is None or (doc.get("icsmon.hunt.scanned") or 0) >= (
                have_running.get("icsmon.hunt.scanned") or 0
            ):
                running[sensor] = doc
        have = furthest.get(sensor)
        if have is None or _RANK.get(status, 0) >= _RANK.get(
            str(have.get("icsmon.control.status")), 0
        ):
            furthest[sensor] = doc
    return {
        sensor: {
            "status": doc.get("icsmon.control.status"),
            "site": doc.get("labels.site"),
            "at": doc.get("@timestamp"),
            "total": running.get(sensor, {}).get("icsmon.hunt.total"),
            "scanned": running.get(sensor, {}).get("icsmon.hunt.scanned"),
            "percent": running.get(sensor, {}).get("icsmon.hunt.percent"),
            "events": doc.get("icsmon.hunt.events"),
            "first": doc.get("icsmon.hunt.first"),
            "last": doc.get("icsmon.hunt.last"),
            "matches": doc.get("icsmon.hunt.matches"),
            "alerts": doc.get("icsmon.hunt.alerts"),
            "new": doc.get("icsmon.hunt.new"),
            "known": doc.get("icsmon.hunt.known"),
            "stopped": doc.get("icsmon.hunt.stopped"),
            "reason": doc.get("icsmon.control.reason"),
            "message": doc.get("icsmon.control.message"),
        }
        for sensor, doc in furthest.items()
    }


def sensor_progress(
    targets: Iterable[str],
    responses: Iterable[Mapping[str, Any]],
    hunt_id: str,
    expires_at: float,
    max_seconds: float,
    now: float,
) -> dict[str, dict]:
    """Per target sensor, what the posture view shows: ``requested`` (nothing back yet),
    ``accepted``, ``running``, ``done``, ``refused``, ``error``, or ``no_answer`` (nothing
    came back before the request expired, or a hunt that started never finished within its
    time cap after that)."""
    got = hunt_state(responses, hunt_id)
    out: dict[str, dict] = {}
    for sensor in targets:
        st = dict(got.get(sensor) or {"status": "requested"})
        status = st["status"]
        if status == "delivered":
            st["status"] = "done"
        elif status not in _FINAL:
            late = expires_at if status == "requested" else expires_at + max_seconds
            if now > late:
                st["status"] = "no_answer"
        out[sensor] = st
    return out
