"""The document-kinds registry and what reads it: topics, spool queues, index templates,
store tables; the latest-heartbeat index on the real Elasticsearch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pipeline import kinds
from pipeline.config import load_config
from pipeline.es import FIELD_TYPES, EsQueryBackend, EsStore
from pipeline.query import AlertFilter
from pipeline.spool import Spool
from pipeline.store import Store
from sensor.events import Context
from sensor.heartbeat import Heartbeats
from tests.support.pipeline import drop_pipe, make_pipe, require_services


def test_every_kind_has_its_names_in_one_place() -> None:
    cfg = load_config(
        env={}, overrides={"kafka": {"topic_prefix": "p"}, "elasticsearch": {"index_prefix": "q"}}
    )
    for kind in kinds.all_kinds():
        assert cfg.topic(kind.name) == f"p.{kind.plural}"
        assert cfg.alias(kind.name) == f"q-{kind.plural}"
        # a kind kept in one index (findings, advisories) has it under the same alias pattern
        day = "2026.11.26" if kind.daily else "current"
        assert kind.index("q", "2026.11.26") == f"q-{kind.plural}-{day}"
    assert not kinds.FINDING.daily and kinds.FINDING.merge is not None
    assert set(kinds.sensor_kinds()) == set(kinds.names()) - {"advisory", "exploited"}
    assert cfg.topic("deadletter") == "p.deadletter"
    assert kinds.names()[0] == "alert"  # most important first: replayed first from the spool
    assert "alert" not in kinds.eviction_order()
    assert kinds.eviction_order()[0] == "event"  # the first to go when the spool is full
    with pytest.raises(ValueError, match="unknown document kind 'nope'"):
        cfg.topic("nope")


def test_every_stored_kind_has_one_store_writer_and_table() -> None:
    from pipeline.store.schema import TABLES
    from pipeline.store.writer import MERGE_ASSET, MERGE_FINDING, WRITERS

    stored = {k.name for k in kinds.all_kinds() if k.stored}
    assert set(WRITERS) == stored == set(TABLES)
    # the merged kinds' writers fold by the rule the registry names (the indexer's too)
    assert MERGE_ASSET is kinds.ASSET.merge and MERGE_FINDING is kinds.FINDING.merge
    assert {k.name for k in kinds.all_kinds() if k.merge} == {"asset", "finding"}


def test_a_kind_cannot_be_registered_twice_differently() -> None:
    assert kinds.register(kinds.HEARTBEAT) is kinds.HEARTBEAT  # the same entry: idempotent
    with pytest.raises(ValueError, match="already registered"):
        kinds.register(kinds.DocKind("heartbeat", "beats", "event.id"))
    with pytest.raises(ValueError, match="already registered"):
        kinds.register(kinds.DocKind("beat", "heartbeats", "event.id"))


def test_the_spool_has_a_queue_per_kind(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool", max_bytes=1 << 20, segment_bytes=64 << 10)
    try:
        for kind in kinds.sensor_kinds():
            assert spool.append(kind, b"k", b"v-" + kind.encode())
        for kind in kinds.sensor_kinds():
            assert [r.value for r in spool.read(kind, 10)] == [b"v-" + kind.encode()]
        assert {f"{k.plural}_dropped" for k in kinds.all_kinds() if k.evictable} <= set(
            spool.stats()
        )
    finally:
        spool.close()


def heartbeat_docs(
    n: int, observer: str = "sensor-k", site: str = "site-k"
) -> list[dict[str, Any]]:
    hb = Heartbeats(Context(site, observer, "ent-k"), interval_s=60, version="test")
    base = 1_795_000_000.0
    out = [hb.start(base, {"packets": 0})]
    out += [hb.beat(base + 60 * i, {"packets": 100 * i}) for i in range(1, n - 1)]
    out.append(hb.stop(base + 60 * (n - 1) + 5, {"packets": 100 * (n - 1)}))
    return out


def test_the_store_keeps_heartbeats_and_answers_the_newest_per_sensor(tmp_path: Path) -> None:
    beats = heartbeat_docs(5) + heartbeat_docs(3, observer="sensor-j", site="site-j")
    with Store.open(tmp_path / "k.db") as store:
        for doc in reversed(beats):  # arrival order does not matter
            store.write("heartbeat", doc)
        for doc in beats:
            store.write("heartbeat", doc)  # a re-send: nothing new
        store.flush()
        assert store.counts()["heartbeat"] == len(beats)
        assert store.stats()["duplicates"] == len(beats)
        latest = store.latest("heartbeat", AlertFilter())
        assert {d["observer.name"]: d["icsmon.sensor.reason"] for d in latest} == {
            "sensor-k": "stop",
            "sensor-j": "stop",
        }
        assert [
            d["observer.name"] for d in store.latest("heartbeat", AlertFilter(sites=["site-j"]))
        ] == ["sensor-j"]
        assert dict(store.last_seen_by(AlertFilter(), "observer.name", kind="heartbeat")) == {
            "sensor-k": 1_795_000_000.0 + 245,
            "sensor-j": 1_795_000_000.0 + 125,
        }


@pytest.mark.services
def test_the_latest_index_keeps_the_newest_heartbeat_whatever_the_order(tmp_path: Path) -> None:
    from pipeline.indexer import Indexer, setup
    from pipeline.kafka import KafkaSink

    require_services()
    pipe = make_pipe(tmp_path)
    setup(pipe.cfg)
    beats = heartbeat_docs(6)
    sink = KafkaSink.from_config(pipe.cfg)
    try:
        for doc in [beats[3], beats[5], beats[0], beats[4], beats[1], beats[2]]:
            sink.write("heartbeat", doc)
        sink.flush()
    finally:
        sink.close()
    indexer = Indexer(pipe.cfg)
    try:
        counters = indexer.run(once=True)
    finally:
        indexer.close()
    try:
        assert counters["indexed"] == 6 and counters["deadlettered"] == 0
        # beats[3] and beats[5] went in; the four older ones that came after were refused
        assert counters["latest_updated"] == 2 and counters["latest_older"] == 4
        store = EsStore(pipe.cfg)
        try:
            store.refresh()
            assert store.client.count(index=store.alias("heartbeat"))["count"] == 6
            latest_index = store.latest_index("heartbeat")
            assert store.client.count(index=latest_index)["count"] == 1
            got = store.client.get(index=latest_index, id="sensor-k")["_source"]
            assert got["icsmon"]["sensor"]["reason"] == "stop"
            mapping = store.client.indices.get_mapping(index=latest_index)[latest_index]["mappings"]
            sensor = mapping["properties"]["icsmon"]["properties"]["sensor"]["properties"]
            assert sensor["started"]["type"] == "date" and sensor["packets"]["type"] == "long"
            assert (
                mapping["properties"]["source"]["properties"]["ip"]["type"]
                == FIELD_TYPES["source.ip"]["type"]
            )
        finally:
            store.close()
        backend = EsQueryBackend(pipe.cfg)
        try:
            latest = backend.latest("heartbeat", AlertFilter(sites=["site-k"]))
            assert [d["event.id"] for d in latest] == [beats[5]["event.id"]]
            assert backend.latest("heartbeat", AlertFilter(sites=["elsewhere"])) == []
        finally:
            backend.close()
    finally:
        drop_pipe(pipe)
