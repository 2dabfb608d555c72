"""The posture view's own state, in one SQLite file beside the alert store.

Holds what the alert store does not: the organisation registry, access tokens (only their
SHA-256 digests), alert workflow (status, assignee, close reason, notes), the audit trail,
webhooks and their deliveries. Alerts themselves stay in the store / Elasticsearch.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from posture.orgfile import Org
from sensor.timestamps import parse_timestamp

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS city (
  id TEXT PRIMARY KEY, name TEXT NOT NULL, name_zh TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS enterprise (
  id TEXT PRIMARY KEY, city_id TEXT NOT NULL REFERENCES city(id), name TEXT NOT NULL,
  name_zh TEXT NOT NULL, industry TEXT NOT NULL, criticality INTEGER NOT NULL,
  grade INTEGER, key_connected INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS site (
  id TEXT PRIMARY KEY, enterprise_id TEXT NOT NULL REFERENCES enterprise(id),
  name TEXT NOT NULL, criticality INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS sensor (name TEXT PRIMARY KEY, site_id TEXT NOT NULL REFERENCES site(id));
CREATE TABLE IF NOT EXISTS token (
  id INTEGER PRIMARY KEY, name TEXT NOT NULL, digest TEXT NOT NULL UNIQUE, role TEXT NOT NULL,
  scope_id TEXT, created REAL NOT NULL, revoked REAL);
CREATE TABLE IF NOT EXISTS alert_state (
  alert_id TEXT PRIMARY KEY, site_id TEXT NOT NULL, severity INTEGER NOT NULL, ts REAL NOT NULL,
  ruleset TEXT NOT NULL, status TEXT NOT NULL, assignee TEXT, close_reason TEXT, updated REAL NOT NULL);
CREATE INDEX IF NOT EXISTS alert_state_site ON alert_state(site_id, status, ts);
CREATE TABLE IF NOT EXISTS note (
  id INTEGER PRIMARY KEY, alert_id TEXT NOT NULL, at REAL NOT NULL, author TEXT NOT NULL,
  text TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS note_alert ON note(alert_id);
CREATE TABLE IF NOT EXISTS audit (
  id INTEGER PRIMARY KEY, at REAL NOT NULL, actor TEXT NOT NULL, action TEXT NOT NULL,
  alert_id TEXT, site_id TEXT, detail TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS audit_alert ON audit(alert_id);
CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit
  BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit
  BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END;
CREATE TABLE IF NOT EXISTS webhook (
  id INTEGER PRIMARY KEY, scope_kind TEXT NOT NULL, scope_id TEXT NOT NULL, url TEXT NOT NULL,
  secret TEXT NOT NULL, min_severity INTEGER NOT NULL, created REAL NOT NULL,
  cursor REAL NOT NULL, created_by TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS delivery (
  id INTEGER PRIMARY KEY, webhook_id INTEGER NOT NULL REFERENCES webhook(id) ON DELETE CASCADE,
  alert_id TEXT NOT NULL, payload TEXT NOT NULL, status TEXT NOT NULL, attempts INTEGER NOT NULL,
  next_try REAL NOT NULL, last_error TEXT, delivered REAL, UNIQUE (webhook_id, alert_id));
CREATE INDEX IF NOT EXISTS delivery_due ON delivery(status, next_try);
CREATE TABLE IF NOT EXISTS evidence_request (
  id TEXT PRIMARY KEY, alert_id TEXT NOT NULL, site_id TEXT, target TEXT NOT NULL,
  requested_by TEXT NOT NULL, requested_at REAL NOT NULL, expires_at REAL NOT NULL,
  payload TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS evidence_request_alert ON evidence_request(alert_id, requested_at);
CREATE TABLE IF NOT EXISTS hunt (
  id TEXT PRIMARY KEY, scope TEXT NOT NULL, requested_by TEXT NOT NULL,
  requested_at REAL NOT NULL, expires_at REAL NOT NULL, detail TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS hunt_at ON hunt(requested_at);
"""

