"""The pipeline with Elasticsearch over TLS and API keys: sensor sink -> Kafka (plain, :9092)
-> indexer -> Elasticsearch over HTTPS with an API key; queries (``icsmon alerts``, the
posture back end) with another key. The node is a second one, started by
``deploy/elasticsearch.sh start --tls DIR`` on 127.0.0.1:9230 with a certificate from a CA
made here, and reset at the end of the module.

Each key gets only what its side needs (as deploy/README.md documents): the indexer's may
install templates and create and write ``<prefix>-*`` indices; the reader's may only read.
"""

from __future__ import annotations

import base64
import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pipeline.indexer import Indexer, setup
from pipeline.kafka import KafkaSink
from pipeline.query import AlertFilter
from tests.support.pipeline import (
    BROKER,
    DEPLOY,
    REPO,
    Pipe,
    alert_doc,
    make_pipe,
    require_services,
    write_config_file,
)
from tests.support.tls import make_ca

pytestmark = [pytest.mark.services, pytest.mark.slow, pytest.mark.timeout(600)]

TLS_ES = "https://127.0.0.1:9230"
INDEXER_CLUSTER = ["monitor", "manage_index_templates"]
INDEXER_INDICES = ["create_index", "index", "view_index_metadata"]
READER_INDICES = ["read", "view_index_metadata"]


def es_tls(action: str, folder: Path | None = None) -> subprocess.CompletedProcess:
    args = [str(DEPLOY / "elasticsearch.sh"), action, "--tls"] + ([str(folder)] if folder else [])
    return subprocess.run(args, capture_output=True, text=True, timeout=400)


