"""Evidence on demand from end to end, as an enterprise viewer sees it: a real sensor
(``icsmon sense`` on the loopback port) watches a pymodbus HMI write to a pymodbus server and
ships the alert through the real Kafka; ``icsmon index`` puts it in the real Elasticsearch;
in the dashboard (headless Chromium) the viewer opens the alert and clicks "fetch evidence";
the request travels signed through the control topic to the sensor, which answers from its
own store and its alert capture; the indexer stores the answer; the page shows the state,
the flow's events and a pcap to download, which is the sensor's capture byte for byte.

Screenshots (zh and en) go to tests/out/test_a_viewer_fetches_the_evidence_of_its_alert/.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest

from pipeline import control
from posture import seed
from posture.orgfile import parse_org
from posture.state import PostureState
from tests.support.browser import launch, login, need_browser, serve, shot
from tests.support.modbus_live import free_port, run_traffic
from tests.support.pipeline import drop_pipe, make_pipe, require_services, wait_for
from tests.support.processes import start_sensor_and_indexer, stop, wait_first_heartbeat

pytestmark = [pytest.mark.services, pytest.mark.live, pytest.mark.slow]

HMI = "127.0.0.66"  # the HMI's own loopback address: the capture filter's


def test_a_viewer_fetches_the_evidence_of_its_alert(tmp_path: Path, out_dir: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("the live sensor needs root (a packet socket on the loopback port)")
    need_browser()
    require_services()
    from playwright.sync_api import expect, sync_playwright

    from pipeline.control import Signer
    from pipeline.control_kafka import ControlPublisher
    from pipeline.es import EsQueryBackend
    from pipeline.indexer import setup
    from posture.app import create_app

    registry = seed.make_registry(n_enterprises=6, n_sites=6, cities=3, seed=12)
    row = next(r for r in seed.registry_sites(registry) if r["enterprise"] == "ent-0001")
    site, sensor = row["site"], row["sensors"][0]
    control.generate_keys(tmp_path / "province.key", tmp_path / "sensor.pub")
    pipe = make_pipe(tmp_path)
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
                f"host {HMI} and tcp port {port}",
                "--port",
                f"{port}=modbus",
                "--sink",
                "kafka",
                "--control-key",
                str(tmp_path / "sensor.pub"),
                "--site",
                site,
                "--observer",
                sensor,
                "--org",
                row["enterprise"],
                "--format",
                "jsonl",
            ],
            env,
            procs,
        )

        # the sensor is up (its start heartbeat went through Kafka into Elasticsearch)
        wait_first_heartbeat(sense, backend)

        async def hmi(client: Any) -> None:
            import asyncio

            for _ in range(20):  # the usual polling
                await client.read_holding_registers(0, count=10, device_id=1)
                await asyncio.sleep(0.05)
            await client.write_register(10, 4321, device_id=1)  # from a host no one declared
            for _ in range(20):
                await client.read_holding_registers(0, count=10, device_id=1)
                await asyncio.sleep(0.05)

        run_traffic(port, HMI, hmi)

        def alert_indexed() -> list[dict]:
            backend.store.refresh()
            from pipeline.query import AlertFilter

            return backend.search_alerts(AlertFilter(sites=[site], limit=10))[1]

        wait_for("the alert in Elasticsearch", lambda: bool(alert_indexed()), limit_s=120)
        alert = alert_indexed()[0]
        assert alert["source.ip"] == HMI and alert["observer.name"] == sensor
        capture = tmp_path / "sensor.evidence" / f"{alert['event.id']}.pcap"
        wait_for("the sensor's alert capture", capture.exists, limit_s=60)

        state.import_org(parse_org(registry, "test registry"))
        viewer = state.create_token("plant-viewer", "enterprise-viewer", row["enterprise"])
        other = state.create_token("other-plant", "enterprise-operator", "ent-0002")
        server, thread, url = serve(create_app(backend, state, refresh_s=3, control=publisher))
        need_browser()
        errors: list[str] = []
        with sync_playwright() as pw:
            browser = launch(pw)
            try:
                page = browser.new_page(
                    viewport={"width": 1400, "height": 1000}, locale="zh-CN", accept_downloads=True
                )
                page.on("pageerror", lambda exc: errors.append(str(exc)))
                login(page, url, viewer, "zh")
                page.goto(f"{url}/#alert={alert['event.id']}")
                expect(page.locator("#edge-evidence")).to_contain_text("尚未请求证据")
                page.click("#ev-fetch")
                expect(page.locator(".edge-request").first).to_have_attribute(
                    "data-state", "requested", timeout=10_000
                )
                shot(page, out_dir, "1-requested-zh")
                # the sensor answers, the indexer stores it, the page follows the state
                expect(page.locator(".edge-request").first).to_have_attribute(
                    "data-state", "delivered", timeout=120_000
                )
                expect(page.locator(".ev-events")).to_contain_text("127.0.0.66")
                expect(page.locator("#edge-evidence")).to_contain_text("告警抓包")
                shot(page, out_dir, "2-delivered-zh")
                with page.expect_download() as got:
                    page.click(".ev-pcap")
                saved = tmp_path / "downloaded.pcap"
                got.value.save_as(saved)
                assert got.value.suggested_filename.endswith(".pcap")
                page.click("#lang")
                expect(page.locator("#edge-evidence")).to_contain_text("Fetch evidence")
                expect(page.locator(".edge-request").first).to_contain_text("delivered")
                shot(page, out_dir, "3-delivered-en")
            finally:
                browser.close()
        assert not errors, errors
        # the pcap is the sensor's alert capture, byte for byte, and Wireshark reads it
        assert saved.read_bytes() == capture.read_bytes()
        if shutil.which("tshark"):
            out = subprocess.run(
                ["tshark", "-r", str(saved), "-d", f"tcp.port=={port},mbtcp", "-Y", "mbtcp"]
                + ["-T", "fields", "-e", "ip.src"],
                capture_output=True,
                text=True,
                check=True,
            ).stdout.split()
            assert HMI in out
        # the request is in the audit trail with who asked; another tenant cannot see it
        audit = state.audit_trail(alert_id=alert["event.id"])
        assert [a["actor"] for a in audit if a["action"] == "evidence-request"] == ["plant-viewer"]
        from fastapi.testclient import TestClient

        with TestClient(create_app(backend, state, control=publisher)) as client:
            listed = client.get(
                f"/api/alerts/{alert['event.id']}/evidence",
                headers={"Authorization": f"Bearer {viewer}"},
            ).json()["requests"]
            rid = listed[0]["id"]
            assert listed[0]["state"] == "delivered"
            for path in (f"/api/evidence/{rid}", f"/api/evidence/{rid}/pcap"):
                r = client.get(path, headers={"Authorization": f"Bearer {other}"})
                assert r.status_code == 404
        # the sensor's counters: one request handled, nothing refused
        sense.send_signal(signal.SIGINT)
        _, err = sense.communicate(timeout=60)
        assert sense.returncode == 0, err[-3000:]
        assert "Traceback" not in err
        handled = re.search(r"control\.handled\s*│\s*(\d+)", err)
        assert handled and handled.group(1) == "1", err[-2000:]
        refused = re.findall(r"control\.refused_\w+\s*│\s*(\d+)", err)
        assert refused and set(refused) == {"0"}, err[-2000:]
    finally:
        if server is not None:
            server.should_exit = True
        for proc in procs:
            stop(proc)
        publisher.close()
        backend.close()
        state.close()
        drop_pipe(pipe)
