"""Real captures for the response tests: shifted to the present (editcap) and, for an
outside attacker, with the attacker's address rewritten (tcprewrite), then replayed through
the real command line into a store. Files only: no traffic leaves the machine."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.support.processes import icsmon

REPO = Path(__file__).resolve().parents[2]
CAPTURES = REPO / "pcaps" / "baseline"
OPCUA = REPO / "pcaps" / "opcua"


def tool(name: str) -> str:
    path = shutil.which(name)
    if not path:
        if os.environ.get("CI"):
            pytest.fail(f"{name} is not installed (scripts/test.sh installs it)")
        pytest.skip(f"{name} is not installed")
    return path


def first_time(pcap: Path) -> float:
    from scapy.utils import PcapReader

    with PcapReader(str(pcap)) as reader:
        return float(next(iter(reader)).time)


def shifted(src: Path, dst: Path, start: float, rewrite: str | None = None) -> Path:
    """``src`` with its first packet at ``start`` (and the attacker's address rewritten)."""
    offset = start - first_time(src)
    tmp = dst.with_suffix(".shift.pcap")
    subprocess.run(
        [tool("editcap"), "-t", f"{offset:.6f}", str(src), str(tmp)],
        check=True,
        capture_output=True,
    )
    if rewrite:
        subprocess.run(
            [
                tool("tcprewrite"),
                f"--pnat=127.0.5.66/32:{rewrite}/32",
                "--fixcsum",
                f"--infile={tmp}",
                f"--outfile={dst}",
            ],
            check=True,
            capture_output=True,
        )
        tmp.unlink()
    else:
        tmp.rename(dst)
    return dst


def replay(pcap: Path, store: Path, site: dict[str, Any]) -> None:
    """The real command line, as plant IT or a tester runs it."""
    r = subprocess.run(
        [
            *icsmon(),
            "replay",
            str(pcap),
            "--baseline",
            str(CAPTURES / "train.baseline.json"),
            "--site",
            site["site"],
            "--observer",
            site["sensors"][0],
            "--org",
            site["enterprise"],
            "--sink",
            "store",
            "--store",
            str(store),
            "--store-events",
            "--format",
            "jsonl",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr


def sense_live(content: Path, pcap: Path, observer: str) -> list[dict[str, Any]]:
    """Alerts of a running ``icsmon sense --content CONTENT`` on a veth pair inside a network
    namespace made here, while ``pcap`` is pushed into the other end with tcpreplay."""
    import json
    import signal

    from tests.support.netns import (
        SENSE,
        capture_ready,
        iface_index,
        in_ns,
        queue_drained,
        tcpreplay,
        veth_namespace,
        wait_on_child,
    )

    with veth_namespace("icsmon-content") as ns:
        argv = [
            *icsmon(),
            "sense",
            "--iface",
            SENSE,
            "--content",
            str(content),
            "--no-rules",
            "--sink",
            "none",
            "--format",
            "jsonl",
            "--observer",
            observer,
        ]
        proc = subprocess.Popen(
            in_ns(ns, *argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        try:
            ifindex = iface_index(ns, SENSE)
            wait_on_child("icsmon sense to listen", lambda: capture_ready(ns, ifindex), proc)
            tcpreplay(ns, pcap)
            wait_on_child(
                "icsmon sense to read every frame", lambda: queue_drained(ns, ifindex), proc
            )
            proc.send_signal(signal.SIGINT)
            stdout, stderr = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


class PushedSensor:
    """A running ``icsmon sense`` on the control channel of ``plane`` (as a plant runs it),
    in a network namespace made here: Kafka reached through a bridge on the namespace's
    loopback, captures pushed into its veth pair by tcpreplay."""

    def __init__(self, ns: str, proc: subprocess.Popen, store: Path) -> None:
        self.ns, self.proc = ns, proc
        self.content_file = store.with_name(store.stem + ".content.json")

    def running_version(self) -> int | None:
        """The version of the content it applied from a push (kept beside its store)."""
        from detectors.content import load_package

        assert self.proc.poll() is None, self.proc.communicate()[1][-3000:]
        return load_package(self.content_file).version if self.content_file.exists() else None

    def replay(self, pcap: Path) -> None:
        from tests.support.netns import SENSE, iface_index, queue_drained, tcpreplay, wait_on_child

        ifindex = iface_index(self.ns, SENSE)
        tcpreplay(self.ns, pcap)
        wait_on_child(
            "icsmon sense to read every frame", lambda: queue_drained(self.ns, ifindex), self.proc
        )

    def stop(self) -> tuple[list[dict[str, Any]], str]:
        """Its printed documents and its stderr (counters) once interrupted."""
        import json
        import signal

        self.proc.send_signal(signal.SIGINT)
        stdout, stderr = self.proc.communicate(timeout=60)
        assert self.proc.returncode == 0, stderr[-3000:]
        assert "Traceback" not in stderr, stderr[-3000:]
        return [json.loads(line) for line in stdout.splitlines() if line.strip()], stderr


@contextmanager
def pushed_sensor(plane: Any, folder: Path, site: dict[str, Any]) -> Iterator[PushedSensor]:
    """``icsmon sense`` for ``site``'s first sensor with no content of its own (version 0),
    listening for the province's pushes; stopped and its namespace removed afterwards."""
    from tests.support.bridge import Bridge
    from tests.support.netns import (
        SENSE,
        capture_ready,
        iface_index,
        in_ns,
        veth_namespace,
        wait_on_child,
    )
    from tests.support.processes import stop

    with veth_namespace("icsmon-push") as ns:
        port = int(plane.pipe.cfg.kafka.brokers[0].rsplit(":", 1)[1])
        bridge = Bridge(ns, port, folder)
        store = folder / f"{site['sensors'][0]}.db"
        argv = [
            *icsmon(),
            "sense",
            "--iface",
            SENSE,
            "--no-rules",
            "--store",
            str(store),
            *plane.sense_args(site["site"], site["sensors"][0], site["enterprise"]),
            "--format",
            "jsonl",
        ]
        proc = subprocess.Popen(
            in_ns(ns, *argv),
            env=plane.pipe.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            ifindex = iface_index(ns, SENSE)
            wait_on_child("icsmon sense to listen", lambda: capture_ready(ns, ifindex), proc)
            yield PushedSensor(ns, proc, store)
        finally:
            stop(proc)
            bridge.close()
