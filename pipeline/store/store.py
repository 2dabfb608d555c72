"""``Store``: one SQLite store file, its writer (``pipeline.store.writer``) and its queries
(``pipeline.store.queries``) in one object; ``pipeline.store`` names it."""

from __future__ import annotations

import os
import threading
from typing import Any

from pipeline.store.queries import StoreQueries
from pipeline.store.schema import connect, resolve_store_path, store_error
from pipeline.store.writer import StoreWriter


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
