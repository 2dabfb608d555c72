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

Anomalies (``error.type``): ``opcua-bad-header`` (bytes skipped to the next header, with
``opcua.skipped_bytes``), ``opcua-chunk-too-large`` (beyond the negotiated buffer size, or
beyond ``limits.max_buffer``: skipped), ``opcua-message-too-large`` and
``opcua-too-many-chunks`` (beyond the negotiated MaxMessageSize / MaxChunkCount: reported and
still decoded; beyond ``limits.max_buffer`` or too many messages in reassembly: dropped),
``opcua-lost-chunk`` (a gap inside a message), ``opcua-malformed-body`` (the body does not
follow the encoding; the fields read before the error stay in the transaction, with
``opcua.decode_error``), ``opcua-response-mismatch`` (an answer of another service for a
pending request id), ``opcua-pending-overflow``, ``opcua-buffer-overflow``,
``opcua-truncated`` (the connection ended inside a chunk or message) and
``opcua-internal-error`` (a dissector bug caught; the stream is resynchronised).
"""

from __future__ import annotations

import base64
import math
import re
import struct
import uuid
from collections import OrderedDict
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from sensor.protocols.base import ParserLimits, Record, anomaly
from sensor.protocols.certificates import fields as certificate_fields
from sensor.protocols.opcua_types import SERVICE_FAULT_ID, SERVICES, STATUS_CODES

NAME = "opcua"
PORTS = (4840,)
HEURISTIC_DEFAULT = True  # a 4-byte message/chunk signature makes probing any port safe

MESSAGE_TYPES = frozenset((b"HEL", b"ACK", b"ERR", b"RHE", b"OPN", b"MSG", b"CLO"))
_SECURE_TYPES = frozenset((b"OPN", b"MSG", b"CLO"))
_CHUNK_TYPES = frozenset(b"FCA")
# a header candidate: message type, chunk type, size below 16 MiB (top byte zero)
_HEADER_RE = re.compile(rb"(?:MSG|OPN|CLO|HEL|ACK|ERR|RHE)[FCA][\x00-\xff]{3}\x00")
HARD_MAX_CHUNK = 16 << 20  # a declared size above this is not OPC UA, whatever was negotiated
_MIN_SIZE = {b"HEL": 32, b"ACK": 28, b"ERR": 16, b"RHE": 16, b"OPN": 24, b"MSG": 24, b"CLO": 24}
MAX_PARTIAL_MESSAGES = 32  # messages being reassembled per direction
MAX_STRING = 1024  # characters kept of any string in a record
MAX_BYTES_HEX = 64  # bytes of a ByteString value kept (as hex)
MAX_DEPTH = 8  # nesting of Variant / DiagnosticInfo / DataValue before declaring the body malformed
MAX_ARRAY_VALUES = 100  # elements kept of one array value: an event carries a sample, not the bulk

NONE_POLICY = "http://opcfoundation.org/UA/SecurityPolicy#None"
# HMAC output length of each policy's symmetric signature: stripped from chunks in clear
_SIGNATURE_SIZE = {
    "Basic128Rsa15": 20,
    "Basic256": 20,
    "Basic256Sha256": 32,
    "Aes128_Sha256_RsaOaep": 32,
    "Aes256_Sha256_RsaPss": 32,
}

SECURITY_MODES = {1: "None", 2: "Sign", 3: "SignAndEncrypt"}
USER_TOKEN_TYPES = {0: "anonymous", 1: "username", 2: "x509", 3: "issued"}
IDENTITY_TOKENS = {321: "anonymous", 324: "username", 327: "x509", 940: "issued"}
APPLICATION_TYPES = {0: "server", 1: "client", 2: "client_and_server", 3: "discovery_server"}
ATTRIBUTES = {
    1: "NodeId",
    2: "NodeClass",
    3: "BrowseName",
    4: "DisplayName",
    5: "Description",
    6: "WriteMask",
    7: "UserWriteMask",
    8: "IsAbstract",
    9: "Symmetric",
    10: "InverseName",
    11: "ContainsNoLoops",
    12: "EventNotifier",
    13: "Value",
    14: "DataType",
    15: "ValueRank",
    16: "ArrayDimensions",
    17: "AccessLevel",
    18: "UserAccessLevel",
    19: "MinimumSamplingInterval",
    20: "Historizing",
    21: "Executable",
    22: "UserExecutable",
    23: "DataTypeDefinition",
    24: "RolePermissions",
    25: "UserRolePermissions",
    26: "AccessRestrictions",
    27: "AccessLevelEx",
}
BUILTIN_TYPES = {
    1: "Boolean",
    2: "SByte",
    3: "Byte",
    4: "Int16",
    5: "UInt16",
    6: "Int32",
    7: "UInt32",
    8: "Int64",
    9: "UInt64",
    10: "Float",
    11: "Double",
    12: "String",
    13: "DateTime",
    14: "Guid",
    15: "ByteString",
    16: "XmlElement",
    17: "NodeId",
    18: "ExpandedNodeId",
    19: "StatusCode",
    20: "QualifiedName",
    21: "LocalizedText",
    22: "ExtensionObject",
    23: "DataValue",
    24: "Variant",
    25: "DiagnosticInfo",
}
# Server.ServerStatus.BuildInfo variables (ns=0) -> ics.device field
_BUILD_INFO = {
    2261: "product",
    2262: "product_uri",
    2263: "vendor",
    2264: "firmware",
    2265: "build_number",
}

_REQUEST_IDS: dict[int, str] = {req: name for name, (req, _resp) in SERVICES.items()}
_RESPONSE_IDS: dict[int, str] = {resp: name for name, (_req, resp) in SERVICES.items()}

# service -> (ics.operation, event.type second element)
_OPERATION: dict[str, tuple[str, str]] = {}
for _names, _op, _etype in (
    (
        (
            "Read",
            "HistoryRead",
            "Browse",
            "BrowseNext",
            "TranslateBrowsePathsToNodeIds",
            "QueryFirst",
            "QueryNext",
            "RegisterNodes",
            "UnregisterNodes",
            "CreateSubscription",
            "ModifySubscription",
            "SetPublishingMode",
            "Publish",
            "Republish",
            "TransferSubscriptions",
            "DeleteSubscriptions",
            "CreateMonitoredItems",
            "ModifyMonitoredItems",
            "SetMonitoringMode",
            "SetTriggering",
            "DeleteMonitoredItems",
        ),
        "read",
        "access",
    ),
    (("Write", "HistoryUpdate"), "write", "change"),
    (("Call",), "control", "change"),
    (("AddNodes", "AddReferences", "DeleteNodes", "DeleteReferences"), "program", "change"),
    (
        (
            "FindServers",
            "FindServersOnNetwork",
            "GetEndpoints",
            "RegisterServer",
            "RegisterServer2",
        ),
        "diagnostic",
        "info",
    ),
    (
        (
            "OpenSecureChannel",
            "CloseSecureChannel",
            "CreateSession",
            "ActivateSession",
            "CloseSession",
            "Cancel",
        ),
        "session",
        "info",
    ),
):
    for _n in _names:
        _OPERATION[_n] = (_op, _etype)

_U8 = struct.Struct("<B").unpack_from
_U16 = struct.Struct("<H").unpack_from
_U32 = struct.Struct("<I").unpack_from
_I32 = struct.Struct("<i").unpack_from
_HDR = struct.Struct("<3scI").unpack_from
_II = struct.Struct("<II").unpack_from
_BASIC = {
    2: struct.Struct("<b"),
    3: struct.Struct("<B"),
    4: struct.Struct("<h"),
    5: struct.Struct("<H"),
    6: struct.Struct("<i"),
    7: struct.Struct("<I"),
    8: struct.Struct("<q"),
    9: struct.Struct("<Q"),
    10: struct.Struct("<f"),
    11: struct.Struct("<d"),
    13: struct.Struct("<q"),
    19: struct.Struct("<I"),
}
_EPOCH_1601 = datetime(1601, 1, 1, tzinfo=UTC)


def status_name(code: int) -> str:
    """Symbolic name of a StatusCode (info bits ignored); ``0x........`` when unknown."""
    name = STATUS_CODES.get(code) or STATUS_CODES.get(code & 0xFFFF0000)
    return name or f"0x{code:08X}"


def _is_bad(code: int) -> bool:
    return code & 0x80000000 != 0


def _kebab(name: str) -> str:
    out = []
    for i, ch in enumerate(name):
        if (
            ch.isupper()
            and i
            and (not name[i - 1].isupper() or (i + 1 < len(name) and name[i + 1].islower()))
        ):
            out.append("-")
        out.append(ch.lower())
    return "".join(out)


_ACTION = {name: _kebab(name) for name in SERVICES}
_FUNCTION = {name: a.replace("-", "_") for name, a in _ACTION.items()}


def probe(data: bytes) -> bool:
    """Does ``data`` start with a UA TCP message header (type, chunk type, sane size)?"""
    if len(data) < 8:
        return False
    mtype, chunk, size = _HDR(data, 0)
    if mtype not in MESSAGE_TYPES or chunk[0] not in _CHUNK_TYPES:
        return False
    if mtype not in _SECURE_TYPES and chunk != b"F":
        return False
    return _MIN_SIZE[mtype] <= size <= HARD_MAX_CHUNK


# -- built-in type decoding -----------------------------------------------------------


class DecodeError(Exception):
    """The body does not follow the encoding (internal: becomes an anomaly, never escapes)."""


class _Reader:
    """A bounds-checked little-endian cursor over one message body."""

    __slots__ = ("buf", "pos", "end", "max_items", "truncated")

    def __init__(self, buf: bytes, max_items: int, pos: int = 0) -> None:
        self.buf = buf
        self.pos = pos
        self.end = len(buf)
        self.max_items = max_items
        self.truncated = False

    def need(self, n: int) -> int:
        p = self.pos
        if n < 0 or p + n > self.end:
            raise DecodeError(f"needs {n} bytes at offset {p}, {self.end - p} left")
        self.pos = p + n
        return p

    def u8(self) -> int:
        return self.buf[self.need(1)]

    def boolean(self) -> bool:
        return self.buf[self.need(1)] != 0

    def u16(self) -> int:
        return _U16(self.buf, self.need(2))[0]

    def u32(self) -> int:
        return _U32(self.buf, self.need(4))[0]

    def i32(self) -> int:
        return _I32(self.buf, self.need(4))[0]

    def f64(self) -> float:
        return struct.unpack_from("<d", self.buf, self.need(8))[0]

    def skip(self, n: int) -> None:
        self.need(n)

    def raw(self) -> bytes | None:
        """ByteString / String bytes; None for the null (-1) encoding."""
        n = self.i32()
        if n == -1:
            return None
        if n < -1:
            raise DecodeError(f"negative length {n}")
        p = self.need(n)
        return bytes(self.buf[p : p + n])

    def string(self) -> str | None:
        data = self.raw()
        if data is None:
            return None
        text = data.decode("utf-8", "replace")
        return text if len(text) <= MAX_STRING else text[:MAX_STRING]

    def skip_raw(self) -> int:
        """Skip a ByteString; returns its length (-1 for null)."""
        n = self.i32()
        if n > 0:
            self.need(n)
        elif n < -1:
            raise DecodeError(f"negative length {n}")
        return n

    def count(self) -> int:
        """An array length; -1 (null) reads as 0. Each element takes at least one byte."""
        n = self.i32()
        if n < -1 or n > self.end - self.pos:
            raise DecodeError(f"array length {n} with {self.end - self.pos} bytes left")
        return max(n, 0)

    def array(self, item: Callable[[], object]) -> list:
        n = self.count()
        out = []
        keep = self.max_items
        for i in range(n):
            v = item()
            if i < keep:
                out.append(v)
            else:
                self.truncated = True
        return out

    def strings(self) -> list[str | None]:
        return self.array(self.string)

    def guid(self) -> str:
        p = self.need(16)
        return str(uuid.UUID(bytes_le=bytes(self.buf[p : p + 16])))

    def node_id(self) -> str:
        mask = self.u8()
        return self._node_id_body(mask & 0x3F)

    def _node_id_body(self, enc: int) -> str:
        if enc == 0:
            return f"i={self.u8()}"
        if enc == 1:
            ns = self.u8()
            ident = self.u16()
            return f"ns={ns};i={ident}" if ns else f"i={ident}"
        if enc == 2:
            ns = self.u16()
            ident = self.u32()
            return f"ns={ns};i={ident}" if ns else f"i={ident}"
        if enc == 3:
            ns = self.u16()
            s = self.string()
            return f"ns={ns};s={s or ''}" if ns else f"s={s or ''}"
        if enc == 4:
            ns = self.u16()
            g = self.guid()
            return f"ns={ns};g={g}" if ns else f"g={g}"
        if enc == 5:
            ns = self.u16()
            b = self.raw() or b""
            text = base64.b64encode(b[:MAX_STRING]).decode()
            return f"ns={ns};b={text}" if ns else f"b={text}"
        raise DecodeError(f"NodeId encoding {enc}")

    def expanded_node_id(self) -> str:
        mask = self.u8()
        body = self._node_id_body(mask & 0x3F)
        if mask & 0x80:
            uri = self.string()
            if uri:
                body = f"nsu={uri};" + body.split(";", 1)[-1]
        if mask & 0x40:
            body = f"svr={self.u32()};" + body
        return body

    def numeric_node_id(self) -> tuple[int | None, str]:
        """A NodeId as (numeric id when ns=0 and numeric, text)."""
        start = self.pos
        mask = self.u8()
        enc = mask & 0x3F
        if enc == 0:
            v = self.u8()
            return v, f"i={v}"
        if enc == 1 and self.pos < self.end and self.buf[self.pos] == 0:
            self.pos += 1
            v = self.u16()
            return v, f"i={v}"
        if enc == 2 and self.end - self.pos >= 6 and _U16(self.buf, self.pos)[0] == 0:
            self.pos += 2
            v = self.u32()
            return v, f"i={v}"
        self.pos = start
        text = self.expanded_node_id()
        return None, text

    def qualified_name(self) -> str:
        ns = self.u16()
        name = self.string() or ""
        return f"{ns}:{name}"

    def localized_text(self) -> str | None:
        mask = self.u8()
        if mask & 0x01:
            self.skip_raw()
        if mask & 0x02:
            return self.string()
        return None

    def diagnostic_info(self, depth: int = 0) -> None:
        if depth > MAX_DEPTH:
            raise DecodeError("DiagnosticInfo nested too deep")
        mask = self.u8()
        for bit in (0x01, 0x02, 0x08, 0x04):
            if mask & bit:
                self.need(4)
        if mask & 0x10:
            self.skip_raw()
        if mask & 0x20:
            self.need(4)
        if mask & 0x40:
            self.diagnostic_info(depth + 1)

    def diagnostic_infos(self) -> None:
        for _ in range(self.count()):
            self.diagnostic_info()

    def extension_object(self) -> tuple[int | None, str, bytes | None]:
        """(numeric type id, type id text, binary body or None)."""
        num, text = self.numeric_node_id()
        enc = self.u8()
        if enc == 0:
            return num, text, None
        if enc in (1, 2):
            body = self.raw()
            return num, text, body if enc == 1 else None
        raise DecodeError(f"ExtensionObject encoding {enc}")

    def status_code(self) -> int:
        return self.u32()

    def data_value(self, depth: int = 0) -> dict:
        mask = self.u8()
        out: dict = {"type": None, "value": None}
        if mask & 0x01:
            out = self.variant(depth + 1)
        if mask & 0x02:
            code = self.u32()
            if code:
                out = dict(out)
                out["status_code"] = code
        if mask & 0x04:
            self.need(8)
        if mask & 0x10:
            self.need(2)
        if mask & 0x08:
            self.need(8)
        if mask & 0x20:
            self.need(2)
        return out

    def variant(self, depth: int = 0) -> dict:
        if depth > MAX_DEPTH:
            raise DecodeError("Variant nested too deep")
        mask = self.u8()
        type_id = mask & 0x3F
        tname = BUILTIN_TYPES.get(type_id)
        if type_id == 0:
            return {"type": None, "value": None}
        if tname is None:
            raise DecodeError(f"Variant type {type_id}")
        if mask & 0x80:
            n = self.count()
            values = []
            keep = min(self.max_items, MAX_ARRAY_VALUES)
            for i in range(n):
                v = self.scalar(type_id, depth)
                if i < keep:
                    values.append(v)
                else:
                    self.truncated = True
            if mask & 0x40:
                self.array(self.i32)
            return {"type": tname, "value": values}
        return {"type": tname, "value": self.scalar(type_id, depth)}

    def scalar(self, type_id: int, depth: int) -> object:
        st = _BASIC.get(type_id)
        if st is not None:
            v = st.unpack_from(self.buf, self.need(st.size))[0]
            if type_id == 13:
                return _datetime(v)
            if type_id in (10, 11) and not math.isfinite(v):
                return str(v)
            return v
        if type_id == 1:
            return self.boolean()
        if type_id in (12, 16):
            return self.string()
        if type_id == 14:
            return self.guid()
        if type_id == 15:
            b = self.raw()
            return None if b is None else b[:MAX_BYTES_HEX].hex()
        if type_id == 17:
            return self.node_id()
        if type_id == 18:
            return self.expanded_node_id()
        if type_id == 20:
            return self.qualified_name()
        if type_id == 21:
            return self.localized_text()
        if type_id == 22:
            # a structure icsmon does not decode: its type and size, as text (one JSON type per field)
            _num, text, body = self.extension_object()
            return f"{text} ({0 if body is None else len(body)} bytes)"
        if type_id == 23:
            return self.data_value(depth + 1)
        if type_id == 24:
            return self.variant(depth + 1)
        if type_id == 25:
            self.diagnostic_info(depth + 1)
            return None
        raise DecodeError(f"built-in type {type_id}")


def _datetime(ticks: int) -> str | None:
    """OPC UA DateTime (100 ns since 1601) as ISO 8601; None for the 'no time' values."""
    if ticks <= 0 or ticks >= 0x7FFFFFFFFFFFFFFF:
        return None
    try:
        return (
            (_EPOCH_1601 + timedelta(microseconds=ticks // 10)).isoformat().replace("+00:00", "Z")
        )
    except OverflowError:
        return None


# -- service bodies -------------------------------------------------------------------


def _request_header(r: _Reader, f: dict) -> None:
    r.node_id()  # authentication token: a session secret, deliberately not reported
    r.need(8)  # timestamp
    f["opcua.request_handle"] = r.u32()
    r.need(4)  # return diagnostics
    r.skip_raw()  # audit entry id
    r.need(4)  # timeout hint
    r.extension_object()


def _response_header(r: _Reader, f: dict) -> None:
    r.need(8)
    f["opcua.request_handle"] = r.u32()
    code = r.u32()
    f["opcua.status_code"] = code
    f["opcua.status"] = status_name(code)
    r.diagnostic_info()
    r.strings()
    r.extension_object()


def _append_unique(f: dict, key: str, value: object) -> None:
    if value is None:
        return
    lst = f.setdefault(key, [])
    if value not in lst:
        lst.append(value)


def _application_description(r: _Reader) -> dict:
    app = {
        "application_uri": r.string(),
        "product_uri": r.string(),
        "application_name": r.localized_text(),
    }
    atype = r.u32()
    app["application_type"] = APPLICATION_TYPES.get(atype, str(atype))
    r.skip_raw()  # gateway server uri
    r.skip_raw()  # discovery profile uri
    app["discovery_urls"] = r.strings()
    return app


def _server_identity(f: dict, app: dict) -> None:
    for key in ("application_uri", "product_uri", "application_name", "application_type"):
        if app.get(key) is not None:
            f.setdefault(f"opcua.{key}", app[key])
    if app.get("application_uri"):
        f.setdefault("ics.device.application_uri", app["application_uri"])
    if app.get("product_uri"):
        f.setdefault("ics.device.product_uri", app["product_uri"])
    if app.get("application_name"):
        f.setdefault("ics.device.name", app["application_name"])


def _endpoint_descriptions(r: _Reader, f: dict) -> None:
    n = r.count()
    f["opcua.endpoint_count"] = n
    for _ in range(n):
        _append_unique(f, "opcua.endpoint_urls", r.string())
        _server_identity(f, _application_description(r))
        cert = r.raw()
        if cert and "opcua.server_certificate.sha1" not in f:
            f.update(certificate_fields(cert, "opcua.server_certificate"))
        mode = r.u32()
        _append_unique(f, "opcua.security_modes", SECURITY_MODES.get(mode, str(mode)))
        _append_unique(f, "opcua.security_policy_uris", r.string())
        for _t in range(r.count()):
            r.skip_raw()  # policy id
            ttype = r.u32()
            _append_unique(f, "opcua.user_token_types", USER_TOKEN_TYPES.get(ttype, str(ttype)))
            r.skip_raw()
            r.skip_raw()
            r.skip_raw()
        r.skip_raw()  # transport profile uri
        r.u8()  # security level


def _read_value_id(r: _Reader) -> tuple[str, int]:
    node = r.node_id()
    attr = r.u32()
    r.skip_raw()  # index range
    r.qualified_name()  # data encoding
    return node, attr


def _set_nodes_attrs(f: dict, items: list[tuple[str, int]]) -> None:
    f["opcua.node_ids"] = [n for n, _a in items]
    f["opcua.attribute_ids"] = [a for _n, a in items]
    f["opcua.attributes"] = [ATTRIBUTES.get(a, str(a)) for _n, a in items]


def _status_codes(r: _Reader, f: dict) -> None:
    f["opcua.result_codes"] = r.array(r.u32)


def _req_get_endpoints(r: _Reader, f: dict) -> None:
    f["opcua.endpoint_url"] = r.string()
    r.strings()
    r.strings()


def _resp_get_endpoints(r: _Reader, f: dict) -> None:
    _endpoint_descriptions(r, f)


def _req_find_servers(r: _Reader, f: dict) -> None:
    f["opcua.endpoint_url"] = r.string()
    r.strings()
    r.strings()


def _resp_find_servers(r: _Reader, f: dict) -> None:
    n = r.count()
    f["opcua.server_count"] = n
    for _ in range(n):
        app = _application_description(r)
        _append_unique(f, "opcua.server_application_uris", app["application_uri"])
        _append_unique(f, "opcua.server_names", app["application_name"])
        for url in app["discovery_urls"]:
            _append_unique(f, "opcua.discovery_urls", url)


def _resp_find_servers_on_network(r: _Reader, f: dict) -> None:
    r.need(8)
    n = r.count()
    f["opcua.server_count"] = n
    for _ in range(n):
        r.u32()
        _append_unique(f, "opcua.server_names", r.string())
        _append_unique(f, "opcua.discovery_urls", r.string())
        r.strings()


def _req_open_secure_channel(r: _Reader, f: dict) -> None:
    r.u32()  # client protocol version
    rtype = r.u32()
    f["opcua.request_type"] = {0: "issue", 1: "renew"}.get(rtype, str(rtype))
    mode = r.u32()
    f["opcua.security_mode"] = SECURITY_MODES.get(mode, str(mode))
    r.skip_raw()  # client nonce
    f["opcua.requested_lifetime"] = r.u32()


def _resp_open_secure_channel(r: _Reader, f: dict) -> None:
    r.u32()  # server protocol version
    f["opcua.issued_channel_id"] = r.u32()
    f["opcua.issued_token_id"] = r.u32()
    r.need(8)
    f["opcua.revised_lifetime"] = r.u32()
    r.skip_raw()  # server nonce


def _req_create_session(r: _Reader, f: dict) -> None:
    app = _application_description(r)
    for key in ("application_uri", "product_uri", "application_name", "application_type"):
        if app.get(key) is not None:
            f[f"opcua.client.{key}"] = app[key]
    f["opcua.server_uri"] = r.string()
    f["opcua.endpoint_url"] = r.string()
    f["opcua.session_name"] = r.string()
    r.skip_raw()  # client nonce
    r.skip_raw()  # client certificate
    r.f64()
    r.u32()


def _resp_create_session(r: _Reader, f: dict) -> None:
    f["opcua.session_id"] = r.node_id()
    r.node_id()  # authentication token: a session secret, not reported
    r.f64()
    r.skip_raw()  # server nonce
    f.update(certificate_fields(r.raw(), "opcua.server_certificate"))
    _endpoint_descriptions(r, f)


def _req_activate_session(r: _Reader, f: dict) -> None:
    r.skip_raw()  # signature algorithm
    r.skip_raw()  # signature
    for _ in range(r.count()):  # software certificates
        r.skip_raw()
        r.skip_raw()
    r.strings()  # locale ids
    num, text, body = r.extension_object()
    f["opcua.identity_token"] = IDENTITY_TOKENS.get(num or -1, text)
    if body is not None:
        tr = _Reader(body, r.max_items)
        f["opcua.identity_policy_id"] = tr.string()
        if num == 324:
            f["opcua.user_name"] = tr.string()
            tr.skip_raw()  # the password: never decoded, never reported
            algorithm = tr.string()
            f["opcua.password_encrypted"] = bool(algorithm)


def _resp_activate_session(r: _Reader, f: dict) -> None:
    r.skip_raw()  # server nonce
    _status_codes(r, f)


def _req_close_session(r: _Reader, f: dict) -> None:
    f["opcua.delete_subscriptions"] = r.boolean()


def _browse_results(r: _Reader, f: dict) -> None:
    codes = []
    refs = 0
    names: list[str] = []
    for _ in range(r.count()):
        codes.append(r.u32())
        r.skip_raw()  # continuation point
        n = r.count()
        refs += n
        for _i in range(n):
            r.node_id()
            r.boolean()
            r.expanded_node_id()
            name = r.qualified_name()
            if len(names) < r.max_items:
                names.append(name)
            else:
                r.truncated = True
            r.localized_text()
            r.u32()
            r.expanded_node_id()
    f["opcua.result_codes"] = codes[: r.max_items]
    f["opcua.reference_count"] = refs
    f["opcua.browse_names"] = names


def _req_browse(r: _Reader, f: dict) -> None:
    r.node_id()
    r.need(12)  # view timestamp and version
    r.u32()  # requested max references per node

    def item() -> str:
        node = r.node_id()
        r.u32()
        r.node_id()
        r.boolean()
        r.need(8)
        return node

    f["opcua.node_ids"] = r.array(item)


def _resp_browse(r: _Reader, f: dict) -> None:
    _browse_results(r, f)


def _req_browse_next(r: _Reader, f: dict) -> None:
    r.boolean()
    f["opcua.continuation_point_count"] = len(r.array(r.skip_raw))


def _req_translate(r: _Reader, f: dict) -> None:
    nodes: list[str] = []
    paths: list[str] = []
    for _ in range(r.count()):
        start = r.node_id()
        parts = [start]
        for _e in range(r.count()):
            r.node_id()
            r.boolean()
            r.boolean()
            parts.append(r.qualified_name())
        if len(nodes) < r.max_items:
            nodes.append(start)
            paths.append("/".join(parts))
        else:
            r.truncated = True
    f["opcua.node_ids"] = nodes
    f["opcua.browse_paths"] = paths


def _resp_translate(r: _Reader, f: dict) -> None:
    codes = []
    targets: list[str] = []
    for _ in range(r.count()):
        codes.append(r.u32())
        for _t in range(r.count()):
            target = r.expanded_node_id()
            r.u32()
            if len(targets) < r.max_items:
                targets.append(target)
            else:
                r.truncated = True
    f["opcua.result_codes"] = codes[: r.max_items]
    f["opcua.target_node_ids"] = targets


def _req_register_nodes(r: _Reader, f: dict) -> None:
    f["opcua.node_ids"] = r.array(r.node_id)


def _resp_register_nodes(r: _Reader, f: dict) -> None:
    f["opcua.registered_node_ids"] = r.array(r.node_id)


def _req_read(r: _Reader, f: dict) -> None:
    r.f64()  # max age
    r.u32()  # timestamps to return
    _set_nodes_attrs(f, r.array(lambda: _read_value_id(r)))


def _resp_read(r: _Reader, f: dict) -> None:
    f["opcua.values"] = r.array(r.data_value)


def _req_write(r: _Reader, f: dict) -> None:
    # lists go into the record first, so a body that breaks half-way keeps what was read
    nodes: list[str] = f.setdefault("opcua.node_ids", [])
    attrs: list[int] = f.setdefault("opcua.attribute_ids", [])
    names: list[str] = f.setdefault("opcua.attributes", [])
    values: list[dict] = f.setdefault("opcua.values", [])
    for i in range(r.count()):
        node = r.node_id()
        attr = r.u32()
        r.skip_raw()
        value = r.data_value()
        if i < r.max_items:
            nodes.append(node)
            attrs.append(attr)
            names.append(ATTRIBUTES.get(attr, str(attr)))
            values.append(value)
        else:
            r.truncated = True


def _resp_write(r: _Reader, f: dict) -> None:
    _status_codes(r, f)


def _req_call(r: _Reader, f: dict) -> None:
    objects: list[str] = f.setdefault("opcua.object_ids", [])
    methods: list[str] = f.setdefault("opcua.method_ids", [])
    args: list[dict] = f.setdefault("opcua.input_arguments", [])
    for i in range(r.count()):
        obj = r.node_id()
        method = r.node_id()
        if i < r.max_items:
            objects.append(obj)
            methods.append(method)
        else:
            r.truncated = True
        for a in r.array(r.variant):
            if len(args) < r.max_items:
                args.append(a)


def _resp_call(r: _Reader, f: dict) -> None:
    codes: list[int] = f.setdefault("opcua.result_codes", [])
    outputs: list[dict] = f.setdefault("opcua.output_arguments", [])
    for i in range(r.count()):
        code = r.u32()
        if i < r.max_items:
            codes.append(code)
        r.array(r.u32)
        r.diagnostic_infos()
        for v in r.array(r.variant):
            if len(outputs) < r.max_items:
                outputs.append(v)


def _req_create_subscription(r: _Reader, f: dict) -> None:
    f["opcua.publishing_interval"] = r.f64()
    f["opcua.lifetime_count"] = r.u32()
    f["opcua.max_keep_alive_count"] = r.u32()
    r.u32()
    f["opcua.publishing_enabled"] = r.boolean()
    f["opcua.priority"] = r.u8()


def _resp_create_subscription(r: _Reader, f: dict) -> None:
    f["opcua.subscription_id"] = r.u32()
    f["opcua.revised_publishing_interval"] = r.f64()
    r.u32()
    r.u32()


def _req_create_monitored_items(r: _Reader, f: dict) -> None:
    f["opcua.subscription_id"] = r.u32()
    r.u32()
    items: list[tuple[str, int]] = []
    modes: list[int] = []

    def item() -> None:
        items.append(_read_value_id(r))
        modes.append(r.u32())
        r.u32()  # client handle
        r.f64()  # sampling interval
        r.extension_object()  # filter
        r.u32()
        r.boolean()

    for _ in range(r.count()):
        item()
    _set_nodes_attrs(f, items[: r.max_items])
    if modes:
        f["opcua.monitoring_mode"] = {0: "disabled", 1: "sampling", 2: "reporting"}.get(
            modes[0], str(modes[0])
        )


def _resp_create_monitored_items(r: _Reader, f: dict) -> None:
    codes = []
    ids = []
    for _ in range(r.count()):
        codes.append(r.u32())
        ids.append(r.u32())
        r.f64()
        r.u32()
        r.extension_object()
    f["opcua.result_codes"] = codes[: r.max_items]
    f["opcua.monitored_item_ids"] = ids[: r.max_items]


def _req_publish(r: _Reader, f: dict) -> None:
    f["opcua.acknowledgement_count"] = len(r.array(lambda: r.need(8)))


def _resp_publish(r: _Reader, f: dict) -> None:
    f["opcua.subscription_id"] = r.u32()
    r.array(r.u32)
    f["opcua.more_notifications"] = r.boolean()
    f["opcua.notification_sequence_number"] = r.u32()
    r.need(8)
    count = 0
    values: list[dict] = []
    for _ in range(r.count()):
        num, _text, body = r.extension_object()
        if body is None:
            continue
        nr = _Reader(body, r.max_items)
        if num == 811:  # DataChangeNotification
            for _i in range(nr.count()):
                nr.u32()
                v = nr.data_value()
                count += 1
                if len(values) < r.max_items:
                    values.append(v)
        elif num == 916:  # EventNotificationList
            for _i in range(nr.count()):
                nr.u32()
                nr.array(nr.variant)
                count += 1
        elif num == 820:  # StatusChangeNotification
            count += 1
    f["opcua.notification_count"] = count
    if values:
        f["opcua.values"] = values
    _status_codes(r, f)


def _req_delete_subscriptions(r: _Reader, f: dict) -> None:
    f["opcua.subscription_ids"] = r.array(r.u32)


def _req_add_nodes(r: _Reader, f: dict) -> None:
    parents: list[str] = []
    nodes: list[str] = []
    names: list[str] = []
    for _ in range(r.count()):
        parents.append(r.expanded_node_id())
        r.node_id()
        nodes.append(r.expanded_node_id())
        names.append(r.qualified_name())
        r.u32()
        r.extension_object()
        r.expanded_node_id()
    f["opcua.parent_node_ids"] = parents[: r.max_items]
    f["opcua.node_ids"] = nodes[: r.max_items]
    f["opcua.browse_names"] = names[: r.max_items]


def _resp_add_nodes(r: _Reader, f: dict) -> None:
    codes = []
    for _ in range(r.count()):
        codes.append(r.u32())
        r.node_id()
    f["opcua.result_codes"] = codes[: r.max_items]


def _req_delete_nodes(r: _Reader, f: dict) -> None:
    def item() -> str:
        node = r.node_id()
        r.boolean()
        return node

    f["opcua.node_ids"] = r.array(item)


_REQUEST_BODY: dict[str, Callable[[_Reader, dict], None]] = {
    "GetEndpoints": _req_get_endpoints,
    "FindServers": _req_find_servers,
    "OpenSecureChannel": _req_open_secure_channel,
    "CreateSession": _req_create_session,
    "ActivateSession": _req_activate_session,
    "CloseSession": _req_close_session,
    "Browse": _req_browse,
    "BrowseNext": _req_browse_next,
    "TranslateBrowsePathsToNodeIds": _req_translate,
    "RegisterNodes": _req_register_nodes,
    "UnregisterNodes": _req_register_nodes,
    "Read": _req_read,
    "Write": _req_write,
    "Call": _req_call,
    "CreateSubscription": _req_create_subscription,
    "CreateMonitoredItems": _req_create_monitored_items,
    "Publish": _req_publish,
    "DeleteSubscriptions": _req_delete_subscriptions,
    "AddNodes": _req_add_nodes,
    "DeleteNodes": _req_delete_nodes,
}
_RESPONSE_BODY: dict[str, Callable[[_Reader, dict], None]] = {
    "GetEndpoints": _resp_get_endpoints,
    "FindServers": _resp_find_servers,
    "FindServersOnNetwork": _resp_find_servers_on_network,
    "OpenSecureChannel": _resp_open_secure_channel,
    "CreateSession": _resp_create_session,
    "ActivateSession": _resp_activate_session,
    "Browse": _resp_browse,
    "BrowseNext": _resp_browse,
    "TranslateBrowsePathsToNodeIds": _resp_translate,
    "RegisterNodes": _resp_register_nodes,
    "Read": _resp_read,
    "Write": _resp_write,
    "Call": _resp_call,
    "CreateSubscription": _resp_create_subscription,
    "CreateMonitoredItems": _resp_create_monitored_items,
    "Publish": _resp_publish,
    "DeleteSubscriptions": _resp_write,
    "DeleteMonitoredItems": _resp_write,
    "SetMonitoringMode": _resp_write,
    "SetPublishingMode": _resp_write,
    "AddNodes": _resp_add_nodes,
    "DeleteNodes": _resp_write,
    "AddReferences": _resp_write,
    "DeleteReferences": _resp_write,
    "UnregisterNodes": lambda r, f: None,
}


class _Body:
    """A decoded service body: type, direction, header fields and service fields."""

    __slots__ = ("type_id", "type_text", "service", "is_request", "fields", "error", "truncated")

    def __init__(self) -> None:
        self.type_id: int | None = None
        self.type_text = ""
        self.service = "unknown"
        self.is_request: bool | None = None  # None: not a known request or response id
        self.fields: dict = {}
        self.error: str | None = None
        self.truncated = False


def decode_body(body: bytes, max_items: int = 4096) -> _Body:
    """Decode one reassembled service body (type NodeId, header, service). Never raises."""
    out = _Body()
    r = _Reader(body, max_items)
    try:
        out.type_id, out.type_text = r.numeric_node_id()
    except DecodeError as exc:
        out.error = f"service type NodeId: {exc}"
        return out
    tid = out.type_id
    if tid in _REQUEST_IDS:
        out.service = _REQUEST_IDS[tid]
        out.is_request = True
        decoder = _REQUEST_BODY.get(out.service)
        header: Callable[[_Reader, dict], None] = _request_header
    elif tid in _RESPONSE_IDS or tid == SERVICE_FAULT_ID:
        out.service = _RESPONSE_IDS.get(tid, "ServiceFault")  # type: ignore[arg-type]
        out.is_request = False
        decoder = _RESPONSE_BODY.get(out.service)
        header = _response_header
    else:
        return out
    f = out.fields
    try:
        header(r, f)
        if decoder is not None:
            decoder(r, f)
    except DecodeError as exc:
        out.error = f"{out.service}: {exc}"
    except (ValueError, OverflowError) as exc:  # e.g. an impossible Guid or date
        out.error = f"{out.service}: {exc}"
    out.truncated = r.truncated
    return out


# -- transport and pairing -------------------------------------------------------------


class _Direction:
    """Per-direction state: byte buffer, resync flag, messages being reassembled, seq tracking."""

    __slots__ = ("buf", "need", "discard", "resync", "partial", "last_seq", "skipped", "lost")

    def __init__(self) -> None:
        self.buf = bytearray()
        self.need = 0  # size of the chunk whose header starts the buffer, when known
        self.discard = 0  # bytes still to drop of a chunk too large to buffer
        self.resync = False
        self.partial: OrderedDict[int, _Partial] = OrderedDict()
        self.last_seq: int | None = None
        self.skipped = 0
        self.lost: set[int] = set()  # request ids whose earlier chunks fell into a gap


class _Partial:
    __slots__ = ("ts", "parts", "size", "chunks", "info")

    def __init__(self, ts: float, info: dict) -> None:
        self.ts = ts
        self.parts: list[bytes] = []
        self.size = 0
        self.chunks = 0
        self.info = info


class _Message:
    """One complete message (all chunks), before pairing."""

    __slots__ = ("ts", "mtype", "info", "body", "aborted")

    def __init__(
        self, ts: float, mtype: str, info: dict, body: _Body | None, aborted: bool = False
    ) -> None:
        self.ts = ts
        self.mtype = mtype
        self.info = info  # transport fields: opcua.* keys
        self.body = body
        self.aborted = aborted


def _policy_name(uri: str | None) -> str | None:
    if uri is None:
        return None
    return uri.rsplit("#", 1)[-1] if "#" in uri else uri


class Parser:
    """One OPC UA TCP connection (see the module docstring for the fields).

    ``on_message``, when given, is called with a summary of every transport chunk in wire
    order (message type, chunk type, and for completed messages the service type id,
    request handle and status code): what a tshark ``-T fields`` line shows per message.
    """

    def __init__(
        self,
        limits: ParserLimits | None = None,
        on_message: Callable[[dict], None] | None = None,
    ) -> None:
        self.limits = limits or ParserLimits()
        self.on_message = on_message
        self._dir = (_Direction(), _Direction())  # index 1: to server, 0: to client
        self._policy: str | None = None  # security policy URI of the current channel
        self._mode: str | None = None  # security mode when the OPN request showed it
        self._clear: bool | None = None  # MSG bodies verified readable (mid-stream or Sign)
        self._hello: dict | None = None  # HEL fields: client's limits
        self._ack: dict | None = None  # ACK fields: server's limits
        self._pending: OrderedDict[tuple, tuple[_Message, dict]] = OrderedDict()
        self._pending_hel: list[_Message] = []
        self._pending_opn: list[_Message] = []

    # -- stream handling --------------------------------------------------------------

    def feed(self, to_server: bool, data: bytes, ts: float) -> list[Record]:
        out: list[Record] = []
        try:
            self._feed(1 if to_server else 0, data, ts, out)
        except Exception as exc:  # a bug must not stop the sensor: report it as an anomaly
            d = self._dir[1 if to_server else 0]
            d.buf = bytearray()
            d.need = d.discard = 0
            d.partial.clear()
            d.resync = True
            out.append(
                anomaly(
                    ts,
                    NAME,
                    "opcua-internal-error",
                    f"dissector error, stream resynchronised: {exc!r}",
                )
            )
        return out

    def _feed(self, di: int, data: bytes, ts: float, out: list[Record]) -> None:
        d = self._dir[di]
        if d.discard:  # inside a chunk too large to buffer: drop its bytes, stay aligned
            if len(data) <= d.discard:
                d.discard -= len(data)
                return
            data = data[d.discard :]
            d.discard = 0
        buf = d.buf
        buf += data
        n = len(buf)
        if n < d.need:  # still waiting for the rest of a chunk whose size is known
            return
        d.need = 0
        limit = self.limits.max_buffer
        pos = 0
        while n - pos >= 8:
            mtype, chunk, size = _HDR(buf, pos)
            if not self._header_ok(mtype, chunk, size):
                pos = self._resynchronise(buf, pos, di)
                continue
            if size > limit:
                out.append(
                    anomaly(
                        ts,
                        NAME,
                        "opcua-chunk-too-large",
                        f"{mtype.decode()} chunk of {size} bytes exceeds the {limit}-byte buffer limit; skipped",
                        **{"opcua.message_type": mtype.decode(), "opcua.chunk_size": size},
                    )
                )
                take = min(size, n - pos)
                pos += take
                d.discard = size - take
                continue
            end = pos + size
            if end > n:
                d.need = size  # the buffer will start at this header
                break
            if d.resync and d.skipped:
                self._report_skipped(di, ts, out)
            d.resync = False
            self._chunk(di, mtype, chunk, bytes(buf[pos:end]), ts, out)
            pos = end
        del buf[:pos]
        if len(buf) > limit + 8:  # cannot happen by construction; a last line of defence
            out.append(
                anomaly(
                    ts,
                    NAME,
                    "opcua-buffer-overflow",
                    f"{len(buf)} bytes without a complete chunk; dropped",
                )
            )
            d.buf = bytearray()
            d.need = 0
            d.resync = True

    def _header_ok(self, mtype: bytes, chunk: bytes, size: int) -> bool:
        if mtype not in MESSAGE_TYPES or chunk[0] not in _CHUNK_TYPES:
            return False
        if mtype not in _SECURE_TYPES and chunk != b"F":
            return False
        return _MIN_SIZE[mtype] <= size <= HARD_MAX_CHUNK

    def _resynchronise(self, buf: bytearray, pos: int, di: int) -> int:
        """Skip to the next plausible chunk header; the skipped bytes are reported once per
        episode, when a header is found again (or at close)."""
        d = self._dir[di]
        d.resync = True
        start = pos
        n = len(buf)
        limit = self.limits.max_buffer
        search = _HEADER_RE.search
        pos += 1
        while True:
            m = search(buf, pos)
            if m is None:
                pos = max(pos, n - 7)  # keep a tail that may start a header
                break
            idx = m.start()
            mtype, chunk, size = _HDR(buf, idx)
            if self._header_ok(mtype, chunk, size) and size <= limit:
                pos = idx
                break
            pos = idx + 1
        d.skipped += pos - start
        return pos

    def _report_skipped(self, di: int, ts: float, out: list[Record]) -> None:
        d = self._dir[di]
        out.append(
            anomaly(
                ts,
                NAME,
                "opcua-bad-header",
                f"skipped {d.skipped} bytes that are not a UA TCP message",
                **{
                    "opcua.skipped_bytes": d.skipped,
                    "opcua.direction": "request" if di else "response",
                },
            )
        )
        d.skipped = 0

    def gap(self, to_server: bool, ts: float, size: int) -> list[Record]:
        di = 1 if to_server else 0
        d = self._dir[di]
        out: list[Record] = []
        if d.partial or d.buf:
            out.append(
                anomaly(
                    ts,
                    NAME,
                    "opcua-lost-chunk",
                    f"{size} bytes lost inside a chunk or message: {len(d.partial) or 1} message(s) dropped",
                    **{"opcua.direction": "request" if di else "response"},
                )
            )
        d.lost = set(d.partial)  # their remaining chunks are not messages of their own
        d.buf = bytearray()
        d.need = d.discard = 0
        d.partial.clear()
        d.last_seq = None
        d.resync = True  # the next bytes may start inside a chunk
        d.skipped = 0
        return out

    def close(self, ts: float) -> list[Record]:
        out: list[Record] = []
        try:
            for msg in self._pending_hel + self._pending_opn:
                out.append(self._record(msg, None))
            for msg, _f in self._pending.values():
                out.append(self._record(msg, None))
            for di in (0, 1):
                d = self._dir[di]
                if d.buf and not d.resync:
                    out.append(
                        anomaly(
                            ts,
                            NAME,
                            "opcua-truncated",
                            f"connection ended inside a chunk ({len(d.buf)} bytes left)",
                        )
                    )
                if d.partial:
                    out.append(
                        anomaly(
                            ts,
                            NAME,
                            "opcua-truncated",
                            f"connection ended with {len(d.partial)} message(s) missing their final chunk",
                        )
                    )
                if d.resync and d.skipped:
                    self._report_skipped(di, ts, out)
                d.buf = bytearray()
                d.need = d.discard = 0
                d.partial.clear()
        except Exception as exc:  # pragma: no cover - defensive, like feed()
            out.append(
                anomaly(ts, NAME, "opcua-internal-error", f"dissector error at close: {exc!r}")
            )
        self._pending.clear()
        self._pending_hel.clear()
        self._pending_opn.clear()
        return out

    # -- chunks ----------------------------------------------------------------------

    def _notify(self, summary: dict) -> None:
        if self.on_message is not None:
            self.on_message(summary)

    def _chunk(
        self, di: int, mtype_b: bytes, chunk_b: bytes, data: bytes, ts: float, out: list[Record]
    ) -> None:
        mtype = mtype_b.decode()
        chunk = chunk_b.decode()
        size = len(data)
        summary = {"type": mtype, "chunk": chunk, "size": size, "to_server": bool(di)}
        try:
            if mtype in ("HEL", "ACK", "ERR", "RHE"):
                self._connection_message(di, mtype, data, ts, out, summary)
            else:
                self._secure_chunk(di, mtype, chunk, data, ts, out, summary)
        except DecodeError as exc:
            out.append(
                anomaly(
                    ts,
                    NAME,
                    "opcua-malformed-body",
                    f"{mtype} chunk: {exc}",
                    **{"opcua.message_type": mtype},
                )
            )
        self._notify(summary)

    def _connection_message(
        self, di: int, mtype: str, data: bytes, ts: float, out: list[Record], summary: dict
    ) -> None:
        r = _Reader(data, self.limits.max_items, 8)
        info: dict = {"opcua.message_type": mtype}
        if mtype in ("HEL", "ACK"):
            names = (
                "protocol_version",
                "receive_buffer_size",
                "send_buffer_size",
                "max_message_size",
                "max_chunk_count",
            )
            vals = [r.u32() for _ in names]
            prefix = "opcua." if mtype == "HEL" else "opcua.revised_"
            for key, v in zip(names, vals, strict=True):
                info[("opcua." if key == "protocol_version" else prefix) + key] = v
            if mtype == "HEL":
                info["opcua.endpoint_url"] = r.string()
                self._hello = dict(zip(names, vals, strict=True))
                self._pending_hel.append(_Message(ts, mtype, info, None))
            else:
                self._ack = dict(zip(names, vals, strict=True))
                req = self._pending_hel.pop(0) if self._pending_hel else None
                out.append(self._record(req, _Message(ts, mtype, info, None)))
            return
        if mtype == "ERR":
            code = r.u32()
            info["opcua.status_code"] = code
            info["opcua.status"] = status_name(code)
            info["opcua.error_reason"] = r.string()
            summary["status_code"] = code
            msg = _Message(ts, mtype, info, None)
            req = self._pending_hel.pop(0) if self._pending_hel else None
            out.append(self._record(req, msg))
            return
        # RHE: the server dials out and names itself
        info["opcua.server_uri"] = r.string()
        info["opcua.endpoint_url"] = r.string()
        out.append(self._record(_Message(ts, mtype, info, None), None))

    def _plaintext(self, di: int, mtype: str, chunk: str, data: bytes, pos: int) -> bool:
        """Can this chunk's sequence header and body be read in clear? Never guesses: a
        protected channel must visibly parse (sequence number, service NodeId) to be read."""
        if self._policy == NONE_POLICY or self._mode == "Sign":
            return True
        if self._mode == "SignAndEncrypt":
            return False
        if self._clear:
            return True
        if len(data) < pos + 12:
            return False
        seq, _rid = _II(data, pos)
        last = self._dir[di].last_seq
        if last is not None and seq != last + 1 and not (seq < 1024 and last > 0xFFFFFBFF):
            return False
        try:
            tid, _t = _Reader(data, 1, pos + 8).numeric_node_id()
        except DecodeError:
            return False
        if tid in _REQUEST_IDS or tid in _RESPONSE_IDS or tid == SERVICE_FAULT_ID:
            self._clear = True
            if self._policy is not None and self._policy != NONE_POLICY:
                self._mode = (
                    "Sign"  # a protected policy with a body in clear: signed, not encrypted
                )
            return True
        return False

    def _secure_chunk(
        self,
        di: int,
        mtype: str,
        chunk: str,
        data: bytes,
        ts: float,
        out: list[Record],
        summary: dict,
    ) -> None:
        d = self._dir[di]
        r = _Reader(data, self.limits.max_items, 8)
        info: dict = {"opcua.message_type": mtype, "opcua.secure_channel_id": r.u32()}
        summary["secure_channel_id"] = info["opcua.secure_channel_id"]
        if mtype == "OPN":
            policy = r.string()
            cert = r.raw()
            r.skip_raw()  # receiver certificate thumbprint
            info["opcua.security_policy_uri"] = policy
            info["opcua.certificate_present"] = bool(cert)
            if cert and not di:  # the server's answer: its own certificate
                info.update(certificate_fields(cert, "opcua.server_certificate"))
            if policy != self._policy:
                self._policy = policy
                self._mode = None
                self._clear = None
            clear = policy == NONE_POLICY
        else:
            info["opcua.token_id"] = r.u32()
            summary["token_id"] = info["opcua.token_id"]
            clear = self._plaintext(di, mtype, chunk, data, r.pos)
        if self._policy is not None:
            info["opcua.security_policy_uri"] = self._policy
        self._limit_checks(di, mtype, chunk, len(data), ts, out)
        if not clear:
            info["opcua.encrypted"] = (
                self._policy is not None and self._policy != NONE_POLICY or None
            )
            info = {k: v for k, v in info.items() if v is not None}
            if chunk == "F" or chunk == "A":
                self._complete(di, _Message(ts, mtype, info, None, aborted=False), out, summary)
            return
        seq = r.u32()
        rid = r.u32()
        d.last_seq = seq
        info["opcua.sequence_number"] = seq
        info["opcua.request_id"] = rid
        summary["sequence_number"] = seq
        summary["request_id"] = rid
        end = len(data)
        sig = (
            _SIGNATURE_SIZE.get(_policy_name(self._policy) or "", 0)
            if self._policy != NONE_POLICY
            else 0
        )
        if sig and mtype != "OPN":
            end = max(r.pos, end - sig)
        payload = data[r.pos : end]
        if rid in d.lost:  # the rest of a message cut by a gap (already reported)
            if chunk != "C":
                d.lost.discard(rid)
            return
        partial = d.partial.get(rid)
        if chunk == "A":
            d.partial.pop(rid, None)
            ar = _Reader(payload, 1)
            code = ar.u32()
            info["opcua.status_code"] = code
            info["opcua.status"] = status_name(code)
            info["opcua.error_reason"] = ar.string()
            info["opcua.aborted"] = True
            summary["status_code"] = code
            body = None
            if partial is not None:
                # the chunks before the abort still say which service and handle it was
                body = decode_body(b"".join(partial.parts), self.limits.max_items)
                body.error = None  # incomplete by the sender's choice, not malformed
                body.fields.pop("opcua.status_code", None)  # the abort's error code is the outcome
                body.fields.pop("opcua.status", None)
                info = {**partial.info, **info, "opcua.chunk_count": partial.chunks + 1}
                info["opcua.sequence_number"] = partial.info["opcua.sequence_number"]
            self._complete(
                di,
                _Message(partial.ts if partial else ts, mtype, info, body, aborted=True),
                out,
                summary,
            )
            return
        if partial is None:
            partial = _Partial(ts, info)
            if chunk == "C":
                if len(d.partial) >= MAX_PARTIAL_MESSAGES:
                    old_rid, _old = d.partial.popitem(last=False)
                    out.append(
                        anomaly(
                            ts,
                            NAME,
                            "opcua-too-many-chunks",
                            f"more than {MAX_PARTIAL_MESSAGES} messages in reassembly; request id {old_rid} dropped",
                        )
                    )
                d.partial[rid] = partial
        partial.parts.append(payload)
        partial.size += len(payload)
        partial.chunks += 1
        max_msg, max_chunks = self._message_limits(di)
        if partial.size > self.limits.max_buffer:
            d.partial.pop(rid, None)
            out.append(
                anomaly(
                    ts,
                    NAME,
                    "opcua-message-too-large",
                    f"message for request id {rid}: {partial.size} bytes in {partial.chunks} chunks exceed the {self.limits.max_buffer}-byte limit; dropped",
                    **{"opcua.request_id": rid, "opcua.message_type": mtype},
                )
            )
            return
        # beyond what was negotiated but within the hard cap: a violation worth reporting,
        # still decoded (the peer that accepted it sees the content too)
        over_size = max_msg and partial.size > max_msg and partial.size - len(payload) <= max_msg
        over_count = max_chunks and partial.chunks == max_chunks + 1
        if over_size or over_count:
            what = (
                f"{partial.size} bytes > MaxMessageSize {max_msg}"
                if over_size
                else f"{partial.chunks} chunks > MaxChunkCount {max_chunks}"
            )
            out.append(
                anomaly(
                    ts,
                    NAME,
                    "opcua-message-too-large" if over_size else "opcua-too-many-chunks",
                    f"message for request id {rid} exceeds the negotiated limit: {what}",
                    **{"opcua.request_id": rid, "opcua.message_type": mtype},
                )
            )
        if chunk == "C":
            return
        d.partial.pop(rid, None)
        body_bytes = b"".join(partial.parts) if len(partial.parts) > 1 else partial.parts[0]
        info = partial.info  # the first chunk's headers (sequence number) describe the message
        if partial.chunks > 1:
            info["opcua.chunk_count"] = partial.chunks
        body = decode_body(body_bytes, self.limits.max_items)
        summary["service_type_id"] = body.type_id
        if "opcua.request_handle" in body.fields:
            summary["request_handle"] = body.fields["opcua.request_handle"]
        if "opcua.status_code" in body.fields:
            summary["status_code"] = body.fields["opcua.status_code"]
        if body.error:
            out.append(
                anomaly(
                    partial.ts,
                    NAME,
                    "opcua-malformed-body",
                    f"{mtype} body: {body.error}",
                    **{
                        "opcua.message_type": mtype,
                        "opcua.request_id": rid,
                        "opcua.service": body.service,
                    },
                )
            )
        if mtype == "OPN" and body.is_request and "opcua.security_mode" in body.fields:
            self._mode = body.fields["opcua.security_mode"]
        self._complete(di, _Message(partial.ts, mtype, info, body), out, summary)

    def _message_limits(self, di: int) -> tuple[int, int]:
        """(max message size, max chunk count) the receiver of direction ``di`` accepts."""
        src = self._ack if di else self._hello  # requests are bounded by the server's ACK
        if not src:
            return 0, 0
        return src["max_message_size"], src["max_chunk_count"]

    def _limit_checks(
        self, di: int, mtype: str, chunk: str, size: int, ts: float, out: list[Record]
    ) -> None:
        # a chunk may not exceed the receiver's receive buffer (ACK revises both sides)
        if self._ack is None:
            return
        limit = self._ack["receive_buffer_size"] if di else self._ack["send_buffer_size"]
        if limit and size > limit:
            out.append(
                anomaly(
                    ts,
                    NAME,
                    "opcua-chunk-too-large",
                    f"{mtype} chunk of {size} bytes exceeds the negotiated buffer size {limit}",
                    **{"opcua.message_type": mtype, "opcua.chunk_size": size},
                )
            )

    # -- pairing ---------------------------------------------------------------------

    def _complete(self, di: int, msg: _Message, out: list[Record], summary: dict) -> None:
        body = msg.body
        if msg.mtype == "OPN":
            is_request = body.is_request if body and body.is_request is not None else bool(di)
            if is_request:
                self._pending_opn.append(msg)
                self._trim_pending(msg.ts, out)
            else:
                req = self._pending_opn.pop(0) if self._pending_opn else None
                out.append(self._record(req, msg))
            return
        rid = msg.info.get("opcua.request_id")
        if msg.aborted and body is None and not di and ("rid", rid) in self._pending:
            # the server aborted its answer in the first chunk: still the request's answer
            out.append(self._record(self._pending.pop(("rid", rid))[0], msg))
            return
        if msg.mtype == "CLO" or body is None or body.is_request is None:
            # no body to pair on: the direction says which side spoke
            out.append(self._record(msg, None) if di else self._record(None, msg))
            return
        key = (
            ("rid", rid) if rid is not None else ("handle", body.fields.get("opcua.request_handle"))
        )
        if body.is_request and not msg.aborted:
            if key in self._pending:
                old, _ = self._pending.pop(key)
                out.append(self._record(old, None))
            self._pending[key] = (msg, {})
            self._trim_pending(msg.ts, out)
            return
        if body.is_request:  # the client aborted its own request: nothing will answer it
            out.append(self._record(msg, None))
            return
        entry = self._pending.pop(key, None)
        if entry is None:
            out.append(self._record(None, msg))
            return
        req = entry[0]
        if body.service not in (req.body.service, "ServiceFault") if req.body else False:
            out.append(
                anomaly(
                    msg.ts,
                    NAME,
                    "opcua-response-mismatch",
                    f"{body.service} response answers a {req.body.service} request (request id {rid})",
                    **{"opcua.request_id": rid, "opcua.service": req.body.service},
                )
            )
            out.append(self._record(req, None))
            out.append(self._record(None, msg))
            return
        out.append(self._record(req, msg))

    def _trim_pending(self, ts: float, out: list[Record]) -> None:
        limit = self.limits.max_pending
        total = len(self._pending) + len(self._pending_opn) + len(self._pending_hel)
        if total <= limit:
            return
        dropped = 0
        while len(self._pending) + len(self._pending_opn) + len(self._pending_hel) > limit:
            if self._pending:
                self._pending.popitem(last=False)
            elif self._pending_opn:
                self._pending_opn.pop(0)
            else:
                self._pending_hel.pop(0)
            dropped += 1
        out.append(
            anomaly(
                ts,
                NAME,
                "opcua-pending-overflow",
                f"more than {limit} unanswered requests; {dropped} oldest dropped",
            )
        )

    def _record(self, req: _Message | None, resp: _Message | None) -> Record:
        """One transaction record from a request and/or its response."""
        first = req or resp
        assert first is not None
        f: Record = {"ts": first.ts, "network.protocol": NAME}
        service: str | None = None
        for msg, is_req in ((req, True), (resp, False)):
            if msg is None:
                continue
            info = msg.info
            body = msg.body
            if is_req or req is None:
                f.update(info)
            else:
                for k, v in info.items():
                    if k == "opcua.sequence_number":
                        f["opcua.response_sequence_number"] = v
                    elif k == "opcua.chunk_count":
                        f["opcua.response_chunk_count"] = v
                    elif k == "opcua.secure_channel_id" and msg.mtype == "OPN":
                        f[k] = v  # the answer's header carries the channel the server assigned
                    elif k == "opcua.message_type":
                        if v != f.get(k):
                            f["opcua.response_message_type"] = v  # ACK or ERR answering HEL
                    elif k in ("opcua.secure_channel_id", "opcua.token_id") and k in f:
                        continue
                    else:
                        f[k] = v
            if body is None:
                continue
            fields = body.fields
            if body.is_request or (req is None and body.is_request is None):
                service = body.service
                if body.type_id is not None:
                    f["opcua.service_type_id"] = body.type_id
                else:
                    f["opcua.service_node_id"] = body.type_text
            else:
                if service is None and body.service != "ServiceFault":
                    service = body.service
                if body.type_id is not None:
                    f["opcua.response_type_id"] = body.type_id
                if body.service == "ServiceFault":
                    f["opcua.service_fault"] = True
            if msg.mtype == "OPN" and not body.is_request:
                # the answer issues the channel and token that later MSG chunks carry
                if "opcua.issued_channel_id" in fields:
                    f["opcua.secure_channel_id"] = fields["opcua.issued_channel_id"]
                    f["opcua.token_id"] = fields["opcua.issued_token_id"]
                fields = {k: v for k, v in fields.items() if not k.startswith("opcua.issued_")}
            if req is not None and not is_req and "opcua.request_handle" in f:
                fields = dict(fields)
                handle = fields.pop("opcua.request_handle", None)
                if handle is not None and handle != f["opcua.request_handle"]:
                    f["opcua.response_request_handle"] = handle
            f.update(fields)
            if body.truncated:
                f["opcua.truncated"] = True
            if body.error:
                f["opcua.decode_error"] = body.error
        if self._mode is not None and f.get("opcua.message_type") in ("MSG", "CLO", "OPN"):
            f.setdefault("opcua.security_mode", self._mode)
        policy = f.get("opcua.security_policy_uri")
        if policy:
            f["opcua.security_policy"] = _policy_name(policy)
            f["opcua.signed"] = policy != NONE_POLICY
            f.setdefault(
                "opcua.encrypted",
                False if policy == NONE_POLICY else f.get("opcua.encrypted", False),
            )
            if policy == NONE_POLICY:
                f.setdefault("opcua.security_mode", "None")
        elif "opcua.sequence_number" in f or "opcua.response_sequence_number" in f:
            f.setdefault("opcua.encrypted", False)
        self._device_from_read(f)
        mtype = f.get("opcua.message_type")
        if mtype == "OPN":
            service = "OpenSecureChannel"
        elif mtype == "CLO":
            service = "CloseSecureChannel"
        if mtype in ("HEL", "ACK"):
            action, op, etype, function = "hello", "session", "info", "hello"
        elif mtype == "ERR":
            action, op, etype, function = "error", "session", "info", "error"
        elif mtype == "RHE":
            action, op, etype, function = "reverse-hello", "session", "info", "reverse_hello"
        elif service and service in _ACTION:
            action = _ACTION[service]
            op, etype = _OPERATION.get(service, ("other", "info"))
            function = _FUNCTION[service]
        elif f.get("opcua.service_fault"):
            action, op, etype, function = "service-fault", "other", "info", "service_fault"
        else:
            action, op, etype, function = "message", "other", "info", "message"
        if service:
            f["opcua.service"] = service
        elif f.get("opcua.message_type") == "MSG" and not f.get("opcua.encrypted"):
            f["opcua.service"] = "unknown"
        f["event.action"] = action
        f["event.type"] = ["protocol", etype]
        f["ics.operation"] = op
        f["ics.function"] = function
        code = f.get("opcua.status_code")
        aborted = f.get("opcua.aborted")
        if code is not None and (_is_bad(code) or aborted):
            f["event.outcome"] = "failure"
        elif code is not None or (resp is not None and resp.mtype in ("ACK", "RHE")):
            f["event.outcome"] = "success"
        elif mtype == "ERR" or aborted:
            f["event.outcome"] = "failure"
        else:
            f["event.outcome"] = "unknown"
        if req is not None and resp is not None:
            f["ics.pairing"] = "paired"
        else:
            f["ics.pairing"] = "request-only" if req is not None else "response-only"
        for k in [k for k, v in f.items() if v is None]:
            del f[k]
        if req is not None and resp is not None:
            f["event.duration"] = max(0, int(round((resp.ts - req.ts) * 1e9)))
        return f

    @staticmethod
    def _device_from_read(f: dict) -> None:
        """Read answers for the server's BuildInfo variables give vendor, model and firmware."""
        if f.get("opcua.service") not in (None, "Read") or "opcua.values" not in f:
            return
        nodes = f.get("opcua.node_ids") or []
        attrs = f.get("opcua.attribute_ids") or []
        values = f["opcua.values"]
        found: dict[str, str] = {}
        for i, node in enumerate(nodes):
            if not node.startswith("i=") or i >= len(values) or (i < len(attrs) and attrs[i] != 13):
                continue
            try:
                key = _BUILD_INFO.get(int(node[2:]))
            except ValueError:
                continue
            value = values[i].get("value")
            if key and isinstance(value, str) and value:
                found[key] = value
        for key in ("vendor", "product", "product_uri"):
            if key in found:
                f[f"ics.device.{key}"] = found[key]
        if "product" in found:
            f["ics.device.model"] = found["product"]  # OPC UA has no separate model name
        if "firmware" in found:
            build = found.get("build_number")
            f["ics.device.firmware"] = (
                f"{found['firmware']} (build {build})" if build else found["firmware"]
            )
