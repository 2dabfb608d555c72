"""The shipped rule pack: every rule has test cases, and they hold (tests/rule_cases/*.yml).

A case file is named after its rule file and holds either

- ``match`` / ``no_match``: events (fields on top of a default event of the rule's protocol)
  the rule must fire on / stay silent on; checked on the compiled rule and, for alerting
  rules, end to end through :class:`SigmaEngine` (dispatch, anchors, alert); or
- ``sequences`` (correlations): event series with the number of alerts the rule must give.
  Items are events (1 s apart) or ``{event, repeat, every, vary}`` (``vary`` cycles values).

``placeholders`` gives the site's host lists for the case.
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from detectors.attack_ics import TECHNIQUES
from detectors.sigma import SigmaEngine
from detectors.sigma.fields import SERVICES, known_fields
from detectors.sigma.loader import (
    SHIPPED_RULES,
    LoadedCorrelation,
    LoadedRule,
    Pack,
    check_known,
    load_pack,
    resolve_placeholders,
)
from tests.support import REPO

CASES = REPO / "tests" / "rule_cases"
RULE_FILES = sorted(SHIPPED_RULES.rglob("*.yml"))
START = datetime(2026, 11, 26, 10, 0, 0, tzinfo=UTC)

DEFAULTS: dict[str | None, dict[str, Any]] = {
    "modbus": {"destination.port": 502, "modbus.unit_id": 1, "modbus.transaction_id": 1},
    "s7comm": {"destination.port": 102},
    "s7comm-plus": {"destination.port": 102},
    "opcua": {"destination.port": 4840},
    "enip": {"destination.port": 44818},
    "dnp3": {"destination.port": 20000, "dnp3.master": 3, "dnp3.outstation": 4},
    "iec104": {"destination.port": 2404, "iec104.common_address": 1},
    None: {"destination.port": 502},
}


def base_event(service: str | None) -> dict[str, Any]:
    proto = service or "modbus"
    event = {
        "event.kind": "event",
        "event.category": ["network"],
        "event.type": ["protocol", "info"],
        "event.action": "request",
        "event.outcome": "success",
        "event.dataset": "ics." + proto.replace("-", "_"),
        "network.transport": "tcp",
        "network.protocol": proto,
        "network.community_id": "1:test-flow",
        "source.ip": "10.0.0.66",
        "source.port": 50123,
        "destination.ip": "10.0.0.10",
        "ics.operation": "other",
        "observer.name": "sensor-test",
        "labels.site": "site-test",
    }
    event.update(DEFAULTS[service])
    return event


_packs: dict[str, Pack] = {}


def pack_for(placeholders: dict[str, list[str]] | None) -> Pack:
    key = repr(sorted((placeholders or {}).items()))
    if key not in _packs:
        _packs[key] = load_pack(None, resolve_placeholders(None, placeholders))
        assert not _packs[key].problems, [str(p) for p in _packs[key].problems]
    return _packs[key]


def find_rule(pack: Pack, path: Path) -> LoadedRule | LoadedCorrelation:
    for item in [*pack.rules, *pack.correlations]:
        if Path(item.meta.path).resolve() == path.resolve():
            return item
    raise AssertionError(f"{path} not loaded")


def case_file(rule_path: Path) -> Path:
    return CASES / f"{rule_path.stem}.yml"


def service_of(pack: Pack, item: LoadedRule | LoadedCorrelation) -> str | None:
    if isinstance(item, LoadedRule):
        return item.service
    services = {r.service for r in pack.rules if r.meta.id in item.rules}
    return services.pop() if len(services) == 1 else None


def expand(items: list[dict[str, Any]], service: str | None) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    t = START
    n = 0
    for item in items:
        spec = item if "event" in item else {"event": item}
        every = timedelta(seconds=float(spec.get("every", 1)))
        vary = spec.get("vary", {})
        cycles = {k: itertools.cycle(v) for k, v in vary.items()}
        for _ in range(int(spec.get("repeat", 1))):
            t += every
            n += 1
            ev = base_event(service)
            ev.update(spec["event"])
            for k, values in cycles.items():
                ev[k] = next(values)
            ev["@timestamp"] = t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            ev["event.id"] = f"ev{n}"
            events.append(ev)
    return events


def test_pack_size_and_layout() -> None:
    pack = pack_for(None)
    alerting = [r for r in pack.rules if r.output] + pack.correlations
    assert len(alerting) >= 30
    for path in RULE_FILES:
        text = path.read_text()
        assert len(yaml.safe_load_all(text).__iter__().__next__()) > 0
        assert text.count("\ntitle:") + text.startswith("title:") == 1, f"{path}: one rule per file"
    services = {r.service for r in pack.rules}
    assert set(SERVICES) <= services


def test_every_rule_has_a_case_file() -> None:
    missing = [str(p.relative_to(REPO)) for p in RULE_FILES if not case_file(p).is_file()]
    assert not missing, f"rules without tests/rule_cases/<stem>.yml: {missing}"
    stems = {p.stem for p in RULE_FILES}
    orphans = [p.name for p in CASES.glob("*.yml") if p.stem not in stems]
    assert not orphans, f"case files without a rule: {orphans}"


def test_pack_passes_icsmon_checks() -> None:
    pack = pack_for(None)
    assert [str(p) for p in check_known(pack)] == []


def test_every_alerting_rule_has_ics_techniques() -> None:
    pack = pack_for(None)
    for item in [*(r for r in pack.rules if r.output), *pack.correlations]:
        assert item.meta.techniques, item.meta.path
        assert all(t in TECHNIQUES for t in item.meta.techniques), item.meta.path
        assert "T0875" not in item.meta.techniques


def test_rule_fields_are_declared_by_the_dissectors() -> None:
    """Each field a shipped rule or correlation reads is declared for its service (the
    event schema, sensor/protocols/<name>/fields.py): a rule on an undeclared field could
    never fire."""
    pack = pack_for(None)
    for r in pack.rules:
        assert r.fields <= known_fields(r.service), (
            r.meta.path,
            r.fields - known_fields(r.service),
        )
    for c in pack.correlations:
        used = {*c.group_by, c.value_field} - {None}
        assert used <= known_fields(None), (c.meta.path, used - known_fields(None))


@pytest.mark.parametrize("rule_path", RULE_FILES, ids=lambda p: p.stem)
def test_rule_cases(rule_path: Path) -> None:
    spec = yaml.safe_load(case_file(rule_path).read_text()) or {}
    placeholders = spec.get("placeholders")
    pack = pack_for(placeholders)
    item = find_rule(pack, rule_path)
    service = service_of(pack, item)
    if isinstance(item, LoadedCorrelation):
        assert spec.get("sequences"), f"{rule_path.name}: correlation cases need sequences"
        for seq in spec["sequences"]:
            engine = SigmaEngine(pack, dedup_window=0)
            alerts = []
            for ev in expand(seq["events"], service):
                alerts.extend(engine.process(ev))
            alerts.extend(engine.flush())
            mine = [a for a in alerts if a["rule.id"] == item.meta.id]
            assert len(mine) == seq["alerts"], f"{rule_path.name}: {seq['name']}"
            for a in mine:
                assert a["icsmon.correlation.type"] == item.kind
                assert a["threat.technique.id"] == list(item.meta.techniques)
        return
    assert spec.get("match") and spec.get("no_match"), f"{rule_path.name}: need match and no_match"
    for expected, key in ((True, "match"), (False, "no_match")):
        for i, fields in enumerate(spec[key]):
            ev = expand([fields], service)[0]
            got = item.compiled.predicate(ev)
            assert got is expected, f"{rule_path.name} {key}[{i}]: {fields}"
            if item.output:
                engine = SigmaEngine(pack, dedup_window=0)
                alerts = engine.process(ev) + engine.flush()
                fired = [a for a in alerts if a["rule.id"] == item.meta.id]
                assert bool(fired) is expected, f"{rule_path.name} {key}[{i}] through the engine"
                if fired:
                    a = fired[0]
                    assert a["event.kind"] == "alert"
                    assert a["source.ip"] == ev["source.ip"]
                    assert a["threat.technique.id"] == list(item.meta.techniques)


def test_transaction_rules_ignore_anomaly_records() -> None:
    """An anomaly record that carries a PDU's fields (e.g. its function code) fires only the
    malformed-traffic rules, never a rule about the transaction itself."""
    checked = 0
    for rule_path in RULE_FILES:
        spec = yaml.safe_load(case_file(rule_path).read_text()) or {}
        pack = pack_for(spec.get("placeholders"))
        item = find_rule(pack, rule_path)
        if (
            isinstance(item, LoadedCorrelation)
            or "anomaly" in rule_path.stem
            or "malformed" in rule_path.stem
        ):
            continue
        for fields in spec["match"]:
            ev = expand([fields], item.service)[0]
            ev["event.action"] = "anomaly"
            assert not item.compiled.predicate(ev), f"{rule_path.name}: {fields}"
            checked += 1
    assert checked > 40
