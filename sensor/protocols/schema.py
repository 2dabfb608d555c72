"""What a dissector declares about its output: its anomaly codes (a closed enum) and, in
``fields``, the fields it emits with their types.

Everything else that names those codes or fields (the Sigma field list, the Elasticsearch
mapping, the baseline's identity fields, docs/schema.md) is derived from these declarations.
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass


class ProtocolAnomaly(enum.StrEnum):
    """Base of each protocol's ``Anomaly`` enum: a member is its kebab-case ``error.type``
    code and carries a one-line description (for docs/schema.md).

        class Anomaly(ProtocolAnomaly):
            MBAP_BAD_HEADER = "mbap-bad-header", "bytes that are not a valid MBAP header"
    """

    description: str

    def __new__(cls, code: str, description: str = "") -> ProtocolAnomaly:
        member = str.__new__(cls, code)
        member._value_ = code
        member.description = description
        return member


# ---- fields --------------------------------------------------------------------------------


class FieldType(enum.StrEnum):
    """What a field's value is (each maps to one Elasticsearch mapping, pipeline/es.py)."""

    KEYWORD = "keyword"  # a name, code or short text, matched exactly
    TEXT = "text"  # free text (searched by words)
    LONG = "long"  # an integer
    DOUBLE = "double"  # a number that may have a fraction
    BOOLEAN = "boolean"
    IP = "ip"
    DATE = "date"  # ISO 8601 text
    HEX = "hex"  # bytes as hex (long: kept whole, matched exactly)
    OBJECT = "object"  # an object (or list of objects) whose keys are ``properties``
    MAP = "map"  # an object whose keys are data (names -> text), indexed as they come
    ANY = "any"  # JSON of any shape, kept but not indexed


@dataclass(frozen=True)
class Field:
    """One field of a document: its type, a one-line description and, for objects, the
    fields of each element. A field may hold a list of such values (ECS style)."""

    type: FieldType
    description: str
    properties: dict[str, Field] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        if (self.type == FieldType.OBJECT) != bool(self.properties):
            raise ValueError(f"{self.description!r}: properties go with the object type only")


def keyword(description: str) -> Field:
    return Field(FieldType.KEYWORD, description)


def long(description: str) -> Field:
    return Field(FieldType.LONG, description)


def boolean(description: str) -> Field:
    return Field(FieldType.BOOLEAN, description)


def hexa(description: str) -> Field:
    return Field(FieldType.HEX, description)


def obj(description: str, **properties: Field) -> Field:
    return Field(FieldType.OBJECT, description, properties)


def prefixed(prefix: str, fields: dict[str, Field]) -> dict[str, Field]:
    """``{"unit_id": ...}`` under ``modbus.`` -> ``{"modbus.unit_id": ...}``."""
    return {f"{prefix}.{name}": field for name, field in fields.items()}


# The identity a record may carry about its server: the asset observer folds these into the
# server's asset record and the baseline watches them for change. A dissector lists the ones
# it fills in its FIELDS (with its own description of where each comes from).
DEVICE_PREFIX = "ics.device."
