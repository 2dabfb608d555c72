"""The IEC 104 connection: APCI framing of both directions, send/receive sequence numbers,
U-format functions paired act/con, commands paired with their confirmation and termination,
and the records (see the package docstring for what they carry)."""

from __future__ import annotations

from sensor.protocols.base import ParserLimits, Record, anomaly, event_type, kebab
from sensor.protocols.facts import IEC104_NAME
from sensor.protocols.iec104.anomalies import Anomaly
from sensor.protocols.iec104.asdu import Asdu, Malformed, decode_asdu
from sensor.protocols.iec104.tables import (
    ACT,
    ACTCON,
    ACTTERM,
    CAUSES,
    DEACT,
    DEACTCON,
    NEGATIVE_CAUSES,
    OPERATION,
    TERMINATED,
    TYPES,
    U_FUNCTIONS,
)

NAME = IEC104_NAME
START = 0x68
MAX_APDU = 253  # the length octet counts the control field and the ASDU: 4 to 253
REQUEST_TIMEOUT = 30.0  # seconds of capture time a command waits for its confirmation
TERMINATION_WAIT = 30.0  # ... and a confirmed command for its termination
_U_ACT = {0x07: "startdt", 0x13: "stopdt", 0x43: "testfr"}
_U_CON = {0x0B: "startdt", 0x23: "stopdt", 0x83: "testfr"}


def type_name(type_id: int) -> tuple[str, str]:
    """(mnemonic, snake_case name) of a type identification."""
    spec = TYPES.get(type_id)
    if spec is None:
        return f"unknown_{type_id}", f"unknown_type_{type_id}"
    return spec[0], spec[1]


def plausible(buf: bytes, pos: int) -> bool:
    """An APCI at ``pos`` (6 octets available): start, length, a valid control field."""
    if buf[pos] != START:
        return False
    length = buf[pos + 1]
    c1 = buf[pos + 2]
    if not 4 <= length <= MAX_APDU:
        return False
    if not c1 & 0x01:  # I-format: carries an ASDU
        return length >= 10
    if c1 & 0x03 == 0x01:  # S-format
        return length == 4 and c1 == 0x01 and buf[pos + 3] == 0
    return length == 4 and c1 in U_FUNCTIONS and buf[pos + 3] == 0


def probe(data: bytes) -> bool:
    """A stream starting with one or more well-formed APDUs (for non-standard ports)."""
    pos = 0
    frames = 0
    while len(data) - pos >= 6:
        if not plausible(data, pos):
            return False
        pos += 2 + data[pos + 1]
        frames += 1
    return frames > 0 and pos == len(data)


