"""Findings' lifecycle at the centre (merge, open / resolved / accepted) and the explainable
risk: its parts add up, known-exploited weighs more, criticality weighs, and closing a
vulnerability or resolving a finding lowers it."""

from __future__ import annotations

from pathlib import Path

import pytest

from assessment.advisories import files, load_file
from assessment.assess import SiteInfo, assess
from assessment.catalog import Catalog, CatalogError
from assessment.findings import epoch, lifecycle, merge
from assessment.matching import Matcher
from assessment.risk import asset_pressures, explain
from pipeline.findings import MAX_EVIDENCE, merge_finding
from tests.assessment.test_findings_captures import findings as sensor_findings

CSAF = Path(__file__).resolve().parent / "csaf"
DAY = 86400.0


def _doc(fid: str, first: str, last: str, ev: list[str], **extra) -> dict:
    return {
        "finding.id": fid,
        "finding.kind": "opcua-anonymous-session",
        "asset.id": "s1:10.0.0.1",
        "finding.first_seen": first,
        "finding.last_seen": last,
        "finding.severity": 60,
        "finding.category": "authentication",
        "finding.evidence.event_ids": ev,
        "finding.summary": extra.pop("summary", "x"),
        **extra,
    }


def test_merge_keeps_earliest_first_latest_last_and_all_evidence() -> None:
    a = _doc("f1", "2026-11-01T00:00:00Z", "2026-11-02T00:00:00Z", ["e1", "e2"], summary="old")
    b = _doc("f1", "2026-11-03T00:00:00Z", "2026-11-05T00:00:00Z", ["e2", "e3"], summary="new")
    (m,) = merge([b, a]).values()  # a sensor restart: the later document has a later first_seen
    assert m["finding.first_seen"] == "2026-11-01T00:00:00Z"
    assert m["finding.last_seen"] == m["@timestamp"] == "2026-11-05T00:00:00Z"
    assert m["finding.evidence.event_ids"] == ["e1", "e2", "e3"]  # in the order seen
    assert m["finding.summary"] == "new"
    assert merge([a, b]) == merge([b, a])  # whatever the order of arrival


def test_merge_bounds_evidence_unions_lists_and_keeps_the_centres_decision() -> None:
    kept = _doc("f1", "2026-11-01T00:00:00Z", "2026-11-02T00:00:00Z", [f"a{i}" for i in range(15)])
    kept.update(
        {
            "modbus.masters": ["10.0.0.5"],
            "finding.state": "accepted",
            "finding.accepted.reason": "bench PLC, isolated",
            "finding.accepted.user": "soc-1",
            "finding.accepted.at": "2026-11-02T01:00:00Z",
        }
    )
    # a later sensor document (even one claiming a decision of its own) changes nothing of it
    later = _doc("f1", "2026-11-03T00:00:00Z", "2026-11-09T00:00:00Z", [f"b{i}" for i in range(15)])
    later.update(
        {"modbus.masters": ["10.0.0.7"], "finding.state": "open", "finding.accepted.user": "x"}
    )
    m = merge_finding(kept, later)
    assert m["finding.first_seen"] == "2026-11-01T00:00:00Z"
    assert m["finding.last_seen"] == "2026-11-09T00:00:00Z"
    ids = m["finding.evidence.event_ids"]
    assert len(ids) == MAX_EVIDENCE and ids[:10] == [f"a{i}" for i in range(10)]
    assert ids[10:] == [f"b{i}" for i in range(5, 15)]  # the first and the latest kept
    assert m["modbus.masters"] == ["10.0.0.7", "10.0.0.5"]
    assert m["finding.state"] == "accepted"
    assert m["finding.accepted.user"] == "soc-1"
    assert m["finding.accepted.reason"] == "bench PLC, isolated"
    # a first document from a sensor cannot arrive decided
    fresh = merge_finding({}, later)
    assert fresh["finding.state"] == "open" and "finding.accepted.user" not in fresh


def test_states_open_resolved_accepted() -> None:
    doc = _doc("f1", "2026-11-01T00:00:00Z", "2026-11-10T00:00:00Z", [])
    last = epoch("2026-11-10T00:00:00Z")
    assert lifecycle([doc], last + 6 * DAY)[0]["finding.state"] == "open"
    assert lifecycle([doc], last + 8 * DAY)[0]["finding.state"] == "resolved"
    assert lifecycle([doc], last + 2 * DAY, resolve_after_s=DAY)[0]["finding.state"] == "resolved"
    accepted = {"f1": {"reason": "isolated test bench", "user": "soc-1", "at": 1.0}}
    out = lifecycle([doc], last + 30 * DAY, accepted)[0]
    assert (
        out["finding.state"] == "accepted"
        and out["finding.accepted.reason"] == "isolated test bench"
    )


