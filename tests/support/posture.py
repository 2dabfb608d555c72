"""A seeded province for the posture tests: back end (store or Elasticsearch), posture
state, API client, tokens and the documents written."""

from __future__ import annotations

import os
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from assessment.catalog import Catalog
from pipeline.query import QueryBackend
from pipeline.store import Store
from posture import seed
from posture.app import create_app
from posture.orgfile import parse_org
from posture.state import PostureState
from tests.support import REPO

N_ALERTS = 1500


ES_URL = os.environ.get("ICSMON_ES_URL", "http://127.0.0.1:9200")


@dataclass
class Env:
    """A seeded province: back end, posture state, app client, tokens and the documents."""

    backend: QueryBackend
    state: PostureState
    client: TestClient
    registry: dict[str, Any]
    docs: dict[str, list[dict[str, Any]]]
    now: float
    write: Callable[[list[tuple[str, dict[str, Any]]]], None]
    tokens: dict[str, str] = field(default_factory=dict)
    # role key -> (role, scope id)
    principals: dict[str, tuple[str, str | None]] = field(default_factory=dict)
    hooks: dict[str, int] = field(default_factory=dict)
    evidence: dict[str, str] = field(default_factory=dict)  # request id -> site
    hunts: dict[str, str] = field(default_factory=dict)  # hunt id -> site
    cleanup: list[Callable[[], None]] = field(default_factory=list)

    def h(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[who]}"}

    def sites_of(self, who: str) -> set[str]:
        role, scope = self.principals[who]
        rows = seed.registry_sites(self.registry)
        if role == "province-analyst":
            return {r["site"] for r in rows}
        if role == "city-analyst":
            return {r["site"] for r in rows if r["city"] == scope}
        return {r["site"] for r in rows if r["enterprise"] == scope}

    def close(self) -> None:
        self.client.close()
        self.backend.close()
        self.state.close()
        for fn in self.cleanup:
            fn()


def small_registry() -> dict[str, Any]:
    return seed.make_registry(n_enterprises=20, n_sites=28, cities=16, seed=11)


def store_backend(
    folder: Path,
) -> tuple[QueryBackend, Callable, list[Callable[[], None]], Any]:
    store = Store.open(folder / "icsmon.db")

    def write(items: list[tuple[str, dict[str, Any]]]) -> None:
        for kind, doc in items:
            store.write(kind, doc)
        store.flush()

    return store, write, [], Catalog(folder / "icsmon.assessment.db")


def es_up() -> bool:
    try:
        with urllib.request.urlopen(f"{ES_URL}/_cluster/health?timeout=2s", timeout=5) as r:
            return r.status == 200
    except OSError:
        return False


def es_backend(folder: Path) -> tuple[QueryBackend, Callable, list[Callable[[], None]], Any]:
    """A fresh index prefix on the real Elasticsearch (the test script starts it)."""
    if not es_up():
        if os.environ.get("CI"):
            pytest.fail(f"Elasticsearch is not up at {ES_URL} (deploy/services.sh start)")
        pytest.skip(f"Elasticsearch is not up at {ES_URL}")
    from pipeline.config import load_config
    from pipeline.es import EsQueryBackend, EsStore

    prefix = f"icsmon-posture-{os.getpid()}-{folder.name.lower()}"
    cfg = load_config(env={}, overrides={"elasticsearch": {"url": ES_URL, "index_prefix": prefix}})
    es_store = EsStore(cfg)
    es_store.setup()

    def write(items: list[tuple[str, dict[str, Any]]]) -> None:
        for lo in range(0, len(items), 2000):
            seed.es_bulk(es_store, items[lo : lo + 2000])
        es_store.refresh()

    def drop() -> None:
        es_store.delete_all()
        es_store.close()

    from assessment.catalog import EsCatalog

    # the assessment's data in Elasticsearch too (advisories, decisions in the findings)
    return EsQueryBackend(cfg), write, [drop], EsCatalog(EsStore(cfg))


BACKENDS = {"store": store_backend, "es": es_backend}


def make_env(
    folder: Path, backend: str = "store", n_alerts: int = N_ALERTS, now: float | None = None
) -> Env:
    """Seed a new back end (embedded store or Elasticsearch) and start the app over it."""
    registry = small_registry()
    now = time.time() if now is None else now
    docs = seed.dataset(registry, now, n_alerts, days=2.0, seed=11)
    be, write, cleanup, catalog = BACKENDS[backend](folder)
    kinds = ("event", "alert", "asset", "heartbeat", "finding")
    write([(kind, doc) for kind in kinds for doc in docs[kind]])
    state = PostureState(folder / "icsmon.posture.db")
    state.import_org(parse_org(registry, "test registry"))
    catalog.import_paths([REPO / "tests" / "assessment" / "csaf"])
    cleanup.append(catalog.close)
    env = Env(
        backend=be,
        state=state,
        client=TestClient(create_app(be, state, catalog=catalog)),
        registry=registry,
        docs=docs,
        now=now,
        write=write,
        cleanup=cleanup,
    )
    sites = seed.registry_sites(registry)
    city_a = sites[0]["city"]  # ent-0001's city
    ent_a = "ent-0001"
    ent_b = next(r["enterprise"] for r in sites if r["city"] != city_a)
    city_b = next(r["city"] for r in sites if r["enterprise"] == ent_b)
    env.principals = {
        "province": ("province-analyst", None),
        "city_a": ("city-analyst", city_a),
        "city_b": ("city-analyst", city_b),
        "ent_a_op": ("enterprise-operator", ent_a),
        "ent_a_view": ("enterprise-viewer", ent_a),
        "ent_b_op": ("enterprise-operator", ent_b),
    }
    for who, (role, scope) in env.principals.items():
        env.tokens[who] = state.create_token(who, role, scope)
    return env


