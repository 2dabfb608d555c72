"""A naive Sigma evaluator: every rule on every event, pySigma's condition tree walked per
event, values interpreted on the spot. It exists as the baseline of bench/bench_sigma.py and
as an independent second opinion in the tests (same semantics, none of the compilation).
"""

from __future__ import annotations

import ipaddress
import re
from datetime import UTC, datetime
from typing import Any

from sigma.conditions import (
    ConditionAND,
    ConditionFieldEqualsValueExpression,
    ConditionNOT,
    ConditionOR,
    ConditionValueExpression,
)
from sigma.rule import SigmaRule
from sigma.types import (
    CompareOperators,
    SigmaBool,
    SigmaCasedString,
    SigmaCIDRExpression,
    SigmaCompareExpression,
    SigmaExists,
    SigmaExpansion,
    SigmaFieldReference,
    SigmaNull,
    SigmaNumber,
    SigmaRegularExpression,
    SigmaString,
    SigmaTimestampPart,
    SpecialChars,
)

from detectors.sigma.fields import is_ip_field, nested_path
from sensor.timestamps import parse_timestamp


def _get(event: dict[str, Any], field: str) -> Any:
    if field in event:
        return event[field]
    nested = nested_path(field)
    if nested is None:
        return None
    items = event.get(nested[0])
    if isinstance(items, list):
        found = [
            i.get(nested[1]) for i in items if isinstance(i, dict) and i.get(nested[1]) is not None
        ]
        return found or None
    return None


def _text(v: Any) -> str | None:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str | int | float):
        return str(v)
    return None


def _pattern(s: SigmaString, cased: bool) -> re.Pattern[str]:
    out = []
    for p in s.s:
        if p == SpecialChars.WILDCARD_MULTI:
            out.append(".*")
        elif p == SpecialChars.WILDCARD_SINGLE:
            out.append(".")
        else:
            out.append(re.escape(str(p)))
    return re.compile("".join(out), re.DOTALL | (0 if cased else re.IGNORECASE))


def _scalar(field: str, v: Any, value: Any) -> bool:
    if isinstance(value, SigmaTimestampPart):
        ts = parse_timestamp(v)
        if ts is None:
            return False
        dt = datetime.fromtimestamp(ts, UTC)
        part = value.timestamp_part.name.lower()
        got = dt.isocalendar().week if part == "week" else getattr(dt, part)
        return got == value.number
    if isinstance(value, SigmaBool):
        return isinstance(v, bool) and v == value.boolean or _text(v) == str(value.boolean).lower()
    if isinstance(value, SigmaNumber):
        if isinstance(v, bool):
            return False
        if isinstance(v, int | float):
            return v == value.number
        return isinstance(v, str) and v.casefold() == str(value.number)
    if isinstance(value, SigmaString):
        text = _text(v)
        if text is None:
            return False
        if not value.contains_special():
            plain = value.to_plain()
            if is_ip_field(field) and "/" in plain:
                try:
                    return ipaddress.ip_address(text) in ipaddress.ip_network(plain, strict=False)
                except ValueError:
                    pass
            if isinstance(value, SigmaCasedString):
                return text == plain
            if text.casefold() == plain.casefold():
                return True
            try:
                return not isinstance(v, str) and float(plain) == v
            except ValueError:
                return False
        return (
            _pattern(value, isinstance(value, SigmaCasedString)).fullmatch(
                text if isinstance(value, SigmaCasedString) else text
            )
            is not None
        )
    if isinstance(value, SigmaRegularExpression):
        text = _text(v)
        flags = 0
        for f in value.flags:
            flags |= value.sigma_to_python_flags[f]
        return text is not None and re.search(str(value.regexp), text, flags) is not None
    if isinstance(value, SigmaCIDRExpression):
        try:
            return ipaddress.ip_address(str(v)) in value.network
        except ValueError:
            return False
    if isinstance(value, SigmaCompareExpression):
        try:
            n = float(v) if not isinstance(v, bool) else None
        except (TypeError, ValueError):
            return False
        if n is None:
            return False
        ref = value.number.number
        return {
            CompareOperators.LT: n < ref, CompareOperators.LTE: n <= ref,
            CompareOperators.GT: n > ref, CompareOperators.GTE: n >= ref,
            CompareOperators.NEQ: n != ref,
        }[value.op]  # fmt: skip
    raise ValueError(f"naive evaluator: unsupported value {value!r}")


def _field(event: dict[str, Any], field: str, value: Any) -> bool:
    if isinstance(value, SigmaExpansion):
        return any(_field(event, field, v) for v in value.values)
    v = _get(event, field)
    if isinstance(value, SigmaExists):
        return (v is not None) == value.exists
    if isinstance(value, SigmaNull):
        return v is None
    if isinstance(value, SigmaFieldReference):
        other = _get(event, value.field)
        return (
            v is not None and other is not None and _text(v).casefold() == _text(other).casefold()
        )  # type: ignore[union-attr]
    if v is None:
        return False
    if isinstance(v, list):
        return any(x is not None and _scalar(field, x, value) for x in v)
    return _scalar(field, v, value)


def _keyword(event: dict[str, Any], value: Any) -> bool:
    if isinstance(value, SigmaExpansion):
        return any(_keyword(event, v) for v in value.values)
    needle = _pattern(value if isinstance(value, SigmaString) else SigmaString(str(value)), False)
    stack = list(event.values())
    while stack:
        v = stack.pop()
        if isinstance(v, list | tuple):
            stack.extend(v)
        elif isinstance(v, dict):
            stack.extend(v.values())
        elif (t := _text(v)) is not None and needle.search(t):
            return True
    return False


def evaluate(cond: Any, event: dict[str, Any]) -> bool:
    if isinstance(cond, ConditionAND):
        return all(evaluate(a, event) for a in cond.args)
    if isinstance(cond, ConditionOR):
        return any(evaluate(a, event) for a in cond.args)
    if isinstance(cond, ConditionNOT):
        return not evaluate(cond.args[0], event)
    if isinstance(cond, ConditionFieldEqualsValueExpression):
        return _field(event, cond.field, cond.value)
    if isinstance(cond, ConditionValueExpression):
        return _keyword(event, cond.value)
    raise ValueError(f"naive evaluator: unsupported condition {cond!r}")


class NaiveMatcher:
    """Every (pipeline-processed) rule on every event: returns the ids of matching rules."""

    def __init__(self, rules: list[SigmaRule]) -> None:
        self.rules = [(str(r.id), [c.parsed for c in r.detection.parsed_condition]) for r in rules]

    def match(self, event: dict[str, Any]) -> list[str]:
        return [rid for rid, conds in self.rules if any(evaluate(c, event) for c in conds)]
