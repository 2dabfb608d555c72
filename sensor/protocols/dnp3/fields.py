"""The fields of DNP3 records (``network.protocol: dnp3``): the one declaration the Sigma field
list, the Elasticsearch mapping, the baseline's identity fields and docs/schema.md are
derived from.

Unprefixed fields describe the request (or the response when it came alone: unsolicited
responses, responses whose request was not seen); ``dnp3.response.*`` the response of a pair.
Link-service records (no application data) carry ``dnp3.source``, ``dnp3.destination`` and
``dnp3.link.*``."""

from __future__ import annotations

from sensor.protocols.schema import Field, FieldType, boolean, keyword, long, obj, prefixed

ANY = FieldType.ANY


def _objects(side: str) -> Field:
    return obj(
        f"object headers of the {side}, in order",
        group=long("object group"),
        variation=long("object variation (0: any, in requests)"),
        type=keyword("gXvY: g12v1, g60v2, g70v3, ..."),
        name=keyword("group name: binary_output_command, class_data, file_control, ..."),
        qualifier=long("qualifier octet (prefix code << 4 | range code)"),
        start=long("first point of a start-stop range"),
        stop=long("last point of a start-stop range"),
        count=long("number of objects (0 with all)"),
        all=boolean("qualifier 0x06: all points of the group"),
        points=Field(
            ANY,
            "decoded objects: CROB (index, code, operation, tcc, count, on_time, off_time, "
            "status, status_name), analog output blocks (index, value, status, status_name)",
        ),
    )


FIELDS: dict[str, Field] = {
    **prefixed(
        "dnp3",
        {
            "master": long("link address of the master (the source of requests)"),
            "outstation": long("link address of the outstation"),
            "source": long("link-service records and anomalies: source link address"),
            "destination": long("link-service records and anomalies: destination link address"),
            "broadcast": boolean("sent to a broadcast address (0xFFFD-0xFFFF)"),
            "function_code": long("application function code"),
            "function": keyword(
                "application function: read, write, select, operate, direct_operate, "
                "cold_restart, stop_application, disable_unsolicited, unsolicited_response, ..."
            ),
            "sequence": long("application sequence number"),
            "application.control": long("application control octet (FIR, FIN, CON, UNS, SEQ)"),
            "segments": long("transport segments of the request when more than one"),
            "objects": _objects("request (or of the response alone)"),
            "object_types": keyword("the gXvY types of dnp3.objects, in order, once each"),
            "decode_error": Field(
                FieldType.TEXT, "why object decoding stopped early (an unknown object size)"
            ),
            "response.function_code": long("function code of the response (129)"),
            "response.function": keyword("response, authentication_response"),
            "response.application.control": long("application control octet of the response"),
            "response.objects": _objects("response"),
            "response.object_types": keyword("the gXvY types of dnp3.response.objects"),
            "response.fragments": long("application fragments of a multi-fragment response"),
            "response.decode_error": Field(
                FieldType.TEXT, "why decoding the response's objects stopped early"
            ),
            "iin": long("internal indications of the response: IIN1 << 8 | IIN2"),
            "iin_flags": keyword(
                "IIN bits set: device_restart, need_time, local_control, device_trouble, "
                "no_function_code_support, object_unknown, parameter_error, ..."
            ),
            "unsolicited": boolean("an unsolicited response, or the CONFIRM of one"),
            "points": long("indexes of the output points commanded (CROB, analog output blocks)"),
            "values": Field(FieldType.DOUBLE, "analog output block values, in point order"),
            "operations": keyword(
                "CROB operations: latch_on, latch_off, pulse_on, pulse_off, trip, close, nul"
            ),
            "control_status": keyword(
                "status of each control object echoed in the response: success, no_select, "
                "not_supported, ..."
            ),
            "time": Field(FieldType.DATE, "time and date (group 50) written or read, UTC"),
            "time_interval_ms": long("group 50 variation 2: the interval, ms"),
            "time_delay_ms": long("time delay (group 52) of a delay measurement answer, ms"),
            "file.name": keyword("file control: the file named (open, delete, specification)"),
            "file.names": keyword("file descriptors of a directory read or file information"),
            "file.mode": keyword("open mode: read, write, append, null"),
            "file.handle": long("file handle"),
            "file.size": long("file size, octets"),
            "file.block": long("file transport block number"),
            "file.last_block": boolean("the last block of a file transport"),
            "file.data_length": long("octets of file data carried"),
            "file.status": keyword("file command or transport status: success, file_not_found"),
            "file.permissions": long("file permissions (Unix style bits)"),
            "file.created": Field(FieldType.DATE, "file creation time, UTC"),
            "file.max_block_size": long("maximum block size"),
            "file.request_id": long("file command request id"),
            "file.user_name": keyword("file authentication: the user name (never the password)"),
            "attributes": Field(
                FieldType.MAP,
                "device attributes (group 0): manufacturer_name, product_name_and_model, "
                "software_version, serial_number, ... -> value as text",
            ),
            "iin_written": long("a WRITE of group 80: the indications written"),
            "restart_cleared": boolean("a WRITE of group 80 cleared the device-restart bit"),
            "link.function": keyword(
                "link service: reset_link_states, test_link_states, request_link_status, ..."
            ),
            "link.function_code": long("link function code of the frame"),
            "link.primary": boolean("the frame is a primary (initiating) frame"),
            "link.response_function": keyword("the answering link frame: ack, nack, link_status"),
            "link.response_function_code": long("the answering frame's link function code"),
            "truncated": boolean("more objects than limits.max_items were present"),
            "skipped_bytes": long("anomaly: octets skipped to the next link frame"),
            "direction": keyword("anomaly: request or response"),
        },
    ),
    "ics.device.vendor": keyword("group 0 attribute 252: device manufacturer's name"),
    "ics.device.product": keyword("group 0 attribute 250: device product name and model"),
    "ics.device.firmware": keyword("group 0 attribute 242: manufacturer's software version"),
    "ics.device.hardware": keyword("group 0 attribute 243: manufacturer's hardware version"),
    "ics.device.serial": keyword("group 0 attribute 248: device serial number"),
    "ics.device.name": keyword("group 0 attribute 247: user-assigned device name"),
    "ics.device.plant": keyword("group 0 attribute 245: user-assigned location"),
}

# Sigma logsource services (network.protocol values) -> the field prefixes their rules see
SERVICES: dict[str, tuple[str, ...]] = {"dnp3": ("dnp3.",)}

# What a write carries, for the rollups' min/max written (sensor/rollups.py): service -> a
# list field of numbers, or "<list of objects>.<key>"
WRITTEN_VALUES: dict[str, str] = {"dnp3": "dnp3.values"}
# analog output blocks are control functions (select/operate), not writes
WRITTEN_BY: tuple[str, ...] = ("write", "control")

# What the traffic says about the hosts on either side, kept in their asset records
# (sensor/assets.py: a list per asset; broadcast addresses left out, and a server's only from
# exchanges that succeeded: a scan names addresses nobody answers on).
ASSET_FIELDS: dict[str, Field] = {
    "asset.dnp3.link_addresses": long(
        "DNP3 link addresses the host answered as outstation or sent from as master"
    ),
}
# (event field, side of the flow it describes, asset field)
ASSET_SOURCES: tuple[tuple[str, str, str], ...] = (
    ("dnp3.outstation", "server", "asset.dnp3.link_addresses"),
    ("dnp3.master", "client", "asset.dnp3.link_addresses"),
)
