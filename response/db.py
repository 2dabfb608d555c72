"""The response state: incidents, reports, notices, campaigns and watchlists in SQLite, and the
append-only audit trail every change goes through.

The tables live in the posture state file (one file to back up), under their own connection.
The audit trail cannot be changed through this code (there is no update or delete of it) nor
through SQL: triggers abort any UPDATE or DELETE on ``response_audit``. Each entry also
carries the SHA-256 of the previous entry and of itself, so an edit made by other means (a
copy of the file rewritten by hand) shows in :meth:`ResponseDB.verify_audit`.

Every change is one transaction that writes the object and its audit entry together; after
the commit, listeners (the posture view's webhooks) receive the entry.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS response_audit (
  seq INTEGER PRIMARY KEY, at REAL NOT NULL, actor TEXT NOT NULL, role TEXT NOT NULL,
  object_kind TEXT NOT NULL, object_id TEXT NOT NULL, action TEXT NOT NULL,
  from_state TEXT, to_state TEXT, sites TEXT NOT NULL, enterprises TEXT NOT NULL,
  cities TEXT NOT NULL, detail TEXT NOT NULL, prev_hash TEXT NOT NULL, hash TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS response_audit_object ON response_audit(object_kind, object_id);
CREATE TRIGGER IF NOT EXISTS response_audit_no_update BEFORE UPDATE ON response_audit
  BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END;
CREATE TRIGGER IF NOT EXISTS response_audit_no_delete BEFORE DELETE ON response_audit
  BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END;

CREATE TABLE IF NOT EXISTS incident (
  id TEXT PRIMARY KEY, number INTEGER NOT NULL UNIQUE, title TEXT NOT NULL,
  summary TEXT NOT NULL, state TEXT NOT NULL, level TEXT NOT NULL, grade TEXT NOT NULL,
  facts TEXT NOT NULL, discovered_at REAL NOT NULL, created_at REAL NOT NULL,
  created_by TEXT NOT NULL, resolved_at REAL, closed_at REAL, origin TEXT NOT NULL,
  updated REAL NOT NULL);
CREATE TABLE IF NOT EXISTS incident_alert (
  alert_id TEXT PRIMARY KEY, incident_id TEXT NOT NULL REFERENCES incident(id),
  site_id TEXT NOT NULL, ts REAL NOT NULL, rule_id TEXT, source_ip TEXT,
  techniques TEXT NOT NULL, severity INTEGER NOT NULL, added_at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS incident_alert_incident ON incident_alert(incident_id, ts);
CREATE TABLE IF NOT EXISTS incident_site (
  incident_id TEXT NOT NULL REFERENCES incident(id), site_id TEXT NOT NULL,
  enterprise_id TEXT NOT NULL, city_id TEXT NOT NULL, PRIMARY KEY (incident_id, site_id));
CREATE INDEX IF NOT EXISTS incident_site_site ON incident_site(site_id);
CREATE TABLE IF NOT EXISTS incident_assignee (
  incident_id TEXT NOT NULL REFERENCES incident(id), name TEXT NOT NULL,
  PRIMARY KEY (incident_id, name));
CREATE TABLE IF NOT EXISTS response_note (
  id INTEGER PRIMARY KEY, owner_kind TEXT NOT NULL, owner_id TEXT NOT NULL, at REAL NOT NULL,
  author TEXT NOT NULL, text TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS response_note_owner ON response_note(owner_kind, owner_id);
CREATE TABLE IF NOT EXISTS response_attachment (
  id TEXT PRIMARY KEY, owner_kind TEXT NOT NULL, owner_id TEXT NOT NULL, name TEXT NOT NULL,
  content_type TEXT NOT NULL, size INTEGER NOT NULL, sha256 TEXT NOT NULL, data BLOB NOT NULL,
  at REAL NOT NULL, author TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS response_attachment_owner ON response_attachment(owner_kind, owner_id);
CREATE TABLE IF NOT EXISTS report (
  id TEXT PRIMARY KEY, incident_id TEXT NOT NULL REFERENCES incident(id), kind TEXT NOT NULL,
  seq INTEGER NOT NULL, fields TEXT NOT NULL, created_at REAL NOT NULL, created_by TEXT NOT NULL,
  submitted_at REAL, submitted_by TEXT, UNIQUE (incident_id, kind, seq));

CREATE TABLE IF NOT EXISTS notice (
  id TEXT PRIMARY KEY, number INTEGER NOT NULL UNIQUE, subject_kind TEXT NOT NULL,
  subject_ref TEXT NOT NULL, enterprise_id TEXT NOT NULL, city_id TEXT NOT NULL,
  industry TEXT NOT NULL, sites TEXT NOT NULL, title TEXT NOT NULL, actions TEXT NOT NULL,
  indicators TEXT NOT NULL, issued_at REAL NOT NULL, issued_by TEXT NOT NULL,
  issuer_role TEXT NOT NULL, working_days INTEGER NOT NULL, deadline REAL NOT NULL,
  state TEXT NOT NULL, escalation INTEGER NOT NULL DEFAULT 0, submitted_at REAL,
  closed_at REAL, updated REAL NOT NULL);
CREATE INDEX IF NOT EXISTS notice_enterprise ON notice(enterprise_id, state);
CREATE TABLE IF NOT EXISTS notice_reply (
  id INTEGER PRIMARY KEY, notice_id TEXT NOT NULL REFERENCES notice(id), at REAL NOT NULL,
  author TEXT NOT NULL, text TEXT NOT NULL, attachments TEXT NOT NULL);

CREATE TABLE IF NOT EXISTS campaign (
  id TEXT PRIMARY KEY, kind TEXT NOT NULL, indicator TEXT NOT NULL, first_seen REAL NOT NULL,
  last_seen REAL NOT NULL, state TEXT NOT NULL, detected_at REAL NOT NULL,
  updated REAL NOT NULL);
CREATE INDEX IF NOT EXISTS campaign_key ON campaign(kind, indicator, last_seen);
CREATE TABLE IF NOT EXISTS campaign_alert (
  campaign_id TEXT NOT NULL REFERENCES campaign(id), alert_id TEXT NOT NULL,
  site_id TEXT NOT NULL, enterprise_id TEXT NOT NULL, city_id TEXT NOT NULL,
  industry TEXT NOT NULL, ts REAL NOT NULL, rule_id TEXT, techniques TEXT NOT NULL,
  PRIMARY KEY (campaign_id, alert_id));
CREATE TABLE IF NOT EXISTS allowlist (
  value TEXT PRIMARY KEY, reason TEXT NOT NULL, added_at REAL NOT NULL, added_by TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS watchlist (
  id TEXT PRIMARY KEY, kind TEXT NOT NULL, value TEXT NOT NULL, source TEXT NOT NULL,
  source_ref TEXT NOT NULL, added_at REAL NOT NULL, added_by TEXT NOT NULL,
  valid_until REAL, UNIQUE (kind, value));
CREATE TABLE IF NOT EXISTS warning (
  id TEXT PRIMARY KEY, number INTEGER NOT NULL UNIQUE, level TEXT NOT NULL, title TEXT NOT NULL,
  text TEXT NOT NULL, source_kind TEXT NOT NULL, source_ref TEXT NOT NULL,
  industries TEXT NOT NULL, vendors TEXT NOT NULL, issued_at REAL NOT NULL,
  issued_by TEXT NOT NULL, state TEXT NOT NULL, lifted_at REAL);
CREATE TABLE IF NOT EXISTS warning_recipient (
  warning_id TEXT NOT NULL REFERENCES warning(id), enterprise_id TEXT NOT NULL,
  city_id TEXT NOT NULL, industry TEXT NOT NULL, sites TEXT NOT NULL, reason TEXT NOT NULL,
  acknowledged_at REAL, acknowledged_by TEXT, PRIMARY KEY (warning_id, enterprise_id));
CREATE INDEX IF NOT EXISTS warning_recipient_enterprise ON warning_recipient(enterprise_id);
CREATE TABLE IF NOT EXISTS content_rule (
  id TEXT PRIMARY KEY, title TEXT NOT NULL, yaml TEXT NOT NULL, policy TEXT NOT NULL,
  added_at REAL NOT NULL, added_by TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS content_push (
  id TEXT PRIMARY KEY, number INTEGER NOT NULL UNIQUE, version INTEGER NOT NULL,
  sha256 TEXT NOT NULL, scope TEXT NOT NULL, issued_at REAL NOT NULL, issued_by TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS content_push_target (
  push_id TEXT NOT NULL REFERENCES content_push(id), sensor TEXT NOT NULL, site TEXT NOT NULL,
  enterprise_id TEXT NOT NULL, city_id TEXT NOT NULL, message_id TEXT, expires_at INTEGER,
  error TEXT, PRIMARY KEY (push_id, sensor));
CREATE INDEX IF NOT EXISTS content_push_target_site ON content_push_target(site);
CREATE TABLE IF NOT EXISTS response_counter (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""

ZERO_HASH = "0" * 64


class NotFound(LookupError):
    """Unknown, or outside the caller's tenancy (the API cannot tell the two apart)."""


