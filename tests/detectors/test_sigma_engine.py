"""The Sigma engine: value modifiers, conditions, refusals, placeholders, correlations on event
time with bounded state, alert building and de-duplication."""

from __future__ import annotations

import json
import random
import re
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from detectors.alerts import SEVERITY
from detectors.sigma import RuleLoadError, SigmaEngine, SiteConfigError
from detectors.sigma.loader import (
    PIPELINE_PATH,
    SHIPPED_RULES,
    check_known,
    load_pack,
    resolve_placeholders,
)
from detectors.sigma.naive import NaiveMatcher
from sensor.timestamps import parse_timestamp

T0 = datetime(2026, 11, 26, 10, 0, 0, tzinfo=UTC)
RULE_ID = "11111111-2222-4333-8444-555555555555"


def ts(seconds: float) -> str:
    return (T0 + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def event(**fields: Any) -> dict[str, Any]:
    ev: dict[str, Any] = {
        "@timestamp": ts(0),
        "event.kind": "event",
        "event.dataset": "ics.modbus",
        "network.protocol": "modbus",
        "network.community_id": "1:flow-a",
        "source.ip": "10.0.0.66",
        "source.port": 50000,
        "destination.ip": "10.0.0.10",
        "destination.port": 502,
        "event.id": "e1",
    }
    ev.update({k.replace("__", "."): v for k, v in fields.items()})
    return ev


def rule_text(
    detection: str, *, service: str = "modbus", rid: str = RULE_ID, extra: str = ""
) -> str:
    return (
        "title: Test rule\n"
        f"id: {rid}\n"
        "status: test\n"
        "description: test\n"
        "author: test\n"
        "date: 2026-11-26\n"
        "tags:\n  - attack.t0855\n"
        f"logsource:\n  product: ics\n  service: {service}\n"
        "detection:\n" + textwrap.indent(textwrap.dedent(detection).strip(), "  ") + "\n"
        "level: high\n" + extra
    )


def engine_for(tmp_path: Path, detection: str, **kw: Any) -> SigmaEngine:
    (tmp_path / "rule.yml").write_text(rule_text(detection))
    return SigmaEngine.load(tmp_path, dedup_window=kw.pop("dedup_window", 0), **kw)


def fires(engine: SigmaEngine, ev: dict[str, Any]) -> bool:
    return any(a["rule.id"] == RULE_ID for a in engine.process(ev) + engine.flush())


# --- value modifiers and conditions -------------------------------------------------------

MODIFIER_CASES: list[tuple[str, list[dict[str, Any]], list[dict[str, Any]]]] = [
    (  # equality is case-insensitive; numbers equal their text
        "sel:\n  modbus.function: READ_Coils\n  modbus.unit_id: '1'\ncondition: sel",
        [{"modbus.function": "read_coils", "modbus.unit_id": 1}],
        [{"modbus.function": "read_coil", "modbus.unit_id": 1}, {"modbus.function": "read_coils"}],
    ),
    (  # wildcards * and ?, escaped \* is literal
        "sel:\n  modbus.function: 'read_*_reg?sters\\*'\ncondition: sel",
        [{"modbus.function": "read_holding_registers*"}, {"modbus.function": "READ__REGISTERS*"}],
        [
            {"modbus.function": "read_holding_registers"},
            {"modbus.function": "read_holding_regXXsters*"},
        ],
    ),
    (
        "sel:\n  modbus.function|contains: hold\ncondition: sel",
        [{"modbus.function": "read_HOLDing_registers"}],
        [{"modbus.function": "read_coils"}],
    ),
    (
        "sel:\n  modbus.function|startswith: read_\n  modbus.exception|endswith: _address\ncondition: sel",
        [{"modbus.function": "read_coils", "modbus.exception": "illegal_data_address"}],
        [{"modbus.function": "write_coils", "modbus.exception": "illegal_data_address"}],
    ),
    (
        "sel:\n  modbus.function|contains|all: [write, multiple]\ncondition: sel",
        [{"modbus.function": "write_multiple_registers"}],
        [{"modbus.function": "write_single_register"}],
    ),
    (  # re is a search; |i makes it case-insensitive
        "sel:\n  modbus.function|re|i: 'WRITE_(SINGLE|MULTIPLE)'\ncondition: sel",
        [
            {"modbus.function": "write_single_coil"},
            {"modbus.function": "x_write_multiple_registers"},
        ],
        [{"modbus.function": "read_coils"}],
    ),
    (
        "sel:\n  modbus.function|re: 'WRITE'\ncondition: sel",
        [{"modbus.function": "WRITE_X"}],
        [{"modbus.function": "write_x"}],
    ),
    (  # |s: dot matches newline; |m: ^ and $ at line breaks
        "sel:\n  error.message|re|s: 'bad.length'\n  error.type|re|m: '^mbap$'\ncondition: sel",
        [{"error.message": "bad\nlength", "error.type": "x\nmbap\ny"}],
        [{"error.message": "bad\nlength", "error.type": "x mbap y"}],
    ),
    (
        "sel:\n  error.message|base64: STOP\ncondition: sel",
        [{"error.message": "U1RPUA=="}],
        [{"error.message": "STOP"}, {"error.message": "xU1RPUA=="}],
    ),
    (
        "sel:\n  source.ip|cidr: ['10.0.0.0/28', 'fd00::/8']\ncondition: sel",
        [{"source.ip": "10.0.0.15"}, {"source.ip": "fd12::1"}],
        [{"source.ip": "10.0.0.16"}, {"source.ip": "fe80::1"}, {"source.ip": "not-an-ip"}],
    ),
    (
        "sel:\n  modbus.quantity|gt: 10\n  modbus.address|lte: 5\ncondition: sel",
        [
            {"modbus.quantity": 11, "modbus.address": 5},
            {"modbus.quantity": "12", "modbus.address": 0},
        ],
        [
            {"modbus.quantity": 10, "modbus.address": 0},
            {"modbus.quantity": 11, "modbus.address": 6},
        ],
    ),
    (
        "sel:\n  modbus.quantity|gte: 10\n  modbus.address|lt: 5\ncondition: sel",
        [{"modbus.quantity": 10, "modbus.address": 4}],
        [{"modbus.quantity": 9, "modbus.address": 4}, {"modbus.quantity": 10, "modbus.address": 5}],
    ),
    (
        "sel:\n  modbus.exception_code|exists: true\n  modbus.subfunction|exists: false\ncondition: sel",
        [{"modbus.exception_code": 2}],
        [{}, {"modbus.exception_code": 2, "modbus.subfunction": 1}],
    ),
    (
        "sel:\n  modbus.exception: null\ncondition: sel",
        [{}, {"modbus.exception": None}],
        [{"modbus.exception": "illegal_function"}],
    ),
    (
        "sel:\n  modbus.read_address|fieldref: modbus.write_address\ncondition: sel",
        [{"modbus.read_address": 7, "modbus.write_address": 7}],
        [{"modbus.read_address": 7, "modbus.write_address": 8}, {"modbus.read_address": 7}],
    ),
    (  # base64offset|contains: the value at any offset of a base64 text
        "sel:\n  error.message|base64offset|contains: STOP\ncondition: sel",
        [
            {"error.message": "xU1RPUAo="},
            {"error.message": "QVNUT1A="},
            {"error.message": "QUFTVE9Q"},
        ],
        [{"error.message": "STOP"}],
    ),
    (
        "sel:\n  modbus.function|cased: Read_Coils\ncondition: sel",
        [{"modbus.function": "Read_Coils"}],
        [{"modbus.function": "read_coils"}],
    ),
    (
        "sel:\n  modbus.function_code: 6\n  modbus.unit_id|neq: 0\ncondition: sel",
        [{"modbus.function_code": 6, "modbus.unit_id": 3}, {"modbus.function_code": 6}],
        [{"modbus.function_code": 6, "modbus.unit_id": 0}],
    ),
    (  # keywords: a substring of any string value
        "keywords:\n  - 'bad length'\n  - 'overflow'\ncondition: keywords",
        [{"error.message": "MBAP BAD LENGTH 3"}, {"error.type": "buffer-overflow"}],
        [{"error.message": "fine"}],
    ),
    (  # list-valued fields: any element; value lists: any value
        "sel:\n  modbus.values: [65535, 1000]\n  event.type: change\ncondition: sel",
        [{"modbus.values": [1, 2, 1000], "event.type": ["protocol", "change"]}],
        [{"modbus.values": [1, 2, 3], "event.type": ["protocol", "change"]}],
    ),
    (  # lists of objects: <list>.<key> matches any element (as in Elasticsearch)
        "sel:\n  s7comm.items.area_name: DB\n  s7comm.items.db: 7\ncondition: sel",
        [{"s7comm.items": [{"area_name": "M"}, {"area_name": "DB", "db": 7}]}],
        [{"s7comm.items": [{"area_name": "M", "db": 7}]}, {"s7comm.items": "DB"}],
    ),
    (
        "sel:\n  '@timestamp|hour': 10\n  '@timestamp|minute': 0\ncondition: sel",
        [{}],
        [{"@timestamp": "2026-11-26T11:00:00.000000Z"}],
    ),
    (
        "sel_a:\n  modbus.function_code: 5\nsel_b:\n  modbus.function_code: 6\n"
        "filter:\n  source.ip: 10.0.0.5\ncondition: 1 of sel_* and not filter",
        [{"modbus.function_code": 5}, {"modbus.function_code": 6}],
        [{"modbus.function_code": 6, "source.ip": "10.0.0.5"}, {"modbus.function_code": 3}],
    ),
    (
        "sel_a:\n  modbus.function_code: 6\nsel_b:\n  modbus.unit_id: 0\ncondition: all of sel_*",
        [{"modbus.function_code": 6, "modbus.unit_id": 0}],
        [{"modbus.function_code": 6, "modbus.unit_id": 1}],
    ),
    (
        "a:\n  modbus.function_code: 6\nb:\n  modbus.unit_id: 0\ncondition: 1 of them",
        [{"modbus.function_code": 6}, {"modbus.unit_id": 0}],
        [{"modbus.function_code": 1, "modbus.unit_id": 1}],
    ),
    (
        "a:\n  modbus.function_code: 6\nb:\n  modbus.unit_id: 0\ncondition: all of them",
        [{"modbus.function_code": 6, "modbus.unit_id": 0}],
        [{"modbus.function_code": 6}],
    ),
    (
        "a:\n  modbus.function_code: 1\nb:\n  modbus.unit_id: 1\nc:\n  modbus.address: 1\n"
        "condition: a and (b or c) and not (b and c)",
        [
            {"modbus.function_code": 1, "modbus.unit_id": 1},
            {"modbus.function_code": 1, "modbus.address": 1},
        ],
        [
            {"modbus.function_code": 1, "modbus.unit_id": 1, "modbus.address": 1},
            {"modbus.function_code": 1},
        ],
    ),
    (  # a list of maps is an OR of ANDs
        "sel:\n  - modbus.function_code: 8\n    modbus.subfunction: 4\n"
        "  - modbus.function_code: 43\n    modbus.mei_type: 14\ncondition: sel",
        [
            {"modbus.function_code": 8, "modbus.subfunction": 4},
            {"modbus.function_code": 43, "modbus.mei_type": 14},
        ],
        [{"modbus.function_code": 8, "modbus.mei_type": 14}],
    ),
]


@pytest.mark.parametrize(
    ("detection", "hits", "misses"), MODIFIER_CASES, ids=range(len(MODIFIER_CASES))
)
def test_modifiers_and_conditions(
    tmp_path: Path, detection: str, hits: list[dict[str, Any]], misses: list[dict[str, Any]]
) -> None:
    engine = engine_for(tmp_path, detection)
    naive = NaiveMatcher([r.sigma for r in engine.rules])
    for fields in hits:
        ev = event(**{k.replace(".", "__"): v for k, v in fields.items()})
        assert fires(engine, ev), fields
        assert naive.match(ev) == [RULE_ID], fields
    for fields in misses:
        ev = event(**{k.replace(".", "__"): v for k, v in fields.items()})
        assert not fires(engine, ev), fields
        assert naive.match(ev) == [], fields


def test_other_protocols_do_not_reach_a_modbus_rule(tmp_path: Path) -> None:
    engine = engine_for(tmp_path, "sel:\n  ics.operation: write\ncondition: sel")
    assert fires(engine, event(ics__operation="write"))
    other = event(ics__operation="write")
    other.update({"network.protocol": "s7comm", "event.dataset": "ics.s7comm"})
    assert not fires(engine, other)
    assert engine.stats["evaluations"] == 1  # the s7comm event was offered to no rule
    odd = event(ics__operation="write")
    odd["event.dataset"] = ["ics.modbus"]  # odd shapes take the slow path, same answer
    assert fires(engine, odd)


# --- refusals -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "reason", "line_of"),
    [
        (
            rule_text("sel:\n  modbus.function|re: '(?<=a)b'\ncondition: sel"),
            "look-around",
            "modbus.function",
        ),
        (
            rule_text("sel:\n  modbus.function: x\ncondition: sel").replace(
                "product: ics", "product: windows"
            ),
            "logsource",
            "logsource",
        ),
        (
            rule_text("sel:\n  modbus.function: x\ncondition: sel", service="bacnet"),
            "unknown service",
            "service",
        ),
        (
            rule_text("sel:\n  source.ip|expand: '%nonexistent_list%'\ncondition: sel"),
            "nonexistent_list",
            "detection",
        ),
        (
            rule_text("sel:\n  modbus.function: x\ncondition: sel and missing"),
            "missing",
            "detection",
        ),
    ],
    ids=["re-lookaround", "logsource", "service", "placeholder", "condition"],
)
def test_unsupported_rules_are_refused_with_file_line_and_id(
    tmp_path: Path, text: str, reason: str, line_of: str
) -> None:
    path = tmp_path / "bad.yml"
    path.write_text(text)
    with pytest.raises(RuleLoadError) as info:
        SigmaEngine.load(tmp_path)
    problems = info.value.problems
    assert len(problems) == 1, [str(p) for p in problems]
    p = problems[0]
    assert Path(p.path).name == "bad.yml"
    assert reason in p.message
    expected_line = next(i for i, ln in enumerate(text.splitlines(), 1) if line_of in ln)
    if reason != "missing":  # pySigma's condition errors carry no position: line of 'detection'
        assert p.line == expected_line, str(p)
    if reason not in ("missing",):
        assert p.rule_id == RULE_ID
    assert "bad.yml" in str(info.value)


