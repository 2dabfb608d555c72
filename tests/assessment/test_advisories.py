"""CSAF 2.0 advisories: every test document validates (schema and mandatory tests, offline),
bad ones are refused with the file named, and matching is exact at the range boundaries.
The documents (tests/assessment/csaf, made by make_csaf.py) describe made-up products."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from assessment.advisories import AdvisoryError, files, load_file, norm, parse, validate
from assessment.matching import Matcher
from assessment.versions import RangeError, parse_range, parse_version
from sensor.engine import Engine, EngineConfig

CSAF = Path(__file__).resolve().parent / "csaf"
PCAPS = Path(__file__).resolve().parents[2] / "pcaps"


@pytest.fixture(scope="module")
def advisories():
    return [load_file(p) for p in files([CSAF])]


def test_at_least_twenty_valid_documents(advisories) -> None:
    assert len(advisories) >= 20
    assert len({a.id for a in advisories}) == len(advisories)
    for path in files([CSAF]):
        validate(json.loads(path.read_text()), str(path))  # raises on any problem


ACME = {"ics.device.vendor": "Acme Automation GmbH", "ics.device.product": "ACME plc 200"}
EXAMPLE = {"ics.device.vendor": "Example Automation", "ics.device.product": "Example PLC 1500"}
NORTH = {"ics.device.vendor": "Northwind Controls", "ics.device.product": "NW-RTU 40"}

# firmware -> the advisories it is affected by (ranges in tests/assessment/make_csaf.py)
BOUNDARIES = [
    (ACME, "2.4.1", {"ACME-2026-001", "ACME-2026-003", "ACME-2026-005", "ACME-2026-008"}),
    (ACME, "2.4.2", {"ACME-2026-004", "ACME-2026-006"}),  # <2.4.2 excludes, >2.4.1 includes
    (
        ACME,
        "2.4.0",
        {
            "ACME-2026-001",
            "ACME-2026-002",
            "ACME-2026-006",
            "ACME-2026-008",
            "ACME-2026-009",
            "ACME-2026-010",
        },
    ),
    (
        ACME,
        "2.0.0",
        {"ACME-2026-001", "ACME-2026-002", "ACME-2026-006", "ACME-2026-008", "ACME-2026-009"},
    ),  # >=2.0.0 includes, second range of 010 starts at 2.4.0
    (ACME, "1.9.9", {"ACME-2026-002", "ACME-2026-008", "ACME-2026-009", "ACME-2026-010"}),
    (ACME, "2.4.10", {"ACME-2026-004", "ACME-2026-006", "ACME-2026-011"}),  # numeric, not text
    (
        ACME,
        "V2.4.1-rc2",
        {
            "ACME-2026-001",
            "ACME-2026-002",
            "ACME-2026-006",
            "ACME-2026-008",
            "ACME-2026-009",
            "ACME-2026-010",
            "ACME-2026-013",
        },
    ),  # pre-release
    (ACME, "3.0.0", set()),
    (EXAMPLE, "4.2.1 (build 77)", {"EXA-2026-001", "EXA-2026-004"}),
    (EXAMPLE, "4.2.1.5", {"EXA-2026-001", "EXA-2026-004", "EXA-2026-006"}),  # four parts
    (EXAMPLE, "4.2.1.4", {"EXA-2026-001", "EXA-2026-004"}),
    (EXAMPLE, "4.2.2", {"EXA-2026-002", "EXA-2026-004"}),
    (EXAMPLE, "4.0.0", {"EXA-2026-001", "EXA-2026-003"}),
    (EXAMPLE, "3.9.9", {"EXA-2026-003"}),
    (NORTH, "10.9", {"NWC-2026-001", "NWC-2026-002"}),
    (NORTH, "10.10", {"NWC-2026-001", "NWC-2026-003"}),  # <10.10 excludes, =10.10 includes
    (NORTH, "10.11", {"NWC-2026-001", "NWC-2026-003"}),
    (NORTH, "10.12", set()),
    (NORTH, "10.2", {"NWC-2026-001", "NWC-2026-002"}),
    (NORTH, "10.1", {"NWC-2026-001"}),
]


@pytest.mark.parametrize(("device", "firmware", "expected"), BOUNDARIES)
def test_exact_at_range_boundaries(advisories, device, firmware, expected) -> None:
    found = Matcher(advisories).match_device({**device, "ics.device.firmware": firmware})
    assert {adv.id for adv, status, _p in found if status == "affected"} == expected
    assert all(status == "affected" for _a, status, _p in found)


def test_model_number_wildcard_matches_by_product_code(advisories) -> None:
    device = {
        "ics.device.vendor": "Acme Automation",
        "ics.device.product_code": "AC-PLC-200",
        "ics.device.firmware": "8.9.9",
    }
    assert [a.id for a, _s, _p in Matcher(advisories).match_device(device)] == ["ACME-2026-014"]
    device["ics.device.product_code"] = "AC-PLC-300"
    assert Matcher(advisories).match_device(device) == []


def test_unknown_firmware_is_possibly_affected(advisories) -> None:
    found = Matcher(advisories).match_device(dict(EXAMPLE))
    assert {a.id for a, _s, _p in found} == {f"EXA-2026-00{n}" for n in (1, 2, 3, 4, 6)}
    assert {s for _a, s, _p in found} == {"possibly-affected"}
    found = Matcher(advisories).match_device({**EXAMPLE, "ics.device.firmware": "unknown"})
    assert {s for _a, s, _p in found} == {"possibly-affected"}


def test_other_vendors_and_products_never_match(advisories) -> None:
    matcher = Matcher(advisories)
    assert (
        matcher.match_device(
            {
                "ics.device.vendor": "Acme Automation",
                "ics.device.product": "Acme PLC 2000",
                "ics.device.firmware": "1",
            }
        )
        == []
    )
    assert (
        matcher.match_device(
            {
                "ics.device.vendor": "Acme Robotics",
                "ics.device.product": "Acme PLC 200",
                "ics.device.firmware": "1",
            }
        )
        == []
    )
    assert matcher.match_device({"ics.device.product": "Acme PLC 200"}) == []  # no vendor


def test_assets_replayed_from_a_capture_are_matched(advisories) -> None:
    engine = Engine(EngineConfig(site="plant-1"))
    for _ in engine.replay(
        [PCAPS / "modbus" / "modbus_identification.pcap", PCAPS / "opcua" / "opcua_anonymous.pcap"]
    ):
        pass
    assets = engine.changed_assets()
    matches = Matcher(advisories).match(assets)
    by_asset: dict[str, set[str]] = {}
    for m in matches:
        by_asset.setdefault(m.asset_id, set()).add(m.advisory_id)
    assert by_asset == {
        "plant-1:127.0.0.1": {
            "ACME-2026-001",
            "ACME-2026-003",
            "ACME-2026-005",
            "ACME-2026-008",
            "ACME-2026-014",
        },
        "plant-1:127.0.0.21": {"EXA-2026-001", "EXA-2026-004"},
    }
    kev = {m.advisory_id for m in matches if m.exploited}
    assert kev == {"ACME-2026-001", "EXA-2026-001"}
    first = next(m for m in matches if m.advisory_id == "ACME-2026-001")
    assert first.cvss == 9.8 and first.remediation == "Update Acme PLC 200 to 2.4.2 or later."


def test_a_dnp3_outstation_named_by_its_device_attributes_is_matched(advisories) -> None:
    """pcaps/dnp3 (a real dnp3py outstation): group 0 attributes name the device "Example
    Energy" "RTU-560 Feeder", software 3.1.4: inside ``>=3.0.0|<3.1.5``, just outside
    ``<3.1.4``."""
    engine = Engine(EngineConfig(site="plant-1"))
    for _ in engine.replay([PCAPS / "dnp3" / "dnp3_operations.pcap"]):
        pass
    assets = engine.changed_assets()
    outstation = next(a for a in assets if a["asset.id"] == "plant-1:127.0.8.10")
    assert outstation["ics.device.firmware"] == "3.1.4"
    matches = Matcher(advisories).match(assets)
    assert {(m.asset_id, m.advisory_id, m.status) for m in matches} == {
        ("plant-1:127.0.8.10", "EEN-2026-001", "affected")
    }


def _model_family_advisory(vendor: str, family: str, model: str, affected: str) -> dict:
    """ACME-2026-014's document (a model-number family) renamed: test data only, the CVE
    and the flaw are made up."""
    doc = json.loads((CSAF / "acme-2026-014.json").read_text())
    vendor_branch = doc["product_tree"]["branches"][0]
    vendor_branch["name"] = vendor
    family_branch = vendor_branch["branches"][0]
    family_branch["name"] = family
    ranged = family_branch["branches"][0]
    ranged["name"] = affected
    ranged["product"]["name"] = f"{vendor} {family} {affected}"
    ranged["product"]["product_identification_helper"]["model_numbers"] = [model]
    doc["document"]["tracking"]["id"] = "TEST-ENIP-1"
    return doc


@pytest.mark.parametrize(
    "affected, expected",
    [
        ("vers:generic/>=20.0|<=20.11", "affected"),  # the boundary, included
        ("vers:generic/>=20.0|<20.11", None),  # the boundary, excluded
        ("vers:generic/>=20.11|<21.0", "affected"),
        ("vers:generic/<20.10", None),
    ],
)
def test_an_ethernet_ip_controller_named_by_its_identity_is_matched(affected, expected) -> None:
    """pcaps/enip (a real cpppo device): ListIdentity names vendor 1 "Rockwell
    Automation/Allen-Bradley", product "1756-L61/B LOGIX5561", revision 20.011. An advisory
    naming the company only and the 1756-L6 family by model number matches it, exactly at
    the revision boundary."""
    engine = Engine(EngineConfig(site="plant-1"))
    for _ in engine.replay([PCAPS / "enip" / "enip_identity.pcap"]):
        pass
    assets = engine.changed_assets()
    controller = next(a for a in assets if a.get("ics.device.vendor"))
    assert controller["ics.device.vendor"] == "Rockwell Automation/Allen-Bradley"
    assert controller["ics.device.firmware"] == "20.011"
    doc = _model_family_advisory("Rockwell Automation", "ControlLogix 5560", "1756-L6*", affected)
    found = Matcher([parse(doc, "test")]).match(assets)
    assert [(m.asset_id, m.status, m.via) for m in found] == (
        [(controller["asset.id"], expected, "model")] if expected else []
    )


def test_a_vendor_written_company_slash_brand_goes_by_either_name() -> None:
    """EtherNet/IP's vendor table names company and brand together; advisories name one."""
    doc = json.loads((CSAF / "acme-2026-001.json").read_text())
    vendor_branch = doc["product_tree"]["branches"][0]
    device = {"ics.device.product": "Acme PLC 200", "ics.device.firmware": "2.4.1"}
    for advisory_vendor, asset_vendor, expected in (
        ("Acme Automation", "Acme Automation/Roadrunner Controls", ["ACME-2026-001"]),
        ("Roadrunner Controls", "Acme Automation/Roadrunner Controls", ["ACME-2026-001"]),
        (
            "Acme Automation/Roadrunner Controls",
            "Acme Automation/Roadrunner Controls",
            ["ACME-2026-001"],
        ),
        ("Roadrunner", "Acme Automation/Roadrunner Controls", []),  # a whole name, not a word
        ("Acme Automation/Roadrunner Controls", "Acme Automation", []),
    ):
        vendor_branch["name"] = advisory_vendor
        found = Matcher([parse(doc, "test")]).match_device(
            {**device, "ics.device.vendor": asset_vendor}
        )
        assert [a.id for a, _s, _p in found] == expected, (advisory_vendor, asset_vendor)


