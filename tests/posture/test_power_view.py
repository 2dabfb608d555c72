"""The posture view of a power site: DNP3 and IEC 104 captures made with real stacks
(pcaps/dnp3, pcaps/iec104) decoded by the sensor into the embedded store (rollups, alerts,
assets), then the API's controls table and telecontrol stations, and the dashboard showing
them in headless Chromium (screenshots in the test's out_dir)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from detectors.sigma import SigmaEngine
from pipeline.store import Store
from posture.app import create_app
from posture.orgfile import parse_org
from posture.state import PostureState
from sensor.engine import Engine, EngineConfig
from sensor.events import iso_timestamp
from sensor.rollups import Rollups
from sensor.timestamps import parse_timestamp
from tests.support import PCAPS
from tests.support.browser import launch, need_browser, serve

CAPTURES = [
    PCAPS / "dnp3" / "dnp3_operations.pcap",
    PCAPS / "dnp3" / "dnp3_attack_new_master.pcap",
    PCAPS / "iec104" / "iec104_operations.pcap",
    PCAPS / "iec104" / "iec104_attack_setpoint.pcap",
]
REGISTRY = {
    "province": {"id": "p", "name": "Province", "name_zh": "省"},
    "cities": [
        {
            "id": "c1",
            "name": "City",
            "name_zh": "市",
            "enterprises": [
                {
                    "id": "e1",
                    "name": "Grid Co",
                    "name_zh": "电网公司",
                    "industry": "power",
                    "criticality": 3,
                    "sites": [{"id": "s1", "name": "Substation 1", "sensors": ["n1"]}],
                }
            ],
        }
    ],
}
TIME_FIELDS = ("@timestamp", "asset.first_seen", "asset.last_seen")


def _shift(doc: dict[str, Any], by: float) -> dict[str, Any]:
    """The document moved ``by`` seconds (times as text or as numbers), so that the captures'
    traffic falls in the dashboard's last hours whatever day the test runs."""
    out = dict(doc)
    for key in TIME_FIELDS:
        value = out.get(key)
        if value is None:
            continue
        moved = (parse_timestamp(value) or 0.0) + by
        out[key] = iso_timestamp(moved) if isinstance(value, str) else moved
    return out


def _sensor_output() -> list[tuple[str, dict[str, Any]]]:
    """What a sensor at site s1 sends for the captures: rollups, alerts, assets."""
    engine = Engine(EngineConfig(site="s1", observer="n1", organization="e1"))
    rollups = Rollups(engine.ctx)
    sigma = SigmaEngine.load(None)
    docs: list[tuple[str, dict[str, Any]]] = []
    for ev in engine.replay(CAPTURES):
        docs += [("rollup", d) for d in rollups.add(ev)]
        docs += [("alert", a) for a in sigma.process(ev)]
    docs += [("rollup", d) for d in rollups.flush()]
    docs += [("alert", a) for a in sigma.flush()]
    docs += [("asset", a) for a in engine.changed_assets()]
    latest = max(parse_timestamp(d["@timestamp"]) or 0.0 for _, d in docs)
    by = time.time() - 600 - latest
    return [(kind, _shift(d, by)) for kind, d in docs]


@pytest.fixture(scope="module")
def power(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, str, Any]]:
    folder = tmp_path_factory.mktemp("power")
    store = Store.open(folder / "s.db")
    for kind, doc in _sensor_output():
        store.write(kind, doc)
    store.flush()
    state = PostureState(folder / "p.db")
    state.import_org(parse_org(REGISTRY, "test"))
    token = state.create_token("analyst", "province-analyst", None)
    app = create_app(store, state, refresh_s=5)
    yield TestClient(app), token, app
    store.close()


