"""The anomaly codes (``error.type``) of the Modbus/TCP dissector: a closed set."""

from __future__ import annotations

from sensor.protocols.schema import ProtocolAnomaly


class Anomaly(ProtocolAnomaly):
    NOT_MODBUS = "not-modbus", "the first bytes of a direction that are not a valid MBAP header"
    MBAP_BAD_HEADER = "mbap-bad-header", "later bytes that are not a valid MBAP header (skipped)"
    MBAP_OVERSIZED = (
        "mbap-oversized",
        "an MBAP length above the 254 bytes the specification allows (up to 260 is decoded)",
    )
    MALFORMED_PDU = "malformed-pdu", "a PDU body that does not match its function's layout"
    FUNCTION_MISMATCH = "function-mismatch", "a response whose function differs from the request's"
    BUFFER_OVERFLOW = "buffer-overflow", "more than the buffer cap without a complete MBAP frame"
    TRUNCATED_PDU = "truncated-pdu", "the connection ended inside an MBAP frame"
