"""What a baseline learns from one event, per protocol: the same extraction feeds learning and
detection, so the two can never disagree on what an "operation" or a "point" is.

An event becomes an :class:`Observation`:

- ``op_key``: the operation as the baseline names it (``fc=3 unit=1``, ``read_var``,
  ``userdata group=cpu_functions sub=read_szl``, ``Read``, ``fc=5 outstation=10``,
  ``C_SE_NC_1 ca=1``);
- ``addresses``: numeric ranges touched, per direction (``read``/``write``) and address space
  (``holding``, ``coil``, ``db1``, ``m``, ``analog_output``, ``ioa`` ...);
- ``nodes``: string item ids touched (OPC UA node ids, S7 symbolic items), per direction;
- ``values``: numeric values per point (``unit=1 holding=100``, ``db1.4``, ``ns=2;s=Temp``,
  ``outstation=10 analog_output=0``, ``ca=1 ioa=6000``); consecutive points whose values
  come as one list (Modbus registers, a CIP tag's elements) are kept as one run (``runs``),
  named per point only where a check needs the name;
- ``series``: the polling series the request belongs to (operation + what it asks for);
- ``security``: OPC UA security mode / policy / identity token type when the event shows them,
  and ``cleartext_user``: the user name of a UserName token whose password is not encrypted
  (the password itself is never decoded).
"""

from __future__ import annotations

import math
from typing import Any

from sensor.protocols.schema import DEVICE_PREFIX
from sensor.schema import device_fields
from sensor.timestamps import MAX_EPOCH, parse_timestamp

MAX_SIGNATURE = 160  # characters of a series signature kept (long item lists are hashed down)
MAX_VALUES_PER_EVENT = 512  # values folded per event (a 2000-register read is still bounded)
MAX_ADDRESS = 1 << 32  # Modbus, S7, OPC UA, DNP3 and IEC 104 addresses all fit in 32 bits

# Operation classes, from harmless to dangerous: drives severities and techniques.
OP_CLASSES = ("session", "other", "read", "diagnostic", "write", "control", "program")

_MODBUS_SPACE = {
    1: "coil",
    5: "coil",
    15: "coil",
    2: "discrete",
    4: "input",
    3: "holding",
    6: "holding",
    16: "holding",
    22: "holding",
    23: "holding",
}

# OPC UA MessageSecurityMode and UserTokenType, weakest first (rank 0 = no protection).
SECURITY_MODE_RANK = {
    "invalid": 0,
    "none": 0,
    "sign": 1,
    "signandencrypt": 2,
    "sign_and_encrypt": 2,
}
TOKEN_RANK = {
    "anonymous": 0,
    "username": 1,
    "user_name": 1,
    "certificate": 2,
    "x509": 2,
    "issued": 2,
    "issuedtoken": 2,
    "issued_token": 2,
}


# Device identity fields the dissectors fill (declared in each sensor/protocols/<name>/fields.py):
# (event field, name in the baseline's asset identity)
IDENTITY_FIELDS = tuple(
    (name, name.removeprefix(DEVICE_PREFIX)) for name in sorted(device_fields())
)


# (prefix, direction, first address, raw values): consecutive points ``<prefix>=<address>``
# whose values come as one list (Modbus registers, a CIP tag's elements). Kept as a run, not as
# one (name, direction, value) per value: the checks look a run's points up once per shape.
ValueRun = tuple[str, str, int, list[Any]]


