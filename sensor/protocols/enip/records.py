"""EtherNet/IP records: one per transaction. An encapsulation exchange without CIP
(ListIdentity, RegisterSession, ...) is one record; one carrying CIP gives a record per CIP
service: a Multiple Service Packet one per embedded request (``cip.multiple_index`` /
``cip.multiple_count``), an Unconnected Send the request it routes (``cip.via``,
``cip.route``), each paired with its response."""

from __future__ import annotations

from sensor.protocols.base import Record, event_type, kebab
from sensor.protocols.enip.cip import Cip, request_fields, response_fields, service_name
from sensor.protocols.enip.identity import IdentityError, attribute_list, attribute_single, device
from sensor.protocols.enip.tables import (
    CLASS_CONNECTION_MANAGER,
    CLASS_FILE,
    CLASS_IDENTITY,
    CLASS_NVS,
    CLASSES,
    COMMANDS,
    ENCAP_STATUS,
    GENERAL_STATUS,
    SERVICE_MSP,
    SERVICE_UNCONNECTED_SEND,
    SUCCESS_STATUS,
    class_name,
)
from sensor.protocols.facts import ENIP_NAME

NAME = ENIP_NAME

_COMMAND_OPERATION: dict[int, str] = {
    0x0001: "diagnostic",
    0x0004: "diagnostic",
    0x0063: "diagnostic",
    0x0064: "diagnostic",
    0x0065: "session",
    0x0066: "session",
}

_READ = ("get_attributes_all", "get_attribute_list", "get_attribute_single",
         "find_next_object_instance", "get_member", "read_tag", "read_tag_fragmented",
         "get_instance_attribute_list", "read_template", "get_connection_data",
         "search_connection_data", "get_connection_owner")  # fmt: skip
_WRITE = ("set_attributes_all", "set_attribute_list", "set_attribute_single", "set_member",
          "insert_member", "remove_member", "write_tag", "write_tag_fragmented",
          "read_modify_write_tag", "create", "delete", "apply_attributes", "restore", "save")  # fmt: skip
OPERATIONS: dict[str, str] = {
    **dict.fromkeys(_READ, "read"),
    **dict.fromkeys(_WRITE, "write"),
    "reset": "control",
    "start": "control",
    "stop": "control",
    "forward_open": "session",
    "large_forward_open": "session",
    "forward_close": "session",
    "initiate_upload": "program",
    "initiate_download": "program",
    "initiate_partial_read": "program",
    "initiate_partial_write": "program",
    "upload_transfer": "program",
    "download_transfer": "program",
    "clear_file": "program",
}


class Message:
    """One encapsulation message (request or reply) as the parser decoded it."""

    __slots__ = ("ts", "command", "session", "status", "context", "to_server", "cip",
                 "connection_id", "sequence", "fields")  # fmt: skip

    def __init__(
        self, ts: float, command: int, session: int, status: int, context: bytes, to_server: bool
    ) -> None:
        self.ts = ts
        self.command = command
        self.session = session
        self.status = status
        self.context = context
        self.to_server = to_server
        self.cip: Cip | None = None
        self.connection_id = -1  # connected messaging: the connection id of the address item
        self.sequence = -1  # ... and the sequence count of the data item
        self.fields: dict[str, object] = {}  # list replies, RegisterSession


def operation(name: str, klass: int) -> str:
    if klass == CLASS_NVS and not name.startswith("get_"):
        return "program"  # firmware update through the Non-Volatile Storage object
    if klass == CLASS_FILE and name in ("set_attribute_single", "create", "delete"):
        return "program"
    return OPERATIONS.get(name, "other")


