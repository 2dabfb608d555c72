"""Realistic flat documents (docs/schema.md) for the store and query tests, and a check that
they follow the schema. Built from a seeded generator, so every test sees the same corpus and
computes what it expects from the documents themselves, never from literals."""

from __future__ import annotations

import hashlib
import random
from datetime import UTC, datetime

BASE_TS = datetime(2026, 11, 26, 8, 0, tzinfo=UTC).timestamp()
SITES = ("site-0370-jinan-a", "site-0533-zibo-b", "site-0951-yinchuan-a")
ORGS = {
    "site-0370-jinan-a": "ent-0370",
    "site-0533-zibo-b": "ent-0533",
    "site-0951-yinchuan-a": "ent-0951",
}

# (network.protocol, port, event.action, ics.operation, ics.function, protocol fields)
OPERATIONS = (
    (
        "modbus",
        502,
        "read-holding-registers",
        "read",
        "read_holding_registers",
        {
            "modbus.function_code": 3,
            "modbus.unit_id": 1,
            "modbus.address": 40,
            "modbus.quantity": 10,
        },
    ),
    (
        "modbus",
        502,
        "write-multiple-registers",
        "write",
        "write_multiple_registers",
        {
            "modbus.function_code": 16,
            "modbus.unit_id": 1,
            "modbus.address": 100,
            "modbus.quantity": 2,
            "modbus.values": [1200, 65535],
        },
    ),
    (
        "modbus",
        502,
        "diagnostics",
        "diagnostic",
        "diagnostics",
        {
            "modbus.function_code": 8,
            "modbus.unit_id": 1,
            "modbus.subfunction": 4,
            "modbus.subfunction_name": "force_listen_only_mode",
        },
    ),
    (
        "s7comm",
        102,
        "plc-stop",
        "control",
        "plc_stop",
        {"s7comm.rosctr": 1, "s7comm.function": 41, "s7comm.pi_service": "P_PROGRAM"},
    ),
    (
        "s7comm",
        102,
        "read-var",
        "read",
        "read_var",
        {"s7comm.rosctr": 1, "s7comm.function": 4, "s7comm.item_count": 3},
    ),
    (
        "opcua",
        4840,
        "write",
        "write",
        "write",
        {"opcua.service": "WriteRequest", "opcua.node_ids": ["ns=2;s=Boiler.Setpoint"]},
    ),
    (
        "opcua",
        4840,
        "browse",
        "read",
        "browse",
        {"opcua.service": "BrowseRequest", "opcua.node_ids": ["i=85"]},
    ),
)

# (rule.id, rule.name, level severity, techniques, tactics, (protocol, action) that fires it)
RULES = (
    (
        "5b1d0e39-modbus-write-unknown-master",
        "Modbus register write from a host that is not a known master",
        73,
        ["T0855", "T0836"],
        ["impair-process-control"],
        ("modbus", "write-multiple-registers"),
    ),
    (
        "9a0c3e55-modbus-listen-only",
        "Modbus force listen only mode",
        99,
        ["T0881"],
        ["inhibit-response-function"],
        ("modbus", "diagnostics"),
    ),
    (
        "c2d4e6f8-s7-plc-stop",
        "S7 PLC stop command",
        99,
        ["T0858", "T0881"],
        ["execution"],
        ("s7comm", "plc-stop"),
    ),
    (
        "0e2f4a6c-opcua-write",
        "OPC UA write to a process variable",
        47,
        ["T0836"],
        ["impair-process-control"],
        ("opcua", "write"),
    ),
    (
        "7f1e3d5b-opcua-browse",
        "OPC UA address space browsed",
        21,
        ["T0861"],
        ["collection"],
        ("opcua", "browse"),
    ),
)


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def event_doc(rng: random.Random, i: int, site: str, ts: float) -> dict:
    proto, port, action, operation, function, fields = OPERATIONS[rng.randrange(len(OPERATIONS))]
    src = f"10.{SITES.index(site)}.0.{rng.randint(2, 30)}"
    dst = f"10.{SITES.index(site)}.1.{rng.choice([10, 11, 12, 100])}"
    write = operation in ("write", "control", "program")
    doc = {
        "@timestamp": iso(ts),
        "ecs.version": "8.17.0",
        "event.kind": "event",
        "event.category": ["network"],
        "event.type": ["protocol", "change" if write else "access"],
        "event.action": action,
        "event.dataset": f"ics.{proto.replace('-', '_')}",
        "event.outcome": rng.choice(["success", "success", "success", "failure", "unknown"]),
        "event.duration": rng.randint(200_000, 20_000_000),
        "event.id": hashlib.sha1(f"{site}-{i}".encode()).hexdigest()[:20] + f"-{i}",
        "network.transport": "tcp",
        "network.type": "ipv4",
        "network.protocol": proto,
        "network.community_id": "1:" + hashlib.sha1(f"{src}{dst}".encode()).hexdigest()[:27] + "=",
        "source.ip": src,
        "source.port": rng.randint(49152, 65535),
        "source.mac": f"00-1B-1B-{rng.randrange(256):02X}-{rng.randrange(256):02X}-{i % 256:02X}",
        "destination.ip": dst,
        "destination.port": port,
        "observer.name": f"sensor-{site[5:9]}",
        "observer.type": "sensor",
        "observer.product": "icsmon",
        "organization.id": ORGS[site],
        "labels.site": site,
        "ics.operation": operation,
        "ics.function": function,
        **fields,
    }
    if proto == "s7comm" and rng.random() < 0.5:
        doc.update(
            {
                "ics.device.vendor": "Siemens",
                "ics.device.product": "CPU 315-2 PN/DP",
                "ics.device.order_number": "6ES7 315-2EH14-0AB0",
                "ics.device.firmware": "V3.2.6",
            }
        )
    return doc


