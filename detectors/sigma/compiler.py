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
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
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
    TimestampPart,
)

from detectors.sigma.fields import is_ip_field, nested_path
from sensor.timestamps import parse_timestamp

Event = dict[str, Any]
Predicate = Callable[[Event], bool]


class Unsupported(ValueError):
    """A rule construct the matcher will not evaluate: the rule is refused at load."""

    field: str | None = None  # the field concerned, to point at its line


# Fields too common to narrow the candidate rules of an event: never used as anchors.
WEAK_ANCHORS = frozenset(
    {"event.dataset", "network.protocol", "event.kind", "network.transport", "event.category"}
)


def value_key(v: Any) -> Any:
    """The lookup key of an event scalar: casefolded text, numbers as numbers, bools as text."""
    t = type(v)
    if t is str:
        return v.casefold()
    if t is int or t is float:
        return v
    if t is bool:
        return "true" if v else "false"
    return None  # dicts and other shapes never equal a rule value


def value_text(v: Any) -> str | None:
    """Text form of an event scalar for wildcard/regex tests (None: not comparable)."""
    t = type(v)
    if t is str:
        return v
    if t is bool:
        return "true" if v else "false"
    if t is int or t is float:
        return str(v)
    return None


def _number(text: str) -> int | float | None:
    try:
        f = float(text)
    except ValueError:
        return None
    if f != f or f in (float("inf"), float("-inf")):
        return None
    return int(f) if f.is_integer() and "." not in text and "e" not in text.lower() else f


@lru_cache(maxsize=4096)
def parse_ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    # OT networks have few hosts: caching the parse makes CIDR tests a set of cheap compares.
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


# --- normalised tree -------------------------------------------------------------------


@dataclass(slots=True)
class Eq:
    """field value (case-insensitive / numeric) is one of ``keys``."""

    field: str
    keys: frozenset[Any]


@dataclass(slots=True)
class Test:
    """A per-value test on one field (wildcards, regex, CIDR, comparisons...)."""

    field: str
    test: Callable[[Any], bool]
    what: str
    # A numeric comparison (operator symbol, number): generated code runs it inline on ints.
    compare: tuple[str, int | float] | None = None
    # A case-insensitive affix test ("startswith" | "endswith" | "contains", casefolded
    # literal): generated code runs it inline on the casefolded text.
    affix: tuple[str, str] | None = None


@dataclass(slots=True)
class Whole:
    """A test on the whole event (exists, null, fieldref, keywords)."""

    fn: Predicate
    what: str


@dataclass(slots=True)
class Const:
    value: bool


@dataclass(slots=True)
class And:
    items: list[Node]


@dataclass(slots=True)
class Or:
    items: list[Node]


@dataclass(slots=True)
class Not:
    item: Node


Node = Eq | Test | Whole | Const | And | Or | Not


@dataclass(slots=True)
class Compiled:
    """A rule's whole predicate, and how the engine's dispatch can skip most of it.

    The engine groups rules by ``dataset`` (``event.dataset`` must equal it), by ``kind``
    (``anomaly``: only anomaly events can match; ``transaction``: only other events) and
    indexes them by ``anchor`` (a field whose value must be in a set). Those tests are done
    once per event by the dispatch, so ``residual`` is the predicate without them.
    """

    predicate: Predicate
    anchor: tuple[str, frozenset[Any]] | None
    fields: frozenset[str]  # every field the condition reads
    residual: Predicate
    dataset: str | None = None
    kind: str = "both"  # "both" | "anomaly" | "transaction"
    residual_node: Node | None = None  # the tree ``residual`` was built from (for codegen)


# --- values -> nodes --------------------------------------------------------------------


def _string_parts(s: SigmaString) -> list[str | SpecialChars]:
    parts: list[str | SpecialChars] = []
    for p in s.s:
        if isinstance(p, Placeholder):
            raise Unsupported(f"placeholder %{p.name}% has no value (no site configuration?)")
        if isinstance(p, str):
            if parts and isinstance(parts[-1], str):
                parts[-1] += p
            else:
                parts.append(p)
        else:
            parts.append(p)
    return parts


