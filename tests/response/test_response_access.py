"""Tenancy of the response routes: every route, as every role, against every other tenant's
incidents, notices, reports, attachments and campaigns. A foreign object answers exactly like
a missing one; home listings hold no foreign identifiers. ``ROUTES`` lists every response
route; tests/posture/test_access.py checks that no API route is left out of the tenancy tests.
"""

from __future__ import annotations

import base64
import re
import time
from collections.abc import Iterator
from typing import Any

import pytest

from posture import seed
from tests.support.posture import WHO, Env, make_env

MISSING = {
    "incident": "inc-ffffffffffffffff",
    "notice": "ntc-ffffffffffffffff",
    "report": "rep-ffffffffffffffff",
    "attachment": "att-ffffffffffffffff",
    "campaign": "cmp-ffffffffffffffff",
    "watch": "wl-ffffffffffffffff",
    "warning": "wrn-ffffffffffffffff",
    "content-push": "push-ffffffffffffffff",
}

# kind -> (method, path, body); {id} is the object.
OBJECT_ROUTES: dict[str, list[tuple[str, str, Any]]] = {
    "incident": [
        ("GET", "/api/incidents/{id}", None),
        ("POST", "/api/incidents/{id}/transition", {"to": "investigating"}),
        ("POST", "/api/incidents/{id}/alerts", {"alert_ids": ["x"]}),
        ("POST", "/api/incidents/{id}/notes", {"text": "x"}),
        ("POST", "/api/incidents/{id}/assignees", {"names": ["x"]}),
        ("POST", "/api/incidents/{id}/facts", {"facts": {"people_affected": 1}}),
        ("POST", "/api/incidents/{id}/attachments", {"name": "a", "data": "eA=="}),
        ("POST", "/api/incidents/{id}/reports", {"kind": "follow-up"}),
        ("GET", "/api/incidents/{id}/audit", None),
        ("GET", "/api/incidents/{id}/command", None),
        ("GET", "/api/incidents/{id}/stix", None),
    ],
    "notice": [
        ("GET", "/api/notices/{id}", None),
        ("POST", "/api/notices/{id}/transition", {"to": "acknowledged"}),
        ("POST", "/api/notices/{id}/reply", {"text": "x"}),
        ("GET", "/api/notices/{id}/verification", None),
        ("POST", "/api/notices/{id}/verify", {"use_telemetry": False, "note": "x"}),
    ],
    "report": [
        ("GET", "/api/reports/{id}", None),
        ("GET", "/api/reports/{id}/pdf", None),
        ("POST", "/api/reports/{id}", {"fields": {"harm": "x"}}),
        ("POST", "/api/reports/{id}/submit", None),
    ],
    "attachment": [("GET", "/api/attachments/{id}", None)],
    "warning": [
        ("GET", "/api/warnings/{id}", None),
        ("POST", "/api/warnings/{id}/acknowledge", None),
        ("POST", "/api/warnings/{id}/lift", {"note": "x"}),
    ],
    "content-push": [("GET", "/api/content/pushes/{id}", None)],
    "campaign": [
        ("GET", "/api/campaigns/{id}", None),
        ("GET", "/api/campaigns/{id}/stix", None),
        ("POST", "/api/campaigns/{id}/watch", None),
    ],
}
# Listings and actions without an object: what each role gets is checked below.
HOME_ROUTES = [
    ("GET", "/api/incidents"),
    ("POST", "/api/incidents"),
    ("POST", "/api/incidents/group"),
    ("GET", "/api/notices"),
    ("POST", "/api/notices"),
    ("GET", "/api/notices/stats"),
    ("GET", "/api/campaigns"),
    ("GET", "/api/warnings"),
    ("POST", "/api/warnings"),
    ("POST", "/api/campaigns/detect"),
    ("GET", "/api/response/policy"),
    ("GET", "/api/response/audit"),
    ("GET", "/api/response/audit/verify"),
    ("GET", "/api/allowlist"),
    ("POST", "/api/allowlist"),
    ("DELETE", "/api/allowlist"),
    ("GET", "/api/watchlist"),
    ("POST", "/api/watchlist/import"),
    ("DELETE", "/api/watchlist/{id}"),
    ("GET", "/api/content"),
    ("GET", "/api/content/fleet"),
    ("GET", "/api/content/rules"),
    ("POST", "/api/content/rules"),
    ("DELETE", "/api/content/rules/{id}"),
    ("POST", "/api/content/push"),
    ("GET", "/api/content/pushes"),
]
ROUTES = {(m, p) for eps in OBJECT_ROUTES.values() for m, p, _ in eps} | set(HOME_ROUTES)
ATTACKER = "203.0.113.50"


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    e = make_env(tmp_path_factory.mktemp("response-access"), n_alerts=300)
    e.objects = build_objects(e)  # type: ignore[attr-defined]
    yield e
    e.close()


