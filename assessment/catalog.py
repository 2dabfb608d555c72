"""The assessment's own state, one SQLite file: imported advisories and the decisions users
take on findings (accepted, with a reason). Beside the store (``icsmon.db`` ->
``icsmon.assessment.db``), or in the user's data folder with Elasticsearch; the operator
brings the advisory feed (``icsmon advisories import``): nothing is fetched at run time.

Advisories are kept as their CSAF documents (validated when imported, by content digest: a
re-import of the same file is a no-op, a new revision replaces the old by tracking id).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import orjson

from assessment.advisories import Advisory, AdvisoryError, files, load_file, parse

SCHEMA = """
CREATE TABLE IF NOT EXISTS advisories (
    id TEXT PRIMARY KEY,
    digest TEXT NOT NULL,
    source TEXT NOT NULL,
    imported REAL NOT NULL,
    document BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS acceptances (
    finding_id TEXT PRIMARY KEY,
    reason TEXT NOT NULL,
    user TEXT NOT NULL,
    at REAL NOT NULL
);
"""


class CatalogError(ValueError):
    pass


class Catalog:
    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(path), check_same_thread=False)
            self._db.executescript(SCHEMA)
        except (OSError, sqlite3.DatabaseError) as exc:
            raise CatalogError(f"{path}: cannot open the assessment catalog: {exc}") from None
        self._lock = threading.Lock()
        self._cache: tuple[int, list[Advisory]] | None = None

    def close(self) -> None:
        self._db.close()

    # -- advisories ---------------------------------------------------------------------------

    def import_paths(
        self, paths: Iterable[Path], progress: Callable[[Path], None] | None = None
    ) -> dict:
        """Validate and store every CSAF file under ``paths``; returns counts and the
        problems (one line per refused file)."""
        out: dict = {"imported": 0, "unchanged": 0, "refused": 0, "problems": []}
        for path in files(list(paths)):
            if progress is not None:
                progress(path)
            try:
                adv = load_file(path)
            except AdvisoryError as exc:
                out["refused"] += 1
                out["problems"].append(str(exc))
                continue
            with self._lock:
                row = self._db.execute(
                    "SELECT digest FROM advisories WHERE id = ?", (adv.id,)
                ).fetchone()
                if row is not None and row[0] == adv.digest:
                    out["unchanged"] += 1
                    continue
                self._db.execute(
                    "INSERT OR REPLACE INTO advisories VALUES (?, ?, ?, ?, ?)",
                    (adv.id, adv.digest, str(path), time.time(), path.read_bytes()),
                )
                self._db.commit()
                self._cache = None
            out["imported"] += 1
        return out

    def advisories(self) -> list[Advisory]:
        """Every imported advisory, parsed (cached until the next import)."""
        with self._lock:
            count = self._db.execute("SELECT count(*), total(imported) FROM advisories").fetchone()
            stamp = hash(tuple(count))
            if self._cache is not None and self._cache[0] == stamp:
                return self._cache[1]
            rows = self._db.execute(
                "SELECT id, digest, document FROM advisories ORDER BY id"
            ).fetchall()
        out = []
        for _id, digest, document in rows:
            adv = parse(orjson.loads(document), _id, check=False)  # validated at import
            adv.digest = digest
            out.append(adv)
        with self._lock:
            self._cache = (stamp, out)
        return out

    def advisory(self, advisory_id: str) -> Advisory | None:
        return next((a for a in self.advisories() if a.id == advisory_id), None)

    def remove(self, advisory_id: str) -> bool:
        with self._lock:
            n = self._db.execute("DELETE FROM advisories WHERE id = ?", (advisory_id,)).rowcount
            self._db.commit()
            self._cache = None
        return n > 0

    # -- findings' decisions ------------------------------------------------------------------

    def accept(self, finding_id: str, reason: str, user: str) -> None:
        if not reason.strip():
            raise CatalogError("accepting a finding needs a reason")
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO acceptances VALUES (?, ?, ?, ?)",
                (finding_id, reason.strip(), user, time.time()),
            )
            self._db.commit()

    def reopen(self, finding_id: str) -> bool:
        with self._lock:
            n = self._db.execute(
                "DELETE FROM acceptances WHERE finding_id = ?", (finding_id,)
            ).rowcount
            self._db.commit()
        return n > 0

    def acceptances(self) -> dict[str, dict]:
        with self._lock:
            rows = self._db.execute(
                "SELECT finding_id, reason, user, at FROM acceptances"
            ).fetchall()
        return {r[0]: {"reason": r[1], "user": r[2], "at": r[3]} for r in rows}