BACKEND_PARAMS = ["store", pytest.param("es", marks=pytest.mark.services)]


def alerts_in(env: Env, sites: set[str], since: float) -> list[dict[str, Any]]:
    return [a for a in env.docs["alert"] if a["labels.site"] in sites and seed_ts(a) >= since]


def seed_ts(doc: dict[str, Any]) -> float:
    from pipeline.store import to_epoch

    return to_epoch(doc["@timestamp"]) or 0.0


# the principals make_env creates tokens for, one per role and scope
WHO = ["province", "city_a", "city_b", "ent_a_op", "ent_a_view", "ent_b_op"]


def evidence_answer(
    request_id: str,
    sensor: str,
    site: str,
    pcap: bytes,
    now: float,
    events: list[dict] | None = None,
) -> list[dict[str, Any]]:
    """The parts a sensor sends for a delivered evidence request (pipeline.evidence's
    format, built with the same response_doc): a head, an events part, pcap parts."""
    import base64
    import hashlib

    from pipeline.control import Envelope, response_doc
    from pipeline.kinds import RESPONSE_PART_BYTES

    env = Envelope("evidence.request", request_id, sensor, int(now), int(now) + 900, {})
    chunks = [pcap[i : i + RESPONSE_PART_BYTES] for i in range(0, len(pcap), RESPONSE_PART_BYTES)]
    events = events or []
    parts = 1 + (1 if events else 0) + len(chunks)
    common = {"labels.site": site}
    head = {
        **common,
        "icsmon.evidence.events_total": len(events),
        "icsmon.evidence.events_sent": len(events),
        "icsmon.evidence.pcap_bytes": len(pcap),
        "icsmon.evidence.pcap_frames": 1,
        "icsmon.evidence.pcap_source": "alert-capture",
        "icsmon.evidence.pcap_sha256": hashlib.sha256(pcap).hexdigest(),
    }
    out = [response_doc(env, sensor, "delivered", 0, parts, head, now=now)]
    n = 1
    if events:
        out.append(
            response_doc(
                env,
                sensor,
                "delivered",
                n,
                parts,
                {**common, "icsmon.evidence.events": events},
                now=now,
            )
        )
        n += 1
    for chunk in chunks:
        fields = {**common, "icsmon.evidence.pcap": base64.b64encode(chunk).decode()}
        out.append(response_doc(env, sensor, "delivered", n, parts, fields, now=now))
        n += 1
    return out


def seed_evidence_request(env: Env, alert: dict[str, Any], actor: str, pcap: bytes) -> str:
    """A delivered evidence request for ``alert``: recorded in the posture state as the API
    records one, and the sensor's answer written to the back end. Its id."""
    import uuid

    rid = str(uuid.uuid4())
    now = time.time()
    sensor = str(alert.get("observer.name") or "sensor")
    envelope = {
        "id": rid,
        "target": sensor,
        "issued_at": int(now),
        "expires_at": int(now) + 900,
        "payload": {"alert_id": alert["event.id"], "start": int(now) - 60, "end": int(now)},
    }
    env.state.add_evidence_request(envelope, alert["event.id"], alert.get("labels.site"), actor)
    env.write(
        [("response", d) for d in evidence_answer(rid, sensor, alert["labels.site"], pcap, now)]
    )
    return rid


def seed_hunt(env: Env, site: str, actor: str) -> str:
    """A hunt over one site, recorded in the posture state as the API records one, and the
    first sensor's summary written to the back end (the others have not answered). Its id."""
    import uuid

    from pipeline.control import Envelope, response_doc
    from response.hunts import HUNT_REQUEST

    hunt_id = f"hunt-{uuid.uuid4().hex[:16]}"
    now = time.time()
    sensors = next(r["sensors"] for r in seed.registry_sites(env.registry) if r["site"] == site)
    targets = [{"sensor": s, "site": site, "request": str(uuid.uuid4())} for s in sensors]
    detail = {
        "rules": [{"id": "r", "title": "a rule"}],
        "since": None,
        "until": None,
        "max_seconds": 600,
        "targets": targets,
    }
    env.state.add_hunt(hunt_id, f"site:{site}", actor, now + 900, detail)
    first = targets[0]
    envelope = Envelope(
        HUNT_REQUEST, first["request"], first["sensor"], int(now), int(now) + 900, {}
    )
    fields = {"labels.site": site, "icsmon.hunt.id": hunt_id, "icsmon.hunt.events": 10}
    env.write([("response", response_doc(envelope, first["sensor"], "delivered", fields=fields))])
    return hunt_id
