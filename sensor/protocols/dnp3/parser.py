"""The DNP3 connection (TCP) or flow (UDP): link frames out of the byte stream or each
datagram, transport reassembly per link address pair, application fragments paired by
sequence, and the records (see the package docstring for what they carry)."""

from __future__ import annotations

from sensor.protocols.base import ParserLimits, Record, anomaly, event_type, kebab
from sensor.protocols.dnp3 import link
from sensor.protocols.dnp3.anomalies import Anomaly
from sensor.protocols.dnp3.objects import Decoded, Malformed, decode_objects
from sensor.protocols.dnp3.tables import (
    ATTRIBUTE_IDENTITY,
    ATTRIBUTES,
    AUTHENTICATION_RESPONSE,
    CONFIRM,
    FUNCTIONS,
    HEADERS_ONLY,
    IIN_ERRORS,
    IIN_FLAGS,
    NO_RESPONSE,
    OPERATION,
    RESPONSE,
    UNSOLICITED_RESPONSE,
)
from sensor.protocols.facts import DNP3_NAME

NAME = DNP3_NAME
REQUEST_TIMEOUT = 30.0  # seconds of capture time before an unanswered request is reported
MAX_FRAGMENT = 65536  # octets of one application fragment in reassembly (2048 is the norm)
MAX_REASSEMBLIES = 64  # link address pairs reassembling at once per connection
_LINK_SERVICES = (0, 2, 9)  # primary link functions answered at the link layer


def function_name(fc: int) -> str:
    return FUNCTIONS.get(fc) or f"unknown_{fc}"


def iin_flags(iin: int) -> list[str]:
    """Names of the IIN bits set (``iin`` = IIN1 << 8 | IIN2)."""
    bits = (iin >> 8) | (iin & 0xFF) << 8  # IIN1 in bits 0-7, IIN2 in bits 8-15
    return [name for i, name in enumerate(IIN_FLAGS) if bits >> i & 1]


class _Reassembly:
    __slots__ = ("seq", "data", "ts", "frames")

    def __init__(self, seq: int, ts: float) -> None:
        self.seq = seq
        self.data = bytearray()
        self.ts = ts
        self.frames = 0


