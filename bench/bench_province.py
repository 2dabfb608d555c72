"""Province scale, measured through the real pipeline: sensor -> Kafka -> indexer ->
Elasticsearch (the services of deploy/, or any given with ICSMON_* settings).

    .venv/bin/python bench/bench_province.py reduction [CAPTURE ...]
    .venv/bin/python bench/bench_province.py simulate --sites 1000 --seconds 240

``reduction``: each capture (default: the 10 Hz polling of pcaps/polling/, then
pcaps/plant/*.pcap and pcaps/baseline/train.pcap) is
replayed by ``icsmon replay --sink kafka`` twice, with ``--ship rollups`` (the default of
``[sensor] events``) and ``--ship all``, each into fresh topics, then indexed by ``icsmon index --once``;
the documents that reached Elasticsearch are counted per kind. It prints what the centre
receives in each mode, the ratio, whether the alerts and assets are the same in both, and
the wall time of replay + index per mode. Then the plant model the simulation uses, from the
first plant capture: rollups, alerts and assets per minute.

``simulate``: ``--sites`` simulated sensors send, at the model's rates (``--rollups-per-min``
series per site, a heartbeat a minute, ``--alerts-per-min``, ``--assets-per-min``), the real
documents of a replayed capture (fresh ids, sites, times) through the sensor's own
``KafkaSink`` into topics of ``--partitions`` partitions. ``icsmon index`` runs as its own
process: one for the first half of ``--seconds``, a second one joining for the second half.
Every ``--sample``-th document's id is followed until a search of its alias finds it
(end-to-end latency, sensor write to searchable, at the checker's 0.2 s resolution); the
consumer group's lag is read every 5 s; the CPU seconds of the indexers, this process (the
sensors), Kafka and Elasticsearch are read from /proc. Then ``--drain`` documents are
produced at once and the indexers' drain rate and CPU per document measured: the per-core
constants of docs/scale.md. It prints where the time went (the bottleneck).

The machine is shared and its load is printed: CPU seconds per document are the numbers
to carry to another machine, not the wall-clock rates.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition  # noqa: E402

from pipeline import kinds  # noqa: E402
from pipeline.config import PipelineConfig, load_config  # noqa: E402
from pipeline.docs import flatten  # noqa: E402
from pipeline.es import EsStore  # noqa: E402
from pipeline.indexer import setup  # noqa: E402
from pipeline.kafka import KafkaSink  # noqa: E402

ICSMON = [sys.executable, "-m", "icsmon.cli"]
SHIPPED = ("alert", "asset", "finding", "heartbeat", "rollup", "event")
CLK = os.sysconf("SC_CLK_TCK")


# -- one pipeline of its own ------------------------------------------------------------


class Pipe:
    """Fresh topics, indices and consumer group under a random prefix; dropped at the end."""

    def __init__(self, tmp: Path, partitions: int = 3) -> None:
        self.prefix = "bp" + uuid.uuid4().hex[:8]
        values = {
            "kafka": {"topic_prefix": self.prefix},
            "elasticsearch": {"index_prefix": self.prefix},
            "spool": {"dir": str(tmp / f"spool-{self.prefix}")},
            "indexer": {"group_id": f"{self.prefix}-indexers", "partitions": partitions},
        }
        self.cfg: PipelineConfig = load_config(overrides=values)
        self.env = dict(os.environ)
        self.env.update(
            {
                "ICSMON_KAFKA_TOPIC_PREFIX": self.prefix,
                "ICSMON_ES_INDEX_PREFIX": self.prefix,
                "ICSMON_SPOOL_DIR": self.cfg.spool.dir,
                "ICSMON_INDEXER_GROUP_ID": self.cfg.indexer.group_id,
                "ICSMON_INDEXER_PARTITIONS": str(partitions),
                "ICSMON_STORE": str(tmp / f"sensor-{self.prefix}.db"),
            }
        )
        setup(self.cfg)
        self.store = EsStore(self.cfg)

    def counts(self) -> dict[str, int]:
        self.store.refresh()
        out = {}
        for kind in SHIPPED:
            alias = self.store.alias(kind)
            if self.store.client.indices.exists_alias(name=alias):
                out[kind] = int(self.store.client.count(index=alias)["count"])
            else:
                out[kind] = 0
        return out

    def bytes_per_doc(self) -> dict[str, float]:
        out = {}
        for kind in SHIPPED:
            rows = self.store.client.cat.indices(
                index=f"{self.store.alias(kind)}-*", format="json", bytes="b"
            )
            docs = sum(int(r.get("docs.count") or 0) for r in rows)
            size = sum(int(r.get("pri.store.size") or 0) for r in rows)
            if docs:
                out[kind] = size / docs
        return out

    def ids(self, kind: str, field: str) -> set[str]:
        self.store.refresh()
        alias = self.store.alias(kind)
        if not self.store.client.indices.exists_alias(name=alias):
            return set()
        from elasticsearch import helpers

        return {
            str(flatten(h["_source"]).get(field))
            for h in helpers.scan(self.store.client, index=alias, _source=[field])
        }

    def drop(self) -> None:
        try:
            self.store.delete_all()
        finally:
            self.store.close()
        admin = KafkaAdminClient(bootstrap_servers=list(self.cfg.kafka.brokers))
        try:
            mine = [t for t in admin.list_topics() if t.startswith(self.prefix + ".")]
            if mine:
                admin.delete_topics(mine)
        finally:
            admin.close()


def run(cmd: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd[2:])} failed ({proc.returncode}): {proc.stderr.strip()[-800:]}")
    return proc


# -- reduction ----------------------------------------------------------------------------


def replay_into(pipe: Pipe, capture: Path, events: str) -> float:
    """``icsmon replay --sink kafka`` then ``icsmon index --once``; wall seconds of both."""
    t0 = time.monotonic()
    run(
        [*ICSMON, "replay", str(capture), "--sink", "kafka", "--ship", events]
        + ["--site", "plant-1", "--observer", "sensor-1", "--org", "ent-1"],
        pipe.env,
    )
    run([*ICSMON, "index", "--once"], pipe.env)
    return time.monotonic() - t0


def reduction(captures: list[Path], tmp: Path) -> dict[str, Any]:
    print("| capture | span | events | docs at the centre, events = all | = rollups "
          "| reduction | of which rollups | alerts & assets same | wall all / rollups |")  # fmt: skip
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: |")
    model: dict[str, Any] = {}
    for capture in captures:
        got: dict[str, dict[str, int]] = {}
        wall: dict[str, float] = {}
        same = True
        ids: dict[str, dict[str, set[str]]] = {}
        span = 0.0
        for mode in ("all", "rollups"):
            pipe = Pipe(tmp)
            try:
                wall[mode] = replay_into(pipe, capture, mode)
                got[mode] = pipe.counts()
                ids[mode] = {
                    "alert": pipe.ids("alert", "event.id"),
                    "asset": pipe.ids("asset", "asset.id"),
                }
                if mode == "all":
                    span = event_span(pipe)
                if mode == "rollups" and not model:
                    model = {
                        "capture": str(capture),
                        "span_s": span,
                        "counts": got[mode],
                        "bytes": pipe.bytes_per_doc(),
                        "templates": templates(pipe),
                    }
            finally:
                pipe.drop()
        same = ids["all"] == ids["rollups"]
        n_all, n_roll = sum(got["all"].values()), sum(got["rollups"].values())
        print(
            f"| {rel(capture)} | {span:.0f} s | {got['all']['event']:,} | {n_all:,} "
            f"| {n_roll:,} | {n_all / max(n_roll, 1):.1f}x | {got['rollups']['rollup']:,} "
            f"| {'yes' if same else 'NO'} ({got['rollups']['alert']} alerts, "
            f"{got['rollups']['asset']} assets) | {wall['all']:.1f} / {wall['rollups']:.1f} s |",
            flush=True,
        )
        if got["rollups"]["event"]:
            print(f"  events shipped with events = rollups: {got['rollups']['event']} (want 0)")
    return model


def event_span(pipe: Pipe) -> float:
    body = {"size": 0, "aggs": {"lo": {"min": {"field": "@timestamp"}},
                                "hi": {"max": {"field": "@timestamp"}}}}  # fmt: skip
    res = pipe.store.client.search(index=pipe.store.alias("event"), **body)
    lo, hi = res["aggregations"]["lo"]["value"], res["aggregations"]["hi"]["value"]
    return (hi - lo) / 1000 if lo is not None and hi is not None else 0.0


def templates(pipe: Pipe) -> dict[str, list[dict[str, Any]]]:
    """Real documents of each kind, as the indexer stored them (flat)."""
    out: dict[str, list[dict[str, Any]]] = {}
    for kind in ("rollup", "alert", "asset", "heartbeat"):
        alias = pipe.store.alias(kind)
        if pipe.store.client.indices.exists_alias(name=alias):
            hits = pipe.store.client.search(index=alias, size=50)["hits"]["hits"]
            out[kind] = [flatten(h["_source"]) for h in hits]
    return out


def rel(p: Path) -> str:
    try:
        return str(p.resolve().relative_to(REPO))
    except ValueError:
        return str(p)


# -- simulation -----------------------------------------------------------------------------


def heartbeat_template() -> dict[str, Any]:
    from sensor.events import Context
    from sensor.heartbeat import Heartbeats

    hb = Heartbeats(Context(site="s", observer="o", organization="e"), version="bench")
    return hb.start(time.time(), {"packets": 1000, "events": 900})


class Fleet:
    """S sensors' documents at the model's rates, through the sensor's Kafka sink."""

    def __init__(
        self,
        pipe: Pipe,
        sites: int,
        per_min: dict[str, float],
        docs: dict[str, list[dict[str, Any]]],
        sample: int,
    ) -> None:
        self.pipe = pipe
        self.sink = KafkaSink.from_config(pipe.cfg)
        self.sites = [f"site-{i:05d}" for i in range(sites)]
        self.per_min = per_min
        self.docs = docs
        self.sample = sample
        self.sent = 0
        self.sent_by_kind: dict[str, int] = {}
        self.pending: list[tuple[str, str, float]] = []  # (kind, id, sent at)
        self.lock = threading.Lock()
        self.rng = random.Random(7)

    def make(self, kind: str, site: str, now: float) -> dict[str, Any]:
        doc = copy.deepcopy(self.rng.choice(self.docs[kind]))
        fresh = uuid.uuid4().hex
        ts = doc.get("@timestamp")
        doc["@timestamp"] = now if isinstance(ts, int | float) else iso(now)
        doc["labels.site"] = site
        doc["observer.name"] = f"sensor-{site}"
        doc["organization.id"] = f"ent-{site}"
        id_field = kinds.get(kind).id_field
        doc[id_field] = f"{kind}-{fresh}"
        time_field = kinds.get(kind).time_field
        if time_field != "@timestamp":
            doc[time_field] = doc["@timestamp"]
        return doc

    def send(self, kind: str, site: str) -> None:
        now = time.time()
        doc = self.make(kind, site, now)
        self.sink.write(kind, doc)
        self.sent += 1
        self.sent_by_kind[kind] = self.sent_by_kind.get(kind, 0) + 1
        if self.sent % self.sample == 0:
            with self.lock:
                self.pending.append((kind, doc[kinds.get(kind).id_field], now))

    def run_paced(self, seconds: float, stop: threading.Event) -> None:
        """Each kind at its rate, spread evenly over time and sites."""
        rates = {k: v * len(self.sites) / 60 for k, v in self.per_min.items() if v > 0}
        t0 = time.monotonic()
        done = dict.fromkeys(rates, 0)
        turn = dict.fromkeys(rates, 0)
        while not stop.is_set():
            elapsed = time.monotonic() - t0
            if elapsed >= seconds:
                break
            for kind, rate in rates.items():
                due = int(elapsed * rate)
                while done[kind] < due:
                    self.send(kind, self.sites[turn[kind] % len(self.sites)])
                    turn[kind] += 1
                    done[kind] += 1
            time.sleep(0.05)
        self.sink.flush(timeout=60)

    def burst(self, n: int) -> None:
        mix = [k for k, v in self.per_min.items() for _ in range(max(1, round(v * 10)))]
        for i in range(n):
            self.send(mix[i % len(mix)], self.sites[i % len(self.sites)])
        self.sink.flush(timeout=300)


