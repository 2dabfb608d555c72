"""What a sensor's start-up imports: `icsmon replay` with the shipped rule pack, once the pack
is cached, runs without pySigma, PyYAML, rich (no table to print), the other commands'
modules and pydantic; what it prints is the same as with everything loaded."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.support import REPO

CAPTURE = REPO / "pcaps" / "modbus" / "modbus_attack.pcap"

AUDIT = """
import json, sys
sys.argv = ["icsmon", *sys.argv[1:]]
from icsmon.cli import main
try:
    main()
except SystemExit as exc:
    loaded = sorted({m.split(".")[0] for m in sys.modules} | {m for m in sys.modules if m.startswith("icsmon.")})
    print(json.dumps(loaded), file=sys.stderr)
    raise
"""


def _replay(cache: Path, *args: str) -> tuple[str, set[str]]:
    run = subprocess.run(
        [sys.executable, "-c", AUDIT, "replay", str(CAPTURE), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "HOME": str(cache), "ICSMON_RULE_CACHE": str(cache)},
        check=True,
    )
    return run.stdout, set(json.loads(run.stderr.strip().splitlines()[-1]))


def test_a_replay_starts_with_what_it_needs(tmp_path: Path) -> None:
    args = ("--format", "jsonl", "--sink", "none")
    first, _ = _replay(tmp_path, *args)  # loads the pack in full, and caches it
    alerts, loaded = _replay(tmp_path, *args)
    assert alerts == first and alerts.count("\n") > 0
    assert not loaded & {"sigma", "jinja2", "pyparsing", "rich", "yaml", "pydantic"}
    others = {m for m in loaded if m.startswith("icsmon.cmd_") and m != "icsmon.cmd_sensor"}
    assert not others


def test_a_table_still_prints(tmp_path: Path) -> None:
    table, loaded = _replay(tmp_path, "--sink", "none")
    assert "rich" in loaded and "Modbus" in table


def _sensor_kwargs(monkeypatch, argv: list[str], plain: bool) -> dict:
    """The arguments the sensor command of ``argv`` is called with, its options checked by
    typer (pydantic) or by the sensor's plain checks (``icsmon.cli._without_pydantic``)."""
    import functools

    import typer

    from icsmon import cli, cmd_sensor

    seen: dict = {}
    name = argv[0]
    command = getattr(cmd_sensor, name)

    @functools.wraps(command)
    def record(**kwargs):
        seen.update(kwargs)

    monkeypatch.setattr(cmd_sensor, name, record)
    group = typer.main.get_command(cli._sensor_app())
    if plain:
        group = cli._without_pydantic(group)
    group.main(argv, prog_name="icsmon", standalone_mode=False)
    return seen


SENSOR_LINES = [
    ["replay", "a.pcap"],
    ["replay", "a.pcap", "b.pcap.gz", "--store", "s.db"],
    ["replay", "a.pcap", "--events", "--format", "jsonl", "--store", "s.db"],
    ["replay", "a.pcap", "-f", "table", "--sink", "jsonl", "--out", "o.jsonl", "--no-rules"],
    ["replay", "a.pcap", "--sink", "none", "--rules", "r", "--site-config", "c.yml"],
    ["replay", "a.pcap", "--site", "s1", "--observer", "o1", "--org", "e1", "--stats"],
    ["replay", "a.pcap", "--heuristic", "modbus", "--heuristic", "s7comm", "--port", "5020=modbus"],
    ["replay", "a.pcap", "--store-max-events", "100", "--store-max-bytes", "0"],
    ["replay", "a.pcap", "--store-max-age-days", "1.5", "--rollup-interval", "60", "--rollups"],
    ["replay", "a.pcap", "--no-store-events", "--ship", "all", "--sink", "kafka"],
    ["replay", "a.pcap", "--baseline", "b.json", "--learn", "90s", "--content", "p.json"],
    ["replay", "a.pcap", "--store-max-age-days", "2", "--rollup-interval", "1e2"],
    ["sense", "-i", "eth0", "--bpf", "tcp port 502", "--workers", "2", "--user", "nobody"],
    ["sense", "--iface", "eth1", "--control-key", "k.pem", "--sink", "kafka", "--stats"],
]


def test_the_sensor_options_are_what_typer_makes(monkeypatch) -> None:
    """The sensor's plain checks give each option the value typer's own checks give it
    (the same type too), whether set by a flag or by its environment variable."""
    import pytest

    monkeypatch.setenv("ICSMON_STORE_MAX_EVENTS", "7")
    monkeypatch.setenv("ICSMON_SITE", "plant-7")
    for argv in SENSOR_LINES:
        typer_made = _sensor_kwargs(monkeypatch, argv, plain=False)
        plain = _sensor_kwargs(monkeypatch, argv, plain=True)
        assert plain == typer_made, argv
        assert [type(v) for v in plain.values()] == [type(v) for v in typer_made.values()]
        for key, value in plain.items():
            if isinstance(value, list):
                assert [type(v) for v in value] == [type(v) for v in typer_made[key]]
    for bad in (
        ["replay", "a.pcap", "--rollup-interval", "0"],
        ["replay", "a.pcap", "--format", "xml"],
        ["replay", "a.pcap", "--format", "JSONL"],
        ["replay", "a.pcap", "--store-max-bytes", "-1"],
        ["replay", "a.pcap", "--store-max-events", "abc"],
        ["sense", "-i", "eth0", "--workers", "65"],
    ):
        messages = []
        for plain in (False, True):
            with pytest.raises(Exception) as exc:
                _sensor_kwargs(monkeypatch, bad, plain=plain)
            messages.append((type(exc.value), str(exc.value)))
        assert messages[0] == messages[1], bad
