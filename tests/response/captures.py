"""Real captures for the response tests: shifted to the present (editcap) and, for an
outside attacker, with the attacker's address rewritten (tcprewrite), then replayed through
the real command line into a store. Files only: no traffic leaves the machine."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
CAPTURES = REPO / "pcaps" / "baseline"
OPCUA = REPO / "pcaps" / "opcua"


def icsmon_cmd() -> list[str]:
    exe = Path(sys.executable).with_name("icsmon")
    return (
        [str(exe)]
        if exe.exists()
        else [sys.executable, "-c", "from icsmon.cli import main; main()"]
    )


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
            *icsmon_cmd(),
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
            *icsmon_cmd(),
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