ROLES = ("province-analyst", "city-analyst", "enterprise-operator", "enterprise-viewer")
STATUSES = ("open", "acknowledged", "closed")
CLOSE_REASONS = ("resolved", "false-positive", "benign", "duplicate", "accepted-risk")


def token_digest(token: str) -> str:
    # Tokens are 256-bit random strings, so a plain SHA-256 is enough (no dictionary to guess).
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(slots=True, frozen=True)
class SiteInfo:
    id: str
    name: str
    enterprise_id: str
    city_id: str
    industry: str
    criticality: int
    sensors: tuple[str, ...]


@dataclass(slots=True)
class OrgIndex:
    """The registry in memory, for resolving scopes and labelling aggregation results."""

    province: dict[str, str] = field(default_factory=dict)
    cities: dict[str, dict[str, Any]] = field(default_factory=dict)
    enterprises: dict[str, dict[str, Any]] = field(default_factory=dict)
    sites: dict[str, SiteInfo] = field(default_factory=dict)
    sensor_site: dict[str, str] = field(default_factory=dict)

    def sites_of_city(self, city_id: str) -> list[str]:
        return [s.id for s in self.sites.values() if s.city_id == city_id]

    def sites_of_enterprise(self, ent_id: str) -> list[str]:
        return [s.id for s in self.sites.values() if s.enterprise_id == ent_id]

    def sites_of_industry(self, industry: str) -> list[str]:
        return [s.id for s in self.sites.values() if s.industry == industry]

    def industries(self) -> list[str]:
        return sorted({e["industry"] for e in self.enterprises.values()})


@dataclass(slots=True, frozen=True)
class TokenInfo:
    id: int
    name: str
    role: str
    scope_id: str | None


