"""The anomaly codes (``error.type``) of the OPC UA dissector: a closed set."""

from __future__ import annotations

from sensor.protocols.schema import ProtocolAnomaly


class Anomaly(ProtocolAnomaly):
    BAD_HEADER = (
        "opcua-bad-header",
        "bytes skipped to the next UA TCP header (with opcua.skipped_bytes)",
    )
    CHUNK_TOO_LARGE = (
        "opcua-chunk-too-large",
        "a chunk beyond the negotiated buffer size, or beyond limits.max_buffer (skipped)",
    )
    MESSAGE_TOO_LARGE = (
        "opcua-message-too-large",
        "a message beyond the negotiated MaxMessageSize (still decoded) or max_buffer (dropped)",
    )
    TOO_MANY_CHUNKS = (
        "opcua-too-many-chunks",
        "beyond the negotiated MaxChunkCount, or too many messages in reassembly (dropped)",
    )
    LOST_CHUNK = "opcua-lost-chunk", "a gap inside a chunk or message"
    MALFORMED_BODY = (
        "opcua-malformed-body",
        "a body that does not follow the encoding; the fields read before it stay",
    )
    RESPONSE_MISMATCH = (
        "opcua-response-mismatch",
        "an answer of another service for a pending request id",
    )
    PENDING_OVERFLOW = "opcua-pending-overflow", "more unanswered requests than the cap"
    BUFFER_OVERFLOW = "opcua-buffer-overflow", "bytes without a complete chunk beyond the cap"
    TRUNCATED = "opcua-truncated", "the connection ended inside a chunk or message"
    INTERNAL_ERROR = "opcua-internal-error", "a dissector bug caught; the stream resynchronises"
