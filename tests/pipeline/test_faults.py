"""Faults against the real services: Kafka stopped under the producer, Elasticsearch stopped
under the indexer, the indexer killed with SIGKILL mid-batch. Nothing lost, nothing doubled.

The services are stopped and started with the project's own deploy scripts; each test
leaves them running as it found them.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from pipeline.indexer import Indexer, setup
from pipeline.kafka import KafkaSink
from pipeline.spool import Spool
from tests.support.pipeline import (
    REPO,
    alert_doc,
    committed,
    deploy,
    drop_pipe,
    end_offsets,
    es_docs,
    event_doc,
    make_pipe,
    require_services,
    services_up,
    topic_messages,
    wait_for,
)

pytestmark = [pytest.mark.services, pytest.mark.slow]


def ensure_started(script: str) -> None:
    deploy(script, "start")  # a no-op when it is running


def test_kafka_outage_spools_and_delivers_everything_once(tmp_path: Path) -> None:
    require_services()
    pipe = make_pipe(tmp_path)
    setup(pipe.cfg)
    sink = KafkaSink.from_config(pipe.cfg, stall_s=2.0)
    reopened: KafkaSink | None = None
    try:
        before = [event_doc(i) for i in range(2000)]
        for doc in before:
            sink.write("event", doc)
        sink.flush()
        assert sink.stats()["acked"] == len(before) and not sink.spooling

        deploy("kafka.sh", "stop")
        during = [event_doc(i) for i in range(2000, 4000)] + [alert_doc(i) for i in range(50)]
        for doc in during[:1000]:
            sink.write(doc["event.kind"], doc)
        # With the broker gone nothing is acknowledged: the sink notices and spools.
        wait_for("the sink to start spooling", lambda: sink.spooling, limit_s=60)
        for doc in during[1000:]:
            sink.write(doc["event.kind"], doc)
        spooled = sink.spool.pending()
        assert spooled >= len(during) - 1000
        assert sink.spool.pending("alert") == 50
        # The sensor stops while Kafka is still down: what is in flight joins the spool too.
        sink.close(timeout=2)
        on_disk = Spool(pipe.cfg.spool.dir)
        assert on_disk.pending() >= spooled
        on_disk.close()
        after = [event_doc(i) for i in range(4000, 4500)]

        deploy("kafka.sh", "start")
        reopened = KafkaSink.from_config(pipe.cfg)
        assert reopened.spooling  # leftovers of the last run are replayed first
        for doc in after:
            reopened.write("event", doc)
        wait_for(
            "the spool to drain",
            lambda: reopened.spool.pending() == 0 and not reopened.spooling,
            limit_s=180,
        )
        reopened.flush()
        assert reopened.stats()["spool_events_dropped"] == 0

        every = before + during + after
        for kind in ("event", "alert"):
            want = sorted(d["event.id"] for d in every if d["event.kind"] == kind)
            got = sorted(
                json.loads(m.value)["event"]["id"]
                for m in topic_messages(pipe, pipe.cfg.topic(kind))
            )
            assert len(set(got)) == len(want), f"{kind}s lost: {set(want) - set(got)}"
            assert set(got) == set(want)
            # Duplicates can only come from an acknowledgement lost in the outage; the index
            # below removes them, but there should be none here.
            assert len(got) == len(want), f"{len(got) - len(want)} {kind}s sent twice"
        indexer = Indexer(pipe.cfg)
        try:
            indexer.run(once=True)
        finally:
            indexer.close()
        for kind in ("event", "alert"):
            ids = [h["_id"] for h in es_docs(pipe, kind)]
            assert sorted(ids) == sorted(d["event.id"] for d in every if d["event.kind"] == kind)
    finally:
        ensure_started("kafka.sh")
        if reopened is not None:
            reopened.close()
        sink.close(timeout=1)
        drop_pipe(pipe)


def test_elasticsearch_outage_commits_nothing_then_delivers_all(tmp_path: Path) -> None:
    require_services()
    pipe = make_pipe(
        tmp_path, indexer={"batch_size": 500, "retry_initial_s": 0.2, "retry_max_s": 1.0}
    )
    setup(pipe.cfg)
    sink = KafkaSink.from_config(pipe.cfg)
    n = 3000
    try:
        for i in range(n):
            sink.write("event", event_doc(i))
        sink.flush()
        assert sink.stats()["acked"] == n

        deploy("elasticsearch.sh", "stop")
        indexer = Indexer(pipe.cfg, retry_budget_s=2.0)
        worker = threading.Thread(target=indexer.run)
        worker.start()
        try:
            wait_for(
                "the indexer to fail a batch and rewind",
                lambda: indexer.counters["rewinds"] >= 2,
                limit_s=120,
            )
            assert indexer.counters["indexed"] == 0
            assert committed(pipe) == {}  # nothing acknowledged by Elasticsearch, nothing committed
            deploy("elasticsearch.sh", "start")
            wait_for(
                "every document to be indexed",
                lambda: indexer.counters["indexed"] >= n,
                limit_s=180,
            )
            wait_for(
                "the offsets to be committed",
                lambda: committed(pipe) == end_offsets(pipe),
                limit_s=60,
            )
        finally:
            indexer.stop()
            worker.join(60)
            indexer.close()
        ids = [h["_id"] for h in es_docs(pipe, "event")]
        assert len(ids) == n and len(set(ids)) == n
        assert indexer.counters["deadlettered"] == 0
    finally:
        if services_up() is not None:
            ensure_started("elasticsearch.sh")
        sink.close(timeout=1)
        drop_pipe(pipe)


def test_sigkill_mid_batch_loses_and_doubles_nothing(tmp_path: Path) -> None:
    require_services()
    pipe = make_pipe(tmp_path)
    setup(pipe.cfg)
    sink = KafkaSink.from_config(pipe.cfg)
    n = 12000
    try:
        for i in range(n):
            sink.write("event", event_doc(i, site=f"site-{i % 5}"))
        sink.flush()
        assert sink.stats()["acked"] == n
        cmd = [sys.executable, "-m", "icsmon.cli", "index", "--once", "--batch-size", "300"]
        proc = subprocess.Popen(
            cmd, env=pipe.env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        try:
            from pipeline.es import EsStore

            store = EsStore(pipe.cfg)

            def some_indexed() -> bool:
                store.refresh()
                return store.client.count(index=store.alias("event"))["count"] > 0

            wait_for(
                "the indexer to write its first batches", some_indexed, limit_s=120, step_s=0.05
            )
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(30)
            store.refresh()
            at_kill = store.client.count(index=store.alias("event"))["count"]
            store.close()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            proc.stdout.close()  # type: ignore[union-attr]
            proc.stderr.close()  # type: ignore[union-attr]
        assert proc.returncode == -signal.SIGKILL
        assert 0 < at_kill < n, f"the kill did not land mid-run ({at_kill} of {n} indexed)"
        done = committed(pipe)
        assert sum(done.values()) <= at_kill  # committed offsets never run ahead of the index

        restarted = pipe.cli("index", "--once", "--stats")
        stats = json.loads(restarted.stdout.strip().splitlines()[-1])
        assert stats["consumed"] == n - sum(done.values())  # resumes at the committed offsets
        ids = [h["_id"] for h in es_docs(pipe, "event")]
        assert len(ids) == n and len(set(ids)) == n
        assert committed(pipe) == end_offsets(pipe)
    finally:
        sink.close(timeout=1)
        drop_pipe(pipe)
