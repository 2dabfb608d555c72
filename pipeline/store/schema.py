"""The store file on disk: tables, versions and upgrades, and opening a connection.

Every document kind has a row table of indexed columns (``TABLES``: the fields filters and
aggregations use) and keeps each document whole as JSON: events in compressed blocks
(``event_blocks``, below), alerts in a documents table under the same rowid (``alert_docs``:
filters, counts and histograms walk narrow rows and indexes, only the page asked for reads
the JSON), the other kinds in the row itself (few and small). List fields filters need have
side tables (``alert_techniques``...).

Events are most of a store: a row each in ``events`` (id, time and the columns searches
filter on; indexed by time only) and their documents, as written, in blocks of up to
``BLOCK_EVENTS`` consecutive rowids (``event_blocks``: lz4, one JSON document per line, line
``rowid - first``, an empty line where no event is). ``event_flows`` names the blocks that
hold a flow's events (``network.community_id``): a pivot reads those blocks' rows only, for
a row per flow and block instead of an index entry per event. ``event_keys`` finds an
event by id the same way: an entry per key of the ids (``id_key``: a sensor's flow) and
batch written, with the range of its ids there (``id_rank``) and the rows they are among. A
UNIQUE index of the ids (schema 8 and before) took an entry per event at a random place,
and the writer's cost per event grew with the store (``bench_store.py --growth``: 4.3-4.8
µs per event on a store of 0.2-0.3 M events, 5.5-6.0 at 1.4-1.7 M; with the key entries
2.6-2.75 and 3.1-3.4; with no id index at all 2.2-2.3 and 2.6-2.8). Documents are stored as
the writer received them (a sensor's times are numbers) and given text times when read
(``sensor.timestamps.render_times``), so a stored event reads back as it did when stored
rendered (schema 7 and before).

A new kind of document is a new ``Table`` entry, its ``CREATE`` statements in ``_SCHEMA``,
a migration that creates them in older stores (``MIGRATIONS``, ``SCHEMA_VERSION`` + 1), and
its write function in ``pipeline.store.writer``.

``PRAGMA application_id`` marks an icsmon store; ``PRAGMA user_version`` is the schema
version, upgraded on a read-write open by the functions in ``MIGRATIONS``.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lz4.block

from pipeline.store.launch import STORE_ENV, default_store_path, resolve_store_path  # noqa: F401
from sensor.logs import LazyLogger

log = LazyLogger(__name__)  # logging imported at the first message

APPLICATION_ID = 0x49434D53  # "ICMS": tells an icsmon store from any other SQLite file
SCHEMA_VERSION = 9

CACHE_KIB = 32 * 1024  # SQLite page cache of the writing connection
READER_CACHE_KIB = 8 * 1024  # and of each querying thread's connection
# Pages of WAL between checkpoints (16 MiB of 4 KiB pages). 256 MiB cost a live sensor's
# writer about 1 µs per event less on a store of 1.7 M events (each new id dirties a random
# page of the id's index; a checkpoint copies a page once however often it was written), but
# left the whole checkpoint to the store's close, which the sensor waits for: the default
# replay of the user-path capture took 1.00-1.07 s wall against 0.97-1.02.
WAL_CHECKPOINT_PAGES = 4096
# ... and, in the store's writer process while it has nothing to do (``StoreWriter.
# checkpoint_grown``), once the file grew by this many pages since its last checkpoint: what
# the store's close would copy otherwise (a replay's whole store, ~15 MiB, which the command
# waits for). A store that does not grow (a live sensor's, at its retention) keeps to
# WAL_CHECKPOINT_PAGES, as does a writer never idle.
IDLE_CHECKPOINT_PAGES = 1024
BLOCK_EVENTS = 256  # events per compressed block of documents
KEY_SPAN_ROWS = 2000  # events per key entry of a migrated store (the writer's: its batch's)


@dataclass(frozen=True)
class Table:
    """Where one kind of document lives."""

    kind: str  # the document kind ("event")
    name: str  # its row table ("events")
    docs: (
        str | None
    )  # where whole documents are (alerts: same rowid; events: blocks), None: ``doc`` in the row
    columns: dict[str, str]  # field -> indexed column of the row table
    lists: dict[str, tuple[str, str]] = field(default_factory=dict)  # field -> (side table, column)


TABLES = {
    "event": Table(
        "event",
        "events",
        "event_blocks",
        {
            "labels.site": "site",
            "network.protocol": "protocol",
            "event.action": "action",
            "observer.name": "observer",
            "network.community_id": "community_id",
        },
    ),
    "alert": Table(
        "alert",
        "alerts",
        "alert_docs",
        {
            "event.severity": "severity",
            "labels.site": "site",
            "rule.id": "rule_id",
            "rule.name": "rule_name",
            "network.protocol": "protocol",
            "observer.name": "observer",
            "organization.id": "org",
            "network.community_id": "community_id",
            "rule.ruleset": "ruleset",
        },
        {
            "threat.technique.id": ("alert_techniques", "technique"),
            "threat.tactic.name": ("alert_tactics", "tactic"),
        },
    ),
    "asset": Table(
        "asset",
        "assets",
        None,
        {"labels.site": "site", "host.ip": "ip", "ics.device.vendor": "vendor"},
        {"asset.roles": ("asset_roles", "role")},
    ),
    "finding": Table(
        "finding",
        "findings",
        None,
        {
            "labels.site": "site",
            "asset.id": "asset_id",
            "finding.kind": "kind",
            "finding.severity": "severity",
        },
    ),
    "heartbeat": Table(
        "heartbeat",
        "heartbeats",
        None,
        {"labels.site": "site", "observer.name": "observer", "organization.id": "org"},
    ),
    "rollup": Table(
        "rollup",
        "rollups",
        None,
        {
            "labels.site": "site",
            "observer.name": "observer",
            "organization.id": "org",
            "source.ip": "client",
            "destination.ip": "server",
            "network.protocol": "protocol",
            "ics.operation": "operation",
            "ics.function": "function",
        },
    ),
    "response": Table(
        "response",
        "responses",
        None,
        {
            "labels.site": "site",
            "observer.name": "observer",
            "icsmon.control.request_id": "request_id",
            "icsmon.control.status": "status",
        },
    ),
}

# The latest schema, for new stores; older stores are upgraded by MIGRATIONS (a test checks
# that both give the same tables, columns and indexes).
_SCHEMA = (
    """
