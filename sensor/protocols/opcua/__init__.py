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
not seen). Fields (under ``opcua.``; ints unless noted):

| field | meaning |
| --- | --- |
| ``message_type`` | ``HEL``, ``ACK``, ``ERR``, ``RHE``, ``OPN``, ``MSG``, ``CLO`` (the request's) |
| ``response_message_type`` | ``ACK`` or ``ERR`` answering a ``HEL`` (only when it differs from ``message_type``) |
| ``chunk_count`` | chunks of the request when more than one; ``response_chunk_count`` likewise |
| ``secure_channel_id``, ``token_id`` | secure channel and security token (OPN answers carry the issued ones) |
| ``sequence_number``, ``response_sequence_number``, ``request_id`` | sequence header (absent when encrypted) |
| ``security_policy_uri`` | the channel's policy, from the OPN asymmetric header |
| ``security_policy`` | its short name (``None``, ``Basic256Sha256``, ...) |
| ``security_mode`` | ``None``, ``Sign``, ``SignAndEncrypt``: from the OPN request when it is readable; ``Sign`` also when a protected policy's bodies visibly parse in clear |
| ``encrypted`` | bool: the body could not be read because the channel protects it |
| ``signed`` | bool: the channel policy is not ``None`` (every chunk carries a signature) |
| ``certificate_present`` | bool: OPN asymmetric header carries a sender certificate |
| ``server_certificate.*`` | the server's certificate (OPN answer, GetEndpoints, CreateSession answer): ``subject``, ``issuer``, ``not_before``, ``not_after``, ``self_signed``, ``sha1``, ``serial_number``, ``key_bits``, ``signature_hash``, ``parse_error`` (``sensor/protocols/certificates.py``) |
| ``service`` | service name without Request/Response (``Read``); ``unknown`` when the id is not a Part 4 service |
| ``service_type_id``, ``response_type_id`` | numeric encoding NodeId of the request / response body (``i=`` form kept in ``service_node_id`` when not numeric ns=0) |
| ``request_handle`` | RequestHeader.RequestHandle (the response's when no request was seen) |
| ``response_request_handle`` | the answer's handle, only when it differs from the request's (pairing is by request id) |
| ``status_code``, ``status`` | ServiceResult (or ERR/abort error) and its symbolic name |
| ``service_fault`` | bool: the answer was a ServiceFault |
| ``aborted`` | bool: the message was aborted by its sender (``A`` chunk) |
| ``protocol_version``, ``receive_buffer_size``, ``send_buffer_size``, ``max_message_size``, ``max_chunk_count`` | HEL |
| ``revised_receive_buffer_size``, ``revised_send_buffer_size``, ``revised_max_message_size``, ``revised_max_chunk_count`` | ACK |
| ``endpoint_url`` | HEL, RHE, GetEndpoints, CreateSession, FindServers (string) |
| ``error_reason`` | ERR / abort reason (string) |
| ``server_uri`` | RHE, CreateSession (string) |
| ``request_type`` | OPN: ``issue`` or ``renew`` |
| ``requested_lifetime``, ``revised_lifetime`` | OPN token lifetime, ms |
| ``application_uri``, ``product_uri``, ``application_name``, ``application_type`` | the *server's* ApplicationDescription (GetEndpoints, CreateSession answers) |
| ``client.application_uri``, ``client.product_uri``, ``client.application_name``, ``client.application_type`` | CreateSession's ClientDescription |
| ``session_name``, ``session_id`` | CreateSession (session id as a NodeId string) |
| ``endpoint_count``, ``endpoint_urls``, ``security_policy_uris``, ``security_modes``, ``user_token_types`` | GetEndpoints / CreateSession answers: what the server offers (lists, unique, in order) |
| ``server_count``, ``server_application_uris``, ``discovery_urls``, ``server_names`` | FindServers / FindServersOnNetwork answers |
| ``identity_token`` | ActivateSession: ``anonymous``, ``username``, ``x509``, ``issued`` or the token type id |
| ``identity_policy_id`` | ActivateSession token's policy id |
| ``user_name`` | ActivateSession user name (the password is never decoded) |
| ``password_encrypted`` | bool: the UserName token names an encryption algorithm (false: the password travels in clear inside the token) |
| ``delete_subscriptions`` | CloseSession |
| ``node_ids`` | list of NodeId strings (``ns=2;i=5``, ``i=2258``, ``ns=1;s=Name``): Read, Write, Browse, RegisterNodes, UnregisterNodes, CreateMonitoredItems, TranslateBrowsePaths (starting nodes), AddNodes (requested ids), DeleteNodes |
| ``attribute_ids``, ``attributes`` | attribute ids and names (``Value``) aligned with ``node_ids`` |
| ``values`` | list of ``{type, value}`` (plus ``status_code`` when not Good): Read answers, Write requests, Publish data changes; ``value`` is JSON (numbers, strings, bools, lists of at most 100; ByteStrings as hex, structures as ``"<type id> (<n> bytes)"``) |
| ``result_codes`` | per-operation status codes of the answer (Write, Browse, Call, CreateMonitoredItems, ActivateSession, AddNodes, ...) |
| ``browse_paths``, ``target_node_ids`` | TranslateBrowsePathsToNodeIds: ``i=85/0:Objects/2:Pump`` paths and the resolved targets |
| ``reference_count``, ``browse_names``, ``continuation_point_count`` | Browse / BrowseNext answers; BrowseNext requests |
| ``object_ids``, ``method_ids``, ``input_arguments``, ``output_arguments`` | Call (arguments as ``{type, value}``) |
| ``subscription_id``, ``publishing_interval``, ``revised_publishing_interval``, ``lifetime_count``, ``max_keep_alive_count``, ``priority``, ``publishing_enabled`` | CreateSubscription |
| ``monitored_item_ids``, ``monitoring_mode`` | CreateMonitoredItems |
| ``acknowledgement_count``, ``notification_sequence_number``, ``notification_count``, ``more_notifications`` | Publish (``notification_count``: data changes + events + status changes) |
| ``registered_node_ids``, ``parent_node_ids``, ``subscription_ids`` | RegisterNodes, AddNodes, DeleteSubscriptions |
| ``truncated`` | bool: lists were cut at ``limits.max_items`` |
| ``decode_error`` | why the body decoding stopped early (the fields before it stay) |

Device identity: the server's ApplicationDescription (GetEndpoints / CreateSession answers)
gives ``ics.device.application_uri``, ``ics.device.product_uri`` and ``ics.device.name``
(ApplicationName); a Read of the server's BuildInfo variables (``i=2261``-``i=2265``) gives
``ics.device.vendor`` (ManufacturerName), ``ics.device.product`` and ``ics.device.model``
(ProductName), ``ics.device.product_uri`` and ``ics.device.firmware`` (SoftwareVersion, with
BuildNumber).

Anomalies (``error.type``): the closed set in ``anomalies.Anomaly``.

Layers: ``transport`` (UA TCP headers, probe, reassembly state), ``parser`` (the connection:
framing, secure channel, reassembly, pairing), ``encoding`` (Part 6 built-in types),
``services`` (Part 4 service bodies), ``identity`` (ApplicationDescription, BuildInfo),
``records`` (one record per transaction), ``tables`` and ``nodeids`` (code tables).
"""

from __future__ import annotations

from sensor.protocols.opcua.anomalies import Anomaly
from sensor.protocols.opcua.encoding import MAX_ARRAY_VALUES, MAX_DEPTH, MAX_STRING
from sensor.protocols.opcua.parser import Parser
from sensor.protocols.opcua.services import decode_body
from sensor.protocols.opcua.tables import ACTION, OPERATION, SERVICES, STATUS_CODES, status_name
from sensor.protocols.opcua.transport import MAX_PARTIAL_MESSAGES, MESSAGE_TYPES, probe

NAME = "opcua"
PORTS = (4840,)
HEURISTIC_DEFAULT = True  # a 4-byte message/chunk signature makes probing any port safe

__all__ = [
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
