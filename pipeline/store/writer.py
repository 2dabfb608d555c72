"""Writing the store: the sink side (``pipeline.sinks.Sink``).

Writes are batched: a transaction per ``batch_size`` documents or ``flush_interval`` seconds
(a background thread flushes a quiet sensor), and on ``flush``/``close``. A failed batch (disk
full, file locked too long) is kept and retried; beyond ``max_pending`` documents the oldest
events are dropped first (alerts last), and every loss is counted in ``stats()``. Odd values
(a list where a site name belongs, bytes, sets) are stored as JSON can hold them and left out
of the indexed columns; integers wider than 64 bits are written exactly but read back as
floats (the JSON reader's limit, and Elasticsearch's).

Identity. Alerts and events are de-duplicated by ``event.id`` (deterministic, so a capture
replayed twice or a batch delivered twice stores nothing new). An alert arriving again with
new triggering events adds to ``icsmon.alert.count`` (``merge_alert``). Assets are upserted
by ``asset.id`` and findings by ``finding.id``, each merged by its kind's rule as the kinds
registry names it (``DocKind.merge``: the rule the indexer applies in Elasticsearch too).

Each kind the registry says is stored (``DocKind.stored``) has one write function in
``WRITERS`` (a new kind adds one; tests/pipeline/test_kinds.py checks the two agree).
"""

from __future__ import annotations

import ipaddress
import json
import sqlite3
import threading
import time
from bisect import bisect_right
from collections.abc import Callable
from itertools import accumulate, chain
from pathlib import Path
from typing import Any

import orjson

from pipeline import kinds
from pipeline.assets import as_list, union
from pipeline.docs import dumps
from pipeline.store.schema import (
    BLOCK_EVENTS,
    KEY_INSERT,
    KEY_SPAN_ROWS,
    TABLES,
    KeySpan,
    StoreError,
    block_text,
    key_spans,
    pack_block,
    store_error,
)
from sensor.digests import sha1
from sensor.logs import LazyLogger
from sensor.timestamps import parse_timestamp as to_epoch
from sensor.timestamps import render_times

log = LazyLogger(__name__)  # logging imported at the first message


def _rule(kind: kinds.DocKind) -> Callable[[dict[str, Any], dict[str, Any]], dict[str, Any]]:
    """The merge rule the registry names for a merged kind."""
    assert kind.merge is not None, f"{kind.name} is not a merged kind"
    return kind.merge


MERGE_ASSET = _rule(kinds.ASSET)
MERGE_FINDING = _rule(kinds.FINDING)

MAX_EVENT_IDS = 100  # icsmon.alert.event_ids kept per alert (the count goes on past it)

Counts = dict[str, int]


# ---- column values ------------------------------------------------------------------------


def int_or_none(value: Any) -> int | None:
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


def str_or_none(value: Any) -> str | None:
    return None if value is None else str(value)


def text(value: Any) -> str | None:
    """A column value for text fields: strings only (a list or a number in ``labels.site``
    is a malformed document; it is kept whole in ``doc`` and left out of the index)."""
    return value if isinstance(value, str) else None


def ip_key(ip: Any) -> str | None:
    """Sorts IPv4 before IPv6 and numerically within each (10.0.0.9 before 10.0.0.10)."""
    if not isinstance(ip, str):
        return None
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return "9" + ip
    return f"{addr.version}{addr.packed.hex()}"


# Indexed columns that are not plain text (every other column takes strings only: ``text``)
_COLUMN_VALUE: dict[str, Callable[[Any], Any]] = {
    "severity": int_or_none,
    "rule_id": str_or_none,
    "rule_name": str_or_none,
}


# Per kind, once: the fields of its columns, and the functions that make their values
# (kinds whose columns all take text get the inline path of ``row_values``).
_ROW_FIELDS = {
    kind: tuple((field, _COLUMN_VALUE.get(column, text)) for field, column in t.columns.items())
    for kind, t in TABLES.items()
}
_TEXT_FIELDS = {
    kind: tuple(t.columns)
    for kind, t in TABLES.items()
    if not any(column in _COLUMN_VALUE for column in t.columns.values())
}


def row_values(kind: str, doc: dict) -> list[Any]:
    """The indexed column values of a document, in ``TABLES[kind].columns`` order."""
    fields = _TEXT_FIELDS.get(kind)
    if fields is not None:  # ``text`` inline: a string, else None
        return [v if isinstance(v, str) else None for v in map(doc.get, fields)]
    return [value(doc.get(field)) for field, value in _ROW_FIELDS[kind]]


def doc_id(doc: dict) -> str:
    """``event.id``; a document without one gets a content hash, so it still de-duplicates."""
    value = doc.get("event.id")
    if isinstance(value, str) and value:
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return "sha1:" + sha1(dumps(doc), usedforsecurity=False).hexdigest()


def asset_id(doc: dict) -> str:
    value = doc.get("asset.id")
    if isinstance(value, str) and value:
        return value
    return f"{doc.get('labels.site') or ''}:{doc.get('host.ip') or ''}"


# ---- one write function per kind ----------------------------------------------------------


EventColumns = tuple  # (id, time, the indexed column values...)