def _wildcard_test(
    parts: list[str | SpecialChars], cased: bool
) -> tuple[Callable[[str], bool], str]:
    """A test on text for a Sigma string with wildcards: fast paths, else a full regex."""
    fold: Callable[[str], str] = (lambda x: x) if cased else str.casefold
    lits = [fold(p) if isinstance(p, str) else p for p in parts]
    multi = SpecialChars.WILDCARD_MULTI
    if lits == [multi]:
        return (lambda t: True), "*"
    if len(lits) == 3 and lits[0] is multi and lits[2] is multi and isinstance(lits[1], str):
        sub = lits[1]
        return (lambda t: sub in fold(t)), f"contains {sub!r}"
    if len(lits) == 2 and isinstance(lits[0], str) and lits[1] is multi:
        pre = lits[0]
        return (lambda t: fold(t).startswith(pre)), f"startswith {pre!r}"
    if len(lits) == 2 and lits[0] is multi and isinstance(lits[1], str):
        suf = lits[1]
        return (lambda t: fold(t).endswith(suf)), f"endswith {suf!r}"
    pattern = "".join(
        re.escape(p) if isinstance(p, str) else (".*" if p is multi else ".") for p in lits
    )
    rx = re.compile(pattern, re.DOTALL)
    match = rx.fullmatch
    return (lambda t: match(fold(t)) is not None), f"matches {pattern!r}"


def _text_test(inner: Callable[[str], bool]) -> Callable[[Any], bool]:
    def test(v: Any) -> bool:
        t = value_text(v)
        return t is not None and inner(t)

    return test


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
        search = re.compile(pattern, flags).search
    except re.error as exc:
        raise Unsupported(f"regular expression {pattern!r} is invalid: {exc}") from exc
    return Test(field, _text_test(lambda t: search(t) is not None), f"re {pattern!r}")


def _cidr_test(
    networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network],
) -> Callable[[Any], bool]:
    nets = tuple(networks)

    def test(v: Any) -> bool:
        if type(v) is not str:
            return False
        ip = parse_ip(v)
        if ip is None:
            return False
        for net in nets:  # noqa: SIM110 (plain loop: faster than any() and a generator)
            if ip.version == net.version and ip in net:
                return True
        return False

    return test


_COMPARE_SYMBOL = {
    CompareOperators.LT: "<",
    CompareOperators.LTE: "<=",
    CompareOperators.GT: ">",
    CompareOperators.GTE: ">=",
    CompareOperators.NEQ: "!=",
}

_COMPARE: dict[CompareOperators, Callable[[float, float], bool]] = {
    CompareOperators.LT: lambda a, b: a < b,
    CompareOperators.LTE: lambda a, b: a <= b,
    CompareOperators.GT: lambda a, b: a > b,
    CompareOperators.GTE: lambda a, b: a >= b,
    CompareOperators.NEQ: lambda a, b: a != b,
}


def _compare_test(value: SigmaCompareExpression) -> tuple[Callable[[Any], bool], str]:
    op = _COMPARE[value.op]
    ref = value.number.number

    def test(v: Any) -> bool:
        t = type(v)
        if t is int or t is float:
            return op(v, ref)
        if t is str:
            n = _number(v)
            return n is not None and op(n, ref)
        return False

    return test, f"{value.op.name.lower()} {ref}"


