"""Generated hostile captures for the resource-limit tests and bench (plain ``struct``, fast).

Hand-built bytes, on purpose: a SYN flood and a never-completing PDU are what an attacker
sends, not what a real stack does. The real Modbus traffic mixed into the flood is taken
unchanged from the pymodbus captures in ``pcaps/modbus/``.
"""

from __future__ import annotations

import struct
from pathlib import Path

from sensor.capture import CaptureReader
from tests.support import REPO

PCAPS = REPO / "pcaps"
_ETH = b"\x02\x00\x00\x00\x00\x02" + b"\x02\x00\x00\x00\x00\x01" + b"\x08\x00"
_REC = struct.Struct("<IIII")
_IP = struct.Struct("!BBHHHBBH4s4s")
_TCP = struct.Struct("!HHIIBBHHH")


def pcap_header(linktype: int = 1) -> bytes:
    return struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, linktype)


def tcp_frame(
    src: bytes,
    dst: bytes,
    sport: int,
    dport: int,
    seq: int,
    ack: int,
    flags: int,
    payload: bytes = b"",
) -> bytes:
    """Ethernet + IPv4 + TCP (checksums left zero: icsmon does not verify them, as a sensor must not)."""
    tcp = _TCP.pack(sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, 5 << 4, flags, 65535, 0, 0)
    ip = _IP.pack(0x45, 0, 20 + len(tcp) + len(payload), 0, 0x4000, 64, 6, 0, src, dst)
    return _ETH + ip + tcp + payload


def record(ts: float, frame: bytes) -> bytes:
    sec = int(ts)
    return _REC.pack(sec, int((ts - sec) * 1e6), len(frame), len(frame)) + frame


def real_modbus_frames(
    names: tuple[str, ...] = ("modbus_polling.pcap", "modbus_writes.pcap"),
) -> list[tuple[float, bytes]]:
    """The frames of real pymodbus captures, timestamps rebased to start at 0."""
    frames: list[tuple[float, bytes]] = []
    for name in names:
        got = [(ts, data) for ts, _lt, data in CaptureReader(PCAPS / "modbus" / name)]
        t0 = got[0][0]
        base = frames[-1][0] + 0.001 if frames else 0.0
        frames += [(base + ts - t0, data) for ts, data in got]
    return frames


def syn_flood(
    path: Path,
    flows: int,
    mix: list[tuple[float, bytes]] | None = None,
    t0: float = 1_800_000_000.0,
) -> int:
    """``flows`` SYNs to 10.20.0.10:502, each from its own address/port, with the frames of
    ``mix`` spread evenly through the flood (in their order). Returns the number of packets."""
    mix = mix or []
    dst = bytes([10, 20, 0, 10])
    every = max(1, flows // (len(mix) + 1)) if mix else flows + 1
    out = [pcap_header()]
    n = 0
    m = 0
    ts = t0
    with path.open("wb") as f:
        for i in range(flows):
            src = struct.pack("!I", 0x0A000000 | ((0x400000 + i) & 0xFFFFFF))
            out.append(record(ts, tcp_frame(src, dst, 1024 + i % 60000, 502, i * 7919, 0, 0x02)))
            n += 1
            ts += 0.00001
            if m < len(mix) and (i + 1) % every == 0:
                out.append(record(ts, mix[m][1]))
                m += 1
                n += 1
            if len(out) >= 8192:
                f.write(b"".join(out))
                out.clear()
        for _ts, frame in mix[m:]:
            ts += 0.00001
            out.append(record(ts, frame))
            n += 1
        f.write(b"".join(out))
    return n


def handshake(
    client: bytes, server: bytes, cport: int, sport: int, ts: float
) -> tuple[list[bytes], int, int]:
    """A SYN, SYN-ACK, ACK; returns the records and the next client and server sequence numbers."""
    cs, ss = 1000, 5000
    recs = [
        record(ts, tcp_frame(client, server, cport, sport, cs, 0, 0x02)),
        record(ts + 0.0001, tcp_frame(server, client, sport, cport, ss, cs + 1, 0x12)),
        record(ts + 0.0002, tcp_frame(client, server, cport, sport, cs + 1, ss + 1, 0x10)),
    ]
    return recs, cs + 1, ss + 1


def trickle(
    path: Path, kind: str, total_bytes: int, segment: int = 1400, t0: float = 1_800_000_000.0
) -> int:
    """One connection that never completes a PDU, ``total_bytes`` of client payload:

    - ``cotp``: TPKT + COTP DT segments to port 102 without the EOT bit (the S7 PDU never ends);
    - ``opcua``: a real HEL/OPN exchange (policy None), then MSG intermediate chunks of one
      request id that never get their final chunk.
    """
    client, server = bytes([10, 1, 0, 2]), bytes([10, 1, 0, 1])
    sport = {"cotp": 102, "opcua": 4840}[kind]
    recs, cseq, sseq = handshake(client, server, 40000, sport, t0)
    ts = t0 + 0.001
    out = [pcap_header(), *recs]
    sent = 0
    n = 3
    chan = tok = 0
    if kind == "opcua":
        # the real asyncua HEL/ACK/OPN exchange (security policy None) from opcua_chunked.pcap,
        # so that the MSG chunks below are reassembled (they are ignored when the policy is unknown)
        from tests.hardening.fuzz.common import tcp_segments

        segs = next(iter(tcp_segments(PCAPS / "opcua" / "opcua_chunked.pcap").values()))
        for to_server, payload in segs[:4]:
            if to_server:
                out.append(
                    record(ts, tcp_frame(client, server, 40000, sport, cseq, sseq, 0x18, payload))
                )
                cseq += len(payload)
            else:
                out.append(
                    record(ts, tcp_frame(server, client, sport, 40000, sseq, cseq, 0x18, payload))
                )
                sseq += len(payload)
            ts += 0.0005
            n += 1
        msg = next(p for t, p in segs if t and p[:3] == b"MSG")
        chan, tok = struct.unpack_from("<II", msg, 8)
    with path.open("wb") as f:
        while sent < total_bytes:
            if kind == "cotp":
                body = b"\x02\xf0\x00" + b"\x32" * (segment - 7)  # COTP DT, TPDU nr 0, no EOT
                payload = b"\x03\x00" + struct.pack("!H", len(body) + 4) + body
            else:
                body = struct.pack("<IIII", chan, tok, 100 + n, 77) + b"\xaa" * (segment - 24)
                payload = b"MSGC" + struct.pack("<I", 8 + len(body)) + body
            out.append(
                record(ts, tcp_frame(client, server, 40000, sport, cseq, sseq, 0x18, payload))
            )
            cseq += len(payload)
            sent += len(payload)
            ts += 0.0005
            n += 1
            if len(out) >= 4096:
                f.write(b"".join(out))
                out.clear()
        f.write(b"".join(out))
    return n
