"""CSAF 2.0 advisories: validated, then reduced to what matching needs.

Every document is checked against the CSAF 2.0 JSON schema and the standard's mandatory
tests (section 6.1) by the ``csaf`` package, which ships the OASIS schema and validates
with ``jsonschema`` offline (no reference is fetched). A document that fails is refused
with the first problems named; nothing of it is imported.

From a valid document: the tracking id, title, publisher, release date, and per
vulnerability its CVE, the highest CVSS v3 / v2 base score, whether a threat of category
``exploit_status`` says it is exploited (known-exploited weighs more in the risk), the
remediation text, and the products with their status. Products come from the
``product_tree`` branches: vendor / product family / product name, then a
``product_version_range`` (a range) or a ``product_version`` (one version); model numbers
of a ``product_identification_helper`` (with ``*`` and ``?`` wildcards) match devices by
order number or product code, its CPE and package URL match devices that carry one
(``assessment/identifiers.py``). A product named without any version is "all versions".
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import orjson

from assessment.versions import Range, RangeError, parse_range, parse_version

AFFECTED = ("known_affected", "first_affected", "last_affected")
UNAFFECTED = ("fixed", "first_fixed", "known_not_affected")
MAX_DOCUMENT = 16 << 20  # bytes: a CSAF document larger than this is refused
_LEGAL = re.compile(
    r"\b(inc|incorporated|corp|corporation|co|company|ltd|limited|gmbh|ag|sa|llc|plc|kg|se|oy)\b\.?$"
)
_SPACES = re.compile(r"[^0-9a-z]+")
_EXPLOITED = re.compile(r"\bexploit(ed|ation)\b", re.I)
_NOT_EXPLOITED = re.compile(r"\b(no|not|none|without)\b[^.]*\bexploit", re.I)


class AdvisoryError(ValueError):
    """A file that is not a valid CSAF 2.0 advisory (the message names the file)."""


def norm(text: str | None) -> str:
    """Lower case, punctuation to single spaces, legal suffixes dropped (``Acme Automation
    GmbH`` and ``ACME automation`` compare equal)."""
    out = _SPACES.sub(" ", (text or "").lower()).strip()
    while True:
        stripped = _LEGAL.sub("", out).strip()
        if stripped == out or not stripped:
            return out
        out = stripped


@dataclass(frozen=True)
class Product:
    """One product entry of an advisory's product tree."""

    product_id: str
    vendor: str
    name: str
    family: str = ""
    range: Range | None = None  # None with ``version`` set: one exact version
    version: str = ""
    models: tuple[str, ...] = ()
    problem: str = ""  # a range that could not be read: the product is "possibly affected"
    cpe: str = ""  # product_identification_helper: matched against an asset's ics.device.cpe
    purl: str = ""  # ... and ics.device.purl (assessment/identifiers.py)


@dataclass
class Vulnerability:
    cve: str
    title: str
    cvss: float | None
    exploited: bool
    remediation: str
    affected: list[str] = field(default_factory=list)  # product ids
    unaffected: list[str] = field(default_factory=list)


@dataclass
class Advisory:
    id: str
    title: str
    publisher: str
    released: str
    products: dict[str, Product]
    vulnerabilities: list[Vulnerability]
    digest: str = ""
    known_exploited: tuple[str, ...] = ()  # its CVEs in an imported catalogue (exploited.py)

    @property
    def cves(self) -> list[str]:
        return [v.cve for v in self.vulnerabilities if v.cve]

    @property
    def cvss(self) -> float | None:
        scores = [v.cvss for v in self.vulnerabilities if v.cvss is not None]
        return max(scores) if scores else None

    @property
    def exploited(self) -> bool:
        """Known exploited: a threat of the advisory says so, or a catalogue lists a CVE."""
        return bool(self.known_exploited) or any(v.exploited for v in self.vulnerabilities)

    def with_exploited(self, catalogue: Collection[str]) -> Advisory:
        """This advisory marked with its CVEs the known-exploited catalogue lists."""
        known = tuple(c for c in self.cves if c in catalogue)
        return self if known == self.known_exploited else replace(self, known_exploited=known)

    def summary(self) -> dict[str, Any]:
        vendors = sorted({p.vendor for p in self.products.values() if p.vendor})
        names = sorted({p.name for p in self.products.values() if p.name})
        return {
            "advisory.id": self.id,
            "advisory.title": self.title,
            "advisory.publisher": self.publisher,
            "advisory.released": self.released,
            "advisory.cves": self.cves,
            "advisory.cvss": self.cvss,
            "advisory.exploited": self.exploited,
            "advisory.known_exploited": list(self.known_exploited),
            "advisory.vendors": vendors,
            "advisory.products": names,
            "advisory.identifiers": sorted(
                {i for p in self.products.values() for i in (p.cpe, p.purl) if i}
            ),
            "advisory.remediation": "; ".join(
                dict.fromkeys(v.remediation for v in self.vulnerabilities if v.remediation)
            ),
        }


def validate(doc: Any, origin: str) -> None:
    """Raise AdvisoryError unless ``doc`` is a valid CSAF 2.0 document (schema and the
    mandatory tests)."""
    if not isinstance(doc, dict) or not isinstance(doc.get("document"), dict):
        raise AdvisoryError(f"{origin}: not a CSAF document (no 'document' object)")
    version = doc["document"].get("csaf_version")
    if version != "2.0":
        raise AdvisoryError(f"{origin}: CSAF version {version!r}; this reader takes 2.0")
    from csaf.csaf.v20 import validate as csaf_validate

    report = csaf_validate(doc, path=origin)
    if report.overall_valid:
        return
    problems = []
    for result in report.results:
        if result.passed or result.skipped:
            continue
        for error in result.errors[:3]:
            problems.append(f"{result.id} {result.title}: {error.instance_path} {error.message}")
    raise AdvisoryError(f"{origin}: not a valid CSAF 2.0 advisory: " + "; ".join(problems[:5]))


