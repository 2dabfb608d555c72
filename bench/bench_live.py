"""The live sensor at set packet rates: kernel drops per rate, for one and for N workers.

    sudo .venv/bin/python bench/bench_live.py                          # 50k,100k,200k pps, 10 s
    sudo .venv/bin/python bench/bench_live.py --rates 200000 --seconds 30 --workers 1,2
    sudo .venv/bin/python bench/bench_live.py --no-store --no-baseline  # lighter sensor

1. Builds the user-path capture (``bench_modbus.build_capture``: the pymodbus polling
   conversation of ``pcaps/modbus/modbus_polling.pcap`` repeated over 64 interleaved
   connections, checksums recomputed) and learns a baseline from it.
2. Creates a network namespace with a veth pair (``vsend`` <-> ``vsense``) and, for each
   worker count and each rate: starts ``icsmon sense --iface vsense --workers N`` with the
   rule pack, the baseline and a new embedded store (events stored: the default), waits
   for its sockets, has ``tcpreplay --pps RATE --pps-multi 50 --timer nano --duration
   SECONDS --loop 0 -K`` send the capture into ``vsend`` (bursts of 50 packets), stops the sensor with SIGINT once the sender is done, and reads
   its final counters.
3. Prints one row per run: packets sent and captured, the share of kernel drops (the
   sensor's ``capture.kernel_drops``: packets the kernel had no room for in a ring), events
   handled, and the CPU per event of each kind of the sensor's processes (workers: capture
   and decoding; parent: detectors and sinks; writer: the store's process), read from /proc
   while traffic and backlog last; tcpreplay's CPU; the machine's softirq and idle seconds
   while sending; the backlog's time after the sender stopped; the load average. Then,
   per run, what its store holds by kind (rows of each kind's table, the file's size), so
   the writer's cost per event can be told from what else it stored; ``--keep DIR`` keeps
   the stores there.
4. First (unless ``--no-budget``), the budget: each rate sent to a plain reader
   (``tcpdump -w /dev/null``) instead of the sensor, and the CPU the machine had left per
   event meanwhile: what the sensor may spend.

Needs root, ``ip``, ``tcpreplay`` and ``tcpdump``. Nothing is asserted: tcpreplay shares the machine
with the sensor (and, here, with other people's work), so say the load next to a number.
The namespace, store and capture are removed at the end.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_modbus import build_capture  # noqa: E402

PYTHON = sys.executable
ICSMON = shutil.which("icsmon", path=str(Path(PYTHON).parent)) or "icsmon"
SEND, SENSE = "vsend", "vsense"
# tcpreplay sends bursts of PPS_MULTI packets and sleeps between them (nanosleep): the same
# rate for a fraction of the CPU its default busy-wait takes (measured here: 0.9 s instead of
# 2.3 s per 3 s at 200,000 packets/s), which the sensor needs on a 2-core machine
PPS_MULTI = 50
WAIT = 300.0  # an upper bound on waiting for a child, not a measurement
SAMPLE_S = 0.1  # how often the CPU of the sensor's processes is read
# a user's shell: buffered output, byte-code cached (this environment sets both otherwise)
ENV = {
    k: v for k, v in os.environ.items() if k not in ("PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE")
}


def sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=check, timeout=WAIT)


def make_namespace() -> str:
    name = f"icsmon-bench-{os.getpid()}"
    sh("ip", "netns", "add", name)
    sh("ip", "netns", "exec", name, "sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1")
    sh("ip", "-n", name, "link", "add", SEND, "type", "veth", "peer", "name", SENSE)
    sh("ip", "-n", name, "link", "set", SEND, "up")
    sh("ip", "-n", name, "link", "set", SENSE, "up")
    return name


def sockets(ns: str) -> int:
    """Packet sockets bound in the namespace (one per capture worker once it listens)."""
    lines = sh("ip", "netns", "exec", ns, "cat", "/proc/net/packet").stdout.splitlines()[1:]
    return sum(1 for line in lines if int(line.split()[3], 16) == 0x0003)


def counter(stderr: str, name: str) -> int:
    found = re.search(rf"{re.escape(name)}\s*│\s*([\d,]+)", stderr)
    return int(found.group(1).replace(",", "")) if found else -1


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


TICK = os.sysconf("SC_CLK_TCK")


def machine_cpu() -> dict[str, float]:
    """CPU seconds of the whole machine so far, by kind (/proc/stat's first line)."""
    with open("/proc/stat") as f:
        user, nice, system, idle, iowait, irq, softirq, steal = map(int, f.readline().split()[1:9])
    return {
        "busy": (user + nice + system + irq + softirq + steal) / TICK,
        "softirq": (irq + softirq) / TICK,
        "idle": (idle + iowait) / TICK,
    }


class ProcessCPU(threading.Thread):
    """CPU seconds of a process and its descendants by kind, read from /proc every
    ``SAMPLE_S`` while they run: ``parent`` (the sensor's own process: with one worker it
    also captures and decodes), ``workers`` (capture processes), ``writer`` (the store's
    writer process). A process's last fraction of a sample before it exits is not seen."""

    def __init__(self, root: int) -> None:
        super().__init__(daemon=True)
        self.root = root
        self.seen: dict[int, tuple[str, float]] = {}
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(SAMPLE_S):
            self.sample()

    def sample(self) -> None:
        todo = [self.root]
        while todo:
            pid = todo.pop()
            try:
                with open(f"/proc/{pid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    cmdline = f.read()
                for task in os.listdir(f"/proc/{pid}/task"):
                    with open(f"/proc/{pid}/task/{task}/children") as f:
                        todo.extend(int(c) for c in f.read().split())
            except (OSError, ValueError):
                continue
            if pid == self.root:
                kind = "parent"
            elif b"pipeline.store.process" in cmdline or self.seen.get(pid, ("",))[0] == "writer":
                kind = "writer"  # (a process that is exiting shows no command line)
            else:
                kind = "workers"
            self.seen[pid] = (kind, (int(fields[11]) + int(fields[12])) / TICK)

    def by_kind(self, since: dict[int, tuple[str, float]] | None = None) -> dict[str, float]:
        """CPU seconds by kind, from the sample ``since`` (a copy of ``seen``) on."""
        out = dict.fromkeys(("parent", "workers", "writer"), 0.0)
        for pid, (kind, seconds) in self.seen.items():
            out[kind] += seconds - (since or {}).get(pid, ("", 0.0))[1]
        return out


def _sender(ns: str, rate: int, seconds: float, capture: Path) -> tuple[str, dict]:
    """tcpreplay into the namespace's sending end; its output, its and the machine's CPU."""
    machine0, cpu0 = machine_cpu(), children_cpu()
    sent = sh(
        "ip", "netns", "exec", ns, "tcpreplay", "-q", "-K", "--pps", str(rate),
        "--pps-multi", str(PPS_MULTI), "--timer", "nano",
        "--duration", str(int(seconds)), "--loop", "0", "-i", SEND, str(capture),
    )  # fmt: skip
    machine1 = machine_cpu()
    cpu = {k: machine1[k] - machine0[k] for k in machine0}
    cpu["sender"] = children_cpu() - cpu0
    packets = re.search(r"Actual: (\d+) packets", sent.stdout)
    cpu["sent"] = int(packets.group(1)) if packets else -1
    return sent.stdout, cpu


def run_plain(ns: str, capture: Path, rate: int, seconds: float) -> dict:
    """The budget: tcpreplay into the veth with a plain packet-socket reader at the other end
    (``tcpdump -w /dev/null``: libpcap's TPACKET_V3 ring, no decoding); what the machine has
    left while it runs is what a sensor may spend."""
    reader = subprocess.Popen(
        ["ip", "netns", "exec", ns, "tcpdump", "-i", SENSE, "-w", "/dev/null", "-B", "65536",
         "-s", "65535", "-n"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + WAIT
        while sockets(ns) < 1:
            if reader.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"tcpdump did not start: {reader.communicate()[1][-2000:]}")
            time.sleep(0.1)
        time.sleep(0.5)
        cpu_before = children_cpu()
        _, cpu = _sender(ns, rate, seconds, capture)
        reader.send_signal(signal.SIGINT)
        _, stderr = reader.communicate(timeout=WAIT)
    finally:
        if reader.poll() is None:
            reader.kill()
            reader.wait()
    dropped = re.search(r"(\d+) packets dropped by kernel", stderr)
    cpu["reader"] = children_cpu() - cpu_before - cpu["sender"]
    return {"drops": int(dropped.group(1)) if dropped else -1, **cpu}


# What a run's store holds, by document kind: (kind, the table that has a row per document)
STORED = (
    ("events", "events"),
    ("alerts", "alerts"),
    ("assets", "assets"),
    ("rollups", "rollups"),
    ("heartbeats", "heartbeats"),
    ("findings", "findings"),
)


def stored(path: Path) -> dict[str, int]:
    """Rows of each kind in the store at ``path`` (-1: no such table), and its bytes."""
    counts = {"bytes": sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))}
    try:
        conn = sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True)
    except sqlite3.Error:
        return {**dict.fromkeys((kind for kind, _ in STORED), -1), **counts}
    try:
        for kind, table in STORED:
            try:
                counts[kind] = conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
            except sqlite3.Error:
                counts[kind] = -1
    finally:
        conn.close()
    return counts


