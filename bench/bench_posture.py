"""Load generator and latency benchmark for the posture API.

Seeds a province (default: 16 cities, 4,000 enterprises, 6,000 sites, 10 million alerts over
90 days) into Elasticsearch (or the embedded store), starts the posture API on 127.0.0.1 and
measures the summary and search endpoints at province and enterprise scope: p50 / p95 / max
over real HTTP requests. Prints a table and writes JSON. Numbers, not asserts.

    .venv/bin/python bench/bench_posture.py --es http://127.0.0.1:9250 --keep   # 10 M alerts
    .venv/bin/python bench/bench_posture.py --store /tmp/b.db --alerts 200000
    .venv/bin/python bench/bench_posture.py --reuse --keep ...           # query an earlier load

Elasticsearch loading sends pre-encoded NDJSON bulk bodies (the exact documents and ids the
indexer would write) over --workers connections, with refreshes off and an async translog
while loading, then restores the index settings and force-merges past days (--no-merge skips).
Run it against a node of its own: a 10 M load is ~5.4 GiB and half an hour.

See bench/README.md for what was run and the results.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import socket
import statistics
import sys
import tempfile
import threading
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from posture import seed  # noqa: E402
from posture.orgfile import parse_org  # noqa: E402
from posture.state import PostureState  # noqa: E402

CHUNK = 5000


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--es", default="http://127.0.0.1:9200", help="Elasticsearch URL")
    ap.add_argument("--store", type=Path, help="use the embedded store at this path instead")
    ap.add_argument("--prefix", default="icsmon-bench", help="Elasticsearch index prefix")
    ap.add_argument("--alerts", type=int, default=10_000_000)
    ap.add_argument("--cities", type=int, default=16)
    ap.add_argument("--enterprises", type=int, default=4000)
    ap.add_argument("--sites", type=int, default=6000)
    ap.add_argument("--days", type=float, default=90.0, help="alerts spread over this many days")
    ap.add_argument("--queries", type=int, default=40, help="timed requests per query kind")
    ap.add_argument("--workers", type=int, default=3, help="parallel bulk requests while loading")
    ap.add_argument(
        "--no-merge",
        dest="merge",
        action="store_false",
        help="skip the force-merge of past days' indices after loading",
    )
    ap.add_argument("--reuse", action="store_true", help="skip loading: query the existing data")
    ap.add_argument("--keep", action="store_true", help="keep the data afterwards")
    ap.add_argument("--out", type=Path, help="write the results as JSON here")
    ap.add_argument("--seed", type=int, default=7)
    return ap.parse_args()


def batches(registry: dict[str, Any], args: argparse.Namespace, now: float):
    """(kind, flat doc) lists of CHUNK documents: alerts, then sensor events, then assets."""
    out: list[tuple[str, dict[str, Any]]] = []
    gen = seed.generate(
        registry, args.alerts, now - args.days * 86400, now - 60, seed=args.seed, with_events=False
    )
    for item in gen:
        out.append(item)
        if len(out) >= CHUNK:
            yield out
            out = []
    out += [("heartbeat", e) for e in seed.heartbeats(registry, now, seed=args.seed)]
    out += [("asset", a) for a in seed.assets(registry, now, seed=args.seed)]
    while out:
        yield out[:CHUNK]
        out = out[CHUNK:]


# Only while loading: no refreshes (nobody reads yet), the translog fsynced in the background
# rather than per bulk request. Restored afterwards; the templates' mappings never change.
LOAD_SETTINGS = {
    "index.refresh_interval": "-1",
    "index.translog.durability": "async",
    "index.translog.flush_threshold_size": "1gb",
}


def alert_bodies(registry: dict[str, Any], args: argparse.Namespace, now: float):
    """NDJSON bulk bodies of CHUNK alerts each, exactly what the indexer would send for the
    documents :func:`posture.seed.generate` makes (daily index of the alert's UTC day, ``_id``
    = event.id), encoded without building dicts (:class:`posture.seed.AlertEncoder`)."""
    enc = seed.AlertEncoder(registry, seed=args.seed)
    index_of: dict[str, bytes] = {}
    lines: list[bytes] = []
    n = 0
    for si, ts, rule, k in seed.alert_plan(
        len(enc.sites), args.alerts, now - args.days * 86400, now - 60, args.seed
    ):
        when, doc_id, source = enc.encode(si, ts, rule, k)
        day = when.strftime("%Y.%m.%d")
        prefix = index_of.get(day)
        if prefix is None:
            name = json.dumps(f"{args.prefix}-alerts-{day}")
            prefix = index_of[day] = f'{{"index":{{"_index":{name},"_id":"'.encode()
        lines.append(prefix + doc_id.encode() + b'"}}\n' + source + b"\n")
        n += 1
        if n == CHUNK:
            yield n, b"".join(lines)
            lines, n = [], 0
    if lines:
        yield n, b"".join(lines)


def send_bulk(client: Any, n: int, body: bytes) -> int:
    resp = client.bulk(operations=body, refresh=False, filter_path="errors,items.*.error")
    if resp.get("errors"):
        raise RuntimeError(f"Elasticsearch rejected a document: {resp['items'][0]}")
    return n


def load_es(registry: dict[str, Any], args: argparse.Namespace, now: float):
    from pipeline.config import load_config
    from pipeline.es import EsQueryBackend, EsStore

    cfg = load_config(
        env={},
        overrides={
            "elasticsearch": {"url": args.es, "index_prefix": args.prefix, "request_timeout": 120}
        },
    )
    es_store = EsStore(cfg)
    client = es_store.client
    info: dict[str, Any] = {}
    if not args.reuse:
        es_store.delete_all()
        es_store.setup()
        for kind in ("alert", "event", "asset"):
            body = es_store.template_body(kind)
            body["template"]["settings"].update(LOAD_SETTINGS)
            client.indices.put_index_template(name=es_store.alias(kind), **body)
        client.indices.put_settings(index=f"{args.prefix}-*", settings=LOAD_SETTINGS)
        t0 = time.perf_counter()
        total, loads = 0, []
        with ThreadPoolExecutor(args.workers) as pool:
            pending: list[Any] = []
            for n, body in alert_bodies(registry, args, now):
                pending.append(pool.submit(send_bulk, client, n, body))
                if len(pending) >= args.workers * 2:
                    total += pending.pop(0).result()
                    if total % 500_000 < CHUNK:
                        loads.append(os.getloadavg()[0])
                        print(
                            f"  loaded {total:,} alerts ({total / (time.perf_counter() - t0):,.0f}/s,"
                            f" load average {loads[-1]:.1f})",
                            flush=True,
                        )
            total += sum(p.result() for p in pending)
        info["alerts_load_s"] = round(time.perf_counter() - t0, 1)
        rest: list[tuple[str, dict[str, Any]]] = [
            ("heartbeat", e) for e in seed.heartbeats(registry, now, seed=args.seed)
        ] + [("asset", a) for a in seed.assets(registry, now, seed=args.seed)]
        for lo in range(0, len(rest), CHUNK):
            total += seed.es_bulk(es_store, rest[lo : lo + CHUNK])
        # Back to the templates and index settings the indexer runs with.
        es_store.setup()
        client.indices.put_settings(index=f"{args.prefix}-*", settings=dict.fromkeys(LOAD_SETTINGS))
        es_store.refresh()
        info["load_s"] = round(time.perf_counter() - t0, 1)
        info["documents"] = total
        info["load_average"] = {
            "mean": round(statistics.mean(loads), 1) if loads else None,
            "max": round(max(loads), 1) if loads else None,
        }
        if args.merge:
            # Past days are read-only history: one segment each makes them cheaper to search.
            today = time.strftime("%Y.%m.%d", time.gmtime(now))
            old = [
                i
                for i in client.indices.get(index=f"{args.prefix}-*", expand_wildcards="open")
                if not i.endswith(today)
            ]
            t1 = time.perf_counter()
            for lo in range(0, len(old), 10):
                client.options(request_timeout=3600).indices.forcemerge(
                    index=",".join(old[lo : lo + 10]), max_num_segments=1
                )
            info["merge_s"] = round(time.perf_counter() - t1, 1)
    stats = client.indices.stats(index=f"{args.prefix}-*", metric="docs,store,segments")
    info["alerts_indexed"] = client.count(index=es_store.alias("alert"))["count"]
    info["store_bytes"] = stats["_all"]["primaries"]["store"]["size_in_bytes"]
    info["segments"] = stats["_all"]["primaries"]["segments"]["count"]
    info["indices"] = len(stats["indices"])
    return EsQueryBackend(cfg), es_store, info


def load_store(registry: dict[str, Any], args: argparse.Namespace, now: float):
    from pipeline.store import Store

    store = Store.open(args.store, batch_size=5000)
    info: dict[str, Any] = {}
    if not args.reuse:
        t0 = time.perf_counter()
        total = 0
        for chunk in batches(registry, args, now):
            for kind, doc in chunk:
                store.write(kind, doc)
            total += len(chunk)
        store.flush()
        info["load_s"] = round(time.perf_counter() - t0, 1)
        info["documents"] = total
    info["alerts_indexed"] = store.counts()["alert"]
    info["store_bytes"] = os.path.getsize(store.path)
    return store, None, info


def serve(backend: Any, state: PostureState) -> tuple[Any, int]:
    import uvicorn

    from posture.app import create_app

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(backend, state),
            host="127.0.0.1",
            port=port,
            log_level="warning",
            access_log=False,
        )
    )
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    return server, port


def timed(port: int, token: str, paths: list[str], warmup: int = 2) -> list[float]:
    """Milliseconds per request, over one keep-alive connection, after warm-up requests."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    headers = {"Authorization": f"Bearer {token}"}
    out = []
    for i, path in enumerate(paths[:warmup] + paths):
        t0 = time.perf_counter()
        conn.request("GET", path, headers=headers)
        resp = conn.getresponse()
        body = resp.read()
        ms = (time.perf_counter() - t0) * 1000
        if resp.status != 200:
            raise RuntimeError(f"GET {path}: {resp.status} {body[:300]!r}")
        if i >= warmup:
            out.append(ms)
    conn.close()
    return out


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))]


