"""The posture view's traffic figures read rollups (never events): who talks to whom, the
operations mix, new talkers; on the embedded store and on the real Elasticsearch, within the
caller's tenancy."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from pipeline.store import Store
from posture.app import create_app
from posture.orgfile import parse_org
from posture.state import PostureState
from sensor.engine import Engine, EngineConfig
from sensor.rollups import Rollups
from sensor.timestamps import parse_timestamp

REPO = Path(__file__).resolve().parents[2]
TRAIN = REPO / "pcaps" / "baseline" / "train.pcap"
ATTACK = REPO / "pcaps" / "baseline" / "attack_new_host_write.pcap"
REGISTRY = {
    "province": {"id": "p", "name": "P"},
    "cities": [
        {
            "id": "c1",
            "name": "C1",
            "enterprises": [
                {
                    "id": "e1",
                    "name": "E1",
                    "industry": "power",
                    "criticality": 3,
                    "sites": [{"id": "s1", "name": "S1", "sensors": ["n1"]}],
                },
                {
                    "id": "e2",
                    "name": "E2",
                    "industry": "water",
                    "criticality": 3,
                    "sites": [{"id": "s2", "name": "S2", "sensors": ["n2"]}],
                },
            ],
        }
    ],
}


def rollups_of(path: Path, site: str, observer: str, shift: float = 0.0) -> list[dict]:
    engine = Engine(EngineConfig(site=site, observer=observer, organization="e"))
    r = Rollups(engine.ctx)
    out: list[dict] = []
    for ev in engine.replay([path]):
        if shift:
            from sensor.events import iso_timestamp

            ev = {**ev, "@timestamp": iso_timestamp(parse_timestamp(ev["@timestamp"]) + shift)}
        out += r.add(ev)
    return out + r.flush()


def docs() -> tuple[list[dict], float, float]:
    """Site s1: the training capture, then a day later the attack capture (a new host
    writes); site s2: the training capture only."""
    train = rollups_of(TRAIN, "s1", "n1")
    t0 = min(parse_timestamp(d["@timestamp"]) for d in train)
    attack_start = min(parse_timestamp(d["@timestamp"]) for d in rollups_of(ATTACK, "s1", "n1"))
    later = rollups_of(ATTACK, "s1", "n1", shift=t0 + 86400 - attack_start)
    other = rollups_of(TRAIN, "s2", "n2")
    return train + later + other, t0, t0 + 86400


def _app(folder: Path, backend) -> tuple[TestClient, dict[str, str]]:
    state = PostureState(folder / "posture.db")
    state.import_org(parse_org(REGISTRY, "test"))
    tokens = {
        "province": state.create_token("p", "province-analyst", None),
        "e2": state.create_token("v2", "enterprise-viewer", "e2"),
    }
    return TestClient(create_app(backend, state)), tokens


def check(client: TestClient, tokens: dict[str, str], all_docs: list[dict], since: float) -> None:
    h = {"Authorization": f"Bearer {tokens['province']}"}
    day = [d for d in all_docs if parse_timestamp(d["@timestamp"]) >= since]
    q = {"scope": "site:s1", "since": since, "until": since + 3600}
    got = client.get("/api/traffic", params=q, headers=h).json()
    want = Counter()
    for d in day:
        if d["labels.site"] == "s1":
            key = (d["source.ip"], d["destination.ip"], d["network.protocol"])
            want[key] += d["icsmon.rollup.transactions"]
    talkers = {(r["client"], r["server"], r["protocol"]): r["transactions"] for r in got["talkers"]}
    assert talkers == dict(want.most_common(len(talkers))) and talkers
    ops = Counter()
    for d in day:
        if d["labels.site"] == "s1":
            ops[d["ics.operation"]] += d["icsmon.rollup.transactions"]
    assert dict(map(tuple, got["operations"])) == dict(ops)
    # controls: the writes of the day (the baseline captures write registers), per function
    controls = Counter()
    for d in day:
        if d["labels.site"] == "s1" and d["ics.operation"] in ("control", "write", "program"):
            key = (d["source.ip"], d["network.protocol"], d["ics.operation"], d["ics.function"])
            controls[key] += d["icsmon.rollup.transactions"]
    got_controls = {
        (r["client"], r["protocol"], r["operation"], r["function"]): r["transactions"]
        for r in got["controls"]
    }
    assert got_controls == dict(controls) and got_controls
    # the attacking host is new that day; the plant's usual talkers are not
    new = {(r["client"], r["server"]) for r in got["new_talkers"]}
    before = {
        (d["source.ip"], d["destination.ip"])
        for d in all_docs
        if d["labels.site"] == "s1" and parse_timestamp(d["@timestamp"]) < since
    }
    assert new and not (new & before)
    # an enterprise viewer of e2 cannot read s1's traffic: the scope answers as missing
    h2 = {"Authorization": f"Bearer {tokens['e2']}"}
    assert client.get("/api/traffic", params=q, headers=h2).status_code == 404
    own = client.get(
        "/api/traffic", params={"since": since - 86400, "until": since + 3600}, headers=h2
    ).json()
    assert own["talkers"] and all(r["client"].startswith("127.0.5.") for r in own["talkers"])


def test_traffic_from_rollups_on_the_store(tmp_path: Path) -> None:
    all_docs, _t0, day2 = docs()
    store = Store.open(tmp_path / "t.db")
    try:
        for d in all_docs:
            store.write("rollup", d)
        # events are not read for traffic: a flood of them changes nothing
        store.write(
            "event",
            {
                "@timestamp": all_docs[0]["@timestamp"],
                "event.id": "x",
                "labels.site": "s1",
                "source.ip": "10.9.9.9",
            },
        )
        store.flush()
        client, tokens = _app(tmp_path, store)
        check(client, tokens, all_docs, day2 - 60)
    finally:
        store.close()


@pytest.mark.services
def test_traffic_from_rollups_on_elasticsearch(tmp_path: Path) -> None:
    from pipeline.config import load_config
    from pipeline.es import EsQueryBackend, EsStore
    from posture import seed
    from tests.support.pipeline import require_services

    require_services()
    all_docs, _t0, day2 = docs()
    prefix = f"icsmon-traffic-{os.getpid()}"
    cfg = load_config(env={}, overrides={"elasticsearch": {"index_prefix": prefix}})
    es = EsStore(cfg)
    try:
        es.setup()
        seed.es_bulk(es, [("rollup", d) for d in all_docs], refresh=True)
        backend = EsQueryBackend(cfg)
        client, tokens = _app(tmp_path, backend)
        check(client, tokens, all_docs, day2 - 60)
        backend.close()
    finally:
        es.delete_all()
        es.close()