def iso(ts: float) -> str:
    from sensor.events import iso_timestamp

    return iso_timestamp(ts)


class Checker(threading.Thread):
    """Finds sampled documents in Elasticsearch: end-to-end latency."""

    def __init__(self, fleet: Fleet) -> None:
        super().__init__(daemon=True, name="latency")
        self.fleet = fleet
        self.latencies: list[tuple[float, float]] = []  # (sent at, latency)
        self.stop_event = threading.Event()

    def run(self) -> None:
        store = self.fleet.pipe.store
        while not self.stop_event.is_set():
            with self.fleet.lock:
                pending = list(self.fleet.pending)
            by_kind: dict[str, list[tuple[str, float]]] = {}
            for kind, doc_id, sent in pending:
                by_kind.setdefault(kind, []).append((doc_id, sent))
            found: set[str] = set()
            for kind, items in by_kind.items():
                field = kinds.get(kind).id_field
                for lo in range(0, len(items), 500):
                    chunk = items[lo : lo + 500]
                    try:
                        res = store.client.search(
                            index=store.alias(kind),
                            query={"terms": {field: [i for i, _ in chunk]}},
                            size=len(chunk),
                            _source=[field],
                        )
                    except Exception:  # an index not there yet
                        continue
                    now = time.time()
                    sent_at = dict(chunk)
                    for hit in res["hits"]["hits"]:
                        doc_id = str(flatten(hit["_source"]).get(field))
                        if doc_id in sent_at and doc_id not in found:
                            found.add(doc_id)
                            self.latencies.append((sent_at[doc_id], now - sent_at[doc_id]))
            if found:
                with self.fleet.lock:
                    self.fleet.pending = [p for p in self.fleet.pending if p[1] not in found]
            time.sleep(0.2)


