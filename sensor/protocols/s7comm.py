"""S7comm (S7-300/400) and S7comm-plus (S7-1200/1500) over ISO-on-TCP (TPKT + COTP), TCP 102.

Framing: TPKT (RFC 1006) records split across TCP segments are buffered until complete; COTP
data TPDUs without the EOT bit are joined until the last one (COTP segmentation); S7comm-plus
fragments (each with its own ``72 vv len`` header, only the last with the ``72 vv 00 00``
trailer) are joined too. Every buffer is capped by ``ParserLimits.max_buffer``. After
``gap()`` or garbage the parser scans for a plausible TPKT header (version 3, reserved 0, sane
length) followed by a COTP data or connection TPDU and resumes there.

One record per transaction: an S7comm job is paired with its ack / ack_data by PDU reference,
a userdata request with its userdata response (PDU reference), an S7comm-plus request with its
response (sequence number), a COTP connection request with its confirm. A response with no
request still gives a record; userdata pushes and S7comm-plus notifications give one record
each; requests unanswered after 30 s of capture time (checked when the next request comes),
beyond ``max_pending``, or at ``close()`` give a record with ``event.outcome: unknown``.
Jobs sent by the PLC (during a block download the PLC asks the programming station for the
blocks) are paired the same way and carry ``s7comm.initiator: server``.

Fields (flat, dotted). Names are stable; ints are ints.

Connection (COTP CR/CC, carried on every later record of the connection):
  ``s7comm.cotp.src_tsap`` / ``dst_tsap`` (hex like ``"0100"``, or the text when the TSAP is
  printable such as ``"SIMATIC-ROOT-HMI"``), ``s7comm.cotp.connection_type`` (int, first byte
  of a 2-byte called TSAP) and ``connection_type_name`` (``pg``, ``op``, ``s7-basic``,
  ``other``), ``s7comm.cotp.rack`` / ``slot`` (second byte of the called TSAP: rack << 5 |
  slot), ``s7comm.cotp.tpdu_size``. The connect record itself has ``event.action:
  cotp-connect``; a COTP DR gives ``cotp-disconnect`` (``s7comm.cotp.reason``,
  ``s7comm.initiator``).

S7comm (``network.protocol: s7comm``). Unprefixed fields describe the request PDU (or the
response when no request was seen); ``s7comm.response.*`` the response PDU of the pair:
  ``s7comm.rosctr`` (1 job, 2 ack, 3 ack_data, 7 userdata), ``s7comm.rosctr_name``,
  ``s7comm.pdu_reference``, ``s7comm.function_code`` / ``s7comm.function`` (job functions:
  ``setup_communication``, ``read_var``, ``write_var``, ``request_download``,
  ``download_block``, ``download_ended``, ``start_upload``, ``upload``, ``end_upload``,
  ``plc_control`` (PI service), ``plc_stop``, ``cpu_services``), ``s7comm.item_count``
  (read/write var, cyclic subscriptions), ``s7comm.items`` (list of dicts: ``syntax_id``,
  ``transport_size``, ``area``, ``area_name`` (``I``, ``Q``, ``M``, ``DB``, ``DI``, ``L``,
  ``V``, ``P``, ``C``, ``T``, ...), ``db``, ``byte``, ``bit``, ``length``, ``areas`` (DBREAD
  items), ``address`` (hex of other address kinds), ``return_code``, ``return_code_name``,
  ``data_transport_size``, ``data`` (hex, first 256 bytes), ``data_length``,
  ``data_truncated``, ``value`` (one-element BIT/BYTE/WORD/INT/DWORD/DINT/REAL items)),
  ``s7comm.response.rosctr``, ``s7comm.response.function_code``,
  ``s7comm.response.item_count``, ``s7comm.error_class`` / ``s7comm.error_code`` (ack
  header) and ``s7comm.error_name`` when not zero, ``s7comm.initiator: server`` (jobs sent
  by the PLC), ``s7comm.malformed`` (the parameters did not parse; an anomaly record says
  why), ``s7comm.pdu_size`` and ``s7comm.max_amq_calling`` / ``max_amq_called`` (setup
  communication: the negotiated values when the ack was seen),
  ``s7comm.block.type`` (``OB``, ``DB``, ``SDB``, ``FC``, ``SFC``, ``FB``, ``SFB``),
  ``s7comm.block.number``, ``s7comm.block.filesystem`` (``P`` passive, ``A`` active, ``B``),
  ``s7comm.block.filename``, ``s7comm.block.length`` / ``mc7_length`` (request download,
  start upload), ``s7comm.block.data_length`` (bytes in an upload / download block answer),
  ``s7comm.block.more_data``, ``s7comm.upload_id`` (upload and end upload jobs carry the
  block of their start upload), ``s7comm.pi_service`` (``_INSE``, ``_DELE``, ``P_PROGRAM``,
  ``_MODU``, ``_GARB``, ...), ``s7comm.pi.operation`` (``insert-block``, ``delete-block``,
  ``hot-start``, ``cold-start``, ``copy-ram-to-rom``, ``compress-memory``, ...),
  ``s7comm.pi.parameter``, ``s7comm.pi.blocks``.
Userdata: ``s7comm.userdata.type`` (0 push, 4 request, 8 response) / ``type_name``,
  ``s7comm.userdata.group`` / ``group_name``, ``s7comm.userdata.subfunction`` /
  ``subfunction_name`` (tshark's names in snake_case: ``read_szl``, ``list_blocks``,
  ``modify_variable``, ``force``, ``memory_reset``, ``set_clock``, ``plc_password``, ...),
  ``s7comm.userdata.sequence_number``, ``s7comm.userdata.return_code`` and
  ``s7comm.userdata.error_code`` (the response's; a non-zero error code is a failure),
  ``s7comm.userdata.last_data_unit`` (false when more fragments follow),
  ``s7comm.szl.id`` / ``s7comm.szl.index`` / ``s7comm.szl.record_count``,
  ``s7comm.szl.follow_up`` (a request for the next part of a long SZL answer), ``s7comm.clock``
  (ISO time read or set), ``s7comm.mode`` (mode-transition pushes),
  ``s7comm.diagnostic.events`` (list of ``event_id``, ``event_class``, ``priority_class``,
  ``ob_number``, ``time``: a pushed diagnostic message, or the entries of a diagnostic
  buffer read, SZL 0x00A0), ``s7comm.block.counts``
  (list blocks answer), ``s7comm.block.count`` (list blocks of type answer), from a get block
  info answer the block header: ``s7comm.block.author``, ``family``, ``name``, ``version``,
  ``checksum``, ``language``, ``load_memory_length``, ``mc7_length``, ``code_timestamp``,
  ``interface_timestamp`` (ISO, local PLC time). Password data
  (security group) is never copied into records.
  Protection from an SZL 0x0132 / 0x0232 index 4 answer: ``s7comm.protection.level`` (the
  CPU's valid protection level: 1 is none, 3 the strictest), ``assigned_level`` (set in the
  hardware configuration; 0: no password), ``key_switch_level``, ``mode_switch`` (``run``,
  ``run-p``, ``stop``, ``mres``, ``undefined``), ``startup_switch`` (``crst``, ``wrst``).
  Identity from SZL 0x0011 / 0x001C answers sent by the server: ``ics.device.vendor``,
  ``order_number``, ``firmware``, ``hardware`` (SZL 0x0011), ``name`` (automation system
  name), ``model`` (module name), ``module_type``, ``plant``, ``serial`` (SZL 0x001C).

S7comm-plus (``network.protocol: s7comm-plus``): ``s7comm_plus.version`` (PDU type byte:
  1, 2, 3), ``s7comm_plus.opcode`` / ``opcode_name`` (request, response, notification,
  response2), ``s7comm_plus.function_code`` / ``function`` (``explore``, ``create_object``,
  ``delete_object``, ``set_variable``, ``get_variable``, ``set_multi_variables``,
  ``get_multi_variables``, ``invoke``, ``begin_sequence``, ``end_sequence``, ``get_link``,
  ...), ``s7comm_plus.sequence_number``, ``s7comm_plus.session_id`` (request header),
  ``s7comm_plus.transport_flags``, ``s7comm_plus.integrity`` (true when the PDU carries an
  integrity digest: version 3), ``s7comm_plus.digest_length``, ``s7comm_plus.data_length``
  (bytes of the reassembled data part), ``s7comm_plus.fragments`` (TPKT packets the message
  spanned), ``s7comm_plus.body_decoded`` (false: item bodies are not decoded, only the public
  header structure is), ``s7comm_plus.return_value`` (the response's leading 64-bit return
  value, as a signed integer) and ``s7comm_plus.error_code`` (its low 16 bits, signed: negative
  means failure), ``s7comm_plus.response.opcode`` /
  ``sequence_number`` / ``data_length`` / ``fragments``, ``s7comm_plus.created_object_id``
  (first object id of a CreateObject answer: the new session), ``s7comm_plus.subscription_id``
  (notifications); identity from the CreateObject answer's module string
  (``1;6ES7 511-1AK00-0AB0;V1.0``): ``ics.device.vendor``, ``order_number``, ``firmware``.
  Keep-alive PDUs (version 0xfe/0xff, or no data) give no record.

Anomalies (``error.type``): ``tpkt-bad-header``, ``cotp-bad-header``, ``cotp-unknown-type``,
``cotp-error``, ``buffer-overflow``, ``s7-short-pdu``, ``s7-bad-length``,
``s7-unknown-rosctr``, ``s7-unknown-protocol``, ``s7-bad-parameter``, ``s7-bad-item``,
``s7plus-short-pdu``, ``s7plus-bad-fragment``, ``too-many-pending``, ``truncated-stream``,
``s7-decode-error`` (a decoder bug caught; the direction resynchronises). Framing errors are
reported once per episode: the parser then skips to the next plausible TPKT header.
"""

