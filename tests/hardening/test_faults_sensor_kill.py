"""The sensor killed with SIGKILL while it spools (Kafka down), through the real CLI.

1. The expected alerts: the capture replayed with ``--sink jsonl``.
2. Kafka stopped (deploy/kafka.sh); ``icsmon replay --sink kafka`` started; once its spool
   holds alerts, SIGKILL: the run ends mid-capture with a prefix of its alerts on disk.
3. Kafka started again; the sensor run again on the same capture and spool: the sink
   replays the leftover spool first, then sends the new run's documents. The indexer runs.
4. Elasticsearch holds every expected alert exactly once: the killed run's prefix reaches
   Kafka twice (once from the spool, once from the second run) and collapses on its
   deterministic ``event.id``, which is the document ``_id``.

The capture is generated from the real pymodbus attack capture (pcaps/modbus): copies with
their own attacker address, two minutes apart (past the alert deduplication window), so
each copy raises its own alerts and the run lasts long enough to be killed mid-way.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from pipeline.kafka import KafkaSink
from pipeline.spool import Spool
from tests.support.pcapgen import frames_of, write_pcap
from tests.support.pipeline import (
    REPO,
    deploy,
    drop_pipe,
    es_docs,
    make_pipe,
    read_jsonl,
    require_services,
    topic_messages,
    wait_for,
    write_config_file,
)

pytestmark = [pytest.mark.services, pytest.mark.slow, pytest.mark.timeout(900)]

ATTACK = REPO / "pcaps" / "modbus" / "modbus_attack.pcap"
ATTACKER = bytes([127, 0, 0, 8])
COPIES = 300
SITE = "plant-kill"
OBSERVER = "sensor-kill"


def attack_copies(path: Path, copies: int, gap_s: float = 120.0) -> Path:
    """``copies`` of the attack capture, each from its own attacker address, ``gap_s`` apart."""
    frames = frames_of(ATTACK)
    out = []
    for k in range(copies):
        host = bytes([10, 99, (k >> 8) & 255, k & 255])
        # IPv4 addresses in the frames are raw bytes; checksums are not verified by icsmon.
        out += [(ts + k * gap_s, lt, data.replace(ATTACKER, host)) for ts, lt, data in frames]
    return write_pcap(path, out)


def spooled_bytes(spool_dir: Path, kind: str) -> int:
    """Bytes in a kind's spool segments, read from outside (the sensor holds the spool lock)."""
    total = 0
    for seg in (spool_dir / kind).glob("*.seg"):
        try:
            total += seg.stat().st_size
        except FileNotFoundError:  # acknowledged and deleted meanwhile
            pass
    return total


def sensor_cmd(capture: Path, *sink: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "icsmon.cli",
        "replay",
        str(capture),
        "--site",
        SITE,
        "--observer",
        OBSERVER,
        "--format",
        "jsonl",
        *sink,
    ]


def run_cli(args: list[str], env: dict[str, str], log: Path, timeout: float = 300) -> str:
    """Run to completion; stdout to a file (a full pipe would block the child), bounded."""
    with open(log, "w+b") as out:
        proc = subprocess.run(
            args, env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, timeout=timeout
        )
        out.seek(0)
        text = out.read().decode("utf-8", "replace")
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(args[2:5])} failed ({proc.returncode}):\n{text[-3000:]}")
    return text


