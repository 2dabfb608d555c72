"""Helpers for the S7comm tests: the engine's S7 events of a capture, and tshark's view of it."""

from __future__ import annotations

import subprocess
from pathlib import Path

from sensor.engine import Engine, EngineConfig


def replay(path: Path) -> list[dict]:
    """The S7comm / S7comm-plus events (anomalies included) the engine makes of a capture."""
    engine = Engine(EngineConfig())
    return [
        e for e in engine.replay([path]) if str(e.get("network.protocol", "")).startswith("s7comm")
    ]


def record_pdus(records: list[dict]) -> list[tuple]:
    """The S7comm PDUs the records stand for: (rosctr, function, item count, PDU reference)."""
    pdus = []
    for rec in records:
        if rec.get("network.protocol") != "s7comm" or "s7comm.rosctr" not in rec:
            continue
        rosctr = rec["s7comm.rosctr"]
        ref = rec["s7comm.pdu_reference"]
        func = rec.get("s7comm.function_code") if rosctr != 7 else None
        pdus.append((rosctr, func, rec.get("s7comm.item_count"), ref))
        if "s7comm.response.rosctr" in rec:
            rr = rec["s7comm.response.rosctr"]
            rfunc = rec.get("s7comm.response.function_code") if rr != 7 else None
            pdus.append((rr, rfunc, rec.get("s7comm.response.item_count"), ref))
    return pdus


def tshark_rows(
    tshark: str,
    path: Path,
    display_filter: str,
    fields: list[str],
    options: tuple[str, ...] = (),
) -> list[list[str]]:
    """tshark's ``-T fields`` rows (every occurrence, comma-joined) with each byte decoded once.

    tshark's sequence analysis is off (with it on, tshark skips segments it judges "spurious
    retransmissions" even when the first copy was never captured), and frames whose bytes all
    came before (retransmissions, also those that resend several earlier segments at once)
    are dropped here, as the sensor's reassembly drops retransmitted bytes. ``options`` go to
    tshark before the display filter (``-d tcp.port==1102,enip``).
    """
    cmd = [
        tshark, "-r", str(path), "-o", "tcp.analyze_sequence_numbers:FALSE", "-Y", display_filter,
        *options, "-T", "fields", "-E", "occurrence=a", "-E", "aggregator=,", "-E", "separator=/t",
        "-e", "tcp.stream", "-e", "tcp.srcport", "-e", "tcp.seq_raw", "-e", "tcp.len",
    ]  # fmt: skip
    for name in fields:
        cmd += ["-e", name]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    rows = []
    seen_end: dict[tuple[str, str], int] = {}  # (stream, port) -> end of the bytes seen so far
    for line in out.splitlines():
        cols = (line.split("\t") + [""] * (4 + len(fields)))[: 4 + len(fields)]
        stream, sport, seq, tlen = cols[:4]
        end = int(seq) + int(tlen)
        last = seen_end.get((stream, sport))
        if last is not None and 0 <= (last - end) & 0xFFFFFFFF < 0x80000000:
            continue  # nothing new in this frame
        seen_end[(stream, sport)] = end
        rows.append(cols[4:])
    return rows


def tshark_pdus(tshark: str, path: Path) -> list[tuple]:
    """tshark's S7comm PDUs: (rosctr, function, item count, PDU reference) per PDU."""
    fields = [
        "frame.number",
        "s7comm.header.rosctr",
        "s7comm.param.func",
        "s7comm.param.itemcount",
        "s7comm.header.pduref",
    ]
    pdus = []
    for frame, rosctrs, funcs, counts, refs in tshark_rows(tshark, path, "s7comm", fields):
        rosctr_l = [int(x) for x in rosctrs.split(",") if x]
        func_l = [int(x, 16) for x in funcs.split(",") if x]
        count_l = [int(x) for x in counts.split(",") if x]
        ref_l = [int(x) for x in refs.split(",") if x]
        n = len(rosctr_l)
        if n == 1:
            func = func_l[0] if func_l and rosctr_l[0] != 7 else None
            pdus.append((rosctr_l[0], func, count_l[0] if count_l else None, ref_l[0]))
            continue
        if len(func_l) != n or len(count_l) != n or len(ref_l) != n:
            raise AssertionError(f"frame {frame}: cannot align tshark's fields of {n} PDUs")
        pdus += list(zip(rosctr_l, func_l, count_l, ref_l, strict=True))
    return pdus
