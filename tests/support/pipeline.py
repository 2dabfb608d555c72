"""Helpers for the tests that run against the real Kafka and Elasticsearch of deploy/."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pipeline import kinds
from pipeline.config import PipelineConfig, load_config
from tests.support import REPO

DEPLOY = REPO / "deploy"
BROKER = "127.0.0.1:9092"
ES_URL = "http://127.0.0.1:9200"


def services_up() -> str | None:
    """None when Kafka answers with metadata and Elasticsearch is yellow/green, else why not."""
    from elasticsearch import Elasticsearch
    from kafka import KafkaAdminClient

    try:
        admin = KafkaAdminClient(
            bootstrap_servers=BROKER, request_timeout_ms=5000, api_version=(4, 3)
        )
        brokers = admin.describe_cluster().get("brokers")
        admin.close()
        if not brokers:
            return f"Kafka at {BROKER} returned no brokers"
    except Exception as exc:
        return f"Kafka not reachable at {BROKER} ({exc})"
    try:
        es = Elasticsearch(ES_URL, request_timeout=5)
        status = es.cluster.health()["status"]
        es.close()
        if status not in ("yellow", "green"):
            return f"Elasticsearch at {ES_URL} is {status}"
    except Exception as exc:
        return f"Elasticsearch not reachable at {ES_URL} ({exc})"
    return None


def require_services() -> None:
    why = services_up()
    if why is None:
        return
    message = f"{why}: start them with deploy/services.sh start (scripts/test.sh does)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@dataclass
class Pipe:
    """One isolated pipeline: its own topics, indices, consumer group and spool folder."""

    prefix: str
    cfg: PipelineConfig
    env: dict[str, str]

    def cli(
        self, *args: str, timeout: float = 300, check: bool = True
    ) -> subprocess.CompletedProcess:
        proc = subprocess.run(
            [sys.executable, "-m", "icsmon.cli", *args],
            env=self.env,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"icsmon {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}"
            )
        return proc


def make_pipe(tmp_path: Path, **sections: dict[str, Any]) -> Pipe:
    prefix = "t" + uuid.uuid4().hex[:10]
    values = {
        "kafka": {"topic_prefix": prefix},
        "elasticsearch": {"index_prefix": prefix},
        "spool": {"dir": str(tmp_path / "spool"), "max_bytes": 64 << 20, "segment_bytes": 1 << 20},
        "indexer": {"group_id": f"{prefix}-indexers"},
    }
    for section, entries in sections.items():
        values.setdefault(section, {}).update(entries)
    cfg = load_config(env={}, overrides=values)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ICSMON_")}
    env.update(
        {
            "ICSMON_KAFKA_TOPIC_PREFIX": prefix,
            "ICSMON_ES_INDEX_PREFIX": prefix,
            "ICSMON_SPOOL_DIR": cfg.spool.dir,
            "ICSMON_INDEXER_GROUP_ID": cfg.indexer.group_id,
            # a sensor's own store (--sink kafka keeps everything there): one per pipe
            "ICSMON_STORE": str(tmp_path / "sensor.db"),
        }
    )
    return Pipe(prefix, cfg, env)


def drop_pipe(pipe: Pipe) -> None:
    """Delete the pipe's indices, templates and topics (the services stay up for the next test)."""
    from kafka import KafkaAdminClient

    from pipeline.es import EsStore

    store = EsStore(pipe.cfg)
    try:
        store.delete_all()
    finally:
        store.close()
    admin = KafkaAdminClient(bootstrap_servers=BROKER, api_version=(4, 3))
    try:
        mine = [t for t in admin.list_topics() if t.startswith(pipe.prefix + ".")]
        if mine:
            admin.delete_topics(mine)
    finally:
        admin.close()


def wait_for(
    what: str, check: Callable[[], bool], limit_s: float = 120, step_s: float = 0.2
) -> None:
    """Poll until ``check()``; a limit only so a broken run ends with a message, not a hang."""
    deadline = time.monotonic() + limit_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what} after {limit_s:.0f}s")
        time.sleep(step_s)


def es_docs(pipe: Pipe, kind: str) -> list[dict[str, Any]]:
    """Every document of a kind in Elasticsearch, with its index and id (scrolls by search_after)."""
    from pipeline.es import EsStore

    store = EsStore(pipe.cfg)
    try:
        store.refresh()
        out: list[dict[str, Any]] = []
        after = None
        while True:
            kwargs: dict[str, Any] = {"search_after": after} if after else {}
            resp = store.client.search(
                index=store.alias(kind), size=5000, sort=["_doc"], query={"match_all": {}}, **kwargs
            )
            hits = resp["hits"]["hits"]
            if not hits:
                return out
            out += [{"_id": h["_id"], "_index": h["_index"], "_source": h["_source"]} for h in hits]
            after = hits[-1]["sort"]
    finally:
        store.close()


