"""The event fields rules may use, derived from the event schema (``sensor/schema.py``: the
flow layer's envelope and each dissector's ``fields.py``).

``icsmon rules check`` refuses a rule that names a field outside this list (a typo or a
field no dissector produces would make the rule silently dead).
"""

from __future__ import annotations

from sensor.protocols.schema import Field, FieldType
from sensor.schema import event_fields, service_fields, services

_EVENT_FIELDS = event_fields()

# Lists of objects: a rule may name ``<list>.<key>`` and matches when any element's key does
# (what Elasticsearch does with arrays of objects).
NESTED: dict[str, frozenset[str]] = {
    name: frozenset(field.properties)
    for name, field in _EVENT_FIELDS.items()
    if field.type == FieldType.OBJECT
}

SERVICES: tuple[str, ...] = services()


def _names(fields: dict[str, Field]) -> frozenset[str]:
    nested = {f"{name}.{key}" for name, field in fields.items() for key in field.properties}
    return frozenset(fields) | nested


BY_SERVICE: dict[str | None, frozenset[str]] = {
    **{service: _names(service_fields(service)) for service in SERVICES},
    None: _names(_EVENT_FIELDS),
}

_IP_FIELDS = frozenset(name for name, f in _EVENT_FIELDS.items() if f.type == FieldType.IP)


def known_fields(service: str | None) -> frozenset[str]:
    return BY_SERVICE.get(service, BY_SERVICE[None])


def nested_path(name: str) -> tuple[str, str] | None:
    """``s7comm.items.area_name`` -> (``s7comm.items``, ``area_name``); None for flat fields."""
    for base in NESTED:
        if name.startswith(base + "."):
            return base, name[len(base) + 1 :]
    return None


def is_ip_field(name: str) -> bool:
    """Fields ES maps as ``ip``: a CIDR value matches them as a range, as ES does."""
    return name in _IP_FIELDS
