"""The embedded store: one SQLite file holding events, alerts and assets, no servers needed.

It is both a sink (``pipeline.sinks.Sink``: the sensor writes flat documents into it) and a
query back end (``pipeline.query.QueryBackend``: ``icsmon alerts``, ``icsmon assets`` and the
posture view read from it), possibly at the same time from different processes.

- ``schema``: the file on disk: one table per document kind (``TABLES``), versions and
  upgrades (``MIGRATIONS``), opening and checking a file;
- ``writer``: batching, retries, de-duplication and merging, one write function per kind;
- ``queries``: filters, pages and aggregations in SQL;
- ``store``: ``Store``, the writer and the queries of one file in one object;
- ``process``: the sensor's store (``WriterStore``), whose writer runs in a process of its
  own fed serialised documents through a pipe, and whose queries read the file here;
  ``launch`` starts that process (light to import: a sensor starts it first of all).

The names below are imported on first use (``__getattr__``): ``pipeline.store.launch``,
which a sensor imports to start its writer before anything else, costs this package's
import, and the store's modules are tens of ms of it.

Retention: ``max_events`` keeps the newest N events (oldest by ``@timestamp`` pruned after each
batch); ``max_age_s`` removes events, rollups and heartbeats older than that behind the newest
event, and ``max_bytes`` the oldest of them while the file uses more (``used_bytes``: SQLite
reuses freed pages before the file grows, so the file stays about that size); each removal is
counted in ``stats()`` (``events_pruned_age``, ``events_pruned_size``, ...). Alerts, assets
and findings are never pruned: they are the record an analyst works from. ``None`` (the
default) keeps everything. One ``Store`` may be shared by threads.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from pipeline.store.launch import STORE_ENV, default_store_path, resolve_store_path

if TYPE_CHECKING:
    from pipeline.assets import merge_asset
    from pipeline.store.queries import iter_docs
    from pipeline.store.schema import (
        APPLICATION_ID,
        MIGRATIONS,
        SCHEMA_VERSION,
        TABLES,
        StoreError,
    )
    from pipeline.store.store import Store, open_store
    from pipeline.store.writer import MAX_EVENT_IDS, merge_alert
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

# name -> (module, its name there), imported when first asked for
_LAZY = {
    "APPLICATION_ID": ("pipeline.store.schema", "APPLICATION_ID"),
    "MIGRATIONS": ("pipeline.store.schema", "MIGRATIONS"),
    "SCHEMA_VERSION": ("pipeline.store.schema", "SCHEMA_VERSION"),
    "TABLES": ("pipeline.store.schema", "TABLES"),
    "StoreError": ("pipeline.store.schema", "StoreError"),
    "MAX_EVENT_IDS": ("pipeline.store.writer", "MAX_EVENT_IDS"),
    "merge_alert": ("pipeline.store.writer", "merge_alert"),
    "merge_asset": ("pipeline.assets", "merge_asset"),
    "iter_docs": ("pipeline.store.queries", "iter_docs"),
    "Store": ("pipeline.store.store", "Store"),
    "open_store": ("pipeline.store.store", "open_store"),
    "to_epoch": ("sensor.timestamps", "parse_timestamp"),
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module, attr = _LAZY[name]
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value  # once: later uses are a plain module attribute
    return value