def test_catalog_imports_once_refuses_bad_files_and_keeps_acceptances(tmp_path: Path) -> None:
    cat = Catalog(tmp_path / "a.db")
    bad = tmp_path / "feed" / "bad.json"
    bad.parent.mkdir()
    bad.write_text('{"document": {"csaf_version": "2.0"}}', encoding="utf-8")
    out = cat.import_paths([CSAF, bad])
    assert out["imported"] == len(files([CSAF])) and out["refused"] == 1
    assert "bad.json: not a valid CSAF 2.0 advisory" in out["problems"][0]
    assert cat.import_paths([CSAF])["unchanged"] == len(files([CSAF]))
    assert {a.id for a in cat.advisories()} == {load_file(p).id for p in files([CSAF])}
    with pytest.raises(CatalogError, match="needs a reason"):
        cat.accept("f1", "  ", "soc-1")
    cat.accept("f1", "vendor fix scheduled", "soc-1")
    assert Catalog(tmp_path / "a.db").acceptances()["f1"]["reason"] == "vendor fix scheduled"
    assert cat.reopen("f1") and cat.acceptances() == {}


def test_risk_parts_add_up_and_weigh() -> None:
    matches = [
        {
            "asset.id": "s1:a",
            "match.status": "affected",
            "vulnerability.score.base": 7.5,
            "vulnerability.exploited": False,
        }
    ]
    plain = explain(asset_pressures([], matches, [])["s1:a"])
    exploited = explain(
        asset_pressures([], [{**matches[0], "vulnerability.exploited": True}], [])["s1:a"]
    )
    possibly = explain(
        asset_pressures([], [{**matches[0], "match.status": "possibly-affected"}], [])["s1:a"]
    )
    assert possibly.risk < plain.risk < exploited.risk
    critical = explain(asset_pressures([], matches, [], {"s1": 5})["s1:a"])
    minor = explain(asset_pressures([], matches, [], {"s1": 1})["s1:a"])
    assert minor.risk < plain.risk < critical.risk
    both = explain(
        asset_pressures(
            [_doc("f", "2026-11-01T00:00:00Z", "2026-11-01T00:00:00Z", [], **{"asset.id": "s1:a"})],
            matches,
            [{"destination.ip": "a", "labels.site": "s1", "event.severity": 95}],
        )["s1:a"]
    )
    assert abs(sum(both.parts.values()) - both.risk) <= 0.2
    assert both.pressure == {
        "findings": 6.0,
        "vulnerabilities": 7.5,
        "alerts": 10.0,
        "exposure": 0.0,
    }


def test_closing_a_vulnerability_or_resolving_a_finding_lowers_risk() -> None:
    """On real findings (the legacy OPC UA capture) and real matches (the test advisories)."""
    advisories = [load_file(p) for p in files([CSAF])]
    docs = list(sensor_findings("opcua/opcua_legacy_policies.pcap").values())
    asset = {
        "asset.id": "plant-1:127.0.0.21",
        "labels.site": "plant-1",
        "host.ip": "127.0.0.21",
        "ics.device.vendor": "Example Automation",
        "ics.device.product": "Example PLC 1500",
        "ics.device.firmware": "4.2.1",
    }
    sites = {"plant-1": SiteInfo("plant-1", "ent-1", "Ent 1", "jinan", "chemicals", 4)}
    now = max(epoch(d["finding.last_seen"]) for d in docs) + 60
    base = assess([asset], docs, [], sites, Matcher(advisories), now=now)
    assert base.risk["pressure"]["vulnerabilities"] > 0 and base.risk["pressure"]["findings"] > 0
    # the vendor fix is installed: 4.3.0 is outside both matched ranges
    patched = assess(
        [{**asset, "ics.device.firmware": "4.3.0"}], docs, [], sites, Matcher(advisories), now=now
    )
    assert patched.risk["risk"] < base.risk["risk"]
    assert {m["advisory.id"] for m in base.matches} == {"EXA-2026-001", "EXA-2026-004"}
    assert {m["advisory.id"] for m in patched.matches} == {"EXA-2026-002"}  # unfixed, >=4.2.2
    # the deprecated-policy finding is fixed: no longer observed for 8 days, it resolves
    target = next(d for d in docs if d["finding.kind"] == "opcua-deprecated-security-policy")
    later = [d for d in docs if d is not target] + [
        dict(target, **{"finding.last_seen": "2020-01-01T00:00:00Z"})
    ]
    fewer = assess([asset], later, [], sites, Matcher(advisories), now=now)
    assert fewer.risk["risk"] < base.risk["risk"]
    states = {f["finding.kind"]: f["finding.state"] for f in fewer.findings}
    assert states["opcua-deprecated-security-policy"] == "resolved"
    accepted = assess(
        [asset],
        docs,
        [],
        sites,
        Matcher(advisories),
        now=now,
        acceptances={target["finding.id"]: {"reason": "r", "user": "u", "at": 0}},
    )
    assert accepted.risk["risk"] == fewer.risk["risk"]
    assert base.top_enterprises[0]["enterprise"] == "ent-1"
    row = next(r for r in base.by_advisory if r["advisory"] == "EXA-2026-001")
    assert (
        row["exploited"]
        and row["by_city"] == {"jinan": 1}
        and row["by_industry"] == {"chemicals": 1}
    )