CREATE TABLE events (
    rowid INTEGER PRIMARY KEY,
    id TEXT NOT NULL,
    ts REAL,
    site TEXT,
    protocol TEXT,
    action TEXT,
    observer TEXT,
    community_id TEXT
);
CREATE INDEX events_ts ON events(ts);
CREATE TABLE event_blocks (
    first INTEGER PRIMARY KEY,
    last INTEGER NOT NULL,
    docs BLOB NOT NULL
);
CREATE TABLE event_flows (
    block INTEGER NOT NULL,
    community_id TEXT NOT NULL,
    PRIMARY KEY (block, community_id)
) WITHOUT ROWID;
CREATE INDEX event_flows_community ON event_flows(community_id);
CREATE TABLE event_keys (
    key TEXT NOT NULL,
    hi TEXT NOT NULL,
    lo TEXT NOT NULL,
    first INTEGER NOT NULL,
    last INTEGER NOT NULL,
    PRIMARY KEY (key, hi, first)
) WITHOUT ROWID;
CREATE INDEX event_keys_last ON event_keys(last);

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

CREATE TABLE alert_events (
    rule_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    alert_rowid INTEGER NOT NULL REFERENCES alerts(rowid),
    PRIMARY KEY (rule_id, event_id, alert_rowid)
) WITHOUT ROWID;

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

CREATE TABLE findings (
    id TEXT PRIMARY KEY,
    site TEXT,
    asset_id TEXT,
    kind TEXT,
    severity INTEGER,
    first_seen REAL,
    last_seen REAL,
    doc TEXT NOT NULL
);
CREATE INDEX findings_site ON findings(site, last_seen);
CREATE INDEX findings_asset ON findings(asset_id);
"""
    + """
CREATE TABLE heartbeats (
    rowid INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    ts REAL,
    site TEXT,
    observer TEXT,
    org TEXT,
    doc TEXT NOT NULL
);
CREATE INDEX heartbeats_ts ON heartbeats(ts);
CREATE INDEX heartbeats_observer_ts ON heartbeats(observer, ts);

CREATE TABLE rollups (
    rowid INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    ts REAL,
    site TEXT,
    observer TEXT,
    org TEXT,
    client TEXT,
    server TEXT,
    protocol TEXT,
    operation TEXT,
    function TEXT,
    transactions INTEGER,
    doc TEXT NOT NULL
);
CREATE INDEX rollups_ts ON rollups(ts);
CREATE INDEX rollups_site_ts ON rollups(site, ts);
"""
    + """