@pytest.mark.parametrize(
    ("correlation", "reason"),
    [
        (
            "  type: value_sum\n  rules: [base]\n  group-by: [source.ip]\n  timespan: 1m\n"
            "  condition:\n    gte: 10\n    field: modbus.quantity\n",
            "value_sum",
        ),
        (
            "  type: event_count\n  rules: [base]\n  group-by: [source.ip]\n  timespan: 1m\n"
            "  condition:\n    lt: 10\n",
            "gte or gt",
        ),
    ],
    ids=["value_sum", "lt"],
)
def test_unsupported_correlations_are_refused(
    tmp_path: Path, correlation: str, reason: str
) -> None:
    (tmp_path / "base.yml").write_text(
        rule_text("sel:\n  modbus.function_code: 6\ncondition: sel").replace(
            "status: test", "name: base\nstatus: test"
        )
    )
    (tmp_path / "corr.yml").write_text(
        "title: Corr\nid: 99999999-2222-4333-8444-555555555555\nstatus: test\n"
        "tags:\n  - attack.t0806\ncorrelation:\n" + correlation + "level: high\n"
    )
    with pytest.raises(RuleLoadError) as info:
        SigmaEngine.load(tmp_path)
    assert any(reason in p.message and p.path.endswith("corr.yml") for p in info.value.problems)
    lenient = SigmaEngine.load(tmp_path, strict=False)  # the rest of the pack still loads
    assert lenient.stats["rules"] == 1 and lenient.stats["refused"] == 1


