"""The anomaly codes (``error.type``) of the IEC 60870-5-104 dissector: a closed set. Framing
errors are reported once per episode; the parser then skips to the next plausible APCI
(``68``, a length of 4 to 253, a valid control field)."""

from __future__ import annotations

from sensor.protocols.schema import ProtocolAnomaly


class Anomaly(ProtocolAnomaly):
    NOT_IEC104 = "not-iec104", "the first bytes of a direction are not an IEC 104 APCI"
    BAD_APCI = "bad-apci", "later bytes that are not an APCI (skipped to the next plausible one)"
    BAD_U_FRAME = "bad-u-frame", "a U-format APDU whose control field names no single function"
    SEQUENCE_GAP = (
        "sequence-gap",
        "an I-format APDU whose send sequence number skips ahead of the next expected one",
    )
    SEQUENCE_DUPLICATE = (
        "sequence-duplicate",
        "an I-format APDU whose send sequence number was already seen (a repeat or a replay)",
    )
    MALFORMED_ASDU = (
        "malformed-asdu",
        "an ASDU shorter or longer than its type, object count and sequence bit make it",
    )
    BUFFER_OVERFLOW = "buffer-overflow", "more than the buffer cap without a complete APDU"
    TRUNCATED_APDU = "truncated-apdu", "the connection ended inside an APDU"
    PENDING_OVERFLOW = (
        "pending-overflow",
        "more commands awaiting confirmation than the cap: the oldest is reported unanswered",
    )
