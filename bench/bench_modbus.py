"""Modbus/TCP decoding benchmark: icsmon against tshark, scapy and a bare struct pass.

    .venv/bin/python bench/bench_modbus.py                    # 1,000,000 packets, all tools
    .venv/bin/python bench/bench_modbus.py --packets 200000 --keep --only engine,bare
    .venv/bin/python bench/bench_modbus.py --repeat 3           # best of three rounds

1. Builds a large capture by repeating the conversations recorded from pymodbus in
   pcaps/modbus/ (the five captures of make_captures.py): each conversation keeps one client
   address, each repetition gets its own client port (so every repetition is a separate TCP
   connection), 64 connections are interleaved at a time, and
   timestamps move forward. Checksums are recomputed for the new addresses.
2. Runs each contender as a child process on that file and measures wall-clock packets/s
   (all packets in the file, the same denominator for everyone) and peak RSS
   (the child's own ``VmHWM``, bench/childproc.py):
   - icsmon engine: ``Engine(EngineConfig()).replay([FILE])``, events built and discarded
     (decode, reassembly, request/response pairing, ECS events, asset tracking);
   - icsmon engine, from source: the same with ``ICSMON_PURE=1``, the Python source instead
     of the compiled build of the per-packet modules (setup.py);
   - icsmon CLI: ``icsmon replay FILE --events --format jsonl`` to /dev/null, no rules,
     no store (adds nesting and JSON serialisation of every event);
   - tshark: ``tshark -r FILE -Y mbtcp -T fields -e mbtcp.trans_id -e modbus.func_code``
     to /dev/null;
   - scapy: ``PcapReader`` with ``scapy.contrib.modbus`` bound, reading the function code,
     on the first ``--scapy-packets`` packets only (extrapolated: it is ~100x slower);
   - bare: plain Python reading the file in 1 MiB blocks with ``struct``, slicing out the
     MBAP header and function code of every TCP/502 payload and nothing else.
3. Prints a table and the ratios against the targets. No assertion: numbers, not a test.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from childproc import run_measured

REPO = Path(__file__).resolve().parent.parent
TEMPLATES = REPO / "pcaps" / "modbus"
# The pymodbus conversations made by pcaps/modbus/make_captures.py, named so that captures
# added to that folder later do not change what this benchmark measures.
TEMPLATE_FILES = (
    "modbus_polling.pcap",
    "modbus_writes.pcap",
    "modbus_exceptions.pcap",
    "modbus_identification.pcap",
    "modbus_diagnostics.pcap",
)
PYTHON = sys.executable
CONCURRENT = 64  # connections interleaved in the built capture
SERVER_IP = bytes([10, 20, 0, 10])

_PCAP_HEADER = struct.Struct("<IHHiIII")
_RECORD = struct.Struct("<IIII")


# -- building the capture ------------------------------------------------------------------


def _fold(total: int) -> int:
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def _words(data: bytes) -> int:
    """One's-complement-style sum of 16-bit big-endian words (odd length padded)."""
    if len(data) % 2:
        data += b"\x00"
    return sum(struct.unpack(f"!{len(data) // 2}H", data))


@dataclass(slots=True)
class TemplatePacket:
    offset: float  # seconds since the start of its connection
    frame: bytearray  # Ethernet + IPv4 (no options) + TCP; addresses/ports/checksums rewritten
    client_is_src: bool
    ip_fixed: int  # word sum of the IP header without addresses and checksum
    tcp_fixed: int  # word sum of pseudo-header length/proto + TCP without ports/checksum


def read_pcap(path: Path) -> list[tuple[float, bytes]]:
    data = path.read_bytes()
    magic, _, _, _, _, _, linktype = _PCAP_HEADER.unpack_from(data)
    if magic != 0xA1B2C3D4 or linktype != 1:
        raise SystemExit(f"{path}: expected a little-endian microsecond Ethernet pcap")
    pos, out = _PCAP_HEADER.size, []
    while pos + 16 <= len(data):
        sec, usec, caplen, _ = _RECORD.unpack_from(data, pos)
        out.append((sec + usec * 1e-6, data[pos + 16 : pos + 16 + caplen]))
        pos += 16 + caplen
    return out


