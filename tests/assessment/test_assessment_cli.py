"""``icsmon advisories`` and ``icsmon findings`` on a store filled by ``icsmon replay`` of
real captures: import (validated), who is affected, findings with state, accept/reopen,
and one clear error line for bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CSAF = ROOT / "tests" / "assessment" / "csaf"


def icsmon(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "icsmon.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        env={"PATH": "/usr/bin:/bin", "COLUMNS": "200", "PYTHONPATH": str(ROOT)},
    )


def test_replay_import_affected_findings_accept(tmp_path: Path) -> None:
    store = str(tmp_path / "t.db")
    replay = icsmon(
        "replay",
        str(ROOT / "pcaps/modbus/modbus_identification.pcap"),
        str(ROOT / "pcaps/opcua/opcua_legacy_policies.pcap"),
        "--site",
        "plant-1",
        "--store",
        store,
        "--format",
        "jsonl",
        cwd=tmp_path,
    )
    assert replay.returncode == 0, replay.stderr
    imp = icsmon("advisories", "import", str(CSAF), "--store", store, cwd=tmp_path)
    assert imp.returncode == 0, imp.stderr
    assert "26 imported, 0 unchanged, 0 refused" in imp.stderr
    again = icsmon("advisories", "import", str(CSAF), "--store", store, cwd=tmp_path)
    assert "0 imported, 26 unchanged" in again.stderr
    out = icsmon("advisories", "affected", "--store", store, "--json", cwd=tmp_path)
    matches = [json.loads(line) for line in out.stdout.splitlines()]
    assert {
        (m["advisory"]["id"], m["asset"]["id"])
        for m in matches
        if m["match"]["status"] == "affected"
    } >= {
        ("ACME-2026-001", "plant-1:127.0.0.1"),
        ("ACME-2026-005", "plant-1:127.0.0.1"),
    }
    listed = icsmon(
        "findings", "list", "--store", store, "--json", "--resolve-after", "100000", cwd=tmp_path
    )
    found = {
        json.loads(line)["finding"]["kind"]: json.loads(line)["finding"]
        for line in listed.stdout.splitlines()
    }
    assert {
        "opcua-expired-certificate",
        "opcua-deprecated-security-policy",
        "firmware-observed",
    } <= set(found)
    fid = found["opcua-expired-certificate"]["id"]
    no_reason = icsmon("findings", "accept", fid, "--reason", " ", "--store", store, cwd=tmp_path)
    assert (
        no_reason.returncode == 2
        and no_reason.stderr.strip() == "error: accepting a finding needs a reason"
    )
    ok = icsmon(
        "findings",
        "accept",
        fid,
        "--reason",
        "replaced next outage",
        "--store",
        store,
        cwd=tmp_path,
    )
    assert ok.returncode == 0
    accepted = icsmon(
        "findings", "list", "--store", store, "--json", "--state", "accepted", cwd=tmp_path
    )
    (row,) = [json.loads(line)["finding"] for line in accepted.stdout.splitlines()]
    assert row["id"] == fid and row["accepted"]["reason"] == "replaced next outage"
    assert icsmon("findings", "reopen", fid, "--store", store, cwd=tmp_path).returncode == 0


def test_bad_advisory_files_are_named_and_the_exit_is_1(tmp_path: Path) -> None:
    feed = tmp_path / "feed"
    feed.mkdir()
    (feed / "good.json").write_text((CSAF / "acme-2026-001.json").read_text())
    (feed / "broken.json").write_text("{")
    out = icsmon("advisories", "import", str(feed), "--store", str(tmp_path / "t.db"), cwd=tmp_path)
    assert out.returncode == 1
    assert "refused: " in out.stderr and "broken.json: not JSON" in out.stderr
    assert "1 imported, 0 unchanged, 1 refused" in out.stderr
    assert "Traceback" not in out.stderr
    missing = icsmon(
        "advisories",
        "import",
        str(tmp_path / "nope"),
        "--store",
        str(tmp_path / "t.db"),
        cwd=tmp_path,
    )
    assert missing.returncode == 2 and "nope: no such file or folder" in missing.stderr