from __future__ import annotations

import datetime
import re
import struct
from dataclasses import dataclass, field

from sensor.protocols.base import ParserLimits, Record, anomaly

NAME = "s7comm"
PORTS = (102,)
# The probe wants TPKT + COTP + an S7 header (or a CR with TSAPs): RDP's TPKT/COTP does not pass.
HEURISTIC_DEFAULT = True

PROTO_S7 = "s7comm"
PROTO_PLUS = "s7comm-plus"

# COTP TPDU codes (high nibble of the type byte).
_COTP_CR, _COTP_CC, _COTP_DR, _COTP_DC, _COTP_DT, _COTP_ER = 0xE0, 0xD0, 0x80, 0xC0, 0xF0, 0x70
_COTP_KNOWN = frozenset({_COTP_CR, _COTP_CC, _COTP_DR, _COTP_DC, _COTP_DT, _COTP_ER})
_TPKT_MAX = 65535
_MAX_DATA_BYTES = 256  # item data copied into records (hex); the length is always given
_EPOCH_1984 = datetime.datetime(1984, 1, 1)
_MAX_UPLOAD_IDS = 64  # upload id -> block kept per connection to name upload/end-upload jobs
REQUEST_TIMEOUT = 30.0  # seconds of capture time before an unanswered request is reported

ROSCTR_NAMES = {1: "job", 2: "ack", 3: "ack_data", 7: "userdata"}

# Job functions: name, ics.operation.
JOB_FUNCTIONS: dict[int, tuple[str, str]] = {
    0x00: ("cpu_services", "other"),
    0xF0: ("setup_communication", "session"),
    0x04: ("read_var", "read"),
    0x05: ("write_var", "write"),
    0x1A: ("request_download", "program"),
    0x1B: ("download_block", "program"),
    0x1C: ("download_ended", "program"),
    0x1D: ("start_upload", "program"),
    0x1E: ("upload", "program"),
    0x1F: ("end_upload", "program"),
    0x28: ("plc_control", "control"),
    0x29: ("plc_stop", "control"),
}

AREA_NAMES = {
    0x01: "DR", 0x03: "SI", 0x05: "SF", 0x06: "AI", 0x07: "AQ", 0x1C: "C", 0x1D: "T",
    0x1E: "IEC-C", 0x1F: "IEC-T", 0x80: "P", 0x81: "I", 0x82: "Q", 0x83: "M", 0x84: "DB",
    0x85: "DI", 0x86: "L", 0x87: "V",
}  # fmt: skip

RETURN_CODES = {
    0x00: "reserved", 0x01: "hardware_error", 0x03: "access_denied", 0x05: "invalid_address",
    0x06: "data_type_not_supported", 0x07: "data_type_inconsistent", 0x0A: "object_does_not_exist",
    0xFF: "success",
}  # fmt: skip

ERROR_CLASSES = {
    0x00: "no_error", 0x81: "application_relationship", 0x82: "object_definition",
    0x83: "no_resources", 0x84: "service_processing", 0x85: "supplies", 0x87: "access_error",
}  # fmt: skip

BLOCK_TYPES = {
    "08": "OB",
    "0A": "DB",
    "0B": "SDB",
    "0C": "FC",
    "0D": "SFC",
    "0E": "FB",
    "0F": "SFB",
}

PI_OPERATIONS = {
    "_INSE": "insert-block", "_DELE": "delete-block", "_MODU": "copy-ram-to-rom",
    "_GARB": "compress-memory", "_N_LOGIN_": "login", "_N_LOGOUT": "logout",
}  # fmt: skip

USERDATA_TYPES = {
    0: "push",
    4: "request",
    8: "response",
    3: "nc_push",
    7: "nc_request",
    11: "nc_response",
}

# Userdata function groups: name, default ics.operation.
USERDATA_GROUPS: dict[int, tuple[str, str]] = {
    0: ("mode_transition", "diagnostic"),
    1: ("programmer_commands", "diagnostic"),
    2: ("cyclic_services", "read"),
    3: ("block_functions", "diagnostic"),
    4: ("cpu_functions", "diagnostic"),
    5: ("security", "session"),
    6: ("pbc", "other"),
    7: ("time_functions", "diagnostic"),
    15: ("nc_programming", "program"),
}

# (group, subfunction) -> name, ics.operation (None: the group's default).
USERDATA_SUBFUNCTIONS: dict[tuple[int, int], tuple[str, str | None]] = {
    (1, 1): ("block_status", None), (1, 2): ("variable_status", None),
    (1, 3): ("output_istack", None), (1, 4): ("output_bstack", None),
    (1, 5): ("output_lstack", None), (1, 6): ("time_measurement", None),
    (1, 7): ("force_selection", None), (1, 8): ("modify_variable", "write"),
    (1, 9): ("force", "write"), (1, 10): ("breakpoint", "control"),
    (1, 11): ("exit_hold", "control"), (1, 12): ("memory_reset", "control"),
    (1, 13): ("disable_job", None), (1, 14): ("enable_job", None), (1, 15): ("delete_job", None),
    (1, 16): ("read_job_list", None), (1, 17): ("read_job", None), (1, 18): ("replace_job", None),
    (1, 19): ("block_status_v2", None), (1, 22): ("flash_led", "control"),
    (2, 1): ("cyclic_transfer", None), (2, 4): ("unsubscribe", None),
    (2, 5): ("change_driven_transfer", None), (2, 7): ("change_driven_transfer_modify", None),
    (2, 8): ("rdrec", None),
    (3, 1): ("list_blocks", None), (3, 2): ("list_blocks_of_type", None),
    (3, 3): ("get_block_info", None),
    (4, 1): ("read_szl", None), (4, 2): ("message_service", None),
    (4, 3): ("diagnostic_message", None), (4, 5): ("alarm8_indication", None),
    (4, 6): ("notify_indication", None), (4, 7): ("alarm8_lock", "control"),
    (4, 8): ("alarm8_unlock", "control"), (4, 9): ("scan_indication", None),
    (4, 11): ("alarm_ack", "control"), (4, 12): ("alarm_ack_indication", None),
    (4, 13): ("alarm_lock_indication", None), (4, 14): ("alarm_unlock_indication", None),
    (4, 17): ("alarm_sq_indication", None), (4, 18): ("alarm_s_indication", None),
    (4, 19): ("alarm_query", None), (4, 22): ("notify8_indication", None),
    (5, 1): ("plc_password", None), (5, 2): ("clear_password", None),
    (6, 1): ("bsend_brecv", None),
    (7, 1): ("read_clock", None), (7, 2): ("set_clock", "control"),
    (7, 3): ("read_clock_following", None), (7, 4): ("set_clock", "control"),
    (15, 1): ("nc_request_download", None), (15, 2): ("nc_download_block", None),
    (15, 3): ("nc_continue_download", None), (15, 4): ("nc_download_ended", None),
    (15, 6): ("nc_start_upload", None), (15, 7): ("nc_upload", None),
    (15, 8): ("nc_continue_upload", None),
}  # fmt: skip

MODE_NAMES = {
    0: "stop", 1: "warm_restart", 2: "run", 3: "hot_restart", 4: "hold", 6: "cold_restart",
    9: "run_redundant", 11: "link_up", 12: "update",
}  # fmt: skip

PLUS_OPCODES = {0x31: "request", 0x32: "response", 0x33: "notification", 0x02: "response2"}

# S7comm-plus functions (public Wireshark plugin's table): name, ics.operation.
PLUS_FUNCTIONS: dict[int, tuple[str, str]] = {
    0x04BB: ("explore", "diagnostic"),
    0x04CA: ("create_object", "session"),
    0x04D4: ("delete_object", "session"),
    0x04F2: ("set_variable", "write"),
    0x04FC: ("get_variable", "read"),
    0x0506: ("add_link", "other"),
    0x051A: ("remove_link", "other"),
    0x0524: ("get_link", "other"),
    0x0542: ("set_multi_variables", "write"),
    0x054C: ("get_multi_variables", "read"),
    0x0556: ("begin_sequence", "program"),
    0x0560: ("end_sequence", "program"),
    0x056B: ("invoke", "control"),
    0x057C: ("set_var_sub_streamed", "program"),
    0x0586: ("get_var_sub_streamed", "read"),
    0x0590: ("get_variables_address", "read"),
    0x059A: ("abort", "session"),
    0x05A9: ("error", "other"),
    0x05B3: ("init_ssl", "session"),
}

