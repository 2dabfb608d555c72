"""The event fields rules may use: what the flow layer and each dissector emit.

``icsmon rules check`` refuses a rule that names a field outside this list (a typo or a
field no dissector produces would make the rule silently dead). Keep it in step with the
field tables in the docstrings of ``sensor/protocols/*.py``; tests/detectors/test_rules.py checks
that every protocol field a shipped rule uses is documented there.
"""

from __future__ import annotations

# Set by the flow layer on every event (docs/schema.md).
COMMON: frozenset[str] = frozenset(
    {
        "@timestamp",
        "ecs.version",
        "event.kind",
        "event.category",
        "event.type",
        "event.action",
        "event.dataset",
        "event.outcome",
        "event.duration",
        "event.id",
        "network.transport",
        "network.type",
        "network.protocol",
        "network.community_id",
        "network.direction",
        "source.ip",
        "source.port",
        "source.mac",
        "destination.ip",
        "destination.port",
        "destination.mac",
        "related.ip",
        "observer.name",
        "observer.type",
        "observer.product",
        "organization.id",
        "labels.site",
        "ics.operation",
        "ics.function",
        "ics.pairing",
        "ics.device.vendor",
        "ics.device.product",
        "ics.device.model",
        "ics.device.order_number",
        "ics.device.firmware",
        "ics.device.serial",
        "ics.device.name",
        "ics.device.plant",
        "ics.device.application_uri",
        "ics.device.product_code",
        "ics.device.server_id",
        "ics.device.hardware_version",
        "ics.device.module_name",
        "ics.device.module_type",
        "error.type",
        "error.message",
    }
)

MODBUS: frozenset[str] = frozenset(
    "modbus." + f
    for f in (
        "transaction_id",
        "unit_id",
        "function_code",
        "function",
        "exception_code",
        "exception",
        "address",
        "quantity",
        "values",
        "read_values",
        "read_address",
        "read_quantity",
        "write_address",
        "write_quantity",
        "and_mask",
        "or_mask",
        "subfunction",
        "subfunction_name",
        "diagnostic_data",
        "exception_status",
        "event_count",
        "message_count",
        "status",
        "file_records",
        "fifo_address",
        "mei_type",
        "read_device_id_code",
        "object_id",
        "conformity_level",
        "more_follows",
        "objects",
        "server_id",
        "run_indicator",
        "data",
        "response_data",
        "truncated",
        "skipped_bytes",
        "direction",
    )
)

S7COMM: frozenset[str] = frozenset(
    "s7comm." + f
    for f in (
        "cotp.src_tsap",
        "cotp.dst_tsap",
        "cotp.connection_type",
        "cotp.connection_type_name",
        "cotp.rack",
        "cotp.slot",
        "cotp.tpdu_size",
        "rosctr",
        "rosctr_name",
        "pdu_reference",
        "function_code",
        "function",
        "item_count",
        "items",
        "response.rosctr",
        "response.function_code",
        "response.item_count",
        "error_class",
        "error_code",
        "initiator",
        "pdu_size",
        "max_amq_calling",
        "max_amq_called",
        "block.type",
        "block.number",
        "block.filesystem",
        "block.filename",
        "block.length",
        "upload_id",
        "pi_service",
        "pi.operation",
        "pi.parameter",
        "pi.blocks",
        "userdata.type",
        "userdata.type_name",
        "userdata.group",
        "userdata.group_name",
        "userdata.subfunction",
        "userdata.subfunction_name",
        "userdata.sequence_number",
        "userdata.return_code",
        "userdata.error_code",
        "userdata.last_data_unit",
        "szl.id",
        "szl.index",
        "szl.record_count",
        "clock",
        "mode",
        "block.counts",
        "malformed",
    )
)

# Lists of objects: a rule may name ``<list>.<key>`` and matches when any element's key does
# (what Elasticsearch does with arrays of objects).
NESTED: dict[str, frozenset[str]] = {
    "s7comm.items": frozenset(
        {
            "syntax_id",
            "transport_size",
            "area",
            "area_name",
            "db",
            "byte",
            "bit",
            "length",
            "return_code",
            "return_code_name",
            "data",
            "data_length",
            "data_truncated",
            "value",
        }
    ),
    "opcua.values": frozenset({"type", "value", "status_code"}),
    "opcua.input_arguments": frozenset({"type", "value"}),
    "opcua.output_arguments": frozenset({"type", "value"}),
    "modbus.file_records": frozenset({"file", "record", "length"}),
}

S7COMM_PLUS: frozenset[str] = frozenset(
    "s7comm_plus." + f
    for f in (
        "version",
        "opcode",
        "opcode_name",
        "function_code",
        "function",
        "sequence_number",
        "session_id",
        "transport_flags",
        "integrity",
        "digest_length",
        "data_length",
        "body_decoded",
        "return_value",
        "response.sequence_number",
        "created_object_id",
        "subscription_id",
    )
)

