"""The assessment's own data: imported advisories, the known-exploited catalogue, and the
decisions users take on findings (accepted, with a reason). The operator brings the feeds
(``icsmon advisories import``): nothing is fetched at run time.

Two places keep it, following the back end the centre runs on:

- :class:`Catalog`, one SQLite file beside the embedded store (``icsmon.db`` ->
  ``icsmon.assessment.db``): the store is the sensors' (the posture view only reads it), so
  the decisions taken at the centre live here, keyed by ``finding.id``;
- :class:`EsCatalog`, Elasticsearch: advisories and known-exploited entries are documents of
  their kinds (``pipeline.kinds``: ``advisory``, ``exploited``; one index each, one document
  per id), and a decision is written into the finding's own document (``finding.state``,
  ``finding.accepted.*``), where every reader of Elasticsearch sees it and the indexer's merge
  keeps it against later sensor documents (``pipeline/findings.py``).

Advisories are kept as their CSAF documents (validated when imported, by content digest: a
re-import of the same file is a no-op, a new revision replaces the old by tracking id). A file
of the feed shaped like a known-exploited catalogue (``assessment/exploited.py``) is imported
as one.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from assessment import exploited as kev
from assessment.advisories import Advisory, AdvisoryError, files, from_json, parse, read_json

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
CREATE TABLE IF NOT EXISTS exploited (
    cve TEXT PRIMARY KEY,
    added TEXT NOT NULL,
    source TEXT NOT NULL,
    vendor TEXT NOT NULL,
    product TEXT NOT NULL,
    ransomware TEXT NOT NULL,
    imported REAL NOT NULL
);
"""
BATCH = 200  # feed files read before their digests are compared and the changed ones written


class CatalogError(ValueError):
    pass


class _Feeds:
    """Importing a feed and reading advisories, whatever keeps them."""

    _cache: tuple[Any, list[Advisory]] | None = None

    # what a keeper provides
    def _digests(self, ids: list[str]) -> dict[str, str]:
        raise NotImplementedError

    def _put(self, items: list[tuple[Advisory, str, bytes, Any]]) -> None:
        raise NotImplementedError

    def _put_exploited(self, entries: list[kev.Exploited]) -> None:
        raise NotImplementedError

    def _stamp(self) -> Any:
        """Changes whenever the advisories or the catalogue change (cheap to ask)."""
        raise NotImplementedError

    def _load(self) -> tuple[list[Advisory], set[str]]:
        raise NotImplementedError

    def import_paths(
        self, paths: Iterable[Path], progress: Callable[[Path], None] | None = None
    ) -> dict:
        """Validate and keep every feed file under ``paths`` (CSAF 2.0 advisories, and
        known-exploited catalogues); returns counts and the problems (one line per refused
        file)."""
        out: dict = {"imported": 0, "unchanged": 0, "refused": 0, "exploited": 0, "problems": []}
        batch: list[tuple[Advisory, str, bytes, Any]] = []
        for path in files(list(paths)):
            if progress is not None:
                progress(path)
            try:
                data, doc = read_json(path)
                if kev.is_catalogue(doc):
                    entries = kev.parse(doc, str(path))
                    self._put_exploited(entries)
                    out["exploited"] += len(entries)
                    continue
                batch.append((from_json(data, doc, str(path)), str(path), data, doc))
            except (AdvisoryError, kev.ExploitedError) as exc:
                out["refused"] += 1
                out["problems"].append(str(exc))
                continue
            if len(batch) >= BATCH:
                self._flush(batch, out)
                batch = []
        self._flush(batch, out)
        self._cache = None
        return out

    def _flush(self, batch: list[tuple[Advisory, str, bytes, Any]], out: dict) -> None:
        if not batch:
            return
        latest: dict[str, tuple[Advisory, str, bytes, Any]] = {}
        for item in batch:  # the same id twice in one feed: the later file wins
            latest[item[0].id] = item
        known = self._digests(list(latest))
        changed = [item for aid, item in latest.items() if known.get(aid) != item[0].digest]
        out["unchanged"] += len(batch) - len(changed)
        self._put(changed)
        out["imported"] += len(changed)

    def advisories(self) -> list[Advisory]:
        """Every imported advisory, parsed and marked with the known-exploited catalogue
        (cached until the next import)."""
        stamp = self._stamp()
        cache = self._cache
        if cache is not None and cache[0] == stamp:
            return cache[1]
        advisories, catalogue = self._load()
        out = [a.with_exploited(catalogue) for a in advisories]
        self._cache = (stamp, out)
        return out

    def advisory(self, advisory_id: str) -> Advisory | None:
        return next((a for a in self.advisories() if a.id == advisory_id), None)


