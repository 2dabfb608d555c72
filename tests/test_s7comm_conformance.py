"""S7comm / S7comm-plus decoding against an oracle, on every published Siemens capture.

S7comm: tshark decodes every capture; per PDU the ROSCTR, function, item count and PDU
reference must agree (compared as multisets: our records are per transaction, tshark's per
frame). Both sides decode each TCP byte once (see ``tshark_pdus``).

S7comm-plus: stock tshark has no dissector. SOURCES.md lists, per capture, the PDU types and
the request/response function codes read at fixed header offsets of every frame that starts
with TPKT + COTP DT + 0x72. We repeat that frame-level reading (checked equal to SOURCES.md),
drop frames that only repeat bytes already seen, and compare it to our records: per version
the number of TPKT packets (fragments) and per function the number of requests and responses,
and the number of notifications.
"""

from __future__ import annotations

import re
import subprocess
from collections import Counter
from pathlib import Path

import pytest
from s7comm_support import parse_capture, record_pdus, tshark_pdus

from sensor.protocols import s7comm

SHARED = Path(__file__).resolve().parent.parent.parent / "shared" / "pcaps" / "public"
FOLDERS = ("s7comm", "s7comm-plus", "mixed")


def _captures() -> list[str]:
    names = []
    for folder in FOLDERS:
        names += [f"{folder}/{p.name}" for p in sorted((SHARED / folder).glob("*.pcap*"))]
    return names or ["(no published captures)"]


CAPTURES = _captures()


@pytest.mark.parametrize("name", CAPTURES)
def test_s7comm_pdus_match_tshark(name: str, public_pcaps: Path, tshark: str) -> None:
    path = public_pcaps / name
    records = parse_capture(path)
    ours = Counter(record_pdus(records))
    theirs = Counter(tshark_pdus(tshark, path))
    assert sum(ours.values()) == sum(theirs.values()), f"{name}: PDU count differs"
    assert ours == theirs, f"{name}: only ours {list((ours - theirs).items())[:5]}, only tshark {list((theirs - ours).items())[:5]}"
    # The published captures are well formed: no decoding errors may hide behind the counts.
    errors = [r for r in records if r.get("error.type") in ("s7-bad-parameter", "s7-bad-length", "s7-decode-error")]
    assert not errors, errors[:3]


# -- S7comm-plus ----------------------------------------------------------------------------

HEURISTIC = "tcp.len>7 && tcp.payload[0]==03 && tcp.payload[5]==f0 && tcp.payload[7]==72"
PLUS_ROW = re.compile(r"S7comm-plus PDU types: ([^;|]*); functions: ([^;|]*); notifications (\d+)")


def _camel_to_snake(name: str) -> str:
    return re.sub(r"(?<!^)([A-Z])", r"_\1", name).lower()


def _sources_plus_counts(public_pcaps: Path, filename: str) -> tuple[Counter, Counter, int] | None:
    """PDU types, function counts ("Req get_link") and notifications as SOURCES.md lists them."""
    for line in (public_pcaps / "SOURCES.md").read_text().splitlines():
        if line.startswith(f"| `{filename}` |"):
            match = PLUS_ROW.search(line)
            if not match:
                return None
            types = Counter({int(k, 16): int(v) for k, v in re.findall(r"(0x[0-9a-f]+) (\d+)", match.group(1))})
            funcs = Counter()
            for kind, fname, count in re.findall(r"(Req|Res) (\w+) (\d+)", match.group(2)):
                funcs[f"{kind} {_camel_to_snake(fname)}"] = int(count)
            return types, funcs, int(match.group(3))
    return None


def _frame_level_plus(tshark: str, path: Path, dedupe: bool) -> tuple[Counter, Counter, int]:
    """SOURCES.md's reading: PDU type and header function code of each matching frame."""
    cmd = [
        tshark, "-r", str(path), "-o", "tcp.analyze_sequence_numbers:FALSE", "-Y", HEURISTIC,
        "-T", "fields", "-e", "tcp.stream", "-e", "tcp.srcport", "-e", "tcp.seq_raw",
        "-e", "tcp.len", "-e", "tcp.payload",
    ]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    types: Counter = Counter()
    funcs: Counter = Counter()
    notifications = 0
    seen_end: dict[tuple[str, str], int] = {}
    for line in out.splitlines():
        stream, sport, seq, tlen, payload_hex = line.split("\t")
        end = int(seq) + int(tlen)
        last = seen_end.get((stream, sport))
        if dedupe and last is not None and 0 <= (last - end) & 0xFFFFFFFF < 0x80000000:
            continue
        seen_end[(stream, sport)] = end
        p = bytes.fromhex(payload_hex)
        types[p[8]] += 1
        i = 11
        if p[8] == 3 and len(p) > 11:
            i += 1 + p[11]
        if i >= len(p):
            continue
        if p[i] == 0x33:
            notifications += 1
        elif p[i] in (0x31, 0x32) and i + 5 <= len(p):
            code = int.from_bytes(p[i + 3 : i + 5], "big")
            if code in s7comm.PLUS_FUNCTIONS:
                kind = "Req" if p[i] == 0x31 else "Res"
                funcs[f"{kind} {s7comm.PLUS_FUNCTIONS[code][0]}"] += 1
    return types, funcs, notifications


def _our_plus_counts(records: list[dict]) -> tuple[Counter, Counter, int]:
    types: Counter = Counter()
    funcs: Counter = Counter()
    notifications = 0
    for rec in records:
        if rec.get("network.protocol") != "s7comm-plus" or rec["event.action"] == "anomaly":
            continue
        version = rec["s7comm_plus.version"]
        types[version] += rec["s7comm_plus.fragments"] + rec.get("s7comm_plus.response.fragments", 0)
        if rec["s7comm_plus.opcode"] == 0x33:
            notifications += 1
            continue
        name = rec["s7comm_plus.function"]
        if rec["s7comm_plus.opcode"] == 0x31:
            funcs[f"Req {name}"] += 1
            if "s7comm_plus.response.opcode" in rec:
                funcs[f"Res {name}"] += 1
        else:
            funcs[f"Res {name}"] += 1
    return types, funcs, notifications


PLUS_CAPTURES = [n for n in CAPTURES if n.startswith("s7comm-plus/") or n == "mixed/zeek__modbusBig.pcap"]


@pytest.mark.parametrize("name", PLUS_CAPTURES)
def test_s7comm_plus_matches_sources(name: str, public_pcaps: Path, tshark: str) -> None:
    path = public_pcaps / name
    listed = _sources_plus_counts(public_pcaps, path.name)
    assert listed is not None, f"SOURCES.md has no S7comm-plus row for {path.name}"
    listed_types, listed_funcs, listed_notifications = listed

    # 1. Our frame-level reading is the one SOURCES.md made (it lists the top functions only).
    raw_types, raw_funcs, raw_notifications = _frame_level_plus(tshark, path, dedupe=False)
    assert raw_types == listed_types
    assert raw_notifications == listed_notifications
    for key, count in listed_funcs.items():
        assert raw_funcs[key] == count, key

    # 2. Our records agree with it once retransmitted frames are dropped.
    frame_types, frame_funcs, frame_notifications = _frame_level_plus(tshark, path, dedupe=True)
    records = parse_capture(path)
    our_types, our_funcs, our_notifications = _our_plus_counts(records)
    assert our_types == frame_types
    assert our_funcs == frame_funcs
    assert our_notifications == frame_notifications
    assert not [r for r in records if r.get("error.type", "").startswith("s7plus")]