def event_columns(doc: dict, content_id: bool = True) -> EventColumns:
    """An event's row but its document: (id, time, indexed column values...). A document
    without an ``event.id`` gets a content hash (of it as stored up to schema 7), or None
    without ``content_id`` (``event_columns_of`` makes it from the JSON)."""
    fields = _TEXT_FIELDS.get("event")
    if fields is not None:  # row_values inline: the hot path of a sensor's store
        values = [v if isinstance(v, str) else None for v in map(doc.get, fields)]
    else:
        values = row_values("event", doc)
    key = doc.get("event.id")
    if not (isinstance(key, str) and key):
        if isinstance(key, int) and not isinstance(key, bool):
            key = str(key)
        else:
            key = doc_id(render_times(doc)) if content_id else None
    return (key, to_epoch(doc.get("@timestamp")), *values)


def event_columns_of(columns: list[Any], doc: bytes) -> EventColumns:
    """``event_columns(..., content_id=False)`` as the writer process receives it, beside the
    document's JSON (``doc``): the content hash made here when there is no id."""
    if columns[0] is None:  # rare: the standard library's parse keeps integers beyond 64 bits
        columns[0] = doc_id(render_times(json.loads(doc)))
    return tuple(columns)


class DocRun:
    """Event documents one after another in one buffer, a newline between each two, and
    their lengths: a run of events as the writer process receives them
    (``pipeline.store.frames.EventsFrame``), read without a bytes object per document
    (a block of them is a slice). ``head`` and ``tail`` share the buffer."""

    __slots__ = ("_text", "_ends", "_lo", "_hi")

    def __init__(self, text: bytes | memoryview, lengths: list[int]) -> None:
        self._text = text
        self._ends = list(accumulate(lengths))  # sums of lengths up to each document
        self._lo, self._hi = 0, len(self._ends)

    def whole(self, lengths: list[int]) -> bool:
        """``lengths`` (those it was made of) are those of its buffer's documents: whole
        numbers, none negative, adding up to the buffer with a newline between each two (a
        check of a received frame, in C)."""
        n = len(self._ends)
        if not n:
            return len(self._text) == 0
        total = self._ends[-1]
        return type(total) is int and min(lengths) >= 0 and total + n - 1 == len(self._text)

    def __len__(self) -> int:
        return self._hi - self._lo

    def _start(self, k: int) -> int:  # where document k of the buffer starts
        return self._ends[k - 1] + k if k else 0

    def span(self, i: int, j: int) -> bytes | memoryview:
        """Documents i to j - 1 (of this run) joined by newlines, without a copy."""
        lo = self._lo
        return self._text[self._start(lo + i) : self._ends[lo + j - 1] + lo + j - 1]

    def __getitem__(self, i: int) -> bytes:
        return bytes(self.span(i, i + 1))

    def _window(self, lo: int, hi: int) -> DocRun:
        run = DocRun.__new__(DocRun)
        run._text, run._ends, run._lo, run._hi = self._text, self._ends, lo, hi
        return run

    def head(self, n: int) -> DocRun:
        return self._window(self._lo, min(self._hi, self._lo + n))

    def tail(self, n: int) -> DocRun:
        return self._window(min(self._hi, self._lo + n), self._hi)


class BatchDocs:
    """A batch's event documents, in order: runs (``DocRun``) and single documents."""

    def __init__(self) -> None:
        self._parts: list[DocRun | bytes] = []
        self._firsts: list[int] = []  # the batch index of each part's first document
        self._n = 0

    @classmethod
    def of(cls, docs: list[bytes]) -> BatchDocs:
        batch = cls()
        for doc in docs:
            batch.add(doc)
        return batch

    def add(self, part: DocRun | bytes) -> None:
        size = len(part) if isinstance(part, DocRun) else 1
        if size:
            self._parts.append(part)
            self._firsts.append(self._n)
            self._n += size

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, i: int) -> bytes:
        k = bisect_right(self._firsts, i) - 1
        part = self._parts[k]
        return part[i - self._firsts[k]] if isinstance(part, DocRun) else part

    def joined(self, i: int, j: int) -> bytes | memoryview:
        """Documents i to j - 1 joined by newlines (a slice of a run when they are one's)."""
        k = bisect_right(self._firsts, i) - 1
        pieces: list[bytes | memoryview] = []
        while i < j:
            part, first = self._parts[k], self._firsts[k]
            if isinstance(part, DocRun):
                end = min(j, first + len(part))
                pieces.append(part.span(i - first, end - first))
                i = end
            else:
                pieces.append(part)
                i += 1
            k += 1
        return pieces[0] if len(pieces) == 1 else b"\n".join(pieces)


def insert_events(conn: sqlite3.Connection, events: list[tuple], counts: Counts) -> None:
    """``insert_event_rows`` for events as (``event_columns``, the document's JSON bytes)."""
    docs = BatchDocs.of([event[1] for event in events])
    insert_event_rows(conn, [event[0] for event in events], docs, counts)


