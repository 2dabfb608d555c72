"""Running icsmon commands as child processes in tests: the command line, a sensor with its
indexer on an isolated pipeline, and stopping what is still running."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.support import REPO
from tests.support.pipeline import wait_for


def icsmon(*args: str) -> list[str]:
    """The argv of ``icsmon ARGS`` in this environment (the installed script when present)."""
    exe = Path(sys.executable).with_name("icsmon")
    return [str(exe), *args] if exe.exists() else [sys.executable, "-m", "icsmon.cli", *args]


def stop(proc: subprocess.Popen) -> None:
    """Interrupt a child still running (killed if it does not stop); its pipes are drained so
    a full pipe cannot hold it."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()


def start_sensor_and_indexer(
    sense_args: list[str], env: dict[str, str], procs: list[subprocess.Popen]
) -> subprocess.Popen:
    """``icsmon sense SENSE_ARGS`` (text pipes, for its counters) and ``icsmon index`` on the
    pipeline of ``env``; both join ``procs`` for the caller to stop. Returns the sensor."""
    sense = subprocess.Popen(
        icsmon("sense", *sense_args),
        env=env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    procs.append(sense)
    indexer = subprocess.Popen(
        icsmon("index"), env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    procs.append(indexer)
    return sense


def wait_first_heartbeat(sense: subprocess.Popen, backend: Any) -> None:
    """Until the sensor's start heartbeat has gone through Kafka into Elasticsearch (failing
    with the sensor's errors if it ended first)."""

    def heartbeat_indexed() -> bool:
        assert sense.poll() is None, sense.communicate()[1][-3000:]
        backend.store.refresh()
        return bool(backend.client.count(index=backend.store.alias("heartbeat"))["count"])

    wait_for("the sensor's first heartbeat", heartbeat_indexed, limit_s=120, step_s=0.5)