class Parser:
    """One IEC 104 connection (TCP 2404)."""

    def __init__(self, limits: ParserLimits | None = None) -> None:
        self.limits = limits or ParserLimits()
        self._buf = [b"", b""]  # index 1: to server (the controlling station's APDUs)
        self._resync = [False, False]
        self._seen = [False, False]
        self._next_send = [-1, -1]  # next expected N(S) per direction; -1 before the first
        self._u_pending: dict[tuple[int, str], Record] = {}  # (sender, function)
        # (common address, type id, first IOA) -> (time, record): commands in progress
        self._commands: dict[tuple[int, int, int], tuple[float, Record]] = {}
        self._overflow_reported = False

    # -- stream interface ---------------------------------------------------------------

    def feed(self, to_server: bool, data: bytes, ts: float) -> list[Record]:
        d = 1 if to_server else 0
        out: list[Record] = []
        buf = self._buf[d] + data if self._buf[d] else data
        pos = 0
        n = len(buf)
        while n - pos >= 6:
            if not plausible(buf, pos):
                start = pos
                pos += 1
                while n - pos >= 6 and not plausible(buf, pos):
                    pos += 1
                if n - pos < 6:
                    i = buf.find(b"\x68", pos)
                    pos = i if i >= 0 else n
                self._report_skip(start, pos, d, ts, out)
                continue
            end = pos + 2 + buf[pos + 1]
            if end > n:
                break
            self._resync[d] = False
            self._seen[d] = True
            self._apdu(buf, pos, end, d, ts, out)
            pos = end
        rest = buf[pos:]
        if len(rest) > self.limits.max_buffer:
            out.append(
                anomaly(
                    ts,
                    NAME,
                    Anomaly.BUFFER_OVERFLOW,
                    f"{len(rest)} octets without an APDU; dropped",
                )
            )
            rest = b""
        self._buf[d] = rest
        if self._commands:
            self._expire(ts, out)
        return out

    def gap(self, to_server: bool, ts: float, size: int) -> list[Record]:
        d = 1 if to_server else 0
        self._buf[d] = b""
        self._resync[d] = False
        self._next_send[d] = -1  # the lost bytes may have held I-format APDUs
        return []

    def close(self, ts: float) -> list[Record]:
        out: list[Record] = []
        for _t, rec in self._commands.values():
            out.append(_finish_command(rec))
        self._commands.clear()
        for rec in self._u_pending.values():
            rec["event.outcome"] = "unknown"
            rec["ics.pairing"] = "request-only"
            out.append(rec)
        self._u_pending.clear()
        for d in (0, 1):
            if self._buf[d]:
                out.append(
                    anomaly(
                        ts,
                        NAME,
                        Anomaly.TRUNCATED_APDU,
                        f"connection ended inside an APDU ({len(self._buf[d])} octets left)",
                    )
                )
                self._buf[d] = b""
        return out

    def _report_skip(self, start: int, end: int, d: int, ts: float, out: list[Record]) -> None:
        if self._resync[d]:
            return
        self._resync[d] = True
        kind = Anomaly.BAD_APCI if self._seen[d] else Anomaly.NOT_IEC104
        out.append(
            anomaly(
                ts,
                NAME,
                kind,
                f"octets that are not an IEC 104 APCI; skipped {end - start}",
                **{
                    "iec104.skipped_bytes": end - start,
                    "iec104.direction": "request" if d else "response",
                },
            )
        )

    # -- APDUs ----------------------------------------------------------------------------

    def _apdu(self, buf: bytes, pos: int, end: int, d: int, ts: float, out: list[Record]) -> None:
        c1 = buf[pos + 2]
        if c1 & 0x01 == 0:  # I-format
            send = (c1 | buf[pos + 3] << 8) >> 1
            recv = (buf[pos + 4] | buf[pos + 5] << 8) >> 1
            self._sequence(send, d, ts, out)
            self._i_frame(buf[pos + 6 : end], send, recv, d, ts, out)
        elif c1 & 0x03 == 0x01:
            return  # S-format: acknowledges I-format APDUs, nothing else to report
        else:
            self._u_frame(c1, d, ts, out)

    def _sequence(self, send: int, d: int, ts: float, out: list[Record]) -> None:
        expected = self._next_send[d]
        self._next_send[d] = (send + 1) & 0x7FFF
        if expected < 0 or send == expected:
            return
        behind = (expected - send) & 0x7FFF
        if 0 < behind <= 64:  # at or before an APDU already seen: sent again
            kind, what = Anomaly.SEQUENCE_DUPLICATE, f"N(S) {send} again (next expected {expected})"
            self._next_send[d] = expected
        else:
            lost = (send - expected) & 0x7FFF
            kind, what = (
                Anomaly.SEQUENCE_GAP,
                f"N(S) {send} where {expected} was expected ({lost} missing)",
            )
        out.append(
            anomaly(
                ts,
                NAME,
                kind,
                what,
                **{
                    "iec104.send_sequence": send,
                    "iec104.expected_sequence": expected,
                    "iec104.direction": "request" if d else "response",
                },
            )
        )

    def _u_frame(self, c1: int, d: int, ts: float, out: list[Record]) -> None:
        if c1 in _U_ACT:
            function = _U_ACT[c1]
            old = self._u_pending.pop((d, function), None)
            if old is not None:
                old["event.outcome"] = "unknown"
                old["ics.pairing"] = "request-only"
                out.append(old)
            op = "diagnostic" if function == "testfr" else "session"
            self._u_pending[(d, function)] = {
                "ts": ts,
                "network.protocol": NAME,
                "iec104.frame": "U",
                "iec104.u_function": U_FUNCTIONS[c1],
                "iec104.initiator": "client" if d else "server",
                "ics.operation": op,
                "ics.function": function,
                "event.action": function,
                "event.type": event_type(op),
            }
            return
        function = _U_CON[c1]
        rec = self._u_pending.pop((1 - d, function), None)
        if rec is None:
            op = "diagnostic" if function == "testfr" else "session"
            rec = {
                "ts": ts,
                "network.protocol": NAME,
                "iec104.frame": "U",
                "iec104.u_function": U_FUNCTIONS[c1],
                "iec104.initiator": "server" if d else "client",
                "ics.operation": op,
                "ics.function": function,
                "event.action": function,
                "event.type": event_type(op),
                "ics.pairing": "response-only",
                "event.outcome": "success",
            }
        else:
            rec["iec104.response.u_function"] = U_FUNCTIONS[c1]
            rec["ics.pairing"] = "paired"
            rec["event.outcome"] = "success"
            duration = round((ts - rec["ts"]) * 1e9)
            rec["event.duration"] = duration if duration > 0 else 0
        out.append(rec)

    def _i_frame(
        self, data: bytes, send: int, recv: int, d: int, ts: float, out: list[Record]
    ) -> None:
        try:
            a = decode_asdu(data, self.limits.max_items)
        except Malformed as exc:
            out.append(
                anomaly(
                    ts,
                    NAME,
                    Anomaly.MALFORMED_ASDU,
                    str(exc),
                    **{"iec104.send_sequence": send, "iec104.receive_sequence": recv},
                )
            )
            return
        if a.error and a.type_id in TYPES:
            out.append(
                anomaly(
                    ts,
                    NAME,
                    Anomaly.MALFORMED_ASDU,
                    a.error,
                    **{
                        "iec104.type_id": a.type_id,
                        "iec104.common_address": a.common_address,
                        "iec104.send_sequence": send,
                    },
                )
            )
        cause = a.cause
        key = (a.common_address, a.type_id, a.ioas[0] if a.ioas else -1)
        if cause in (ACT, DEACT) or (cause == 5 and a.type_id == 102):
            self._activation(a, key, send, recv, d, ts, out)
            return
        answer = cause in (ACTCON, DEACTCON, ACTTERM) or cause in NEGATIVE_CAUSES
        if answer and self._answer(a, key, cause, ts, out):
            return
        if self._commands and (cause == 5 or 20 <= cause <= 41):
            self._answered_data(a, cause, ts, out)
        rec = _record(a, send, recv, d, ts)
        rec["ics.pairing"] = "response-only"
        if cause in NEGATIVE_CAUSES or (a.negative and cause in (ACTCON, DEACTCON)):
            rec["event.outcome"] = "failure"
        else:
            rec["event.outcome"] = "success"
        out.append(rec)

    def _activation(
        self,
        a: Asdu,
        key: tuple[int, int, int],
        send: int,
        recv: int,
        d: int,
        ts: float,
        out: list[Record],
    ) -> None:
        rec = _record(a, send, recv, d, ts)
        commands = self._commands
        old = commands.pop(key, None)
        if old is not None:
            out.append(_finish_command(old[1]))
        if len(commands) >= self.limits.max_pending:
            out.append(_finish_command(commands.pop(next(iter(commands)))[1]))
            if not self._overflow_reported:
                self._overflow_reported = True
                out.append(
                    anomaly(
                        ts,
                        NAME,
                        Anomaly.PENDING_OVERFLOW,
                        f"more than {self.limits.max_pending} commands awaiting confirmation",
                    )
                )
        commands[key] = (ts, rec)

    def _answer(
        self, a: Asdu, key: tuple[int, int, int], cause: int, ts: float, out: list[Record]
    ) -> bool:
        """Fold a confirmation or termination into its command; False when there is none."""
        entry = self._commands.get(key)
        if entry is None:
            return False
        rec = entry[1]
        if cause == ACTTERM:
            rec["iec104.terminated"] = True
            del self._commands[key]
            out.append(_finish_command(rec))
            return True
        if "iec104.confirmation" in rec:
            return False  # a second confirmation: reported on its own
        positive = not a.negative and cause not in NEGATIVE_CAUSES
        rec["iec104.confirmation"] = "positive" if positive else "negative"
        rec["iec104.response.cause"] = cause
        rec["iec104.response.cause_name"] = CAUSES.get(cause, f"cause_{cause}")
        duration = round((ts - rec["ts"]) * 1e9)
        rec["event.duration"] = duration if duration > 0 else 0
        rec["ics.pairing"] = "paired"
        if a.fields.get("iec104.time") and a.type_id == 103:
            rec["iec104.response.time"] = a.fields["iec104.time"]
        waits = (
            positive
            and cause == ACTCON
            and a.type_id in TERMINATED
            and not rec.get("iec104.select")
        )
        if waits:
            self._commands[key] = (ts, rec)  # the termination may follow
        else:
            del self._commands[key]
            out.append(_finish_command(rec))
        return True

    def _answered_data(self, a: Asdu, cause: int, ts: float, out: list[Record]) -> None:
        """Data sent for a read (cause request) or an interrogation in progress."""
        ca = a.common_address
        if cause == 5:
            key = (ca, 102, a.ioas[0] if a.ioas else -1)
            entry = self._commands.pop(key, None)
            if entry is not None:
                rec = entry[1]
                rec["iec104.confirmation"] = "positive"
                rec["iec104.response.type"] = type_name(a.type_id)[0]
                rec["iec104.response.values"] = a.values[:16]
                rec["ics.pairing"] = "paired"
                duration = round((ts - rec["ts"]) * 1e9)
                rec["event.duration"] = duration if duration > 0 else 0
                out.append(_finish_command(rec))
            return
        qualifier_type = 100 if cause <= 36 else 101
        for key in ((ca, qualifier_type, 0), (0xFFFF, qualifier_type, 0)):
            entry = self._commands.get(key)
            if entry is not None:
                rec = entry[1]
                rec["iec104.interrogation.asdus"] = (
                    int(rec.get("iec104.interrogation.asdus", 0)) + 1
                )
                rec["iec104.interrogation.objects"] = (
                    int(rec.get("iec104.interrogation.objects", 0)) + a.count
                )
                return

    def _expire(self, ts: float, out: list[Record]) -> None:
        """Commands that waited too long for a confirmation or termination."""
        commands = self._commands
        while commands:
            key = next(iter(commands))
            started, rec = commands[key]
            limit = TERMINATION_WAIT if "iec104.confirmation" in rec else REQUEST_TIMEOUT
            if ts - started <= limit:
                return
            del commands[key]
            out.append(_finish_command(rec))


