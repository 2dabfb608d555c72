"""Flat dotted documents <-> nested ECS JSON."""

from __future__ import annotations

from typing import Any

from sensor.timestamps import TIME_FIELDS, format_timestamp


def nest(flat: dict[str, Any]) -> dict[str, Any]:
    """``{"source.ip": x}`` -> ``{"source": {"ip": x}}``; ``@timestamp`` stays at the top.
    The output form of a document: times carried as numbers become ISO 8601 text here."""
    out: dict[str, Any] = {}
    for key, value in flat.items():
        if key in TIME_FIELDS and isinstance(value, float | int) and not isinstance(value, bool):
            value = format_timestamp(value)
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
