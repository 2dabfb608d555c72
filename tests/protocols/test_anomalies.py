"""Anomaly codes are a closed set per protocol: every ``error.type`` a dissector writes in the
golden outputs is a member of its ``Anomaly`` enum, written as plain text. (The fuzz targets
and the hostile-input property tests check the same on random input: fuzz/common.py.)"""

from __future__ import annotations

import json

import pytest

from sensor.protocols import BY_NAME, DISSECTORS
from tests.support import PCAPS

# network.protocol -> the dissector that writes it
OWNER = {"s7comm-plus": "s7comm", **{m.NAME: m.NAME for m in DISSECTORS}}


def test_codes_are_kebab_case_and_described() -> None:
    for module in DISSECTORS:
        for code in module.Anomaly:
            assert code.value == code.value.lower() and " " not in code.value, code
            assert code.description, code


@pytest.mark.parametrize("path", sorted(PCAPS.rglob("*.events.jsonl")), ids=lambda p: p.name)
def test_golden_anomalies_are_members(path) -> None:
    for line in path.read_text().splitlines():
        doc = json.loads(line)
        if doc.get("event", {}).get("action") != "anomaly":
            continue
        owner = OWNER.get(doc["network"]["protocol"])
        if owner is None:  # the packet layer's own codes (unsupported link type, ...)
            continue
        assert doc["error"]["type"] in set(BY_NAME[owner].Anomaly), (path.name, doc["error"])
