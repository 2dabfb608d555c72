"""The embedded store: one SQLite file holding events, alerts and assets, no servers needed.

It is both a sink (``pipeline.sinks.Sink``: the sensor writes flat documents into it) and a
query back end (``pipeline.query.QueryBackend``: ``icsmon alerts``, ``icsmon assets`` and the
posture view read from it), possibly at the same time from different processes: the file is
in WAL mode, so readers never block the writer and see whole batches only.

Layout. Every document is kept whole as JSON (flat, dotted keys) in a documents table
(``event_docs``, ``alert_docs``) under the rowid of a narrow row holding the indexed columns
that filters use: ``ts`` (``@timestamp`` as epoch seconds), ``severity``, ``site``, ``rule_id``,
``protocol``, ``community_id``... List fields that filters need are in side tables
(``alert_techniques``, ``alert_tactics``, ``asset_roles``); aggregations over any other field
use SQLite's JSON1 ``json_each`` on the documents. Counts and histograms thus walk small rows
and indexes, and a search reads the JSON of the page it returns only.

Identity. Alerts and events are de-duplicated by ``event.id`` (deterministic, so a capture
replayed twice or a batch delivered twice stores nothing new). An alert arriving again with
new triggering events adds to ``icsmon.alert.count``. Assets are upserted by ``asset.id`` and
merged (see :func:`merge_asset`).

Writes are batched: a transaction per ``batch_size`` documents or ``flush_interval`` seconds
(a background thread flushes a quiet sensor), and on ``flush``/``close``. A failed batch (disk
full, file locked too long) is kept and retried; beyond ``max_pending`` documents the oldest
events are dropped first (alerts last), and every loss is counted in ``stats()``. Odd values
(a list where a site name belongs, bytes, sets) are stored as JSON can hold them and left out
of the indexed columns; integers wider than 64 bits are written exactly but read back as
floats (the JSON reader's limit, and Elasticsearch's). One ``Store`` may be shared by threads.

Retention: ``max_events`` keeps the newest N events (oldest by ``@timestamp`` pruned after each
batch). Alerts and assets are never pruned: they are the record an analyst works from.
``None`` (the default) keeps everything.

Schema: ``PRAGMA application_id`` marks an icsmon store; ``PRAGMA user_version`` is the schema
version, upgraded on a read-write open by the functions in ``MIGRATIONS``.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import os
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import platformdirs

from pipeline import kinds
from pipeline.jsonl import dumps
from pipeline.query import AlertFilter, AssetFilter

log = logging.getLogger(__name__)

APPLICATION_ID = 0x49434D53  # "ICMS": tells an icsmon store from any other SQLite file
SCHEMA_VERSION = 4
STORE_ENV = "ICSMON_STORE"

CACHE_KIB = 32 * 1024  # SQLite page cache of the writing connection
READER_CACHE_KIB = 8 * 1024  # and of each querying thread's connection
WAL_CHECKPOINT_PAGES = 4096
MAX_EVENT_IDS = 100  # icsmon.alert.event_ids kept per alert (the count goes on past it)
MAX_SET_ITEMS = 1024  # items kept in an asset's merged list fields (peers, roles, ...)

# Fields with an indexed column of their own, per table: filters and aggregations use these.
ALERT_COLUMNS = {
    "event.severity": "severity",
    "labels.site": "site",
    "rule.id": "rule_id",
    "rule.name": "rule_name",
    "network.protocol": "protocol",
    "observer.name": "observer",
    "organization.id": "org",
    "network.community_id": "community_id",
    "rule.ruleset": "ruleset",
}
# List fields of alerts kept in side tables: field -> (table, value column).
ALERT_LISTS = {
    "threat.technique.id": ("alert_techniques", "technique"),
    "threat.tactic.name": ("alert_tactics", "tactic"),
}
EVENT_COLUMNS = {
    "labels.site": "site",
    "network.protocol": "protocol",
    "event.action": "action",
    "observer.name": "observer",
    "network.community_id": "community_id",
}
ASSET_COLUMNS = {"labels.site": "site", "host.ip": "ip", "ics.device.vendor": "vendor"}

_FIELD_NAME = re.compile(r"^[@A-Za-z0-9_][@A-Za-z0-9_.\-]*$")

# The latest schema, for new stores; older stores are upgraded by MIGRATIONS. The documents
# live in their own tables (same rowid as their row), so filters, counts and histograms walk
# narrow rows and indexes, and only the page asked for reads the JSON.
_SCHEMA = """
CREATE TABLE events (
    rowid INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    ts REAL,
    site TEXT,
    protocol TEXT,
    action TEXT,
    observer TEXT,
    community_id TEXT
);
CREATE INDEX events_ts ON events(ts);
CREATE INDEX events_observer_ts ON events(observer, ts);
CREATE INDEX events_community ON events(community_id);
CREATE TABLE event_docs (rowid INTEGER PRIMARY KEY, doc TEXT NOT NULL);

CREATE TABLE alerts (
    rowid INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    ts REAL,
    severity INTEGER,
    site TEXT,
    rule_id TEXT,
    rule_name TEXT,
    protocol TEXT,
    observer TEXT,
    org TEXT,
    community_id TEXT,
    ruleset TEXT
);
CREATE INDEX alerts_community ON alerts(community_id);
CREATE INDEX alerts_ts ON alerts(ts);
CREATE INDEX alerts_site_ts ON alerts(site, ts);
CREATE INDEX alerts_severity ON alerts(severity);
CREATE INDEX alerts_rule ON alerts(rule_id);
CREATE INDEX alerts_protocol ON alerts(protocol);
CREATE TABLE alert_docs (rowid INTEGER PRIMARY KEY, doc TEXT NOT NULL);

CREATE TABLE alert_techniques (
    technique TEXT NOT NULL,
    alert_rowid INTEGER NOT NULL REFERENCES alerts(rowid),
    PRIMARY KEY (technique, alert_rowid)
) WITHOUT ROWID;
CREATE INDEX alert_techniques_alert ON alert_techniques(alert_rowid);

CREATE TABLE alert_tactics (
    tactic TEXT NOT NULL,
    alert_rowid INTEGER NOT NULL REFERENCES alerts(rowid),
    PRIMARY KEY (tactic, alert_rowid)
) WITHOUT ROWID;
CREATE INDEX alert_tactics_alert ON alert_tactics(alert_rowid);

CREATE TABLE assets (
    id TEXT PRIMARY KEY,
    site TEXT,
    ip TEXT,
    ip_key TEXT,
    vendor TEXT,
    first_seen REAL,
    last_seen REAL,
    doc TEXT NOT NULL
);
CREATE INDEX assets_site_ip ON assets(site, ip_key);

