"""Reading the store: the query side (``pipeline.query.QueryBackend``).

Queries may run while another process writes: the file is in WAL mode, so readers never
block the writer and see whole batches only. Each querying thread has its own read-only
connection (the posture view runs its aggregations in parallel). Filters use the indexed
columns and side tables of ``schema.TABLES``; aggregations over any other field use
SQLite's JSON1 ``json_each`` on the documents (a list field counts each element, as
Elasticsearch terms do).
"""

from __future__ import annotations

import re
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lz4.block
import orjson

from pipeline import kinds
from pipeline.assets import as_list
from pipeline.docs import dumps
from pipeline.query import PAYLOAD_FIELDS, AlertFilter, AssetFilter
from pipeline.store.schema import (
    EVENT_BY_ID,
    EVENTS_BY_ID,
    TABLES,
    connect_reader,
    describe,
    id_params,
    id_probes,
    store_error,
    unpack_events,
)
from sensor.timestamps import render_times

if TYPE_CHECKING:
    from pipeline.store import Store

_FIELD_NAME = re.compile(r"^[@A-Za-z0-9_][@A-Za-z0-9_.\-]*$")


def _check_field(field_name: str) -> str:
    if not _FIELD_NAME.match(field_name):
        raise ValueError(f"not a field name: {field_name!r}")
    return field_name


def _json_path(field_name: str) -> str:
    return f'$."{_check_field(field_name)}"'


