"""Which assets an advisory affects: by vendor, product and firmware version.

An asset names its device with ``ics.device.vendor`` and any of ``product``, ``model``,
``product_code``, ``order_number`` (Modbus device identification, S7 SZL, OPC UA build info,
DNP3 device attributes, EtherNet/IP identity: the same fields whatever the protocol); an
advisory's product matches when the vendors are equal after normalisation (case,
punctuation and legal suffixes ignored; a vendor written ``Company/Brand`` goes by either
name) and the product name
equals one of the asset's names, or one of the product's model numbers (``*`` / ``?``
wildcards) matches the asset's order number, product code or model, or the product's CPE or
package URL names the same vendor and product (or type, namespace and name) as the asset's
``ics.device.cpe`` / ``ics.device.purl`` (an inventory sets them; the traffic does not: a
product an advisory identifies only so shows in "who is affected" as not matched). Then the
version:

- ``affected``: the asset's firmware is inside an affected range (exactly at the
  boundaries: ``<2.4.2`` excludes 2.4.2, ``<=2.4.1`` includes 2.4.1) and not listed as a
  fixed or not-affected version of the same vulnerability;
- ``possibly-affected``: the product matches but the firmware is unknown (not seen, or no
  version in it), or the advisory's range could not be read;
- otherwise nothing.

Matching is one pass over the distinct (vendor, names, firmware) combinations of the assets
(a province has many identical devices), each looked up in an index from (vendor, name) to
the advisories' products: 100,000 assets against 5,000 advisories is a few seconds
(bench/bench_assessment.py).
"""

from __future__ import annotations

import fnmatch
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from assessment.advisories import Advisory, Product, norm
from assessment.identifiers import cpe_key, purl_key
from assessment.versions import parse_version

NAME_FIELDS = ("ics.device.product", "ics.device.model", "ics.device.product_code")
MODEL_FIELDS = ("ics.device.order_number", "ics.device.product_code", "ics.device.model")
ID_FIELDS = ("ics.device.cpe", "ics.device.purl")  # set by an inventory, not by the traffic
_MODEL_CHARS = re.compile(r"[\s\-]")


@dataclass(frozen=True)
class Match:
    asset_id: str
    advisory_id: str
    status: str  # affected | possibly-affected
    cves: tuple[str, ...]
    cvss: float | None
    exploited: bool
    product: str
    range: str
    firmware: str
    remediation: str
    via: str = "name"  # what identified the device: name, model, cpe, purl

    def doc(self) -> dict[str, Any]:
        return {
            "asset.id": self.asset_id,
            "advisory.id": self.advisory_id,
            "match.status": self.status,
            "vulnerability.id": list(self.cves),
            "vulnerability.score.base": self.cvss,
            "vulnerability.exploited": self.exploited,
            "match.product": self.product,
            "match.range": self.range,
            "ics.device.firmware": self.firmware,
            "advisory.remediation": self.remediation,
            "match.via": self.via,
        }


def vendor_names(text: Any) -> list[str]:
    """The normalised names a device's vendor goes by. A protocol's vendor table may name
    a company and its brand together (EtherNet/IP's ``Rockwell Automation/Allen-Bradley``)
    where an advisory names one of them: each part is a name, and the whole is one too."""
    whole = norm(str(text or ""))
    if not whole:
        return []
    parts = [norm(p) for p in str(text).split("/")] if "/" in str(text) else []
    return list(dict.fromkeys([whole, *(p for p in parts if p)]))


def _model_key(text: str) -> str:
    return _MODEL_CHARS.sub("", text).upper()


