"""Mutated captures replayed end to end through ``icsmon replay`` as a subprocess (issue 8).

- bit flips inside the packets of the captures in pcaps/ (record headers untouched): exit 0,
  no traceback, and the damage is counted in ``--stats`` (anomalies and decode counters),
  the anomaly counter matching the anomaly events printed;
- a cut file, a corrupted pcap record length, a corrupted pcapng block length: the events of
  the packets before the damage are printed (the same as for a file that simply ends there),
  then exactly one error line naming the file and the byte offset, exit 1.

Each run has a timeout (a hang fails it) and a signal death is a negative return code.
The flips are hand-made damage to real captures, on purpose.
"""

from __future__ import annotations

import json
import os
import random
import re
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import REPO
from tests.support.pcapgen import frames_of, pcapng

PCAPS = REPO / "pcaps"
ICSMON = (
    [sys.executable, "-m", "icsmon.cli"]
    if not (REPO / ".venv/bin/icsmon").exists()
    else [str(REPO / ".venv/bin/icsmon")]
)
CAPTURES = [
    "modbus/modbus_attack.pcap",
    "s7comm/s7_blocks.pcap",
    "opcua/opcua_chunked.pcap",
    "baseline/attack_flood.pcap",
]


def replay(path: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, COLUMNS="200", NO_COLOR="1", TERM="dumb")
    proc = subprocess.run(
        [*ICSMON, "replay", str(path), "--sink", "none", "--events", "--format", "jsonl", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=REPO,
    )
    assert proc.returncode >= 0, f"killed by signal {-proc.returncode}"
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    return proc


def stats_of(stderr: str) -> dict[str, int]:
    return {
        m[1]: int(m[2].replace(",", ""))
        for m in re.finditer(r"│ ([a-z_.]+)\s+│\s+([\d,]+) │", stderr)
    }


def records(blob: bytes) -> list[tuple[int, int]]:
    """(offset of the record header, end) of each pcap record (little-endian microsecond files)."""
    assert blob[:4] == b"\xd4\xc3\xb2\xa1"
    out, pos = [], 24
    while pos < len(blob):
        end = pos + 16 + struct.unpack_from("<I", blob, pos + 8)[0]
        out.append((pos, end))
        pos = end
    return out


def payload_at(blob: bytearray, start: int) -> tuple[int, int] | None:
    """(file offset of the TCP payload, server port) of the record at ``start``, if it
    carries a PDU of a dissected protocol (Ethernet + IPv4 + TCP, as in pcaps/)."""
    eth = start + 16
    ip = eth + 14
    if blob[eth + 12 : eth + 14] != b"\x08\x00" or blob[ip + 9] != 6:
        return None
    total = struct.unpack_from("!H", blob, ip + 2)[0]
    tcp = ip + (blob[ip] & 0x0F) * 4
    sport, dport = struct.unpack_from("!HH", blob, tcp)
    pay = tcp + (blob[tcp + 12] >> 4) * 4
    port = dport if dport in (502, 102, 4840) else sport
    if port not in (502, 102, 4840) or ip + total - pay < 8:
        return None
    return pay, port


@pytest.mark.parametrize("seed", [1, 2])
@pytest.mark.parametrize("name", CAPTURES)
def test_bit_flips_inside_packets_exit_0_with_anomalies_counted(
    tmp_path, name: str, seed: int
) -> None:
    rng = random.Random(f"{name}{seed}")
    blob = bytearray((PCAPS / name).read_bytes())
    recs = records(bytes(blob))
    for start, end in rng.sample(recs, max(4, len(recs) // 8)):
        for _ in range(rng.randint(1, 4)):
            if end - start > 16:
                i = (
                    rng.randrange(start + 16 + 14, end)
                    if end - start > 30
                    else rng.randrange(start + 16, end)
                )
                blob[i] ^= 1 << rng.randrange(8)
    # and one flip in the framing header of one PDU (Modbus protocol id, TPKT version, OPC UA
    # message type): this one must be counted as an anomaly, whatever the others hit
    start, end = rng.choice([r for r in recs if payload_at(blob, r[0]) is not None])
    pay, port = payload_at(blob, start)
    blob[pay + {502: 2, 102: 0, 4840: 0}[port]] ^= 1 << rng.randrange(8)
    path = tmp_path / "flipped.pcap"
    path.write_bytes(bytes(blob))
    proc = replay(path, "--stats", "--no-rules")
    assert proc.returncode == 0, proc.stderr[-2000:]
    stats = stats_of(proc.stderr)
    assert stats["packets"] == len(recs)
    assert stats["anomalies"] > 0, stats
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    printed = sum(e["event"]["action"] == "anomaly" for e in events)
    assert printed == stats["anomalies"] and stats["events"] == len(events)
    assert "error" not in proc.stderr.lower().replace("parser_errors", "").replace(
        "sigmaengine.errors", ""
    )


def expect_damage(
    proc: subprocess.CompletedProcess, file: Path, what: str, clean: subprocess.CompletedProcess
) -> None:
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and str(file.name) in lines[0], (
        proc.stderr
    )
    assert what in lines[0] and re.search(r"at byte \d+ after \d+ packets", lines[0]), lines[0]
    # the packets before the damage: the same events as a file that ends cleanly there
    assert clean.returncode == 0 and clean.stdout
    assert proc.stdout == clean.stdout


@pytest.mark.parametrize("name", CAPTURES)
def test_cut_file(tmp_path, name: str) -> None:
    blob = (PCAPS / name).read_bytes()
    recs = records(blob)
    start, end = recs[len(recs) * 2 // 3]
    cut = tmp_path / "cut.pcap"
    cut.write_bytes(blob[: start + 16 + (end - start - 16) // 2])
    clean = tmp_path / "clean.pcap"
    clean.write_bytes(blob[:start])
    expect_damage(replay(cut), cut, "truncated packet record", replay(clean))


@pytest.mark.parametrize("name", CAPTURES[:2])
def test_corrupt_record_length(tmp_path, name: str) -> None:
    blob = bytearray((PCAPS / name).read_bytes())
    recs = records(bytes(blob))
    start, _end = recs[len(recs) // 2]
    struct.pack_into("<I", blob, start + 8, 0x7FFFFFFF)
    bad = tmp_path / "badlen.pcap"
    bad.write_bytes(bytes(blob))
    clean = tmp_path / "clean.pcap"
    clean.write_bytes(bytes(blob[:start]))
    expect_damage(
        replay(bad), bad, f"corrupt record length {0x7FFFFFFF} at byte {start}", replay(clean)
    )


def test_corrupt_pcapng_block_length(tmp_path) -> None:
    frames = frames_of(PCAPS / "opcua/opcua_chunked.pcap")
    k = len(frames) // 2
    head = pcapng([(1, None, frames[:k])])
    tail = pcapng([(1, None, frames[k:])])
    shb_idb = len(pcapng([(1, None, [])]))
    first_epb = tail[shb_idb:]
    bad_epb = first_epb[:4] + struct.pack("<I", 13) + first_epb[8:]  # not a multiple of 4
    bad = tmp_path / "badlen.pcapng"
    bad.write_bytes(head + bad_epb)
    clean = tmp_path / "clean.pcapng"
    clean.write_bytes(head)
    expect_damage(replay(bad), bad, f"corrupt block length 13 at byte {len(head)}", replay(clean))