_EVENT_TYPES = {
    "read": ["protocol", "access"],
    "write": ["protocol", "change"],
    "program": ["protocol", "change"],
    "control": ["protocol", "change"],
}
_INFO_TYPE = ["protocol", "info"]
# Response fields renamed in a paired record (None: dropped, the request's value stands).
_RESPONSE_RENAMES: dict[str, str | None] = {
    "s7comm.function_code": "s7comm.response.function_code",
    "s7comm.item_count": "s7comm.response.item_count",
    "s7comm.function": None,
    "s7comm.userdata.type": None,
    "s7comm.userdata.type_name": None,
}
_REQUEST_VIEW = frozenset({
    "s7comm.userdata.group", "s7comm.userdata.group_name", "s7comm.userdata.subfunction",
    "s7comm.userdata.subfunction_name", "s7comm.userdata.sequence_number", "s7comm.szl.id",
    "s7comm.szl.index", "s7comm.block.type", "s7comm.block.number", "s7comm.block.filesystem",
    "s7comm.block.filename", "s7comm.mode", "s7comm.clock",
})  # fmt: skip
# Request transport size -> struct format of a single element (BIT is handled apart).
_SCALAR_FORMATS = {2: ">B", 3: ">B", 4: ">H", 5: ">h", 6: ">I", 7: ">i", 8: ">f"}

# The CreateObject answer of an S7-1200/1500 names the module: "1;6ES7 511-1AK00-0AB0;V1.0".
_PLUS_MODULE_RE = re.compile(
    rb"\d;(6E[SP]\d [0-9A-Z]{3}-[0-9A-Z]{5}-[0-9A-Z]{4});V(\d+\.\d+(?:\.\d+)?)"
)


def _kebab(name: str) -> str:
    return name.replace("_", "-")


def _event_type(operation: str) -> list[str]:
    return list(_EVENT_TYPES.get(operation, _INFO_TYPE))


def _tsap_text(raw: bytes) -> str:
    if len(raw) > 2 and all(0x20 <= b < 0x7F for b in raw):
        return raw.decode("ascii")
    return raw.hex()


def _ascii(raw: bytes) -> str:
    return raw.decode("latin-1").rstrip("\x00 ").strip()


def _parse_filename(name: bytes) -> dict[str, object]:
    """``_0A00001P`` -> DB 1 on the passive filesystem (upload/download and PI-service names)."""
    out: dict[str, object] = {"s7comm.block.filename": name.decode("latin-1")}
    text = name.decode("latin-1")
    if text.startswith("_"):
        text = text[1:]
    if len(text) >= 8 and text[2:7].isdigit():
        out["s7comm.block.type"] = BLOCK_TYPES.get(text[0:2].upper(), text[0:2])
        out["s7comm.block.number"] = int(text[2:7])
        out["s7comm.block.filesystem"] = text[7]
    return out


def _bcd(b: int) -> int:
    return (b >> 4) * 10 + (b & 0x0F)


def _s7_time(raw: bytes) -> str | None:
    """S7 DATE_AND_TIME in BCD (8 bytes; the clock functions prefix 2 bytes)."""
    if len(raw) == 10:
        raw = raw[2:]
    if len(raw) < 8:
        return None
    year = _bcd(raw[0])
    year += 2000 if year < 90 else 1900
    month, day, hour, minute, second = (_bcd(b) for b in raw[1:6])
    msec = _bcd(raw[6]) * 10 + (raw[7] >> 4)
    if not (1 <= month <= 12 and 1 <= day <= 31 and hour < 24 and minute < 60 and second < 60):
        return None
    return f"{year:04d}-{month:02d}-{day:02d}T{hour:02d}:{minute:02d}:{second:02d}.{msec:03d}"


_MODE_SWITCH = {0: "undefined", 1: "run", 2: "run-p", 3: "stop", 4: "mres"}
_STARTUP_SWITCH = {0: "undefined", 1: "crst", 2: "wrst"}


def _protection(rec: bytes) -> dict:
    """SZL 0x0132 / 0x0232 index 4 record: the CPU's protection levels and switch positions
    (index, key switch level, assigned level, valid level, mode switch, startup switch)."""
    key, assigned, level, mode, startup = struct.unpack_from(">HHHHH", rec, 2)
    return {
        "s7comm.protection.key_switch_level": key,
        "s7comm.protection.assigned_level": assigned,
        "s7comm.protection.level": level,
        "s7comm.protection.mode_switch": _MODE_SWITCH.get(mode, str(mode)),
        "s7comm.protection.startup_switch": _STARTUP_SWITCH.get(startup, str(startup)),
    }


def _diag_event(raw: bytes) -> dict[str, object]:
    """One 20-byte diagnostic buffer entry: event id, priority class, OB, time (BCD)."""
    event_id = int.from_bytes(raw[0:2], "big")
    event: dict[str, object] = {
        "event_id": event_id, "event_class": event_id >> 12, "priority_class": raw[2], "ob_number": raw[3],
    }  # fmt: skip
    when = _s7_time(raw[12:20])
    if when:
        event["time"] = when
    return event


def _s7_block_time(raw: bytes) -> str:
    """Block header time: milliseconds since midnight (4 bytes), days since 1984-01-01 (2)."""
    ms, days = int.from_bytes(raw[0:4], "big"), int.from_bytes(raw[4:6], "big")
    when = _EPOCH_1984 + datetime.timedelta(days=days, milliseconds=ms)
    return when.isoformat(timespec="milliseconds")


@dataclass(slots=True)
class _Pdu:
    """One decoded S7comm PDU: its fields and what pairing needs."""

    ts: float
    to_server: bool
    rosctr: int
    pdu_ref: int
    fields: dict[str, object]
    operation: str = "other"
    action: str = "unknown"
    function: str = "unknown"
    failed: bool = False
    items: list[dict[str, object]] | None = None
    return_codes: list[int] | None = None
    userdata_type: int = -1
    device: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class _PlusPdu:
    ts: float
    to_server: bool
    opcode: int
    function_code: int
    seq: int
    fields: dict[str, object]
    failed: bool = False
    device: dict[str, str] = field(default_factory=dict)


class _Direction:
    __slots__ = (
        "buf",
        "cotp",
        "plus",
        "plus_version",
        "plus_fragments",
        "resync",
        "lost",
        "gap_skipped",
    )

    def __init__(self) -> None:
        self.buf = bytearray()  # TPKT bytes not yet framed
        self.cotp = bytearray()  # COTP DT payloads awaiting the EOT segment
        self.plus = bytearray()  # S7comm-plus fragments awaiting the trailer
        self.plus_version = 0
        self.plus_fragments = 0
        self.resync = False  # scanning for the next plausible TPKT header
        self.lost = False  # an anomaly was already reported for this resync episode
        # bytes skipped while resynchronising after a gap (None: not after a gap). Up to one
        # TPKT's worth may be the rest of the lost PDU; more is not S7 and is reported.
        self.gap_skipped: int | None = None

    def reset(self) -> None:
        self.buf.clear()
        self.cotp.clear()
        self.plus.clear()


_MAX_TPKT = 0xFFFF  # the largest TPKT: after a gap, the rest of the lost PDU is at most this


def _plausible_tpkt(buf: bytes | bytearray, i: int) -> bool | None:
    """True/False at offset i; None when more bytes are needed to tell."""
    n = len(buf) - i
    if n < 1:
        return None
    if buf[i] != 3:
        return False
    if n < 8:
        if n >= 2 and buf[i + 1] != 0:
            return False
        return None
    if buf[i + 1] != 0:
        return False
    length = (buf[i + 2] << 8) | buf[i + 3]
    li, code = buf[i + 4], buf[i + 5] & 0xF0
    if length < 7 or li + 5 > length:
        return False
    if code == _COTP_DT:
        if li != 2 or buf[i + 6] & 0x7F:
            return False
        return length == 7 or buf[i + 7] in (0x32, 0x72)
    return code in (_COTP_CR, _COTP_CC, _COTP_DR, _COTP_DC) and li >= 6


def probe(data: bytes) -> bool:
    """TPKT 3 + COTP: a CR/CC naming TSAPs, or a DT carrying an S7comm / S7comm-plus header."""
    try:
        if not _plausible_tpkt(data, 0):
            return False
        code = data[5] & 0xF0
        if code in (_COTP_CR, _COTP_CC):  # TSAP parameters (0xC1/0xC2) after the fixed part
            end = min(len(data), 5 + data[4])
            i = 11
            while i + 1 < end:
                if data[i] in (0xC1, 0xC2):
                    return True
                i += 2 + data[i + 1]
            return False
        if code != _COTP_DT or len(data) < 11:
            return False
        if data[7] == 0x32:
            return len(data) >= 17 and data[8] in ROSCTR_NAMES
        return data[7] == 0x72 and data[8] in (1, 2, 3, 0xFE, 0xFF)
    except Exception:  # never raise from a probe
        return False


