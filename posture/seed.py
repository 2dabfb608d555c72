"""Demo and load data for the posture view: a province registry and realistic documents.

Used by the tests (a small province), the dashboard demo and bench/bench_posture.py (16 cities,
4,000 enterprises, 6,000 sites, millions of alerts). Documents follow docs/schema.md (flat,
dotted keys) and are deterministic for a given seed: same seed, same ids.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import random
import re
import struct
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

# Shandong's 16 prefecture-level cities (id, English, Chinese).
SHANDONG_CITIES: tuple[tuple[str, str, str], ...] = (
    ("jinan", "Jinan", "济南"),
    ("qingdao", "Qingdao", "青岛"),
    ("zibo", "Zibo", "淄博"),
    ("zaozhuang", "Zaozhuang", "枣庄"),
    ("dongying", "Dongying", "东营"),
    ("yantai", "Yantai", "烟台"),
    ("weifang", "Weifang", "潍坊"),
    ("jining", "Jining", "济宁"),
    ("taian", "Tai'an", "泰安"),
    ("weihai", "Weihai", "威海"),
    ("rizhao", "Rizhao", "日照"),
    ("linyi", "Linyi", "临沂"),
    ("dezhou", "Dezhou", "德州"),
    ("liaocheng", "Liaocheng", "聊城"),
    ("binzhou", "Binzhou", "滨州"),
    ("heze", "Heze", "菏泽"),
)

# Industry id -> (English, Chinese, typical criticality). Sectors named in the provinces' reports.
INDUSTRIES: dict[str, tuple[str, str, int]] = {
    "chemicals": ("Chemicals", "化工", 5),
    "metallurgy": ("Metallurgy", "冶金", 4),
    "non-ferrous-metals": ("Non-ferrous metals", "有色金属", 4),
    "equipment-manufacturing": ("Equipment manufacturing", "装备制造", 3),
    "high-tech-manufacturing": ("High-tech manufacturing", "高端制造", 3),
    "building-materials": ("Building materials", "建材", 3),
    "tyres": ("Tyres", "轮胎", 2),
    "pistons": ("Pistons", "活塞", 2),
    "coal-to-liquids": ("Coal-to-liquids", "煤制油", 5),
    "photovoltaic-silicon": ("Photovoltaic silicon", "光伏硅材料", 3),
    "instrumentation": ("Instrumentation", "仪器仪表", 2),
    "textiles": ("Textiles", "纺织", 1),
}

_NAME_PARTS = (
    ("Huaxin", "华信"),
    ("Lutong", "鲁通"),
    ("Hengyuan", "恒远"),
    ("Jinding", "金鼎"),
    ("Zhongtai", "中泰"),
    ("Dongfang", "东方"),
    ("Xinghai", "星海"),
    ("Taishan", "泰山"),
    ("Qilu", "齐鲁"),
    ("Boyuan", "博远"),
    ("Ruifeng", "瑞丰"),
    ("Changsheng", "长盛"),
)

# Rules the demo alerts come from: (rule id, name, level -> severity, protocol, technique ids,
# technique names, tactic names, ruleset, relative frequency).
RULES: tuple[tuple[str, str, int, str, list[str], list[str], list[str], str, int], ...] = (
    (
        "icsmon-modbus-write-unknown-master",
        "Modbus write from a master not in the baseline",
        73,
        "modbus",
        ["T0855"],
        ["Unauthorized Command Message"],
        ["Impair Process Control"],
        "sigma",
        10,
    ),
    (
        "icsmon-modbus-force-listen-only",
        "Modbus Force Listen Only Mode (FC 8/4)",
        99,
        "modbus",
        ["T0881", "T0816"],
        ["Service Stop", "Device Restart/Shutdown"],
        ["Inhibit Response Function"],
        "sigma",
        1,
    ),
    (
        "icsmon-modbus-read-device-id",
        "Modbus Read Device Identification",
        21,
        "modbus",
        ["T0888"],
        ["Remote System Information Discovery"],
        ["Discovery"],
        "sigma",
        30,
    ),
    (
        "icsmon-modbus-write-burst",
        "Burst of writes to one Modbus register",
        73,
        "modbus",
        ["T0806"],
        ["Brute Force I/O"],
        ["Impair Process Control"],
        "sigma",
        4,
    ),
    (
        "icsmon-s7-plc-stop",
        "S7 PLC Stop",
        99,
        "s7comm",
        ["T0858", "T0881"],
        ["Change Operating Mode", "Service Stop"],
        ["Execution", "Inhibit Response Function"],
        "sigma",
        1,
    ),
    (
        "icsmon-s7-download-block",
        "S7 program download",
        73,
        "s7comm",
        ["T0843"],
        ["Program Download"],
        ["Lateral Movement"],
        "sigma",
        3,
    ),
    (
        "icsmon-s7-upload-block",
        "S7 program upload",
        47,
        "s7comm",
        ["T0845"],
        ["Program Upload"],
        ["Collection"],
        "sigma",
        5,
    ),
    (
        "icsmon-s7-read-szl",
        "S7 Read SZL (CPU identification)",
        21,
        "s7comm",
        ["T0888"],
        ["Remote System Information Discovery"],
        ["Discovery"],
        "sigma",
        25,
    ),
    (
        "icsmon-opcua-browse",
        "OPC UA address-space browse from a new client",
        47,
        "opcua",
        ["T0861"],
        ["Point & Tag Identification"],
        ["Collection"],
        "sigma",
        12,
    ),
    (
        "icsmon-opcua-write",
        "OPC UA Write service call",
        73,
        "opcua",
        ["T0836"],
        ["Modify Parameter"],
        ["Impair Process Control"],
        "sigma",
        4,
    ),
    (
        "baseline-new-master",
        "New master talking to a controller",
        47,
        "modbus",
        ["T0848"],
        ["Rogue Master"],
        ["Initial Access"],
        "baseline",
        6,
    ),
    (
        "baseline-new-function",
        "Function code never seen in the baseline",
        47,
        "s7comm",
        ["T0855"],
        ["Unauthorized Command Message"],
        ["Impair Process Control"],
        "baseline",
        4,
    ),
)

ACTIONS = {
    "modbus": ("write-multiple-registers", "write", "write_multiple_registers", 502),
    "s7comm": ("plc-stop", "control", "plc_stop", 102),
    "opcua": ("browse", "read", "browse", 4840),
}


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _id(*parts: object) -> str:
    return hashlib.sha1("|".join(map(str, parts)).encode(), usedforsecurity=False).hexdigest()[:24]


def make_registry(
    n_enterprises: int = 48, n_sites: int = 64, cities: int = 16, seed: int = 7
) -> dict[str, Any]:
    """A province registry (the YAML shape of ``icsmon org import``). Enterprises are spread
    over the cities (bigger cities first), every enterprise has one site, extra sites go to
    random enterprises; each site has one sensor, a few sites two."""
    rng = random.Random(seed)
    city_rows = SHANDONG_CITIES[:cities]
    weights = [1.0 / (i + 1) ** 0.5 for i in range(len(city_rows))]
    industries = list(INDUSTRIES)
    out_cities: list[dict[str, Any]] = [
        {"id": cid, "name": en, "name_zh": zh, "enterprises": []} for cid, en, zh in city_rows
    ]
    ents: list[dict[str, Any]] = []
    for i in range(n_enterprises):
        # The first enterprises go round the cities so every city has at least one.
        ci = i if i < len(out_cities) else rng.choices(range(len(out_cities)), weights)[0]
        city = out_cities[ci]
        industry = industries[(i * 7 + ci) % len(industries)]
        en_part, zh_part = _NAME_PARTS[(i * 5 + ci) % len(_NAME_PARTS)]
        ind_en, ind_zh, crit = INDUSTRIES[industry]
        ent = {
            "id": f"ent-{i + 1:04d}",
            "name": f"{city['name']} {en_part} {ind_en} Co. No. {i + 1}",
            "name_zh": f"{city['name_zh']}{zh_part}{ind_zh}有限公司{i + 1}号",
            "industry": industry,
            "criticality": max(1, min(5, crit + rng.choice((-1, 0, 0, 1)))),
            "sites": [],
        }
        # classification (no random draw: the rest of the seeded province stays as it was)
        ent["grade"] = 3 if ent["criticality"] >= 4 else 1 + i % 2
        ent["key_connected"] = i % 3 == 0
        city["enterprises"].append(ent)
        ents.append(ent)
    for j in range(n_sites):
        ent = ents[j] if j < len(ents) else rng.choice(ents)
        letter = chr(ord("a") + len(ent["sites"]) % 26)
        num = ent["id"].split("-")[1]
        site_id = f"site-{num}-{letter}{len(ent['sites']) // 26 or ''}"
        sensors = [f"sensor-{num}-{letter}{len(ent['sites']) // 26 or ''}"]
        if j % 17 == 5:
            sensors.append(sensors[0] + "-2")
        ent["sites"].append({"id": site_id, "name": f"Plant {letter.upper()}", "sensors": sensors})
    return {
        "province": {"id": "shandong", "name": "Shandong", "name_zh": "山东"},
        "cities": out_cities,
    }


def registry_sites(registry: dict[str, Any]) -> list[dict[str, Any]]:
    """Flat list of sites with their enterprise, city, industry, criticality and sensors."""
    out = []
    for c in registry["cities"]:
        for e in c["enterprises"]:
            for s in e["sites"]:
                out.append(
                    {
                        "site": s["id"],
                        "enterprise": e["id"],
                        "city": c["id"],
                        "industry": e["industry"],
                        "criticality": s.get("criticality", e["criticality"]),
                        "sensors": s.get("sensors", []),
                    }
                )
    return out


def _site_ips(site_index: int) -> tuple[str, str]:
    """(client, server) addresses of a plant's control network (RFC 1918, per site)."""
    return (
        f"10.{site_index // 250 % 250}.{site_index % 250}.5",
        f"10.{site_index // 250 % 250}.{site_index % 250}.10",
    )


