"""The document kinds: one entry per kind saying where its documents go.

Every part of the pipeline that routes a document by its kind reads this table: the sinks
(which kinds exist, which are always shipped), the Kafka sink and its spool (topic, replay
and eviction order), the indexer (topic -> index, the id that makes a re-send harmless, the
field that picks the daily index), the index templates (extra field mappings), and the
embedded store (its table). A new kind is one :func:`register` call beside the code that
produces it; nothing else needs editing.

Names: a kind ``heartbeat`` with prefix ``icsmon`` lives in the Kafka topic
``icsmon.heartbeats``, the Elasticsearch alias ``icsmon-heartbeats`` over the daily
indices ``icsmon-heartbeats-YYYY.MM.DD`` made from the template ``icsmon-heartbeats``, and
the store table ``heartbeats``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from pipeline.assets import merge_asset
from pipeline.findings import merge_finding


@dataclass(frozen=True, slots=True)
class DocKind:
    name: str
    """Singular name used in code and on the command line (``alert``)."""
    plural: str
    """Suffix of the topic, alias, index and template names, and the store's table."""
    id_field: str
    """Deterministic id: Elasticsearch ``_id`` and the store's key, so a re-send overwrites."""
    time_field: str = "@timestamp"
    """Which time decides a document's daily index (and age-based retention)."""
    rank: int = 50
    """Importance: lower is replayed first from the spool and evicted last when it is full."""
    evictable: bool = True
    """False: never dropped to make room in the spool (alerts)."""
    always_shipped: bool = True
    """False: the sensor's ``events`` setting decides whether it goes to Kafka."""
    stored: bool = True
    """Kept in the sensor's embedded store."""
    latest_by: str | None = None
    """When set, the indexer also keeps the newest document per value of this field in
    ``<prefix>-latest-<plural>`` (a sensor's last heartbeat, read without scanning history)."""
    daily: bool = True
    """False: the kind has one index, ``<prefix>-<plural>-current`` (under the same alias and
    template), and each id is one document whatever its time: a finding observed for months,
    an advisory replaced by its next revision, are never spread over daily indices."""
    merge: Callable[[dict[str, Any], dict[str, Any]], dict[str, Any]] | None = None
    """How an incoming document folds into the kept one (flat dicts; the kept one may be
    empty) instead of replacing it. The indexer reads the kept document, merges and writes
    back under optimistic concurrency control; the embedded store merges the same way.
    Only for kinds with ``daily=False``."""
    from_sensors: bool = True
    """False: reference data the centre imports (advisories), never written by a sensor."""
    es_fields: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    """Index mappings of the kind's own fields (flat dotted name -> mapping), added to the
    shared ones in its template."""
    max_doc_bytes: int = 1 << 20
    """The largest message of this kind the indexer takes (bigger: a dead letter); Kafka's
    own default limit is about 1 MiB too."""
    description: str = ""

    def topic(self, prefix: str) -> str:
        return f"{prefix}.{self.plural}"

    def alias(self, prefix: str) -> str:
        return f"{prefix}-{self.plural}"

    def latest_index(self, prefix: str) -> str:
        # outside the pattern of the daily indices' template, so not under the kind's alias
        return f"{prefix}-latest-{self.plural}"

    def index(self, prefix: str, day: str) -> str:
        """The index a document of ``day`` (``YYYY.MM.DD``) goes to."""
        if not self.daily:
            return self.current_index(prefix)
        return f"{self.alias(prefix)}-{day}"

    def current_index(self, prefix: str) -> str:
        # matches the template's pattern: same mappings, same alias as daily indices would
        return f"{self.alias(prefix)}-current"


_REGISTRY: dict[str, DocKind] = {}


def register(kind: DocKind) -> DocKind:
    """Add a kind (idempotent for the same entry; a different entry under a taken name or
    plural is a programming error)."""
    for other in _REGISTRY.values():
        if other == kind:
            return kind
        if other.name == kind.name or other.plural == kind.plural:
            raise ValueError(f"document kind {kind.name!r}/{kind.plural!r} is already registered")
    if kind.plural in ("deadletter",) or "." in kind.plural or "-" in kind.name:
        raise ValueError(f"document kind {kind.name!r}: reserved or unusable name")
    if kind.merge is not None and kind.daily:
        raise ValueError(
            f"document kind {kind.name!r}: a merged kind keeps one index (daily=False)"
        )
    _REGISTRY[kind.name] = kind
    return kind