class Observation:
    """One event as the baseline sees it (a plain class: made for every event, it is built
    without a dataclass's default factories)."""

    __slots__ = (
        "protocol",
        "client",
        "server",
        "port",
        "ts",
        "op_class",
        "op_key",
        "function",
        "addresses",
        "nodes",
        "values",
        "runs",
        "series",
        "security",
        "anomaly",
        "shape",
        "_conversation",
    )

    def __init__(
        self, protocol: str, client: str, server: str, port: int, ts: float, op_class: str
    ) -> None:
        self.protocol = protocol
        self.client = client
        self.server = server
        self.port = port
        self.ts = ts
        self.op_class = op_class
        self.op_key: str | None = None
        self.function = ""
        self.addresses: dict[str, dict[str, list[tuple[int, int]]]] = {}
        self.nodes: dict[str, list[str]] = {}
        self.values: list[tuple[str, str, float]] = []  # (point, direction, value)
        self.runs: list[ValueRun] = []  # more points, by run (add_values)
        self.series: str | None = None
        self.security: dict[str, str] = {}
        self.anomaly = False
        # what the extractor's fields were, exactly, when it worked them out once for many
        # events (a Modbus request's shape); None when it did not: the detector's cache key
        self.shape: tuple | None = None
        self._conversation: str | None = None

    @property
    def conversation(self) -> str:
        """The conversation's key (made once: the checks of one event each ask for it)."""
        key = self._conversation
        if key is None:
            key = self._conversation = conversation_key(
                self.client, self.server, self.port, self.protocol
            )
        return key

    def add_range(self, direction: str, space: str, start: Any, count: Any) -> None:
        if type(start) is not int or type(count) is not int or count <= 0 or start < 0:
            return
        if start + count > MAX_ADDRESS:
            return  # no protocol here addresses beyond 32 bits: a decoding artefact, not a range
        self.addresses.setdefault(direction, {}).setdefault(space, []).append(
            (start, start + count - 1)
        )

    def add_values(self, direction: str, prefix: str, start: int, values: Any) -> None:
        """Values of the points ``<prefix>=<start>``, ``<prefix>=<start + 1>`` ...: one run."""
        if isinstance(values, list) and values:
            self.runs.append((prefix, direction, start, values))


def run_numbers(raw: list[Any]) -> list[tuple[int, float]]:
    """(offset, value) of a run's values that are numbers (at most MAX_VALUES_PER_EVENT)."""
    out: list[tuple[int, float]] = []
    for i, value in enumerate(raw[:MAX_VALUES_PER_EVENT]):
        if type(value) is int:  # register values, the common case (number_value's answer)
            out.append((i, float(value)))
        else:
            parsed = number_value(value)
            if parsed is not None:
                out.append((i, parsed))
    return out


def conversation_key(client: str, server: str, port: int, protocol: str) -> str:
    return f"{client} -> {server} {port}/{protocol}"


def event_time(event: dict[str, Any]) -> float | None:
    """``@timestamp`` as epoch seconds: the number the sensor carries, or text read from a
    file (the one parser, sensor/timestamps.py); None when it is not a usable time."""
    value = event.get("@timestamp")
    if type(value) is float and 0.0 <= value < MAX_EPOCH:  # the sensor's own: no conversion
        return value
    return parse_timestamp(value)


def number_value(value: Any) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float):
        f = float(value)
        return f if math.isfinite(f) else None
    return None


def op_class(event: dict) -> str:
    op = event.get("ics.operation")
    return op if op in OP_CLASSES else "other"


def observe(event: dict) -> Observation | None:
    """The baseline's view of one event; None when it has no client/server pair to learn."""
    client = event.get("source.ip")
    server = event.get("destination.ip")
    port = event.get("destination.port")
    protocol = event.get("network.protocol")
    ts = event_time(event)
    if not (isinstance(client, str) and isinstance(server, str) and isinstance(protocol, str)):
        return None
    if type(port) is not int or not 0 <= port <= 65535 or ts is None:
        return None
    obs = Observation(protocol, client, server, port, ts, op_class(event))
    if event.get("event.action") == "anomaly":
        obs.anomaly = True
        return obs
    obs.function = str(event.get("ics.function") or event.get("event.action") or "")
    extract = _EXTRACTORS.get(protocol, _generic)
    extract(event, obs)
    if obs.op_key is None:
        obs.op_key = obs.function or "unknown"
    if obs.series is None:
        obs.series = obs.op_key + _signature(obs)
    return obs


