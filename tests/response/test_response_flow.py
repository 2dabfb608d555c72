"""The response loop through the posture API on the embedded store: incidents graded by the
policy with the reporting clock and reports, notices with their state machine, automatic
verification from telemetry, escalation, closure rates, the append-only audit trail and
webhook notifications of each change."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from posture import seed
from response.policy import load_policy
from tests.support.posture import Env, make_env


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    e = make_env(tmp_path_factory.mktemp("response"), n_alerts=400)
    yield e
    e.close()


def site_rows(env: Env) -> list[dict[str, Any]]:
    return seed.registry_sites(env.registry)


def fresh_alerts(
    env: Env,
    site: str,
    n: int,
    tag: int,
    *,
    src: str | None = None,
    ts: float | None = None,
    rule: int = 0,
) -> list[dict[str, Any]]:
    """``n`` new alerts at ``site`` (written to the store), optionally from ``src``."""
    rows = site_rows(env)
    idx = next(i for i, r in enumerate(rows) if r["site"] == site)
    out = []
    base = time.time() - 600 if ts is None else ts
    for k in range(n):
        alert, _ = seed.make_alert(
            rows[idx], idx, base + k, seed.RULES[rule], 50_000 + k, seed=tag, with_events=False
        )
        if src:
            alert["source.ip"] = src
        out.append(alert)
    env.write([("alert", a) for a in out])
    return out


def events_at(env: Env, site: str, ts: float, n: int = 3, tag: int = 0) -> None:
    rows = site_rows(env)
    idx = next(i for i, r in enumerate(rows) if r["site"] == site)
    docs = []
    for k in range(n):
        _, evs = seed.make_alert(rows[idx], idx, ts + k, seed.RULES[2], 70_000 + k, seed=tag)
        docs += [("event", e) for e in evs]
    env.write(docs)


def ent_site(env: Env, who: str) -> str:
    return sorted(env.sites_of(who))[0]


def test_incident_graded_by_policy_with_the_rule_shown(env: Env) -> None:
    site = ent_site(env, "ent_a_op")
    alerts = fresh_alerts(env, site, 3, tag=1)
    r = env.client.post(
        "/api/incidents",
        headers=env.h("province"),
        json={
            "title": "Writes from an unknown master",
            "alert_ids": [a["event.id"] for a in alerts],
        },
    )
    assert r.status_code == 201, r.text
    inc = r.json()
    assert inc["state"] == "open" and inc["alerts"] == 3
    assert inc["grade"]["level"] == "general" and inc["grade"]["rule"] == "any-incident"
    assert not inc["clock"]["reportable"]  # below 较大: nothing to report upward
    # Alerts link to their incident and back.
    detail = env.client.get(f"/api/alerts/{alerts[0]['event.id']}", headers=env.h("province"))
    assert detail.json()["incident"]["id"] == inc["id"]
    assert {a["alert_id"] for a in inc["alert_list"]} == {a["event.id"] for a in alerts}
    # An alert belongs to one incident only.
    again = env.client.post(
        "/api/incidents",
        headers=env.h("province"),
        json={"title": "dup", "alert_ids": [alerts[0]["event.id"]]},
    )
    assert again.status_code == 422 and "already belongs" in again.json()["detail"]

    # Impact facts: the critical-infrastructure rule decides, shown with its conditions.
    r = env.client.post(
        f"/api/incidents/{inc['id']}/facts",
        headers=env.h("province"),
        json={"facts": {"critical_infrastructure": True, "cii_outage_hours": 7}},
    )
    assert r.status_code == 200, r.text
    grade = r.json()
    assert grade["level"] == "especially-major" and grade["zh"] == "特别重大"
    assert grade["rule"] == "cii-full-outage-6h" and grade["verified"] is True
    assert {c["test"] for c in grade["conditions"]} == {
        "critical_infrastructure == True",
        "cii_outage_hours >= 6.0",
    }
    inc = env.client.get(f"/api/incidents/{inc['id']}", headers=env.h("province")).json()
    deadlines = {d["id"]: d for d in inc["clock"]["deadlines"]}
    assert set(deadlines) == {"first-report-cii", "escalation-major"}
    start = inc["discovered_at"]
    assert deadlines["first-report-cii"]["due_at"] == pytest.approx(start + 3600)
    assert deadlines["escalation-major"]["due_at"] == pytest.approx(start + 1800)
    assert deadlines["first-report-cii"]["state"] == "pending"  # alerts 10 minutes old
    # 33 minutes in: past half of the hour (a warning) and past the 30-minute escalation.
    desk = env.client.app.state.response
    row = desk.db.one("SELECT * FROM incident WHERE id=?", (inc["id"],))
    later = {d["id"]: d["state"] for d in desk.incidents.clock(row, start + 33 * 60)["deadlines"]}
    assert later == {"first-report-cii": "warning", "escalation-major": "overdue"}
    audit = env.client.get(f"/api/incidents/{inc['id']}/audit", headers=env.h("province")).json()
    assert [e["action"] for e in audit][::-1][:3] == ["create", "grade", "facts"]
    assert {"from": "general", "to": "especially-major"} in [
        e["detail"].get("level") for e in audit
    ]


def test_unknown_fact_and_bad_values_are_refused(env: Env) -> None:
    inc = env.client.get("/api/incidents", headers=env.h("province")).json()["items"][0]
    for facts in ({"no_such_fact": 1}, {"cii_outage_hours": -1}, {"critical_infrastructure": 3}):
        r = env.client.post(
            f"/api/incidents/{inc['id']}/facts", headers=env.h("province"), json={"facts": facts}
        )
        assert r.status_code == 422, (facts, r.text)


def test_reports_first_items_then_final_and_the_clock(env: Env) -> None:
    site = ent_site(env, "ent_b_op")
    alerts = fresh_alerts(env, site, 2, tag=2)
    inc = env.client.post(
        "/api/incidents",
        headers=env.h("province"),
        json={
            "title": "Force listen-only",
            "alert_ids": [a["event.id"] for a in alerts],
            "facts": {"direct_loss_yuan": 6_000_000},
        },
    ).json()
    assert inc["grade"]["level"] == "relatively-major"
    assert inc["grade"]["rule"] == "direct-loss-5m" and inc["grade"]["verified"] is False
    first = env.client.post(
        f"/api/incidents/{inc['id']}/reports",
        headers=env.h("province"),
        json={"kind": "first", "fields": {"harm": "", "location": ""}},
    )
    assert first.status_code == 201, first.text
    rep = first.json()
    assert set(rep["missing"]) == {"harm", "location"}
    assert rep["fields"]["operator"]  # prefilled from the registry
    r = env.client.post(f"/api/reports/{rep['id']}/submit", headers=env.h("province"))
    assert r.status_code == 422 and "harm" in r.json()["detail"]
    env.client.post(
        f"/api/reports/{rep['id']}",
        headers=env.h("province"),
        json={"fields": {"harm": "PLC in listen-only mode", "location": "济南"}},
    )
    r = env.client.post(f"/api/reports/{rep['id']}/submit", headers=env.h("province"))
    assert r.status_code == 200, r.text
    assert r.json()["submitted_at"]
    # A first report with only its first items is a submitted report: the clock is met.
    clock = env.client.get(f"/api/incidents/{inc['id']}", headers=env.h("province")).json()["clock"]
    first_dl = next(d for d in clock["deadlines"] if d["report"] == "first")
    assert first_dl["state"] == "met" and first_dl["id"].startswith("first-report")
    # Submitted reports never change.
    r = env.client.post(
        f"/api/reports/{rep['id']}",
        headers=env.h("province"),
        json={"fields": {"harm": "rewritten"}},
    )
    assert r.status_code == 409
    doc = env.client.get(f"/api/reports/{rep['id']}", headers=env.h("province")).json()
    assert doc["document"] == "icsmon.incident-report" and doc["status"] == "submitted"
    assert [f["id"] for f in doc["fields"]][:3] == ["operator", "facility", "discovered_at"]
    assert next(f for f in doc["fields"] if f["id"] == "harm")["value"] == "PLC in listen-only mode"
    pdf = env.client.get(f"/api/reports/{rep['id']}/pdf", headers=env.h("province"))
    assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF-")
    assert pdf.headers["content-type"] == "application/pdf"
    # Final report: after resolution, within working days, needs the final items too.
    for to in ("investigating", "resolved"):
        assert (
            env.client.post(
                f"/api/incidents/{inc['id']}/transition", headers=env.h("province"), json={"to": to}
            ).status_code
            == 200
        )
    clock = env.client.get(f"/api/incidents/{inc['id']}", headers=env.h("province")).json()["clock"]
    assert any(d["id"] == "final-report" and d["state"] == "pending" for d in clock["deadlines"])
    final = env.client.post(
        f"/api/incidents/{inc['id']}/reports", headers=env.h("province"), json={"kind": "final"}
    ).json()
    assert {"measures", "cause"} <= set(final["missing"])
    assert "ransom" not in final["missing"]


def test_illegal_incident_transitions_are_refused(env: Env) -> None:
    inc = env.client.get("/api/incidents", headers=env.h("province")).json()["items"][-1]
    r = env.client.post(
        f"/api/incidents/{inc['id']}/transition", headers=env.h("province"), json={"to": "resolved"}
    )
    assert inc["state"] == "open" and r.status_code == 409
    r = env.client.post(
        f"/api/incidents/{inc['id']}/transition", headers=env.h("province"), json={"to": "closed"}
    )
    assert r.status_code == 422  # closing an uninvestigated incident needs a note
    r = env.client.post(
        f"/api/incidents/{inc['id']}/transition",
        headers=env.h("province"),
        json={"to": "no-such-state"},
    )
    assert r.status_code == 409


def test_notice_loop_with_automatic_verification(env: Env) -> None:
    site = ent_site(env, "ent_a_op")
    alerts = fresh_alerts(env, site, 2, tag=3, src="198.51.100.23", rule=0)
    inc = env.client.post(
        "/api/incidents",
        headers=env.h("city_a"),
        json={"title": "Unknown master", "alert_ids": [a["event.id"] for a in alerts]},
    )
    assert inc.status_code == 201, inc.text
    inc = inc.json()
    body = {
        "subject_kind": "incident",
        "subject_ref": inc["id"],
        "enterprise": "ent-0001",
        "title": "整改：未知主站写入",
        "actions": ["Remove the unlisted master", "Restrict writes to the engineering station"],
        "working_days": 5,
    }
    # Enterprises answer; they never issue.
    assert env.client.post("/api/notices", headers=env.h("ent_a_op"), json=body).status_code == 403
    r = env.client.post("/api/notices", headers=env.h("city_a"), json=body)
    assert r.status_code == 201, r.text
    notice = r.json()
    nid = notice["id"]
    assert notice["state"] == "issued" and notice["indicators"]["source.ip"] == ["198.51.100.23"]
    assert notice["deadline"] > time.time() + 5 * 86400 - 86400
    # Illegal transitions: the enterprise cannot verify, nor skip ahead; the city cannot answer.
    h_ent, h_city = env.h("ent_a_op"), env.h("city_a")
    assert (
        env.client.post(
            f"/api/notices/{nid}/transition", headers=h_ent, json={"to": "verified"}
        ).status_code
        == 409
    )
    assert (
        env.client.post(
            f"/api/notices/{nid}/transition", headers=h_ent, json={"to": "in-progress"}
        ).status_code
        == 409
    )
    assert (
        env.client.post(
            f"/api/notices/{nid}/transition", headers=h_city, json={"to": "acknowledged"}
        ).status_code
        == 403
    )
    assert (
        env.client.post(
            f"/api/notices/{nid}/reply", headers=h_ent, json={"text": "done"}
        ).status_code
        == 409
    )  # not acknowledged yet
    assert (
        env.client.post(
            f"/api/notices/{nid}/transition",
            headers=env.h("ent_a_view"),
            json={"to": "acknowledged"},
        ).status_code
        == 403
    )
    # Another enterprise does not even see it.
    assert env.client.get(f"/api/notices/{nid}", headers=env.h("ent_b_op")).status_code == 404
    for to in ("acknowledged", "in-progress"):
        r = env.client.post(f"/api/notices/{nid}/transition", headers=h_ent, json={"to": to})
        assert r.status_code == 200 and r.json()["state"] == to
    import base64

    r = env.client.post(
        f"/api/notices/{nid}/reply",
        headers=h_ent,
        json={
            "text": "Master removed, ACL on the PLC",
            "attachments": [
                {
                    "name": "acl.txt",
                    "content_type": "text/plain",
                    "data": base64.b64encode(b"permit 10.0.0.5 only").decode(),
                }
            ],
        },
    )
    assert r.status_code == 200, r.text
    notice = r.json()
    assert notice["state"] == "submitted" and notice["replies"][0]["attachments"][0]["size"] == 20
    att = notice["replies"][0]["attachments"][0]["id"]
    got = env.client.get(f"/api/attachments/{att}", headers=h_city)
    assert got.status_code == 200 and got.content == b"permit 10.0.0.5 only"
    assert env.client.get(f"/api/attachments/{att}", headers=env.h("ent_b_op")).status_code == 404
    # No telemetry since the reply: no automatic verification yet.
    offer = env.client.get(f"/api/notices/{nid}/verification", headers=h_city).json()
    assert offer == offer | {"available": False, "reason": "no-telemetry-since-reply"}
    r = env.client.post(f"/api/notices/{nid}/verify", headers=h_city, json={"use_telemetry": True})
    assert r.status_code == 422
    # The attacker again: still observed.
    t = time.time()
    fresh_alerts(env, site, 1, tag=4, src="198.51.100.23", ts=t)
    events_at(env, site, t, tag=4)
    time.sleep(0.01)  # the second reply comes after that alert
    offer = env.client.get(f"/api/notices/{nid}/verification", headers=h_city).json()
    assert offer["reason"] == "still-observed" and offer["supports"]["matching_alerts"] == 1
    # Reject, the enterprise works again and answers; clean traffic follows.
    r = env.client.post(
        f"/api/notices/{nid}/transition",
        headers=h_city,
        json={"to": "rejected", "note": "still writing"},
    )
    assert r.status_code == 200
    env.client.post(f"/api/notices/{nid}/transition", headers=h_ent, json={"to": "in-progress"})
    env.client.post(f"/api/notices/{nid}/reply", headers=h_ent, json={"text": "Second fix"})
    time.sleep(0.01)
    events_at(env, site, time.time() + 1, tag=5)
    offer = env.client.get(f"/api/notices/{nid}/verification", headers=h_city).json()
    assert offer["available"] is True and offer["reason"] == "confirmed"
    assert offer["supports"]["events_since_reply"] >= 1
    assert offer["supports"]["matching_alerts"] == 0
    assert (
        env.client.post(
            f"/api/notices/{nid}/verify", headers=h_ent, json={"use_telemetry": True}
        ).status_code
        == 403
    )
    r = env.client.post(f"/api/notices/{nid}/verify", headers=h_city, json={"use_telemetry": True})
    assert r.status_code == 200 and r.json()["state"] == "verified"
    r = env.client.post(f"/api/notices/{nid}/transition", headers=h_city, json={"to": "closed"})
    assert r.json()["state"] == "closed"
    trail = [(e["action"], e["from_state"], e["to_state"]) for e in reversed(r.json()["audit"])]
    assert trail == [
        ("issue", None, "issued"),
        ("acknowledge", "issued", "acknowledged"),
        ("start", "acknowledged", "in-progress"),
        ("submit", "in-progress", "submitted"),
        ("reject", "submitted", "rejected"),
        ("start", "rejected", "in-progress"),
        ("submit", "in-progress", "submitted"),
        ("verify", "submitted", "verified"),
        ("close", "verified", "closed"),
    ]
    verify = next(e for e in r.json()["audit"] if e["action"] == "verify")
    assert verify["detail"]["method"] == "telemetry"
    assert verify["detail"]["supports"]["matching_alerts"] == 0
    assert (
        env.client.post(
            f"/api/notices/{nid}/transition", headers=h_city, json={"to": "issued"}
        ).status_code
        == 409
    )


def test_overdue_escalation_and_closure_rates(env: Env) -> None:
    desk = env.client.app.state.response
    body = {
        "subject_kind": "advisory",
        "subject_ref": "ICSA-25-100-01@plc-1",
        "enterprise": "ent-0001",
        "title": "Firmware affected by an advisory",
        "actions": ["Update the firmware"],
        "working_days": 2,
    }
    nid = env.client.post("/api/notices", headers=env.h("province"), json=body).json()["id"]
    row = desk.db.one("SELECT deadline FROM notice WHERE id=?", (nid,))
    assert all(c["id"] != nid for c in desk.notices.escalate(row["deadline"] - 10))
    changed = desk.notices.escalate(row["deadline"] + 10)
    assert {"id": nid, "escalation": "city"} in changed
    far = desk.calendar.add_working_days(row["deadline"], 4)
    assert {"id": nid, "escalation": "province"} in desk.notices.escalate(far)
    assert all(c["id"] != nid for c in desk.notices.escalate(far + 86400))  # never twice
    # Seen as overdue by the city; stats per city and industry.
    overdue = env.client.get(
        "/api/notices", params={"overdue": "true"}, headers=env.h("city_a")
    ).json()
    assert overdue["total"] == 0  # not overdue yet in real time
    stats = env.client.get("/api/notices/stats", headers=env.h("province")).json()
    city = env.principals["city_a"][1]
    row_city = next(c for c in stats["by_city"] if c["id"] == city)
    assert row_city["issued"] >= 2 and row_city["closed"] >= 1
    assert 0 < row_city["closure_rate"] < 1
    assert stats["by_industry"] and stats["total"]["issued"] >= 2
    city_stats = env.client.get("/api/notices/stats", headers=env.h("city_b")).json()
    assert all(c["id"] == env.principals["city_b"][1] for c in city_stats["by_city"])
    assert env.client.get("/api/notices/stats", headers=env.h("ent_a_op")).status_code == 404


def test_audit_trail_is_append_only(env: Env, tmp_path: Path) -> None:
    desk = env.client.app.state.response
    before = desk.db.verify_audit()
    assert before["ok"] and before["entries"] > 10
    alert = env.docs["alert"][0]["event.id"]  # an entry in the alert workflow's trail too
    assert (
        env.client.post(
            f"/api/alerts/{alert}/acknowledge", headers=env.h("province"), json={}
        ).status_code
        == 200
    )
    conn = sqlite3.connect(str(desk.db.path))
    for sql in (
        "UPDATE response_audit SET actor='x'",
        "DELETE FROM response_audit",
        "UPDATE audit SET actor='x'",
        "DELETE FROM audit",
    ):
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            conn.execute(sql)
    conn.close()
    # No route changes an audit entry: every method on every audit path is refused.
    paths = ["/api/response/audit", "/api/audit"]
    inc = env.client.get("/api/incidents", headers=env.h("province")).json()["items"][0]["id"]
    paths.append(f"/api/incidents/{inc}/audit")
    for path in paths:
        for method in ("PUT", "PATCH", "DELETE", "POST"):
            r = env.client.request(method, path, headers=env.h("province"), json={})
            assert r.status_code in (404, 405), (method, path, r.status_code)
    assert desk.db.verify_audit()["entries"] == before["entries"]
    # A copy edited behind the triggers' back shows in the hash chain.
    copy = tmp_path / "copy.db"
    src = sqlite3.connect(str(desk.db.path))
    src.backup(dst := sqlite3.connect(str(copy)))
    src.close()
    dst.execute("DROP TRIGGER response_audit_no_update")
    dst.execute("UPDATE response_audit SET actor='mallory' WHERE seq=2")
    dst.commit()
    dst.close()
    from response.db import ResponseDB

    tampered = ResponseDB(copy)
    assert tampered.verify_audit() == {"ok": False, "entries": 1, "broken_at": 2}
    tampered.close()


def test_every_state_change_reaches_the_webhooks_of_its_tenant(env: Env) -> None:
    hooks = {}
    for who, scope in (("ent_a_op", "enterprise:ent-0001"), ("ent_b_op", None)):
        role, ent = env.principals[who]
        r = env.client.post(
            "/api/webhooks",
            headers=env.h(who),
            json={"scope": scope or f"enterprise:{ent}", "url": "http://127.0.0.1:9/h"},
        )
        hooks[who] = r.json()["id"]
    nid = env.client.post(
        "/api/notices",
        headers=env.h("province"),
        json={
            "subject_kind": "advisory",
            "subject_ref": "CSAF ICSA-25-001-01",
            "enterprise": "ent-0001",
            "title": "Patch the PLC",
            "actions": ["Update firmware"],
        },
    ).json()["id"]
    env.client.post(
        f"/api/notices/{nid}/transition", headers=env.h("ent_a_op"), json={"to": "acknowledged"}
    )
    state = env.state
    mine = [
        json.loads(d["payload"])
        for d in state._rows(
            "SELECT payload FROM delivery WHERE webhook_id=? AND alert_id LIKE 'change-%'",
            (hooks["ent_a_op"],),
        )
    ]
    types = [m["type"] for m in mine if m["object"]["id"] == nid]
    assert types == ["icsmon.notice.issue", "icsmon.notice.acknowledge"]
    assert all(m["enterprises"] == ["ent-0001"] for m in mine)
    other = state._rows("SELECT payload FROM delivery WHERE webhook_id=?", (hooks["ent_b_op"],))
    assert not [d for d in other if nid in d["payload"]]
    # a content push to the enterprise's sensors reaches its webhook, not the other's
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from pipeline.control import Signer
    from response.content_push import CONTENT_UPDATE
    from response.db import Viewer

    signer = Signer(Ed25519PrivateKey.generate())
    row = next(r for r in seed.registry_sites(env.registry) if r["enterprise"] == "ent-0001")
    push_id = env.client.app.state.response.pushes.push(
        Viewer("soc", "province-analyst", None, None),
        "enterprise:ent-0001",
        [
            {
                "name": row["sensors"][0],
                "site": row["site"],
                "enterprise": "ent-0001",
                "city": row["city"],
            }
        ],
        lambda sensor, payload: signer.envelope(CONTENT_UPDATE, sensor, payload),
    )
    mine = [
        json.loads(d["payload"])
        for d in state._rows(
            "SELECT payload FROM delivery WHERE webhook_id=?", (hooks["ent_a_op"],)
        )
    ]
    assert [m["type"] for m in mine if m["object"]["id"] == push_id] == ["icsmon.content-push.push"]
    other = state._rows("SELECT payload FROM delivery WHERE webhook_id=?", (hooks["ent_b_op"],))
    assert not [d for d in other if push_id in d["payload"]]


def test_policy_file_errors_name_the_file(tmp_path: Path) -> None:
    from response.policy import PolicyError

    bad = tmp_path / "p.yaml"
    bad.write_text("levels: [{id: x, rules: [{id: r, when: {nope: '>= 1'}}]}]\nfacts: {}\n")
    with pytest.raises(PolicyError, match=r"p\.yaml: levels\[0\]\.rules\[0\]: unknown fact 'nope'"):
        load_policy(bad)
    bad.write_text(
        "facts: {a: {type: number}}\nlevels: [{id: x, rules: [{id: r, when: {a: 'about 3'}}]}]\n"
    )
    with pytest.raises(PolicyError, match="must be like"):
        load_policy(bad)


def test_registry_facts_prefer_the_registered_grade() -> None:
    policy = load_policy()
    assert policy.registry_facts([3], [3]) == {
        "critical_infrastructure": False,
        "enterprise_grade": 3,
    }
    assert policy.registry_facts([3], [None]) == {
        "critical_infrastructure": False,
        "enterprise_grade": 2,
    }
    assert policy.registry_facts([5, 2], [1, None])["critical_infrastructure"] is True
    grade = policy.grade({**policy.registry_facts([3], [3]), "main_function_outage_hours": 1})
    assert (grade["level"], grade["rule"]) == ("relatively-major", "grade-3-enterprise-hit")