def lag(pipe: Pipe, admin: KafkaAdminClient, consumer: KafkaConsumer) -> tuple[int, int]:
    """(messages not yet committed by the indexers' group, committed total)."""
    topics = [pipe.cfg.topic(k) for k in kinds.names()]
    parts = [TopicPartition(t, p) for t in topics for p in (consumer.partitions_for_topic(t) or ())]
    ends = consumer.end_offsets(parts)
    group = pipe.cfg.indexer.group_id
    committed = admin.list_group_offsets(group).get(group, {})
    done = {tp: meta.offset for tp, meta in committed.items() if meta.offset >= 0}
    behind = sum(max(0, end - done.get(tp, 0)) for tp, end in ends.items())
    return behind, sum(done.values())


def cpu_s(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK
    except (OSError, IndexError, ValueError):
        return 0.0


def listener_pid(port: int) -> int | None:
    out = subprocess.run(
        ["ss", "-ltnpH", f"sport = :{port}"], capture_output=True, text=True
    ).stdout
    if "pid=" in out:
        return int(out.split("pid=", 1)[1].split(",", 1)[0])
    return None


def start_indexer(pipe: Pipe, log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [*ICSMON, "index", "--stats"],
        env=pipe.env,
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=open(log, "ab"),  # noqa: SIM115 - closed with the process
    )


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def simulate(args: argparse.Namespace, tmp: Path) -> None:
    print(f"model plant: replaying {rel(args.model)} for real documents", flush=True)
    src = Pipe(tmp)
    try:
        replay_into(src, args.model, "rollups")
        docs = templates(src)
        counts = src.counts()
    finally:
        src.drop()
    docs.setdefault("heartbeat", [heartbeat_template()])
    per_min = {
        "rollup": args.rollups_per_min,
        "heartbeat": 1.0,
        "alert": args.alerts_per_min,
        "asset": args.assets_per_min,
    }
    missing = [k for k, v in per_min.items() if v > 0 and not docs.get(k)]
    if missing:
        sys.exit(f"{rel(args.model)} gave no {', '.join(missing)} to copy")
    rate = sum(per_min.values()) * args.sites / 60
    print(
        f"{args.sites} sites x {sum(per_min.values()):.2f} docs/min ({per_min}) = {rate:.0f} "
        f"docs/s for {args.seconds:.0f} s; {args.partitions} partitions per topic; "
        f"model capture gave {counts}",
        flush=True,
    )
    pipe = Pipe(tmp, args.partitions)
    fleet = Fleet(pipe, args.sites, per_min, docs, args.sample)
    admin = KafkaAdminClient(bootstrap_servers=list(pipe.cfg.kafka.brokers))
    consumer = KafkaConsumer(bootstrap_servers=list(pipe.cfg.kafka.brokers))
    procs: list[subprocess.Popen[bytes]] = []
    log = tmp / "indexers.log"
    kafka_pid = listener_pid(int(list(pipe.cfg.kafka.brokers)[0].rsplit(":", 1)[1]))
    es_pid = listener_pid(int(pipe.cfg.elasticsearch.url.rsplit(":", 1)[1].split("/")[0]))
    checker = Checker(fleet)
    try:
        procs.append(start_indexer(pipe, log))
        # warm up: the indexer has started, joined its group and indexed a first document
        fleet.send("heartbeat", fleet.sites[0])
        fleet.sink.flush(timeout=60)
        warm = time.monotonic()
        while lag(pipe, admin, consumer)[0] and time.monotonic() - warm < 300:
            time.sleep(0.5)
        print(f"  indexer ready after {time.monotonic() - warm:.1f} s", flush=True)
        checker.start()
        stop = threading.Event()
        producing = threading.Thread(target=fleet.run_paced, args=(args.seconds, stop), daemon=True)

        def cpu() -> dict[str, float]:
            return {
                "indexers": sum(cpu_s(p.pid) for p in procs),
                "sensors (this process)": cpu_s(os.getpid()),
                "kafka": cpu_s(kafka_pid) if kafka_pid else 0.0,
                "elasticsearch": cpu_s(es_pid) if es_pid else 0.0,
            }

        phases: list[dict[str, Any]] = []
        t0 = time.monotonic()
        producing.start()
        half = args.seconds / 2
        samples: list[tuple[float, int, int]] = []
        mark = (time.monotonic(), cpu(), 0, len(checker.latencies))
        second_started = False
        while producing.is_alive() or time.monotonic() - t0 < args.seconds + 30:
            elapsed = time.monotonic() - t0
            behind, committed = lag(pipe, admin, consumer)
            samples.append((elapsed, behind, committed))
            print(f"  t={elapsed:5.0f} s  sent {fleet.sent:,}  lag {behind:,}  "
                  f"indexers {len(procs)}  load {os.getloadavg()[0]:.1f}", flush=True)  # fmt: skip
            if not second_started and elapsed >= half:
                phases.append(phase("1 indexer", mark, cpu(), committed, checker, samples))
                procs.append(start_indexer(pipe, log))
                second_started = True
                mark = (time.monotonic(), cpu(), committed, len(checker.latencies))
            if not producing.is_alive() and behind == 0:
                break
            time.sleep(5)
        behind, committed = lag(pipe, admin, consumer)
        phases.append(phase("2 indexers", mark, cpu(), committed, checker, samples))
        time.sleep(3)
        checker.stop_event.set()
        checker.join(10)
        lat = [x for _, x in checker.latencies]
        print(f"\nsent {fleet.sent:,} ({fleet.sent_by_kind}); committed {committed:,}; "
              f"latency samples {len(lat)} (of every {args.sample}th), "
              f"not found {len(fleet.pending)}")  # fmt: skip
        print(f"end-to-end latency, sensor write -> searchable: p50 {pct(lat, 0.5):.2f} s, "
              f"p95 {pct(lat, 0.95):.2f} s, max {max(lat, default=float('nan')):.2f} s")  # fmt: skip
        print(f"max consumer lag {max(b for _, b, _ in samples):,} messages")
        print("\n| phase | docs/s indexed | lag at end | p50 / p95 latency | CPU s per 1000 docs: "
              "indexers, sensors, kafka, elasticsearch |")  # fmt: skip
        print("| --- | ---: | ---: | --- | --- |")
        for p in phases:
            print(p["row"])
        if args.drain:
            print(f"\ndrain: {args.drain:,} documents produced at once, 2 indexers", flush=True)
            c0, s0 = cpu(), time.monotonic()
            _, start = lag(pipe, admin, consumer)
            fleet.burst(args.drain)
            produced_s = time.monotonic() - s0
            while True:
                behind, committed = lag(pipe, admin, consumer)
                if behind == 0:
                    break
                time.sleep(1)
            wall = time.monotonic() - s0
            c1 = cpu()
            n = committed - start
            per_k = {k: (c1[k] - c0[k]) / n * 1000 for k in c1}
            print(f"  produced in {produced_s:.1f} s; all committed after {wall:.1f} s: "
                  f"{n / wall:,.0f} docs/s; load {os.getloadavg()[0]:.1f}")  # fmt: skip
            print("  CPU s per 1000 docs: " + ", ".join(f"{k} {v:.3f}" for k, v in per_k.items()))
            print(json.dumps({"drain_docs_per_s": n / wall, "cpu_s_per_1000": per_k}))
        print(f"bytes per document in Elasticsearch (primary): "
              f"{ {k: round(v) for k, v in pipe.bytes_per_doc().items()} }")  # fmt: skip
        busiest = max(phases[-1]["cpu"].items(), key=lambda kv: kv[1])
        print(f"bottleneck (most CPU per document, last phase): {busiest[0]}")
    finally:
        checker.stop_event.set()
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
        fleet.sink.close(timeout=10)
        admin.close()
        consumer.close()
        pipe.drop()


def phase(
    name: str,
    mark: tuple[float, dict[str, float], int, int],
    cpu_now: dict[str, float],
    committed: int,
    checker: Checker,
    samples: list[tuple[float, int, int]],
) -> dict[str, Any]:
    t_start, cpu_start, committed_start, lat_start = mark
    wall = time.monotonic() - t_start
    n = max(1, committed - committed_start)
    lat = [x for _, x in checker.latencies[lat_start:]]
    per_k = {k: (cpu_now[k] - cpu_start[k]) / n * 1000 for k in cpu_now}
    row = (
        f"| {name} | {n / wall:,.0f} | {samples[-1][1]:,} | {pct(lat, 0.5):.2f} / "
        f"{pct(lat, 0.95):.2f} s | " + ", ".join(f"{v:.3f}" for v in per_k.values()) + " |"
    )
    return {"row": row, "cpu": per_k}


# -- the province's capacity, from measured constants --------------------------------------


def plan(args: argparse.Namespace) -> None:
    """The capacity table of docs/scale.md: every number from a flag, so an operator redoes
    it with their own constants (``--cpu-*`` from ``simulate``'s drain line)."""
    sensors = args.enterprises * args.sensors_per_enterprise
    per_min = {
        "rollup": args.controllers * args.series_per_controller,
        # an asset is re-sent when it changes (rare) or after [sensor] asset_refresh_s
        "asset": (args.controllers + args.clients) * min(1.0, 60 / (args.asset_refresh_s or 60)),
        "heartbeat": 1.0,
        "alert": args.alerts_per_min,
    }
    size = {"rollup": args.rollup_bytes, "asset": args.asset_bytes,
            "heartbeat": args.heartbeat_bytes, "alert": args.alert_bytes}  # fmt: skip
    # an asset is one document at the centre, every re-send folded in (pipeline/assets.py):
    # one set of records, not a copy per day kept
    keep = {"rollup": args.keep_rollups, "asset": 1,
            "heartbeat": args.keep_heartbeats, "alert": args.keep_alerts}  # fmt: skip
    docs_s = sensors * sum(per_min.values()) / 60
    events_s = sensors * args.controllers * args.poll_hz
    print(f"sensors {sensors:,} ({args.enterprises:,} enterprises x {args.sensors_per_enterprise})")
    rates = {kind: round(n, 2) for kind, n in per_min.items()}
    print(f"per sensor per minute: {rates} = {sum(per_min.values()):.1f} documents "
          f"(events = all: {args.controllers * args.poll_hz * 60:,.0f})")  # fmt: skip
    print(f"province: {docs_s:,.0f} documents/s with rollups; {events_s:,.0f} events/s with "
          f"events = all ({events_s / docs_s:,.0f}x)\n")  # fmt: skip
    util = args.utilisation
    idx_cores = docs_s * args.cpu_indexer / 1000 / util
    es_cores = docs_s * args.cpu_es / 1000 / util
    kafka_cores = docs_s * args.cpu_kafka / 1000 / util * args.replicas_kafka
    print("| | formula | value |")
    print("| --- | --- | ---: |")
    print(f"| indexer cores | docs/s x indexer CPU s/doc / {util:g} | {idx_cores:,.1f} |")
    print(f"| indexer processes (1 core each) | ceil(cores) | {ceil(idx_cores):,} |")
    parts = max(ceil(idx_cores) * 2, 12)
    print(f"| partitions per topic | 2 x indexer processes (room to add), min 12 | {parts:,} |")
    print(f"| Kafka broker cores | docs/s x Kafka CPU s/doc x replication {args.replicas_kafka} "
          f"/ {util:g} | {kafka_cores:,.1f} |")  # fmt: skip
    brokers = max(3, ceil(kafka_cores / args.cores_per_node))
    print(
        f"| Kafka brokers ({args.cores_per_node} cores) | max(3, ceil(cores / node)) | {brokers} |"
    )
    print(f"| Elasticsearch indexing cores | docs/s x ES CPU s/doc / {util:g} | {es_cores:,.1f} |")
    total_disk = 0.0
    shards = 0
    setting: dict[str, int] = {}
    for kind, n in per_min.items():
        # an asset is one document per asset (its id; re-sent every minute, merged)
        stored = args.controllers + args.clients if kind == "asset" else n * 60 * 24
        daily = sensors * stored * size[kind]
        primaries = max(1, ceil(daily / (args.shard_gb * 1e9)))
        if primaries > 1:
            setting[kinds.get(kind).plural] = primaries
        kept = daily * keep[kind] * (1 + args.replicas_es)
        total_disk += kept
        shards += primaries * (1 + args.replicas_es) * keep[kind]
        print(f"| {kind}: GB/day (primary) | sensors x {stored:,g} stored/day x {size[kind]:g} B "
              f"| {daily / 1e9:,.1f} |")  # fmt: skip
        print(
            f"| {kind}: primaries per daily index | ceil(GB/day / {args.shard_gb}) | {primaries} |"
        )
    es_nodes = max(
        ceil(es_cores / args.cores_per_node),
        ceil(total_disk / (args.disk_tb_per_node * 1e12 * 0.75)),
        ceil(shards / 1000),
    )
    print(f"| disk retained, with {args.replicas_es} replica | sum(GB/day x days kept x "
          f"(1 + replicas)) | {total_disk / 1e12:,.1f} TB |")  # fmt: skip
    print(f"| shards retained | sum(primaries x (1 + replicas) x days kept) | {shards:,} |")
    print(f"| Elasticsearch data nodes ({args.cores_per_node} cores, {args.disk_tb_per_node} TB) "
          f"| max(cores / node, disk / (node x 0.75), shards / 1000) | {es_nodes} |")  # fmt: skip
    if setting:  # what the centre's config says for it (pipeline/config.py, [shards])
        lines = "".join(f"\n{plural} = {n}" for plural, n in sorted(setting.items()))
        print(f"\nthe indexers' config (primary shards per daily index):\n[shards]{lines}")
    print(
        f"\nwith events = all instead: {events_s / docs_s:,.0f}x the documents: "
        f"{events_s * args.cpu_es / 1000 / util:,.0f} Elasticsearch cores for indexing alone"
    )


def ceil(x: float) -> int:
    return int(-(-x // 1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    red = sub.add_parser("reduction", help="events vs rollups through the pipeline")
    red.add_argument("captures", nargs="*", type=Path)
    sim = sub.add_parser("simulate", help="S sensors at the model's rates")
    sim.add_argument("--sites", type=int, default=1000)
    sim.add_argument("--seconds", type=float, default=240.0)
    sim.add_argument("--model", type=Path, default=REPO / "pcaps" / "plant" / "train.pcap")
    sim.add_argument("--rollups-per-min", type=float, default=17.0)
    sim.add_argument("--alerts-per-min", type=float, default=0.1)
    sim.add_argument("--assets-per-min", type=float, default=0.2)
    sim.add_argument("--partitions", type=int, default=6)
    sim.add_argument("--sample", type=int, default=20, help="follow every Nth document")
    sim.add_argument("--drain", type=int, default=30000, help="0: skip the drain measurement")
    pl = sub.add_parser("plan", help="the province's capacity table from measured constants")
    for name, default, what in (
        ("enterprises", 4292, "enterprises"),
        ("sensors-per-enterprise", 2.33, "sensors each (10,000 for 4,292)"),
        ("controllers", 50, "controllers a sensor watches"),
        ("clients", 3, "HMIs / engineering stations a sensor sees"),
        ("poll-hz", 10.0, "polls a second per controller (events = all)"),
        ("series-per-controller", 3.0, "rollup series per controller per interval (measured)"),
        ("alerts-per-min", 0.1, "alerts per sensor per minute"),
        ("asset-refresh-s", 3600.0, "[sensor] asset_refresh_s (0: assets every minute)"),
        ("rollup-bytes", 339.0, "bytes per rollup in Elasticsearch (measured)"),
        ("asset-bytes", 234.0, "bytes per asset document (measured)"),
        ("heartbeat-bytes", 349.0, "bytes per heartbeat (measured)"),
        ("alert-bytes", 3332.0, "bytes per alert (measured)"),
        ("cpu-indexer", 0.2, "indexer CPU s per 1000 documents (measured)"),
        ("cpu-es", 0.65, "Elasticsearch CPU s per 1000 documents (measured)"),
        ("cpu-kafka", 0.17, "Kafka CPU s per 1000 documents (measured)"),
        ("utilisation", 0.6, "target CPU utilisation"),
        ("replicas-kafka", 3, "Kafka replication factor"),
        ("replicas-es", 1, "Elasticsearch replicas"),
        ("cores-per-node", 16, "cores per server"),
        ("disk-tb-per-node", 8.0, "disk per Elasticsearch node, TB"),
        ("shard-gb", 40.0, "largest primary shard, GB"),
        ("keep-rollups", 90, "days"),
        ("keep-heartbeats", 30, "days"),
        ("keep-alerts", 365, "days"),
    ):
        pl.add_argument(f"--{name}", type=type(default), default=default, help=what)
    args = parser.parse_args()
    if args.what == "plan":
        plan(args)
        return
    print(f"load average at start: {os.getloadavg()[0]:.1f}; {os.cpu_count()} CPUs", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-province-") as t:
        tmp = Path(t)
        if args.what == "reduction":
            caps = args.captures or [
                *sorted((REPO / "pcaps" / "polling").glob("*.pcap.gz")),
                *sorted(
                    [*(REPO / "pcaps" / "plant").glob("*.pcap"), REPO / "pcaps/baseline/train.pcap"]
                ),
            ]
            model = reduction(caps, tmp)
            if model:
                minutes = max(model["span_s"], 1) / 60
                per = {k: round(v / minutes, 2) for k, v in model["counts"].items() if v}
                print(f"\nmodel from {rel(Path(model['capture']))} ({model['span_s']:.0f} s): "
                      f"per minute {per}; bytes/doc in ES {model['bytes']}")  # fmt: skip
        else:
            simulate(args, tmp)
    print(f"load average at end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
