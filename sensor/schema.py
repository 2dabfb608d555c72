"""The event schema, declared once: the envelope the flow layer writes on every event, the
fields every dissector record carries, and each dissector's own fields
(``sensor/protocols/<name>/fields.py``).

Derived from it: the fields Sigma rules may name (``detectors/sigma/fields.py``), the
Elasticsearch mapping of events (``pipeline/es.py``), the identity the asset observer and
the baseline watch (``device_fields``), and the field tables of docs/schema.md
(``python -m sensor.schema`` prints them; a test keeps the file in step).
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType

from sensor.protocols import DISSECTORS
from sensor.protocols.schema import DEVICE_PREFIX, Field, FieldType, keyword, long

# Written by the flow layer on every event (sensor/events.py, sensor/engine.py).
ENVELOPE: dict[str, Field] = {
    "@timestamp": Field(
        FieldType.DATE,
        "request time (capture time, UTC, microseconds); the response's when no request was seen",
    ),
    "ecs.version": keyword("ECS version the documents follow"),
    "event.kind": keyword("event (alert for alerts)"),
    "event.category": keyword("network"),
    "event.dataset": keyword(
        "ics.modbus, ics.s7comm, ics.s7comm_plus, ics.opcua, ics.dnp3, ics.iec104, ics.enip; "
        "ics.capture for the packet layer"
    ),
    "event.id": keyword(
        "deterministic: the same capture gives the same ids (redelivery cannot duplicate)"
    ),
    "network.transport": keyword("tcp or udp"),
    "network.type": keyword("ipv4 or ipv6"),
    "network.protocol": keyword(
        "modbus, s7comm, s7comm-plus, opcua, dnp3, iec104, enip (EtherNet/IP with CIP)"
    ),
    "network.community_id": keyword("Community ID v1 of the flow"),
    "network.bytes": long(
        "Payload bytes (TCP or UDP) of the flow, both directions, since its previous event: what this "
        "transaction moved (the rollups' bytes)"
    ),
    "source.ip": Field(
        FieldType.IP, "the client (master, HMI, engineering station, controlling station)"
    ),
    "source.port": long("the client's port"),
    "source.mac": keyword("the client's MAC (upper case, dashes), when the link layer shows it"),
    "destination.ip": Field(
        FieldType.IP, "the server (PLC, RTU, OPC UA server, outstation, controlled station)"
    ),
    "destination.port": long("the server's port"),
    "destination.mac": keyword("the server's MAC, when the link layer shows it"),
    "observer.name": keyword("the sensor's name"),
    "observer.type": keyword("sensor"),
    "observer.product": keyword("icsmon"),
    "organization.id": keyword("the organisation (enterprise), from the sensor's configuration"),
    "labels.site": keyword("the site, from the sensor's configuration"),
}

# Carried by every dissector record (sensor/protocols/base.py says what each means).
RECORD: dict[str, Field] = {
    "event.action": keyword(
        "kebab-case name of what happened: read-holding-registers, plc-stop; anomaly"
    ),
    "event.type": keyword(
        "protocol plus access (reads), change (writes, programs, control), info, start or error"
    ),
    "event.outcome": keyword("success, failure (exception, error code), unknown (no answer seen)"),
    "event.duration": long("response time, ns"),
    "ics.operation": keyword("read, write, program, control, diagnostic, session, other"),
    "ics.function": keyword("the protocol's own function name, snake_case"),
    "ics.pairing": keyword(
        "paired, request-only (no answer seen), response-only (request not seen)"
    ),
    "error.type": keyword("anomalies: a code of the protocol's Anomaly enum"),
    "error.message": Field(FieldType.TEXT, "anomalies: one sentence"),
}


def dissector_fields(module: ModuleType) -> dict[str, Field]:
    """What one dissector package declares (its ``fields.FIELDS``)."""
    return module.fields.FIELDS  # type: ignore[no-any-return]


def event_fields() -> dict[str, Field]:
    """Every field an event may carry. A name several dissectors declare has one type."""
    out = {**ENVELOPE, **RECORD}
    for module in DISSECTORS:
        for name, field in dissector_fields(module).items():
            known = out.get(name)
            if known is not None and known.type != field.type:
                raise TypeError(f"{name}: {known.type} elsewhere, {field.type} in {module.NAME}")
            out.setdefault(name, field)
    return out


def device_fields() -> frozenset[str]:
    """The ``ics.device.*`` identity fields the dissectors fill (asset records, baseline)."""
    return frozenset(
        name
        for module in DISSECTORS
        for name in dissector_fields(module)
        if name.startswith(DEVICE_PREFIX)
    )


def asset_fields() -> dict[str, Field]:
    """The protocol fields of asset records (``ASSET_FIELDS`` of the dissectors that have
    them): a station's link or common addresses."""
    out: dict[str, Field] = {}
    for module in DISSECTORS:
        out.update(getattr(module.fields, "ASSET_FIELDS", {}))
    return out