class PostureState:
    """Thread-safe access to the posture SQLite file (one connection, one lock)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(
                str(self.path), check_same_thread=False, isolation_level=None
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.executescript(SCHEMA)
            columns = {r[1] for r in self._db.execute("PRAGMA table_info(enterprise)")}
            if "grade" not in columns:  # a state file from before coverage: add the columns
                self._db.execute("ALTER TABLE enterprise ADD COLUMN grade INTEGER")
                self._db.execute(
                    "ALTER TABLE enterprise ADD COLUMN key_connected INTEGER NOT NULL DEFAULT 0"
                )
        except sqlite3.DatabaseError as exc:
            raise ValueError(f"{self.path}: not a usable posture state database: {exc}") from exc
        self._db.row_factory = sqlite3.Row
        self._lock = threading.RLock()
        self._org: OrgIndex | None = None

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _exec(self, sql: str, args: tuple | list = ()) -> sqlite3.Cursor:
        with self._lock:
            return self._db.execute(sql, args)

    def _rows(self, sql: str, args: tuple | list = ()) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(r) for r in self._db.execute(sql, args).fetchall()]

    # -- organisation registry -------------------------------------------------------------

    def import_org(self, org: Org) -> dict[str, int]:
        """Replace the registry with ``org`` in one transaction (the file is authoritative)."""
        counts = {"cities": 0, "enterprises": 0, "sites": 0, "sensors": 0}
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                for table in ("sensor", "site", "enterprise", "city"):
                    db.execute(f"DELETE FROM {table}")
                db.execute(
                    "INSERT OR REPLACE INTO meta VALUES ('province', ?)",
                    (
                        json.dumps(
                            {
                                "id": org.province_id,
                                "name": org.province_name,
                                "name_zh": org.province_name_zh,
                            }
                        ),
                    ),
                )
                for c in org.cities:
                    db.execute("INSERT INTO city VALUES (?,?,?)", (c.id, c.name, c.name_zh))
                    counts["cities"] += 1
                    for e in c.enterprises:
                        db.execute(
                            "INSERT INTO enterprise (id, city_id, name, name_zh, industry, "
                            "criticality, grade, key_connected) VALUES (?,?,?,?,?,?,?,?)",
                            (
                                e.id,
                                c.id,
                                e.name,
                                e.name_zh,
                                e.industry,
                                e.criticality,
                                e.grade,
                                int(e.key_connected),
                            ),
                        )
                        counts["enterprises"] += 1
                        for s in e.sites:
                            db.execute(
                                "INSERT INTO site VALUES (?,?,?,?)",
                                (s.id, e.id, s.name, s.criticality),
                            )
                            counts["sites"] += 1
                            for name in s.sensors:
                                db.execute("INSERT INTO sensor VALUES (?,?)", (name, s.id))
                                counts["sensors"] += 1
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            self._org = None
        return counts

    def org(self) -> OrgIndex:
        with self._lock:
            if self._org is None:
                self._org = self._load_org()
            return self._org

    def _load_org(self) -> OrgIndex:
        idx = OrgIndex()
        row = self._db.execute("SELECT value FROM meta WHERE key='province'").fetchone()
        if row:
            idx.province = json.loads(row[0])
        for r in self._db.execute("SELECT * FROM city ORDER BY id"):
            idx.cities[r["id"]] = dict(r)
        for r in self._db.execute("SELECT * FROM enterprise ORDER BY id"):
            idx.enterprises[r["id"]] = dict(r)
        sensors: dict[str, list[str]] = {}
        for r in self._db.execute("SELECT * FROM sensor ORDER BY name"):
            sensors.setdefault(r["site_id"], []).append(r["name"])
            idx.sensor_site[r["name"]] = r["site_id"]
        for r in self._db.execute("SELECT * FROM site ORDER BY id"):
            ent = idx.enterprises[r["enterprise_id"]]
            idx.sites[r["id"]] = SiteInfo(
                id=r["id"],
                name=r["name"],
                enterprise_id=ent["id"],
                city_id=ent["city_id"],
                industry=ent["industry"],
                criticality=r["criticality"],
                sensors=tuple(sensors.get(r["id"], ())),
            )
        return idx

    # -- tokens --------------------------------------------------------------------------

    def create_token(self, name: str, role: str, scope_id: str | None) -> str:
        """Create a token and return it; only its digest is stored, so it is shown once."""
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}; one of {', '.join(ROLES)}")
        org = self.org()
        if role == "province-analyst":
            scope_id = None
        elif role == "city-analyst":
            if scope_id not in org.cities:
                raise ValueError(f"city {scope_id!r} is not in the registry")
        elif scope_id not in org.enterprises:
            raise ValueError(f"enterprise {scope_id!r} is not in the registry")
        token = "icsm_" + secrets.token_urlsafe(32)
        self._exec(
            "INSERT INTO token (name, digest, role, scope_id, created) VALUES (?,?,?,?,?)",
            (name, token_digest(token), role, scope_id, time.time()),
        )
        return token

    def lookup_token(self, token: str) -> TokenInfo | None:
        rows = self._rows(
            "SELECT id, name, role, scope_id FROM token WHERE digest=? AND revoked IS NULL",
            (token_digest(token),),
        )
        return TokenInfo(**rows[0]) if rows else None

    def list_tokens(self) -> list[dict[str, Any]]:
        return self._rows(
            "SELECT id, name, role, scope_id, created, revoked FROM token ORDER BY id"
        )

    def revoke_token(self, token_id: int) -> bool:
        cur = self._exec(
            "UPDATE token SET revoked=? WHERE id=? AND revoked IS NULL", (time.time(), token_id)
        )
        return cur.rowcount > 0

    # -- alert workflow ------------------------------------------------------------------

    def alert_state(self, alert_id: str) -> dict[str, Any]:
        rows = self._rows("SELECT * FROM alert_state WHERE alert_id=?", (alert_id,))
        if rows:
            return rows[0]
        return {"alert_id": alert_id, "status": "open", "assignee": None, "close_reason": None}

    def alert_states(self, alert_ids: list[str]) -> dict[str, dict[str, Any]]:
        if not alert_ids:
            return {}
        marks = ",".join("?" * len(alert_ids))
        rows = self._rows(f"SELECT * FROM alert_state WHERE alert_id IN ({marks})", alert_ids)
        return {r["alert_id"]: r for r in rows}

    def update_alert(
        self,
        alert: dict[str, Any],
        actor: str,
        action: str,
        *,
        status: str | None = None,
        assignee: str | None = None,
        close_reason: str | None = None,
        note: str | None = None,
    ) -> dict[str, Any]:
        """Apply one workflow action to ``alert`` (a flat alert document) and audit it."""
        alert_id = str(alert["event.id"])
        site = str(alert.get("labels.site") or "")
        now = time.time()
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                before = self.alert_state(alert_id)
                after = dict(before)
                if status is not None:
                    after["status"] = status
                    after["close_reason"] = close_reason if status == "closed" else None
                if assignee is not None:
                    after["assignee"] = assignee or None
                db.execute(
                    "INSERT INTO alert_state VALUES (?,?,?,?,?,?,?,?,?) ON CONFLICT(alert_id) DO "
                    "UPDATE SET status=excluded.status, assignee=excluded.assignee, "
                    "close_reason=excluded.close_reason, updated=excluded.updated",
                    (
                        alert_id,
                        site,
                        int(alert.get("event.severity") or 0),
                        epoch_of(alert.get("@timestamp")),
                        str(alert.get("rule.ruleset") or "sigma"),
                        after["status"],
                        after["assignee"],
                        after["close_reason"],
                        now,
                    ),
                )
                if note:
                    db.execute(
                        "INSERT INTO note (alert_id, at, author, text) VALUES (?,?,?,?)",
                        (alert_id, now, actor, note),
                    )
                detail = {
                    k: {"from": before.get(k), "to": after.get(k)}
                    for k in ("status", "assignee", "close_reason")
                    if before.get(k) != after.get(k)
                }
                if note:
                    detail["note"] = note
                db.execute(
                    "INSERT INTO audit (at, actor, action, alert_id, site_id, detail) "
                    "VALUES (?,?,?,?,?,?)",
                    (now, actor, action, alert_id, site, json.dumps(detail, ensure_ascii=False)),
                )
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        return self.alert_state(alert_id)

    def notes(self, alert_id: str) -> list[dict[str, Any]]:
        return self._rows(
            "SELECT at, author, text FROM note WHERE alert_id=? ORDER BY id", (alert_id,)
        )

    def audit_trail(
        self, alert_id: str | None = None, sites: list[str] | None = None, limit: int = 200
    ) -> list[dict[str, Any]]:
        """Audit entries for one alert, or for a set of sites (None = all, province)."""
        where, args = [], []
        if alert_id is not None:
            where.append("alert_id=?")
            args.append(alert_id)
        if sites is not None:
            where.append(f"site_id IN ({','.join('?' * len(sites))})")
            args.extend(sites)
        sql = "SELECT at, actor, action, alert_id, site_id, detail FROM audit"
        if where:
            sql += " WHERE " + " AND ".join(where)
        rows = self._rows(sql + " ORDER BY id DESC LIMIT ?", [*args, limit])
        for r in rows:
            r["detail"] = json.loads(r["detail"])
        return rows

    def audit(
        self, actor: str, action: str, detail: dict[str, Any], site: str | None = None
    ) -> None:
        self._exec(
            "INSERT INTO audit (at, actor, action, alert_id, site_id, detail) VALUES (?,?,?,?,?,?)",
            (time.time(), actor, action, None, site, json.dumps(detail, ensure_ascii=False)),
        )

    # -- evidence requests (posture/evidence_api.py) ------------------------------------------

    def add_evidence_request(
        self, envelope: dict[str, Any], alert_id: str, site: str | None, actor: str
    ) -> dict[str, Any]:
        """Record a request sent to a sensor (and who asked, in the audit trail)."""
        with self._lock:
            self._db.execute("BEGIN")
            try:
                self._db.execute(
                    "INSERT INTO evidence_request (id, alert_id, site_id, target, requested_by, "
                    "requested_at, expires_at, payload) VALUES (?,?,?,?,?,?,?,?)",
                    (
                        envelope["id"],
                        alert_id,
                        site,
                        envelope["target"],
                        actor,
                        float(envelope["issued_at"]),
                        float(envelope["expires_at"]),
                        json.dumps(envelope["payload"], ensure_ascii=False),
                    ),
                )
                self._db.execute(
                    "INSERT INTO audit (at, actor, action, alert_id, site_id, detail) "
                    "VALUES (?,?,?,?,?,?)",
                    (
                        time.time(),
                        actor,
                        "evidence-request",
                        alert_id,
                        site,
                        json.dumps(
                            {"request": envelope["id"], "sensor": envelope["target"]},
                            ensure_ascii=False,
                        ),
                    ),
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return self.evidence_request(envelope["id"]) or {}

    def evidence_request(self, request_id: str) -> dict[str, Any] | None:
        rows = self._rows("SELECT * FROM evidence_request WHERE id=?", (request_id,))
        return _evidence_row(rows[0]) if rows else None

    def evidence_requests(self, alert_id: str, limit: int = 50) -> list[dict[str, Any]]:
        rows = self._rows(
            "SELECT * FROM evidence_request WHERE alert_id=? ORDER BY requested_at DESC LIMIT ?",
            (alert_id, limit),
        )
        return [_evidence_row(r) for r in rows]

    # -- hunts requested of sensors (posture/hunt_api.py) -------------------------------------

    def add_hunt(
        self, hunt_id: str, scope: str, actor: str, expires_at: float, detail: dict[str, Any]
    ) -> dict[str, Any]:
        """Record a hunt sent to sensors (``detail``: rules, time range, targets with their
        request ids), and who asked in the audit trail."""
        now = time.time()
        with self._lock:
            self._db.execute("BEGIN")
            try:
                self._db.execute(
                    "INSERT INTO hunt (id, scope, requested_by, requested_at, expires_at, detail) "
                    "VALUES (?,?,?,?,?,?)",
                    (
                        hunt_id,
                        scope,
                        actor,
                        now,
                        expires_at,
                        json.dumps(detail, ensure_ascii=False),
                    ),
                )
                self._db.execute(
                    "INSERT INTO audit (at, actor, action, alert_id, site_id, detail) "
                    "VALUES (?,?,?,?,?,?)",
                    (
                        now,
                        actor,
                        "hunt-request",
                        None,
                        None,
                        json.dumps(
                            {"hunt": hunt_id, "scope": scope, "sensors": len(detail["targets"])},
                            ensure_ascii=False,
                        ),
                    ),
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return self.hunt(hunt_id) or {}

    def hunt(self, hunt_id: str) -> dict[str, Any] | None:
        rows = self._rows("SELECT * FROM hunt WHERE id=?", (hunt_id,))
        return _hunt_row(rows[0]) if rows else None

    def hunts(self, limit: int = 200) -> list[dict[str, Any]]:
        rows = self._rows("SELECT * FROM hunt ORDER BY requested_at DESC LIMIT ?", (limit,))
        return [_hunt_row(r) for r in rows]

    def closed_counts(
        self, sites: list[str] | None, since: float | None, until: float | None
    ) -> list[tuple[str, int, str, int]]:
        """(site, severity, ruleset, count) of closed alerts in a time range: subtracted from the
        store's counts to get open alerts, aggregated here in SQL."""
        where, args = ["status='closed'"], []
        if sites is not None:
            where.append(f"site_id IN ({','.join('?' * len(sites))})")
            args.extend(sites)
        if since is not None:
            where.append("ts >= ?")
            args.append(since)
        if until is not None:
            where.append("ts < ?")
            args.append(until)
        rows = self._rows(
            "SELECT site_id, severity, ruleset, COUNT(*) AS n FROM alert_state WHERE "
            + " AND ".join(where)
            + " GROUP BY site_id, severity, ruleset",
            args,
        )
        return [(r["site_id"], r["severity"], r["ruleset"], r["n"]) for r in rows]

    def workflow_list(
        self, sites: list[str] | None, status: str, limit: int, offset: int
    ) -> tuple[int, list[dict[str, Any]]]:
        where, args = ["status=?"], [status]
        if sites is not None:
            where.append(f"site_id IN ({','.join('?' * len(sites))})")
            args.extend(sites)
        cond = " AND ".join(where)
        total = self._rows(f"SELECT COUNT(*) AS n FROM alert_state WHERE {cond}", args)[0]["n"]
        rows = self._rows(
            f"SELECT * FROM alert_state WHERE {cond} ORDER BY updated DESC LIMIT ? OFFSET ?",
            [*args, limit, offset],
        )
        return total, rows

    # -- webhooks ------------------------------------------------------------------------

    def add_webhook(
        self,
        scope_kind: str,
        scope_id: str,
        url: str,
        min_severity: int,
        actor: str,
        secret: str | None = None,
    ) -> tuple[int, str]:
        """Register a webhook; returns (id, signing secret). Alerts older than now are not sent."""
        secret = secret or secrets.token_urlsafe(32)
        now = time.time()
        cur = self._exec(
            "INSERT INTO webhook (scope_kind, scope_id, url, secret, min_severity, created, cursor,"
            " created_by) VALUES (?,?,?,?,?,?,?,?)",
            (scope_kind, scope_id, url, secret, min_severity, now, now, actor),
        )
        return int(cur.lastrowid or 0), secret

    def webhooks(self) -> list[dict[str, Any]]:
        return self._rows("SELECT * FROM webhook ORDER BY id")

    def delete_webhook(self, webhook_id: int) -> bool:
        return self._exec("DELETE FROM webhook WHERE id=?", (webhook_id,)).rowcount > 0

    def set_webhook_cursor(self, webhook_id: int, cursor: float) -> None:
        self._exec("UPDATE webhook SET cursor=? WHERE id=?", (cursor, webhook_id))

    def enqueue_delivery(self, webhook_id: int, alert_id: str, payload: str, now: float) -> bool:
        cur = self._exec(
            "INSERT OR IGNORE INTO delivery (webhook_id, alert_id, payload, status, attempts,"
            " next_try) VALUES (?,?,?,?,?,?)",
            (webhook_id, alert_id, payload, "pending", 0, now),
        )
        return cur.rowcount > 0

    def due_deliveries(self, now: float, limit: int = 100) -> list[dict[str, Any]]:
        return self._rows(
            "SELECT d.*, w.url, w.secret FROM delivery d JOIN webhook w ON w.id = d.webhook_id "
            "WHERE d.status='pending' AND d.next_try <= ? ORDER BY d.next_try LIMIT ?",
            (now, limit),
        )

    def record_attempt(
        self, delivery_id: int, ok: bool, now: float, error: str | None, next_try: float | None
    ) -> None:
        if ok:
            self._exec(
                "UPDATE delivery SET status='delivered', attempts=attempts+1, delivered=?, "
                "last_error=NULL WHERE id=?",
                (now, delivery_id),
            )
        elif next_try is None:
            self._exec(
                "UPDATE delivery SET status='failed', attempts=attempts+1, last_error=? WHERE id=?",
                (error, delivery_id),
            )
        else:
            self._exec(
                "UPDATE delivery SET attempts=attempts+1, last_error=?, next_try=? WHERE id=?",
                (error, next_try, delivery_id),
            )

    def deliveries(self, webhook_id: int, limit: int = 100) -> list[dict[str, Any]]:
        return self._rows(
            "SELECT id, alert_id, status, attempts, next_try, last_error, delivered FROM delivery "
            "WHERE webhook_id=? ORDER BY id DESC LIMIT ?",
            (webhook_id, limit),
        )


def _hunt_row(row: dict[str, Any]) -> dict[str, Any]:
    out = dict(row)
    out.update(json.loads(out.pop("detail")))
    return out


def _evidence_row(row: dict[str, Any]) -> dict[str, Any]:
    out = dict(row)
    out["payload"] = json.loads(out["payload"])
    return out


def epoch_of(ts: Any) -> float:
    """``@timestamp`` (ISO 8601 text or epoch number) -> epoch seconds; 0 when unreadable."""
    return parse_timestamp(ts) or 0.0
