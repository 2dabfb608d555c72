"""Posture API over the embedded store: summaries checked against a brute-force count of the
seeded documents, search and pagination, alert detail with evidence, workflow and audit."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import pytest

from posture import seed
from posture.scoring import ALERT_MAX, BAND_WEIGHT, CRITICALITY_WEIGHT, band
from tests.support.posture import (
    BACKEND_PARAMS,
    Env,
    alerts_in,
    make_env,
    seed_ts,
)

# Every API test runs on the embedded store and, with the services up, on Elasticsearch.


@pytest.fixture(scope="module", params=BACKEND_PARAMS)
def env(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Env:
    e = make_env(tmp_path_factory.mktemp("posture"), request.param)
    yield e
    e.close()


# -- summary ------------------------------------------------------------------------------


@pytest.mark.parametrize("who", ["province", "city_a", "ent_a_op"])
def test_summary_counts_match_the_documents(env: Env, who: str) -> None:
    until = env.now + 1
    since = until - 36 * 3600
    r = env.client.get("/api/summary", params={"since": since, "until": until}, headers=env.h(who))
    assert r.status_code == 200, r.text
    s = r.json()
    expect = alerts_in(env, env.sites_of(who), since)
    assert expect, "the seed must put alerts in this scope"
    assert s["alerts"]["total"] == len(expect)
    bands = Counter(band(a["event.severity"]) for a in expect)
    assert s["alerts"]["by_severity"] == {b: bands.get(b, 0) for b in BAND_WEIGHT}
    techniques = Counter(t for a in expect for t in a["threat.technique.id"])
    got = dict(s["alerts"]["by_technique"])
    assert all(got[k] == techniques[k] for k in got)
    assert (
        set(got) == {k for k, _ in techniques.most_common(len(got))}
        or min(got.values()) == sorted(techniques.values(), reverse=True)[len(got) - 1]
    )
    assert dict(s["alerts"]["by_protocol"]) == Counter(a["network.protocol"] for a in expect)
    assert sum(b[k] for b in s["trend"]["buckets"] for k in BAND_WEIGHT) == len(expect)
    assert s["alerts"]["open"] == len(expect)  # nothing closed yet in this module's first test


def test_province_children_are_all_cities_and_scores_follow_pressure(env: Env) -> None:
    s = env.client.get("/api/summary", params={"hours": 48}, headers=env.h("province")).json()
    cities = {c["id"] for c in env.registry["cities"]}
    assert {c["id"] for c in s["children"]} == cities
    assert all(c["kind"] == "city" and 0 <= c["score"] <= 100 for c in s["children"])
    # Recompute each city's alert pressure from the documents: the city with the most
    # weighted open alerts per site and day must not score better than the one with the least.
    crit = {r["site"]: r["criticality"] for r in seed.registry_sites(env.registry)}
    city_of = {r["site"]: r["city"] for r in seed.registry_sites(env.registry)}
    n_sites = Counter(city_of.values())
    pressure: Counter[str] = Counter()
    for a in alerts_in(env, set(crit), env.now - 48 * 3600):
        pressure[city_of[a["labels.site"]]] += (
            BAND_WEIGHT[band(a["event.severity"])] * CRITICALITY_WEIGHT[crit[a["labels.site"]]]
        )
    per_site = {c: pressure[c] / n_sites[c] for c in cities}
    worst, best = max(per_site, key=per_site.get), min(per_site, key=per_site.get)
    scores = {c["id"]: c for c in s["children"]}
    assert scores[worst]["alerts"] >= scores[best]["alerts"]
    # The alert part of the score follows the documented formula (2 days in the range).
    expected = ALERT_MAX * (1 - math.exp(-(per_site[worst] / 2) / 20))
    assert scores[worst]["alerts"] == pytest.approx(expected, abs=0.06)
    # and the score is 100 minus its four parts; the risk part is made of its own parts
    for c in s["children"]:
        parts = c["alerts"] + c["deviations"] + c["sensor_health"] + c["risk"]
        assert c["score"] == pytest.approx(max(0.0, 100 - parts), abs=0.25)
        assert sum(c["risk_parts"].values()) == pytest.approx(c["risk"], abs=0.25)


def test_top_sites_rank_by_risk(env: Env) -> None:
    s = env.client.get(
        "/api/summary", params={"hours": 48, "top": 5}, headers=env.h("province")
    ).json()
    risks = [r["risk"] for r in s["top_sites"]]
    assert risks == sorted(risks, reverse=True) and len(risks) == 5
    counts = Counter(
        a["labels.site"] for a in alerts_in(env, env.sites_of("province"), env.now - 48 * 3600)
    )
    top = s["top_sites"][0]
    assert sum(top["open"].values()) == counts[top["site"]]


def test_sensors_silent_and_assets_new(env: Env) -> None:
    s = env.client.get("/api/summary", params={"hours": 24}, headers=env.h("province")).json()
    registered = [(r["site"], n) for r in seed.registry_sites(env.registry) for n in r["sensors"]]
    last: dict[str, float] = {}
    quiet: set[str] = set()
    for beat in env.docs["heartbeat"]:
        last[beat["observer.name"]] = max(last.get(beat["observer.name"], 0), seed_ts(beat))
        if beat["icsmon.sensor.traffic"] == 0:
            quiet.add(beat["observer.name"])
    silent = {n for _, n in registered if env.now - last.get(n, 0) > 900}
    assert s["sensors"]["total"] == len(registered)
    assert s["sensors"]["silent"] == len(silent) > 0
    assert {r["name"] for r in s["sensors"]["silent_list"]} == silent
    assert s["sensors"]["no_traffic"] == len(quiet - silent) > 0
    new = [
        a
        for a in env.docs["asset"]
        if seed_ts({"@timestamp": a["asset.first_seen"]}) >= env.now - 24 * 3600
    ]
    assert s["assets"]["new"] == len(new) > 0
    assert s["assets"]["seen"] == len(env.docs["asset"])
    assert s["score"]["sensor_health"] > 0


def test_city_drill_down_lists_enterprises_then_sites(env: Env) -> None:
    city = env.principals["city_a"][1]
    s = env.client.get(
        "/api/summary", params={"scope": f"city:{city}", "hours": 48}, headers=env.h("province")
    ).json()
    ents = {r["enterprise"] for r in seed.registry_sites(env.registry) if r["city"] == city}
    assert s["scope"]["name_zh"] and {c["id"] for c in s["children"]} <= ents
    assert all(c["kind"] == "enterprise" for c in s["children"])
    s2 = env.client.get(
        "/api/summary",
        params={"scope": "enterprise:ent-0001", "hours": 48},
        headers=env.h("city_a"),
    ).json()
    assert {c["kind"] for c in s2["children"]} == {"site"}
    assert s2["scope"]["path"] == [{"kind": "city", "id": city}]


def test_industry_scope(env: Env) -> None:
    industry = seed.registry_sites(env.registry)[0]["industry"]
    s = env.client.get(
        "/api/summary",
        params={"scope": f"industry:{industry}", "hours": 48},
        headers=env.h("province"),
    ).json()
    sites = {r["site"] for r in seed.registry_sites(env.registry) if r["industry"] == industry}
    assert s["alerts"]["total"] == len(alerts_in(env, sites, env.now - 48 * 3600))


# -- search and detail ---------------------------------------------------------------------


def test_search_filters_and_pagination(env: Env) -> None:
    params = {"hours": 48, "min_severity": 70, "protocol": "modbus", "limit": 7}
    first = env.client.get("/api/alerts", params=params, headers=env.h("province")).json()
    expect = [
        a
        for a in alerts_in(env, env.sites_of("province"), env.now - 48 * 3600)
        if a["event.severity"] >= 70 and a["network.protocol"] == "modbus"
    ]
    assert first["total"] == len(expect) > 7
    seen: list[str] = []
    for offset in range(0, first["total"], 7):
        page = env.client.get(
            "/api/alerts", params={**params, "offset": offset}, headers=env.h("province")
        ).json()
        seen += [i["event"]["id"] for i in page["items"]]
        stamps = [i["@timestamp"] for i in page["items"]]
        assert stamps == sorted(stamps, reverse=True)
    assert sorted(seen) == sorted(a["event.id"] for a in expect)
    tech = env.client.get(
        "/api/alerts", params={"hours": 48, "technique": "T0843"}, headers=env.h("province")
    ).json()
    assert tech["total"] == sum(
        1
        for a in alerts_in(env, env.sites_of("province"), env.now - 48 * 3600)
        if "T0843" in a["threat.technique.id"]
    )
    r = env.client.get(
        "/api/alerts", params={"limit": 500, "offset": 9600}, headers=env.h("province")
    )
    assert r.status_code == 422


def test_alert_detail_has_evidence_rule_and_flow(env: Env) -> None:
    alert = next(a for a in env.docs["alert"] if a["labels.site"] in env.sites_of("ent_a_op"))
    r = env.client.get(f"/api/alerts/{alert['event.id']}", headers=env.h("ent_a_op"))
    assert r.status_code == 200
    d = r.json()
    assert d["event"]["id"] == alert["event.id"] and d["rule"]["id"] == alert["rule.id"]
    got = {e["event"]["id"] for e in d["evidence"]["events"]}
    assert got == set(alert["icsmon.alert.event_ids"])
    assert d["evidence"]["rule"]["name"] == alert["rule.name"]
    flow = d["evidence"]["flow"]
    assert flow["community_id"] == alert["network.community_id"]
    assert flow["events"] and all(
        e["network"]["community_id"] == alert["network.community_id"] for e in flow["events"]
    )
    assert d["org"]["enterprise"] == "ent-0001" and d["workflow"]["status"] == "open"


# -- workflow ------------------------------------------------------------------------------


def test_workflow_and_audit(env: Env) -> None:
    site_alerts = [
        a
        for a in env.docs["alert"]
        if a["labels.site"] in env.sites_of("ent_a_op") and seed_ts(a) >= env.now - 24 * 3600
    ]
    alert = site_alerts[0]
    aid = alert["event.id"]
    before = env.client.get(
        "/api/summary",
        params={"scope": "enterprise:ent-0001", "hours": 24},
        headers=env.h("ent_a_op"),
    ).json()
    h = env.h("ent_a_op")
    assert (
        env.client.post(
            f"/api/alerts/{aid}/acknowledge", json={"note": "looking"}, headers=h
        ).json()["status"]
        == "acknowledged"
    )
    assert (
        env.client.post(
            f"/api/alerts/{aid}/assign", json={"assignee": "wang.li"}, headers=h
        ).json()["assignee"]
        == "wang.li"
    )
    bad = env.client.post(f"/api/alerts/{aid}/close", json={"reason": "bored"}, headers=h)
    assert bad.status_code == 422
    closed = env.client.post(
        f"/api/alerts/{aid}/close",
        json={"reason": "false-positive", "note": "maintenance window"},
        headers=h,
    ).json()
    assert closed["status"] == "closed" and closed["close_reason"] == "false-positive"
    assert (
        env.client.post(
            f"/api/alerts/{aid}/notes", json={"text": "vendor confirmed"}, headers=env.h("city_a")
        ).status_code
        == 200
    )
    # Read-only users see the alert but may not change it.
    ro = env.client.post(f"/api/alerts/{aid}/reopen", headers=env.h("ent_a_view"))
    assert ro.status_code == 403
    trail = env.client.get(f"/api/alerts/{aid}/audit", headers=env.h("ent_a_view")).json()
    assert [t["action"] for t in trail] == ["note", "close", "assign", "acknowledge"]
    assert trail[1]["detail"]["status"] == {"from": "acknowledged", "to": "closed"}
    assert trail[0]["actor"] == "city_a" and trail[3]["actor"] == "ent_a_op"
    d = env.client.get(f"/api/alerts/{aid}", headers=h).json()
    assert [n["text"] for n in d["notes"]] == ["looking", "maintenance window", "vendor confirmed"]
    after = env.client.get(
        "/api/summary", params={"scope": "enterprise:ent-0001", "hours": 24}, headers=h
    ).json()
    assert after["alerts"]["open"] == before["alerts"]["open"] - 1
    assert after["alerts"]["total"] == before["alerts"]["total"]
    assert after["score"]["alerts"] <= before["score"]["alerts"]
    wf = env.client.get("/api/workflow", params={"status": "closed"}, headers=h).json()
    assert [i["alert_id"] for i in wf["items"]] == [aid]
    listed = env.client.get("/api/alerts", params={"hours": 48, "limit": 500}, headers=h).json()
    status = {i["event"]["id"]: i["workflow"]["status"] for i in listed["items"]}
    assert status[aid] == "closed"
    env.client.post(f"/api/alerts/{aid}/reopen", headers=h)
    assert env.client.get(f"/api/alerts/{aid}", headers=h).json()["workflow"]["status"] == "open"


def test_tokens_are_required_and_stored_hashed(env: Env) -> None:
    assert env.client.get("/api/summary").status_code == 401
    assert (
        env.client.get("/api/summary", headers={"Authorization": "Bearer icsm_wrong"}).status_code
        == 401
    )
    raw = (Path(env.state.path)).read_bytes()
    for token in env.tokens.values():
        assert token.encode() not in raw
    assert env.client.get("/api/me", headers=env.h("city_a")).json()["role"] == "city-analyst"


def test_dashboard_and_openapi_are_served(env: Env) -> None:
    page = env.client.get("/")
    assert page.status_code == 200 and "/static/vendor/echarts/echarts.min.js" in page.text
    assert env.client.get("/static/vendor/echarts/echarts.min.js").status_code == 200
    assert env.client.get("/openapi.json").status_code == 401
    spec = env.client.get("/openapi.json", headers=env.h("province")).json()
    assert "/api/summary" in spec["paths"] and "/api/alerts/{alert_id}/close" in spec["paths"]
    i18n = env.client.get("/api/i18n", headers=env.h("province")).json()
    assert set(i18n["zh"]) == set(i18n["en"])