def _timestamp_part(v: Any, part: TimestampPart) -> int | None:
    ts = parse_timestamp(v)  # a number inside the process, text from a file
    if ts is None:
        return None
    dt = datetime.fromtimestamp(ts, UTC)
    if part is TimestampPart.MINUTE:
        return dt.minute
    if part is TimestampPart.HOUR:
        return dt.hour
    if part is TimestampPart.DAY:
        return dt.day
    if part is TimestampPart.WEEK:
        return dt.isocalendar().week
    if part is TimestampPart.MONTH:
        return dt.month
    return dt.year


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
                return Test(field, _cidr_test([net]), f"cidr {text}")
        if cased:
            return Test(field, _text_test(lambda t: t == text), f"cased {text!r}")
        keys: set[Any] = {text.casefold()}
        number = _number(text)
        if number is not None:
            keys.add(number)
        return Eq(field, frozenset(keys))
    inner, what = _wildcard_test(parts, cased)
    return Test(field, _text_test(inner), what, None, None if cased else _affix(parts))


def _affix(parts: list[str | SpecialChars]) -> tuple[str, str] | None:
    """The affix form of an uncased wildcard value, when it has one (as _wildcard_test)."""
    multi = SpecialChars.WILDCARD_MULTI
    lits = [p.casefold() if isinstance(p, str) else p for p in parts]
    if len(lits) == 3 and lits[0] is multi and lits[2] is multi and isinstance(lits[1], str):
        return "contains", lits[1]
    if len(lits) == 2 and isinstance(lits[0], str) and lits[1] is multi:
        return "startswith", lits[0]
    if len(lits) == 2 and lits[0] is multi and isinstance(lits[1], str):
        return "endswith", lits[1]
    return None


def _value_node(field: str, value: Any) -> Node:
    """A node for ``field <op> value`` (field already mapped by the pipeline)."""
    if isinstance(value, SigmaExpansion):
        return Or([_value_node(field, v) for v in value.values])
    if isinstance(value, SigmaExists):
        want = bool(value.exists)
        get = getter(field)
        return Whole(lambda e: (get(e) is not None) is want, f"{field} exists={want}")
    if isinstance(value, SigmaNull):
        get = getter(field)
        return Whole(lambda e: get(e) is None, f"{field} is null")
    if isinstance(value, SigmaTimestampPart):
        part, ref = value.timestamp_part, value.number
        return Test(field, lambda v: _timestamp_part(v, part) == ref, f"{part.name.lower()} {ref}")
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
        return Test(field, _cidr_test([value.network]), f"cidr {value.cidr}")
    if isinstance(value, SigmaCompareExpression):
        test, what = _compare_test(value)
        ref = value.number.number
        exact = type(ref) is int or type(ref) is float
        return Test(field, test, what, (_COMPARE_SYMBOL[value.op], ref) if exact else None)
    if isinstance(value, SigmaFieldReference):
        return _fieldref_node(field, value)
    raise Unsupported(f"value type {type(value).__name__} on field {field!r} is not supported")


def _fieldref_node(field: str, value: SigmaFieldReference) -> Node:
    other = value.field
    get_a, get_b = getter(field), getter(other)
    if value.starts_with or value.ends_with:
        starts = value.starts_with

        def affix(e: Event) -> bool:
            a, b = value_text(get_a(e)), value_text(get_b(e))
            if a is None or b is None:
                return False
            a, b = a.casefold(), b.casefold()
            return a.startswith(b) if starts else a.endswith(b)

        return Whole(affix, f"{field} fieldref {other}")

    def same(e: Event) -> bool:
        a, b = get_a(e), get_b(e)
        if a is None or b is None:
            return False
        ka, kb = value_key(a), value_key(b)
        return ka is not None and ka == kb

    return Whole(same, f"{field} == field {other}")


def _iter_strings(value: Any) -> Iterable[str]:
    t = type(value)
    if t is str:
        yield value
    elif t is list or t is tuple:
        for item in value:
            yield from _iter_strings(item)
    elif t is int or t is float:
        yield str(value)
    elif t is dict:
        for item in value.values():
            yield from _iter_strings(item)


