"""What a sensor's start-up imports: `icsmon replay` with the shipped rule pack, once the pack
is cached, runs without pySigma, rich (no table to print), the other commands' modules and
pydantic's plugin scan; what it prints is the same as with everything loaded."""

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
    assert not loaded & {"sigma", "jinja2", "pyparsing", "rich"}
    others = {m for m in loaded if m.startswith("icsmon.cmd_") and m != "icsmon.cmd_sensor"}
    assert not others


def test_a_table_still_prints(tmp_path: Path) -> None:
    table, loaded = _replay(tmp_path, "--sink", "none")
    assert "rich" in loaded and "Modbus" in table