class Forbidden(PermissionError):
    """Visible, but this role may not do that (403)."""


class IllegalTransition(ValueError):
    """A state change the state machine does not allow (409)."""


class Invalid(ValueError):
    """Bad input (422)."""


@dataclass(slots=True, frozen=True)
class Viewer:
    """Who acts: name (for the audit trail), role, home scope, and the sites they may see
    (None: every site, the province)."""

    name: str
    role: str
    scope_id: str | None
    sites: frozenset[str] | None

    @property
    def is_province(self) -> bool:
        return self.role == "province-analyst"

    @property
    def is_analyst(self) -> bool:
        return self.role in ("province-analyst", "city-analyst")

    @property
    def is_enterprise(self) -> bool:
        return self.role.startswith("enterprise-")

    def sees(self, sites: list[str] | tuple[str, ...] | set[str]) -> bool:
        """Whether any of ``sites`` is visible."""
        return self.sites is None or any(s in self.sites for s in sites)

    def owns_all(self, sites: list[str] | tuple[str, ...] | set[str]) -> bool:
        return self.sites is None or (bool(sites) and all(s in self.sites for s in sites))


SYSTEM = Viewer("icsmon", "system", None, None)


def _canonical(entry: dict[str, Any]) -> bytes:
    return json.dumps(entry, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode()


class ResponseDB:
    """One connection to the state file, one lock; transactions through :meth:`tx`."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(
                str(self.path), check_same_thread=False, isolation_level=None, timeout=30
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.executescript(SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise ValueError(f"{self.path}: not a usable state database: {exc}") from exc
        self._db.row_factory = sqlite3.Row
        self._lock = threading.RLock()
        self._pending: list[dict[str, Any]] = []
        self.listeners: list[Callable[[dict[str, Any]], None]] = []

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        """One write transaction; audit entries made inside it are announced after commit."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                self._pending.clear()
                raise
            announced, self._pending = self._pending, []
        for entry in announced:
            for fn in self.listeners:
                try:
                    fn(entry)
                except Exception:  # a notification failure never undoes a change
                    pass

    def rows(self, sql: str, args: tuple | list = ()) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(r) for r in self._db.execute(sql, args).fetchall()]

    def one(self, sql: str, args: tuple | list = ()) -> dict[str, Any] | None:
        rows = self.rows(sql, args)
        return rows[0] if rows else None

    def next_number(self, conn: sqlite3.Connection, name: str) -> int:
        conn.execute(
            "INSERT INTO response_counter VALUES (?, 1) ON CONFLICT(name) DO UPDATE SET "
            "value = value + 1",
            (name,),
        )
        return int(
            conn.execute("SELECT value FROM response_counter WHERE name=?", (name,)).fetchone()[0]
        )

    # -- the audit trail -------------------------------------------------------------------

    def audit(
        self,
        conn: sqlite3.Connection,
        who: Viewer,
        kind: str,
        object_id: str,
        action: str,
        *,
        sites: list[str],
        enterprises: list[str],
        cities: list[str],
        from_state: str | None = None,
        to_state: str | None = None,
        detail: dict[str, Any] | None = None,
        at: float | None = None,
    ) -> dict[str, Any]:
        """Append one entry (inside the caller's transaction) chained to the previous one."""
        last = conn.execute("SELECT hash FROM response_audit ORDER BY seq DESC LIMIT 1").fetchone()
        entry = {
            "at": time.time() if at is None else at,
            "actor": who.name,
            "role": who.role,
            "object_kind": kind,
            "object_id": object_id,
            "action": action,
            "from_state": from_state,
            "to_state": to_state,
            "sites": sorted(set(sites)),
            "enterprises": sorted(set(enterprises)),
            "cities": sorted(set(cities)),
            "detail": detail or {},
            "prev_hash": last[0] if last else ZERO_HASH,
        }
        entry["hash"] = hashlib.sha256(_canonical(entry)).hexdigest()
        cur = conn.execute(
            "INSERT INTO response_audit (at, actor, role, object_kind, object_id, action, "
            "from_state, to_state, sites, enterprises, cities, detail, prev_hash, hash) "
            "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                entry["at"],
                entry["actor"],
                entry["role"],
                kind,
                object_id,
                action,
                from_state,
                to_state,
                json.dumps(entry["sites"]),
                json.dumps(entry["enterprises"]),
                json.dumps(entry["cities"]),
                json.dumps(entry["detail"], ensure_ascii=False),
                entry["prev_hash"],
                entry["hash"],
            ),
        )
        entry["seq"] = cur.lastrowid
        self._pending.append(entry)
        return entry

    @staticmethod
    def _entry(row: dict[str, Any]) -> dict[str, Any]:
        out = dict(row)
        for k in ("sites", "enterprises", "cities", "detail"):
            out[k] = json.loads(out[k])
        return out

    def audit_trail(
        self,
        who: Viewer,
        kind: str | None = None,
        object_id: str | None = None,
        limit: int = 500,
    ) -> list[dict[str, Any]]:
        """Entries ``who`` may see (any of their sites), newest first."""
        where, args = [], []
        if kind is not None:
            where.append("object_kind=?")
            args.append(kind)
        if object_id is not None:
            where.append("object_id=?")
            args.append(object_id)
        sql = "SELECT * FROM response_audit"
        if where:
            sql += " WHERE " + " AND ".join(where)
        out = []
        # Filter by tenancy in Python: an entry's site list is small, the page bounded.
        for row in self.rows(sql + " ORDER BY seq DESC LIMIT ?", [*args, limit * 4]):
            entry = self._entry(row)
            if who.sites is None or any(s in who.sites for s in entry["sites"]):
                if who.sites is not None:
                    entry["sites"] = [s for s in entry["sites"] if s in who.sites]
                    entry.pop("enterprises")
                    entry.pop("cities")
                out.append(entry)
            if len(out) >= limit:
                break
        return out

    def verify_audit(self) -> dict[str, Any]:
        """Recompute the hash chain: ``ok`` and the first broken entry, if any."""
        prev = ZERO_HASH
        n = 0
        with self._lock:
            rows = self._db.execute("SELECT * FROM response_audit ORDER BY seq").fetchall()
        for row in rows:
            entry = self._entry(dict(row))
            seq, stored = entry.pop("seq"), entry.pop("hash")
            if (
                entry["prev_hash"] != prev
                or hashlib.sha256(_canonical(entry)).hexdigest() != stored
            ):
                return {"ok": False, "entries": n, "broken_at": seq}
            prev, n = stored, n + 1
        return {"ok": True, "entries": n, "broken_at": None, "head": prev}