def _base(req: Message | None, resp: Message | None) -> Record:
    first = req if req is not None else resp
    assert first is not None
    command = first.command
    name = COMMANDS.get(command) or f"command_0x{command:04x}"
    rec: Record = {
        "ts": first.ts,
        "network.protocol": NAME,
        "enip.command": command,
        "enip.command_name": name,
        "enip.session_handle": first.session,
    }
    if first.connection_id >= 0:
        rec["enip.connection_id"] = first.connection_id
        rec["enip.sequence"] = first.sequence
    elif any(first.context):
        rec["enip.sender_context"] = first.context.hex()
    if req is not None and resp is not None:
        rec["ics.pairing"] = "paired"
        duration = round((resp.ts - req.ts) * 1e9)
        rec["event.duration"] = duration if duration > 0 else 0
    else:
        rec["ics.pairing"] = "request-only" if resp is None else "response-only"
    if resp is not None:
        rec["enip.status"] = resp.status
        if resp.status:
            rec["enip.status_name"] = ENCAP_STATUS.get(resp.status) or f"status_0x{resp.status:x}"
    return rec


def _finish(rec: Record, name: str, op: str, outcome: str) -> Record:
    rec["ics.function"] = name
    rec["event.action"] = kebab(name)
    rec["ics.operation"] = op
    rec["event.type"] = event_type(op)
    rec["event.outcome"] = outcome
    return rec


def build(req: Message | None, resp: Message | None, out: list[Record]) -> list[str]:
    """The records of one exchange into ``out``; returns the CIP decoding problems found."""
    rec = _base(req, resp)
    failed = resp is not None and resp.status != 0
    rq = req.cip if req is not None else None
    rs = resp.cip if resp is not None else None
    if rq is None and rs is None:
        first = req if req is not None else resp
        assert first is not None
        name = str(rec["enip.command_name"])
        for msg in (req, resp):
            if msg is not None:
                rec.update(msg.fields)
        if resp is not None and any(k.startswith("enip.identity.") for k in resp.fields):
            rec.update(device(resp.fields))
        outcome = "failure" if failed else ("success" if resp is not None else "unknown")
        if req is not None and resp is None and first.command in (0x0000, 0x0066, 0x0072, 0x0073):
            outcome = "success"  # a command the target never answers
        out.append(_finish(rec, name, _COMMAND_OPERATION.get(first.command, "other"), outcome))
        return []
    problems: list[str] = []
    _cip(rec, rq, rs, failed, [], "", out, problems, -1, 0)
    return problems


def _cip(
    base: Record,
    rq: Cip | None,
    rs: Cip | None,
    failed: bool,
    via: list[str],
    route: str,
    out: list[Record],
    problems: list[str],
    index: int,
    count: int,
) -> None:
    """Records of one CIP request/response pair, unwrapping what it embeds (``index`` /
    ``count``: its place in a Multiple Service Packet, -1 outside one)."""
    for msg in (rq, rs):
        if msg is not None and msg.error:
            problems.append(msg.error)
    if rq is not None and rq.embedded:
        klass = rq.path.klass
        if rq.service == SERVICE_UNCONNECTED_SEND and klass == CLASS_CONNECTION_MANAGER:
            # the target answers the routed request itself (or 0xd2 when routing failed)
            inner = rq.embedded[0]
            if (
                rs is not None
                and rs.service == SERVICE_UNCONNECTED_SEND
                and inner.service != SERVICE_UNCONNECTED_SEND  # 0x52 is also Read Tag Fragmented
            ):
                _one(base, inner, None, failed, via + ["unconnected_send"], rq.route, out, rs,
                     index, count)  # fmt: skip
            else:
                _cip(base, inner, rs, failed, via + ["unconnected_send"], rq.route, out, problems,
                     index, count)  # fmt: skip
            return
        if rq.service == SERVICE_MSP:
            answers = rs.embedded if rs is not None and rs.service == SERVICE_MSP else []
            total = max(len(rq.embedded), len(answers))
            failing = failed or (rs is not None and not answers and rs.status not in SUCCESS_STATUS)
            inner_via = via + ["multiple_service_packet"]
            for k in range(total):
                inner_rq = rq.embedded[k] if k < len(rq.embedded) else None
                inner_rs = answers[k] if k < len(answers) else None
                _cip(base, inner_rq, inner_rs, failing, inner_via, route, out, problems, k, total)
            return
    if rq is None and rs is not None and rs.service == SERVICE_MSP and rs.embedded:
        total = len(rs.embedded)
        inner_via = via + ["multiple_service_packet"]
        for k, inner_rs in enumerate(rs.embedded):
            _cip(base, None, inner_rs, failed, inner_via, route, out, problems, k, total)
        return
    _one(base, rq, rs, failed, via, route, out, None, index, count)