CREATE TABLE responses (
    rowid INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    ts REAL,
    site TEXT,
    observer TEXT,
    request_id TEXT,
    status TEXT,
    part INTEGER,
    doc TEXT NOT NULL
);
CREATE INDEX responses_request ON responses(request_id, part);
CREATE INDEX responses_ts ON responses(ts);
"""
)


def _run_statements(conn: sqlite3.Connection, script: str) -> None:
    """Each statement of ``script`` (``;``-separated, no ``;`` inside one)."""
    for statement in script.split(";"):
        if statement.strip():
            conn.execute(statement)


def _schema_part(first: str, until: str | None = None) -> str:
    """``_SCHEMA``'s statements from the one that begins with ``first`` up to the one that
    begins with ``until`` (None: to the end)."""
    start = _SCHEMA.index(first)
    return _SCHEMA[start : _SCHEMA.index(until) if until is not None else len(_SCHEMA)]


def _schema_statement(first: str) -> str:
    """The one statement of ``_SCHEMA`` that begins with ``first``."""
    start = _SCHEMA.index(first)
    return _SCHEMA[start : _SCHEMA.index(";", start)]


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
    for table, docs in (("events", "event_docs"), ("alerts", "alert_docs")):
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


_FINDINGS = """CREATE TABLE findings (
    id TEXT PRIMARY KEY,
    site TEXT,
    asset_id TEXT,
    kind TEXT,
    severity INTEGER,
    first_seen REAL,
    last_seen REAL,
    doc TEXT NOT NULL
);
CREATE INDEX findings_site ON findings(site, last_seen);
CREATE INDEX findings_asset ON findings(asset_id);
"""


def _migrate_4_to_5(conn: sqlite3.Connection) -> None:
    """Version 5 keeps findings (one row per finding.id, merged)."""
    _run_statements(conn, _FINDINGS)


def _migrate_5_to_6(conn: sqlite3.Connection) -> None:
    """Version 6 keeps the sensor's heartbeats and its rollups (docs/schema.md)."""
    _run_statements(conn, _schema_part("CREATE TABLE heartbeats", "CREATE TABLE responses"))


def _migrate_6_to_7(conn: sqlite3.Connection) -> None:
    """Version 7 keeps the sensors' answers to control requests (evidence)."""
    _run_statements(conn, _schema_part("CREATE TABLE responses"))


def pack_block(text: bytes | memoryview) -> bytes:
    """A block's documents, already joined by newlines, as stored."""
    return lz4.block.compress(text)


def block_text(block: bytes) -> bytes:
    """A stored block's documents joined by newlines (``pack_block`` undone)."""
    return lz4.block.decompress(block)


def pack_events(docs: list[bytes]) -> bytes:
    """A block of event documents (one JSON each, ``b""`` where no event is) as stored."""
    return pack_block(b"\n".join(docs))


def unpack_events(block: bytes) -> list[bytes]:
    """The documents of a stored block, one per rowid from its first (``b""``: none)."""
    return block_text(block).split(b"\n")


_NUMBER = "0123456789"


def id_key(event_id: str) -> str:
    """The key ``event_keys`` finds an event id by: the id without the number at its end
    (a sensor's ``{flow uid}-{n}``: the flow's uid, so a flow's events share a key)."""
    return event_id.rstrip(_NUMBER).rstrip("-")


def id_rank(event_id: str, key: str) -> str:
    """Where an id sorts among its key's ids (``event_keys``' lo and hi), as text: by
    length, then as text, so a flow's ids sort by their number (``uid-10`` after ``uid-9``)
    and a sensor's new events rank above every stored event of their flow."""
    return f"{len(event_id):010d}{event_id[len(key) :]}"


KeySpan = tuple[str, str, str, int, int]  # an event_keys row: key, hi, lo, first, last
KEY_INSERT = "INSERT INTO event_keys (key, hi, lo, first, last) VALUES (?, ?, ?, ?, ?)"


