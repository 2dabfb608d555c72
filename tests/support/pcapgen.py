"""Test helpers that re-encode real captured frames: other file formats, byte orders, link
types, VLAN tags, IPv6, fragments, damage. Hand-built bytes for edge cases only."""

from __future__ import annotations

import struct
from pathlib import Path

from sensor.capture import CaptureReader


def frames_of(path: Path) -> list[tuple[float, int, bytes]]:
    return list(CaptureReader(path))


def write_pcap(
    path: Path, frames, linktype: int = 1, order: str = "<", nanos: bool = False
) -> Path:
    magic = 0xA1B23C4D if nanos else 0xA1B2C3D4
    out = [struct.pack(order + "IHHiIII", magic, 2, 4, 0, 0, 65535, linktype)]
    for ts, _lt, data in frames:
        sec = int(ts)
        frac = round((ts - sec) * (1e9 if nanos else 1e6))
        out.append(struct.pack(order + "IIII", sec, frac, len(data), len(data)))
        out.append(data)
    path.write_bytes(b"".join(out))
    return path


def _block(order: str, btype: int, body: bytes) -> bytes:
    body += b"\0" * (-len(body) % 4)
    n = len(body) + 12
    return struct.pack(order + "II", btype, n) + body + struct.pack(order + "I", n)


def pcapng(
    frames_per_iface: list[tuple[int, int | None, list]], order: str = "<", simple: bool = False
) -> bytes:
    """Interfaces: (linktype, tsresol option byte or None, frames); packets interleaved by time."""
    bom = struct.pack(order + "I", 0x1A2B3C4D)
    shb = _block(order, 0x0A0D0D0A, bom + struct.pack(order + "HHq", 1, 0, -1))
    blocks = [shb]
    packets = []
    for idx, (link, tsresol, frames) in enumerate(frames_per_iface):
        opts = b""
        if tsresol is not None:
            opts = (
                struct.pack(order + "HH", 9, 1)
                + bytes([tsresol])
                + b"\0\0\0"
                + struct.pack(order + "HH", 0, 0)
            )
        blocks.append(_block(order, 1, struct.pack(order + "HHI", link, 0, 65535) + opts))
        if tsresol is None:
            scale = 1e6
        elif tsresol & 0x80:
            scale = 2 ** (tsresol & 0x7F)
        else:
            scale = 10**tsresol
        for ts, _lt, data in frames:
            packets.append((ts, idx, scale, data))
    packets.sort(key=lambda p: p[0])
    for ts, idx, scale, data in packets:
        if simple:
            blocks.append(_block(order, 3, struct.pack(order + "I", len(data)) + data))
            continue
        t = round(ts * scale)
        body = (
            struct.pack(order + "IIIII", idx, t >> 32, t & 0xFFFFFFFF, len(data), len(data)) + data
        )
        blocks.append(_block(order, 6, body))
    return b"".join(blocks)


# -- link layers (input: an Ethernet frame) --------------------------------------------


def eth_to_sll(frame: bytes) -> bytes:
    return (
        struct.pack("!HHH6sxxH", 0, 1, 6, frame[6:12], struct.unpack_from("!H", frame, 12)[0])
        + frame[14:]
    )


def eth_to_sll2(frame: bytes) -> bytes:
    etype = struct.unpack_from("!H", frame, 12)[0]
    return struct.pack("!HHIHBB8s", etype, 0, 1, 1, 0, 6, frame[6:12] + b"\0\0") + frame[14:]


def eth_to_raw(frame: bytes) -> bytes:
    return frame[14:]


def eth_to_null(frame: bytes) -> bytes:
    return struct.pack("<I", 2) + frame[14:]


def add_vlan(frame: bytes, *tags: tuple[int, int]) -> bytes:
    """Insert (tpid, vid) tags after the MAC addresses, outermost first."""
    inner = b"".join(struct.pack("!HH", tpid, vid) for tpid, vid in tags)
    return frame[:12] + inner + frame[12:]


def with_udp_ports(frame: bytes, ports: dict[int, int]) -> bytes:
    """An Ethernet/IPv4/UDP frame with its ports renamed by ``ports`` (old -> new) and the
    UDP checksum zeroed (IPv4 allows "no checksum")."""
    ihl = (frame[14] & 0x0F) * 4
    off = 14 + ihl
    sport, dport = struct.unpack_from("!HH", frame, off)
    head = struct.pack("!HH", ports.get(sport, sport), ports.get(dport, dport))
    return frame[:off] + head + frame[off + 4 : off + 6] + b"\0\0" + frame[off + 8 :]