OPCUA: frozenset[str] = frozenset(
    "opcua." + f
    for f in (
        "message_type",
        "chunk_count",
        "response_chunk_count",
        "secure_channel_id",
        "token_id",
        "sequence_number",
        "response_sequence_number",
        "request_id",
        "security_policy_uri",
        "security_policy",
        "security_mode",
        "encrypted",
        "signed",
        "certificate_present",
        "service",
        "service_type_id",
        "response_type_id",
        "service_node_id",
        "request_handle",
        "status_code",
        "status",
        "service_fault",
        "aborted",
        "protocol_version",
        "receive_buffer_size",
        "send_buffer_size",
        "max_message_size",
        "max_chunk_count",
        "revised_receive_buffer_size",
        "revised_send_buffer_size",
        "revised_max_message_size",
        "revised_max_chunk_count",
        "endpoint_url",
        "error_reason",
        "server_uri",
        "request_type",
        "requested_lifetime",
        "revised_lifetime",
        "application_uri",
        "product_uri",
        "application_name",
        "application_type",
        "client.application_uri",
        "client.product_uri",
        "client.application_name",
        "client.application_type",
        "session_name",
        "session_id",
        "endpoint_count",
        "endpoint_urls",
        "security_policy_uris",
        "security_modes",
        "user_token_types",
        "server_count",
        "server_application_uris",
        "discovery_urls",
        "server_names",
        "identity_token",
        "identity_policy_id",
        "user_name",
        "password_encrypted",
        "delete_subscriptions",
        "node_ids",
        "attribute_ids",
        "attributes",
        "values",
        "result_codes",
        "browse_paths",
        "target_node_ids",
        "reference_count",
        "browse_names",
        "continuation_point_count",
        "object_ids",
        "method_ids",
        "input_arguments",
        "output_arguments",
        "subscription_id",
        "publishing_interval",
        "revised_publishing_interval",
        "lifetime_count",
        "max_keep_alive_count",
        "priority",
        "publishing_enabled",
        "monitored_item_ids",
        "monitoring_mode",
        "acknowledgement_count",
        "notification_sequence_number",
        "notification_count",
        "more_notifications",
        "registered_node_ids",
        "parent_node_ids",
        "subscription_ids",
        "truncated",
        "decode_error",
    )
)


ENIP: frozenset[str] = frozenset(
    [
        "enip." + f
        for f in (
            "command", "command_name", "session_handle", "status", "status_name",
            "sender_context", "connection_id", "sequence", "protocol_version", "options_flags",
            "services", "interface_count", "skipped_bytes",
            "identity.vendor_id", "identity.vendor", "identity.device_type",
            "identity.device_type_name", "identity.product_code", "identity.revision",
            "identity.status", "identity.serial", "identity.product_name", "identity.state",
            "identity.state_name", "identity.encapsulation_version", "identity.socket_address",
            "identity.socket_port",
        )
    ]
    + [
        "cip." + f
        for f in (
            "service_code", "service", "response_service_code", "class", "class_name",
            "classes", "instance", "attribute", "member", "connection_point", "tag", "via",
            "route", "multiple_index", "multiple_count", "status", "status_name",
            "extended_status", "data_type", "structure_handle", "elements", "offset", "values",
            "data", "response_data", "or_mask", "and_mask", "attribute_count", "attributes",
            "reset_type",
        )
    ]
    + [
        "cip.connection." + f
        for f in (
            "o_t_id", "t_o_id", "serial", "originator_vendor_id", "originator_serial",
            "timeout_multiplier", "o_t_rpi", "t_o_rpi", "o_t_api", "t_o_api", "o_t_size",
            "t_o_size", "o_t_type", "t_o_type", "transport_class", "trigger", "class",
            "instance", "connection_point", "route", "key_vendor_id", "key_product_code",
        )
    ]
)  # fmt: skip


def _with_nested(fields: frozenset[str]) -> frozenset[str]:
    extra = {f"{base}.{key}" for base, keys in NESTED.items() if base in fields for key in keys}
    return fields | extra


BY_SERVICE: dict[str | None, frozenset[str]] = {
    "modbus": _with_nested(COMMON | MODBUS),
    "s7comm": _with_nested(COMMON | S7COMM),
    # S7comm-plus records carry the connection's COTP fields (s7comm.cotp.*) too.
    "s7comm-plus": _with_nested(COMMON | S7COMM_PLUS | S7COMM),
    "opcua": _with_nested(COMMON | OPCUA),
    "enip": COMMON | ENIP,
    None: _with_nested(COMMON | MODBUS | S7COMM | S7COMM_PLUS | OPCUA | ENIP),
}

SERVICES: tuple[str, ...] = ("modbus", "s7comm", "s7comm-plus", "opcua", "enip")


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
    return name.endswith(".ip")
