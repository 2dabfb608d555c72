"""Compile a pySigma condition tree, once, into a predicate over a flat event dict.

Semantics (what the Elasticsearch conversion of the same rule means, as far as a flat
dict allows):

- strings compare case-insensitively (``casefold``) except ``|cased`` and ``|re``;
  ``*``/``?`` wildcards match the whole value; numbers compare numerically, and a number
  also equals its decimal text (ES coerces both ways);
- a missing field, or ``None``, matches nothing except ``null`` and ``exists: false``;
- list-valued fields (``event.type``, ``modbus.values``) match when any element does;
- a CIDR-looking value on an ``*.ip`` field (e.g. from a placeholder list) matches as a
  range, as a term query on an ES ``ip`` field does;
- keywords (no field) match a substring of any string value in the event;
- ``|re`` is a search (unanchored) with the rule's flags; patterns RE2 cannot run
  (look-around, back-references) are refused, because Elasticsearch cannot run them either.

The tree is normalised first (flattened AND/OR, equality lists on one field merged into
one frozenset lookup), so the hot path is a dict lookup and a set membership test. The
normalised tree also yields the rule's *anchor*: a field whose value must be in a fixed set
for the rule to match, which the engine indexes so an event only reaches rules it can fire.

The closures built here are the general path and the reference; the engine's hot path runs
Python source generated from the same normalised trees (``codegen``), which is why ``Test``
nodes also carry the comparison or affix they implement and ``Compiled`` keeps the residual
tree.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from sigma.conditions import (
    ConditionAND,
    ConditionFieldEqualsValueExpression,
    ConditionNOT,
    ConditionOR,
    ConditionValueExpression,
)
from sigma.types import (
    CompareOperators,
    Placeholder,
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
    SigmaRegularExpressionFlag,
    SigmaString,
    SigmaTimestampPart,
    SpecialChars,
)

from detectors.sigma.fields import is_ip_field
from detectors.sigma.nodes import (  # noqa: F401 - the tree's names, as they were imported from here
    ANOMALY,
    MULTI,
    SINGLE,
    TIMESTAMP_PARTS,
    WEAK_ANCHORS,
    And,
    Compiled,
    Const,
    Eq,
    Event,
    Node,
    Not,
    Or,
    Predicate,
    Test,
    Whole,
    _cost,
    _number,
    _simplify,
    affix_of,
    anchor_candidates,
    closure,
    getter,
    node_fields,
    parse_ip,
    plan,
    test_node,
    value_key,
    value_text,
    whole_node,
    wildcard_test,
)


class Unsupported(ValueError):
    """A rule construct the matcher will not evaluate: the rule is refused at load."""

    field: str | None = None  # the field concerned, to point at its line


# Fields too common to narrow the candidate rules of an event: never used as anchors.

# --- values -> nodes --------------------------------------------------------------------

_SPECIAL = {SpecialChars.WILDCARD_MULTI: MULTI, SpecialChars.WILDCARD_SINGLE: SINGLE}


def _string_parts(s: SigmaString) -> list[str | int]:
    """Text and wildcards (``nodes.MULTI``, ``nodes.SINGLE``) of a Sigma string."""
    parts: list[str | int] = []
    for p in s.s:
        if isinstance(p, Placeholder):
            raise Unsupported(f"placeholder %{p.name}% has no value (no site configuration?)")
        if isinstance(p, str):
            if parts and isinstance(parts[-1], str):
                parts[-1] += p
            else:
                parts.append(p)
        else:
            parts.append(_SPECIAL[p])
    return parts


_RE2_UNSUPPORTED = re.compile(r"\(\?<?[=!]|\\[1-9]|\(\?P=")


def _regex_node(field: str, value: SigmaRegularExpression) -> Node:
    pattern = str(value.regexp)
    if _RE2_UNSUPPORTED.search(pattern):
        raise Unsupported(
            f"regular expression {pattern!r} uses look-around or back-references "
            "(RE2 and Elasticsearch cannot run it)"
        )
    flags = 0
    for flag in value.flags:
        flags |= {
            SigmaRegularExpressionFlag.IGNORECASE: re.IGNORECASE,
            SigmaRegularExpressionFlag.MULTILINE: re.MULTILINE,
            SigmaRegularExpressionFlag.DOTALL: re.DOTALL,
        }[flag]
    try:
        re.compile(pattern, flags)
    except re.error as exc:
        raise Unsupported(f"regular expression {pattern!r} is invalid: {exc}") from exc
    return test_node(field, ("re", pattern, int(flags)), f"re {pattern!r}")


_COMPARE_SYMBOL = {
    CompareOperators.LT: "<",
    CompareOperators.LTE: "<=",
    CompareOperators.GT: ">",
    CompareOperators.GTE: ">=",
    CompareOperators.NEQ: "!=",
}


def _string_node(field: str, value: SigmaString) -> Node:
    parts = _string_parts(value)
    cased = isinstance(value, SigmaCasedString)
    plain = all(isinstance(p, str) for p in parts)
    if plain:
        text = "".join(p for p in parts if isinstance(p, str))
        if is_ip_field(field) and "/" in text:
            try:
                net = ipaddress.ip_network(text, strict=False)
            except ValueError:
                net = None
            if net is not None:
                return test_node(field, ("cidr", str(net)), f"cidr {text}")
        if cased:
            return test_node(field, ("cased", text), f"cased {text!r}")
        keys: set[Any] = {text.casefold()}
        number = _number(text)
        if number is not None:
            keys.add(number)
        return Eq(field, frozenset(keys))
    what = wildcard_test(parts, cased)[1]
    return test_node(
        field, ("wildcard", tuple(parts), cased), what, None, None if cased else affix_of(parts)
    )


def _value_node(field: str, value: Any) -> Node:
    """A node for ``field <op> value`` (field already mapped by the pipeline)."""
    if isinstance(value, SigmaExpansion):
        return Or([_value_node(field, v) for v in value.values])
    if isinstance(value, SigmaExists):
        want = bool(value.exists)
        return whole_node(("exists", field, want), f"{field} exists={want}")
    if isinstance(value, SigmaNull):
        return whole_node(("null", field), f"{field} is null")
    if isinstance(value, SigmaTimestampPart):
        part, ref = value.timestamp_part.name.lower(), value.number
        assert part in TIMESTAMP_PARTS
        return test_node(field, ("timestamp", part, ref), f"{part} {ref}")
    if isinstance(value, SigmaBool):
        return Eq(field, frozenset({"true" if value.boolean else "false"}))
    if isinstance(value, SigmaNumber):
        n = value.number
        return Eq(field, frozenset({n, str(n)}))
    if isinstance(value, SigmaString):
        return _string_node(field, value)
    if isinstance(value, SigmaRegularExpression):
        return _regex_node(field, value)
    if isinstance(value, SigmaCIDRExpression):
        return test_node(field, ("cidr", str(value.network)), f"cidr {value.cidr}")
    if isinstance(value, SigmaCompareExpression):
        ref = value.number.number
        symbol = _COMPARE_SYMBOL[value.op]
        what = f"{value.op.name.lower()} {ref}"
        exact = type(ref) is int or type(ref) is float
        return test_node(field, ("compare", symbol, ref), what, (symbol, ref) if exact else None)
    if isinstance(value, SigmaFieldReference):
        other = value.field
        if value.starts_with or value.ends_with:
            affix = "startswith" if value.starts_with else "endswith"
            return whole_node(("fieldref", field, other, affix), f"{field} fieldref {other}")
        return whole_node(("fieldref", field, other, None), f"{field} == field {other}")
    raise Unsupported(f"value type {type(value).__name__} on field {field!r} is not supported")


def _keyword_node(value: Any) -> Node:
    if isinstance(value, SigmaExpansion):
        return Or([_keyword_node(v) for v in value.values])
    if isinstance(value, SigmaNumber):
        value = SigmaString(str(value.number))
    if not isinstance(value, SigmaString):
        raise Unsupported(f"keyword of type {type(value).__name__} is not supported")
    parts = _string_parts(value)
    cased = isinstance(value, SigmaCasedString)
    # Keywords are substrings (the Lucene conversion wraps them in *...*).
    wrapped = (
        ([] if parts[:1] == [MULTI] else [MULTI])
        + parts
        + ([] if parts[-1:] == [MULTI] else [MULTI])
    )
    what = wildcard_test(wrapped, cased)[1]
    return whole_node(("keyword", tuple(wrapped), cased), f"keyword {what}")


def to_node(cond: Any) -> Node:
    """pySigma's parsed condition (after the pipeline) -> normalised node tree."""
    if isinstance(cond, ConditionAND):
        return _simplify(And([to_node(a) for a in cond.args]))
    if isinstance(cond, ConditionOR):
        return _simplify(Or([to_node(a) for a in cond.args]))
    if isinstance(cond, ConditionNOT):
        inner = to_node(cond.args[0])
        if isinstance(inner, Const):
            return Const(not inner.value)
        return Not(inner)
    if isinstance(cond, ConditionFieldEqualsValueExpression):
        try:
            return _value_node(cond.field, cond.value)
        except Unsupported as exc:
            exc.field = exc.field or cond.field
            raise
    if isinstance(cond, ConditionValueExpression):
        return _keyword_node(cond.value)
    raise Unsupported(f"condition element {type(cond).__name__} is not supported")


def compile_condition(cond: Any) -> tuple[Node, Predicate]:
    node = to_node(cond)
    return node, closure(node)