def insert_event_rows(
    conn: sqlite3.Connection, rows: list[Any], docs: BatchDocs, counts: Counts
) -> None:
    """New events only (by event.id): each a row, its document in a block, and per key of
    their ids (``schema.id_key``: a sensor's flow) an ``event_keys`` entry. ``rows`` are the
    events' ``event_columns``, ``docs`` their JSON bytes, in the same order.

    One statement first asks ``event_keys`` for the stored entries whose range of ids
    overlaps the batch's of the same key. A sensor's new events rank above every stored
    event of their flow, so most batches meet none and go in as they are, in one
    ``executemany`` with no work per event in Python but their keys', SQLite numbering the
    rows (max(rowid) + 1 each: the batch holds the write lock, so the blocks' rowids are
    known before). Otherwise (a capture replayed again, a batch delivered twice) the rows
    those entries name say which ids are stored, and the batch goes in without them; an id
    twice in the batch goes in once (its first copy)."""
    base = conn.execute("SELECT coalesce(max(rowid), 0) FROM events").fetchone()[0]
    top = conn.execute(
        "SELECT first, last, docs FROM event_blocks ORDER BY first DESC LIMIT 1"
    ).fetchone()
    ids = [row[0] for row in rows]
    first = _first_free(base, top) + 1
    spans = _key_spans(ids, first)
    ranges = conn.execute(_OVERLAPPING, (orjson.dumps([span[:3] for span in spans]),)).fetchall()
    kept = len(rows)
    known = (
        {row[0] for row in conn.execute(_STORED_IDS, (orjson.dumps(ranges), orjson.dumps(ids)))}
        if ranges
        else set()
    )
    if not known and len(set(ids)) == kept:
        _insert_event_rows(conn, base, top, rows, docs, spans)
    else:
        fresh: dict[str, int] = {}
        for i, key in enumerate(ids):
            fresh.setdefault(key, i)
        chosen = [i for key, i in fresh.items() if key not in known]
        kept = len(chosen)
        _insert_event_rows(
            conn,
            base,
            top,
            [rows[i] for i in chosen],
            BatchDocs.of([docs[i] for i in chosen]),
            _key_spans([ids[i] for i in chosen], first),
        )
    counts["events"] += kept
    counts["duplicates"] += len(rows) - kept


def _key_spans(ids: list[str], first: int) -> list[KeySpan]:
    """``key_spans`` of a batch's ids, an entry per key in each run of KEY_SPAN_ROWS (a
    lookup reads at most that many rows per entry)."""
    return [
        span
        for i in range(0, len(ids), KEY_SPAN_ROWS)
        for span in key_spans(ids[i : i + KEY_SPAN_ROWS], first + i)
    ]


# The rowid ranges of the stored key entries that overlap those of a JSON array of
# [key, hi, lo] (a batch's own entries): what could hold one of its ids
_OVERLAPPING = (
    "SELECT DISTINCT k.first, k.last FROM json_each(?) g "
    "CROSS JOIN event_keys k ON k.key = json_extract(g.value, '$[0]') "
    "AND k.hi >= json_extract(g.value, '$[2]') AND k.lo <= json_extract(g.value, '$[1]')"
)
# Which ids of a JSON array (the second) the rows of rowid ranges (the first) hold
_STORED_IDS = (
    "SELECT e.id FROM json_each(?) r CROSS JOIN events e "
    "ON e.rowid BETWEEN json_extract(r.value, '$[0]') AND json_extract(r.value, '$[1]') "
    "WHERE e.id IN (SELECT value FROM json_each(?))"
)


_EVENT_COLUMNS = ", ".join(("id", "ts", *TABLES["event"].columns.values()))
_EVENT_INSERT = (
    f"INSERT INTO events ({_EVENT_COLUMNS}) "
    f"VALUES ({', '.join('?' * (2 + len(TABLES['event'].columns)))})"
)
_FLOW = 2 + list(TABLES["event"].columns.values()).index("community_id")  # id, ts, columns


_ROWS_PER_STATEMENT = 512  # multi-row VALUES: SQLite binds them in one call, not one per row
_EVENT_INSERT_MANY = f"INSERT INTO events ({_EVENT_COLUMNS}) VALUES " + ", ".join(
    [f"({', '.join('?' * (2 + len(TABLES['event'].columns)))})"] * _ROWS_PER_STATEMENT
)


def _insert_rows(conn: sqlite3.Connection, rows: list[Any]) -> None:
    full = len(rows) - len(rows) % _ROWS_PER_STATEMENT
    for i in range(0, full, _ROWS_PER_STATEMENT):
        conn.execute(
            _EVENT_INSERT_MANY, list(chain.from_iterable(rows[i : i + _ROWS_PER_STATEMENT]))
        )
    conn.executemany(_EVENT_INSERT, rows[full:])


def _first_free(base: int, top: tuple | None) -> int:
    """The rowid new events follow: the events' last (``base``), or the last block's when it
    ends later (the rowids of its deleted events are not used again)."""
    return top[1] if top is not None and top[1] > base else base


def _insert_event_rows(
    conn: sqlite3.Connection,
    base: int,
    top: tuple | None,
    rows: list[Any],
    docs: BatchDocs,
    spans: list[KeySpan],
) -> None:
    """Rows from ``_first_free`` + 1 on, documents into the last block while it has room,
    then new blocks of ``BLOCK_EVENTS``; the rows' key entries (``spans``)."""
    if not rows:
        return
    flows = [row[_FLOW] for row in rows]  # network.community_id
    start = _first_free(base, top)
    if start > base:
        conn.execute(
            f"INSERT INTO events (rowid, {_EVENT_COLUMNS}) "
            f"VALUES ({', '.join('?' * (1 + len(rows[0])))})",
            (start + 1, *rows[0]),
        )
        rows = rows[1:]
    _insert_rows(conn, rows)
    done = 0
    if top is not None and top[1] == start and top[1] - top[0] + 1 < BLOCK_EVENTS:
        done = min(BLOCK_EVENTS - (top[1] - top[0] + 1), len(docs))
        text = b"\n".join((block_text(top[2]), docs.joined(0, done)))
        conn.execute(
            "UPDATE event_blocks SET last = ?, docs = ? WHERE first = ?",
            (start + done, pack_block(text), top[0]),
        )
        conn.executemany(
            "INSERT OR IGNORE INTO event_flows (block, community_id) VALUES (?, ?)",
            [(top[0], flow) for flow in set(flows[:done]) if flow is not None],
        )
    blocks: list[tuple[int, int, bytes]] = []
    block_flows: list[tuple[int, str]] = []
    for i in range(done, len(docs), BLOCK_EVENTS):
        first = start + 1 + i
        end = min(len(docs), i + BLOCK_EVENTS)
        # schema.pack_events of the block's documents, compressed straight from the frame
        blocks.append((first, first + end - i - 1, pack_block(docs.joined(i, end))))
        block_flows.extend(
            (first, flow) for flow in set(flows[i : i + BLOCK_EVENTS]) if flow is not None
        )
    conn.executemany("INSERT INTO event_blocks (first, last, docs) VALUES (?, ?, ?)", blocks)
    conn.executemany("INSERT INTO event_flows (block, community_id) VALUES (?, ?)", block_flows)
    conn.executemany(KEY_INSERT, spans)


