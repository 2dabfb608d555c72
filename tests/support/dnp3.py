"""Helpers for the DNP3 tests: the engine's DNP3 events of a capture, and tshark's view of it,
both reduced to the same per-PDU keys."""

from __future__ import annotations

import json
import subprocess
from collections import Counter
from functools import lru_cache
from pathlib import Path

from sensor.engine import Engine, EngineConfig


def replay(path: Path, **config: object) -> list[dict]:
    """The DNP3 events (anomalies included) the engine makes of a capture."""
    engine = Engine(EngineConfig(**config))  # type: ignore[arg-type]
    return [e for e in engine.replay([path]) if e.get("network.protocol") == "dnp3"]


def record_pdus(records: list[dict]) -> tuple[Counter, Counter]:
    """(PDUs, object types) the records stand for. A PDU is an application fragment,
    ``("app", source, destination, function)``, or a link-service frame, ``("link", source,
    destination, primary, link function)``; object types count ``group << 8 | variation``
    over every object header."""
    pdus: Counter = Counter()
    objects: Counter = Counter()
    for rec in records:
        if rec.get("event.action") == "anomaly":
            continue
        if "dnp3.link.function_code" in rec:
            src, dst = rec["dnp3.source"], rec["dnp3.destination"]
            pdus[("link", src, dst, rec["dnp3.link.primary"], rec["dnp3.link.function_code"])] += 1
            # a secondary ACK is left out on both sides (tshark_pdus drops every one)
            if rec.get("dnp3.link.response_function_code", 0) != 0:
                pdus[("link", dst, src, False, rec["dnp3.link.response_function_code"])] += 1
            continue
        master, outstation = rec["dnp3.master"], rec["dnp3.outstation"]
        fc = rec["dnp3.function_code"]
        request = fc < 128
        src, dst = (master, outstation) if request else (outstation, master)
        fragments = 1 if request else rec.get("dnp3.response.fragments", 1)
        pdus[("app", src, dst, fc)] += fragments
        for obj in rec.get("dnp3.objects", ()):
            objects[obj["group"] << 8 | obj["variation"]] += 1
        if "dnp3.response.function_code" in rec:
            rfc = rec["dnp3.response.function_code"]
            pdus[("app", dst, src, rfc)] += rec.get("dnp3.response.fragments", 1)
            for obj in rec.get("dnp3.response.objects", ()):
                objects[obj["group"] << 8 | obj["variation"]] += 1
    return pdus, objects


def _pairs(pairs: list[tuple[str, object]]) -> list[tuple[str, object]]:
    return pairs  # keep repeated keys: tshark's JSON repeats a key for repeated fields


def _walk(node: object, key: str) -> list[str]:
    found: list[str] = []
    if isinstance(node, list):
        for k, v in node:
            if k == key and isinstance(v, str):
                found.append(v)
            found += _walk(v, key)
    return found


def tshark_pdus(
    tshark: str, path: Path, decode_as: list[str] | None = None
) -> tuple[Counter, Counter]:
    pdus, objects = _tshark_pdus(tshark, path, tuple(decode_as or ()))
    return Counter(pdus), Counter(objects)


@lru_cache(maxsize=128)
def _tshark_pdus(tshark: str, path: Path, decode_as: tuple[str, ...]) -> tuple[Counter, Counter]:
    """tshark's PDUs and object types, the keys of ``record_pdus``. tshark's sequence analysis
    is off and frames whose TCP bytes all came before are dropped (the sensor's reassembly
    drops retransmitted bytes; see ``tests/support/s7comm.py``)."""
    cmd = [
        tshark, "-r", str(path), "-o", "tcp.analyze_sequence_numbers:FALSE", "-Y", "dnp3",
        "-T", "json", "-J", "tcp dnp3",
    ]  # fmt: skip
    for item in decode_as or ():
        cmd += ["-d", item]
    raw = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    packets = json.loads(raw or "[]", object_pairs_hook=_pairs)
    pdus: Counter = Counter()
    objects: Counter = Counter()
    seen_end: dict[tuple[str, str], int] = {}  # (stream, port) -> end of the bytes seen so far
    for packet in packets:
        source = dict(packet)["_source"]
        layers = dict(source)["layers"]
        tcp = dict(dict(layers).get("tcp") or [])
        if tcp:  # frames that bring no new bytes are dropped, as the sensor's reassembly does
            flow = (tcp["tcp.stream"], tcp["tcp.srcport"])
            end = int(tcp["tcp.seq_raw"]) + int(tcp["tcp.len"])
            last = seen_end.get(flow)
            if last is not None and 0 <= (last - end) & 0xFFFFFFFF < 0x80000000:
                continue
            seen_end[flow] = end
        for key, layer in layers:
            if key != "dnp3":
                continue
            link_layer = next(v for k, v in layer if k.startswith("Data Link Layer"))
            fields = dict(link_layer)
            src, dst, length = (
                int(fields["dnp3.src"]),
                int(fields["dnp3.dst"]),
                int(fields["dnp3.len"]),
            )
            ctl = dict(fields["dnp3.ctl_tree"])
            primary = ctl["dnp3.ctl.prm"] == "1"
            func = int(ctl.get("dnp3.ctl.prifunc") or ctl.get("dnp3.ctl.secfunc"))
            if length == 5:
                if not (not primary and func == 0) and not (primary and func in (3, 4)):
                    pdus[("link", src, dst, primary, func)] += 1
                continue
            for app_key, app in layer:
                if not app_key.startswith("Application Layer"):
                    continue
                fc = _walk(app, "dnp3.al.func")
                if fc:
                    pdus[("app", src, dst, int(fc[0]))] += 1
                for obj in _walk(app, "dnp3.al.obj"):
                    objects[int(obj, 16)] += 1
    return pdus, objects
