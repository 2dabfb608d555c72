"""The fields of S7comm (``network.protocol: s7comm``) and S7comm-plus (``s7comm-plus``)
records: the one declaration the Sigma field list, the Elasticsearch mapping, the baseline's
identity fields and docs/schema.md are derived from.

Connection fields (``s7comm.cotp.*``) are carried on every later record of the connection,
S7comm-plus ones included. In a paired record the unprefixed fields describe the request PDU
(or the response when no request was seen) and ``s7comm.response.*`` the response PDU."""

from __future__ import annotations

from sensor.protocols.schema import Field, FieldType, boolean, hexa, keyword, long, obj, prefixed

ANY = FieldType.ANY

S7COMM: dict[str, Field] = {
    # COTP connection (CR/CC)
    "cotp.src_tsap": keyword(
        "calling TSAP: hex like 0100, or the text when printable (SIMATIC-ROOT-HMI)"
    ),
    "cotp.dst_tsap": keyword("called TSAP, the same way"),
    "cotp.connection_type": long("first byte of a 2-byte called TSAP"),
    "cotp.connection_type_name": keyword("pg, op, s7-basic or other"),
    "cotp.rack": long("rack, from the called TSAP (rack << 5 | slot)"),
    "cotp.slot": long("slot, from the called TSAP"),
    "cotp.tpdu_size": long("COTP TPDU size in force (the confirm's)"),
    "cotp.reason": long("cotp-disconnect: the DR reason code"),
    "initiator": keyword("server: a job sent by the PLC; client or server: who disconnected"),
    # header
    "rosctr": long("ROSCTR: 1 job, 2 ack, 3 ack_data, 7 userdata"),
    "rosctr_name": keyword("job, ack, ack_data or userdata"),
    "pdu_reference": long("PDU reference (pairs a job with its ack)"),
    "error_class": long("ack header error class"),
    "error_code": long("ack header error code"),
    "error_name": keyword("error class name when not zero: access_error, no_resources, ..."),
    "malformed": boolean("the parameters did not parse (an anomaly record says why)"),
    # jobs
    "function_code": long("job function code"),
    "function": keyword(
        "job function: setup_communication, read_var, write_var, request_download, "
        "download_block, download_ended, start_upload, upload, end_upload, plc_control, "
        "plc_stop, cpu_services"
    ),
    "item_count": long("items of a read/write var job or a cyclic subscription"),
    "items": obj(
        "read/write var and cyclic subscription items, request and response merged",
        syntax_id=long("variable specification syntax id (0x10 S7ANY, 0xb0 DBREAD, ...)"),
        transport_size=long("request transport size"),
        area=long("memory area code"),
        area_name=keyword("memory area: I, Q, M, DB, DI, L, V, P, C, T, ..."),
        db=long("data block number"),
        byte=long("byte address"),
        bit=long("bit address"),
        length=long("number of elements"),
        areas=Field(ANY, "DBREAD items: the (length, db, byte) areas read"),
        address=hexa("other address kinds (NCK, DriveES, symbolic), raw"),
        return_code=long("item return code (0xff success)"),
        return_code_name=keyword("success, access_denied, invalid_address, ..."),
        data_transport_size=long("data transport size"),
        data=hexa("item data, first 256 bytes"),
        data_length=long("item data length, bytes"),
        data_truncated=boolean("more data than the 256 bytes kept"),
        value=Field(ANY, "the value of a one-element BIT/BYTE/WORD/INT/DWORD/DINT/REAL item"),
    ),
    "response.rosctr": long("the response's ROSCTR"),
    "response.function_code": long("the response's function code"),
    "response.item_count": long("the response's item count"),
    "pdu_size": long("setup communication: negotiated PDU size"),
    "max_amq_calling": long("setup communication: parallel jobs, calling side"),
    "max_amq_called": long("setup communication: parallel jobs, called side"),
    # blocks
    "block.type": keyword("OB, DB, SDB, FC, SFC, FB, SFB"),
    "block.number": long("block number"),
    "block.filesystem": keyword("P passive, A active, B"),
    "block.filename": keyword("block file name, e.g. _0A00001P"),
    "block.length": long("request download / start upload: load memory length"),
    "block.mc7_length": long("MC7 code length"),
    "block.data_length": long("bytes in an upload / download block answer"),
    "block.more_data": boolean("more upload / download blocks follow"),
    "block.counts": Field(ANY, "list blocks answer: block type -> count"),
    "block.count": long("list blocks of type answer: number of blocks"),
    "block.author": keyword("get block info: author"),
    "block.family": keyword("get block info: family"),
    "block.name": keyword("get block info: name"),
    "block.version": keyword("get block info: version"),
    "block.checksum": long("get block info: checksum"),
    "block.language": long("get block info: language code"),
    "block.load_memory_length": long("get block info: load memory length"),
    "block.code_timestamp": keyword("get block info: code time (ISO, local PLC time)"),
    "block.interface_timestamp": keyword("get block info: interface time (ISO, local PLC time)"),
    "upload_id": long("upload id (upload and end upload jobs carry the block of their start)"),
    # PI services
    "pi_service": keyword("PI service: _INSE, _DELE, P_PROGRAM, _MODU, _GARB, ..."),
    "pi.operation": keyword(
        "insert-block, delete-block, hot-start, cold-start, copy-ram-to-rom, compress-memory, ..."
    ),
    "pi.parameter": keyword("PI service parameter block, as text"),
    "pi.blocks": keyword("blocks named by an insert or delete"),
    # userdata
    "userdata.type": long("0 push, 4 request, 8 response"),
    "userdata.type_name": keyword("push, request, response, ..."),
    "userdata.group": long("function group"),
    "userdata.group_name": keyword("cpu_functions, block_functions, time_functions, ..."),
    "userdata.subfunction": long("subfunction"),
    "userdata.subfunction_name": keyword(
        "tshark's name, snake_case: read_szl, list_blocks, modify_variable, force, "
        "memory_reset, set_clock, plc_password, ..."
    ),
    "userdata.sequence_number": long("userdata sequence number"),
    "userdata.return_code": long("data return code (0xff success)"),
    "userdata.error_code": long("the response's error code (not zero: failure)"),
    "userdata.last_data_unit": boolean("false when more fragments follow"),
    "szl.id": long("SZL id read"),
    "szl.index": long("SZL index read"),
    "szl.record_count": long("SZL records in the answer"),
    "szl.follow_up": boolean("a request for the next part of a long SZL answer"),
    "clock": keyword("the time read or set (ISO, local PLC time)"),
    "mode": keyword("mode-transition push: stop, run, warm_restart, ..."),
    "diagnostic.events": obj(
        "a pushed diagnostic message, or the entries of a diagnostic buffer read (SZL 0x00A0)",
        event_id=long("event id"),
        event_class=long("event class (event id >> 12)"),
        priority_class=long("priority class"),
        ob_number=long("OB number"),
        time=keyword("time of the entry (ISO, local PLC time)"),
    ),
    "protection.level": long("SZL 0x0132/4: the valid protection level (1 none, 3 strictest)"),
    "protection.assigned_level": long("the level set in the hardware configuration (0: none)"),
    "protection.key_switch_level": long("the key switch's protection level"),
    "protection.mode_switch": keyword("run, run-p, stop, mres or undefined"),
    "protection.startup_switch": keyword("crst, wrst or undefined"),
}

