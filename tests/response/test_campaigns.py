"""Campaigns across enterprises, the allowlist, the watchlist and STIX 2.1 sharing."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
import stix2

from posture import seed
from tests.support.posture import BACKEND_PARAMS, Env, make_env

ATTACKER = "203.0.113.77"  # TEST-NET-3: documents only, no traffic is sent anywhere


@pytest.fixture()
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    e = make_env(tmp_path_factory.mktemp("campaigns"), n_alerts=200)
    yield e
    e.close()


# Detection groups indicator values in the back end (an aggregation): the address and the
# written-values campaigns run on each back end.
@pytest.fixture(params=BACKEND_PARAMS)
def any_env(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Env]:
    e = make_env(tmp_path_factory.mktemp("campaigns"), backend=request.param, n_alerts=200)
    yield e
    e.close()


def hit(
    env: Env,
    enterprise: str,
    ts: float,
    n: int,
    tag: int,
    src: str = ATTACKER,
    rule: int = 0,
    extra: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    rows = seed.registry_sites(env.registry)
    idx, row = next((i, r) for i, r in enumerate(rows) if r["enterprise"] == enterprise)
    out = []
    for k in range(n):
        alert, _ = seed.make_alert(
            row, idx, ts + k * 60, seed.RULES[rule], 90_000 + k, seed=tag, with_events=False
        )
        alert["source.ip"] = src
        alert.update(extra or {})
        out.append(alert)
    env.write([("alert", a) for a in out])
    return out


def three_enterprises_two_cities(env: Env) -> list[str]:
    rows = seed.registry_sites(env.registry)
    city_a = rows[0]["city"]
    in_a = sorted({r["enterprise"] for r in rows if r["city"] == city_a})
    other = next(r for r in rows if r["city"] != city_a)
    assert len(in_a) >= 2, "the test registry puts two enterprises in the first city"
    return [in_a[0], in_a[1], other["enterprise"]]


def detect(env: Env, hours: float = 24) -> dict[str, Any]:
    r = env.client.post("/api/campaigns/detect", headers=env.h("province"), json={"hours": hours})
    assert r.status_code == 200, r.text
    return r.json()


def test_one_address_three_enterprises_two_cities_is_one_campaign(any_env: Env) -> None:
    env = any_env
    ents = three_enterprises_two_cities(env)
    t0 = time.time() - 5 * 3600
    for i, ent in enumerate(ents):
        hit(env, ent, t0 + i * 2 * 3600, 2, tag=i)  # 0 h, 2 h, 4 h: inside 6 h
    got = detect(env)
    assert len(got["new"]) == 1, got
    camps = env.client.get("/api/campaigns", headers=env.h("province")).json()["items"]
    assert len(camps) == 1
    c = camps[0]
    assert c["kind"] == "source-ip" and c["indicator"] == ATTACKER
    assert sorted(c["enterprises"]) == sorted(ents) and len(c["cities"]) == 2
    assert c["alerts"] == 6
    detail = env.client.get(f"/api/campaigns/{c['id']}", headers=env.h("province")).json()
    assert [x["at"] for x in detail["timeline"]] == sorted(x["at"] for x in detail["timeline"])
    assert detail["industries"] and detail["techniques"] == ["T0855"]
    # Detecting again changes nothing; a fourth enterprise extends the same campaign.
    assert detect(env) == {"scanned": got["scanned"], "new": [], "extended": [c["id"]]}
    rows = seed.registry_sites(env.registry)
    fourth = next(r["enterprise"] for r in rows if r["enterprise"] not in ents)
    hit(env, fourth, t0 + 5 * 3600, 1, tag=9)
    assert detect(env)["extended"] == [c["id"]]
    c = env.client.get(f"/api/campaigns/{c['id']}", headers=env.h("province")).json()
    assert len(c["enterprises"]) == 4
    audit = [e["action"] for e in c["audit"]]
    assert audit == ["extend", "detect"]
    # A city analyst sees the campaign cut to their city; an enterprise does not see it.
    city = rows[0]["city"]
    cut = env.client.get(f"/api/campaigns/{c['id']}", headers=env.h("city_a")).json()
    assert cut["cities"] == [city] and cut["enterprises_total"] == 4
    assert {x["city"] for x in cut["timeline"]} == {city}
    assert env.client.get(f"/api/campaigns/{c['id']}", headers=env.h("ent_a_op")).status_code == 404
    assert (
        env.client.post("/api/campaigns/detect", headers=env.h("city_a"), json={}).status_code
        == 403
    )


def test_same_written_values_from_each_plants_own_address_is_one_campaign(any_env: Env) -> None:
    """A write-pattern campaign: the attacker reaches each plant from a different inside
    address (no common source), writing the same registers with the same values."""
    env = any_env
    now = time.time()
    pattern = {
        "network.protocol": "modbus",
        "modbus.function_code": 16,
        "modbus.register.start": 4096,
        "modbus.values": [0, 65535, 17],
    }
    for i, ent in enumerate(three_enterprises_two_cities(env)):
        hit(env, ent, now - 3600 + i * 600, 2, 160 + i, src=f"10.9.{i}.5", extra=pattern)
    # the same registers with other values at a fourth enterprise: another pattern
    rows = seed.registry_sites(env.registry)
    fourth = next(
        r["enterprise"] for r in rows if r["enterprise"] not in three_enterprises_two_cities(env)
    )
    hit(env, fourth, now - 1800, 2, 170, src="10.9.9.5", extra={**pattern, "modbus.values": [1]})
    got = detect(env)
    campaigns = [
        env.client.get(f"/api/campaigns/{c}", headers=env.h("province")).json() for c in got["new"]
    ]
    writes = [c for c in campaigns if c["kind"] == "write-pattern"]
    assert len(writes) == 1, campaigns
    assert writes[0]["enterprises"] == sorted(three_enterprises_two_cities(env))
    assert "[0, 65535, 17]" in writes[0]["indicator"]
    # nothing else was read than the alerts behind the pattern (and no other indicator)
    assert got["scanned"] == 6


def test_repeats_inside_one_enterprise_make_none(env: Env) -> None:
    ent = three_enterprises_two_cities(env)[0]
    hit(env, ent, time.time() - 3600, 30, tag=1)
    assert detect(env)["new"] == []


def test_spread_wider_than_the_window_makes_none(env: Env) -> None:
    ents = three_enterprises_two_cities(env)
    t0 = time.time() - 20 * 3600
    for i, ent in enumerate(ents):
        hit(env, ent, t0 + i * 7 * 3600, 1, tag=i)  # 0 h, 7 h, 14 h
    assert detect(env)["new"] == []


def test_allowlisted_and_internal_addresses_make_none(env: Env) -> None:
    ents = three_enterprises_two_cities(env)
    t0 = time.time() - 3600
    for i, ent in enumerate(ents):
        hit(env, ent, t0 + i * 60, 1, tag=i, src="198.51.100.9")  # vendor remote access
        hit(env, ent, t0 + i * 60, 1, tag=10 + i, src="192.168.1.10")  # every plant's own
    r = env.client.post(
        "/api/allowlist",
        headers=env.h("province"),
        json={"value": "198.51.100.0/28", "reason": "vendor remote access"},
    )
    assert r.status_code == 201, r.text
    assert (
        env.client.post(
            "/api/allowlist", headers=env.h("city_a"), json={"value": "1.2.3.4", "reason": "x"}
        ).status_code
        == 404
    )
    assert detect(env)["new"] == []
    r = env.client.delete(
        "/api/allowlist", params={"value": "198.51.100.0/28"}, headers=env.h("province")
    )
    assert r.status_code == 204
    made = detect(env)["new"]
    assert len(made) == 1
    c = env.client.get(f"/api/campaigns/{made[0]}", headers=env.h("province")).json()
    assert c["indicator"] == "198.51.100.9"


def test_stix_export_validates_and_names_no_enterprise_unless_asked(env: Env) -> None:
    ents = three_enterprises_two_cities(env)
    t0 = time.time() - 3600
    for i, ent in enumerate(ents):
        hit(env, ent, t0 + i * 60, 2, tag=i)
    cid = detect(env)["new"][0]
    r = env.client.get(f"/api/campaigns/{cid}/stix", headers=env.h("province"))
    assert r.status_code == 200, r.text
    bundle = r.json()
    parsed = stix2.parse(json.dumps(bundle), allow_custom=False)  # valid STIX 2.1
    types = [o.type for o in parsed.objects]
    assert types.count("campaign") == 1 and "indicator" in types and "observed-data" in types
    ind = next(o for o in parsed.objects if o.type == "indicator")
    assert ind.pattern == f"[ipv4-addr:value = '{ATTACKER}']"
    ap = next(o for o in parsed.objects if o.type == "attack-pattern")
    assert ap.external_references[0].source_name == "mitre-ics-attack"
    assert ap.external_references[0].external_id == "T0855"
    assert ap.name == "Unauthorized Command Message"
    ids = [o for o in parsed.objects if o.type == "identity" and o.identity_class != "class"]
    names = {o.name for o in ids}
    ent_names = {e["name"] for c in env.registry["cities"] for e in c["enterprises"]}
    assert not names & ent_names  # only the producer, never an enterprise
    sectors = [o for o in parsed.objects if o.type == "identity" and o.identity_class == "class"]
    assert sectors and all(o.sectors for o in sectors)
    text = json.dumps(bundle, ensure_ascii=False)
    assert not any(e in text for e in ents)
    named = env.client.get(
        f"/api/campaigns/{cid}/stix",
        params={"include_enterprises": True},
        headers=env.h("province"),
    ).json()
    assert {o["name"] for o in named["objects"] if o["type"] == "identity"} & ent_names

    # Import into the watchlist (another province's bundle: ours, read back).
    r = env.client.post(
        "/api/watchlist/import", headers=env.h("province"), content=json.dumps(bundle)
    )
    assert r.status_code == 200, r.text
    assert r.json()["added"] == 1
    assert [
        w["value"] for w in env.client.get("/api/watchlist", headers=env.h("province")).json()
    ] == [ATTACKER]
    again = env.client.post(
        "/api/watchlist/import", headers=env.h("province"), content=json.dumps(bundle)
    ).json()
    assert again["added"] == 0
    bad = env.client.post("/api/watchlist/import", headers=env.h("province"), content=b"{not")
    assert bad.status_code == 422 and "not a STIX 2 bundle" in bad.json()["detail"]
    # The incident export too.
    inc = env.client.post(
        "/api/incidents",
        headers=env.h("province"),
        json={
            "title": "campaign at one plant",
            "alert_ids": [
                a["alert_id"]
                for a in env.client.get(f"/api/campaigns/{cid}", headers=env.h("province")).json()[
                    "timeline"
                ]
            ][:2],
        },
    ).json()
    b = env.client.get(f"/api/incidents/{inc['id']}/stix", headers=env.h("province")).json()
    objs = stix2.parse(json.dumps(b), allow_custom=False).objects
    assert [o.type for o in objs].count("incident") == 1
    assert any(o.type == "indicator" for o in objs)


def test_early_warning_to_the_enterprises_not_yet_hit(env: Env) -> None:
    ents = three_enterprises_two_cities(env)
    t0 = time.time() - 3600
    for i, ent in enumerate(ents):
        hit(env, ent, t0 + i * 60, 1, tag=i)
    cid = detect(env)["new"][0]
    rows = seed.registry_sites(env.registry)
    camp = env.client.get(f"/api/campaigns/{cid}", headers=env.h("province")).json()
    r = env.client.post(
        "/api/warnings",
        headers=env.h("province"),
        json={
            "level": "orange",
            "title": "Unlisted masters writing setpoints",
            "campaign": cid,
            "text": "Block 203.0.113.77 at the plant boundary; check Modbus write access.",
        },
    )
    assert r.status_code == 201, r.text
    w = r.json()
    got = {x["enterprise_id"]: x["reason"] for x in w["recipients"]}
    # Same sector or same vendor, never one already hit.
    industries = set(camp["industries"])
    site_vendor = {
        a["labels.site"]: a.get("ics.device.vendor")
        for a in env.docs["asset"]
        if a.get("ics.device.vendor")
    }
    hit_sites = {x["site"] for x in camp["timeline"]}
    hit_vendors = {site_vendor[s] for s in hit_sites if s in site_vendor}
    want = {
        r_["enterprise"]
        for r_ in rows
        if r_["enterprise"] not in ents
        and (r_["industry"] in industries or site_vendor.get(r_["site"]) in hit_vendors)
    }
    assert set(got) == want and want
    assert not set(got) & set(ents)
    assert set(w["industries"]) == industries and set(w["vendors"]) == hit_vendors
    assert all(v == "industry" or v.startswith("vendor:") for v in got.values())
    # Each recipient sees its own warning and no other recipient; others see nothing.
    recipient = sorted(got)[0]
    tok = env.state.create_token("rcpt", "enterprise-operator", recipient)
    h = {"Authorization": f"Bearer {tok}"}
    mine = env.client.get(f"/api/warnings/{w['id']}", headers=h).json()
    assert [x["enterprise_id"] for x in mine["recipients"]] == [recipient]
    assert mine["source"] == {"kind": "campaign"} and mine["recipients_total"] == 1
    assert env.client.get("/api/warnings", headers=h).json()["total"] == 1
    outsider = next(r_["enterprise"] for r_ in rows if r_["enterprise"] not in got)
    tok2 = env.state.create_token("out", "enterprise-operator", outsider)
    h2 = {"Authorization": f"Bearer {tok2}"}
    assert env.client.get(f"/api/warnings/{w['id']}", headers=h2).status_code == 404
    assert env.client.get("/api/warnings", headers=h2).json()["total"] == 0
    # Acknowledged once; a city cannot issue; the province lifts.
    r = env.client.post(f"/api/warnings/{w['id']}/acknowledge", headers=h)
    assert r.status_code == 200 and r.json()["recipients"][0]["acknowledged_by"] == "rcpt"
    assert env.client.post(f"/api/warnings/{w['id']}/acknowledge", headers=h).status_code == 409
    assert (
        env.client.post(
            "/api/warnings",
            headers=env.h("city_a"),
            json={"level": "red", "title": "x", "industries": ["chemicals"]},
        ).status_code
        == 403
    )
    assert (
        env.client.post(
            "/api/warnings",
            headers=env.h("province"),
            json={"level": "purple", "title": "x", "industries": ["chemicals"]},
        ).status_code
        == 422
    )
    r = env.client.post(
        f"/api/warnings/{w['id']}/lift", headers=env.h("province"), json={"note": "campaign over"}
    )
    assert r.json()["state"] == "lifted"
    audit = env.client.get(
        "/api/response/audit", params={"kind": "warning"}, headers=env.h("province")
    ).json()
    assert [e["action"] for e in audit] == ["lift", "acknowledge", "issue"]


def test_technique_sequence_campaign_when_enabled(env: Env) -> None:
    from response.policy import Indicator

    desk = env.client.app.state.response
    saved = list(desk.policy.indicators)
    desk.policy.indicators = [Indicator(kind="technique-sequence", min_length=3)]
    try:
        ents = three_enterprises_two_cities(env)
        t0 = time.time() - 2 * 3600
        for i, ent in enumerate(ents):
            for k, rule in enumerate((2, 0, 1)):  # discovery, write, force listen-only
                hit(
                    env,
                    ent,
                    t0 + i * 600 + k * 60,
                    1,
                    tag=100 + 10 * i + k,
                    src=f"10.9.{i}.5",
                    rule=rule,
                )
        made = detect(env)["new"]
        assert len(made) == 1
        c = env.client.get(f"/api/campaigns/{made[0]}", headers=env.h("province")).json()
        assert c["kind"] == "technique-sequence"
        assert c["indicator"] == "T0855>T0881>T0816"  # the discovery alert is below severity 40
        assert sorted(c["enterprises"]) == sorted(ents)
    finally:
        desk.policy.indicators = saved