CREATE TABLE asset_roles (
    role TEXT NOT NULL,
    asset_id TEXT NOT NULL REFERENCES assets(id),
    PRIMARY KEY (role, asset_id)
) WITHOUT ROWID;
"""
DOC_TABLE = {"events": "event_docs", "alerts": "alert_docs"}

# The kinds with tables of their own shape above; every other stored kind of pipeline.kinds
# (heartbeats, ...) is "simple": kept whole by id, with the columns below, in a table named
# after the kind's plural that a read-write open creates when missing (no migration needed).
SHAPED_KINDS = ("event", "alert", "asset")
SIMPLE_COLUMNS = {"labels.site": "site", "observer.name": "observer", "organization.id": "org"}
_SIMPLE_TABLE = """
CREATE TABLE IF NOT EXISTS {t} (
    rowid INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    ts REAL,
    site TEXT,
    observer TEXT,
    org TEXT,
    doc TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS {t}_ts ON {t}(ts);
CREATE INDEX IF NOT EXISTS {t}_site_ts ON {t}(site, ts);
CREATE INDEX IF NOT EXISTS {t}_observer_ts ON {t}(observer, ts)
"""


def simple_tables() -> dict[str, str]:
    """kind -> table of the stored kinds kept whole by id (see SIMPLE_COLUMNS)."""
    return {k.name: k.plural for k in kinds.all_kinds() if k.stored and k.name not in SHAPED_KINDS}


def _migrate_1_to_2(conn: sqlite3.Connection) -> None:
    """Version 2 indexes network.community_id (an alert's flow -> its events)."""
    for table in ("events", "alerts"):
        conn.execute(f"ALTER TABLE {table} ADD COLUMN community_id TEXT")
        conn.execute(
            f"UPDATE {table} SET community_id = json_extract(doc, '$.\"network.community_id\"')"
        )
        conn.execute(f"CREATE INDEX {table}_community ON {table}(community_id)")


def _migrate_2_to_3(conn: sqlite3.Connection) -> None:
    """Version 3 moves the documents out of the indexed rows into their own tables."""
    for table, docs in DOC_TABLE.items():
        conn.execute(f"CREATE TABLE {docs} (rowid INTEGER PRIMARY KEY, doc TEXT NOT NULL)")
        conn.execute(f"INSERT INTO {docs} (rowid, doc) SELECT rowid, doc FROM {table}")
        conn.execute(f"ALTER TABLE {table} DROP COLUMN doc")


def _migrate_3_to_4(conn: sqlite3.Connection) -> None:
    """Version 4 indexes rule.ruleset and threat.tactic.name (the posture view counts them)."""
    conn.execute("ALTER TABLE alerts ADD COLUMN ruleset TEXT")
    conn.execute(
        "UPDATE alerts SET ruleset = (SELECT json_extract(d.doc, '$.\"rule.ruleset\"') "
        "FROM alert_docs d WHERE d.rowid = alerts.rowid)"
    )
    conn.execute(
        "CREATE TABLE alert_tactics (tactic TEXT NOT NULL, alert_rowid INTEGER NOT NULL "
        "REFERENCES alerts(rowid), PRIMARY KEY (tactic, alert_rowid)) WITHOUT ROWID"
    )
    conn.execute("CREATE INDEX alert_tactics_alert ON alert_tactics(alert_rowid)")
    conn.execute(
        "INSERT OR IGNORE INTO alert_tactics (tactic, alert_rowid) SELECT j.value, d.rowid "
        "FROM alert_docs d, json_each(d.doc, '$.\"threat.tactic.name\"') j "
        "WHERE j.type = 'text' AND j.value != ''"
    )


# MIGRATIONS[n] upgrades a version-n store to version n + 1, inside one transaction.
MIGRATIONS: dict[int, Callable[[sqlite3.Connection], None]] = {
    1: _migrate_1_to_2,
    2: _migrate_2_to_3,
    3: _migrate_3_to_4,
}


class StoreError(Exception):
    """The store file cannot be used; ``str()`` is one line that names the file."""


def default_store_path() -> Path:
    """``$ICSMON_STORE`` if set, else ``icsmon.db`` in the user's data directory."""
    env = os.environ.get(STORE_ENV)
    if env:
        return Path(env).expanduser()
    return Path(platformdirs.user_data_dir("icsmon")) / "icsmon.db"


def resolve_store_path(path: str | os.PathLike[str] | None) -> Path:
    """An explicit ``--store PATH`` wins over ``$ICSMON_STORE`` and the default."""
    return Path(path).expanduser() if path else default_store_path()


def to_epoch(value: Any) -> float | None:
    """``@timestamp``-like values (ISO 8601 text, epoch seconds, datetime) -> epoch seconds."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, datetime):
        dt = value
    elif isinstance(value, str):
        try:
            dt = datetime.fromisoformat(value)
        except ValueError:
            return None
    else:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)  # the schema's timestamps are UTC
    return dt.timestamp()


def _ip_key(ip: Any) -> str | None:
    """Sorts IPv4 before IPv6 and numerically within each (10.0.0.9 before 10.0.0.10)."""
    if not isinstance(ip, str):
        return None
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return "9" + ip
    return f"{addr.version}{addr.packed.hex()}"


def _empty(value: Any) -> bool:
    return value is None or value == "" or value == [] or value == {}


def _as_list(value: Any) -> list:
    if value is None:
        return []
    if isinstance(value, list | tuple | set | frozenset):
        return list(value)
    return [value]


def _union(old: Any, new: Any, cap: int = MAX_SET_ITEMS) -> list:
    """Set union of two list-or-scalar values, order of first appearance, capped."""
    out: list = []
    seen: set = set()
    for item in _as_list(old) + _as_list(new):
        try:
            key = (type(item), item)
            hash(key)
        except TypeError:  # dicts, lists: compared by their JSON
            key = (dict, dumps(item))
        if key in seen:
            continue
        seen.add(key)
        out.append(item)
        if len(out) >= cap:
            break
    return out


def merge_asset(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """Fold a new observation of an asset into the stored record.

    - list fields (``asset.roles``, ``asset.protocols``, ``asset.peers``, a list of MACs...)
      become set unions, in order of first appearance, capped at ``MAX_SET_ITEMS``;
    - ``asset.first_seen`` keeps the earliest, ``asset.last_seen`` the latest;
    - other fields (identity: ``ics.device.*``, ``host.mac``...) take the value of the newer
      observation (by ``asset.last_seen``) when it is not empty; an older observation only
      fills fields the record lacks.
    """
    old_last = to_epoch(old.get("asset.last_seen"))
    new_last = to_epoch(new.get("asset.last_seen"))
    new_is_newer = old_last is None or new_last is None or new_last >= old_last
    merged = dict(old)
    for key, value in new.items():
        current = merged.get(key)
        if key == "asset.first_seen":
            a, b = to_epoch(current), to_epoch(value)
            if current is None or (b is not None and (a is None or b < a)):
                merged[key] = value
        elif key == "asset.last_seen":
            a, b = to_epoch(current), to_epoch(value)
            if current is None or (b is not None and (a is None or b > a)):
                merged[key] = value
        elif isinstance(value, list | tuple | set | frozenset) or isinstance(current, list):
            merged[key] = _union(current, value)
        elif _empty(value):
            continue
        elif _empty(current) or new_is_newer:
            merged[key] = value
    return merged


def _check_field(field_name: str) -> str:
    if not _FIELD_NAME.match(field_name):
        raise ValueError(f"not a field name: {field_name!r}")
    return field_name


def _json_path(field_name: str) -> str:
    return f'$."{_check_field(field_name)}"'


def _like(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


class Store:
    """One SQLite store file: a Sink for the sensor and a QueryBackend for queries.

    ``readonly=True`` is for queries (``icsmon alerts``): the file must exist and is never
    changed. A writable store creates the file (and its folder) when missing.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        readonly: bool = False,
        batch_size: int = 500,
        flush_interval: float = 1.0,
        max_events: int | None = None,
        max_pending: int = 100_000,
        busy_timeout: float = 10.0,
        background_flush: bool = True,
    ) -> None:
        self.path = resolve_store_path(path)
        self.readonly = readonly
        self.batch_size = max(1, batch_size)
        self.flush_interval = flush_interval
        self.max_events = max_events
        self.max_pending = max_pending
        self._lock = threading.RLock()
        self._pending: list[tuple[str, dict]] = []
        self._last_flush = time.monotonic()
        self._closed = False
        self._counts = {
            "written": 0,
            "events": 0,
            "alerts": 0,
            "alerts_merged": 0,
            "assets": 0,
            "duplicates": 0,
            "pruned": 0,
            "dropped": 0,
            "rejected": 0,
            "errors": 0,
            "batches": 0,
        }
        self._busy_timeout = busy_timeout
        self._failing = 0  # consecutive failed flushes (disk full, I/O error)
        self._last_error = ""
        self._shed_logged = 0
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._conn = self._open(busy_timeout)
        self._event_count: int | None = None
        self._stop = threading.Event()
        self._flusher: threading.Thread | None = None
        if not readonly and background_flush and flush_interval > 0:
            self._flusher = threading.Thread(
                target=self._flush_loop, name=f"store-flush:{self.path.name}", daemon=True
            )
            self._flusher.start()

    @classmethod
    def open(
        cls, path: str | os.PathLike[str] | None = None, *, readonly: bool = False, **options: Any
    ) -> Store:
        """The store at ``path`` (``--store``), else ``$ICSMON_STORE``, else the default;
        created when missing unless ``readonly``. Raises StoreError with a one-line message."""
        return cls(path, readonly=readonly, **options)

    # ---- opening ------------------------------------------------------------------------

    def _error(self, what: str, exc: BaseException | None = None) -> StoreError:
        detail = f" ({exc})" if exc is not None else ""
        return StoreError(f"{self.path}: {what}{detail}")

    def _open(self, busy_timeout: float) -> sqlite3.Connection:
        path = self.path
        if path.is_dir():
            raise self._error("is a directory, not an icsmon store file")
        if self.readonly:
            if not path.exists():
                raise self._error(
                    "no icsmon store here (icsmon replay/sense write one; --store PATH or "
                    "$ICSMON_STORE names another)"
                )
            target, uri = path.resolve().as_uri() + "?mode=ro", True
        else:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise self._error("cannot create the folder for the store", exc) from exc
            target, uri = str(path), False
        try:
            conn = sqlite3.connect(
                target,
                uri=uri,
                timeout=busy_timeout,
                isolation_level=None,  # transactions are explicit: BEGIN IMMEDIATE per batch
                check_same_thread=False,  # the background flusher shares it, under self._lock
            )
        except sqlite3.Error as exc:
            raise self._error("cannot open the store", exc) from exc
        try:
            self._check_and_init(conn)
        except StoreError:
            conn.close()
            raise
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise self._describe(exc) from exc
        return conn

    def _describe(self, exc: sqlite3.Error) -> StoreError:
        """One line for what SQLite says about a bad file."""
        msg = str(exc)
        if "file is not a database" in msg:
            return self._error("not an icsmon store (not an SQLite database)")
        if "malformed" in msg or "corrupt" in msg:
            return self._error(
                f"the store is corrupt ({msg}); restore a backup or start a new file"
            )
        if "locked" in msg or "busy" in msg:
            return self._error(f"the store is locked by another process ({msg})")
        if "readonly" in msg or "unable to open" in msg:
            return self._error(f"cannot open the store ({msg})")
        return self._error(f"store error ({msg})")

    def _check_and_init(self, conn: sqlite3.Connection) -> None:
        app_id = conn.execute("PRAGMA application_id").fetchone()[0]
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        tables = {
            row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        }
        if app_id != APPLICATION_ID:
            if app_id == 0 and not tables and version == 0:
                if self.readonly:
                    raise self._error("not an icsmon store (an empty file)")
                self._create(conn)
                version = conn.execute("PRAGMA user_version").fetchone()[0]
            else:
                raise self._error("not an icsmon store (an SQLite database of some other program)")
        if version > SCHEMA_VERSION:
            raise self._error(
                f"written by a newer icsmon (store schema {version}, this one knows up to "
                f"{SCHEMA_VERSION})"
            )
        if not self.readonly and tables:
            # A damaged page is found now, as one clear error, not as a failing write per batch
            # later. quick_check reads the whole file once (a large store takes a while).
            problem = conn.execute("PRAGMA quick_check(1)").fetchone()[0]
            if problem != "ok":
                problem = " ".join(str(problem).split())
                raise self._error(
                    f"the store is corrupt ({problem}); restore a backup or start a new file"
                )
        if version < SCHEMA_VERSION:
            if self.readonly:
                raise self._error(
                    f"store schema {version} is older than {SCHEMA_VERSION}: open it once "
                    "read-write (icsmon replay/sense --store) to upgrade it"
                )
            self._migrate(conn, version)
        if not self.readonly:
            self._ensure_simple_tables(conn)
        # A bounded page cache (32 MiB) keeps the id and time indexes' hot pages in memory;
        # it is what inserts with hashed event ids and dashboards' aggregations mostly wait on.
        conn.execute(f"PRAGMA cache_size = -{CACHE_KIB}")
        if not self.readonly:
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            # Checkpoint every 16 MiB of WAL rather than 4: fewer fsyncs per batch on a busy disk.
            conn.execute(f"PRAGMA wal_autocheckpoint = {WAL_CHECKPOINT_PAGES}")

    def _create(self, conn: sqlite3.Connection) -> None:
        conn.execute("PRAGMA journal_mode = WAL")
        # NORMAL in WAL mode: a crash of icsmon loses nothing committed; a power cut may lose
        # the last batch but never corrupts the file.
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("BEGIN IMMEDIATE")
        try:
            if conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID:
                # Another process created the store while this one waited for the lock.
                conn.execute("COMMIT")
                return
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:  # SQLite may have rolled back already (disk full, I/O)
                conn.execute("ROLLBACK")
            raise

    @staticmethod
    def _ensure_simple_tables(conn: sqlite3.Connection) -> None:
        have = {
            row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        }
        missing = [t for t in simple_tables().values() if t not in have]
        if not missing:
            return
        conn.execute("BEGIN IMMEDIATE")
        try:
            for table in missing:
                for statement in _SIMPLE_TABLE.format(t=table).split(";"):
                    conn.execute(statement)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def _migrate(self, conn: sqlite3.Connection, version: int) -> None:
        while version < SCHEMA_VERSION:
            step = MIGRATIONS.get(version)
            if step is None:
                raise self._error(f"no upgrade from store schema {version}")
            conn.execute("BEGIN IMMEDIATE")
            try:
                step(conn)
                version += 1
                conn.execute(f"PRAGMA user_version = {version}")
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            log.info("%s: upgraded store schema to %d", self.path, version)

    def _reader(self) -> sqlite3.Connection:
        """This thread's read-only connection: queries from several threads (the posture
        view's parallel aggregations) run side by side instead of queueing on one lock."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            with self._lock:
                if self._closed:
                    raise self._error("the store is closed")
                try:
                    conn = sqlite3.connect(
                        self.path.resolve().as_uri() + "?mode=ro",
                        uri=True,
                        timeout=self._busy_timeout,
                        isolation_level=None,
                        check_same_thread=False,  # close() may come from another thread
                    )
                    conn.execute(f"PRAGMA cache_size = -{READER_CACHE_KIB}")
                except sqlite3.Error as exc:
                    raise self._describe(exc) from exc
                self._readers.append(conn)
            self._local.conn = conn
        return conn

    @contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        """Queries: one consistent snapshot, SQLite errors turned into a one-line StoreError."""
        if self._closed:
            raise self._error("the store is closed")
        conn = self._reader()
        try:
            conn.execute("BEGIN")
            try:
                yield conn
            finally:
                conn.execute("COMMIT")
        except sqlite3.Error as exc:
            raise self._describe(exc) from exc

    # ---- Sink ---------------------------------------------------------------------------

    def write(self, kind: str, doc: dict) -> None:
        if not kinds.get(kind).stored:  # raises for an unknown kind
            return
        if self.readonly:
            raise self._error("opened read-only, cannot write")
        with self._lock:
            if self._closed:
                self._counts["dropped"] += 1
                return
            self._pending.append((kind, doc))
            due = len(self._pending) >= self.batch_size or (
                self.flush_interval > 0
                and time.monotonic() - self._last_flush >= self.flush_interval
            )
        if due:
            self.flush()

    def flush(self) -> None:
        """Write everything pending in one transaction. Never raises: a failure is logged,
        counted, and the batch kept for the next try (bounded by ``max_pending``)."""
        with self._lock:
            self._last_flush = time.monotonic()
            if not self._pending or self.readonly:
                return
            batch, self._pending = self._pending, []
            try:
                self._write_batch(batch)
            except (sqlite3.OperationalError, sqlite3.DatabaseError) as exc:
                if not isinstance(exc, sqlite3.OperationalError) and "malformed" not in str(exc):
                    self._write_one_by_one(batch, exc)
                    self._counts["batches"] += 1
                    return
                # Locked too long, disk full, I/O error, a page damaged under us: the same
                # batch may well go through later. One error line per outage, not per try.
                self._counts["errors"] += 1
                self._failing += 1
                self._last_error = str(exc)
                if self._failing == 1:
                    log.error(
                        "%s: cannot write to the store (%s); keeping up to %d documents "
                        "in memory and retrying",
                        self.path,
                        exc,
                        self.max_pending,
                    )
                self._pending = batch + self._pending
                self._shed()
                return
            except Exception as exc:  # a document it cannot take: find it
                self._write_one_by_one(batch, exc)
            else:
                if self._failing:
                    log.warning(
                        "%s: writing again after %d failed attempts (%d documents "
                        "dropped meanwhile)",
                        self.path,
                        self._failing,
                        self._counts["dropped"],
                    )
                    self._failing = 0
            self._counts["batches"] += 1
            if self.max_events is not None:
                try:
                    self._prune()
                except sqlite3.Error as exc:
                    self._counts["errors"] += 1
                    log.error("%s: cannot prune old events: %s", self.path, exc)

    def _write_one_by_one(self, batch: list[tuple[str, dict]], first: Exception) -> None:
        """A batch failed for something other than a busy or full disk: write its documents
        singly so that one bad document costs only itself (counted as ``rejected``)."""
        log.warning("%s: a batch failed (%s); writing its documents one by one", self.path, first)
        for item in batch:
            try:
                self._write_batch([item])
            except sqlite3.OperationalError:
                self._pending.append(item)
            except Exception as exc:  # the sensor must go on
                self._counts["rejected"] += 1
                self._counts["errors"] += 1
                if self._counts["rejected"] <= 10:
                    log.error("%s: rejected a %s document: %s", self.path, item[0], exc)
        self._shed()

    def close(self) -> None:
        """Flush and close. Raises StoreError if documents could not be written at all."""
        if self._closed:
            return
        self._stop.set()
        if self._flusher is not None:
            self._flusher.join()
        self.flush()
        with self._lock:
            unwritten = len(self._pending)
            self._pending = []
            self._closed = True
            try:
                if not self.readonly:
                    self._conn.execute("PRAGMA optimize")
            except sqlite3.Error:
                pass  # only a planner hint
            self._conn.close()
            for reader in self._readers:
                reader.close()
            self._readers.clear()
        if unwritten:
            self._counts["dropped"] += unwritten
            why = f" ({self._last_error})" if self._last_error else ""
            raise self._error(f"{unwritten} documents could not be written{why}")

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {**self._counts, "pending": len(self._pending)}

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _flush_loop(self) -> None:
        # A quiet sensor still gets its last alerts on disk within flush_interval seconds.
        while not self._stop.wait(self.flush_interval):
            with self._lock:
                due = bool(self._pending) and (
                    time.monotonic() - self._last_flush >= self.flush_interval
                )
            if due:
                self.flush()

    def _shed(self) -> None:
        """Over ``max_pending``: drop the oldest of the least important kind first (events),
        alerts last (``kinds.eviction_order``)."""
        excess = len(self._pending) - self.max_pending
        if excess <= 0:
            return
        for victim in (
            *kinds.eviction_order(),
            *(k for k in kinds.names() if k not in kinds.eviction_order()),
        ):
            if excess <= 0:
                break
            kept: list[tuple[str, dict]] = []
            for item in self._pending:
                if excess > 0 and item[0] == victim:
                    excess -= 1
                    self._counts["dropped"] += 1
                    continue
                kept.append(item)
            self._pending = kept
        # Logged when the count first passes 1, 10, 100, ... dropped: a line, not a flood.
        dropped = self._counts["dropped"]
        if dropped >= max(1, self._shed_logged * 10):
            self._shed_logged = dropped
            log.error(
                "%s: write backlog full, dropped %d documents (events first, alerts last)",
                self.path,
                dropped,
            )

    def _write_batch(self, batch: list[tuple[str, dict]]) -> None:
        conn = self._conn
        events = [doc for kind, doc in batch if kind == "event"]
        alerts = [doc for kind, doc in batch if kind == "alert"]
        assets: dict[str, dict] = {}
        simple: dict[str, list[dict]] = {}
        for kind, doc in batch:
            if kind not in SHAPED_KINDS:
                simple.setdefault(kind, []).append(doc)
            elif kind == "asset":
                asset_id = self._asset_id(doc)
                previous = assets.get(asset_id)
                assets[asset_id] = merge_asset(previous, doc) if previous else doc
        conn.execute("BEGIN IMMEDIATE")
        try:
            counts = {"events": 0, "alerts": 0, "alerts_merged": 0, "assets": 0, "duplicates": 0}
            if events:
                self._insert_events(conn, events, counts)
            for doc in alerts:
                self._upsert_alert(conn, doc, counts)
            for asset_id, doc in assets.items():
                self._upsert_asset(conn, asset_id, doc)
                counts["assets"] += 1
            for kind, docs in simple.items():
                self._insert_simple(conn, kind, docs, counts)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:  # SQLite may have rolled back already (disk full, I/O)
                conn.execute("ROLLBACK")
            raise
        for key, value in counts.items():
            self._counts[key] = self._counts.get(key, 0) + value
        self._counts["written"] += len(batch)
        if self._event_count is not None:
            self._event_count += counts["events"]

    @staticmethod
    def _doc_id(doc: dict) -> str:
        """``event.id``; a document without one gets a content hash, so it still de-duplicates."""
        doc_id = doc.get("event.id")
        if isinstance(doc_id, str) and doc_id:
            return doc_id
        if isinstance(doc_id, int) and not isinstance(doc_id, bool):
            return str(doc_id)
        return "sha1:" + hashlib.sha1(dumps(doc), usedforsecurity=False).hexdigest()

    @staticmethod
    def _asset_id(doc: dict) -> str:
        asset_id = doc.get("asset.id")
        if isinstance(asset_id, str) and asset_id:
            return asset_id
        return f"{doc.get('labels.site') or ''}:{doc.get('host.ip') or ''}"

    def _insert_events(self, conn: sqlite3.Connection, events: list[dict], counts: dict) -> None:
        """New events only (by event.id), each row and its document under one explicit rowid:
        the batch holds the write lock, so max(rowid) + n is free for it."""
        fresh: dict[str, dict] = {}
        for doc in events:
            fresh.setdefault(self._doc_id(doc), doc)
        known = {
            row[0]
            for row in conn.execute(
                "SELECT id FROM events WHERE id IN (SELECT value FROM json_each(?))",
                (dumps(list(fresh)).decode(),),
            )
        }
        base = conn.execute("SELECT coalesce(max(rowid), 0) FROM events").fetchone()[0]
        rows, docs = [], []
        for doc_id, doc in fresh.items():
            if doc_id in known:
                continue
            rowid = base + len(rows) + 1
            rows.append(
                (
                    rowid,
                    doc_id,
                    to_epoch(doc.get("@timestamp")),
                    _text(doc.get("labels.site")),
                    _text(doc.get("network.protocol")),
                    _text(doc.get("event.action")),
                    _text(doc.get("observer.name")),
                    _text(doc.get("network.community_id")),
                )
            )
            docs.append((rowid, dumps(doc).decode()))
        conn.executemany(
            "INSERT INTO events (rowid, id, ts, site, protocol, action, observer, community_id) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
        conn.executemany("INSERT INTO event_docs (rowid, doc) VALUES (?, ?)", docs)
        counts["events"] += len(rows)
        counts["duplicates"] += len(events) - len(rows)

    def _insert_simple(
        self, conn: sqlite3.Connection, kind: str, docs: list[dict], counts: dict
    ) -> None:
        """Documents of a simple kind, new ids only (a re-sent one is the same document)."""
        table = kinds.get(kind).plural
        rows = [
            (
                self._doc_id(doc),
                to_epoch(doc.get("@timestamp")),
                _text(doc.get("labels.site")),
                _text(doc.get("observer.name")),
                _text(doc.get("organization.id")),
                dumps(doc).decode(),
            )
            for doc in docs
        ]
        before = conn.total_changes
        conn.executemany(
            f"INSERT OR IGNORE INTO {table} (id, ts, site, observer, org, doc) VALUES (?, ?, ?, ?, ?, ?)",
            rows,
        )
        added = conn.total_changes - before
        counts[table] = counts.get(table, 0) + added
        counts["duplicates"] += len(rows) - added

    def _upsert_alert(self, conn: sqlite3.Connection, doc: dict, counts: dict) -> None:
        alert_id = self._doc_id(doc)
        row = conn.execute(
            "SELECT a.rowid, d.doc FROM alerts a JOIN alert_docs d ON d.rowid = a.rowid "
            "WHERE a.id = ?",
            (alert_id,),
        ).fetchone()
        if row is None:
            cur = conn.execute(
                "INSERT INTO alerts (id, ts, severity, site, rule_id, rule_name, protocol, "
                "observer, org, community_id, ruleset) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    alert_id,
                    to_epoch(doc.get("@timestamp")),
                    _int_or_none(doc.get("event.severity")),
                    _text(doc.get("labels.site")),
                    _str_or_none(doc.get("rule.id")),
                    _str_or_none(doc.get("rule.name")),
                    _text(doc.get("network.protocol")),
                    _text(doc.get("observer.name")),
                    _text(doc.get("organization.id")),
                    _text(doc.get("network.community_id")),
                    _text(doc.get("rule.ruleset")),
                ),
            )
            conn.execute(
                "INSERT INTO alert_docs (rowid, doc) VALUES (?, ?)",
                (cur.lastrowid, dumps(doc).decode()),
            )
            techniques = {str(t).upper() for t in _as_list(doc.get("threat.technique.id")) if t}
            conn.executemany(
                "INSERT OR IGNORE INTO alert_techniques (technique, alert_rowid) VALUES (?, ?)",
                [(t, cur.lastrowid) for t in techniques],
            )
            tactics = {
                t for t in _as_list(doc.get("threat.tactic.name")) if isinstance(t, str) and t
            }
            conn.executemany(
                "INSERT OR IGNORE INTO alert_tactics (tactic, alert_rowid) VALUES (?, ?)",
                [(t, cur.lastrowid) for t in tactics],
            )
            counts["alerts"] += 1
            return
        rowid, stored_json = row
        stored = orjson.loads(stored_json)
        merged = merge_alert(stored, doc)
        if merged is None:
            counts["duplicates"] += 1
            return
        conn.execute(
            "UPDATE alerts SET severity = ? WHERE rowid = ?",
            (_int_or_none(merged.get("event.severity")), rowid),
        )
        conn.execute(
            "UPDATE alert_docs SET doc = ? WHERE rowid = ?", (dumps(merged).decode(), rowid)
        )
        counts["alerts_merged"] += 1

    def _upsert_asset(self, conn: sqlite3.Connection, asset_id: str, doc: dict) -> None:
        row = conn.execute("SELECT doc FROM assets WHERE id = ?", (asset_id,)).fetchone()
        doc = merge_asset(orjson.loads(row[0]), doc) if row is not None else dict(doc)
        doc["asset.id"] = asset_id
        ip = doc.get("host.ip")
        if isinstance(ip, list):
            ip = ip[0] if ip else None
        ip = _text(ip)
        vendor = doc.get("ics.device.vendor")
        conn.execute(
            "INSERT INTO assets (id, site, ip, ip_key, vendor, first_seen, last_seen, doc) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET site = excluded.site, "
            "ip = excluded.ip, ip_key = excluded.ip_key, vendor = excluded.vendor, "
            "first_seen = excluded.first_seen, last_seen = excluded.last_seen, doc = excluded.doc",
            (
                asset_id,
                _text(doc.get("labels.site")),
                ip,
                _ip_key(ip),
                vendor if isinstance(vendor, str) else None,
                to_epoch(doc.get("asset.first_seen")),
                to_epoch(doc.get("asset.last_seen")),
                dumps(doc).decode(),
            ),
        )
        roles = {str(r) for r in _as_list(doc.get("asset.roles")) if r}
        conn.executemany(
            "INSERT OR IGNORE INTO asset_roles (role, asset_id) VALUES (?, ?)",
            [(role, asset_id) for role in roles],
        )

    def _prune(self) -> None:
        """Keep the newest ``max_events`` events (by @timestamp); alerts are never pruned."""
        assert self.max_events is not None
        if self._event_count is None:
            self._event_count = self._conn.execute("SELECT count(*) FROM events").fetchone()[0]
        excess = self._event_count - self.max_events
        if excess <= 0:
            return
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            # the same oldest rows from both tables, chosen once inside this transaction
            self._conn.execute(
                "DELETE FROM event_docs WHERE rowid IN "
                "(SELECT rowid FROM events ORDER BY ts, rowid LIMIT ?)",
                (excess,),
            )
            cur = self._conn.execute(
                "DELETE FROM events WHERE rowid IN "
                "(SELECT rowid FROM events ORDER BY ts, rowid LIMIT ?)",
                (excess,),
            )
            self._conn.execute("COMMIT")
        except BaseException:
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
            raise
        self._event_count -= cur.rowcount
        self._counts["pruned"] += cur.rowcount

    # ---- QueryBackend -------------------------------------------------------------------

    def _where(self, flt: AlertFilter, table: str) -> tuple[str, list[Any]]:
        """SQL conditions for an AlertFilter on ``alerts`` or ``events`` (limit/offset aside).

        On events, conditions on fields events lack (severity, technique, rule) match only the
        events that carry them, read from the JSON document; ``text`` searches event.action.
        """
        conds: list[str] = []
        params: list[Any] = []
        if flt.since is not None:
            conds.append(f"{table}.ts >= ?")
            params.append(flt.since)
        if flt.until is not None:
            conds.append(f"{table}.ts < ?")
            params.append(flt.until)
        if flt.sites:
            conds.append(f"{table}.site IN ({','.join('?' * len(flt.sites))})")
            params.extend(flt.sites)
        if flt.protocol:
            conds.append(f"{table}.protocol = ?")
            params.append(flt.protocol)
        if flt.ids:
            conds.append(f"{table}.id IN (SELECT value FROM json_each(?))")
            params.append(dumps(list(flt.ids)).decode())
        if flt.community_id:
            conds.append(f"{table}.community_id = ?")
            params.append(flt.community_id)
        if table == "alerts":
            if flt.min_severity is not None:
                conds.append("alerts.severity >= ?")
                params.append(flt.min_severity)
            if flt.technique:
                # IN, not a correlated EXISTS: the side table's index picks the rows
                conds.append(
                    "alerts.rowid IN (SELECT alert_rowid FROM alert_techniques WHERE technique = ?)"
                )
                params.append(flt.technique.upper())
            if flt.rule_id:
                conds.append("alerts.rule_id = ?")
                params.append(flt.rule_id)
            if flt.text:
                conds.append("alerts.rule_name LIKE ? ESCAPE '\\'")
                params.append(_like(flt.text))
        else:
            if flt.min_severity is not None:
                conds.append(
                    "(SELECT json_extract(d.doc, '$.\"event.severity\"') FROM event_docs d "
                    "WHERE d.rowid = events.rowid) >= ?"
                )
                params.append(flt.min_severity)
            if flt.technique:
                conds.append(
                    "EXISTS (SELECT 1 FROM event_docs d, "
                    "json_each(d.doc, '$.\"threat.technique.id\"') j "
                    "WHERE d.rowid = events.rowid AND upper(j.value) = ?)"
                )
                params.append(flt.technique.upper())
            if flt.rule_id:
                conds.append(
                    "(SELECT json_extract(d.doc, '$.\"rule.id\"') FROM event_docs d "
                    "WHERE d.rowid = events.rowid) = ?"
                )
                params.append(flt.rule_id)
            if flt.text:
                conds.append("events.action LIKE ? ESCAPE '\\'")
                params.append(_like(flt.text))
        return (" WHERE " + " AND ".join(conds)) if conds else "", params

    def _field_source(
        self, table: str, field_name: str, alias: str = "f"
    ) -> tuple[str, str, list[Any]]:
        """(extra FROM clause, value expression, params) for aggregating on a field: its own
        column when it has one, its side table (techniques, tactics), else JSON1 over the
        document (a list field counts each element, as Elasticsearch terms do)."""
        columns = ALERT_COLUMNS if table == "alerts" else EVENT_COLUMNS
        if field_name in columns:
            return "", f"{table}.{columns[field_name]}", []
        if table == "alerts" and field_name in ALERT_LISTS:
            side, column = ALERT_LISTS[field_name]
            return (
                f" JOIN {side} {alias} ON {alias}.alert_rowid = alerts.rowid",
                f"{alias}.{column}",
                [],
            )
        docs = DOC_TABLE[table]
        return (
            f" JOIN {docs} {alias}_doc ON {alias}_doc.rowid = {table}.rowid, "
            f"json_each({alias}_doc.doc, ?) AS {alias}",
            f"{alias}.value",
            [_json_path(field_name)],
        )

    def _search(self, table: str, flt: AlertFilter) -> tuple[int, list[dict]]:
        where, params = self._where(flt, table)
        with self._reading() as conn:
            total = conn.execute(f"SELECT count(*) FROM {table}{where}", params).fetchone()[0]
            # the page is chosen on the narrow rows; only its documents are read
            rows = conn.execute(
                f"SELECT d.doc FROM (SELECT {table}.rowid AS r, {table}.ts AS t FROM {table}"
                f"{where} ORDER BY {table}.ts DESC, {table}.rowid DESC LIMIT ? OFFSET ?) AS page "
                f"JOIN {DOC_TABLE[table]} d ON d.rowid = page.r ORDER BY page.t DESC, page.r DESC",
                [*params, max(0, flt.limit), max(0, flt.offset)],
            ).fetchall()
        return total, [orjson.loads(row[0]) for row in rows]

    def search_alerts(self, flt: AlertFilter) -> tuple[int, list[dict]]:
        """(total matching, one page of alerts newest first)."""
        return self._search("alerts", flt)

    def search_events(self, flt: AlertFilter) -> tuple[int, list[dict]]:
        """(total matching, one page of events newest first)."""
        return self._search("events", flt)

    def get_alert(self, alert_id: str) -> dict | None:
        with self._reading() as conn:
            row = conn.execute(
                "SELECT d.doc FROM alerts a JOIN alert_docs d ON d.rowid = a.rowid WHERE a.id = ?",
                (alert_id,),
            ).fetchone()
        return orjson.loads(row[0]) if row else None

    def get_event(self, event_id: str) -> dict | None:
        with self._reading() as conn:
            row = conn.execute(
                "SELECT d.doc FROM events e JOIN event_docs d ON d.rowid = e.rowid WHERE e.id = ?",
                (event_id,),
            ).fetchone()
        return orjson.loads(row[0]) if row else None

    def get_asset(self, asset_id: str) -> dict | None:
        with self._reading() as conn:
            row = conn.execute("SELECT doc FROM assets WHERE id = ?", (asset_id,)).fetchone()
        return orjson.loads(row[0]) if row else None

    def count_alerts_by(
        self, flt: AlertFilter, field_name: str, size: int = 20
    ) -> list[tuple[str, int]]:
        """Terms aggregation in SQL: the ``size`` most frequent values of ``field_name``."""
        where, params = self._where(flt, "alerts")
        if field_name in ALERT_LISTS:
            # "top techniques/tactics" are the posture view's staples: count the side table's
            # index, touching alerts only to apply a filter
            side, column = ALERT_LISTS[field_name]
            chosen = (
                f" WHERE alert_rowid IN (SELECT alerts.rowid FROM alerts{where})" if where else ""
            )
            sql = (
                f"SELECT {column} AS v, count(*) AS n FROM {side}{chosen} "
                "GROUP BY v ORDER BY n DESC, v LIMIT ?"
            )
            with self._reading() as conn:
                rows = conn.execute(sql, [*params, size]).fetchall()
            return [(_key(v), n) for v, n in rows]
        extra, expr, fparams = self._field_source("alerts", field_name)
        where = self._and_not_null(where, expr)
        sql = (
            f"SELECT {expr} AS v, count(*) AS n FROM alerts{extra}{where} "
            "GROUP BY v ORDER BY n DESC, v LIMIT ?"
        )
        with self._reading() as conn:
            rows = conn.execute(sql, [*fparams, *params, size]).fetchall()
        return [(_key(v), n) for v, n in rows]

    def alert_histogram(
        self, flt: AlertFilter, interval_s: int, field_name: str | None = None, size: int = 10
    ) -> list[tuple[float, str | None, int]]:
        """Date histogram on ``@timestamp`` (buckets aligned to multiples of ``interval_s``),
        optionally split by the ``size`` most frequent values of a field within each bucket."""
        if interval_s <= 0:
            raise ValueError("interval_s must be positive")
        where, params = self._where(flt, "alerts")
        where = self._and_not_null(where, "alerts.ts")
        bucket = "(CAST(floor(alerts.ts / ?) AS INTEGER) * ?)"
        if field_name is None:
            sql = f"SELECT {bucket} AS b, count(*) FROM alerts{where} GROUP BY b ORDER BY b"
            with self._reading() as conn:
                rows = conn.execute(sql, [interval_s, interval_s, *params]).fetchall()
            return [(float(b), None, n) for b, n in rows]
        extra, expr, fparams = self._field_source("alerts", field_name)
        where = self._and_not_null(where, expr)
        sql = (
            f"SELECT b, v, n FROM (SELECT b, v, n, row_number() OVER "
            f"(PARTITION BY b ORDER BY n DESC, v) AS r FROM (SELECT {bucket} AS b, {expr} AS v, "
            f"count(*) AS n FROM alerts{extra}{where} GROUP BY b, v)) WHERE r <= ? ORDER BY b, n DESC, v"
        )
        with self._reading() as conn:
            rows = conn.execute(sql, [interval_s, interval_s, *fparams, *params, size]).fetchall()
        return [(float(b), _key(v), n) for b, v, n in rows]

    def count_alerts_by_pair(
        self, flt: AlertFilter, field_a: str, field_b: str, size_a: int = 100, size_b: int = 10
    ) -> list[tuple[str, str, int]]:
        """Two-level terms aggregation: the ``size_a`` top values of ``field_a``, each split by
        its ``size_b`` top values of ``field_b``; ordered by a's total, then count."""
        extra_a, expr_a, params_a = self._field_source("alerts", field_a, "fa")
        extra_b, expr_b, params_b = self._field_source("alerts", field_b, "fb")
        where, params = self._where(flt, "alerts")
        where = self._and_not_null(self._and_not_null(where, expr_a), expr_b)
        sql = (
            f"WITH pairs AS (SELECT {expr_a} AS a, {expr_b} AS b, count(*) AS n "
            f"FROM alerts{extra_a}{extra_b}{where} GROUP BY a, b), "
            f"top_a AS (SELECT {expr_a} AS a, count(*) AS total FROM alerts{extra_a}"
            f"{self._and_not_null(self._where(flt, 'alerts')[0], expr_a)} "
            "GROUP BY a ORDER BY total DESC, a LIMIT ?), "
            "ranked AS (SELECT pairs.a, pairs.b, pairs.n, top_a.total, row_number() OVER "
            "(PARTITION BY pairs.a ORDER BY pairs.n DESC, pairs.b) AS r "
            "FROM pairs JOIN top_a ON top_a.a = pairs.a) "
            "SELECT a, b, n FROM ranked WHERE r <= ? ORDER BY total DESC, a, n DESC, b"
        )
        all_params = [*params_a, *params_b, *params, *params_a, *params, size_a, size_b]
        with self._reading() as conn:
            rows = conn.execute(sql, all_params).fetchall()
        return [(_key(a), _key(b), n) for a, b, n in rows]

    def last_seen_by(
        self, flt: AlertFilter, field_name: str, size: int = 1000, kind: str = "event"
    ) -> list[tuple[str, float]]:
        """(value, newest @timestamp) per value of ``field_name`` among ``kind`` documents
        matching ``flt``, newest first (sensor health: ``last_seen_by(flt, "observer.name")``)."""
        if kind in simple_tables():
            return self._simple_last_seen_by(kind, flt, field_name, size)
        if kind not in ("event", "alert"):
            raise ValueError(f"kind must be 'event', 'alert' or a simple kind, not {kind!r}")
        table = kind + "s"
        extra, expr, fparams = self._field_source(table, field_name)
        where, params = self._where(flt, table)
        where = self._and_not_null(self._and_not_null(where, expr), f"{table}.ts")
        sql = (
            f"SELECT {expr} AS v, max({table}.ts) AS last FROM {table}{extra}{where} "
            "GROUP BY v ORDER BY last DESC, v LIMIT ?"
        )
        with self._reading() as conn:
            rows = conn.execute(sql, [*fparams, *params, size]).fetchall()
        return [(_key(v), float(last)) for v, last in rows]

    # -- simple kinds (heartbeats, ...) ---------------------------------------------------

    @staticmethod
    def _simple_where(flt: AlertFilter, table: str) -> tuple[str, list[Any]]:
        """Time, sites and ids of an AlertFilter (the rest does not apply to these kinds)."""
        conds: list[str] = []
        params: list[Any] = []
        if flt.since is not None:
            conds.append(f"{table}.ts >= ?")
            params.append(flt.since)
        if flt.until is not None:
            conds.append(f"{table}.ts < ?")
            params.append(flt.until)
        if flt.sites:
            conds.append(f"{table}.site IN ({','.join('?' * len(flt.sites))})")
            params.extend(flt.sites)
        if flt.ids:
            conds.append(f"{table}.id IN (SELECT value FROM json_each(?))")
            params.append(dumps(list(flt.ids)).decode())
        return (" WHERE " + " AND ".join(conds)) if conds else "", params

    def _simple_table(self, conn: sqlite3.Connection, kind: str) -> str | None:
        """The kind's table, or None when this (read-only, older) store has none yet."""
        table = simple_tables().get(kind)
        if table is None:
            raise ValueError(f"{kind!r} is not a simple stored kind")
        found = conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)
        ).fetchone()
        return table if found else None

    def _simple_expr(self, table: str, field_name: str) -> tuple[str, list[Any]]:
        if field_name in SIMPLE_COLUMNS:
            return f"{table}.{SIMPLE_COLUMNS[field_name]}", []
        return f"json_extract({table}.doc, ?)", [_json_path(field_name)]

    def _simple_last_seen_by(
        self, kind: str, flt: AlertFilter, field_name: str, size: int
    ) -> list[tuple[str, float]]:
        with self._reading() as conn:
            table = self._simple_table(conn, kind)
            if table is None:
                return []
            expr, fparams = self._simple_expr(table, field_name)
            where, params = self._simple_where(flt, table)
            where = self._and_not_null(self._and_not_null(where, expr), f"{table}.ts")
            rows = conn.execute(
                f"SELECT {expr} AS v, max({table}.ts) AS last FROM {table}{where} "
                "GROUP BY v ORDER BY last DESC, v LIMIT ?",
                [*fparams, *params, *fparams, size],
            ).fetchall()
        return [(_key(v), float(last)) for v, last in rows]

    def latest(self, kind: str, flt: AlertFilter, size: int = 1000) -> list[dict]:
        """The newest document of ``kind`` per value of its ``latest_by`` field (a sensor's
        last heartbeat) among those matching ``flt``, newest first."""
        key = kinds.get(kind).latest_by
        if key is None:
            raise ValueError(f"document kind {kind!r} keeps no latest document")
        with self._reading() as conn:
            table = self._simple_table(conn, kind)
            if table is None:
                return []
            expr, fparams = self._simple_expr(table, key)
            where, params = self._simple_where(flt, table)
            where = self._and_not_null(self._and_not_null(where, expr), f"{table}.ts")
            # the newest row per key: max(ts) with a bare column is SQLite's documented
            # "the row holding the max" form
            rows = conn.execute(
                f"SELECT {table}.doc, max({table}.ts) AS last FROM {table}{where} "
                f"GROUP BY {expr} ORDER BY last DESC LIMIT ?",
                [*params, *fparams, *fparams, size],
            ).fetchall()
        return [orjson.loads(row[0]) for row in rows]

    def search_assets(self, flt: AssetFilter) -> tuple[int, list[dict]]:
        """(total matching, one page of assets by site then IP)."""
        conds: list[str] = []
        params: list[Any] = []
        if flt.sites:
            conds.append(f"assets.site IN ({','.join('?' * len(flt.sites))})")
            params.extend(flt.sites)
        if flt.role:
            conds.append("assets.id IN (SELECT asset_id FROM asset_roles WHERE role = ?)")
            params.append(flt.role)
        if flt.vendor:
            conds.append("assets.vendor LIKE ? ESCAPE '\\'")
            params.append(_like(flt.vendor))
        if flt.first_seen_since is not None:
            conds.append("assets.first_seen >= ?")
            params.append(flt.first_seen_since)
        if flt.last_seen_since is not None:
            conds.append("assets.last_seen >= ?")
            params.append(flt.last_seen_since)
        where = (" WHERE " + " AND ".join(conds)) if conds else ""
        with self._reading() as conn:
            total = conn.execute(f"SELECT count(*) FROM assets{where}", params).fetchone()[0]
            rows = conn.execute(
                f"SELECT doc FROM assets{where} ORDER BY site, ip_key, id LIMIT ? OFFSET ?",
                [*params, max(0, flt.limit), max(0, flt.offset)],
            ).fetchall()
        return total, [orjson.loads(row[0]) for row in rows]

    def counts(self) -> dict[str, int]:
        """Documents stored, per kind."""
        out = {}
        with self._reading() as conn:
            for kind in kinds.names():
                table = kind + "s" if kind in SHAPED_KINDS else simple_tables().get(kind)
                if table is None:
                    continue
                if kind not in SHAPED_KINDS and self._simple_table(conn, kind) is None:
                    out[kind] = 0
                    continue
                out[kind] = conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
        return out

    @staticmethod
    def _and_not_null(where: str, expr: str) -> str:
        cond = f"{expr} IS NOT NULL"
        return f"{where} AND {cond}" if where else f" WHERE {cond}"