def build_objects(env: Env) -> dict[str, dict[str, list[str]]]:
    """One incident, notice, report, attachment per enterprise of the test principals, and a
    campaign over three enterprises; returns kind -> enterprise -> ids."""
    rows = seed.registry_sites(env.registry)
    out: dict[str, dict[str, list[str]]] = {k: {} for k in MISSING}
    prov = env.h("province")
    t0 = time.time() - 3600
    ents = [env.principals["ent_a_op"][1], env.principals["ent_b_op"][1]]
    ents += [r["enterprise"] for r in rows if r["enterprise"] not in ents][:1]
    for n, ent in enumerate(ents):
        idx, row = next((i, r) for i, r in enumerate(rows) if r["enterprise"] == ent)
        alerts = []
        for k in range(2):
            a, _ = seed.make_alert(
                row, idx, t0 + n * 60 + k, seed.RULES[0], 80_000 + k, seed=n, with_events=False
            )
            a["source.ip"] = ATTACKER
            alerts.append(a)
        env.write([("alert", a) for a in alerts])
        inc = env.client.post(
            "/api/incidents",
            headers=prov,
            json={"title": f"incident at {ent}", "alert_ids": [a["event.id"] for a in alerts]},
        )
        assert inc.status_code == 201, inc.text
        iid = inc.json()["id"]
        out["incident"].setdefault(ent, []).append(iid)
        rep = env.client.post(
            f"/api/incidents/{iid}/reports", headers=prov, json={"kind": "first"}
        ).json()
        out["report"].setdefault(ent, []).append(rep["id"])
        att = env.client.post(
            f"/api/incidents/{iid}/attachments",
            headers=prov,
            json={"name": "pcap.txt", "data": base64.b64encode(b"x").decode()},
        ).json()
        out["attachment"].setdefault(ent, []).append(att["id"])
        ntc = env.client.post(
            "/api/notices",
            headers=prov,
            json={
                "subject_kind": "incident",
                "subject_ref": iid,
                "enterprise": ent,
                "title": f"notice to {ent}",
                "actions": ["fix"],
            },
        )
        assert ntc.status_code == 201, ntc.text
        out["notice"].setdefault(ent, []).append(ntc.json()["id"])
    env.client.post("/api/campaigns/detect", headers=prov, json={"hours": 6})
    camps = env.client.get("/api/campaigns", headers=prov).json()["items"]
    assert len(camps) == 1
    for ent in camps[0]["enterprises"]:
        out["campaign"].setdefault(ent, []).append(camps[0]["id"])
    # Early warnings to the sectors of the two principals' enterprises.
    industry = {r["enterprise"]: r["industry"] for r in rows}
    for ent in ents[:2]:
        w = env.client.post(
            "/api/warnings",
            headers=prov,
            json={
                "level": "yellow",
                "title": f"warning for {industry[ent]}",
                "industries": [industry[ent]],
            },
        )
        assert w.status_code == 201, w.text
        for rcpt in w.json()["recipients"]:
            out["warning"].setdefault(rcpt["enterprise_id"], []).append(w.json()["id"])
    # Content pushed to each of those enterprises' sensors (signed; the transport is beside
    # the point here: tests/response/test_content_push_live.py goes through Kafka).
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from pipeline.control import Signer
    from response.content_push import CONTENT_UPDATE
    from response.db import Viewer

    signer = Signer(Ed25519PrivateKey.generate())
    desk = env.client.app.state.response  # type: ignore[attr-defined]
    for ent in ents:
        targets = [
            {"name": name, "site": r["site"], "enterprise": ent, "city": r["city"]}
            for r in rows
            if r["enterprise"] == ent
            for name in r["sensors"]
        ]
        push_id = desk.pushes.push(
            Viewer("soc", "province-analyst", None, None),
            f"enterprise:{ent}",
            targets,
            lambda sensor, payload: signer.envelope(CONTENT_UPDATE, sensor, payload),
        )
        out["content-push"].setdefault(ent, []).append(push_id)
    return out


