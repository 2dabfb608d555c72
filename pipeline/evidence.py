"""Evidence on demand: what the province asks a sensor for about one alert, what the sensor
answers, and how the province reads the answer back (docs/schema.md, "Response").

The request (an ``evidence.request`` envelope, ``pipeline.control``) names the alert, its
flow (community id, addresses and ports) and a time window, and may ask for less than the
sensor's caps. Times are whole epoch seconds (envelopes carry no floats).

The sensor's :class:`EvidenceHandler` answers from what it keeps at the edge:

- the flow's events in the window from its own store (oldest first, at most
  ``max_events``);
- the flow's packets: the alert's kept capture (``sensor.evidence.AlertCaptures``, the flow
  around the alert) when there is one, else what the packet ring still holds of the flow in
  the window, at most ``max_pcap_bytes`` (frames past the cap are left out, and the answer
  says so).

The answer is a few ``response`` documents: part 0 says what came (status, counts, the pcap's
size and SHA-256, what was left out and why), then parts of events and parts of the pcap,
each at most ``kinds.RESPONSE_PART_BYTES`` before encoding, so every message stays far
below Kafka's 1 MiB and the indexer's cap. A request the sensor cannot serve at all is
answered ``refused`` with the reason.

At the centre, :func:`evidence_state` turns the parts (any back end's ``responses()``) into
the request's state, and :func:`pcap_of` puts the pcap back together, checking every part
is there and the digest matches.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.control import EVIDENCE_REQUEST, Envelope, response_doc
from pipeline.kinds import RESPONSE_PART_BYTES
from pipeline.query import AlertFilter
from sensor.evidence import AlertCaptures, PacketRing, flow_key, pcap_bytes
from sensor.timestamps import parse_timestamp

log = logging.getLogger(__name__)

#: the states of a request, as the province shows them
STATES = ("requested", "delivered", "refused", "expired")


@dataclass(frozen=True, slots=True)
class EvidenceLimits:
    """What one request may return (the sensor's caps; a request may ask for less)."""

    max_events: int = 2000
    max_pcap_bytes: int = 8 << 20
    max_window_s: float = 3600.0


# -- the request (province) -------------------------------------------------------------------


def request_payload(
    alert: Mapping[str, Any],
    before_s: float = 60.0,
    after_s: float = 60.0,
    max_events: int | None = None,
    max_pcap_bytes: int | None = None,
) -> dict[str, Any]:
    """The payload of an ``evidence.request`` for one alert (flat document): its id, flow
    and the window from ``before_s`` before its first event to ``after_s`` after its last."""
    start = parse_timestamp(alert.get("event.start")) or parse_timestamp(alert.get("@timestamp"))
    end = parse_timestamp(alert.get("event.end")) or start
    if start is None or end is None:
        raise ValueError("the alert has no usable time")
    payload: dict[str, Any] = {
        "alert_id": str(alert.get("event.id") or ""),
        "start": math.floor(start - before_s),
        "end": math.ceil(end + after_s),
    }
    flow = {
        "community_id": alert.get("network.community_id"),
        "source_ip": alert.get("source.ip"),
        "source_port": alert.get("source.port"),
        "destination_ip": alert.get("destination.ip"),
        "destination_port": alert.get("destination.port"),
        "protocol": alert.get("network.protocol"),
    }
    payload["flow"] = {
        k: v for k, v in flow.items() if isinstance(v, str) or (type(v) is int and v >= 0)
    }
    if max_events is not None:
        payload["max_events"] = int(max_events)
    if max_pcap_bytes is not None:
        payload["max_pcap_bytes"] = int(max_pcap_bytes)
    return payload


# -- the answer (sensor) ----------------------------------------------------------------------


class EvidenceHandler:
    """The sensor's handler of ``evidence.request`` (give it to ``Receiver.on``)."""

    type = EVIDENCE_REQUEST

    def __init__(
        self,
        sensor_id: str,
        events: Any | None,
        ring: PacketRing | None = None,
        captures: AlertCaptures | None = None,
        limits: EvidenceLimits | None = None,
        common: Mapping[str, Any] | None = None,
        clock: Callable[[], float] = time.time,
        linktype: int = 1,
    ) -> None:
        self.sensor_id = sensor_id
        self.events = events  # a query back end with search_events (the sensor's own store)
        self.ring = ring
        self.captures = captures
        self.limits = limits or EvidenceLimits()
        self.common = dict(common or {})
        self.clock = clock
        self.linktype = linktype
        self.stats = {"requests": 0, "refused": 0, "events_sent": 0, "pcap_bytes_sent": 0}

    def __call__(self, env: Envelope) -> list[dict[str, Any]]:
        self.stats["requests"] += 1
        try:
            req = self._parse(env.payload)
        except ValueError as exc:
            return [self._refuse(env, "bad_request", str(exc))]
        if self.events is None and self.ring is None and self.captures is None:
            return [self._refuse(env, "no_evidence", "this sensor keeps no events or packets")]
        notes: list[str] = []
        events, total = self._events(req, notes)
        pcap, pcap_info = self._pcap(req, notes)
        return self._answer(env, req, events, total, pcap, pcap_info, notes)

    # -- the request's fields --------------------------------------------------------------

    def _parse(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        alert_id = payload.get("alert_id")
        start, end = payload.get("start"), payload.get("end")
        flow = payload.get("flow")
        if not isinstance(alert_id, str) or not alert_id or len(alert_id) > 200:
            raise ValueError("alert_id must be a short text")
        if type(start) is not int or type(end) is not int or end < start:
            raise ValueError("start and end must be epoch seconds, start first")
        if not isinstance(flow, dict):
            raise ValueError("flow must be an object")
        limits = self.limits
        max_events = _cap(payload.get("max_events"), limits.max_events)
        max_pcap = _cap(payload.get("max_pcap_bytes"), limits.max_pcap_bytes)
        window = float(end - start)
        if window > limits.max_window_s:  # the alert's neighbourhood: cut around the middle
            middle = (start + end) / 2
            start = math.floor(middle - limits.max_window_s / 2)
            end = math.ceil(middle + limits.max_window_s / 2)
        community = flow.get("community_id")
        key = flow_key(
            flow.get("source_ip"),
            flow.get("destination_ip"),
            flow.get("source_port"),
            flow.get("destination_port"),
        )
        return {
            "alert_id": alert_id,
            "start": start,
            "end": end,
            "cut": window > limits.max_window_s,
            "community_id": community if isinstance(community, str) and community else None,
            "flow": key,
            "max_events": max_events,
            "max_pcap_bytes": max_pcap,
        }

    # -- events ----------------------------------------------------------------------------

    def _events(self, req: dict[str, Any], notes: list[str]) -> tuple[list[dict], int]:
        if req["cut"]:
            notes.append(f"window cut to {self.limits.max_window_s:.0f} s")
        if self.events is None:
            notes.append("no events: this sensor keeps no store")
            return [], 0
        if req["community_id"] is None:
            notes.append("no events: the alert names no flow (community id)")
            return [], 0
        if req["max_events"] == 0:
            return [], 0
        flush = getattr(self.events, "flush", None)
        if flush is not None:
            flush()  # the newest events are in the writer's batch still
        flt = AlertFilter(
            since=float(req["start"]),
            until=float(req["end"]) + 1,
            community_id=req["community_id"],
            limit=req["max_events"],
        )
        total, page = self.events.search_events(flt)
        page.reverse()  # oldest first, as they happened
        if total > len(page):
            notes.append(f"events: the newest {len(page)} of {total} sent")
        return page, int(total)

    # -- packets ---------------------------------------------------------------------------

    def _pcap(self, req: dict[str, Any], notes: list[str]) -> tuple[bytes, dict[str, Any]]:
        cap = req["max_pcap_bytes"]
        info: dict[str, Any] = {"source": "none", "frames": 0, "truncated": False}
        if cap == 0:
            return b"", info
        alert_id = req["alert_id"]
        if self.captures is not None:
            path: Path = self.captures.path(alert_id)
            if path.exists():
                data = path.read_bytes()
                info["source"] = "alert-capture"
                info["frames"] = _count_records(data)
                if len(data) > cap:
                    data = _cut_pcap(data, cap)
                    info["truncated"] = True
                    notes.append(f"capture cut to {len(data)} bytes")
                return data, info
            if self.captures.pending(alert_id):
                notes.append("the alert's capture is still being recorded: packets from the ring")
        if self.ring is None:
            notes.append("no packets: this sensor keeps no packet ring")
            return b"", info
        if req["flow"] is None:
            notes.append("no packets: the alert names no addresses and ports")
            return b"", info
        frames = self.ring.flow_frames(req["flow"], float(req["start"]), float(req["end"]) + 1)
        if not frames:
            span = self.ring.span()
            held = (
                f" (the ring holds {_iso(span[0])} to {_iso(span[1])})"
                if span
                else " (the ring is empty)"
            )
            notes.append("no packets of this flow in the window" + held)
            return b"", info
        kept, size = [], 24
        for frame in frames:
            size += 16 + len(frame[2])
            if size > cap:
                info["truncated"] = True
                notes.append(f"packets: the first {len(kept)} of {len(frames)} frames sent")
                break
            kept.append(frame)
        info["source"] = "ring"
        info["frames"] = len(kept)
        return pcap_bytes(kept, frames[0][1]), info

    # -- the documents ---------------------------------------------------------------------

    def _refuse(self, env: Envelope, reason: str, message: str) -> dict[str, Any]:
        self.stats["refused"] += 1
        return response_doc(
            env,
            self.sensor_id,
            "refused",
            fields={
                **self.common,
                "icsmon.control.reason": reason,
                "icsmon.control.message": message,
                "icsmon.evidence.alert_id": str(env.payload.get("alert_id") or "")[:200],
            },
            now=self.clock(),
        )

    def _answer(
        self,
        env: Envelope,
        req: dict[str, Any],
        events: list[dict],
        total: int,
        pcap: bytes,
        pcap_info: dict[str, Any],
        notes: list[str],
    ) -> list[dict[str, Any]]:
        event_parts = _event_parts(events)
        pcap_parts = [
            pcap[i : i + RESPONSE_PART_BYTES] for i in range(0, len(pcap), RESPONSE_PART_BYTES)
        ]
        parts = 1 + len(event_parts) + len(pcap_parts)
        now = self.clock()
        head = {
            **self.common,
            "icsmon.evidence.alert_id": req["alert_id"],
            "icsmon.evidence.start": _iso(req["start"]),
            "icsmon.evidence.end": _iso(req["end"]),
            "icsmon.evidence.events_total": total,
            "icsmon.evidence.events_sent": len(events),
            "icsmon.evidence.events_truncated": total > len(events),
            "icsmon.evidence.pcap_bytes": len(pcap),
            "icsmon.evidence.pcap_frames": pcap_info["frames"],
            "icsmon.evidence.pcap_source": pcap_info["source"],
            "icsmon.evidence.pcap_truncated": pcap_info["truncated"],
        }
        if pcap:
            head["icsmon.evidence.pcap_sha256"] = hashlib.sha256(pcap).hexdigest()
        if notes:
            head["icsmon.control.message"] = "; ".join(notes)
        out = [response_doc(env, self.sensor_id, "delivered", 0, parts, head, now=now)]
        common = {**self.common, "icsmon.evidence.alert_id": req["alert_id"]}
        chunks = [("icsmon.evidence.events", chunk) for chunk in event_parts] + [
            ("icsmon.evidence.pcap", base64.b64encode(chunk).decode()) for chunk in pcap_parts
        ]
        for part, (field, value) in enumerate(chunks, start=1):
            out.append(
                response_doc(
                    env, self.sensor_id, "delivered", part, parts, {**common, field: value}, now=now
                )
            )
        self.stats["events_sent"] += len(events)
        self.stats["pcap_bytes_sent"] += len(pcap)
        return out


def _cap(asked: Any, limit: int) -> int:
    """What a request asks for, never above the sensor's limit (absent or odd: the limit)."""
    if type(asked) is int and asked >= 0:
        return min(asked, limit)
    return limit


def _event_parts(events: list[dict]) -> list[list[dict]]:
    """Events in parts of at most RESPONSE_PART_BYTES of JSON each (an event bigger than
    that alone is left out: the sensor's own events are far smaller)."""
    parts: list[list[dict]] = []
    current: list[dict] = []
    size = 0
    for ev in events:
        n = len(json.dumps(ev, default=str)) + 1
        if n > RESPONSE_PART_BYTES:
            continue
        if size + n > RESPONSE_PART_BYTES and current:
            parts.append(current)
            current, size = [], 0
        current.append(ev)
        size += n
    if current:
        parts.append(current)
    return parts


def _count_records(data: bytes) -> int:
    n, off = 0, 24
    while off + 16 <= len(data):
        incl = int.from_bytes(data[off + 8 : off + 12], "little")
        off += 16 + incl
        n += 1
    return n


def _cut_pcap(data: bytes, cap: int) -> bytes:
    """The whole records of a pcap (written by the sensor: little-endian) within ``cap``."""
    off = 24
    while off + 16 <= len(data):
        incl = int.from_bytes(data[off + 8 : off + 12], "little")
        if off + 16 + incl > cap:
            break
        off += 16 + incl
    return data[:off]


def _iso(ts: float) -> str:
    from sensor.events import iso_timestamp

    return iso_timestamp(float(ts))


# -- the answer read back (province) ------------------------------------------------------------


def evidence_state(
    request: Mapping[str, Any], parts: list[dict[str, Any]], now: float | None = None
) -> dict[str, Any]:
    """A request's state from the parts of its answer (any order, payload or not).

    ``request``: ``id``, ``target`` (the sensor asked) and ``expires_at``. Parts from any
    other sensor than the one asked are ignored. State: ``delivered`` (with counts, and
    ``complete`` when every part is there), ``refused`` (with the reason), ``expired`` (no
    answer before ``expires_at``) or ``requested``.
    """
    now = time.time() if now is None else now
    mine = [p for p in parts if p.get("observer.name") == request.get("target")]
    head = next((p for p in mine if p.get("icsmon.control.part") == 0), None)
    out: dict[str, Any] = {"state": "requested", "reason": None, "message": None}
    if head is not None:
        status = head.get("icsmon.control.status")
        out["answered_at"] = head.get("@timestamp")
        out["message"] = head.get("icsmon.control.message")
        if status == "delivered":
            expected = int(head.get("icsmon.control.parts") or 1)
            have = {p.get("icsmon.control.part") for p in mine}
            out.update(
                state="delivered",
                parts=expected,
                parts_received=len(have & set(range(expected))),
                complete=have >= set(range(expected)),
                events_total=head.get("icsmon.evidence.events_total", 0),
                events_sent=head.get("icsmon.evidence.events_sent", 0),
                events_truncated=bool(head.get("icsmon.evidence.events_truncated")),
                pcap_bytes=head.get("icsmon.evidence.pcap_bytes", 0),
                pcap_frames=head.get("icsmon.evidence.pcap_frames", 0),
                pcap_source=head.get("icsmon.evidence.pcap_source"),
                pcap_sha256=head.get("icsmon.evidence.pcap_sha256"),
                pcap_truncated=bool(head.get("icsmon.evidence.pcap_truncated")),
                window={
                    "start": head.get("icsmon.evidence.start"),
                    "end": head.get("icsmon.evidence.end"),
                },
            )
        else:  # refused, or a handler's error
            out["state"] = "refused"
            out["reason"] = head.get("icsmon.control.reason") or status
        return out
    if now > float(request.get("expires_at") or 0):
        out["state"] = "expired"
        out["reason"] = "no answer from the sensor before the request expired"
    return out


def events_of(request: Mapping[str, Any], parts: list[dict[str, Any]]) -> list[dict]:
    """The events of a delivered answer, in order."""
    mine = sorted(
        (p for p in parts if p.get("observer.name") == request.get("target")),
        key=lambda p: p.get("icsmon.control.part") or 0,
    )
    out: list[dict] = []
    for p in mine:
        chunk = p.get("icsmon.evidence.events")
        if isinstance(chunk, list):
            out.extend(e for e in chunk if isinstance(e, dict))
    return out


class PcapUnavailable(Exception):
    """No pcap to give: none was sent, parts are missing, or the digest does not match."""


def pcap_of(
    request: Mapping[str, Any], parts: list[dict[str, Any]], max_bytes: int = 64 << 20
) -> bytes:
    """The pcap of a delivered answer, checked: every part present, size and SHA-256 as
    announced, at most ``max_bytes``."""
    state = evidence_state(request, parts, now=0)
    if state["state"] != "delivered" or not state.get("pcap_bytes"):
        raise PcapUnavailable("no packets in this answer")
    if state["pcap_bytes"] > max_bytes:
        raise PcapUnavailable(f"the capture is larger than {max_bytes} bytes")
    if not state["complete"]:
        raise PcapUnavailable(
            f"{state['parts_received']} of {state['parts']} parts received so far"
        )
    chunks = sorted(
        (
            (p.get("icsmon.control.part") or 0, p["icsmon.evidence.pcap"])
            for p in parts
            if p.get("observer.name") == request.get("target")
            and isinstance(p.get("icsmon.evidence.pcap"), str)
        ),
        key=lambda x: x[0],
    )
    data = b"".join(base64.b64decode(c) for _, c in chunks)
    if len(data) != state["pcap_bytes"] or hashlib.sha256(data).hexdigest() != state["pcap_sha256"]:
        raise PcapUnavailable("the capture's parts do not add up to what the sensor announced")
    return data
