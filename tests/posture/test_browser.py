"""The dashboard in headless Chromium (Debian's package, driven by Playwright): sign in, see
the province's cities as tiles, click down to a city, then an alert, acknowledge it, switch
language. Screenshots go to the test's out_dir."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from posture import seed
from tests.support.browser import launch, need_browser
from tests.support.posture import Env, make_env


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Env, str]]:
    import uvicorn

    from posture.app import create_app

    env = make_env(tmp_path_factory.mktemp("browser"), n_alerts=2500)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = uvicorn.Config(
        create_app(env.backend, env.state, refresh_s=5),
        host="127.0.0.1",
        port=port,
        log_level="warning",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:  # start-up, not a timed assertion
        if not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    yield env, f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)
    env.close()


def test_dashboard_click_down_to_an_alert(served: tuple[Env, str], out_dir: Path) -> None:
    need_browser()
    from playwright.sync_api import expect, sync_playwright

    env, url = served
    errors: list[str] = []
    with sync_playwright() as pw:
        browser = launch(pw)
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1200}, locale="zh-CN")
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(url + "/")
            expect(page.locator("#login")).to_be_visible()
            page.fill("#token", "icsm_not-a-token")
            page.click("#login-form button[type=submit]")
            expect(page.locator("#login-error")).to_have_text("令牌无效")
            page.fill("#token", env.tokens["province"])
            page.click("#login-form button[type=submit]")

            # Province: one tile per city, Chinese names, coloured by rating.
            tiles = page.locator("#tiles .tile")
            expect(tiles).to_have_count(len(env.registry["cities"]))
            expect(page.locator("#tiles")).to_contain_text("济南")
            expect(page.locator("header .title")).to_have_text("工业互联网安全态势感知")
            summary = env.client.get("/api/summary", headers=env.h("province")).json()
            expect(page.locator("#kpis")).to_contain_text(f"{summary['alerts']['total']:,}")
            assert page.locator("#trend canvas").count() == 1
            worst = summary["children"][0]
            first = tiles.nth(0)
            expect(first).to_have_attribute("data-scope", f"city:{worst['id']}")
            expect(first).to_contain_text(worst["name_zh"])
            expect(first).to_have_class(f"tile {worst['rating']}")
            page.wait_for_timeout(600)  # let the charts finish their entry animation
            page.screenshot(path=str(out_dir / "1-province.png"), full_page=True)

            # Live refresh: a new alert reaches the page without a reload.
            site = seed.registry_sites(env.registry)[0]
            fresh, _ = seed.make_alert(site, 0, time.time() - 1, seed.RULES[4], 90_000, seed=3)
            env.write([("alert", fresh)])
            expect(page.locator("#kpis")).to_contain_text(
                f"{summary['alerts']['total'] + 1:,}", timeout=30_000
            )
            expect(page.locator("#alerts")).to_contain_text(fresh["rule.name"])
            # The new critical alert may reorder the tiles: follow the page's current worst.
            worst = env.client.get("/api/summary", headers=env.h("province")).json()["children"][0]
            first = page.locator(f'#tiles .tile[data-scope="city:{worst["id"]}"]')
            expect(first).to_contain_text(worst["name_zh"])

            # Click down to the city: tiles become its enterprises, the breadcrumb follows.
            first.click()
            expect(page.locator("#crumbs a.current")).to_contain_text(worst["name_zh"])
            city = env.client.get(
                "/api/summary", params={"scope": f"city:{worst['id']}"}, headers=env.h("province")
            ).json()
            expect(tiles).to_have_count(len(city["children"]))
            expect(tiles.nth(0)).to_have_attribute(
                "data-scope", f"enterprise:{city['children'][0]['id']}"
            )
            page.screenshot(path=str(out_dir / "2-city.png"), full_page=True)

            # ... then to an alert from the latest-alerts table.
            row = page.locator("#alerts tbody tr").first
            alert_id = row.get_attribute("data-alert")
            row.click()
            expect(page.locator("#alert-view")).to_be_visible()
            detail = env.client.get(f"/api/alerts/{alert_id}", headers=env.h("province")).json()
            expect(page.locator("#alert-title")).to_contain_text(detail["rule"]["name"])
            expect(page.locator("#alert-facts")).to_contain_text(detail["source"]["ip"])
            expect(page.locator("#evidence tbody tr")).to_have_count(
                len(detail["evidence"]["events"])
            )
            expect(page.locator("#alert-status")).to_have_text("待处置")
            page.fill("#wf-note", "已通知企业")
            page.click("#wf-ack")
            expect(page.locator("#alert-status")).to_have_text("已确认")
            expect(page.locator("#audit")).to_contain_text("acknowledge")
            expect(page.locator("#workflow")).to_contain_text("已通知企业")
            page.screenshot(path=str(out_dir / "3-alert.png"), full_page=True)
            assert env.state.alert_state(alert_id)["status"] == "acknowledged"

            # English labels from the same translation table.
            page.click("#lang")
            expect(page.locator("#alert-status")).to_have_text("Acknowledged")
            page.click("#alert-back")
            expect(page.locator("#overview")).to_be_visible()
            expect(page.locator("#children-title")).to_have_text("Enterprises")
            page.screenshot(path=str(out_dir / "4-city-en.png"), full_page=True)

            # Alerts per protocol, and the alert list filtered to one protocol (labels from
            # the translation table: every protocol the sensor decodes is offered)
            assert page.locator("#protocols canvas").count() == 1
            offered = page.locator("#protocol-filter")
            for label in ("All protocols", "Modbus/TCP", "EtherNet/IP", "DNP3", "IEC 60870-5-104"):
                expect(offered).to_contain_text(label)
            page.select_option("#protocol-filter", "s7comm")
            protocols = page.locator("#alerts tbody tr td:nth-child(6)")
            # the table is redrawn after the filter's request: wait until no other protocol is
            # listed (the first row may already be S7comm before the redraw)
            expect(protocols.filter(has_not_text="S7comm")).to_have_count(0)
            expect(protocols.first).to_have_text("S7comm")
            assert set(protocols.all_text_contents()) == {"S7comm"}
            page.click("#lang")
            expect(protocols.first).to_have_text("S7comm（西门子）")
            page.screenshot(path=str(out_dir / "5-protocol-filter.png"), full_page=True)
            page.select_option("#protocol-filter", "")  # all protocols again
            expect(page.locator("#protocol-filter")).to_have_value("")
        finally:
            browser.close()
    assert not errors, errors


def test_enterprise_user_sees_only_its_sites(served: tuple[Env, str], out_dir: Path) -> None:
    need_browser()
    from playwright.sync_api import expect, sync_playwright

    env, url = served
    with sync_playwright() as pw:
        browser = launch(pw)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(url + "/")
            page.evaluate("localStorage.setItem('icsmon.lang', 'en')")
            page.reload()
            page.fill("#token", env.tokens["ent_a_view"])
            page.click("#login-form button[type=submit]")
            tiles = page.locator("#tiles .tile")
            mine = env.sites_of("ent_a_view")
            expect(tiles).to_have_count(len(mine))
            scopes = {tiles.nth(i).get_attribute("data-scope") for i in range(len(mine))}
            assert scopes == {f"site:{s}" for s in mine}
            expect(page.locator("#children-title")).to_have_text("Sites")
            page.locator("#alerts tbody tr").first.click()
            expect(page.locator("#workflow")).to_contain_text("Read-only token")
            assert page.locator("#wf-ack").count() == 0
            page.screenshot(path=str(out_dir / "enterprise-viewer.png"), full_page=True)
        finally:
            browser.close()