def test_sensor_sigkill_while_spooling_loses_and_doubles_no_alert(tmp_path: Path) -> None:
    require_services()
    capture = attack_copies(tmp_path / "attack-copies.pcap", COPIES)
    pipe = make_pipe(tmp_path)
    spool_dir = Path(pipe.cfg.spool.dir)
    config = write_config_file(pipe.cfg, tmp_path / "sensor.toml")
    # Only the config file speaks: no ICSMON_* from the caller's environment.
    env = {k: v for k, v in os.environ.items() if not k.startswith("ICSMON_")}
    env["ICSMON_CONFIG"] = ""
    env["ICSMON_STORE"] = str(tmp_path / "sensor.db")  # the sensor's own store, not the home's

    # 1. What the capture produces, without Kafka in the way.
    expected_file = tmp_path / "expected.jsonl"
    run_cli(
        sensor_cmd(capture, "--sink", "jsonl", "--out", str(expected_file)),
        env,
        tmp_path / "expected.log",
    )
    expected = [
        d["event"]["id"] for d in read_jsonl(expected_file) if d["event"]["kind"] == "alert"
    ]
    assert len(expected) >= 10 * COPIES and len(set(expected)) == len(expected)

    sensor: subprocess.Popen | None = None
    drainer: KafkaSink | None = None
    kafka_stopped = False
    try:
        # 2. Kafka away; the sensor spools; SIGKILL once alerts are on disk.
        deploy("kafka.sh", "stop")
        kafka_stopped = True
        with open(tmp_path / "killed.log", "wb") as log:
            sensor = subprocess.Popen(
                sensor_cmd(capture, "--sink", "kafka", "--config", str(config)),
                env=env,
                cwd=REPO,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        # About ten alerts: the kill lands early, with most of the capture still to come.
        wait_for(
            "the sensor to spool alerts",
            lambda: spooled_bytes(spool_dir, "alert") > 20_000 or sensor.poll() is not None,
            limit_s=120,
            step_s=0.02,
        )
        os.kill(sensor.pid, signal.SIGKILL)
        sensor.wait(30)
        assert sensor.returncode == -signal.SIGKILL, (
            f"the sensor ended on its own ({sensor.returncode}) before the kill:\n"
            + (tmp_path / "killed.log").read_text(errors="replace")[-2000:]
        )
        sensor = None

        on_disk = Spool(spool_dir)  # the lock died with the process
        try:
            prefix = [
                json.loads(r.value)["event"]["id"]
                for r in on_disk.read("alert", on_disk.pending("alert"))
            ]
        finally:
            on_disk.close()
        assert 0 < len(prefix) < len(expected), (
            f"the kill did not land mid-run ({len(prefix)} alerts)"
        )
        # Same capture, same ids: what the killed run spooled is part of what a full run makes.
        assert set(prefix) <= set(expected) and len(set(prefix)) == len(prefix)

        # 3. Kafka back; the sensor again on the same spool, then whatever its close left.
        deploy("kafka.sh", "start")
        kafka_stopped = False
        run_cli(
            sensor_cmd(capture, "--sink", "kafka", "--config", str(config), "--stats"),
            env,
            tmp_path / "second.log",
        )
        # The sink replays a leftover spool when it opens: the product's way to drain one.
        drainer = KafkaSink.from_config(pipe.cfg)
        wait_for(
            "the spool to drain",
            lambda: drainer.spool.pending() == 0 and not drainer.spooling,
            limit_s=300,
        )
        drainer.flush(timeout=60)
        drainer.close(timeout=10)
        drainer = None

        sent = Counter(
            json.loads(m.value)["event"]["id"]
            for m in topic_messages(pipe, pipe.cfg.topic("alert"))
        )
        assert set(sent) == set(expected), (
            f"{len(set(expected) - set(sent))} alerts never reached Kafka"
        )
        # The killed run's alerts were sent twice (spool + second run): at least once is the contract.
        assert all(sent[i] >= 2 for i in prefix)

        run_cli(
            [sys.executable, "-m", "icsmon.cli", "index", "--once", "--config", str(config)],
            env,
            tmp_path / "index.log",
        )

        # 4. Every alert once in Elasticsearch, under its event.id.
        docs = es_docs(pipe, "alert")
        ids = [d["_id"] for d in docs]
        print(
            f"alerts: expected {len(expected)}, spooled before the kill {len(prefix)}, "
            f"messages in Kafka {sum(sent.values())}, documents in Elasticsearch {len(ids)}"
        )
        dupes = [i for i, n in Counter(ids).items() if n > 1]
        assert not dupes, f"{len(dupes)} alerts indexed twice, e.g. {dupes[:3]}"
        assert len(ids) == len(expected)
        assert set(ids) == set(expected)
        assert all(d["_source"]["event"]["id"] == d["_id"] for d in docs)
    finally:
        if sensor is not None and sensor.poll() is None:
            sensor.kill()
            sensor.wait(30)
        if drainer is not None:
            drainer.close(timeout=1)
        if kafka_stopped:
            deploy("kafka.sh", "start")
        drop_pipe(pipe)