def test_controls_and_stations_from_the_sensor(power: tuple[TestClient, str, Any]) -> None:
    client, token, _app = power
    h = {"Authorization": f"Bearer {token}"}
    traffic = client.get("/api/traffic", params={"hours": 2, "top": 50}, headers=h).json()
    controls = {
        (r["protocol"], r["operation"], r["function"], r["client"]): r["transactions"]
        for r in traffic["controls"]
    }
    # the DNP3 master's select / operate / direct operate, the new host's direct operate, the
    # IEC 104 commands and set points, the clock writes; no read, no session function
    assert controls[("dnp3", "control", "select", "127.0.8.2")] >= 2
    assert controls[("dnp3", "control", "operate", "127.0.8.2")] >= 2
    assert controls[("dnp3", "control", "direct_operate", "127.0.8.66")] >= 1
    assert controls[("iec104", "control", "single_command", "127.0.9.2")] >= 2
    assert controls[("iec104", "write", "set_point_short_float", "127.0.9.2")] >= 2
    assert {op for _, op, _, _ in controls} <= {"control", "write", "program"}
    assert all(r["server"] in ("127.0.8.10", "127.0.9.10") for r in traffic["controls"])

    dnp3 = client.get("/api/assets", params={"role": "dnp3-server"}, headers=h).json()
    iec104 = client.get("/api/assets", params={"role": "iec104-server"}, headers=h).json()
    (outstation,) = dnp3["items"]
    assert outstation["asset"]["dnp3"]["link_addresses"] == [10]
    assert outstation["ics"]["device"]["product"] == "RTU-560 Feeder"
    (station,) = iec104["items"]
    assert station["asset"]["iec104"]["common_addresses"] == [1, 2]


def test_dashboard_shows_the_power_site(power: tuple[TestClient, str, Any], out_dir: Path) -> None:
    need_browser()
    from playwright.sync_api import expect, sync_playwright

    _client, token, app = power
    server, thread, url = serve(app)
    errors: list[str] = []
    try:
        with sync_playwright() as pw:
            browser = launch(pw)
            try:
                page = browser.new_page(viewport={"width": 1600, "height": 1400}, locale="zh-CN")
                page.on("pageerror", lambda exc: errors.append(str(exc)))
                page.goto(f"{url}/")
                page.fill("#token", token)
                page.click("#login-form button[type=submit]")
                expect(page.locator("#overview")).to_be_visible()

                controls = page.locator("#controls tbody")
                expect(controls).to_contain_text("DNP3（分布式网络规约）")
                expect(controls).to_contain_text("IEC 104（电力远动规约）")
                expect(controls).to_contain_text("单点命令")
                expect(controls).to_contain_text("设定值（短浮点）")
                stations = page.locator("#stations tbody tr")
                expect(stations).to_have_count(2)
                expect(stations.nth(0)).to_contain_text("链路地址 10")
                expect(stations.nth(0)).to_contain_text("Example Energy RTU-560 Feeder 3.1.4")
                expect(stations.nth(1)).to_contain_text("公共地址 1, 2")
                expect(page.locator("#operations")).to_contain_text("控制")
                alerts = page.locator("#alerts tbody")
                expect(alerts).to_contain_text("DNP3")
                page.screenshot(path=str(out_dir / "power-zh.png"), full_page=True)

                page.click("#lang")
                expect(controls).to_contain_text("single command")
                expect(stations.nth(0)).to_contain_text("link 10")
                expect(stations.nth(1)).to_contain_text("CA 1, 2")
                page.screenshot(path=str(out_dir / "power-en.png"), full_page=True)

                # a station opens its asset page: the addresses it answers for
                stations.nth(0).click()
                expect(page.locator("#asset-title")).to_have_text("s1:127.0.8.10")
                facts = page.locator(".card", has=page.locator("#asset-title")).locator(".facts")
                expect(facts).to_contain_text("DNP3 link addresses")
                expect(facts).to_contain_text("Example Energy RTU-560 Feeder")
                page.screenshot(path=str(out_dir / "power-asset.png"), full_page=True)
            finally:
                browser.close()
    finally:
        server.should_exit = True
        thread.join(timeout=10)
    assert not errors, errors
