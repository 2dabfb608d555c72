"""The EtherNet/IP connection parser (TCP 44818): encapsulation framing of both directions,
decoding of each message's command data (CPF items, CIP, list replies), pairing of requests
with replies, and the records (see ``records``)."""

from __future__ import annotations

from sensor.protocols.base import ParserLimits, Record, anomaly
from sensor.protocols.enip.anomalies import Anomaly
from sensor.protocols.enip.cip import decode_request, decode_response
from sensor.protocols.enip.encap import (
    HEADER,
    HEADER_SIZE,
    CpfError,
    cpf_items,
    plausible,
    resync,
)
from sensor.protocols.enip.identity import IdentityError, list_identity_item, list_services_items
from sensor.protocols.enip.records import NAME, Message, build
from sensor.protocols.enip.tables import (
    COMMANDS,
    CPF_CONNECTED_ADDRESS,
    CPF_CONNECTED_DATA,
    CPF_LIST_IDENTITY,
    CPF_LIST_SERVICES,
    CPF_UNCONNECTED_DATA,
    NO_REPLY,
)

REQUEST_TIMEOUT = 30.0  # seconds of capture time before an unanswered request is reported
_SEND_RR_DATA = 0x006F
_SEND_UNIT_DATA = 0x0070
_REGISTER_SESSION = 0x0065
_LIST_IDENTITY = 0x0063
_LIST_SERVICES = 0x0004
_LIST_INTERFACES = 0x0064