def get(name: str) -> DocKind:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(
            f"unknown document kind {name!r} (known: {', '.join(_REGISTRY)})"
        ) from None


def by_plural(plural: str) -> DocKind:
    """The kind whose plural (topic, index and table suffix) is ``plural``; its name too."""
    for kind in _REGISTRY.values():
        if plural in (kind.plural, kind.name):
            return kind
    raise ValueError(
        f"unknown document kind {plural!r} (known: {', '.join(k.plural for k in all_kinds())})"
    )


def all_kinds() -> tuple[DocKind, ...]:
    """Every registered kind, most important first."""
    return tuple(sorted(_REGISTRY.values(), key=lambda k: (k.rank, k.name)))


def names() -> tuple[str, ...]:
    return tuple(k.name for k in all_kinds())


def sensor_kinds() -> tuple[str, ...]:
    """The kinds a sensor writes (its sinks, its spool), most important first."""
    return tuple(k.name for k in all_kinds() if k.from_sensors)


def registry() -> Mapping[str, DocKind]:
    return MappingProxyType(_REGISTRY)


def eviction_order() -> tuple[str, ...]:
    """Evictable kinds, least important first: what a full spool drops first."""
    return tuple(k.name for k in reversed(all_kinds()) if k.evictable and k.from_sensors)


_LONG = {"type": "long"}
_DOUBLE = {"type": "double"}
_KEYWORD = {"type": "keyword", "ignore_above": 1024}
_DATE = {"type": "date"}
_TEXT = {"type": "text", "fields": {"keyword": {"type": "keyword", "ignore_above": 1024}}}
_UNINDEXED = {"type": "object", "enabled": False}  # kept in _source only

ALERT = register(
    DocKind(
        "alert",
        "alerts",
        "event.id",
        rank=0,
        evictable=False,
        description="a detection: a Sigma rule or a baseline deviation fired",
    )
)
FINDING = register(
    DocKind(
        "finding",
        "findings",
        "finding.id",
        time_field="finding.last_seen",
        rank=15,
        daily=False,
        merge=merge_finding,
        es_fields={
            "finding.accepted.reason": _TEXT,
            "finding.accepted.user": _KEYWORD,
            "finding.accepted.at": _DATE,
        },
        description=(
            "a durable observation about an asset (detectors/findings.py), one document per "
            "finding.id merged by the rule of pipeline/findings.py"
        ),
    )
)
ASSET = register(
    DocKind(
        "asset",
        "assets",
        "asset.id",
        time_field="asset.last_seen",
        rank=10,
        daily=False,
        merge=merge_asset,
        description=(
            "a device seen on the network: one document per asset.id, every observation "
            "folded in by the rule of pipeline/assets.py (the embedded store's too)"
        ),
    )
)

