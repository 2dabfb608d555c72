"""The pipeline with Kafka over TLS and SASL/SCRAM-SHA-512: sensor sink -> Kafka (SASL_SSL,
a certificate from a CA made here) -> indexer -> Elasticsearch. The broker is a second one
started by ``deploy/kafka.sh start --tls DIR`` on 127.0.0.1:9192 and reset afterwards.
"""

from __future__ import annotations

import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from kafka.errors import KafkaError

from pipeline.indexer import Indexer, setup
from pipeline.kafka import KafkaSink, make_producer
from tests.support.pipeline import DEPLOY, alert_doc, es_docs, make_pipe, require_services, wait_for
from tests.support.tls import make_ca

pytestmark = [pytest.mark.services, pytest.mark.slow]

TLS_BROKER = "127.0.0.1:9192"


def kafka_tls(action: str, folder: Path | None = None) -> None:
    args = [str(DEPLOY / "kafka.sh"), action, "--tls"] + ([str(folder)] if folder else [])
    proc = subprocess.run(args, capture_output=True, text=True, timeout=240)
    if proc.returncode != 0:
        raise AssertionError(f"deploy/kafka.sh {action} --tls failed:\n{proc.stderr[-4000:]}")


@pytest.fixture(scope="module")
def tls_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    require_services()
    folder = tmp_path_factory.mktemp("kafka-tls")
    make_ca(folder)
    users = {"admin": secrets.token_urlsafe(16), "sensor-0042": secrets.token_urlsafe(16)}
    (folder / "scram-users").write_text("".join(f"{u} {p}\n" for u, p in users.items()))
    (folder / "scram-users").chmod(0o600)
    kafka_tls("reset")  # users are created when the storage is formatted: start clean
    kafka_tls("start", folder)
    try:
        yield {
            "ca": str(folder / "ca.pem"),
            "user": "sensor-0042",
            "password": users["sensor-0042"],
        }
    finally:
        kafka_tls("reset")


def tls_pipe(tmp_path: Path, broker: dict[str, str], **kafka: str):
    settings = {
        "brokers": TLS_BROKER,
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_username": broker["user"],
        "sasl_password": broker["password"],
        "ca_file": broker["ca"],
    }
    settings.update(kafka)
    return make_pipe(tmp_path, kafka=settings)


def test_alerts_flow_through_kafka_with_tls_and_scram(
    tmp_path: Path, tls_broker: dict[str, str]
) -> None:
    pipe = tls_pipe(tmp_path, tls_broker)
    from pipeline.es import EsStore

    try:
        setup(pipe.cfg)
        sink = KafkaSink.from_config(pipe.cfg)
        n = 300
        try:
            for i in range(n):
                sink.write("alert", alert_doc(i))
            # The first TLS + SCRAM handshake may outlast max_block_ms: then the sink spools and
            # its background replay delivers, as in any outage.
            wait_for(
                "every alert to be delivered",
                lambda: sink.spool.pending() == 0 and not sink.spooling,
                limit_s=120,
            )
            sink.flush(timeout=60)
            stats = sink.stats()
            assert stats["acked"] + stats["replayed"] >= n and stats["spool_alerts_refused"] == 0
        finally:
            sink.close(timeout=5)
        indexer = Indexer(pipe.cfg)
        try:
            stats = indexer.run(once=True)  # to the topics' ends, over SASL_SSL
        finally:
            indexer.close()
        assert stats["indexed"] == n, stats
        ids = [h["_id"] for h in es_docs(pipe, "alert")]
        assert len(ids) == n and len(set(ids)) == n
    finally:
        store = EsStore(pipe.cfg)
        store.delete_all()
        store.close()


@pytest.mark.parametrize("what", ["wrong-password", "untrusted-ca", "plaintext"])
def test_the_tls_broker_refuses_bad_clients(
    tmp_path: Path, tls_broker: dict[str, str], what: str
) -> None:
    other_ca = tmp_path / "other"
    other_ca.mkdir()
    make_ca(other_ca)
    changes = {
        "wrong-password": {"sasl_password": "not-the-password"},
        "untrusted-ca": {"ca_file": str(other_ca / "ca.pem")},
        "plaintext": {"security_protocol": "PLAINTEXT"},
    }[what]
    pipe = tls_pipe(tmp_path, tls_broker, **changes)
    producer = make_producer(pipe.cfg, max_block_ms=4000)
    try:
        with pytest.raises(KafkaError) as caught:  # no metadata: the handshake never succeeds
            producer.send(pipe.cfg.topic("alert"), value=b"{}").get(timeout=10)
    finally:
        producer.close(timeout=0)
    assert tls_broker["password"] not in str(caught.value)
