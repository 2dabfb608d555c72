"""The command line on bad input: one clear error line, a non-zero exit, never a traceback."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests import pcapgen

REPO = Path(__file__).resolve().parent.parent
ICSMON = str(Path(sys.executable).with_name("icsmon"))
POLLING = REPO / "pcaps" / "modbus" / "modbus_polling.pcap"


def icsmon(*args: str) -> subprocess.CompletedProcess:
    cmd = [ICSMON, *args]
    env = dict(os.environ, COLUMNS="200")
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)


def assert_clean_error(proc: subprocess.CompletedProcess, *needles: str) -> None:
    assert proc.returncode != 0, proc
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]


def test_help_and_version() -> None:
    for args in (["--help"], ["replay", "--help"], ["sense", "--help"]):
        proc = icsmon(*args)
        assert proc.returncode == 0 and "Usage" in proc.stdout
    assert icsmon("version").stdout.startswith("icsmon ")


def test_replay_prints_events_as_nested_json(tmp_path) -> None:
    proc = icsmon(
        "replay", str(POLLING), "--events", "--format", "jsonl", "--sink", "none", "--site", "s1"
    )
    assert proc.returncode == 0, proc.stderr
    docs = [json.loads(line) for line in proc.stdout.splitlines()]
    assert docs and all(d["network"]["protocol"] == "modbus" for d in docs)
    first = docs[0]
    assert first["event"]["kind"] == "event" and first["labels"]["site"] == "s1"
    assert "function_code" in first["modbus"] and first["network"]["community_id"].startswith("1:")


def test_not_a_capture(tmp_path) -> None:
    bad = tmp_path / "notes.txt"
    bad.write_text("not a capture\n")
    assert_clean_error(icsmon("replay", str(bad), "--sink", "none"), "notes.txt", "not a pcap")


def test_missing_file(tmp_path) -> None:
    assert_clean_error(
        icsmon("replay", str(tmp_path / "nope.pcap"), "--sink", "none"), "nope.pcap", "no such file"
    )


def test_cut_file_processes_what_is_before_the_damage(tmp_path) -> None:
    raw = POLLING.read_bytes()
    cut = tmp_path / "cut.pcap"
    cut.write_bytes(raw[: len(raw) // 2 + 7])
    proc = icsmon("replay", str(cut), "--events", "--format", "jsonl", "--sink", "none")
    assert_clean_error(proc, "cut.pcap", "truncated")
    assert len(proc.stdout.splitlines()) >= 3


def test_unknown_link_type_is_not_fatal(tmp_path) -> None:
    frames = pcapgen.frames_of(POLLING)
    path = pcapgen.write_pcap(
        tmp_path / "x.pcap", [(t, 147, d) for t, _l, d in frames], linktype=147
    )
    proc = icsmon("replay", str(path), "--events", "--format", "jsonl", "--sink", "none")
    assert proc.returncode == 0 and "Traceback" not in proc.stderr
    assert json.loads(proc.stdout.splitlines()[0])["error"]["type"] == "unsupported-link-type"


def test_missing_interface() -> None:
    assert_clean_error(icsmon("sense", "--iface", "nosuchif0", "--sink", "none"), "nosuchif0")


@pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("setpriv"),
    reason="needs root and setpriv to drop CAP_NET_RAW",
)
def test_no_permission_for_live_capture() -> None:
    proc = subprocess.run(
        [
            "setpriv",
            "--bounding-set=-net_raw",
            "--",
            ICSMON,
            "sense",
            "--iface",
            "lo",
            "--sink",
            "none",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert_clean_error(proc, "lo", "CAP_NET_RAW")
