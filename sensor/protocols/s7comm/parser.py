"""The S7 connection parser: TPKT/COTP framing of both directions, dispatch of each COTP
data unit to the S7comm (0x32) or S7comm-plus (0x72) decoder, pairing of requests with their
answers, and the records (see the package docstring for what they carry)."""

from __future__ import annotations

import struct

from sensor.protocols.base import ParserLimits, Record, anomaly, event_type
from sensor.protocols.s7comm.anomalies import Anomaly
from sensor.protocols.s7comm.framing import (
    COTP_CC,
    COTP_CR,
    COTP_DC,
    COTP_DR,
    COTP_DT,
    COTP_ER,
    MAX_TPKT,
    Direction,
    connection_fields,
    plausible_tpkt,
    resync,
)
from sensor.protocols.s7comm.pdu import Pdu, decode_job_or_ack, decode_userdata
from sensor.protocols.s7comm.plus import (
    OPCODE_NOTIFICATION,
    OPCODE_REQUEST,
    PlusPdu,
    decode_plus,
)
from sensor.protocols.s7comm.records import cotp_record, plus_record, s7_record, with_conn
from sensor.protocols.s7comm.tables import ERROR_CLASSES, PROTO_PLUS, PROTO_S7, ROSCTR_NAMES

REQUEST_TIMEOUT = 30.0  # seconds of capture time before an unanswered request is reported