class Parser:
    """One per TCP connection; see the module docstring for records and fields."""

    def __init__(self, limits: ParserLimits | None = None) -> None:
        self.limits = limits or ParserLimits()
        self._dirs = {True: _Direction(), False: _Direction()}
        self._pending: dict[tuple[bool, int, int], _Pdu] = {}  # (sent to server, kind, ref)
        self._plus_pending: dict[tuple[bool, int], _PlusPdu] = {}
        self._conn: dict[str, object] = {}  # COTP facts carried on every record
        self._cr: tuple[float, bool, dict[str, object]] | None = None
        self._uploads: dict[int, dict[str, object]] = {}
        self._foreign = False  # a non-S7 payload was reported on this connection
        self._overflowed = False  # the pending-request cap was reported on this connection

    # -- stream interface -------------------------------------------------------------------

    def feed(self, to_server: bool, data: bytes, ts: float) -> list[Record]:
        out: list[Record] = []
        try:
            self._feed(to_server, data, ts, out)
        except Exception as exc:  # a decoding bug must not stop the sensor: report, resync
            d = self._dirs[to_server]
            d.reset()
            d.resync, d.lost = True, True
            out.append(self._anomaly(ts, "s7-decode-error", f"S7 decoder error: {exc!r}"))
        return out

    def gap(self, to_server: bool, ts: float, size: int) -> list[Record]:
        d = self._dirs[to_server]
        d.reset()
        d.resync, d.lost = True, True  # a gap is not malformed input: no anomaly for the skip
        d.gap_skipped = 0  # ... unless more is skipped than the rest of one PDU (see _feed)
        return []

    def close(self, ts: float) -> list[Record]:
        out: list[Record] = []
        for to_server, d in self._dirs.items():
            if (d.buf or d.cotp or d.plus) and not d.resync:
                out.append(
                    self._anomaly(
                        ts,
                        "truncated-stream",
                        f"connection ended inside a PDU ({len(d.buf) + len(d.cotp) + len(d.plus)} bytes "
                        f"{'to server' if to_server else 'to client'} never completed)",
                    )
                )
            d.reset()
        if self._cr is not None:
            cr_ts, _, fields = self._cr
            out.append(self._cotp_record(cr_ts, fields, None))
            self._cr = None
        for pdu in self._pending.values():
            out.append(self._s7_record(pdu, None))
        self._pending.clear()
        for ppdu in self._plus_pending.values():
            out.append(self._plus_record(ppdu, None))
        self._plus_pending.clear()
        return out

    # -- TPKT / COTP framing ----------------------------------------------------------------

    def _feed(self, to_server: bool, data: bytes, ts: float, out: list[Record]) -> None:
        d = self._dirs[to_server]
        buf = d.buf
        if buf or d.resync:
            buf += data
            src: bytes | bytearray = buf
        else:  # nothing buffered: frame straight from the segment, keep only what is left over
            src = data
        pos = 0
        limit = self.limits.max_buffer
        while True:
            if d.resync:
                start = pos
                pos = self._resync(src, pos)
                if d.gap_skipped is not None:
                    d.gap_skipped += (len(src) if pos < 0 else pos) - start
                    if d.gap_skipped > _MAX_TPKT:
                        d.gap_skipped = None
                        out.append(
                            self._anomaly(
                                ts,
                                "tpkt-bad-header",
                                f"more than {_MAX_TPKT} bytes after a gap without a TPKT header: not S7 traffic",
                            )
                        )
                if pos < 0:  # not even a 0x03 left: nothing worth keeping
                    buf.clear()
                    return
                if _plausible_tpkt(src, pos) is None:
                    break
                d.resync = d.lost = False
                d.gap_skipped = None
            avail = len(src) - pos
            if avail < 4:
                if avail and (src[pos] != 3 or (avail > 1 and src[pos + 1] != 0)):
                    self._lose(
                        d,
                        ts,
                        out,
                        "tpkt-bad-header",
                        f"bytes {bytes(src[pos:]).hex()} do not start a TPKT header",
                    )
                    pos += 1
                    continue
                break
            if src[pos] != 3 or src[pos + 1] != 0:
                self._lose(
                    d,
                    ts,
                    out,
                    "tpkt-bad-header",
                    f"bad TPKT header {bytes(src[pos : pos + 4]).hex()}",
                )
                pos += 1
                continue
            length = (src[pos + 2] << 8) | src[pos + 3]
            if length < 7:
                self._lose(
                    d, ts, out, "tpkt-bad-header", f"TPKT length {length} below the 7-byte minimum"
                )
                pos += 1
                continue
            if avail < length:
                if length > limit:
                    self._lose(
                        d,
                        ts,
                        out,
                        "buffer-overflow",
                        f"TPKT length {length} exceeds the buffer cap",
                    )
                    pos += 1
                    continue
                break
            tpdu = bytes(src[pos + 4 : pos + length])
            pos += length
            self._cotp(d, to_server, tpdu, ts, out)
        if src is buf:
            if pos:
                del buf[:pos]
        elif pos < len(src):
            buf += src[pos:]
        if len(buf) > limit:
            self._lose(
                d,
                ts,
                out,
                "buffer-overflow",
                f"more than {limit} bytes buffered without a complete TPKT",
            )
            buf.clear()

    @staticmethod
    def _resync(buf: bytes | bytearray, pos: int) -> int:
        """Offset of the next plausible TPKT header at or after pos (or where one may start)."""
        i = pos
        while True:
            i = buf.find(3, i)
            if i < 0:
                return -1
            verdict = _plausible_tpkt(buf, i)
            if verdict is None or verdict:
                return i
            i += 1

    def _lose(
        self, d: _Direction, ts: float, out: list[Record], error_type: str, message: str
    ) -> None:
        """Malformed framing: report once per episode, drop partial PDUs, scan for a header."""
        if not d.lost:
            out.append(self._anomaly(ts, error_type, message))
        d.cotp.clear()
        d.plus.clear()
        d.resync = d.lost = True

    def _cotp(
        self, d: _Direction, to_server: bool, tpdu: bytes, ts: float, out: list[Record]
    ) -> None:
        li = tpdu[0]
        if li + 1 > len(tpdu) or li < 2:
            self._lose(
                d, ts, out, "cotp-bad-header", f"COTP length indicator {li} does not fit the TPKT"
            )
            return
        code = tpdu[1] & 0xF0
        if code == _COTP_DT:
            payload = tpdu[li + 1 :]
            if not tpdu[2] & 0x80:  # more COTP segments follow
                if len(d.cotp) + len(payload) > self.limits.max_buffer:
                    self._lose(d, ts, out, "buffer-overflow", "COTP segments exceed the buffer cap")
                    return
                d.cotp += payload
                return
            if d.cotp:
                payload = bytes(d.cotp) + payload
                d.cotp.clear()
            if payload:  # an empty DT is a keep-alive
                self._dispatch(d, to_server, payload, ts, out)
        elif code in (_COTP_CR, _COTP_CC):
            self._cotp_connect(to_server, code, tpdu, li, ts, out)
        elif code == _COTP_DR:
            out.append(self._with_conn({
                "ts": ts, "network.protocol": PROTO_S7, "event.action": "cotp-disconnect",
                "event.type": list(_INFO_TYPE), "event.outcome": "success", "ics.operation": "session",
                "ics.function": "cotp_disconnect",
                "s7comm.cotp.reason": tpdu[6] if len(tpdu) > 6 else None,
                "s7comm.initiator": "client" if to_server else "server",
            }))  # fmt: skip
        elif code == _COTP_DC:
            return
        elif code == _COTP_ER:
            out.append(
                self._anomaly(ts, "cotp-error", "COTP error TPDU (the peer rejected a TPDU)")
            )
        else:
            self._lose(
                d,
                ts,
                out,
                "cotp-unknown-type",
                f"COTP TPDU type 0x{tpdu[1]:02x} is not used by ISO-on-TCP class 0",
            )

    def _cotp_connect(
        self, to_server: bool, code: int, tpdu: bytes, li: int, ts: float, out: list[Record]
    ) -> None:
        fields: dict[str, object] = {}
        i, end = 7, li + 1
        while i + 2 <= end:
            pcode, plen = tpdu[i], tpdu[i + 1]
            value = tpdu[i + 2 : i + 2 + plen]
            if len(value) < plen:
                out.append(
                    self._anomaly(ts, "cotp-bad-header", "COTP parameter runs past the header")
                )
                break
            if pcode == 0xC0 and plen == 1 and value[0] <= 16:
                fields["s7comm.cotp.tpdu_size"] = 1 << value[0]
            elif pcode == 0xC1:
                fields["s7comm.cotp.src_tsap"] = _tsap_text(value)
            elif pcode == 0xC2:
                fields["s7comm.cotp.dst_tsap"] = _tsap_text(value)
                if plen == 2:
                    ctype = value[0]
                    fields["s7comm.cotp.connection_type"] = ctype
                    fields["s7comm.cotp.connection_type_name"] = {
                        1: "pg",
                        2: "op",
                        3: "s7-basic",
                    }.get(ctype, "other")
                    fields["s7comm.cotp.rack"] = value[1] >> 5
                    fields["s7comm.cotp.slot"] = value[1] & 0x1F
            i += 2 + plen
        if code == _COTP_CR:
            if self._cr is not None:  # a repeated CR: report the first one unanswered
                out.append(self._cotp_record(self._cr[0], self._cr[2], None))
            self._cr = (ts, to_server, fields)
            self._conn.update({k: v for k, v in fields.items() if k != "s7comm.cotp.tpdu_size"})
            return
        # CC: the confirm echoes the TSAPs; its TPDU size is the one in force.
        if self._cr is not None and self._cr[1] != to_server:
            cr_ts, _, cr_fields = self._cr
            self._cr = None
            merged = dict(cr_fields)
            if "s7comm.cotp.tpdu_size" in fields:
                merged["s7comm.cotp.tpdu_size"] = fields["s7comm.cotp.tpdu_size"]
            self._conn.update(merged)
            out.append(self._cotp_record(cr_ts, merged, ts))
        else:
            if not self._conn:
                self._conn.update(fields)
            out.append(self._cotp_record(ts, fields, ts, request_seen=False))

    def _cotp_record(
        self, ts: float, fields: dict[str, object], resp_ts: float | None, request_seen: bool = True
    ) -> Record:
        rec: Record = {
            "ts": ts, "network.protocol": PROTO_S7, "event.action": "cotp-connect",
            "event.type": ["protocol", "start"], "ics.operation": "session", "ics.function": "cotp_connect",
            "event.outcome": "success" if resp_ts is not None else "unknown",
        }  # fmt: skip
        if resp_ts is not None and request_seen:
            rec["event.duration"] = int(round((resp_ts - ts) * 1e9))
        rec.update(self._conn)
        rec.update(fields)
        return rec

    def _with_conn(self, rec: Record) -> Record:
        for key, value in self._conn.items():
            rec.setdefault(key, value)
        return {k: v for k, v in rec.items() if v is not None}

    def _overflow(self, ts: float, out: list[Record], protocol: str) -> None:
        """Too many unanswered requests (one-sided mirror, or a flood): said once per connection;
        the oldest requests still become records, with an unknown outcome."""
        if not self._overflowed:
            self._overflowed = True
            out.append(
                self._anomaly(
                    ts,
                    "too-many-pending",
                    f"more than {self.limits.max_pending} unanswered requests: the oldest are reported without their answer",
                    protocol,
                )
            )

    def _anomaly(
        self, ts: float, error_type: str, message: str, protocol: str = PROTO_S7
    ) -> Record:
        return self._with_conn(anomaly(ts, protocol, error_type, message))

    # -- S7 PDUs ----------------------------------------------------------------------------

    def _dispatch(
        self, d: _Direction, to_server: bool, payload: bytes, ts: float, out: list[Record]
    ) -> None:
        pid = payload[0]
        if pid == 0x32:
            if d.plus:  # an S7comm PDU cannot sit inside an S7comm-plus message
                out.append(
                    self._anomaly(
                        ts, "s7plus-bad-fragment", "S7comm-plus message cut short", PROTO_PLUS
                    )
                )
                d.plus.clear()
            self._s7(to_server, payload, ts, out)
        elif pid == 0x72:
            self._plus_fragment(d, to_server, payload, ts, out)
        elif not self._foreign:  # e.g. MMS (IEC 61850/ICCP) also runs on ISO-on-TCP port 102
            self._foreign = True
            out.append(
                self._anomaly(
                    ts,
                    "s7-unknown-protocol",
                    f"COTP data with protocol id 0x{pid:02x}, not S7comm (0x32) or S7comm-plus (0x72); such PDUs on this connection are skipped",
                )
            )

    def _s7(self, to_server: bool, p: bytes, ts: float, out: list[Record]) -> None:
        if len(p) < 10:
            out.append(
                self._anomaly(
                    ts, "s7-short-pdu", f"S7comm PDU of {len(p)} bytes is shorter than its header"
                )
            )
            return
        rosctr = p[1]
        if rosctr not in ROSCTR_NAMES:
            out.append(
                self._anomaly(
                    ts,
                    "s7-unknown-rosctr",
                    f"S7comm ROSCTR {rosctr} is not job/ack/ack_data/userdata",
                )
            )
            return
        pdu_ref, parlg, datlg = struct.unpack_from(">HHH", p, 4)
        hlen = 12 if rosctr in (2, 3) else 10
        if len(p) < hlen or hlen + parlg + datlg > len(p):
            out.append(
                self._anomaly(
                    ts,
                    "s7-bad-length",
                    f"S7comm header announces {hlen + parlg + datlg} bytes, PDU has {len(p)}",
                )
            )
            return
        params = p[hlen : hlen + parlg]
        data = p[hlen + parlg : hlen + parlg + datlg]
        fields: dict[str, object] = {}
        pdu = _Pdu(ts, to_server, rosctr, pdu_ref, fields)
        if hlen == 12:
            pdu.fields["s7comm.error_class"] = p[10]
            pdu.fields["s7comm.error_code"] = p[11]
            if p[10] or p[11]:
                pdu.fields["s7comm.error_name"] = ERROR_CLASSES.get(p[10], "unknown")
                pdu.failed = True
        try:
            if rosctr == 7:
                self._userdata(pdu, params, data)
            else:
                self._job_or_ack(pdu, params, data)
        except (IndexError, struct.error, ValueError) as exc:
            out.append(
                self._anomaly(ts, "s7-bad-parameter", f"S7comm parameters do not parse ({exc})")
            )
            pdu.fields["s7comm.malformed"] = True
        self._pair(pdu, out)

    def _job_or_ack(self, pdu: _Pdu, params: bytes, data: bytes) -> None:
        f = pdu.fields
        if not params:
            return
        func = params[0]
        name, operation = JOB_FUNCTIONS.get(func, (f"function_0x{func:02x}", "other"))
        f["s7comm.function_code"] = func
        f["s7comm.function"] = name
        pdu.function, pdu.operation, pdu.action = name, operation, _kebab(name)
        is_job = pdu.rosctr == 1
        if func in (0x04, 0x05):
            count = params[1]
            f["s7comm.item_count"] = count
            if is_job:
                pdu.items = self._request_items(params, count)
                if func == 0x05:
                    self._data_items(data, len(pdu.items), pdu.items)
            elif func == 0x04:
                pdu.items = self._data_items(data, count, None)
                pdu.return_codes = [int(it["return_code"]) for it in pdu.items]
            else:
                pdu.return_codes = list(data[: min(count, self.limits.max_items)])
            if pdu.return_codes and any(rc != 0xFF for rc in pdu.return_codes):
                pdu.failed = True
        elif func == 0xF0 and len(params) >= 8:
            amq_calling, amq_called, pdu_size = struct.unpack_from(">HHH", params, 2)
            f["s7comm.max_amq_calling"] = amq_calling
            f["s7comm.max_amq_called"] = amq_called
            f["s7comm.pdu_size"] = pdu_size
        elif 0x1A <= func <= 0x1F:
            self._block_control(pdu, func, params, data)
        elif func == 0x28 and is_job:
            self._pi_service(pdu, params)
        elif func == 0x29 and is_job and len(params) >= 7:
            n = params[6]
            f["s7comm.pi_service"] = _ascii(params[7 : 7 + n])

    def _request_items(self, params: bytes, count: int, i: int = 2) -> list[dict[str, object]]:
        """Item addresses of a read/write var job (or a cyclic subscription) from offset i."""
        items: list[dict[str, object]] = []
        for _ in range(min(count, self.limits.max_items)):
            if params[i] != 0x12:
                raise ValueError(f"item variable specification 0x{params[i]:02x} is not 0x12")
            spec_len = params[i + 1]
            spec = params[i + 2 : i + 2 + spec_len]
            if len(spec) < spec_len or spec_len < 1:
                raise ValueError("item address runs past the parameters")
            syntax = spec[0]
            item: dict[str, object] = {"syntax_id": syntax}
            if syntax == 0x10 and spec_len >= 10:  # S7ANY
                tsize, length, db, area = struct.unpack_from(">BHHB", spec, 1)
                address = int.from_bytes(spec[7:10], "big")
                item.update({
                    "transport_size": tsize, "length": length, "db": db, "area": area,
                    "area_name": AREA_NAMES.get(area, f"0x{area:02x}"),
                })  # fmt: skip
                if area in (0x1C, 0x1D, 0x1E, 0x1F):
                    item["byte"] = address
                else:
                    item["byte"], item["bit"] = address >> 3, address & 7
            elif syntax == 0xB0 and spec_len >= 2:  # DBREAD: several (length, db, start) areas
                areas = []
                j = 2
                for _ in range(spec[1]):
                    if j + 5 > len(spec):
                        break
                    ln, db, start = struct.unpack_from(">BHH", spec, j)
                    areas.append({"length": ln, "db": db, "byte": start})
                    j += 5
                item["areas"] = areas
            else:  # NCK, DriveES, 1200 symbolic...: kept as raw address
                item["address"] = spec[1:].hex()
            items.append(item)
            i += 2 + spec_len
        return items

    def _data_items(
        self, data: bytes, count: int, into: list[dict[str, object]] | None
    ) -> list[dict[str, object]]:
        """Data items (return code, transport size, length, data); merged into request items."""
        items = into if into is not None else []
        i = 0
        n = min(count, self.limits.max_items)
        for idx in range(n):
            if i + 4 > len(data):
                raise ValueError(f"data item {idx} runs past the data part")
            rc, tsize, length = data[i], data[i + 1], (data[i + 2] << 8) | data[i + 3]
            nbytes = 0  # only good items (and requests, code 0) carry data
            if rc in (0x00, 0xFF):
                nbytes = (length + 7) // 8 if tsize in (0x03, 0x04, 0x05) else length
            raw = data[i + 4 : i + 4 + nbytes]
            if len(raw) < nbytes:
                raise ValueError(f"data item {idx} announces {nbytes} bytes, {len(raw)} present")
            item = items[idx] if idx < len(items) else {}
            if idx >= len(items):
                items.append(item)
            if into is None or rc:  # requests carry 0x00 here; responses the real code
                item["return_code"] = rc
                item["return_code_name"] = RETURN_CODES.get(rc, f"0x{rc:02x}")
            item["data_transport_size"] = tsize
            item["data_length"] = nbytes
            if nbytes:
                item["data"] = raw[:_MAX_DATA_BYTES].hex()
                if nbytes > _MAX_DATA_BYTES:
                    item["data_truncated"] = True
            step = 4 + nbytes
            if nbytes % 2 and idx < n - 1:  # fill byte after odd-sized items except the last
                step += 1
            i += step
        return items

    @staticmethod
    def _scalar(item: dict[str, object]) -> object | None:
        """The value of a one-element BIT/BYTE/CHAR/WORD/INT/DWORD/DINT/REAL item, else None."""
        if item.get("length") != 1 or not item.get("data"):
            return None
        raw = bytes.fromhex(str(item["data"]))
        tsize = item.get("transport_size")
        if tsize == 1:
            return raw[0] & 1
        fmt = _SCALAR_FORMATS.get(tsize)  # type: ignore[arg-type]
        if fmt and struct.calcsize(fmt) == len(raw):
            return struct.unpack(fmt, raw)[0]
        return None

    def _block_control(self, pdu: _Pdu, func: int, params: bytes, data: bytes) -> None:
        f = pdu.fields
        if len(params) >= 2:
            f["s7comm.block.more_data"] = bool(params[1] & 0x01)
        if pdu.rosctr == 1:
            if len(params) >= 8:
                upload_id = int.from_bytes(params[4:8], "big")
                if func in (0x1E, 0x1F):
                    f["s7comm.upload_id"] = upload_id
                    f.update(self._uploads.get(upload_id, {}))
                    if func == 0x1F:
                        self._uploads.pop(upload_id, None)
            if len(params) >= 9 and func in (0x1A, 0x1B, 0x1C, 0x1D):
                n = params[8]
                f.update(_parse_filename(params[9 : 9 + n]))
                rest = params[9 + n :]
                if func == 0x1A and len(rest) >= 14:  # length part: '1' + load memory + MC7 length
                    text = rest[1 : 1 + rest[0]].decode("latin-1")
                    if len(text) >= 13 and text[1:7].isdigit() and text[7:13].isdigit():
                        f["s7comm.block.length"] = int(text[1:7])
                        f["s7comm.block.mc7_length"] = int(text[7:13])
        elif func == 0x1D and len(params) >= 9:  # start upload ack: upload id and block length
            upload_id = int.from_bytes(params[4:8], "big")
            f["s7comm.upload_id"] = upload_id
            n = params[8]
            text = params[9 : 9 + n].decode("latin-1")
            if text.isdigit():
                f["s7comm.block.length"] = int(text)
        elif func in (0x1B, 0x1E) and len(data) >= 4:  # block bytes follow a 2-byte length
            f["s7comm.block.data_length"] = int.from_bytes(data[0:2], "big")

    def _pi_service(self, pdu: _Pdu, params: bytes) -> None:
        f = pdu.fields
        if len(params) < 10:
            raise ValueError("PI-service parameters shorter than 10 bytes")
        pb_len = int.from_bytes(params[8:10], "big")
        block = params[10 : 10 + pb_len]
        if len(block) < pb_len or len(params) < 11 + pb_len:
            raise ValueError("PI-service parameter block runs past the parameters")
        n = params[10 + pb_len]
        service = _ascii(params[11 + pb_len : 11 + pb_len + n])
        f["s7comm.pi_service"] = service
        if service in ("_INSE", "_DELE") and len(block) >= 2:
            names = []
            for k in range(block[0]):
                name = block[2 + 8 * k : 10 + 8 * k]
                if len(name) < 8:
                    break
                names.append(name)
            if names:
                f.update(_parse_filename(names[0]))
                f["s7comm.pi.blocks"] = [n.decode("latin-1") for n in names]
            f["s7comm.pi.operation"] = PI_OPERATIONS[service]
            pdu.operation = "program"
        elif service == "P_PROGRAM":
            f["s7comm.pi.operation"] = "cold-start" if block.strip() == b"C" else "hot-start"
        elif service in PI_OPERATIONS:
            f["s7comm.pi.operation"] = PI_OPERATIONS[service]
        if block and service not in ("_INSE", "_DELE"):
            f["s7comm.pi.parameter"] = _ascii(block)

    # -- userdata ---------------------------------------------------------------------------

    def _userdata(self, pdu: _Pdu, params: bytes, data: bytes) -> None:
        f = pdu.fields
        if len(params) < 8:  # the head is 00 01 12 except in mode-transition pushes: not checked
            raise ValueError(f"userdata parameters of {len(params)} bytes, 8 needed")
        plen = params[3]
        utype, group = params[5] >> 4, params[5] & 0x0F
        sub = params[6]
        pdu.userdata_type = utype
        gname, operation = USERDATA_GROUPS.get(group, (f"group_{group}", "other"))
        if group == 0:
            sname, sub_op = "mode_transition", None
            f["s7comm.mode"] = MODE_NAMES.get(sub, f"mode_{sub}")
        else:
            sname, sub_op = USERDATA_SUBFUNCTIONS.get((group, sub), (f"{gname}_{sub}", None))
        pdu.function, pdu.operation, pdu.action = sname, sub_op or operation, _kebab(sname)
        f.update({
            "s7comm.userdata.type": utype, "s7comm.userdata.type_name": USERDATA_TYPES.get(utype, "unknown"),
            "s7comm.userdata.group": group, "s7comm.userdata.group_name": gname,
            "s7comm.userdata.subfunction": sub, "s7comm.userdata.subfunction_name": sname,
            "s7comm.userdata.sequence_number": params[7],
        })  # fmt: skip
        if plen >= 8 and len(params) >= 12:
            f["s7comm.userdata.last_data_unit"] = params[9] == 0
            errcode = int.from_bytes(params[10:12], "big")
            f["s7comm.userdata.error_code"] = errcode
            if errcode:
                pdu.failed = True
        if len(data) < 4:
            return
        rc, dlen = data[0], int.from_bytes(data[2:4], "big")
        body = data[4 : 4 + dlen]
        f["s7comm.userdata.return_code"] = rc
        if rc != 0xFF and plen < 8 and utype != 4:
            pdu.failed = True
        if group == 4 and sub == 3 and len(body) >= 20:  # a diagnostic buffer entry, pushed
            f["s7comm.diagnostic.events"] = [_diag_event(body[0:20])]
        elif group == 2 and sub in (1, 5, 7) and len(body) >= 2:  # cyclic subscriptions carry items
            count = int.from_bytes(body[0:2], "big")
            f["s7comm.item_count"] = count
            if utype == 4:
                pdu.items = self._request_items(body, count, 4)
            elif body[2:]:
                pdu.items = self._data_items(body[2:], count, None)
        elif group == 4 and sub == 1 and len(body) >= 4:
            self._szl(pdu, utype, body)
        elif group == 3:
            self._block_userdata(pdu, sub, utype, body)
        elif (
            group == 7
            and len(body) >= 8
            and ((utype == 8 and sub in (1, 3)) or (utype == 4 and sub in (2, 4)))
        ):
            clock = _s7_time(body)  # read clock answers and set clock requests carry the time
            if clock:
                f["s7comm.clock"] = clock

    def _szl(self, pdu: _Pdu, utype: int, body: bytes) -> None:
        f = pdu.fields
        szl_id, szl_index = struct.unpack_from(">HH", body, 0)
        f["s7comm.szl.id"], f["s7comm.szl.index"] = szl_id, szl_index
        if utype != 8 or len(body) < 8:
            return
        rec_len, count = struct.unpack_from(">HH", body, 4)
        f["s7comm.szl.record_count"] = count
        records = [
            body[8 + k * rec_len : 8 + (k + 1) * rec_len]
            for k in range(min(count, self.limits.max_items))
        ]
        records = [r for r in records if len(r) == rec_len]
        dev = pdu.device
        if szl_id & 0xFF == 0xA0 and rec_len == 20:  # diagnostic buffer
            pdu.fields["s7comm.diagnostic.events"] = [_diag_event(r) for r in records]
        if szl_id & 0xFF == 0x11 and rec_len >= 22:  # module identification
            for r in records:
                index = int.from_bytes(r[0:2], "big")
                if index == 1 and _ascii(r[2:22]).isprintable() and _ascii(r[2:22]):
                    dev["order_number"] = _ascii(r[2:22])
                    if rec_len == 28:
                        dev["hardware"] = f"{r[25]}" if r[24] == 0 else f"{r[24]}.{r[25]}"
                elif index == 7 and rec_len == 28 and r[24] == ord("V"):
                    dev["firmware"] = f"V{r[25]}.{r[26]}.{r[27]}"
        elif szl_id & 0xFF == 0x32 and szl_index == 4 and rec_len >= 12 and records:
            f.update(_protection(records[0]))
        elif szl_id & 0xFF == 0x1C and rec_len == 34:  # component identification
            keys = {1: "name", 2: "model", 3: "plant", 5: "serial", 7: "module_type"}
            for r in records:
                index = int.from_bytes(r[0:2], "big")
                text = _ascii(r[2:34])
                if index in keys and text and text.isprintable():
                    dev[keys[index]] = text
        if dev:
            dev.setdefault("vendor", "Siemens")

    def _block_userdata(self, pdu: _Pdu, sub: int, utype: int, body: bytes) -> None:
        f = pdu.fields
        if sub == 1 and utype == 8:  # list blocks: (type, count) pairs
            counts = {}
            for k in range(0, len(body) - 3, 4):
                code = body[k : k + 2].decode("latin-1").upper()
                counts[BLOCK_TYPES.get(code, code)] = int.from_bytes(body[k + 2 : k + 4], "big")
            f["s7comm.block.counts"] = counts
        elif sub == 2 and utype == 4 and len(body) >= 2:
            code = body[0:2].decode("latin-1").upper()
            f["s7comm.block.type"] = BLOCK_TYPES.get(code, code)
        elif sub == 2 and utype == 8:
            f["s7comm.block.count"] = len(body) // 4
        elif sub == 3 and utype == 4 and len(body) >= 8:
            f.update(_parse_filename(body[0:8]))
            f.pop("s7comm.block.filename", None)
        elif sub == 3 and utype == 8 and len(body) >= 78:  # block info: the block's header
            subblk = body[11]
            f["s7comm.block.type"] = BLOCK_TYPES.get(f"{subblk:02X}", f"0x{subblk:02x}")
            f["s7comm.block.number"] = int.from_bytes(body[12:14], "big")
            f["s7comm.block.language"] = body[10]
            f["s7comm.block.load_memory_length"] = int.from_bytes(body[14:18], "big")
            f["s7comm.block.mc7_length"] = int.from_bytes(body[40:42], "big")
            f["s7comm.block.code_timestamp"] = _s7_block_time(body[22:28])
            f["s7comm.block.interface_timestamp"] = _s7_block_time(body[28:34])
            for key, start in (("author", 42), ("family", 50), ("name", 58)):
                text = _ascii(body[start : start + 8])
                if text:
                    f["s7comm.block." + key] = text
            f["s7comm.block.version"] = f"{body[66] >> 4}.{body[66] & 0x0F}"
            f["s7comm.block.checksum"] = int.from_bytes(body[68:70], "big")

    # -- pairing and records ----------------------------------------------------------------

    def _pair(self, pdu: _Pdu, out: list[Record]) -> None:
        if pdu.rosctr == 1 or (pdu.rosctr == 7 and pdu.userdata_type in (4, 7)):
            key = (pdu.to_server, pdu.rosctr, pdu.pdu_ref)
            old = self._pending.pop(key, None)
            if old is not None:  # reference reused before an answer: the old job went unanswered
                out.append(self._s7_record(old, None))
            pending = self._pending
            if len(pending) >= self.limits.max_pending:
                out.append(self._s7_record(pending.pop(next(iter(pending))), None))
                self._overflow(pdu.ts, out, PROTO_S7)
            while pending and pdu.ts - pending[next(iter(pending))].ts > REQUEST_TIMEOUT:
                out.append(self._s7_record(pending.pop(next(iter(pending))), None))
            pending[key] = pdu
            return
        if pdu.rosctr in (2, 3):
            req = self._pending.pop((not pdu.to_server, 1, pdu.pdu_ref), None)
        elif pdu.userdata_type in (8, 11):
            req = self._pending.pop((not pdu.to_server, 7, pdu.pdu_ref), None)
        else:  # push: a notification with no request
            out.append(self._s7_record(pdu, None, push=True))
            return
        if req is None:
            out.append(self._s7_record(pdu, None))
        else:
            out.append(self._s7_record(req, pdu))

    def _s7_record(self, req: _Pdu, resp: _Pdu | None, push: bool = False) -> Record:
        rec: Record = {"ts": req.ts, "network.protocol": PROTO_S7}
        rec.update(self._conn)
        rec["s7comm.rosctr"] = req.rosctr
        rec["s7comm.rosctr_name"] = ROSCTR_NAMES[req.rosctr]
        rec["s7comm.pdu_reference"] = req.pdu_ref
        rec.update(req.fields)
        function, action, operation = req.function, req.action, req.operation
        failed = req.failed
        items = req.items
        if resp is not None:
            rec["event.duration"] = int(round((resp.ts - req.ts) * 1e9))
            rec["s7comm.response.rosctr"] = resp.rosctr
            # A follow-up SZL request (no SZL id: "send the next part") gets raw list bytes back,
            # without the SZL header its first bytes would otherwise be read as.
            follow_up = function == "read_szl" and "s7comm.szl.id" not in req.fields
            if follow_up:
                rec["s7comm.szl.follow_up"] = True
            for key, value in resp.fields.items():
                renamed = _RESPONSE_RENAMES.get(key, key)
                if renamed is None or (key in _REQUEST_VIEW and key in rec):
                    continue  # the request names the service; the response repeats it
                if follow_up and key.startswith("s7comm.szl."):
                    continue
                rec[renamed] = value
            if function == "unknown":
                function, action, operation = resp.function, resp.action, resp.operation
            failed = failed or resp.failed
            if resp.items is not None:
                items = self._merge_items(items, resp.items)
            elif resp.return_codes is not None and items is not None:
                for item, rc in zip(items, resp.return_codes, strict=False):
                    item["return_code"] = rc
                    item["return_code_name"] = RETURN_CODES.get(rc, f"0x{rc:02x}")
            if resp.device and not resp.to_server and not follow_up:
                for key, value in resp.device.items():
                    rec["ics.device." + key] = value
        elif req.device and not req.to_server:
            for key, value in req.device.items():
                rec["ics.device." + key] = value
        if items is not None:
            for item in items:
                if "data" in item and "value" not in item:
                    value = self._scalar(item)
                    if value is not None:
                        item["value"] = value
            rec["s7comm.items"] = items
        if req.rosctr == 1 and not req.to_server:
            rec["s7comm.initiator"] = "server"
        if function == "start_upload" and "s7comm.upload_id" in rec:  # name later upload jobs
            if len(self._uploads) >= _MAX_UPLOAD_IDS:
                self._uploads.pop(next(iter(self._uploads)))
            self._uploads[int(rec["s7comm.upload_id"])] = {  # type: ignore[call-overload]
                k: v
                for k, v in rec.items()
                if k.startswith("s7comm.block.") and k != "s7comm.block.more_data"
            }
        rec["event.action"] = action
        rec["ics.function"] = function
        rec["ics.operation"] = operation
        rec["event.type"] = _event_type(operation)
        if failed:
            rec["event.outcome"] = "failure"
        elif resp is not None or push or req.rosctr in (2, 3) or req.userdata_type in (8, 11):
            rec["event.outcome"] = "success"
        else:
            rec["event.outcome"] = "unknown"
        return rec

    @staticmethod
    def _merge_items(
        req_items: list[dict[str, object]] | None, resp_items: list[dict[str, object]]
    ) -> list[dict[str, object]]:
        if not req_items:
            return resp_items
        for k, item in enumerate(req_items):
            if k < len(resp_items):
                item.update(resp_items[k])
        return req_items

    # -- S7comm-plus ------------------------------------------------------------------------

    def _plus_fragment(
        self, d: _Direction, to_server: bool, p: bytes, ts: float, out: list[Record]
    ) -> None:
        if len(p) < 4:
            out.append(
                self._anomaly(
                    ts, "s7plus-short-pdu", f"S7comm-plus PDU of {len(p)} bytes", PROTO_PLUS
                )
            )
            return
        version, dlen = p[1], (p[2] << 8) | p[3]
        if 4 + dlen > len(p):
            d.plus.clear()
            out.append(
                self._anomaly(
                    ts,
                    "s7plus-short-pdu",
                    f"S7comm-plus header announces {dlen} data bytes, {len(p) - 4} present",
                    PROTO_PLUS,
                )
            )
            return
        chunk = p[4 : 4 + dlen]
        trailer = p[4 + dlen :]
        if not d.plus:
            d.plus_version, d.plus_fragments = version, 0
        d.plus_fragments += 1
        if len(trailer) >= 4 and trailer[0] == 0x72 and trailer[2:4] == b"\x00\x00":
            body = bytes(d.plus) + chunk if d.plus else chunk
            d.plus.clear()
            self._plus(to_server, d.plus_version, body, ts, out, d.plus_fragments)
        elif not trailer:  # more fragments follow
            if len(d.plus) + len(chunk) > self.limits.max_buffer:
                d.plus.clear()
                out.append(
                    self._anomaly(
                        ts,
                        "buffer-overflow",
                        "S7comm-plus fragments exceed the buffer cap",
                        PROTO_PLUS,
                    )
                )
                return
            d.plus += chunk
        elif dlen == 0 or version in (0xFE, 0xFF):  # keep-alive style PDUs carry no transaction
            return
        else:
            d.plus.clear()
            out.append(
                self._anomaly(
                    ts,
                    "s7plus-bad-fragment",
                    f"S7comm-plus PDU has {len(trailer)} unexpected bytes after its data",
                    PROTO_PLUS,
                )
            )

    def _plus(
        self,
        to_server: bool,
        version: int,
        body: bytes,
        ts: float,
        out: list[Record],
        fragments: int = 1,
    ) -> None:
        f: dict[str, object] = {"s7comm_plus.version": version, "s7comm_plus.fragments": fragments}
        i = 0
        if version == 3:  # integrity digest (length byte + digest) precedes the data
            if not body:
                out.append(
                    self._anomaly(
                        ts, "s7plus-short-pdu", "S7comm-plus V3 PDU without its digest", PROTO_PLUS
                    )
                )
                return
            dig = body[0]
            f["s7comm_plus.integrity"] = True
            f["s7comm_plus.digest_length"] = dig
            i = 1 + dig
        else:
            f["s7comm_plus.integrity"] = False
        if version in (0xFE, 0xFF) or i >= len(body):
            return
        opcode = body[i]
        f["s7comm_plus.opcode"] = opcode
        f["s7comm_plus.opcode_name"] = PLUS_OPCODES.get(opcode, f"0x{opcode:02x}")
        f["s7comm_plus.data_length"] = len(body) - i
        f["s7comm_plus.body_decoded"] = False
        if opcode == 0x33:  # notification: subscription object id first
            if len(body) >= i + 5:
                f["s7comm_plus.subscription_id"] = int.from_bytes(body[i + 1 : i + 5], "big")
            out.append(self._plus_record(_PlusPdu(ts, to_server, opcode, -1, -1, f), None))
            return
        if opcode not in (0x31, 0x32, 0x02) or len(body) < i + 9:
            out.append(
                self._anomaly(
                    ts,
                    "s7plus-short-pdu",
                    f"S7comm-plus opcode 0x{opcode:02x} with a {len(body) - i}-byte header",
                    PROTO_PLUS,
                )
            )
            return
        func, seq = struct.unpack_from(">HxxH", body, i + 3)
        pdu = _PlusPdu(ts, to_server, opcode, func, seq, f)
        f["s7comm_plus.function_code"] = func
        f["s7comm_plus.sequence_number"] = seq
        if opcode == 0x31:
            if len(body) >= i + 14:
                f["s7comm_plus.session_id"] = int.from_bytes(body[i + 9 : i + 13], "big")
                f["s7comm_plus.transport_flags"] = body[i + 13]
            key = (to_server, seq)
            old = self._plus_pending.pop(key, None)
            if old is not None:
                out.append(self._plus_record(old, None))
            pending = self._plus_pending
            if len(pending) >= self.limits.max_pending:
                out.append(self._plus_record(pending.pop(next(iter(pending))), None))
                self._overflow(ts, out, PROTO_PLUS)
            while pending and ts - pending[next(iter(pending))].ts > REQUEST_TIMEOUT:
                out.append(self._plus_record(pending.pop(next(iter(pending))), None))
            pending[key] = pdu
            return
        if len(body) >= i + 10:
            f["s7comm_plus.transport_flags"] = body[i + 9]
            j = i + 10
            retval, j = _vlq(body, j)
            if retval is not None:
                # 64 bits, kept signed so that stores with 64-bit integers take it as it is
                f["s7comm_plus.return_value"] = retval - (1 << 64) if retval >> 63 else retval
                error_code = (retval & 0xFFFF) - 0x10000 if retval & 0x8000 else retval & 0xFFFF
                f["s7comm_plus.error_code"] = error_code
                if error_code < 0:
                    pdu.failed = True
                if func == 0x04CA and j < len(body):  # CreateObject answer: object ids
                    count = body[j]
                    object_id, _ = _vlq(body, j + 1, 5)
                    if count and object_id is not None:
                        f["s7comm_plus.created_object_id"] = object_id
                    match = _PLUS_MODULE_RE.search(body)
                    if match and not to_server:
                        pdu.device = {
                            "vendor": "Siemens",
                            "order_number": match.group(1).decode(),
                            "firmware": "V" + match.group(2).decode(),
                        }
        req = self._plus_pending.pop((not to_server, seq), None)
        if (
            req is not None and req.function_code != func
        ):  # same sequence, other function: not its answer
            self._plus_pending[(not to_server, seq)] = req
            req = None
        out.append(self._plus_record(req, pdu) if req is not None else self._plus_record(pdu, None))

    def _plus_record(self, req: _PlusPdu, resp: _PlusPdu | None) -> Record:
        rec: Record = {"ts": req.ts, "network.protocol": PROTO_PLUS}
        rec.update(self._conn)
        rec.update(req.fields)
        if req.opcode == 0x33:
            name, operation = "notification", "read"
        else:
            name, operation = PLUS_FUNCTIONS.get(
                req.function_code, (f"function_0x{req.function_code:04x}", "other")
            )
            rec["s7comm_plus.function"] = name
        failed = req.failed
        if resp is not None:
            rec["event.duration"] = int(round((resp.ts - req.ts) * 1e9))
            rec["s7comm_plus.response.sequence_number"] = resp.seq
            rec["s7comm_plus.response.opcode"] = resp.opcode
            for key in (
                "s7comm_plus.return_value",
                "s7comm_plus.error_code",
                "s7comm_plus.created_object_id",
            ):
                if key in resp.fields:
                    rec[key] = resp.fields[key]
            rec["s7comm_plus.response.data_length"] = resp.fields.get("s7comm_plus.data_length")
            rec["s7comm_plus.response.fragments"] = resp.fields.get("s7comm_plus.fragments")
            failed = failed or resp.failed
            device = resp.device
        else:
            device = req.device
        for key, value in device.items():
            rec["ics.device." + key] = value
        rec["event.action"] = _kebab(name)
        rec["ics.function"] = name
        rec["ics.operation"] = operation
        rec["event.type"] = _event_type(operation)
        if failed:
            rec["event.outcome"] = "failure"
        elif resp is not None or req.opcode != 0x31:
            rec["event.outcome"] = "success"
        else:
            rec["event.outcome"] = "unknown"
        return rec


def _vlq(buf: bytes, i: int, max_bytes: int = 9) -> tuple[int | None, int]:
    """S7comm-plus variable-length unsigned integer: 7 bits per byte while the high bit says
    more follow; the last possible byte (the 9th for 64-bit, the 5th for 32-bit values)
    carries 8 bits. Returns (value, next offset), value None when the buffer ends first."""
    value = 0
    for k in range(max_bytes):
        if i + k >= len(buf):
            return None, i + k
        b = buf[i + k]
        if k == max_bytes - 1:
            return (value << 8) | b, i + k + 1
        value = (value << 7) | (b & 0x7F)
        if not b & 0x80:
            return value, i + k + 1
    return None, i + max_bytes
