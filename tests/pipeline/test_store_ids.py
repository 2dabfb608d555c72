"""Events found by id through their keys' entries (schema 9, ``event_keys``): each id stored
once (its first copy), whatever the ids and however they are batched; the upgrade from
schema 8 answers the same; a sensor's new events never read stored rows to prove it."""

from __future__ import annotations

import sqlite3
import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.query import AlertFilter
from pipeline.store import Store
from pipeline.store import schema as store_schema
from sensor.timestamps import render_times
from tests.pipeline.test_store import events_as_version_8, schema_shape
from tests.support.store_samples import corpus


def event(event_id: str, n: int) -> dict:
    return {"event.id": event_id, "@timestamp": 1_800_000_000.0 + n, "n": n}


# ids of a few keys, numbers at their end or not, some ids twice
_IDS = st.lists(
    st.text(alphabet="ab-09", min_size=1, max_size=6),
    min_size=1,
    max_size=120,
)


@settings(max_examples=60, deadline=None)
@given(ids=_IDS, batch=st.integers(1, 40), again=st.integers(0, 120))
def test_each_id_is_stored_once_its_first_copy_whatever_the_batches(
    ids: list[str], batch: int, again: int
) -> None:
    """As the UNIQUE index of schema 8 kept them: every id once, the first copy written
    (an id twice in a batch, a batch written again, an old id long after), and the stats
    count the others as duplicates."""
    writes = ids + ids[:again]  # a batch delivered twice, old ids again
    first: dict[str, int] = {}
    for n, key in enumerate(writes):
        first.setdefault(key, n)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "s.db"
        with Store(path, batch_size=batch, background_flush=False) as store:
            for n, key in enumerate(writes):
                store.write("event", event(key, n))
            store.flush()
            stats = store.stats()
            assert stats["events"] == len(first)
            assert stats["duplicates"] == len(writes) - len(first)
            for key, n in first.items():
                assert store.get_event(key) == render_times(event(key, n))
            assert store.get_event(ids[0] + "x") is None
            asked = [*first][::2] + ["not-stored-1"]
            total, page = store.search_events(AlertFilter(ids=asked, limit=1000))
            assert total == len(asked) - 1
            assert {d["event.id"] for d in page} == set(asked[:-1])
            assert store.counts()["event"] == len(first)


def test_a_sensors_new_events_never_read_stored_rows(tmp_path: Path) -> None:
    """Flows whose numbers go on from batch to batch (across 9 -> 10, 99 -> 100, ...) rank
    above their stored ids: no batch looks at stored rows to know its ids are new."""
    statements: list[str] = []
    with Store(tmp_path / "s.db", batch_size=50, background_flush=False) as store:
        store._conn.set_trace_callback(statements.append)
        for n in range(1, 1201):
            for flow in ("f00d", "beef", "c0ffee1"):
                store.write("event", event(f"{flow}-{n}", n))
        store.flush()
        assert store.stats()["events"] == 3600
        assert not [s for s in statements if "CROSS JOIN events" in s]
        # and a copy of an old one is found and not stored
        store.write("event", event("beef-15", 0))
        store.flush()
        assert store.stats()["duplicates"] == 1
    assert [s for s in statements if "CROSS JOIN events" in s]


def test_a_version_8_store_is_upgraded_and_answers_the_same(tmp_path: Path) -> None:
    """A store whose events had a UNIQUE id (schema 8) gets key entries on upgrade: the same
    tables and indexes as a new store, the same answers by id, and its ids still de-duplicate."""
    events = corpus(3_000, seed=5)[0]
    old, new = tmp_path / "v8.db", tmp_path / "v9.db"
    for path in (old, new):
        with Store(path, batch_size=300, background_flush=False) as store:
            for ev in events:
                store.write("event", ev)
    conn = sqlite3.connect(old, isolation_level=None)
    events_as_version_8(conn)
    conn.close()
    with Store(old, background_flush=False) as store:  # the upgrade
        pass
    assert schema_shape(old) == schema_shape(new)
    conn = sqlite3.connect(old)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == store_schema.SCHEMA_VERSION
    assert conn.execute("SELECT count(*) FROM event_keys").fetchone()[0] > 0
    conn.close()
    asked = AlertFilter(ids=[e["event.id"] for e in events[::7]] + ["no-such-id"], limit=5000)
    with Store.open(old, readonly=True) as a, Store.open(new, readonly=True) as b:
        for ev in events[::3]:
            assert a.get_event(ev["event.id"]) == b.get_event(ev["event.id"]) == render_times(ev)
        assert a.search_events(asked) == b.search_events(asked)
        assert a.search_events(asked)[0] == len(events[::7])
    with Store(old, batch_size=500, background_flush=False) as store:
        for ev in events[:1000]:
            store.write("event", ev)
        store.write("event", {**events[0], "event.id": "fresh-1"})
        store.flush()
        assert (store.stats()["duplicates"], store.stats()["events"]) == (1000, 1)


def test_retention_removes_the_key_entries_of_what_it_deleted(tmp_path: Path) -> None:
    with Store(tmp_path / "s.db", batch_size=100, max_events=250, background_flush=False) as store:
        for n in range(1, 1001):
            store.write("event", event(f"flow{n % 7}-{n}", n))
        store.flush()
        conn = store._conn
        orphans = conn.execute(
            "SELECT count(*) FROM event_keys k WHERE NOT EXISTS (SELECT 1 FROM events e "
            "WHERE e.rowid BETWEEN k.first AND k.last)"
        ).fetchone()[0]
        assert orphans == 0
        assert store.get_event("flow1-8") is None  # pruned
        assert store.get_event("flow6-1000") == render_times(event("flow6-1000", 1000))
        store.write("event", event("flow1-8", 2000))  # pruned: new again (and newest)
        store.flush()
        assert store.get_event("flow1-8") == render_times(event("flow1-8", 2000))
