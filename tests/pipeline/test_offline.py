"""The pipeline without its services: an unreachable Kafka, and the index mapping's coverage.

Unreachable Kafka is real here: a loopback port nothing listens on (connection refused), so
the sink must spool at once and never hold the sensor up.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pipeline import kinds
from pipeline.config import load_config
from pipeline.docs import flatten
from pipeline.es import FIELD_TYPES, mapped_type, properties_tree
from pipeline.kafka import KafkaSink, encode_doc
from pipeline.spool import Spool
from tests.support import REPO


def closed_port() -> int:
    """A loopback port with no listener (bound then released, so refused on connect)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def offline_cfg(tmp_path: Path) -> Any:
    return load_config(
        env={},
        overrides={
            "kafka": {"brokers": f"127.0.0.1:{closed_port()}"},
            "spool": {
                "dir": str(tmp_path / "spool"),
                "max_bytes": 8 << 20,
                "segment_bytes": 1 << 20,
            },
        },
    )


def doc(i: int, kind: str = "event") -> dict[str, Any]:
    return {
        "@timestamp": "2026-11-26T10:00:00Z",
        "event.kind": kind,
        "event.id": f"{kind}-{i}",
        "labels.site": "site-a",
        "source.ip": "10.0.0.1",
        "modbus.function_code": 6,
    }


def test_unreachable_kafka_spools_everything_and_keeps_it_for_the_next_run(tmp_path: Path) -> None:
    cfg = offline_cfg(tmp_path)
    sink = KafkaSink.from_config(cfg, site="site-a")
    for i in range(300):
        sink.write("event", doc(i))
    for i in range(5):
        sink.write("alert", doc(i, "alert"))
    sink.write(
        "asset",
        {
            "asset.id": "site-a:10.0.0.1",
            "host.ip": "10.0.0.1",
            "asset.last_seen": "2026-11-26T10:00:00Z",
        },
    )
    stats = sink.stats()
    assert sink.spooling
    assert stats["acked"] == 0
    sink.close(timeout=1)
    spool = Spool(cfg.spool.dir)
    try:
        assert spool.pending("event") == 300 and spool.pending("alert") == 5
        assert spool.pending("asset") == 1
        first = spool.read("alert", 1)[0]
        # Spooled exactly as it would have been sent: keyed by site, nested JSON.
        assert first.key == b"site-a" and first.value == encode_doc(doc(0, "alert"))
        assert json.loads(first.value)["event"]["id"] == "alert-0"
    finally:
        spool.close()


def test_write_rejects_unknown_kinds(tmp_path: Path) -> None:
    sink = KafkaSink.from_config(offline_cfg(tmp_path))
    try:
        with pytest.raises(ValueError, match="unknown document kind"):
            sink.write("metric", doc(1))
    finally:
        sink.close(timeout=1)


def test_cli_replay_with_kafka_down_exits_and_spools_the_alerts(tmp_path: Path) -> None:
    captures = sorted(str(p) for p in (REPO / "pcaps").rglob("*.pcap"))
    if not captures:
        pytest.skip("no captures under pcaps/")
    spool_dir = tmp_path / "spool"
    env = {
        "ICSMON_KAFKA_BROKERS": f"127.0.0.1:{closed_port()}",
        "ICSMON_SPOOL_DIR": str(spool_dir),
        "PATH": "/usr/bin:/bin",
        # the local store too: never the user's (another checkout may have written it)
        "XDG_DATA_HOME": str(tmp_path / "data"),
        "XDG_STATE_HOME": str(tmp_path / "state"),
    }
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "icsmon.cli",
            "replay",
            *captures,
            "--sink",
            "kafka",
            "--site",
            "site-off",
            "--format",
            "jsonl",
        ],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    printed = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    spool = Spool(spool_dir)
    try:
        assert spool.pending("alert") == len(printed)
        spooled = {json.loads(r.value)["event"]["id"] for r in spool.read("alert", 100000)}
        assert spooled == {a["event"]["id"] for a in printed}
    finally:
        spool.close()


def golden_docs() -> list[tuple[str, dict[str, Any]]]:
    out = []
    for path in sorted((REPO / "pcaps").rglob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                out.append((path.name, flatten(json.loads(line))))
    return out


NUMERIC = {"long", "double"}
TEXTUAL = {"keyword", "text", "ip", "date", "date_nanos"}


def test_every_field_of_the_golden_outputs_is_mapped_with_a_fitting_type() -> None:
    docs = golden_docs()
    if not docs:
        pytest.skip("no golden outputs under pcaps/")
    problems = set()
    for source, flat in docs:
        # a kind's own fields are mapped in its template (pipeline/kinds.py es_fields)
        own = kinds.by_plural(source.rsplit(".", 2)[-2]).es_fields
        for name, value in flat.items():
            kind = own[name]["type"] if name in own else mapped_type(name)
            if kind is None:
                problems.add(f"{name}: not in pipeline.es.FIELD_TYPES (seen in {source})")
                continue
            values = value if isinstance(value, list) else [value]
            for v in values:
                if v is None or kind == "object":
                    continue
                if isinstance(v, bool):
                    ok = kind in ("boolean", "keyword")
                elif isinstance(v, int | float):
                    ok = kind in NUMERIC or kind == "keyword"
                    if kind == "long" and isinstance(v, float):
                        ok = False
                elif isinstance(v, str):
                    ok = kind in TEXTUAL
                elif isinstance(v, dict):
                    ok = all(mapped_type(f"{name}.{k}") is not None for k in v)  # via its leaves
                else:
                    ok = False
                if not ok:
                    problems.add(f"{name}: {type(v).__name__} value {v!r:.40} but mapped as {kind}")
    assert not problems, "\n".join(sorted(problems))


def test_numeric_ics_fields_are_numbers_in_the_mapping() -> None:
    for name in (
        "modbus.function_code",
        "modbus.address",
        "modbus.values",
        "s7comm.function_code",
        "s7comm.items.db",
        "opcua.service_type_id",
        "opcua.status_code",
        "event.severity",
        "source.port",
        "destination.port",
    ):
        assert mapped_type(name) == "long", name
    for name in ("source.ip", "destination.ip", "host.ip", "asset.peers"):
        assert mapped_type(name) == "ip", name
    tree = properties_tree(FIELD_TYPES)
    assert tree["modbus"]["properties"]["values"] == {"type": "long"}
    assert tree["@timestamp"] == {"type": "date_nanos"}
