"""The run's loop: every event from the engine to the detectors, the rollups and the sink,
and what the caller asked to see back (``icsmon.run`` loads the detectors and re-exports
these).

Compiled with mypyc when icsmon is installed (``sensor.COMPILED``): ``Run.process_batches``
runs for every event. The engine, the detectors and the sink are reached through protocols
(or ``Any``), and no detector's class is named here: a compiled module imports the modules
of the compiled classes it names when it loads, and a run without a baseline should not
pay for importing it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from detectors.detector import Detector
from sensor.heartbeat import Heartbeats
from sensor.rollups import Rollups

ASSET_FLUSH_INTERVAL = 60.0  # seconds of wall time between asset snapshots on long runs
TICK_INTERVAL = 5.0  # seconds of wall time between detector ticks on a live port


class RunEngine(Protocol):
    """What a run reads from its engine (``sensor.engine.Engine``, or
    ``sensor.workers.MergedEngine`` for capture workers)."""

    first_ts: float
    last_ts: float

    @property
    def stats(self) -> Mapping[str, int]: ...

    def changed_assets(self) -> list[dict]: ...


@dataclass
class Detectors:
    """The detectors a run applies to each event, in order."""

    parts: list[Detector] = field(default_factory=list)
    # how the Sigma engine was loaded (rules folder, site config, placeholders, pushed rules
    # folder), so a new one can be built with pushed rules while the sensor runs
    rule_source: dict[str, Any] = field(default_factory=dict)
    # part index -> a replacement built on another thread (pushed rules), put in place
    # between two events by ``swap``
    _next: dict[int, Detector] = field(default_factory=dict)
    # parts replaced so far (by ``swap``): the run's loop binds the parts' ``process`` once
    # and again when this changes
    swapped: int = 0

    def replace_later(self, index: int, part: Detector) -> None:
        """Ask for ``parts[index]`` to be replaced by ``part`` at the next ``swap`` (safe to
        call from another thread: one dictionary assignment)."""
        self._next[index] = part

    def swap(self) -> list[dict]:
        """Between events: put in place the parts replaced since the last call; the alerts
        the old parts still held (their de-duplication windows) are released, not lost."""
        alerts: list[dict] = []
        while self._next:
            index, part = self._next.popitem()
            old, self.parts[index] = self.parts[index], part
            self.swapped += 1
            alerts.extend(old.flush())
        return alerts

    def process(self, event: dict) -> list[dict]:
        alerts: list[dict] = []
        for part in self.parts:
            found = part.process(event)
            if found:
                alerts.extend(found)
        return alerts

    def flush(self) -> list[dict]:
        alerts: list[dict] = []
        for part in self.parts:
            alerts.extend(part.flush())
        return alerts

    def tick(self, now: float) -> list[dict]:
        """Time passes without traffic (live): detectors that watch for silence speak now."""
        alerts: list[dict] = []
        for part in self.parts:
            alerts.extend(part.tick(now))
        return alerts

    def notes(self) -> list[str]:
        """Lines for the end of a run that are not alerts (e.g. learned conversations that
        never appeared: docs in detectors/README.md, "Absence")."""
        return [line for part in self.parts if (line := part.absence_summary())]

    def findings(self, final: bool = False) -> list[dict]:
        """Finding documents that are new or changed since the last call."""
        out: list[dict] = []
        for part in self.parts:
            out.extend(part.changed_findings(final))
        return out

    def stats(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for part in self.parts:
            for key, value in part.stats.items():
                if isinstance(value, int):
                    out[f"{type(part).__name__.lower()}.{key}"] = value
        return out


class Run:
    """Feeds events through detectors into the sink; yields what the user asked to see.

    Time: a live run (``live``) uses wall time; a replay uses capture time (the newest packet
    the engine has seen), so the heartbeats of a replayed capture are the same every time.
    """

    def __init__(
        self,
        engine: RunEngine,
        detectors: Detectors,
        sink: Any | None,
        store_events: bool = True,
        live: bool = False,
        heartbeats: Heartbeats | None = None,
        source_counters: Callable[[], dict[str, int]] | None = None,
        on_alert: Callable[[dict], None] | None = None,
        rollups: Rollups | None = None,
    ) -> None:
        self.engine = engine
        self.detectors = detectors
        self.sink = sink
        self.store_events = store_events
        self.live = live  # wall time matters: tick the detectors that watch for silence
        self.heartbeats = heartbeats
        self.source_counters = source_counters  # the capture's own (kernel drops)
        self.on_alert = on_alert  # alerts raised between events (tick): printed by the caller
        self.rollups = rollups
        self.on_rollup: Callable[[dict], None] | None = None  # rollups closed by a tick
        # every alert, once written (a sensor keeps the alert's packets: sensor/evidence.py)
        self.on_alert_written: Callable[[dict], None] | None = None
        self.alerts = 0
        self.pdus = 0
        self._last_assets = time.monotonic()
        self._last_tick = time.monotonic()

    # -- time and state --------------------------------------------------------------------

    def now(self) -> float:
        return time.time() if self.live else self.engine.last_ts

    def counters(self) -> dict[str, int]:
        """What a heartbeat reports: the engine's counters, alerts, PDUs, the capture's."""
        stats = self.engine.stats
        out = {
            name: stats.get(name, 0)
            for name in ("packets", "bytes", "events", "anomalies", "flows")
        }
        out["alerts"] = self.alerts
        out["pdus"] = self.pdus
        if self.source_counters is not None:
            out["kernel_drops"] = self.source_counters().get("kernel_drops", 0)
        return out

    def _heartbeat(self, now: float) -> None:
        hb = self.heartbeats
        if hb is None or self.sink is None:
            return
        if hb.started is None:
            start = now if self.live else self.engine.first_ts
            if not start:  # a replay before its first packet: no capture time yet
                return
            # A replay learns its start time from its first packets: it states the
            # sensor's state before them (nothing seen yet), as a live start does.
            counters = self.counters() if self.live else {}
            self.sink.write("heartbeat", hb.start(start, counters))
            if hb.due(now):  # a replay that started on a busy capture: catch up once
                self.sink.write("heartbeat", hb.beat(now, self.counters()))
        elif hb.due(now):
            self.sink.write("heartbeat", hb.beat(now, self.counters()))

    def start(self) -> None:
        """A live run starts now: its first heartbeat says so before any packet."""
        if self.live:
            self._heartbeat(self.now())

    def tick(self) -> None:
        """Time passes (a live port calls this about once a second, traffic or not)."""
        for alert in self.detectors.swap():  # pushed rules take over between two events
            self._alert(alert)
            if self.on_alert is not None:
                self.on_alert(alert)
        now = self.now()
        self._heartbeat(now)
        if self.rollups is not None:
            for doc in self.rollups.advance(now):
                self._rollup(doc)
                if self.on_rollup is not None:
                    self.on_rollup(doc)
        mono = time.monotonic()
        if self.live and mono - self._last_tick > TICK_INTERVAL:
            self._last_tick = mono
            for alert in self.detectors.tick(now):
                self._alert(alert)
                if self.on_alert is not None:
                    self.on_alert(alert)
        if self.live and self.sink is not None and mono - self._last_assets > ASSET_FLUSH_INTERVAL:
            self._last_assets = mono
            self.write_assets()

    def stop(self) -> None:
        """A clean stop: the last heartbeat."""
        hb = self.heartbeats
        if hb is None or self.sink is None:
            return
        now = self.now()
        if hb.started is None:
            self._heartbeat(now)
        if hb.started is not None:
            self.sink.write("heartbeat", hb.stop(now, self.counters()))

    def _rollup(self, doc: dict) -> None:
        if self.sink is not None:
            self.sink.write("rollup", doc)

    def _alert(self, alert: dict) -> None:
        self.alerts += 1
        if self.sink is not None:
            self.sink.write("alert", alert)
        if self.on_alert_written is not None:
            self.on_alert_written(alert)

    # -- the loop --------------------------------------------------------------------------

    def process(
        self, events: Iterable[dict], want_events: bool, want_rollups: bool = False
    ) -> Iterator[dict]:
        """Yields alerts; or events (``want_events``); or rollups (``want_rollups``)."""
        return self.process_batches(_one_by_one(events), want_events, want_rollups)

    def process_batches(
        self, batches: Iterable[list[dict]], want_events: bool, want_rollups: bool = False
    ) -> Iterator[dict]:
        """:meth:`process` over the engine's events a block at a time
        (``Engine.replay_batches``): a sink that takes events by the block (the store's
        ``write_events``) is handed each block at once, before the block's other documents,
        with one lock and one size check for all of them; everything else is per event."""
        sink = self.sink
        detectors = self.detectors
        hb = self.heartbeats
        rollups = self.rollups
        want_alerts = not (want_events or want_rollups)
        # bound once: this loop runs for every event (a call less each, about 0.1 µs)
        write = sink.write if sink is not None and self.store_events else None
        write_block = getattr(sink, "write_events", None) if write is not None else None
        if write_block is not None:
            write = None
        monotonic = time.monotonic
        parts = detectors.parts  # swap() replaces a part in this same list
        # each part's process, bound once (a method looked up on every call costs more);
        # bound again when swap() replaced a part, between two blocks
        process: list[Callable[[dict], list[dict]]] = []
        swapped = -1
        live = self.live
        # the next heartbeat's time, read again after each heartbeat; one sent from
        # elsewhere (tick, between blocks) only moves it later, and _heartbeat checks it
        due = hb.next_due if hb is not None else math.inf
        engine = self.engine
        for batch in batches:
            if write_block is not None:
                write_block(batch)
            # a replay's clock (the engine's newest frame) stands still while its block's
            # events go by: read once a block; a live run reads the wall clock per event
            batch_now = 0.0 if live else engine.last_ts
            if swapped != detectors.swapped or len(process) != len(parts):
                swapped = detectors.swapped
                process = [part.process for part in parts]
            for event in batch:
                if write is not None:
                    write("event", event)
                self.pdus += _pdus(event)
                if rollups is not None:
                    for doc in rollups.add(event):
                        self._rollup(doc)
                        if want_rollups:
                            yield doc
                if hb is not None:
                    if not live:
                        if batch_now >= due:
                            self._heartbeat(batch_now)
                            due = hb.next_due
                    elif self.now() >= due:
                        self._heartbeat(self.now())
                        due = hb.next_due
                alerts: list[dict] | None = None  # made for the rare event that raises one
                for part_process in process:  # Detectors.process inlined
                    found = part_process(event)
                    if found:
                        if alerts is None:
                            alerts = []
                        alerts.extend(found)
                if want_events:
                    yield event
                if alerts is not None:
                    for alert in alerts:
                        self._alert(alert)
                        if want_alerts:
                            yield alert
            # wall-time chores, once a block (a block is a few milliseconds of work)
            mono = monotonic()
            if live and mono - self._last_tick > TICK_INTERVAL:
                self._last_tick = mono
                for alert in detectors.tick(time.time()):
                    self._alert(alert)
                    if want_alerts:
                        yield alert
            if sink is not None and mono - self._last_assets > ASSET_FLUSH_INTERVAL:
                self._last_assets = mono
                self.write_assets()
        for alert in detectors.flush():
            self._alert(alert)
            if want_alerts:
                yield alert
        if rollups is not None:  # end of input: the open intervals as they are
            for doc in rollups.flush():
                self._rollup(doc)
                if want_rollups:
                    yield doc
        self.write_assets(final=True)

    def write_assets(self, final: bool = False) -> None:
        if self.sink is None:
            return
        for asset in self.engine.changed_assets():
            self.sink.write("asset", asset)
        if _accepts(self.sink, "finding"):
            for finding in self.detectors.findings(final):
                self.sink.write("finding", finding)


def _accepts(sink: Any, kind: str) -> bool:
    """Whether ``sink`` takes documents of ``kind`` (a sink may declare ``kinds``; otherwise
    every registered kind)."""
    kinds = getattr(sink, "kinds", None)
    if kinds is None:
        from pipeline.kinds import names

        kinds = names()
    return kind in kinds


def _one_by_one(events: Iterable[dict]) -> Iterator[list[dict]]:
    """Each event as a block of its own, as it comes. A generator function, not a generator
    expression: compiled, the expression was consumed whole before the first block (a live
    port's events never end)."""
    for event in events:
        yield [event]


def _pdus(event: dict) -> int:
    """Protocol data units a transaction event stands for: its request and its answer."""
    pairing = event.get("ics.pairing")
    if pairing == "paired":
        return 2
    if pairing is not None:  # request-only, response-only
        return 1
    if event.get("event.action") == "anomaly":
        return 0
    return 1 if event.get("event.outcome") == "unknown" else 2  # no answer seen: the request
