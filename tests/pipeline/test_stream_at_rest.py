"""The converted rules agree with the stream, on the real Elasticsearch of deploy/.

The captures in pcaps/, merged in time order into one capture (what one sensor on one mirrored
port would have seen), are replayed as a sensor does, with every event shipped through Kafka
(``--ship all``) and indexed by ``icsmon index`` into a prefix of their own. Then every Lucene
query ``icsmon rules convert`` prints runs as a ``query_string`` over the events alias, and its
matching event ids are compared, rule by rule, with the events the in-stream matcher
(``SigmaEngine.matching_rules``, the sensor's own dispatch) finds in the same captures. A
difference is a failure unless pinned in ``PINNED`` with its reason, like the tshark
conformance tests. ``icsmon hunt --es`` over the same index then raises the alerts the live
run raised.

ES|QL and EQL: the minimal server build of deploy/ has neither module (its ``_nodes`` lists
only apm, transport-netty4, x-pack-core and x-pack-security: ``/_query`` and ``_eql/search``
have no handler). Their single-event queries run here when the server at 127.0.0.1:9200 has
the modules (Elastic's default distribution started in its place), and are skipped with
that reason otherwise.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from detectors.sigma import SigmaEngine
from detectors.sigma.convert import convert
from icsmon.run import Detectors, Run
from sensor.engine import Engine, EngineConfig
from sensor.timestamps import parse_timestamp
from tests.support import REPO
from tests.support.pcapgen import frames_of, write_pcap
from tests.support.pipeline import drop_pipe, make_pipe, require_services, write_config_file

pytestmark = [pytest.mark.services, pytest.mark.slow]

PCAPS = REPO / "pcaps"
CAPTURES = sorted(p for p in PCAPS.rglob("*.pcap") if p.is_file())
CONFIG = {"site": "agree-site", "observer": "agree-sensor", "organization": "agree-org"}

#: rule id -> why Elasticsearch and the stream legitimately differ on these captures.
PINNED: dict[str, str] = {}


class _Alerts:
    kinds = ("alert",)

    def __init__(self) -> None:
        self.alerts: list[dict] = []

    def write(self, kind: str, doc: dict) -> None:
        if kind == "alert":
            self.alerts.append(doc)


def stream_matches(captures: list[Path]) -> tuple[dict[str, set[str]], list[dict], int]:
    """(rule id -> ids of the events it matched, the alerts, events) of the captures decoded
    as one sensor run, as ``icsmon replay`` of them all does."""
    engine = Engine(EngineConfig(**CONFIG))
    sigma = SigmaEngine.load()
    sink = _Alerts()
    matched: dict[str, set[str]] = defaultdict(set)
    n = 0
    run = Run(engine, Detectors([sigma]), sink, store_events=False)
    for event in run.process(engine.replay(captures), want_events=True):
        n += 1
        for rid in sigma.matching_rules(event):
            matched[rid].add(event["event.id"])
    return matched, sink.alerts, n


def merged_capture(path: Path) -> Path:
    """Every frame of pcaps/ in one capture, in time order (the files overlap in time: replayed
    one after the other, time would go back between them, which no live port does)."""
    frames = [f for c in CAPTURES for f in frames_of(c)]
    linktypes = {lt for _, lt, _ in frames}
    assert linktypes == {1}, f"captures of link types {linktypes}: merge them by type"
    frames.sort(key=lambda f: f[0])  # stable: frames of one instant keep their file's order
    return write_pcap(path, frames)


@pytest.fixture(scope="module")
def indexed(tmp_path_factory: pytest.TempPathFactory) -> Any:
    require_services()
    tmp = tmp_path_factory.mktemp("agree")
    merged = merged_capture(tmp / "pcaps-merged.pcap")
    pipe = make_pipe(tmp)
    try:
        pipe.cli("index", "--setup")
        args = ["replay", str(merged), "--sink", "kafka", "--ship", "all"]
        for key, value in CONFIG.items():
            args += [f"--{'org' if key == 'organization' else key}", value]
        pipe.cli(*args, "--store", str(tmp / "sensor.db"), timeout=900)
        pipe.cli("index", "--once", timeout=900)
        from pipeline.es import EsStore

        store = EsStore(pipe.cfg)
        store.refresh()
        store.close()
        yield pipe, tmp, stream_matches([merged])
    finally:
        drop_pipe(pipe)


def _search_ids(client: Any, index: str, query: str) -> set[str]:
    ids: set[str] = set()
    after = None
    while True:
        extra: dict[str, Any] = {"search_after": after} if after else {}
        resp = client.search(
            index=index,
            query={"query_string": {"query": query}},
            size=5000,
            sort=[{"event.id": "asc"}],
            source=False,
            **extra,
        )
        hits = resp["hits"]["hits"]
        if not hits:
            return ids
        ids.update(h["_id"] for h in hits)
        after = hits[-1]["sort"]


def test_lucene_queries_match_the_stream_rule_by_rule(indexed: Any) -> None:
    pipe, _, (matched, _, events) = indexed
    from pipeline.es import EsStore

    store = EsStore(pipe.cfg)
    try:
        indexed_count = store.client.count(index=store.alias("event"))["count"]
        assert indexed_count == events, "every event of the stream is indexed"
        conversion = convert("lucene", index=store.alias("event"))
        assert not conversion.errors
        assert len(conversion.queries) >= 40
        differences: dict[str, str] = {}
        compared = 0
        for q in conversion.queries:
            at_rest = _search_ids(store.client, q.index, q.query)
            in_stream = matched.get(q.rule_id, set())
            compared += 1
            if at_rest != in_stream:
                differences[q.rule_id] = (
                    f"{q.title}: only in Elasticsearch {sorted(at_rest - in_stream)[:5]} "
                    f"({len(at_rest - in_stream)}), only in the stream "
                    f"{sorted(in_stream - at_rest)[:5]} ({len(in_stream - at_rest)}); {q.query}"
                )
        fired = sum(1 for q in conversion.queries if matched.get(q.rule_id))
        print(f"{compared} Lucene queries compared, {fired} fire on the captures")
    finally:
        store.close()
    unexpected = {rid: d for rid, d in differences.items() if rid not in PINNED}
    assert not unexpected, "\n".join(f"{rid}: {d}" for rid, d in unexpected.items())
    stale = [rid for rid in PINNED if rid not in differences]
    assert not stale, f"pinned differences that no longer occur: {stale}"
    assert fired >= 20, "most rules fire somewhere in pcaps/"


def _modules(client: Any) -> set[str]:
    nodes = client.nodes.info(metric="modules")["nodes"]
    return {m["name"] for node in nodes.values() for m in node.get("modules", [])}


@pytest.mark.parametrize("target", ["esql", "eql"])
def test_esql_and_eql_where_the_server_runs_them(indexed: Any, target: str) -> None:
    pipe, _, (matched, _, _) = indexed
    from pipeline.es import EsStore

    store = EsStore(pipe.cfg)
    try:
        module = f"x-pack-{target}"
        if module not in _modules(store.client):
            pytest.skip(
                f"{pipe.cfg.elasticsearch.url} has no {module} module (the minimal build of "
                "deploy/ lacks ES|QL and EQL; Elastic's default distribution has both)"
            )
        conversion = convert(target, index=store.alias("event"))
        differences = {}
        for q in conversion.queries:
            if "sequence" in q.query or "stats" in q.query:  # correlations: alerts, not events
                continue
            if target == "esql":
                resp = store.client.esql.query(query=q.query + " | keep _id | limit 10000")
                at_rest = {row[0] for row in resp["values"]}
            else:
                resp = store.client.eql.search(index=q.index, query=q.query, size=10000)
                at_rest = {h["_id"] for h in resp["hits"].get("events", [])}
            in_stream = matched.get(q.rule_id, set())
            if at_rest != in_stream and q.rule_id not in PINNED:
                differences[q.rule_id] = f"{q.title}: {len(at_rest)} vs {len(in_stream)}"
        assert not differences, differences
    finally:
        store.close()


def test_a_hunt_at_the_centre_raises_what_the_stream_raised(indexed: Any) -> None:
    """``icsmon hunt --es`` over the indexed events (read in time order) raises the live run's
    alerts rule by rule; with the live alerts indexed (they came through Kafka) it writes
    nothing; alerts removed from the index are raised again, marked with the hunt."""
    pipe, tmp, (_, live, _) = indexed
    from pipeline.es import EsStore

    config = write_config_file(pipe.cfg, Path(tmp) / "pipeline.toml")
    res = pipe.cli("hunt", "--config", str(config), "--dry-run", "--json", timeout=900)
    dry = json.loads(res.stdout)
    by_rule: dict[str, int] = defaultdict(int)
    for alert in live:
        by_rule[alert["rule.id"]] += 1
    assert dry["alerts"] == len(live) > 100 and dry["by_rule"] == by_rule
    res = pipe.cli("hunt", "--config", str(config), "--json", timeout=900)
    known = json.loads(res.stdout)
    assert known["known"] == len(live) and known["new"] == 0
    # the alerts of one rule gone from the index: the hunt raises them again, marked
    rule = max(by_rule, key=lambda r: by_rule[r])
    store = EsStore(pipe.cfg)
    try:
        hits = store.client.search(
            index=store.alias("alert"), query={"term": {"rule.id": rule}}, size=1000
        )["hits"]["hits"]
        assert len(hits) == by_rule[rule]
        for hit in hits:
            store.client.delete(index=hit["_index"], id=hit["_id"], refresh=True)
        res = pipe.cli("hunt", rule, "--config", str(config), "--json", timeout=900)
        again = json.loads(res.stdout)
        assert again["new"] == by_rule[rule] and again["known"] == 0
        store.refresh()
        back = store.client.search(
            index=store.alias("alert"), query={"term": {"rule.id": rule}}, size=1000
        )["hits"]["hits"]
        assert {h["_id"] for h in back} == {h["_id"] for h in hits}
        for hit in back:
            assert hit["_source"]["icsmon"]["hunt"]["id"] == again["hunt_id"]
            assert len(hit["_source"]["rule"]["version"]) == 16
            live_ts = next(h["_source"]["@timestamp"] for h in hits if h["_id"] == hit["_id"])
            # the same instant (text -> float -> text may land one microsecond lower)
            assert (
                abs(parse_timestamp(hit["_source"]["@timestamp"]) - parse_timestamp(live_ts)) < 2e-6
            )
    finally:
        store.close()
    res = pipe.cli("hunt", rule, "--config", str(config), "--json", timeout=900)
    assert json.loads(res.stdout)["new"] == 0