@pytest.fixture(scope="module")
def tls_es(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The TLS node, and a client for it as the built-in superuser ``elastic``."""
    require_services()  # plain Kafka carries the documents; the plain node stays untouched
    if os.geteuid() != 0 or shutil.which("runuser") is None:
        pytest.skip(
            "deploy/elasticsearch.sh runs Elasticsearch as its own user: needs root and runuser"
        )
    from elasticsearch import Elasticsearch

    folder = tmp_path_factory.mktemp("es-tls")
    make_ca(folder)
    password = secrets.token_urlsafe(18)
    (folder / "elastic-password").write_text(password)
    (folder / "elastic-password").chmod(0o600)
    es_tls("reset")  # the password is taken on the first start on empty data
    started = es_tls("start", folder)
    if started.returncode != 0:
        es_tls("reset")
        pytest.fail(f"deploy/elasticsearch.sh start --tls failed:\n{started.stderr[-4000:]}")
    admin = Elasticsearch(
        TLS_ES,
        basic_auth=("elastic", password),
        ca_certs=str(folder / "ca.pem"),
        request_timeout=60,
    )
    try:
        yield {"ca": str(folder / "ca.pem"), "admin": admin, "folder": folder}
    finally:
        admin.close()
        stopped = es_tls("reset")
        assert stopped.returncode == 0, stopped.stderr[-2000:]


def api_key(admin: Any, name: str, prefix: str, indices: list[str], cluster: list[str]) -> str:
    """A key limited to ``<prefix>-*``, in the encoded form the config's api_key takes."""
    resp = admin.security.create_api_key(
        name=name,
        expiration="1h",
        role_descriptors={
            name: {
                "cluster": cluster,
                "indices": [{"names": [f"{prefix}-*"], "privileges": indices}],
            }
        },
    )
    return resp["encoded"]


def tls_pipe(
    tmp_path: Path,
    tls_es: dict[str, Any],
    key: str | None,
    index_prefix: str,
    topic_prefix: str | None = None,
    **es: Any,
) -> Pipe:
    """A pipe on the TLS node under ``index_prefix`` (``es`` entries set to None are left out)."""
    settings = {
        "url": TLS_ES,
        "api_key": key,
        "ca_file": tls_es["ca"],
        "request_timeout": 20,
        "index_prefix": index_prefix,
    }
    settings.update(es)
    settings = {k: v for k, v in settings.items() if v is not None}
    kafka = {"topic_prefix": topic_prefix or index_prefix}
    return make_pipe(
        tmp_path,
        kafka=kafka,
        indexer={"group_id": f"{kafka['topic_prefix']}-ix"},
        elasticsearch=settings,
    )


def cli(args: list[str], config: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ICSMON_")}
    return subprocess.run(
        [sys.executable, "-m", "icsmon.cli", *args, "--config", str(config)],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def drop_topics(prefix: str) -> None:
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=BROKER, api_version=(4, 3))
    try:
        mine = [t for t in admin.list_topics() if t.startswith(prefix + ".")]
        if mine:
            admin.delete_topics(mine)
    finally:
        admin.close()


def test_alerts_indexed_and_queried_over_tls_with_api_keys(
    tmp_path: Path, tls_es: dict[str, Any]
) -> None:
    admin = tls_es["admin"]
    probe = make_pipe(tmp_path)  # only for a fresh prefix
    prefix = probe.prefix
    writer_key = api_key(admin, "icsmon-indexer", prefix, INDEXER_INDICES, INDEXER_CLUSTER)
    reader_key = api_key(admin, "icsmon-reader", prefix, READER_INDICES, [])
    pipe = tls_pipe(tmp_path, tls_es, writer_key, index_prefix=prefix, topic_prefix=prefix)
    n = 250
    try:
        setup(pipe.cfg)  # templates and today's indices, over HTTPS with the indexer's key
        sink = KafkaSink.from_config(pipe.cfg)
        try:
            for i in range(n):
                sink.write("alert", alert_doc(i))
            sink.flush(timeout=60)
            assert sink.stats()["acked"] == n
        finally:
            sink.close(timeout=5)
        indexer = Indexer(pipe.cfg)
        try:
            stats = indexer.run(once=True)
        finally:
            indexer.close()
        assert stats["indexed"] == n and stats["deadlettered"] == 0, stats

        # Searchable on the TLS node (checked as elastic, independently of the keys).
        admin.indices.refresh(index=f"{prefix}-*")
        hits = admin.search(index=f"{prefix}-alerts", size=n + 10, query={"match_all": {}})["hits"]
        assert hits["total"]["value"] == n
        assert {h["_id"] for h in hits["hits"]} == {alert_doc(i)["event.id"] for i in range(n)}

        # The query side with the read-only key: the posture API's back end, built from the
        # pipeline config as `icsmon posture serve --es` does, and the `icsmon alerts` command.
        from pipeline.es import open_query_backend

        reader_cfg = write_config_file(
            tls_pipe(tmp_path, tls_es, reader_key, index_prefix=prefix).cfg,
            tmp_path / "reader.toml",
        )
        backend = open_query_backend(config=str(reader_cfg))
        try:
            total, alerts = backend.search_alerts(AlertFilter(limit=5))
            assert total == n and len(alerts) == 5
            assert backend.get_alert(alert_doc(7)["event.id"]) is not None
        finally:
            backend.close()
        listed = cli(["alerts", "--format", "jsonl", "--limit", "3"], reader_cfg)
        assert listed.returncode == 0, listed.stderr
        assert len(listed.stdout.strip().splitlines()) == 3

        # The reader's key cannot write: least privilege holds on the node.
        denied = cli(["index", "--setup"], reader_cfg)
        assert denied.returncode == 1
        assert "security_exception" in denied.stderr or "403" in denied.stderr, denied.stderr
        assert "Traceback" not in denied.stderr
    finally:
        drop_topics(prefix)
        admin.indices.delete(index=f"{prefix}-*", ignore_unavailable=True, allow_no_indices=True)


@pytest.mark.parametrize(
    "what", ["wrong-api-key", "no-ca", "other-ca", "plain-http", "http-with-ca"]
)
@pytest.mark.parametrize("command", [["index", "--setup"], ["alerts", "--limit", "1"]])
def test_bad_tls_or_key_is_one_clear_error(
    tmp_path: Path, tls_es: dict[str, Any], what: str, command: list[str]
) -> None:
    admin = tls_es["admin"]
    prefix = make_pipe(tmp_path).prefix
    good = api_key(admin, "icsmon-bad-clients", prefix, INDEXER_INDICES + ["read"], INDEXER_CLUSTER)
    other = tmp_path / "other-ca"
    other.mkdir()
    make_ca(other)
    # The issued key's id with a secret the node never issued.
    key_id = base64.b64decode(good).decode().split(":")[0]
    wrong = base64.b64encode(f"{key_id}:{secrets.token_urlsafe(16)}".encode()).decode()
    changes: dict[str, Any] = {
        "wrong-api-key": {"api_key": wrong},
        "no-ca": {"ca_file": None},
        "other-ca": {"ca_file": str(other / "ca.pem")},
        "plain-http": {"url": TLS_ES.replace("https://", "http://"), "ca_file": None},
        "http-with-ca": {"url": TLS_ES.replace("https://", "http://")},
    }[what]
    pipe = tls_pipe(tmp_path, tls_es, good, index_prefix=prefix, **changes)
    config = write_config_file(pipe.cfg, tmp_path / "bad.toml")
    try:
        proc = cli(command, config)
    finally:
        drop_topics(prefix)
    err = proc.stderr
    assert proc.returncode != 0, f"{what}: {command} succeeded:\n{proc.stdout[-1000:]}"
    assert "Traceback" not in err, err[-3000:]
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines and lines[0].startswith("error:"), err[-3000:]
    assert TLS_ES.split("//")[1] in err  # names the node it could not use
    assert good not in err and wrong not in err  # credentials never echoed
    expect = {
        "wrong-api-key": ("401", "authenticat"),
        "no-ca": ("certificate", "verify"),
        "other-ca": ("certificate", "verify"),
        "plain-http": ("Connection",),
        "http-with-ca": ("https",),
    }[what]
    assert any(word.lower() in err.lower() for word in expect), err[-3000:]
