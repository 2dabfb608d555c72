"""Kafka sink: documents to their kind's topic (``<prefix>.alerts``, ``.events``... see
``pipeline.kinds``).

Messages are nested ECS JSON (``pipeline.docs.nest``), keyed by ``labels.site`` so a site's
messages stay in one partition and in order; the producer uses ``acks=all``, idempotence
and compression.

The sensor must never stop or block on the uplink, so ``write`` does not wait for Kafka:

- *direct* mode: the record goes to the producer's buffer; it stays tracked as in flight
  until Kafka acknowledges it. A record that fails (or is still in flight when the sink
  closes) is written to the spool instead, so each record ends either acknowledged by Kafka
  or in the spool.
- *spooling* mode, entered on the first failure, when sending would block longer than
  ``kafka.max_block_ms``, or when nothing was acknowledged for ``stall_s`` while records
  are in flight: ``write`` appends to the on-disk spool (``pipeline.spool``). A background
  thread replays the spool in order once Kafka answers, then returns to direct mode.

Delivery is at least once: a record whose acknowledgement was lost can reach Kafka twice;
the indexer writes it under its deterministic ``event.id``, so Elasticsearch holds it once.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import threading
import time
from typing import Any

from kafka import KafkaProducer
from kafka.errors import KafkaError, MessageSizeTooLargeError

from pipeline import kinds
from pipeline.config import PipelineConfig
from pipeline.docs import dumps, nest
from pipeline.spool import Spool, SpoolRecord

log = logging.getLogger(__name__)


def encode_doc(doc: dict[str, Any]) -> bytes:
    """A flat document as the compact nested JSON sent to Kafka: byte for byte what the JSON
    lines sink writes, so both outputs of one capture compare equal."""
    return dumps(nest(doc))


def kafka_client_options(cfg: PipelineConfig) -> dict[str, Any]:
    """Connection and security options shared by producers, consumers and admin clients."""
    k = cfg.kafka
    opts: dict[str, Any] = {
        "bootstrap_servers": list(k.brokers),
        "security_protocol": k.security_protocol,
        "reconnect_backoff_max_ms": 2000,
    }
    if k.ca_file:
        opts["ssl_cafile"] = k.ca_file
    if k.security_protocol.startswith("SASL"):
        opts["sasl_mechanism"] = k.sasl_mechanism
        opts["sasl_plain_username"] = k.sasl_username
        opts["sasl_plain_password"] = k.sasl_password
    return opts


def make_producer(cfg: PipelineConfig, **extra: Any) -> KafkaProducer:
    opts = kafka_client_options(cfg)
    opts.update(
        client_id="icsmon-sensor",
        acks="all",
        enable_idempotence=True,
        compression_type=None if cfg.kafka.compression == "none" else cfg.kafka.compression,
        linger_ms=20,
        batch_size=256 * 1024,
        max_block_ms=cfg.kafka.max_block_ms,
        request_timeout_ms=10_000,
        delivery_timeout_ms=30_000,
        # Without the version probe the constructor returns at once even with Kafka down
        # (the probe would block for 30 s); the client still negotiates API versions per
        # connection.
        api_version=(4, 3),
    )
    opts.update(extra)
    return KafkaProducer(**opts)


class KafkaSink:
    """A :class:`pipeline.sinks.Sink` that publishes to Kafka and spools during outages."""

    def __init__(
        self,
        cfg: PipelineConfig,
        site: str | None = None,
        spool: Spool | None = None,
        stall_s: float = 5.0,
        drain_batch: int = 2000,
    ) -> None:
        self.cfg = cfg
        self.site = site
        self.stall_s = stall_s
        self.drain_batch = drain_batch
        self.topics = {kind: cfg.topic(kind) for kind in kinds.sensor_kinds()}
        self.spool = spool or Spool(cfg.spool.dir, cfg.spool.max_bytes, cfg.spool.segment_bytes)
        self._lock = threading.Lock()
        self._inflight: dict[int, tuple[str, bytes | None, bytes]] = {}
        self._ids = itertools.count()
        self._last_progress = time.monotonic()
        # Leftovers of a previous run are replayed first, so start in spooling mode if any.
        self._spooling = self.spool.pending() > 0
        self._producer: KafkaProducer | None = None
        self._closing = threading.Event()
        self._wake = threading.Event()
        self.counters = {
            "sent": 0,
            "acked": 0,
            "spooled": 0,
            "replayed": 0,
            "errors": 0,
            "failovers": 0,
        }
        try:
            self._producer = make_producer(cfg)
        except KafkaError as exc:
            log.warning("Kafka producer not available yet (%s): spooling", exc)
            self._spooling = True
        self._thread = threading.Thread(
            target=self._drain_loop, name="icsmon-kafka-drain", daemon=True
        )
        self._thread.start()

    @classmethod
    def from_config(cls, cfg: PipelineConfig, site: str | None = None, **kwargs: Any) -> KafkaSink:
        return cls(cfg, site=site, **kwargs)

    # ---- the Sink interface -------------------------------------------------------------

    def write(self, kind: str, doc: dict) -> None:
        if kind not in self.topics:
            raise ValueError(
                f"unknown document kind {kind!r} (expected one of {tuple(self.topics)})"
            )
        try:
            value = encode_doc(doc)
        except (TypeError, ValueError) as exc:
            # A document that cannot be serialised is a bug upstream; count it, keep running.
            self.counters["errors"] += 1
            log.error("cannot encode a %s document: %s", kind, exc)
            return
        site = doc.get("labels.site") or self.site
        key = str(site).encode() if site else None
        with self._lock:
            if self._spooling or self._producer is None:
                self._to_spool(kind, key, value)
                return
            rec_id = next(self._ids)
            self._inflight[rec_id] = (kind, key, value)
        try:
            future = self._producer.send(self.topics[kind], value=value, key=key)
        except MessageSizeTooLargeError as exc:
            # Kafka would refuse it for ever: spooling it would block the queue behind it.
            with self._lock:
                self._inflight.pop(rec_id, None)
            self.counters["errors"] += 1
            log.error("%s document of %d bytes dropped: %s", kind, len(value), exc)
            return
        except KafkaError as exc:
            # Metadata or buffer space unavailable within max_block_ms: Kafka is away.
            self._failover(f"send: {exc}")
            self._reclaim(rec_id)
            return
        self.counters["sent"] += 1
        future.add_callback(self._on_ack, rec_id)
        future.add_errback(self._on_error, rec_id)

    def flush(self, timeout: float | None = None) -> None:
        """Wait until everything written so far is acknowledged by Kafka or safe in the spool
        (fsync'd). Spooled records are replayed later; this does not wait for Kafka to return.
        Bounded by the producer's delivery timeout even without ``timeout``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        if self._producer is not None:
            with contextlib.suppress(KafkaError):
                self._producer.flush(timeout=timeout)
        while True:
            with self._lock:
                settled = not self._inflight
            if settled or (deadline is not None and time.monotonic() >= deadline):
                break
            time.sleep(0.05)
        self.spool.sync()

    def close(self, timeout: float = 10.0) -> None:
        """Deliver what Kafka will take within ``timeout``; spool the rest for the next run."""
        if self._closing.is_set():
            return
        deadline = time.monotonic() + timeout
        if self._producer is not None:
            with contextlib.suppress(KafkaError):
                self._producer.flush(timeout=timeout)
        self._closing.set()
        self._wake.set()
        self._thread.join(max(0.1, deadline - time.monotonic()))
        with self._lock:
            leftovers = list(self._inflight.values())
            self._inflight.clear()
            for kind, key, value in leftovers:
                self._to_spool(kind, key, value)
        if self._producer is not None:
            try:
                self._producer.close(timeout=0)
            except KafkaError:
                # close() gives up when its flush cannot finish (Kafka down) and leaves the
                # sender running; stop it so it cannot deliver records now in the spool.
                sender = getattr(self._producer, "_sender", None)
                if sender is not None:
                    sender.force_close()
                    sender.join(5)
        self.spool.close()

    def stats(self) -> dict[str, int]:
        spool = self.spool.stats()
        return {
            **self.counters,
            "inflight": len(self._inflight),
            "spool_pending": spool["pending"],
            "spool_bytes": spool["bytes"],
            **{f"spool_{key}": value for key, value in spool.items() if key.endswith("_dropped")},
            "spool_alerts_refused": spool["alerts_refused"],
        }

    @property
    def spooling(self) -> bool:
        return self._spooling

    # ---- delivery tracking ---------------------------------------------------------------

    def _to_spool(self, kind: str, key: bytes | None, value: bytes) -> None:
        # Caller holds self._lock (the spool has its own lock; this one orders modes).
        if self.spool.append(kind, key, value):
            self.counters["spooled"] += 1

    def _on_ack(self, rec_id: int, _metadata: Any) -> None:
        with self._lock:
            if self._inflight.pop(rec_id, None) is not None:
                self.counters["acked"] += 1
            self._last_progress = time.monotonic()

    def _on_error(self, rec_id: int, exc: BaseException) -> None:
        self._failover(f"delivery: {exc}")
        self._reclaim(rec_id)

    def _reclaim(self, rec_id: int) -> None:
        with self._lock:
            rec = self._inflight.pop(rec_id, None)
            if rec is not None:
                self._to_spool(*rec)

    def _failover(self, reason: str) -> None:
        with self._lock:
            if self._spooling:
                return
            self._spooling = True
            self.counters["failovers"] += 1
        log.warning("Kafka unavailable (%s): spooling to %s", reason, self.spool.directory)
        self._wake.set()

    # ---- background replay ---------------------------------------------------------------

    def _drain_loop(self) -> None:
        backoff = 0.5
        while not self._closing.is_set():
            self._wake.wait(timeout=0.5)
            self._wake.clear()
            if self._closing.is_set():
                return
            if self._producer is None:
                try:
                    self._producer = make_producer(self.cfg)
                except KafkaError as exc:
                    log.debug("producer still unavailable: %s", exc)
                    self._closing.wait(backoff)
                    backoff = min(backoff * 2, 10.0)
                    continue
            if not self._spooling:
                self._check_stall()
                continue
            try:
                delivered_all = self._drain_once()
            except Exception:  # never let the replay thread die: the sensor relies on it
                log.exception("spool replay failed")
                delivered_all = False
            if delivered_all:
                backoff = 0.5
                with self._lock:
                    # Records still in flight have not proven Kafka is back: they end acked or
                    # in the spool, and only then is it safe to send directly again.
                    if self.spool.pending() == 0 and not self._inflight:
                        self._spooling = False
                        self._last_progress = time.monotonic()
                        log.info("spool replayed: back to direct delivery")
                    elif self.spool.pending():
                        self._wake.set()  # more to replay
            else:
                self._closing.wait(backoff)
                backoff = min(backoff * 2, 10.0)

    def _check_stall(self) -> None:
        with self._lock:
            stalled = bool(self._inflight) and time.monotonic() - self._last_progress > self.stall_s
            if not self._inflight:
                self._last_progress = time.monotonic()
        if stalled:
            self._failover(f"nothing acknowledged for {self.stall_s:.0f}s")

    def _drain_once(self) -> bool:
        """Replay one batch per kind, most important first (alerts); True when every record
        was delivered."""
        assert self._producer is not None
        for kind in self.topics:
            records = self.spool.read(kind, self.drain_batch)
            if not records:
                continue
            delivered = self._send_batch(kind, records)
            self.spool.ack(kind, records[:delivered])
            self.counters["replayed"] += delivered
            if delivered < len(records):
                return False
        return True

    def _send_batch(self, kind: str, records: list[SpoolRecord]) -> int:
        """Send records in order; the length of the prefix Kafka acknowledged."""
        assert self._producer is not None
        futures = []
        for rec in records:
            try:
                futures.append(self._producer.send(self.topics[kind], value=rec.value, key=rec.key))
            except MessageSizeTooLargeError:
                futures.append(None)  # never deliverable: skip it rather than block the spool
                self.counters["errors"] += 1
            except KafkaError:
                break
        delivered = 0
        for future in futures:
            if future is None:
                delivered += 1
                continue
            try:
                future.get(timeout=60)
            except Exception:  # any failure ends the delivered prefix
                break
            delivered += 1
        return delivered