def alert_doc(event: dict, rule: tuple) -> dict:
    rule_id, name, severity, techniques, tactics, _ = rule
    copied = {k: v for k, v in event.items() if not k.startswith(("event.", "ecs."))}
    return {
        **copied,
        "@timestamp": event["@timestamp"],
        "ecs.version": "8.17.0",
        "event.kind": "alert",
        "event.category": ["network", "intrusion_detection"],
        "event.type": ["info"],
        "event.action": event["event.action"],
        "event.dataset": event["event.dataset"],
        "event.severity": severity,
        "event.id": hashlib.sha1(f"{rule_id}|{event['event.id']}".encode()).hexdigest(),
        "rule.id": rule_id,
        "rule.name": name,
        "rule.description": f"{name}.",
        "rule.author": "icsmon",
        "rule.reference": ["https://attack.mitre.org/techniques/" + techniques[0]],
        "rule.ruleset": "sigma",
        "threat.framework": "MITRE ATT&CK for ICS",
        "threat.technique.id": list(techniques),
        "threat.technique.name": [f"technique {t}" for t in techniques],
        "threat.tactic.name": list(tactics),
        "icsmon.alert.count": 1,
        "icsmon.alert.event_ids": [event["event.id"]],
    }


def asset_doc(
    site: str,
    ip: str,
    roles: list[str],
    peers: list[str],
    first: float,
    last: float,
    **identity: object,
) -> dict:
    doc = {
        "asset.id": f"{site}:{ip}",
        "host.ip": ip,
        "labels.site": site,
        "asset.roles": roles,
        "asset.protocols": sorted({r.rsplit("-", 1)[0] for r in roles}),
        "asset.peers": peers,
        "asset.first_seen": iso(first),
        "asset.last_seen": iso(last),
    }
    doc.update(identity)
    return doc


def corpus(n_events: int = 400, seed: int = 7) -> tuple[list[dict], list[dict], list[dict]]:
    """(events, alerts, assets) of a few sites over a few hours, shuffled in time a little
    (as several sensors' batches interleave)."""
    rng = random.Random(seed)
    events = []
    for i in range(n_events):
        site = SITES[i % len(SITES)]
        ts = BASE_TS + i * 30 + rng.uniform(-20, 20)
        events.append(event_doc(rng, i, site, ts))
    alerts = []
    for ev in events:
        for rule in RULES:
            if rule[5] == (ev["network.protocol"], ev["event.action"]):
                alerts.append(alert_doc(ev, rule))
    assets: dict[str, dict] = {}
    for ev in events:
        ts = datetime.fromisoformat(ev["@timestamp"]).timestamp()
        proto = ev["network.protocol"]
        for ip, role, peer in (
            (ev["source.ip"], f"{proto}-client", ev["destination.ip"]),
            (ev["destination.ip"], f"{proto}-server", ev["source.ip"]),
        ):
            key = f"{ev['labels.site']}:{ip}"
            identity = (
                {k: v for k, v in ev.items() if k.startswith("ics.device.")}
                if role.endswith("server")
                else {}
            )
            if key not in assets:
                assets[key] = asset_doc(ev["labels.site"], ip, [role], [peer], ts, ts, **identity)
            else:
                a = assets[key]
                a["asset.roles"] = sorted(set(a["asset.roles"]) | {role})
                a["asset.protocols"] = sorted({r.rsplit("-", 1)[0] for r in a["asset.roles"]})
                a["asset.peers"] = sorted(set(a["asset.peers"]) | {peer})
                a["asset.first_seen"] = min(a["asset.first_seen"], iso(ts))
                a["asset.last_seen"] = max(a["asset.last_seen"], iso(ts))
                a.update(identity)
    return events, alerts, list(assets.values())