def visible_enterprises(env: Env, who: str, kind: str) -> set[str]:
    role, scope = env.principals[who]
    rows = seed.registry_sites(env.registry)
    if role == "province-analyst":
        return {r["enterprise"] for r in rows}
    if role == "city-analyst":
        return {r["enterprise"] for r in rows if r["city"] == scope}
    if kind in ("notice", "warning", "content-push"):
        return {scope}
    return set()  # enterprises see no incidents, reports, campaigns


def foreign_ids(env: Env, who: str, kind: str, leak: bool = False) -> list[str]:
    """Objects ``who`` may not open; with ``leak``, those of other tenants only (an
    enterprise may read the reference of its own incident on its notice, not open it)."""
    mine = visible_enterprises(env, who, kind)
    role, scope = env.principals[who]
    if leak and role.startswith("enterprise-"):
        mine = {scope}
    objects = env.objects[kind]  # type: ignore[attr-defined]
    if kind in ("campaign", "warning"):
        # Visible when any of its enterprises (recipients) is.
        ids = {i for ids in objects.values() for i in ids}
        seen = {i for e, ids in objects.items() if e in mine for i in ids}
        return sorted(ids - seen)
    if kind == "attachment" and role.startswith("enterprise-") and not leak:
        return sorted({i for ids in objects.values() for i in ids})
    return sorted({i for e, ids in objects.items() if e not in mine for i in ids})


@pytest.mark.parametrize("who", WHO)
@pytest.mark.parametrize("kind", list(OBJECT_ROUTES))
def test_foreign_response_objects_answer_like_missing_ones(env: Env, who: str, kind: str) -> None:
    targets = foreign_ids(env, who, kind)
    if who in ("city_a", "city_b", "ent_a_op", "ent_b_op") and kind not in ("campaign", "warning"):
        assert targets, f"{who} must have foreign {kind}s to try"
    for method, path, body in OBJECT_ROUTES[kind]:
        ref = env.client.request(
            method, path.replace("{id}", MISSING[kind]), headers=env.h(who), json=body
        )
        assert ref.status_code == 404, (who, method, path, ref.text)
        for target in targets:
            r = env.client.request(
                method, path.replace("{id}", target), headers=env.h(who), json=body
            )
            assert (r.status_code, r.json()) == (404, ref.json()), (
                f"{who} {method} {path} {target}: {r.status_code} {r.text[:200]}"
            )


HOME_GETS = [
    "/api/warnings",
    "/api/incidents",
    "/api/notices",
    "/api/campaigns",
    "/api/response/audit",
    "/api/response/policy",
    "/api/notices/stats",
    "/api/content/fleet",
    "/api/content/pushes",
]


@pytest.mark.parametrize("who", WHO)
@pytest.mark.parametrize("path", HOME_GETS)
def test_response_listings_hold_no_foreign_identifiers(env: Env, who: str, path: str) -> None:
    r = env.client.get(path, headers=env.h(who))
    role = env.principals[who][0]
    if path == "/api/notices/stats" and role.startswith("enterprise-"):
        assert r.status_code == 404
        return
    assert r.status_code == 200, r.text
    body = r.text
    for kind in ("incident", "notice", "report", "attachment", "warning", "content-push"):
        for oid in foreign_ids(env, who, kind, leak=True):
            assert oid not in body, (who, path, kind, oid)
    rows = seed.registry_sites(env.registry)
    mine = env.sites_of(who)
    leaked = [
        r["site"]
        for r in rows
        if r["site"] not in mine and re.search(rf'"{re.escape(r["site"])}"', body)
    ]
    ents_mine = {r["enterprise"] for r in rows if r["site"] in mine}
    leaked_ents = sorted(
        {
            r["enterprise"]
            for r in rows
            if r["enterprise"] not in ents_mine
            and re.search(rf'"{re.escape(r["enterprise"])}"', body)
        }
    )
    if role == "province-analyst":
        return
    if path == "/api/campaigns" and role == "city-analyst":
        # A city sees how many enterprises a campaign reached, never which outside its city.
        assert not leaked and not leaked_ents, (who, leaked, leaked_ents)
        return
    assert not leaked and not leaked_ents, (who, path, leaked[:3], leaked_ents[:3])


