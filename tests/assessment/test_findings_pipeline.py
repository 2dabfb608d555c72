"""Findings through the province pipeline: a sensor's findings (a real replay) go through
real Kafka and the indexer into Elasticsearch, one document per ``finding.id`` merged by the
one rule (pipeline/findings.py); a decision taken at the centre survives later sensor
documents (a restart, a late one from the spool, a careless one that claims a state), also
when it lands between the indexer's read and its write (a version conflict, folded again)."""

from __future__ import annotations

import copy
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from assessment.catalog import EsCatalog
from assessment.findings import lifecycle, merge
from pipeline.docs import flatten
from pipeline.es import EsStore
from pipeline.findings import MAX_EVIDENCE
from pipeline.indexer import Indexer, setup
from pipeline.kafka import KafkaSink
from tests.support.pipeline import drop_pipe, es_docs, make_pipe, read_jsonl, require_services

PCAPS = Path(__file__).resolve().parents[2] / "pcaps"
CAPTURES = [
    PCAPS / "opcua" / "opcua_legacy_policies.pcap",
    PCAPS / "s7comm" / "s7_unprotected.pcap",
]
DAY = 86400.0

pytestmark = pytest.mark.services


def _iso_shift(stamp: str, days: float) -> str:
    from datetime import UTC, datetime, timedelta

    ts = datetime.fromisoformat(stamp.replace("Z", "+00:00")) + timedelta(days=days)
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _send(pipe: Any, docs: list[dict[str, Any]]) -> None:
    # every document in Kafka, even on a machine too busy to answer the first metadata
    # request within the sensor's default 0.2 s (it would spool them: seen once in a full run)
    cfg = replace(pipe.cfg, kafka=replace(pipe.cfg.kafka, max_block_ms=30_000))
    sink = KafkaSink(cfg, site="s1")
    try:
        for doc in docs:
            sink.write("finding", doc)
        sink.flush(timeout=60)
    finally:
        sink.close()
    assert sink.counters["acked"] == len(docs)


def _index(pipe: Any, indexer: Indexer | None = None) -> dict[str, int]:
    indexer = indexer or Indexer(pipe.cfg)
    try:
        return indexer.run(once=True)
    finally:
        indexer.close()


def _kept(pipe: Any) -> dict[str, dict[str, Any]]:
    hits = es_docs(pipe, "finding")
    assert {h["_index"] for h in hits} <= {f"{pipe.prefix}-findings-current"}
    return {h["_id"]: flatten(h["_source"]) for h in hits}


@pytest.fixture
def pipe(tmp_path: Path) -> Any:
    require_services()
    p = make_pipe(tmp_path)
    setup(p.cfg)
    yield p
    drop_pipe(p)


