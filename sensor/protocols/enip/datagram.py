"""EtherNet/IP over UDP (the datagram side of ``sensor/protocols/base.py``):

- UDP 44818: encapsulation messages, one per datagram: ListIdentity broadcasts and their
  replies (each device answers from its own address, a flow of its own, so its identity
  reaches its own asset), ListServices, ListInterfaces. Decoded by the TCP parser, a
  datagram at a time; a datagram shorter than its header announces is an anomaly.
- UDP 2222: implicit (class 0/1) I/O, a sequenced address item and a connected data item
  per datagram, sent every RPI. Counted per connection, not decoded per packet: one
  ``implicit-io`` record per connection id every ``IO_REPORT_INTERVAL`` seconds of capture
  time and at the end of the flow, with packets, bytes, the sequence numbers seen, how many
  were missing or repeated, and the mean interval.
"""

from __future__ import annotations

from sensor.protocols.base import ParserLimits, Record, anomaly
from sensor.protocols.enip.anomalies import Anomaly
from sensor.protocols.enip.encap import HEADER_SIZE, CpfError, cpf_items, plausible
from sensor.protocols.enip.parser import Parser
from sensor.protocols.enip.records import NAME
from sensor.protocols.enip.tables import (
    CPF_CONNECTED_DATA,
    CPF_SEQUENCED_ADDRESS,
    LIST_COMMANDS,
)

IO_REPORT_INTERVAL = 60.0  # seconds of capture time between I/O records of one connection
_IO_TYPE = ["protocol", "info"]


class IoConnection:
    """What one implicit I/O connection sent since its last record."""

    __slots__ = ("connection_id", "sender", "first_ts", "last_ts", "packets", "bytes",
                 "first_sequence", "last_sequence", "lost", "repeated", "size")  # fmt: skip

    def __init__(self, connection_id: int, sender: str, ts: float, sequence: int) -> None:
        self.connection_id = connection_id
        self.sender = sender
        self.first_ts = ts
        self.last_ts = ts
        self.packets = 0
        self.bytes = 0
        self.first_sequence = sequence
        self.last_sequence = sequence - 1 & 0xFFFFFFFF
        self.lost = 0
        self.repeated = 0
        self.size = 0

    def add(self, ts: float, sequence: int, size: int) -> None:
        step = (sequence - self.last_sequence) & 0xFFFFFFFF
        if step == 0 or step >= 0x80000000:
            self.repeated += 1  # a duplicate or a late datagram: not a new value
        else:
            self.lost += step - 1
            self.last_sequence = sequence
        self.packets += 1
        self.bytes += size
        self.size = size
        self.last_ts = ts

    def record(self) -> Record:
        span = self.last_ts - self.first_ts
        rec: Record = {
            "ts": self.first_ts,
            "network.protocol": NAME,
            "event.action": "implicit-io",
            "event.type": list(_IO_TYPE),
            "event.outcome": "success",
            "ics.operation": "other",
            "ics.function": "implicit_io",
            "event.duration": int(round(span * 1e9)),
            "enip.io.connection_id": self.connection_id,
            "enip.io.sender": self.sender,
            "enip.io.packets": self.packets,
            "enip.io.bytes": self.bytes,
            "enip.io.data_size": self.size,
            "enip.io.first_sequence": self.first_sequence,
            "enip.io.last_sequence": self.last_sequence,
            "enip.io.lost": self.lost,
            "enip.io.repeated": self.repeated,
        }
        if self.packets > 1:
            rec["enip.io.mean_interval_us"] = int(round(span * 1e6 / (self.packets - 1)))
        return rec


def datagram_to_server(data: bytes) -> bool | None:
    """A list request (no body, status 0) travels to the server; anything else cannot tell."""
    if len(data) == HEADER_SIZE and plausible(data, 0):
        command = data[0] | data[1] << 8
        if command in LIST_COMMANDS and not any(data[8:12]):
            return True
    return None


class DatagramParser:
    """One UDP flow of EtherNet/IP: encapsulation messages or implicit I/O."""

    __slots__ = ("limits", "_stream", "_io", "_overflowed", "_bad_io")

    def __init__(self, limits: ParserLimits | None = None) -> None:
        self.limits = limits or ParserLimits()
        self._stream = Parser(self.limits)
        self._io: dict[int, IoConnection] = {}
        self._overflowed = False
        self._bad_io = False

    def datagram(self, to_server: bool, data: bytes, ts: float) -> list[Record]:
        if len(data) < HEADER_SIZE or not plausible(data, 0):  # I/O: an item count, not a command
            return self._implicit(to_server, data, ts)
        out = self._stream.feed(to_server, data, ts)
        d = 1 if to_server else 0
        left = self._stream._buf[d]
        if left:  # a datagram is whole: what its header announced never comes
            self._stream._buf[d] = b""
            out.append(anomaly(ts, NAME, Anomaly.TRUNCATED_PDU,
                               f"datagram ends {len(left)} bytes into an encapsulation message"))  # fmt: skip
        return out

    def _implicit(self, to_server: bool, data: bytes, ts: float) -> list[Record]:
        out: list[Record] = []
        try:
            items = cpf_items(data, 0)
        except CpfError as exc:
            return self._bad(ts, f"I/O datagram: {exc}")
        connection_id = sequence = -1
        size = 0
        for item_type, item in items:
            if item_type == CPF_SEQUENCED_ADDRESS and len(item) == 8:
                connection_id = int.from_bytes(item[0:4], "little")
                sequence = int.from_bytes(item[4:8], "little")
            elif item_type == CPF_CONNECTED_DATA:
                size = len(item)
        if connection_id < 0:
            return self._bad(ts, "I/O datagram without a sequenced address item")
        conn = self._io.get(connection_id)
        if conn is not None and ts - conn.first_ts >= IO_REPORT_INTERVAL:
            out.append(conn.record())
            conn = None
        if conn is None:
            if len(self._io) >= self.limits.max_pending and connection_id not in self._io:
                if not self._overflowed:
                    self._overflowed = True
                    out.append(anomaly(ts, NAME, Anomaly.TOO_MANY_PENDING,
                                       f"more than {self.limits.max_pending} I/O connections in one flow"))  # fmt: skip
                oldest = next(iter(self._io))
                out.append(self._io.pop(oldest).record())
            conn = IoConnection(connection_id, "client" if to_server else "server", ts, sequence)
            self._io[connection_id] = conn
        conn.add(ts, sequence, size)
        return out

    def _bad(self, ts: float, message: str) -> list[Record]:
        if self._bad_io:
            return []
        self._bad_io = True  # once per flow: a stream of them is one problem
        return [anomaly(ts, NAME, Anomaly.BAD_IO, message)]

    def close(self, ts: float) -> list[Record]:
        out = [conn.record() for conn in self._io.values()]
        self._io.clear()
        out += self._stream.close(ts)
        return out