def run_once(
    ns: str,
    capture: Path,
    rate: int,
    seconds: float,
    workers: int,
    sensor_args: list[str],
    keep: Path | None = None,
) -> dict:
    workdir = Path(tempfile.mkdtemp(prefix="icsmon-live-"))
    argv = [
        "ip", "netns", "exec", ns, ICSMON, "sense", "--iface", SENSE,
        "--workers", str(workers), "--format", "jsonl", "--store", str(workdir / "s.db"),
        *sensor_args,
    ]  # fmt: skip
    cpu0 = children_cpu()
    sensor = subprocess.Popen(
        argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=ENV
    )
    probe = ProcessCPU(sensor.pid)  # ``ip netns exec`` execs the sensor: the same pid
    try:
        deadline = time.monotonic() + WAIT
        while sockets(ns) < workers:
            if sensor.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"icsmon sense did not start: {sensor.communicate()[1][-2000:]}")
            time.sleep(0.1)
        time.sleep(0.5)
        probe.sample()
        at_start = dict(probe.seen)
        probe.start()
        sent, cpu = _sender(ns, rate, seconds, capture)
        stopped = time.monotonic()
        sensor.send_signal(signal.SIGINT)
        _, stderr = sensor.communicate(timeout=WAIT)
        drain = time.monotonic() - stopped
        kept = stored(workdir / "s.db")
        if keep is not None:
            keep.mkdir(parents=True, exist_ok=True)
            for part in workdir.glob("s.db*"):
                shutil.move(part, keep / f"{workers}w-{rate}pps{part.name[1:]}")
    finally:
        probe.done.set()
        if sensor.poll() is None:
            sensor.kill()
            sensor.wait()
        shutil.rmtree(workdir, ignore_errors=True)
    sensor_cpu = children_cpu() - cpu0 - cpu["sender"]
    pps = re.search(r"Rated: [\d.]+ Bps, [\d.]+ Mbps, ([\d.]+) pps", sent)
    kinds = probe.by_kind(since=at_start)
    return {
        "workers": workers,
        "rate": rate,
        "reached": float(pps.group(1)) if pps else 0.0,
        "captured": counter(stderr, "capture.packets"),
        "drops": counter(stderr, "capture.kernel_drops"),
        "events": counter(stderr, "events"),
        "cpu": sensor_cpu,
        # while traffic and backlog lasted (start-up excluded: rules, baseline, store opening)
        "kinds": kinds,
        "drain": drain,
        "stored": kept,
        "failed": sensor.returncode != 0,
        "stderr": stderr,
        **cpu,
    }