class Parser:
    """One S7 connection (ISO-on-TCP): framing, dispatch to the S7comm and S7comm-plus
    decoders, pairing, and the connection state records carry (COTP facts, uploads)."""

    def __init__(self, limits: ParserLimits | None = None) -> None:
        self.limits = limits or ParserLimits()
        self._dirs = {True: Direction(), False: Direction()}
        self._pending: dict[tuple[bool, int, int], Pdu] = {}  # (sent to server, kind, ref)
        self._plus_pending: dict[tuple[bool, int], PlusPdu] = {}
        self._conn: dict[str, object] = {}  # COTP facts carried on every record
        self._cr: tuple[float, bool, dict[str, object]] | None = None
        self._uploads: dict[int, dict[str, object]] = {}
        self._foreign = False  # a non-S7 payload was reported on this connection
        self._overflowed = False  # the pending-request cap was reported on this connection

    # -- stream interface -------------------------------------------------------------------

    def feed(self, to_server: bool, data: bytes, ts: float) -> list[Record]:
        out: list[Record] = []
        try:
            self._feed(to_server, data, ts, out)
        except Exception as exc:  # a decoding bug must not stop the sensor: report, resync
            d = self._dirs[to_server]
            d.reset()
            d.resync, d.lost = True, True
            out.append(self._anomaly(ts, Anomaly.S7_DECODE_ERROR, f"S7 decoder error: {exc!r}"))
        return out

    def gap(self, to_server: bool, ts: float, size: int) -> list[Record]:
        d = self._dirs[to_server]
        d.reset()
        d.resync, d.lost = True, True  # a gap is not malformed input: no anomaly for the skip
        d.gap_skipped = 0  # ... unless more is skipped than the rest of one PDU (see _feed)
        return []

    def close(self, ts: float) -> list[Record]:
        out: list[Record] = []
        for to_server, d in self._dirs.items():
            if (d.buf or d.cotp or d.plus) and not d.resync:
                out.append(
                    self._anomaly(
                        ts,
                        Anomaly.TRUNCATED_STREAM,
                        f"connection ended inside a PDU ({len(d.buf) + len(d.cotp) + len(d.plus)} bytes "
                        f"{'to server' if to_server else 'to client'} never completed)",
                    )
                )
            d.reset()
        if self._cr is not None:
            cr_ts, _, fields = self._cr
            out.append(cotp_record(self._conn, cr_ts, fields, None))
            self._cr = None
        for pdu in self._pending.values():
            out.append(self._record(pdu, None))
        self._pending.clear()
        for ppdu in self._plus_pending.values():
            out.append(plus_record(self._conn, ppdu, None))
        self._plus_pending.clear()
        return out

    # -- TPKT / COTP framing ----------------------------------------------------------------

    def _feed(self, to_server: bool, data: bytes, ts: float, out: list[Record]) -> None:
        d = self._dirs[to_server]
        buf = d.buf
        if buf or d.resync:
            buf += data
            src: bytes | bytearray = buf
        else:  # nothing buffered: frame straight from the segment, keep only what is left over
            src = data
        pos = 0
        limit = self.limits.max_buffer
        while True:
            if d.resync:
                start = pos
                pos = resync(src, pos)
                if d.gap_skipped is not None:
                    d.gap_skipped += (len(src) if pos < 0 else pos) - start
                    if d.gap_skipped > MAX_TPKT:
                        d.gap_skipped = None
                        out.append(
                            self._anomaly(
                                ts,
                                Anomaly.TPKT_BAD_HEADER,
                                f"more than {MAX_TPKT} bytes after a gap without a TPKT header: not S7 traffic",
                            )
                        )
                if pos < 0:  # not even a 0x03 left: nothing worth keeping
                    buf.clear()
                    return
                if plausible_tpkt(src, pos) is None:
                    break
                d.resync = d.lost = False
                d.gap_skipped = None
            avail = len(src) - pos
            if avail < 4:
                if avail and (src[pos] != 3 or (avail > 1 and src[pos + 1] != 0)):
                    self._lose(
                        d,
                        ts,
                        out,
                        Anomaly.TPKT_BAD_HEADER,
                        f"bytes {bytes(src[pos:]).hex()} do not start a TPKT header",
                    )
                    pos += 1
                    continue
                break
            if src[pos] != 3 or src[pos + 1] != 0:
                self._lose(
                    d,
                    ts,
                    out,
                    Anomaly.TPKT_BAD_HEADER,
                    f"bad TPKT header {bytes(src[pos : pos + 4]).hex()}",
                )
                pos += 1
                continue
            length = (src[pos + 2] << 8) | src[pos + 3]
            if length < 7:
                self._lose(
                    d,
                    ts,
                    out,
                    Anomaly.TPKT_BAD_HEADER,
                    f"TPKT length {length} below the 7-byte minimum",
                )
                pos += 1
                continue
            if avail < length:
                if length > limit:
                    self._lose(
                        d,
                        ts,
                        out,
                        Anomaly.BUFFER_OVERFLOW,
                        f"TPKT length {length} exceeds the buffer cap",
                    )
                    pos += 1
                    continue
                break
            tpdu = bytes(src[pos + 4 : pos + length])
            pos += length
            self._cotp(d, to_server, tpdu, ts, out)
        if src is buf:
            if pos:
                del buf[:pos]
        elif pos < len(src):
            buf += src[pos:]
        if len(buf) > limit:
            self._lose(
                d,
                ts,
                out,
                Anomaly.BUFFER_OVERFLOW,
                f"more than {limit} bytes buffered without a complete TPKT",
            )
            buf.clear()

    def _lose(
        self, d: Direction, ts: float, out: list[Record], error_type: Anomaly, message: str
    ) -> None:
        """Malformed framing: report once per episode, drop partial PDUs, scan for a header."""
        if not d.lost:
            out.append(self._anomaly(ts, error_type, message))
        d.cotp.clear()
        d.plus.clear()
        d.resync = d.lost = True

    def _cotp(
        self, d: Direction, to_server: bool, tpdu: bytes, ts: float, out: list[Record]
    ) -> None:
        li = tpdu[0]
        if li + 1 > len(tpdu) or li < 2:
            self._lose(
                d,
                ts,
                out,
                Anomaly.COTP_BAD_HEADER,
                f"COTP length indicator {li} does not fit the TPKT",
            )
            return
        code = tpdu[1] & 0xF0
        if code == COTP_DT:
            payload = tpdu[li + 1 :]
            if not tpdu[2] & 0x80:  # more COTP segments follow
                if len(d.cotp) + len(payload) > self.limits.max_buffer:
                    self._lose(
                        d, ts, out, Anomaly.BUFFER_OVERFLOW, "COTP segments exceed the buffer cap"
                    )
                    return
                d.cotp += payload
                return
            if d.cotp:
                payload = bytes(d.cotp) + payload
                d.cotp.clear()
            if payload:  # an empty DT is a keep-alive
                self._dispatch(d, to_server, payload, ts, out)
        elif code in (COTP_CR, COTP_CC):
            self._cotp_connect(to_server, code, tpdu, li, ts, out)
        elif code == COTP_DR:
            out.append(with_conn(self._conn, {
                "ts": ts, "network.protocol": PROTO_S7, "event.action": "cotp-disconnect",
                "event.type": event_type("session"), "event.outcome": "success", "ics.operation": "session",
                "ics.function": "cotp_disconnect",
                "s7comm.cotp.reason": tpdu[6] if len(tpdu) > 6 else None,
                "s7comm.initiator": "client" if to_server else "server",
            }))  # fmt: skip
        elif code == COTP_DC:
            return
        elif code == COTP_ER:
            out.append(
                self._anomaly(ts, Anomaly.COTP_ERROR, "COTP error TPDU (the peer rejected a TPDU)")
            )
        else:
            self._lose(
                d,
                ts,
                out,
                Anomaly.COTP_UNKNOWN_TYPE,
                f"COTP TPDU type 0x{tpdu[1]:02x} is not used by ISO-on-TCP class 0",
            )

    def _cotp_connect(
        self, to_server: bool, code: int, tpdu: bytes, li: int, ts: float, out: list[Record]
    ) -> None:
        fields, overrun = connection_fields(tpdu, li)
        if overrun:
            out.append(
                self._anomaly(ts, Anomaly.COTP_BAD_HEADER, "COTP parameter runs past the header")
            )
        if code == COTP_CR:
            if self._cr is not None:  # a repeated CR: report the first one unanswered
                out.append(cotp_record(self._conn, self._cr[0], self._cr[2], None))
            self._cr = (ts, to_server, fields)
            self._conn.update({k: v for k, v in fields.items() if k != "s7comm.cotp.tpdu_size"})
            return
        # CC: the confirm echoes the TSAPs; its TPDU size is the one in force.
        if self._cr is not None and self._cr[1] != to_server:
            cr_ts, _, cr_fields = self._cr
            self._cr = None
            merged = dict(cr_fields)
            if "s7comm.cotp.tpdu_size" in fields:
                merged["s7comm.cotp.tpdu_size"] = fields["s7comm.cotp.tpdu_size"]
            self._conn.update(merged)
            out.append(cotp_record(self._conn, cr_ts, merged, ts))
        else:
            if not self._conn:
                self._conn.update(fields)
            out.append(cotp_record(self._conn, ts, fields, ts, request_seen=False))

    def _overflow(self, ts: float, out: list[Record], protocol: str) -> None:
        """Too many unanswered requests (one-sided mirror, or a flood): said once per connection;
        the oldest requests still become records, with an unknown outcome."""
        if not self._overflowed:
            self._overflowed = True
            out.append(
                self._anomaly(
                    ts,
                    Anomaly.TOO_MANY_PENDING,
                    f"more than {self.limits.max_pending} unanswered requests: the oldest are reported without their answer",
                    protocol,
                )
            )

    def _anomaly(
        self, ts: float, error_type: Anomaly, message: str, protocol: str = PROTO_S7
    ) -> Record:
        return with_conn(self._conn, anomaly(ts, protocol, error_type, message))

    # -- S7 PDUs ----------------------------------------------------------------------------

    def _dispatch(
        self, d: Direction, to_server: bool, payload: bytes, ts: float, out: list[Record]
    ) -> None:
        pid = payload[0]
        if pid == 0x32:
            if d.plus:  # an S7comm PDU cannot sit inside an S7comm-plus message
                out.append(
                    self._anomaly(
                        ts, Anomaly.S7PLUS_BAD_FRAGMENT, "S7comm-plus message cut short", PROTO_PLUS
                    )
                )
                d.plus.clear()
            self._s7(to_server, payload, ts, out)
        elif pid == 0x72:
            self._plus_fragment(d, to_server, payload, ts, out)
        elif not self._foreign:  # e.g. MMS (IEC 61850/ICCP) also runs on ISO-on-TCP port 102
            self._foreign = True
            out.append(
                self._anomaly(
                    ts,
                    Anomaly.S7_UNKNOWN_PROTOCOL,
                    f"COTP data with protocol id 0x{pid:02x}, not S7comm (0x32) or S7comm-plus (0x72); such PDUs on this connection are skipped",
                )
            )

    def _s7(self, to_server: bool, p: bytes, ts: float, out: list[Record]) -> None:
        if len(p) < 10:
            out.append(
                self._anomaly(
                    ts,
                    Anomaly.S7_SHORT_PDU,
                    f"S7comm PDU of {len(p)} bytes is shorter than its header",
                )
            )
            return
        rosctr = p[1]
        if rosctr not in ROSCTR_NAMES:
            out.append(
                self._anomaly(
                    ts,
                    Anomaly.S7_UNKNOWN_ROSCTR,
                    f"S7comm ROSCTR {rosctr} is not job/ack/ack_data/userdata",
                )
            )
            return
        pdu_ref, parlg, datlg = struct.unpack_from(">HHH", p, 4)
        hlen = 12 if rosctr in (2, 3) else 10
        if len(p) < hlen or hlen + parlg + datlg > len(p):
            out.append(
                self._anomaly(
                    ts,
                    Anomaly.S7_BAD_LENGTH,
                    f"S7comm header announces {hlen + parlg + datlg} bytes, PDU has {len(p)}",
                )
            )
            return
        params = p[hlen : hlen + parlg]
        data = p[hlen + parlg : hlen + parlg + datlg]
        fields: dict[str, object] = {}
        pdu = Pdu(ts, to_server, rosctr, pdu_ref, fields)
        if hlen == 12:
            pdu.fields["s7comm.error_class"] = p[10]
            pdu.fields["s7comm.error_code"] = p[11]
            if p[10] or p[11]:
                pdu.fields["s7comm.error_name"] = ERROR_CLASSES.get(p[10], "unknown")
                pdu.failed = True
        try:
            if rosctr == 7:
                decode_userdata(pdu, params, data, self.limits.max_items)
            else:
                decode_job_or_ack(pdu, params, data, self.limits.max_items, self._uploads)
        except (IndexError, struct.error, ValueError) as exc:
            out.append(
                self._anomaly(
                    ts, Anomaly.S7_BAD_PARAMETER, f"S7comm parameters do not parse ({exc})"
                )
            )
            pdu.fields["s7comm.malformed"] = True
        self._pair(pdu, out)

    def _pair(self, pdu: Pdu, out: list[Record]) -> None:
        if pdu.rosctr == 1 or (pdu.rosctr == 7 and pdu.userdata_type in (4, 7)):
            key = (pdu.to_server, pdu.rosctr, pdu.pdu_ref)
            old = self._pending.pop(key, None)
            if old is not None:  # reference reused before an answer: the old job went unanswered
                out.append(self._record(old, None))
            pending = self._pending
            if len(pending) >= self.limits.max_pending:
                out.append(self._record(pending.pop(next(iter(pending))), None))
                self._overflow(pdu.ts, out, PROTO_S7)
            while pending and pdu.ts - pending[next(iter(pending))].ts > REQUEST_TIMEOUT:
                out.append(self._record(pending.pop(next(iter(pending))), None))
            pending[key] = pdu
            return
        if pdu.rosctr in (2, 3):
            req = self._pending.pop((not pdu.to_server, 1, pdu.pdu_ref), None)
        elif pdu.userdata_type in (8, 11):
            req = self._pending.pop((not pdu.to_server, 7, pdu.pdu_ref), None)
        else:  # push: a notification with no request
            out.append(self._record(pdu, None, push=True))
            return
        if req is None:
            out.append(self._record(pdu, None))
        else:
            out.append(self._record(req, pdu))

    # -- S7comm-plus ------------------------------------------------------------------------

    def _plus_fragment(
        self, d: Direction, to_server: bool, p: bytes, ts: float, out: list[Record]
    ) -> None:
        if len(p) < 4:
            out.append(
                self._anomaly(
                    ts, Anomaly.S7PLUS_SHORT_PDU, f"S7comm-plus PDU of {len(p)} bytes", PROTO_PLUS
                )
            )
            return
        version, dlen = p[1], (p[2] << 8) | p[3]
        if 4 + dlen > len(p):
            d.plus.clear()
            out.append(
                self._anomaly(
                    ts,
                    Anomaly.S7PLUS_SHORT_PDU,
                    f"S7comm-plus header announces {dlen} data bytes, {len(p) - 4} present",
                    PROTO_PLUS,
                )
            )
            return
        chunk = p[4 : 4 + dlen]
        trailer = p[4 + dlen :]
        if not d.plus:
            d.plus_version, d.plus_fragments = version, 0
        d.plus_fragments += 1
        if len(trailer) >= 4 and trailer[0] == 0x72 and trailer[2:4] == b"\x00\x00":
            body = bytes(d.plus) + chunk if d.plus else chunk
            d.plus.clear()
            self._plus(to_server, d.plus_version, body, ts, out, d.plus_fragments)
        elif not trailer:  # more fragments follow
            if len(d.plus) + len(chunk) > self.limits.max_buffer:
                d.plus.clear()
                out.append(
                    self._anomaly(
                        ts,
                        Anomaly.BUFFER_OVERFLOW,
                        "S7comm-plus fragments exceed the buffer cap",
                        PROTO_PLUS,
                    )
                )
                return
            d.plus += chunk
        elif dlen == 0 or version in (0xFE, 0xFF):  # keep-alive style PDUs carry no transaction
            return
        else:
            d.plus.clear()
            out.append(
                self._anomaly(
                    ts,
                    Anomaly.S7PLUS_BAD_FRAGMENT,
                    f"S7comm-plus PDU has {len(trailer)} unexpected bytes after its data",
                    PROTO_PLUS,
                )
            )

    def _plus(
        self,
        to_server: bool,
        version: int,
        body: bytes,
        ts: float,
        out: list[Record],
        fragments: int = 1,
    ) -> None:
        decoded = decode_plus(to_server, version, body, ts, fragments)
        if decoded is None:
            return
        if isinstance(decoded, tuple):
            out.append(self._anomaly(ts, decoded[0], decoded[1], PROTO_PLUS))
            return
        pdu = decoded
        if pdu.opcode == OPCODE_NOTIFICATION:
            out.append(plus_record(self._conn, pdu, None))
            return
        seq = pdu.seq
        if pdu.opcode == OPCODE_REQUEST:
            key = (to_server, seq)
            pending = self._plus_pending
            old = pending.pop(key, None)
            if old is not None:
                out.append(plus_record(self._conn, old, None))
            if len(pending) >= self.limits.max_pending:
                out.append(plus_record(self._conn, pending.pop(next(iter(pending))), None))
                self._overflow(ts, out, PROTO_PLUS)
            while pending and ts - pending[next(iter(pending))].ts > REQUEST_TIMEOUT:
                out.append(plus_record(self._conn, pending.pop(next(iter(pending))), None))
            pending[key] = pdu
            return
        req = self._plus_pending.pop((not to_server, seq), None)
        if req is not None and req.function_code != pdu.function_code:
            # same sequence, other function: not its answer
            self._plus_pending[(not to_server, seq)] = req
            req = None
        if req is not None:
            out.append(plus_record(self._conn, req, pdu))
        else:
            out.append(plus_record(self._conn, pdu, None))

    def _record(self, req: Pdu, resp: Pdu | None, push: bool = False) -> Record:
        return s7_record(self._conn, self._uploads, req, resp, push)