#: counters a heartbeat carries (``icsmon.sensor.<name>``), totals since the sensor started
HEARTBEAT_COUNTERS = (
    "packets",
    "bytes",
    "pdus",
    "events",
    "alerts",
    "anomalies",
    "kernel_drops",
    "flows",
)
HEARTBEAT = register(
    DocKind(
        "heartbeat",
        "heartbeats",
        "event.id",
        rank=20,
        latest_by="observer.name",
        es_fields={
            **{f"icsmon.sensor.{name}": _LONG for name in HEARTBEAT_COUNTERS},
            "icsmon.sensor.uptime_s": _DOUBLE,
            "icsmon.sensor.traffic": _LONG,
            "icsmon.sensor.interval_s": _DOUBLE,
            "icsmon.sensor.content_version": _KEYWORD,
            "icsmon.sensor.reason": _KEYWORD,
            "icsmon.sensor.started": _DATE,
            "observer.version": _KEYWORD,
        },
        description="a sensor's state: one per interval, at start and at a clean stop",
    )
)
ROLLUP = register(
    DocKind(
        "rollup",
        "rollups",
        "event.id",
        rank=30,
        always_shipped=False,
        es_fields={
            **{
                f"icsmon.rollup.{name}": _LONG
                for name in (
                    "transactions",
                    "requests",
                    "responses",
                    "success",
                    "exception",
                    "failure",
                    "response_time.min",
                    "response_time.mean",
                    "response_time.max",
                )
            },
            "icsmon.rollup.written.min": _DOUBLE,
            "icsmon.rollup.written.max": _DOUBLE,
            "icsmon.rollup.object": _KEYWORD,
            "icsmon.rollup.interval_s": _DOUBLE,
        },
        description="one conversation series over one interval (sensor/rollups.py)",
    )
)
#: the largest piece of an answer a sensor sends in one message (a pcap or a list of events
#: is cut into parts of at most this many bytes before encoding)
RESPONSE_PART_BYTES = 512 << 10
RESPONSE = register(
    DocKind(
        "response",
        "responses",
        "event.id",
        rank=25,
        es_fields={
            "icsmon.control.request_id": _KEYWORD,
            "icsmon.control.type": _KEYWORD,
            "icsmon.control.status": _KEYWORD,
            "icsmon.control.reason": _KEYWORD,
            "icsmon.control.message": {"type": "text"},
            "icsmon.control.part": _LONG,
            "icsmon.control.parts": _LONG,
            "icsmon.content.status": _KEYWORD,
            "icsmon.content.version": _LONG,
            "icsmon.content.sha256": _KEYWORD,
            "icsmon.content.entries": _LONG,
            "icsmon.evidence.alert_id": _KEYWORD,
            "icsmon.evidence.start": _DATE,
            "icsmon.evidence.end": _DATE,
            "icsmon.evidence.events_total": _LONG,
            "icsmon.evidence.events_sent": _LONG,
            "icsmon.evidence.events_truncated": {"type": "boolean"},
            # the events and the pcap ride in _source only: never searched, served back whole
            "icsmon.evidence.events": {"type": "object", "enabled": False},
            "icsmon.evidence.pcap": {"type": "binary"},
            "icsmon.evidence.pcap_bytes": _LONG,
            "icsmon.evidence.pcap_frames": _LONG,
            "icsmon.evidence.pcap_sha256": _KEYWORD,
            "icsmon.evidence.pcap_source": _KEYWORD,
            "icsmon.evidence.pcap_truncated": {"type": "boolean"},
        },
        # a part of a pcap (RESPONSE_PART_BYTES, base64) and its envelope
        max_doc_bytes=(RESPONSE_PART_BYTES * 4) // 3 + (64 << 10),
        description="a sensor's answer to a control request: evidence (events, pcap) in parts",
    )
)
EVENT = register(
    DocKind(
        "event",
        "events",
        "event.id",
        rank=40,
        always_shipped=False,
        description="one decoded transaction (or an anomaly)",
    )
)
ADVISORY = register(
    DocKind(
        "advisory",
        "advisories",
        "advisory.id",
        time_field="advisory.imported",
        rank=60,
        stored=False,  # the embedded store's centre keeps them in the assessment catalog
        daily=False,
        from_sensors=False,
        es_fields={
            "advisory.id": _KEYWORD,
            "advisory.title": _TEXT,
            "advisory.publisher": _KEYWORD,
            "advisory.released": _DATE,
            "advisory.imported": _DATE,
            "advisory.digest": _KEYWORD,
            "advisory.source": _KEYWORD,
            "advisory.cves": _KEYWORD,
            "advisory.cvss": _DOUBLE,
            "advisory.exploited": {"type": "boolean"},
            "advisory.vendors": _KEYWORD,
            "advisory.products": _KEYWORD,
            "advisory.remediation": _TEXT,
            "advisory.document": _UNINDEXED,  # the CSAF 2.0 document as imported
        },
        description="a CSAF 2.0 advisory the operator imported (assessment/advisories.py)",
    )
)
EXPLOITED = register(
    DocKind(
        "exploited",
        "exploited",
        "vulnerability.id",
        time_field="vulnerability.exploited_added",
        rank=61,
        stored=False,
        daily=False,
        from_sensors=False,
        es_fields={
            "vulnerability.id": _KEYWORD,
            "vulnerability.exploited_added": _DATE,
            "vulnerability.exploited_source": _KEYWORD,
            "vulnerability.ransomware": _KEYWORD,
            "vulnerability.vendor": _KEYWORD,
            "vulnerability.product": _KEYWORD,
        },
        description=(
            "a vulnerability known to be exploited: one entry of a catalogue the operator "
            "imported (CISA KEV's format), weighs more in the risk"
        ),
    )
)
