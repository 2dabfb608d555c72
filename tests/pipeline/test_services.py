"""Sensor -> Kafka -> indexer -> Elasticsearch, end to end, against the real services.

The captures in pcaps/ are replayed twice by the real command line: once into a JSON lines
file (the embedded run) and once with ``--sink kafka --ship all``; ``icsmon index --once`` then moves
the topics into Elasticsearch, where every alert, event and asset of the embedded run must
be found, field for field, once.
"""

from __future__ import annotations

import base64
import json
import shutil
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from pipeline import kinds
from pipeline.docs import flatten
from pipeline.es import FIELD_TYPES, EsQueryBackend, EsStore, properties_tree
from pipeline.indexer import Indexer, setup
from pipeline.kafka import KafkaSink, make_producer
from pipeline.query import AlertFilter, AssetFilter
from tests.support.pipeline import (
    REPO,
    committed,
    drop_pipe,
    end_offsets,
    es_docs,
    event_doc,
    make_pipe,
    read_jsonl,
    require_services,
    topic_messages,
    wait_for,
)

pytestmark = pytest.mark.services

CAPTURES = sorted(str(p) for p in (REPO / "pcaps").rglob("*.pcap"))
REPLAY_ARGS = [
    "--site",
    "site-e2e",
    "--observer",
    "sensor-e2e",
    "--org",
    "ent-e2e",
    "--no-store-events",
]