def _one(
    base: Record,
    rq: Cip | None,
    rs: Cip | None,
    failed: bool,
    via: list[str],
    route: str,
    out: list[Record],
    routing_error: Cip | None,
    index: int,
    count: int,
) -> None:
    rec = base.copy()
    if index >= 0:
        rec["cip.multiple_index"] = index
        rec["cip.multiple_count"] = count
    first = rq if rq is not None else rs
    assert first is not None
    path = rq.path if rq is not None else first.path
    klass = path.klass
    key = (first.service, klass, path.tag != "")
    info = _SERVICES.get(key)
    if info is None:
        name = service_name(first.service, klass, path.tag != "")
        op = operation(name, klass)
        info = _SERVICES[key] = (name, kebab(name), op, event_type(op))
    name = info[0]
    rec["cip.service_code"] = first.service
    rec["cip.service"] = name
    if klass >= 0:
        rec["cip.class"] = klass
        rec["cip.class_name"] = CLASSES.get(klass) or class_name(klass)
    if path.classes:
        rec["cip.classes"] = path.classes
    if path.instance >= 0:
        rec["cip.instance"] = path.instance
    if path.attribute >= 0:
        rec["cip.attribute"] = path.attribute
    if path.member >= 0:
        rec["cip.member"] = path.member
    if path.connection_point >= 0:
        rec["cip.connection_point"] = path.connection_point
    if path.tag:
        rec["cip.tag"] = path.tag
    if via:
        rec["cip.via"] = via
    if route:
        rec["cip.route"] = route
    if rq is not None:
        request_fields(rq, name, rec)
    answer = routing_error if routing_error is not None else rs
    if answer is not None:
        rec["cip.status"] = answer.status
        if answer.service != first.service:  # a routing failure answers the Unconnected Send
            rec["cip.response_service_code"] = answer.service
        rec["cip.status_name"] = (
            GENERAL_STATUS.get(answer.status) or f"status_0x{answer.status:02x}"
        )
        if answer.ext_status:
            rec["cip.extended_status"] = answer.ext_status
        ok = answer.status in SUCCESS_STATUS and routing_error is None
        if ok and rs is not None:
            response_fields(rq, name, rs, rec)
            if klass == CLASS_IDENTITY and rs.data:
                _identity(rec, name, path.attribute, rs.data)
        failed = failed or not ok
    rec["ics.function"] = name
    rec["event.action"] = info[1]
    rec["ics.operation"] = info[2]
    rec["event.type"] = list(info[3])
    rec["event.outcome"] = "failure" if failed else ("success" if answer is not None else "unknown")
    out.append(rec)


# (service code, class, symbolic path) -> (name, event.action, ics.operation, event.type)
_SERVICES: dict[tuple[int, int, bool], tuple[str, str, str, list[str]]] = {}


def _identity(rec: Record, name: str, attribute: int, data: bytes) -> None:
    """The Identity object read over explicit messaging: enip.identity.* and ics.device.*."""
    from sensor.protocols.enip.identity import identity_body

    try:
        if name == "get_attributes_all":
            fields = identity_body(data)
        elif name == "get_attribute_single":
            fields = attribute_single(attribute, data)
        elif name == "get_attribute_list":
            fields = attribute_list(data)
        else:
            return
    except IdentityError:
        return
    rec.update(fields)
    rec.update(device(fields))
