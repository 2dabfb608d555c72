"""The anomaly codes (``error.type``) of the EtherNet/IP dissector: a closed set. Framing
errors are reported once per episode; the parser then scans for the next plausible
encapsulation header."""

from __future__ import annotations

from sensor.protocols.schema import ProtocolAnomaly


class Anomaly(ProtocolAnomaly):
    NOT_ENIP = (
        "not-enip",
        "the first bytes of a direction that are not an encapsulation header",
    )
    BAD_HEADER = (
        "bad-header",
        "later bytes that are not an encapsulation header (skipped to the next plausible one)",
    )
    UNKNOWN_COMMAND = "unknown-command", "an encapsulation command outside the specification"
    BAD_CPF = (
        "bad-cpf",
        "common packet format items that do not fit the encapsulation data, or the wrong items",
    )
    MALFORMED_CIP = (
        "malformed-cip",
        "a CIP message whose header, path, service data or embedded requests do not parse",
    )
    BAD_EPATH = "bad-epath", "an EPATH segment that is unknown or runs past the path size"
    MALFORMED_REPLY = (
        "malformed-reply",
        "a ListIdentity, ListServices or RegisterSession body that does not parse",
    )
    BUFFER_OVERFLOW = (
        "buffer-overflow",
        "more than the buffer cap announced by one encapsulation header",
    )
    BAD_IO = (
        "bad-io",
        "a datagram on the implicit I/O port without a sequenced address item, once per flow",
    )
    TOO_MANY_PENDING = (
        "too-many-pending",
        "more unanswered requests than the cap, once per connection (oldest reported unanswered)",
    )
    TRUNCATED_PDU = "truncated-pdu", "the connection ended inside an encapsulation message"
    DECODE_ERROR = "decode-error", "a decoder bug caught; the direction resynchronises"
