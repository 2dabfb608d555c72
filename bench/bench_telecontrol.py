"""DNP3 and IEC 60870-5-104 decoding benchmark: icsmon's parsers and engine against
``tshark -T fields``, scapy and a bare struct pass, measured in one run.

    .venv/bin/python bench/bench_telecontrol.py                     # both protocols
    .venv/bin/python bench/bench_telecontrol.py --protocol iec104 --copies 40
    .venv/bin/python bench/bench_telecontrol.py --shared ../shared/pcaps/public --keep

1. Builds one large capture per protocol from every published capture of its folder
   (``<shared>/dnp3``, ``<shared>/iec104``) and every capture made here (``pcaps/dnp3``,
   ``pcaps/iec104``): the frames of the protocol's port (TCP and, for DNP3, UDP 20000; other
   traffic in the published files is left out) over Ethernet and IPv4, the whole set repeated
   ``--copies`` times. Each copy moves both addresses of every frame into its own /16
   (``10.<copy>.x.y``: the connections of two copies never mix) and its timestamps after the
   previous copy's (idle gaps over 60 s cut to 60 s). IPv4 checksums are not recomputed (no contender checks them).
2. Times each contender on that file (wall clock, this machine, this run):
   - parser: the protocol's ``Parser`` alone, fed the exact byte chunks, gaps and datagrams
     the engine hands it for every connection of the file (recorded once beforehand):
     framing, checksums (DNP3), reassembly, decoding, pairing, records;
   - engine: ``Engine(EngineConfig()).replay([FILE])``, events built and discarded (capture
     reading, packet decoding, flows, TCP reassembly, the parser, ECS events, assets): the
     path ``icsmon replay`` and ``icsmon sense`` run;
   - tshark: ``tshark -r FILE -Y <proto> -T fields -e ...`` (DNP3: ``dnp3.src``,
     ``dnp3.dst``, ``dnp3.al.func``; IEC 104: ``iec60870_104.type``,
     ``iec60870_asdu.typeid``, ``iec60870_asdu.causetx``, ``iec60870_asdu.addr``), output read
     and counted; start-up included (the file is large enough for it not to matter);
   - scapy: ``PcapReader`` over the first ``--scapy-packets`` frames, extrapolated to the
     file: IEC 104 with ``scapy.contrib.scada.iec104`` bound to TCP 2404 (each APDU's fields
     read); DNP3 has no scapy layer, so Ethernet/IP/TCP/UDP up to the payload only;
   - bare: plain Python reading the file with ``struct``: per frame the ports, and per
     payload the link header (DNP3: start, length, control, addresses) or the APCI (IEC 104:
     start, length, control octet) of every frame in it, nothing else.
3. Prints seconds, frames/s and each contender's ratio to tshark. The target: each parser at
   least 3x ``tshark -T fields`` (ratio = tshark's seconds / the parser's seconds for the same
   file). No assertion: numbers, not a test.
"""

from __future__ import annotations

import argparse
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from sensor import COMPILED_IN_USE  # noqa: E402
from sensor.capture import CaptureReader  # noqa: E402
from sensor.engine import Engine, EngineConfig  # noqa: E402
from sensor.protocols import dnp3, iec104  # noqa: E402

PYTHON = sys.executable
MODULES = {"dnp3": dnp3, "iec104": iec104}
PORTS = {"dnp3": 20000, "iec104": 2404}
TSHARK = {
    "dnp3": ("dnp3", ["dnp3.src", "dnp3.dst", "dnp3.al.func"]),
    "iec104": (
        "iec60870_104",
        [
            "iec60870_104.type",
            "iec60870_asdu.typeid",
            "iec60870_asdu.causetx",
            "iec60870_asdu.addr",
        ],
    ),
}
_PCAP_HEADER = struct.Struct("<IHHiIII")
_RECORD = struct.Struct("<IIII")

Frame = tuple[float, bytes]


# -- the large capture ------------------------------------------------------------------