def merge_alert(stored: dict[str, Any], incoming: dict[str, Any]) -> dict[str, Any] | None:
    """An alert whose ``event.id`` is already stored: ``None`` when it brings nothing new (the
    same triggering events delivered again), else the stored alert with ``icsmon.alert.count``
    increased by the incoming count, the triggering event ids joined, ``event.start`` and
    ``event.end`` widened to cover both, and the highest severity.
    """
    old_ids = _as_list(stored.get("icsmon.alert.event_ids"))
    new_ids = _as_list(incoming.get("icsmon.alert.event_ids"))
    if new_ids and set(map(str, new_ids)) <= set(map(str, old_ids)):
        return None
    merged = dict(stored)
    old_count = _int_or_none(stored.get("icsmon.alert.count")) or 1
    new_count = _int_or_none(incoming.get("icsmon.alert.count")) or 1
    merged["icsmon.alert.count"] = old_count + new_count
    if old_ids or new_ids:
        merged["icsmon.alert.event_ids"] = _union(old_ids, new_ids, MAX_EVENT_IDS)
    for key, later in (("event.start", False), ("event.end", True)):
        a, b = to_epoch(stored.get(key)), to_epoch(incoming.get(key))
        if b is not None and (a is None or (b > a if later else b < a)):
            merged[key] = incoming[key]
    old_sev = _int_or_none(stored.get("event.severity"))
    new_sev = _int_or_none(incoming.get("event.severity"))
    if new_sev is not None and (old_sev is None or new_sev > old_sev):
        merged["event.severity"] = new_sev
    return merged


