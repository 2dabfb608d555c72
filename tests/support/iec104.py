"""Helpers for the IEC 104 tests: the engine's IEC 104 events of a capture, and tshark's view
of it, both reduced to the same per-APDU keys."""

from __future__ import annotations

import subprocess
from collections import Counter
from functools import lru_cache
from pathlib import Path

from sensor.engine import Engine, EngineConfig

U_CODES = {"startdt_act": 0x01, "startdt_con": 0x02, "stopdt_act": 0x04, "stopdt_con": 0x08,
           "testfr_act": 0x10, "testfr_con": 0x20}  # fmt: skip


def replay(path: Path, **config: object) -> list[dict]:
    """The IEC 104 events (anomalies included) the engine makes of a capture."""
    engine = Engine(EngineConfig(**config))  # type: ignore[arg-type]
    return [e for e in engine.replay([path]) if e.get("network.protocol") == "iec104"]


def record_apdus(records: list[dict]) -> Counter:
    """The I- and U-format APDUs the records stand for: ``("I", type id, cause, common
    address, IOA count)`` and ``("U", function)``. A command record stands for its
    activation, its confirmation and its termination (same type, address and objects)."""
    apdus: Counter = Counter()
    for rec in records:
        if rec.get("event.action") == "anomaly":
            continue
        if rec["iec104.frame"] == "U":
            apdus[("U", U_CODES[rec["iec104.u_function"]])] += 1
            if "iec104.response.u_function" in rec:
                apdus[("U", U_CODES[rec["iec104.response.u_function"]])] += 1
            continue
        key = (rec["iec104.type_id"], rec["iec104.common_address"], rec["iec104.ioa_count"])
        t, ca, n = key
        apdus[("I", t, rec["iec104.cause"], ca, n)] += 1
        if "iec104.response.cause" in rec:
            apdus[("I", t, rec["iec104.response.cause"], ca, n)] += 1
        if rec.get("iec104.terminated"):
            apdus[("I", t, 10, ca, n)] += 1
    return apdus


def tshark_apdus(tshark: str, path: Path) -> Counter:
    return Counter(_tshark_apdus(tshark, path))


@lru_cache(maxsize=32)
def _tshark_apdus(tshark: str, path: Path) -> Counter:
    """tshark's APDUs with the keys of ``record_apdus`` (S-format left out). Frames that bring
    no new TCP bytes are dropped, as the sensor's reassembly drops retransmitted bytes."""
    fields = ["tcp.stream", "tcp.srcport", "tcp.seq_raw", "tcp.len", "iec60870_104.type",
              "iec60870_104.utype", "iec60870_asdu.typeid", "iec60870_asdu.causetx",
              "iec60870_asdu.addr", "iec60870_asdu.numix"]  # fmt: skip
    cmd = [tshark, "-r", str(path), "-o", "tcp.analyze_sequence_numbers:FALSE", "-Y",
           "iec60870_104", "-T", "fields", "-E", "occurrence=a", "-E", "aggregator=,"]  # fmt: skip
    for name in fields:
        cmd += ["-e", name]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    apdus: Counter = Counter()
    seen_end: dict[tuple[str, str], int] = {}
    for line in out.splitlines():
        cols = (line.split("\t") + [""] * len(fields))[: len(fields)]
        stream, sport, seq, tlen = cols[:4]
        end = int(seq) + int(tlen)
        last = seen_end.get((stream, sport))
        if last is not None and 0 <= (last - end) & 0xFFFFFFFF < 0x80000000:
            continue
        seen_end[(stream, sport)] = end
        types, utypes, tids, causes, addrs, counts = (c.split(",") if c else [] for c in cols[4:])

        def take(values: list[str]) -> int | None:
            return int(values.pop(0)) if values else None  # a malformed ASDU lacks fields

        for kind in types:
            if int(kind, 16) == 0 and tids:
                apdus[("I", take(tids), take(causes), take(addrs), take(counts))] += 1
            elif int(kind, 16) == 3 and utypes:
                apdus[("U", int(utypes.pop(0), 16))] += 1
    return apdus
