"""The assessment routes on both back ends (the embedded store, and the real Elasticsearch
with the findings, advisories and decisions kept there): findings, exposure, who is affected
by one advisory, the asset page; the risk folded into the posture score with its parts, and
resolving a finding, accepting one or closing a vulnerability raising the score and
lowering the risk."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from assessment import samples
from assessment.versions import parse_range, parse_version
from posture.scoring import RISK_MAX, RISK_SCALE
from tests.support.posture import BACKEND_PARAMS, Env, make_env


@pytest.fixture(params=BACKEND_PARAMS)
def env(request: pytest.FixtureRequest, tmp_path: Path) -> Env:
    e = make_env(tmp_path, request.param, n_alerts=300)
    yield e
    e.close()


def _get(env: Env, path: str, who: str = "province", **params: Any) -> Any:
    r = env.client.get(path, params=params, headers=env.h(who))
    assert r.status_code == 200, r.text
    return r.json()


def _enterprise_with_exposure(env: Env) -> tuple[str, dict[str, Any]]:
    """The enterprise of the first affected asset of ACME-2026-001 (a known-exploited one)."""
    d = _get(env, "/api/advisories/ACME-2026-001")
    asset = next(i for i in d["items"] if i["match"]["status"] == "affected")
    site = asset["labels"]["site"]
    ent = env.state.org().sites[site].enterprise_id
    return ent, asset


def test_assessment_findings_exposure_and_who_is_affected(env: Env) -> None:
    a = _get(env, "/api/assessment")
    assert a["advisories_loaded"] == len(samples.ROWS)
    assert a["findings"]["total"] == len(env.docs["finding"])
    assert {k["kind"] for k in a["findings"]["by_kind"]} == {
        d["finding.kind"] for d in env.docs["finding"]
    }
    assert abs(sum(a["risk"]["parts"].values()) - a["risk"]["risk"]) <= 0.3
    exposure = {r["advisory"]: r for r in a["exposure"]["advisories"]}
    assert exposure["ACME-2026-001"]["exploited"] and exposure["ACME-2026-001"]["affected"]

    d = _get(env, "/api/advisories/ACME-2026-001")
    rng = parse_range("vers:generic/>=2.0.0|<2.4.2")
    assert d["affected"] == exposure["ACME-2026-001"]["affected"]
    for item in d["items"]:
        firmware = item["ics"]["device"]["firmware"]
        inside = bool(firmware) and parse_version(firmware) in rng
        assert item["match"]["status"] == ("affected" if inside else "possibly-affected"), item
    assert sum(d["by_city"].values()) == d["affected"]
    assert d["identifiers"] == []  # the sample advisories name products, no CPE or purl
    # an enterprise sees its own part of the answer only
    ent, _ = _enterprise_with_exposure(env)
    mine = _get(env, "/api/advisories/ACME-2026-001", "ent_a_op")
    assert all(
        env.state.org().sites[i["labels"]["site"]].enterprise_id == "ent-0001"
        for i in mine["items"]
    )

    findings = _get(env, "/api/findings", limit=5000)
    assert findings["total"] == len(env.docs["finding"])
    assert {f["finding"]["state"] for f in findings["items"]} == {"open"}


def test_asset_page_has_findings_advisories_and_risk(env: Env) -> None:
    _ent, asset = _enterprise_with_exposure(env)
    page = _get(env, f"/api/assets/{asset['asset']['id']}")
    assert page["asset"]["asset"]["id"] == asset["asset"]["id"]
    advisories = {m["advisory"]["id"] for m in page["advisories"]}
    assert "ACME-2026-001" in advisories
    assert page["risk"]["risk"] > 0 and page["risk"]["advisories"] == len(advisories)
    mine = {d["finding.id"] for d in env.docs["finding"] if d["asset.id"] == asset["asset"]["id"]}
    assert {f["finding"]["id"] for f in page["findings"]} == mine
    # another tenant's asset answers like a missing one
    r = env.client.get(f"/api/assets/{asset['asset']['id']}", headers=env.h("ent_b_op"))
    if env.state.org().sites[asset["labels"]["site"]].enterprise_id != "ent-0002":
        assert r.status_code == 404


def _score(env: Env, scope: str) -> dict[str, Any]:
    return _get(env, "/api/summary", scope=scope, hours=24)["score"]


def _risk(env: Env, scope: str) -> float:
    return _get(env, "/api/assessment", scope=scope)["risk"]["risk"]


def test_risk_is_folded_into_the_score_with_its_parts(env: Env) -> None:
    ent, _ = _enterprise_with_exposure(env)
    s = _score(env, f"enterprise:{ent}")
    assert s["risk"] > 0 and set(s["risk_parts"]) == {"findings", "vulnerabilities", "exposure"}
    assert abs(sum(s["risk_parts"].values()) - s["risk"]) <= 0.25
    parts = s["alerts"] + s["deviations"] + s["sensor_health"] + s["risk"]
    assert s["score"] == pytest.approx(100 - parts, abs=0.25)
    # the documented formula: 25 x (1 - e^(-p / 50)), p the scope's pressures other than
    # alerts per site (assessment/risk.py), from the assessment of the same scope
    a = _get(env, "/api/assessment", scope=f"enterprise:{ent}")
    pressure = sum(v for k, v in a["risk"]["pressure"].items() if k != "alerts")
    import math

    assert s["risk"] == pytest.approx(RISK_MAX * (1 - math.exp(-pressure / RISK_SCALE)), abs=0.15)


def test_closing_a_vulnerability_or_a_finding_raises_the_score(env: Env) -> None:
    ent, asset = _enterprise_with_exposure(env)
    scope = f"enterprise:{ent}"
    data = env.client.app.state.assessment
    score0, risk0 = _score(env, scope), _risk(env, scope)

    # closing a vulnerability: the device now reports the fixed firmware
    fixed = next(d for d in env.docs["asset"] if d["asset.id"] == asset["asset"]["id"])
    fixed = dict(fixed, **{"ics.device.firmware": "3.0.0", "asset.last_seen": _iso(env.now)})
    env.write([("asset", fixed)])
    data.invalidate()
    score1, risk1 = _score(env, scope), _risk(env, scope)
    assert risk1 < risk0
    assert score1["risk_parts"]["vulnerabilities"] < score0["risk_parts"]["vulnerabilities"]
    assert score1["score"] > score0["score"]

    # accepting a finding with a reason (a user's decision, audited)
    fid = next(d["finding.id"] for d in env.docs["finding"] if d["organization.id"] == ent)
    r = env.client.post(
        f"/api/findings/{fid}/accept",
        json={"reason": "compensating control"},
        headers=env.h("province"),
    )
    assert r.status_code == 200
    score2, risk2 = _score(env, scope), _risk(env, scope)  # no wait: the decision resets it
    assert risk2 < risk1 and score2["score"] > score1["score"]
    assert score2["risk_parts"]["findings"] < score1["risk_parts"]["findings"]
    accepted = _get(env, "/api/findings", state="accepted")["items"]
    assert [f["finding"]["id"] for f in accepted] == [fid]
    assert accepted[0]["finding"]["accepted"]["reason"] == "compensating control"
    assert (
        env.client.post(f"/api/findings/{fid}/reopen", headers=env.h("province")).status_code == 200
    )
    assert _score(env, scope)["score"] == score1["score"]

    # resolving findings: not observed for longer than the resolve time
    data.resolve_after_s = 60.0  # the seeded findings were last seen 120 s ago
    data.invalidate()
    score3, risk3 = _score(env, scope), _risk(env, scope)
    assert score3["risk_parts"]["findings"] == 0.0 and score3["risk_parts"]["exposure"] == 0.0
    assert risk3 < risk1 and score3["score"] > score1["score"]
    states = {f["finding"]["state"] for f in _get(env, "/api/findings", limit=5000)["items"]}
    assert states == {"resolved"}


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime(ts))
