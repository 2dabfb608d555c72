"""Two ``icsmon index`` processes in one consumer group share the partitions; one is killed
with SIGKILL while documents are still arriving: the other takes over its partitions, and
every document is in Elasticsearch exactly once (nothing lost, nothing doubled), against the
real Kafka and Elasticsearch. The shared services are never stopped."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from pipeline.es import EsStore
from pipeline.indexer import setup
from pipeline.kafka import KafkaSink
from tests.support.pipeline import (
    BROKER,
    REPO,
    committed,
    drop_pipe,
    end_offsets,
    es_docs,
    event_doc,
    make_pipe,
    require_services,
    wait_for,
)

pytestmark = [pytest.mark.services, pytest.mark.slow]

PARTITIONS = 6


def members(group: str) -> dict[str, set[tuple[str, int]]]:
    """The group's members and the partitions each is assigned."""
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=BROKER, api_version=(4, 3))
    try:
        info = admin.describe_groups([group])[group]
    finally:
        admin.close()
    out: dict[str, set[tuple[str, int]]] = {}
    for member in info.get("members") or []:
        parts: set[tuple[str, int]] = set()
        for topic in _field(member.get("member_assignment"), "assigned_partitions") or []:
            for p in _field(topic, "partitions") or []:
                parts.add((_field(topic, "topic"), p))
        out[member["member_id"]] = parts
    return out


def _field(obj: Any, name: str) -> Any:
    """A field of the client's decoded group description (a dict, or an object)."""
    return obj.get(name) if isinstance(obj, dict) else getattr(obj, name, None)


def test_the_surviving_indexer_takes_over_and_nothing_is_lost_or_doubled(
    tmp_path: Path,
) -> None:
    require_services()
    pipe = make_pipe(tmp_path, indexer={"partitions": PARTITIONS})
    setup(pipe.cfg)
    group = pipe.cfg.indexer.group_id
    events_topic = pipe.cfg.topic("event")
    n = 16000
    cmd = [sys.executable, "-m", "icsmon.cli", "index", "--batch-size", "200", "--stats"]
    procs: dict[str, subprocess.Popen[str]] = {}
    sink = KafkaSink.from_config(pipe.cfg)
    store = EsStore(pipe.cfg)
    producing = threading.Event()

    def produce() -> None:
        # the load keeps arriving while one indexer dies
        for i in range(n):
            sink.write("event", event_doc(i, site=f"site-{i % 7}"))
            if i % 500 == 499:
                sink.flush()
        sink.flush()
        producing.set()

    def count() -> int:
        store.refresh()
        return int(store.client.count(index=store.alias("event"))["count"])

    try:
        for name in ("a", "b"):
            procs[name] = subprocess.Popen(
                cmd,
                env=pipe.env,
                cwd=REPO,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )

        def both_assigned() -> bool:
            m = members(group)
            events = [{p for p in parts if p[0] == events_topic} for parts in m.values()]
            return len(m) == 2 and all(events)

        wait_for("both indexers to share the partitions", both_assigned, limit_s=180)
        shares = [{p for t, p in parts if t == events_topic} for parts in members(group).values()]
        assert set.union(*shares) == set(range(PARTITIONS)) and not set.intersection(*shares)
        feeder = threading.Thread(target=produce, name="sensor", daemon=True)
        feeder.start()
        wait_for("a first part indexed", lambda: count() >= n // 5, limit_s=300, step_s=0.1)
        os.kill(procs["a"].pid, signal.SIGKILL)
        procs["a"].wait(30)
        at_kill = count()
        assert procs["a"].returncode == -signal.SIGKILL
        assert at_kill < n, "the kill did not land mid-load"

        def survivor_has_all() -> bool:
            m = members(group)
            return len(m) == 1 and {p for p in next(iter(m.values())) if p[0] == events_topic} == {
                (events_topic, p) for p in range(PARTITIONS)
            }

        wait_for("the survivor to take every partition", survivor_has_all, limit_s=180)
        feeder.join(300)
        assert producing.is_set() and sink.stats()["acked"] == n
        wait_for("everything indexed and committed", lambda: committed(pipe) == end_offsets(pipe),
                 limit_s=300)  # fmt: skip
        procs["b"].send_signal(signal.SIGTERM)
        out, err = procs["b"].communicate(timeout=60)
        assert procs["b"].returncode == 0, err
        stats = json.loads(out.strip().splitlines()[-1])
        assert stats["deadlettered"] == 0
        ids = [h["_id"] for h in es_docs(pipe, "event")]
        assert len(ids) == n and len(set(ids)) == n  # nothing lost, nothing doubled
        assert count() == n
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
            proc.communicate()
        sink.close(timeout=5)
        store.close()
        drop_pipe(pipe)