def load_templates(files: tuple[str, ...] = TEMPLATE_FILES) -> list[list[TemplatePacket]]:
    """Every TCP connection of the template captures as a list of packets."""
    conversations: dict[tuple, list[tuple[float, bytes, bool]]] = {}
    for path in sorted(TEMPLATES / name for name in files):
        for ts, frame in read_pcap(path):
            if (
                len(frame) < 54
                or frame[12:14] != b"\x08\x00"
                or frame[14] != 0x45
                or frame[23] != 6
            ):
                continue  # only plain IPv4/TCP frames are templated
            sport, dport = struct.unpack_from("!HH", frame, 34)
            to_server = dport == 502
            client = (frame[26:30], sport) if to_server else (frame[30:34], dport)
            conversations.setdefault((path.name, client), []).append((ts, frame, to_server))
    flows = []
    for packets in conversations.values():
        start = packets[0][0]
        flow = []
        for ts, frame, to_server in packets:
            ip_total = struct.unpack_from("!H", frame, 16)[0]
            frame = bytearray(frame[: 14 + ip_total])  # drop Ethernet padding, if any
            ip_fixed = _words(bytes(frame[14:24]))  # version/IHL .. TTL/protocol
            tcp = bytes(frame[34:])
            tcp_len = len(tcp)
            tcp_wo = tcp[4:16] + b"\x00\x00" + tcp[18:]  # without ports and checksum
            tcp_fixed = _words(tcp_wo) + 6 + tcp_len
            flow.append(TemplatePacket(ts - start, frame, to_server, ip_fixed, tcp_fixed))
        flows.append(flow)
    if not flows:
        raise SystemExit(f"no Modbus/TCP templates in {TEMPLATES}")
    return flows