def _signature(obs: Observation) -> str:
    """What a request asks for, as a short stable string (the polling series' identity)."""
    parts: list[str] = []
    for direction in sorted(obs.addresses):
        for space in sorted(obs.addresses[direction]):
            for lo, hi in obs.addresses[direction][space]:
                parts.append(f"{direction[0]}:{space}:{lo}-{hi}")
    for direction in sorted(obs.nodes):
        for node in obs.nodes[direction]:
            parts.append(f"{direction[0]}:{node}")
    text = " ".join(parts)
    if len(text) > MAX_SIGNATURE:
        import hashlib

        digest = hashlib.blake2b(text.encode(), digest_size=8).hexdigest()
        text = f"{text[:60]}... #{digest}"
    return f" @ {text}" if text else ""


# ---------------------------------------------------------------- Modbus


# A polling client sends the same few requests again and again: what a request's fields make
# (operation, function, range, point prefix, series) is worked out once per distinct request.
_ModbusShape = tuple[str, str, str, str, int, int, str, str]
_modbus_shapes: dict[tuple[int, int, int, int, str, str, str], _ModbusShape | None] = {}
_MAX_SHAPES = 4096


def _modbus(event: dict[str, Any], obs: Observation) -> None:
    fc = event.get("modbus.function_code")
    unit = event.get("modbus.unit_id")
    address = event.get("modbus.address")
    quantity = event.get("modbus.quantity")
    function = event.get("modbus.function")
    if (
        type(fc) is int
        and fc != 8
        and fc != 23
        and type(unit) is int
        and type(address) is int
        and type(quantity) is int
        and (function is None or type(function) is str)
    ):
        key = (fc, unit, address, quantity, function or "", obs.function, obs.op_class)
        shape = _modbus_shapes.get(key, _NO_SHAPE)
        if shape is _NO_SHAPE:
            shape = _modbus_shape(event, obs)
            if len(_modbus_shapes) >= _MAX_SHAPES:
                _modbus_shapes.clear()
            _modbus_shapes[key] = shape
        if shape is not None:
            op_key, function_name, direction, space, lo, hi, prefix, series = shape
            obs.shape = key
            obs.op_key = op_key
            obs.function = function_name
            if lo >= 0:
                obs.addresses[direction] = {space: [(lo, hi)]}
            if fc != 22:  # FC 22 carries masks, not values
                values = event.get("modbus.values")
                if isinstance(values, list) and values:
                    obs.runs.append((prefix, direction, address, values))
            obs.series = series
            return
    _modbus_fields(event, obs)


_NO_SHAPE: Any = object()


def _modbus_shape(event: dict[str, Any], obs: Observation) -> _ModbusShape | None:
    """What one plain request (not FC 8 or 23) makes, worked out the long way on an empty
    observation; None when it has no address space (its shape is then not kept)."""
    probe = Observation(obs.protocol, obs.client, obs.server, obs.port, obs.ts, obs.op_class)
    probe.function = obs.function
    _modbus_fields(event, probe)
    fc = event.get("modbus.function_code")
    space = _MODBUS_SPACE.get(fc) if type(fc) is int else None
    if space is None or probe.op_key is None:
        return None
    direction = "write" if obs.op_class == "write" else "read"
    spans = probe.addresses.get(direction, {}).get(space) or [(-1, -1)]
    lo, hi = spans[0]
    series = probe.op_key + _signature(probe)
    return (
        probe.op_key,
        probe.function,
        direction,
        space,
        lo,
        hi,
        f"unit={event.get('modbus.unit_id')} {space}",
        series,
    )


