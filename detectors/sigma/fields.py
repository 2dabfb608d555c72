"""The event fields rules may use: what the flow layer and each dissector emit.

``icsmon rules check`` refuses a rule that names a field outside this list (a typo or a
field no dissector produces would make the rule silently dead). Keep it in step with the
field tables in the docstrings of ``sensor/protocols/*.py``; tests/test_rules.py checks
that every protocol field a shipped rule uses is documented there.
"""

from __future__ import annotations

# Set by the flow layer on every event (docs/schema.md).
COMMON: frozenset[str] = frozenset(
    {
        "@timestamp", "ecs.version", "event.kind", "event.category", "event.type", "event.action",
        "event.dataset", "event.outcome", "event.duration", "event.id",
        "network.transport", "network.type", "network.protocol", "network.community_id",
        "network.direction",
        "source.ip", "source.port", "source.mac", "destination.ip", "destination.port",
        "destination.mac", "related.ip",
        "observer.name", "observer.type", "observer.product", "organization.id", "labels.site",
        "ics.operation", "ics.function", "ics.pairing",
        "ics.device.vendor", "ics.device.product", "ics.device.model", "ics.device.order_number",
        "ics.device.firmware", "ics.device.serial", "ics.device.name", "ics.device.plant",
        "ics.device.application_uri", "ics.device.product_code", "ics.device.server_id",
        "error.type", "error.message",
    }
)

MODBUS: frozenset[str] = frozenset(
    "modbus." + f
    for f in (
        "transaction_id", "unit_id", "function_code", "function", "exception_code", "exception",
        "address", "quantity", "values", "read_values", "read_address", "read_quantity",
        "write_address", "write_quantity", "and_mask", "or_mask", "subfunction",
        "subfunction_name", "diagnostic_data", "exception_status", "event_count",
        "message_count", "status", "file_records", "fifo_address", "mei_type",
        "read_device_id_code", "object_id", "conformity_level", "more_follows", "objects",
        "server_id", "run_indicator", "data", "response_data", "truncated", "skipped_bytes",
        "direction",
    )
)

S7COMM: frozenset[str] = frozenset(
    "s7comm." + f
    for f in (
        "rosctr", "rosctr_name", "pdu_reference", "function_code", "function", "item_count",
        "items", "area", "area_name", "db_number", "address", "transport_size", "length",
        "return_code", "error_class", "error_code", "error", "szl.id", "szl.index",
        "userdata.group", "userdata.group_name", "userdata.subfunction",
        "userdata.subfunction_name", "block.type", "block.number", "block.filename",
        "pi_service", "pi_parameters", "session_id", "cotp.pdu_type", "tpkt.length",
    )
)

S7COMM_PLUS: frozenset[str] = frozenset(
    "s7comm_plus." + f
    for f in (
        "version", "opcode", "opcode_name", "function_code", "function", "session_id",
        "sequence_number", "integrity", "object_id", "return_value",
    )
)

OPCUA: frozenset[str] = frozenset(
    "opcua." + f
    for f in (
        "message_type", "secure_channel_id", "security_policy_uri", "security_mode",
        "request_id", "request_handle", "service", "service_id", "status_code",
        "status_code_name", "endpoint_url", "identity_token", "user_name", "session_id",
        "node_id", "node_ids", "node_count", "attribute_id", "method_id", "object_id",
        "browse_count", "subscription_id", "monitored_item_count", "application_uri",
        "application_name", "server_uris",
    )
)

BY_SERVICE: dict[str | None, frozenset[str]] = {
    "modbus": COMMON | MODBUS,
    "s7comm": COMMON | S7COMM,
    "s7comm-plus": COMMON | S7COMM_PLUS | S7COMM,
    "opcua": COMMON | OPCUA,
    None: COMMON | MODBUS | S7COMM | S7COMM_PLUS | OPCUA,
}

SERVICES: tuple[str, ...] = ("modbus", "s7comm", "s7comm-plus", "opcua")


def known_fields(service: str | None) -> frozenset[str]:
    return BY_SERVICE.get(service, BY_SERVICE[None])


def is_ip_field(name: str) -> bool:
    """Fields ES maps as ``ip``: a CIDR value matches them as a range, as ES does."""
    return name.endswith(".ip")
