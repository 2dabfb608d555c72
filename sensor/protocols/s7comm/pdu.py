"""S7comm PDUs (protocol id 0x32): jobs and acks (read/write var, block download and upload,
PI services, setup communication) and userdata (cyclic services, block functions, CPU
functions, clock), decoded from their parameters and data into a ``Pdu``'s fields."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from sensor.protocols.base import kebab
from sensor.protocols.s7comm.identity import szl
from sensor.protocols.s7comm.tables import (
    AREA_NAMES,
    BLOCK_TYPES,
    JOB_FUNCTIONS,
    MODE_NAMES,
    PI_OPERATIONS,
    RETURN_CODES,
    USERDATA_GROUPS,
    USERDATA_SUBFUNCTIONS,
    USERDATA_TYPES,
)
from sensor.protocols.s7comm.values import (
    ascii_text,
    diag_event,
    parse_filename,
    s7_block_time,
    s7_time,
)

MAX_DATA_BYTES = 256  # item data copied into records (hex); the length is always given
# Request transport size -> struct format of a single element (BIT is handled apart).
_SCALAR_FORMATS = {2: ">B", 3: ">B", 4: ">H", 5: ">h", 6: ">I", 7: ">i", 8: ">f"}


@dataclass(slots=True)
class Pdu:
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


def decode_job_or_ack(
    pdu: Pdu, params: bytes, data: bytes, max_items: int, uploads: dict[int, dict[str, object]]
) -> None:
    """Fields of a job or ack(_data) PDU (ROSCTR 1-3) from its parameters and data."""
    f = pdu.fields
    if not params:
        return
    func = params[0]
    name, operation = JOB_FUNCTIONS.get(func, (f"function_0x{func:02x}", "other"))
    f["s7comm.function_code"] = func
    f["s7comm.function"] = name
    pdu.function, pdu.operation, pdu.action = name, operation, kebab(name)
    is_job = pdu.rosctr == 1
    if func in (0x04, 0x05):
        count = params[1]
        f["s7comm.item_count"] = count
        if is_job:
            pdu.items = request_items(params, count, max_items)
            if func == 0x05:
                data_items(data, len(pdu.items), pdu.items, max_items)
        elif func == 0x04:
            pdu.items = data_items(data, count, None, max_items)
            pdu.return_codes = [int(it["return_code"]) for it in pdu.items]
        else:
            pdu.return_codes = list(data[: min(count, max_items)])
        if pdu.return_codes and any(rc != 0xFF for rc in pdu.return_codes):
            pdu.failed = True
    elif func == 0xF0 and len(params) >= 8:
        amq_calling, amq_called, pdu_size = struct.unpack_from(">HHH", params, 2)
        f["s7comm.max_amq_calling"] = amq_calling
        f["s7comm.max_amq_called"] = amq_called
        f["s7comm.pdu_size"] = pdu_size
    elif 0x1A <= func <= 0x1F:
        block_control(pdu, func, params, data, uploads)
    elif func == 0x28 and is_job:
        pi_service(pdu, params)
    elif func == 0x29 and is_job and len(params) >= 7:
        n = params[6]
        f["s7comm.pi_service"] = ascii_text(params[7 : 7 + n])


def request_items(params: bytes, count: int, max_items: int, i: int = 2) -> list[dict[str, object]]:
    """Item addresses of a read/write var job (or a cyclic subscription) from offset i."""
    items: list[dict[str, object]] = []
    for _ in range(min(count, max_items)):
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


def data_items(
    data: bytes, count: int, into: list[dict[str, object]] | None, max_items: int
) -> list[dict[str, object]]:
    """Data items (return code, transport size, length, data); merged into request items."""
    items = into if into is not None else []
    i = 0
    n = min(count, max_items)
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
            item["data"] = raw[:MAX_DATA_BYTES].hex()
            if nbytes > MAX_DATA_BYTES:
                item["data_truncated"] = True
        step = 4 + nbytes
        if nbytes % 2 and idx < n - 1:  # fill byte after odd-sized items except the last
            step += 1
        i += step
    return items


def scalar(item: dict[str, object]) -> object | None:
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


def block_control(
    pdu: Pdu, func: int, params: bytes, data: bytes, uploads: dict[int, dict[str, object]]
) -> None:
    f = pdu.fields
    if len(params) >= 2:
        f["s7comm.block.more_data"] = bool(params[1] & 0x01)
    if pdu.rosctr == 1:
        if len(params) >= 8:
            upload_id = int.from_bytes(params[4:8], "big")
            if func in (0x1E, 0x1F):
                f["s7comm.upload_id"] = upload_id
                f.update(uploads.get(upload_id, {}))
                if func == 0x1F:
                    uploads.pop(upload_id, None)
        if len(params) >= 9 and func in (0x1A, 0x1B, 0x1C, 0x1D):
            n = params[8]
            f.update(parse_filename(params[9 : 9 + n]))
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


def pi_service(pdu: Pdu, params: bytes) -> None:
    f = pdu.fields
    if len(params) < 10:
        raise ValueError("PI-service parameters shorter than 10 bytes")
    pb_len = int.from_bytes(params[8:10], "big")
    block = params[10 : 10 + pb_len]
    if len(block) < pb_len or len(params) < 11 + pb_len:
        raise ValueError("PI-service parameter block runs past the parameters")
    n = params[10 + pb_len]
    service = ascii_text(params[11 + pb_len : 11 + pb_len + n])
    f["s7comm.pi_service"] = service
    if service in ("_INSE", "_DELE") and len(block) >= 2:
        names = []
        for k in range(block[0]):
            name = block[2 + 8 * k : 10 + 8 * k]
            if len(name) < 8:
                break
            names.append(name)
        if names:
            f.update(parse_filename(names[0]))
            f["s7comm.pi.blocks"] = [n.decode("latin-1") for n in names]
        f["s7comm.pi.operation"] = PI_OPERATIONS[service]
        pdu.operation = "program"
    elif service == "P_PROGRAM":
        f["s7comm.pi.operation"] = "cold-start" if block.strip() == b"C" else "hot-start"
    elif service in PI_OPERATIONS:
        f["s7comm.pi.operation"] = PI_OPERATIONS[service]
    if block and service not in ("_INSE", "_DELE"):
        f["s7comm.pi.parameter"] = ascii_text(block)


# -- userdata ---------------------------------------------------------------------------


def decode_userdata(pdu: Pdu, params: bytes, data: bytes, max_items: int) -> None:
    """Fields of a userdata PDU (ROSCTR 7): group, subfunction and what its data carries."""
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
    pdu.function, pdu.operation, pdu.action = sname, sub_op or operation, kebab(sname)
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
        f["s7comm.diagnostic.events"] = [diag_event(body[0:20])]
    elif group == 2 and sub in (1, 5, 7) and len(body) >= 2:  # cyclic subscriptions carry items
        count = int.from_bytes(body[0:2], "big")
        f["s7comm.item_count"] = count
        if utype == 4:
            pdu.items = request_items(body, count, max_items, 4)
        elif body[2:]:
            pdu.items = data_items(body[2:], count, None, max_items)
    elif group == 4 and sub == 1 and len(body) >= 4:
        szl(pdu, utype, body, max_items)
    elif group == 3:
        block_userdata(pdu, sub, utype, body)
    elif (
        group == 7
        and len(body) >= 8
        and ((utype == 8 and sub in (1, 3)) or (utype == 4 and sub in (2, 4)))
    ):
        clock = s7_time(body)  # read clock answers and set clock requests carry the time
        if clock:
            f["s7comm.clock"] = clock


def block_userdata(pdu: Pdu, sub: int, utype: int, body: bytes) -> None:
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
        f.update(parse_filename(body[0:8]))
        f.pop("s7comm.block.filename", None)
    elif sub == 3 and utype == 8 and len(body) >= 78:  # block info: the block's header
        subblk = body[11]
        f["s7comm.block.type"] = BLOCK_TYPES.get(f"{subblk:02X}", f"0x{subblk:02x}")
        f["s7comm.block.number"] = int.from_bytes(body[12:14], "big")
        f["s7comm.block.language"] = body[10]
        f["s7comm.block.load_memory_length"] = int.from_bytes(body[14:18], "big")
        f["s7comm.block.mc7_length"] = int.from_bytes(body[40:42], "big")
        f["s7comm.block.code_timestamp"] = s7_block_time(body[22:28])
        f["s7comm.block.interface_timestamp"] = s7_block_time(body[28:34])
        for key, start in (("author", 42), ("family", 50), ("name", 58)):
            text = ascii_text(body[start : start + 8])
            if text:
                f["s7comm.block." + key] = text
        f["s7comm.block.version"] = f"{body[66] >> 4}.{body[66] & 0x0F}"
        f["s7comm.block.checksum"] = int.from_bytes(body[68:70], "big")


# -- pairing and records ----------------------------------------------------------------
