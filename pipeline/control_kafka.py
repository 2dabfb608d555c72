"""The control channel over Kafka: the province publishes, a sensor listens and answers.

Topics (``pipeline.config``): requests go to ``<prefix>.control`` keyed by the target
sensor's id (so all of a sensor's requests land in one partition, in order); answers come
back as ``response`` documents (``pipeline.kinds``) on ``<prefix>.responses`` through the
sensor's Kafka sink (spooled like everything else while the uplink is down), and the indexer
stores them like any other kind.

A sensor only connects outward. :class:`ControlListener` reads the one partition its id maps
to (Kafka's default partitioner: murmur2 of the key, as the producer uses), from the offset
it last committed under its own consumer group (``icsmon-sensor.<id>``: offsets only, no
group membership), skips the other sensors' messages sharing the partition (by key,
before any parsing), hands its own to a :class:`pipeline.control.Receiver` (signature,
addressing, expiry, replays; the type's handler) and writes the answers. The offset is
committed after the answers are handed to the sink; a message read again after a crash is
refused as a replay (ids are remembered on disk), so it is answered once.

The listener never stops the sensor: Kafka away, a topic not created yet, a handler that
fails: each is logged and counted, and it tries again with back-off.

Kafka ACLs for a sensor's account: read on the control topic and on the group
``icsmon-sensor.<id>``, write on the topics of the kinds it ships. Requests are signed, not
encrypted: what a request names (an alert's addresses and ports) is readable by whoever may
read the control topic.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError
from kafka.partitioner.default import murmur2

from pipeline.config import PipelineConfig
from pipeline.control import Receiver, Signer
from pipeline.kafka import kafka_client_options, make_producer

log = logging.getLogger(__name__)

POLL_MS = 1000


def partition_of(key: str, partitions: int) -> int:
    """The partition Kafka's default partitioner gives ``key`` (Java's and kafka-python's)."""
    return (murmur2(key.encode()) & 0x7FFFFFFF) % partitions


class ControlPublisher:
    """The province's side: signs requests and writes them to the control topic."""

    def __init__(self, cfg: PipelineConfig, signer: Signer, producer: Any | None = None) -> None:
        self.cfg = cfg
        self.signer = signer
        self.topic = cfg.topic("control")
        self.lifetime_s = cfg.control.lifetime_s
        self._producer = producer
        self._lock = threading.Lock()

    @classmethod
    def from_config(cls, cfg: PipelineConfig) -> ControlPublisher:
        if not cfg.control.private_key:
            from pipeline.control import ControlError

            raise ControlError(
                f"{cfg.source}: control.private_key is not set (the key that signs requests)"
            )
        return cls(cfg, Signer.from_file(cfg.control.private_key))

    def _producer_now(self) -> Any:
        with self._lock:
            if self._producer is None:
                # a request is small and rare: acks from all replicas, wait for them
                self._producer = make_producer(
                    self.cfg, client_id="icsmon-control", max_block_ms=10_000, linger_ms=0
                )
            return self._producer

    def send(
        self, type_: str, target: str, payload: dict[str, Any], lifetime_s: int | None = None
    ) -> dict[str, Any]:
        """Sign and publish one request; the envelope once Kafka has acknowledged it.
        Raises KafkaError when Kafka does not take it within 10 s."""
        envelope = self.signer.envelope(
            type_, target, payload, lifetime_s=lifetime_s or self.lifetime_s
        )
        future = self._producer_now().send(
            self.topic, key=target.encode(), value=Signer.encode(envelope)
        )
        future.get(timeout=10)
        return envelope

    def close(self) -> None:
        with self._lock:
            if self._producer is not None:
                try:
                    self._producer.close(timeout=5)
                except KafkaError:
                    pass
                self._producer = None


class ControlListener:
    """The sensor's side: a thread reading this sensor's requests and writing the answers
    with ``answer`` (the Kafka sink's ``write("response", doc)``)."""

    def __init__(
        self,
        cfg: PipelineConfig,
        receiver: Receiver,
        answer: Callable[[dict[str, Any]], None],
    ) -> None:
        self.cfg = cfg
        self.receiver = receiver
        self.answer = answer
        self.sensor_id = receiver.sensor_id
        self.key = self.sensor_id.encode()
        self.topic = cfg.topic("control")
        self.group = f"icsmon-sensor.{self.sensor_id}"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._consumer: KafkaConsumer | None = None
        self.ready = threading.Event()  # set once the partition is assigned
        self.counters = {"messages": 0, "others": 0, "answers": 0, "commits": 0, "errors": 0}

    # -- life -----------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="icsmon-control", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def stats(self) -> dict[str, int]:
        return {**self.counters, **self.receiver.counters}

    # -- the loop -------------------------------------------------------------------------

    def _run(self) -> None:
        backoff = 1.0
        while not self._stop.is_set():
            try:
                if self._consumer is None:
                    self._consumer = self._connect()
                    if self._consumer is None:  # the topic does not exist yet
                        self._stop.wait(backoff)
                        backoff = min(backoff * 2, 30.0)
                        continue
                    backoff = 1.0
                self._poll_once(self._consumer)
            except Exception as exc:  # the listener must never stop the sensor
                self.counters["errors"] += 1
                log.warning("control channel: %s; retrying in %.0f s", exc, backoff)
                self._close_consumer()
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 30.0)
        self._close_consumer()

    def _connect(self) -> KafkaConsumer | None:
        consumer = KafkaConsumer(
            group_id=self.group,
            client_id=f"icsmon-sensor-control-{self.sensor_id}",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=100,
            api_version=(4, 3),
            **kafka_client_options(self.cfg),
        )
        try:
            partitions = consumer.partitions_for_topic(self.topic)
            if not partitions:
                log.info("control topic %s not there yet; waiting for it", self.topic)
                consumer.close(autocommit=False)
                return None
            tp = TopicPartition(self.topic, partition_of(self.sensor_id, len(partitions)))
            consumer.assign([tp])
        except BaseException:
            consumer.close(autocommit=False)
            raise
        log.info("control channel: reading %s[%d] for %s", tp.topic, tp.partition, self.sensor_id)
        self.ready.set()
        return consumer

    def _poll_once(self, consumer: KafkaConsumer) -> None:
        batch = consumer.poll(timeout_ms=POLL_MS)
        if not batch:
            return
        for records in batch.values():
            for rec in records:
                if self._stop.is_set():
                    return
                self.counters["messages"] += 1
                if rec.key != self.key:
                    self.counters["others"] += 1  # another sensor's, same partition
                else:
                    self._handle(rec.value)
                # the answers are in the sink's hands (sent, or spooled to disk): move on
                consumer.commit({TopicPartition(rec.topic, rec.partition): _next(rec.offset)})
                self.counters["commits"] += 1

    def _handle(self, value: bytes | None) -> None:
        started = time.monotonic()
        for doc in self.receiver.handle(value):
            self.answer(doc)
            self.counters["answers"] += 1
        log.info("control message handled in %.2f s", time.monotonic() - started)

    def _close_consumer(self) -> None:
        consumer, self._consumer = self._consumer, None
        self.ready.clear()
        if consumer is not None:
            try:
                consumer.close(autocommit=False)
            except Exception:  # closing a consumer of an unreachable Kafka: nothing to save
                pass


def _next(offset: int) -> Any:
    from kafka.structs import OffsetAndMetadata

    return OffsetAndMetadata(offset + 1, "", -1)
