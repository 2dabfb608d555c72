"""Where documents go: the contract shared by the embedded store, JSON lines and Kafka.

A sink receives flat documents (dotted keys, see docs/schema.md) of the kinds registered
in ``pipeline.kinds`` (``"event"``, ``"alert"``, ``"asset"``, ``"heartbeat"``...). ``write``
must not block the sensor for long and must not raise on a transient outage (spool, retry,
count); ``close`` flushes.
"""

from __future__ import annotations

import hashlib
from typing import Protocol

from pipeline.jsonl import dumps
from sensor.timestamps import parse_timestamp as to_epoch


class Sink(Protocol):
    def write(self, kind: str, doc: dict) -> None: ...

    def flush(self) -> None: ...

    def close(self) -> None: ...

    def stats(self) -> dict[str, int]:
        """Counters for ``--stats``: written, spooled, dropped, errors, ..."""
        ...


#: what a sensor sends to the centre (the ``[sensor] events`` setting): besides the kinds
#: that always go (``pipeline.kinds``: alerts, assets, heartbeats...), ``none`` adds nothing,
#: ``rollups`` the rollups, ``all`` rollups and every event
SHIP_SETTINGS = ("none", "rollups", "all")


def shipped_kinds(setting: str) -> frozenset[str]:
    """The kinds a sensor with ``events = setting`` sends to Kafka."""
    from pipeline import kinds

    if setting not in SHIP_SETTINGS:
        raise ValueError(f"events must be one of {', '.join(SHIP_SETTINGS)}, not {setting!r}")
    out = {k.name for k in kinds.all_kinds() if k.always_shipped and k.from_sensors}
    if setting in ("rollups", "all"):
        out.add("rollup")
    if setting == "all":
        out.add("event")
    return frozenset(out)


class Only:
    """A sink that passes on the documents of some kinds only (and counts the rest)."""

    def __init__(self, sink: Sink, kinds: frozenset[str], name: str = "") -> None:
        self.sink = sink
        self.kinds = kinds
        self.name = name
        self.held_back = 0

    def write(self, kind: str, doc: dict) -> None:
        if kind in self.kinds:
            self.sink.write(kind, doc)
        else:
            self.held_back += 1

    def flush(self) -> None:
        self.sink.flush()

    def close(self) -> None:
        self.sink.close()

    def stats(self) -> dict[str, int]:
        return {**self.sink.stats(), "held_back": self.held_back}


#: seconds between re-sends of an asset whose record did not change but for ``last_seen``
DEFAULT_ASSET_REFRESH_S = 3600.0
DAY_S = 86400
_ASSET_TIMES = ("asset.last_seen", "@timestamp")  # what moves on every observation


class AssetRefresh:
    """Passes an asset document on when its record changed (a new peer, role, protocol,
    address, identity field, MAC, an earlier first_seen), when ``refresh_s`` of its
    ``last_seen`` passed since the one last sent, or when ``last_seen`` entered a new day (the
    centre keeps one document per asset per day); holds back the rest, keeping the newest held
    back per asset, and sends those at ``close`` (a clean stop, the end of a replay).

    So the centre's ``last_seen`` of an active asset is at most ``refresh_s`` behind the
    sensor's (plus the sensor's minute between asset snapshots), and exact after a clean stop.
    Memory: one digest and one held-back document per asset the sensor tracks (itself capped:
    ``sensor/assets.py``). ``refresh_s`` 0 passes every document on."""

    def __init__(self, sink: Sink, refresh_s: float = DEFAULT_ASSET_REFRESH_S) -> None:
        self.sink = sink
        self.refresh_s = refresh_s
        self._sent: dict[str, tuple[str, float]] = {}  # asset.id -> (record digest, last_seen)
        self._held: dict[str, dict] = {}  # asset.id -> newest document not sent
        self.held_back = 0

    def write(self, kind: str, doc: dict) -> None:
        if kind != "asset" or self.refresh_s <= 0:
            self.sink.write(kind, doc)
            return
        asset_id = str(doc.get("asset.id"))
        seen = to_epoch(doc.get("asset.last_seen")) or 0.0
        record = dumps({k: v for k, v in sorted(doc.items()) if k not in _ASSET_TIMES})
        digest = hashlib.sha256(record).hexdigest()
        sent = self._sent.get(asset_id)
        if (
            sent is None
            or sent[0] != digest
            or seen - sent[1] >= self.refresh_s
            or seen // DAY_S != sent[1] // DAY_S
        ):
            self._send(asset_id, doc, digest, seen)
        else:
            self._held[asset_id] = doc
            self.held_back += 1

    def _send(self, asset_id: str, doc: dict, digest: str, seen: float) -> None:
        self.sink.write("asset", doc)
        self._sent[asset_id] = (digest, seen)
        self._held.pop(asset_id, None)

    def flush(self) -> None:
        self.sink.flush()

    def close(self) -> None:
        try:
            for doc in list(self._held.values()):  # the last word on each asset
                self.sink.write("asset", doc)
            self._held.clear()
        finally:
            self.sink.close()

    def stats(self) -> dict[str, int]:
        return {**self.sink.stats(), "assets_held_back": self.held_back}


class Tee:
    """Every document to each of several named sinks, in order (the sensor's local store,
    then Kafka). ``close`` closes all of them, and raises the first failure after."""

    def __init__(self, sinks: dict[str, Sink]) -> None:
        self.sinks = sinks

    def write(self, kind: str, doc: dict) -> None:
        for sink in self.sinks.values():
            sink.write(kind, doc)

    def flush(self) -> None:
        for sink in self.sinks.values():
            sink.flush()

    def close(self) -> None:
        first: BaseException | None = None
        for sink in self.sinks.values():
            try:
                sink.close()
            except Exception as exc:  # the others still close
                first = first or exc
        if first is not None:
            raise first

    def stats(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for name, sink in self.sinks.items():
            for key, value in sink.stats().items():
                out[f"{name}.{key}"] = value
        return out
