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

Anomalies (``error.type``): the closed set in ``anomalies.Anomaly``.

Layers: ``framing`` (TPKT, COTP, probe), ``pdu`` (S7comm jobs, acks, userdata), ``plus``
(S7comm-plus), ``identity`` (SZL answers, the S7comm-plus module string), ``records`` (one
record per transaction), ``parser`` (the connection: state, dispatch, pairing), ``tables``
(code tables), ``values`` (S7 value encodings).
"""

from __future__ import annotations

from sensor.protocols.s7comm.anomalies import Anomaly
from sensor.protocols.s7comm.framing import probe
from sensor.protocols.s7comm.parser import REQUEST_TIMEOUT, Parser
from sensor.protocols.s7comm.tables import (
    BLOCK_TYPES,
    JOB_FUNCTIONS,
    PLUS_FUNCTIONS,
    PROTO_PLUS,
    PROTO_S7,
    ROSCTR_NAMES,
    USERDATA_GROUPS,
    USERDATA_SUBFUNCTIONS,
)

NAME = "s7comm"
PORTS = (102,)
# The probe wants TPKT + COTP + an S7 header (or a CR with TSAPs): RDP's TPKT/COTP does not pass.
HEURISTIC_DEFAULT = True

__all__ = [
    "BLOCK_TYPES",
    "HEURISTIC_DEFAULT",
    "JOB_FUNCTIONS",
    "NAME",
    "PLUS_FUNCTIONS",
    "PORTS",
    "PROTO_PLUS",
    "PROTO_S7",
    "REQUEST_TIMEOUT",
    "ROSCTR_NAMES",
    "USERDATA_GROUPS",
    "USERDATA_SUBFUNCTIONS",
    "Anomaly",
    "Parser",
    "probe",
]
