"""The command line on bad input: one clear error line, a non-zero exit, never a traceback."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import REPO, pcapgen

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


# ---- one exit code convention, paths printed as they are ----------------------------------


def test_help_documents_the_exit_codes() -> None:
    for args in (["--help"], ["replay", "--help"], ["alerts", "--help"]):
        proc = icsmon(*args)
        text = " ".join(proc.stdout.split())
        assert proc.returncode == 0 and "Exit status: 0 done; 1 the work ran" in text, args
        assert "2 nothing was done" in text


@pytest.mark.parametrize(
    ("args", "code", "needle"),
    [
        # 2: a file or option named on the command line is missing or invalid
        (["replay", str(POLLING), "--rules", "[bold]rules[/]"], 2, "[bold]rules[/]"),
        (["replay", str(POLLING), "--baseline", "[red]b[/].json"], 2, "[red]b[/].json"),
        (["replay", str(POLLING), "--port", "x=modbus"], 2, "PORT=PROTOCOL"),
        (["alerts", "--store", "[bold]x[/]/icsmon.db"], 2, "[bold]x[/]/icsmon.db"),
        (["assets", "--store", "[/]/icsmon.db"], 2, "[/]/icsmon.db"),
        (["baseline", "show", "[/x].json"], 2, "[/x].json"),
        (["baseline", "learn", "[/nope].pcap", "-o", "/dev/null"], 2, "[/nope].pcap"),
        (["rules", "check", "[/rules]"], 2, "[/rules]"),
        (["posture", "serve", "--store", "[/]", "--es", "http://x"], 2, "either --store"),
        (["index", "--config", "[/]x.toml"], 2, "[/]x.toml"),
        # 1: the work ran and failed (a capture cut short, a service that cannot be reached)
        (["replay", "[/gone].pcap", "--sink", "none"], 1, "[/gone].pcap"),
        (["alerts", "--es", "http://127.0.0.1:9"], 1, "127.0.0.1:9"),
    ],
)
def test_exit_codes_and_markup_safe_errors(args: list[str], code: int, needle: str) -> None:
    proc = icsmon(*args)
    assert_clean_error(proc, needle)
    assert proc.returncode == code, proc.stderr


def test_a_replay_refused_for_its_rules_leaves_no_store_behind(tmp_path: Path) -> None:
    """The store's writer starts while the rules load; when they are refused, the store file
    it had just made goes with it."""
    bad = tmp_path / "bad.yml"
    bad.write_text("title: [unclosed\n")
    store = tmp_path / "new.db"
    proc = icsmon("replay", str(POLLING), "--rules", str(bad), "--store", str(store))
    assert_clean_error(proc, str(bad))
    assert not list(tmp_path.glob("new.db*"))


def test_replay_events_to_a_pipe_print_what_the_sink_writes(tmp_path) -> None:
    # the printed events (a block at a time into a pipe) are the sink's event lines, in order
    out = tmp_path / "sink.jsonl"
    pcaps = [str(p) for p in sorted((REPO / "pcaps").rglob("*.pcap"))[:6]]
    proc = icsmon(
        "replay", *pcaps, "--events", "--format", "jsonl", "--sink", "jsonl", "--out", str(out)
    )
    assert proc.returncode == 0, proc.stderr
    sunk = [
        line
        for line in out.read_text().splitlines()
        if json.loads(line).get("event", {}).get("kind") == "event"
    ]
    assert len(sunk) > 100 and proc.stdout.splitlines() == sunk


def test_a_reader_that_goes_away_ends_the_replay_quietly(tmp_path) -> None:
    # ``icsmon replay ... --events --format jsonl | head -3``: the reader goes away early; the
    # replay stops (exit 0, nothing on stderr) rather than decoding all it was given
    store = tmp_path / "s.db"
    args = ["replay", *[str(POLLING)] * 400, "--events", "--format", "jsonl", "--store", str(store)]
    proc = subprocess.Popen(
        [ICSMON, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=dict(os.environ)
    )
    assert proc.stdout is not None and proc.stderr is not None
    lines = [proc.stdout.readline() for _ in range(3)]
    proc.stdout.close()
    err = proc.stderr.read()
    assert proc.wait(timeout=120) == 0, err
    assert err == b"" and all(json.loads(line)["event"]["kind"] == "event" for line in lines)
    full = icsmon("replay", str(POLLING), "--events", "--format", "jsonl", "--sink", "none")
    stored = sqlite3.connect(store).execute("select count(*) from events").fetchone()[0]
    assert stored < 400 * len(full.stdout.splitlines())  # stopped early
