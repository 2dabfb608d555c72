"""Absence has a scope (detectors/README.md, "Absence"): a learned polling series is reported
as stopped only once its server has been seen answering on that service in this input (the
series itself, or other clients: loss of view), never because the input lacks a protocol or
a server. Learned conversations that never appear are one summary line, not alerts.

Each case runs on real plant traffic (pcaps/plant/test.pcap, learned from train.pcap), cut or
filtered as a capture filter would, through the replay path here and through `icsmon sense`
on a live interface in tests/plant/test_absence_live.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from detectors.baseline import BaselineDetector, BaselineLearner
from tests.support.plant import (
    ENGINEERING,
    HISTORIAN,
    HMI,
    MODBUS_PLC,
    OPCUA_SERVER,
    S7_PLC,
    between,
    capture,
    craft,
    detect,
    events,
    save_baseline,
)

ICSMON = str(Path(sys.executable).parent / "icsmon")


@pytest.fixture(scope="module")
def baseline_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_baseline(tmp_path_factory.mktemp("plant") / "plant.baseline.json")


def stopped(alerts: list[dict]) -> list[tuple[str, str]]:
    return sorted(
        (a["source.ip"], a["destination.ip"])
        for a in alerts
        if a["rule.id"] == "baseline-polling-stopped"
    )


def _t0(evs: list[dict]) -> float:
    from detectors.baseline.features import event_time

    return min(t for t in (event_time(e) for e in evs) if t is not None)


def _rel(event: dict, t0: float) -> float:
    from detectors.baseline.features import event_time

    return (event_time(event) or t0) - t0


def test_the_whole_split_is_quiet(baseline_file: Path) -> None:
    alerts, dets = detect(baseline_file, events("test.pcap"))
    assert alerts == []
    assert dets.notes() == []  # every learned conversation appeared


def test_a_series_seen_then_silent_is_stopped(baseline_file: Path) -> None:
    # The HMI's S7 polling ends 40 s into the split; the rest of the plant goes on.
    evs = events("test.pcap")
    t0 = _t0(evs)
    cut = [
        e
        for e in evs
        if not (between(HMI, S7_PLC, e["source.ip"], e["destination.ip"]) and _rel(e, t0) > 40)
    ]
    alerts, _ = detect(baseline_file, cut)
    assert stopped(alerts) == [(HMI, S7_PLC)]
    (alert,) = [a for a in alerts if a["rule.id"] == "baseline-polling-stopped"]
    assert "no request since" in alert["message"]
    assert alert["icsmon.baseline.series"] == ["read_var @ r:db1:0-15"]
    assert alert["icsmon.alert.event_ids"], "the last requests seen are the evidence"
    assert set(alert["threat.technique.id"]) == {"T0803", "T0804"}


def test_a_client_never_seen_while_its_server_answers_others_is_loss_of_view(
    baseline_file: Path,
) -> None:
    # The historian is absent from the start; the OPC UA server keeps answering the HMI.
    evs = [e for e in events("test.pcap") if e["source.ip"] != HISTORIAN]
    alerts, dets = detect(baseline_file, evs)
    assert stopped(alerts) == [(HISTORIAN, OPCUA_SERVER)]
    (alert,) = [a for a in alerts if a["rule.id"] == "baseline-polling-stopped"]
    assert "no request at all while the server answered others" in alert["message"]
    assert alert["rule.name"] == "Polling stopped"
    (note,) = dets.notes()
    assert "1 of 5 learned conversations never appeared" in note
    assert "1 reported as stopped polling" in note


def test_a_protocol_missing_from_the_input_is_not_alerted(baseline_file: Path) -> None:
    # Only the Modbus traffic, as `tcpdump -w ... tcp port 502` would keep.
    evs = [e for e in events("test.pcap") if e["network.protocol"] == "modbus"]
    alerts, dets = detect(baseline_file, evs)
    assert alerts == []
    (note,) = dets.notes()
    assert note.startswith(
        "baseline: 4 of 5 learned conversations never appeared; 4 not checked for silence"
    )
    for conv in (
        f"{HMI} -> {S7_PLC} 102/s7comm",
        f"{HMI} -> {OPCUA_SERVER} 4840/opcua",
        f"{HISTORIAN} -> {OPCUA_SERVER} 4840/opcua",
        f"{ENGINEERING} -> {S7_PLC} 102/s7comm",
    ):
        assert conv in note
    stats = dets.stats()
    assert stats["baselinedetector.conversations_learned"] == 5
    assert stats["baselinedetector.conversations_seen"] == 1
    assert stats["baselinedetector.conversations_unseen"] == 4


def test_a_server_seen_only_on_another_protocol_is_not_alerted() -> None:
    # A PLC that speaks Modbus and S7 (one address): a capture of its Modbus traffic only says
    # nothing about its S7 clients. Learned from the plant's events with the S7 PLC's
    # address moved onto the Modbus PLC.
    def moved(e: dict) -> dict:
        e = dict(e)
        for side in ("source.ip", "destination.ip"):
            if e.get(side) == S7_PLC:
                e[side] = MODBUS_PLC
        return e

    learner = BaselineLearner()
    for e in events("train.pcap"):
        learner.observe(moved(e))
    detector = BaselineDetector(learner.result())
    modbus_only = [moved(e) for e in events("test.pcap") if e["network.protocol"] == "modbus"]
    alerts = [a for e in modbus_only for a in detector.process(e)] + detector.flush()
    assert alerts == []
    summary = detector.absence_summary()
    assert summary is not None and f"{HMI} -> {MODBUS_PLC} 102/s7comm" in summary


def test_replay_of_a_bpf_filtered_capture(baseline_file: Path, tmp_path: Path) -> None:
    # The case through the command line: a capture of one protocol (as `tcpdump ...
    # 'tcp port 502'` writes it) replayed against the whole site's baseline.
    modbus = craft(
        capture("test.pcap"), tmp_path / "modbus-only.pcap", lambda t, s, d, sp, dp: 502 in (sp, dp)
    )
    proc = subprocess.run(
        [
            ICSMON,
            "replay",
            str(modbus),
            "--baseline",
            str(baseline_file),
            "--format",
            "jsonl",
            "--sink",
            "none",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert [json.loads(line)["rule"]["name"] for line in proc.stdout.splitlines()] == []
    notes = [line for line in proc.stderr.splitlines() if line.startswith("note: baseline:")]
    assert len(notes) == 1 and "4 of 5 learned conversations never appeared" in notes[0]
    assert "Traceback" not in proc.stderr
