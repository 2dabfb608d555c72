"""Modbus/TCP against tshark as the oracle, on every published Modbus capture.

Per PDU: transaction id, unit id, function code and exception code must agree, and so must
the number of PDUs. icsmon reports transactions (request + response in one event), so its
PDUs are counted back from each event's ``ics.pairing``.
"""

from __future__ import annotations

import subprocess
from collections import Counter
from pathlib import Path

import pytest

from sensor.engine import Engine, EngineConfig

FOLDERS = ("modbus", "mixed")

# Where icsmon and tshark differ on purpose: file -> (reason, PDUs only icsmon reports,
# PDUs only tshark reports). Each was checked frame by frame.
KNOWN_DIFFERENCES: dict[str, tuple[str, dict, dict]] = {
    "iti__mb2.pcap": (
        "tshark does not dissect new bytes inside a segment it marks as a retransmission: frame"
        " 1131 (seq 139, 60 bytes) repeats request 22505 and carries requests 22506-22509,"
        " answered in frame 3008; likewise 9824/9825 later. icsmon trims the overlap and decodes"
        " the rest, so it pairs these requests with their responses.",
        {
            (22506, 255, 4): 2,
            (22507, 255, 4): 2,
            (22508, 255, 4): 2,
            (22509, 255, 4): 2,
            (22505, 255, 4): 1,
            (9824, 255, 4): 1,
            (9825, 255, 2): 1,
        },
        {},
    ),
    "zeek__modbusBig.pcap": (
        "frame 3150 carries the response to 50382 whose first copy was never captured (frame 3149"
        " ACKs unseen bytes); tshark calls it a spurious retransmission and skips it, icsmon sees"
        " those bytes for the first time and decodes them.",
        {(50382, 255, 1): 1},
        {},
    ),
    "zeek__fuzz-72.pcap": (
        "a fuzzed trace with random TCP sequence numbers: tshark dissects each segment on its own,"
        " icsmon reassembles by sequence, so segments whose numbers fall before the stream"
        " position are retransmissions to it and some PDUs are framed differently.",
        {(0, 1, 29): 1},
        {(0, 1, 32): 1, (21504, 1, 35): 1, (0, 1, 36): 1, (0, 1, 37): 1},
    ),
}


def _files(public: Path) -> list[Path]:
    return sorted(p for folder in FOLDERS for p in (public / folder).glob("*.pcap*"))


def tshark_pdus(tshark: str, path: Path) -> Counter:
    out = subprocess.run(
        [
            tshark,
            "-r",
            str(path),
            "-Y",
            "mbtcp",
            "-T",
            "fields",
            "-E",
            "occurrence=a",
            "-E",
            "aggregator=|",
            "-e",
            "mbtcp.trans_id",
            "-e",
            "mbtcp.unit_id",
            "-e",
            "modbus.func_code",
            "-e",
            "modbus.exception_code",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    pdus: Counter = Counter()
    for line in out.splitlines():
        tids, units, fcs, excs = (col.split("|") if col else [] for col in line.split("\t"))
        # a frame holds several PDUs: fields line up by position; exception codes only on exceptions
        for i, tid in enumerate(tids):
            fc = int(fcs[i]) if i < len(fcs) else None
            pdus[(int(tid), int(units[i]), fc)] += 1
        for exc in excs:
            pdus[("exception", int(exc))] += 1
    return pdus


def icsmon_pdus(path: Path) -> Counter:
    pdus: Counter = Counter()
    for ev in Engine(EngineConfig()).replay([path]):
        if ev.get("network.protocol") != "modbus" or ev.get("event.action") == "anomaly":
            continue
        key = (ev["modbus.transaction_id"], ev["modbus.unit_id"], ev["modbus.function_code"])
        pairing = ev.get("ics.pairing")
        pdus[key] += 2 if pairing == "paired" else 1
        if "modbus.exception_code" in ev:
            pdus[("exception", ev["modbus.exception_code"])] += 1
    return pdus


def test_every_public_modbus_capture_agrees_with_tshark(public_pcaps: Path, tshark: str) -> None:
    files = _files(public_pcaps)
    assert files, "no Modbus captures found"
    report = []
    for path in files:
        theirs = tshark_pdus(tshark, path)
        ours = icsmon_pdus(path)
        missing = theirs - ours
        extra = ours - theirs
        if path.name in KNOWN_DIFFERENCES:
            _reason, only_ours, only_theirs = KNOWN_DIFFERENCES[path.name]
            if dict(extra) != only_ours or dict(missing) != only_theirs:
                report.append(
                    f"{path.name}: the known difference changed: tshark-only {dict(missing)} icsmon-only {dict(extra)}"
                )
            continue
        if missing or extra:
            report.append(f"{path.name}: tshark-only {dict(missing)} icsmon-only {dict(extra)}")
    assert not report, "\n".join(report)


@pytest.mark.parametrize("name", ["iti__ModbusTCP.pcap"])
def test_several_pdus_per_segment(public_pcaps: Path, name: str) -> None:
    """ITI's capture carries several PDUs per TCP segment (11881 frames, 15976 PDUs)."""
    ours = icsmon_pdus(public_pcaps / "modbus" / name)
    assert sum(v for k, v in ours.items() if k[0] != "exception") == 15976
