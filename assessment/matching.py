"""Which assets an advisory affects: by vendor, product and firmware version.

An asset names its device with ``ics.device.vendor`` and any of ``product``, ``model``,
``product_code``, ``order_number``; an advisory's product matches when the vendors are equal
after normalisation (case, punctuation and legal suffixes ignored) and the product name
equals one of the asset's names, or one of the product's model numbers (``*`` / ``?``
wildcards) matches the asset's order number, product code or model. Then the version:

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
from assessment.versions import parse_version

NAME_FIELDS = ("ics.device.product", "ics.device.model", "ics.device.product_code")
MODEL_FIELDS = ("ics.device.order_number", "ics.device.product_code", "ics.device.model")
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
        }


def _model_key(text: str) -> str:
    return _MODEL_CHARS.sub("", text).upper()


class Matcher:
    """An index of advisories' products, built once, queried per asset."""

    def __init__(self, advisories: Iterable[Advisory]) -> None:
        self.advisories: dict[str, Advisory] = {}
        self._by_name: dict[tuple[str, str], list[tuple[Advisory, Product]]] = defaultdict(list)
        self._models: dict[str, list[tuple[str, Advisory, Product]]] = defaultdict(list)
        for adv in advisories:
            self.advisories[adv.id] = adv
            for product in adv.products.values():
                vendor = norm(product.vendor)
                for name in {product.name, product.family} - {""}:
                    self._by_name[(vendor, norm(name))].append((adv, product))
                for model in product.models:
                    self._models[vendor].append((_model_key(model), adv, product))

    def candidates(self, device: Mapping[str, Any]) -> list[tuple[Advisory, Product]]:
        vendor = norm(device.get("ics.device.vendor"))
        if not vendor:
            return []
        seen: dict[tuple[str, str], tuple[Advisory, Product]] = {}
        for key in NAME_FIELDS:
            value = device.get(key)
            if value:
                for adv, product in self._by_name.get((vendor, norm(str(value))), ()):
                    seen[(adv.id, product.product_id)] = (adv, product)
        models = self._models.get(vendor)
        if models:
            keys = {_model_key(str(device[k])) for k in MODEL_FIELDS if device.get(k)}
            for pattern, adv, product in models:
                if any(fnmatch.fnmatchcase(k, pattern) for k in keys):
                    seen[(adv.id, product.product_id)] = (adv, product)
        return list(seen.values())

    def match_device(self, device: Mapping[str, Any]) -> list[tuple[Advisory, str, Product]]:
        """(advisory, status, product) for one device identity."""
        firmware = device.get("ics.device.firmware")
        version = parse_version(str(firmware)) if firmware else None
        by_advisory: dict[str, tuple[Advisory, str, Product]] = {}
        candidates = self.candidates(device)
        if not candidates:
            return []
        candidate_ids = {(adv.id, p.product_id) for adv, p in candidates}
        for adv, product in candidates:
            status = _status(adv, product, version, candidate_ids)
            if status is None:
                continue
            old = by_advisory.get(adv.id)
            if old is None or (old[1] == "possibly-affected" and status == "affected"):
                by_advisory[adv.id] = (adv, status, product)
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
                    "ics.device.firmware",
                )
            )
            if not key[0]:
                continue
            groups[key].append(asset["asset.id"])
            identities.setdefault(key, asset)
        out: list[Match] = []
        for key, asset_ids in groups.items():
            found = self.match_device(identities[key])
            for adv, status, product in found:
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
                            firmware=key[-1],
                            remediation=adv.summary()["advisory.remediation"],
                        )
                    )
        return out


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