class Matcher:
    """An index of advisories' products, built once, queried per asset."""

    def __init__(self, advisories: Iterable[Advisory]) -> None:
        self.advisories: dict[str, Advisory] = {}
        self._by_name: dict[tuple[str, str], list[tuple[Advisory, Product]]] = defaultdict(list)
        self._models: dict[str, list[tuple[str, Advisory, Product]]] = defaultdict(list)
        self._by_id: dict[tuple, list[tuple[Advisory, Product]]] = defaultdict(list)
        for adv in advisories:
            self.advisories[adv.id] = adv
            for product in adv.products.values():
                vendor = norm(product.vendor)
                if vendor:
                    for name in {product.name, product.family} - {""}:
                        self._by_name[(vendor, norm(name))].append((adv, product))
                    for model in product.models:
                        self._models[vendor].append((_model_key(model), adv, product))
                for key in _id_keys(product.cpe, product.purl):
                    self._by_id[key].append((adv, product))

    def candidates(self, device: Mapping[str, Any]) -> list[tuple[Advisory, Product]]:
        return [(adv, p) for adv, p, _via in self._candidates(device)]

    def _candidates(self, device: Mapping[str, Any]) -> list[tuple[Advisory, Product, str]]:
        seen: dict[tuple[str, str], tuple[Advisory, Product, str]] = {}
        if self._by_id:
            cpe, purl = (device.get(k) for k in ID_FIELDS)
            for key in _id_keys(str(cpe or ""), str(purl or "")):
                for adv, product in self._by_id.get(key, ()):
                    seen[(adv.id, product.product_id)] = (adv, product, key[0])
        for vendor in vendor_names(device.get("ics.device.vendor")):
            for key in NAME_FIELDS:
                value = device.get(key)
                if value:
                    for adv, product in self._by_name.get((vendor, norm(str(value))), ()):
                        seen.setdefault((adv.id, product.product_id), (adv, product, "name"))
            models = self._models.get(vendor)
            if models:
                keys = {_model_key(str(device[k])) for k in MODEL_FIELDS if device.get(k)}
                for pattern, adv, product in models:
                    if any(fnmatch.fnmatchcase(k, pattern) for k in keys):
                        seen.setdefault((adv.id, product.product_id), (adv, product, "model"))
        return list(seen.values())

    def match_device(self, device: Mapping[str, Any]) -> list[tuple[Advisory, str, Product]]:
        """(advisory, status, product) for one device identity."""
        return [(adv, status, product) for adv, status, product, _via in self._match(device)]

    def _match(self, device: Mapping[str, Any]) -> list[tuple[Advisory, str, Product, str]]:
        """(advisory, status, product, what identified it) for one device identity."""
        firmware = device.get("ics.device.firmware") or _id_version(device)
        version = parse_version(str(firmware)) if firmware else None
        by_advisory: dict[str, tuple[Advisory, str, Product, str]] = {}
        candidates = self._candidates(device)
        if not candidates:
            return []
        candidate_ids = {(adv.id, p.product_id) for adv, p, _via in candidates}
        for adv, product, via in candidates:
            status = _status(adv, product, version, candidate_ids)
            if status is None:
                continue
            old = by_advisory.get(adv.id)
            if old is None or (old[1] == "possibly-affected" and status == "affected"):
                by_advisory[adv.id] = (adv, status, product, via)
        return list(by_advisory.values())

    def match(self, assets: Iterable[Mapping[str, Any]]) -> list[Match]:
        """Every (asset, advisory) match; assets sharing an identity are matched once."""
        groups: dict[tuple, list[str]] = defaultdict(list)
        identities: dict[tuple, Mapping[str, Any]] = {}
        for asset in assets:
            key = tuple(
                str(asset.get(k) or "")
                for k in (
                    "ics.device.vendor",
                    *NAME_FIELDS,
                    "ics.device.order_number",
                    *ID_FIELDS,
                    "ics.device.firmware",
                )
            )
            if not key[0] and not any(key[-3:-1]):
                continue
            groups[key].append(asset["asset.id"])
            identities.setdefault(key, asset)
        out: list[Match] = []
        for key, asset_ids in groups.items():
            found = self._match(identities[key])
            for adv, status, product, via in found:
                rng = product.range.text if product.range is not None else product.version
                for asset_id in asset_ids:
                    out.append(
                        Match(
                            asset_id=asset_id,
                            advisory_id=adv.id,
                            status=status,
                            cves=tuple(adv.cves),
                            cvss=adv.cvss,
                            exploited=adv.exploited,
                            product=f"{product.vendor} {product.name}".strip(),
                            range=rng or "",
                            firmware=key[-1] or _id_version(identities[key]),
                            remediation=remediation(adv),
                            via=via,
                        )
                    )
        return out


def identifiers(adv: Advisory, assets: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The CPEs and package URLs of an advisory's products, each with the number of assets
    that carry it: one that none carries is noted as not matched (the traffic does not reveal
    identifiers; only an inventory that sets ``ics.device.cpe`` / ``purl`` can match it)."""
    wanted: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    out: list[dict[str, Any]] = []
    for product in adv.products.values():
        for kind, value in (("cpe", product.cpe), ("purl", product.purl)):
            if not value:
                continue
            row = {"type": kind, "value": value, "product": product.name, "assets": 0}
            keys = _id_keys(value, "") if kind == "cpe" else _id_keys("", value)
            if not keys:
                row["problem"] = f"not a {kind.upper()}"
            for key in keys:
                wanted[key].append(row)
            out.append(row)
    if wanted:
        for asset in assets:
            for key in _id_keys(*(str(asset.get(k) or "") for k in ID_FIELDS)):
                for row in wanted.get(key, ()):
                    row["assets"] += 1
    for row in out:
        row["matched"] = row["assets"] > 0
    return out


def remediation(adv: Advisory) -> str:
    return "; ".join(dict.fromkeys(v.remediation for v in adv.vulnerabilities if v.remediation))


def _id_keys(cpe: str, purl: str) -> list[tuple]:
    """Index keys of identifiers: ("cpe", vendor, product), ("purl", type, namespace, name)."""
    out: list[tuple] = []
    c = cpe_key(cpe) if cpe else None
    if c is not None:
        out.append(("cpe", c[0], c[1]))
    u = purl_key(purl) if purl else None
    if u is not None:
        out.append(("purl", *u[:3]))
    return out


def _id_version(device: Mapping[str, Any]) -> str:
    """The version a device's CPE or package URL names ("" when none)."""
    c = cpe_key(str(device.get("ics.device.cpe") or ""))
    u = purl_key(str(device.get("ics.device.purl") or ""))
    return (c[2] if c else "") or (u[3] if u else "")


def _status(adv: Advisory, product: Product, version: Any, candidates: set) -> str | None:
    """affected / possibly-affected / None for one advisory product and a device version."""
    for vuln in adv.vulnerabilities:
        if product.product_id not in vuln.affected:
            continue
        if product.problem:
            return "possibly-affected"
        if version is None:
            return "possibly-affected"
        inside = (
            version in product.range
            if product.range is not None
            else version == parse_version(product.version)
        )
        if not inside:
            continue
        # a fixed / not-affected entry naming this exact version of the same product wins
        fixed = False
        for pid in vuln.unaffected:
            other = adv.products.get(pid)
            if other is None or (adv.id, pid) not in candidates:
                continue
            exact = other.range is None and parse_version(other.version) == version
            ranged = other.range is not None and not other.range.every and version in other.range
            fixed = fixed or exact or ranged
        if not fixed:
            return "affected"
    return None
