"""The normalised condition tree of a Sigma rule, and how it runs: closures, anchors, plans.

``compiler`` turns pySigma's parsed condition into this tree; everything here is plain
Python over plain values, without pySigma, so a rule pack read back from the cache
(``detectors.sigma.pack``) runs without importing it (a replay's start-up). The leaves that
test values in ways a set lookup cannot (wildcards, regular expressions, CIDR ranges,
comparisons, timestamp parts; exists, null, field references and keywords over the whole
event) carry a *recipe*: plain data (text, numbers, tuples) from which ``make_test`` and
``make_whole`` build their closures, the same ones whether the rule was just compiled or
read back.

Semantics: see ``compiler``.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from detectors.sigma.fields import nested_path
from sensor.timestamps import parse_timestamp

Event = dict[str, Any]
Predicate = Callable[[Event], bool]

# A recipe: (kind, plain values...); see make_test and make_whole.
Recipe = tuple[Any, ...]

# Wildcards in the parts of a string value (text between them is ``str``)
MULTI = 1  # ``*``
SINGLE = 2  # ``?``

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
    recipe: Recipe = ()  # what ``test`` was made from (make_test)


@dataclass(slots=True)
class Whole:
    """A test on the whole event (exists, null, fieldref, keywords)."""

    fn: Predicate
    what: str
    recipe: Recipe = ()  # what ``fn`` was made from (make_whole)


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
    node: Node | None = None  # the tree ``predicate`` was built from (the pack's cache)


# --- recipes -> closures ------------------------------------------------------


def test_node(
    field: str,
    recipe: Recipe,
    what: str,
    compare: tuple[str, int | float] | None = None,
    affix: tuple[str, str] | None = None,
) -> Test:
    return Test(field, make_test(recipe), what, compare, affix, recipe)


def whole_node(recipe: Recipe, what: str) -> Whole:
    return Whole(make_whole(recipe), what, recipe)


def make_test(recipe: Recipe) -> Callable[[Any], bool]:
    """The per-value test of a recipe:

    - ``("cased", text)``: equal to the text, case-sensitive;
    - ``("wildcard", parts, cased)``: a string value with wildcards (``parts``: text and
      ``MULTI`` / ``SINGLE``);
    - ``("re", pattern, flags)``: a regular expression search (checked when compiled);
    - ``("cidr", network text)``: an address in the range;
    - ``("compare", operator, number)``: ``<``, ``<=``, ``>``, ``>=``, ``!=`` a number;
    - ``("timestamp", part, number)``: the minute, hour, day, week, month or year of a time.
    """
    kind = recipe[0]
    if kind == "cased":
        text = recipe[1]
        return _text_test(lambda t: t == text)
    if kind == "wildcard":
        return _text_test(wildcard_test(list(recipe[1]), recipe[2])[0])
    if kind == "re":
        search = re.compile(recipe[1], recipe[2]).search
        return _text_test(lambda t: search(t) is not None)
    if kind == "cidr":
        return _cidr_test([ipaddress.ip_network(recipe[1], strict=False)])
    if kind == "compare":
        return _compare_test(recipe[1], recipe[2])
    if kind == "timestamp":
        part, ref = recipe[1], recipe[2]
        return lambda v: _timestamp_part(v, part) == ref
    raise ValueError(f"unknown test recipe {kind!r}")


def make_whole(recipe: Recipe) -> Predicate:
    """The test on a whole event of a recipe:

    - ``("exists", field, want)``: the field is there (``want``) or not;
    - ``("null", field)``: the field is missing or None;
    - ``("fieldref", field, other, affix)``: the field equals the other field's value, or
      (``affix`` ``"startswith"`` / ``"endswith"``) starts or ends with it;
    - ``("keyword", parts, cased)``: a string value anywhere in the event matches the
      wildcard parts.
    """
    kind = recipe[0]
    if kind == "exists":
        want = recipe[2]
        get = getter(recipe[1])
        return lambda e: (get(e) is not None) is want
    if kind == "null":
        get = getter(recipe[1])
        return lambda e: get(e) is None
    if kind == "fieldref":
        return _fieldref(recipe[1], recipe[2], recipe[3])
    if kind == "keyword":
        inner = wildcard_test(list(recipe[1]), recipe[2])[0]

        def anywhere(e: Event) -> bool:
            for v in e.values():
                for text in _iter_strings(v):
                    if inner(text):
                        return True
            return False

        return anywhere
    raise ValueError(f"unknown whole-event recipe {kind!r}")


def wildcard_test(parts: list[str | int], cased: bool) -> tuple[Callable[[str], bool], str]:
    """A test on text for a Sigma string with wildcards: fast paths, else a full regex."""
    fold: Callable[[str], str] = (lambda x: x) if cased else str.casefold
    lits = [fold(p) if isinstance(p, str) else p for p in parts]
    if lits == [MULTI]:
        return (lambda t: True), "*"
    if len(lits) == 3 and lits[0] == MULTI and lits[2] == MULTI and isinstance(lits[1], str):
        sub = lits[1]
        return (lambda t: sub in fold(t)), f"contains {sub!r}"
    if len(lits) == 2 and isinstance(lits[0], str) and lits[1] == MULTI:
        pre = lits[0]
        return (lambda t: fold(t).startswith(pre)), f"startswith {pre!r}"
    if len(lits) == 2 and lits[0] == MULTI and isinstance(lits[1], str):
        suf = lits[1]
        return (lambda t: fold(t).endswith(suf)), f"endswith {suf!r}"
    pattern = "".join(
        re.escape(p) if isinstance(p, str) else (".*" if p == MULTI else ".") for p in lits
    )
    rx = re.compile(pattern, re.DOTALL)
    match = rx.fullmatch
    return (lambda t: match(fold(t)) is not None), f"matches {pattern!r}"


def affix_of(parts: list[str | int]) -> tuple[str, str] | None:
    """The affix form of an uncased wildcard value, when it has one (as wildcard_test)."""
    lits = [p.casefold() if isinstance(p, str) else p for p in parts]
    if len(lits) == 3 and lits[0] == MULTI and lits[2] == MULTI and isinstance(lits[1], str):
        return "contains", lits[1]
    if len(lits) == 2 and isinstance(lits[0], str) and lits[1] == MULTI:
        return "startswith", lits[0]
    if len(lits) == 2 and lits[0] == MULTI and isinstance(lits[1], str):
        return "endswith", lits[1]
    return None


def _text_test(inner: Callable[[str], bool]) -> Callable[[Any], bool]:
    def test(v: Any) -> bool:
        t = value_text(v)
        return t is not None and inner(t)

    return test


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


COMPARE: dict[str, Callable[[float, float], bool]] = {
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
    "!=": lambda a, b: a != b,
}


def _compare_test(symbol: str, ref: Any) -> Callable[[Any], bool]:
    op = COMPARE[symbol]

    def test(v: Any) -> bool:
        t = type(v)
        if t is int or t is float:
            return op(v, ref)
        if t is str:
            n = _number(v)
            return n is not None and op(n, ref)
        return False

    return test


TIMESTAMP_PARTS = ("minute", "hour", "day", "week", "month", "year")


def _timestamp_part(v: Any, part: str) -> int | None:
    ts = parse_timestamp(v)  # a number inside the process, text from a file
    if ts is None:
        return None
    dt = datetime.fromtimestamp(ts, UTC)
    if part == "minute":
        return dt.minute
    if part == "hour":
        return dt.hour
    if part == "day":
        return dt.day
    if part == "week":
        return dt.isocalendar().week
    if part == "month":
        return dt.month
    return dt.year


def _fieldref(field: str, other: str, affix: str | None) -> Predicate:
    get_a, get_b = getter(field), getter(other)
    if affix:
        starts = affix == "startswith"

        def affixed(e: Event) -> bool:
            a, b = value_text(get_a(e)), value_text(get_b(e))
            if a is None or b is None:
                return False
            a, b = a.casefold(), b.casefold()
            return a.startswith(b) if starts else a.endswith(b)

        return affixed

    def same(e: Event) -> bool:
        a, b = get_a(e), get_b(e)
        if a is None or b is None:
            return False
        ka, kb = value_key(a), value_key(b)
        return ka is not None and ka == kb

    return same


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


# --- normalising -----------------------------------------------------------------------


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
    rest: list[Node] = list(node.items) if isinstance(node, And) else [node]
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
        node,
    )