class Parser:
    """One DNP3 TCP connection or UDP flow (``datagram``): the same decoding either way."""

    def __init__(self, limits: ParserLimits | None = None) -> None:
        self.limits = limits or ParserLimits()
        self._buf = [b"", b""]  # stream bytes awaiting a whole frame; index 1: to server
        self._resync = [False, False]  # inside a run of skipped bytes (reported once)
        self._seen = [False, False]  # a frame was seen in this direction (not-dnp3 vs bad-start)
        self._reassembly: dict[tuple[int, int], _Reassembly] = {}  # (source, destination)
        self._pending: dict[tuple[int, int, int], tuple[float, Record]] = {}
        self._open: dict[tuple[int, int], Record] = {}  # multi-fragment responses in progress
        self._link_pending: dict[tuple[int, int], Record] = {}
        self._overflow_reported = False

    # -- stream and datagram interfaces -------------------------------------------------

    def feed(self, to_server: bool, data: bytes, ts: float) -> list[Record]:
        d = 1 if to_server else 0
        out: list[Record] = []
        buf = self._buf[d] + data if self._buf[d] else data
        pos = self._frames(buf, d, ts, out, final=False)
        rest = buf[pos:]
        if len(rest) > self.limits.max_buffer:
            out.append(
                anomaly(
                    ts,
                    NAME,
                    Anomaly.BUFFER_OVERFLOW,
                    f"{len(rest)} octets without a complete link frame; dropped",
                )
            )
            rest = b""
        self._buf[d] = rest
        return out

    def datagram(self, to_server: bool, data: bytes, ts: float) -> list[Record]:
        d = 1 if to_server else 0
        out: list[Record] = []
        self._resync[d] = False  # each datagram starts afresh
        pos = self._frames(data, d, ts, out, final=True)
        if pos < len(data):
            out.append(
                anomaly(
                    ts,
                    NAME,
                    Anomaly.TRUNCATED_FRAME,
                    f"datagram ends inside a link frame ({len(data) - pos} octets left)",
                )
            )
        return out

    def gap(self, to_server: bool, ts: float, size: int) -> list[Record]:
        d = 1 if to_server else 0
        self._buf[d] = b""
        self._resync[d] = False
        # a fragment cannot be completed across lost bytes: drop those in progress
        self._reassembly.clear()
        return []

    def close(self, ts: float) -> list[Record]:
        out: list[Record] = []
        for rec in self._open.values():
            out.append(rec)
        self._open.clear()
        for _req_ts, rec in self._pending.values():
            out.append(self._unanswered(rec))
        self._pending.clear()
        for rec in self._link_pending.values():
            rec["event.outcome"] = "unknown"
            rec["ics.pairing"] = "request-only"
            out.append(rec)
        self._link_pending.clear()
        for (src, dst), r in self._reassembly.items():
            out.append(
                anomaly(
                    ts,
                    NAME,
                    Anomaly.TRANSPORT_SEQUENCE,
                    f"the flow ended with {len(r.data)} octets of a fragment from {src} to {dst} "
                    f"in {r.frames} segments still waiting for the final segment",
                    **{"dnp3.source": src, "dnp3.destination": dst},
                )
            )
        self._reassembly.clear()
        for d in (0, 1):
            rest = self._buf[d]
            if rest and rest[0] == 0x05 and rest[1:2] in (b"", b"\x64"):
                out.append(
                    anomaly(
                        ts,
                        NAME,
                        Anomaly.TRUNCATED_FRAME,
                        f"connection ended inside a link frame ({len(rest)} octets left)",
                    )
                )
            elif rest:
                self._report_skip(rest, 0, len(rest), d, ts, out)
            self._buf[d] = b""
        return out

    # -- link layer ---------------------------------------------------------------------

    def _frames(self, buf: bytes, d: int, ts: float, out: list[Record], final: bool) -> int:
        """Decode the whole frames of ``buf``; the position of the first octet not used."""
        pos = 0
        n = len(buf)
        while n - pos >= link.HEADER:
            if not link.header_ok(buf, pos):
                start = pos
                pos = self._skip(buf, pos + 1)
                self._report_skip(buf, start, pos, d, ts, out)
                continue
            length = buf[pos + 2]
            size = link.frame_size(length)
            if pos + size > n:
                break
            self._resync[d] = False
            self._seen[d] = True
            self._frame(buf, pos, length, ts, out)
            pos += size
        if final and 0 < n - pos < link.HEADER and (not self._seen[d] or buf[pos] != 0x05):
            start = pos
            self._report_skip(buf, start, n, d, ts, out)
            return n
        return pos

    @staticmethod
    def _skip(buf: bytes, pos: int) -> int:
        """The next start octets whose header checks, or where a header could still begin."""
        n = len(buf)
        while True:
            i = buf.find(b"\x05\x64", pos)
            if i < 0:
                return max(pos, n - 1) if n and buf[-1] == 0x05 else n
            if n - i < link.HEADER or link.header_ok(buf, i):
                return i
            pos = i + 1

    def _report_skip(
        self, buf: bytes, start: int, end: int, d: int, ts: float, out: list[Record]
    ) -> None:
        if self._resync[d]:
            return
        self._resync[d] = True
        if not self._seen[d]:
            kind, what = Anomaly.NOT_DNP3, "octets that are not a DNP3 link frame"
        elif buf[start] == 0x05 and start + 1 < len(buf) and buf[start + 1] == 0x64:
            if buf[start + 2] < link.MIN_LEN:
                kind, what = Anomaly.BAD_LENGTH, f"a link header with length {buf[start + 2]}"
            else:
                kind, what = Anomaly.BAD_HEADER_CRC, "a link header whose checksum is wrong"
        else:
            kind, what = Anomaly.BAD_START, "octets between link frames that do not start one"
        out.append(
            anomaly(
                ts,
                NAME,
                kind,
                f"{what}; skipped {end - start} octets",
                **{
                    "dnp3.skipped_bytes": end - start,
                    "dnp3.direction": "request" if d else "response",
                },
            )
        )

    def _frame(self, buf: bytes, pos: int, length: int, ts: float, out: list[Record]) -> None:
        control = buf[pos + 3]
        dst = buf[pos + 4] | buf[pos + 5] << 8
        src = buf[pos + 6] | buf[pos + 7] << 8
        if length == link.MIN_LEN:
            self._link_only(control, src, dst, ts, out)
            return
        data, bad = link.user_data(buf, pos, length)
        if bad:
            out.append(
                anomaly(
                    ts,
                    NAME,
                    Anomaly.BAD_CRC,
                    f"{bad} user-data block(s) of a frame from {src} to {dst} fail their checksum",
                    **{"dnp3.source": src, "dnp3.destination": dst},
                )
            )
            self._reassembly.pop((src, dst), None)
            return
        if not control & 0x40 or control & 0x0F not in (3, 4):
            return  # user data on a frame that does not carry it: nothing to reassemble
        self._transport(data, src, dst, control, ts, out)

    def _link_only(self, control: int, src: int, dst: int, ts: float, out: list[Record]) -> None:
        fc = control & 0x0F
        primary = bool(control & 0x40)
        if primary and fc in (3, 4):
            return  # user data frames without data: nothing to report
        name = link.function_name(control)
        if not primary:
            rec = self._link_pending.pop((dst, src), None)
            if rec is not None:
                rec["dnp3.link.response_function"] = name
                rec["dnp3.link.response_function_code"] = fc
                rec["event.outcome"] = "success" if fc in (0, 11) else "failure"
                rec["ics.pairing"] = "paired"
                duration = round((ts - rec["ts"]) * 1e9)
                rec["event.duration"] = duration if duration > 0 else 0
                out.append(rec)
                return
            if fc == 0:
                return  # the link acknowledgement of confirmed user data
        master, outstation = (src, dst) if control & 0x80 else (dst, src)
        op = "diagnostic" if fc in (2, 9, 11) else "session"
        rec: Record = {
            "ts": ts,
            "network.protocol": NAME,
            "dnp3.master": master,
            "dnp3.outstation": outstation,
            "dnp3.source": src,
            "dnp3.destination": dst,
            "dnp3.link.function": name,
            "dnp3.link.function_code": fc,
            "dnp3.link.primary": primary,
            "ics.operation": op,
            "ics.function": name,
            "event.action": kebab(name),
            "event.type": event_type(op),
        }
        if dst >= link.BROADCAST:
            rec["dnp3.broadcast"] = True
        if primary and fc in _LINK_SERVICES:
            old = self._link_pending.pop((src, dst), None)
            if old is not None:
                old["event.outcome"] = "unknown"
                old["ics.pairing"] = "request-only"
                out.append(old)
            if len(self._link_pending) < self.limits.max_pending:
                self._link_pending[(src, dst)] = rec
                return
            rec["event.outcome"] = "unknown"
            rec["ics.pairing"] = "request-only"
        else:
            rec["event.outcome"] = "success" if primary or fc in (0, 11) else "failure"
            rec["ics.pairing"] = "request-only" if primary else "response-only"
        out.append(rec)

    # -- transport function -------------------------------------------------------------

    def _transport(
        self, data: bytes, src: int, dst: int, control: int, ts: float, out: list[Record]
    ) -> None:
        th = data[0]
        fir, fin, seq = th & 0x40, th & 0x80, th & 0x3F
        key = (src, dst)
        reassembly = self._reassembly
        r = reassembly.get(key)
        if fir:
            if r is not None:
                out.append(
                    anomaly(
                        ts,
                        NAME,
                        Anomaly.TRANSPORT_SEQUENCE,
                        f"a first segment from {src} to {dst} while {len(r.data)} octets of a "
                        "fragment wait for their final segment (dropped)",
                        **{"dnp3.source": src, "dnp3.destination": dst},
                    )
                )
            if fin:  # the common case: a fragment in one segment
                if r is not None:
                    del reassembly[key]
                self._fragment(data[1:], src, dst, control, ts, ts, 1, out)
                return
            r = _Reassembly(seq, ts)
            if len(reassembly) >= MAX_REASSEMBLIES and key not in reassembly:
                reassembly.pop(next(iter(reassembly)))
            reassembly[key] = r
        elif r is None or seq != (r.seq + 1) & 0x3F:
            if r is not None and seq == r.seq:
                return  # the same segment again (a link-layer retry): already have it
            what = (
                "a continuation segment without a first segment"
                if r is None
                else f"transport sequence {seq} after {r.seq}"
            )
            out.append(
                anomaly(
                    ts,
                    NAME,
                    Anomaly.TRANSPORT_SEQUENCE,
                    f"{what} from {src} to {dst}; the fragment is dropped",
                    **{"dnp3.source": src, "dnp3.destination": dst},
                )
            )
            reassembly.pop(key, None)
            return
        r.seq = seq
        r.frames += 1
        r.data += data[1:]
        if len(r.data) > min(MAX_FRAGMENT, self.limits.max_buffer):
            out.append(
                anomaly(
                    ts,
                    NAME,
                    Anomaly.FRAGMENT_TOO_LONG,
                    f"a fragment from {src} to {dst} passed {len(r.data)} octets without its "
                    "final segment; dropped",
                    **{"dnp3.source": src, "dnp3.destination": dst},
                )
            )
            del reassembly[key]
            return
        if fin:
            del reassembly[key]
            self._fragment(bytes(r.data), src, dst, control, r.ts, ts, r.frames, out)

    # -- application layer --------------------------------------------------------------

    def _fragment(
        self,
        frag: bytes,
        src: int,
        dst: int,
        control: int,
        first_ts: float,
        ts: float,
        frames: int,
        out: list[Record],
    ) -> None:
        if len(frag) < 2:
            out.append(self._malformed(ts, src, dst, "an application fragment under 2 octets"))
            return
        ac, fc = frag[0], frag[1]
        seq = ac & 0x0F
        response = fc in (RESPONSE, UNSOLICITED_RESPONSE, AUTHENTICATION_RESPONSE)
        if response and len(frag) < 4:
            out.append(self._malformed(ts, src, dst, "a response without its internal indications"))
            return
        decoded = Decoded()
        error = ""
        try:
            decode_objects(
                frag,
                4 if response else 2,
                fc,
                not response and fc in HEADERS_ONLY,
                self.limits.max_items,
                decoded,
            )
        except Malformed as exc:
            error = str(exc)
        except (IndexError, ValueError) as exc:  # struct.error is a ValueError
            error = f"object data does not fit: {exc}"
        if response:
            self._response(frag, ac, fc, seq, src, dst, ts, decoded, out)
        else:
            self._request(ac, fc, seq, src, dst, first_ts, decoded, frames, out)
        if error:
            out.append(
                self._malformed(
                    ts, src, dst, f"{function_name(fc)}: {error}", **{"dnp3.function_code": fc}
                )
            )

    def _request(
        self,
        ac: int,
        fc: int,
        seq: int,
        src: int,
        dst: int,
        ts: float,
        decoded: Decoded,
        frames: int,
        out: list[Record],
    ) -> None:
        name = function_name(fc)
        op = OPERATION.get(fc, "other")
        f: Record = {
            "ts": ts,
            "network.protocol": NAME,
            "dnp3.master": src,
            "dnp3.outstation": dst,
            "dnp3.application.control": ac,
            "dnp3.sequence": seq,
            "dnp3.function_code": fc,
            "dnp3.function": name,
            "ics.operation": op,
            "ics.function": name,
            "event.action": kebab(name),
            "event.type": event_type(op),
        }
        if dst >= link.BROADCAST:
            f["dnp3.broadcast"] = True
        if frames > 1:
            f["dnp3.segments"] = frames
        _put_objects(f, "dnp3.", decoded)
        if decoded.points:
            f["dnp3.points"] = decoded.points
        if decoded.values:
            f["dnp3.values"] = decoded.values
        if decoded.operations:
            f["dnp3.operations"] = decoded.operations
        _put_fields(f, decoded, identity=False)
        if fc in NO_RESPONSE:
            if fc == CONFIRM:
                f["dnp3.unsolicited"] = bool(ac & 0x10)
                f["event.outcome"] = "success"
            else:
                f["event.outcome"] = "unknown"
            f["ics.pairing"] = "request-only"
            out.append(f)
            return
        pending = self._pending
        key = (src, dst, seq)
        old = pending.pop(key, None)
        if old is not None:  # the same sequence again: a retry, the first went unanswered
            out.append(self._unanswered(old[1]))
        if pending:
            first = next(iter(pending))
            if len(pending) >= self.limits.max_pending:
                out.append(self._unanswered(pending.pop(first)[1]))
                if not self._overflow_reported:
                    self._overflow_reported = True
                    out.append(
                        anomaly(
                            ts,
                            NAME,
                            Anomaly.PENDING_OVERFLOW,
                            f"more than {self.limits.max_pending} unanswered requests",
                        )
                    )
            elif ts - pending[first][0] > REQUEST_TIMEOUT:
                out.append(self._unanswered(pending.pop(first)[1]))
        pending[key] = (ts, f)

    def _response(
        self,
        frag: bytes,
        ac: int,
        fc: int,
        seq: int,
        src: int,
        dst: int,
        ts: float,
        decoded: Decoded,
        out: list[Record],
    ) -> None:
        iin = frag[2] << 8 | frag[3]
        fir, fin = ac & 0x80, ac & 0x40
        open_key = (dst, src)
        if not fir and fc == RESPONSE:
            f = self._open.get(open_key)
            if f is not None:  # a later fragment of a multi-fragment response
                f["dnp3.response.fragments"] = int(f.get("dnp3.response.fragments", 1)) + 1
                _extend_response(f, decoded, iin)
                if fin:
                    del self._open[open_key]
                    _finish_response(f)
                    out.append(f)
                return
        req = self._pending.pop((dst, src, seq), None) if fc == RESPONSE else None
        if req is not None:
            req_ts, f = req
            f["ics.pairing"] = "paired"
            duration = round((ts - req_ts) * 1e9)
            f["event.duration"] = duration if duration > 0 else 0
            f["dnp3.response.function_code"] = fc
            f["dnp3.response.function"] = function_name(fc)
            f["dnp3.response.application.control"] = ac
            f["dnp3.iin"] = iin
            f["dnp3.iin_flags"] = iin_flags(iin)
            _put_objects(f, "dnp3.response.", decoded)
            _put_fields(f, decoded, identity=True)
            statuses = _statuses(decoded)
            if statuses:
                f["dnp3.control_status"] = statuses
        else:
            name = function_name(fc)
            op = OPERATION.get(fc, "other")
            f = {
                "ts": ts,
                "network.protocol": NAME,
                "dnp3.master": dst,
                "dnp3.outstation": src,
                "dnp3.application.control": ac,
                "dnp3.sequence": seq,
                "dnp3.function_code": fc,
                "dnp3.function": name,
                "dnp3.iin": iin,
                "dnp3.iin_flags": iin_flags(iin),
                "ics.operation": op,
                "ics.function": name,
                "event.action": kebab(name),
                "event.type": event_type(op),
                "ics.pairing": "response-only",
            }
            if fc == UNSOLICITED_RESPONSE:
                f["dnp3.unsolicited"] = True
            _put_objects(f, "dnp3.", decoded)
            if decoded.points:
                f["dnp3.points"] = decoded.points
            if decoded.values:
                f["dnp3.values"] = decoded.values
            if decoded.operations:
                f["dnp3.operations"] = decoded.operations
            _put_fields(f, decoded, identity=True)
            statuses = _statuses(decoded)
            if statuses:
                f["dnp3.control_status"] = statuses
        if fc == RESPONSE and not fin:
            f["dnp3.response.fragments"] = 1
            old = self._open.pop(open_key, None)
            if old is not None:
                _finish_response(old)
                out.append(old)
            self._open[open_key] = f
            return
        _finish_response(f)
        out.append(f)

    def _unanswered(self, f: Record) -> Record:
        f["event.outcome"] = "unknown"
        f["ics.pairing"] = "request-only"
        return f

    @staticmethod
    def _malformed(ts: float, src: int, dst: int, message: str, **fields: object) -> Record:
        return anomaly(
            ts,
            NAME,
            Anomaly.MALFORMED_APPLICATION,
            message,
            **{"dnp3.source": src, "dnp3.destination": dst},
            **fields,
        )