def community_id(src: str, dst: str, sport: int, dport: int, proto: int = 6) -> str:
    """Community ID v1 (seed 0) of a TCP flow, computed directly: the load generator makes
    millions and the reference library costs ~1 ms each (tests check the two agree)."""
    a, b = ipaddress.ip_address(src).packed, ipaddress.ip_address(dst).packed
    if (a, sport) > (b, dport):
        a, b, sport, dport = b, a, dport, sport
    digest = hashlib.sha1(
        struct.pack("!H", 0) + a + b + struct.pack("!BBHH", proto, 0, sport, dport),
        usedforsecurity=False,
    ).digest()
    return "1:" + base64.b64encode(digest).decode()


def make_alert(
    site: dict[str, Any],
    site_index: int,
    ts: float,
    rule: tuple,
    n: int,
    seed: int = 0,
    with_events: bool = True,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """One alert at ``site`` and the events that fired it (flat, docs/schema.md); without
    ``with_events`` only the alert (it still names both events' ids)."""
    rule_id, name, sev, proto, tech_ids, tech_names, tactics, ruleset, _ = rule
    src, dst = _site_ips(site_index)
    sport = 40000 + (n * 7919 + site_index) % 20000
    action, op, func, dport = ACTIONS[proto]
    cid = community_id(src, dst, sport, dport)
    sensor = site["sensors"][0] if site["sensors"] else f"sensor-{site['site']}"
    base = {
        "@timestamp": iso(ts),
        "ecs.version": "8.17.0",
        "network.transport": "tcp",
        "network.type": "ipv4",
        "network.protocol": proto,
        "network.community_id": cid,
        "source.ip": src,
        "source.port": sport,
        "destination.ip": dst,
        "destination.port": dport,
        "observer.name": sensor,
        "observer.type": "sensor",
        "observer.product": "icsmon",
        "organization.id": site["enterprise"],
        "labels.site": site["site"],
        "ics.operation": op,
        "ics.function": func,
    }
    events = []
    event_ids = [_id("ev", seed, site["site"], n, k) for k in range(2)]
    for k in range(2) if with_events else (1,):
        ev = dict(base)
        ev.update(
            {
                "@timestamp": iso(ts - 0.2 * (1 - k)),
                "event.kind": "event",
                "event.category": ["network"],
                "event.type": ["protocol", "change" if op in ("write", "control") else "access"],
                "event.action": action,
                "event.dataset": f"ics.{proto}",
                "event.outcome": "success",
                "event.duration": 1_250_000 + 1000 * k,
                "event.id": event_ids[k],
            }
        )
        if proto == "modbus":
            ev.update(
                {
                    "modbus.function_code": 16,
                    "modbus.unit_id": 1,
                    "modbus.register.start": 40001 + k,
                    "modbus.register.count": 2,
                }
            )
        elif proto == "s7comm":
            ev.update({"s7comm.rosctr": "job", "s7comm.function_code": 41})
        else:
            ev.update({"opcua.service": "BrowseRequest", "opcua.status_code": 0})
        events.append(ev)
    alert = dict(events[-1])
    alert.update(
        {
            "@timestamp": iso(ts),
            "event.kind": "alert",
            "event.category": ["network", "intrusion_detection"],
            "event.severity": sev,
            "event.id": _id("al", seed, site["site"], n),
            "rule.id": rule_id,
            "rule.name": name,
            "rule.ruleset": ruleset,
            "rule.description": f"{name} (demo rule).",
            "rule.author": "icsmon",
            "rule.reference": [f"https://attack.mitre.org/techniques/{t}/" for t in tech_ids],
            "threat.framework": "MITRE ATT&CK for ICS",
            "threat.technique.id": tech_ids,
            "threat.technique.name": tech_names,
            "threat.tactic.name": tactics,
            "icsmon.alert.count": 1,
            "icsmon.alert.event_ids": event_ids,
        }
    )
    if ruleset == "baseline":
        alert["icsmon.baseline.entry"] = f"{src} -> {dst}:{dport} {func}"
    return alert, events if with_events else []


def generate(
    registry: dict[str, Any],
    n_alerts: int,
    start: float,
    end: float,
    seed: int = 7,
    with_events: bool = True,
) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(kind, flat doc)`` for ``n_alerts`` alerts spread evenly over [start, end), oldest
    first; a few risky sites get most alerts (Zipf-like). With ``with_events`` each alert comes
    with its evidence events."""
    sites = registry_sites(registry)
    for si, ts, rule, n in alert_plan(len(sites), n_alerts, start, end, seed):
        alert, events = make_alert(sites[si], si, ts, rule, n, seed, with_events)
        if with_events:
            for ev in events:
                yield "event", ev
        yield "alert", alert


def alert_plan(
    n_sites: int,
    n_alerts: int,
    start: float,
    end: float,
    seed: int = 7,
) -> Iterator[tuple[int, float, tuple, int]]:
    """(site index, timestamp, rule, n) of each alert :func:`generate` makes, in its order:
    shared with :class:`AlertEncoder` so both produce the same alerts for a seed."""
    rng = random.Random(seed)
    order = list(range(n_sites))
    rng.shuffle(order)
    site_weights = [0.0] * n_sites
    for rank, idx in enumerate(order):
        site_weights[idx] = 1.0 / (rank + 1) ** 1.1
    rule_weights = [r[-1] for r in RULES]
    span = end - start
    batch = 4096
    for lo in range(0, n_alerts, batch):
        k = min(batch, n_alerts - lo)
        picks = rng.choices(range(n_sites), site_weights, k=k)
        rules = rng.choices(RULES, rule_weights, k=k)
        for j in range(k):
            n = lo + j
            # In time order (as alerts arrive), jittered within each alert's slot.
            yield picks[j], start + span * (n + rng.random()) / n_alerts, rules[j], n


def heartbeats(
    registry: dict[str, Any],
    now: float,
    silent_every: int = 9,
    seed: int = 7,
    quiet_every: int = 13,
) -> Iterator[dict[str, Any]]:
    """The newest heartbeat of every sensor (docs/schema.md, the shape ``sensor.heartbeat``
    writes): recent, so the sensor counts as reporting; every ``silent_every``-th sensor's is
    two hours old (silent), and every ``quiet_every``-th reporting sensor saw no traffic in
    its last interval (connected, no traffic)."""
    k = 0
    for i, site in enumerate(registry_sites(registry)):
        for j, sensor in enumerate(site["sensors"]):
            k += 1
            silent = bool(silent_every) and (i + j) % silent_every == 4
            ts = now - (7200 if silent else 30 + (i % 50))
            uptime = 86400.0 * (1 + i % 30)
            packets = int(uptime * 120)
            quiet = bool(quiet_every) and k % quiet_every == 0
            doc = {
                "@timestamp": iso(ts),
                "ecs.version": "8.17.0",
                "event.kind": "state",
                "event.category": ["host"],
                "event.type": ["info"],
                "event.dataset": "icsmon.heartbeat",
                "event.action": "heartbeat",
                "event.module": "icsmon",
                "event.id": _id("hb", seed, sensor, int(ts)),
                "observer.name": sensor,
                "observer.type": "sensor",
                "observer.product": "icsmon",
                "observer.version": "0.1.0",
                "labels.site": site["site"],
                "organization.id": site["enterprise"],
                "icsmon.sensor.packets": packets,
                "icsmon.sensor.bytes": packets * 90,
                "icsmon.sensor.pdus": packets // 2,
                "icsmon.sensor.events": packets // 4,
                "icsmon.sensor.alerts": i % 7,
                "icsmon.sensor.anomalies": i % 3,
                "icsmon.sensor.kernel_drops": 0,
                "icsmon.sensor.flows": 40 + i % 20,
                "icsmon.sensor.uptime_s": uptime,
                "icsmon.sensor.traffic": 0 if quiet else 7200,
                "icsmon.sensor.interval_s": 60.0,
                "icsmon.sensor.started": iso(ts - uptime),
                "icsmon.sensor.reason": "interval",
                "icsmon.sensor.content_version": "",
            }
            yield doc


def assets(registry: dict[str, Any], now: float, seed: int = 7) -> Iterator[dict[str, Any]]:
    """Two assets per site (the HMI and the PLC); one site in five has a PLC first seen today."""
    for i, site in enumerate(registry_sites(registry)):
        src, dst = _site_ips(i)
        new = i % 5 == 2
        vendor, product, firmware = DEVICES[i % len(DEVICES)]
        plc = {
            "asset.id": f"{site['site']}:{dst}",
            "host.ip": dst,
            "labels.site": site["site"],
            "asset.roles": ["modbus-server"],
            "asset.protocols": ["modbus"],
            "asset.peers": [src],
            "ics.device.vendor": vendor,
            "ics.device.product": product,
            "asset.first_seen": iso(now - (3600 if new else 40 * 86400)),
            "asset.last_seen": iso(now - 60),
        }
        if firmware:
            plc["ics.device.firmware"] = firmware
        yield plc
        yield {
            "asset.id": f"{site['site']}:{src}",
            "host.ip": src,
            "labels.site": site["site"],
            "asset.roles": ["modbus-client"],
            "asset.protocols": ["modbus"],
            "asset.peers": [dst],
            "asset.first_seen": iso(now - 40 * 86400),
            "asset.last_seen": iso(now - 60),
        }


# Made-up devices (the test advisories in tests/assessment/csaf describe them): vendor,
# product, firmware ("" unknown)
DEVICES = (
    ("Acme Automation", "Acme PLC 200", "2.4.1"),
    ("Example Automation", "Example PLC 1500", "4.2.1"),
    ("Northwind Controls", "NW-RTU 40", "10.10"),
    ("Acme Automation", "Acme PLC 200", ""),
    ("Acme Automation", "Acme PLC 200", "2.4.2"),
)
# (kind, category, severity, title, summary) of the findings the demo's PLCs show, by site
FINDINGS = (
    (
        "modbus-multiple-masters",
        "communication",
        50,
        "Modbus controller written by several masters",
        "written by 2 masters",
    ),
    (
        "opcua-security-mode-none",
        "configuration",
        60,
        "OPC UA endpoint without security",
        "an endpoint offers SecurityMode None",
    ),
    (
        "s7-no-protection-level",
        "configuration",
        60,
        "S7 CPU without protection level",
        "protection level 1, assigned level 0 (no password)",
    ),
    (
        "engineering-access-outside-segment",
        "exposure",
        70,
        "Engineering protocol reachable from outside the control segment",
        "s7comm answered for 10.99.0.5, outside 10.0.0.0/16",
    ),
)


def findings(registry: dict[str, Any], now: float) -> Iterator[dict[str, Any]]:
    """One or two findings on each site's PLC (shaped as detectors/findings.py makes them)."""
    for i, site in enumerate(registry_sites(registry)):
        _src, dst = _site_ips(i)
        asset_id = f"{site['site']}:{dst}"
        for k in {i % len(FINDINGS), (i * 3 + 1) % len(FINDINGS)}:
            kind, category, severity, title, summary = FINDINGS[k]
            fid = hashlib.blake2b(f"{site['site']}|{asset_id}|{kind}".encode(), digest_size=10)
            yield {
                "@timestamp": iso(now - 120),
                "event.kind": "state",
                "event.dataset": "icsmon.finding",
                "finding.id": fid.hexdigest(),
                "finding.kind": kind,
                "finding.category": category,
                "finding.title": title,
                "finding.severity": severity,
                "finding.summary": summary,
                "finding.first_seen": iso(now - 10 * 86400),
                "finding.last_seen": iso(now - 120),
                "finding.state": "open",
                "finding.evidence.event_ids": [],
                "asset.id": asset_id,
                "host.ip": dst,
                "labels.site": site["site"],
                "organization.id": site["enterprise"],
            }


def dataset(
    registry: dict[str, Any],
    now: float,
    n_alerts: int,
    days: float = 2.0,
    seed: int = 7,
) -> dict[str, list[dict[str, Any]]]:
    """All documents of a small demo province, by kind (for tests and the demo)."""
    out: dict[str, list[dict[str, Any]]] = {"event": [], "alert": [], "asset": [], "heartbeat": []}
    for kind, doc in generate(registry, n_alerts, now - days * 86400, now - 60, seed=seed):
        out[kind].append(doc)
    out["heartbeat"].extend(heartbeats(registry, now, seed=seed))
    out["asset"].extend(assets(registry, now, seed=seed))
    out["finding"] = list(findings(registry, now))
    return out


# Values that differ from alert to alert; everything else in an alert depends on its rule only.
_VARYING = {
    "@timestamp": "TS",
    "network.community_id": "CID",
    "source.ip": "SRC",
    "source.port": "SPORT",
    "destination.ip": "DST",
    "observer.name": "SENSOR",
    "organization.id": "ORG",
    "labels.site": "SITE",
    "event.id": "ID",
    "icsmon.baseline.entry": "ENTRY",
}
_SLOT = re.compile(rb'"@@([A-Z0-9]+)@@"')


class AlertEncoder:
    """The nested ``_source`` JSON of :func:`make_alert`'s alert (``with_events=False``),
    without building dicts: per rule, the JSON is encoded once with placeholders and each
    alert only fills in its own values. Loading millions of alerts spends its Python time
    here, about 10x less than ``nest(make_alert(...))`` + ``json.dumps`` (the tests check
    that both give the same document)."""

    def __init__(self, registry: dict[str, Any], seed: int = 7) -> None:
        import orjson

        from pipeline.docs import nest

        self._dumps = orjson.dumps
        self.seed = seed
        self.sites = registry_sites(registry)
        self._site_cache: dict[int, tuple] = {}
        self._templates: dict[str, list[bytes | str]] = {}
        probe = {"site": "s", "enterprise": "e", "sensors": ["n"]}
        for rule in RULES:
            alert, _ = make_alert(probe, 0, 0.0, rule, 0, seed, with_events=False)
            for key, slot in _VARYING.items():
                if key in alert:
                    alert[key] = f"@@{slot}@@"
            ids = alert["icsmon.alert.event_ids"]
            alert["icsmon.alert.event_ids"] = ["@@EV0@@", "@@EV1@@"][: len(ids)]
            parts = _SLOT.split(orjson.dumps(nest(alert)))
            # Even items are literal JSON, odd ones the names of the slots between them.
            self._templates[rule[0]] = [
                p if i % 2 == 0 else p.decode() for i, p in enumerate(parts)
            ]

    def _site(self, si: int) -> tuple:
        got = self._site_cache.get(si)
        if got is None:
            site = self.sites[si]
            src, dst = _site_ips(si)
            sensor = site["sensors"][0] if site["sensors"] else f"sensor-{site['site']}"
            d = self._dumps
            got = (
                site["site"],
                ipaddress.ip_address(src).packed,
                ipaddress.ip_address(dst).packed,
                {
                    "SRC": d(src),
                    "DST": d(dst),
                    "SENSOR": d(sensor),
                    "ORG": d(site["enterprise"]),
                    "SITE": d(site["site"]),
                },
                src,
                dst,
            )
            self._site_cache[si] = got
        return got

    def encode(self, si: int, ts: float, rule: tuple, n: int) -> tuple[datetime, str, bytes]:
        """(UTC time, event.id, ``_source`` bytes) of the alert ``make_alert`` would make."""
        site_id, a, b, values, src, dst = self._site(si)
        rule_id, _, _, proto, _, _, _, ruleset, _ = rule
        _, _, func, dport = ACTIONS[proto]
        sport = 40000 + (n * 7919 + si) % 20000
        # community_id(), with the site's packed addresses kept (src is always the lower one).
        lo, hi, p1, p2 = (a, b, sport, dport) if (a, sport) <= (b, dport) else (b, a, dport, sport)
        cid = (
            "1:"
            + base64.b64encode(
                hashlib.sha1(
                    b"\x00\x00" + lo + hi + struct.pack("!BBHH", 6, 0, p1, p2),
                    usedforsecurity=False,
                ).digest()
            ).decode()
        )
        when = datetime.fromtimestamp(ts, UTC)
        seed = self.seed
        event_id = _id("al", seed, site_id, n)
        vals = dict(values)
        vals.update(
            {
                "TS": b'"' + when.strftime("%Y-%m-%dT%H:%M:%S.%fZ").encode() + b'"',
                "CID": b'"' + cid.encode() + b'"',
                "SPORT": str(sport).encode(),
                "ID": b'"' + event_id.encode() + b'"',
                "EV0": b'"' + _id("ev", seed, site_id, n, 0).encode() + b'"',
                "EV1": b'"' + _id("ev", seed, site_id, n, 1).encode() + b'"',
            }
        )
        if ruleset == "baseline":
            vals["ENTRY"] = self._dumps(f"{src} -> {dst}:{dport} {func}")
        parts = self._templates[rule_id]
        out = [p if i % 2 == 0 else vals[p] for i, p in enumerate(parts)]
        return when, event_id, b"".join(out)  # type: ignore[arg-type]


def es_bulk(es_store: Any, items: list[tuple[str, dict[str, Any]]], refresh: bool = False) -> int:
    """Index ``(kind, flat doc)`` pairs where the indexer puts them (the daily index of the
    kind, or the one index of a merged kind such as assets, ``_id`` = the kind's id field);
    returns how many were indexed. A seed's documents are whole records, one per id: written
    as they are, not folded into what is there. Raises on any rejected document: load data
    must be clean."""
    from pipeline.docs import nest

    ops: list[dict[str, Any]] = []
    for kind, doc in items:
        nested = nest(doc)
        for action in es_store.bulk_actions(kind, doc):
            ops.append(action)
            ops.append(nested)
    if not ops:
        return 0
    resp = es_store.client.bulk(operations=ops, refresh="wait_for" if refresh else False)
    if resp["errors"]:
        # 409 is a latest index keeping a newer document: as intended
        bad = [
            i["index"]
            for i in resp["items"]
            if i["index"].get("status", 500) >= 300 and i["index"].get("status") != 409
        ]
        if bad:
            raise RuntimeError(f"Elasticsearch rejected a document: {bad[0].get('error')}")
    return len(items)
