"""``icsmon response ...``: policy and calendar checks, grading from the command line, the
audit check; bad files are one error line naming the file, exit 2, no traceback."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from typer.testing import CliRunner

from icsmon.cli import app

runner = CliRunner()


def run(*args: str):
    return runner.invoke(app, list(args))


def test_policy_check_summarises_the_shipped_policy() -> None:
    r = run("response", "policy", "check")
    assert r.exit_code == 0, r.output
    assert "especially-major\t特别重大\t3 rules (0 unverified)" in r.output
    assert "deadline first-report-cii: first report within 60 min" in r.output


def test_policy_grade_names_the_rule() -> None:
    r = run("response", "policy", "grade", "--fact", "direct_loss_yuan=150000000")
    assert r.exit_code == 0, r.output
    assert r.output.splitlines()[0] == "especially-major\t特别重大\trule direct-loss-100m"
    r = run("response", "policy", "grade", "--fact", "enterprises_affected=4")
    assert "relatively-major" in r.output and "(unverified)" in r.output
    r = run("response", "policy", "grade", "--fact", "nonsense=1")
    assert r.exit_code == 2 and "error:" in r.output and "Traceback" not in r.output


def test_bad_policy_and_calendar_files_are_one_error_line(tmp_path: Path) -> None:
    bad = tmp_path / "policy.yaml"
    bad.write_text("levels: [\n")
    r = run("response", "policy", "check", str(bad))
    assert r.exit_code == 2 and "Traceback" not in r.output
    assert f"error: {bad}: not valid YAML" in " ".join(r.output.split())
    cal = tmp_path / "cal.yaml"
    cal.write_text("holidays: [2026-13-01]\n")
    r = run("response", "calendar", "check", str(cal))
    assert r.exit_code == 2 and "month must be in 1..12" in r.output and str(cal) in r.output
    r = run("response", "calendar", "check", str(tmp_path / "missing.yaml"))
    assert r.exit_code == 2 and "cannot read" in r.output
    r = run("response", "calendar", "check")
    assert r.exit_code == 0 and "years 2025, 2026" in r.output


def test_audit_check_finds_an_altered_entry(tmp_path: Path) -> None:
    from response.db import SYSTEM, ResponseDB

    state = tmp_path / "icsmon.posture.db"
    db = ResponseDB(state)
    for k in range(3):
        with db.tx() as conn:
            db.audit(conn, SYSTEM, "notice", f"n{k}", "issue", sites=[], enterprises=[], cities=[])
    db.close()
    r = run("response", "audit", "--state", str(state))
    assert r.exit_code == 0 and "3 audit entries, chain intact" in r.output
    conn = sqlite3.connect(state)
    conn.execute("DROP TRIGGER response_audit_no_update")
    conn.execute("UPDATE response_audit SET action='withdraw' WHERE seq=2")
    conn.commit()
    conn.close()
    r = run("response", "audit", "--state", str(state))
    assert r.exit_code == 1 and "audit entry 2 does not match the chain" in " ".join(
        r.output.split()
    )
