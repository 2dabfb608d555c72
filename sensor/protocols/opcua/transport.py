"""UA TCP transport (Part 6): message and chunk headers, the probe, per-direction state,
chunks being reassembled, and complete messages before pairing.

HEL/ACK/ERR/RHE and OPN/MSG/CLO chunks (``F`` final, ``C`` intermediate, ``A`` abort).
Intermediate chunks are reassembled per request id up to the limits negotiated in HEL/ACK,
never beyond ``limits.max_buffer`` bytes per message.
"""

from __future__ import annotations

import re
import struct
from collections import OrderedDict

from sensor.protocols.opcua.services import Body

MESSAGE_TYPES = frozenset((b"HEL", b"ACK", b"ERR", b"RHE", b"OPN", b"MSG", b"CLO"))
SECURE_TYPES = frozenset((b"OPN", b"MSG", b"CLO"))
CHUNK_TYPES = frozenset(b"FCA")
# a header candidate: message type, chunk type, size below 16 MiB (top byte zero)
HEADER_RE = re.compile(rb"(?:MSG|OPN|CLO|HEL|ACK|ERR|RHE)[FCA][\x00-\xff]{3}\x00")
HARD_MAX_CHUNK = 16 << 20  # a declared size above this is not OPC UA, whatever was negotiated
MIN_SIZE = {b"HEL": 32, b"ACK": 28, b"ERR": 16, b"RHE": 16, b"OPN": 24, b"MSG": 24, b"CLO": 24}
MAX_PARTIAL_MESSAGES = 32  # messages being reassembled per direction

NONE_POLICY = "http://opcfoundation.org/UA/SecurityPolicy#None"
# HMAC output length of each policy's symmetric signature: stripped from chunks in clear
SIGNATURE_SIZE = {
    "Basic128Rsa15": 20,
    "Basic256": 20,
    "Basic256Sha256": 32,
    "Aes128_Sha256_RsaOaep": 32,
    "Aes256_Sha256_RsaPss": 32,
}

HDR = struct.Struct("<3scI").unpack_from  # message type, chunk type, size
II = struct.Struct("<II").unpack_from


def header_ok(mtype: bytes, chunk: bytes, size: int) -> bool:
    """A plausible chunk header: known message type, chunk type allowed for it, sane size."""
    if mtype not in MESSAGE_TYPES or chunk[0] not in CHUNK_TYPES:
        return False
    if mtype not in SECURE_TYPES and chunk != b"F":
        return False
    return MIN_SIZE[mtype] <= size <= HARD_MAX_CHUNK


def probe(data: bytes) -> bool:
    """Does ``data`` start with a UA TCP message header (type, chunk type, sane size)?"""
    if len(data) < 8:
        return False
    mtype, chunk, size = HDR(data, 0)
    return header_ok(mtype, chunk, size)


def policy_name(uri: str | None) -> str | None:
    if uri is None:
        return None
    return uri.rsplit("#", 1)[-1] if "#" in uri else uri


class Direction:
    """Per-direction state: byte buffer, resync flag, messages being reassembled, seq tracking."""

    __slots__ = ("buf", "need", "discard", "resync", "partial", "last_seq", "skipped", "lost")

    def __init__(self) -> None:
        self.buf = bytearray()
        self.need = 0  # size of the chunk whose header starts the buffer, when known
        self.discard = 0  # bytes still to drop of a chunk too large to buffer
        self.resync = False
        self.partial: OrderedDict[int, Partial] = OrderedDict()
        self.last_seq: int | None = None
        self.skipped = 0
        self.lost: set[int] = set()  # request ids whose earlier chunks fell into a gap


class Partial:
    __slots__ = ("ts", "parts", "size", "chunks", "info")

    def __init__(self, ts: float, info: dict) -> None:
        self.ts = ts
        self.parts: list[bytes] = []
        self.size = 0
        self.chunks = 0
        self.info = info


class Message:
    """One complete message (all chunks), before pairing."""

    __slots__ = ("ts", "mtype", "info", "body", "aborted")

    def __init__(
        self, ts: float, mtype: str, info: dict, body: Body | None, aborted: bool = False
    ) -> None:
        self.ts = ts
        self.mtype = mtype
        self.info = info  # transport fields: opcua.* keys
        self.body = body
        self.aborted = aborted
