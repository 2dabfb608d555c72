"""Where documents go: the contract shared by the embedded store, JSON lines and Kafka.

A sink receives flat documents (dotted keys, see docs/schema.md) of the kinds registered
in ``pipeline.kinds`` (``"event"``, ``"alert"``, ``"asset"``, ``"heartbeat"``...). ``write``
must not block the sensor for long and must not raise on a transient outage (spool, retry,
count); ``close`` flushes.
"""

from __future__ import annotations

from typing import Protocol


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
