"""The embedded store: one SQLite file holding events, alerts and assets, no servers needed.

It is both a sink (``pipeline.sinks.Sink``: the sensor writes flat documents into it) and a
query back end (``pipeline.query.QueryBackend``: ``icsmon alerts``, ``icsmon assets`` and the
posture view read from it), possibly at the same time from different processes.

- ``schema``: the file on disk: one table per document kind (``TABLES``), versions and
  upgrades (``MIGRATIONS``), opening and checking a file;
- ``writer``: batching, retries, de-duplication and merging, one write function per kind;
- ``queries``: filters, pages and aggregations in SQL;
- ``process``: the sensor's store (``WriterStore``), whose writer runs in a process of its
  own fed serialised documents through a pipe, and whose queries read the file here.

Retention: ``max_events`` keeps the newest N events (oldest by ``@timestamp`` pruned after each
batch); ``max_age_s`` removes events, rollups and heartbeats older than that behind the newest
event, and ``max_bytes`` the oldest of them while the file uses more (``used_bytes``: SQLite
reuses freed pages before the file grows, so the file stays about that size); each removal is
counted in ``stats()`` (``events_pruned_age``, ``events_pruned_size``, ...). Alerts, assets
and findings are never pruned: they are the record an analyst works from. ``None`` (the
default) keeps everything. One ``Store`` may be shared by threads.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from pipeline.assets import merge_asset
from pipeline.store.queries import StoreQueries, iter_docs
from pipeline.store.schema import (
    APPLICATION_ID,
    MIGRATIONS,
    SCHEMA_VERSION,
    STORE_ENV,
    TABLES,
    StoreError,
    connect,
    default_store_path,
    resolve_store_path,
    store_error,
)
from pipeline.store.writer import MAX_EVENT_IDS, StoreWriter, merge_alert
from sensor.timestamps import parse_timestamp as to_epoch

__all__ = [
    "APPLICATION_ID",
    "MAX_EVENT_IDS",
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "STORE_ENV",
    "TABLES",
    "Store",
    "StoreError",
    "default_store_path",
    "iter_docs",
    "merge_alert",
    "merge_asset",
    "open_store",
    "resolve_store_path",
    "to_epoch",
]


class Store(StoreWriter, StoreQueries):
    """One SQLite store file: a Sink for the sensor and a QueryBackend for queries.

    ``readonly=True`` is for queries (``icsmon alerts``): the file must exist and is never
    changed. A writable store creates the file (and its folder) when missing.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        readonly: bool = False,
        batch_size: int = 2000,
        flush_interval: float = 1.0,
        max_events: int | None = None,
        max_pending: int = 100_000,
        busy_timeout: float = 10.0,
        background_flush: bool = True,
        max_bytes: int | None = None,
        max_age_s: float | None = None,
    ) -> None:
        self.path = resolve_store_path(path)
        self.readonly = readonly
        self._lock = threading.RLock()
        self._closed = False
        self._init_readers(busy_timeout)
        conn = connect(self.path, readonly, busy_timeout)
        self._init_writer(
            conn,
            batch_size,
            flush_interval,
            max_events,
            max_pending,
            background_flush,
            max_bytes=max_bytes,
            max_age_s=max_age_s,
        )

    @classmethod
    def open(
        cls, path: str | os.PathLike[str] | None = None, *, readonly: bool = False, **options: Any
    ) -> Store:
        """The store at ``path`` (``--store``), else ``$ICSMON_STORE``, else the default;
        created when missing unless ``readonly``. Raises StoreError with a one-line message."""
        return cls(path, readonly=readonly, **options)

    def close(self) -> None:
        """Flush and close. Raises StoreError if documents could not be written at all."""
        if self._closed:
            return
        unwritten = self._close_writer()
        with self._lock:
            self._close_readers()
        if unwritten:
            why = f" ({self._last_error})" if self._last_error else ""
            raise store_error(self.path, f"{unwritten} documents could not be written{why}")

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_store(path: str | os.PathLike[str] | None = None, **options: Any) -> Store:
    """A read-only store for queries (the file must exist)."""
    return Store(path, readonly=True, **options)