def _keyword_node(value: Any) -> Node:
    if isinstance(value, SigmaExpansion):
        return Or([_keyword_node(v) for v in value.values])
    if isinstance(value, SigmaNumber):
        value = SigmaString(str(value.number))
    if not isinstance(value, SigmaString):
        raise Unsupported(f"keyword of type {type(value).__name__} is not supported")
    parts = _string_parts(value)
    cased = isinstance(value, SigmaCasedString)
    multi = SpecialChars.WILDCARD_MULTI
    # Keywords are substrings (the Lucene conversion wraps them in *...*).
    wrapped = (
        ([] if parts[:1] == [multi] else [multi])
        + parts
        + ([] if parts[-1:] == [multi] else [multi])
    )
    inner, what = _wildcard_test(wrapped, cased)

    def anywhere(e: Event) -> bool:
        for v in e.values():
            for text in _iter_strings(v):
                if inner(text):
                    return True
        return False

    return Whole(anywhere, f"keyword {what}")


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


def _simplify(node: And | Or) -> Node:
    is_and = isinstance(node, And)
    flat: list[Node] = []
    for item in node.items:
        if isinstance(item, type(node)):
            flat.extend(item.items)
        else:
            flat.append(item)
    out: list[Node] = []
    eqs: dict[str, int] = {}
    for item in flat:
        if isinstance(item, Const):
            if item.value is not is_and:  # False in AND, True in OR: decides the node
                return Const(item.value)
            continue
        if not is_and and isinstance(item, Eq):  # OR of equalities on one field: one set
            at = eqs.get(item.field)
            if at is not None:
                prev = out[at]
                assert isinstance(prev, Eq)
                out[at] = Eq(item.field, prev.keys | item.keys)
                continue
            eqs[item.field] = len(out)
        out.append(item)
    if not out:
        return Const(is_and)
    if len(out) == 1:
        return out[0]
    return And(out) if is_and else Or(out)


# --- nodes -> closures ------------------------------------------------------------------


def getter(field: str) -> Callable[[Event], Any]:
    """How to read ``field``: a flat key, or a key inside a list of objects (any element)."""
    nested = nested_path(field)
    if nested is None:
        return lambda e: e.get(field)
    base, key = nested

    def get(e: Event) -> Any:
        items = e.get(base)
        if items is None:
            return None
        if type(items) is dict:
            return items.get(key)
        if type(items) is not list:
            return None
        found = [i.get(key) for i in items if type(i) is dict and i.get(key) is not None]
        return found or None

    return get


def _eq_pred(field: str, keys: frozenset[Any]) -> Predicate:
    get = getter(field) if nested_path(field) else None

    def pred(e: Event) -> bool:
        v = e.get(field) if get is None else get(e)
        if v is None:
            return False
        t = type(v)
        if t is str:
            return v.casefold() in keys
        if t is int:
            return v in keys
        if t is list:
            for x in v:
                k = value_key(x)
                if k is not None and k in keys:
                    return True
            return False
        k = value_key(v)
        return k is not None and k in keys

    return pred


def _test_pred(field: str, test: Callable[[Any], bool]) -> Predicate:
    get = getter(field) if nested_path(field) else None

    def pred(e: Event) -> bool:
        v = e.get(field) if get is None else get(e)
        if v is None:
            return False
        if type(v) is list:
            for x in v:  # noqa: SIM110 (a loop: any() with a generator is slower here)
                if x is not None and test(x):
                    return True
            return False
        return test(v)

    return pred


def _and2(a: Predicate, b: Predicate) -> Predicate:
    return lambda e: a(e) and b(e)


def _or2(a: Predicate, b: Predicate) -> Predicate:
    return lambda e: a(e) or b(e)


def _cost(node: Node) -> int:
    # Cheap tests first: set lookups, then per-value tests, then whole-event scans.
    if isinstance(node, Eq):
        return 0
    if isinstance(node, Test):
        return 1
    if isinstance(node, Whole):
        return 3
    if isinstance(node, Not):
        return _cost(node.item)
    if isinstance(node, And | Or):
        return 2 + max(_cost(i) for i in node.items)
    return 0


