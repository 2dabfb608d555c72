"""The assessment views in headless Chromium (Debian's package, driven by Playwright): a
province analyst opens the assessment tab (risk with its parts, coverage, findings by kind,
exposure), answers "who is affected by advisory X" with one click, opens an affected asset,
accepts one of its findings with a reason, downloads the weekly PDF; an enterprise operator
sees only its own enterprise; both languages. Screenshots go to the test's out_dir."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from assessment.catalog import Catalog
from tests.support.browser import launch, need_browser
from tests.support.posture import Env, make_env

CSAF = Path(__file__).resolve().parent / "csaf"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Env, str]]:
    import uvicorn

    from posture.app import create_app

    folder = tmp_path_factory.mktemp("assess-browser")
    env = make_env(folder, n_alerts=1500)
    catalog = Catalog(folder / "served.assessment.db")
    catalog.import_paths([CSAF])
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(env.backend, env.state, refresh_s=3600, catalog=catalog),
            host="127.0.0.1",
            port=port,
            log_level="warning",
        )
    )
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


def _login(page, url: str, token: str) -> None:
    page.goto(url + "/")
    page.fill("#token", token)
    page.click("#login-form button[type=submit]")


def test_assessment_click_through(served: tuple[Env, str], out_dir: Path) -> None:
    need_browser()
    from playwright.sync_api import expect, sync_playwright

    env, url = served
    errors: list[str] = []
    with sync_playwright() as pw:
        browser = launch(pw)
        try:
            page = browser.new_page(
                viewport={"width": 1600, "height": 1300}, locale="zh-CN", accept_downloads=True
            )
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            _login(page, url, env.tokens["province"])
            expect(page.locator("#tab-assessment")).to_have_text("安全评估")
            page.click("#tab-assessment")
            expect(page.locator("#risk-value")).to_be_visible()
            api = env.client.get("/api/assessment", headers=env.h("province")).json()
            expect(page.locator("#risk-value")).to_have_text(str(api["risk"]["risk"]))
            expect(page.locator("#finding-kinds")).to_contain_text("控制网段外可访问工程协议")
            expect(page.locator("#coverage-ratio")).to_contain_text(
                f"须接入 {api['coverage']['required']}"
            )
            first = api["exposure"]["advisories"][0]
            expect(page.locator("#exposure tbody tr").first).to_have_attribute(
                "data-advisory", first["advisory"]
            )
            page.screenshot(path=str(out_dir / "1-assessment-province-zh.png"), full_page=True)

            # who is affected by advisory X: one click from the exposure table
            page.locator(f'#exposure tr[data-advisory="{first["advisory"]}"]').click()
            expect(page.locator("#advisory-title")).to_contain_text(first["advisory"])
            who = env.client.get(
                f"/api/advisories/{first['advisory']}", headers=env.h("province")
            ).json()
            expect(page.locator("#affected-assets tbody tr")).to_have_count(len(who["items"]))
            expect(page.locator("#advisory-affected")).to_contain_text(str(who["affected"]))
            page.screenshot(path=str(out_dir / "2-advisory-who-is-affected.png"), full_page=True)

            # the asset page: findings, advisories, risk; accept a finding with a reason
            target = who["items"][0]["asset"]["id"]
            page.locator(f'#affected-assets tr[data-asset="{target}"]').click()
            expect(page.locator("#asset-title")).to_have_text(target)
            expect(
                page.locator(f'#asset-advisories tr[data-advisory="{first["advisory"]}"]')
            ).to_have_count(1)
            row = page.locator("#asset-findings tbody tr").first
            kind = row.get_attribute("data-kind")
            row.locator(".finding-accept").click()
            expect(page.locator("#resp-error")).to_have_text("请填写接受理由")
            row.locator(".accept-reason").fill("隔离网段，计划停机时整改")
            row.locator(".finding-accept").click()
            expect(page.locator(f'#asset-findings tr[data-kind="{kind}"]')).to_contain_text(
                "已接受"
            )
            page.screenshot(path=str(out_dir / "3-asset-page.png"), full_page=True)
            fid = page.locator(f'#asset-findings tr[data-kind="{kind}"]').get_attribute(
                "data-finding"
            )
            # the served app keeps its own catalog: ask it, not env.client
            states = httpx.get(
                f"{url}/api/findings?state=accepted", headers=env.h("province")
            ).json()
            assert fid in [f["finding"]["id"] for f in states["items"]]

            # the weekly report downloads as a PDF
            page.click("#asset-back")
            with page.expect_download() as dl:
                page.click("#report-weekly-pdf")
            saved = out_dir / "weekly.pdf"
            dl.value.save_as(saved)
            assert saved.read_bytes().startswith(b"%PDF")

            # English
            page.click("#lang")
            expect(page.locator("#tab-assessment")).to_have_text("Assessment")
            expect(page.locator("#finding-kinds")).to_contain_text("Engineering protocol reachable")
            page.screenshot(path=str(out_dir / "4-assessment-province-en.png"), full_page=True)

            # an enterprise operator: its own enterprise only
            ent = browser.new_page(viewport={"width": 1600, "height": 1100}, locale="zh-CN")
            ent.on("pageerror", lambda exc: errors.append(str(exc)))
            _login(ent, url, env.tokens["ent_a_op"])
            ent.click("#tab-assessment")
            expect(ent.locator("#risk-value")).to_be_visible()
            mine = env.client.get("/api/assessment", headers=env.h("ent_a_op")).json()
            expect(ent.locator("#top-assets tbody tr.clickable")).to_have_count(
                len(mine["top_assets"])
            )
            for r in mine["top_assets"]:
                assert r["labels.site"].startswith("site-0001-")
            ent.screenshot(path=str(out_dir / "5-assessment-enterprise.png"), full_page=True)
        finally:
            browser.close()
    assert errors == []