def upsert_alerts(conn: sqlite3.Connection, alerts: list[dict], counts: Counts) -> None:
    for doc in alerts:
        _upsert_alert(conn, doc, counts)


def _upsert_alert(conn: sqlite3.Connection, doc: dict, counts: Counts) -> None:
    table = TABLES["alert"]
    key = doc_id(doc)
    row = conn.execute(
        "SELECT a.rowid, d.doc FROM alerts a JOIN alert_docs d ON d.rowid = a.rowid WHERE a.id = ?",
        (key,),
    ).fetchone()
    if row is None:
        columns = ", ".join(table.columns.values())
        marks = ", ".join("?" * (2 + len(table.columns)))
        cur = conn.execute(
            f"INSERT INTO alerts (id, ts, {columns}) VALUES ({marks})",
            (key, to_epoch(doc.get("@timestamp")), *row_values("alert", doc)),
        )
        conn.execute(
            "INSERT INTO alert_docs (rowid, doc) VALUES (?, ?)",
            (cur.lastrowid, dumps(doc).decode()),
        )
        techniques = {str(t).upper() for t in as_list(doc.get("threat.technique.id")) if t}
        conn.executemany(
            "INSERT OR IGNORE INTO alert_techniques (technique, alert_rowid) VALUES (?, ?)",
            [(t, cur.lastrowid) for t in techniques],
        )
        tactics = {t for t in as_list(doc.get("threat.tactic.name")) if isinstance(t, str) and t}
        conn.executemany(
            "INSERT OR IGNORE INTO alert_tactics (tactic, alert_rowid) VALUES (?, ?)",
            [(t, cur.lastrowid) for t in tactics],
        )
        _note_triggers(conn, doc, cur.lastrowid)
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
        (int_or_none(merged.get("event.severity")), rowid),
    )
    conn.execute("UPDATE alert_docs SET doc = ? WHERE rowid = ?", (dumps(merged).decode(), rowid))
    _note_triggers(conn, merged, rowid)
    counts["alerts_merged"] += 1


def _note_triggers(conn: sqlite3.Connection, doc: dict, rowid: int | None) -> None:
    """The (rule, triggering event) pairs of an alert as stored (its ``event_ids``, at most
    ``MAX_EVENT_IDS``): what a hunt's "already raised" check looks up."""
    rule = str_or_none(doc.get("rule.id"))
    if rule is None:
        return
    conn.executemany(
        "INSERT OR IGNORE INTO alert_events (rule_id, event_id, alert_rowid) VALUES (?, ?, ?)",
        [
            (rule, event, rowid)
            for event in as_list(doc.get("icsmon.alert.event_ids"))
            if isinstance(event, str)
        ],
    )


def upsert_assets(conn: sqlite3.Connection, assets: list[dict], counts: Counts) -> None:
    """Observations of one asset in a batch merge first, then into the stored record (the
    asset kind's rule, ``pipeline.assets.merge_asset``)."""
    merged: dict[str, dict] = {}
    for doc in assets:
        key = asset_id(doc)
        previous = merged.get(key)
        merged[key] = MERGE_ASSET(previous, doc) if previous else doc
    for key, doc in merged.items():
        _upsert_asset(conn, key, doc)
        counts["assets"] += 1


def _upsert_asset(conn: sqlite3.Connection, key: str, doc: dict) -> None:
    row = conn.execute("SELECT doc FROM assets WHERE id = ?", (key,)).fetchone()
    doc = MERGE_ASSET(orjson.loads(row[0]), doc) if row is not None else dict(doc)
    doc["asset.id"] = key
    ip = doc.get("host.ip")
    if isinstance(ip, list):
        ip = ip[0] if ip else None
    ip = text(ip)
    conn.execute(
        "INSERT INTO assets (id, site, ip, ip_key, vendor, first_seen, last_seen, doc) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET site = excluded.site, "
        "ip = excluded.ip, ip_key = excluded.ip_key, vendor = excluded.vendor, "
        "first_seen = excluded.first_seen, last_seen = excluded.last_seen, doc = excluded.doc",
        (
            key,
            text(doc.get("labels.site")),
            ip,
            ip_key(ip),
            text(doc.get("ics.device.vendor")),
            to_epoch(doc.get("asset.first_seen")),
            to_epoch(doc.get("asset.last_seen")),
            dumps(doc).decode(),
        ),
    )
    roles = {str(r) for r in as_list(doc.get("asset.roles")) if r}
    conn.executemany(
        "INSERT OR IGNORE INTO asset_roles (role, asset_id) VALUES (?, ?)",
        [(role, key) for role in roles],
    )


