"""The fields of IEC 60870-5-104 records (``network.protocol: iec104``): the one declaration
the Sigma field list, the Elasticsearch mapping, the baseline's identity fields and
docs/schema.md are derived from.

An ASDU record describes the ASDU that opened the transaction (the command, or the
monitoring data); ``iec104.response.*`` and ``iec104.confirmation`` / ``terminated`` what
answered it. U-format records carry ``iec104.u_function`` and its answer."""

from __future__ import annotations

from sensor.protocols.schema import Field, FieldType, boolean, keyword, long, obj, prefixed

FIELDS: dict[str, Field] = prefixed(
    "iec104",
    {
        "frame": keyword("APDU format: I (information), U (unnumbered function)"),
        "u_function": keyword("U-format: startdt_act, stopdt_act, testfr_act (or the con alone)"),
        "response.u_function": keyword("U-format: the con that answered"),
        "initiator": keyword("which side sent the first APDU of the record: client or server"),
        "send_sequence": long("N(S) of the I-format APDU"),
        "receive_sequence": long("N(R) of the I-format APDU"),
        "expected_sequence": long("anomaly: the N(S) that was expected"),
        "type_id": long("type identification"),
        "type": keyword("type mnemonic: M_SP_NA_1, C_SC_NA_1, C_SE_NC_1, C_IC_NA_1, ..."),
        "cause": long("cause of transmission (6 bits)"),
        "cause_name": keyword(
            "spontaneous, periodic, activation, activation_confirmation, "
            "activation_termination, interrogated_station, request, unknown_ioa, ..."
        ),
        "negative": boolean("the P/N bit: a negative confirmation"),
        "test": boolean("the T bit: a test ASDU"),
        "originator_address": long("originator address (second octet of the cause)"),
        "common_address": long("common address of the ASDU (the station)"),
        "broadcast": boolean("common address 65535: every station"),
        "sequence": boolean("the SQ bit: consecutive addresses from the first IOA"),
        "ioa_count": long("number of information objects (or elements)"),
        "ioa": long("information object addresses, in order"),
        "objects": obj(
            "information objects",
            ioa=long("information object address"),
            value=Field(
                FieldType.ANY,
                "the element: 0/1 single point, 0-3 double point, normalised as a fraction, "
                "scaled as an integer, short float, bitstring, counter, command state",
            ),
            quality=keyword(
                "quality flags set: invalid, not_topical, substituted, blocked, overflow"
            ),
            time=keyword("CP56Time2a time tag, ISO 8601 (invalid when out of range)"),
            time_ms=long("CP24/CP16 time tag: milliseconds of the minute"),
            select=boolean("command qualifier S/E: select (true) or execute"),
            qualifier=long("qualifier of command (QU) or set point (QL)"),
            sequence=long("integrated totals: sequence number"),
            transient=boolean("step position: transient state"),
        ),
        "values": Field(
            FieldType.ANY, "the element values in IOA order (numbers; NaN and infinities as text)"
        ),
        "select": boolean("a command's S/E bit: select (true) or execute (false)"),
        "qualifier": long("qualifier of the command, set point, interrogation (QOI) or reset"),
        "time": keyword("clock synchronisation or a command's CP56Time2a, ISO 8601"),
        "response.time": keyword("clock synchronisation: the time in the confirmation"),
        "reset": keyword("reset process: general_reset or reset_event_buffer"),
        "initialization": keyword(
            "end of initialisation: local_power_on, local_manual_reset, remote_reset"
        ),
        "parameters_changed": boolean("end of initialisation after a change of parameters"),
        "confirmation": keyword("positive or negative (the P/N bit, or a refusal cause)"),
        "terminated": boolean("the activation termination was seen"),
        "response.cause": long("cause of the confirmation"),
        "response.cause_name": keyword("activation_confirmation, unknown_ioa, ..."),
        "response.type": keyword("read: the type of the data returned"),
        "response.values": Field(FieldType.ANY, "read: the values returned (at most 16)"),
        "interrogation.asdus": long("ASDUs that answered an interrogation"),
        "interrogation.objects": long("information objects that answered an interrogation"),
        "file.name": long("file transfer: name of file (NOF)"),
        "file.section": long("file transfer: name of section"),
        "file.length": long("file transfer: length of file or section"),
        "truncated": boolean("more objects than limits.max_items were present"),
        "decode_error": Field(FieldType.TEXT, "why the objects were not decoded"),
        "skipped_bytes": long("anomaly: octets skipped to the next APCI"),
        "direction": keyword("anomaly: request or response"),
    },
)

# Sigma logsource services (network.protocol values) -> the field prefixes their rules see
SERVICES: dict[str, tuple[str, ...]] = {"iec104": ("iec104.",)}

# What a write carries, for the rollups' min/max written (sensor/rollups.py): service -> a
# list field of numbers, or "<list of objects>.<key>"
WRITTEN_VALUES: dict[str, str] = {"iec104": "iec104.values"}

# What the traffic says about the hosts on either side, kept in their asset records
# (sensor/assets.py: a list per asset; the broadcast address left out, and a server's only
# from exchanges that succeeded: a sweep names common addresses nobody answers for).
ASSET_FIELDS: dict[str, Field] = {
    "asset.iec104.common_addresses": long(
        "IEC 104 common addresses (stations) a controlled station answered for"
    ),
}
# (event field, side of the flow it describes, asset field)
ASSET_SOURCES: tuple[tuple[str, str, str], ...] = (
    ("iec104.common_address", "server", "asset.iec104.common_addresses"),
)
