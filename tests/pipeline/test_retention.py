"""Retention at the centre, on the real Elasticsearch: each kind's daily indices older than
its configured age are deleted (by `icsmon index prune`, and by the indexer on its schedule),
the rest stay searchable through the aliases, and nothing of another prefix is touched."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from pipeline.config import ConfigError, load_config
from pipeline.es import EsStore
from pipeline.retention import expired_day
from posture.seed import es_bulk
from sensor.events import iso_timestamp
from tests.support.pipeline import drop_pipe, make_pipe, require_services

pytestmark = pytest.mark.services

DAY = 86400
AGES = (1, 10, 20, 40, 400)  # days ago: a document on each of these days, per kind


def doc(kind: str, ts: float, i: int) -> dict[str, Any]:
    out: dict[str, Any] = {
        "@timestamp": iso_timestamp(ts),
        "event.id": f"{kind}-{i}",
        "labels.site": "site-r",
        "observer.name": "sensor-r",
    }
    if kind == "asset":
        out.update({"asset.id": f"site-r:10.0.0.{i}", "asset.last_seen": iso_timestamp(ts)})
    if kind == "response":
        out.update({"icsmon.control.request_id": f"r{i}", "icsmon.control.part": 0})
    return out


def seed(store: EsStore, now: float) -> dict[str, list[str]]:
    """A document per kind per age; the daily index names, per kind."""
    items = []
    for kind in ("alert", "event", "rollup", "asset", "response", "heartbeat"):
        for i, age in enumerate(AGES):
            items.append((kind, doc(kind, now - age * DAY, i)))
    es_bulk(store, items, refresh=True)
    names: dict[str, list[str]] = {}
    for kind, d in items:
        names.setdefault(kind, []).append(store.bulk_actions(kind, d)[0]["index"]["_index"])
    return names


def indices(store: EsStore) -> set[str]:
    return {
        row["index"] for row in store.client.cat.indices(index=f"{store.prefix}-*", format="json")
    }


def test_the_day_boundary() -> None:
    now = datetime(2026, 12, 4, 10, tzinfo=UTC).timestamp()
    day = datetime(2026, 11, 20, tzinfo=UTC)
    assert not expired_day(day, 14, now)  # its last moments are 13 d 10 h old
    assert expired_day(day - timedelta(days=1), 14, now)  # 14 d 10 h: every document older


def test_retention_settings_are_checked(tmp_path: Path) -> None:
    cfg = load_config(
        env={"ICSMON_RETENTION_EVENTS": "7"}, overrides={"retention": {"rollups": 30}}
    )
    assert cfg.retention.by_kind() == {"event": 7.0, "rollup": 30.0}
    with pytest.raises(ConfigError, match="unknown key retention.logs"):
        load_config(env={}, overrides={"retention": {"logs": 3}})
    with pytest.raises(ConfigError, match="retention.events must be 0"):
        load_config(env={}, overrides={"retention": {"events": -1}})
    # assets and findings are one merged document per id: nothing ages out by day
    for merged in ("assets", "findings"):
        with pytest.raises(ConfigError, match=f"retention.{merged}: .* retention does not apply"):
            load_config(env={}, overrides={"retention": {merged: 30}})
    bad = tmp_path / "bad.toml"
    bad.write_text("[retention]\nevents = 'soon'\n")
    with pytest.raises(ConfigError, match="bad.toml: bad value for retention.events"):
        load_config(bad, env={})


def test_prune_deletes_old_daily_indices_per_kind(tmp_path: Path) -> None:
    require_services()
    pipe = make_pipe(tmp_path)
    other = make_pipe(tmp_path / "other")
    # a prefix that starts like this one's: its indices are never this pipe's to delete
    other.cfg = load_config(
        env={}, overrides={"elasticsearch": {"index_prefix": pipe.prefix + "-x"}}
    )
    store, neighbour = EsStore(pipe.cfg), EsStore(other.cfg)
    try:
        store.setup()
        neighbour.setup()
        now = time.time()
        names = seed(store, now)
        seed(neighbour, now)
        before_neighbour = indices(neighbour)
        # (assets, one merged document per asset.id, have no daily indices: not configurable)
        spec = "events=14d,rollups=30,responses=1w"
        dry = pipe.cli("index", "prune", "--retention", spec, "--dry-run")
        listed = {line.split("\t")[2] for line in dry.stdout.splitlines()}
        want = {
            names["event"][2], names["event"][3], names["event"][4],  # 20, 40, 400 days
            names["rollup"][3], names["rollup"][4],  # 40, 400
            names["response"][1], names["response"][2], names["response"][3], names["response"][4],
        }  # fmt: skip
        assert listed == want, dry.stdout
        assert want <= indices(store)  # a dry run deletes nothing
        done = pipe.cli("index", "prune", "--retention", spec)
        assert "9 indices deleted" in done.stderr
        left = indices(store)
        assert not (want & left)
        assert set(names["alert"]) <= left and set(names["heartbeat"]) <= left  # not configured
        assert set(names["asset"]) == {store.index_name("asset", "")} <= left
        store.refresh()
        count = store.client.count(index=store.alias("event"))["count"]
        assert count == 2  # the 1 and 10 days old, through the alias
        assert indices(neighbour) == before_neighbour
        # nothing configured: a clear error, not a silent no-op
        proc = pipe.cli("index", "prune", check=False)
        assert proc.returncode == 2 and "no retention set" in proc.stderr
        proc = pipe.cli("index", "prune", "--retention", "events=soon", check=False)
        assert proc.returncode == 2 and "error: --retention: events" in proc.stderr
    finally:
        store.close()
        neighbour.delete_all()
        neighbour.close()
        drop_pipe(pipe)


def test_the_indexer_prunes_on_schedule_and_skips_what_is_already_past(tmp_path: Path) -> None:
    require_services()
    from pipeline.indexer import Indexer, setup
    from pipeline.kafka import KafkaSink

    pipe = make_pipe(tmp_path, retention={"events": 14})
    setup(pipe.cfg)
    store = EsStore(pipe.cfg)
    sink = KafkaSink.from_config(pipe.cfg)
    try:
        now = time.time()
        names = seed(store, now)
        # a sensor's spool replayed after a long outage: events 30 days old, and fresh ones
        for i in range(5):
            sink.write("event", doc("event", now - 30 * DAY, 100 + i))
            sink.write("event", doc("event", now - 60, 200 + i))
        sink.flush()
        counters = Indexer(pipe.cfg).run(once=True)
        assert counters["indices_pruned"] == 3 and counters["expired"] == 5
        assert counters["indexed"] == 5 and counters["deadlettered"] == 0
        left = indices(store)
        assert not ({names["event"][2], names["event"][3], names["event"][4]} & left)
        store.refresh()
        ids = {
            h["_id"]
            for h in store.client.search(index=store.alias("event"), size=100)["hits"]["hits"]
        }
        assert ids == {"event-0", "event-1"} | {f"event-{200 + i}" for i in range(5)}
        assert json.dumps(counters)  # the --stats line
    finally:
        sink.close(timeout=5)
        store.close()
        drop_pipe(pipe)
