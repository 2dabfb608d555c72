"""ISO-on-TCP framing under S7comm: TPKT (RFC 1006) records and COTP (ISO 8073 class 0)
TPDUs, the per-direction buffers, the resynchronisation scan and the probe.

TPKT records split across TCP segments are buffered until complete; COTP data TPDUs without
the EOT bit are joined until the last one. After ``gap()`` or garbage the parser scans for a
plausible TPKT header (version 3, reserved 0, sane length) followed by a COTP data or
connection TPDU and resumes there.
"""

from __future__ import annotations

from sensor.protocols.s7comm.tables import ROSCTR_NAMES

# COTP TPDU codes (high nibble of the type byte).
COTP_CR, COTP_CC, COTP_DR, COTP_DC, COTP_DT, COTP_ER = 0xE0, 0xD0, 0x80, 0xC0, 0xF0, 0x70
MAX_TPKT = 0xFFFF  # the largest TPKT: after a gap, the rest of the lost PDU is at most this


class Direction:
    __slots__ = (
        "buf",
        "cotp",
        "plus",
        "plus_version",
        "plus_fragments",
        "resync",
        "lost",
        "gap_skipped",
    )

    def __init__(self) -> None:
        self.buf = bytearray()  # TPKT bytes not yet framed
        self.cotp = bytearray()  # COTP DT payloads awaiting the EOT segment
        self.plus = bytearray()  # S7comm-plus fragments awaiting the trailer
        self.plus_version = 0
        self.plus_fragments = 0
        self.resync = False  # scanning for the next plausible TPKT header
        self.lost = False  # an anomaly was already reported for this resync episode
        # bytes skipped while resynchronising after a gap (None: not after a gap). Up to one
        # TPKT's worth may be the rest of the lost PDU; more is not S7 and is reported.
        self.gap_skipped: int | None = None

    def reset(self) -> None:
        self.buf.clear()
        self.cotp.clear()
        self.plus.clear()


def plausible_tpkt(buf: bytes | bytearray, i: int) -> bool | None:
    """True/False at offset i; None when more bytes are needed to tell."""
    n = len(buf) - i
    if n < 1:
        return None
    if buf[i] != 3:
        return False
    if n < 8:
        if n >= 2 and buf[i + 1] != 0:
            return False
        return None
    if buf[i + 1] != 0:
        return False
    length = (buf[i + 2] << 8) | buf[i + 3]
    li, code = buf[i + 4], buf[i + 5] & 0xF0
    if length < 7 or li + 5 > length:
        return False
    if code == COTP_DT:
        if li != 2 or buf[i + 6] & 0x7F:
            return False
        return length == 7 or buf[i + 7] in (0x32, 0x72)
    return code in (COTP_CR, COTP_CC, COTP_DR, COTP_DC) and li >= 6


def resync(buf: bytes | bytearray, pos: int) -> int:
    """Offset of the next plausible TPKT header at or after pos (or where one may start)."""
    i = pos
    while True:
        i = buf.find(3, i)
        if i < 0:
            return -1
        verdict = plausible_tpkt(buf, i)
        if verdict is None or verdict:
            return i
        i += 1


def probe(data: bytes) -> bool:
    """TPKT 3 + COTP: a CR/CC naming TSAPs, or a DT carrying an S7comm / S7comm-plus header."""
    try:
        if not plausible_tpkt(data, 0):
            return False
        code = data[5] & 0xF0
        if code in (COTP_CR, COTP_CC):  # TSAP parameters (0xC1/0xC2) after the fixed part
            end = min(len(data), 5 + data[4])
            i = 11
            while i + 1 < end:
                if data[i] in (0xC1, 0xC2):
                    return True
                i += 2 + data[i + 1]
            return False
        if code != COTP_DT or len(data) < 11:
            return False
        if data[7] == 0x32:
            return len(data) >= 17 and data[8] in ROSCTR_NAMES
        return data[7] == 0x72 and data[8] in (1, 2, 3, 0xFE, 0xFF)
    except Exception:  # never raise from a probe
        return False


def tsap_text(raw: bytes) -> str:
    if len(raw) > 2 and all(0x20 <= b < 0x7F for b in raw):
        return raw.decode("ascii")
    return raw.hex()


def connection_fields(tpdu: bytes, li: int) -> tuple[dict[str, object], bool]:
    """The fields of a COTP CR or CC (TPDU size, TSAPs, connection type, rack and slot) and
    whether a parameter ran past the header."""
    fields: dict[str, object] = {}
    i, end = 7, li + 1
    while i + 2 <= end:
        pcode, plen = tpdu[i], tpdu[i + 1]
        value = tpdu[i + 2 : i + 2 + plen]
        if len(value) < plen:
            return fields, True
        if pcode == 0xC0 and plen == 1 and value[0] <= 16:
            fields["s7comm.cotp.tpdu_size"] = 1 << value[0]
        elif pcode == 0xC1:
            fields["s7comm.cotp.src_tsap"] = tsap_text(value)
        elif pcode == 0xC2:
            fields["s7comm.cotp.dst_tsap"] = tsap_text(value)
            if plen == 2:
                ctype = value[0]
                fields["s7comm.cotp.connection_type"] = ctype
                fields["s7comm.cotp.connection_type_name"] = {
                    1: "pg",
                    2: "op",
                    3: "s7-basic",
                }.get(ctype, "other")
                fields["s7comm.cotp.rack"] = value[1] >> 5
                fields["s7comm.cotp.slot"] = value[1] & 0x1F
        i += 2 + plen
    return fields, False