def _record(a: Asdu, send: int, recv: int, d: int, ts: float) -> Record:
    mnemonic, name = type_name(a.type_id)
    op = OPERATION.get(a.type_id, "other")
    rec: Record = {
        "ts": ts,
        "network.protocol": NAME,
        "iec104.frame": "I",
        "iec104.send_sequence": send,
        "iec104.receive_sequence": recv,
        "iec104.type_id": a.type_id,
        "iec104.type": mnemonic,
        "iec104.cause": a.cause,
        "iec104.cause_name": CAUSES.get(a.cause, f"cause_{a.cause}"),
        "iec104.negative": a.negative,
        "iec104.test": a.test,
        "iec104.originator_address": a.originator,
        "iec104.common_address": a.common_address,
        "iec104.sequence": a.sq,
        "iec104.ioa_count": a.count,
        "iec104.initiator": "client" if d else "server",
        "ics.operation": op,
        "ics.function": name,
        "event.action": kebab(name),
        "event.type": event_type(op),
    }
    if a.common_address == 0xFFFF:
        rec["iec104.broadcast"] = True
    if a.ioas:
        rec["iec104.ioa"] = a.ioas
        rec["iec104.objects"] = a.objects
    if a.values:
        rec["iec104.values"] = a.values
    if a.truncated:
        rec["iec104.truncated"] = True
    if a.error and a.type_id not in TYPES:
        rec["iec104.decode_error"] = a.error
    rec.update(a.fields)
    return rec


def _finish_command(rec: Record) -> Record:
    confirmation = rec.get("iec104.confirmation")
    if confirmation is None:
        rec["event.outcome"] = "unknown"
        rec["ics.pairing"] = "request-only"
    else:
        rec["event.outcome"] = "success" if confirmation == "positive" else "failure"
    return rec
