"""Absence scope on a live interface: `icsmon sense` with the plant's baseline, fed a cut of
the clean test split at its real pace (tcpreplay) on a veth pair in a namespace the test
creates (as tests/sensor/test_live.py does), and the same file through `icsmon replay`.

The cut (22 s): the HMI's S7 polling ends after 8 s (seen, then silent: stopped), the
historian is absent from the start while the OPC UA server answers the HMI (loss of view:
stopped), and the Modbus traffic is left out entirely (a protocol missing: never alerted,
one summary line); the engineering station does no maintenance in those 22 s (unseen, no
polling to miss).
"""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

import pytest

from tests.support.netns import (
    ICSMON,
    SENSE,
    WAIT,
    capture_ready,
    iface_index,
    in_ns,
    netns,  # noqa: F401 (fixture)
    queue_drained,
    wait_on_child,
)
from tests.support.plant import (
    HISTORIAN,
    HMI,
    OPCUA_SERVER,
    S7_PLC,
    between,
    capture,
    craft,
    save_baseline,
)

pytestmark = [pytest.mark.live, pytest.mark.slow]

EXPECTED = sorted([(HISTORIAN, OPCUA_SERVER), (HMI, S7_PLC)])


def _keep(t: float, src: str, dst: str, sport: int, dport: int) -> bool:
    if 502 in (sport, dport) or HISTORIAN in (src, dst):
        return False
    return not (between(HMI, S7_PLC, src, dst) and t > 8.0)


@pytest.fixture(scope="module")
def cut(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("absence")
    return (
        craft(capture("test.pcap"), folder / "cut.pcap", _keep, until=22.0),
        save_baseline(folder / "plant.baseline.json"),
    )


def _stopped(stdout: str) -> list[tuple[str, str]]:
    alerts = [json.loads(line) for line in stdout.splitlines() if line.strip()]
    return sorted(
        (a["source"]["ip"], a["destination"]["ip"])
        for a in alerts
        if a["rule"]["id"] == "baseline-polling-stopped"
    )


def _notes(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("note: baseline:")]


def test_replay_of_the_cut(cut: tuple[Path, Path]) -> None:
    pcap, baseline = cut
    proc = subprocess.run(
        [
            ICSMON,
            "replay",
            str(pcap),
            "--baseline",
            str(baseline),
            "--no-rules",
            "--format",
            "jsonl",
            "--sink",
            "none",
        ],
        capture_output=True,
        text=True,
        timeout=WAIT,
    )
    assert proc.returncode == 0, proc.stderr
    assert _stopped(proc.stdout) == EXPECTED
    (note,) = _notes(proc.stderr)
    # the engineering station did no maintenance in these 22 s: unseen, but nothing to miss
    assert "3 of 5 learned conversations never appeared" in note and "1 not checked" in note
    assert "1 reported as stopped polling" in note and "1 without a polling series" in note


def test_sense_on_a_live_port(netns: str, cut: tuple[Path, Path]) -> None:  # noqa: F811
    pcap, baseline = cut
    proc = subprocess.Popen(
        in_ns(
            netns,
            ICSMON,
            "sense",
            "--iface",
            SENSE,
            "--baseline",
            str(baseline),
            "--no-rules",
            "--format",
            "jsonl",
            "--sink",
            "none",
            "--observer",
            "t",
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        ifindex = iface_index(netns, SENSE)
        wait_on_child("icsmon sense to listen", lambda: capture_ready(netns, ifindex), proc)
        _replay_paced(netns, pcap)
        wait_on_child(
            "icsmon sense to read every frame", lambda: queue_drained(netns, ifindex), proc
        )
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=WAIT)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr
    assert _stopped(stdout) == EXPECTED
    (note,) = _notes(stderr)
    assert "3 of 5 learned conversations never appeared" in note
    assert "conversations_unseen" in stderr  # the counters in the final sensor health table


def _replay_paced(ns: str, pcap: Path) -> None:
    """tcpreplay at the capture's own pace, not --topspeed as tests/sensor/test_live.py
    replays: polling periods are what the baseline measures."""
    subprocess.run(
        in_ns(ns, "tcpreplay", "-q", "-i", "vsend", str(pcap)),
        capture_output=True,
        text=True,
        check=True,
        timeout=WAIT,
    )