def _doc() -> dict:
    return json.loads((CSAF / "acme-2026-001.json").read_text())


def test_invalid_documents_are_refused_with_the_reason(tmp_path: Path) -> None:
    doc = _doc()
    doc["vulnerabilities"][0]["product_status"]["known_affected"].append("CSAFPID-9999")
    with pytest.raises(
        AdvisoryError, match=r"x.json: not a valid CSAF 2.0 advisory: 6.1.1 Missing"
    ):
        parse(doc, "x.json")
    doc = _doc()
    del doc["document"]["title"]
    with pytest.raises(AdvisoryError, match=r"schema .*'title' is a required property"):
        parse(doc, "x.json")
    doc = _doc()
    doc["document"]["csaf_version"] = "2.1"
    with pytest.raises(AdvisoryError, match="CSAF version '2.1'; this reader takes 2.0"):
        parse(doc, "x.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json", encoding="utf-8")
    with pytest.raises(AdvisoryError, match="bad.json: not JSON"):
        load_file(bad)
    with pytest.raises(AdvisoryError, match="not a CSAF document"):
        parse([], "list.json")


def test_an_unreadable_range_makes_the_product_possibly_affected() -> None:
    doc = _doc()
    branch = doc["product_tree"]["branches"][0]["branches"][0]["branches"][0]
    branch["name"] = "all versions before the spring release"
    adv = parse(copy.deepcopy(doc), "x.json", check=False)
    (product,) = [p for p in adv.products.values() if p.problem]
    found = Matcher([adv]).match_device({**ACME, "ics.device.firmware": "2.4.1"})
    assert [(a.id, s) for a, s, _p in found] == [("ACME-2026-001", "possibly-affected")]
    assert "not a version" in product.problem


def test_version_helpers() -> None:
    assert parse_version("V4.2.1") == parse_version("4.2.1 (build 77)") == parse_version("4.2.1")
    assert parse_version("build") is None
    assert parse_version("2.4.1-rc1") < parse_version("2.4.1")
    assert parse_version("4.2.1.6") < parse_version("4.2.2")
    assert parse_version("2.4.1") in parse_range(">=2.0 <2.5")
    assert parse_version("2.5") not in parse_range(">=2.0 <2.5")
    assert parse_version("9") in parse_range("vers:all/*")
    with pytest.raises(RangeError):
        parse_range("vers:nosuchscheme/1.0")
    assert norm("ACME Automation, Inc.") == norm("acme automation") == "acme automation"
