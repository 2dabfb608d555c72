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

Fields: ``fields.py`` declares each one with its type (docs/schema.md lists them). The COTP
connection request and confirm give one ``cotp-connect`` record and their facts (TSAPs,
connection type, rack and slot) ride on every later record of the connection; a COTP DR gives
``cotp-disconnect``. S7comm (``network.protocol: s7comm``): unprefixed fields describe the
request PDU (or the response when no request was seen), ``s7comm.response.*`` the response
PDU of the pair; jobs (read/write var items with their data, block download and upload, PI
services, setup communication) and userdata (cyclic services, block functions, SZL reads,
clock, diagnostic messages). Password data (security group) is never copied into records.
Identity from SZL 0x0011 / 0x001C answers sent by the server; protection levels from SZL
0x0132 / 0x0232 index 4. S7comm-plus (``network.protocol: s7comm-plus``): the public header
structure (version, integrity digest, opcode, function, sequence number, session id, the
answer's return value), identity from the CreateObject answer's module string
(``1;6ES7 511-1AK00-0AB0;V1.0``). Keep-alive PDUs (version 0xfe/0xff, or no data) give no
record.

Anomalies (``error.type``): the closed set in ``anomalies.Anomaly``.

Layers: ``framing`` (TPKT, COTP, probe), ``pdu`` (S7comm jobs, acks, userdata), ``plus``
(S7comm-plus), ``identity`` (SZL answers, the S7comm-plus module string), ``records`` (one
record per transaction), ``parser`` (the connection: state, dispatch, pairing), ``tables``
(code tables), ``values`` (S7 value encodings).
"""

from __future__ import annotations

from sensor.protocols import facts
from sensor.protocols.s7comm import fields
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

NAME = facts.S7COMM_NAME
PORTS = facts.S7COMM_PORTS
HEURISTIC_DEFAULT = facts.S7COMM_HEURISTIC_DEFAULT

__all__ = [
    "fields",
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
