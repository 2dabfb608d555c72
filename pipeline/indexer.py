"""Kafka -> Elasticsearch indexer: one member of a consumer group.

Per batch polled from the topics of every document kind (``pipeline.kinds``:
``<prefix>.alerts``, ``.events``, ``.assets``, ``.heartbeats``...):

1. decode each message; undecodable ones, and ones without an id or a usable timestamp,
   go to the dead-letter topic with the reason;
   so do messages larger than their kind's ``max_doc_bytes`` (a sensor's answer in parts
   never is);
2. bulk-write the rest to the kind's daily index (by the kind's time field) with ``_id`` =
   the kind's id field (``event.id``; ``asset.id`` for assets), so redelivery overwrites
   instead of duplicating; a kind with ``latest_by`` is also written to its latest index
   under the key's value, versioned by its time so an older document never replaces a newer
   one (a heartbeat that arrives late stays in the history only);
3. documents Elasticsearch rejects for good (mapping errors: 4xx other than 429) go to the
   dead-letter topic; 429/5xx items and connection errors are retried with exponential
   back-off; if the batch still fails after ``retry_budget_s`` the consumer seeks back to the
   batch's first offsets and polls again (staying in the group), committing nothing;
4. offsets are committed only after Elasticsearch acknowledged every document of the batch
   and the dead letters are acknowledged by Kafka.

Delivery is at least once end to end; deterministic ids make the index exactly once.
Several indexers with the same ``group_id`` share the partitions.

Retention (``pipeline.retention``): with ``[retention]`` days for some kinds, the indexer
deletes their daily indices past that age at start and every ``[retention] interval_s``, and
does not index a document for a day already past it (``expired``).
"""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from elastic_transport import ConnectionError as EsConnectionError
from elastic_transport import ConnectionTimeout as EsConnectionTimeout
from elasticsearch import ApiError, TransportError
from kafka import KafkaConsumer, TopicPartition
from kafka.errors import CommitFailedError, KafkaError
from kafka.structs import OffsetAndMetadata

from pipeline import kinds
from pipeline.config import TOPICS_NOT_KINDS, PipelineConfig
from pipeline.control import MAX_LIFETIME_S
from pipeline.docs import flatten, nest
from pipeline.es import EsStore
from pipeline.kafka import kafka_client_options, make_producer
from pipeline.retention import Schedule, expired_day, prune

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Doc:
    tp: TopicPartition
    offset: int
    kind: str
    raw: bytes
    key: bytes | None
    action: bytes  # the bulk action line
    doc_id: str
    latest: bool = False  # the copy in the kind's latest index (a version conflict is fine)
    flat: dict[str, Any] | None = None  # a merged kind's document, folded in before writing
    body: bytes | None = None  # what is written, when it is not ``raw`` (a merged document)
    members: list[_Doc] = field(default_factory=list)  # the messages a merged write stands for


