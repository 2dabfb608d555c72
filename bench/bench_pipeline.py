"""Alerts per second from the sensor's Kafka sink to searchable in Elasticsearch, against a
plain ``elasticsearch.helpers.bulk`` load of the same documents, in one run.

Needs the services of deploy/ (``deploy/services.sh start``). The alerts are the real ones
icsmon raises on the captures in pcaps/ (``icsmon replay --sink jsonl``), repeated with
fresh ids and timestamps up to ``--count``.

    .venv/bin/python bench/bench_pipeline.py [--count 50000] [--indexers 1]

Pipeline leg: ``icsmon index`` runs as its own process(es) (as in production), warmed up
until it indexes a first document; the clock starts at the first ``KafkaSink.write`` and
stops when a refreshed count of the alias reaches ``--count``. Bulk leg: ``helpers.bulk``
(default chunks of 500) into indices made from the same template, clock stopped the same way.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from elasticsearch import helpers

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from pipeline.config import load_config  # noqa: E402
from pipeline.docs import flatten, nest  # noqa: E402
from pipeline.es import EsStore, day_of  # noqa: E402
from pipeline.indexer import setup  # noqa: E402
from pipeline.kafka import KafkaSink, encode_doc  # noqa: E402


def real_alerts(tmp: Path) -> list[dict[str, Any]]:
    captures = sorted(str(p) for p in (REPO / "pcaps").rglob("*.pcap"))
    out = tmp / "alerts.jsonl"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "icsmon.cli",
            "replay",
            *captures,
            "--site",
            "site-bench",
            "--org",
            "ent-bench",
            "--observer",
            "sensor-bench",
            "--no-store-events",
            "--sink",
            "jsonl",
            "--out",
            str(out),
        ],
        check=True,
        cwd=REPO,
        capture_output=True,
    )
    alerts = [flatten(json.loads(line)) for line in out.read_text().splitlines() if line.strip()]
    alerts = [a for a in alerts if a.get("event.kind") == "alert"]
    if not alerts:
        raise SystemExit("the captures in pcaps/ raised no alerts: nothing to benchmark")
    return alerts


def make_docs(seeds: list[dict[str, Any]], count: int) -> list[dict[str, Any]]:
    docs = []
    for i in range(count):
        doc = copy.copy(seeds[i % len(seeds)])
        doc["event.id"] = f"bench-{i:09d}"
        doc["@timestamp"] = (
            f"2026-11-26T{i // 3_600_000 % 24:02d}:{i // 60_000 % 60:02d}:{i // 1000 % 60:02d}.{i % 1000:03d}000Z"
        )
        doc["labels.site"] = f"site-{i % 50:03d}"
        docs.append(doc)
    return docs


def wait_count(store: EsStore, alias: str, want: int, limit_s: float = 600) -> None:
    deadline = time.monotonic() + limit_s
    while True:
        store.client.indices.refresh(index=alias)
        if store.client.count(index=alias)["count"] >= want:
            return
        if time.monotonic() > deadline:
            raise SystemExit(f"{alias}: not all {want} documents searchable after {limit_s}s")
        time.sleep(0.1)


def bench_bulk(cfg: Any, docs: list[dict[str, Any]]) -> float:
    store = EsStore(cfg)
    setup(cfg, store)
    alias = store.alias("alert")
    actions = (
        {
            "_index": store.index_name("alert", day_of(d["@timestamp"])),
            "_id": d["event.id"],
            "_source": nest(d),
        }
        for d in docs
    )
    t0 = time.perf_counter()
    ok, errors = helpers.bulk(store.client, actions, raise_on_error=False)
    wait_count(store, alias, len(docs))
    elapsed = time.perf_counter() - t0
    if errors:
        raise SystemExit(f"bulk: {len(errors)} errors, first: {errors[0]}")
    store.close()
    return elapsed


def bench_pipeline(
    cfg: Any, env: dict[str, str], docs: list[dict[str, Any]], indexers: int
) -> float:
    setup(cfg)
    store = EsStore(cfg)
    alias = store.alias("alert")
    procs = [
        subprocess.Popen([sys.executable, "-m", "icsmon.cli", "index"], env=env, cwd=REPO)
        for _ in range(indexers)
    ]
    sink = KafkaSink.from_config(cfg)
    try:
        # Warm-up: the indexers have joined the group once a first document is searchable.
        warm = dict(docs[0], **{"event.id": "bench-warm-up"})
        sink.write("alert", warm)
        sink.flush()
        wait_count(store, alias, 1, limit_s=120)
        t0 = time.perf_counter()
        for doc in docs:
            sink.write("alert", doc)
        sink.flush()
        produced = time.perf_counter() - t0
        wait_count(store, alias, len(docs) + 1)
        elapsed = time.perf_counter() - t0
        print(f"  producer done after {produced:.2f}s; sink stats {sink.stats()}")
    finally:
        sink.close()
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(60)
        store.close()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=50_000)
    parser.add_argument("--indexers", type=int, default=1)
    parser.add_argument(
        "--compression", default="lz4", help="producer compression (kafka.compression)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the indices and topics")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="icsmon-bench-"))
    seeds = real_alerts(tmp)
    docs = make_docs(seeds, args.count)
    sizes = [len(encode_doc(d)) for d in docs[: min(len(docs), 5000)]]
    avg = sum(sizes) / len(sizes)
    print(
        f"{args.count} alerts from {len(seeds)} real ones; {avg:.0f} bytes each on average, "
        f"{avg * args.count / 1e6:.1f} MB in all"
    )

    run = uuid.uuid4().hex[:8]
    prefix = f"bench{run}"
    values = {
        "kafka": {"topic_prefix": prefix, "compression": args.compression},
        "elasticsearch": {"index_prefix": prefix},
        "spool": {"dir": str(tmp / "spool")},
        "indexer": {"group_id": f"{prefix}-indexers"},
    }
    cfg = load_config(env={}, overrides=values)
    bulk_cfg = load_config(
        env={}, overrides={**values, "elasticsearch": {"index_prefix": f"{prefix}bulk"}}
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("ICSMON_")}
    env.update(
        {
            "ICSMON_KAFKA_TOPIC_PREFIX": prefix,
            "ICSMON_ES_INDEX_PREFIX": prefix,
            "ICSMON_INDEXER_GROUP_ID": f"{prefix}-indexers",
            "ICSMON_SPOOL_DIR": str(tmp / "spool2"),
        }
    )
    try:
        bulk_s = bench_bulk(bulk_cfg, docs)
        bulk_rate = args.count / bulk_s
        print(
            f"helpers.bulk: {args.count} alerts searchable in {bulk_s:.2f}s = {bulk_rate:,.0f} alerts/s"
        )
        pipe_s = bench_pipeline(cfg, env, docs, args.indexers)
        pipe_rate = args.count / pipe_s
        print(
            f"pipeline (KafkaSink -> Kafka -> {args.indexers} indexer(s) -> ES): {args.count} alerts "
            f"searchable in {pipe_s:.2f}s = {pipe_rate:,.0f} alerts/s"
        )
        print(f"ratio pipeline/bulk = {pipe_rate / bulk_rate:.0%} (target >= 80%)")
    finally:
        if not args.keep:
            from kafka import KafkaAdminClient

            for c in (cfg, bulk_cfg):
                store = EsStore(c)
                store.delete_all()
                store.close()
            admin = KafkaAdminClient(bootstrap_servers=list(cfg.kafka.brokers), api_version=(4, 3))
            admin.delete_topics([t for t in admin.list_topics() if t.startswith(prefix)])
            admin.close()


if __name__ == "__main__":
    main()