@pytest.mark.parametrize("who", [w for w in WHO if w != "province"])
def test_province_only_routes_answer_not_found_to_others(env: Env, who: str) -> None:
    h = env.h(who)
    for method, path, body in [
        ("GET", "/api/allowlist", None),
        ("POST", "/api/allowlist", {"value": "1.2.3.4", "reason": "x"}),
        ("DELETE", "/api/allowlist?value=1.2.3.4", None),
        ("GET", "/api/watchlist", None),
        ("DELETE", "/api/watchlist/wl-x", None),
        ("GET", "/api/response/audit/verify", None),
        ("GET", "/api/content", None),
        ("GET", "/api/content/rules", None),
        ("POST", "/api/content/rules", {"yaml": "title: x", "policy": "central"}),
        ("DELETE", "/api/content/rules/x", None),
    ]:
        r = env.client.request(method, path, headers=h, json=body)
        assert r.status_code == 404, (who, method, path, r.text)
    r = env.client.post("/api/watchlist/import", headers=h, content=b"{}")
    assert r.status_code == 404
    r = env.client.post("/api/campaigns/detect", headers=h, json={})
    assert r.status_code in (403,)


def test_only_the_province_and_cities_push_content_and_only_within_their_own(env: Env) -> None:
    rows = seed.registry_sites(env.registry)
    own = rows[[r["site"] for r in rows].index(sorted(env.sites_of("ent_a_op"))[0])]
    for who in ("ent_a_op", "ent_a_view", "ent_b_op"):
        r = env.client.post(
            "/api/content/push", headers=env.h(who), json={"scope": f"site:{own['site']}"}
        )
        assert r.status_code == 403, (who, r.text)
    city_a = env.principals["city_a"][1]
    foreign = next(r for r in rows if r["city"] != city_a)
    for scope in ("province", f"city:{foreign['city']}", f"enterprise:{foreign['enterprise']}"):
        r = env.client.post("/api/content/push", headers=env.h("city_a"), json={"scope": scope})
        assert r.status_code == 404, (scope, r.text)
    mine = next(r for r in rows if r["city"] == city_a)
    for who, scope in (("city_a", f"site:{mine['site']}"), ("province", "province")):
        # allowed; this server has no control key, so nothing can be sent
        r = env.client.post("/api/content/push", headers=env.h(who), json={"scope": scope})
        assert r.status_code == 503, (who, r.text)
    r = env.client.post(
        "/api/content/push", headers=env.h("province"), json={"scope": "industry:x"}
    )
    assert r.status_code == 422


def test_enterprise_users_cannot_open_incidents_or_issue_notices(env: Env) -> None:
    alert = next(a for a in env.docs["alert"] if a["labels.site"] in env.sites_of("ent_a_op"))
    for who in ("ent_a_op", "ent_a_view"):
        r = env.client.post(
            "/api/incidents",
            headers=env.h(who),
            json={"title": "x", "alert_ids": [alert["event.id"]]},
        )
        assert r.status_code == 403
        r = env.client.post(
            "/api/notices",
            headers=env.h(who),
            json={
                "subject_kind": "finding",
                "subject_ref": "x",
                "enterprise": "ent-0001",
                "title": "x",
                "actions": ["x"],
            },
        )
        assert r.status_code == 403
        assert env.client.get("/api/incidents", headers=env.h(who)).json()["total"] == 0
    # A city analyst cannot issue to another city's enterprise: it does not exist for them.
    other = env.principals["ent_b_op"][1]
    r = env.client.post(
        "/api/notices",
        headers=env.h("city_a"),
        json={
            "subject_kind": "finding",
            "subject_ref": "x",
            "enterprise": other,
            "title": "x",
            "actions": ["x"],
        },
    )
    assert r.status_code == 404
    # ... nor use another city's alert in an incident.
    alert_b = next(a for a in env.docs["alert"] if a["labels.site"] in env.sites_of("ent_b_op"))
    r = env.client.post(
        "/api/incidents",
        headers=env.h("city_a"),
        json={"title": "x", "alert_ids": [alert_b["event.id"]]},
    )
    assert r.status_code == 404