class Indexer:
    def __init__(
        self,
        cfg: PipelineConfig,
        store: EsStore | None = None,
        client_id: str = "icsmon-indexer",
        retry_budget_s: float = 30.0,
        retention: dict[str, float] | None = None,
    ) -> None:
        self.cfg = cfg
        self.store = store or EsStore(cfg)
        self.retry_budget_s = retry_budget_s
        days = cfg.retention.by_kind() if retention is None else retention
        self.retention = Schedule(days, cfg.retention.interval_s)
        self.topic_kind = {cfg.topic(kind): kind for kind in kinds.names()}
        self.deadletter_topic = cfg.topic("deadletter")
        opts = kafka_client_options(cfg)
        self.consumer = KafkaConsumer(
            *self.topic_kind,
            group_id=cfg.indexer.group_id,
            client_id=client_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=cfg.indexer.batch_size,
            fetch_max_bytes=64 << 20,
            max_partition_fetch_bytes=16 << 20,
            # A killed member holds its partitions until its session expires: keep that short.
            session_timeout_ms=10_000,
            heartbeat_interval_ms=3_000,
            api_version=(4, 3),
            **opts,
        )
        self._dlq = make_producer(cfg, client_id=f"{client_id}-deadletter", max_block_ms=10_000)
        self.stop_event = threading.Event()
        self.counters = {
            "consumed": 0,
            "indexed": 0,
            "deadlettered": 0,
            "retries": 0,
            "batches": 0,
            "commits": 0,
            "rewinds": 0,
            "latest_updated": 0,
            "latest_older": 0,
            "expired": 0,
            "indices_pruned": 0,
            "merged": 0,
            "merge_conflicts": 0,
        }

    # ---- main loop ------------------------------------------------------------------------

    def run(
        self,
        once: bool = False,
        max_idle_s: float | None = None,
        on_poll: Callable[[Indexer], None] | None = None,
    ) -> dict[str, int]:
        """Index until stopped; with ``once``, until the topics' ends as of the first assignment."""
        targets: dict[TopicPartition, int] | None = None
        idle_since = time.monotonic()
        poll_ms = self.cfg.indexer.poll_timeout_ms
        while not self.stop_event.is_set():
            if self.retention.due(time.monotonic()):
                self.prune()
            batch = self.consumer.poll(timeout_ms=poll_ms, max_records=self.cfg.indexer.batch_size)
            if once and targets is None and self.consumer.assignment():
                targets = self.consumer.end_offsets(list(self.consumer.assignment()))
            if batch:
                idle_since = time.monotonic()
                self._process(batch)
            if on_poll:
                on_poll(self)
            if once and targets is not None and self._reached(targets):
                break
            if max_idle_s is not None and time.monotonic() - idle_since > max_idle_s:
                break
        return dict(self.counters)

    def prune(self) -> None:
        """Delete the daily indices past retention now; a failure is logged, tried again at
        the next interval, and never stops the indexing."""
        try:
            gone = prune(self.store.client, self.store.prefix, self.retention.days)
        except Exception as exc:  # Elasticsearch away: the next round tries again
            log.warning("retention: could not prune old indices: %s", exc)
        else:
            self.counters["indices_pruned"] += len(gone)
        self.retention.done(time.monotonic())

    def _reached(self, targets: dict[TopicPartition, int]) -> bool:
        for tp, end in targets.items():
            if tp not in self.consumer.assignment():
                continue  # moved to another member of the group
            if self.consumer.position(tp) < end:
                return False
        return True

    def stop(self) -> None:
        self.stop_event.set()

    def close(self) -> None:
        try:
            self.consumer.close(autocommit=False)
        finally:
            try:
                self._dlq.close(timeout=5)
            except KafkaError:
                pass

    # ---- one batch -----------------------------------------------------------------------

    def _process(self, batch: dict[TopicPartition, list[Any]]) -> None:
        self.counters["batches"] += 1
        first: dict[TopicPartition, int] = {}
        last: dict[TopicPartition, int] = {}
        docs: list[_Doc] = []
        dead: list[tuple[Any, str]] = []
        for tp, records in batch.items():
            first[tp] = records[0].offset
            last[tp] = records[-1].offset
            kind = self.topic_kind[tp.topic]
            for rec in records:
                self.counters["consumed"] += 1
                parsed = self._prepare(tp, rec, kind)
                if isinstance(parsed, str):
                    dead.append((rec, parsed))
                else:
                    docs.extend(parsed)
        ok = self._index(docs, dead)
        if ok:
            ok = self._send_dead(dead)
        if not ok:
            # Not acknowledged: read the same records again on the next poll; commit nothing.
            self.counters["rewinds"] += 1
            for tp, offset in first.items():
                if tp in self.consumer.assignment():
                    self.consumer.seek(tp, offset)
            return
        offsets = {tp: OffsetAndMetadata(off + 1, "", -1) for tp, off in last.items()}
        try:
            self.consumer.commit(offsets)
            self.counters["commits"] += 1
        except CommitFailedError as exc:
            # The group rebalanced meanwhile; the new owner re-reads, ids make it harmless.
            log.warning("offset commit refused after a rebalance: %s", exc)

    def _prepare(self, tp: TopicPartition, rec: Any, kind: str) -> list[_Doc] | str:
        """Bulk-ready documents (the daily index's, and the latest index's for kinds that keep
        one), or the reason the message is a dead letter."""
        value = rec.value
        if value is None:
            return "empty message"
        limit = kinds.get(kind).max_doc_bytes
        if len(value) > limit:
            return f"too large: {len(value)} bytes (a {kind} may have {limit})"
        try:
            doc = json.loads(value)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            return f"undecodable: not JSON ({exc})"
        if not isinstance(doc, dict):
            return f"undecodable: a JSON {type(doc).__name__}, not an object"
        try:
            actions = self.store.bulk_actions(kind, doc)
        except ValueError as exc:
            return str(exc)
        if (
            kind in self.retention.days
            and kinds.get(kind).daily
            and self._expired(kind, actions[0]["index"]["_index"])
        ):
            self.counters["expired"] += 1
            return []
        if kinds.get(kind).merge is not None:
            # written after folding into the kept document (_merge): no action line yet
            doc_id = actions[0]["index"]["_id"]
            return [_Doc(tp, rec.offset, kind, value, rec.key, b"", doc_id, flat=flatten(doc))]
        return [
            _Doc(
                tp,
                rec.offset,
                kind,
                value,
                rec.key,
                json.dumps(action).encode(),
                action["index"]["_id"],
                latest=n > 0,
            )
            for n, action in enumerate(actions)
        ]

    def _expired(self, kind: str, index: str) -> bool:
        """The daily index a document goes to is already past its kind's retention."""
        return expired_day(_day_of_index(index), self.retention.days[kind], time.time())

    def _index(self, docs: list[_Doc], dead: list[tuple[Any, str]]) -> bool:
        """Bulk-write with retries; rejected documents join ``dead``. False: give up for now.

        Documents of a merged kind (``pipeline.kinds``: findings) are folded into the kept
        document of their id first (:meth:`_merge`) and written only if it did not change
        meanwhile (``if_seq_no``); when it did (another indexer, a user's decision at the
        centre), they are folded again into the new one: nothing is lost or undone."""
        pending = [d for d in docs if d.flat is None]
        to_merge = [d for d in docs if d.flat is not None]
        delay = self.cfg.indexer.retry_initial_s
        deadline = time.monotonic() + self.retry_budget_s
        while pending or to_merge:
            retry: list[_Doc] = []
            remerge: list[_Doc] = []
            failed = False  # merged documents to write again for a failure, not a conflict
            try:
                writes = pending + self._merge(to_merge)
                body = b"".join(d.action + b"\n" + (d.body or d.raw) + b"\n" for d in writes)
                resp = self.store.client.bulk(operations=body, refresh=False)
            except (EsConnectionError, EsConnectionTimeout, TransportError) as exc:
                log.warning(
                    "Elasticsearch unreachable (%s): retrying %d documents",
                    exc,
                    len(pending) + len(to_merge),
                )
                retry, remerge, failed = pending, to_merge, True
            except ApiError as exc:
                if exc.status_code == 429 or exc.status_code >= 500:
                    retry, remerge, failed = pending, to_merge, True
                else:
                    raise
            else:
                for d, item in zip(writes, resp["items"], strict=True):
                    result = next(iter(item.values()), {})
                    status = result.get("status", 500)
                    if d.members and status == 409:
                        # the kept document changed since it was read: fold in again
                        self.counters["merge_conflicts"] += 1
                        remerge.extend(d.members)
                    elif d.members and status < 300:
                        self.counters["indexed"] += len(d.members)
                        self.counters["merged"] += len(d.members)
                    elif d.latest and status < 300:
                        self.counters["latest_updated"] += 1
                    elif d.latest and status == 409:
                        self.counters["latest_older"] += 1  # a newer one is there already
                    elif status < 300:
                        self.counters["indexed"] += 1
                    elif status == 429 or status >= 500:
                        if d.members:
                            remerge.extend(d.members)
                            failed = True
                        else:
                            retry.append(d)
                    elif d.latest:
                        # the history copy decides whether the document is a dead letter
                        log.warning(
                            "latest %s index refused %s: %s", d.kind, d.doc_id, result.get("error")
                        )
                    else:
                        err = result.get("error", {})
                        reason = (
                            f"rejected by Elasticsearch: {err.get('type')}: {err.get('reason')}"
                        )
                        caused = err.get("caused_by")
                        if caused:
                            reason += f" (caused by {caused.get('type')}: {caused.get('reason')})"
                        for member in d.members or [d]:
                            dead.append((_RecordView(member), reason))
            if not retry and not remerge:
                return True
            if self.stop_event.is_set() or time.monotonic() > deadline:
                return False
            if failed or retry:
                # Elasticsearch is away or overloaded: back off (a conflict alone is redone at once)
                if time.monotonic() + delay > deadline:
                    return False
                self.counters["retries"] += 1
                self.stop_event.wait(delay)
                delay = min(delay * 2, self.cfg.indexer.retry_max_s)
            pending, to_merge = retry, remerge
        return True

    def _merge(self, docs: list[_Doc]) -> list[_Doc]:
        """The writes of merged kinds: per id, the kept document (read now, with the sequence
        number that makes the write conditional) with the batch's documents folded in, in
        the order they were consumed."""
        if not docs:
            return []
        groups: dict[tuple[str, str], list[_Doc]] = {}
        for d in docs:
            groups.setdefault((d.kind, d.doc_id), []).append(d)
        index = {kind: kinds.get(kind).current_index(self.store.prefix) for kind, _ in groups}
        resp = self.store.client.mget(
            docs=[{"_index": index[kind], "_id": doc_id} for kind, doc_id in groups]
        )
        out = []
        for ((kind, doc_id), members), got in zip(groups.items(), resp["docs"], strict=True):
            if "error" in got and got["error"].get("type") != "index_not_found_exception":
                raise TransportError(f"cannot read the kept {kind} {doc_id}: {got['error']}")
            merge = kinds.get(kind).merge
            assert merge is not None
            merged = flatten(got["_source"]) if got.get("found") else {}
            for m in members:
                merged = merge(merged, m.flat or {})
            if got.get("found"):
                action = {
                    "index": {
                        "_index": index[kind],
                        "_id": doc_id,
                        "if_seq_no": got["_seq_no"],
                        "if_primary_term": got["_primary_term"],
                    }
                }
            else:
                action = {"create": {"_index": index[kind], "_id": doc_id}}
            first = members[0]
            out.append(
                _Doc(
                    first.tp,
                    first.offset,
                    kind,
                    first.raw,
                    first.key,
                    json.dumps(action).encode(),
                    doc_id,
                    body=json.dumps(nest(merged)).encode(),
                    members=members,
                )
            )
        return out

    def _send_dead(self, dead: list[tuple[Any, str]]) -> bool:
        if not dead:
            return True
        futures = []
        try:
            for rec, reason in dead:
                futures.append(
                    self._dlq.send(
                        self.deadletter_topic, key=rec.key, value=_dead_letter(rec, reason)
                    )
                )
            for fut in futures:
                fut.get(timeout=30)
        except KafkaError as exc:
            log.error("dead-letter topic unavailable (%s): will retry the batch", exc)
            return False
        self.counters["deadlettered"] += len(dead)
        for rec, reason in dead:
            log.warning("dead letter %s[%d]@%d: %s", rec.topic, rec.partition, rec.offset, reason)
        return True


