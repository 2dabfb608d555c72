"""Golden outputs: every capture in pcaps/ has its expected events (and alerts) as JSON lines
beside it. A change in behaviour shows up as a diff of those files in review.

Regenerate after an intended change: ``ICSMON_UPDATE_GOLDEN=1 pytest tests/cli/test_golden.py``
(or ``--update-golden``), then read the diff before committing.

A capture too busy for its events as text (pcaps/polling/: thousands of transactions, megabytes
of JSON) declares it with a ``<capture>.events.digest`` beside it instead of
``.events.jsonl``: its events are checked by count and SHA-256 of their JSON lines, and its
rollups (``<capture>.rollups.jsonl``, a few dozen lines) are the golden a reviewer reads.
"""

from __future__ import annotations

import difflib
import hashlib
from pathlib import Path

import pytest

from icsmon.output import json_line
from icsmon.run import Detectors, Run, load_detectors
from sensor.engine import Engine, EngineConfig
from sensor.rollups import Rollups
from tests.support import REPO

PCAPS = REPO / "pcaps"
CAPTURES = sorted(
    p for p in PCAPS.rglob("*") if p.is_file() and p.name.endswith((".pcap", ".pcapng", ".pcap.gz"))
)
CONFIG = {"site": "golden-site", "observer": "golden-sensor", "organization": "golden-org"}


class _Collect:
    """A sink that keeps what it is given, by kind."""

    kinds = ("alert", "asset", "event", "finding", "rollup")

    def __init__(self) -> None:
        self.docs: dict[str, list[str]] = {kind: [] for kind in self.kinds}

    def write(self, kind: str, doc: dict) -> None:
        self.docs[kind].append(json_line(doc))


def _outputs(capture: Path) -> dict[str, list[str]]:
    engine = Engine(EngineConfig(**CONFIG))
    try:
        detectors = load_detectors(None, False, None, None)
    except ImportError:  # the rule engine is optional while it is being built
        detectors = Detectors()
    sink = _Collect()
    run = Run(engine, detectors, sink, store_events=False, rollups=Rollups(engine.ctx))
    events = [json_line(doc) for doc in run.process(engine.replay([capture]), want_events=True)]
    return {
        "events": events,
        "alerts": sink.docs["alert"],
        "assets": sink.docs["asset"],
        "findings": sink.docs["finding"],
        "rollups": sink.docs["rollup"],
    }


def _digest(lines: list[str]) -> str:
    """What a ``.events.digest`` holds: the count and SHA-256 of the JSON lines."""
    sha = hashlib.sha256("".join(line + "\n" for line in lines).encode()).hexdigest()
    return f"{len(lines)} events, sha256 {sha}\n"


def _compare_digest(path: Path, lines: list[str], update: bool) -> str | None:
    text = _digest(lines)
    if update:
        path.write_text(text, encoding="utf-8")
        return None
    expected = path.read_text(encoding="utf-8")
    if expected == text:
        return None
    return f"{path}: expected {expected.strip()}, now {text.strip()} (the rollups diff shows where)"


def _compare(path: Path, lines: list[str], update: bool) -> str | None:
    text = "".join(line + "\n" for line in lines)
    if update:
        if text:
            path.write_text(text, encoding="utf-8")
        elif path.exists():
            path.unlink()
        return None
    expected = path.read_text(encoding="utf-8") if path.exists() else ""
    if expected == text:
        return None
    diff = difflib.unified_diff(
        expected.splitlines(), text.splitlines(), str(path), "now", lineterm="", n=0
    )
    return "\n".join(list(diff)[:40])


@pytest.mark.parametrize("capture", CAPTURES, ids=[str(p.relative_to(PCAPS)) for p in CAPTURES])
def test_golden(capture: Path, update_golden: bool) -> None:
    outputs = _outputs(capture)
    digest = capture.with_name(f"{capture.name}.events.digest")
    problems = []
    if digest.exists():  # events as count + hash; the rollups as text
        problems.append(_compare_digest(digest, outputs.pop("events"), update_golden))
    else:
        del outputs["rollups"]
    problems += [
        _compare(capture.with_name(f"{capture.name}.{kind}.jsonl"), lines, update_golden)
        for kind, lines in outputs.items()
    ]
    problems = [p for p in problems if p]
    assert not problems, (
        "output changed (regenerate with ICSMON_UPDATE_GOLDEN=1 if intended):\n"
        + "\n".join(problems)
    )