def main() -> None:
    args = parse_args()
    rng = random.Random(args.seed)
    registry = seed.make_registry(args.enterprises, args.sites, args.cities, seed=args.seed)
    now = time.time()
    print(
        f"province: {args.cities} cities, {args.enterprises} enterprises, {args.sites} sites; "
        f"{args.alerts:,} alerts over {args.days:g} days -> "
        f"{'store ' + str(args.store) if args.store else 'Elasticsearch ' + args.es}",
        flush=True,
    )
    backend, es_store, info = (load_store if args.store else load_es)(registry, args, now)
    print(f"data: {json.dumps(info)}", flush=True)

    tmp = Path(tempfile.mkdtemp(prefix="posture-bench-"))
    state = PostureState(tmp / "posture.db")
    state.import_org(parse_org(registry, "bench registry"))
    province = state.create_token("bench", "province-analyst", None)
    ents = sorted(state.org().enterprises)
    server, port = serve(backend, state)

    n = args.queries
    ent_pick = [rng.choice(ents) for _ in range(n)]
    ent_tokens = {
        e: state.create_token(f"bench-{e}", "enterprise-operator", e) for e in set(ent_pick)
    }
    filters = ["", "&min_severity=70", "&protocol=modbus", "&technique=T0855", "&q=S7"]

    def q(path: str, **params: Any) -> str:
        return f"{path}?{urllib.parse.urlencode(params)}"

    kinds: dict[str, tuple[str | None, list[str]]] = {
        "province summary 24 h": (province, [q("/api/summary", hours=24)] * n),
        "province summary 7 d": (province, [q("/api/summary", hours=168)] * n),
        "province summary 90 d": (province, [q("/api/summary", hours=2160)] * max(5, n // 4)),
        "city summary 24 h": (
            province,
            [
                q("/api/summary", hours=24, scope=f"city:{rng.choice(list(state.org().cities))}")
                for _ in range(n)
            ],
        ),
        "province search 24 h": (
            province,
            [q("/api/alerts", hours=24, limit=50) + rng.choice(filters) for _ in range(n)],
        ),
        "province search 30 d, page 20": (
            province,
            [q("/api/alerts", hours=720, limit=50, offset=950) for _ in range(n)],
        ),
    }
    results: dict[str, dict[str, float]] = {}
    for name, (token, paths) in kinds.items():
        ms = timed(port, token or province, paths)
        results[name] = {
            "n": len(ms),
            "p50_ms": round(statistics.median(ms), 1),
            "p95_ms": round(pct(ms, 95), 1),
            "max_ms": round(max(ms), 1),
        }
        print(
            f"  {name:34s} p50 {results[name]['p50_ms']:8.1f} ms   "
            f"p95 {results[name]['p95_ms']:8.1f} ms   max {results[name]['max_ms']:8.1f} ms",
            flush=True,
        )
    # Enterprise scope: each request as that enterprise's own user.
    for name, path in (
        ("enterprise summary 24 h", "/api/summary?hours=24"),
        ("enterprise summary 90 d", "/api/summary?hours=2160"),
        ("enterprise search 90 d", "/api/alerts?hours=2160&limit=50"),
    ):
        ms = []
        for e in ent_pick:
            ms += timed(port, ent_tokens[e], [path], warmup=0)
        results[name] = {
            "n": len(ms),
            "p50_ms": round(statistics.median(ms), 1),
            "p95_ms": round(pct(ms, 95), 1),
            "max_ms": round(max(ms), 1),
        }
        print(
            f"  {name:34s} p50 {results[name]['p50_ms']:8.1f} ms   "
            f"p95 {results[name]['p95_ms']:8.1f} ms   max {results[name]['max_ms']:8.1f} ms",
            flush=True,
        )
    server.should_exit = True
    if args.out:
        args.out.write_text(
            json.dumps(
                {
                    "args": {k: str(v) for k, v in vars(args).items()},
                    "data": info,
                    "latency": results,
                },
                indent=2,
            )
        )
    if es_store is not None and not args.keep:
        es_store.delete_all()
    backend.close()
    state.close()


if __name__ == "__main__":
    main()
