"""The OPC UA connection parser: chunk framing of both directions (resynchronising on
garbage), HEL/ACK and secure channel headers, reassembly, the limits negotiated, whether a
protected channel's bodies can be read, and pairing of requests with their answers."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

from sensor.protocols.base import ParserLimits, Record, anomaly
from sensor.protocols.certificates import fields as certificate_fields
from sensor.protocols.opcua.anomalies import Anomaly
from sensor.protocols.opcua.encoding import DecodeError, Reader
from sensor.protocols.opcua.records import NAME, build_record
from sensor.protocols.opcua.services import decode_body
from sensor.protocols.opcua.tables import REQUEST_IDS, RESPONSE_IDS, SERVICE_FAULT_ID, status_name
from sensor.protocols.opcua.transport import (
    HDR,
    HEADER_RE,
    II,
    MAX_PARTIAL_MESSAGES,
    NONE_POLICY,
    SIGNATURE_SIZE,
    Direction,
    Message,
    Partial,
    header_ok,
    policy_name,
)


class Parser:
    """One OPC UA TCP connection (its fields: fields.py).

    ``on_message``, when given, is called with a summary of every transport chunk in wire
    order (message type, chunk type, and for completed messages the service type id,
    request handle and status code): what a tshark ``-T fields`` line shows per message.
    """

    def __init__(
        self,
        limits: ParserLimits | None = None,
        on_message: Callable[[dict], None] | None = None,
    ) -> None:
        self.limits = limits or ParserLimits()
        self.on_message = on_message
        self._dir = (Direction(), Direction())  # index 1: to server, 0: to client
        self._policy: str | None = None  # security policy URI of the current channel
        self._mode: str | None = None  # security mode when the OPN request showed it
        self._clear: bool | None = None  # MSG bodies verified readable (mid-stream or Sign)
        self._hello: dict | None = None  # HEL fields: client's limits
        self._ack: dict | None = None  # ACK fields: server's limits
        self._pending: OrderedDict[tuple, tuple[Message, dict]] = OrderedDict()
        self._pending_hel: list[Message] = []
        self._pending_opn: list[Message] = []

    # -- stream handling --------------------------------------------------------------

    def feed(self, to_server: bool, data: bytes, ts: float) -> list[Record]:
        out: list[Record] = []
        try:
            self._feed(1 if to_server else 0, data, ts, out)
        except Exception as exc:  # a bug must not stop the sensor: report it as an anomaly
            d = self._dir[1 if to_server else 0]
            d.buf = bytearray()
            d.need = d.discard = 0
            d.partial.clear()
            d.resync = True
            out.append(
                anomaly(
                    ts,
                    NAME,
                    Anomaly.INTERNAL_ERROR,
                    f"dissector error, stream resynchronised: {exc!r}",
                )
            )
        return out

    def _feed(self, di: int, data: bytes, ts: float, out: list[Record]) -> None:
        d = self._dir[di]
        if d.discard:  # inside a chunk too large to buffer: drop its bytes, stay aligned
            if len(data) <= d.discard:
                d.discard -= len(data)
                return
            data = data[d.discard :]
            d.discard = 0
        buf = d.buf
        buf += data
        n = len(buf)
        if n < d.need:  # still waiting for the rest of a chunk whose size is known
            return
        d.need = 0
        limit = self.limits.max_buffer
        pos = 0
        while n - pos >= 8:
            mtype, chunk, size = HDR(buf, pos)
            if not header_ok(mtype, chunk, size):
                pos = self._resynchronise(buf, pos, di)
                continue
            if size > limit:
                out.append(
                    anomaly(
                        ts,
                        NAME,
                        Anomaly.CHUNK_TOO_LARGE,
                        f"{mtype.decode()} chunk of {size} bytes exceeds the {limit}-byte buffer limit; skipped",
                        **{"opcua.message_type": mtype.decode(), "opcua.chunk_size": size},
                    )
                )
                take = min(size, n - pos)
                pos += take
                d.discard = size - take
                continue
            end = pos + size
            if end > n:
                d.need = size  # the buffer will start at this header
                break
            if d.resync and d.skipped:
                self._report_skipped(di, ts, out)
            d.resync = False
            self._chunk(di, mtype, chunk, bytes(buf[pos:end]), ts, out)
            pos = end
        del buf[:pos]
        if len(buf) > limit + 8:  # cannot happen by construction; a last line of defence
            out.append(
                anomaly(
                    ts,
                    NAME,
                    Anomaly.BUFFER_OVERFLOW,
                    f"{len(buf)} bytes without a complete chunk; dropped",
                )
            )
            d.buf = bytearray()
            d.need = 0
            d.resync = True

    def _resynchronise(self, buf: bytearray, pos: int, di: int) -> int:
        """Skip to the next plausible chunk header; the skipped bytes are reported once per
        episode, when a header is found again (or at close)."""
        d = self._dir[di]
        d.resync = True
        start = pos
        n = len(buf)
        limit = self.limits.max_buffer
        search = HEADER_RE.search
        pos += 1
        while True:
            m = search(buf, pos)
            if m is None:
                pos = max(pos, n - 7)  # keep a tail that may start a header
                break
            idx = m.start()
            mtype, chunk, size = HDR(buf, idx)
            if header_ok(mtype, chunk, size) and size <= limit:
                pos = idx
                break
            pos = idx + 1
        d.skipped += pos - start
        return pos

    def _report_skipped(self, di: int, ts: float, out: list[Record]) -> None:
        d = self._dir[di]
        out.append(
            anomaly(
                ts,
                NAME,
                Anomaly.BAD_HEADER,
                f"skipped {d.skipped} bytes that are not a UA TCP message",
                **{
                    "opcua.skipped_bytes": d.skipped,
                    "opcua.direction": "request" if di else "response",
                },
            )
        )
        d.skipped = 0

    def gap(self, to_server: bool, ts: float, size: int) -> list[Record]:
        di = 1 if to_server else 0
        d = self._dir[di]
        out: list[Record] = []
        if d.partial or d.buf:
            out.append(
                anomaly(
                    ts,
                    NAME,
                    Anomaly.LOST_CHUNK,
                    f"{size} bytes lost inside a chunk or message: {len(d.partial) or 1} message(s) dropped",
                    **{"opcua.direction": "request" if di else "response"},
                )
            )
        d.lost = set(d.partial)  # their remaining chunks are not messages of their own
        d.buf = bytearray()
        d.need = d.discard = 0
        d.partial.clear()
        d.last_seq = None
        d.resync = True  # the next bytes may start inside a chunk
        d.skipped = 0
        return out

    def close(self, ts: float) -> list[Record]:
        out: list[Record] = []
        try:
            for msg in self._pending_hel + self._pending_opn:
                out.append(self._record(msg, None))
            for msg, _f in self._pending.values():
                out.append(self._record(msg, None))
            for di in (0, 1):
                d = self._dir[di]
                if d.buf and not d.resync:
                    out.append(
                        anomaly(
                            ts,
                            NAME,
                            Anomaly.TRUNCATED,
                            f"connection ended inside a chunk ({len(d.buf)} bytes left)",
                        )
                    )
                if d.partial:
                    out.append(
                        anomaly(
                            ts,
                            NAME,
                            Anomaly.TRUNCATED,
                            f"connection ended with {len(d.partial)} message(s) missing their final chunk",
                        )
                    )
                if d.resync and d.skipped:
                    self._report_skipped(di, ts, out)
                d.buf = bytearray()
                d.need = d.discard = 0
                d.partial.clear()
        except Exception as exc:  # pragma: no cover - defensive, like feed()
            out.append(
                anomaly(ts, NAME, Anomaly.INTERNAL_ERROR, f"dissector error at close: {exc!r}")
            )
        self._pending.clear()
        self._pending_hel.clear()
        self._pending_opn.clear()
        return out

    # -- chunks ----------------------------------------------------------------------

    def _notify(self, summary: dict) -> None:
        if self.on_message is not None:
            self.on_message(summary)

    def _chunk(
        self, di: int, mtype_b: bytes, chunk_b: bytes, data: bytes, ts: float, out: list[Record]
    ) -> None:
        mtype = mtype_b.decode()
        chunk = chunk_b.decode()
        size = len(data)
        summary = {"type": mtype, "chunk": chunk, "size": size, "to_server": bool(di)}
        try:
            if mtype in ("HEL", "ACK", "ERR", "RHE"):
                self._connection_message(di, mtype, data, ts, out, summary)
            else:
                self._secure_chunk(di, mtype, chunk, data, ts, out, summary)
        except DecodeError as exc:
            out.append(
                anomaly(
                    ts,
                    NAME,
                    Anomaly.MALFORMED_BODY,
                    f"{mtype} chunk: {exc}",
                    **{"opcua.message_type": mtype},
                )
            )
        self._notify(summary)

    def _connection_message(
        self, di: int, mtype: str, data: bytes, ts: float, out: list[Record], summary: dict
    ) -> None:
        r = Reader(data, self.limits.max_items, 8)
        info: dict = {"opcua.message_type": mtype}
        if mtype in ("HEL", "ACK"):
            names = (
                "protocol_version",
                "receive_buffer_size",
                "send_buffer_size",
                "max_message_size",
                "max_chunk_count",
            )
            vals = [r.u32() for _ in names]
            prefix = "opcua." if mtype == "HEL" else "opcua.revised_"
            for key, v in zip(names, vals, strict=True):
                info[("opcua." if key == "protocol_version" else prefix) + key] = v
            if mtype == "HEL":
                info["opcua.endpoint_url"] = r.string()
                self._hello = dict(zip(names, vals, strict=True))
                self._pending_hel.append(Message(ts, mtype, info, None))
            else:
                self._ack = dict(zip(names, vals, strict=True))
                req = self._pending_hel.pop(0) if self._pending_hel else None
                out.append(self._record(req, Message(ts, mtype, info, None)))
            return
        if mtype == "ERR":
            code = r.u32()
            info["opcua.status_code"] = code
            info["opcua.status"] = status_name(code)
            info["opcua.error_reason"] = r.string()
            summary["status_code"] = code
            msg = Message(ts, mtype, info, None)
            req = self._pending_hel.pop(0) if self._pending_hel else None
            out.append(self._record(req, msg))
            return
        # RHE: the server dials out and names itself
        info["opcua.server_uri"] = r.string()
        info["opcua.endpoint_url"] = r.string()
        out.append(self._record(Message(ts, mtype, info, None), None))

    def _plaintext(self, di: int, mtype: str, chunk: str, data: bytes, pos: int) -> bool:
        """Can this chunk's sequence header and body be read in clear? Never guesses: a
        protected channel must visibly parse (sequence number, service NodeId) to be read."""
        if self._policy == NONE_POLICY or self._mode == "Sign":
            return True
        if self._mode == "SignAndEncrypt":
            return False
        if self._clear:
            return True
        if len(data) < pos + 12:
            return False
        seq, _rid = II(data, pos)
        last = self._dir[di].last_seq
        if last is not None and seq != last + 1 and not (seq < 1024 and last > 0xFFFFFBFF):
            return False
        try:
            tid, _t = Reader(data, 1, pos + 8).numeric_node_id()
        except DecodeError:
            return False
        if tid in REQUEST_IDS or tid in RESPONSE_IDS or tid == SERVICE_FAULT_ID:
            self._clear = True
            if self._policy is not None and self._policy != NONE_POLICY:
                self._mode = (
                    "Sign"  # a protected policy with a body in clear: signed, not encrypted
                )
            return True
        return False

    def _secure_chunk(
        self,
        di: int,
        mtype: str,
        chunk: str,
        data: bytes,
        ts: float,
        out: list[Record],
        summary: dict,
    ) -> None:
        d = self._dir[di]
        r = Reader(data, self.limits.max_items, 8)
        info: dict = {"opcua.message_type": mtype, "opcua.secure_channel_id": r.u32()}
        summary["secure_channel_id"] = info["opcua.secure_channel_id"]
        if mtype == "OPN":
            policy = r.string()
            cert = r.raw()
            r.skip_raw()  # receiver certificate thumbprint
            info["opcua.security_policy_uri"] = policy
            info["opcua.certificate_present"] = bool(cert)
            if cert and not di:  # the server's answer: its own certificate
                info.update(certificate_fields(cert, "opcua.server_certificate"))
            if policy != self._policy:
                self._policy = policy
                self._mode = None
                self._clear = None
            clear = policy == NONE_POLICY
        else:
            info["opcua.token_id"] = r.u32()
            summary["token_id"] = info["opcua.token_id"]
            clear = self._plaintext(di, mtype, chunk, data, r.pos)
        if self._policy is not None:
            info["opcua.security_policy_uri"] = self._policy
        self._limit_checks(di, mtype, chunk, len(data), ts, out)
        if not clear:
            info["opcua.encrypted"] = (
                self._policy is not None and self._policy != NONE_POLICY or None
            )
            info = {k: v for k, v in info.items() if v is not None}
            if chunk == "F" or chunk == "A":
                self._complete(di, Message(ts, mtype, info, None, aborted=False), out, summary)
            return
        seq = r.u32()
        rid = r.u32()
        d.last_seq = seq
        info["opcua.sequence_number"] = seq
        info["opcua.request_id"] = rid
        summary["sequence_number"] = seq
        summary["request_id"] = rid
        end = len(data)
        sig = (
            SIGNATURE_SIZE.get(policy_name(self._policy) or "", 0)
            if self._policy != NONE_POLICY
            else 0
        )
        if sig and mtype != "OPN":
            end = max(r.pos, end - sig)
        payload = data[r.pos : end]
        if rid in d.lost:  # the rest of a message cut by a gap (already reported)
            if chunk != "C":
                d.lost.discard(rid)
            return
        partial = d.partial.get(rid)
        if chunk == "A":
            d.partial.pop(rid, None)
            ar = Reader(payload, 1)
            code = ar.u32()
            info["opcua.status_code"] = code
            info["opcua.status"] = status_name(code)
            info["opcua.error_reason"] = ar.string()
            info["opcua.aborted"] = True
            summary["status_code"] = code
            body = None
            if partial is not None:
                # the chunks before the abort still say which service and handle it was
                body = decode_body(b"".join(partial.parts), self.limits.max_items)
                body.error = None  # incomplete by the sender's choice, not malformed
                body.fields.pop("opcua.status_code", None)  # the abort's error code is the outcome
                body.fields.pop("opcua.status", None)
                info = {**partial.info, **info, "opcua.chunk_count": partial.chunks + 1}
                info["opcua.sequence_number"] = partial.info["opcua.sequence_number"]
            self._complete(
                di,
                Message(partial.ts if partial else ts, mtype, info, body, aborted=True),
                out,
                summary,
            )
            return
        if partial is None:
            partial = Partial(ts, info)
            if chunk == "C":
                if len(d.partial) >= MAX_PARTIAL_MESSAGES:
                    old_rid, _old = d.partial.popitem(last=False)
                    out.append(
                        anomaly(
                            ts,
                            NAME,
                            Anomaly.TOO_MANY_CHUNKS,
                            f"more than {MAX_PARTIAL_MESSAGES} messages in reassembly; request id {old_rid} dropped",
                        )
                    )
                d.partial[rid] = partial
        partial.parts.append(payload)
        partial.size += len(payload)
        partial.chunks += 1
        max_msg, max_chunks = self._message_limits(di)
        if partial.size > self.limits.max_buffer:
            d.partial.pop(rid, None)
            out.append(
                anomaly(
                    ts,
                    NAME,
                    Anomaly.MESSAGE_TOO_LARGE,
                    f"message for request id {rid}: {partial.size} bytes in {partial.chunks} chunks exceed the {self.limits.max_buffer}-byte limit; dropped",
                    **{"opcua.request_id": rid, "opcua.message_type": mtype},
                )
            )
            return
        # beyond what was negotiated but within the hard cap: a violation worth reporting,
        # still decoded (the peer that accepted it sees the content too)
        over_size = max_msg and partial.size > max_msg and partial.size - len(payload) <= max_msg
        over_count = max_chunks and partial.chunks == max_chunks + 1
        if over_size or over_count:
            what = (
                f"{partial.size} bytes > MaxMessageSize {max_msg}"
                if over_size
                else f"{partial.chunks} chunks > MaxChunkCount {max_chunks}"
            )
            out.append(
                anomaly(
                    ts,
                    NAME,
                    Anomaly.MESSAGE_TOO_LARGE if over_size else Anomaly.TOO_MANY_CHUNKS,
                    f"message for request id {rid} exceeds the negotiated limit: {what}",
                    **{"opcua.request_id": rid, "opcua.message_type": mtype},
                )
            )
        if chunk == "C":
            return
        d.partial.pop(rid, None)
        body_bytes = b"".join(partial.parts) if len(partial.parts) > 1 else partial.parts[0]
        info = partial.info  # the first chunk's headers (sequence number) describe the message
        if partial.chunks > 1:
            info["opcua.chunk_count"] = partial.chunks
        body = decode_body(body_bytes, self.limits.max_items)
        summary["service_type_id"] = body.type_id
        if "opcua.request_handle" in body.fields:
            summary["request_handle"] = body.fields["opcua.request_handle"]
        if "opcua.status_code" in body.fields:
            summary["status_code"] = body.fields["opcua.status_code"]
        if body.error:
            out.append(
                anomaly(
                    partial.ts,
                    NAME,
                    Anomaly.MALFORMED_BODY,
                    f"{mtype} body: {body.error}",
                    **{
                        "opcua.message_type": mtype,
                        "opcua.request_id": rid,
                        "opcua.service": body.service,
                    },
                )
            )
        if mtype == "OPN" and body.is_request and "opcua.security_mode" in body.fields:
            self._mode = body.fields["opcua.security_mode"]
        self._complete(di, Message(partial.ts, mtype, info, body), out, summary)

    def _message_limits(self, di: int) -> tuple[int, int]:
        """(max message size, max chunk count) the receiver of direction ``di`` accepts."""
        src = self._ack if di else self._hello  # requests are bounded by the server's ACK
        if not src:
            return 0, 0
        return src["max_message_size"], src["max_chunk_count"]

    def _limit_checks(
        self, di: int, mtype: str, chunk: str, size: int, ts: float, out: list[Record]
    ) -> None:
        # a chunk may not exceed the receiver's receive buffer (ACK revises both sides)
        if self._ack is None:
            return
        limit = self._ack["receive_buffer_size"] if di else self._ack["send_buffer_size"]
        if limit and size > limit:
            out.append(
                anomaly(
                    ts,
                    NAME,
                    Anomaly.CHUNK_TOO_LARGE,
                    f"{mtype} chunk of {size} bytes exceeds the negotiated buffer size {limit}",
                    **{"opcua.message_type": mtype, "opcua.chunk_size": size},
                )
            )

    # -- pairing ---------------------------------------------------------------------

    def _complete(self, di: int, msg: Message, out: list[Record], summary: dict) -> None:
        body = msg.body
        if msg.mtype == "OPN":
            is_request = body.is_request if body and body.is_request is not None else bool(di)
            if is_request:
                self._pending_opn.append(msg)
                self._trim_pending(msg.ts, out)
            else:
                req = self._pending_opn.pop(0) if self._pending_opn else None
                out.append(self._record(req, msg))
            return
        rid = msg.info.get("opcua.request_id")
        if msg.aborted and body is None and not di and ("rid", rid) in self._pending:
            # the server aborted its answer in the first chunk: still the request's answer
            out.append(self._record(self._pending.pop(("rid", rid))[0], msg))
            return
        if msg.mtype == "CLO" or body is None or body.is_request is None:
            # no body to pair on: the direction says which side spoke
            out.append(self._record(msg, None) if di else self._record(None, msg))
            return
        key = (
            ("rid", rid) if rid is not None else ("handle", body.fields.get("opcua.request_handle"))
        )
        if body.is_request and not msg.aborted:
            if key in self._pending:
                old, _ = self._pending.pop(key)
                out.append(self._record(old, None))
            self._pending[key] = (msg, {})
            self._trim_pending(msg.ts, out)
            return
        if body.is_request:  # the client aborted its own request: nothing will answer it
            out.append(self._record(msg, None))
            return
        entry = self._pending.pop(key, None)
        if entry is None:
            out.append(self._record(None, msg))
            return
        req = entry[0]
        if body.service not in (req.body.service, "ServiceFault") if req.body else False:
            out.append(
                anomaly(
                    msg.ts,
                    NAME,
                    Anomaly.RESPONSE_MISMATCH,
                    f"{body.service} response answers a {req.body.service} request (request id {rid})",
                    **{"opcua.request_id": rid, "opcua.service": req.body.service},
                )
            )
            out.append(self._record(req, None))
            out.append(self._record(None, msg))
            return
        out.append(self._record(req, msg))

    def _trim_pending(self, ts: float, out: list[Record]) -> None:
        limit = self.limits.max_pending
        total = len(self._pending) + len(self._pending_opn) + len(self._pending_hel)
        if total <= limit:
            return
        dropped = 0
        while len(self._pending) + len(self._pending_opn) + len(self._pending_hel) > limit:
            if self._pending:
                self._pending.popitem(last=False)
            elif self._pending_opn:
                self._pending_opn.pop(0)
            else:
                self._pending_hel.pop(0)
            dropped += 1
        out.append(
            anomaly(
                ts,
                NAME,
                Anomaly.PENDING_OVERFLOW,
                f"more than {limit} unanswered requests; {dropped} oldest dropped",
            )
        )

    def _record(self, req: Message | None, resp: Message | None) -> Record:
        return build_record(req, resp, self._mode)
