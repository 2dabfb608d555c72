"""Disk full under the spool and under the embedded store, on a tiny tmpfs the test mounts.

One clear error line per outage, the sensor goes on (alerts still reach what works: stdout,
memory, then the disk), and everything waiting is written once space returns. Needs root
(mount); skipped with the reason otherwise.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.config import load_config
from pipeline.kafka import KafkaSink
from pipeline.spool import Spool
from pipeline.store import Store
from tests.support import REPO

PCAP = REPO / "pcaps" / "modbus" / "modbus_attack.pcap"


@pytest.fixture()
def tiny_fs(tmp_path: Path) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("disk-full tests mount a tmpfs: they need root")
    if not shutil.which("mount"):
        pytest.skip("no mount command")
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m,mode=0755", "tmpfs", str(mnt)],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill(mnt: Path, leave: int = 0) -> Path:
    """Take every free byte of the file system but ``leave``; delete the returned file to give
    them back."""
    filler = mnt / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for chunk in (65536, 4096, 512, 1):
            while True:
                try:
                    os.write(fd, b"\0" * chunk)
                except OSError:
                    break
        assert os.statvfs(mnt).f_bavail == 0
        if leave:
            os.ftruncate(fd, os.fstat(fd).st_size - leave)
    finally:
        os.close(fd)
    return filler


def doc(i: int, kind: str = "event") -> dict:
    d = {
        "@timestamp": "2026-01-01T00:00:00Z",
        "event.kind": kind,
        "event.id": f"{kind}-{i:06d}",
        "labels.site": "plant-1",
        "source.ip": "10.0.0.1",
        "destination.ip": "10.0.0.2",
        "network.protocol": "modbus",
        "message": "x" * 300,
    }
    if kind == "alert":
        d.update({"event.severity": 73, "rule.id": "r-1", "rule.name": "Write from a new host"})
    return d


def lines(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if text in r.getMessage()]


def test_spool_disk_full_keeps_alerts_and_recovers(
    tiny_fs: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    spool = Spool(tiny_fs / "spool", max_bytes=64 << 20, segment_bytes=64 << 10)
    for i in range(20):
        assert spool.append("event", b"plant-1", json.dumps(doc(i)).encode())
    filler = fill(tiny_fs)
    results = []
    for i in range(300):  # interleaved, as a sensor writes them
        results.append(spool.append("alert", b"plant-1", json.dumps(doc(i, "alert")).encode()))
        spool.append("event", b"plant-1", json.dumps(doc(1000 + i)).encode())
    assert all(results)  # every alert kept (in memory while the disk is full)
    assert len(lines(caplog, "cannot write")) == 1
    assert spool.counters["write_errors"] >= 300
    assert spool.pending("alert") == 300
    os.unlink(filler)  # space returns
    assert spool.append("event", b"plant-1", json.dumps(doc(5000)).encode())
    assert len(lines(caplog, "writing again")) == 1
    spool.close()
    reopened = Spool(tiny_fs / "spool", max_bytes=64 << 20, segment_bytes=64 << 10)
    try:
        assert reopened.counters["corrupt"] == 0  # no torn record left behind by the failures
        alerts = [json.loads(r.value)["event.id"] for r in reopened.read("alert", 1000)]
        assert alerts == [f"alert-{i:06d}" for i in range(300)]  # all, in order
        events = [json.loads(r.value)["event.id"] for r in reopened.read("event", 1000)]
        assert events[:20] == [f"event-{i:06d}" for i in range(20)] and events[-1] == "event-005000"
    finally:
        reopened.close()


def test_kafka_sink_with_broker_down_and_spool_full_never_raises(tiny_fs: Path) -> None:
    cfg = load_config(
        env={},
        overrides={
            "kafka": {"brokers": "127.0.0.1:1", "topic_prefix": "t" + uuid.uuid4().hex[:8]},
            "spool": {
                "dir": str(tiny_fs / "spool"),
                "max_bytes": 1 << 20,
                "segment_bytes": 64 << 10,
            },
        },
    )
    sink = KafkaSink.from_config(cfg, stall_s=0.5)
    try:
        filler = fill(tiny_fs)
        for i in range(200):
            sink.write("event", doc(i))
            sink.write("alert", doc(i, "alert"))
        sink.flush(timeout=2)
        assert sink.spooling
        assert sink.spool.pending("alert") == 200
        os.unlink(filler)
        sink.flush(timeout=2)
        assert sink.stats()["spool_alerts_refused"] == 0
    finally:
        sink.close(timeout=1)
    spool = Spool(tiny_fs / "spool", max_bytes=1 << 20, segment_bytes=64 << 10)
    try:
        assert spool.pending("alert") == 200  # safe on disk for the next run
    finally:
        spool.close()


def test_store_disk_full_one_error_then_recovers(
    tiny_fs: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    store = Store(tiny_fs / "icsmon.db", background_flush=False, batch_size=50)
    try:
        for i in range(20):
            store.write("alert", doc(i, "alert"))
        store.flush()
        filler = fill(tiny_fs)
        for i in range(20, 400):
            store.write("event", doc(i))
            store.write("alert", doc(i, "alert"))
        store.flush()
        assert store.stats()["errors"] >= 1 and store.stats()["pending"] > 0
        assert len(lines(caplog, "cannot write to the store")) == 1
        os.unlink(filler)
        store.flush()
        assert store.stats()["pending"] == 0
        assert len(lines(caplog, "writing again")) == 1
        assert store.counts()["alert"] == 400
    finally:
        store.close()


def test_replay_onto_a_full_disk_still_prints_every_alert(tiny_fs: Path, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ICSMON_")}
    cmd = [sys.executable, "-m", "icsmon.cli", "replay", str(PCAP), "--format", "jsonl"]
    normal = subprocess.run(
        [*cmd, "--store", str(tmp_path / "ok.db")],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert normal.returncode == 0 and normal.stdout
    # The store exists (the sensor has been running); then the disk fills up.
    first = subprocess.run(
        [*cmd, "--store", str(tiny_fs / "full.db"), "--no-store-events"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert first.returncode == 0, first.stderr
    # Room to open the store (its shared-memory file) but not to write this run's documents.
    filler = fill(tiny_fs, leave=48 * 1024)
    full = subprocess.run(
        [*cmd, "--store", str(tiny_fs / "full.db")],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    ids = [json.loads(x)["event"]["id"] for x in full.stdout.splitlines()]
    assert ids == [json.loads(x)["event"]["id"] for x in normal.stdout.splitlines()]
    err = [ln for ln in full.stderr.splitlines() if ln.strip()]
    assert full.returncode != 0 and "Traceback" not in full.stderr
    assert err and all("full.db" in ln for ln in err) and len(err) <= 2, full.stderr
    assert any("full" in ln for ln in err)
    os.unlink(filler)  # space returns: the same store takes the next run whole
    again = subprocess.run(
        [*cmd, "--store", str(tiny_fs / "full.db")],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert again.returncode == 0, again.stderr
    assert again.stdout == normal.stdout


def test_no_room_even_to_open_the_store_is_one_clear_line(tiny_fs: Path) -> None:
    fill(tiny_fs)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "icsmon.cli",
            "replay",
            str(PCAP),
            "--store",
            str(tiny_fs / "new.db"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    err = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert len(err) == 1 and err[0].startswith("error: ") and "new.db" in err[0], proc.stderr
