"""Coverage from a real sensor's heartbeats, on both back ends: ``icsmon sense`` on a veth
pair in a network namespace, shipping to the real Kafka (reached through a bridge on the
namespace's loopback; the indexer puts its heartbeats in Elasticsearch) and keeping
everything in its own store. Idle, the enterprise is "connected,
no traffic"; with traffic on the mirror port, "connected"; after a clean stop,
"disconnected"; a week later, "stale"; an enterprise whose sensor never spoke, "never
onboarded". The same answers from the store and from Elasticsearch."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from pipeline.es import EsQueryBackend
from pipeline.indexer import Indexer, setup
from pipeline.store import Store, StoreError
from posture.assessment_api import AssessmentData
from posture.orgfile import parse_org
from posture.state import PostureState
from tests.support import REPO
from tests.support.bridge import Bridge
from tests.support.netns import (
    ICSMON,
    SENSE,
    capture_ready,
    iface_index,
    in_ns,
    netns,  # noqa: F401 - the fixture: a namespace with a veth pair
    tcpreplay,
    wait_on_child,
)
from tests.support.pipeline import (
    BROKER,
    drop_pipe,
    make_pipe,
    require_services,
    wait_for,
)

POLLING = REPO / "pcaps" / "modbus" / "modbus_polling.pcap"
WEEK = 7 * 86400.0

pytestmark = [pytest.mark.live, pytest.mark.services]

REGISTRY = {
    "province": {"id": "p", "name": "P", "name_zh": "省"},
    "cities": [
        {
            "id": "c1",
            "name": "C1",
            "name_zh": "一市",
            "enterprises": [
                {
                    "id": "ent-live",
                    "name": "Live Plant Co.",
                    "industry": "chemicals",
                    "criticality": 4,
                    "grade": 3,
                    "sites": [{"id": "s1", "name": "Plant", "sensors": ["live-1"]}],
                },
                {
                    "id": "ent-never",
                    "name": "Never Connected Co.",
                    "industry": "chemicals",
                    "criticality": 3,
                    "key_connected": True,
                    "sites": [{"id": "s2", "name": "Works", "sensors": ["never-1"]}],
                },
            ],
        }
    ],
}


def _state_of(data: AssessmentData, now: float | None = None) -> dict[str, str]:
    cov = data.coverage(None, now=now)
    return {r["enterprise"]: r["state"] for r in cov["enterprises"]}


def test_coverage_follows_a_live_sensor_on_both_back_ends(
    netns: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    require_services()
    pipe = make_pipe(tmp_path)
    setup(pipe.cfg)
    state = PostureState(tmp_path / "posture.db")
    state.import_org(parse_org(REGISTRY, "test registry"))
    sensor_db = tmp_path / "sensor.db"
    env = dict(pipe.env, ICSMON_SENSOR_HEARTBEAT_INTERVAL="1", ICSMON_STORE=str(sensor_db))
    indexer = Indexer(pipe.cfg)
    indexing = threading.Thread(target=indexer.run, name="indexer", daemon=True)
    indexing.start()
    es = EsQueryBackend(pipe.cfg)
    # the sensor runs in the namespace: Kafka reaches it through a bridge on its loopback
    bridge = Bridge(netns, int(BROKER.rsplit(":", 1)[1]), tmp_path)
    proc = subprocess.Popen(
        in_ns(netns, ICSMON, "sense", "--iface", SENSE, "--no-rules", "--site", "s1")
        + ["--observer", "live-1", "--sink", "kafka"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    store: Store | None = None
    feeding = threading.Event()
    try:
        wait_on_child("the capture", lambda: capture_ready(netns, iface_index(netns, SENSE)), proc)
        opened: list[Store] = []

        def store_ready() -> bool:
            try:
                opened.append(Store.open(sensor_db, readonly=True))
            except StoreError:  # not there yet, or being created
                return False
            return True

        wait_on_child("the sensor's store", store_ready, proc)
        store = opened[0]
        backends: dict[str, Any] = {"store": store, "es": es}
        data = {name: AssessmentData(b, state, None) for name, b in backends.items()}

        def states(want: str) -> bool:
            got = {name: _state_of(d)["ent-live"] for name, d in data.items()}
            return set(got.values()) == {want}

        # up, no packet on the mirror port: connected, no traffic (on both back ends)
        wait_on_child("no-traffic on both back ends", lambda: states("no-traffic"), proc)
        assert {n: _state_of(d)["ent-never"] for n, d in data.items()} == {
            "store": "never-onboarded",
            "es": "never-onboarded",
        }

        # traffic on the mirror port: connected
        def feed() -> None:
            while not feeding.is_set():
                tcpreplay(netns, POLLING)
                time.sleep(0.2)

        feeder = threading.Thread(target=feed, name="tcpreplay", daemon=True)
        feeder.start()
        wait_on_child("connected on both back ends", lambda: states("connected"), proc)
        feeding.set()
        feeder.join(timeout=60)

        # a clean stop: its last heartbeat says so; nothing watches the plant
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=60)
        assert proc.returncode == 0, stderr
        wait_for("disconnected on both back ends", lambda: states("disconnected"), limit_s=60)
        cov = {n: d.coverage(None) for n, d in data.items()}
        assert cov["store"] == cov["es"]
        assert cov["es"]["required"] == 2 and cov["es"]["required_connected"] == 0
        # a week and a day later, without a word from it: stale, on both
        later = time.time() + WEEK + 86400
        assert {n: _state_of(d, later)["ent-live"] for n, d in data.items()} == {
            "store": "stale",
            "es": "stale",
        }
    finally:
        feeding.set()
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        bridge.close()
        indexer.stop()
        indexing.join(timeout=60)
        indexer.close()
        es.close()
        if store is not None:
            store.close()
        state.close()
        drop_pipe(pipe)
    assert os.path.exists(sensor_db)