def _int_or_none(value: Any) -> int | None:
    """An indexed integer column's value; None for what is not a number SQLite can hold."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        number = value
    elif isinstance(value, float | str):
        try:
            number = int(float(value))
        except (ValueError, OverflowError):  # "high", nan, inf
            return None
    else:
        return None
    # SQLite integers are signed 64-bit: a larger one would fail the whole insert
    return number if -(1 << 63) <= number < 1 << 63 else None


def _str_or_none(value: Any) -> str | None:
    return None if value is None else str(value)


def _text(value: Any) -> str | None:
    """A column value for text fields: strings only (a list or a number in ``labels.site``
    is a malformed document; it is kept whole in ``doc`` and left out of the index)."""
    return value if isinstance(value, str) else None


def _key(value: Any) -> str:
    return value if isinstance(value, str) else str(value)


def open_store(path: str | os.PathLike[str] | None = None, **options: Any) -> Store:
    """A read-only store for queries (the file must exist)."""
    return Store(path, readonly=True, **options)


def iter_docs(store: Store, which: Iterable[str] | None = None) -> Iterator[tuple[str, dict]]:
    """Every stored document in the order written, read a page at a time (for export)."""
    for kind in kinds.names() if which is None else which:
        kinds.get(kind)  # raises for an unknown kind
        last = 0
        while True:
            with store._reading() as conn:
                if kind in SHAPED_KINDS:
                    table = DOC_TABLE.get(f"{kind}s", "assets")
                else:
                    found = store._simple_table(conn, kind) if kind in simple_tables() else None
                    if found is None:
                        break
                    table = found
                rows = conn.execute(
                    f"SELECT rowid, doc FROM {table} WHERE rowid > ? ORDER BY rowid LIMIT 1000",
                    (last,),
                ).fetchall()
            if not rows:
                break
            last = rows[-1][0]
            for _, doc in rows:
                yield kind, orjson.loads(doc)
