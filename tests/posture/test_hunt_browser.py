"""A hunt from the posture view, from end to end: an enterprise operator chooses a rule of the
pack and the scope of their enterprise in the dashboard (headless Chromium); the posture
server signs one ``hunt.request`` per sensor registered to the enterprise's sites and
publishes them on the real Kafka; the one sensor that runs (``icsmon sense`` on the loopback
port, its store holding a capture's events) hunts and answers; ``icsmon index`` puts the
answers and the alerts in the real Elasticsearch; the page follows each site (done with the
events scanned, time covered and matches; the silent sensors still "requested") and lists
the hunt's alerts, the in-process hunt's exactly, each opening the alert's page. A viewer of
the enterprise follows the hunt but may not start one; another enterprise cannot see it.

Screenshots (zh and en) go to tests/out/test_an_operator_hunts_a_rule_over_the_enterprise/.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
from pathlib import Path

import pytest

from detectors.hunt import Hunt, load_hunt_engine
from detectors.sigma import SigmaEngine
from icsmon.run import Detectors, Run
from pipeline import control
from pipeline.store import Store
from posture import seed
from posture.orgfile import parse_org
from posture.state import PostureState
from sensor.engine import Engine, EngineConfig
from tests.support import REPO
from tests.support.browser import launch, login, need_browser, serve, shot
from tests.support.modbus_live import free_port
from tests.support.pipeline import drop_pipe, make_pipe, require_services
from tests.support.processes import start_sensor_and_indexer, stop, wait_first_heartbeat

pytestmark = [pytest.mark.services, pytest.mark.live, pytest.mark.slow]

ATTACK = REPO / "pcaps" / "modbus" / "modbus_attack.pcap"
RULE_ID = "cf849942-e7b0-5107-bd0c-6249700874bd"  # Modbus write from a host outside the masters


def sensor_store(path: Path, site: str, sensor: str, enterprise: str) -> None:
    """The sensor's store as a live run left it, alerts cleared (what a hunt finds is new)."""
    engine = Engine(EngineConfig(site=site, observer=sensor, organization=enterprise))
    store = Store.open(path)
    try:
        run = Run(engine, Detectors([SigmaEngine.load()]), store)
        for _ in run.process(engine.replay([ATTACK]), want_events=False):
            pass
    finally:
        store.close()
    with sqlite3.connect(path) as conn:
        for table in ("alert_events", "alert_docs", "alerts"):
            conn.execute(f"DELETE FROM {table}")