def load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg()[:2])


def count_events(capture: Path) -> int:
    """Events the sensor makes of one pass over the capture (replay, no rules, no sink)."""
    argv = (ICSMON, "replay", str(capture), "--events", "--format", "jsonl", "--sink", "none")
    return sh(*argv, "--no-rules").stdout.count("\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rates", default="50000,100000,200000", help="packets per second, a list")
    ap.add_argument("--seconds", type=float, default=10.0, help="how long each rate is sent")
    ap.add_argument("--workers", default="1,2", help="worker counts to compare, a list")
    ap.add_argument("--packets", type=int, default=200_000, help="size of the built capture")
    ap.add_argument("--no-store", action="store_true", help="--no-store-events (alerts only)")
    ap.add_argument("--no-baseline", action="store_true", help="without the learned baseline")
    ap.add_argument("--no-rules", action="store_true", help="without the rule pack")
    ap.add_argument(
        "--no-budget", action="store_true", help="skip the plain reader's rows (the budget)"
    )
    ap.add_argument(
        "--keep", type=Path, metavar="DIR", help="keep each run's store in DIR (<N>w-<pps>pps.db)"
    )
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("error: needs root (a network namespace and a packet socket)")
    for tool in ("ip", "tcpreplay", "tcpdump"):
        if not shutil.which(tool):
            raise SystemExit(f"error: {tool} is not installed")

    workdir = Path(tempfile.mkdtemp(prefix="icsmon-bench-live-"))
    ns = None
    try:
        capture = workdir / "modbus_polling.pcap"
        total = build_capture(capture, args.packets, ("modbus_polling.pcap",))
        sensor_args: list[str] = []
        parts = []
        if args.no_rules:
            sensor_args.append("--no-rules")
        else:
            parts.append("rule pack")
        if not args.no_baseline:
            baseline = workdir / "baseline.json"
            sh(ICSMON, "baseline", "learn", str(capture), "-o", str(baseline))
            sensor_args += ["--baseline", str(baseline)]
            parts.append("baseline")
        if args.no_store:
            sensor_args.append("--no-store-events")
            parts.append("store (alerts, assets only)")
        else:
            parts.append("store (every event)")
        events_per_packet = count_events(capture) / total
        print(
            f"capture: {total:,} packets (looped), {events_per_packet:.3f} events per packet; "
            f"sensor: {', '.join(parts)}"
        )
        print(f"Python {sys.version.split()[0]}; {os.cpu_count()} CPUs; load average {load()}")
        ns = make_namespace()
        rates = [int(r) for r in args.rates.split(",")]
        if not args.no_budget:
            print(
                "\nThe budget: tcpreplay with a plain reader (tcpdump -w /dev/null) instead of "
                "the sensor; CPU seconds while sending, and what was left per event."
            )
            print(
                "\n| asked pps | sent | reader drops | tcpreplay s | reader s | machine busy s "
                "| of it softirq s | idle s | left per event µs | load |"
            )
            print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
            for rate in rates:
                b = run_plain(ns, capture, rate, args.seconds)
                events = b["sent"] * events_per_packet
                left = (b["idle"] + b["reader"]) / max(1.0, events) * 1e6
                print(
                    f"| {rate:,} | {b['sent']:,} | {b['drops']:,} | {b['sender']:.1f} "
                    f"| {b['reader']:.1f} | {b['busy']:.1f} | {b['softirq']:.1f} "
                    f"| {b['idle']:.1f} | {left:.1f} | {load()} |",
                    flush=True,
                )
        print(
            "\nThe sensor: kernel drops, events handled, and CPU per event handled by process "
            "kind (parent: detectors, sinks, and with 1 worker capture and decoding too; "
            "workers: capture and decoding; writer: the store's process), from the first "
            "packet to the end of the backlog."
        )
        print(
            "\n| workers | asked pps | sent | captured | dropped | events | workers µs/ev "
            "| parent µs/ev | writer µs/ev | sensor µs/ev | tcpreplay s | softirq s "
            "| idle s | backlog s | load |"
        )
        print("| ---: " * 15 + "|")
        runs = []
        for workers in (int(w) for w in args.workers.split(",")):
            for rate in rates:
                r = run_once(ns, capture, rate, args.seconds, workers, sensor_args, args.keep)
                runs.append(r)
                share = r["drops"] / max(1, r["sent"]) * 100
                per = {k: v / max(1, r["events"]) * 1e6 for k, v in r["kinds"].items()}
                print(
                    f"| {workers} | {rate:,} | {r['sent']:,} | {r['captured']:,} "
                    f"| {share:.1f}% | {r['events']:,} | {per['workers']:.1f} "
                    f"| {per['parent']:.1f} | {per['writer']:.1f} | {sum(per.values()):.1f} "
                    f"| {r['sender']:.1f} | {r['softirq']:.1f} | {r['idle']:.1f} "
                    f"| {r['drain']:.1f} | {load()} |"
                    + (" (sensor failed)" if r["failed"] else ""),
                    flush=True,
                )
                if r["failed"]:
                    print(r["stderr"][-2000:], file=sys.stderr)
        print("\nWhat each run's store holds, by kind (rows; the file with its WAL, MB).")
        print("\n| workers | asked pps | " + " | ".join(k for k, _ in STORED) + " | MB |")
        print("| ---: " * (len(STORED) + 3) + "|")
        for r in runs:
            counts = r["stored"]
            print(
                f"| {r['workers']} | {r['rate']:,} | "
                + " | ".join(f"{counts[k]:,}" for k, _ in STORED)
                + f" | {counts['bytes'] / 1e6:.1f} |"
            )
        print(f"\nload average at the end {load()}")
    finally:
        if ns is not None:
            sh("ip", "netns", "del", ns, check=False)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
