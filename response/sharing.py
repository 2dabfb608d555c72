"""Sharing as STIX 2.1, built and checked with the OASIS ``stix2`` library.

An incident or a campaign becomes a bundle of: the province as the producing identity;
indicators (source addresses, as STIX patterns); observed data (the addresses seen, with
first/last time and count); attack patterns carrying their ATT&CK for ICS ids
(``mitre-ics-attack``); the campaign (or incident); and identities of the *sectors* hit
(``identity_class: class``). Enterprises are never named unless the caller asks for it
(``include_enterprises``). Every object is made by ``stix2`` (which validates properties) and
the bundle is parsed back before it leaves.

Import reads a bundle's indicators whose patterns are address comparisons
(``[ipv4-addr:value = '...']``, also ORed) into the watchlist; others are counted, skipped.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import re
from typing import Any

import stix2

from detectors.attack_ics import TECHNIQUES
from response.incidents import OrgLike

# icsmon industries -> STIX 2.1 industry-sector-ov
SECTORS = {
    "chemicals": "chemical",
    "metallurgy": "manufacturing",
    "non-ferrous-metals": "mining",
    "equipment-manufacturing": "manufacturing",
    "high-tech-manufacturing": "technology",
    "building-materials": "construction",
    "tyres": "automotive",
    "pistons": "automotive",
    "coal-to-liquids": "energy",
    "photovoltaic-silicon": "energy",
    "instrumentation": "manufacturing",
    "textiles": "manufacturing",
}
_ADDR = re.compile(r"(ipv4-addr|ipv6-addr):value\s*=\s*'([^'\\]{1,64})'")
MAX_IMPORT_OBJECTS = 100_000


class SharingError(ValueError):
    """A bundle that cannot be read."""


def _ts(epoch: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(epoch, dt.UTC)


def _attack_patterns(techniques: set[str]) -> list[Any]:
    out = []
    for tid in sorted(techniques):
        t = TECHNIQUES.get(tid)
        out.append(
            stix2.AttackPattern(
                name=t.name if t else tid,
                external_references=[
                    {
                        "source_name": "mitre-ics-attack",
                        "external_id": tid,
                        "url": f"https://attack.mitre.org/techniques/{tid}/",
                    }
                ],
            )
        )
    return out


def _address_objects(
    addresses: dict[str, tuple[float, float, int]], producer: Any
) -> tuple[list[Any], list[Any]]:
    """Indicators and observed data for external source addresses."""
    indicators, observed = [], []
    for addr, (first, last, count) in sorted(addresses.items()):
        version = 6 if ":" in addr else 4
        sco = (stix2.IPv6Address if version == 6 else stix2.IPv4Address)(value=addr)
        indicators.append(
            stix2.Indicator(
                name=f"Source address {addr}",
                pattern_type="stix",
                pattern=f"[ipv{version}-addr:value = '{addr}']",
                valid_from=_ts(first),
                indicator_types=["malicious-activity"],
                created_by_ref=producer.id,
            )
        )
        observed.append(sco)
        observed.append(
            stix2.ObservedData(
                first_observed=_ts(first),
                last_observed=_ts(max(last, first)),
                number_observed=max(1, count),
                object_refs=[sco.id],
                created_by_ref=producer.id,
            )
        )
    return indicators, observed


def _identities(
    org: OrgLike, enterprise_ids: set[str], include_enterprises: bool, producer: Any
) -> list[Any]:
    out = []
    industries = sorted(
        {org.enterprises[e]["industry"] for e in enterprise_ids if e in org.enterprises}
    )
    for ind in industries:
        out.append(
            stix2.Identity(
                name=f"{ind} sector, {org.province.get('name', 'province')}",
                identity_class="class",
                sectors=[SECTORS.get(ind, "manufacturing")],
                created_by_ref=producer.id,
            )
        )
    if include_enterprises:
        for e in sorted(enterprise_ids):
            info = org.enterprises.get(e)
            if info:
                out.append(
                    stix2.Identity(
                        name=info["name"],
                        identity_class="organization",
                        sectors=[SECTORS.get(info["industry"], "manufacturing")],
                        created_by_ref=producer.id,
                    )
                )
    return out


def _bundle(objects: list[Any]) -> dict[str, Any]:
    bundle = stix2.Bundle(objects=objects, allow_custom=False)
    text = bundle.serialize(pretty=False)
    stix2.parse(text, allow_custom=False)  # what we send must read back as valid STIX 2.1
    return json.loads(text)


def _producer(org: OrgLike) -> Any:
    return stix2.Identity(
        name=f"{org.province.get('name', 'Province')} ICS security situational-awareness platform",
        identity_class="organization",
    )


def export_campaign(
    campaign: dict[str, Any],
    alerts: list[dict[str, Any]],
    org: OrgLike,
    include_enterprises: bool = False,
) -> dict[str, Any]:
    """``campaign``: Campaigns.brief(); ``alerts``: its campaign_alert rows."""
    producer = _producer(org)
    addresses: dict[str, tuple[float, float, int]] = {}
    if campaign["kind"] == "source-ip":
        ts = [a["ts"] for a in alerts]
        addresses[campaign["indicator"]] = (min(ts), max(ts), len(ts))
    techniques = {t for a in alerts for t in json.loads(a["techniques"])}
    enterprises = {a["enterprise_id"] for a in alerts}
    camp = stix2.Campaign(
        name=f"{campaign['kind']} {campaign['indicator']}",
        description=(
            f"Same {campaign['kind']} at {len(enterprises)} enterprises in "
            f"{len({a['city_id'] for a in alerts})} cities"
        ),
        first_seen=_ts(campaign["first_seen"]),
        last_seen=_ts(campaign["last_seen"]),
        created_by_ref=producer.id,
    )
    indicators, observed = _address_objects(addresses, producer)
    patterns = _attack_patterns(techniques)
    identities = _identities(org, enterprises, include_enterprises, producer)
    rels = [
        stix2.Relationship(i, "indicates", camp, created_by_ref=producer.id) for i in indicators
    ]
    rels += [stix2.Relationship(camp, "uses", p, created_by_ref=producer.id) for p in patterns]
    rels += [stix2.Relationship(camp, "targets", i, created_by_ref=producer.id) for i in identities]
    return _bundle([producer, camp, *indicators, *observed, *patterns, *identities, *rels])


def export_incident(
    incident: dict[str, Any],
    org: OrgLike,
    internal_networks: list[Any],
    include_enterprises: bool = False,
) -> dict[str, Any]:
    """``incident``: Incidents.detail() (its alert_list and affected parts). Source addresses
    inside ``internal_networks`` (the plants' own) are not indicators and are left out."""
    producer = _producer(org)
    addresses: dict[str, tuple[float, float, int]] = {}
    for a in incident["alert_list"]:
        ip = a.get("source_ip")
        try:
            if not ip or any(ipaddress.ip_address(ip) in n for n in internal_networks):
                continue
        except ValueError:
            continue
        first, last, n = addresses.get(ip, (a["ts"], a["ts"], 0))
        addresses[ip] = (min(first, a["ts"]), max(last, a["ts"]), n + 1)
    techniques = {t for a in incident["alert_list"] for t in a["techniques"]}
    enterprises = {x["enterprise"] for x in incident["affected"]}
    inc = stix2.Incident(
        name=f"Incident {incident['number']}: {incident['title']}",
        description=f"Level {incident['grade'].get('en', '')} "
        f"({incident['grade'].get('zh', '')}), rule {incident['grade'].get('rule')}",
        created_by_ref=producer.id,
    )
    indicators, observed = _address_objects(addresses, producer)
    patterns = _attack_patterns(techniques)
    identities = _identities(org, enterprises, include_enterprises, producer)
    rels = [stix2.Relationship(i, "indicates", inc, created_by_ref=producer.id) for i in indicators]
    rels += [stix2.Relationship(inc, "uses", p, created_by_ref=producer.id) for p in patterns]
    rels += [stix2.Relationship(inc, "targets", i, created_by_ref=producer.id) for i in identities]
    return _bundle([producer, inc, *indicators, *observed, *patterns, *identities, *rels])


def read_indicators(bundle_text: str | bytes) -> dict[str, Any]:
    """Addresses from a bundle's indicators: {"addresses": [(kind, value, indicator id)],
    "skipped": n, "objects": n}. The bundle is parsed (and checked) by ``stix2``."""
    try:
        bundle = stix2.parse(bundle_text, allow_custom=True)
    except Exception as exc:  # stix2 raises many types for bad input
        raise SharingError(f"not a STIX 2 bundle: {' '.join(str(exc).split())[:300]}") from None
    objects = getattr(bundle, "objects", None)
    if objects is None:
        raise SharingError("not a STIX 2 bundle: no objects")
    if len(objects) > MAX_IMPORT_OBJECTS:
        raise SharingError(f"more than {MAX_IMPORT_OBJECTS} objects")
    found, skipped = [], 0
    for obj in objects:
        if getattr(obj, "type", None) != "indicator":
            continue
        if getattr(obj, "pattern_type", "stix") != "stix":
            skipped += 1
            continue
        pattern = str(obj.pattern)
        hits = _ADDR.findall(pattern)
        # Only patterns made wholly of address comparisons ORed together are watchlist items.
        rest = _ADDR.sub("", pattern).replace("[", "").replace("]", "").replace("OR", "")
        if not hits or rest.strip():
            skipped += 1
            continue
        found += [(kind, value, obj.id) for kind, value in hits]
    return {"addresses": found, "skipped": skipped, "objects": len(objects)}
