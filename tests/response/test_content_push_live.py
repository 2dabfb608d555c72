"""A content push from end to end, through the real Kafka and a real running sensor.

A real sensor (``icsmon sense`` on the loopback port, with the province's public key) ships to
the real Kafka; ``icsmon index`` puts what comes back into the real Elasticsearch. Before
anything is pushed, a pymodbus HMI polls a pymodbus server: no watchlist alert. The province
puts the HMI's address on the watchlist and, in the dashboard (headless Chromium), pushes the
content to the plant's enterprise: one signed ``content.update`` on the control topic keyed by
the sensor; the running sensor applies it without a restart and answers on the response topic;
the page follows the push to "applied". The HMI's next connection raises a watchlist alert
with the pushed version; the sensor's next heartbeat carries the version and the fleet panel
no longer lists it as behind. An enterprise user sees no push button and is refused by the
API; a city analyst cannot push outside its city.

Screenshots (zh and en) go to tests/out/test_a_pushed_watchlist_reaches_a_running_sensor/.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest

from posture import seed
from posture.orgfile import parse_org
from posture.state import PostureState
from tests.support.browser import launch, login, need_browser, serve, shot
from tests.support.content_push import control_plane
from tests.support.modbus_live import free_port, run_traffic
from tests.support.pipeline import wait_for
from tests.support.processes import start_sensor_and_indexer, stop

pytestmark = [pytest.mark.services, pytest.mark.live, pytest.mark.slow]

HMI = "127.0.0.67"  # the HMI's own loopback address: the capture filter's
PUSHED_RULE_ID = "5b0c2a8e-7d3f-4e51-9a6b-2c1d0e9f8a71"
PUSHED_RULE = f"""title: Watchlisted HMI reads holding registers
id: {PUSHED_RULE_ID}
status: test
description: pushed by the province while the sensor runs
author: icsmon
logsource:
  product: ics
  service: modbus
detection:
  selection:
    modbus.function_code: 3
    source.ip: {HMI}
  condition: selection
level: medium
"""
UNRUNNABLE_ID = "9c1d2e3f-4a5b-4c6d-8e7f-0a1b2c3d4e5f"
UNRUNNABLE_RULE = f"""title: Look-ahead the sensor's regular expressions cannot run
id: {UNRUNNABLE_ID}
status: test
logsource:
  product: ics
  service: modbus
detection:
  selection:
    source.ip|re: '^127\\.0\\.0\\.(?!1$)'
  condition: selection
