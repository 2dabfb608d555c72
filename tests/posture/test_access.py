"""Tenancy: every endpoint, as every role, against every other tenant's data.

A foreign object must answer exactly like a missing one (same status, same body), and no
response to a caller may contain another tenant's site, enterprise or alert identifiers.
Also: secrets (tokens, webhook secrets, URL credentials) never reach the logs.
"""

from __future__ import annotations

import json
import logging
import re
import time
from pathlib import Path
from typing import Any

import pytest

from posture import seed
from tests.support import REPO
from tests.support.posture import (
    BACKEND_PARAMS,
    WHO,
    Env,
    make_env,
    seed_evidence_request,
    seed_hunt,
)

HEX_ID = re.compile(r"\b[0-9a-f]{24}\b")
MISSING = "ffffffffffffffffffffffff"


@pytest.fixture(scope="module", params=BACKEND_PARAMS)
def env(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Env:
    e = make_env(tmp_path_factory.mktemp("access"), request.param, n_alerts=600)
    prov = e.h("province")
    # Workflow, audit entries and webhooks in every tenant, so there is something to leak.
    for who in ("city_a", "city_b", "ent_a_op", "ent_b_op"):
        role, scope = e.principals[who]
        kind = "city" if role == "city-analyst" else "enterprise"
        r = e.client.post(
            "/api/webhooks",
            headers=prov,
            json={"scope": f"{kind}:{scope}", "url": "http://127.0.0.1:9/hook", "min_severity": 70},
        )
        assert r.status_code == 201, r.text
        e.hooks[who] = r.json()["id"]
    pcap = (REPO / "pcaps" / "modbus" / "modbus_writes.pcap").read_bytes()
    e.evidence = {}
    for site in sorted(e.sites_of("province")):
        alert = next((a for a in e.docs["alert"] if a["labels.site"] == site), None)
        if alert:
            e.client.post(
                f"/api/alerts/{alert['event.id']}/acknowledge",
                headers=prov,
                json={"note": f"seen at {site}"},
            )
            # an evidence request delivered in every tenant, with its pcap
            e.evidence[seed_evidence_request(e, alert, "province", pcap)] = site
        e.hunts[seed_hunt(e, site, "province")] = site  # a hunt over every site
    yield e
    e.close()


def foreign(env: Env, who: str) -> dict[str, Any]:
    """Everything of other tenants: sites, enterprises, cities, alerts, webhooks."""
    mine = env.sites_of(who)
    rows = seed.registry_sites(env.registry)
    f_sites = sorted({r["site"] for r in rows} - mine)
    my_ents = {r["enterprise"] for r in rows if r["site"] in mine}
    my_cities = {r["city"] for r in rows if r["site"] in mine}
    role = env.principals[who][0]
    f_ents = sorted({r["enterprise"] for r in rows} - my_ents)
    f_cities = sorted(
        {r["city"] for r in rows}
        - (my_cities if role != "enterprise-operator" and role != "enterprise-viewer" else set())
    )
    by_site: dict[str, str] = {}
    for a in env.docs["alert"]:
        if a["labels.site"] in f_sites:
            by_site.setdefault(a["labels.site"], a["event.id"])
    f_alert_ids = {a["event.id"] for a in env.docs["alert"] if a["labels.site"] in f_sites}
    city_of_ent = {r["enterprise"]: r["city"] for r in rows}
    own = env.principals[who][1]

    def hook_visible(owner: str) -> bool:
        owner_role, owner_scope = env.principals[owner]
        if role == "province-analyst":
            return True
        if owner_role == "city-analyst":
            return role == "city-analyst" and owner_scope == own
        if role == "city-analyst":
            return city_of_ent[owner_scope] == own
        return owner_scope == own

    visible_hooks = {h for h in env.hooks if hook_visible(h)}
    f_hooks = [env.hooks[h] for h in env.hooks if h not in visible_hooks]
    f_findings = [
        f["finding.id"] for f in env.docs.get("finding", []) if f["labels.site"] in f_sites
    ]
    f_assets = [a["asset.id"] for a in env.docs["asset"] if a["labels.site"] in f_sites]
    f_evidence = [rid for rid, site in env.evidence.items() if site in f_sites]
    return {
        "evidence": f_evidence,
        "hunts": [hid for hid, site in env.hunts.items() if site in f_sites],
        "findings": f_findings,
        "assets": f_assets,
        "sites": f_sites,
        "enterprises": f_ents,
        "cities": f_cities,
        "alerts": list(by_site.values())[:8],
        "alert_ids": f_alert_ids,
        "hooks": f_hooks,
    }


# Each entry: (method, path template, json body or None). {id} is replaced by the target.
OBJECT_ENDPOINTS = {
    "alert": [
        ("GET", "/api/alerts/{id}", None),
        ("GET", "/api/alerts/{id}/audit", None),
        ("POST", "/api/alerts/{id}/acknowledge", {}),
        ("POST", "/api/alerts/{id}/assign", {"assignee": "x"}),
        ("POST", "/api/alerts/{id}/close", {"reason": "resolved"}),
        ("POST", "/api/alerts/{id}/reopen", {}),
        ("POST", "/api/alerts/{id}/notes", {"text": "x"}),
        ("POST", "/api/alerts/{id}/evidence", {}),
        ("GET", "/api/alerts/{id}/evidence", None),
    ],
    "evidence": [
        ("GET", "/api/evidence/{id}", None),
        ("GET", "/api/evidence/{id}/pcap", None),
    ],
    "scope": [
        ("GET", "/api/summary?scope={id}", None),
        ("GET", "/api/alerts?scope={id}", None),
        ("GET", "/api/sensors?scope={id}", None),
        ("GET", "/api/traffic?scope={id}", None),
        ("GET", "/api/assets?scope={id}", None),
        ("GET", "/api/workflow?scope={id}&status=acknowledged", None),
        ("GET", "/api/audit?scope={id}", None),
        ("GET", "/api/assessment?scope={id}", None),
        ("GET", "/api/findings?scope={id}", None),
        ("GET", "/api/advisories?scope={id}", None),
        ("GET", "/api/advisories/ACME-2026-001?scope={id}", None),
        ("GET", "/api/assessment/reports/weekly?scope={id}&format=html", None),
        ("POST", "/api/webhooks", "scope-body"),
        ("POST", "/api/hunts", "hunt-body"),
    ],
    "hunt": [("GET", "/api/hunts/{id}", None)],
    "finding": [
        ("POST", "/api/findings/{id}/accept", {"reason": "x"}),
        ("POST", "/api/findings/{id}/reopen", {}),
    ],
    "asset": [("GET", "/api/assets/{id}", None)],
    # advisories are shared reference data (nothing foreign): only a missing one is 404;
    # who is affected is cut to the caller's scope (HOME_GETS and "scope" above check that)
    "advisory": [("GET", "/api/advisories/{id}", None)],
    "site": [("GET", "/api/alerts?site={id}", None)],
    "hook": [
        ("GET", "/api/webhooks/{id}/deliveries", None),
        ("DELETE", "/api/webhooks/{id}", None),
    ],
}


def call(env: Env, who: str, method: str, path: str, body: Any, target: str) -> Any:
    url = path.replace("{id}", target)
    if body == "scope-body":
        body = {"scope": target, "url": "http://127.0.0.1:9/x"}
    elif body == "hunt-body":
        body = {"scope": target, "rule_ids": ["cf849942-e7b0-5107-bd0c-6249700874bd"]}
    return env.client.request(method, url, headers=env.h(who), json=body)


@pytest.mark.parametrize("who", WHO)
@pytest.mark.parametrize("kind", list(OBJECT_ENDPOINTS))
def test_foreign_objects_answer_like_missing_ones(env: Env, who: str, kind: str) -> None:
    f = foreign(env, who)
    if kind == "alert":
        targets, missing = f["alerts"], MISSING
    elif kind == "scope":
        targets = (
            [f"site:{s}" for s in f["sites"]]
            + [f"enterprise:{e}" for e in f["enterprises"]]
            + [f"city:{c}" for c in f["cities"]]
        )
        if who != "province":
            targets.append("province")
        missing = "site:no-such-site"
    elif kind == "site":
        targets, missing = f["sites"], "no-such-site"
    elif kind == "finding":
        targets, missing = f["findings"][:6], "ffffffffffffffffffff"
        if not env.docs.get("finding") or not any(env.docs["finding"]):
            pytest.skip("this back end keeps no findings")
    elif kind == "asset":
        targets, missing = f["assets"][:6], "no-such-site:10.0.0.1"
    elif kind == "advisory":
        targets, missing = [], "NO-SUCH-ADVISORY"
    elif kind == "evidence":
        targets, missing = f["evidence"][:6], "00000000-0000-0000-0000-000000000000"
    elif kind == "hunt":
        targets, missing = f["hunts"][:6], "hunt-0000000000000000"
    else:
        targets, missing = [str(h) for h in f["hooks"]], "999999"
    if who != "province" and kind != "advisory":
        assert targets, f"{who} must have foreign {kind}s to try"
    for method, path, body in OBJECT_ENDPOINTS[kind]:
        if kind == "scope" and body == "scope-body":
            tried = [t for t in targets if t.startswith(("city:", "enterprise:"))]
            missing_body = "enterprise:no-such"
        else:
            tried, missing_body = targets, missing
        ref = call(env, who, method, path, body, missing_body)
        assert ref.status_code == 404, (method, path, ref.text)
        for target in tried:
            r = call(env, who, method, path, body, target)
            assert (r.status_code, r.json()) == (ref.status_code, ref.json()), (
                f"{who} {method} {path} {target}: {r.status_code} {r.text[:200]}"
            )


HOME_GETS = [
    "/api/summary?hours=72",
    "/api/alerts?hours=72&limit=500",
    "/api/sensors",
    "/api/traffic?hours=72",
    "/api/assets",
    "/api/workflow?status=acknowledged",
    "/api/audit",
    "/api/org",
    "/api/webhooks",
    "/api/me",
    "/api/assessment",
    "/api/findings",
    "/api/advisories",
    "/api/advisories/ACME-2026-001",
    "/api/assessment/reports/weekly?format=html",
    "/api/hunts",
    "/api/hunts/rules",
]


@pytest.mark.parametrize("who", WHO)
@pytest.mark.parametrize("path", HOME_GETS)
def test_home_scope_responses_hold_no_foreign_identifiers(env: Env, who: str, path: str) -> None:
    f = foreign(env, who)
    r = env.client.get(path, headers=env.h(who))
    assert r.status_code == 200, r.text
    body = r.text
    leaked_sites = [s for s in f["sites"] if re.search(rf'"{re.escape(s)}"', body)]
    leaked_ents = [e for e in f["enterprises"] if re.search(rf'"{re.escape(e)}"', body)]
    leaked_alerts = set(HEX_ID.findall(body)) & f["alert_ids"]
    leaked_alerts |= {x for x in f["findings"] + f["assets"] if x in body}
    assert not leaked_sites and not leaked_ents and not leaked_alerts, (
        who,
        path,
        leaked_sites[:3],
        leaked_ents[:3],
        list(leaked_alerts)[:3],
    )
    if who != "province" and path.startswith("/api/alerts"):
        items = r.json()["items"]
        assert items and {i["labels"]["site"] for i in items} <= env.sites_of(who)


def test_city_analyst_industry_view_is_cut_to_their_city(env: Env) -> None:
    city = env.principals["city_a"][1]
    rows = seed.registry_sites(env.registry)
    industry = next(r["industry"] for r in rows if r["city"] == city)
    s = env.client.get(
        "/api/summary",
        params={"scope": f"industry:{industry}", "hours": 72},
        headers=env.h("city_a"),
    ).json()
    mine = {r["site"] for r in rows if r["city"] == city and r["industry"] == industry}
    want = sum(1 for a in env.docs["alert"] if a["labels.site"] in mine)
    assert s["alerts"]["total"] == want
    other = next(
        (
            r["industry"]
            for r in rows
            if r["city"] != city
            and r["industry"] not in {x["industry"] for x in rows if x["city"] == city}
        ),
        None,
    )
    if other:
        r = env.client.get(
            "/api/summary", params={"scope": f"industry:{other}"}, headers=env.h("city_a")
        )
        assert r.status_code == 404


def test_enterprise_users_cannot_add_city_webhooks_and_viewers_nothing(env: Env) -> None:
    city = env.principals["city_a"][1]
    r = env.client.post(
        "/api/webhooks",
        headers=env.h("ent_a_op"),
        json={"scope": f"city:{city}", "url": "http://127.0.0.1:9/x"},
    )
    assert r.status_code == 404  # the city is not the enterprise user's to see
    r = env.client.post(
        "/api/webhooks",
        headers=env.h("ent_a_view"),
        json={"scope": "enterprise:ent-0001", "url": "http://127.0.0.1:9/x"},
    )
    assert r.status_code == 403


def test_secrets_never_reach_the_logs(
    env: Env, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    from posture.webhooks import WebhookDispatcher

    caplog.set_level(logging.DEBUG)
    token = env.tokens["ent_a_op"]
    created = env.client.post(
        "/api/webhooks",
        headers=env.h("ent_a_op"),
        json={
            "scope": "enterprise:ent-0001",
            "min_severity": 0,
            "url": "http://alice:hunter2-pass@127.0.0.1:9/hook?key=s3cr3t-query",
        },
    )
    assert created.status_code == 201
    secret = created.json()["secret"]
    listed = env.client.get("/api/webhooks", headers=env.h("ent_a_op")).text
    assert "hunter2" not in listed and "s3cr3t" not in listed and secret not in listed
    env.client.get("/api/summary", headers={"Authorization": f"Bearer {token}x"})
    env.client.get("/api/summary", headers=env.h("ent_a_op"))
    # A delivery that fails until it gives up (port 9, discard: nothing listens) logs a warning.
    from posture.seed import iso

    site = sorted(env.sites_of("ent_a_op"))[0]
    base = time.time()  # after the webhook was made: alerts before it are not sent
    alert, _ = seed.make_alert(
        next(r for r in seed.registry_sites(env.registry) if r["site"] == site),
        0,
        base + 5,
        seed.RULES[0],
        10_000,
        seed=99,
    )
    env.write([("alert", alert)])
    disp = WebhookDispatcher(env.backend, env.state, max_attempts=2, backoff_s=1, timeout_s=2)
    t = base + 10
    disp.run_once(t)
    disp.run_once(t + 5)
    assert "giving up" in caplog.text
    assert alert["@timestamp"] == iso(base + 5)
    for secret_text in (token, secret, "hunter2", "s3cr3t"):
        assert secret_text not in caplog.text
    dump = json.dumps(env.state.audit_trail(limit=1000))
    assert "hunter2" not in dump and "s3cr3t" not in dump and secret not in dump


def test_every_api_route_is_covered_by_the_tenancy_tests(env: Env) -> None:
    """A new endpoint must join OBJECT_ENDPOINTS or HOME_GETS (or be public on purpose)."""
    # Token needed (test_posture_security checks every route) but no tenancy: same for everyone.
    public = {("GET", "/api/config"), ("GET", "/api/i18n")}
    covered = {(m, p.split("?")[0]) for eps in OBJECT_ENDPOINTS.values() for m, p, _ in eps}
    covered |= {("GET", p.split("?")[0]) for p in HOME_GETS}
    from tests.response.test_response_access import ROUTES as RESPONSE_ROUTES

    covered |= set(RESPONSE_ROUTES)
    covered = {(m, p.replace("{id}", "{x}")) for m, p in covered}
    # the report's path parameter is its period, not an object: tried with "weekly" above
    covered |= {
        (m, "/api/assessment/reports/{x}")
        for m, p in covered
        if p == "/api/assessment/reports/weekly"
    }
    routes = set()
    for route in env.client.app.routes:
        path = getattr(route, "path", "")
        if path.startswith("/api/"):
            for method in getattr(route, "methods", set()) - {"HEAD", "OPTIONS"}:
                routes.add((method, re.sub(r"\{[a-z_]+\}", "{x}", path)))
    assert routes - public - covered == set()
    for path in ("/api/config", "/api/i18n"):
        assert env.client.get(path).status_code == 401
        assert env.client.get(path, headers=env.h("city_a")).status_code == 200


def test_evidence_is_each_tenants_own_and_viewers_may_fetch_theirs(env: Env) -> None:
    pcap = (REPO / "pcaps" / "modbus" / "modbus_writes.pcap").read_bytes()
    mine = env.sites_of("ent_a_view")
    own = [rid for rid, site in env.evidence.items() if site in mine]
    assert own
    for who in ("ent_a_view", "ent_a_op", "province"):
        r = env.client.get(f"/api/evidence/{own[0]}", headers=env.h(who))
        assert r.status_code == 200 and r.json()["state"] == "delivered", (who, r.text)
        got = env.client.get(f"/api/evidence/{own[0]}/pcap", headers=env.h(who))
        assert got.status_code == 200 and got.content == pcap, who
        assert got.headers["content-type"] == "application/vnd.tcpdump.pcap"
    alert = next(a for a in env.docs["alert"] if a["labels.site"] in mine)
    # a viewer may ask (read-only covers workflow, not evidence); this server has no key
    r = env.client.post(f"/api/alerts/{alert['event.id']}/evidence", headers=env.h("ent_a_view"))
    assert r.status_code == 503 and "not configured" in r.json()["detail"]
    listed = env.client.get(
        f"/api/alerts/{alert['event.id']}/evidence", headers=env.h("ent_a_view")
    ).json()
    assert listed["configured"] is False