def key_spans(ids: Sequence[str], first: int) -> list[KeySpan]:
    """The ``event_keys`` rows of events with these ids stored from rowid ``first`` on, one
    after another: per key, its highest and lowest id's ranks and its first and last row."""
    spans: dict[str, list[Any]] = {}  # key -> [lowest id, highest id, first, last position]
    for at, event_id in enumerate(ids):
        key = event_id.rstrip(_NUMBER).rstrip("-")  # id_key, inline (every stored event)
        span = spans.get(key)
        if span is None:
            spans[key] = [event_id, event_id, at, at]
            continue
        span[3] = at
        size, hi = len(event_id), span[1]
        if size > len(hi) or (size == len(hi) and event_id > hi):
            span[1] = event_id
        else:
            lo = span[0]
            if size < len(lo) or (size == len(lo) and event_id < lo):
                span[0] = event_id
    return [
        (key, id_rank(hi, key), id_rank(lo, key), first + a, first + b)
        for key, (lo, hi, a, b) in spans.items()
    ]


def id_probes(ids: Sequence[str]) -> str:
    """The JSON parameter of ``EVENTS_BY_ID`` for these ids."""
    probes = []
    for event_id in ids:
        key = id_key(event_id)
        probes.append((key, id_rank(event_id, key), event_id))
    return json.dumps(probes)


# (id, rowid) of the stored events whose ids ``id_probes`` gave: each id's key entries
# whose range of ranks holds it, then their rows with that id (an id may come out twice)
EVENTS_BY_ID = (
    "SELECT e.id, e.rowid FROM json_each(?) j "
    "CROSS JOIN event_keys k ON k.key = json_extract(j.value, '$[0]') "
    "AND k.hi >= json_extract(j.value, '$[1]') AND k.lo <= json_extract(j.value, '$[1]') "
    "CROSS JOIN events e ON e.rowid BETWEEN k.first AND k.last "
    "AND e.id = json_extract(j.value, '$[2]')"
)


# the rowid of the stored event with this id (the parameters ``id_params`` gives): what
# EVENTS_BY_ID does for one id, its values bound as they are. SQLite's JSON functions end a
# text at U+0000, so an id holding one (a document's, not the engine's) never matched
# through EVENTS_BY_ID's JSON
EVENT_BY_ID = (
    "SELECT e.rowid FROM event_keys k "
    "CROSS JOIN events e ON e.rowid BETWEEN k.first AND k.last AND e.id = :id "
    "WHERE k.key = :key AND k.hi >= :rank AND k.lo <= :rank LIMIT 1"
)


def id_params(event_id: str) -> dict[str, str]:
    """The parameters of ``EVENT_BY_ID`` for this id."""
    key = id_key(event_id)
    return {"id": event_id, "key": key, "rank": id_rank(event_id, key)}


def _migrate_7_to_8(conn: sqlite3.Connection) -> None:
    """Version 8 keeps event documents in compressed blocks (``event_blocks``), indexes the
    events' flows per block (``event_flows``) instead of per event, and drops the events'
    (observer, time) index, which no query needed. The documents go over as they are (times
    as text: they read back the same). Alerts' triggering events get a side table
    (``alert_events``: a hunt's "already raised" check reads it, not the alerts' JSON)."""
    _run_statements(conn, _schema_part("CREATE TABLE event_blocks", "CREATE TABLE event_keys"))
    conn.execute("DROP INDEX IF EXISTS events_observer_ts")
    conn.execute("DROP INDEX IF EXISTS events_community")
    rows = conn.execute(
        "SELECT e.rowid, e.community_id, CAST(d.doc AS BLOB) FROM events e "
        "JOIN event_docs d ON d.rowid = e.rowid ORDER BY e.rowid"
    )
    first = last = 0
    docs: list[bytes] = []
    flows: set[str] = set()

    def put() -> None:
        conn.execute(
            "INSERT INTO event_blocks (first, last, docs) VALUES (?, ?, ?)",
            (first, last, pack_events(docs)),
        )
        conn.executemany(
            "INSERT INTO event_flows (block, community_id) VALUES (?, ?)",
            [(first, flow) for flow in sorted(flows)],
        )

    for rowid, flow, doc in rows:  # read while the blocks are written (other tables)
        if docs and rowid - first >= BLOCK_EVENTS:
            put()
            docs, flows = [], set()
        if not docs:
            first = rowid
        docs.extend([b""] * (rowid - first - len(docs)))  # rowids no event has
        docs.append(doc)
        last = rowid
        if isinstance(flow, str):
            flows.add(flow)
    if docs:
        put()
    # events without a document (none should be) have nothing to read back: they go too
    conn.execute("DELETE FROM events WHERE rowid NOT IN (SELECT rowid FROM event_docs)")
    conn.execute("DROP TABLE event_docs")
    conn.execute(_schema_statement("CREATE TABLE alert_events"))
    conn.execute(
        "INSERT OR IGNORE INTO alert_events (rule_id, event_id, alert_rowid) "
        "SELECT a.rule_id, j.value, a.rowid FROM alerts a JOIN alert_docs d ON d.rowid = a.rowid, "
        "json_each(d.doc, '$.\"icsmon.alert.event_ids\"') j "
        "WHERE a.rule_id IS NOT NULL AND j.type = 'text'"
    )


