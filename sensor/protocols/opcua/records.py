"""OPC UA records: one per transaction, from a request message and/or its answer."""

from __future__ import annotations

from sensor.protocols.base import Record, event_type
from sensor.protocols.facts import OPCUA_NAME
from sensor.protocols.opcua.identity import device_from_read
from sensor.protocols.opcua.tables import ACTION, FUNCTION, OPERATION, is_bad
from sensor.protocols.opcua.transport import NONE_POLICY, Message, policy_name

NAME = OPCUA_NAME


def build_record(req: Message | None, resp: Message | None, mode: str | None) -> Record:
    """One transaction record from a request and/or its response; ``mode`` is the channel's
    security mode when known."""
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
    if mode is not None and f.get("opcua.message_type") in ("MSG", "CLO", "OPN"):
        f.setdefault("opcua.security_mode", mode)
    policy = f.get("opcua.security_policy_uri")
    if policy:
        f["opcua.security_policy"] = policy_name(policy)
        f["opcua.signed"] = policy != NONE_POLICY
        f.setdefault(
            "opcua.encrypted",
            False if policy == NONE_POLICY else f.get("opcua.encrypted", False),
        )
        if policy == NONE_POLICY:
            f.setdefault("opcua.security_mode", "None")
    elif "opcua.sequence_number" in f or "opcua.response_sequence_number" in f:
        f.setdefault("opcua.encrypted", False)
    device_from_read(f)
    mtype = f.get("opcua.message_type")
    if mtype == "OPN":
        service = "OpenSecureChannel"
    elif mtype == "CLO":
        service = "CloseSecureChannel"
    if mtype in ("HEL", "ACK"):
        action, op, function = "hello", "session", "hello"
    elif mtype == "ERR":
        action, op, function = "error", "session", "error"
    elif mtype == "RHE":
        action, op, function = "reverse-hello", "session", "reverse_hello"
    elif service and service in ACTION:
        action = ACTION[service]
        op = OPERATION.get(service, "other")
        function = FUNCTION[service]
    elif f.get("opcua.service_fault"):
        action, op, function = "service-fault", "other", "service_fault"
    else:
        action, op, function = "message", "other", "message"
    if service:
        f["opcua.service"] = service
    elif f.get("opcua.message_type") == "MSG" and not f.get("opcua.encrypted"):
        f["opcua.service"] = "unknown"
    f["event.action"] = action
    f["event.type"] = event_type(op)
    f["ics.operation"] = op
    f["ics.function"] = function
    code = f.get("opcua.status_code")
    aborted = f.get("opcua.aborted")
    if code is not None and (is_bad(code) or aborted):
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
