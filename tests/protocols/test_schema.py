"""The event schema (sensor/schema.py and each sensor/protocols/<name>/fields.py) holds what
the dissectors really write: every key of every golden output, with a value of its declared
type; and what is derived from it (docs/schema.md) is in step.

Regenerate the tables of docs/schema.md after a change: ``ICSMON_UPDATE_GOLDEN=1 .venv/bin/pytest
tests/protocols/test_schema.py`` (or ``python -m sensor.schema``)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pytest

from pipeline.docs import flatten
from sensor.protocols import DISSECTORS
from sensor.protocols.schema import DEVICE_PREFIX, Field, FieldType
from sensor.schema import DOC_BEGIN, DOC_END, event_fields, markdown, services
from tests.support import PCAPS, REPO

FIELDS = event_fields()
# what the alert builder adds to an event (detectors/alerts.py), not part of the event schema
ALERT_NAMESPACES = (
    "rule.",
    "threat.",
    "icsmon.",
    "tags",
    "event.severity",
    "event.start",
    "event.end",
)
TEXT_TYPES = (FieldType.KEYWORD, FieldType.TEXT, FieldType.HEX, FieldType.DATE, FieldType.IP)


def fits(field: Field, value: Any) -> bool:
    """Does ``value`` (or each element of a list) have the field's declared type?"""
    if isinstance(value, list):
        return all(fits(field, v) for v in value)
    t = field.type
    if t == FieldType.ANY:
        return True
    if t in TEXT_TYPES:
        return isinstance(value, str)
    if t == FieldType.LONG:
        return isinstance(value, int) and not isinstance(value, bool)
    if t == FieldType.DOUBLE:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if t == FieldType.BOOLEAN:
        return isinstance(value, bool)
    if t == FieldType.MAP:
        return isinstance(value, dict) and all(isinstance(v, str) for v in value.values())
    if t == FieldType.OBJECT:
        return isinstance(value, dict) and all(
            k in field.properties and fits(field.properties[k], v) for k, v in value.items()
        )
    return False


def problems(doc: dict[str, Any], alert: bool = False) -> list[str]:
    """Keys of a flat document the schema does not declare, or whose value does not fit."""
    out = []
    for key, value in doc.items():
        if alert and key.startswith(ALERT_NAMESPACES):
            continue
        if key in FIELDS:
            if not fits(FIELDS[key], value):
                out.append(f"{key}: {value!r} is not {FIELDS[key].type}")
            continue
        # a dict value flattened into dotted keys: a map, an any, or a single object
        parts = key.split(".")
        parent = next(
            (
                ".".join(parts[:i])
                for i in range(len(parts) - 1, 0, -1)
                if ".".join(parts[:i]) in FIELDS
            ),
            None,
        )
        if parent is None:
            out.append(f"{key}: not declared")
            continue
        field, rest = FIELDS[parent], key[len(parent) + 1 :]
        if field.type == FieldType.MAP:
            ok = isinstance(value, str)
        elif field.type == FieldType.OBJECT:
            ok = rest in field.properties and fits(field.properties[rest], value)
        else:
            ok = field.type == FieldType.ANY
        if not ok:
            out.append(f"{key}: not declared under {parent} ({field.type})")
    return out


GOLDEN_EVENTS = sorted(PCAPS.rglob("*.events.jsonl"))
GOLDEN_ALERTS = sorted(PCAPS.rglob("*.alerts.jsonl"))


@pytest.mark.parametrize("path", GOLDEN_EVENTS, ids=lambda p: p.name)
def test_every_key_of_every_golden_event_is_declared(path: Path) -> None:
    found = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        found += [f"line {n}: {p}" for p in problems(flatten(json.loads(line)))]
    assert not found, "\n".join(found[:20])


@pytest.mark.parametrize("path", GOLDEN_ALERTS, ids=lambda p: p.name)
def test_the_event_fields_of_every_golden_alert_are_declared(path: Path) -> None:
    found = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        found += [f"line {n}: {p}" for p in problems(flatten(json.loads(line)), alert=True)]
    assert not found, "\n".join(found[:20])


def test_declarations_are_well_formed() -> None:
    name = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$")
    for module in DISSECTORS:
        declared = module.fields.FIELDS
        prefixes = tuple(p for ps in module.fields.SERVICES.values() for p in ps)
        for key, field in declared.items():
            assert name.match(key), key
            assert key.startswith(prefixes) or key.startswith(DEVICE_PREFIX), (module.NAME, key)
            assert field.description, key
            for sub in field.properties.values():
                assert sub.description, key
    assert set(services()) == {
        "modbus", "s7comm", "s7comm-plus", "opcua", "dnp3", "iec104", "enip",
    }  # fmt: skip


def test_device_identity_fields_include_what_s7_emits() -> None:
    """S7 writes ics.device.hardware and module_type (SZL 0x0011 / 0x001C): the identity
    lists named hardware_version and module_name, so the baseline never watched them."""
    from detectors.baseline.features import IDENTITY_FIELDS

    watched = {field for field, _name in IDENTITY_FIELDS}
    assert {"ics.device.hardware", "ics.device.module_type"} <= watched


def test_docs_schema_md_is_generated_from_the_declarations(update_golden: bool) -> None:
    path = REPO / "docs" / "schema.md"
    text = path.read_text()
    start, end = text.find(DOC_BEGIN), text.find(DOC_END)
    assert start >= 0 and end > start, f"{path}: the generated-fields markers are missing"
    current = text[start : end + len(DOC_END)] + "\n"
    if update_golden or os.environ.get("ICSMON_UPDATE_GOLDEN"):
        path.write_text(text[:start] + markdown() + text[end + len(DOC_END) + 1 :])
        return
    assert current == markdown(), "docs/schema.md is behind the field declarations: regenerate it"