def _migrate_8_to_9(conn: sqlite3.Connection) -> None:
    """Version 9 finds events by id through ``event_keys`` (an entry per flow and block)
    instead of a UNIQUE index on the id (an entry per event, at a random place: the writer's
    cost grew with the store). SQLite cannot drop a column's UNIQUE: the events' rows go
    into a table made anew (same columns, same rowids)."""
    create = _schema_statement("CREATE TABLE events")
    conn.execute(create.replace("CREATE TABLE events", "CREATE TABLE events_9", 1))
    columns = ", ".join(("rowid", "id", "ts", *TABLES["event"].columns.values()))
    conn.execute(f"INSERT INTO events_9 ({columns}) SELECT {columns} FROM events ORDER BY rowid")
    conn.execute("DROP TABLE events")  # and its indexes
    conn.execute("ALTER TABLE events_9 RENAME TO events")
    conn.execute(_schema_statement("CREATE INDEX events_ts"))
    _run_statements(conn, _schema_part("CREATE TABLE event_keys", "CREATE TABLE alerts"))
    # the key entries of each run of KEY_SPAN_ROWS events, as a sensor's batches write them
    rows = conn.execute("SELECT rowid, id FROM events ORDER BY rowid")
    while chunk := rows.fetchmany(KEY_SPAN_ROWS):  # read while event_keys is written
        conn.executemany(
            KEY_INSERT,
            [
                (key, hi, lo, chunk[a][0], chunk[b][0])
                for key, hi, lo, a, b in key_spans([event_id for _, event_id in chunk], 0)
            ],
        )


# MIGRATIONS[n] upgrades a version-n store to version n + 1, inside one transaction.
MIGRATIONS: dict[int, Callable[[sqlite3.Connection], None]] = {
    1: _migrate_1_to_2,
    2: _migrate_2_to_3,
    3: _migrate_3_to_4,
    4: _migrate_4_to_5,
    5: _migrate_5_to_6,
    6: _migrate_6_to_7,
    7: _migrate_7_to_8,
    8: _migrate_8_to_9,
}


class StoreError(Exception):
    """The store file cannot be used; ``str()`` is one line that names the file."""


def store_error(path: Path, what: str, exc: BaseException | None = None) -> StoreError:
    detail = f" ({exc})" if exc is not None else ""
    return StoreError(f"{path}: {what}{detail}")


def describe(path: Path, exc: sqlite3.Error) -> StoreError:
    """One line for what SQLite says about a bad file."""
    msg = str(exc)
    if "file is not a database" in msg:
        return store_error(path, "not an icsmon store (not an SQLite database)")
    if "malformed" in msg or "corrupt" in msg:
        return store_error(
            path, f"the store is corrupt ({msg}); restore a backup or start a new file"
        )
    if "locked" in msg or "busy" in msg:
        return store_error(path, f"the store is locked by another process ({msg})")
    if "readonly" in msg or "unable to open" in msg:
        return store_error(path, f"cannot open the store ({msg})")
    return store_error(path, f"store error ({msg})")


def connect(path: Path, readonly: bool, busy_timeout: float) -> sqlite3.Connection:
    """The connection that writes (or, ``readonly``, checks) the store at ``path``: created
    when missing and writable, checked to be an icsmon store, upgraded to this schema."""
    if path.is_dir():
        raise store_error(path, "is a directory, not an icsmon store file")
    if readonly:
        if not path.exists():
            raise store_error(
                path,
                "no icsmon store here (icsmon replay/sense write one; --store PATH or "
                "$ICSMON_STORE names another)",
            )
        target, uri = path.resolve().as_uri() + "?mode=ro", True
    else:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise store_error(path, "cannot create the folder for the store", exc) from exc
        target, uri = str(path), False
    try:
        conn = sqlite3.connect(
            target,
            uri=uri,
            timeout=busy_timeout,
            isolation_level=None,  # transactions are explicit: BEGIN IMMEDIATE per batch
            check_same_thread=False,  # the background flusher shares it, under the store's lock
        )
    except sqlite3.Error as exc:
        raise store_error(path, "cannot open the store", exc) from exc
    try:
        _check_and_init(path, conn, readonly)
    except StoreError:
        conn.close()
        raise
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise describe(path, exc) from exc
    return conn