def test_unknown_field_and_tag_fail_the_check_with_their_lines(tmp_path: Path) -> None:
    text = rule_text("sel:\n  modbus.fucntion_code: 6\ncondition: sel").replace(
        "attack.t0855", "attack.t0875"
    )
    (tmp_path / "typo.yml").write_text(text)
    pack = load_pack([tmp_path], resolve_placeholders())
    assert not pack.problems  # it compiles; the check is what refuses it
    problems = check_known(pack)
    lines = text.splitlines()
    field_problem = next(p for p in problems if "modbus.fucntion_code" in p.message)
    assert lines[field_problem.line - 1].strip().startswith("modbus.fucntion_code")
    tag_problem = next(p for p in problems if "t0875" in p.message)
    assert lines[tag_problem.line - 1].strip() == "tags:"
    assert len(problems) == 2, [str(p) for p in problems]


# --- placeholders -------------------------------------------------------------------------

ALLOW = "sel:\n  modbus.function_code: 6\nknown:\n  source.ip|expand: '%modbus_masters%'\ncondition: sel and not known"


def test_unset_placeholder_means_every_host_is_outside(tmp_path: Path) -> None:
    engine = engine_for(tmp_path, ALLOW)
    assert fires(engine, event(modbus__function_code=6, source__ip="10.0.0.5"))


