"""The anomaly codes (``error.type``) of the DNP3 dissector: a closed set. Framing errors are
reported once per episode; the parser then skips to the next ``05 64`` start whose header
checksum is good."""

from __future__ import annotations

from sensor.protocols.schema import ProtocolAnomaly


class Anomaly(ProtocolAnomaly):
    NOT_DNP3 = "not-dnp3", "the first bytes of a direction or datagram are not a DNP3 link frame"
    BAD_START = "bad-start", "bytes between link frames that do not start one (skipped)"
    BAD_HEADER_CRC = (
        "bad-header-crc",
        "a link header whose checksum is wrong (the frame is skipped)",
    )
    BAD_LENGTH = "bad-length", "a link header whose length is below the 5 octets it must count"
    BAD_CRC = (
        "bad-crc",
        "a user-data block of a link frame whose checksum is wrong (the frame's data is dropped)",
    )
    TRANSPORT_SEQUENCE = (
        "transport-sequence",
        "a transport segment out of sequence: a gap, a repeat, or a continuation without a first",
    )
    FRAGMENT_TOO_LONG = (
        "fragment-too-long",
        "an application fragment that grows past the reassembly cap without its final segment",
    )
    MALFORMED_APPLICATION = (
        "malformed-application",
        "an application fragment whose header or objects do not match their layout",
    )
    BUFFER_OVERFLOW = "buffer-overflow", "more than the buffer cap without a complete link frame"
    TRUNCATED_FRAME = (
        "truncated-frame",
        "a link frame cut short: by the end of a datagram or of the connection",
    )
    PENDING_OVERFLOW = (
        "pending-overflow",
        "more unanswered requests than the cap: the oldest is reported unanswered",
    )