level: high
"""


async def poll(client: Any) -> None:
    import asyncio

    for _ in range(10):
        await client.read_holding_registers(0, count=10, device_id=1)
        await asyncio.sleep(0.05)


def test_a_pushed_watchlist_reaches_a_running_sensor(tmp_path: Path, out_dir: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("the live sensor needs root (a packet socket on the loopback port)")
    need_browser()
    registry = seed.make_registry(n_enterprises=6, n_sites=6, cities=3, seed=12)
    rows = seed.registry_sites(registry)
    row = next(r for r in rows if r["enterprise"] == "ent-0001")
    elsewhere = next(r for r in rows if r["city"] != row["city"])
    with control_plane(tmp_path) as plane:
        pushed_watchlist_and_rules(plane, tmp_path, out_dir, registry, row, elsewhere)


def pushed_watchlist_and_rules(
    plane: Any, tmp_path: Path, out_dir: Path, registry: Any, row: dict, elsewhere: dict
) -> None:
    from fastapi.testclient import TestClient
    from playwright.sync_api import expect, sync_playwright

    from pipeline.es import EsQueryBackend
    from pipeline.query import AlertFilter
    from posture.app import create_app
    from response.db import Viewer
    from response.service import Response

    site, sensor, city = row["site"], row["sensors"][0], row["city"]
    pipe, publisher = plane.pipe, plane.publisher
    env = dict(pipe.env, ICSMON_SENSOR_HEARTBEAT_INTERVAL="5")
    port = free_port()
    procs: list[subprocess.Popen] = []
    server = None
    backend = EsQueryBackend(pipe.cfg)
    state = PostureState(tmp_path / "posture.db")
    desk = Response(state.path, backend)
    try:
        sense = start_sensor_and_indexer(
            [
                "--iface",
                "lo",
                "--bpf",
                f"host {HMI} and tcp port {port}",
                "--port",
                f"{port}=modbus",
                *plane.sense_args(site, sensor, row["enterprise"]),
                "--format",
                "jsonl",
            ],
            env,
            procs,
        )

        def heartbeats() -> list[dict]:
            assert sense.poll() is None, sense.communicate()[1][-3000:]
            backend.store.refresh()
            return backend.latest("heartbeat", AlertFilter(sites=[site]), size=10)

        # the sensor is up and runs no content yet (version 0, its empty watchlist)
        wait_for("the sensor's first heartbeat", lambda: bool(heartbeats()), limit_s=120)
        assert heartbeats()[0]["icsmon.sensor.content_version"] == "0"

        run_traffic(port, HMI, poll)  # before the push: the HMI is on no list

        state.import_org(parse_org(registry, "test registry"))
        province = state.create_token("soc", "province-analyst", None)
        operator = state.create_token("plant-engineer", "enterprise-operator", "ent-0001")
        other_city = state.create_token(
            "city-desk", "city-analyst", elsewhere["city"]
        )  # not the plant's city
        desk.campaigns.watch(
            Viewer("soc", "province-analyst", None, None), "ipv4-addr", HMI, "manual", "test"
        )
        version = desk.content.version()
        assert version >= 1
        app = create_app(backend, state, refresh_s=3, response=desk, control=publisher)
        server, thread, url = serve(app)
        errors: list[str] = []
        with sync_playwright() as pw:
            browser = launch(pw)
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 1100}, locale="zh-CN")
                page.on("pageerror", lambda exc: errors.append(str(exc)))
                login(page, url, province, "zh")
                page.goto(f"{url}/#view=warnings")
                expect(page.locator("#content-push")).to_contain_text(f"v{version}")
                expect(page.locator("#fleet-behind")).to_contain_text(sensor)  # runs v0
                page.select_option("#push-scope", "enterprise:ent-0001")
                page.click("#push-send")
                expect(page.locator("#resp-status")).to_contain_text("已下发到探针")
                target = page.locator(f'#push-sensors tr[data-sensor="{sensor}"]')
                expect(target).to_have_count(1)
                shot(page, out_dir, "1-pushed-zh")
                # the sensor applies it and answers; the indexer stores the answer
                expect(target).to_have_attribute("data-state", "applied", timeout=120_000)
                expect(target).to_contain_text("已生效")
                expect(target).to_contain_text(f"v{version}")

                # the HMI's next connection: a watchlist alert, from the content pushed
                run_traffic(port, HMI, poll)

                def watch_alerts() -> list[dict]:
                    backend.store.refresh()
                    found = backend.search_alerts(AlertFilter(sites=[site], limit=100))[1]
                    return [a for a in found if a.get("rule.id") == "icsmon-watchlist"]

                wait_for("the watchlist alert in Elasticsearch", watch_alerts, limit_s=120)
                alerts = watch_alerts()
                assert {a["source.ip"] for a in alerts} == {HMI}
                assert {a["icsmon.content.version"] for a in alerts} == {version}
                assert {a["observer.name"] for a in alerts} == {sensor}
                # one connection after the push, so one flow alerted (the earlier one was not)
                assert len({a["network.community_id"] for a in alerts}) == 1

                # the heartbeat carries the version; the fleet panel no longer lists it behind
                wait_for(
                    "a heartbeat with the pushed version",
                    lambda: heartbeats()[0]["icsmon.sensor.content_version"] == str(version),
                    limit_s=60,
                )
                page.reload()
                expect(page.locator("#content-fleet")).to_be_visible()
                expect(page.locator("#fleet-behind")).not_to_contain_text(sensor)
                shot(page, out_dir, "2-applied-zh")
                page.click("#lang")
                expect(page.locator("#content-push")).to_contain_text("Push current content")
                expect(target).to_contain_text("applied")
                shot(page, out_dir, "3-applied-en")

                # an enterprise user: no push button, and the route refuses it
                login(page, url, operator, "zh")
                page.goto(f"{url}/#view=warnings")
                expect(page.locator("#content-fleet")).to_be_visible()
                expect(page.locator("#push-send")).to_have_count(0)
            finally:
                browser.close()
        assert not errors, errors
        with TestClient(app) as client:

            def post(token: str, scope: str) -> Any:
                return client.post(
                    "/api/content/push",
                    json={"scope": scope},
                    headers={"Authorization": f"Bearer {token}"},
                )

            assert post(operator, "site:" + site).status_code == 403
            assert post(other_city, "enterprise:ent-0001").status_code == 404
            assert post(other_city, f"city:{city}").status_code == 404
            listed = client.get(
                "/api/content/pushes", headers={"Authorization": f"Bearer {province}"}
            ).json()
            push = listed["items"][0]
            assert push["counts"]["applied"] == push["total"] >= 1
            mine = next(s for s in push["sensors"] if s["sensor"] == sensor)
            assert mine["state"] == "applied" and mine["running"] == version
            fleet = client.get(
                "/api/content/fleet", headers={"Authorization": f"Bearer {province}"}
            ).json()
            assert next(s for s in fleet["sensors"] if s["name"] == sensor)["status"] == "current"

            # Sigma rules in the package take effect at the running sensor too
            soc = {"Authorization": f"Bearer {province}"}

            def push_rule(text: str) -> dict[str, Any]:
                r = client.post("/api/content/rules", headers=soc, json={"yaml": text})
                assert r.status_code == 201, r.text
                r = client.post("/api/content/push", headers=soc, json={"scope": f"site:{site}"})
                assert r.status_code == 201, r.text
                push_id = r.json()["id"]

                def answered() -> dict[str, Any] | None:
                    got = client.get(f"/api/content/pushes/{push_id}", headers=soc).json()
                    state = got["sensors"][0]
                    return state if state["state"] in ("applied", "refused") else None

                wait_for("the sensor's answer to the push", answered, limit_s=120)
                return answered() or {}

            def rule_alerts() -> list[dict]:
                backend.store.refresh()
                found = backend.search_alerts(AlertFilter(sites=[site], limit=200))[1]
                return [a for a in found if a.get("rule.id") == PUSHED_RULE_ID]

            got = push_rule(PUSHED_RULE)
            assert got["state"] == "applied" and got["running"] == desk.content.version(), str(got)
            # the answer comes when the new engine is compiled; the run puts it in place at
            # its next tick (about a second; more on a loaded machine): the HMI polls again
            # until a poll is seen by the pushed rule
            for attempt in range(8):
                run_traffic(port, HMI, poll)
                try:
                    wait_for("the pushed rule's alert", rule_alerts, limit_s=15)
                    break
                except AssertionError:
                    if attempt == 7:
                        raise
            assert {a["source.ip"] for a in rule_alerts()} == {HMI}
            # a rule this sensor's loader cannot run (pySigma at the province took it): the
            # package is refused with the reason; the running rules and version stay
            ran = desk.content.version()
            got = push_rule(UNRUNNABLE_RULE)
            assert got["state"] == "refused", got
            assert "look-around" in got["reason"] and UNRUNNABLE_ID in got["reason"]
            assert got["running"] == ran
            before = {a["network.community_id"] for a in rule_alerts()}
            run_traffic(port, HMI, poll)
            wait_for(
                "the pushed rule still firing",
                lambda: {a["network.community_id"] for a in rule_alerts()} - before,
                limit_s=120,
            )
        # the push is in the response audit trail with who pushed
        trail = [e for e in desk.db.rows("SELECT actor, action, object_kind FROM response_audit")]
        assert {"actor": "soc", "action": "push", "object_kind": "content-push"} in trail

        # the sensor's counters: one push applied, nothing refused; the package kept on disk
        sense.send_signal(signal.SIGINT)
        _, err = sense.communicate(timeout=60)
        assert sense.returncode == 0, err[-3000:]
        assert "Traceback" not in err, err[-6000:]
        counters = dict(re.findall(r"content\.(\w+)\s*│\s*(\d+)", err))
        assert counters == {"applied": "2", "stale": "0", "invalid": "1", "rule_reloads": "1"}
        refused = re.findall(r"control\.refused_\w+\s*│\s*(\d+)", err)
        assert refused and set(refused) == {"0"}, err[-2000:]
        from detectors.content import load_package

        assert load_package(tmp_path / "sensor.content.json").version == ran
        # the rule is kept for the next start; the refused one was never installed
        kept = sorted(p.name for p in (tmp_path / "sensor.rules" / "central").glob("*.yml"))
        assert kept == [f"{PUSHED_RULE_ID}.yml"]
    finally:
        if server is not None:
            server.should_exit = True
        for proc in procs:
            stop(proc)
        desk.close()
        backend.close()
        state.close()
