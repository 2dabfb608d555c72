"""One query interface over stored alerts, events, assets and findings, with two back ends:
the embedded SQLite store (``pipeline.store``) and Elasticsearch (``pipeline.es``).

``icsmon alerts``, ``icsmon assets`` and the posture view call only this interface.
Documents come back flat (dotted keys, see docs/schema.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(slots=True)
class AlertFilter:
    since: float | None = None  # epoch seconds, inclusive
    until: float | None = None  # epoch seconds, exclusive
    min_severity: int | None = None  # event.severity >= this
    sites: list[str] = field(default_factory=list)  # labels.site in this list (empty = any)
    technique: str | None = None  # threat.technique.id contains this
    rule_id: str | None = None
    protocol: str | None = None  # network.protocol
    text: str | None = None  # substring of rule.name
    ids: list[str] = field(default_factory=list)  # event.id in this list (empty = any)
    community_id: str | None = None  # network.community_id equals this
    # field -> accepted values: each field named has one of its values (a list field: any
    # element); empty = any. Fetches the alerts behind the buckets of an aggregation.
    match: dict[str, list[Any]] = field(default_factory=dict)
    limit: int = 100
    offset: int = 0


#: the heavy fields of a sensor's answer (``response`` documents), left out when only the
#: state of a request is wanted
PAYLOAD_FIELDS = ("icsmon.evidence.events", "icsmon.evidence.pcap")


@dataclass(slots=True)
class AssetFilter:
    sites: list[str] = field(default_factory=list)
    role: str | None = None  # one of asset.roles, e.g. "modbus-server"
    vendor: str | None = None  # substring of ics.device.vendor
    first_seen_since: float | None = None  # asset.first_seen >= this (epoch s): new assets
    last_seen_since: float | None = None  # asset.last_seen >= this (epoch s): assets seen
    limit: int = 1000
    offset: int = 0


class QueryBackend(Protocol):
    def search_alerts(self, flt: AlertFilter) -> tuple[int, list[dict]]:
        """(total matching, one page of alerts newest first)."""
        ...

    def get_alert(self, alert_id: str) -> dict | None: ...

    def count_alerts_by(
        self, flt: AlertFilter, field_name: str, size: int = 20
    ) -> list[tuple[str, int]]:
        """Terms aggregation: the ``size`` most frequent values of ``field_name``."""
        ...

    def alert_histogram(
        self, flt: AlertFilter, interval_s: int, field_name: str | None = None, size: int = 10
    ) -> list[tuple[float, str | None, int]]:
        """Date histogram of alerts on ``@timestamp``: (bucket start epoch s, value, count).

        Buckets are aligned to multiples of ``interval_s`` since the epoch; empty buckets are
        left out. With ``field_name`` each bucket is split by the ``size`` most frequent values
        of that field (ES: date_histogram + terms); without it ``value`` is None.
        """
        ...

    def count_alerts_by_pair(
        self, flt: AlertFilter, field_a: str, field_b: str, size_a: int = 100, size_b: int = 10
    ) -> list[tuple[str, str, int]]:
        """Two-level terms aggregation: (value of a, value of b, count), ``size_a`` top values
        of ``field_a``, each split by its ``size_b`` top values of ``field_b``."""
        ...

    def last_seen_by(
        self, flt: AlertFilter, field_name: str, size: int = 1000, kind: str = "event"
    ) -> list[tuple[str, float]]:
        """(value, newest ``@timestamp`` as epoch s) per value of ``field_name`` among documents
        of ``kind`` matching ``flt`` (ES: terms + max)."""
        ...

    def latest(self, kind: str, flt: AlertFilter, size: int = 1000) -> list[dict]:
        """The newest document of ``kind`` per value of the kind's ``latest_by`` field
        (``pipeline.kinds``): a sensor's last heartbeat. Time and sites of ``flt`` apply."""
        ...

    def rollup_sums(
        self,
        flt: AlertFilter,
        fields: tuple[str, ...],
        size: int = 100,
        operations: tuple[str, ...] = (),
    ) -> list[tuple[tuple[str, ...], int, int, float]]:
        """Traffic from rollups: (values of ``fields``, transactions, bytes, first interval
        start) for the ``size`` busiest combinations in ``flt``'s time and sites; only the
        rollups of these ``ics.operation`` values when given (controls, writes)."""
        ...

    def spread(
        self, flt: AlertFilter, fields: tuple[str, ...], by: str, min_distinct: int
    ) -> list[tuple[tuple[Any, ...], int, int]]:
        """Alerts grouped by the values of ``fields`` (alerts lacking one are left out; a
        list field counts each element): (values, distinct values of ``by``, alerts) for every
        group with at least ``min_distinct`` distinct ``by`` values. Every group, not a top N
        (ES: composite aggregation paged to the end, with a cardinality per bucket)."""
        ...

    def responses(self, request_ids: list[str], payload: bool = True) -> list[dict]:
        """Every part of the sensors' answers to these control requests (``response``
        documents), by request then part; without ``payload`` the events and pcap fields
        (``PAYLOAD_FIELDS``) are left out."""
        ...

    def search_assets(self, flt: AssetFilter) -> tuple[int, list[dict]]: ...

    def get_asset(self, asset_id: str) -> dict | None:
        """One asset's (newest) record."""
        ...

    def all_assets(self, sites: list[str] | None, limit: int = 1_000_000) -> list[dict]:
        """Every asset of the sites (``None``: all), however many (the assessment)."""
        ...

    def search_findings(
        self,
        sites: list[str] | None = None,
        asset_id: str | None = None,
        kind: str | None = None,
        limit: int = 10_000,
        offset: int = 0,
    ) -> tuple[int, list[dict]]:
        """(total, one page of merged findings, most severe and newest first); ``sites``
        ``None`` is every site, an empty list none."""
        ...

    def search_events(self, flt: AlertFilter) -> tuple[int, list[dict]]: ...

    def close(self) -> None: ...