def _port_of(frame: bytes) -> tuple[int, int] | None:
    """(ip protocol, the protocol port at either end) of an Ethernet/IPv4 TCP or UDP frame."""
    if len(frame) < 34 or frame[12:14] != b"\x08\x00" or frame[14] >> 4 != 4:
        return None
    proto = frame[23]
    if proto not in (6, 17):
        return None
    t = 14 + (frame[14] & 0x0F) * 4
    if len(frame) < t + 4:
        return None
    sport, dport = struct.unpack_from("!HH", frame, t)
    return proto, sport if sport in PORTS.values() else dport


def templates(protocol: str, shared: Path) -> list[list[Frame]]:
    """The frames of the protocol's port in each published and own capture."""
    port = PORTS[protocol]
    files = sorted((shared / protocol).glob("*.pcap*")) + sorted(
        (REPO / "pcaps" / protocol).glob("*.pcap")
    )
    out = []
    for path in files:
        frames = []
        for ts, link, data in CaptureReader(path):
            got = _port_of(bytes(data)) if link == 1 else None
            if got is not None and got[1] == port and (got[0] == 6 or protocol == "dnp3"):
                frames.append((ts, bytes(data)))
        if frames:
            out.append(frames)
    return out


def build_capture(path: Path, parts: list[list[Frame]], copies: int) -> tuple[int, int]:
    """Write the large capture; return (frames, bytes of frames)."""
    frames = total = 0
    clock = 1_700_000_000.0
    with path.open("wb") as fh:
        fh.write(_PCAP_HEADER.pack(0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        for copy in range(copies):
            for part in parts:
                previous = part[0][0]
                offset = 0.0
                for ts, data in part:
                    frame = bytearray(data)
                    for at in (26, 30):  # both addresses into this copy's 10.<copy>/16
                        frame[at] = 10
                        frame[at + 1] = copy & 0xFF
                    # time moves as in the capture, idle gaps cut to 60 s (some published
                    # files span years)
                    offset += min(max(ts - previous, 0.0), 60.0)
                    previous = ts
                    stamp = clock + offset
                    sec = int(stamp)
                    fh.write(_RECORD.pack(sec, int((stamp - sec) * 1e6), len(frame), len(frame)))
                    fh.write(frame)
                    frames += 1
                    total += len(frame)
                clock += offset + 600.0  # the next part after this one's flows went idle
    return frames, total


# -- contenders ------------------------------------------------------------------------


Call = tuple[str, bool, bytes, float, int]  # (feed|gap|datagram, to_server, data, ts, size)


def record_calls(protocol: str, path: Path) -> list[list[Call]]:
    """What the engine hands each parser of the protocol, per connection or UDP flow."""
    module = MODULES[protocol]
    connections: list[list[Call]] = []
    original = module.Parser

    class Recording(original):  # type: ignore[misc, valid-type]
        def __init__(self, *args: object) -> None:
            super().__init__(*args)
            self.calls: list[Call] = []
            connections.append(self.calls)

        def feed(self, to_server: bool, data: bytes, ts: float) -> list[dict]:
            self.calls.append(("feed", to_server, bytes(data), ts, 0))
            return super().feed(to_server, data, ts)

        def gap(self, to_server: bool, ts: float, size: int) -> list[dict]:
            self.calls.append(("gap", to_server, b"", ts, size))
            return super().gap(to_server, ts, size)

        def datagram(self, to_server: bool, data: bytes, ts: float) -> list[dict]:
            self.calls.append(("datagram", to_server, bytes(data), ts, 0))
            return super().datagram(to_server, data, ts)

    module.Parser = Recording
    if protocol == "dnp3":
        module.DatagramParser = Recording
    try:
        for _ in Engine(EngineConfig()).replay([path]):
            pass
    finally:
        module.Parser = original
        if protocol == "dnp3":
            module.DatagramParser = original
    return connections


def run_parser(protocol: str, connections: list[list[Call]]) -> tuple[float, int]:
    parser_class = MODULES[protocol].Parser
    records = 0
    start = time.perf_counter()
    for calls in connections:
        parser = parser_class()
        feed, gap = parser.feed, parser.gap
        last = 0.0
        for kind, to_server, data, ts, size in calls:
            if kind == "feed":
                records += len(feed(to_server, data, ts))
            elif kind == "gap":
                records += len(gap(to_server, ts, size))
            else:
                records += len(parser.datagram(to_server, data, ts))
            last = ts
        records += len(parser.close(last))
    return time.perf_counter() - start, records


def run_engine(protocol: str, path: Path) -> tuple[float, int]:
    start = time.perf_counter()
    events = sum(1 for _ in Engine(EngineConfig()).replay([path]))
    return time.perf_counter() - start, events


def run_tshark(protocol: str, path: Path) -> tuple[float, int] | None:
    tshark = shutil.which("tshark")
    if not tshark:
        return None
    display, fields = TSHARK[protocol]
    cmd = [tshark, "-n", "-r", str(path), "-Y", display, "-T", "fields"]
    for name in fields:
        cmd += ["-e", name]
    start = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, check=True).stdout
    elapsed = time.perf_counter() - start
    pdus = sum(len(line.split(b"\t", 1)[0].split(b",")) for line in out.splitlines() if line)
    return elapsed, pdus


SCAPY_SCRIPT = r"""
import sys, time
from scapy.utils import PcapReader
from scapy.layers.inet import TCP, UDP
protocol, path, limit = sys.argv[1], sys.argv[2], int(sys.argv[3])
if protocol == "iec104":
    from scapy.contrib.scada.iec104 import IEC104_APDU  # noqa: F401  binds TCP 2404
start = time.perf_counter()  # after the imports: scapy's start-up is not extrapolated
n = seen = 0
for pkt in PcapReader(path):
    layer = pkt.getlayer(TCP) or pkt.getlayer(UDP)
    if layer is not None:
        payload = layer.payload
        while payload is not None and payload.name != "NoPayload":  # every APDU's fields
            for field in payload.fields_desc:
                payload.getfieldval(field.name)
            seen += 1
            payload = payload.payload
    n += 1
    if n >= limit:
        break
print(n, seen, time.perf_counter() - start)
"""

BARE_SCRIPT = r"""
import struct, sys, time
start = time.perf_counter()
protocol, path = sys.argv[1], sys.argv[2]
port = 20000 if protocol == "dnp3" else 2404
record = struct.Struct("<IIII").unpack_from
ports = struct.Struct("!HH").unpack_from
dnp3_header = struct.Struct("<BBBBHH").unpack_from
data = open(path, "rb").read()
pos, end, frames, units = 24, len(data), 0, 0
while pos + 16 <= end:
    _s, _u, caplen, _l = record(data, pos)
    f = pos + 16
    pos = f + caplen
    frames += 1
    if data[f + 12 : f + 14] != b"\x08\x00":
        continue
    ihl = (data[f + 14] & 0x0F) * 4
    t = f + 14 + ihl
    proto = data[f + 23]
    sport, dport = ports(data, t)
    if sport != port and dport != port:
        continue
    p = t + ((data[t + 12] >> 4) * 4 if proto == 6 else 8)
    while p + 6 <= pos:
        if protocol == "dnp3":
            if p + 10 > pos:
                break
            _a, _b, length, control, dst, src = dnp3_header(data, p)
            user = length - 5
            p += 10 + user + 2 * ((user + 15) // 16)
        else:
            length, control = data[p + 1], data[p + 2]
            p += 2 + length
        units += 1
print(frames, units, time.perf_counter() - start)
"""


def run_child(script: str, *args: str) -> tuple[float, list[str]]:
    start = time.perf_counter()
    out = subprocess.run([PYTHON, "-c", script, *args], capture_output=True, text=True, check=True)
    return time.perf_counter() - start, out.stdout.split()


def write_subset(src: Path, dst: Path, frames: int) -> int:
    data = src.read_bytes()
    pos, n = 24, 0
    while pos + 16 <= len(data) and n < frames:
        pos += 16 + _RECORD.unpack_from(data, pos)[2]
        n += 1
    dst.write_bytes(data[:pos])
    return n


# -- main ------------------------------------------------------------------------------


def bench(protocol: str, shared: Path, copies: int, scapy_frames: int, workdir: Path) -> None:
    parts = templates(protocol, shared)
    path = workdir / f"{protocol}_large.pcap"
    frames, size = build_capture(path, parts, copies)
    print(
        f"\n{protocol}: {len(parts)} captures x {copies} copies -> {path.name}: {frames:,} frames,"
        f" {size / 1e6:.1f} MB of frames"
    )
    connections = record_calls(protocol, path)
    rows: list[tuple[str, float, str]] = []
    seconds, records = run_parser(protocol, connections)
    rows.append(("parser", seconds, f"{records:,} records, {len(connections):,} connections"))
    seconds, events = run_engine(protocol, path)
    rows.append(("engine", seconds, f"{events:,} events"))
    tshark = run_tshark(protocol, path)
    if tshark is not None:
        rows.append(("tshark -T fields", tshark[0], f"{tshark[1]:,} PDUs"))
    subset = workdir / f"{protocol}_scapy.pcap"
    n = write_subset(path, subset, scapy_frames)
    wall, (done, seen, inner) = run_child(SCAPY_SCRIPT, protocol, str(subset), str(n))
    scapy_seconds = float(inner) * frames / max(int(done), 1)
    layer = "IEC 104 APDUs" if protocol == "iec104" else "payloads (no DNP3 layer in scapy)"
    rows.append((f"scapy (x{frames / max(int(done), 1):.0f})", scapy_seconds, f"{seen} {layer}"))
    _wall, (bare_frames, units, bare_inner) = run_child(BARE_SCRIPT, protocol, str(path))
    rows.append(("bare struct pass", float(bare_inner), f"{int(units):,} link frames / APDUs"))
    reference = tshark[0] if tshark is not None else None
    print(f"{'contender':<22} {'seconds':>9} {'frames/s':>11} {'x tshark':>9}  what")
    for name, secs, what in rows:
        ratio = f"{reference / secs:.2f}" if reference else "-"
        print(f"{name:<22} {secs:>9.3f} {frames / secs:>11,.0f} {ratio:>9}  {what}")
    if reference:
        parser_ratio = reference / rows[0][1]
        verdict = "met" if parser_ratio >= 3 else "MISSED"
        print(f"target: parser >= 3x tshark -T fields: {parser_ratio:.2f}x ({verdict})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--protocol", choices=("dnp3", "iec104", "both"), default="both")
    ap.add_argument("--shared", type=Path, default=REPO.parent / "shared" / "pcaps" / "public")
    ap.add_argument("--copies", type=int, default=60, help="repetitions of the capture set")
    ap.add_argument("--scapy-packets", type=int, default=5000, help="scapy runs on this many")
    ap.add_argument("--keep", action="store_true", help="keep the built captures (printed)")
    args = ap.parse_args()
    if not args.shared.is_dir():
        sys.exit(f"error: {args.shared}: no published captures (--shared DIR)")
    print(
        f"icsmon sensor {'compiled (mypyc)' if COMPILED_IN_USE else 'from source'};"
        f" {os.cpu_count()} CPUs; python {sys.version.split()[0]}"
    )
    workdir = Path(tempfile.mkdtemp(prefix="icsmon-bench-telecontrol-"))
    try:
        for protocol in ("dnp3", "iec104") if args.protocol == "both" else (args.protocol,):
            bench(protocol, args.shared, args.copies, args.scapy_packets, workdir)
    finally:
        if args.keep:
            print(f"captures kept in {workdir}")
        else:
            shutil.rmtree(workdir)


if __name__ == "__main__":
    main()
