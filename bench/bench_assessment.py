"""Advisory matching at province scale: N assets against M CSAF advisories.

    .venv/bin/python bench/bench_assessment.py                       # 100,000 x 5,000
    .venv/bin/python bench/bench_assessment.py --assets 20000 --advisories 1000 --validate 200

Builds M CSAF 2.0 documents about made-up products (50 vendors x 10 products, each advisory
one product with one to three ``vers:`` ranges and a fixed version; 1 in 20 in the vls form)
and N assets drawn from those products plus 10 % of other vendors, each with one of 20
firmware versions (10 % unknown: "possibly affected"). Times, separately:

- validation: the CSAF schema and mandatory tests (``csaf`` package) on ``--validate``
  documents (what ``icsmon advisories import`` does per file), extrapolated to M;
- parse: CSAF document -> the advisory's products and ranges, all M;
- index: building the matcher;
- match: every asset against every advisory (the number the issue's target is about);
- bare pass: reading each asset's vendor, product and firmware into a key, nothing else
  (the floor cost of touching every asset in this language); ratio = match / bare.

Prints; asserts nothing.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from assessment.advisories import parse  # noqa: E402
from assessment.matching import Matcher  # noqa: E402

VENDORS = [f"Vendor {n:02d} Automation" for n in range(50)]
VERSIONS = [f"{a}.{b}.{c}" for a in (1, 2, 3) for b in range(0, 7, 2) for c in (0, 5)][:20]


def document(n: int, rng: random.Random) -> dict:
    vendor = rng.choice(VENDORS)
    product = f"{vendor.split()[1]}-PLC {rng.randrange(10)}"
    lo, hi = sorted(rng.sample(range(len(VERSIONS)), 2))
    ranges = [f"vers:generic/>={VERSIONS[lo]}|<{VERSIONS[hi]}"]
    if rng.random() < 0.3:
        ranges.append(f"vers:generic/{VERSIONS[rng.randrange(len(VERSIONS))]}")
    if rng.random() < 0.05:
        ranges = [f"<={VERSIONS[hi]}"]
    date = "2026-06-01T00:00:00.000Z"
    branches = [
        {
            "category": "product_version_range",
            "name": r,
            "product": {"name": f"{product} {r}", "product_id": f"CSAFPID-{k}"},
        }
        for k, r in enumerate(ranges)
    ]
    branches.append(
        {
            "category": "product_version",
            "name": VERSIONS[hi],
            "product": {"name": f"{product} {VERSIONS[hi]}", "product_id": "CSAFPID-F"},
        }
    )
    ids = [b["product"]["product_id"] for b in branches[:-1]]
    return {
        "document": {
            "category": "csaf_security_advisory",
            "csaf_version": "2.0",
            "notes": [{"category": "summary", "text": "Made up.", "title": "Summary"}],
            "references": [{"category": "self", "summary": "self", "url": "https://x.example/a"}],
            "publisher": {"category": "vendor", "name": vendor, "namespace": "https://x.example"},
            "title": f"advisory {n}",
            "tracking": {
                "current_release_date": date,
                "id": f"BENCH-{n:05d}",
                "initial_release_date": date,
                "revision_history": [{"date": date, "number": "1", "summary": "Initial"}],
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
        "vulnerabilities": [
            {
                "cve": f"CVE-2099-{n + 50000}",
                "notes": [{"category": "description", "text": "Made up.", "title": "Description"}],
                "product_status": {"known_affected": ids, "fixed": ["CSAFPID-F"]},
                "remediations": [
                    {"category": "vendor_fix", "details": "Update.", "product_ids": ids}
                ],
                "scores": [
                    {
                        "cvss_v3": {
                            "version": "3.1",
                            "vectorString": "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:N/I:N/A:H",
                            "baseScore": 7.5,
                            "baseSeverity": "HIGH",
                        },
                        "products": ids,
                    }
                ],
            }
        ],
    }


def assets(n: int, rng: random.Random) -> list[dict]:
    out = []
    for k in range(n):
        if rng.random() < 0.1:
            vendor, product = "Other Vendor", f"Device {rng.randrange(100)}"
        else:
            vendor = rng.choice(VENDORS)
            product = f"{vendor.split()[1]}-PLC {rng.randrange(10)}"
        asset = {
            "asset.id": f"site-{k // 25}:10.0.{(k // 250) % 256}.{k % 250}",
            "ics.device.vendor": vendor,
            "ics.device.product": product,
        }
        if rng.random() >= 0.1:
            asset["ics.device.firmware"] = rng.choice(VERSIONS)
        out.append(asset)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--assets", type=int, default=100_000)
    ap.add_argument("--advisories", type=int, default=5_000)
    ap.add_argument("--validate", type=int, default=500, help="documents to validate (timed)")
    args = ap.parse_args()
    rng = random.Random(13)
    docs = [document(n, rng) for n in range(args.advisories)]
    pool = assets(args.assets, rng)

    from assessment.advisories import validate

    t = time.perf_counter()
    for doc in docs[: args.validate]:
        validate(doc, "bench")
    per_doc = (time.perf_counter() - t) / max(1, min(args.validate, len(docs)))

    t = time.perf_counter()
    parsed = [parse(doc, check=False) for doc in docs]
    t_parse = time.perf_counter() - t
    t = time.perf_counter()
    matcher = Matcher(parsed)
    t_index = time.perf_counter() - t
    t = time.perf_counter()
    matches = matcher.match(pool)
    t_match = time.perf_counter() - t
    t = time.perf_counter()
    keys = set()
    for a in pool:
        keys.add(
            (a.get("ics.device.vendor"), a.get("ics.device.product"), a.get("ics.device.firmware"))
        )
    t_bare = time.perf_counter() - t
    affected = sum(1 for m in matches if m.status == "affected")
    print(
        f"{args.assets:,} assets x {args.advisories:,} advisories ({len(keys):,} distinct identities)"
    )
    print(
        f"  validation  {per_doc * 1000:8.2f} ms/document  (~{per_doc * len(docs):.1f} s for all)"
    )
    print(f"  parse       {t_parse:8.2f} s")
    print(f"  index       {t_index:8.2f} s")
    print(f"  match       {t_match:8.2f} s   {len(matches):,} matches ({affected:,} affected)")
    print(f"  bare pass   {t_bare:8.3f} s   match / bare = {t_match / t_bare:.0f}x")
    print(f"  parse + index + match = {t_parse + t_index + t_match:.2f} s (target: under 60 s)")


if __name__ == "__main__":
    main()
