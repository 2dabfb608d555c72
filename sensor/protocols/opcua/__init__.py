"""OPC UA binary (UA TCP, ``opc.tcp://``): transport messages, secure-channel headers, chunk
reassembly, every Part 4 service by its encoding NodeId, request/response pairing, and a
detailed decoding of the services that matter for monitoring.

Transport: HEL/ACK/ERR/RHE and OPN/MSG/CLO chunks (``F`` final, ``C`` intermediate, ``A``
abort). Intermediate chunks are reassembled per request id up to the limits negotiated in
HEL/ACK (receive buffer size, max message size, max chunk count), never beyond
``limits.max_buffer`` bytes per message. A message whose sender aborts it (``A``) is reported
with the abort's status code. OPN pairs with the next OPN answer, HEL with ACK/ERR, MSG
requests with responses by request id (the request handle when the sequence header could not
be read). CLO is reported on its own (it has no answer).

Security: the asymmetric header of OPN (policy URI, certificate presence) and the symmetric
header of MSG/CLO (token id) are always decoded. With a policy other than ``None`` the body is
only decoded when it is visibly in clear (a ``Sign`` channel: the sequence header and a
service NodeId parse); otherwise the message is reported with ``opcua.encrypted = true`` and
nothing that would have to be guessed (no sequence number, request id or service). A capture
that starts after HEL/OPN is decoded the same way: MSG chunks that parse as a channel in
clear (security policy ``None``) are dissected.

One record per transaction; ``ics.pairing`` says ``paired``, ``request-only`` (unanswered, or
an answer that cannot come: CLO, an aborted request) or ``response-only`` (the request was
not seen). Fields: ``fields.py`` declares each one with its type (docs/schema.md lists them):
transport and secure channel headers, negotiated limits, the service and its result, and the
decoded bodies of the services that matter (sessions, endpoints, reads, writes, calls,
browsing, subscriptions). Device identity: the server's ApplicationDescription
(GetEndpoints / CreateSession answers) and a Read of its BuildInfo variables
(``i=2261``-``i=2265``).

Anomalies (``error.type``): the closed set in ``anomalies.Anomaly``.

Layers: ``transport`` (UA TCP headers, probe, reassembly state), ``parser`` (the connection:
framing, secure channel, reassembly, pairing), ``encoding`` (Part 6 built-in types),
``services`` (Part 4 service bodies), ``identity`` (ApplicationDescription, BuildInfo),
``records`` (one record per transaction), ``tables`` and ``nodeids`` (code tables).
"""

from __future__ import annotations

from sensor.protocols import facts
from sensor.protocols.opcua import fields
from sensor.protocols.opcua.anomalies import Anomaly
from sensor.protocols.opcua.encoding import MAX_ARRAY_VALUES, MAX_DEPTH, MAX_STRING
from sensor.protocols.opcua.parser import Parser
from sensor.protocols.opcua.services import decode_body
from sensor.protocols.opcua.tables import ACTION, OPERATION, SERVICES, STATUS_CODES, status_name
from sensor.protocols.opcua.transport import MAX_PARTIAL_MESSAGES, MESSAGE_TYPES, probe

NAME = facts.OPCUA_NAME
PORTS = facts.OPCUA_PORTS
HEURISTIC_DEFAULT = facts.OPCUA_HEURISTIC_DEFAULT

__all__ = [
    "fields",
    "ACTION",
    "HEURISTIC_DEFAULT",
    "MAX_ARRAY_VALUES",
    "MAX_DEPTH",
    "MAX_PARTIAL_MESSAGES",
    "MAX_STRING",
    "MESSAGE_TYPES",
    "NAME",
    "OPERATION",
    "PORTS",
    "SERVICES",
    "STATUS_CODES",
    "Anomaly",
    "Parser",
    "decode_body",
    "probe",
    "status_name",
]