def _modbus_fields(event: dict[str, Any], obs: Observation) -> None:
    fc = event.get("modbus.function_code")
    unit = event.get("modbus.unit_id")
    obs.op_key = f"fc={fc} unit={unit}"
    obs.function = str(event.get("modbus.function") or obs.function)
    if fc == 8 and event.get("modbus.subfunction") is not None:
        obs.op_key += f" sub={event.get('modbus.subfunction')}"
    space = _MODBUS_SPACE.get(fc) if type(fc) is int else None
    if space is None:
        return
    prefix = f"unit={unit} {space}"
    if fc == 23:
        read_at = event.get("modbus.read_address")
        write_at = event.get("modbus.write_address")
        obs.add_range("read", space, read_at, event.get("modbus.read_quantity"))
        obs.add_range("write", space, write_at, event.get("modbus.write_quantity"))
        if type(read_at) is int:
            obs.add_values("read", prefix, read_at, event.get("modbus.read_values"))
        if type(write_at) is int:
            obs.add_values("write", prefix, write_at, event.get("modbus.values"))
        return
    address = event.get("modbus.address")
    direction = "write" if obs.op_class == "write" else "read"
    obs.add_range(direction, space, address, event.get("modbus.quantity"))
    if fc != 22 and type(address) is int:  # FC 22 carries masks, not values
        obs.add_values(direction, prefix, address, event.get("modbus.values"))


# ---------------------------------------------------------------- S7comm


def _s7_space(item: dict) -> str | None:
    area = item.get("area_name") or item.get("area")
    if area is None:
        return None
    area = str(area).lower()
    db = item.get("db")
    if area in ("db", "di") and type(db) is int:
        return f"{area}{db}"
    return area


def _s7comm(event: dict, obs: Observation) -> None:
    if obs.protocol == "s7comm-plus":
        obs.op_key = str(
            event.get("s7comm_plus.function")
            or event.get("s7comm_plus.opcode_name")
            or obs.function
        )
        return
    group = event.get("s7comm.userdata.group_name") or event.get("s7comm.userdata.group")
    if group is not None:
        sub = event.get("s7comm.userdata.subfunction_name") or event.get(
            "s7comm.userdata.subfunction"
        )
        obs.op_key = f"userdata {group}/{sub}"
        szl = event.get("s7comm.szl.id")
        if type(szl) is int:
            obs.op_key += f" szl=0x{szl:04x}"
        elif szl is not None:
            obs.op_key += f" szl={szl}"
        return
    obs.op_key = str(event.get("s7comm.function") or obs.function)
    pi = event.get("s7comm.pi.operation") or event.get("s7comm.pi_service")
    if pi:
        obs.op_key += f" {pi}"
    block_type = event.get("s7comm.block.type")
    if block_type:
        obs.op_key += f" block={block_type}"
        number = event.get("s7comm.block.number")
        if number is not None:
            obs.nodes[obs.op_class] = [f"{block_type}{number}"]
    direction = "write" if obs.op_class == "write" else "read"
    items = event.get("s7comm.items")
    if not isinstance(items, list):
        return
    for item in items[:MAX_VALUES_PER_EVENT]:
        if not isinstance(item, dict):
            continue
        space = _s7_space(item)
        start = item.get("byte")
        if space is None or type(start) is not int:
            continue
        length = item.get("length")
        obs.add_range(direction, space, start, length if type(length) is int and length > 0 else 1)
        value = number_value(item.get("value"))
        if value is not None:
            bit = item.get("bit")
            suffix = f".{bit}" if type(bit) is int and bit else ""
            obs.values.append((f"{space}.{start}{suffix}", direction, value))


# ---------------------------------------------------------------- OPC UA


def _opcua_value(entry: Any) -> float | None:
    if isinstance(entry, dict):
        entry = entry.get("value")
    return number_value(entry)


