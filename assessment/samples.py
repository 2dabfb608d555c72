"""Made-up CSAF 2.0 advisories and a known-exploited catalogue describing the made-up devices
of the demo province (``posture/seed.py``: Acme Automation, Example Automation, Northwind
Controls): ``icsmon posture demo`` imports them so the assessment has something to show, and
the tests' advisories (tests/assessment/csaf, written by tests/assessment/make_csaf.py) are
these documents. Every one passes the CSAF 2.0 schema and mandatory tests.

Each row: advisory id, vendor, product, affected ranges (a ``vers:`` range, or CSAF's
version-like ``vls`` form when it does not start with ``vers:``), fixed versions, CVE, CVSS
v3.1 vector and base score, known exploited (a CSAF threat says so), model numbers.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

DATE = "2026-06-01T00:00:00.000Z"

ACME = ("Acme Automation", "https://psirt.acme-automation.example")
EXAMPLE = ("Example Automation", "https://psirt.example-automation.example")
NORTH = ("Northwind Controls", "https://security.northwind-controls.example")
# the DNP3 outstation of pcaps/dnp3 names itself so in its device attributes (group 0)
ENERGY = ("Example Energy", "https://psirt.example-energy.example")
CRIT = ("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H", 9.8, "CRITICAL")
HIGH = ("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:N/I:N/A:H", 7.5, "HIGH")
MED = ("CVSS:3.1/AV:N/AC:H/PR:N/UI:N/S:U/C:N/I:N/A:H", 5.9, "MEDIUM")
LOW = ("CVSS:3.1/AV:L/AC:H/PR:H/UI:N/S:U/C:N/I:N/A:L", 1.9, "LOW")

ROWS = [
    # id, (vendor, ns), product, affected, fixed, cve, cvss, kev, model numbers
    (
        "ACME-2026-001",
        ACME,
        "Acme PLC 200",
        ["vers:generic/>=2.0.0|<2.4.2"],
        ["2.4.2"],
        "CVE-2099-10001",
        CRIT,
        True,
        [],
    ),
    (
        "ACME-2026-002",
        ACME,
        "Acme PLC 200",
        ["vers:generic/<2.4.1"],
        ["2.4.1"],
        "CVE-2099-10002",
        HIGH,
        False,
        [],
    ),
    (
        "ACME-2026-003",
        ACME,
        "Acme PLC 200",
        ["vers:generic/>=2.4.1|<2.4.2"],
        ["2.4.2"],
        "CVE-2099-10003",
        MED,
        False,
        [],
    ),
    (
        "ACME-2026-004",
        ACME,
        "Acme PLC 200",
        ["vers:generic/>2.4.1|<3.0.0"],
        ["3.0.0"],
        "CVE-2099-10004",
        HIGH,
        False,
        [],
    ),
    (
        "ACME-2026-005",
        ACME,
        "Acme PLC 200",
        ["vers:generic/2.4.1"],
        ["2.4.2"],
        "CVE-2099-10005",
        LOW,
        False,
        [],
    ),
    (
        "ACME-2026-006",
        ACME,
        "Acme PLC 200",
        ["vers:generic/>=2.0.0|!=2.4.1|<2.5.0"],
        ["2.5.0"],
        "CVE-2099-10006",
        MED,
        False,
        [],
    ),
    ("ACME-2026-007", ACME, "Acme PLC 300", ["vers:all/*"], [], "CVE-2099-10007", HIGH, True, []),
    (
        "ACME-2026-008",
        ACME,
        "Acme PLC 200",
        ["<=2.4.1"],
        ["2.4.2"],
        "CVE-2099-10008",
        HIGH,
        False,
        [],
    ),
    (
        "ACME-2026-009",
        ACME,
        "Acme PLC 200",
        ["<2.4.1"],
        ["2.4.1"],
        "CVE-2099-10009",
        MED,
        False,
        [],
    ),
    (
        "ACME-2026-010",
        ACME,
        "Acme PLC 200",
        ["vers:generic/>=1.0.0|<2.0.0", "vers:generic/>=2.4.0|<2.4.1"],
        ["2.4.1"],
        "CVE-2099-10010",
        HIGH,
        False,
        [],
    ),
    (
        "ACME-2026-011",
        ACME,
        "Acme PLC 200",
        ["vers:generic/>=2.4.10|<2.5.0"],
        ["2.5.0"],
        "CVE-2099-10011",
        MED,
        False,
        [],
    ),
    (
        "ACME-2026-012",
        ACME,
        "Acme HMI Panel 7",
        ["vers:generic/<5.1.0"],
        ["5.1.0"],
        "CVE-2099-10012",
        MED,
        False,
        [],
    ),
    (
        "ACME-2026-013",
        ACME,
        "Acme PLC 200",
        ["vers:generic/>=2.4.1-rc1|<2.4.1"],
        ["2.4.1"],
        "CVE-2099-10013",
        LOW,
        False,
        [],
    ),
    (
        "ACME-2026-014",
        ACME,
        "Acme PLC Family",
        ["vers:generic/<9.0.0"],
        ["9.0.0"],
        "CVE-2099-10014",
        HIGH,
        False,
        ["AC-PLC-2*"],
    ),
    (
        "EXA-2026-001",
        EXAMPLE,
        "Example PLC 1500",
        ["vers:generic/>=4.0.0|<4.2.2"],
        ["4.2.2"],
        "CVE-2099-20001",
        CRIT,
        True,
        [],
    ),
    (
        "EXA-2026-002",
        EXAMPLE,
        "Example PLC 1500",
        ["vers:generic/>=4.2.2"],
        [],
        "CVE-2099-20002",
        MED,
        False,
        [],
    ),
    (
        "EXA-2026-003",
        EXAMPLE,
        "Example PLC 1500",
        ["vers:generic/<4.2.1"],
        ["4.2.1"],
        "CVE-2099-20003",
        HIGH,
        False,
        [],
    ),
    (
        "EXA-2026-004",
        EXAMPLE,
        "Example PLC 1500",
        ["vers:generic/>=4.2.1|<4.3.0"],
        ["4.3.0"],
        "CVE-2099-20004",
        HIGH,
        False,
        [],
    ),
    (
        "EXA-2026-005",
        EXAMPLE,
        "Example Gateway 10",
        ["vers:generic/<1.8.0"],
        ["1.8.0"],
        "CVE-2099-20005",
        MED,
        False,
        [],
    ),
    (
        "EXA-2026-006",
        EXAMPLE,
        "Example PLC 1500",
        ["vers:generic/>=4.2.1.5|<4.2.2"],
        ["4.2.2"],
        "CVE-2099-20006",
        LOW,
        False,
        [],
    ),
    (
        "NWC-2026-001",
        NORTH,
        "NW-RTU 40",
        ["vers:generic/>=10.0|<10.12"],
        ["10.12"],
        "CVE-2099-30001",
        HIGH,
        False,
        [],
    ),
    (
        "NWC-2026-002",
        NORTH,
        "NW-RTU 40",
        ["vers:generic/>=10.2|<10.10"],
        ["10.10"],
        "CVE-2099-30002",
        MED,
        False,
        [],
    ),
    (
        "NWC-2026-003",
        NORTH,
        "NW-RTU 40",
        ["vers:generic/10.10|10.11"],
        ["10.12"],
        "CVE-2099-30003",
        LOW,
        False,
        [],
    ),
    (
        "NWC-2026-004",
        NORTH,
        "NW-Historian",
        ["vers:generic/<3.0.0"],
        ["3.0.0"],
        "CVE-2099-30004",
        HIGH,
        True,
        [],
    ),
    (
        "EEN-2026-001",
        ENERGY,
        "RTU-560 Feeder",
        ["vers:generic/>=3.0.0|<3.1.5"],
        ["3.1.5"],
        "CVE-2099-40001",
        HIGH,
        False,
        [],
    ),
    (
        "EEN-2026-002",
        ENERGY,
        "RTU-560 Feeder",
        ["vers:generic/<3.1.4"],
        ["3.1.4"],
        "CVE-2099-40002",
        MED,
        False,
        [],
    ),
]


def document(row: tuple) -> dict:
    (
        adv_id,
        (vendor, namespace),
        product,
        affected,
        fixed,
        cve,
        (vector, score, severity),
        kev,
        models,
    ) = row
    branches = []
    affected_ids, fixed_ids = [], []
    for n, rng in enumerate(affected, 1):
        pid = f"CSAFPID-{n:04d}"
        helper = {"model_numbers": models} if models else None
        prod = {"name": f"{vendor} {product} {rng}", "product_id": pid}
        if helper:
            prod["product_identification_helper"] = helper
        branches.append({"category": "product_version_range", "name": rng, "product": prod})
        affected_ids.append(pid)
    for n, version in enumerate(fixed, 1):
        pid = f"CSAFPID-{100 + n:04d}"
        branches.append(
            {
                "category": "product_version",
                "name": version,
                "product": {"name": f"{vendor} {product} {version}", "product_id": pid},
            }
        )
        fixed_ids.append(pid)
    status = {"known_affected": affected_ids}
    if fixed_ids:
        status["fixed"] = fixed_ids
    remediation = (
        f"Update {product} to {fixed[0]} or later."
        if fixed
        else "No fix is planned: isolate the device."
    )
    vuln = {
        "cve": cve,
        "notes": [
            {
                "category": "description",
                "text": f"A made-up flaw in {product} (demo and test data).",
                "title": "Description",
            }
        ],
        "product_status": status,
        "remediations": [
            {
                "category": "vendor_fix" if fixed else "mitigation",
                "details": remediation,
                "product_ids": affected_ids,
            }
        ],
        "scores": [
            {
                "cvss_v3": {
                    "version": "3.1",
                    "vectorString": vector,
                    "baseScore": score,
                    "baseSeverity": severity,
                },
                "products": affected_ids,
            }
        ],
    }
    if kev:
        vuln["threats"] = [
            {
                "category": "exploit_status",
                "details": "Known exploited in the wild.",
                "product_ids": affected_ids,
            }
        ]
    return {
        "document": {
            "category": "csaf_security_advisory",
            "csaf_version": "2.0",
            "lang": "en",
            "notes": [
                {
                    "category": "summary",
                    "text": "Made-up advisory for the icsmon demo and tests.",
                    "title": "Summary",
                }
            ],
            "publisher": {"category": "vendor", "name": f"{vendor} PSIRT", "namespace": namespace},
            "title": f"{product}: {cve}",
            "tracking": {
                "current_release_date": DATE,
                "id": adv_id,
                "initial_release_date": DATE,
                "revision_history": [{"date": DATE, "number": "1", "summary": "Initial release."}],
                "status": "final",
                "version": "1",
            },
        },
        "product_tree": {
            "branches": [
                {
                    "category": "vendor",
                    "name": vendor,
                    "branches": [
                        {"category": "product_name", "name": product, "branches": branches}
                    ],
                }
            ]
        },
        "vulnerabilities": [vuln],
    }


#: CVEs of the demo's known-exploited catalogue (CISA KEV's format), besides those the
#: advisories' own threats call exploited
DEMO_EXPLOITED = ("CVE-2099-20004", "CVE-2099-30001")


def exploited_catalogue(cves: tuple[str, ...] = DEMO_EXPLOITED) -> dict[str, Any]:
    """A known-exploited catalogue in CISA KEV's JSON format (assessment/exploited.py)."""
    by_cve = {row[5]: row for row in ROWS}
    return {
        "title": "Demo known exploited vulnerabilities",
        "catalogVersion": DATE[:10].replace("-", "."),
        "dateReleased": DATE,
        "count": len(cves),
        "vulnerabilities": [
            {
                "cveID": cve,
                "vendorProject": by_cve[cve][1][0] if cve in by_cve else "",
                "product": by_cve[cve][2] if cve in by_cve else "",
                "vulnerabilityName": f"{cve} (made up)",
                "dateAdded": DATE[:10],
                "shortDescription": "A made-up entry for the icsmon demo and tests.",
                "requiredAction": "Apply the vendor's update.",
                "dueDate": DATE[:10],
                "knownRansomwareCampaignUse": "Unknown",
                "notes": "",
            }
            for cve in cves
        ],
    }


def write(folder: Path, with_catalogue: bool = False) -> list[Path]:
    """Write the advisories (and, asked, the catalogue) into ``folder``; returns the files."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for row in ROWS:
        path = folder / f"{row[0].lower()}.json"
        path.write_text(json.dumps(document(row), indent=2) + "\n", encoding="utf-8")
        out.append(path)
    if with_catalogue:
        path = folder / "known_exploited_vulnerabilities.json"
        path.write_text(json.dumps(exploited_catalogue(), indent=2) + "\n", encoding="utf-8")
        out.append(path)
    return out