def closure(node: Node) -> Predicate:
    if isinstance(node, Eq):
        return _eq_pred(node.field, node.keys)
    if isinstance(node, Test):
        return _test_pred(node.field, node.test)
    if isinstance(node, Whole):
        return node.fn
    if isinstance(node, Const):
        value = node.value
        return lambda e: value
    if isinstance(node, Not):
        inner = closure(node.item)
        return lambda e: not inner(e)
    items = sorted(node.items, key=_cost)  # stable: rule order kept among equals
    preds = [closure(i) for i in items]
    join = _and2 if isinstance(node, And) else _or2
    pred = preds[-1]
    for p in reversed(preds[:-1]):
        pred = join(p, pred)
    return pred


def node_fields(node: Node) -> set[str]:
    if isinstance(node, Eq | Test):
        return {node.field}
    if isinstance(node, Not):
        return node_fields(node.item)
    if isinstance(node, And | Or):
        out: set[str] = set()
        for i in node.items:
            out |= node_fields(i)
        return out
    return set()


def _or_anchor(node: Or) -> Eq | None:
    """An OR whose every branch requires an equality on one field requires the union of them."""
    per_branch: list[dict[str, frozenset[Any]]] = []
    for branch in node.items:
        items = branch.items if isinstance(branch, And) else [branch]
        eqs = {i.field: i.keys for i in items if isinstance(i, Eq)}
        if not eqs:
            return None
        per_branch.append(eqs)
    common = set(per_branch[0]).intersection(*per_branch[1:]) - WEAK_ANCHORS
    for field in sorted(common):
        if nested_path(field) is None:
            return Eq(field, frozenset().union(*(b[field] for b in per_branch)))
    return None


def anchor_candidates(node: Node) -> list[Eq]:
    """Equalities every match must satisfy: conjuncts at the root, or implied by a root OR.

    An anchor implied by an OR is not itself a conjunct, so taking it out of the residual
    changes nothing (the OR still tests it)."""
    items = node.items if isinstance(node, And) else [node]
    out = [
        i
        for i in items
        if isinstance(i, Eq) and i.field not in WEAK_ANCHORS and nested_path(i.field) is None
    ]
    for i in items:
        if isinstance(i, Or) and (implied := _or_anchor(i)) is not None:
            out.append(implied)
    return out


ANOMALY = frozenset({"anomaly"})


def plan(node: Node, service: str | None, fields: frozenset[str]) -> Compiled:
    """Split the root conjuncts the dispatch can test once per event off the predicate."""
    rest = list(node.items) if isinstance(node, And) else [node]
    dataset = None
    if service:
        want = "ics." + service.replace("-", "_")
        for item in rest:
            if isinstance(item, Eq) and item.field == "event.dataset" and item.keys == {want}:
                dataset = want
                rest.remove(item)
                break
    kind = "both"
    for item in rest:
        if isinstance(item, Eq) and item.field == "event.action" and item.keys == ANOMALY:
            kind = "anomaly"
        elif (
            isinstance(item, Not)
            and isinstance(item.item, Eq)
            and item.item.field == "event.action"
            and item.item.keys == ANOMALY
        ):
            kind = "transaction"
        else:
            continue
        rest.remove(item)
        break
    anchors = anchor_candidates(And(rest))
    anchor = anchors[0] if anchors else None
    residual = [i for i in rest if i is not anchor]
    residual_node = _simplify(And(residual)) if residual else Const(True)
    return Compiled(
        closure(node),
        (anchor.field, anchor.keys) if anchor else None,
        fields,
        closure(residual_node),
        dataset,
        kind,
        residual_node,
    )


def compile_condition(cond: Any) -> tuple[Node, Predicate]:
    node = to_node(cond)
    return node, closure(node)
