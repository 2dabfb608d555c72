"""Campaign correlation and notice statistics at province scale (the response desk).

Seeds a province into the embedded store (default: 16 cities, 1,000 enterprises, 1,500 sites,
200,000 alerts over the last 12 hours, the window the posture server correlates every 10
minutes) plus one outside address hitting --hit enterprises, then times
``Campaigns.detect`` over those 12 hours, split into reading the alerts from the store and
correlating them, and ``Notices.stats`` over --notices notices. With ``--es URL`` the same
province goes into Elasticsearch (a fresh index prefix, deleted after) and the pass runs there.
Beside the pass, the read of every alert of the window (what a pass without the back end's
aggregation had to do) is timed in the same run. Numbers, not asserts; see bench/README.md.

    .venv/bin/python bench/bench_response.py
    .venv/bin/python bench/bench_response.py --es http://127.0.0.1:9200
    .venv/bin/python bench/bench_response.py --alerts 50000 --enterprises 300 --sites 400
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline.query import AlertFilter  # noqa: E402
from pipeline.store import Store  # noqa: E402
from posture import seed  # noqa: E402
from posture.orgfile import parse_org  # noqa: E402
from posture.state import PostureState  # noqa: E402
from response.db import Viewer  # noqa: E402
from response.incidents import page_alerts  # noqa: E402
from response.service import Response  # noqa: E402

ATTACKER = "203.0.113.9"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--alerts", type=int, default=200_000)
    ap.add_argument("--enterprises", type=int, default=1000)
    ap.add_argument("--sites", type=int, default=1500)
    ap.add_argument("--hit", type=int, default=12, help="enterprises the outside address hits")
    ap.add_argument("--notices", type=int, default=5000)
    ap.add_argument("--es", default=None, help="Elasticsearch URL (default: the embedded store)")
    args = ap.parse_args()

    folder = Path(tempfile.mkdtemp(prefix="bench-response-"))
    registry = seed.make_registry(args.enterprises, args.sites)
    rows = seed.registry_sites(registry)
    now = time.time()
    t0 = time.perf_counter()
    docs_in = list(seed.generate(registry, args.alerts, now - 12 * 3600, now, with_events=False))
    seen: set[str] = set()
    for i, r in enumerate(rows):
        if r["enterprise"] in seen or len(seen) >= args.hit:
            continue
        seen.add(r["enterprise"])
        alert, _ = seed.make_alert(
            r,
            i,
            now - 3600 + len(seen) * 60,
            seed.RULES[0],
            7_000_000 + i,
            seed=99,
            with_events=False,
        )
        alert["source.ip"] = ATTACKER
        docs_in.append(("alert", alert))
    if args.es:
        from pipeline.config import load_config
        from pipeline.es import EsQueryBackend, EsStore

        cfg = load_config(
            env={},
            overrides={
                "elasticsearch": {"url": args.es, "index_prefix": f"bench-resp-{os.getpid()}"}
            },
        )
        es_store = EsStore(cfg)
        es_store.setup()
        for lo in range(0, len(docs_in), 5000):
            seed.es_bulk(es_store, docs_in[lo : lo + 5000])
        es_store.refresh()
    else:
        store = Store.open(folder / "icsmon.db")
        for kind, doc in docs_in:
            store.write(kind, doc)
        store.close()
    load_s = time.perf_counter() - t0
    state = PostureState(folder / "icsmon.posture.db")
    state.import_org(parse_org(registry, "bench registry"))
    backend = EsQueryBackend(cfg) if args.es else Store.open(folder / "icsmon.db", readonly=True)
    desk = Response(state.path, backend)
    org = state.org()
    policy = desk.policy

    t0 = time.perf_counter()
    docs = page_alerts(
        backend,
        AlertFilter(
            since=now - 12 * 3600, until=now + 1, min_severity=policy.campaign_min_severity
        ),
        200_000,
    )
    read_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    got = desk.campaigns.detect(org, now - 12 * 3600, now + 1, now)
    detect_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    again = desk.campaigns.detect(org, now - 12 * 3600, now + 1, now)
    again_s = time.perf_counter() - t0

    province = Viewer("bench", "province-analyst", None, None)
    ents = sorted(org.enterprises)
    for k in range(args.notices):
        desk.notices.issue(
            province,
            org,
            subject_kind="advisory",
            subject_ref=f"ICSA-{k}",
            enterprise=ents[k % len(ents)],
            title="bench",
            actions=["patch"],
        )
    t0 = time.perf_counter()
    stats = desk.notices.stats(province, org)
    stats_s = time.perf_counter() - t0

    print(
        f"province: {len(org.enterprises)} enterprises, {len(org.sites)} sites; "
        f"{args.alerts + len(seen):,} alerts in 12 h ({'Elasticsearch' if args.es else 'store'} "
        f"load {load_s:.1f} s)"
    )
    print(
        f"every alert of severity >= {policy.campaign_min_severity} in the window (the read "
        f"without the aggregation): {len(docs):,} in {read_s:.2f} s"
    )
    print(
        f"campaigns.detect (read + correlate + record): {detect_s:.2f} s, "
        f"{len(got['new'])} new campaign(s), {got['scanned']:,} alerts read; again (idempotent): {again_s:.2f} s, "
        f"{len(again['new'])} new, {len(again['extended'])} extended"
    )
    print(f"notices.stats over {stats['total']['issued']:,} notices: {stats_s * 1000:.0f} ms")
    desk.close()
    backend.close()
    state.close()
    if args.es:
        es_store.delete_all()
        es_store.close()


if __name__ == "__main__":
    main()
