"""The fields of EtherNet/IP records (``network.protocol: enip``): the one declaration the
Sigma field list, the Elasticsearch mapping, the baseline's identity fields and
docs/schema.md are derived from.

``enip.io.*`` counts implicit I/O on UDP 2222 (one record per connection and interval);
``enip.*`` is otherwise the encapsulation (every record) and what the commands without CIP carry
(ListIdentity, ListServices, ListInterfaces, RegisterSession); ``cip.*`` is one CIP service
of SendRRData / SendUnitData: a Multiple Service Packet gives one record per embedded
request, an Unconnected Send the request it routes."""

from __future__ import annotations

from sensor.protocols.schema import Field, FieldType, hexa, keyword, long, prefixed

_DOUBLE = FieldType.DOUBLE

FIELDS: dict[str, Field] = {
    **prefixed(
        "enip",
        {
            "command": long("encapsulation command (0x63 ListIdentity, 0x6f SendRRData, ...)"),
            "command_name": keyword(
                "list_identity, list_services, list_interfaces, register_session, "
                "unregister_session, send_rr_data, send_unit_data, nop, ..."
            ),
            "session_handle": long("session handle of the request (the reply's when alone)"),
            "status": long("encapsulation status of the reply (0 success)"),
            "status_name": keyword(
                "when not 0: invalid_command, invalid_session_handle, ... (status_0x8 outside "
                "the specification's list)"
            ),
            "sender_context": hexa("sender context of an unconnected exchange (pairs them)"),
            "connection_id": long("connected messaging: the connection id of the address item"),
            "sequence": long("connected messaging: the sequence count of the data item"),
            "protocol_version": long("RegisterSession: encapsulation protocol version"),
            "options_flags": long("RegisterSession: option flags"),
            "services": keyword("ListServices reply: the names of the services offered"),
            "interface_count": long("ListInterfaces / ListTargets reply: items in the list"),
            "skipped_bytes": long("anomaly: bytes skipped to the next plausible header"),
            "io.connection_id": long("implicit I/O (UDP 2222): the connection id of the datagrams"),
            "io.sender": keyword("implicit I/O: client or server, the side of the flow that sent"),
            "io.packets": long("implicit I/O: datagrams of this connection in the record's span"),
            "io.bytes": long("implicit I/O: bytes of connected data in those datagrams"),
            "io.data_size": long("implicit I/O: size of the last datagram's connected data"),
            "io.first_sequence": long("implicit I/O: first sequence number of the span"),
            "io.last_sequence": long("implicit I/O: highest sequence number of the span"),
            "io.lost": long("implicit I/O: sequence numbers skipped (datagrams lost or not seen)"),
            "io.repeated": long("implicit I/O: datagrams repeating or behind the last sequence"),
            "io.mean_interval_us": long("implicit I/O: mean time between datagrams, us"),
            "identity.vendor_id": long("ListIdentity / Identity object: vendor id"),
            "identity.vendor": keyword(
                "vendor name for the common vendors (Rockwell Automation/Allen-Bradley, "
                "Omron, Schneider Electric, ...), else vendor_<id>"
            ),
            "identity.device_type": long("CIP device type (14 programmable logic controller)"),
            "identity.device_type_name": keyword(
                "programmable_logic_controller, communications_adapter, ac_drive, ..."
            ),
            "identity.product_code": long("product code"),
            "identity.revision": keyword("revision major.minor, the minor on three digits"),
            "identity.status": long("Identity status word"),
            "identity.serial": keyword("serial number, 0x and 8 hex digits"),
            "identity.product_name": keyword("product name (1756-L61/B LOGIX5561)"),
            "identity.state": long("state (3 operational)"),
            "identity.state_name": keyword("nonexistent, self_testing, standby, operational, ..."),
            "identity.encapsulation_version": long("ListIdentity: encapsulation version"),
            "identity.socket_address": Field(
                FieldType.IP, "ListIdentity: the address the device says it has"
            ),
            "identity.socket_port": long("ListIdentity: the port the device says it serves"),
        },
    ),
    **prefixed(
        "cip",
        {
            "service_code": long("CIP service code, without the reply bit (0x80)"),
            "service": keyword(
                "service name in the context of its class: get_attribute_single, "
                "read_tag, write_tag, forward_open, reset, stop, initiate_download; "
                "service_0x4c when the class gives it no public name"
            ),
            "response_service_code": long(
                "the reply's service when it is not the request's (a routing failure "
                "answers the Unconnected Send)"
            ),
            "class": long("class of the request path (the last one when several)"),
            "class_name": keyword(
                "identity, assembly, connection_manager, symbol, ... or class_0x8e"
            ),
            "classes": long("every class of a path naming an object inside another"),
            "instance": long("instance of the request path"),
            "attribute": long("attribute of the request path"),
            "member": long("member of the request path"),
            "connection_point": long("connection point of the request path"),
            "tag": keyword("symbolic tag of the path, elements in brackets: Program:Main.Speed[2]"),
            "via": keyword(
                "the wrappers the service came in: unconnected_send, multiple_service_packet"
            ),
            "route": keyword(
                "the Unconnected Send's route, port/link hops: 1/0 is backplane slot 0"
            ),
            "multiple_index": long("position in its Multiple Service Packet"),
            "multiple_count": long("services in its Multiple Service Packet"),
            "status": long("CIP general status of the reply (0 success, 6 partial transfer)"),
            "status_name": keyword("success, path_destination_unknown, privilege_violation, ..."),
            "extended_status": long("additional status words of the reply"),
            "data_type": keyword("Logix tag services: dint, real, int, bool, ..., struct"),
            "structure_handle": long("Logix tag services: the handle of a structure type"),
            "elements": long("Logix tag services: elements read or written"),
            "offset": long("fragmented tag services: byte offset"),
            "values": Field(
                _DOUBLE,
                "Logix tag services: the values written (request) or read (reply), elementary "
                "types, at most 64",
            ),
            "data": hexa("Set_Attribute / Set_Member data, first 64 bytes"),
            "response_data": hexa("Get_Attribute_Single / Get_Member reply data, first 64 bytes"),
            "or_mask": hexa("Read-Modify-Write Tag: OR mask"),
            "and_mask": hexa("Read-Modify-Write Tag: AND mask"),
            "attribute_count": long("Get/Set_Attribute_List: attributes in the list"),
            "attributes": long("Get_Attribute_List: the attribute ids asked for"),
            "reset_type": long("Reset: 0 restart, 1 factory defaults, 2 defaults but keep comms"),
            "connection.o_t_id": long("Forward Open: originator-to-target connection id"),
            "connection.t_o_id": long("Forward Open: target-to-originator connection id"),
            "connection.serial": long("Forward Open / Close: connection serial number"),
            "connection.originator_vendor_id": long("Forward Open / Close: originator vendor"),
            "connection.originator_serial": long("Forward Open / Close: originator serial"),
            "connection.timeout_multiplier": long("Forward Open: connection timeout multiplier"),
            "connection.o_t_rpi": long("Forward Open: requested packet interval O->T, us"),
            "connection.t_o_rpi": long("Forward Open: requested packet interval T->O, us"),
            "connection.o_t_api": long("Forward Open reply: actual packet interval O->T, us"),
            "connection.t_o_api": long("Forward Open reply: actual packet interval T->O, us"),
            "connection.o_t_size": long("Forward Open: connection size O->T, bytes"),
            "connection.t_o_size": long("Forward Open: connection size T->O, bytes"),
            "connection.o_t_type": keyword("Forward Open: null, multicast, point_to_point"),
            "connection.t_o_type": keyword("Forward Open: null, multicast, point_to_point"),
            "connection.transport_class": long("Forward Open: transport class (1 I/O, 3 explicit)"),
            "connection.trigger": keyword("Forward Open: cyclic, change_of_state, application"),
            "connection.class": long("Forward Open / Close: class of the connection path"),
            "connection.instance": long("Forward Open / Close: instance of the connection path"),
            "connection.connection_point": long("Forward Open / Close: connection point"),
            "connection.route": keyword("Forward Open / Close: port/link hops of the path"),
            "connection.key_vendor_id": long("Forward Open: electronic key vendor"),
            "connection.key_product_code": long("Forward Open: electronic key product code"),
        },
    ),
    "ics.device.vendor": keyword("ListIdentity / Identity object: vendor name"),
    "ics.device.product": keyword("ListIdentity / Identity object: product name"),
    "ics.device.model": keyword("ListIdentity / Identity object: product name"),
    "ics.device.product_code": keyword("ListIdentity / Identity object: product code"),
    "ics.device.firmware": keyword("ListIdentity / Identity object: revision major.minor"),
    "ics.device.serial": keyword("ListIdentity / Identity object: serial number"),
    "ics.device.module_type": keyword("ListIdentity / Identity object: device type name"),
}

# Sigma logsource services (network.protocol values) -> the field prefixes their rules see
SERVICES: dict[str, tuple[str, ...]] = {"enip": ("enip.", "cip.")}

# What a write carries, for the rollups' min/max written (sensor/rollups.py): service -> a
# list field of numbers, or "<list of objects>.<key>"
WRITTEN_VALUES: dict[str, str] = {"enip": "cip.values"}
