"""The provincial loop end to end in headless Chromium, on real data.

A real attack capture (an unlisted master writing a Modbus setpoint, made with pymodbus; see
pcaps/README.md) is replayed through ``icsmon replay`` into the store at one enterprise's site
-> the analyst groups its alerts into an incident by the policy's grouping rule, records an
impact fact and sees the level and the rule that decided it, with the reporting clock -> writes
and submits a first report with only its first items -> issues a notice to the enterprise ->
the enterprise signs in, acknowledges, starts and answers with evidence -> a clean capture of
the same plant is replayed -> the province sees verification offered from the telemetry with
its data, verifies and closes; the command view and the closure rates follow. Then the same
attack, from an outside address, is replayed at three enterprises in two cities: one campaign,
whose address goes onto the watchlist and out as STIX.

Captures are shifted to the present with editcap (the clock and the verification window run
on ``@timestamp``) and, for the campaign, the attacker's loopback address is rewritten to a
documentation address with tcprewrite: files only, no traffic leaves the machine.
Screenshots go to tests/out/<test>/.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pipeline.store import Store
from posture import seed
from posture.orgfile import parse_org
from posture.state import PostureState
from tests.response.captures import CAPTURES, pushed_sensor, replay, shifted
from tests.support.browser import launch, login, need_browser, serve, shot
from tests.support.content_push import control_plane
from tests.support.pipeline import wait_for

ATTACKER_OUTSIDE = "203.0.113.66"  # TEST-NET-3: only written into a file


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    from posture.app import create_app

    need_browser()
    folder = tmp_path_factory.mktemp("loop")
    registry = seed.make_registry(n_enterprises=20, n_sites=20, cities=16, seed=11)
    rows = seed.registry_sites(registry)
    store_path = folder / "icsmon.db"
    Store.open(store_path).close()
    state = PostureState(folder / "icsmon.posture.db")
    state.import_org(parse_org(registry, "test registry"))
    tokens = {
        "province": state.create_token("soc-analyst", "province-analyst", None),
        "enterprise": state.create_token("plant-engineer", "enterprise-operator", "ent-0001"),
    }
    backend = Store.open(store_path, readonly=True)
    # the dashboard pushes content over the real Kafka, as test_content_push_live.py does
    with control_plane(folder) as plane:
        server, thread, url = serve(
            create_app(backend, state, refresh_s=3, control=plane.publisher)
        )
        yield {
            "url": url,
            "rows": rows,
            "registry": registry,
            "store": store_path,
            "state": state,
            "tokens": tokens,
            "folder": folder,
            "backend": backend,
            "plane": plane,
        }
        server.should_exit = True
        thread.join(timeout=10)
    backend.close()
    state.close()


def test_the_loop_from_attack_to_closure_and_a_campaign(
    world: dict[str, Any], out_dir: Path
) -> None:
    from playwright.sync_api import expect, sync_playwright

    url, rows, folder = world["url"], world["rows"], world["folder"]
    site = next(r for r in rows if r["enterprise"] == "ent-0001")
    attack = shifted(
        CAPTURES / "attack_new_host_write.pcap", folder / "attack.pcap", time.time() - 20 * 60
    )
    replay(attack, world["store"], site)
    errors: list[str] = []
    with sync_playwright() as pw:
        browser = launch(pw)
        try:
            page = browser.new_page(
                viewport={"width": 1500, "height": 1100}, locale="zh-CN", accept_downloads=True
            )
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            login(page, url, world["tokens"]["province"])

            # Incidents: the grouping rule turns the attacker's alerts into one incident.
            page.click("#tab-incidents")
            page.click("#groups-propose")
            expect(page.locator("#groups")).to_contain_text("same-attacker-at-a-site")
            expect(page.locator("#groups")).to_contain_text("127.0.5.66")
            page.click("#groups-apply")
            rows_inc = page.locator("#incidents tbody tr")
            expect(rows_inc).to_have_count(1)
            rows_inc.first.click()
            expect(page.locator("#incident-title")).to_contain_text("#1")
            expect(page.locator("#grade")).to_contain_text("一般")
            expect(page.locator("#clock")).to_contain_text("未达报告级别")

            # An impact fact: graded by the policy, the deciding rule shown.
            page.fill('[data-fact="main_function_outage_hours"]', "3")
            page.click("#facts-save")
            expect(page.locator("#grade .pill.level")).to_have_text("较大")
            expect(page.locator("#grade-rule")).to_contain_text("main-functions-2h")
            expect(page.locator("#grade")).to_contain_text("main_function_outage_hours >= 2.0")
            expect(page.locator("#clock .deadline")).to_have_count(1)
            page.locator('.inc-move[data-to="investigating"]').click()
            expect(page.locator("#incident-state")).to_have_text("调查中")

            # Who works on it, a file and a note, from the dashboard.
            page.fill("#assignees-input", "值班员甲, 取证组")
            page.click("#assignees-save")
            expect(page.locator("#assignees-input")).to_have_value("值班员甲, 取证组")
            page.click("#assign-me")
            expect(page.locator("#assignees-input")).to_have_value("soc-analyst, 值班员甲, 取证组")
            page.click("#attach-upload")  # nothing chosen: a clear message, no request
            expect(page.locator("#resp-error")).to_have_text("请先选择文件")
            evidence_log = folder / "plc-write-log.txt"
            evidence_log.write_text("2026-12-04 10:01 write HR 40001 from 127.0.5.66\n")
            page.set_input_files("#attach-file", str(evidence_log))
            page.click("#attach-upload")
            expect(page.locator("#incident-attachments")).to_contain_text("plc-write-log.txt")
            with page.expect_download() as dl:
                page.locator("#incident-attachments [data-attachment]").first.click()
            got_log = folder / "downloaded-log.txt"
            dl.value.save_as(got_log)
            assert got_log.read_bytes() == evidence_log.read_bytes()
            page.fill("#incident-note-text", "已通知企业保留现场日志")
            page.click("#incident-note-add")
            expect(page.locator("#incident-notes")).to_contain_text("已通知企业保留现场日志")
            expect(page.locator("#timeline")).to_contain_text("attach")
            expect(page.locator("#timeline")).to_contain_text("assign")
            shot(page, out_dir, "0-incident-work")

            # A first report with only its first items, submitted: the clock is met.
            page.locator('[data-report-kind="first"]').click()
            report = page.locator(".report").first
            expect(report).to_contain_text("首报")
            report.locator('[data-field="harm"]').fill("未授权主站写入锅炉设定值，生产未中断")
            report.locator(".report-submit").click()
            expect(page.locator(".report").first).to_contain_text("已提交")
            expect(page.locator("#clock")).to_contain_text("已按时报告")
            shot(page, out_dir, "1-incident-graded")
            with page.expect_download() as dl:
                page.locator(".report-pdf").first.click()
            pdf = folder / "first-report.pdf"
            dl.value.save_as(pdf)
            assert pdf.read_bytes().startswith(b"%PDF-")
            shutil.copy(pdf, out_dir / "first-report.pdf")

            # A notice to the enterprise from the incident.
            page.fill("#notice-actions", "移除未授权主站\n限制对PLC的写操作，仅允许工程师站")
            page.fill("#notice-days", "5")
            page.click("#notice-issue")
            expect(page.locator("#notice-title")).to_be_visible()
            expect(page.locator("#notice-state")).to_have_text("已下发")
            notice_url = page.url
            shot(page, out_dir, "2-notice-issued")

            # The enterprise answers its own notice.
            login(page, url, world["tokens"]["enterprise"])
            page.click("#tab-notices")
            expect(page.locator("#notices tbody tr")).to_have_count(1)
            page.locator("#notices tbody tr").first.click()
            page.locator('.notice-move[data-to="acknowledged"]').click()
            expect(page.locator("#notice-state")).to_have_text("已签收")
            page.locator('.notice-move[data-to="in-progress"]').click()
            expect(page.locator("#notice-state")).to_have_text("整改中")
            page.fill("#reply-text", "已拆除未授权主站并在PLC上配置访问控制列表")
            evidence = folder / "acl.txt"
            evidence.write_text("permit 127.0.5.10 write\ndeny any write\n")
            page.set_input_files("#reply-file", str(evidence))
            page.click("#reply-send")
            expect(page.locator("#notice-state")).to_have_text("已反馈")
            expect(page.locator(".reply")).to_contain_text("acl.txt")
            shot(page, out_dir, "3-enterprise-reply")

            # A clean capture of the same plant, after the reply.
            clean = shifted(CAPTURES / "clean.pcap", folder / "clean.pcap", time.time() + 1)
            replay(clean, world["store"], site)

            # The province: verification offered from the telemetry, with its data.
            login(page, url, world["tokens"]["province"])
            page.goto(notice_url)
            expect(page.locator("#verification-state")).to_contain_text("监测数据确认已整改")
            expect(page.locator("#verification-data")).to_contain_text("127.0.5.66")
            shot(page, out_dir, "4-verification-offered")
            page.click("#verify-telemetry")
            expect(page.locator("#notice-state")).to_have_text("已核验")
            page.locator('.notice-move[data-to="closed"]').click()
            expect(page.locator("#notice-state")).to_have_text("已关闭")
            expect(page.locator("#notice-audit")).to_contain_text("监测数据核验")
            shot(page, out_dir, "5-notice-closed")

            # The command view of the incident and the closure rates.
            page.click("text=查看关联事件")
            page.click("#to-command")
            card = page.locator('.ent-card[data-enterprise="ent-0001"]')
            expect(card).to_contain_text("已关闭")
            expect(card).to_contain_text(site["sensors"][0])
            shot(page, out_dir, "6-command-view")
            page.click("#tab-notices")
            city = site["city"]
            expect(page.locator("#stats-city")).to_contain_text("100%")
            shot(page, out_dir, "7-closure-rates")

            # The same attack from outside at three enterprises in two cities: one campaign.
            in_city = [r for r in rows if r["city"] == city and r["enterprise"] != "ent-0001"]
            other_city = [r for r in rows if r["city"] != city]
            targets = [site, in_city[0], other_city[0]]
            for k, r in enumerate(targets):
                pcap = shifted(
                    CAPTURES / "attack_new_host_write.pcap",
                    folder / f"campaign-{k}.pcap",
                    time.time() - 3 * 3600 + k * 3600,
                    rewrite=ATTACKER_OUTSIDE,
                )
                replay(pcap, world["store"], r)
            page.click("#tab-campaigns")
            page.click("#campaigns-detect")
            expect(page.locator("#campaigns tbody tr")).to_have_count(1)
            expect(page.locator("#campaigns")).to_contain_text(ATTACKER_OUTSIDE)
            expect(page.locator("#content-watchlist tbody")).to_contain_text("无")
            page.locator("#campaigns tbody tr").first.click()
            expect(page.locator("#campaign-enterprises tbody tr")).to_have_count(3)
            page.click("#campaign-watch")
            expect(page.locator("#resp-status")).to_have_text("已加入监测清单")
            page.click("#tab-campaigns")  # the watchlist is now in the sensors' content
            expect(page.locator("#content-watchlist")).to_contain_text(ATTACKER_OUTSIDE)
            shot(page, out_dir, "8-content-for-sensors")
            with page.expect_download() as dl:
                page.click("#content-export")
            from detectors.content import load_package

            pushed = load_package(dl.value.path())
            assert [e.value for e in pushed.entries] == [f"{ATTACKER_OUTSIDE}/32"]
            content = folder / "content.json"
            dl.value.save_as(content)
            shutil.copy(content, out_dir / "content.json")
            page.locator("#campaigns tbody tr").first.click()
            shot(page, out_dir, "8-campaign-warning")
            with page.expect_download() as dl:
                page.click("#campaign-stix")
            bundle = json.loads(Path(dl.value.path()).read_text())
            assert any(o["type"] == "campaign" for o in bundle["objects"])

            # Early warning from the campaign to the enterprises not yet hit. A redraw of the
            # campaign's page is under way while the analyst fills the form (its data held back
            # 1.5 s in the browser): it must not put the form's defaults back.
            page.evaluate(
                """() => {
                  const plain = window.fetch;
                  window.fetch = async (...args) => {
                    const answer = await plain(...args);
                    if (/\\/api\\/campaigns\\/[^/?]+$/.test(String(args[0]))) {
                      await new Promise((done) => setTimeout(done, 1500));
                    }
                    return answer;
                  };
                  window.plainFetch = plain;
                  refresh();
                }"""
            )
            page.select_option("#warning-level", "orange")
            page.fill("#warning-text", "在边界封禁 203.0.113.66，核查Modbus写权限")
            page.evaluate("() => refreshing")  # the held-back redraw has run
            page.evaluate("() => { window.fetch = window.plainFetch; }")
            expect(page.locator("#warning-level")).to_have_value("orange")
            expect(page.locator("#warning-text")).to_have_value(
                "在边界封禁 203.0.113.66，核查Modbus写权限"
            )
            page.click("#warning-send")
            expect(page.locator("#resp-status")).to_contain_text("已发布")
            from response.db import SYSTEM, ResponseDB

            db = ResponseDB(world["state"].path)
            recipient = db.rows("SELECT enterprise_id FROM warning_recipient LIMIT 1")[0]
            db.close()
            hit = {r["enterprise"] for r in targets}
            assert recipient["enterprise_id"] not in hit
            token = world["state"].create_token(
                "recipient", "enterprise-operator", recipient["enterprise_id"]
            )
            login(page, url, token)
            page.click("#tab-warnings")
            expect(page.locator(".warning-card")).to_have_count(1)
            expect(page.locator(".warning-card")).to_contain_text("橙色")
            page.click(".warning-ack")
            expect(page.locator(".warning-card")).to_contain_text("已签收")
            shot(page, out_dir, "9-warning-acknowledged")
            login(page, url, world["tokens"]["province"])
            # Who runs the content the warning put out (from the sensors' heartbeats).
            page.goto(url + "/#view=warnings")
            expect(page.locator("#content-fleet")).to_contain_text("传感器检测内容")
            expect(page.locator("#fleet-behind tbody tr").first).to_be_visible()
            shot(page, out_dir, "9b-content-fleet")

            # The campaign's content pushed from this page to a running sensor at a plant not
            # yet hit, over the real Kafka; the sensor applies it without a restart and then
            # matches the campaign's attacker in new traffic.
            fresh = next(r for r in rows if r["enterprise"] not in hit)
            with pushed_sensor(world["plane"], folder, fresh) as sensor:
                assert sensor.running_version() is None  # no content of its own yet
                expect(page.locator("#content-push")).to_contain_text(f"v{pushed.version}")
                page.select_option("#push-scope", f"site:{fresh['site']}")
                page.click("#push-send")
                expect(page.locator("#resp-status")).to_contain_text("已下发到探针")
                pushed_row = page.locator(f'#push-sensors tr[data-sensor="{fresh["sensors"][0]}"]')
                expect(pushed_row).to_have_count(1)
                shot(page, out_dir, "9c-content-pushed")
                wait_for(
                    "the running sensor to apply the pushed content",
                    lambda: sensor.running_version() == pushed.version,
                    limit_s=120,
                )
                sensor.replay(
                    shifted(
                        CAPTURES / "attack_new_host_write.pcap",
                        folder / "next-plant.pcap",
                        time.time(),
                        rewrite=ATTACKER_OUTSIDE,
                    )
                )
                alerts, counters = sensor.stop()
            hits = [a for a in alerts if a.get("rule", {}).get("id") == "icsmon-watchlist"]
            assert hits and {a["source"]["ip"] for a in hits} == {ATTACKER_OUTSIDE}
            assert {a["icsmon"]["content"]["version"] for a in hits} == {pushed.version}
            assert {a["observer"]["name"] for a in hits} == {fresh["sensors"][0]}
            applied = re.search(r"content\.applied\s*│\s*(\d+)", counters)
            assert applied and applied.group(1) == "1", counters[-2000:]
            page.goto(url + "/#view=campaigns")
            page.locator("#campaigns tbody tr").first.click()

            # English, from the same translation table.
            page.click("#lang")
            expect(page.locator("#tab-campaigns")).to_have_text("Campaigns")
            expect(page.locator("#campaign-title")).to_contain_text("Same source address")
            shot(page, out_dir, "10-campaign-en")
        finally:
            browser.close()
    assert not errors, errors

    # What the pages showed is what the state holds.
    db = ResponseDB(world["state"].path)
    try:
        assert db.verify_audit()["ok"]
        notice = db.one("SELECT state, escalation FROM notice")
        assert notice == {"state": "closed", "escalation": 0}
        watch = db.rows("SELECT value, source FROM watchlist")
        assert watch == [{"value": ATTACKER_OUTSIDE, "source": "campaign"}]
        camps = db.rows("SELECT kind, indicator FROM campaign")
        assert camps == [{"kind": "source-ip", "indicator": ATTACKER_OUTSIDE}]
        actions = [e["action"] for e in db.audit_trail(SYSTEM, "notice")][::-1]
        assert db.one(
            "SELECT acknowledged_by FROM warning_recipient WHERE acknowledged_at IS NOT NULL"
        ) == {"acknowledged_by": "recipient"}
        assert actions == ["issue", "acknowledge", "start", "submit", "verify", "close"]
    finally:
        db.close()
