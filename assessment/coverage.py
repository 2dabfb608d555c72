"""Coverage as compliance: which enterprises that must be monitored are.

A province keeps a list of key connected enterprises, and grade-3 enterprises must connect
to a platform at provincial level (CONTEXT: classification and grading). The registry marks
them (``key_connected: true`` or ``grade: 3``); every enterprise gets a state from its
sensors' heartbeats (``event.dataset = icsmon.heartbeat``: one per sensor per interval,
``icsmon.sensor.traffic`` = packets in that interval) and, where no heartbeat is kept, the
newest event the sensor sent:

| state | meaning |
| --- | --- |
| ``connected`` | a heartbeat (or an event) within ``silent_after`` and traffic in the latest interval |
| ``no-traffic`` | heartbeats arrive but the latest interval saw no packet: the sensor is up, its mirror port is not (or the plant is idle) |
| ``disconnected`` | nothing for longer than ``silent_after`` (default 15 minutes), or the latest heartbeat was the sensor's clean stop |
| ``stale`` | nothing for longer than ``stale_after`` (default 7 days): connected once, not any more |
| ``never-onboarded`` | no sensor registered, or none ever sent anything |

An enterprise takes the best state among its sensors. Coverage of a city or industry is the
share of its *required* enterprises that are ``connected``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sensor.timestamps import parse_timestamp

STATES = ("connected", "no-traffic", "disconnected", "stale", "never-onboarded")
SILENT_AFTER_S = 900.0
STALE_AFTER_S = 7 * 86400.0


@dataclass
class SensorSignal:
    name: str
    last_heartbeat: float | None = None
    traffic: int | None = None  # packets in the interval of the latest heartbeat
    last_event: float | None = None
    stopped: bool = False  # the latest heartbeat was a clean stop's


@dataclass
class EnterpriseInfo:
    id: str
    name: str = ""
    city: str = ""
    industry: str = ""
    grade: int | None = None
    key_connected: bool = False
    sensors: list[str] = field(default_factory=list)

    @property
    def required(self) -> bool:
        return self.key_connected or self.grade == 3


def signals_from_heartbeats(docs: Iterable[Mapping[str, Any]]) -> dict[str, SensorSignal]:
    """The newest heartbeat of each sensor (documents in the contract's shape)."""
    out: dict[str, SensorSignal] = {}
    for doc in docs:
        name = doc.get("observer.name")
        ts = parse_timestamp(doc.get("@timestamp"))
        if not name or ts is None:
            continue
        sig = out.setdefault(str(name), SensorSignal(str(name)))
        if sig.last_heartbeat is None or ts > sig.last_heartbeat:
            sig.last_heartbeat = ts
            traffic = doc.get("icsmon.sensor.traffic")
            sig.traffic = int(traffic) if isinstance(traffic, int | float) else None
            sig.stopped = doc.get("icsmon.sensor.reason") == "stop"
    return out


def sensor_state(
    sig: SensorSignal | None,
    now: float,
    silent_after_s: float = SILENT_AFTER_S,
    stale_after_s: float = STALE_AFTER_S,
) -> str:
    if sig is None:
        return "never-onboarded"
    seen = max((t for t in (sig.last_heartbeat, sig.last_event) if t is not None), default=None)
    if seen is None:
        return "never-onboarded"
    if now - seen > stale_after_s:
        return "stale"
    if now - seen > silent_after_s:
        return "disconnected"
    if sig.stopped and (sig.last_event is None or sig.last_event <= (sig.last_heartbeat or 0)):
        return "disconnected"  # it said goodbye: nothing watches the plant until it starts
    beating = sig.last_heartbeat is not None and now - sig.last_heartbeat <= silent_after_s
    recent_event = sig.last_event is not None and now - sig.last_event <= silent_after_s
    if beating and sig.traffic == 0 and not recent_event:
        return "no-traffic"
    return "connected"


def coverage(
    enterprises: Iterable[EnterpriseInfo],
    signals: Mapping[str, SensorSignal],
    now: float,
    silent_after_s: float = SILENT_AFTER_S,
    stale_after_s: float = STALE_AFTER_S,
) -> dict[str, Any]:
    rows = []
    for ent in enterprises:
        states = [
            sensor_state(signals.get(s), now, silent_after_s, stale_after_s) for s in ent.sensors
        ]
        state = min(states, key=STATES.index) if states else "never-onboarded"
        rows.append(
            {
                "enterprise": ent.id,
                "name": ent.name,
                "city": ent.city,
                "industry": ent.industry,
                "grade": ent.grade,
                "key_connected": ent.key_connected,
                "required": ent.required,
                "state": state,
                "sensors": {s: states.count(s) for s in STATES if states.count(s)},
            }
        )
    rows.sort(key=lambda r: (not r["required"], STATES.index(r["state"]) * -1, r["enterprise"]))

    def group(key: str) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for r in rows:
            g = out.setdefault(
                r[key] or "?", {"required": 0, "connected": 0, "enterprises": 0, "ratio": None}
            )
            g["enterprises"] += 1
            if r["required"]:
                g["required"] += 1
                g["connected"] += r["state"] == "connected"
        for g in out.values():
            g["ratio"] = round(g["connected"] / g["required"], 3) if g["required"] else None
        return dict(sorted(out.items()))

    required = [r for r in rows if r["required"]]
    return {
        "by_state": {s: sum(1 for r in rows if r["state"] == s) for s in STATES},
        "required": len(required),
        "required_connected": sum(1 for r in required if r["state"] == "connected"),
        "ratio": (
            round(sum(1 for r in required if r["state"] == "connected") / len(required), 3)
            if required
            else None
        ),
        "by_city": group("city"),
        "by_industry": group("industry"),
        "enterprises": rows,
    }