def test_site_config_wins_over_baseline_placeholders(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    site = tmp_path / "site.yml"
    site.write_text("site: plant-1\nplaceholders:\n  modbus_masters: [10.0.0.5, 10.0.1.0/24]\n")
    engine = engine_for(
        rules, ALLOW, site_config=site, placeholders={"modbus_masters": ["10.0.0.66"]}
    )
    assert not fires(engine, event(modbus__function_code=6, source__ip="10.0.0.5"))
    assert not fires(engine, event(modbus__function_code=6, source__ip="10.0.1.77"))  # CIDR entry
    assert fires(engine, event(modbus__function_code=6, source__ip="10.0.0.66"))
    baseline_only = engine_for(rules, ALLOW, placeholders={"modbus_masters": ["10.0.0.66"]})
    assert not fires(baseline_only, event(modbus__function_code=6, source__ip="10.0.0.66"))


@pytest.mark.parametrize(
    "content",
    ["placeholders: [1, 2]\n", "placeholders:\n  modbus_masters: {a: 1}\n", "a: [\n", "- x\n"],
)
def test_bad_site_config_names_the_file(tmp_path: Path, content: str) -> None:
    site = tmp_path / "site.yml"
    site.write_text(content)
    with pytest.raises(SiteConfigError, match="site.yml"):
        SigmaEngine.load(None, site_config=site)
    with pytest.raises(SiteConfigError, match="nope.yml"):
        SigmaEngine.load(None, site_config=tmp_path / "nope.yml")


# --- correlations -------------------------------------------------------------------------


def write_correlation(
    tmp_path: Path, base_detection: str, correlation: str, bases: int = 1
) -> None:
    for i in range(bases):
        det = base_detection if bases == 1 else base_detection.format(i=i)
        (tmp_path / f"base{i}.yml").write_text(
            rule_text(det, rid=f"00000000-0000-4000-8000-00000000000{i}").replace(
                "status: test", f"name: base{i}\nstatus: test"
            )
        )
    (tmp_path / "corr.yml").write_text(
        f"title: Corr\nid: {RULE_ID}\nstatus: test\ntags:\n  - attack.t0806\n"
        "correlation:\n"
        + textwrap.indent(textwrap.dedent(correlation).strip(), "  ")
        + "\nlevel: high\n"
    )


def run(engine: SigmaEngine, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for ev in events:
        out.extend(engine.process(ev))
    return out + engine.flush()


def test_event_count_uses_event_time_not_arrival(tmp_path: Path) -> None:
    write_correlation(
        tmp_path,
        "sel:\n  modbus.function_code: 6\ncondition: sel",
        "type: event_count\nrules: [base0]\ngroup-by: [source.ip]\ntimespan: 10s\n"
        "condition:\n  gte: 3",
    )
    engine = SigmaEngine.load(tmp_path, dedup_window=0)
    # Processed back to back, but 6 s apart in capture time: never 3 within 10 s.
    spread = [event(modbus__function_code=6, **{"@timestamp": ts(6 * i)}) for i in range(5)]
    assert [a for a in run(engine, spread) if a["rule.id"] == RULE_ID] == []
    engine = SigmaEngine.load(tmp_path, dedup_window=0)
    close = [
        event(modbus__function_code=6, **{"@timestamp": ts(4 * i), "event.id": f"e{i}"})
        for i in range(3)
    ]
    alerts = [a for a in run(engine, close) if a["rule.id"] == RULE_ID]
    assert len(alerts) == 1
    a = alerts[0]
    assert a["icsmon.correlation.value"] == 3
    assert a["icsmon.alert.event_ids"] == ["e0", "e1", "e2"]
    # times are numbers inside the process (text here only because the test events say so)
    assert parse_timestamp(a["event.start"]) == parse_timestamp(ts(0))
    assert a["@timestamp"] == ts(8)
    assert a["icsmon.correlation.group_by"] == ["source.ip"]
    assert a["icsmon.correlation.key"] == "source.ip=10.0.0.66"
    assert engine.stats["alerts"] == 1


def test_temporal_ordered_and_aliases(tmp_path: Path) -> None:
    write_correlation(
        tmp_path,
        "sel:\n  modbus.function_code: {i}\ncondition: sel",
        "type: temporal_ordered\nrules: [base0, base1, base2]\ngroup-by: [host]\ntimespan: 1m\n"
        "aliases:\n  host:\n    base0: source.ip\n    base1: source.ip\n    base2: destination.ip",
        bases=3,
    )

    def seq(*steps: tuple[float, int, str, str]) -> list[dict[str, Any]]:
        return [
            event(
                modbus__function_code=fc, source__ip=s, destination__ip=d, **{"@timestamp": ts(t)}
            )
            for t, fc, s, d in steps
        ]

    def count(events: list[dict[str, Any]]) -> int:
        engine = SigmaEngine.load(tmp_path, dedup_window=0)
        return len([a for a in run(engine, events) if a["rule.id"] == RULE_ID])

    a, b = "10.0.0.66", "10.0.0.10"
    assert (
        count(seq((0, 0, a, b), (1, 1, a, b), (2, 2, "10.9.9.9", a))) == 1
    )  # alias: step 3 by destination
    assert count(seq((0, 1, a, b), (1, 0, a, b), (2, 2, b, a))) == 0  # out of order
    assert count(seq((0, 0, a, b), (30, 1, a, b), (70, 2, b, a))) == 0  # longer than 1 m
    assert (
        count(seq((0, 0, a, b), (50, 0, a, b), (60, 1, a, b), (70, 2, b, a))) == 1
    )  # restarted chain


def test_value_count_and_bounded_state(tmp_path: Path) -> None:
    write_correlation(
        tmp_path,
        "sel:\n  modbus.function_code|gte: 0\ncondition: sel",
        "type: value_count\nrules: [base0]\ngroup-by: [source.ip]\ntimespan: 1m\n"
        "condition:\n  gte: 4\n  field: modbus.unit_id",
    )
    engine = SigmaEngine.load(tmp_path, dedup_window=0, max_correlation_groups=50)
    events = [
        event(
            modbus__function_code=3,
            modbus__unit_id=u % 3,
            source__ip=f"10.1.{i // 250}.{i % 250}",
            **{"@timestamp": ts(i * 0.01)},
        )
        for i, u in enumerate(range(5000))
    ]
    assert run(engine, events) == []  # 5000 clients, each one unit id: no sweep
    stats = engine.stats
    assert stats["correlation_groups"] <= 50
    assert stats["correlation_evicted"] >= 5000 - 50
    sweep = [
        event(modbus__function_code=3, modbus__unit_id=u, **{"@timestamp": ts(100 + u)})
        for u in range(4)
    ]
    assert len(run(engine, sweep)) == 1
    # Idle groups expire with event time.
    later = [event(modbus__function_code=3, source__ip="10.2.0.1", **{"@timestamp": ts(10_000)})]
    run(engine, later)
    assert engine.stats["correlation_groups"] == 1


# --- alerts and de-duplication -------------------------------------------------------------


def test_alert_document(tmp_path: Path) -> None:
    engine = engine_for(tmp_path, "sel:\n  modbus.function_code: 6\ncondition: sel")
    ev = event(
        modbus__function_code=6, modbus__values=[1], event__duration=1000, ics__operation="write"
    )
    alerts = engine.process(ev) + engine.flush()
    assert len(alerts) == 1
    a = alerts[0]
    assert a["event.kind"] == "alert"
    assert a["event.category"] == ["network", "intrusion_detection"]
    assert a["event.severity"] == SEVERITY["high"]
    assert (
        a["rule.id"] == RULE_ID and a["rule.name"] == "Test rule" and a["rule.ruleset"] == "sigma"
    )
    assert a["threat.framework"] == "MITRE ATT&CK for ICS"
    assert a["threat.technique.id"] == ["T0855"]
    assert a["threat.technique.name"] == ["Unauthorized Command Message"]
    assert a["threat.tactic.name"] == ["Impair Process Control"]
    assert a["modbus.values"] == [1] and a["source.ip"] == "10.0.0.66"
    assert "event.duration" not in a
    assert a["event.id"] != ev["event.id"]
    assert a["icsmon.alert.event_ids"] == ["e1"]
    json.dumps(a)  # plain JSON types only
    again = engine_for(tmp_path, "sel:\n  modbus.function_code: 6\ncondition: sel")
    assert (again.process(ev) + again.flush())[0]["event.id"] == a["event.id"]  # deterministic


def test_bursts_on_one_flow_become_one_alert_with_a_count(tmp_path: Path) -> None:
    engine = engine_for(
        tmp_path, "sel:\n  modbus.function_code: 6\ncondition: sel", dedup_window=60
    )
    out: list[dict[str, Any]] = []
    for i in range(5):
        out += engine.process(
            event(modbus__function_code=6, **{"@timestamp": ts(i), "event.id": f"a{i}"})
        )
    out += engine.process(
        event(
            modbus__function_code=6,
            network__community_id="1:flow-b",
            **{"@timestamp": ts(5), "event.id": "b0"},
        )
    )
    assert out == []  # held while their windows are open
    assert engine.stats["alerts_pending"] == 2
    # A later event closes flow a's window; flow b's too (it started at 5 s).
    out += engine.process(event(modbus__function_code=3, **{"@timestamp": ts(70)}))
    assert [(a["icsmon.alert.count"], a["network.community_id"]) for a in out] == [
        (5, "1:flow-a"),
        (1, "1:flow-b"),
    ]
    assert out[0]["icsmon.alert.event_ids"] == ["a0", "a1", "a2", "a3", "a4"]
    assert out[0]["event.start"] == ts(0) and out[0]["event.end"] == ts(4)
    # The next match on flow a starts a new alert, released by tick() or flush().
    assert (
        engine.process(event(modbus__function_code=6, **{"@timestamp": ts(80), "event.id": "a9"}))
        == []
    )
    assert engine.tick((T0 + timedelta(seconds=100)).timestamp()) == []
    released = engine.tick((T0 + timedelta(seconds=141)).timestamp())
    assert [a["icsmon.alert.event_ids"] for a in released] == [["a9"]]
    assert engine.flush() == []
    assert engine.stats["alerts_merged"] == 4


def test_pending_alerts_are_bounded(tmp_path: Path) -> None:
    engine = engine_for(
        tmp_path,
        "sel:\n  modbus.function_code: 6\ncondition: sel",
        dedup_window=60,
        max_pending_alerts=10,
    )
    out: list[dict[str, Any]] = []
    for i in range(100):
        out += engine.process(
            event(modbus__function_code=6, network__community_id=f"1:f{i}", event__id=f"x{i}")
        )
    assert engine.stats["alerts_pending"] == 10
    assert len(out) == 90 and engine.stats["alerts_forced"] == 90
    assert len(engine.flush()) == 10


# --- robustness and agreement with the naive evaluator -------------------------------------

WEIRD_VALUES: list[Any] = [
    None,
    "",
    "x" * 100_000,
    0,
    -1,
    2**70,
    1.5,
    float("nan"),
    True,
    False,
    [],
    [None],
    [[1, 2], {"a": 1}],
    {"a": {"b": [1]}},
    b"\x00\xff",
    "10.0.0.300",
    "::1",
    "ÄÖÜ\u0000\udcff",
]


def test_hostile_event_values_never_raise() -> None:
    engine = SigmaEngine.load(None, dedup_window=0)
    fields = sorted(
        {f for r in engine.rules for f in r.fields} | {"@timestamp", "network.protocol"}
    )
    rng = random.Random(7)
    for i in range(3000):
        ev: dict[str, Any] = {f: rng.choice(WEIRD_VALUES) for f in rng.sample(fields, 12)}
        ev["network.protocol"] = rng.choice(
            ["modbus", "s7comm", "s7comm-plus", "opcua", None, 5, "x"]
        )
        ev["event.dataset"] = rng.choice(
            ["ics.modbus", "ics.s7comm", "ics.s7comm_plus", "ics.opcua"]
        )
        ev["@timestamp"] = rng.choice([ts(i), "garbage", None, 12.5, ts(-i)])
        engine.process(ev)
    engine.flush()
    assert engine.stats["errors"] == 0


def random_event(rng: random.Random) -> dict[str, Any]:
    proto = rng.choice(["modbus", "s7comm", "s7comm-plus", "opcua"])
    ev = event()
    ev["network.protocol"] = proto
    ev["event.dataset"] = "ics." + proto.replace("-", "_")
    ev["source.ip"] = rng.choice(["10.0.0.5", "10.0.0.66", "255.255.255.255", "fd00::1"])
    ev["ics.operation"] = rng.choice(["read", "write", "program", "control"])
    ev["event.action"] = rng.choice(["anomaly", "read-coils", "cotp-connect", "plc-stop"])
    ev["event.outcome"] = rng.choice(["success", "failure"])
    if proto == "modbus":
        ev["modbus.function_code"] = rng.choice([1, 3, 5, 6, 8, 15, 16, 17, 21, 22, 23, 43, 90, 42])
        ev["modbus.function"] = rng.choice(
            ["read_coils", "unknown_42", "user_defined_65", "unity_umas"]
        )
        ev["modbus.subfunction"] = rng.choice([0, 1, 4])
        ev["modbus.mei_type"] = rng.choice([13, 14])
        ev["modbus.unit_id"] = rng.choice([0, 1, 255])
        ev["modbus.quantity"] = rng.choice([1, 99, 100, 2000])
        if rng.random() < 0.3:
            ev["modbus.exception_code"] = rng.choice([1, 2, 4])
    elif proto == "s7comm":
        ev["s7comm.function_code"] = rng.choice([4, 5, 0x1A, 0x1D, 0x28, 0x29])
        ev["s7comm.userdata.group"] = rng.choice([1, 4, 5])
        ev["s7comm.userdata.subfunction"] = rng.choice([1, 2, 9])
        ev["s7comm.userdata.subfunction_name"] = rng.choice(["force", "read_szl", "plc_password"])
        ev["s7comm.szl.id"] = rng.choice([0x11, 0x424, 0x174])
        ev["s7comm.pi_service"] = rng.choice(["_DELE", "_INSE", "P_PROGRAM"])
        ev["s7comm.items"] = [{"area_name": rng.choice(["DB", "M", "Q"])}]
        ev["s7comm.cotp.connection_type_name"] = rng.choice(["pg", "op"])
    elif proto == "s7comm-plus":
        ev["s7comm_plus.function"] = rng.choice(
            ["set_variable", "invoke", "explore", "begin_sequence"]
        )
        ev["s7comm_plus.opcode_name"] = rng.choice(["request", "response"])
    else:
        ev["opcua.service"] = rng.choice(
            ["Write", "Call", "Read", "ActivateSession", "GetEndpoints", "Browse"]
        )
        ev["opcua.identity_token"] = rng.choice(["anonymous", "username"])
        ev["opcua.security_policy"] = rng.choice(["None", "Basic256Sha256"])
        ev["opcua.password_encrypted"] = rng.choice([True, False])
    return ev


def test_compiled_pack_agrees_with_naive_evaluator() -> None:
    pack = load_pack(None, resolve_placeholders(None, {"modbus_masters": ["10.0.0.5"]}))
    naive = NaiveMatcher([r.sigma for r in pack.rules])
    engine = SigmaEngine(pack, dedup_window=0)
    rng = random.Random(11)
    matched = 0
    for _ in range(3000):
        ev = random_event(rng)
        want = set(naive.match(ev))
        candidates, residual = engine._candidates(ev)
        got = {r.meta.id for r in candidates if (r.check if residual else r.predicate)(ev)}
        assert got == {r.meta.id for r in engine._all if r.predicate(ev)}
        assert got == want, ev
        matched += bool(want)
    assert matched > 1000  # the sample exercises the rules


def test_pipeline_defaults_cover_the_pack_placeholders() -> None:
    data = yaml.safe_load(PIPELINE_PATH.read_text())
    used = set()
    for path in SHIPPED_RULES.rglob("*.yml"):
        used |= set(re.findall(r"%([a-z_]+)%", path.read_text().split("detection:", 1)[-1]))
    assert used and used <= set(data["vars"])
    assert all(v == ["255.255.255.255"] for v in data["vars"].values())


def test_sigma_filters_apply_to_the_rules_they_name(tmp_path: Path) -> None:
    """A Sigma filter (meta-filter) file narrows the rules it names, in the stream as in ES."""
    (tmp_path / "rule.yml").write_text(rule_text("sel:\n  modbus.function_code: 6\ncondition: sel"))
    (tmp_path / "filter.yml").write_text(
        "title: Lab master\nid: 11111111-2222-4333-8444-000000000009\n"
        f"logsource:\n  product: ics\n  service: modbus\nfilter:\n  rules:\n    - {RULE_ID}\n"
        "  selection:\n    source.ip: 10.0.0.5\n  condition: not selection\n"
    )
    engine = SigmaEngine.load(tmp_path, dedup_window=0)
    assert fires(engine, event(modbus__function_code=6, source__ip="10.0.0.66"))
    assert not fires(engine, event(modbus__function_code=6, source__ip="10.0.0.5"))


# --- generated matchers and shared correlation state ----------------------------------------


def odd_shapes(rng: random.Random, ev: dict[str, Any]) -> dict[str, Any]:
    """Now and then a field of a shape the generated code hands to the general path."""
    for field in rng.sample(sorted(ev), k=2):
        if field in ("event.dataset", "event.action") or rng.random() < 0.5:
            continue
        v = ev[field]
        ev[field] = rng.choice([[v, "other"], float(v) if type(v) is int else v, True, None])
    return ev


def test_generated_matchers_agree_with_the_general_path() -> None:
    pack = load_pack(None, resolve_placeholders(None, {"modbus_masters": ["10.0.0.5"]}))
    engine = SigmaEngine(pack, dedup_window=0)
    rng = random.Random(5)
    matched = 0
    for _ in range(4000):
        ev = odd_shapes(rng, random_event(rng))
        ev["event.action"] = rng.choice(["read-coils", "cotp-connect", "plc-stop", "write"])
        fast = engine._fast[ev["event.dataset"]]
        got = fast(ev)
        assert got == engine._match_slow(ev), ev  # same rules evaluated, same matches
        matched += got > engine._low
    assert matched > 1000


@pytest.mark.parametrize(
    ("detection", "hits", "misses"), MODIFIER_CASES, ids=range(len(MODIFIER_CASES))
)
def test_modifiers_through_the_generated_matcher(
    tmp_path: Path, detection: str, hits: list[dict[str, Any]], misses: list[dict[str, Any]]
) -> None:
    engine = engine_for(tmp_path, detection)
    fast = engine._fast["ics.modbus"]
    for fields, want in [(f, True) for f in hits] + [(f, False) for f in misses]:
        ev = event(**{k.replace(".", "__"): v for k, v in fields.items()})
        ev["event.action"] = "read-coils"  # a transaction: the generated path
        assert (fast(ev) > engine._low) is want, fields
        assert fires(engine, ev) is want, fields


def test_generated_source_holds_no_rule_text(tmp_path: Path) -> None:
    """Rule values are bound names, never source: a value that is Python stays data."""
    hostile = "x') or __import__('os').system('false') or ('"
    engine = engine_for(tmp_path, f'sel:\n  modbus.function: "{hostile}"\ncondition: sel')
    source = engine._sources["ics.modbus"]  # what is compiled
    assert "def match_" in source and "__import__" not in source and "modbus.function" not in source
    shown = engine.generated_source()  # the rule's value appears in comments only
    assert hostile in shown
    assert all(
        hostile not in line for line in shown.splitlines() if not line.lstrip().startswith("#")
    )
    compile(shown, "<shown>", "exec")
    ev = event(modbus__function=hostile.upper())
    ev["event.action"] = "read-coils"
    assert fires(engine, ev)
    ev["modbus.function"] = "x"
    assert not fires(engine, ev)


def test_shared_value_count_state_is_that_of_separate_correlations() -> None:
    """Sweeps sharing a group table fire exactly as separate correlations do, through
    firings, expiry, eviction, out-of-order times and events missing a value."""
    from detectors.sigma.correlation import Correlation, SharedValueCount, group_key

    def pair() -> list[Correlation]:
        return [
            Correlation(
                "value_count",
                ["base"],
                ["source.ip", "destination.ip"],
                30,
                need,
                "gte",
                field,
                max_groups=3,
            )
            for need, field in ((4, "modbus.function_code"), (3, "modbus.unit_id"))
        ]

    alone, together = pair(), pair()
    shared = SharedValueCount(together, "base")
    sources = together[0].sources("base")
    rng = random.Random(17)
    now = 0.0
    fired = 0
    for n in range(20_000):
        now += rng.choice([0.0, 0.5, 2.0, 9.0, -3.0])  # some events out of order
        ev = {
            "source.ip": rng.choice(["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4", None]),
            "destination.ip": rng.choice(["10.0.0.10", "10.0.0.11"]),
            "modbus.function_code": rng.choice([1, 2, 3, 4, 5, 6, None]),
            "modbus.unit_id": rng.choice([1, 2, 3, [4, 5], None]),
        }
        eid = f"e{n}"
        want = [(i, c.feed("base", ev, now, eid)) for i, c in enumerate(alone)]
        got = dict(shared.feed(group_key(sources, ev), ev, now, eid) or [])
        for i, firing in want:
            other = got.get(i)
            assert (firing is None) == (other is None), n
            if firing is not None and other is not None:
                fired += 1
                assert (firing.group, firing.value, firing.event_ids, firing.start_ts) == (
                    other.group,
                    other.value,
                    other.event_ids,
                    other.start_ts,
                ), n
        for a, b in zip(alone, together, strict=True):
            assert (a.groups, a.evicted, a.fired) == (b.groups, b.evicted, b.fired), n
    assert fired > 100 and alone[0].evicted > 100  # the sample exercises firing and eviction


def test_generated_source_is_printed_for_review(capsys: pytest.CaptureFixture[str]) -> None:
    from detectors.sigma.__main__ import main

    assert main([]) == 0
    source = capsys.readouterr().out
    compile(source, "<generated>", "exec")  # what is printed is the Python that runs
    assert source.count("def match_") == 7  # one per protocol dataset with rules


# --- the verdict cache of the generated matchers ----------------------------------------------


def _rule_values(node: Any, out: dict[str, list[Any]]) -> None:
    """field -> values the rules compare it with (and next to them), to make events that
    cross each rule's edges."""
    from detectors.sigma.nodes import And, Eq, Not, Or, Test

    if isinstance(node, Eq):
        out.setdefault(node.field, []).extend(sorted(node.keys, key=repr))
    elif isinstance(node, Test):
        values = out.setdefault(node.field, [])
        if node.compare is not None and type(node.compare[1]) is int:
            values += [node.compare[1] - 1, node.compare[1], node.compare[1] + 1]
        if node.affix is not None:
            values += [node.affix[1], f"x{node.affix[1]}x"]
    elif isinstance(node, Not):
        _rule_values(node.item, out)
    elif isinstance(node, And | Or):
        for item in node.items:
            _rule_values(item, out)


def _capture_events() -> list[dict[str, Any]]:
    from sensor.engine import Engine, EngineConfig

    root = Path(__file__).resolve().parents[2] / "pcaps"
    paths = sorted(p for p in root.rglob("*") if p.suffix in (".pcap", ".pcapng"))
    return list(Engine(EngineConfig()).replay(paths))


def test_verdict_cache_keys_hold_every_field_the_rules_read() -> None:
    """A request shape is matched once per dataset, keyed by the fields its rules read: an
    event differing from a cached one in any field a rule reads (request shapes of the
    repo's captures, each field set to the values the rules compare it with, or removed)
    gets the answer of the full match, alerts and counters alike; and the events are such
    that a key without any one of its fields would answer some of them wrongly."""
    pack = load_pack(None, resolve_placeholders(None, {"modbus_masters": ["10.0.0.5"]}))
    cached = SigmaEngine(pack, dedup_window=0)
    assert {"ics.modbus", "ics.opcua", "ics.enip"} <= set(cached._verdicts)
    values: dict[str, list[Any]] = {}
    fields_of: dict[str, set[str]] = {}  # dataset -> every field its rules read
    for rule in pack.rules:
        assert rule.compiled.node is not None
        _rule_values(rule.compiled.node, values)
    for ds in cached._verdicts:
        fields_of[ds] = {
            f
            for r in cached._groups[ds].transaction.rules
            for f in pack.rules[r.index].compiled.fields
        }
    shapes: dict[tuple[Any, ...], dict[str, Any]] = {}
    rng = random.Random(18)
    made = [random_event(rng) for _ in range(400)]  # S7comm-plus has no capture in the repo
    for ev in [*_capture_events(), *made]:
        ds = ev.get("event.dataset")
        if ds in cached._verdicts and ev.get("event.action") != "anomaly":
            # as it is, and without the values no key is made of (lists: DNP3 object types)
            flat = {
                k: v
                for k, v in ev.items()
                if k not in fields_of[ds] or v is None or type(v) is str or type(v) is int
            }
            for one in (ev, flat):
                shape = (ds, *(repr(one.get(f)) for f in sorted(fields_of[ds])))
                shapes.setdefault(shape, one)

    def changed(ev: dict[str, Any], field: str, value: Any) -> dict[str, Any]:
        other = dict(ev)
        if value is None:
            other.pop(field, None)
        else:
            other[field] = value
        return other

    # Pairs of events, the first making the key, the second differing by one field: each
    # shape with each field set to each value; then walks through changes one field at a
    # time, so that fields which matter only together (an operation and its function) meet.
    stream: dict[str, list[dict[str, Any]]] = {ds: [] for ds in cached._verdicts}
    for ev in shapes.values():
        ds = ev["event.dataset"]
        for field in sorted(fields_of[ds] - {"event.dataset", "event.action"}):
            for value in [*values.get(field, []), None]:
                stream[ds] += [ev, changed(ev, field, value)]
    for ds, events in stream.items():
        bases = [ev for ev in shapes.values() if ev["event.dataset"] == ds]
        fields = sorted(fields_of[ds] - {"event.dataset", "event.action"})
        for _ in range(100):
            ev = rng.choice(bases)
            for _ in range(30):
                field = rng.choice(fields)
                other = changed(ev, field, rng.choice([*values.get(field, []), None]))
                events += [ev, other]
                ev = other
    assert all(len(events) > 100 for events in stream.values())

    full = SigmaEngine(pack, dedup_window=0)
    for events in stream.values():
        for ev in events:
            for verdicts in full._verdicts.values():
                verdicts.cache.clear()  # the full match for every event
            assert cached.process(dict(ev)) == full.process(dict(ev)), ev
            assert cached.stats == full.stats, ev

    # Any field left out of a key would have been caught above: the same events through a
    # key that does not hold it (read as a field no event has) answer differently from the
    # matcher itself at least once.
    from detectors.sigma.engine import _Verdicts

    def without(verdicts: _Verdicts, left_out: str) -> _Verdicts:
        def name(field: str) -> str:
            return "no such field" if field == left_out else field

        branches = tuple(
            (place, {k: tuple(map(name, fields)) for k, fields in table.items()})
            for place, table in verdicts.branches
        )
        return _Verdicts(tuple(map(name, verdicts.top)), branches, verdicts.matcher)

    for ds, verdicts in cached._verdicts.items():
        assert fields_of[ds] - {"event.dataset", "event.action"} >= verdicts.fields
        for left_out in sorted(verdicts.fields):
            partial = without(verdicts, left_out)
            assert any(partial.match(ev) != verdicts.matcher(ev) for ev in stream[ds]), (
                ds,
                left_out,
            )
