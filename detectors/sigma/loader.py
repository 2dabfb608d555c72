"""Loading a rule pack: pySigma parses, the ICS pipeline maps fields and fills placeholders,
then each rule is compiled once (``compiler``) or refused with file, line, rule id and reason.

The pipeline (``detectors/pipelines/ics_ecs.yml``) is the one ``icsmon rules convert`` gives
the Elasticsearch backend, so a rule means the same thing in the stream and in a hunt.

Placeholders (``%engineering_stations%`` ...) are host lists (IP addresses or CIDR ranges).
Their values come from, in increasing priority: the pipeline's defaults, the ``placeholders``
argument (e.g. a learned baseline), the site configuration file. A placeholder with no value
is filled with ``255.255.255.255``, an address no TCP client has: every host is outside an
unset list, so allow-list rules fail open towards alerting, never towards silence.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml
from sigma.collection import SigmaCollection
from sigma.conditions import ConditionFieldEqualsValueExpression, ConditionItem
from sigma.correlations import SigmaCorrelationRule
from sigma.exceptions import SigmaError
from sigma.processing.pipeline import ProcessingPipeline
from sigma.rule import SigmaRule
from sigma.types import SigmaFieldReference

from detectors.alerts import RuleMeta
from detectors.attack_ics import tactic_from_tag, technique_from_tag
from detectors.sigma.compiler import Unsupported, to_node
from detectors.sigma.correlation import SUPPORTED_OPS, SUPPORTED_TYPES
from detectors.sigma.pack import (  # noqa: F401 - where they were imported from before
    PACKAGE,
    PIPELINE_PATH,
    SHIPPED_RULES,
    UNSET,
    LoadedCorrelation,
    LoadedRule,
    Pack,
    Problem,
    RuleLoadError,
    SiteConfigError,
    _normalise_placeholders,
    _shown,
    pipeline_defaults,
    read_site_config,
    resolve_placeholders,
    rule_files,
    shipped_rules,
)
from detectors.sigma.validators import logsource_problem

log = logging.getLogger(__name__)


def _key_lines(path: Path) -> list[tuple[str, int]]:
    """(mapping key text, 1-based line) for every key in the file, in order."""
    try:
        text = path.read_text(encoding="utf-8")
        out: list[tuple[str, int]] = []
        for doc in yaml.compose_all(text):
            stack = [doc]
            while stack:
                node = stack.pop()
                if isinstance(node, yaml.MappingNode):
                    for k, v in node.value:
                        if isinstance(k, yaml.ScalarNode):
                            out.append((str(k.value), k.start_mark.line + 1))
                        stack.append(v)
                elif isinstance(node, yaml.SequenceNode):
                    stack.extend(node.value)
        return sorted(out, key=lambda kv: kv[1])
    except (OSError, yaml.YAMLError):
        return []


def locate(path: Path | str | None, *hints: str) -> int:
    """Line of the first key matching a hint (``field`` also matches ``field|mod``), else 1."""
    if not path:
        return 1
    keys = _key_lines(Path(path))
    for hint in hints:
        if not hint:
            continue
        for key, line in keys:
            if key == hint or key.split("|", 1)[0] == hint:
                return line
            if hint.startswith("|") and hint + "|" in key + "|":  # a modifier: "|in"
                return line
    return 1


def _problem(
    path: Any, rule_id: Any, message: str, *hints: str, severity: str = "error"
) -> Problem:
    return Problem(str(path or "?"), locate(path, *hints), str(rule_id or ""), message, severity)


# --- placeholders and pipeline ----------------------------------------------------------


def make_pipeline(values: Mapping[str, list[str]]) -> ProcessingPipeline:
    pipeline = ProcessingPipeline.from_yaml(PIPELINE_PATH.read_text(encoding="utf-8"))
    pipeline.vars = dict(values)
    return pipeline


# --- metadata ---------------------------------------------------------------------------


def rule_meta(rule: SigmaRule | SigmaCorrelationRule, correlation: str | None = None) -> RuleMeta:
    techniques: list[str] = []
    tactics: list[str] = []
    for tag in rule.tags:
        t = technique_from_tag(tag.namespace, tag.name)
        if t and t not in techniques:
            techniques.append(t)
        tac = tactic_from_tag(tag.namespace, tag.name)
        if tac and tac not in tactics:
            tactics.append(tac)
    level = rule.level.name.lower() if rule.level else "medium"
    return RuleMeta(
        id=str(rule.id) if rule.id else str(rule.name or rule.title),
        name=rule.title,
        level=level,
        description=(rule.description or "").strip(),
        author=rule.author or "",
        references=tuple(rule.references or ()),
        techniques=tuple(techniques),
        tactics=tuple(tactics),
        tags=tuple(f"{t.namespace}.{t.name}" for t in rule.tags),
        path=str(rule.source.path) if rule.source and rule.source.path else "",
        correlation=correlation,
    )


def _condition_fields(cond: Any) -> set[str]:
    out: set[str] = set()
    stack = [cond]
    while stack:
        node = stack.pop()
        if isinstance(node, ConditionFieldEqualsValueExpression):
            out.add(node.field)
            if isinstance(node.value, SigmaFieldReference):
                out.add(node.value.field)
        elif isinstance(node, ConditionItem):
            stack.extend(a for a in node.args if a is not None)
    return out


# --- loading ----------------------------------------------------------------------------


def load_ruleset(files: list[Path]) -> SigmaCollection:
    """``SigmaCollection.load_ruleset(files, collect_errors=True)``, the YAML parsed by
    libyaml when PyYAML has it (pySigma's pure-Python parse was most of a replay's start-up
    with the rule pack); the same documents, the same collection."""
    from sigma.exceptions import SigmaRuleLocation

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    collections = []
    for path in files:
        with path.open(encoding="utf-8") as fd:
            docs = list(yaml.load_all(fd, Loader=loader))  # noqa: S506 - a safe loader
        collections.append(
            SigmaCollection.from_dicts(
                docs,
                True,
                SigmaRuleLocation(path),
                collect_filters=True,
                resolve_references=False,
            )
        )
    merged = SigmaCollection.merge(collections, resolve_references=False)
    merged.resolve_rule_references()
    return merged


def load_pack(
    paths: Iterable[Path] | None = None,
    values: Mapping[str, list[str]] | None = None,
) -> Pack:
    """Parse, apply the pipeline and compile; every refusal is a Problem (nothing raises)."""
    paths = list(paths) if paths is not None else [SHIPPED_RULES]
    pack = Pack(placeholders=dict(values) if values is not None else resolve_placeholders())
    missing = [p for p in paths if not p.exists()]
    for p in missing:
        pack.problems.append(Problem(str(p), 1, "", "no such file or directory"))
    files = rule_files(p for p in paths if p.exists())
    if not files:
        if not missing:
            pack.problems.append(
                Problem(", ".join(map(str, paths)), 1, "", "no rule files (*.yml)")
            )
        return pack
    collection = load_ruleset(files)
    in_rules = {id(e) for r in collection.rules for e in r.errors}  # reported per rule below
    for err in collection.errors:
        if id(err) in in_rules:
            continue
        src = getattr(err, "source", None)
        path = src.path if src is not None and src.path else "?"
        line = src.line if src is not None and src.line else locate(path, "detection")
        pack.problems.append(Problem(str(path), line, "", str(err).split(" in ")[0].strip()))
    pipeline = make_pipeline(pack.placeholders)
    refused: set[int] = set()
    by_ref: dict[str, LoadedRule] = {}
    for item in collection.rules:
        if isinstance(item, SigmaRule):
            loaded = _load_rule(item, pipeline, pack)
            if loaded is None:
                refused.add(id(item))
                continue
            pack.rules.append(loaded)
            by_ref[loaded.meta.id] = loaded
            if loaded.name:
                by_ref[loaded.name] = loaded
    for item in collection.rules:
        if isinstance(item, SigmaCorrelationRule):
            corr = _load_correlation(item, pipeline, pack, refused)
            if corr is not None:
                pack.correlations.append(corr)
                for rid in corr.rules:
                    if rid in by_ref:
                        by_ref[rid].output = by_ref[rid].output and bool(item.generate)
    return pack


def _load_rule(rule: SigmaRule, pipeline: ProcessingPipeline, pack: Pack) -> LoadedRule | None:
    path = rule.source.path if rule.source else None
    rid = rule.id or rule.name or rule.title
    if rule.errors:  # parsed with collect_errors: the rule is unusable, say why
        for e in rule.errors:
            msg = str(e).split(" in ")[0].strip()
            pack.problems.append(_problem(path, rid, msg, *_hints(msg), "detection"))
        return None
    ls = rule.logsource
    refused = logsource_problem(ls)
    if refused is not None:
        pack.problems.append(_problem(path, rid, *refused))
        return None
    try:
        pipeline.apply(rule)
        conditions = [c.parsed for c in rule.detection.parsed_condition]
    except SigmaError as exc:
        hint = exc.args[0] if exc.args else ""
        pack.problems.append(
            _problem(path, rid, f"pipeline: {exc}".split(" in ")[0], "detection", str(hint))
        )
        return None
    fields: set[str] = set()
    nodes = []
    try:
        for cond in conditions:
            fields |= _condition_fields(cond)
            nodes.append(to_node(cond))
    except Unsupported as exc:
        pack.problems.append(
            _problem(path, rid, str(exc), exc.field or "", *_hints(str(exc)), "detection")
        )
        return None
    except SigmaError as exc:
        pack.problems.append(_problem(path, rid, str(exc), "detection"))
        return None
    from detectors.sigma.nodes import Or, _simplify, plan

    node = nodes[0] if len(nodes) == 1 else _simplify(Or(nodes))
    compiled = plan(node, ls.service, frozenset(fields))
    return LoadedRule(
        meta=rule_meta(rule),
        name=rule.name,
        service=ls.service,
        compiled=compiled,
        output=True,
        fields=frozenset(fields),
        sigma=rule,
    )


def _hints(message: str) -> list[str]:
    # Messages quote what they concern ("... on field 'x'", "Unknown modifier 'in'").
    import re

    quoted = re.findall(r"'([^']+)'", message)
    if "modifier" in message.lower():
        return ["|" + q for q in quoted] + quoted
    return quoted


def _load_correlation(
    rule: SigmaCorrelationRule, pipeline: ProcessingPipeline, pack: Pack, refused: set[int]
) -> LoadedCorrelation | None:
    path = rule.source.path if rule.source else None
    rid = rule.id or rule.name or rule.title
    kind = str(rule.type.name).lower()
    if kind not in SUPPORTED_TYPES:
        pack.problems.append(
            _problem(
                path,
                rid,
                f"correlation type {kind} is not supported "
                f"(supported: {', '.join(SUPPORTED_TYPES)})",
                "type",
            )
        )
        return None
    cond = rule.condition
    op = getattr(getattr(cond, "op", None), "name", "").lower()
    if op not in SUPPORTED_OPS:
        pack.problems.append(
            _problem(
                path,
                rid,
                f"correlation condition {op or cond!r} is not "
                "supported in a stream (use gte or gt)",
                "condition",
            )
        )
        return None
    try:
        pipeline.apply(rule)
    except SigmaError as exc:
        pack.problems.append(_problem(path, rid, f"pipeline: {exc}", "correlation"))
        return None
    ids: list[str] = []
    names: list[str] = []
    for ref in rule.rules or []:
        target = getattr(ref, "rule", None)
        if not isinstance(target, SigmaRule):
            pack.problems.append(
                _problem(
                    path,
                    rid,
                    f"rule {ref.reference!r} is a correlation or "
                    "unresolved (correlations of correlations are not "
                    "supported)",
                    "rules",
                )
            )
            return None
        if id(target) in refused:
            pack.problems.append(
                _problem(path, rid, f"referenced rule {ref.reference!r} was refused", "rules")
            )
            return None
        ids.append(str(target.id) if target.id else str(target.name or target.title))
        names.append(str(ref.reference))
    value_field = None
    if kind == "value_count":
        fr = cond.fieldref
        value_field = fr[0] if isinstance(fr, list) else fr
        if not value_field:
            pack.problems.append(
                _problem(path, rid, "value_count needs condition.field", "condition")
            )
            return None
    aliases: dict[str, dict[str, str]] = {}
    for alias in rule.aliases:
        aliases[alias.alias] = {ref.reference: f for ref, f in alias.mapping.items()}
    if rule.timespan is None or not rule.timespan.seconds:
        pack.problems.append(_problem(path, rid, "correlation needs a timespan", "timespan"))
        return None
    return LoadedCorrelation(
        meta=rule_meta(rule, correlation=kind),
        kind=kind,
        rules=ids,
        rule_names=names,
        group_by=list(rule.group_by or []),
        timespan=float(rule.timespan.seconds),
        threshold=int(cond.count),
        op=op,
        value_field=value_field,
        aliases=aliases,
        sigma=rule,
    )


def check_known(pack: Pack) -> list[Problem]:
    """icsmon's own checks over a loaded pack (known fields, ATT&CK for ICS tags): its
    pySigma validators (``detectors.sigma.validators``), as the validation configuration
    sets them up."""
    from detectors.sigma.validators import check

    rules = [*(r.sigma for r in pack.rules), *(c.sigma for c in pack.correlations)]
    return check(rules, icsmon_only=True)
