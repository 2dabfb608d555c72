"""DNP3 data-link layer (IEEE 1815 clause 9): frame boundaries in a byte stream or a datagram,
the checksum of the header and of every 16-octet block of user data.

A frame: ``05 64``, LEN (octets from CONTROL to the end of user data, CRCs excluded: 5 + user
data), CONTROL, DESTINATION and SOURCE (little endian), header CRC, then the user data in
blocks of 16 octets, each followed by its CRC (the last block may be shorter).
"""

from __future__ import annotations

START = b"\x05\x64"
HEADER = 10  # start, length, control, destination, source, CRC
MIN_LEN = 5
BROADCAST = 0xFFFD  # 0xFFFD-0xFFFF: broadcast addresses (0xFFFD: confirm optional ...)
SELF_ADDRESS = 0xFFFC

# CRC-16/DNP: polynomial 0x3D65 reflected (0xA6BC), initial 0, complemented
_TABLE: list[int] = []
for _i in range(256):
    _c = _i
    for _ in range(8):
        _c = (_c >> 1) ^ 0xA6BC if _c & 1 else _c >> 1
    _TABLE.append(_c)
CRC_TABLE: tuple[int, ...] = tuple(_TABLE)

PRIMARY_FUNCTIONS: dict[int, str] = {
    0: "reset_link_states",
    1: "reset_user_process",
    2: "test_link_states",
    3: "confirmed_user_data",
    4: "unconfirmed_user_data",
    9: "request_link_status",
}
SECONDARY_FUNCTIONS: dict[int, str] = {
    0: "ack",
    1: "nack",
    11: "link_status",
    14: "link_not_functioning",
    15: "not_supported",
}


def crc(data: bytes, start: int, end: int) -> int:
    """CRC-16/DNP of ``data[start:end]``."""
    c = 0
    table = CRC_TABLE
    for i in range(start, end):
        c = (c >> 8) ^ table[(c ^ data[i]) & 0xFF]
    return ~c & 0xFFFF


def frame_size(length: int) -> int:
    """Octets on the wire of a frame whose LEN field is ``length`` (>= 5)."""
    user = length - 5
    return HEADER + user + 2 * ((user + 15) // 16)


def header_ok(buf: bytes, pos: int) -> bool:
    """A start, a sane length and a good header CRC at ``pos`` (10 octets available)."""
    return (
        buf[pos] == 0x05
        and buf[pos + 1] == 0x64
        and buf[pos + 2] >= MIN_LEN
        and crc(buf, pos, pos + 8) == buf[pos + 8] | buf[pos + 9] << 8
    )


def user_data(buf: bytes, pos: int, length: int) -> tuple[bytes, int]:
    """The user data of the frame at ``pos`` without its CRCs, and the number of blocks whose
    CRC is wrong (0: all good)."""
    user = length - 5
    out = bytearray()
    bad = 0
    p = pos + HEADER
    while user > 0:
        n = 16 if user > 16 else user
        end = p + n
        if crc(buf, p, end) != buf[end] | buf[end + 1] << 8:
            bad += 1
        out += buf[p:end]
        p = end + 2
        user -= n
    return bytes(out), bad


def function_name(control: int) -> str:
    fc = control & 0x0F
    if control & 0x40:
        return PRIMARY_FUNCTIONS.get(fc, f"unknown_primary_{fc}")
    return SECONDARY_FUNCTIONS.get(fc, f"unknown_secondary_{fc}")


def probe(data: bytes) -> bool:
    """Starts with a DNP3 link header whose checksum is good (for non-standard ports)."""
    return len(data) >= HEADER and header_ok(data, 0)


def datagram_to_server(data: bytes) -> bool | None:
    """The DIR bit of the first frame: set on frames from the master (the client side)."""
    if len(data) >= HEADER and header_ok(data, 0):
        return bool(data[3] & 0x80)
    return None
