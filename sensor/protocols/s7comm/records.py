"""S7comm records: one per transaction, from a request and its response (either may be
missing), with the connection's COTP facts on every record.

A paired record: unprefixed fields describe the request PDU (or the response when no request
was seen); ``s7comm.response.*`` the response PDU of the pair."""

from __future__ import annotations

from sensor.protocols.base import Record, event_type, kebab
from sensor.protocols.s7comm.pdu import Pdu, scalar
from sensor.protocols.s7comm.plus import OPCODE_NOTIFICATION, OPCODE_REQUEST, PlusPdu
from sensor.protocols.s7comm.tables import (
    PLUS_FUNCTIONS,
    PROTO_PLUS,
    PROTO_S7,
    RETURN_CODES,
    ROSCTR_NAMES,
)

MAX_UPLOAD_IDS = 64  # upload id -> block kept per connection to name upload/end-upload jobs

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


def cotp_record(
    conn: dict[str, object],
    ts: float,
    fields: dict[str, object],
    resp_ts: float | None,
    request_seen: bool = True,
) -> Record:
    """A COTP connection: request (CR) and confirm (CC)."""
    rec: Record = {
        "ts": ts, "network.protocol": PROTO_S7, "event.action": "cotp-connect",
        "event.type": ["protocol", "start"], "ics.operation": "session", "ics.function": "cotp_connect",
        "event.outcome": "success" if resp_ts is not None else "unknown",
    }  # fmt: skip
    if resp_ts is not None and request_seen:
        rec["event.duration"] = int(round((resp_ts - ts) * 1e9))
    rec.update(conn)
    rec.update(fields)
    return rec


def with_conn(conn: dict[str, object], rec: Record) -> Record:
    """A record with the connection's COTP facts (the record's own values win), None dropped."""
    for key, value in conn.items():
        rec.setdefault(key, value)
    return {k: v for k, v in rec.items() if v is not None}


def s7_record(
    conn: dict[str, object],
    uploads: dict[int, dict[str, object]],
    req: Pdu,
    resp: Pdu | None,
    push: bool = False,
) -> Record:
    """One S7comm transaction: the request's fields, the response's (renamed where both
    have them), items merged, outcome; a start upload names the block of later uploads."""
    rec: Record = {"ts": req.ts, "network.protocol": PROTO_S7}
    rec.update(conn)
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
            items = merge_items(items, resp.items)
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
                value = scalar(item)
                if value is not None:
                    item["value"] = value
        rec["s7comm.items"] = items
    if req.rosctr == 1 and not req.to_server:
        rec["s7comm.initiator"] = "server"
    if function == "start_upload" and "s7comm.upload_id" in rec:  # name later upload jobs
        if len(uploads) >= MAX_UPLOAD_IDS:
            uploads.pop(next(iter(uploads)))
        uploads[int(rec["s7comm.upload_id"])] = {  # type: ignore[call-overload]
            k: v
            for k, v in rec.items()
            if k.startswith("s7comm.block.") and k != "s7comm.block.more_data"
        }
    rec["event.action"] = action
    rec["ics.function"] = function
    rec["ics.operation"] = operation
    rec["event.type"] = event_type(operation)
    if failed:
        rec["event.outcome"] = "failure"
    elif resp is not None or push or req.rosctr in (2, 3) or req.userdata_type in (8, 11):
        rec["event.outcome"] = "success"
    else:
        rec["event.outcome"] = "unknown"
    return rec


def merge_items(
    req_items: list[dict[str, object]] | None, resp_items: list[dict[str, object]]
) -> list[dict[str, object]]:
    if not req_items:
        return resp_items
    for k, item in enumerate(req_items):
        if k < len(resp_items):
            item.update(resp_items[k])
    return req_items


def plus_record(conn: dict[str, object], req: PlusPdu, resp: PlusPdu | None) -> Record:
    """One S7comm-plus transaction (or a notification)."""
    rec: Record = {"ts": req.ts, "network.protocol": PROTO_PLUS}
    rec.update(conn)
    rec.update(req.fields)
    if req.opcode == OPCODE_NOTIFICATION:
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
    rec["event.action"] = kebab(name)
    rec["ics.function"] = name
    rec["ics.operation"] = operation
    rec["event.type"] = event_type(operation)
    if failed:
        rec["event.outcome"] = "failure"
    elif resp is not None or req.opcode != OPCODE_REQUEST:
        rec["event.outcome"] = "success"
    else:
        rec["event.outcome"] = "unknown"
    return rec
