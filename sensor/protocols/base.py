"""The contract between the flow layer and the protocol dissectors.

A dissector (one package per protocol in this package: ``modbus/``, ``s7comm/``, ``opcua/``,
split by the protocol's layers) exposes from its ``__init__``:

- ``NAME``: the protocol name as in ``network.protocol`` (``modbus``, ``s7comm``, ``opcua``);
- ``PORTS``: the TCP server ports it owns by default;
- ``probe(data: bytes) -> bool``: does a stream that starts (or resumes) with ``data`` look
  like this protocol? Used for non-standard ports; must be cheap and never raise;
- ``Parser``: one instance per TCP connection, fed the reassembled bytes of each direction;
- ``Anomaly``: its anomaly codes, a closed enum (``sensor.protocols.schema.ProtocolAnomaly``).

A protocol that also runs over UDP (DNP3, EtherNet/IP) adds the datagram side:

- ``UDP_PORTS``: the UDP server ports it owns by default (a module without it is TCP only);
- ``DatagramParser``: one instance per UDP flow (client address and port, server address and
  port), fed each datagram's payload whole (see ``DatagramParser`` below). It may be the
  same class as ``Parser`` when the protocol frames itself the same way on both;
- ``probe_datagram(data: bytes) -> bool`` (optional): ``probe`` for the first datagram of a
  UDP flow on a port no module owns, for the protocols listed in the engine's heuristics;
- ``datagram_to_server(data: bytes) -> bool | None`` (optional): which way a datagram
  travels, read from the protocol itself (DNP3's DIR bit: master to outstation). Asked for
  the first datagram of a flow only when the ports cannot tell (both ends on the protocol's
  port, as DNP3 masters and outstations often are on 20000); ``None``: the first sender is
  taken as the client, as for any other UDP flow.

UDP flows live in the same flow table as TCP connections (the key tells them apart), are
ended by the idle timeout, the flow cap and the end of input, and their events carry
``network.transport: udp``.

Parsers are bytes in, plain data out: no I/O, no globals, no exception escapes ``feed``.
Each call returns a list of *records*: flat dicts keyed by dotted ECS names, which the flow
layer completes into events (adds ``@timestamp``, ``source.*``, ``destination.*``,
``network.*``, ``observer.*``, ids). A record carries:

- ``ts``: float epoch seconds of the transaction (the request's time; the response's when
  no request was seen). Removed by the flow layer once ``@timestamp`` is set.
- ``network.protocol``: the protocol name (a module may report a sub-protocol, e.g.
  ``s7comm-plus`` from the S7 module).
- ``event.action``: kebab-case name of what happened (``read-holding-registers``,
  ``plc-stop``, ``write``), ``kebab(function name)`` below; ``anomaly`` for malformed input.
- ``event.type``: list of ECS types, ``event_type(ics.operation)`` below: e.g.
  ``["protocol", "access"]`` for reads, ``["protocol", "change"]`` for writes;
  ``["protocol", "error"]`` for anomalies.
- ``event.outcome``: ``success`` / ``failure`` (exception, error code) / ``unknown`` (no
  response seen).
- ``event.duration``: response time in nanoseconds, when a request was paired.
- ``ics.operation``: one of ``read``, ``write``, ``program``, ``control``, ``diagnostic``,
  ``session``, ``other`` (the cross-protocol class of the operation, what rules and
  baselines reason about); ``ics.function``: the protocol's own function name.
- ``<protocol>.*``: the protocol fields, lowercase snake_case leaves, numbers as ints.
- ``ics.device.*`` (optional): identity of the *server* side as shown by the traffic
  (``vendor``, ``product``, ``model``, ``order_number``, ``firmware``, ``serial``, ...).
  The asset observer folds these into the server's asset record and the baseline watches
  them (``sensor.schema.device_fields``).

Every field a record carries is declared with its type in the package's ``fields.py``
(``FIELDS``): the Sigma field list, the Elasticsearch mapping, the identity fields and
docs/schema.md are derived from it, and a test holds every golden output to it.
- anomalies: ``event.action = "anomaly"``, ``error.type`` (a member of the protocol's
  ``Anomaly`` enum, such as ``mbap-bad-header``), ``error.message`` (one human sentence). A parser never raises:
  whatever it cannot read becomes an anomaly record and it resynchronises.

Memory: a parser buffers at most ``limits.max_buffer`` bytes per direction and keeps at
most ``limits.max_pending`` unanswered requests; beyond that it drops (oldest first) and
reports an anomaly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

Record = dict


@dataclass(frozen=True, slots=True)
class ParserLimits:
    max_buffer: int = 1 << 20  # bytes buffered per direction awaiting a complete PDU
    max_pending: int = 1024  # unanswered requests kept for pairing per connection
    max_items: int = 4096  # items/registers/values decoded per PDU before truncating


class DatagramParser(Protocol):
    """One per UDP flow. A datagram is a whole unit: nothing is buffered from one datagram
    to the next at this layer (a protocol that reassembles above it, such as DNP3's
    transport function, keeps its own bounded state). No ``gap``: a lost datagram is simply
    not seen; sequence numbers inside the protocol tell, when it has them."""

    def datagram(self, to_server: bool, data: bytes, ts: float) -> list[Record]: ...

    def close(self, ts: float) -> list[Record]:
        """The flow ended (idle, evicted, end of input): flush unanswered requests."""
        ...


class StreamParser(Protocol):
    """One per TCP connection; ``to_server`` says which direction the bytes travel."""

    def feed(self, to_server: bool, data: bytes, ts: float) -> list[Record]: ...

    def gap(self, to_server: bool, ts: float, size: int) -> list[Record]:
        """``size`` bytes of this direction were lost: drop partial PDUs, resynchronise."""
        ...

    def close(self, ts: float) -> list[Record]:
        """The connection ended (FIN/RST/idle): flush unanswered requests as events."""
        ...


def anomaly(ts: float, protocol: str, error_type: str, message: str, **fields: object) -> Record:
    """An anomaly record: malformed or unexpected input, counted and reported, never raised.
    ``error_type`` is a member of the protocol's closed ``Anomaly`` enum (a ``str``); the
    record keeps its plain text value."""
    rec: Record = {
        "ts": ts,
        "network.protocol": protocol,
        "event.action": "anomaly",
        "event.type": ["protocol", "error"],
        "event.outcome": "failure",
        "ics.operation": "other",
        "error.type": str(error_type),
        "error.message": message,
    }
    rec.update(fields)
    return rec


# ``ics.operation`` -> ``event.type`` of a transaction (anomalies are ``["protocol", "error"]``,
# a connection set-up may say ``start``): reads access, what changes a device changes, the
# rest informs.
OPERATIONS = ("read", "write", "program", "control", "diagnostic", "session", "other")
_EVENT_TYPES: dict[str, list[str]] = {
    "read": ["protocol", "access"],
    "write": ["protocol", "change"],
    "program": ["protocol", "change"],
    "control": ["protocol", "change"],
}
_INFO = ["protocol", "info"]


def event_type(operation: str) -> list[str]:
    """``event.type`` for an ``ics.operation`` (a new list: records are mutable)."""
    return list(_EVENT_TYPES.get(operation, _INFO))


def kebab(name: str) -> str:
    """``event.action`` from a protocol's function name, snake_case or CamelCase:
    ``read_holding_registers`` -> ``read-holding-registers``, ``CreateSession`` ->
    ``create-session``, ``TranslateBrowsePathsToNodeIds`` -> ``translate-browse-paths-to-node-ids``
    (a run of capitals is one word: ``GetHTTPStatus`` -> ``get-http-status``)."""
    out: list[str] = []
    n = len(name)
    for i, ch in enumerate(name):
        if ch == "_":
            out.append("-")
            continue
        if (
            ch.isupper()
            and i
            and name[i - 1] != "_"
            and (not name[i - 1].isupper() or (i + 1 < n and name[i + 1].islower()))
        ):
            out.append("-")
        out.append(ch.lower())
    return "".join(out)