def asset_sources() -> dict[str, tuple[tuple[str, str, str], ...]]:
    """``network.protocol`` -> its (event field, side, asset field) triples."""
    out: dict[str, tuple[tuple[str, str, str], ...]] = {}
    for module in DISSECTORS:
        sources = getattr(module.fields, "ASSET_SOURCES", ())
        for service in module.fields.SERVICES if sources else ():
            out[service] = tuple(sources)
    return out


@dataclass(frozen=True, slots=True)
class WrittenValues:
    """Where a protocol's write events carry the values written (``WRITTEN_VALUES`` of its
    ``fields.py``): a list of numbers, or of objects holding the number under ``key``."""

    field: str
    key: str | None
    operations: tuple[str, ...]  # the ``ics.operation`` values that write them


def written_values() -> dict[str, WrittenValues]:
    """``network.protocol`` -> where its writes carry their values (the rollups' min/max
    written). A path that names no declared field is a programming error."""
    out: dict[str, WrittenValues] = {}
    for module in DISSECTORS:
        fields = dissector_fields(module)
        operations = tuple(getattr(module.fields, "WRITTEN_BY", ("write",)))
        for service, path in getattr(module.fields, "WRITTEN_VALUES", {}).items():
            head, _, key = path.rpartition(".")
            if path in fields:
                out[service] = WrittenValues(path, None, operations)
            elif head in fields and key in fields[head].properties:
                out[service] = WrittenValues(head, key, operations)
            else:
                raise ValueError(f"{module.NAME}: WRITTEN_VALUES {path!r} is not a declared field")
    return out


def service_fields(service: str) -> dict[str, Field]:
    """The fields of events whose ``network.protocol`` is ``service``: the envelope, the
    record fields, the identity fields, and the owning dissector's fields under the
    prefixes it lists for that service."""
    out = {**ENVELOPE, **RECORD}
    for module in DISSECTORS:
        prefixes = module.fields.SERVICES.get(service)
        if prefixes is None:
            continue
        for name, field in dissector_fields(module).items():
            if name.startswith(prefixes) or name.startswith(DEVICE_PREFIX):
                out[name] = field
    return out


def services() -> tuple[str, ...]:
    """Every ``network.protocol`` a dissector writes."""
    return tuple(s for module in DISSECTORS for s in module.fields.SERVICES)


# ---- docs/schema.md ---------------------------------------------------------------------------

DOC_BEGIN = "<!-- fields: generated by `python -m sensor.schema`; do not edit by hand -->"
DOC_END = "<!-- end of generated fields -->"


def _rows(fields: dict[str, Field]) -> list[str]:
    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("<", "&lt;")

    rows = []
    for name, field in fields.items():
        rows.append(f"| `{name}` | {field.type} | {cell(field.description)} |")
        for key, sub in field.properties.items():
            rows.append(f"| `{name}[].{key}` | {sub.type} | {cell(sub.description)} |")
    return rows


def markdown() -> str:
    """The generated part of docs/schema.md: the envelope, the record fields, each
    dissector's fields and its anomaly codes."""
    head = "| field | type | meaning |\n| --- | --- | --- |"
    parts = [
        DOC_BEGIN,
        "",
        "### Every event (the flow layer)",
        "",
        head,
        *_rows(ENVELOPE),
        *_rows(RECORD),
    ]
    for module in DISSECTORS:
        doc = (module.fields.__doc__ or "").strip().split("\n\n", 1)
        note = " ".join(doc[1].split()) if len(doc) > 1 else ""
        parts += ["", f"### {module.NAME} (`sensor/protocols/{module.NAME}/fields.py`)", ""]
        if note:
            parts += [note, ""]
        parts += [head, *_rows(dissector_fields(module))]
        parts += [
            "",
            f"Anomalies (`error.type`, `sensor/protocols/{module.NAME}/anomalies.py`):",
            "",
        ]
        parts += [f"- `{code}`: {code.description}" for code in module.Anomaly]
    parts += ["", DOC_END]
    return "\n".join(parts) + "\n"


if __name__ == "__main__":
    import sys

    sys.stdout.write(markdown())