def test_an_operator_hunts_a_rule_over_the_enterprise(tmp_path: Path, out_dir: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("the live sensor needs root (a packet socket on the loopback port)")
    need_browser()
    require_services()
    from fastapi.testclient import TestClient
    from playwright.sync_api import expect, sync_playwright

    from pipeline.control import Signer
    from pipeline.control_kafka import ControlPublisher
    from pipeline.es import EsQueryBackend
    from pipeline.indexer import setup
    from posture.app import create_app

    registry = seed.make_registry(n_enterprises=6, n_sites=12, cities=3, seed=12)
    rows = seed.registry_sites(registry)
    ent = next(
        e
        for e in sorted({r["enterprise"] for r in rows})
        if sum(r["enterprise"] == e for r in rows) > 1
    )
    mine = [r for r in rows if r["enterprise"] == ent]
    site, sensor = mine[0]["site"], mine[0]["sensors"][0]
    silent = [s for r in mine for s in r["sensors"] if s != sensor]
    other_ent = next(r["enterprise"] for r in rows if r["enterprise"] != ent)
    pipe = make_pipe(tmp_path)
    db = Path(pipe.env["ICSMON_STORE"])
    sensor_store(db, site, sensor, ent)
    with Store.open(db, readonly=True) as store:
        stored = store.count_events()
        expected: list[dict] = []
        Hunt(load_hunt_engine([RULE_ID]), write=expected.append).run(store.scan_events())
    assert expected
    control.generate_keys(tmp_path / "province.key", tmp_path / "sensor.pub")
    setup(pipe.cfg)
    env = dict(pipe.env, ICSMON_SENSOR_HEARTBEAT_INTERVAL="5")
    port = free_port()
    procs: list[subprocess.Popen] = []
    server = None
    backend = EsQueryBackend(pipe.cfg)
    publisher = ControlPublisher(pipe.cfg, Signer.from_file(tmp_path / "province.key"))
    state = PostureState(tmp_path / "posture.db")
    try:
        sense = start_sensor_and_indexer(
            [
                "--iface",
                "lo",
                "--bpf",
                f"host 127.0.0.68 and tcp port {port}",  # quiet: the hunt is over history
                "--sink",
                "kafka",
                "--control-key",
                str(tmp_path / "sensor.pub"),
                "--site",
                site,
                "--observer",
                sensor,
                "--org",
                ent,
                "--format",
                "jsonl",
            ],
            env,
            procs,
        )

        wait_first_heartbeat(sense, backend)
        state.import_org(parse_org(registry, "test registry"))
        operator = state.create_token("plant-operator", "enterprise-operator", ent)
        viewer = state.create_token("plant-viewer", "enterprise-viewer", ent)
        other = state.create_token("other-plant", "enterprise-operator", other_ent)
        server, thread, url = serve(create_app(backend, state, refresh_s=3, control=publisher))
        errors: list[str] = []
        with sync_playwright() as pw:
            browser = launch(pw)
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 1000}, locale="zh-CN")
                page.on("pageerror", lambda exc: errors.append(str(exc)))
                login(page, url, operator, "zh")
                page.click("#tab-hunts")
                expect(page.locator("#hunt-form")).to_be_visible()
                expect(page.locator("#hunt-list")).to_contain_text("尚无排查任务")
                assert page.locator("#hunt-scope").input_value() == f"enterprise:{ent}"
                # a pasted rule that does not load is refused with the reason, nothing sent
                page.fill("#hunt-text", "title: no detection\nlogsource: {product: ics}\n")
                page.click("#hunt-start")
                expect(page.locator("#resp-error")).to_contain_text("does not load")
                assert not state.hunts()
                page.fill("#hunt-text", "")
                page.select_option("#hunt-rule", RULE_ID)
                page.select_option("#hunt-range", "0")  # all history: the capture is old
                shot(page, out_dir, "1-start-zh")
                page.click("#hunt-start")
                page.wait_for_url("**#hunt=*")
                hunt_id = page.url.split("#hunt=")[1]
                row = page.locator(f'#hunt-sites tr[data-sensor="{sensor}"]')
                expect(row).to_have_attribute("data-state", "done", timeout=180_000)
                expect(row).to_contain_text(f"{stored} / {stored}")
                expect(row).to_contain_text("已完成")
                for name in silent:  # registered, not running: nothing back yet
                    expect(page.locator(f'#hunt-sites tr[data-sensor="{name}"]')).to_have_attribute(
                        "data-state", "requested"
                    )
                alerts = page.locator("#hunt-alerts tbody tr[data-alert]")
                expect(alerts).to_have_count(len(expected), timeout=60_000)
                got = sorted(
                    alerts.nth(i).get_attribute("data-alert") for i in range(len(expected))
                )
                assert got == sorted(a["event.id"] for a in expected)
                expect(page.locator("#hunt-kpis")).to_contain_text(str(len(expected)))
                shot(page, out_dir, "2-done-zh")
                page.click("#lang")
                expect(row).to_contain_text("done")
                expect(page.locator("#hunt-sites")).to_contain_text("requested")
                shot(page, out_dir, "3-done-en")
                alerts.first.click()
                expect(page.locator("#alert-title")).to_be_visible()
                expect(page.locator("#alert-facts")).to_contain_text(sensor)
                page.click("#tab-hunts")
                expect(page.locator(f'#hunt-list tr[data-hunt="{hunt_id}"]')).to_be_visible()
                shot(page, out_dir, "4-list-en")
                # the enterprise's viewer follows it, and may not start one
                page2 = browser.new_page(viewport={"width": 1400, "height": 900}, locale="zh-CN")
                page2.on("pageerror", lambda exc: errors.append(str(exc)))
                login(page2, url, viewer, "en")
                page2.goto(f"{url}/#hunts=enterprise:{ent}")
                expect(page2.locator("#hunt-readonly")).to_be_visible()
                expect(page2.locator(f'#hunt-list tr[data-hunt="{hunt_id}"]')).to_be_visible()
            finally:
                browser.close()
        assert not errors, errors
        # the API: a viewer cannot start, another enterprise cannot see or hunt over this one
        with TestClient(create_app(backend, state, control=publisher)) as client:

            def call(method: str, path: str, token: str, **kw):
                return client.request(
                    method, path, headers={"Authorization": f"Bearer {token}"}, **kw
                )

            body = {"scope": f"enterprise:{ent}", "rule_ids": [RULE_ID]}
            assert call("POST", "/api/hunts", viewer, json=body).status_code == 403
            assert call("POST", "/api/hunts", other, json=body).status_code == 404
            assert call("GET", f"/api/hunts/{hunt_id}", other).status_code == 404
            assert call("GET", "/api/hunts", other).json()["hunts"] == []
            r = call("GET", f"/api/alerts?hunt={hunt_id}", other)
            assert r.status_code == 200 and r.json()["total"] == 0
            both = dict(body, rule_text="title: x")
            assert call("POST", "/api/hunts", operator, json=both).status_code == 400
            detail = call("GET", f"/api/hunts/{hunt_id}", viewer).json()
            assert detail["states"]["done"] == 1 and detail["states"]["requested"] == len(silent)
            assert detail["new"] == len(expected) and detail["events"] == stored
        audit = [a for a in state.audit_trail() if a["action"] == "hunt-request"]
        assert [a["actor"] for a in audit] == ["plant-operator"]
        sense.send_signal(signal.SIGINT)
        _, err = sense.communicate(timeout=60)
        assert sense.returncode == 0, err[-3000:]
        assert "Traceback" not in err
    finally:
        if server is not None:
            server.should_exit = True
        for proc in procs:
            stop(proc)
        publisher.close()
        backend.close()
        state.close()
        drop_pipe(pipe)
