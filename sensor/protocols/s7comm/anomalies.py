"""The anomaly codes (``error.type``) of the S7comm / S7comm-plus dissector: a closed set.
Framing errors are reported once per episode; the parser then skips to the next plausible
TPKT header."""

from __future__ import annotations

from sensor.protocols.schema import ProtocolAnomaly


class Anomaly(ProtocolAnomaly):
    TPKT_BAD_HEADER = (
        "tpkt-bad-header",
        "bytes that do not start a TPKT header (version 3, length 7+)",
    )
    COTP_BAD_HEADER = "cotp-bad-header", "a COTP length indicator or parameter that does not fit"
    COTP_UNKNOWN_TYPE = "cotp-unknown-type", "a COTP TPDU type ISO-on-TCP class 0 does not use"
    COTP_ERROR = "cotp-error", "a COTP error TPDU: the peer rejected a TPDU"
    BUFFER_OVERFLOW = (
        "buffer-overflow",
        "a TPKT, COTP segments or S7comm-plus fragments over the buffer cap",
    )
    S7_SHORT_PDU = "s7-short-pdu", "an S7comm PDU shorter than its header"
    S7_BAD_LENGTH = "s7-bad-length", "an S7comm header announcing more bytes than the PDU has"
    S7_UNKNOWN_ROSCTR = "s7-unknown-rosctr", "a ROSCTR that is not job, ack, ack_data or userdata"
    S7_UNKNOWN_PROTOCOL = (
        "s7-unknown-protocol",
        "COTP data that is neither S7comm nor S7comm-plus (e.g. MMS), once per connection",
    )
    S7_BAD_PARAMETER = "s7-bad-parameter", "S7comm parameters or items that do not parse"
    S7PLUS_SHORT_PDU = "s7plus-short-pdu", "an S7comm-plus PDU shorter than its header or data"
    S7PLUS_BAD_FRAGMENT = (
        "s7plus-bad-fragment",
        "an S7comm-plus message cut short or with stray bytes",
    )
    TOO_MANY_PENDING = (
        "too-many-pending",
        "more unanswered requests than the cap, once per connection",
    )
    TRUNCATED_STREAM = "truncated-stream", "the connection ended inside a PDU"
    S7_DECODE_ERROR = "s7-decode-error", "a decoder bug caught; the direction resynchronises"