def topic_messages(pipe: Pipe, topic: str) -> list[Any]:
    """Every message of a topic from the beginning (no group: nothing committed)."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(
        bootstrap_servers=BROKER, enable_auto_commit=False, group_id=None, api_version=(4, 3)
    )
    try:
        parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or []]
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        ends = consumer.end_offsets(parts)
        out: list[Any] = []
        while any(consumer.position(tp) < ends[tp] for tp in parts):
            for records in consumer.poll(timeout_ms=1000).values():
                out += records
        return out
    finally:
        consumer.close()


def committed(pipe: Pipe) -> dict[tuple[str, int], int]:
    """The consumer group's committed offsets, per (topic, partition) (asks without joining)."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(
        bootstrap_servers=BROKER,
        group_id=pipe.cfg.indexer.group_id,
        enable_auto_commit=False,
        api_version=(4, 3),
    )
    try:
        out = {}
        for kind in kinds.names():
            topic = pipe.cfg.topic(kind)
            for p in consumer.partitions_for_topic(topic) or []:
                offset = consumer.committed(TopicPartition(topic, p))
                if offset:
                    out[(topic, p)] = offset
        return out
    finally:
        consumer.close(autocommit=False)


def end_offsets(pipe: Pipe) -> dict[tuple[str, int], int]:
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=BROKER, api_version=(4, 3))
    try:
        parts = []
        for kind in kinds.names():
            topic = pipe.cfg.topic(kind)
            parts += [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or []]
        return {
            (tp.topic, tp.partition): off for tp, off in consumer.end_offsets(parts).items() if off
        }
    finally:
        consumer.close()


def read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                yield json.loads(line)


def deploy(script: str, action: str) -> None:
    """Stop or start a service with the project's own deploy script."""
    proc = subprocess.run(
        [str(DEPLOY / script), action], capture_output=True, text=True, timeout=300
    )
    if proc.returncode != 0:
        raise AssertionError(f"deploy/{script} {action} failed:\n{proc.stderr[-4000:]}")


def write_config_file(cfg: PipelineConfig, path: Path) -> Path:
    """``cfg`` as the TOML file a deployed sensor, indexer or query is given with ``--config``
    (every key that is set; JSON string quoting is valid TOML for these values)."""
    from dataclasses import fields

    lines = []
    for section in ("kafka", "elasticsearch", "spool", "indexer", "sensor", "control", "evidence"):
        values = getattr(cfg, section)
        lines.append(f"[{section}]")
        for f in fields(values):
            value = getattr(values, f.name)
            if value is None:
                continue
            lines.append(
                f"{f.name} = {json.dumps(list(value) if isinstance(value, tuple) else value)}"
            )
    lines.append("[retention]")
    lines += [f"{plural} = {days}" for plural, days in cfg.retention.days]
    lines.append(f"interval_s = {cfg.retention.interval_s}")
    lines.append("[shards]")
    lines += [f"{plural} = {n}" for plural, n in cfg.shards.primaries]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# ---- sample documents --------------------------------------------------------------------


def event_doc(i: int, site: str = "site-x") -> dict[str, Any]:
    return {
        "@timestamp": f"2026-11-26T10:{i // 6000 % 60:02d}:{i // 100 % 60:02d}.{i % 100:06d}Z",
        "event.kind": "event",
        "event.id": f"ev-{i:07d}",
        "event.action": "read-holding-registers",
        "network.protocol": "modbus",
        "source.ip": "10.0.0.5",
        "source.port": 40000 + i % 1000,
        "destination.ip": "10.0.0.10",
        "destination.port": 502,
        "labels.site": site,
        "modbus.function_code": 3,
        "modbus.address": i % 100,
        "modbus.values": [i % 7, i % 11],
    }


def alert_doc(i: int) -> dict[str, Any]:
    doc = event_doc(i)
    doc.update(
        {
            "event.kind": "alert",
            "event.id": f"al-{i:07d}",
            "event.severity": 73,
            "rule.id": "r-1",
            "rule.name": "Write to a PLC from a new host",
            "threat.framework": "MITRE ATT&CK for ICS",
            "threat.technique.id": ["T0855"],
        }
    )
    return doc