def test_sensor_findings_merge_in_elasticsearch_and_centre_decisions_hold(
    pipe: Any, tmp_path: Path
) -> None:
    args = ["--site", "s1", "--observer", "sensor-f", "--no-rules"]
    embedded = tmp_path / "embedded.jsonl"
    pipe.cli("replay", *map(str, CAPTURES), *args, "--sink", "jsonl", "--out", str(embedded))
    pipe.cli("replay", *map(str, CAPTURES), *args, "--sink", "kafka")
    shipped = [flatten(d) for d in read_jsonl(embedded)]
    sensor = [d for d in shipped if "finding.id" in d]
    assets = [d for d in shipped if d.get("event.kind") == "asset"]  # the other merged kind
    assert {d["finding.kind"] for d in sensor} >= {
        "opcua-deprecated-security-policy",
        "opcua-expired-certificate",
        "s7-no-protection-level",
    }
    stats = _index(pipe)
    assert stats["deadlettered"] == 0 and stats["merged"] == len(sensor) + len(assets)
    kept = _kept(pipe)
    expected = merge(sensor)  # the same rule, over the sensor's own documents
    assert set(kept) == set(expected)
    for fid, doc in kept.items():
        assert doc == expected[fid] | {"finding.state": "open"}, fid

    es = EsStore(pipe.cfg)
    catalog = EsCatalog(es)
    try:
        a, b, c = sorted(kept)[:3]
        catalog.accept(a, "bench PLC, isolated from the plant", "soc-1")
        accepted_at = _kept(pipe)[a]["finding.accepted.at"]
        base = kept[a]
        # the sensor restarts a day later: a new first seen, later last seen, new evidence
        restart = copy.deepcopy(base)
        restart.update(
            {
                "finding.first_seen": _iso_shift(base["finding.last_seen"], 1),
                "finding.last_seen": _iso_shift(base["finding.last_seen"], 2),
                "@timestamp": _iso_shift(base["finding.last_seen"], 2),
                "finding.evidence.event_ids": [f"r{i}" for i in range(25)],
                "finding.summary": "seen again after a restart",
                "finding.state": "open",
            }
        )
        # a document from before the kept one, delivered late from the sensor's spool
        late = copy.deepcopy(base)
        late.update(
            {
                "finding.first_seen": _iso_shift(base["finding.first_seen"], -3),
                "finding.last_seen": _iso_shift(base["finding.first_seen"], -2),
                "@timestamp": _iso_shift(base["finding.first_seen"], -2),
                "finding.evidence.event_ids": ["old-1", "old-2"],
                "finding.summary": "an old summary",
            }
        )
        # a careless sensor claiming a decision for another finding
        claim = copy.deepcopy(kept[b])
        claim.update(
            {
                "finding.state": "accepted",
                "finding.accepted.reason": "the sensor says so",
                "finding.accepted.user": "sensor-f",
            }
        )
        _send(pipe, [restart, late, claim])
        assert _index(pipe)["merged"] == 3
        now = _kept(pipe)
        got = now[a]
        assert got["finding.state"] == "accepted"
        assert got["finding.accepted.reason"] == "bench PLC, isolated from the plant"
        assert got["finding.accepted.user"] == "soc-1"
        assert got["finding.accepted.at"] == accepted_at
        assert got["finding.first_seen"] == late["finding.first_seen"]
        assert got["finding.last_seen"] == got["@timestamp"] == restart["finding.last_seen"]
        assert got["finding.summary"] == "seen again after a restart"  # the latest document's
        ids = got["finding.evidence.event_ids"]
        assert len(ids) == MAX_EVIDENCE and ids[:2] == ["old-1", "old-2"]
        assert ids[-10:] == [f"r{i}" for i in range(15, 25)]  # the first and the latest kept
        assert now[b]["finding.state"] == "open" and "finding.accepted.user" not in now[b]
        # what the posture view reads: the accepted finding stays accepted, long after
        states = {
            d["finding.id"]: d["finding.state"]
            for d in lifecycle(now.values(), 1e10, catalog.acceptances())
        }
        assert states[a] == "accepted" and states[b] == "resolved"

        # the centre reopens it; the sensor's next document leaves it open
        assert catalog.reopen(a) and not catalog.reopen(a)
        _send(pipe, [restart])
        _index(pipe)
        reopened = _kept(pipe)[a]
        assert reopened["finding.state"] == "open"
        assert not any(k.startswith("finding.accepted.") for k in reopened)

        # a decision taken between the indexer's read and its write: the write is refused
        # (if_seq_no), the documents are folded into the decided one, and both hold
        class DecisionMeanwhile(Indexer):
            decided = False

            def _merge(self, docs: list[Any]) -> list[Any]:
                writes = super()._merge(docs)
                if not self.decided:
                    self.decided = True
                    catalog.accept(c, "compensating control in place", "soc-2")
                return writes

        later = copy.deepcopy(kept[c])
        later["finding.last_seen"] = later["@timestamp"] = _iso_shift(
            kept[c]["finding.last_seen"], 1
        )
        _send(pipe, [later])
        stats = _index(pipe, DecisionMeanwhile(pipe.cfg))
        assert stats["merge_conflicts"] == 1 and stats["merged"] == 1
        got = _kept(pipe)[c]
        assert got["finding.state"] == "accepted" and got["finding.accepted.user"] == "soc-2"
        assert got["finding.last_seen"] == later["finding.last_seen"]
    finally:
        catalog.close()