class _RecordView:
    """A prepared document seen as a consumer record, for the dead-letter path."""

    def __init__(self, d: _Doc) -> None:
        self.topic, self.partition, self.offset = d.tp.topic, d.tp.partition, d.offset
        self.key, self.value = d.key, d.raw


def _day_of_index(name: str) -> Any:
    from datetime import UTC, datetime

    return datetime.strptime(name[-10:], "%Y.%m.%d").replace(tzinfo=UTC)


def _dead_letter(rec: Any, reason: str) -> bytes:
    raw = rec.value or b""
    try:
        original: dict[str, str] = {"value": raw.decode("utf-8")}
    except UnicodeDecodeError:
        original = {"value_base64": base64.b64encode(raw).decode()}
    return json.dumps(
        {
            "reason": reason,
            "topic": rec.topic,
            "partition": rec.partition,
            "offset": rec.offset,
            "key": rec.key.decode("utf-8", "replace") if rec.key else None,
            "failed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            **original,
        }
    ).encode()


def setup(cfg: PipelineConfig, store: EsStore | None = None) -> list[str]:
    """Create the topics (with ``indexer.partitions``) and install the index templates."""
    from kafka.admin import KafkaAdminClient, NewTopic
    from kafka.errors import TopicAlreadyExistsError

    done = []
    admin = KafkaAdminClient(
        client_id="icsmon-setup", api_version=(4, 3), **kafka_client_options(cfg)
    )
    try:
        existing = set(admin.list_topics())
        wanted = [cfg.topic(kind) for kind in kinds.names()] + [
            cfg.topic(t) for t in TOPICS_NOT_KINDS
        ]
        # requests to sensors live no longer than the longest a request may be valid
        settings = {cfg.topic("control"): {"retention.ms": str(MAX_LIFETIME_S * 1000)}}
        new = [
            NewTopic(
                name=t,
                num_partitions=cfg.indexer.partitions,
                replication_factor=-1,
                topic_configs=settings.get(t, {}),
            )
            for t in wanted
            if t not in existing
        ]
        if new:
            try:
                admin.create_topics(new)
            except TopicAlreadyExistsError:
                pass
            done += [f"topic {t.name}" for t in new]
    finally:
        admin.close()
    own = store is None
    store = store or EsStore(cfg)
    try:
        done += store.setup()
    finally:
        if own:
            store.close()
    return done
