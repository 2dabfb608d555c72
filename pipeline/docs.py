"""Flat dotted documents <-> nested ECS JSON.

``nest`` runs once per document written (JSON lines, stdout, Kafka): documents of one kind
and dataset carry the same keys in the same order, so the nesting is planned once per key
sequence (a function generated for it, which builds the nested dicts from the values in one
expression) and reused; the plans are capped (``MAX_PLANS``). It is also where a document
takes its output form: times carried as numbers (``TIME_FIELDS``) become ISO 8601 text.
``dumps`` gives the compact JSON bytes every writer sends (JSON lines, Kafka, the store).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import orjson

from sensor.events import iso_timestamp
from sensor.timestamps import TIME_FIELDS, format_timestamp

Plan = Callable[[dict[str, Any]], dict[str, Any]]

MAX_PLANS = 2048  # key sequences remembered; beyond, the table starts again
# the plans by key sequence (``pipeline.lines`` looks them up itself: a call less a line)
PLANS: dict[tuple[str, ...], Plan] = {}


def nest(flat: dict[str, Any]) -> dict[str, Any]:
    """``{"source.ip": x}`` -> ``{"source": {"ip": x}}``; ``@timestamp`` stays at the top.
    Times carried as numbers become ISO 8601 text."""
    keys = tuple(flat)
    plan = PLANS.get(keys)
    if plan is None:
        plan = plan_of(keys)
    return plan(flat)


def plan_of(keys: tuple[str, ...]) -> Plan:
    """The function nesting documents with exactly these keys, in this order: made once and
    kept in ``PLANS`` (at most ``MAX_PLANS`` of them)."""
    plan = PLANS.get(keys)
    if plan is None:
        plan = _plan(keys)
        if len(PLANS) >= MAX_PLANS:
            PLANS.clear()
        PLANS[keys] = plan
    return plan


def nest_each_key(flat: dict[str, Any]) -> dict[str, Any]:
    """What a plan computes, key by key (and the answer for key sequences no plan can take:
    a key that is also the head of another, ``a`` and ``a.b``, where values decide)."""
    out: dict[str, Any] = {}
    for key, value in flat.items():
        if key in TIME_FIELDS:
            value = _time_text(value)
        if "." not in key:
            out[key] = value
            continue
        parts = key.split(".")
        node = out
        for part in parts[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = node[part] = {}
            node = child
        node[parts[-1]] = value
    return out


def _time_text(value: Any) -> Any:
    if type(value) is float:  # the usual case, once per document written: format_timestamp's
        return iso_timestamp(value)  # own call (a call less)
    if isinstance(value, float | int) and not isinstance(value, bool):
        return format_timestamp(value)
    return value


def plan_tree(keys: tuple[str, ...]) -> dict[str, Any] | None:
    """The nesting of documents with exactly these keys, in this order: dicts nested like
    the output, in its order, each leaf the position of its value among the document's
    values; None where no plan can take the keys (none, or a key that is also the head of
    another: values decide, as ``nest_each_key`` does)."""
    heads = {
        ".".join(parts[:i]) for parts in (k.split(".") for k in keys) for i in range(1, len(parts))
    }
    if not keys or heads.intersection(keys):
        return None
    tree: dict[str, Any] = {}
    for position, key in enumerate(keys):
        parts = key.split(".")
        node = tree
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = position
    return tree


def _plan(keys: tuple[str, ...]) -> Plan:
    """A function nesting documents with exactly these keys, in this order.

    Key names enter the generated source only as ``repr`` of an exact ``str`` (a closed
    string literal, whatever its text), so no key can inject code: the dicts are then built
    from constant keys (``BUILD_CONST_KEY_MAP``, about 0.05 us a document less than loading
    a name per key); anything else would be bound as a constant (``K0``...)."""
    tree = plan_tree(keys)
    if tree is None:
        return nest_each_key
    names: dict[str, str] = {}

    def const(text: str) -> str:
        if type(text) is str:  # noqa: E721 - exactly str: a subclass may have its own repr
            return repr(text)
        if text not in names:
            names[text] = f"K{len(names)}"
        return names[text]

    def literal(node: dict[str, Any]) -> str:
        items = []
        for part, child in node.items():
            if isinstance(child, dict):
                value = literal(child)
            elif keys[child] in TIME_FIELDS:
                # a time: text on output; a float (the usual case) straight to
                # iso_timestamp, without _time_text's interpreted call (about 0.05 us less)
                value = f"(I(v{child}) if type(v{child}) is F else T(v{child}))"
            else:
                value = f"v{child}"
            items.append(f"{const(part)}: {value}")
        return "{" + ", ".join(items) + "}"

    body = literal(tree)
    unpack = ", ".join(f"v{i}" for i in range(len(keys)))
    source = f"def nest_planned(doc):\n    {unpack}, = doc.values()\n    return {body}\n"
    namespace: dict[str, Any] = {name: text for text, name in names.items()}
    namespace.update(T=_time_text, I=iso_timestamp, F=float)
    exec(compile(source, "<nest plan>", "exec"), namespace)  # noqa: S102 - source made above
    planned: Plan = namespace["nest_planned"]
    return planned


def flatten(nested: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """The inverse of :func:`nest` (lists are kept as values)."""
    out: dict[str, Any] = {}
    for key, value in nested.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


# Keys other than text (a decoded table keyed by number) need OPT_NON_STR_KEYS, which makes
# every document about twice as slow to serialise: documents go without it first (the bytes
# of a document with text keys are the same either way), and again with it when refused.
_ORJSON_OPTIONS = orjson.OPT_NON_STR_KEYS


def default_value(value: Any) -> Any:
    """Values JSON has no type for: bytes as hex, sets as sorted lists, anything else as text."""
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    if isinstance(value, set | frozenset):
        return sorted(value, key=str)
    return str(value)


def dumps_or_raise(doc: dict[str, Any]) -> bytes:
    """:func:`dumps` where orjson can (its output is read back by ``orjson.loads`` as it was
    written); raises ``orjson.JSONEncodeError`` where :func:`dumps` falls back."""
    try:
        return orjson.dumps(doc, default=default_value)
    except orjson.JSONEncodeError:
        return orjson.dumps(doc, default=default_value, option=_ORJSON_OPTIONS)


def dumps(doc: dict[str, Any]) -> bytes:
    """Compact JSON bytes for one document, whatever plain values it holds."""
    try:
        return orjson.dumps(doc, default=default_value)
    except orjson.JSONEncodeError:
        pass
    try:
        return orjson.dumps(doc, default=default_value, option=_ORJSON_OPTIONS)
    except orjson.JSONEncodeError:
        # orjson refuses integers beyond 64 bits (e.g. a decoded 128-bit OPC UA value).
        return json.dumps(
            doc, default=default_value, separators=(",", ":"), ensure_ascii=False
        ).encode()