def upsert_findings(conn: sqlite3.Connection, findings: list[dict], counts: Counts) -> None:
    """One row per ``finding.id``, merged by the one finding rule."""
    for doc in findings:
        key = text(doc.get("finding.id"))
        if not key:
            counts["rejected"] += 1
            continue
        row = conn.execute("SELECT doc FROM findings WHERE id = ?", (key,)).fetchone()
        doc = MERGE_FINDING(orjson.loads(row[0]) if row is not None else {}, doc)
        conn.execute(
            "INSERT INTO findings (id, site, asset_id, kind, severity, first_seen, last_seen, doc) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET site = excluded.site, "
            "asset_id = excluded.asset_id, kind = excluded.kind, severity = excluded.severity, "
            "first_seen = excluded.first_seen, last_seen = excluded.last_seen, doc = excluded.doc",
            (
                key,
                text(doc.get("labels.site")),
                text(doc.get("asset.id")),
                text(doc.get("finding.kind")),
                int_or_none(doc.get("finding.severity")),
                to_epoch(doc.get("finding.first_seen")),
                to_epoch(doc.get("finding.last_seen")),
                dumps(doc).decode(),
            ),
        )
        counts["findings"] += 1


def insert_heartbeats(conn: sqlite3.Connection, docs: list[dict], counts: Counts) -> None:
    """New heartbeats only, by ``event.id`` (a re-sent one is the same document)."""
    _insert_new(
        conn,
        "heartbeats",
        ("site", "observer", "org"),
        [
            (
                text(d.get("labels.site")),
                text(d.get("observer.name")),
                text(d.get("organization.id")),
            )
            for d in docs
        ],
        docs,
        counts,
    )


def insert_rollups(conn: sqlite3.Connection, docs: list[dict], counts: Counts) -> None:
    """New rollups only, by ``event.id`` (site, series, interval start: a re-send is the same)."""
    _insert_new(
        conn,
        "rollups",
        (
            "site",
            "observer",
            "org",
            "client",
            "server",
            "protocol",
            "operation",
            "function",
            "transactions",
        ),
        [
            (
                text(d.get("labels.site")),
                text(d.get("observer.name")),
                text(d.get("organization.id")),
                text(d.get("source.ip")),
                text(d.get("destination.ip")),
                text(d.get("network.protocol")),
                text(d.get("ics.operation")),
                text(d.get("ics.function")),
                int_or_none(d.get("icsmon.rollup.transactions")),
            )
            for d in docs
        ],
        docs,
        counts,
    )


def upsert_responses(conn: sqlite3.Connection, docs: list[dict], counts: Counts) -> None:
    """Answers by ``event.id`` (request id and part): a re-sent part replaces itself."""
    rows = [
        (
            doc_id(d),
            to_epoch(d.get("@timestamp")),
            text(d.get("labels.site")),
            text(d.get("observer.name")),
            text(d.get("icsmon.control.request_id")),
            text(d.get("icsmon.control.status")),
            int_or_none(d.get("icsmon.control.part")),
            dumps(d).decode(),
        )
        for d in docs
    ]
    conn.executemany(
        "INSERT INTO responses (id, ts, site, observer, request_id, status, part, doc) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET ts = excluded.ts, "
        "site = excluded.site, observer = excluded.observer, request_id = excluded.request_id, "
        "status = excluded.status, part = excluded.part, doc = excluded.doc",
        rows,
    )
    counts["responses"] = counts.get("responses", 0) + len(rows)


def _insert_new(
    conn: sqlite3.Connection,
    table: str,
    columns: tuple[str, ...],
    values: list[tuple],
    docs: list[dict],
    counts: Counts,
) -> None:
    """Rows of a kind kept whole by id (``INSERT OR IGNORE``): id, time, columns, document."""
    names = ", ".join(("id", "ts", *columns, "doc"))
    marks = ", ".join("?" * (len(columns) + 3))
    rows = [
        (doc_id(d), to_epoch(d.get("@timestamp")), *v, dumps(d).decode())
        for d, v in zip(docs, values, strict=True)
    ]
    before = conn.total_changes
    conn.executemany(f"INSERT OR IGNORE INTO {table} ({names}) VALUES ({marks})", rows)
    added = conn.total_changes - before
    counts[table] = counts.get(table, 0) + added
    counts["duplicates"] += len(rows) - added


# Retention (``max_age_s``, ``max_bytes``) removes these, in this order; never alerts,
# assets or findings.
AGED = ("events", "rollups", "heartbeats")
RETENTION_EVERY_S = 5.0  # how often a busy writer checks age and size

WRITERS: dict[str, Callable[[sqlite3.Connection, list[Any], Counts], None]] = {
    "event": insert_events,
    "alert": upsert_alerts,
    "asset": upsert_assets,
    "finding": upsert_findings,
    "heartbeat": insert_heartbeats,
    "rollup": insert_rollups,
    "response": upsert_responses,
}


