"""The detection content the province pushes to sensors: the indicator watchlist and Sigma
rules with a per-rule policy (``central``: the province's version prevails over a local edit
at the plant; ``local``: a local edit is kept), as one versioned package sealed with its
digest (the format is ``detectors/content.py``'s, which the sensor reads).

The version goes up with every change of the watchlist or of the pushed rules, so a sensor
reporting an older version is behind.
"""

from __future__ import annotations

import time
from typing import Any

from detectors.content import PACKAGE_TYPE, POLICIES, seal
from response.db import SYSTEM, Forbidden, Invalid, NotFound, ResponseDB, Viewer

MAX_RULE_BYTES = 256 * 1024
WATCH_LEVEL = "high"


class Content:
    def __init__(self, db: ResponseDB, province: str = "") -> None:
        self.db = db
        self.province = province

    def version(self) -> int:
        row = self.db.one("SELECT value FROM response_counter WHERE name='content'")
        return int(row["value"]) if row else 0

    def rules(self) -> list[dict[str, Any]]:
        return self.db.rows(
            "SELECT id, title, policy, added_at, added_by, yaml FROM content_rule ORDER BY id"
        )

    def add_rule(self, who: Viewer, text: str, policy: str) -> dict[str, Any]:
        """Validate a Sigma rule (pySigma) and push it, replacing one with the same id."""
        if not who.is_province:
            raise Forbidden("the province pushes detection content")
        if policy not in POLICIES:
            raise Invalid("policy must be central or local")
        if len(text.encode()) > MAX_RULE_BYTES:
            raise Invalid(f"a rule is at most {MAX_RULE_BYTES} bytes")
        import yaml
        from sigma.collection import SigmaCollection
        from sigma.exceptions import SigmaError

        try:
            rules = SigmaCollection.from_yaml(text).rules
        except (SigmaError, yaml.YAMLError, ValueError, TypeError, AttributeError, KeyError) as exc:
            raise Invalid(f"not a Sigma rule: {' '.join(str(exc).split())[:300]}") from None
        if len(rules) != 1 or rules[0].id is None:
            raise Invalid("push one Sigma rule with an id")
        rule_id, title = str(rules[0].id), str(rules[0].title or "")
        with self.db.tx() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO content_rule VALUES (?,?,?,?,?,?)",
                (rule_id, title, text, policy, time.time(), who.name),
            )
            version = self.db.next_number(conn, "content")
            self.db.audit(
                conn,
                who,
                "content",
                rule_id,
                "push-rule",
                sites=[],
                enterprises=[],
                cities=[],
                detail={"title": title, "policy": policy, "version": version},
            )
        return {"id": rule_id, "title": title, "policy": policy, "version": version}

    def remove_rule(self, who: Viewer, rule_id: str) -> None:
        if not who.is_province:
            raise Forbidden("the province pushes detection content")
        with self.db.tx() as conn:
            if conn.execute("DELETE FROM content_rule WHERE id=?", (rule_id,)).rowcount != 1:
                raise NotFound(rule_id)
            version = self.db.next_number(conn, "content")
            self.db.audit(
                conn,
                who,
                "content",
                rule_id,
                "remove-rule",
                sites=[],
                enterprises=[],
                cities=[],
                detail={"version": version},
            )

    def package(self, now: float | None = None) -> dict[str, Any]:
        """The current content, sealed: what every sensor of the province should run."""
        watch = self.db.rows(
            "SELECT id, kind, value, source, source_ref FROM watchlist "
            "WHERE valid_until IS NULL OR valid_until > ? ORDER BY id",
            (time.time() if now is None else now,),
        )
        return seal(
            {
                "type": PACKAGE_TYPE,
                "version": self.version(),
                "province": self.province,
                "issued_at": time.time() if now is None else now,
                "watchlist": [
                    {
                        "id": w["id"],
                        "kind": w["kind"],
                        "value": w["value"],
                        "level": WATCH_LEVEL,
                        "source": f"{w['source']}:{w['source_ref']}",
                    }
                    for w in watch
                ],
                "rules": [
                    {"id": r["id"], "policy": r["policy"], "yaml": r["yaml"]} for r in self.rules()
                ],
            }
        )


__all__ = ["Content", "SYSTEM"]


def fleet(sensors: list[dict[str, Any]], version: int) -> dict[str, Any]:
    """Who is behind: each sensor's running content version (from its last heartbeat,
    ``icsmon.sensor.content_version``) against ``version``, the province's current one.

    ``current``: runs it; ``behind``: runs an older one (or none: version 0 or not reported);
    ``silent``: no recent heartbeat, so what it runs is unknown. Counted per city too."""
    rows, by_city = [], {}
    for s in sensors:
        raw = s.get("content_version")
        try:
            running = int(raw) if raw not in (None, "") else None
        except (TypeError, ValueError):
            running = None
        # a sensor stopped cleanly said what it ran; a silent one may run anything by now
        if s.get("state", "silent" if s.get("silent") else "") == "silent":
            status = "silent"
        elif running is not None and running >= version:
            status = "current"
        else:
            status = "behind"
        rows.append(
            {
                "name": s["name"],
                "site": s["site"],
                "enterprise": s["enterprise"],
                "city": s["city"],
                "last_seen": s.get("last_seen"),
                "running": running,
                "behind_by": None if running is None else max(0, version - running),
                "status": status,
            }
        )
        c = by_city.setdefault(s["city"], {"current": 0, "behind": 0, "silent": 0})
        c[status] += 1
    order = {"behind": 0, "silent": 1, "current": 2}
    rows.sort(key=lambda r: (order[r["status"]], r["running"] or 0, r["name"]))
    return {
        "version": version,
        "total": len(rows),
        "current": sum(1 for r in rows if r["status"] == "current"),
        "behind": sum(1 for r in rows if r["status"] == "behind"),
        "silent": sum(1 for r in rows if r["status"] == "silent"),
        "by_city": by_city,
        "sensors": rows,
    }
