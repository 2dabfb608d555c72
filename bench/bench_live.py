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
3. Prints one row per run: the rate asked and the rate tcpreplay reached, packets sent and
   captured, kernel drops (the sensor's ``capture.kernel_drops``: packets the kernel had no
   room for in a ring), the sensor's CPU seconds (parent and workers) and how long it took
   to finish the backlog after the sender stopped.

Needs root, ``ip`` and ``tcpreplay``. Nothing is asserted: tcpreplay shares the machine
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
import subprocess
import sys
import tempfile
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


def run_once(
    ns: str, capture: Path, rate: int, seconds: float, workers: int, sensor_args: list[str]
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
    try:
        deadline = time.monotonic() + WAIT
        while sockets(ns) < workers:
            if sensor.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"icsmon sense did not start: {sensor.communicate()[1][-2000:]}")
            time.sleep(0.1)
        time.sleep(0.5)
        cpu1 = children_cpu()
        sent = sh(
            "ip", "netns", "exec", ns, "tcpreplay", "-q", "-K", "--pps", str(rate),
            "--pps-multi", str(PPS_MULTI), "--timer", "nano",
            "--duration", str(int(seconds)), "--loop", "0", "-i", SEND, str(capture),
        )  # fmt: skip
        sender_cpu = children_cpu() - cpu1
        stopped = time.monotonic()
        sensor.send_signal(signal.SIGINT)
        _, stderr = sensor.communicate(timeout=WAIT)
        drain = time.monotonic() - stopped
    finally:
        if sensor.poll() is None:
            sensor.kill()
            sensor.wait()
        shutil.rmtree(workdir, ignore_errors=True)
    sensor_cpu = children_cpu() - cpu0 - sender_cpu
    packets = re.search(r"Actual: (\d+) packets", sent.stdout)
    pps = re.search(r"Rated: [\d.]+ Bps, [\d.]+ Mbps, ([\d.]+) pps", sent.stdout)
    return {
        "workers": workers,
        "rate": rate,
        "reached": float(pps.group(1)) if pps else 0.0,
        "sent": int(packets.group(1)) if packets else -1,
        "captured": counter(stderr, "capture.packets"),
        "drops": counter(stderr, "capture.kernel_drops"),
        "events": counter(stderr, "events"),
        "cpu": sensor_cpu,
        "drain": drain,
        "failed": sensor.returncode != 0,
        "stderr": stderr,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rates", default="50000,100000,200000", help="packets per second, a list")
    ap.add_argument("--seconds", type=float, default=10.0, help="how long each rate is sent")
    ap.add_argument("--workers", default="1,2", help="worker counts to compare, a list")
    ap.add_argument("--packets", type=int, default=200_000, help="size of the built capture")
    ap.add_argument("--no-store", action="store_true", help="--no-store-events (alerts only)")
    ap.add_argument("--no-baseline", action="store_true", help="without the learned baseline")
    ap.add_argument("--no-rules", action="store_true", help="without the rule pack")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("error: needs root (a network namespace and a packet socket)")
    for tool in ("ip", "tcpreplay"):
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
        print(f"capture: {total:,} packets (looped); sensor: {', '.join(parts)}")
        load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
        print(f"Python {sys.version.split()[0]}; {os.cpu_count()} CPUs; load average {load}")
        ns = make_namespace()
        print()
        print(
            "| workers | asked pps | sent pps | seconds | sent | captured | kernel drops "
            "| dropped | events | sensor CPU s | backlog s |"
        )
        print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for workers in (int(w) for w in args.workers.split(",")):
            for rate in (int(r) for r in args.rates.split(",")):
                r = run_once(ns, capture, rate, args.seconds, workers, sensor_args)
                share = r["drops"] / max(1, r["sent"]) * 100
                print(
                    f"| {workers} | {rate:,} | {r['reached']:,.0f} | {args.seconds:g} "
                    f"| {r['sent']:,} | {r['captured']:,} | {r['drops']:,} | {share:.1f}% "
                    f"| {r['events']:,} | {r['cpu']:.1f} | {r['drain']:.1f} |"
                    + (" (sensor failed)" if r["failed"] else ""),
                    flush=True,
                )
                if r["failed"]:
                    print(r["stderr"][-2000:], file=sys.stderr)
        load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
        print(f"\nload average at the end {load}")
    finally:
        if ns is not None:
            sh("ip", "netns", "del", ns, check=False)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