class Catalog(_Feeds):
    """The assessment catalog in one SQLite file (the embedded store's centre)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(path), check_same_thread=False)
            self._db.executescript(SCHEMA)
        except (OSError, sqlite3.DatabaseError) as exc:
            raise CatalogError(f"{path}: cannot open the assessment catalog: {exc}") from None
        self._lock = threading.Lock()
        self._cache = None

    def describe(self) -> str:
        return str(self.path)

    def close(self) -> None:
        self._db.close()

    # -- advisories ---------------------------------------------------------------------------

    def _digests(self, ids: list[str]) -> dict[str, str]:
        with self._lock:
            rows = self._db.execute(
                f"SELECT id, digest FROM advisories WHERE id IN ({','.join('?' * len(ids))})", ids
            ).fetchall()
        return dict(rows)

    def _put(self, items: list[tuple[Advisory, str, bytes, Any]]) -> None:
        now = time.time()
        with self._lock:
            self._db.executemany(
                "INSERT OR REPLACE INTO advisories VALUES (?, ?, ?, ?, ?)",
                [(adv.id, adv.digest, source, now, data) for adv, source, data, _ in items],
            )
            self._db.commit()

    def _put_exploited(self, entries: list[kev.Exploited]) -> None:
        now = time.time()
        with self._lock:
            self._db.executemany(
                "INSERT OR REPLACE INTO exploited VALUES (?, ?, ?, ?, ?, ?, ?)",
                [
                    (e.cve, e.added, e.source, e.vendor, e.product, e.ransomware, now)
                    for e in entries
                ],
            )
            self._db.commit()

    def _stamp(self) -> Any:
        with self._lock:
            return (
                self._db.execute("SELECT count(*), total(imported) FROM advisories").fetchone(),
                self._db.execute("SELECT count(*), total(imported) FROM exploited").fetchone(),
            )

    def _load(self) -> tuple[list[Advisory], set[str]]:
        with self._lock:
            rows = self._db.execute(
                "SELECT id, digest, document FROM advisories ORDER BY id"
            ).fetchall()
            cves = {r[0] for r in self._db.execute("SELECT cve FROM exploited")}
        out = []
        for _id, digest, document in rows:
            adv = parse(orjson.loads(document), _id, check=False)  # validated at import
            adv.digest = digest
            out.append(adv)
        return out, cves

    def exploited(self) -> list[kev.Exploited]:
        with self._lock:
            rows = self._db.execute(
                "SELECT cve, added, source, vendor, product, ransomware FROM exploited ORDER BY cve"
            ).fetchall()
        return [kev.Exploited(*r) for r in rows]

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


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class EsCatalog(_Feeds):
    """The assessment catalog in Elasticsearch (``es_store``: a ``pipeline.es.EsStore``)."""

    def __init__(self, es_store: Any) -> None:
        from pipeline import kinds

        self.store = es_store
        self.client = es_store.client
        self._index = {
            k: kinds.get(k).current_index(es_store.prefix)
            for k in ("advisory", "exploited", "finding")
        }
        self._cache = None

    def describe(self) -> str:
        return f"Elasticsearch {self._index['advisory']}"

    def close(self) -> None:
        self.store.close()

    def _ensure(self) -> None:
        # the kinds' templates and indices, so a first import on a new cluster maps its fields
        if not self.client.indices.exists(index=self._index["advisory"]):
            self.store.setup()

    # -- advisories ---------------------------------------------------------------------------

    def _digests(self, ids: list[str]) -> dict[str, str]:
        self._ensure()
        resp = self.client.mget(
            index=self._index["advisory"], ids=ids, source_includes=["advisory.digest"]
        )
        return {
            d["_id"]: d["_source"]["advisory"]["digest"] for d in resp["docs"] if d.get("found")
        }

    def _bulk(self, kind: str, docs: list[dict[str, Any]], id_field: str) -> None:
        from pipeline.docs import nest

        if not docs:
            return
        ops: list[dict[str, Any]] = []
        for doc in docs:
            ops.append({"index": {"_index": self._index[kind], "_id": doc[id_field]}})
            ops.append(nest(doc))
        resp = self.client.bulk(operations=ops, refresh="wait_for")
        if resp["errors"]:
            bad = next(i["index"] for i in resp["items"] if i["index"].get("status", 500) >= 300)
            raise CatalogError(f"Elasticsearch refused a {kind}: {bad.get('error')}")

    def _put(self, items: list[tuple[Advisory, str, bytes, Any]]) -> None:
        now = _iso(time.time())
        docs = []
        for adv, source, _data, doc in items:
            summary = adv.summary()
            summary.pop("advisory.known_exploited", None)  # follows the catalogue when read
            summary["advisory.released"] = summary["advisory.released"] or None
            docs.append(
                {
                    **summary,
                    "advisory.digest": adv.digest,
                    "advisory.source": source,
                    "advisory.imported": now,
                    "advisory.document": doc,
                }
            )
        self._bulk("advisory", docs, "advisory.id")

    def _put_exploited(self, entries: list[kev.Exploited]) -> None:
        self._ensure()
        for lo in range(0, len(entries), 2000):
            self._bulk("exploited", [e.doc() for e in entries[lo : lo + 2000]], "vulnerability.id")

    def _stamp(self) -> Any:
        out = []
        for kind, when in (
            ("advisory", "advisory.imported"),
            ("exploited", "vulnerability.exploited_added"),
        ):
            resp = self.client.search(
                index=self._index[kind],
                size=0,
                track_total_hits=True,
                aggs={"last": {"max": {"field": when}}},
                ignore_unavailable=True,
                allow_no_indices=True,
            )
            last = resp.get("aggregations", {}).get("last", {}).get("value")
            out.append((resp["hits"]["total"]["value"], last))
        return tuple(out)

    def _scan(self, kind: str, sort_field: str, **extra: Any) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        after: list[Any] | None = None
        while True:
            page: dict[str, Any] = {"search_after": after} if after else {}
            resp = self.client.search(
                index=self._index[kind],
                size=1000,
                sort=[{sort_field: "asc"}],
                ignore_unavailable=True,
                allow_no_indices=True,
                **page,
                **extra,
            )
            hits = resp["hits"]["hits"]
            out += hits
            if len(hits) < 1000:
                return out
            after = hits[-1]["sort"]

    def _load(self) -> tuple[list[Advisory], set[str]]:
        out = []
        for hit in self._scan("advisory", "advisory.id"):
            src = hit["_source"]["advisory"]
            adv = parse(src["document"], src["id"], check=False)  # validated at import
            adv.digest = src.get("digest", "")
            out.append(adv)
        cves = {h["_id"] for h in self._scan("exploited", "vulnerability.id", source=False)}
        return out, cves

    def exploited(self) -> list[kev.Exploited]:
        from pipeline.docs import flatten

        return [
            kev.Exploited.from_doc(flatten(h["_source"]))
            for h in self._scan("exploited", "vulnerability.id")
        ]

    def remove(self, advisory_id: str) -> bool:
        from elasticsearch import NotFoundError

        try:
            self.client.delete(index=self._index["advisory"], id=advisory_id, refresh="wait_for")
        except NotFoundError:
            return False
        self._cache = None
        return True

    # -- findings' decisions: in the finding's document ---------------------------------------

    def accept(self, finding_id: str, reason: str, user: str) -> None:
        if not reason.strip():
            raise CatalogError("accepting a finding needs a reason")

        def accepted(doc: dict[str, Any]) -> dict[str, Any]:
            return {
                **doc,
                "finding.state": "accepted",
                "finding.accepted.reason": reason.strip(),
                "finding.accepted.user": user,
                "finding.accepted.at": _iso(time.time()),
            }

        if self.store.update_doc("finding", finding_id, accepted) is None:
            raise CatalogError(f"no finding {finding_id!r}")

    def reopen(self, finding_id: str) -> bool:
        was = [False]

        def reopened(doc: dict[str, Any]) -> dict[str, Any] | None:
            was[0] = doc.get("finding.state") == "accepted"
            if not was[0]:
                return None
            kept = {k: v for k, v in doc.items() if not k.startswith("finding.accepted.")}
            return {**kept, "finding.state": "open"}

        self.store.update_doc("finding", finding_id, reopened)
        return was[0]

    def acceptances(self) -> dict[str, dict]:
        from pipeline.docs import flatten

        out = {}
        hits = self._scan("finding", "finding.id", query={"term": {"finding.state": "accepted"}})
        for hit in hits:
            doc = flatten(hit["_source"])
            out[doc["finding.id"]] = {
                "reason": doc.get("finding.accepted.reason", ""),
                "user": doc.get("finding.accepted.user", ""),
                "at": doc.get("finding.accepted.at"),
            }
        return out
