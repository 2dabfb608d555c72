"""The bulk load path of bench/bench_posture.py: AlertEncoder must write exactly the alerts
generate() makes (same _source, same _id, same daily index), so the benchmark measures the
documents the indexer would write."""

from __future__ import annotations

import orjson

from pipeline.docs import nest
from pipeline.es import day_of
from posture import seed


def test_encoder_matches_make_alert_for_every_rule() -> None:
    registry = seed.make_registry(n_enterprises=40, n_sites=70, cities=16, seed=3)
    enc = seed.AlertEncoder(registry, seed=3)
    start, end = 1_764_000_000.0, 1_764_000_000.0 + 9 * 86400
    plan = list(seed.alert_plan(len(enc.sites), 4000, start, end, seed=3))
    ref = [doc for _, doc in seed.generate(registry, 4000, start, end, seed=3, with_events=False)]
    assert len(plan) == len(ref) == 4000
    assert {rule[0] for _, _, rule, _ in plan} == {r[0] for r in seed.RULES}
    for (si, ts, rule, n), doc in zip(plan, ref, strict=True):
        when, doc_id, source = enc.encode(si, ts, rule, n)
        assert orjson.loads(source) == nest(doc)
        assert doc_id == doc["event.id"]
        assert when.strftime("%Y.%m.%d") == day_of(doc["@timestamp"])


def test_encoder_orders_community_id_endpoints() -> None:
    # The encoder keeps each site's packed addresses and orders the flow's endpoints itself:
    # sites on both sides of the 250-site address boundary, every rule, against the reference.
    registry = seed.make_registry(n_enterprises=300, n_sites=300, cities=16, seed=1)
    enc = seed.AlertEncoder(registry, seed=1)
    for si in (0, 249, 250, 299):
        site = enc.sites[si]
        for rule in seed.RULES:
            alert, _ = seed.make_alert(
                site, si, 1_764_000_123.5, rule, 77, seed=1, with_events=False
            )
            _, _, source = enc.encode(si, 1_764_000_123.5, rule, 77)
            assert orjson.loads(source) == nest(alert)