@pytest.fixture(scope="module")
def replayed(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The captures replayed into JSON lines and through Kafka into Elasticsearch."""
    require_services()
    if not CAPTURES:
        pytest.skip("no captures under pcaps/")
    tmp = tmp_path_factory.mktemp("e2e")
    # Both runs read the same snapshot of the captures, even if pcaps/ is being regenerated.
    captures = []
    for i, src in enumerate(CAPTURES):
        dst = tmp / f"{i:03d}-{Path(src).name}"
        shutil.copyfile(src, dst)
        captures.append(str(dst))
    pipe = make_pipe(tmp)
    try:
        pipe.cli("index", "--setup")
        embedded = tmp / "embedded.jsonl"
        pipe.cli(
            "replay",
            *captures,
            *REPLAY_ARGS,
            "--sink",
            "jsonl",
            "--out",
            str(embedded),
            "--store-events",
        )
        pipe.cli(
            "replay", *captures, *REPLAY_ARGS, "--sink", "kafka", "--store-events", "--ship", "all"
        )
        proc = pipe.cli("index", "--once", "--stats")
        stats = json.loads(proc.stdout.strip().splitlines()[-1])
        yield pipe, list(read_jsonl(embedded)), stats
    finally:
        drop_pipe(pipe)


def by_kind(docs: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {kind: [] for kind in kinds.names()}
    for doc in docs:
        dataset = doc["event"].get("dataset", "")
        kind = dataset[7:] if dataset.startswith("icsmon.") else doc["event"]["kind"]
        out[kind].append(doc)
    return out


def test_every_document_arrives_once_field_for_field(replayed: Any) -> None:
    pipe, embedded, stats = replayed
    expected = by_kind(embedded)
    assert expected["event"], "the captures produced no events"
    assert stats["deadlettered"] == 0 and stats["rewinds"] == 0
    reasons = [d["icsmon"]["sensor"]["reason"] for d in expected["heartbeat"]]
    assert reasons[0] == "start" and reasons[-1] == "stop" and set(reasons[1:-1]) <= {"interval"}
    for kind in ("alert", "event", "heartbeat", "rollup"):
        want = {d["event"]["id"]: d for d in expected[kind]}
        assert len(want) == len(expected[kind]), f"duplicate {kind} ids in the embedded run"
        got = es_docs(pipe, kind)
        ids = [h["_id"] for h in got]
        assert len(ids) == len(set(ids)), f"a {kind} was indexed twice"
        assert set(ids) == set(want), f"{kind}s differ: {set(ids) ^ set(want)}"
        for hit in got:
            assert hit["_source"] == want[hit["_id"]], f"{kind} {hit['_id']} differs"
            day = hit["_source"]["@timestamp"][:10].replace("-", ".")
            assert hit["_index"] == f"{pipe.prefix}-{kind}s-{day}"
    # Assets are re-sent as they change; the index keeps the last state of each.
    last_asset = {d["asset"]["id"]: d for d in expected["asset"]}
    got_assets = {h["_id"]: h["_source"] for h in es_docs(pipe, "asset")}
    assert got_assets == last_asset
    # The sensor's newest heartbeat, whatever order they were indexed in.
    store = EsStore(pipe.cfg)
    try:
        latest = store.client.get(index=store.latest_index("heartbeat"), id="sensor-e2e")["_source"]
    finally:
        store.close()
    newest = max(expected["heartbeat"], key=lambda d: d["@timestamp"])
    assert latest == newest


def test_what_kafka_carried_is_what_elasticsearch_holds(replayed: Any) -> None:
    pipe, _embedded, _stats = replayed
    for kind in ("alert", "event", "asset", "heartbeat", "rollup"):
        produced: dict[str, Any] = {}
        for msg in topic_messages(pipe, pipe.cfg.topic(kind)):
            doc = json.loads(msg.value)
            assert msg.key == b"site-e2e"  # keyed by site: one site's documents stay in order
            produced[doc["asset"]["id"] if kind == "asset" else doc["event"]["id"]] = doc
        indexed = {h["_id"]: h["_source"] for h in es_docs(pipe, kind)}
        assert indexed == produced, f"{kind}: Kafka and Elasticsearch differ"


def test_alerts_flowed_when_the_rules_fire(replayed: Any) -> None:
    pipe, embedded, _stats = replayed
    alerts = by_kind(embedded)["alert"]
    if not alerts:
        pytest.skip("the shipped rules raised no alert on these captures")
    for alert in alerts:
        assert alert["threat"]["framework"] == "MITRE ATT&CK for ICS"
    assert len(es_docs(pipe, "alert")) == len(alerts)


def test_no_field_was_mapped_dynamically_or_dropped_as_malformed(replayed: Any) -> None:
    pipe, _embedded, _stats = replayed
    store = EsStore(pipe.cfg)
    try:
        for kind in ("alert", "event", "asset", "heartbeat", "rollup"):
            explicit = properties_tree({**FIELD_TYPES, **kinds.get(kind).es_fields})
            mappings = store.client.indices.get_mapping(index=store.alias(kind))
            for index, body in mappings.items():
                extra = sorted(_extra_fields(body["mappings"].get("properties", {}), explicit))
                assert not extra, f"{index}: fields not in FIELD_TYPES: {extra}"
            ignored = store.client.search(
                index=store.alias(kind), size=5, query={"exists": {"field": "_ignored"}}
            )
            bad = [(h["_id"], h.get("_ignored")) for h in ignored["hits"]["hits"]]
            assert not bad, f"{kind}: values ignored as malformed: {bad}"
    finally:
        store.close()


def _extra_fields(actual: dict[str, Any], explicit: dict[str, Any], prefix: str = "") -> list[str]:
    out = []
    for name, body in actual.items():
        want = explicit.get(name)
        if want is None:
            out.append(f"{prefix}{name} ({body.get('type', 'object')})")
        elif "properties" in body and want.get("dynamic") is not True:
            out += _extra_fields(body["properties"], want.get("properties", {}), f"{prefix}{name}.")
    return out


def test_query_backend_answers_from_elasticsearch(replayed: Any) -> None:
    pipe, embedded, _stats = replayed
    docs = by_kind(embedded)
    backend = EsQueryBackend(pipe.cfg)
    try:
        total, page = backend.search_events(AlertFilter(limit=5))
        assert total == len(docs["event"]) and len(page) == 5
        stamps = [d["@timestamp"] for d in page]
        assert stamps == sorted(stamps, reverse=True)
        by_proto = Counter(d["network"]["protocol"] for d in docs["event"])
        for proto, count in by_proto.items():
            assert backend.search_events(AlertFilter(protocol=proto, limit=1))[0] == count
        total, _ = backend.search_events(AlertFilter(sites=["no-such-site"]))
        assert total == 0
        alerts = docs["alert"]
        total, page = backend.search_alerts(AlertFilter(limit=1000))
        assert total == len(alerts)
        assert {d["event.id"] for d in page} == {a["event"]["id"] for a in alerts}
        if alerts:
            sev = sorted(a["event"]["severity"] for a in alerts)[len(alerts) // 2]
            want = sum(1 for a in alerts if a["event"]["severity"] >= sev)
            assert backend.search_alerts(AlertFilter(min_severity=sev))[0] == want
            techniques = Counter(t for a in alerts for t in a["threat"]["technique"]["id"])
            got = dict(backend.count_alerts_by(AlertFilter(), "threat.technique.id", size=100))
            assert got == dict(techniques)
            one = alerts[0]
            assert backend.get_alert(one["event"]["id"]) == flatten(one)
            word = one["rule"]["name"].split()[0].upper()
            want = sum(1 for a in alerts if word.lower() in a["rule"]["name"].lower())
            assert backend.search_alerts(AlertFilter(text=word, limit=1))[0] == want
        assert backend.get_alert("no-such-alert") is None
        last_asset = {d["asset"]["id"]: d for d in docs["asset"]}
        total, assets = backend.search_assets(AssetFilter())
        assert total == len(last_asset)
        assert {a["asset.id"] for a in assets} == set(last_asset)
        servers = [a for a in last_asset.values() if "modbus-server" in a["asset"]["roles"]]
        assert backend.search_assets(AssetFilter(role="modbus-server"))[0] == len(servers)
    finally:
        backend.close()


def test_offsets_committed_up_to_the_end(replayed: Any) -> None:
    pipe, _embedded, _stats = replayed
    assert committed(pipe) == end_offsets(pipe)


def test_setup_is_idempotent(tmp_path: Path) -> None:
    require_services()
    pipe = make_pipe(tmp_path)
    try:
        first = pipe.cli("index", "--setup").stdout
        assert f"topic {pipe.prefix}.alerts" in first and f"template {pipe.prefix}-alerts" in first
        second = pipe.cli("index", "--setup").stdout
        assert "topic" not in second  # topics exist: nothing created twice
        store = EsStore(pipe.cfg)
        try:
            tpl = store.client.indices.get_index_template(name=store.alias("alert"))
            body = tpl["index_templates"][0]["index_template"]
            assert body["template"]["aliases"] == {f"{pipe.prefix}-alerts": {}}
            props = body["template"]["mappings"]["properties"]
            assert props["source"]["properties"]["ip"]["type"] == "ip"
            assert props["modbus"]["properties"]["function_code"]["type"] == "long"
            assert props["rule"]["properties"]["id"]["type"] == "keyword"
        finally:
            store.close()
    finally:
        drop_pipe(pipe)


def test_poison_messages_go_to_the_dead_letter_topic_and_the_rest_flow(tmp_path: Path) -> None:
    require_services()
    pipe = make_pipe(tmp_path)
    setup(pipe.cfg)
    producer = make_producer(pipe.cfg)
    events = pipe.cfg.topic("event")
    good = [
        json.dumps(
            {
                "@timestamp": "2026-11-26T10:00:00Z",
                "event": {"kind": "event", "id": f"ok-{i}"},
                "source": {"ip": "10.0.0.1"},
            }
        ).encode()
        for i in range(3)
    ]
    poison = {
        b"\xff\xfe not json": "undecodable: not JSON",
        b"[1, 2, 3]": "undecodable: a JSON list",
        json.dumps(
            {"@timestamp": "2026-11-26T10:00:00Z", "event": {"kind": "event"}}
        ).encode(): "no usable id",
        json.dumps(
            {"@timestamp": "yesterday", "event": {"id": "bad-ts"}}
        ).encode(): "no usable timestamp",
        # An object where ECS has a value: Elasticsearch rejects the document itself.
        json.dumps(
            {
                "@timestamp": "2026-11-26T10:00:00Z",
                "event": {"id": "bad-map"},
                "source": {"ip": {"nested": "object"}},
            }
        ).encode(): "rejected by Elasticsearch",
    }
    try:
        for value in [good[0], *poison, good[1], good[2]]:
            producer.send(events, key=b"site-x", value=value)  # one key: one partition, in order
        producer.flush()
        indexer = Indexer(pipe.cfg)
        try:
            stats = indexer.run(once=True)
        finally:
            indexer.close()
        assert stats["indexed"] == 3 and stats["deadlettered"] == len(poison)
        assert sorted(h["_id"] for h in es_docs(pipe, "event")) == ["ok-0", "ok-1", "ok-2"]
        letters = [json.loads(m.value) for m in topic_messages(pipe, pipe.cfg.topic("deadletter"))]
        assert len(letters) == len(poison)
        for letter in letters:
            if "value" in letter:
                original = letter["value"].encode()
            else:
                original = base64.b64decode(letter["value_base64"])
            assert original in poison, f"unexpected dead letter {letter}"
            assert letter["reason"].startswith(poison[original]), letter["reason"]
            assert letter["topic"] == events and letter["key"] == "site-x"
        assert committed(pipe) == end_offsets(pipe)
    finally:
        producer.close()
        drop_pipe(pipe)


def test_two_indexers_share_the_partitions(tmp_path: Path) -> None:
    require_services()
    pipe = make_pipe(tmp_path, indexer={"batch_size": 200})
    setup(pipe.cfg)
    members = [Indexer(pipe.cfg, client_id=f"indexer-{k}") for k in range(2)]
    assigned: list[set[Any]] = [set(), set()]

    def note(member: Indexer) -> None:
        assigned[members.index(member)] = set(member.consumer.assignment())

    threads = [threading.Thread(target=m.run, kwargs={"on_poll": note}) for m in members]
    sink = KafkaSink.from_config(pipe.cfg)
    try:
        for t in threads:
            t.start()
        wait_for(
            "both members to get partitions",
            lambda: (
                all(assigned)
                and not (assigned[0] & assigned[1])
                and len(assigned[0] | assigned[1]) == 3 * len(kinds.names())
            ),
            limit_s=120,
        )
        n = 6000
        for i in range(n):
            sink.write("event", event_doc(i, site=f"site-{i % 12}"))  # 12 keys over 3 partitions
        sink.flush()
        assert sink.stats()["acked"] == n

        def all_indexed() -> bool:
            return sum(m.counters["indexed"] for m in members) >= n

        wait_for("every document to be indexed", all_indexed, limit_s=180)
    finally:
        for m in members:
            m.stop()
        for t in threads:
            t.join(60)
        for m in members:
            m.close()
        sink.close()
    try:
        assert all(m.counters["indexed"] > 0 for m in members), [m.counters for m in members]
        ids = [h["_id"] for h in es_docs(pipe, "event")]
        assert len(ids) == n and len(set(ids)) == n
        assert committed(pipe) == end_offsets(pipe)
    finally:
        drop_pipe(pipe)


def test_an_oversized_document_is_counted_not_spooled_and_the_rest_flow(tmp_path: Path) -> None:
    require_services()
    pipe = make_pipe(tmp_path)
    setup(pipe.cfg)
    sink = KafkaSink.from_config(pipe.cfg)
    try:
        huge = dict(event_doc(1), **{"modbus.data": "ab" * (1 << 20)})  # 2 MB: over Kafka's limit
        sink.write("event", event_doc(0))
        sink.write("event", huge)
        sink.write("event", event_doc(2))
        sink.flush()
        stats = sink.stats()
        assert stats["errors"] == 1 and stats["acked"] == 2
        assert stats["spool_pending"] == 0 and not sink.spooling
    finally:
        sink.close()
        drop_pipe(pipe)