def merge_alert(stored: dict[str, Any], incoming: dict[str, Any]) -> dict[str, Any] | None:
    """An alert whose ``event.id`` is already stored: ``None`` when it brings nothing new (the
    same triggering events delivered again), else the stored alert with ``icsmon.alert.count``
    increased by the incoming count, the triggering event ids joined, ``event.start`` and
    ``event.end`` widened to cover both, and the highest severity.
    """
    old_ids = as_list(stored.get("icsmon.alert.event_ids"))
    new_ids = as_list(incoming.get("icsmon.alert.event_ids"))
    if new_ids and set(map(str, new_ids)) <= set(map(str, old_ids)):
        return None
    merged = dict(stored)
    old_count = int_or_none(stored.get("icsmon.alert.count")) or 1
    new_count = int_or_none(incoming.get("icsmon.alert.count")) or 1
    merged["icsmon.alert.count"] = old_count + new_count
    if old_ids or new_ids:
        merged["icsmon.alert.event_ids"] = union(old_ids, new_ids, MAX_EVENT_IDS)
    for key, later in (("event.start", False), ("event.end", True)):
        a, b = to_epoch(stored.get(key)), to_epoch(incoming.get(key))
        if b is not None and (a is None or (b > a if later else b < a)):
            merged[key] = incoming[key]
    old_sev = int_or_none(stored.get("event.severity"))
    new_sev = int_or_none(incoming.get("event.severity"))
    if new_sev is not None and (old_sev is None or new_sev > old_sev):
        merged["event.severity"] = new_sev
    return merged


# ---- the batching writer ------------------------------------------------------------------

EVENT_ROWS = "event rows"  # a pending run of events: (their columns, their JSONs)


def _singly(batch: list[tuple[str, Any]]) -> list[tuple[str, Any]]:
    """A batch's items one document each (a run of events as its events)."""
    out: list[tuple[str, Any]] = []
    for kind, item in batch:
        if kind == EVENT_ROWS:
            rows, docs = item
            out.extend(("event", (row, docs[i])) for i, row in enumerate(rows))
        else:
            out.append((kind, item))
    return out


