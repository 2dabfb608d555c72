"""Sensor heartbeats: the sensor's state as a document, once per interval, at start and at a
clean stop (docs/schema.md, "Heartbeat").

The centre tells "connected, no traffic" (heartbeats with ``icsmon.sensor.traffic`` = 0)
from "disconnected" (no heartbeats) and sees a sensor's health (kernel drops, anomalies)
without reading its events. Time is the caller's clock: wall time for a live port, capture
time for a replay (so replaying a capture twice gives the same heartbeats, same ids).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from sensor.digests import blake2b
from sensor.events import ECS_VERSION, Context

DEFAULT_INTERVAL_S = 60.0
#: the counters a heartbeat carries, totals since the sensor started
COUNTERS = ("packets", "bytes", "pdus", "events", "alerts", "anomalies", "kernel_drops", "flows")


class Heartbeats:
    """Builds a sensor's heartbeats; the caller decides when (``start``, ``due``, ``stop``)."""

    def __init__(
        self,
        ctx: Context,
        interval_s: float = DEFAULT_INTERVAL_S,
        version: str = "",
        content_version: str = "",
    ) -> None:
        if not interval_s > 0:
            raise ValueError(f"heartbeat interval must be positive, not {interval_s!r}")
        self.ctx = ctx
        self.interval_s = float(interval_s)
        self.version = version
        self.content_version = content_version
        self.started: float | None = None
        self.next_due = -math.inf  # the start heartbeat is due at once
        self.sent = 0
        self._last_packets = 0

    def due(self, now: float) -> bool:
        return now >= self.next_due

    def start(self, now: float, counters: Mapping[str, int]) -> dict:
        self.started = now
        return self._beat(now, counters, "start")

    def beat(self, now: float, counters: Mapping[str, int]) -> dict:
        """The interval's heartbeat (one, however many intervals passed since the last)."""
        return self._beat(now, counters, "interval")

    def stop(self, now: float, counters: Mapping[str, int]) -> dict:
        doc = self._beat(now, counters, "stop")
        self.next_due = math.inf
        return doc

    def _beat(self, now: float, counters: Mapping[str, int], reason: str) -> dict:
        if self.started is None:
            self.started = now
        # aligned to multiples of the interval: heartbeats of many sensors line up in time
        self.next_due = (math.floor(now / self.interval_s) + 1) * self.interval_s
        ctx = self.ctx
        packets = int(counters.get("packets", 0))
        doc: dict = {
            "@timestamp": float(now),
            "ecs.version": ECS_VERSION,
            "event.kind": "state",
            "event.category": ["host"],
            "event.type": ["info"],
            "event.dataset": "icsmon.heartbeat",
            "event.action": "heartbeat",
            "event.module": "icsmon",
            "event.id": blake2b(
                f"{ctx.site}|{ctx.observer}|heartbeat|{now!r}|{reason}".encode(), digest_size=10
            ).hexdigest(),
            "observer.name": ctx.observer,
            "observer.type": "sensor",
            "observer.product": "icsmon",
            "observer.version": self.version,
        }
        if ctx.site:
            doc["labels.site"] = ctx.site
        if ctx.organization:
            doc["organization.id"] = ctx.organization
        for name in COUNTERS:
            doc[f"icsmon.sensor.{name}"] = int(counters.get(name, 0))
        doc["icsmon.sensor.uptime_s"] = round(max(0.0, now - self.started), 3)
        doc["icsmon.sensor.traffic"] = max(0, packets - self._last_packets)
        doc["icsmon.sensor.interval_s"] = self.interval_s
        doc["icsmon.sensor.started"] = float(self.started)
        doc["icsmon.sensor.reason"] = reason
        doc["icsmon.sensor.content_version"] = self.content_version
        self._last_packets = packets
        self.sent += 1
        return doc