def build_capture(path: Path, packets: int, files: tuple[str, ...] = TEMPLATE_FILES) -> int:
    """Write at least ``packets`` packets to ``path``; return the count written (the
    conversations of ``files``, by default all five)."""
    templates = load_templates(files)
    pack_record = _RECORD.pack
    pack_h = struct.Struct("!H").pack_into
    server_words = _words(SERVER_IP)
    written = 0
    rep = 0
    batch_start = 1_800_000_000.0
    with path.open("wb") as f:
        f.write(_PCAP_HEADER.pack(0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        while written < packets:
            batch: list[tuple[float, bytes]] = []
            span = 0.0
            for slot in range(CONCURRENT):
                flow = templates[rep % len(templates)]
                # one client per template conversation, a new port per repetition: the
                # issue's "repeated flows with shifted ports and timestamps"
                client_ip = bytes([10, 10, 0, 1 + rep % len(templates)])
                client_port = 1024 + rep % 64000
                addr_words = _words(client_ip) + server_words
                start = batch_start + slot * 0.0007
                for pkt in flow:
                    frame = bytearray(pkt.frame)
                    if pkt.client_is_src:
                        frame[26:30], frame[30:34] = client_ip, SERVER_IP
                        pack_h(frame, 34, client_port)
                    else:
                        frame[26:30], frame[30:34] = SERVER_IP, client_ip
                        pack_h(frame, 36, client_port)
                    pack_h(frame, 24, 0xFFFF ^ _fold(pkt.ip_fixed + addr_words))
                    tcp_sum = pkt.tcp_fixed + addr_words + 502 + client_port
                    pack_h(frame, 50, 0xFFFF ^ _fold(tcp_sum))
                    batch.append((start + pkt.offset, bytes(frame)))
                span = max(span, slot * 0.0007 + flow[-1].offset)
                rep += 1
            batch.sort(key=lambda item: item[0])
            chunk = []
            for ts, frame in batch:
                sec = int(ts)
                chunk.append(pack_record(sec, int((ts - sec) * 1e6), len(frame), len(frame)))
                chunk.append(frame)
            f.write(b"".join(chunk))
            written += len(batch)
            batch_start += span + 0.01
    return written


# -- the contenders ------------------------------------------------------------------------

ENGINE_SCRIPT = """
import sys
import sensor
from sensor.engine import Engine, EngineConfig
engine = Engine(EngineConfig())
events = 0
for _ in engine.replay([sys.argv[1]]):
    events += 1
print(f"events={events} anomalies={engine.stats['anomalies']} packets={engine.stats['packets']} "
      f"build={'compiled' if sensor.COMPILED_IN_USE else 'source'}", file=sys.stderr)
"""

SCAPY_SCRIPT = """
import sys
from scapy.utils import PcapReader
from scapy.contrib.modbus import ModbusADURequest, ModbusADUResponse  # binds TCP/502
import time
pdus = 0
start = time.perf_counter()  # after the imports: scapy's start-up is not extrapolated
with PcapReader(sys.argv[1]) as reader:
    for pkt in reader:
        adu = pkt.getlayer(ModbusADURequest) or pkt.getlayer(ModbusADUResponse)
        if adu is not None:
            func_code = getattr(adu.payload, "funcCode", None)
            pdus += 1
print(f"pdus={pdus} loop_seconds={time.perf_counter() - start:.3f}", file=sys.stderr)
"""

BARE_SCRIPT = """
import struct, sys
mbap = struct.Struct("!HHHBB").unpack_from
record = struct.Struct("<IIII").unpack_from
ports = struct.Struct("!HH").unpack_from
pdus = 0
with open(sys.argv[1], "rb") as f:
    f.read(24)  # global header: little-endian, Ethernet, as built
    buf = b""
    while True:
        block = f.read(1 << 20)
        if not block:
            break
        buf = buf + block
        pos, end = 0, len(buf)
        while pos + 16 <= end:
            _, _, caplen, _ = record(buf, pos)
            if pos + 16 + caplen > end:
                break
            p = pos + 16
            if buf[p + 12] == 8 and buf[p + 13] == 0 and buf[p + 23] == 6:
                t = p + 14 + (buf[p + 14] & 15) * 4
                sport, dport = ports(buf, t)
                data = t + (buf[t + 12] >> 4) * 4
                if (sport == 502 or dport == 502) and p + caplen - data >= 8:
                    tid, proto, length, unit, func_code = mbap(buf, data)
                    pdus += 1
            pos = p + caplen
        buf = buf[pos:]
print(f"pdus={pdus}", file=sys.stderr)
"""


@dataclass(slots=True)
class Result:
    name: str
    packets: int  # packets the run covered
    seconds: float  # wall clock
    cpu_seconds: float  # user + system time of the child
    peak_rss_mb: float
    note: str = ""
    main_cpu_s: float = 0.0  # the child process itself on a CPU (childproc.ChildRun)
    main_wait_s: float = 0.0  # and waiting for one while runnable

    @property
    def pps(self) -> float:
        return self.packets / self.seconds if self.seconds else 0.0

    @property
    def cpu_pps(self) -> float:
        return self.packets / self.cpu_seconds if self.cpu_seconds else 0.0


def measure(
    name: str, argv: list[str], packets: int, env_extra: dict[str, str] | None = None
) -> Result:
    """Run a child to completion; wall time and the child's own peak RSS."""
    # as a user's shell runs it: buffered stdout, byte code cached (a session may set these)
    unset = ("ICSMON_PURE", "PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE")
    env = {k: v for k, v in os.environ.items() if k not in unset}
    env.update(PYTHONPATH=str(REPO), **(env_extra or {}))
    run = run_measured(argv, env=env, cwd=REPO, stdout=subprocess.DEVNULL)
    err = run.stderr.decode(errors="replace")
    if run.returncode != 0:
        raise SystemExit(f"{name} failed ({run.returncode}): {err.strip()[-500:]}")
    note = " ".join(
        line for line in err.splitlines() if "=" in line and " " not in line.split("=")[0]
    )
    return Result(
        name,
        packets,
        run.wall_s,
        run.cpu_s,
        run.peak_rss_mb,
        note.strip(),
        run.main_cpu_s,
        run.main_wait_s,
    )


def write_subset(src: Path, dst: Path, packets: int) -> int:
    """The first ``packets`` records of ``src`` as a new pcap (for the slow contenders)."""
    with src.open("rb") as f, dst.open("wb") as out:
        out.write(f.read(24))
        n = 0
        while n < packets:
            head = f.read(16)
            if len(head) < 16:
                break
            caplen = _RECORD.unpack(head)[2]
            out.write(head + f.read(caplen))
            n += 1
    return n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--packets", type=int, default=1_000_000, help="size of the built capture")
    ap.add_argument("--scapy-packets", type=int, default=20_000, help="scapy runs on this many")
    ap.add_argument("--file", type=Path, help="where to build the capture (default: a temp dir)")
    ap.add_argument("--keep", action="store_true", help="keep the built capture")
    ap.add_argument("--repeat", type=int, default=1, help="rounds; the fastest of each is kept")
    ap.add_argument(
        "--only",
        default="engine,source,cli,tshark,scapy,bare",
        help="comma-separated subset of engine,source,cli,tshark,scapy,bare",
    )
    args = ap.parse_args()
    only = set(args.only.split(","))

    workdir = Path(tempfile.mkdtemp(prefix="icsmon-bench-"))
    path = args.file or workdir / f"modbus_{args.packets}.pcap"
    start = time.perf_counter()
    total = build_capture(path, args.packets)
    print(
        f"built {path}: {total:,} packets, {path.stat().st_size / 1e6:.1f} MB "
        f"in {time.perf_counter() - start:.1f} s"
    )

    # (name, argv, packets covered); each round runs every contender once, in turn, so a
    # change in the machine's load hits them alike; the fastest round of each is kept.
    contenders: list[tuple[str, list[str], int]] = []
    if "engine" in only:
        contenders.append(("icsmon engine", [PYTHON, "-c", ENGINE_SCRIPT, str(path)], total))
    if "source" in only:  # the same engine run from its Python source (ICSMON_PURE=1)
        argv = [PYTHON, "-c", ENGINE_SCRIPT, str(path)]
        contenders.append(("icsmon engine, from source", argv, total))
    if "cli" in only:
        icsmon = shutil.which("icsmon", path=str(Path(PYTHON).parent)) or "icsmon"
        argv = [icsmon, "replay", str(path), "--events", "--format", "jsonl", "--no-rules"]
        contenders.append(("icsmon CLI (jsonl)", [*argv, "--sink", "none"], total))
    if "tshark" in only:
        tshark = shutil.which("tshark")
        if tshark:
            argv = [tshark, "-r", str(path), "-Y", "mbtcp", "-T", "fields"]
            contenders.append(
                (
                    "tshark -T fields",
                    [*argv, "-e", "mbtcp.trans_id", "-e", "modbus.func_code"],
                    total,
                )
            )
        else:
            print("tshark not installed: skipped")
    if "scapy" in only:
        subset = workdir / "scapy_subset.pcap"
        n = write_subset(path, subset, args.scapy_packets)
        contenders.append(("scapy (subset)", [PYTHON, "-c", SCAPY_SCRIPT, str(subset)], n))
    if "bare" in only:
        contenders.append(("bare struct pass", [PYTHON, "-c", BARE_SCRIPT, str(path)], total))

    best: dict[str, Result] = {}
    try:
        for round_no in range(1, args.repeat + 1):
            for name, argv, packets in contenders:
                env_extra = {"ICSMON_PURE": "1"} if name.endswith("from source") else None
                res = measure(name, argv, packets, env_extra)
                if name.startswith("scapy"):
                    loop = float(res.note.split("loop_seconds=")[1].split()[0])
                    res.cpu_seconds *= loop / res.seconds  # the loop's share of CPU time
                    res.note = (
                        f"{res.note.split(' loop_seconds')[0]} on the first {packets:,} packets, "
                        f"timed after import ({res.seconds:.1f} s with it); "
                        "full-file time extrapolated"
                    )
                    res.seconds = loop
                print(f"round {round_no}: {name}: {res.pps:,.0f} packets/s", flush=True)
                if name not in best or res.seconds < best[name].seconds:
                    best[name] = res
        results = [best[name] for name, _, _ in contenders]
    finally:
        if not args.keep:
            path.unlink(missing_ok=True)
        shutil.rmtree(workdir, ignore_errors=True)

    print_report(results, total)


def print_report(results: list[Result], total: int) -> None:
    cpu = _cpu_name()
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(
        f"\n{total:,} packets; Python {sys.version.split()[0]}; {cpu}; {os.cpu_count()} CPUs; "
        f"load average at the end {load} (other work on the machine slows every contender)\n"
    )
    print(
        "| contender | packets/s (wall) | packets/s (CPU time) | time for the file (s) "
        "| peak RSS (MB) | notes |"
    )
    print("| --- | ---: | ---: | ---: | ---: | --- |")
    for r in results:
        seconds = total / r.pps if r.pps else 0.0
        print(
            f"| {r.name} | {r.pps:,.0f} | {r.cpu_pps:,.0f} | {seconds:.1f} "
            f"| {r.peak_rss_mb:.0f} | {r.note} |"
        )
    engine = next((r for r in results if r.name == "icsmon engine"), None)
    if engine is None:
        return
    print()
    targets = [("tshark", 5.0), ("scapy", 50.0), ("bare struct pass", 0.4)]
    for key, target in targets:
        other = next((r for r in results if r.name.startswith(key)), None)
        if other is None or not other.pps:
            continue
        ratio = engine.pps / other.pps
        cpu_ratio = engine.cpu_pps / other.cpu_pps if other.cpu_pps else 0.0
        verdict = "meets" if ratio >= target else "misses"
        print(
            f"icsmon engine vs {key}: {ratio:.2f}x wall, {cpu_ratio:.2f}x CPU time "
            f"(target >= {target:g}x: wall {verdict})"
        )
    verdict = "meets" if engine.peak_rss_mb < 300 else "misses"
    print(f"icsmon engine peak RSS: {engine.peak_rss_mb:.0f} MB (target < 300 MB: {verdict})")


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


if __name__ == "__main__":
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    main()