def _put_objects(f: Record, prefix: str, decoded: Decoded) -> None:
    if decoded.objects:
        f[prefix + "objects"] = decoded.objects
        types: list[str] = []
        for obj in decoded.objects:
            if obj["type"] not in types:
                types.append(obj["type"])
        f[prefix + "object_types"] = types
    if decoded.error:
        f[prefix + "decode_error"] = decoded.error
    if decoded.truncated:
        f["dnp3.truncated"] = True


def _put_fields(f: Record, decoded: Decoded, identity: bool) -> None:
    for key, value in decoded.fields.items():
        if key == "dnp3.attributes" and isinstance(value, dict):
            attrs = f.setdefault("dnp3.attributes", {})
            attrs.update(value)
            if identity:
                for variation, field in ATTRIBUTE_IDENTITY.items():
                    text = value.get(ATTRIBUTES[variation])
                    if isinstance(text, str) and text:
                        f[field] = text[:128]
        else:
            f[key] = value


def _statuses(decoded: Decoded) -> list[str]:
    return [
        p["status_name"]
        for obj in decoded.objects
        for p in obj.get("points", ())
        if "status_name" in p
    ]


def _extend_response(f: Record, decoded: Decoded, iin: int) -> None:
    prefix = "dnp3.response." if "dnp3.response.function_code" in f else "dnp3."
    f["dnp3.iin"] = iin
    f["dnp3.iin_flags"] = iin_flags(iin)
    objects = f.setdefault(prefix + "objects", [])
    types = f.setdefault(prefix + "object_types", [])
    for obj in decoded.objects:
        if len(objects) < 4096:
            objects.append(obj)
        if obj["type"] not in types:
            types.append(obj["type"])
    if decoded.error:
        f[prefix + "decode_error"] = decoded.error
    _put_fields(f, decoded, identity=True)


def _finish_response(f: Record) -> None:
    """The outcome of a transaction once its (last) response fragment is in."""
    iin = f.get("dnp3.iin", 0)
    statuses = f.get("dnp3.control_status") or ()
    failed = iin & IIN_ERRORS or any(s != "success" for s in statuses)
    f["event.outcome"] = "failure" if failed else "success"