def parse(doc: dict, origin: str = "<document>", check: bool = True) -> Advisory:
    """An Advisory from a CSAF 2.0 document (validated first unless ``check`` is false)."""
    if check:
        validate(doc, origin)
    meta = doc["document"]
    tracking = meta.get("tracking") or {}
    products: dict[str, Product] = {}
    tree = doc.get("product_tree") or {}
    for product in _walk(tree.get("branches") or [], {}):
        products[product.product_id] = product
    for full in tree.get("full_product_names") or []:
        pid = full.get("product_id")
        if pid and pid not in products:
            products[pid] = _product(full, {}, None, None)
    vulns = []
    for v in doc.get("vulnerabilities") or []:
        status = v.get("product_status") or {}
        scores = [
            s.get(key, {}).get("baseScore")
            for s in v.get("scores") or []
            for key in ("cvss_v3", "cvss_v2")
            if isinstance(s.get(key), dict)
        ]
        scores = [float(s) for s in scores if isinstance(s, int | float)]
        exploited = any(
            t.get("category") == "exploit_status"
            and _EXPLOITED.search(t.get("details") or "")
            and not _NOT_EXPLOITED.search(t.get("details") or "")
            for t in v.get("threats") or []
        )
        vulns.append(
            Vulnerability(
                cve=v.get("cve") or (v.get("ids") or [{}])[0].get("text", ""),
                title=v.get("title") or "",
                cvss=max(scores) if scores else None,
                exploited=exploited,
                remediation="; ".join(
                    r.get("details", "") for r in v.get("remediations") or [] if r.get("details")
                ),
                affected=[p for key in AFFECTED for p in status.get(key) or []],
                unaffected=[p for key in UNAFFECTED for p in status.get(key) or []],
            )
        )
    return Advisory(
        id=tracking.get("id") or origin,
        title=meta.get("title") or "",
        publisher=(meta.get("publisher") or {}).get("name") or "",
        released=tracking.get("current_release_date") or tracking.get("initial_release_date") or "",
        products=products,
        vulnerabilities=vulns,
    )


def _walk(branches: list, context: dict) -> Iterator[Product]:
    for branch in branches:
        category, name = branch.get("category"), branch.get("name") or ""
        ctx = dict(context)
        if category in ("vendor", "product_family", "product_name"):
            ctx[category] = name
        rng = version = None
        if category in ("product_version_range", "product_version"):
            if category == "product_version_range":
                rng = name
            else:
                version = name
        if branch.get("product"):
            yield _product(branch["product"], ctx, rng, version)
        yield from _walk(branch.get("branches") or [], ctx)


def _product(full: dict, ctx: dict, rng: str | None, version: str | None) -> Product:
    helper = full.get("product_identification_helper") or {}
    models = tuple(helper.get("model_numbers") or ()) + tuple(helper.get("skus") or ())
    if rng is None and version is None:
        # a product the tree names without a version: its CPE or package URL may say one
        from assessment.identifiers import cpe_key, purl_key

        key = cpe_key(helper.get("cpe")) or purl_key(helper.get("purl"))
        version = (key[-1] or None) if key else None
    parsed: Range | None = None
    problem = ""
    if rng is not None:
        try:
            parsed = parse_range(rng)
        except RangeError as exc:
            problem = str(exc)
    elif version is None:
        parsed = parse_range("vers:all/*")  # named without a version: every version
    elif parse_version(version) is None:
        problem = f"not a version {version!r}"
    return Product(
        product_id=full.get("product_id", ""),
        vendor=ctx.get("vendor", ""),
        name=ctx.get("product_name") or full.get("name", ""),
        family=ctx.get("product_family", ""),
        range=parsed,
        version=version or "",
        models=models,
        problem=problem,
        cpe=str(helper.get("cpe") or ""),
        purl=str(helper.get("purl") or ""),
    )


def read_json(path: Path) -> tuple[bytes, Any]:
    """A feed file's bytes and JSON; AdvisoryError names the file."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise AdvisoryError(f"{path}: cannot read: {exc.strerror}") from None
    if len(data) > MAX_DOCUMENT:
        raise AdvisoryError(f"{path}: {len(data)} bytes, more than a CSAF document may be here")
    try:
        return data, orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise AdvisoryError(f"{path}: not JSON: {exc}") from None


def from_json(data: bytes, doc: Any, origin: str) -> Advisory:
    """Validate and parse a CSAF document read from ``data`` (its digest is of the bytes)."""
    advisory = parse(doc, origin)
    advisory.digest = hashlib.sha256(data).hexdigest()
    return advisory


def load_file(path: Path) -> Advisory:
    """Read, validate and parse one CSAF file; AdvisoryError names the file."""
    data, doc = read_json(path)
    return from_json(data, doc, str(path))


def files(paths: list[Path]) -> list[Path]:
    """The ``.json`` files of the given files and folders (folders recursively), sorted."""
    out: list[Path] = []
    for path in paths:
        if path.is_dir():
            out.extend(sorted(p for p in path.rglob("*.json") if p.is_file()))
        else:
            out.append(path)
    return out
