"""Live capture in a network namespace a test creates: a veth pair (``vsend`` <-> ``vsense``)
inside it, captures pushed into ``vsend`` by tcpreplay, ``vsense`` read by the sensor (a
``LiveSource`` or ``icsmon sense`` run inside the namespace). Nothing touches the host's
interfaces; deleting the namespace removes the pair. Needs root, ``ip`` and ``tcpreplay``.

The ``netns`` fixture gives one such namespace; ``veth_namespace(prefix)`` the same as a
context manager (for helpers that are not fixtures). The rest waits on what the kernel
reports in ``/proc/net/packet`` (a capture socket bound, its queue drained) instead of
sleeping.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

ICSMON = str(Path(sys.executable).parent / "icsmon")
SEND, SENSE = "vsend", "vsense"
WAIT = 60.0  # generous upper bound on waiting for a child; not a performance assertion
# Fields of an event that depend on when packets arrive, not on what they contain.
TIME_FIELDS = {"@timestamp", "event.duration", "event.id"}
_names = itertools.count()


def run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=check, timeout=WAIT)


def in_ns(ns: str, *argv: str) -> list[str]:
    """``argv`` run inside namespace ``ns``."""
    return ["ip", "netns", "exec", ns, *argv]


@contextmanager
def veth_namespace(prefix: str = "icsmon-live") -> Iterator[str]:
    """A namespace holding an up veth pair (vsend <-> vsense) and nothing else; skips the
    test where it cannot be made (not root, no ``ip`` or ``tcpreplay``; a failure in CI)."""
    if os.geteuid() != 0:
        pytest.skip("live capture test needs root to create a network namespace")
    if not shutil.which("ip"):
        pytest.skip("the 'ip' command (iproute2) is not installed")
    if not shutil.which("tcpreplay"):
        if os.environ.get("CI"):
            pytest.fail("tcpreplay is not installed: scripts/test.sh installs Debian's tcpreplay")
        pytest.skip("tcpreplay is not installed (apt-get install tcpreplay)")
    name = f"{prefix}-{os.getpid()}-{next(_names)}"
    made = run("ip", "netns", "add", name, check=False)
    if made.returncode != 0:
        pytest.skip(f"cannot create a network namespace: {made.stderr.strip()}")
    try:
        # No IPv6 on the pair: no router solicitations or MLD reports mixed into the capture
        # (a nicety: the checks look at IPv4 frames and protocol events only).
        for scope in ("all", "default") if shutil.which("sysctl") else ():
            setting = f"net.ipv6.conf.{scope}.disable_ipv6=1"
            run(*in_ns(name, "sysctl", "-q", "-w", setting), check=False)
        run("ip", "-n", name, "link", "add", SEND, "type", "veth", "peer", "name", SENSE)
        run("ip", "-n", name, "link", "set", SEND, "up")
        run("ip", "-n", name, "link", "set", SENSE, "up")
        yield name
    finally:
        run("ip", "netns", "del", name, check=False)


@pytest.fixture()
def netns() -> Iterator[str]:
    """A namespace holding an up veth pair (vsend <-> vsense) and nothing else."""
    with veth_namespace() as name:
        yield name


def packet_sockets(ns: str) -> list[dict[str, int]]:
    """Rows of /proc/net/packet inside the namespace: bound protocol, ifindex, queued bytes."""
    rows = []
    lines = run(*in_ns(ns, "cat", "/proc/net/packet")).stdout.splitlines()[1:]
    for line in lines:
        cols = line.split()
        rows.append(
            {
                "proto": int(cols[3], 16),
                "iface": int(cols[4]),
                "running": int(cols[5]),
                "rmem": int(cols[6]),
            }
        )
    return rows


def iface_index(ns: str, iface: str) -> int:
    out = run(*in_ns(ns, "cat", f"/sys/class/net/{iface}/ifindex")).stdout
    return int(out)


def wait_on_child(what: str, check: Callable[[], bool], proc: subprocess.Popen) -> None:
    """Poll ``check()`` until true; fail (with the child's stderr) if the child dies or
    WAIT passes. A deadline on waiting, not a timing assertion."""
    deadline = time.monotonic() + WAIT
    while not check():
        if proc.poll() is not None:
            _, err = proc.communicate()
            pytest.fail(f"child exited ({proc.returncode}) before {what}: {err[-2000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"gave up waiting for {what}")
        time.sleep(0.05)


def capture_ready(ns: str, index: int) -> bool:
    # Bound to the interface with ETH_P_ALL: from here on every frame is queued for it.
    return any(r["iface"] == index and r["proto"] == 0x0003 for r in packet_sockets(ns))


def capture_running(ns: str, index: int, running: int) -> bool:
    return any(r["iface"] == index and r["running"] == running for r in packet_sockets(ns))


def queue_drained(ns: str, index: int) -> bool:
    return all(r["rmem"] == 0 for r in packet_sockets(ns) if r["iface"] == index)


def tcpreplay(ns: str, *files: Path) -> None:
    """Push the captures into ``vsend`` as fast as they go."""
    run(*in_ns(ns, "tcpreplay", "--topspeed", "-q", "-i", SEND, *map(str, files)))


def comparable(lines: str) -> list[str]:
    """JSON lines events without their time-dependent fields, as sorted canonical JSON."""
    from pipeline.docs import flatten

    docs = []
    for line in lines.splitlines():
        flat = {k: v for k, v in flatten(json.loads(line)).items() if k not in TIME_FIELDS}
        docs.append(json.dumps(flat, sort_keys=True))
    return sorted(docs)
