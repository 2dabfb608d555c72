"""Rollups: one summary document per conversation series per interval (docs/schema.md,
"Rollup").

A series is (client, server, server port, protocol, function, object), the object at a
grain an analyst reads: a Modbus unit, table and block of addresses, an S7 area or data
block (or the block a program operation moves), an OPC UA node (or set of nodes), an
EtherNet/IP tag or CIP object (or implicit I/O connection), a DNP3 outstation and the
object types a request names (``outstation 10 g41v1``), an IEC 104 station and block of
information object addresses (``ca 1 ioa 6000-6099``). Per
series and interval: request and response counts, success / exception / failure counts,
first and last time, response time (min, mean, max), bytes, and for writes the lowest and
highest value written where the dissector decoded one (a DNP3 analog output block is written
by a control function: select, operate, direct operate).

Intervals are aligned to multiples of ``interval_s`` of event time (capture time on a replay,
so replaying a capture twice gives the same rollups, same ids). An interval is emitted once
time (each event's, or the wall clock of a live sensor through :meth:`advance`) has passed
its end by ``grace_s``: answers that complete just after the boundary still count in the
interval of their request. An event whose interval was already emitted (a request that
waited long for an answer, or a second capture file from earlier) opens it again, and it is
emitted again as a further part with its own id (``late``): sums over rollups stay right
and a re-send never overwrites the first part.

Memory: at most ``max_series`` series per interval; beyond that a new series is folded into
its conversation's ``*`` series (function and object ``*``), and beyond ``max_series`` plus a
tenth into one ``*`` series per protocol (``overflow``).

The per-event path is :meth:`Rollups.add`: a handful of dictionary reads and integer
additions (bench/bench_rollups.py measures it).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Final

from sensor.digests import blake2b
from sensor.events import ECS_VERSION, Context
from sensor.schema import WrittenValues, written_values
from sensor.timestamps import parse_timestamp

DEFAULT_INTERVAL_S = 60.0
DEFAULT_MAX_SERIES = 50_000
MODBUS_BLOCK: Final = 100  # registers / coils per object: 0-99, 100-199, ...
MAX_NODES_NAMED = 1  # an OPC UA request on several nodes is named by its first and a digest

# Final: the compiled build reads a Final module name as a constant or a C global, the others
# by a lookup in the module's dictionary each time (``add`` runs for every event)
_MODBUS_TABLES: Final = {
    1: "coils",
    5: "coils",
    15: "coils",
    2: "discrete_inputs",
    3: "holding_registers",
    6: "holding_registers",
    16: "holding_registers",
    22: "holding_registers",
    23: "holding_registers",
    4: "input_registers",
    24: "fifo",
    20: "file",
    21: "file",
}


# what ``Rollups.add`` answers when the event closed no interval (nearly always): one list for
# all of them, not a new empty one per event; read by its callers, never added to
_NONE_CLOSED: Final[list[dict]] = []

# (block of addresses, function code, unit) packed in an int -> the object's name: a plant
# polls a few blocks over and over, so the name is made once (bounded all the same)
_MODBUS_NAMES: Final[dict[int, str]] = {}
_MAX_MODBUS_NAMES: Final = 4096


def _modbus_object(ev: dict) -> str:
    unit = ev.get("modbus.unit_id")
    fc = ev.get("modbus.function_code", -1)
    table = _MODBUS_TABLES.get(fc)  # type: ignore[arg-type]
    if table is None:
        return "" if unit is None else f"unit {unit}"
    address = ev.get("modbus.address")
    if address is None:
        address = ev.get("modbus.write_address", ev.get("modbus.fifo_address"))
    if type(address) is not int:
        return f"unit {unit} {table}"
    if type(unit) is int and type(fc) is int and 0 <= unit < 65536 and 0 <= address < 1 << 32:
        packed = (address // MODBUS_BLOCK) << 24 | fc << 16 | unit
        name = _MODBUS_NAMES.get(packed)
        if name is None:
            if len(_MODBUS_NAMES) >= _MAX_MODBUS_NAMES:
                _MODBUS_NAMES.clear()
            name = _MODBUS_NAMES[packed] = _modbus_name(unit, table, address)
        return name
    return _modbus_name(unit, table, address)


def _modbus_name(unit: object, table: str, address: int) -> str:
    low = address - address % MODBUS_BLOCK
    return f"unit {unit} {table} {low}-{low + MODBUS_BLOCK - 1}"


def _s7_object(ev: dict) -> str:
    items = ev.get("s7comm.items")
    if items and type(items) is list:
        names = set()
        for item in items:
            if type(item) is dict:
                area = item.get("area_name")
                if area == "DB":
                    names.add(f"DB{item.get('db')}")
                elif area is not None:
                    names.add(str(area))
        return "+".join(sorted(names))
    block = ev.get("s7comm.block.type")
    if block is not None:
        number = ev.get("s7comm.block.number")
        return f"{block}{number}" if number is not None else str(block)
    szl = ev.get("s7comm.szl.id")
    if type(szl) is int:
        return f"SZL 0x{szl:04X}"
    return ""


def _opcua_object(ev: dict) -> str:
    nodes = ev.get("opcua.node_ids") or ev.get("opcua.method_ids") or ev.get("opcua.object_ids")
    if not nodes or type(nodes) is not list:
        return ""
    if len(nodes) == 1:
        return str(nodes[0])
    distinct = sorted({str(n) for n in nodes})
    if len(distinct) == 1:
        return distinct[0]
    digest = blake2b("\n".join(distinct).encode(), digest_size=3).hexdigest()
    return f"{distinct[0]} +{len(distinct) - 1} ({digest})"


def _enip_object(ev: dict) -> str:
    """A tag without its element index (``Counter``), else the CIP object (``class 0x8e
    instance 1``), else the implicit I/O connection."""
    tag = ev.get("cip.tag")
    if type(tag) is str and tag:
        return tag.split("[", 1)[0]
    klass = ev.get("cip.class")
    if type(klass) is int:
        instance = ev.get("cip.instance")
        name = f"class 0x{klass:02x}"
        return f"{name} instance {instance}" if type(instance) is int else name
    connection = ev.get("enip.io.connection_id")
    if type(connection) is int:
        return f"io connection 0x{connection:08x}"
    return ""


IEC104_BLOCK = 100  # information object addresses per object: 6000-6099, ...


def _dnp3_object(ev: dict) -> str:
    outstation = ev.get("dnp3.outstation")
    if outstation is None:
        return ""
    types = ev.get("dnp3.object_types")
    if not types or type(types) is not list:
        return f"outstation {outstation}"
    shown = " ".join(str(t) for t in types[:4]) + (" ..." if len(types) > 4 else "")
    return f"outstation {outstation} {shown}"


def _iec104_object(ev: dict) -> str:
    ca = ev.get("iec104.common_address")
    if ca is None:
        return ""  # U format: the connection itself
    ioas = ev.get("iec104.ioa")
    if not ioas or type(ioas) is not list or type(ioas[0]) is not int:
        return f"ca {ca}"
    low = ioas[0] - ioas[0] % IEC104_BLOCK
    return f"ca {ca} ioa {low}-{low + IEC104_BLOCK - 1}"


#: protocol -> the object an event touched, at the rollup grain
OBJECT_OF: Final[dict[str, Callable[[dict], str]]] = {
    "modbus": _modbus_object,
    "s7comm": _s7_object,
    "opcua": _opcua_object,
    "enip": _enip_object,
    "dnp3": _dnp3_object,
    "iec104": _iec104_object,
}
#: protocol -> where its writes carry the values written (each protocol's fields.py)
WRITTEN = written_values()


def _written_values(ev: dict, where: WrittenValues) -> list[int | float]:
    """The numbers a write event carries (Modbus register/coil values, S7 item values, OPC UA
    Write values, DNP3 analog output block values, IEC 104 set point and command values,
    CIP tag values), for the rollup's min/max written. Ints stay ints (``int | float``, not
    ``float``: the compiled build would turn them into floats and the documents would say so)."""
    values = ev.get(where.field)
    if type(values) is not list:
        return []
    key = where.key
    if key is None:
        return [v for v in values if type(v) is int or type(v) is float]
    out: list[int | float] = []
    for item in values:
        if type(item) is dict:
            v = item.get(key)
            if type(v) is int or type(v) is float:
                out.append(v)
    return out


class _Series:
    __slots__ = (
        "key",
        "operation",
        "transactions",
        "requests",
        "responses",
        "success",
        "exception",
        "failure",
        "first",
        "last",
        "rt_n",
        "rt_sum",
        "rt_min",
        "rt_max",
        "nbytes",
        "wmin",
        "wmax",
        "written",
    )

    def __init__(self, key: tuple, operation: object, ts: float) -> None:
        self.key = key
        self.operation = operation
        # where this series' events carry the values they write (None: it does not write);
        # every event of a series has its protocol, key[3]
        written = WRITTEN.get(key[3])
        self.written = written if written is not None and operation in written.operations else None
        self.transactions = 0
        self.requests = 0
        self.responses = 0
        self.success = 0
        self.exception = 0
        self.failure = 0
        self.first = ts
        self.last = ts
        self.rt_n = 0
        self.rt_sum = 0
        self.rt_min = 0
        self.rt_max = 0
        self.nbytes = 0
        self.wmin: int | float | None = None
        self.wmax: int | float | None = None


class Rollups:
    """Aggregates events into rollup documents; see the module docstring."""

    def __init__(
        self,
        ctx: Context,
        interval_s: float = DEFAULT_INTERVAL_S,
        max_series: int = DEFAULT_MAX_SERIES,
        grace_s: float | None = None,
    ) -> None:
        if not interval_s > 0:
            raise ValueError(f"rollup interval must be positive, not {interval_s!r}")
        self.ctx = ctx
        self.interval_s = float(interval_s)
        self.grace_s = min(10.0, self.interval_s / 4) if grace_s is None else grace_s
        self.max_series = max_series
        # interval index (start / interval_s) -> series key -> series
        self._open: dict[int, dict[tuple, _Series]] = {}
        self._close_at = math.inf  # the earliest time an open interval is due
        self._parts: dict[int, int] = {}  # interval index -> parts emitted already
        self._events = 0  # the hot counter, outside the dict: see ``stats``
        self._stats = {
            "rollups": 0,
            "series": 0,
            "late": 0,
            "folded": 0,
            "overflow": 0,
            "untimed": 0,
        }

    @property
    def stats(self) -> dict[str, int]:
        """The counters: events counted, rollups emitted, series opened, late events,
        series folded and overflowed, events without a time."""
        return {"events": self._events, **self._stats}

    # -- the per-event path ----------------------------------------------------------------

    def add(self, ev: dict) -> list[dict]:
        """Count one event; returns the rollups of intervals that this event's time closed
        (when none, one shared empty list: the caller reads it, never adds to it)."""
        ts = ev.get("@timestamp")
        if type(ts) is not float:  # the sensor's events carry a number; text from elsewhere
            ts = parse_timestamp(ts)
        if ts is None:
            self._stats["untimed"] += 1
            return _NONE_CLOSED
        self._events += 1
        out = self.advance(ts) if ts >= self._close_at else _NONE_CLOSED
        index = int(ts // self.interval_s)
        bucket = self._open.get(index)
        if bucket is None:
            bucket = self._open[index] = {}
            if index in self._parts:
                self._stats["late"] += 1
            due = (index + 1) * self.interval_s + self.grace_s
            if due < self._close_at:
                self._close_at = due
        proto = ev.get("network.protocol")
        action = ev.get("event.action")
        anomaly = action == "anomaly"
        if anomaly:
            function = ev.get("error.type") or "anomaly"
            obj = ""
        else:
            function = ev.get("ics.function") or action
            if proto == "modbus":  # the usual protocol: a direct call
                obj = _modbus_object(ev)
            else:
                object_of = OBJECT_OF.get(proto)  # type: ignore[arg-type]
                obj = object_of(ev) if object_of is not None else ""
        key = (
            ev.get("source.ip"),
            ev.get("destination.ip"),
            ev.get("destination.port"),
            proto,
            function,
            obj,
        )
        series = bucket.get(key)
        if series is None:
            series = self._new_series(
                bucket, key, "anomaly" if anomaly else ev.get("ics.operation"), ts
            )
        series.transactions += 1
        if ts < series.first:
            series.first = ts
        elif ts > series.last:
            series.last = ts
        nbytes = ev.get("network.bytes")
        if type(nbytes) is int:
            series.nbytes += nbytes
        if anomaly:
            series.failure += 1
            return out
        pairing = ev.get("ics.pairing")
        outcome = ev.get("event.outcome")
        if pairing == "paired":
            series.requests += 1
            series.responses += 1
        elif pairing == "request-only":
            series.requests += 1
        elif pairing == "response-only":
            series.responses += 1
        else:
            series.requests += 1
            if outcome != "unknown":
                series.responses += 1
        if outcome == "success":
            series.success += 1
        elif outcome == "failure":
            series.exception += 1
        else:
            series.failure += 1
        rt = ev.get("event.duration")
        if type(rt) is int:
            if series.rt_n == 0 or rt < series.rt_min:
                series.rt_min = rt
            if rt > series.rt_max:
                series.rt_max = rt
            series.rt_n += 1
            series.rt_sum += rt
        written = series.written
        if written is not None:
            for v in _written_values(ev, written):
                if series.wmin is None or v < series.wmin:
                    series.wmin = v
                if series.wmax is None or v > series.wmax:
                    series.wmax = v
        return out

    def _new_series(
        self, bucket: dict[tuple, _Series], key: tuple, operation: object, ts: float
    ) -> _Series:
        if len(bucket) >= self.max_series:
            # Too many series this interval (a scan): fold into the conversation's "*" series,
            # then into one per protocol.
            self._stats["folded"] += 1
            key = (key[0], key[1], key[2], key[3], "*", "*")
            operation = "*"
            if key not in bucket and len(bucket) >= self.max_series + self.max_series // 10:
                self._stats["overflow"] += 1
                key = ("*", "*", None, key[3], "*", "*")
            found = bucket.get(key)
            if found is not None:
                return found
        series = bucket[key] = _Series(key, operation, ts)
        self._stats["series"] += 1
        return series

    # -- emitting --------------------------------------------------------------------------

    def advance(self, now: float) -> list[dict]:
        """Time is ``now`` (an event's, or a live sensor's wall clock): emit what is due."""
        if now < self._close_at:
            return []
        out: list[dict] = []
        for old in sorted(self._open):
            if now >= (old + 1) * self.interval_s + self.grace_s:
                out += self._emit(old)
        return out

    def flush(self) -> list[dict]:
        """End of input: every open interval, as it is."""
        out: list[dict] = []
        for old in sorted(self._open):
            out += self._emit(old)
        return out

    def _emit(self, index: int) -> list[dict]:
        bucket = self._open.pop(index)
        self._close_at = (
            (min(self._open) + 1) * self.interval_s + self.grace_s if self._open else math.inf
        )
        part = self._parts.get(index, 0)
        self._parts[index] = part + 1
        if len(self._parts) > 10_000:  # remembered for late events; the oldest are forgotten
            for old in sorted(self._parts)[:5_000]:
                del self._parts[old]
        start = index * self.interval_s
        docs = [self._doc(start, part, s) for s in bucket.values()]
        self._stats["rollups"] += len(docs)
        return docs

    def _doc(self, start: float, part: int, s: _Series) -> dict:
        ctx = self.ctx
        client, server, port, proto, function, obj = s.key
        key_text = (
            f"{ctx.site}|{ctx.observer}|{client}|{server}|{port}|{proto}|{function}|{obj}|{start!r}"
        )
        if part:
            key_text += f"|{part}"
        doc: dict = {
            "@timestamp": start,
            "ecs.version": ECS_VERSION,
            "event.kind": "metric",
            "event.category": ["network"],
            "event.type": ["info"],
            "event.dataset": "icsmon.rollup",
            "event.action": "rollup",
            "event.module": "icsmon",
            "event.id": blake2b(key_text.encode(), digest_size=12).hexdigest(),
            "event.start": s.first,
            "event.end": s.last,
            "observer.name": ctx.observer,
            "observer.type": "sensor",
            "observer.product": "icsmon",
        }
        if ctx.site:
            doc["labels.site"] = ctx.site
        if ctx.organization:
            doc["organization.id"] = ctx.organization
        if client is not None:
            doc["source.ip"] = client
        if server is not None:
            doc["destination.ip"] = server
        if port is not None:
            doc["destination.port"] = port
        doc["network.transport"] = "tcp"
        if proto is not None:
            doc["network.protocol"] = proto
        doc["network.bytes"] = s.nbytes
        if s.operation is not None:
            doc["ics.operation"] = s.operation
        if function is not None:
            doc["ics.function"] = function
        doc["icsmon.rollup.object"] = obj
        doc["icsmon.rollup.interval_s"] = self.interval_s
        doc["icsmon.rollup.transactions"] = s.transactions
        doc["icsmon.rollup.requests"] = s.requests
        doc["icsmon.rollup.responses"] = s.responses
        doc["icsmon.rollup.success"] = s.success
        doc["icsmon.rollup.exception"] = s.exception
        doc["icsmon.rollup.failure"] = s.failure
        if s.rt_n:
            doc["icsmon.rollup.response_time.min"] = s.rt_min
            doc["icsmon.rollup.response_time.mean"] = s.rt_sum // s.rt_n
            doc["icsmon.rollup.response_time.max"] = s.rt_max
        if s.wmin is not None:
            doc["icsmon.rollup.written.min"] = s.wmin
            doc["icsmon.rollup.written.max"] = s.wmax
        return doc
