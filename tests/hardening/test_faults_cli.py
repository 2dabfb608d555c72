"""Bad input files through the real command line: a corrupt embedded store, a corrupt
baseline, an invalid rule, an invalid site configuration, an invalid pipeline configuration.

Each must give exactly one error line naming the file, a non-zero exit and no traceback, and
lose nothing else: the bad file is left as it was, and a good store given alongside keeps
every document it had. Disk full is in tests/pipeline/test_diskfull.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support import REPO

PCAP = REPO / "pcaps" / "modbus" / "modbus_attack.pcap"


def icsmon(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ICSMON_")}
    env["PYTHONPATH"] = str(REPO)
    return subprocess.run(
        [sys.executable, "-m", "icsmon.cli", *map(str, args)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def good_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("good")
    proc = icsmon("replay", PCAP, "--store", folder / "good.db", "--format", "jsonl", cwd=folder)
    assert proc.returncode == 0, proc.stderr
    return folder / "good.db"


def store_alerts(store: Path) -> list[str]:
    proc = icsmon(
        "alerts", "--store", store, "--format", "jsonl", "--since", "100000d", cwd=store.parent
    )
    assert proc.returncode == 0, proc.stderr
    return sorted(
        json.loads(line)["event"]["id"] for line in proc.stdout.splitlines() if line.strip()
    )


def corrupt_store(folder: Path, good: Path) -> Path:
    bad = folder / "damaged.db"
    shutil.copy(good, bad)
    with open(bad, "r+b") as fh:  # garble pages 3-4: the header still says SQLite
        fh.seek(4096 * 2)
        fh.write(b"\xff" * 8192)
    return bad


def not_a_store(folder: Path, _good: Path) -> Path:
    bad = folder / "random.db"
    bad.write_bytes(os.urandom(8192))
    return bad


def bad_baseline(folder: Path, _good: Path) -> Path:
    bad = folder / "baseline.json"
    bad.write_text('{"version": 1, "hosts": [', encoding="utf-8")
    return bad


def wrong_baseline(folder: Path, _good: Path) -> Path:
    bad = folder / "baseline.json"
    bad.write_text('["not", "a", "baseline"]', encoding="utf-8")
    return bad


def rule_dir(folder: Path, text: str) -> Path:
    rules = folder / "rules"
    shutil.copytree(REPO / "rules" / "ics", rules)
    (rules / "zz_broken.yml").write_text(text, encoding="utf-8")
    return rules / "zz_broken.yml"


def rule_bad_yaml(folder: Path, _good: Path) -> Path:
    return rule_dir(folder, "title: broken\ndetection: [\n")


def rule_not_mapping(folder: Path, _good: Path) -> Path:
    return rule_dir(folder, "just a string\n")


def rule_no_detection(folder: Path, _good: Path) -> Path:
    return rule_dir(folder, "title: incomplete\nlogsource: {product: ics, service: modbus}\n")


def bad_site(folder: Path, _good: Path) -> Path:
    bad = folder / "site.yaml"
    bad.write_text("plc_hosts: [10.0.0.1\n", encoding="utf-8")
    return bad


def bad_toml(folder: Path, _good: Path) -> Path:
    bad = folder / "pipeline.toml"
    bad.write_text("[kafka\nbrokers = 1\n", encoding="utf-8")
    return bad


def unknown_key(folder: Path, _good: Path) -> Path:
    bad = folder / "pipeline.toml"
    bad.write_text('[kafka]\nbrokerz = "127.0.0.1:9092"\n', encoding="utf-8")
    return bad


def bad_value(folder: Path, _good: Path) -> Path:
    bad = folder / "pipeline.yaml"
    bad.write_text(
        "kafka:\n  security_protocol: SASL_SSL\n  sasl_mechanism: SCRAM-SHA-512\n", encoding="utf-8"
    )
    return bad


def replay_with(option: str) -> Callable[[Path, Path], list[str | Path]]:
    def args(bad: Path, good: Path) -> list[str | Path]:
        return [
            "replay",
            PCAP,
            option,
            bad if option != "--rules" else bad.parent,
            "--store",
            good,
            "--format",
            "jsonl",
        ]

    return args


def store_itself(bad: Path, _good: Path) -> list[str | Path]:
    return ["replay", PCAP, "--store", bad, "--format", "jsonl"]


def kafka_replay(bad: Path, _good: Path) -> list[str | Path]:
    return ["replay", PCAP, "--sink", "kafka", "--config", bad]


def index_cmd(bad: Path, _good: Path) -> list[str | Path]:
    return ["index", "--once", "--config", bad]


CASES = {
    "store-corrupt-page": (corrupt_store, store_itself, "corrupt"),
    "store-not-sqlite": (not_a_store, store_itself, "not an icsmon store"),
    "baseline-bad-json": (bad_baseline, replay_with("--baseline"), "not valid JSON"),
    "baseline-not-a-baseline": (wrong_baseline, replay_with("--baseline"), ""),
    "rule-bad-yaml": (rule_bad_yaml, replay_with("--rules"), "not valid YAML"),
    "rule-not-a-mapping": (rule_not_mapping, replay_with("--rules"), "mapping"),
    "rule-incomplete": (rule_no_detection, replay_with("--rules"), "detection"),
    "site-config-bad-yaml": (bad_site, replay_with("--site-config"), "not valid YAML"),
    "pipeline-bad-toml": (bad_toml, kafka_replay, "not valid TOML"),
    "pipeline-unknown-key": (unknown_key, index_cmd, "kafka.brokerz"),
    "pipeline-missing-sasl-user": (bad_value, kafka_replay, "sasl_username"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_file_is_one_clear_line_and_nothing_else_is_lost(
    case: str, tmp_path: Path, good_store: Path
) -> None:
    make, command, words = CASES[case]
    good = tmp_path / "store.db"
    shutil.copy(good_store, good)
    before_alerts = store_alerts(good)
    assert before_alerts
    bad = make(tmp_path, good_store)
    bad_before = digest(bad)
    proc = icsmon(*command(bad, good), cwd=tmp_path)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode != 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ") and bad.name in lines[0], lines[0]
    assert words.lower() in lines[0].lower(), lines[0]
    assert proc.stdout == ""  # refused before any work: nothing half done
    assert digest(bad) == bad_before  # the bad file is left for the user to inspect
    assert store_alerts(good) == before_alerts