class Parser:
    """One EtherNet/IP TCP connection."""

    __slots__ = ("limits", "_buf", "_resync", "_reported", "_gap_skipped", "_pending", "_t_o",
                 "_overflowed")  # fmt: skip

    def __init__(self, limits: ParserLimits | None = None) -> None:
        self.limits = limits or ParserLimits()
        self._buf = [b"", b""]  # index 1: to server, 0: to client
        self._resync = [False, False]  # skipping bytes that are not a header (an episode)
        self._reported = [False, False]  # a message or a framing anomaly was seen: later
        # garbage is a bad header, not "not EtherNet/IP"
        # bytes skipped since a gap (-1: not after a gap): up to one message may be the rest
        # of the lost one; more is not EtherNet/IP and is reported
        self._gap_skipped = [-1, -1]
        # unanswered requests: ("u", command, sender context) or ("c", connection id, sequence)
        self._pending: dict[tuple[str, int, bytes | int], Message] = {}
        self._t_o: dict[int, int] = {}  # T->O connection id -> O->T id (Forward Open replies)
        self._overflowed = False

    # -- stream interface -------------------------------------------------------------------

    def feed(self, to_server: bool, data: bytes, ts: float) -> list[Record]:
        out: list[Record] = []
        d = 1 if to_server else 0
        try:
            self._feed(d, data, ts, out)
        except Exception as exc:  # a decoder bug must not stop the sensor: report, resync
            self._buf[d] = b""
            self._resync[d] = True
            out.append(
                anomaly(ts, NAME, Anomaly.DECODE_ERROR, f"EtherNet/IP decoder error: {exc!r}")
            )
        return out

    def gap(self, to_server: bool, ts: float, size: int) -> list[Record]:
        d = 1 if to_server else 0
        self._buf[d] = b""
        self._resync[d] = True
        self._gap_skipped[d] = 0  # bytes lost, not malformed: no anomaly for the skip
        return []

    def close(self, ts: float) -> list[Record]:
        out: list[Record] = []
        for d in (1, 0):
            if self._buf[d] and not self._resync[d]:
                out.append(
                    anomaly(
                        ts,
                        NAME,
                        Anomaly.TRUNCATED_PDU,
                        f"connection ended inside an encapsulation message ({len(self._buf[d])} bytes "
                        f"{'to server' if d else 'to client'} never completed)",
                    )
                )
            self._buf[d] = b""
        for msg in self._pending.values():
            self._records(msg, None, out)
        self._pending.clear()
        return out

    # -- framing ----------------------------------------------------------------------------

    def _feed(self, d: int, data: bytes, ts: float, out: list[Record]) -> None:
        buf = self._buf[d] + data if self._buf[d] else data
        pos = 0
        n = len(buf)
        while n - pos >= HEADER_SIZE:
            if self._resync[d] or not plausible(buf, pos):
                start = pos
                if not plausible(buf, pos):
                    pos = resync(buf, pos)
                if pos > start:
                    self._skipped(d, buf, start, pos, ts, out)
                if n - pos < HEADER_SIZE:
                    break
                self._resync[d] = False
                self._gap_skipped[d] = -1
            length = buf[pos + 2] | buf[pos + 3] << 8
            end = pos + HEADER_SIZE + length
            if end > n:
                if HEADER_SIZE + length > self.limits.max_buffer:
                    out.append(
                        anomaly(
                            ts,
                            NAME,
                            Anomaly.BUFFER_OVERFLOW,
                            f"encapsulation length {length} exceeds the buffer cap",
                        )  # fmt: skip
                    )
                    self._resync[d] = True
                    pos += 1
                    continue
                break
            self._message(d == 1, buf, pos, end, ts, out)
            self._reported[d] = True  # later garbage is a bad header, not "not EtherNet/IP"
            pos = end
        self._buf[d] = buf[pos:] if pos < n else b""

    def _skipped(
        self, d: int, buf: bytes, start: int, pos: int, ts: float, out: list[Record]
    ) -> None:
        """Bytes that are not a header were skipped: one anomaly per episode; after a gap,
        only beyond what the rest of the lost message can be."""
        if self._gap_skipped[d] >= 0:
            self._gap_skipped[d] += pos - start
            if self._gap_skipped[d] > HEADER_SIZE + 0xFFFF:
                self._gap_skipped[d] = -1
                out.append(
                    anomaly(
                        ts,
                        NAME,
                        Anomaly.BAD_HEADER,
                        f"more than {HEADER_SIZE + 0xFFFF} bytes after a gap without an "
                        "encapsulation header: not EtherNet/IP traffic",
                    )  # fmt: skip
                )
            return
        if self._resync[d]:
            return  # this episode was reported
        self._resync[d] = True
        kind = Anomaly.BAD_HEADER if self._reported[d] else Anomaly.NOT_ENIP
        self._reported[d] = True
        command = buf[start] | buf[start + 1] << 8
        out.append(
            anomaly(
                ts,
                NAME,
                kind,
                f"bytes that are not an encapsulation header (command 0x{command:04x}); "
                f"skipped {pos - start} bytes",
                **{"enip.skipped_bytes": pos - start},
            )  # fmt: skip
        )

    # -- messages ---------------------------------------------------------------------------

    def _message(
        self, to_server: bool, buf: bytes, pos: int, end: int, ts: float, out: list[Record]
    ) -> None:
        command, _length, session, status, context, _options = HEADER.unpack_from(buf, pos)
        msg = Message(ts, command, session, status, context, to_server)
        body = buf[pos + HEADER_SIZE : end]
        if command not in COMMANDS:
            out.append(anomaly(ts, NAME, Anomaly.UNKNOWN_COMMAND,
                               f"unknown encapsulation command 0x{command:04x}",
                               **{"enip.command": command}))  # fmt: skip
            return
        try:
            if command in (_SEND_RR_DATA, _SEND_UNIT_DATA):
                if not self._cip_items(msg, body, ts, out):
                    return
            elif body and not (to_server and command != _REGISTER_SESSION):
                self._reply_body(msg, body, ts, out)
        except CpfError as exc:
            out.append(anomaly(ts, NAME, Anomaly.BAD_CPF, f"{COMMANDS[command]}: {exc}",
                               **{"enip.command": command}))  # fmt: skip
            return
        if to_server:
            self._request(msg, out)
        else:
            self._reply(msg, out)

    def _cip_items(self, msg: Message, body: bytes, ts: float, out: list[Record]) -> bool:
        """SendRRData / SendUnitData: interface handle, timeout, then address and data items."""
        if len(body) < 6:
            if msg.status and not body:  # an error reply may carry no data at all
                return True
            raise CpfError(f"{len(body)} bytes before the item list")
        items = cpf_items(body, 6)
        cip = b""
        for item_type, item in items:
            if item_type == CPF_CONNECTED_ADDRESS and len(item) >= 4:
                msg.connection_id = int.from_bytes(item[0:4], "little")
            elif item_type == CPF_CONNECTED_DATA:
                if len(item) < 2:
                    raise CpfError("connected data item without a sequence count")
                msg.sequence = item[0] | item[1] << 8
                cip = item[2:]
            elif item_type == CPF_UNCONNECTED_DATA:
                cip = item
        if msg.command == _SEND_UNIT_DATA and msg.connection_id < 0:
            raise CpfError("send unit data without a connected address item")
        if not cip:
            if msg.status:
                return True
            raise CpfError("no CIP data item")
        response = bool(cip[0] & 0x80)
        msg.cip = decode_response(cip) if response else decode_request(cip)
        if response == msg.to_server:
            # a CIP reply sent to the server (or a request from it): the originator is the
            # other side of this connection; pair it the way it travels
            msg.to_server = not response
        return True

    def _reply_body(self, msg: Message, body: bytes, ts: float, out: list[Record]) -> None:
        """Bodies of the commands without CIP: list replies, RegisterSession."""
        f = msg.fields
        command = msg.command
        if command == _REGISTER_SESSION:
            if len(body) >= 4:
                f["enip.protocol_version"] = body[0] | body[1] << 8
                f["enip.options_flags"] = body[2] | body[3] << 8
            return
        if command not in (_LIST_IDENTITY, _LIST_SERVICES, _LIST_INTERFACES, 0x0001):
            return
        items = cpf_items(body, 0)
        if command == _LIST_IDENTITY:
            for item_type, item in items:
                if item_type == CPF_LIST_IDENTITY:
                    try:
                        f.update(list_identity_item(item))
                    except IdentityError as exc:
                        out.append(
                            anomaly(ts, NAME, Anomaly.MALFORMED_REPLY, f"list identity: {exc}")
                        )
                    break
        elif command == _LIST_SERVICES:
            f["enip.services"] = list_services_items(
                [(t, i) for t, i in items if t == CPF_LIST_SERVICES]
            )
        else:
            f["enip.interface_count"] = len(items)

    # -- pairing ----------------------------------------------------------------------------

    @staticmethod
    def _key(msg: Message, connection_id: int) -> tuple[str, int, bytes | int]:
        if msg.sequence >= 0:
            return ("c", connection_id, msg.sequence)
        return ("u", msg.command, msg.context)

    def _request(self, msg: Message, out: list[Record]) -> None:
        if msg.command in NO_REPLY:
            self._records(msg, None, out)
            return
        pending = self._pending
        key = self._key(msg, msg.connection_id)
        old = pending.pop(key, None)
        if old is not None:  # the same key again: the first will not be answered
            self._records(old, None, out)
        if pending:
            first = next(iter(pending))
            if len(pending) >= self.limits.max_pending:
                if not self._overflowed:
                    self._overflowed = True
                    out.append(anomaly(msg.ts, NAME, Anomaly.TOO_MANY_PENDING,
                                       f"more than {self.limits.max_pending} unanswered requests"))  # fmt: skip
                self._records(pending.pop(first), None, out)
            elif msg.ts - pending[first].ts > REQUEST_TIMEOUT:
                self._records(pending.pop(first), None, out)
        pending[key] = msg

    def _reply(self, msg: Message, out: list[Record]) -> None:
        pending = self._pending
        req: Message | None = None
        if msg.sequence >= 0:
            o_t = self._t_o.get(msg.connection_id)
            if o_t is not None:
                req = pending.pop(("c", o_t, msg.sequence), None)
            if req is None:  # the Forward Open was not seen: pair by sequence count
                for key in pending:
                    if key[0] == "c" and key[2] == msg.sequence:
                        req = pending.pop(key)
                        if len(self._t_o) < self.limits.max_pending:
                            self._t_o[msg.connection_id] = key[1]
                        break
        else:
            req = pending.pop(("u", msg.command, msg.context), None)
        self._records(req, msg, out)

    def _records(self, req: Message | None, resp: Message | None, out: list[Record]) -> None:
        problems = build(req, resp, out)
        if problems:
            first = req if req is not None else resp
            assert first is not None
            out.append(
                anomaly(
                    first.ts,
                    NAME,
                    Anomaly.MALFORMED_CIP,
                    problems[0][:300],
                    **{"enip.command": first.command},
                )  # fmt: skip
            )
        if resp is not None and resp.cip is not None and not resp.status:
            # a Forward Open reply maps the target's connection id to the originator's
            for rec in out[-1:]:
                t_o = rec.get("cip.connection.t_o_id")
                o_t = rec.get("cip.connection.o_t_id")
                if (
                    rec.get("cip.service") in ("forward_open", "large_forward_open")
                    and isinstance(t_o, int)
                    and isinstance(o_t, int)
                    and len(self._t_o) < self.limits.max_pending
                ):
                    self._t_o[t_o] = o_t