def _opcua(event: dict, obs: Observation) -> None:
    service = event.get("opcua.service") or event.get("opcua.message_type") or obs.function
    obs.op_key = str(service)
    direction = {"write": "write", "control": "call"}.get(obs.op_class, "read")
    nodes = event.get("opcua.node_ids")
    if service == "Call":
        direction = "call"
        nodes = event.get("opcua.method_ids")
    if isinstance(nodes, list):
        ids = sorted({str(n) for n in nodes[:MAX_VALUES_PER_EVENT] if n is not None})
        if ids:
            obs.nodes[direction] = ids
    values = event.get("opcua.values")
    attributes = event.get("opcua.attributes")
    if isinstance(values, list) and isinstance(nodes, list) and len(values) == len(nodes):
        for i, (node, entry) in enumerate(zip(nodes[:MAX_VALUES_PER_EVENT], values, strict=False)):
            if (
                isinstance(attributes, list)
                and i < len(attributes)
                and attributes[i] not in ("Value", None)
            ):
                continue  # only the Value attribute is a process value
            number = _opcua_value(entry)
            if number is not None:
                obs.values.append((str(node), "write" if direction == "write" else "read", number))
    for key, name in (
        ("security_mode", "opcua.security_mode"),
        ("security_policy", "opcua.security_policy"),
        ("identity_token", "opcua.identity_token"),
    ):
        value = event.get(name)
        if isinstance(value, str) and value:
            obs.security[key] = value
    if (
        event.get("opcua.password_encrypted") is False
    ):  # a UserName token with the password in clear
        user = event.get("opcua.user_name")
        obs.security["cleartext_user"] = (
            user if isinstance(user, str) and user else "(no user name)"
        )


# ---------------------------------------------------------------- EtherNet/IP


def _enip_points(tag: str) -> tuple[str, int]:
    """``Counter[2]`` -> (``Counter``, 2): a tag's element values are numbered from there."""
    if tag.endswith("]") and "[" in tag:
        base, _, index = tag[:-1].rpartition("[")
        if index.isdigit():
            return base, int(index)
    return tag, 0


def _enip(event: dict, obs: Observation) -> None:
    service = event.get("cip.service")
    if not isinstance(service, str):
        obs.op_key = str(event.get("enip.command_name") or obs.function)
        return
    klass = event.get("cip.class")
    obs.op_key = f"{service} class=0x{klass:02x}" if type(klass) is int else service
    direction = "write" if obs.op_class in ("write", "control", "program") else "read"
    tag = event.get("cip.tag")
    if isinstance(tag, str) and tag:
        obs.nodes[direction] = [tag]
        base, start = _enip_points(tag)
        obs.add_values(direction, base + "[]", start, event.get("cip.values"))
    elif type(klass) is int:
        parts = [f"@0x{klass:02x}"]
        for key in ("cip.instance", "cip.attribute"):
            value = event.get(key)
            if type(value) is int:
                parts.append(str(value))
        obs.nodes[direction] = ["/".join(parts)]


# ---------------------------------------------------------------- DNP3

# object groups a request names -> the point space it reads or commands
_DNP3_SPACES = {
    1: "binary_input",
    2: "binary_input",
    3: "double_input",
    4: "double_input",
    10: "binary_output",
    11: "binary_output",
    12: "binary_output",
    20: "counter",
    21: "counter",
    22: "counter",
    23: "counter",
    30: "analog_input",
    32: "analog_input",
    40: "analog_output",
    41: "analog_output",
    42: "analog_output",
    43: "analog_output",
}