def connect_reader(path: Path, busy_timeout: float) -> sqlite3.Connection:
    """A read-only connection for queries (one per querying thread)."""
    try:
        conn = sqlite3.connect(
            path.resolve().as_uri() + "?mode=ro",
            uri=True,
            timeout=busy_timeout,
            isolation_level=None,
            check_same_thread=False,  # close() may come from another thread
        )
        conn.execute(f"PRAGMA cache_size = -{READER_CACHE_KIB}")
    except sqlite3.Error as exc:
        raise describe(path, exc) from exc
    return conn


def _check_and_init(path: Path, conn: sqlite3.Connection, readonly: bool) -> None:
    # One snapshot: read one by one, another process creating the store between the reads
    # made a new store look like "some other program's database".
    conn.execute("BEGIN")
    try:
        app_id = conn.execute("PRAGMA application_id").fetchone()[0]
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    finally:
        conn.execute("COMMIT")
    if app_id != APPLICATION_ID:
        if app_id == 0 and not tables and version == 0:
            if readonly:
                raise store_error(path, "not an icsmon store (an empty file)")
            create(conn)
            version = conn.execute("PRAGMA user_version").fetchone()[0]
        else:
            raise store_error(
                path, "not an icsmon store (an SQLite database of some other program)"
            )
    if version > SCHEMA_VERSION:
        raise store_error(
            path,
            f"written by a newer icsmon (store schema {version}, this one knows up to "
            f"{SCHEMA_VERSION})",
        )
    if not readonly and tables:
        # A damaged page is found now, as one clear error, not as a failing write per batch
        # later. quick_check reads the whole file once (a large store takes a while).
        problem = conn.execute("PRAGMA quick_check(1)").fetchone()[0]
        if problem != "ok":
            problem = " ".join(str(problem).split())
            raise store_error(
                path, f"the store is corrupt ({problem}); restore a backup or start a new file"
            )
    if version < SCHEMA_VERSION:
        if readonly:
            raise store_error(
                path,
                f"store schema {version} is older than {SCHEMA_VERSION}: open it once "
                "read-write (icsmon replay/sense --store) to upgrade it",
            )
        migrate(path, conn, version)
    # A bounded page cache (32 MiB) keeps the id and time indexes' hot pages in memory;
    # it is what inserts with hashed event ids and dashboards' aggregations mostly wait on.
    conn.execute(f"PRAGMA cache_size = -{CACHE_KIB}")
    if not readonly:
        use_wal(conn)
        conn.execute("PRAGMA synchronous = NORMAL")
        # Checkpoint every 16 MiB of WAL rather than 4: fewer fsyncs per batch on a busy disk.
        conn.execute(f"PRAGMA wal_autocheckpoint = {WAL_CHECKPOINT_PAGES}")


def use_wal(conn: sqlite3.Connection, patience: float = 10.0) -> None:
    """WAL mode. Switching needs the file to itself: SQLite answers "locked" at once, without
    its busy wait, while another process opens the same new file, so this waits here."""
    deadline = time.monotonic() + patience
    while True:
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def create(conn: sqlite3.Connection) -> None:
    """The latest schema in an empty file (nothing when another process made it first)."""
    use_wal(conn)
    # NORMAL in WAL mode: a crash of icsmon loses nothing committed; a power cut may lose
    # the last batch but never corrupts the file.
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("BEGIN IMMEDIATE")
    try:
        if conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID:
            # Another process created the store while this one waited for the lock.
            conn.execute("COMMIT")
            return
        _run_statements(conn, _SCHEMA)
        conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:  # SQLite may have rolled back already (disk full, I/O)
            conn.execute("ROLLBACK")
        raise


def migrate(path: Path, conn: sqlite3.Connection, version: int) -> None:
    """Upgrade a store from ``version`` to SCHEMA_VERSION, one transaction per step."""
    while version < SCHEMA_VERSION:
        step = MIGRATIONS.get(version)
        if step is None:
            raise store_error(path, f"no upgrade from store schema {version}")
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
        log.info("%s: upgraded store schema to %d", path, version)
