"""The fields of Modbus/TCP records (``network.protocol: modbus``): the one declaration the
Sigma field list, the Elasticsearch mapping, the baseline's identity fields and
docs/schema.md are derived from."""

from __future__ import annotations

from sensor.protocols.schema import Field, FieldType, boolean, hexa, keyword, long, obj, prefixed

FIELDS: dict[str, Field] = {
    **prefixed(
        "modbus",
        {
            "transaction_id": long("MBAP transaction identifier"),
            "unit_id": long("MBAP unit identifier (the serial-line device behind a gateway)"),
            "function_code": long("function code, without the exception bit (0x80)"),
            "function": keyword(
                "function name, snake_case: read_holding_registers; user_defined_65; unknown_42"
            ),
            "exception_code": long("exception code of an exception response"),
            "exception": keyword("exception name: illegal_data_address, server_device_busy, ..."),
            "address": long(
                "first coil or register (FC 1-6, 15, 16, 22; the write address of FC 23; the "
                "FIFO pointer of FC 24)"
            ),
            "quantity": long("number of coils or registers"),
            "values": long(
                "register or coil values, values[i] at address + i: of the response for reads, "
                "of the request for writes"
            ),
            "read_address": long("FC 23: first register read"),
            "read_quantity": long("FC 23: registers read"),
            "write_address": long("FC 23: first register written"),
            "write_quantity": long("FC 23: registers written"),
            "read_values": long("FC 23: the registers read, from the response"),
            "and_mask": long("FC 22: AND mask"),
            "or_mask": long("FC 22: OR mask"),
            "subfunction": long("FC 8 diagnostics subfunction"),
            "subfunction_name": keyword(
                "FC 8 subfunction name: restart_communications_option, force_listen_only_mode, ..."
            ),
            "diagnostic_data": long("FC 8 data field when it is 2 bytes (else modbus.data)"),
            "exception_status": long("FC 7 response: the exception status byte"),
            "status": long("FC 11 / 12 responses: status word"),
            "event_count": long("FC 11 / 12 responses: event counter"),
            "message_count": long("FC 12 response: message counter"),
            "file_records": obj(
                "FC 20 / 21 sub-requests",
                reference_type=long("reference type (6)"),
                file=long("file number"),
                record=long("record number"),
                length=long("record length, registers"),
                values=long("FC 21: the registers written"),
            ),
            "fifo_address": long("FC 24: FIFO pointer address"),
            "mei_type": long("FC 43: MEI type (13 CANopen, 14 device identification)"),
            "read_device_id_code": long("FC 43/14: read device id code (1 basic ... 4 one object)"),
            "object_id": long("FC 43/14 request: first object id"),
            "conformity_level": long("FC 43/14 response: conformity level"),
            "more_follows": long("FC 43/14 response: more follows (0xff: ask again)"),
            "objects": Field(
                FieldType.MAP,
                "FC 43/14 response: object name -> text (vendor_name, product_code, "
                "major_minor_revision, model_name, ...)",
            ),
            "server_id": hexa("FC 17 response: the device-specific server id and run indicator"),
            "data": hexa("a request body icsmon does not decode (user or unknown functions)"),
            "response_data": hexa("a response body icsmon does not decode"),
            "truncated": boolean("more values than limits.max_items were present"),
            "skipped_bytes": long("anomaly: bytes skipped to the next plausible MBAP header"),
            "direction": keyword("anomaly: request or response"),
        },
    ),
    "ics.device.vendor": keyword("FC 43/14 VendorName"),
    "ics.device.product": keyword("FC 43/14 ProductName, else ProductCode"),
    "ics.device.product_code": keyword("FC 43/14 ProductCode"),
    "ics.device.model": keyword("FC 43/14 ModelName"),
    "ics.device.firmware": keyword("FC 43/14 MajorMinorRevision"),
    "ics.device.description": keyword(
        "FC 17: the longest readable text of the device-specific server id"
    ),
}

# Sigma logsource services (network.protocol values) -> the field prefixes their rules see
SERVICES: dict[str, tuple[str, ...]] = {"modbus": ("modbus.",)}

# What a write carries, for the rollups' min/max written (sensor/rollups.py): service -> a
# list field of numbers, or "<list of objects>.<key>"
WRITTEN_VALUES: dict[str, str] = {"modbus": "modbus.values"}