def _dnp3(event: dict, obs: Observation) -> None:
    """Operation: function code and outstation (``fc=5 outstation=10``); addresses: the
    points a request's object headers name (ranges) or commands (CROB, analog output block
    indexes), per point space; values: analog output block values (set points) as
    ``outstation=10 analog_output=1``; nodes: the object types a read asks for (``g0v254``:
    device attributes, ``g60v2``: class 1 data), so a master reading what it never read
    shows."""
    fc = event.get("dnp3.function_code")
    outstation = event.get("dnp3.outstation")
    function = event.get("dnp3.function")
    obs.function = str(function or obs.function)
    if fc is None:  # a link service (reset link states, request link status)
        obs.op_key = f"link {event.get('dnp3.link.function')} outstation={outstation}"
        return
    obs.op_key = f"fc={fc} outstation={outstation}"
    objects = event.get("dnp3.objects")
    if not isinstance(objects, list):
        return
    direction = "read" if obs.op_class == "read" else "write"
    types: list[str] = []
    for header in objects[:MAX_VALUES_PER_EVENT]:
        if not isinstance(header, dict):
            continue
        group = header.get("group")
        space = _DNP3_SPACES.get(group) if type(group) is int else None
        points = header.get("points")
        if isinstance(points, list) and points:
            for point in points[:MAX_VALUES_PER_EVENT]:
                if not isinstance(point, dict) or type(point.get("index")) is not int:
                    continue
                if space is not None:
                    obs.add_range(direction, space, point["index"], 1)
                value = number_value(point.get("value"))
                if value is not None and space == "analog_output":
                    obs.values.append(
                        (f"outstation={outstation} {space}={point['index']}", direction, value)
                    )
        elif space is not None and type(header.get("start")) is int:
            start, stop = header["start"], header.get("stop")
            if type(stop) is int and stop >= start:
                obs.add_range(direction, space, start, stop - start + 1)
        if direction == "read" and isinstance(header.get("type"), str):
            types.append(header["type"])
    if types and fc in (1, 129, 130):
        obs.nodes["read"] = sorted(set(types))


# ---------------------------------------------------------------- IEC 60870-5-104


def _iec104(event: dict, obs: Observation) -> None:
    """Operation: the type and common address (``C_SE_NC_1 ca=1``; U-format functions by
    name); addresses: the information object addresses (``ioa``), written for commands and
    set points, read otherwise; values: per ``ca=1 ioa=6000``, what commands and set points
    send (write) and monitoring data reports (read)."""
    mnemonic = event.get("iec104.type")
    ca = event.get("iec104.common_address")
    if mnemonic is None:  # U format: startdt, stopdt, testfr (act and con alike)
        obs.op_key = obs.function
        return
    obs.op_key = f"{mnemonic} ca={ca}"
    ioas = event.get("iec104.ioa")
    if not isinstance(ioas, list):
        return
    direction = "write" if obs.op_class in ("write", "control") else "read"
    space = f"ca={ca} ioa"  # a station's IOAs: a sweep of several stations counts each
    run_start = run_end = None
    for ioa in ioas[:MAX_VALUES_PER_EVENT]:
        if type(ioa) is not int:
            continue
        if run_end is not None and ioa == run_end + 1:
            run_end = ioa
            continue
        if run_start is not None and run_end is not None:
            obs.add_range(direction, space, run_start, run_end - run_start + 1)
        run_start = run_end = ioa
    if run_start is not None and run_end is not None:
        obs.add_range(direction, space, run_start, run_end - run_start + 1)
    if mnemonic in ("C_IC_NA_1", "C_CI_NA_1", "C_CS_NA_1", "C_TS_NA_1", "C_TS_TA_1"):
        return  # station-wide: IOA 0 and a qualifier, not a point and its value
    objects = event.get("iec104.objects")
    if isinstance(objects, list):
        for obj in objects[:MAX_VALUES_PER_EVENT]:
            if isinstance(obj, dict) and type(obj.get("ioa")) is int:
                value = number_value(obj.get("value"))
                if value is not None:
                    obs.values.append((f"ca={ca} ioa={obj['ioa']}", direction, value))


def _generic(event: dict, obs: Observation) -> None:
    obs.op_key = obs.function or "unknown"


_EXTRACTORS = {
    "modbus": _modbus,
    "s7comm": _s7comm,
    "s7comm-plus": _s7comm,
    "opcua": _opcua,
    "enip": _enip,
    "dnp3": _dnp3,
    "iec104": _iec104,
}


def security_rank(kind: str, value: str) -> int | None:
    table = (
        SECURITY_MODE_RANK
        if kind == "security_mode"
        else TOKEN_RANK
        if kind == "identity_token"
        else None
    )
    if table is None:
        return None
    return table.get(value.lower().replace(" ", "").replace("-", "_"))
