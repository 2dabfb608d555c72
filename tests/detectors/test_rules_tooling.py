"""``icsmon rules check|list|convert`` and sigma-cli over rules/ (what CI runs), plus golden
files of the converted pack so the queries analysts paste into Kibana stay reviewed.

Regenerate the goldens with ``ICSMON_UPDATE_GOLDEN=1 .venv/bin/pytest tests/detectors/test_rules_tooling.py``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from icsmon.cmd_rules import app
from tests.support import REPO

RULES = REPO / "rules"
GOLDEN = REPO / "tests" / "rule_conversions"
PIPELINE = REPO / "detectors" / "pipelines" / "ics_ecs.yml"
VALIDATION = REPO / "detectors" / "sigma" / "sigma-validation.yml"
BIN = Path(sys.executable).parent

runner = CliRunner()


def sigma_cli() -> str:
    path = BIN / "sigma"
    if not path.exists():
        found = shutil.which("sigma")
        if not found:
            pytest.fail("sigma-cli is not installed (it is in the test extra)")
        return found
    return str(path)


def test_rules_check_passes_on_the_pack() -> None:
    result = runner.invoke(app, ["check"])
    assert result.exit_code == 0, result.output
    assert "0 errors, 0 warnings" in result.output


def test_sigma_cli_check_passes_on_the_pack() -> None:
    res = subprocess.run(
        [sigma_cli(), "check", "-i", "-c", str(VALIDATION), str(RULES)],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert "Found 0 errors, 0 condition errors and 0 issues" in res.stdout


BROKEN = {
    "typo_field.yml": (
        "modbus.fucntion_code: 6",
        "field 'modbus.fucntion_code' is not emitted",
        "modbus.fucntion_code",
    ),
    "revoked_tag.yml": ("modbus.function_code: 6", "attack.t0875", "tags:"),
    "bad_modifier.yml": ("modbus.function_code|in: [5, 6]", "Unknown modifier", None),
}


def write_broken(folder: Path) -> None:
    for i, (name, (item, _, _)) in enumerate(BROKEN.items()):
        tag = "attack.t0875" if "revoked" in name else "attack.t0855"
        (folder / name).write_text(
            f"title: Broken {i}\nid: 3b0c1f58-0000-4000-8000-00000000000{i}\nstatus: test\n"
            f"description: d\nauthor: a\ndate: 2026-11-26\ntags:\n  - {tag}\n"
            f"logsource:\n  product: ics\n  service: modbus\n"
            f"detection:\n  sel:\n    {item}\n  condition: sel\nlevel: high\n"
        )


def test_rules_check_reports_file_line_and_rule(tmp_path: Path) -> None:
    write_broken(tmp_path)
    result = runner.invoke(app, ["check", str(tmp_path)])
    assert result.exit_code == 1
    lines = result.output.splitlines()
    for name, (_, message, key) in BROKEN.items():
        hit = [ln for ln in lines if name in ln and message in ln]
        assert hit, (name, result.output)
        if key:
            path, line = hit[0].split(":")[0], int(hit[0].split(":")[1])
            assert (
                key
                in Path(path if Path(path).is_absolute() else REPO / path)
                .read_text()
                .splitlines()[line - 1]
            )
    res = subprocess.run(
        [sigma_cli(), "check", "-i", "-c", str(VALIDATION), str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert res.returncode == 1  # sigma-cli refuses the unknown modifier too


def test_sigma_check_and_icsmon_share_validators_and_configuration(tmp_path: Path) -> None:
    """icsmon's checks are pySigma validators: ``sigma check`` finds and runs them, and an
    exclusion in the one configuration file excuses a rule in both commands alike."""
    listed = subprocess.run([sigma_cli(), "list", "validators"], capture_output=True, text=True)
    assert listed.returncode == 0, listed.stderr
    for name in ("ics_logsource", "ics_field", "ics_attack_tag", "ics_technique_tag"):
        assert name in listed.stdout, listed.stdout
    rules = tmp_path / "rules"
    rules.mkdir()
    rule_id = "3b0c1f58-0000-4000-8000-0000000000aa"
    (rules / "modbus_misspelt_field.yml").write_text(
        f"title: Misspelt field\nid: {rule_id}\nstatus: test\ndescription: d\nauthor: a\n"
        "date: 2026-11-26\ntags:\n  - attack.t0855\n"
        "logsource:\n  product: ics\n  service: modbus\n"
        "detection:\n  sel:\n    modbus.fucntion_code: 6\n  condition: sel\nlevel: high\n"
    )

    def both(config: Path) -> tuple[subprocess.CompletedProcess, Any]:
        theirs = subprocess.run(
            [sigma_cli(), "check", "-i", "-c", str(config), str(rules)],
            capture_output=True,
            text=True,
        )
        ours = runner.invoke(app, ["check", str(rules), "--validation-config", str(config)])
        return theirs, ours

    theirs, ours = both(VALIDATION)
    assert theirs.returncode == 1 and "IcsUnknownFieldIssue" in theirs.stdout, theirs.stdout
    assert ours.exit_code == 1 and "'modbus.fucntion_code' is not emitted" in ours.output
    excused = tmp_path / "validation.yml"
    excused.write_text(VALIDATION.read_text() + f"exclusions:\n  {rule_id}: ics_field\n")
    theirs, ours = both(excused)
    assert theirs.returncode == 0, theirs.stdout
    assert ours.exit_code == 0 and "0 errors, 0 warnings" in ours.output, ours.output
    # a configuration naming a validator nobody provides: one error line, no traceback
    wrong = tmp_path / "wrong.yml"
    wrong.write_text("validators:\n  - all\n  - -no_such_validator\n")
    ours = runner.invoke(app, ["check", str(rules), "--validation-config", str(wrong)])
    assert ours.exit_code == 2 and "error:" in ours.output and "no_such_validator" in ours.output


def test_rules_list() -> None:
    result = runner.invoke(app, ["list", "--format", "json"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.output.splitlines()]
    stop = next(r for r in rows if r["title"] == "S7comm PLC Stop")
    assert stop["level"] == "critical" and stop["techniques"] == ["T0858", "T0816", "T0881"]
    assert stop["service"] == "s7comm" and stop["type"] == "rule"
    assert {r["type"] for r in rows} >= {
        "rule",
        "base",
        "event_count",
        "value_count",
        "temporal",
        "temporal_ordered",
    }
    table = runner.invoke(app, ["list"])
    assert table.exit_code == 0 and "S7comm PLC Stop" in table.output


def test_rules_matchers_prints_the_generated_source(tmp_path: Path) -> None:
    result = runner.invoke(app, ["matchers"])
    assert result.exit_code == 0, result.output
    for dataset in ("ics.modbus", "ics.s7comm", "ics.opcua"):
        assert f"event.dataset == {dataset!r}" in result.output
    compile(result.output, "<matchers>", "exec")  # what a reviewer reads is real Python
    missing = runner.invoke(app, ["matchers", str(tmp_path / "none")])
    assert missing.exit_code == 2
    assert "error:" in missing.output and "[bold" not in missing.output


def test_console_script_has_the_rules_commands() -> None:
    exe = BIN / "icsmon"
    if not exe.exists():
        pytest.skip("icsmon console script not installed")
    res = subprocess.run([str(exe), "rules", "--help"], capture_output=True, text=True)
    if res.returncode != 0 and "No such command" in res.stderr:
        pytest.skip("icsmon.cli does not register the rules sub-app yet")
    assert res.returncode == 0, res.stderr
    for command in ("check", "list", "convert", "matchers"):
        assert command in res.stdout


@pytest.mark.parametrize("target", ["lucene", "esql", "eql"])
def test_converted_pack_matches_golden(target: str, update_golden: bool, tmp_path: Path) -> None:
    out = tmp_path / f"{target}.txt"
    result = runner.invoke(app, ["convert", "--to", target, "-o", str(out)])
    assert result.exit_code == 0, result.output
    text = out.read_text()
    golden = GOLDEN / f"rules.{target}.txt"
    if update_golden:
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(text)
    assert golden.is_file(), f"{golden} missing: run with ICSMON_UPDATE_GOLDEN=1"
    assert text == golden.read_text(), f"converted {target} pack differs from {golden}"
    assert len(text.splitlines()) >= 30
    assert "255.255.255.255" in text  # unset placeholders: every host is outside the list


def test_icsmon_convert_agrees_with_sigma_cli() -> None:
    """Same pipeline file, same queries: sigma-cli on the single-event alerting rules."""
    files = sorted(
        str(p)
        for p in RULES.rglob("*.yml")
        if "correlation" not in p.parts and "level: informational" not in p.read_text()
    )
    for target in ("lucene", "esql"):
        res = subprocess.run(
            [sigma_cli(), "convert", "-t", target, "-p", str(PIPELINE), *files],
            capture_output=True,
            text=True,
            check=True,
        )
        theirs = sorted(line for line in res.stdout.splitlines() if line.strip())
        ours = runner.invoke(app, ["convert", "--to", target, "--format", "json"])
        mine = sorted(
            json.loads(line)["query"]
            for line in ours.output.splitlines()
            if line.startswith("{") and "/correlation/" not in json.loads(line)["path"]
        )
        assert theirs == mine


def test_convert_with_site_config(tmp_path: Path) -> None:
    site = tmp_path / "site.yml"
    site.write_text("placeholders:\n  modbus_masters: [10.10.20.5, 10.10.21.0/24]\n")
    result = runner.invoke(app, ["convert", "--to", "lucene", "--site-config", str(site)])
    assert result.exit_code == 0
    assert "source.ip:(10.10.20.5 OR 10.10.21.0\\/24)" in result.output
    bad = tmp_path / "bad.yml"
    bad.write_text("placeholders: [\n")
    result = runner.invoke(app, ["convert", "--to", "lucene", "--site-config", str(bad)])
    assert result.exit_code == 2 and "bad.yml" in result.output


@pytest.mark.parametrize("target", ["lucene", "esql", "eql"])
def test_convert_targets_the_deployments_events_alias(
    target: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every query names where it runs: the events alias of the pipeline config (its
    index_prefix), or --index; ES|QL in its ``from``, all targets in the JSON request."""
    monkeypatch.delenv("ICSMON_CONFIG", raising=False)
    monkeypatch.delenv("ICSMON_ES_INDEX_PREFIX", raising=False)
    config = tmp_path / "pipeline.toml"
    config.write_text('[elasticsearch]\nindex_prefix = "prov-sd"\n')
    for args, index in (
        ([], "icsmon-events"),
        (["--config", str(config)], "prov-sd-events"),
        (["--config", str(config), "--index", "plant-7-*"], "plant-7-*"),
    ):
        result = runner.invoke(app, ["convert", "--to", target, "--format", "json", *args])
        assert result.exit_code == 0, result.output
        docs = [json.loads(x) for x in result.stdout.splitlines() if x.startswith("{")]
        assert len(docs) >= 30
        for doc in docs:
            assert doc["index"] == index
            request = doc["request"]
            if target == "esql":
                assert request["path"] == "/_query"
                assert doc["query"].startswith(f"from {index} ")
                assert "logs-" not in doc["query"]
            else:
                assert request["path"].startswith(f"/{index}/")
    monkeypatch.setenv("ICSMON_ES_INDEX_PREFIX", "envprefix")
    result = runner.invoke(app, ["convert", "--to", target, "--format", "json"])
    assert json.loads(result.stdout.splitlines()[0])["index"] == "envprefix-events"
    result = runner.invoke(app, ["convert", "--to", target, "--index", "two words"])
    assert result.exit_code == 2 and "error: --index" in result.output
    bad = tmp_path / "bad.toml"
    bad.write_text("[elasticsearch\n")
    result = runner.invoke(app, ["convert", "--to", target, "--config", str(bad)])
    assert result.exit_code == 2 and "bad.toml" in result.output
