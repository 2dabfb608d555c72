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