class StoreWriter:
    """The write half of ``pipeline.store.Store``: pending documents, batches, retries.

    Shares ``path``, ``readonly``, ``_lock`` and ``_closed`` with the store it is part of.
    """

    path: Path
    readonly: bool
    _lock: threading.RLock
    _closed: bool

    def _init_writer(
        self,
        conn: sqlite3.Connection,
        batch_size: int,
        flush_interval: float,
        max_events: int | None,
        max_pending: int,
        background_flush: bool,
        max_bytes: int | None = None,
        max_age_s: float | None = None,
    ) -> None:
        self._conn = conn
        self.max_bytes = max_bytes
        self.max_age_s = max_age_s
        self._next_retention = 0.0
        self.batch_size = max(1, batch_size)
        self.flush_interval = flush_interval
        self.max_events = max_events
        self.max_pending = max_pending
        # (kind, document); an event as (its columns, its JSON); a run of events the writer
        # process received as (EVENT_ROWS, (their columns, their JSONs))
        self._pending: list[tuple[str, Any]] = []
        self._pending_docs = 0  # documents in ``_pending``
        self._last_flush = time.monotonic()
        self._counts = {
            "written": 0,
            "events": 0,
            "alerts": 0,
            "alerts_merged": 0,
            "assets": 0,
            "findings": 0,
            "heartbeats": 0,
            "rollups": 0,
            "responses": 0,
            "duplicates": 0,
            "pruned": 0,
            **{f"{t}_pruned_{why}": 0 for t in AGED for why in ("age", "size")},
            "dropped": 0,
            "rejected": 0,
            "errors": 0,
            "batches": 0,
        }
        self._failing = 0  # consecutive failed flushes (disk full, I/O error)
        self._last_error = ""
        self._shed_logged = 0
        self._event_count: int | None = None
        self._checkpointed_pages: int | None = None  # the file's size at the last checkpoint
        self._stop = threading.Event()
        self._flusher: threading.Thread | None = None
        if not self.readonly and background_flush and flush_interval > 0:
            self._flusher = threading.Thread(
                target=self._flush_loop, name=f"store-flush:{self.path.name}", daemon=True
            )
            self._flusher.start()

    def _error(self, what: str, exc: BaseException | None = None) -> StoreError:
        return store_error(self.path, what, exc)

    kinds = tuple(WRITERS)  # the document kinds this sink keeps

    def write(self, kind: str, doc: dict) -> None:
        if kind not in WRITERS:
            if not kinds.get(kind).stored:  # raises for an unknown kind
                return  # a kind the sensor ships but does not keep
            raise ValueError(f"no store table for document kind {kind!r}")
        if self.readonly:
            raise self._error("opened read-only, cannot write")
        if kind != "event":
            # stored as written documents are: times as ISO text (sensor/timestamps.py)
            self._add(kind, render_times(doc))
            return
        # an event is made into its row here, outside the lock; its document is kept as it
        # comes (times as numbers too: rendered when read)
        try:
            row = (event_columns(doc), dumps(doc))
        except Exception as exc:  # a value JSON cannot hold: it costs only itself
            self._reject(kind, exc)
            return
        self._add("event", row)

    def write_event_rows(self, rows: list[list[Any]], docs: DocRun) -> None:
        """Events as their rows' columns (``event_columns(doc, content_id=False)``) and their
        JSON bytes, in the same order: the writer process's way, with no parse of the
        documents and no work per event in Python (they are kept as runs, not one by one)."""
        if self.readonly:
            raise self._error("opened read-only, cannot write")
        missing = [i for i, row in enumerate(rows) if row[0] is None]
        if missing:  # rare: documents without an event.id get a content hash
            bad = set()
            for i in missing:
                try:
                    rows[i] = list(event_columns_of(rows[i], docs[i]))
                except Exception as exc:  # the sensor must go on
                    self._reject("event", exc)
                    bad.add(i)
            if bad:
                kept = [i for i in range(len(rows)) if i not in bad]
                rows = [rows[i] for i in kept]
                texts = [docs[i] for i in kept]
                docs = DocRun(b"\n".join(texts), [len(text) for text in texts])
        while rows:
            with self._lock:
                if self._closed:
                    self._counts["dropped"] += len(rows)
                    return
                room = max(1, self.batch_size - self._pending_docs)
                self._pending.append((EVENT_ROWS, (rows[:room], docs.head(room))))
                self._pending_docs += len(rows[:room])
                rows, docs = rows[room:], docs.tail(room)
                due = self._pending_docs >= self.batch_size or (
                    self.flush_interval > 0
                    and time.monotonic() - self._last_flush >= self.flush_interval
                )
            if due:
                self.flush()

    def _add(self, kind: str, item: Any) -> None:
        with self._lock:
            if self._closed:
                self._counts["dropped"] += 1
                return
            self._pending.append((kind, item))
            self._pending_docs += 1
            due = self._pending_docs >= self.batch_size or (
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
            held, self._pending_docs = self._pending_docs, 0
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
                self._pending_docs += held
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
            try:
                if self.max_events is not None:
                    self._prune()
                if (self.max_bytes or self.max_age_s) and time.monotonic() >= self._next_retention:
                    self._next_retention = time.monotonic() + RETENTION_EVERY_S
                    self._retain()
            except sqlite3.Error as exc:
                self._counts["errors"] += 1
                log.error("%s: cannot prune old events: %s", self.path, exc)

    def _write_one_by_one(self, batch: list[tuple[str, Any]], first: Exception) -> None:
        """A batch failed for something other than a busy or full disk: write its documents
        singly so that one bad document costs only itself (counted as ``rejected``)."""
        log.warning("%s: a batch failed (%s); writing its documents one by one", self.path, first)
        for item in _singly(batch):
            try:
                self._write_batch([item])
            except sqlite3.OperationalError:
                self._pending.append(item)
                self._pending_docs += 1
            except Exception as exc:  # the sensor must go on
                self._reject(item[0], exc)
        self._shed()

    def _reject(self, kind: str, exc: Exception) -> None:
        with self._lock:
            self._counts["rejected"] += 1
            self._counts["errors"] += 1
            if self._counts["rejected"] <= 10:
                log.error("%s: rejected a %s document: %s", self.path, kind, exc)

    def _close_writer(self) -> int:
        """Stop the flusher, write what is pending; the number of documents left unwritten."""
        self._stop.set()
        if self._flusher is not None:
            self._flusher.join()
        self.flush()
        with self._lock:
            unwritten = self._pending_docs
            self._pending, self._pending_docs = [], 0
            self._closed = True  # later writes are counted as dropped
            try:
                if not self.readonly:
                    self._conn.execute("PRAGMA optimize")
            except sqlite3.Error:
                pass  # only a planner hint
            self._conn.close()
        if unwritten:
            self._counts["dropped"] += unwritten
        return unwritten

    def checkpoint_grown(self, pages: int) -> bool:
        """A PASSIVE checkpoint of the WAL when the file grew by ``pages`` or more since the
        last one here (or since the first call); whether it ran. For a writer with nothing else
        to do (the writer process, its input empty): the copy its close would make otherwise,
        done while the sensor still runs. A failure (another connection busy, I/O) is left to
        the next commit's automatic checkpoint, or the close's."""
        with self._lock:
            if self._closed or self.readonly:
                return False
            try:
                size = self._conn.execute("PRAGMA page_count").fetchone()[0]
                if self._checkpointed_pages is None or size - self._checkpointed_pages < pages:
                    if self._checkpointed_pages is None:
                        self._checkpointed_pages = size
                    return False
                self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
            except sqlite3.Error:
                return False
            self._checkpointed_pages = size
            return True

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {**self._counts, "pending": self._pending_docs}

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
        alerts last (``pipeline.kinds``)."""
        excess = self._pending_docs - self.max_pending
        if excess <= 0:
            return
        order = kinds.eviction_order()
        for victim in (*order, *(k for k in kinds.names() if k not in order)):
            if excess <= 0:
                break
            kept: list[tuple[str, Any]] = []
            for item in self._pending:
                if excess > 0 and item[0] == EVENT_ROWS and victim == "event":
                    rows, docs = item[1]
                    n = min(excess, len(rows))  # the run's oldest
                    excess -= n
                    self._counts["dropped"] += n
                    self._pending_docs -= n
                    if n < len(rows):
                        kept.append((EVENT_ROWS, (rows[n:], docs.tail(n))))
                    continue
                if excess > 0 and item[0] == victim:
                    excess -= 1
                    self._counts["dropped"] += 1
                    self._pending_docs -= 1
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

    def _write_batch(self, batch: list[tuple[str, Any]]) -> None:
        conn = self._conn
        by_kind: dict[str, list[Any]] = {kind: [] for kind in WRITERS}
        rows: list[Any] = []  # the events', in the order written
        docs = BatchDocs()
        written = 0
        for kind, doc in batch:
            if kind == EVENT_ROWS:
                rows += doc[0]
                docs.add(doc[1])
                written += len(doc[0])
            elif kind == "event":
                rows.append(doc[0])
                docs.add(doc[1])
                written += 1
            else:
                by_kind[kind].append(doc)
                written += 1
        conn.execute("BEGIN IMMEDIATE")
        try:
            counts = {
                "events": 0,
                "alerts": 0,
                "alerts_merged": 0,
                "assets": 0,
                "findings": 0,
                "heartbeats": 0,
                "rollups": 0,
                "responses": 0,
                "duplicates": 0,
                "rejected": 0,
            }
            if rows:
                insert_event_rows(conn, rows, docs, counts)
            for kind, items in by_kind.items():
                if items:
                    WRITERS[kind](conn, items, counts)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:  # SQLite may have rolled back already (disk full, I/O)
                conn.execute("ROLLBACK")
            raise
        for key, value in counts.items():
            self._counts[key] = self._counts.get(key, 0) + value
        self._counts["written"] += written
        if self._event_count is not None:
            self._event_count += counts["events"]

    def _delete_oldest(self, table: str, where: str, params: list) -> int:
        """Delete rows of ``table`` chosen by ``where`` (events: and the blocks no event is
        left in, with their flows, and the key entries no event is left in); how many rows."""
        conn = self._conn
        chosen = f"SELECT rowid FROM {table} {where}"
        lo = hi = None
        conn.execute("BEGIN IMMEDIATE")
        try:
            if table == "events":
                lo, hi = conn.execute(
                    f"SELECT min(rowid), max(rowid) FROM ({chosen})", params
                ).fetchone()
            cur = conn.execute(f"DELETE FROM {table} WHERE rowid IN ({chosen})", params)
            if table == "events" and lo is not None:
                empty = dumps(
                    [
                        row[0]
                        for row in conn.execute(
                            "SELECT b.first FROM event_blocks b WHERE b.first <= ? "
                            "AND b.last >= ? AND NOT EXISTS (SELECT 1 FROM events e "
                            "WHERE e.rowid BETWEEN b.first AND b.last)",
                            (hi, lo),
                        )
                    ]
                ).decode()
                conn.execute(
                    "DELETE FROM event_blocks WHERE first IN (SELECT value FROM json_each(?))",
                    (empty,),
                )
                conn.execute(
                    "DELETE FROM event_flows WHERE block IN (SELECT value FROM json_each(?))",
                    (empty,),
                )
                # key entries ending among the deleted rows, none of whose rows is left
                conn.execute(
                    "DELETE FROM event_keys WHERE last BETWEEN ? AND ? AND NOT EXISTS "
                    "(SELECT 1 FROM events e WHERE e.rowid BETWEEN event_keys.first "
                    "AND event_keys.last)",
                    (lo, hi),
                )
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        if table == "events" and self._event_count is not None:
            self._event_count -= cur.rowcount
        return cur.rowcount

    def used_bytes(self) -> int:
        """Bytes of the file in use (freed pages are reused before the file grows)."""
        conn = self._conn
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        free = conn.execute("PRAGMA freelist_count").fetchone()[0]
        return (pages - free) * conn.execute("PRAGMA page_size").fetchone()[0]

    def retain(self) -> None:
        """Apply ``max_age_s`` and ``max_bytes`` now (a busy writer does every few seconds)."""
        self.flush()
        with self._lock:
            if not self.readonly and not self._closed:
                self._retain()

    def _retain(self) -> None:
        """Age, then size: events, rollups and heartbeats older than ``max_age_s`` behind the
        newest event go; then, while the file's used bytes exceed ``max_bytes``, the oldest
        events (then rollups, then heartbeats) in slices. Alerts, assets and findings stay:
        they are the record an analyst works from, and small."""
        conn = self._conn
        if self.max_age_s:
            newest = conn.execute("SELECT max(ts) FROM events").fetchone()[0]
            for table in AGED:
                last = conn.execute(f"SELECT max(ts) FROM {table}").fetchone()[0]
                clock = max(x for x in (newest, last, 0.0) if x is not None)
                if not clock:
                    continue
                n = self._delete_oldest(table, "WHERE ts < ?", [clock - self.max_age_s])
                self._counts[f"{table}_pruned_age"] += n
        if not self.max_bytes:
            return
        for table in AGED:
            rounds = 0
            while self.used_bytes() > self.max_bytes and rounds < 64:
                rounds += 1
                rows = conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
                if not rows:
                    break
                # a slice of the oldest: about the excess, at least 1 % of the table
                excess = self.used_bytes() - self.max_bytes
                per_row = max(1, self.used_bytes() // max(1, rows))
                n = min(rows, max(rows // 100, excess // per_row + 1))
                deleted = self._delete_oldest(table, "ORDER BY ts, rowid LIMIT ?", [n])
                self._counts[f"{table}_pruned_size"] += deleted
                if not deleted:
                    break
            if self.used_bytes() <= self.max_bytes:
                break

    def _prune(self) -> None:
        """Keep the newest ``max_events`` events (by @timestamp); alerts are never pruned."""
        assert self.max_events is not None
        if self._event_count is None:
            self._event_count = self._conn.execute("SELECT count(*) FROM events").fetchone()[0]
        excess = self._event_count - self.max_events
        if excess <= 0:
            return
        pruned = self._delete_oldest("events", "ORDER BY ts, rowid LIMIT ?", [excess])
        self._counts["pruned"] += pruned

    # ---- QueryBackend -------------------------------------------------------------------