S7COMM_PLUS: dict[str, Field] = {
    "version": long("PDU type byte: 1, 2, 3"),
    "opcode": long("0x31 request, 0x32 response, 0x33 notification, 0x02 response2"),
    "opcode_name": keyword("request, response, notification, response2"),
    "function_code": long("function code"),
    "function": keyword(
        "explore, create_object, delete_object, set_variable, get_variable, "
        "set_multi_variables, get_multi_variables, invoke, begin_sequence, end_sequence, ..."
    ),
    "sequence_number": long("sequence number (pairs a request with its response)"),
    "session_id": long("request header: session id"),
    "transport_flags": long("transport flags"),
    "integrity": boolean("the PDU carries an integrity digest (version 3)"),
    "digest_length": long("integrity digest length"),
    "data_length": long("bytes of the reassembled data part"),
    "fragments": long("TPKT packets the message spanned"),
    "body_decoded": boolean("false: item bodies are not decoded, only the header structure"),
    "return_value": long("the response's leading 64-bit return value, signed"),
    "error_code": long("the return value's low 16 bits, signed (negative: failure)"),
    "response.opcode": long("the response's opcode"),
    "response.sequence_number": long("the response's sequence number"),
    "response.data_length": long("the response's data length"),
    "response.fragments": long("the response's fragments"),
    "created_object_id": long("CreateObject answer: the first object id (the new session)"),
    "subscription_id": long("notification: subscription object id"),
}

FIELDS: dict[str, Field] = {
    **prefixed("s7comm", S7COMM),
    **prefixed("s7comm_plus", S7COMM_PLUS),
    "ics.device.vendor": keyword("Siemens, when an SZL answer or the module string names it"),
    "ics.device.order_number": keyword(
        "SZL 0x0011 index 1, or the CreateObject module string (6ES7 511-1AK00-0AB0)"
    ),
    "ics.device.firmware": keyword("SZL 0x0011 index 7, or the module string (V2.9.4)"),
    "ics.device.hardware": keyword("SZL 0x0011 index 1: hardware version"),
    "ics.device.name": keyword("SZL 0x001C index 1: automation system name"),
    "ics.device.model": keyword("SZL 0x001C index 2: module name"),
    "ics.device.plant": keyword("SZL 0x001C index 3: plant designation"),
    "ics.device.serial": keyword("SZL 0x001C index 5: serial number"),
    "ics.device.module_type": keyword("SZL 0x001C index 7: module type name"),
}

# Sigma logsource services (network.protocol values) -> the field prefixes their rules see;
# S7comm-plus records carry the connection's COTP fields (s7comm.cotp.*) too.
SERVICES: dict[str, tuple[str, ...]] = {
    "s7comm": ("s7comm.",),
    "s7comm-plus": ("s7comm_plus.", "s7comm."),
}

# What a write carries, for the rollups' min/max written (sensor/rollups.py): service -> a
# list field of numbers, or "<list of objects>.<key>"
WRITTEN_VALUES: dict[str, str] = {"s7comm": "s7comm.items.value"}
