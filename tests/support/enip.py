"""Helpers for the EtherNet/IP tests: the engine's EtherNet/IP events of a capture, the
messages they stand for, and tshark's view of the same capture."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from sensor.engine import Engine, EngineConfig
from tests.support.s7comm import tshark_rows

# tshark picks the dissector by the lower port: a client on a port of another protocol
# hides EtherNet/IP unless it is decoded as such (SOURCES.md names these).
DECODE_AS: dict[str, tuple[str, ...]] = {
    "digitalbond__CL5000EIP-Control_Protocol_Change_Attempt.pcap": ("-d", "tcp.port==1102,enip"),
}
NO_REPLY = frozenset((0x0000, 0x0066, 0x0072, 0x0073))
MSP, UNCONNECTED_SEND = 0x0A, 0x52
CONNECTION_SERVICES = (0x4E, 0x54, 0x5B)  # Forward Close, Forward Open, Large Forward Open


def replay(path: Path) -> list[dict]:
    """The EtherNet/IP events (anomalies included) the engine makes of a capture."""
    return [e for e in Engine(EngineConfig()).replay([path]) if e.get("network.protocol") == "enip"]


def record_messages(records: list[dict]) -> dict[str, Counter]:
    """What the records stand for, counted as tshark counts: encapsulation messages by
    command, CIP messages by service byte (0x80 set on replies, wrappers included), and the
    classes named by request paths (wrappers' and Forward Open connection paths' included)."""
    commands: Counter = Counter()
    services: Counter = Counter()
    classes: Counter = Counter()
    for rec in records:
        if rec.get("event.action") == "anomaly" or rec.get("network.transport") != "tcp":
            continue
        pairing = rec["ics.pairing"]
        request = pairing in ("paired", "request-only")
        reply = pairing in ("paired", "response-only") and rec["enip.command"] not in NO_REPLY
        first = rec.get("cip.multiple_index", 0) == 0
        if first:
            commands[rec["enip.command"]] += request + reply
        if "cip.service_code" not in rec:
            continue
        via = rec.get("cip.via", [])
        code = rec["cip.service_code"]
        if request:
            services[code] += 1
            if "cip.classes" in rec:  # a path naming an object inside another
                classes.update(rec["cip.classes"])
            elif "cip.class" in rec:
                classes[rec["cip.class"]] += 1
            if code in CONNECTION_SERVICES and "cip.connection.class" in rec:
                classes[rec["cip.connection.class"]] += 1
            if "unconnected_send" in via and first:
                services[UNCONNECTED_SEND] += 1
                classes[0x06] += 1
            if "multiple_service_packet" in via and first:
                services[MSP] += 1
                classes[0x02] += 1
        if reply and "cip.status" in rec:
            services[rec.get("cip.response_service_code", code) | 0x80] += 1
            if "multiple_service_packet" in via and first:
                services[MSP | 0x80] += 1
    return {"commands": commands, "services": services, "classes": classes}


def tshark_messages(tshark: str, path: Path) -> dict[str, Counter]:
    """tshark's count of the same (each TCP byte decoded once: see ``tshark_rows``)."""
    commands: Counter = Counter()
    services: Counter = Counter()
    classes: Counter = Counter()
    fields = ["enip.command", "cip.service", "cip.class", "enip.fwd_open_in"]
    rows = tshark_rows(tshark, path, "enip && tcp", fields, DECODE_AS.get(path.name, ()))
    for command_col, service_col, class_col, forward_open in rows:
        for command in filter(None, command_col.split(",")):
            commands[int(command, 16)] += 1
        codes = [int(c, 16) for c in service_col.split(",") if c]
        services.update(codes)
        if codes and all(c < 0x80 for c in codes):  # replies repeat the request's path
            named = [int(c, 16) for c in class_col.split(",") if c]
            if forward_open:  # a connected message repeats its Forward Open's target first
                named = named[1:]
            if codes == [0x4E] and len(named) == 3 and named[0] == 0x06:
                named = named[:2]  # a Forward Close matched to its Forward Open repeats its path
            classes.update(named)
    return {"commands": commands, "services": services, "classes": classes}


def agreement(ours: dict[str, Counter], theirs: dict[str, Counter]) -> tuple[int, int]:
    """(messages both count, messages either counts), over the three tallies."""
    both = either = 0
    for key in ("commands", "services", "classes"):
        both += sum((ours[key] & theirs[key]).values())
        either += sum((ours[key] | theirs[key]).values())
    return both, either