def _like(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


_BY_NAME = {table.name: table for table in TABLES.values()}  # "alerts" -> its Table
_ALERT_LISTS = TABLES["alert"].lists


def _key(value: Any) -> str:
    return value if isinstance(value, str) else str(value)


# Kinds kept whole by id with a time, site and sensor (heartbeats, rollups): time and sites
# of an AlertFilter apply to them.
_TIMED = ("heartbeat", "rollup")


def _timed_where(flt: AlertFilter, table: str) -> tuple[str, list[Any]]:
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


def _and_not_null(where: str, expr: str) -> str:
    cond = f"{expr} IS NOT NULL"
    return f"{where} AND {cond}" if where else f" WHERE {cond}"


class EventDocs:
    """Stored event documents by rowid, read block by block (``schema.unpack_events``); the
    last block read is kept, as readers mostly go in rowid order."""

    def __init__(self) -> None:
        self._first = self._last = -1
        self._lines: list[bytes] = []

    def get(self, conn: sqlite3.Connection, rowid: int) -> bytes | None:
        """The document's JSON bytes, None when no block holds it."""
        if not self._first <= rowid <= self._last:
            row = conn.execute(
                "SELECT first, last, docs FROM event_blocks WHERE first <= ? "
                "ORDER BY first DESC LIMIT 1",
                (rowid,),
            ).fetchone()
            if row is None or row[1] < rowid:
                return None
            try:
                lines = unpack_events(row[2])
            except lz4.block.LZ4BlockError as exc:
                raise sqlite3.DatabaseError(f"database disk image is malformed ({exc})") from exc
            self._first, self._last, self._lines = row[0], row[1], lines
        index = rowid - self._first
        return self._lines[index] if index < len(self._lines) else None

    def read(self, conn: sqlite3.Connection, rowids: Iterable[int]) -> list[dict]:
        """The documents of these events in this order, times as text (as stored before
        schema 8: ``render_times``)."""
        out = []
        for rowid in rowids:
            doc = self.get(conn, rowid)
            if doc:
                out.append(render_times(orjson.loads(doc)))
        return out


def _event_predicate(flt: AlertFilter) -> Callable[[dict], bool] | None:
    """The conditions of ``flt`` on event fields that have no column (severity, technique,
    rule, other fields of ``match``), read from the documents; None when there are none."""
    spec = TABLES["event"]
    match = {name: list(values) for name, values in flt.match.items() if name not in spec.columns}
    for name in match:
        _check_field(name)
    if flt.min_severity is None and not flt.technique and not flt.rule_id and not match:
        return None
    technique = flt.technique.upper() if flt.technique else None

    def keep(doc: dict) -> bool:
        if flt.min_severity is not None:
            severity = doc.get("event.severity")
            if not (
                isinstance(severity, int | float)
                and not isinstance(severity, bool)
                and severity >= flt.min_severity
            ):
                return False
        if technique is not None and not any(
            str(t).upper() == technique for t in as_list(doc.get("threat.technique.id"))
        ):
            return False
        if flt.rule_id and doc.get("rule.id") != flt.rule_id:
            return False
        return all(
            any(v in values for v in as_list(doc.get(name))) for name, values in match.items()
        )

    return keep


class StoreQueries:
    """The query half of ``pipeline.store.Store``.

    Shares ``path``, ``_lock`` and ``_closed`` with the store it is part of.
    """

    path: Path
    _lock: threading.RLock
    _closed: bool

    def _init_readers(self, busy_timeout: float) -> None:
        self._busy_timeout = busy_timeout
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []

    def _close_readers(self) -> None:
        for reader in self._readers:
            reader.close()
        self._readers.clear()

    def _reader(self) -> sqlite3.Connection:
        """This thread's read-only connection: queries from several threads (the posture
        view's parallel aggregations) run side by side instead of queueing on one lock."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            with self._lock:
                if self._closed:
                    raise store_error(self.path, "the store is closed")
                conn = connect_reader(self.path, self._busy_timeout)
                self._readers.append(conn)
            self._local.conn = conn
        return conn

    @contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        """Queries: one consistent snapshot, SQLite errors turned into a one-line StoreError."""
        if self._closed:
            raise store_error(self.path, "the store is closed")
        conn = self._reader()
        try:
            conn.execute("BEGIN")
            try:
                yield conn
            finally:
                conn.execute("COMMIT")
        except sqlite3.Error as exc:
            raise describe(self.path, exc) from exc

    def _where(self, flt: AlertFilter, table: str) -> tuple[str, list[Any]]:
        """SQL conditions for an AlertFilter on ``alerts`` or ``events`` (limit/offset aside).

        On events, conditions on fields without a column (severity, technique, rule, others
        of ``match``) are left to ``_event_predicate`` (they match only the events that carry
        them, read from the documents); ``text`` searches event.action.
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
        if flt.ids and table == "events":
            # through their keys' entries (``schema.EVENTS_BY_ID``: no index of event ids)
            conds.append(f"events.rowid IN (SELECT rowid FROM ({EVENTS_BY_ID}))")
            params.append(id_probes([str(i) for i in flt.ids]))
        elif flt.ids:
            conds.append(f"{table}.id IN (SELECT value FROM json_each(?))")
            params.append(dumps(list(flt.ids)).decode())
        if flt.community_id and table == "events":
            # the flow's blocks, then their rows of the flow (no index per event)
            conds.append(
                "events.rowid IN (SELECT e.rowid FROM event_flows f "
                "JOIN event_blocks b ON b.first = f.block "
                "JOIN events e ON e.rowid BETWEEN b.first AND b.last "
                "WHERE f.community_id = ? AND e.community_id = ?)"
            )
            params.extend([flt.community_id, flt.community_id])
        elif flt.community_id:
            conds.append(f"{table}.community_id = ?")
            params.append(flt.community_id)
        spec = _BY_NAME[table]
        for name, values in flt.match.items():
            if name in spec.columns:
                conds.append(f"{table}.{spec.columns[name]} IN (SELECT value FROM json_each(?))")
                params.append(dumps(list(values)).decode())
                continue
            if table == "events":
                continue  # read from the documents (``_event_predicate``)
            # any element of the field (a scalar is its own one element)
            conds.append(
                f"EXISTS (SELECT 1 FROM {spec.docs} m, json_each(m.doc, ?) j WHERE "
                f"m.rowid = {table}.rowid AND j.value IN (SELECT value FROM json_each(?)))"
            )
            params.extend([_json_path(name), dumps(list(values)).decode()])
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
        elif flt.text:
            # severity, technique and rule of events: from the documents (``_event_predicate``)
            conds.append("events.action LIKE ? ESCAPE '\\'")
            params.append(_like(flt.text))
        return (" WHERE " + " AND ".join(conds)) if conds else "", params

    def _field_source(
        self, table: str, field_name: str, alias: str = "f"
    ) -> tuple[str, str, list[Any]]:
        """(extra FROM clause, value expression, params) for aggregating on a field: its own
        column when it has one, its side table (techniques, tactics), else JSON1 over the
        document (a list field counts each element, as Elasticsearch terms do)."""
        spec = _BY_NAME[table]
        if field_name in spec.columns:
            return "", f"{table}.{spec.columns[field_name]}", []
        if field_name in spec.lists:
            side, column = spec.lists[field_name]
            return (
                f" JOIN {side} {alias} ON {alias}.alert_rowid = alerts.rowid",
                f"{alias}.{column}",
                [],
            )
        docs = spec.docs or table  # documents kept in the row: the table joined to itself
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
                f"JOIN {_BY_NAME[table].docs} d ON d.rowid = page.r ORDER BY page.t DESC, page.r DESC",
                [*params, max(0, flt.limit), max(0, flt.offset)],
            ).fetchall()
        return total, [orjson.loads(row[0]) for row in rows]

    def search_alerts(self, flt: AlertFilter) -> tuple[int, list[dict]]:
        """(total matching, one page of alerts newest first)."""
        return self._search("alerts", flt)

    def search_events(self, flt: AlertFilter) -> tuple[int, list[dict]]:
        """(total matching, one page of events newest first)."""
        where, params = self._where(flt, "events")
        keep = _event_predicate(flt)
        docs = EventDocs()
        order = " ORDER BY events.ts DESC, events.rowid DESC"
        with self._reading() as conn:
            if keep is None:
                total = conn.execute(f"SELECT count(*) FROM events{where}", params).fetchone()[0]
                # the page is chosen on the narrow rows; only its blocks are read
                rows = conn.execute(
                    f"SELECT events.rowid FROM events{where}{order} LIMIT ? OFFSET ?",
                    [*params, max(0, flt.limit), max(0, flt.offset)],
                ).fetchall()
                return total, docs.read(conn, (row[0] for row in rows))
            # conditions on the documents: every candidate is read, in the page's order
            total, page = 0, []
            first, end = max(0, flt.offset), max(0, flt.offset) + max(0, flt.limit)
            candidates = conn.execute(f"SELECT events.rowid FROM events{where}{order}", params)
            for (rowid,) in candidates.fetchall():
                for doc in docs.read(conn, (rowid,)):
                    if keep(doc):
                        if first <= total < end:
                            page.append(doc)
                        total += 1
        return total, page

    def get_alert(self, alert_id: str) -> dict | None:
        with self._reading() as conn:
            row = conn.execute(
                "SELECT d.doc FROM alerts a JOIN alert_docs d ON d.rowid = a.rowid WHERE a.id = ?",
                (alert_id,),
            ).fetchone()
        return orjson.loads(row[0]) if row else None

    def get_event(self, event_id: str) -> dict | None:
        with self._reading() as conn:
            row = conn.execute(EVENT_BY_ID, id_params(event_id)).fetchone()
            found = EventDocs().read(conn, [row[0]]) if row else []
        return found[0] if found else None

    def get_asset(self, asset_id: str) -> dict | None:
        with self._reading() as conn:
            row = conn.execute("SELECT doc FROM assets WHERE id = ?", (asset_id,)).fetchone()
        return orjson.loads(row[0]) if row else None

    def count_alerts_by(
        self, flt: AlertFilter, field_name: str, size: int = 20
    ) -> list[tuple[str, int]]:
        """Terms aggregation in SQL: the ``size`` most frequent values of ``field_name``."""
        where, params = self._where(flt, "alerts")
        if field_name in _ALERT_LISTS:
            # "top techniques/tactics" are the posture view's staples: count the side table's
            # index, touching alerts only to apply a filter
            side, column = _ALERT_LISTS[field_name]
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
        where = _and_not_null(where, expr)
        sql = (
            f"SELECT {expr} AS v, count(*) AS n FROM alerts{extra}{where} "
            "GROUP BY v ORDER BY n DESC, v LIMIT ?"
        )
        with self._reading() as conn:
            rows = conn.execute(sql, [*fparams, *params, size]).fetchall()
        return [(_key(v), n) for v, n in rows]

    def spread(
        self, flt: AlertFilter, fields: tuple[str, ...], by: str, min_distinct: int
    ) -> list[tuple[tuple[Any, ...], int, int]]:
        """Groups of alerts by ``fields`` whose ``by`` values number ``min_distinct`` or more
        (GROUP BY ... HAVING count(DISTINCT ...)): every such group."""
        where, params = self._where(flt, "alerts")
        joins, exprs, fparams = [], [], []
        for i, name in enumerate(fields):
            extra, expr, p = self._field_source("alerts", name, f"s{i}")
            joins.append(extra)
            exprs.append(expr)
            fparams.extend(p)
            where = _and_not_null(where, expr)
        b_extra, b_expr, b_params = self._field_source("alerts", by, "sb")
        cols = ", ".join(f"{e} AS v{i}" for i, e in enumerate(exprs))
        group = ", ".join(f"v{i}" for i in range(len(exprs)))
        sql = (
            f"SELECT {cols}, count(DISTINCT {b_expr}) AS d, count(DISTINCT alerts.rowid) AS n "
            f"FROM alerts{''.join(joins)}{b_extra}{where} GROUP BY {group} HAVING d >= ?"
        )
        with self._reading() as conn:
            rows = conn.execute(sql, [*fparams, *b_params, *params, min_distinct]).fetchall()
        return [(tuple(r[: len(fields)]), r[-2], r[-1]) for r in rows]

    def alert_histogram(
        self, flt: AlertFilter, interval_s: int, field_name: str | None = None, size: int = 10
    ) -> list[tuple[float, str | None, int]]:
        """Date histogram on ``@timestamp`` (buckets aligned to multiples of ``interval_s``),
        optionally split by the ``size`` most frequent values of a field within each bucket."""
        if interval_s <= 0:
            raise ValueError("interval_s must be positive")
        where, params = self._where(flt, "alerts")
        where = _and_not_null(where, "alerts.ts")
        bucket = "(CAST(floor(alerts.ts / ?) AS INTEGER) * ?)"
        if field_name is None:
            sql = f"SELECT {bucket} AS b, count(*) FROM alerts{where} GROUP BY b ORDER BY b"
            with self._reading() as conn:
                rows = conn.execute(sql, [interval_s, interval_s, *params]).fetchall()
            return [(float(b), None, n) for b, n in rows]
        extra, expr, fparams = self._field_source("alerts", field_name)
        where = _and_not_null(where, expr)
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
        where = _and_not_null(_and_not_null(where, expr_a), expr_b)
        sql = (
            f"WITH pairs AS (SELECT {expr_a} AS a, {expr_b} AS b, count(*) AS n "
            f"FROM alerts{extra_a}{extra_b}{where} GROUP BY a, b), "
            f"top_a AS (SELECT {expr_a} AS a, count(*) AS total FROM alerts{extra_a}"
            f"{_and_not_null(self._where(flt, 'alerts')[0], expr_a)} "
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
        matching ``flt``, newest first."""
        if kind not in ("event", "alert") and kind not in _TIMED:
            raise ValueError(f"no last-seen query on {kind!r} documents")
        table = TABLES[kind].name
        if kind == "event" and field_name not in TABLES["event"].columns:
            return self._event_last_seen_by(flt, field_name, size)
        extra, expr, fparams = self._field_source(table, field_name)
        where, params = (
            self._where(flt, table) if kind in ("event", "alert") else _timed_where(flt, table)
        )
        where = _and_not_null(_and_not_null(where, expr), f"{table}.ts")
        sql = (
            f"SELECT {expr} AS v, max({table}.ts) AS last FROM {table}{extra}{where} "
            "GROUP BY v ORDER BY last DESC, v LIMIT ?"
        )
        with self._reading() as conn:
            rows = conn.execute(sql, [*fparams, *params, size]).fetchall()
        return [(_key(v), float(last)) for v, last in rows]

    def _event_last_seen_by(
        self, flt: AlertFilter, field_name: str, size: int
    ) -> list[tuple[str, float]]:
        """``last_seen_by`` on an event field without a column: from the documents."""
        _check_field(field_name)
        where, params = self._where(flt, "events")
        where = _and_not_null(where, "events.ts")
        keep = _event_predicate(flt)
        docs = EventDocs()
        last: dict[Any, float] = {}
        with self._reading() as conn:
            rows = conn.execute(
                f"SELECT events.rowid, events.ts FROM events{where} ORDER BY events.rowid", params
            ).fetchall()
            for rowid, ts in rows:
                for doc in docs.read(conn, (rowid,)):
                    if keep is not None and not keep(doc):
                        continue
                    for value in as_list(doc.get(field_name)):
                        if value is not None and not isinstance(value, dict | list):
                            last[value] = max(ts, last.get(value, ts))
        ranked = sorted(((_key(v), t) for v, t in last.items()), key=lambda vt: (-vt[1], vt[0]))
        return ranked[:size]

    def latest(self, kind: str, flt: AlertFilter, size: int = 1000) -> list[dict]:
        """The newest document of ``kind`` per value of its ``latest_by`` field
        (``pipeline.kinds``: a sensor's last heartbeat) among those matching ``flt`` (time
        and sites), newest first."""
        key = kinds.get(kind).latest_by
        if key is None or kind not in _TIMED:
            raise ValueError(f"document kind {kind!r} keeps no latest document")
        table = TABLES[kind].name
        column = TABLES[kind].columns[key]
        where, params = _timed_where(flt, table)
        where = _and_not_null(where, f"{table}.{column}")
        # max() with a bare column: SQLite takes that column from the row holding the max
        sql = (
            f"SELECT {table}.doc, max({table}.ts) AS last FROM {table}{where} "
            f"GROUP BY {table}.{column} ORDER BY last DESC LIMIT ?"
        )
        with self._reading() as conn:
            rows = conn.execute(sql, [*params, size]).fetchall()
        return [orjson.loads(row[0]) for row in rows]

    def rollup_sums(
        self,
        flt: AlertFilter,
        fields: tuple[str, ...],
        size: int = 100,
        operations: tuple[str, ...] = (),
    ) -> list[tuple[tuple[str, ...], int, int, float]]:
        """Traffic from rollups: per value of ``fields`` (each a column of the rollups table:
        source.ip, destination.ip, network.protocol, ics.operation, ics.function...), the
        transactions and bytes in ``flt``'s time and sites, and the first interval start;
        the ``size`` busiest, busiest first; only ``operations`` (ics.operation) when given."""
        spec = TABLES["rollup"]
        cols = [f"rollups.{spec.columns[f]}" for f in fields]
        where, params = _timed_where(flt, "rollups")
        if operations:
            cond = f"rollups.{spec.columns['ics.operation']} IN ({','.join('?' * len(operations))})"
            where = f"{where} AND {cond}" if where else f" WHERE {cond}"
            params.extend(operations)
        group = ", ".join(cols)
        sql = (
            f"SELECT {group}, sum(rollups.transactions) AS n, "
            "sum(coalesce(json_extract(rollups.doc, '$.\"network.bytes\"'), 0)), min(rollups.ts) "
            f"FROM rollups{where} GROUP BY {group} ORDER BY n DESC LIMIT ?"
        )
        with self._reading() as conn:
            rows = conn.execute(sql, [*params, size]).fetchall()
        k = len(fields)
        return [
            (
                tuple(_key(v) for v in row[:k]),
                int(row[k] or 0),
                int(row[k + 1] or 0),
                float(row[k + 2]),
            )
            for row in rows
        ]

    def responses(self, request_ids: list[str], payload: bool = True) -> list[dict]:
        """The answers of sensors to these control requests, every part, by request then
        part; without ``payload`` the heavy fields (events, pcap) are left out."""
        if not request_ids:
            return []
        with self._reading() as conn:
            rows = conn.execute(
                "SELECT doc FROM responses WHERE request_id IN (SELECT value FROM json_each(?)) "
                "ORDER BY request_id, part",
                [dumps(list(request_ids)).decode()],
            ).fetchall()
        out = [orjson.loads(row[0]) for row in rows]
        if not payload:
            for doc in out:
                for name in PAYLOAD_FIELDS:
                    doc.pop(name, None)
        return out

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

    def all_assets(self, sites: list[str] | None, limit: int = 1_000_000) -> list[dict]:
        if sites is not None and not sites:
            return []
        out: list[dict] = []
        while len(out) < limit:
            total, page = self.search_assets(
                AssetFilter(
                    sites=list(sites or []), limit=min(5000, limit - len(out)), offset=len(out)
                )
            )
            out.extend(page)
            if not page or len(out) >= total:
                break
        return out

    def search_findings(
        self,
        sites: list[str] | None = None,
        asset_id: str | None = None,
        kind: str | None = None,
        limit: int = 10_000,
        offset: int = 0,
    ) -> tuple[int, list[dict]]:
        """(total matching, one page of merged findings, most severe and newest first)."""
        conds: list[str] = []
        params: list[Any] = []
        if sites is not None:
            conds.append(f"findings.site IN ({','.join('?' * len(sites))})")
            params.extend(sites)
        if asset_id:
            conds.append("findings.asset_id = ?")
            params.append(asset_id)
        if kind:
            conds.append("findings.kind = ?")
            params.append(kind)
        where = (" WHERE " + " AND ".join(conds)) if conds else ""
        with self._reading() as conn:
            total = conn.execute(f"SELECT count(*) FROM findings{where}", params).fetchone()[0]
            rows = conn.execute(
                f"SELECT doc FROM findings{where} ORDER BY severity DESC, last_seen DESC, id "
                "LIMIT ? OFFSET ?",
                [*params, max(0, limit), max(0, offset)],
            ).fetchall()
        return total, [orjson.loads(row[0]) for row in rows]

    # ---- hunting: stored events in time order ------------------------------------------

    @staticmethod
    def _scan_where(
        since: float | None,
        until: float | None,
        sites: Iterable[str],
        observers: Iterable[str],
        by_index: bool = True,
    ) -> tuple[str, list[Any]]:
        # by_index=False writes the columns as +e.ts...: SQLite then filters while walking the
        # table in rowid order instead of reading an index and sorting what it found.
        col = "e." if by_index else "+e."
        conds = [f"{col}ts IS NOT NULL"]
        params: list[Any] = []
        if since is not None:
            conds.append(f"{col}ts >= ?")
            params.append(since)
        if until is not None:
            conds.append(f"{col}ts < ?")
            params.append(until)
        for column, values in (("site", list(sites)), ("observer", list(observers))):
            if values:
                conds.append(f"{col}{column} IN ({','.join('?' * len(values))})")
                params.extend(values)
        return " AND ".join(conds), params

    def count_events(
        self,
        since: float | None = None,
        until: float | None = None,
        sites: Iterable[str] = (),
        observers: Iterable[str] = (),
    ) -> int:
        """How many events :meth:`scan_events` with the same arguments reads."""
        where, params = self._scan_where(since, until, sites, observers)
        with self._reading() as conn:
            return int(
                conn.execute(f"SELECT count(*) FROM events e WHERE {where}", params).fetchone()[0]
            )

    def scan_events(
        self,
        since: float | None = None,
        until: float | None = None,
        sites: Iterable[str] = (),
        observers: Iterable[str] = (),
        page: int = 500,
    ) -> Iterator[dict[str, Any]]:
        """Stored events of ``[since, until)`` (epoch s) of these sites and sensors (empty:
        all) in the order the sensor processed them (the order written: time order, up to
        the sub-millisecond interleaving of flows the stream itself had, so the same engine
        sees the same sequence), read a page at a time (memory does not grow with the store).
        ``@timestamp`` comes back as epoch seconds, the number the sensor itself carries; the
        other fields as stored (a sensor's events carry no other time; documents stored as
        text keep their text times).

        Pages are small on purpose: a page's rows live while its events are processed, and
        more of them than the collector's first threshold (700 objects) get promoted and
        walked again and again by the cyclic collector (a tenth of a hunt's time at 5,000 a
        page). Each block of documents is read and decompressed once, whichever pages its
        events fall in."""
        where, params = self._scan_where(since, until, sites, observers, by_index=False)
        rows_sql = (
            f"SELECT e.rowid, e.ts FROM events e WHERE e.rowid > ? AND {where} "
            "ORDER BY e.rowid LIMIT ?"
        )
        # the blocks from the one holding the first rowid asked for to the page's last
        blocks_sql = (
            "SELECT first, docs FROM event_blocks WHERE first >= coalesce((SELECT first FROM "
            "event_blocks WHERE first <= ? ORDER BY first DESC LIMIT 1), 0) AND first <= ? "
            "ORDER BY first"
        )
        last_row = 0
        loads = orjson.loads
        first, lines = 0, []  # the block read last: its events span one or two pages
        while True:
            with self._reading() as conn:
                rows = conn.execute(rows_sql, [last_row, *params, page]).fetchall()
                if not rows:
                    return
                last_row = rows[-1][0]
                past = first + len(lines)  # the first rowid the block read last lacks
                blocks = []
                if last_row >= past:
                    blocks = conn.execute(blocks_sql, (max(rows[0][0], past), last_row)).fetchall()
            ahead = iter(blocks)
            for rowid, ts in rows:
                while rowid >= first + len(lines):
                    block = next(ahead, None)
                    if block is None:
                        break
                    first, lines = block[0], self._unpack(block[1])
                index = rowid - first
                if 0 <= index < len(lines) and lines[index]:
                    event = loads(lines[index])
                    event["@timestamp"] = ts
                    yield event

    def _unpack(self, block: bytes) -> list[bytes]:
        try:
            return unpack_events(block)
        except lz4.block.LZ4BlockError as exc:
            bad = sqlite3.DatabaseError(f"database disk image is malformed ({exc})")
            raise describe(self.path, bad) from exc

    def alert_raised(
        self, alert_id: str, rule_id: str, event_ids: Iterable[str], upto_row: int | None = None
    ) -> bool:
        """Whether an alert with this id, or one of the same rule over any of these triggering
        events, is stored already (a hunt does not raise it again). ``upto_row``: only the
        alerts stored up to that row are searched for the events (see :meth:`raised_check`)."""
        ids = [str(x) for x in event_ids]
        with self._reading() as conn:
            if conn.execute("SELECT 1 FROM alerts WHERE id = ?", (alert_id,)).fetchone():
                return True
            if not ids:
                return False
            upto = "" if upto_row is None else f" AND t.alert_rowid <= {int(upto_row)}"
            # the side table's pairs, of alerts still stored (pairs are never removed); CROSS
            # JOIN keeps that order: from the alerts' rule index it walked all of the rule's
            row = conn.execute(
                "SELECT 1 FROM alert_events t CROSS JOIN alerts a ON a.rowid = t.alert_rowid "
                "WHERE t.rule_id = ? AND t.event_id IN (SELECT value FROM json_each(?)) "
                f"AND a.rule_id = t.rule_id{upto} LIMIT 1",
                (rule_id, dumps(ids).decode()),
            ).fetchone()
            return row is not None

    def raised_check(self) -> Callable[[str, str, Iterable[str]], bool]:
        """:meth:`alert_raised` for a hunt starting now: the search by triggering events
        leaves out the alerts stored after this moment, the hunt's own among them. They cannot
        match (one engine never raises two alerts of a rule over the same event), and each
        check would otherwise read all the alerts of its rule the hunt wrote so far: a hunt
        quadratic in its own alerts. The search by alert id still sees every alert."""
        with self._reading() as conn:
            top = int(conn.execute("SELECT coalesce(max(rowid), 0) FROM alerts").fetchone()[0])

        def raised(alert_id: str, rule_id: str, event_ids: Iterable[str]) -> bool:
            return self.alert_raised(alert_id, rule_id, event_ids, top)

        return raised

    def counts(self) -> dict[str, int]:
        """Documents stored, per kind."""
        with self._reading() as conn:
            return {
                kind: conn.execute(f"SELECT count(*) FROM {table.name}").fetchone()[0]
                for kind, table in TABLES.items()
            }


def iter_docs(store: Store, kinds: Iterable[str] = tuple(TABLES)) -> Iterator[tuple[str, dict]]:
    """Every stored document in the order written, read a page at a time (for export)."""
    for kind in kinds:
        if kind not in TABLES:
            raise ValueError(f"unknown document kind {kind!r}")
        if kind == "event":
            yield from (("event", doc) for doc in _iter_events(store))
            continue
        table = TABLES[kind].docs or TABLES[kind].name
        last = 0
        while True:
            with store._reading() as conn:
                rows = conn.execute(
                    f"SELECT rowid, doc FROM {table} WHERE rowid > ? ORDER BY rowid LIMIT 1000",
                    (last,),
                ).fetchall()
            if not rows:
                break
            last = rows[-1][0]
            for _, doc in rows:
                yield kind, orjson.loads(doc)


def _iter_events(store: Store) -> Iterator[dict]:
    last = 0
    docs = EventDocs()
    while True:
        with store._reading() as conn:
            rows = conn.execute(
                "SELECT rowid FROM events WHERE rowid > ? ORDER BY rowid LIMIT 1000", (last,)
            ).fetchall()
            page = docs.read(conn, (row[0] for row in rows))
        if not rows:
            return
        last = rows[-1][0]
        yield from page
