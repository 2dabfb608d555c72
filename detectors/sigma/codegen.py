"""Python source generated per dataset group: one matcher function instead of chained closures.

For each dataset the engine dispatches on (``ics.modbus`` ...), the rules that transaction
events of that dataset can fire become one function, compiled with ``compile()``/``exec``
at load time:

- every anchor field, and the fields of the rules that run on every event, are read once
  at the top and their lookup key (casefolded text, int or None) computed once; the other
  fields a rule tests are read the same way in that rule's branch. An event whose field
  holds anything else (a list, a float, a bool...) goes to the engine's general path
  instead (the ``slow`` function), so odd shapes get the same answers;
- one dict lookup per anchor field maps the key to the branch holding the rules that key
  reaches; each rule is then its residual condition as one inline expression (equalities
  are ``key in <set>``, numeric comparisons on ints and affix tests on text are inline,
  other tests call the compiled closure of that leaf); sub-expressions keep the order
  ``nodes.closure`` gives them, so short-circuiting is the same;
- the function returns one int: the number of rules it evaluated (the low ``shift``
  bits, for ``stats["evaluations"]``) and one bit per matching rule above them. No
  allocation on the path of an event no rule matches.

Values from rules (field names, strings, sets, patterns) are never pasted into the source:
they are bound as names in the function's namespace (``F0``, ``K3``...). The source holds
only names this module makes up, int literals it computed and Python syntax, so a hostile
rule cannot inject code. ``SigmaEngine.generated_source()`` returns the text, and
``icsmon rules matchers [DIR]`` (or ``python -m detectors.sigma [DIR]``) prints it, the
shipped pack by default.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from detectors.sigma.fields import nested_path
from detectors.sigma.nodes import (
    And,
    Const,
    Eq,
    Event,
    Node,
    Not,
    Or,
    Test,
    Whole,
    _cost,
    closure,
)
from detectors.sigma.pack import compiled

Matcher = Callable[[Event], int]

_OPS = frozenset({"<", "<=", ">", ">=", "!="})


@dataclass(slots=True)
class Candidate:
    """A rule as the generated function sees it."""

    bit: int  # 1 << (rule index + shift)
    anchor: tuple[str, frozenset[Any]] | None
    node: Node  # what is left to test once the anchor matched (the residual)
    label: str  # rule id, for a comment in the source


def _leaf_fields(node: Node, out: set[str]) -> None:
    if isinstance(node, Eq | Test):
        if nested_path(node.field) is None:
            out.add(node.field)
    elif isinstance(node, Not):
        _leaf_fields(node.item, out)
    elif isinstance(node, And | Or):
        for item in node.items:
            _leaf_fields(item, out)


class _Writer:
    def __init__(self, hoisted: dict[str, int]) -> None:
        self.names: dict[str, Any] = {}
        self.hoisted = hoisted  # field -> number of its local variables, in the current scope
        self.variables = 0
        self.notes: dict[str, str] = {}  # what a bound function tests, for the legend

    def bind(self, prefix: str, value: Any, note: str | None = None) -> str:
        name = f"{prefix}{len(self.names)}"
        self.names[name] = value
        if note is not None:
            self.notes[name] = note
        return name

    def expr(self, node: Node) -> str:
        if isinstance(node, Const):
            return "True" if node.value else "False"
        if isinstance(node, Eq):
            i = self.hoisted.get(node.field)
            if i is None:
                return f"{self.bind('P', closure(node), f'{node.field} in {_shown(node.keys)}')}(e)"
            return f"(k{i} in {self.bind('K', node.keys)})"
        if isinstance(node, Test):
            i = self.hoisted.get(node.field)
            if i is None:
                return f"{self.bind('P', closure(node), f'{node.field} {node.what}')}(e)"
            call = f"(v{i} is not None and {self.bind('T', node.test, node.what)}(v{i}))"
            if node.compare is not None and node.compare[0] in _OPS:
                op, ref = node.compare
                # Same result as the closure's op(v, ref) for an int; other types take it.
                return f"((v{i} {op} {self.bind('N', ref)}) if t{i} is int else {call})"
            if node.affix is not None:
                # k is the casefolded text when the value is a str: what the closure tests.
                how, lit = node.affix
                name = self.bind("L", lit)
                test = f"({name} in k{i})" if how == "contains" else f"k{i}.{how}({name})"
                return f"({test} if t{i} is str else {call})"
            return call
        if isinstance(node, Whole):
            return f"{self.bind('W', node.fn, node.what)}(e)"
        if isinstance(node, Not):
            return f"(not {self.expr(node.item)})"
        items = sorted(node.items, key=_cost)  # the order closure() evaluates them in
        join = " and " if isinstance(node, And) else " or "
        return "(" + join.join(self.expr(i) for i in items) + ")"


def generate(
    name: str, candidates: Sequence[Candidate], slow: Matcher
) -> tuple[str, dict[str, Any], dict[str, str]]:
    """Source of ``def <name>(e) -> int`` over ``candidates``, the names it needs bound, and
    what the bound functions test.

    ``slow`` is called (and its answer returned) when a hoisted field holds a type the
    inline tests do not handle; it must return the same encoding."""
    anchor_fields: list[str] = []
    for c in candidates:
        if c.anchor is not None and c.anchor[0] not in anchor_fields:
            anchor_fields.append(c.anchor[0])
    always = [c for c in candidates if c.anchor is None]
    hot: set[str] = set()
    for c in always:
        _leaf_fields(c.node, hot)
    w = _Writer({})
    w.names["SLOW"] = slow
    lines = [f"def {name}(e):"]
    _hoist(w, lines, anchor_fields + sorted(hot - set(anchor_fields)), "    ")
    top = dict(w.hoisted)
    lines.append(f"    r = {len(always)}")
    for field in anchor_fields:
        # One dict lookup finds which of the field's anchored rules the key reaches.
        rules = [c for c in candidates if c.anchor is not None and c.anchor[0] == field]
        subsets: list[tuple[Candidate, ...]] = []
        branch: dict[Any, int] = {}
        keys = {k for c in rules for k in c.anchor[1]}  # type: ignore[index]
        for key in sorted(keys, key=lambda k: (type(k).__name__, repr(k))):  # stable source
            subset = tuple(c for c in rules if key in c.anchor[1])  # type: ignore[index]
            if subset not in subsets:
                subsets.append(subset)
            branch[key] = subsets.index(subset)
        lines += [f"    b = {w.bind('D', branch)}.get(k{top[field]})", "    if b is not None:"]
        for n, subset in enumerate(subsets):
            lines.append(f"        {'if' if n == 0 else 'elif'} b == {n}:")
            lines.append(f"            r += {len(subset)}")
            w.hoisted = dict(top)  # fields read in this branch stay in it
            for c in subset:
                _rule(w, lines, c, "            ")
    w.hoisted = top
    for c in always:
        _rule(w, lines, c, "    ")
    lines.append("    return r")
    return "\n".join(lines) + "\n", w.names, w.notes


def _hoist(w: _Writer, lines: list[str], fields: Sequence[str], indent: str) -> None:
    """Read ``fields`` into locals v/t/k (value, type, lookup key); other types: SLOW."""
    for f in fields:
        if f in w.hoisted:
            continue
        i = w.hoisted[f] = w.variables
        w.variables += 1
        fname = w.bind("F", f)
        lines += [
            f"{indent}v{i} = e.get({fname})",
            f"{indent}t{i} = type(v{i})",
            f"{indent}if t{i} is str:",
            f"{indent}    k{i} = v{i}.casefold()",
            f"{indent}elif t{i} is int or v{i} is None:",
            f"{indent}    k{i} = v{i}",
            f"{indent}else:",
            f"{indent}    return SLOW(e)",
        ]


def _rule(w: _Writer, lines: list[str], c: Candidate, indent: str) -> None:
    fields: set[str] = set()
    _leaf_fields(c.node, fields)
    lines.append(f"{indent}# {c.label!r}")  # repr: no line break can end the comment
    _hoist(w, lines, sorted(fields), indent)
    lines += [f"{indent}if {w.expr(c.node)}:", f"{indent}    r |= {c.bit}"]


def _shown(value: Any) -> str:
    if isinstance(value, frozenset | set):
        value = sorted(value, key=lambda k: (type(k).__name__, repr(k)))
    text = repr(value)  # repr: no line break, so it cannot leave the comment it is shown in
    return text if len(text) <= 120 else text[:117] + "..."


def build(name: str, candidates: Sequence[Candidate], slow: Matcher) -> tuple[Matcher, str, str]:
    """The compiled matcher function, its source, and a legend of the names bound in it
    (comment lines showing each value, for review only: never compiled)."""
    source, names, notes = generate(name, candidates, slow)
    namespace: dict[str, Any] = {"__builtins__": {"type": type, "int": int, "str": str}, **names}
    exec(compiled(source, f"<sigma {name}>"), namespace)  # noqa: S102 (source built above, no rule text in it)
    legend = "".join(
        f"#   {n} = {notes[n] if n in notes else _shown(v) if not callable(v) else 'general path'}\n"
        for n, v in names.items()
    )
    return namespace[name], source, legend
