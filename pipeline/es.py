"""Elasticsearch: client, index templates, bulk writes and the query back end.

Indices: one per kind (``pipeline.kinds``) and UTC day, ``<prefix>-alerts-2026.11.26``,
created on first write from composable index templates that also join them to the kind's
alias (``icsmon-alerts``, ``icsmon-events``...); readers use the aliases. Merged kinds
(assets, findings) have one index instead, ``<prefix>-assets-current``, holding one
document per id into which the indexer folds every observation by the kind's rule.
Kinds with ``latest_by`` also have one ``<prefix>-latest-<plural>`` index holding the newest
document per key (a sensor's last heartbeat). Only core Elasticsearch features are used
(templates, aliases, bulk, search, terms aggregations), so the minimal server build works
as well as a full one.

Mappings are explicit for every field icsmon writes (:data:`FIELD_TYPES`): ips as ``ip``,
names and enums as ``keyword``, numeric ICS fields as numbers (so converted Sigma queries
compare numbers), free-form protocol values unindexed. Fields a newer sensor adds fall back
to dynamic templates (strings -> keyword, numbers -> long/double). ``ignore_malformed``
keeps a document whose one field has a surprising value (these come from the wire) and
skips only that field; a document that cannot be indexed at all (an object where a value
is mapped) is rejected, and the indexer dead-letters it.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from typing import Any

from elasticsearch import ConflictError, Elasticsearch, NotFoundError

from pipeline import kinds
from pipeline.config import PipelineConfig
from pipeline.docs import flatten, nest
from pipeline.query import PAYLOAD_FIELDS, AlertFilter, AssetFilter
from sensor.protocols.schema import Field, FieldType
from sensor.schema import asset_fields, event_fields
from sensor.timestamps import parse_timestamp

K = {"type": "keyword", "ignore_above": 1024}
LONG = {"type": "long"}
DOUBLE = {"type": "double"}
BOOL = {"type": "boolean"}
IP = {"type": "ip"}
DATE = {"type": "date"}
TEXT = {"type": "text", "fields": {"keyword": {"type": "keyword", "ignore_above": 1024}}}
HEX = {"type": "keyword", "ignore_above": 8192}
# Arbitrary JSON (protocol values of any type): kept in _source, not indexed.
FREE = {"type": "object", "enabled": False}

_BY_TYPE: dict[FieldType, dict[str, Any]] = {
    FieldType.KEYWORD: K,
    FieldType.TEXT: TEXT,
    FieldType.LONG: LONG,
    FieldType.DOUBLE: DOUBLE,
    FieldType.BOOLEAN: BOOL,
    FieldType.IP: IP,
    FieldType.DATE: DATE,
    FieldType.HEX: HEX,
    FieldType.MAP: {"type": "object", "dynamic": True},
    FieldType.ANY: FREE,
}


def field_mapping(field: Field) -> dict[str, Any]:
    """The Elasticsearch mapping of a declared field (objects: their properties')."""
    if field.type == FieldType.OBJECT:
        return {
            "type": "object",
            "properties": {key: field_mapping(sub) for key, sub in field.properties.items()},
        }
    return copy.deepcopy(_BY_TYPE[field.type])


FIELD_TYPES: dict[str, dict[str, Any]] = {
    # Every event field (the flow layer's envelope, each dissector's fields, the device
    # identity) from its one declaration: sensor/schema.py and sensor/protocols/*/fields.py
    **{name: field_mapping(field) for name, field in event_fields().items()},
    # Microseconds, as the sensor writes them: ordering within a millisecond survives.
    "@timestamp": {"type": "date_nanos"},
    # ECS fields other producers set (alerts, findings) and a few kept for compatibility
    "message": TEXT,
    "tags": K,
    "organization.name": K,
    "observer.hostname": K,
    "event.severity": LONG,
    "event.start": DATE,
    "event.end": DATE,
    "event.created": DATE,
    "event.ingested": DATE,
    "event.module": K,
    "event.original": {"type": "keyword", "index": False, "doc_values": False},
    "network.direction": K,
    "network.bytes": LONG,
    "network.packets": LONG,
    "source.bytes": LONG,
    "destination.bytes": LONG,
    "error.code": K,
    # alerts
    "rule.id": K,
    "rule.name": K,
    "rule.description": TEXT,
    "rule.author": K,
    "rule.reference": K,
    "rule.ruleset": K,
    "rule.category": K,
    "rule.version": K,
    "threat.framework": K,
    "threat.technique.id": K,
    "threat.technique.name": K,
    "threat.technique.reference": K,
    "threat.tactic.id": K,
    "threat.tactic.name": K,
    "threat.tactic.reference": K,
    "icsmon.alert.count": LONG,
    "icsmon.alert.event_ids": K,
    "icsmon.correlation.type": K,
    "icsmon.correlation.value": DOUBLE,
    "icsmon.correlation.timespan": DOUBLE,  # seconds
    "icsmon.correlation.group": FREE,  # the group-by fields and their values, any type
    "icsmon.correlation.rules": K,
    "icsmon.correlation.group_by": K,
    "icsmon.correlation.key": K,
    "icsmon.hunt.id": K,  # the hunt that raised the alert (icsmon hunt)
    **{
        f"icsmon.baseline.{name}": K
        for name in (
            "expected",
            "observed",
            "entry",
            "file",
            "asset",
            "conversation",
            "series",
            "operation",
            "point",
            "direction",
            "points",
        )
    },
    "icsmon.baseline.count": LONG,
    # watchlist alerts (detectors/content.py): the province's content at the sensor
    "icsmon.watchlist.id": K,
    "icsmon.watchlist.value": K,  # an address or a network (CIDR)
    "icsmon.watchlist.source": K,
    "icsmon.watchlist.side": K,
    "icsmon.content.version": LONG,
    # assets
    "asset.id": K,
    "asset.roles": K,
    "asset.protocols": K,
    "asset.peers": IP,
    "asset.first_seen": DATE,
    "asset.last_seen": DATE,
    # the protocol addresses of an asset (a station's link or common addresses)
    **{name: field_mapping(field) for name, field in asset_fields().items()},
    "host.ip": IP,
    "host.mac": K,
    "host.name": K,
    # findings (detectors/findings.py) and the details they carry
    "finding.id": K,
    "finding.kind": K,
    "finding.category": K,
    "finding.title": K,
    "finding.summary": TEXT,
    "finding.severity": LONG,
    "finding.state": K,
    "finding.first_seen": DATE,
    "finding.last_seen": DATE,
    "finding.evidence.event_ids": K,
    "source.ips": IP,
    "modbus.masters": IP,
    "opcua.deprecated_policies": K,
    "opcua.user_names": K,
    "s7comm.transfers": K,
}

# Fields a newer sensor adds before this table knows them.
DYNAMIC_TEMPLATES = [
    {"ids_as_keywords": {"match_mapping_type": "string", "mapping": K}},
    {"integers_as_long": {"match_mapping_type": "long", "mapping": LONG}},
    {"floats_as_double": {"match_mapping_type": "double", "mapping": DOUBLE}},
]


def properties_tree(field_types: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """``{"source.ip": IP}`` -> ``{"source": {"properties": {"ip": IP}}}``."""
    root: dict[str, Any] = {}
    for dotted, mapping in sorted(field_types.items()):
        parts = dotted.split(".") if dotted != "@timestamp" else [dotted]
        node = root
        for part in parts[:-1]:
            entry = node.setdefault(part, {"properties": {}})
            node = entry.setdefault("properties", {})
        node[parts[-1]] = copy.deepcopy(mapping)
    return root


def mapped_type(field_name: str) -> str | None:
    """The explicit mapping type of a flat field name (``None`` when not in the table).
    Leaves under objects with their own properties or under unindexed objects count."""
    if field_name in FIELD_TYPES:
        return FIELD_TYPES[field_name]["type"]
    parts = field_name.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        parent = FIELD_TYPES.get(".".join(parts[:cut]))
        if parent is None:
            continue
        if parent.get("enabled") is False or parent.get("dynamic") is True:
            return "object"
        node: dict[str, Any] | None = parent
        for part in parts[cut:]:
            node = (node or {}).get("properties", {}).get(part)
        return node["type"] if node else None
    return None


def make_client(cfg: PipelineConfig, **extra: Any) -> Elasticsearch:
    es = cfg.elasticsearch
    opts: dict[str, Any] = {"request_timeout": es.request_timeout}
    if es.api_key:
        opts["api_key"] = es.api_key
    elif es.username:
        opts["basic_auth"] = (es.username, es.password or "")
    if es.ca_file:
        opts["ca_certs"] = es.ca_file
    opts.update(extra)
    return Elasticsearch(es.url, **opts)


def parse_iso(value: Any) -> datetime:
    """A document's time as an aware UTC datetime (the one parser: sensor/timestamps.py);
    ValueError when it is not one."""
    ts = parse_timestamp(value)
    if ts is None:
        raise ValueError(f"not an ISO-8601 timestamp: {value!r}")
    return datetime.fromtimestamp(ts, UTC)


def dig(doc: dict[str, Any], dotted: str) -> Any:
    """A value by dotted name in a nested document (or under a flat dotted key)."""
    if dotted in doc:
        return doc[dotted]
    node: Any = doc
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def day_of(value: Any) -> str:
    """``YYYY.MM.DD`` (UTC) of a document's time; ValueError when it is not one."""
    return parse_iso(value).strftime("%Y.%m.%d")


class EsStore:
    """Templates, index naming and health checks for one prefix of icsmon indices."""

    def __init__(self, cfg: PipelineConfig, client: Elasticsearch | None = None) -> None:
        self.cfg = cfg
        self.prefix = cfg.elasticsearch.index_prefix
        self.client = client or make_client(cfg)

    def alias(self, kind: str) -> str:
        return kinds.get(kind).alias(self.prefix)

    def index_name(self, kind: str, day: str) -> str:
        return kinds.get(kind).index(self.prefix, day)

    def latest_index(self, kind: str) -> str:
        return kinds.get(kind).latest_index(self.prefix)

    def bulk_actions(self, kind: str, doc: dict[str, Any]) -> list[dict[str, Any]]:
        """The ``_bulk`` action lines that index one document (flat or nested): into its
        kind's daily index under its id, and for kinds with ``latest_by`` into the latest
        index under that key, versioned by time (``external_gte``: an older document gets
        409 and leaves the newer one). ValueError (the reason) when it has no usable id or
        time: a dead letter."""
        spec = kinds.get(kind)
        doc_id = dig(doc, spec.id_field) or dig(doc, "event.id")
        if not isinstance(doc_id, str) or not doc_id or len(doc_id) > 512:
            raise ValueError(f"no usable id ({spec.id_field})")
        when = dig(doc, spec.time_field) or dig(doc, "@timestamp")
        try:
            ts = parse_iso(when)
        except ValueError as exc:
            raise ValueError(f"no usable timestamp: {exc}") from None
        out = [{"index": {"_index": self.index_name(kind, ts.strftime("%Y.%m.%d")), "_id": doc_id}}]
        key = dig(doc, spec.latest_by) if spec.latest_by else None
        if isinstance(key, str) and key and len(key) <= 512:
            out.append(
                {
                    "index": {
                        "_index": self.latest_index(kind),
                        "_id": key,
                        "version": max(0, int(ts.timestamp() * 1000)),
                        "version_type": "external_gte",
                    }
                }
            )
        return out

    @staticmethod
    def mappings(kind: str) -> dict[str, Any]:
        return {
            "dynamic": True,
            "date_detection": False,
            "dynamic_templates": DYNAMIC_TEMPLATES,
            "properties": properties_tree({**FIELD_TYPES, **kinds.get(kind).es_fields}),
        }

    def template_body(self, kind: str) -> dict[str, Any]:
        return {
            "index_patterns": [f"{self.alias(kind)}-*"],
            "priority": 200,
            "template": {
                "settings": {
                    "number_of_shards": self.cfg.shards.of(kind),  # [shards], docs/scale.md
                    "auto_expand_replicas": "0-1",
                    "index.mapping.ignore_malformed": True,
                    "index.mapping.total_fields.limit": 2000,
                },
                "mappings": self.mappings(kind),
                "aliases": {self.alias(kind): {}},
            },
            "_meta": {"managed_by": "icsmon", "kind": kind},
        }

    def setup(self) -> list[str]:
        """Install the templates and today's indices (so the aliases exist). Idempotent."""
        done = []
        today = datetime.now(UTC).strftime("%Y.%m.%d")
        for kind in kinds.names():
            name = self.alias(kind)
            self.client.indices.put_index_template(name=name, **self.template_body(kind))
            done.append(f"template {name}")
            if self._create(self.index_name(kind, today)):
                done.append(f"index {self.index_name(kind, today)}")
            if kinds.get(kind).latest_by:
                latest = self.latest_index(kind)
                settings = {
                    "number_of_shards": 1,
                    "auto_expand_replicas": "0-1",
                    "index.mapping.ignore_malformed": True,
                    "index.mapping.total_fields.limit": 2000,
                }
                if self._create(latest, settings=settings, mappings=self.mappings(kind)):
                    done.append(f"index {latest}")
                else:  # new fields of a newer version
                    self.client.indices.put_mapping(index=latest, **self.mappings(kind))
        self.client.cluster.health(wait_for_status="yellow", timeout="30s")
        return done

    def _create(self, index: str, **body: Any) -> bool:
        """Create an index unless it exists; True when this call created it."""
        if self.client.indices.exists(index=index):
            return False
        try:
            self.client.indices.create(index=index, **body)
        except Exception as exc:  # created meanwhile by an indexer: fine
            if "resource_already_exists" not in str(exc):
                raise
            return False
        return True

    def update_doc(
        self,
        kind: str,
        doc_id: str,
        change: Callable[[dict[str, Any]], dict[str, Any] | None],
        attempts: int = 20,
    ) -> dict[str, Any] | None:
        """Change one document of a kind kept in one index (``daily=False``): read it, apply
        ``change`` (flat in, flat out; ``None``: nothing to write), write it back only if
        nobody wrote it meanwhile (``if_seq_no``), else read and apply again. Returns the
        written document, or None when there is none with that id. The write is visible to
        searches when this returns."""
        index = kinds.get(kind).current_index(self.prefix)
        for _ in range(attempts):
            try:
                got = self.client.get(index=index, id=doc_id)
            except NotFoundError:
                return None
            new = change(flatten(got["_source"]))
            if new is None:
                return flatten(got["_source"])
            try:
                self.client.index(
                    index=index,
                    id=doc_id,
                    document=nest(new),
                    if_seq_no=got["_seq_no"],
                    if_primary_term=got["_primary_term"],
                    refresh="wait_for",
                )
            except ConflictError:
                continue  # an indexer merged a sensor's document meanwhile: apply again
            return new
        raise RuntimeError(f"{kind} {doc_id}: still changing after {attempts} attempts")

    def healthy(self) -> bool:
        try:
            status = self.client.cluster.health(timeout="2s")["status"]
        except Exception:
            return False
        return status in ("yellow", "green")

    def refresh(self) -> None:
        self.client.indices.refresh(index=f"{self.prefix}-*")

    def delete_all(self) -> None:
        """Drop this prefix's indices and templates (tests and benchmarks)."""
        self.client.indices.delete(
            index=f"{self.prefix}-*", ignore_unavailable=True, allow_no_indices=True
        )
        for kind in kinds.names():
            try:
                self.client.indices.delete_index_template(name=self.alias(kind))
            except NotFoundError:
                pass

    def close(self) -> None:
        self.client.close()


#: the order assets are listed in, the embedded store's (``pipeline.store.queries``): site,
#: then address, then id. Addresses compare numerically in both; Elasticsearch by their
#: 16-byte form, the store IPv4 first, which differ only for IPv6 below ::ffff:0:0 (::1).
ASSET_ORDER: list[dict[str, Any]] = [
    {"labels.site": {"order": "asc", "missing": "_first", "unmapped_type": "keyword"}},
    {"host.ip": {"order": "asc", "missing": "_first", "unmapped_type": "ip"}},
    {"asset.id": {"order": "asc", "unmapped_type": "keyword"}},
]


class EsQueryBackend:
    """:class:`pipeline.query.QueryBackend` over the icsmon aliases; ES does the work."""

    def __init__(self, cfg: PipelineConfig, client: Elasticsearch | None = None) -> None:
        self.store = EsStore(cfg, client)
        self.client = self.store.client

    @staticmethod
    def _alert_query(flt: AlertFilter) -> dict[str, Any]:
        filters: list[dict[str, Any]] = []
        if flt.since is not None or flt.until is not None:
            rng: dict[str, Any] = {"format": "epoch_millis"}
            if flt.since is not None:
                rng["gte"] = int(flt.since * 1000)
            if flt.until is not None:
                rng["lt"] = int(flt.until * 1000)
            filters.append({"range": {"@timestamp": rng}})
        if flt.min_severity is not None:
            filters.append({"range": {"event.severity": {"gte": flt.min_severity}}})
        if flt.sites:
            filters.append({"terms": {"labels.site": list(flt.sites)}})
        if flt.technique:
            filters.append({"term": {"threat.technique.id": flt.technique}})
        if flt.rule_id:
            filters.append({"term": {"rule.id": flt.rule_id}})
        if flt.protocol:
            filters.append({"term": {"network.protocol": flt.protocol}})
        ids = getattr(flt, "ids", None)
        if ids:
            filters.append({"terms": {"event.id": list(ids)}})
        community_id = getattr(flt, "community_id", None)
        if community_id:
            filters.append({"term": {"network.community_id": community_id}})
        for name, values in (getattr(flt, "match", None) or {}).items():
            filters.append({"terms": {name: list(values)}})
        if flt.text:
            pattern = (
                "*" + flt.text.replace("\\", "\\\\").replace("*", "\\*").replace("?", "\\?") + "*"
            )
            filters.append(
                {"wildcard": {"rule.name": {"value": pattern, "case_insensitive": True}}}
            )
        return {"bool": {"filter": filters}} if filters else {"match_all": {}}

    # Daily indices: a pre-filter round (can_match) on every search lets a 24 h query skip the
    # days whose @timestamp range cannot match instead of running on all ~90 of them (by default
    # ES only pre-filters above 128 shards).
    PRE_FILTER = 1

    def _search(
        self,
        kind: str,
        query: dict[str, Any],
        limit: int,
        offset: int,
        sort: list[dict[str, Any]],
        **extra: Any,
    ) -> tuple[int, list[dict]]:
        try:
            resp = self.client.search(
                index=self.store.alias(kind),
                query=query,
                size=limit,
                from_=offset,
                sort=sort,
                track_total_hits=True,
                ignore_unavailable=True,
                allow_no_indices=True,
                pre_filter_shard_size=self.PRE_FILTER,
                **extra,
            )
        except NotFoundError:
            return 0, []
        total = resp["hits"]["total"]["value"]
        return total, [flatten(hit["_source"]) for hit in resp["hits"]["hits"]]

    _NEWEST = [
        {"@timestamp": {"order": "desc", "unmapped_type": "date"}},
        {"event.id": {"order": "asc", "unmapped_type": "keyword"}},
    ]

    def search_alerts(self, flt: AlertFilter) -> tuple[int, list[dict]]:
        return self._search("alert", self._alert_query(flt), flt.limit, flt.offset, self._NEWEST)

    def search_events(self, flt: AlertFilter) -> tuple[int, list[dict]]:
        return self._search("event", self._alert_query(flt), flt.limit, flt.offset, self._NEWEST)

    def get_alert(self, alert_id: str) -> dict | None:
        total, docs = self._search("alert", {"term": {"event.id": alert_id}}, 1, 0, self._NEWEST)
        return docs[0] if total else None

    def count_alerts_by(
        self, flt: AlertFilter, field_name: str, size: int = 20
    ) -> list[tuple[str, int]]:
        try:
            resp = self.client.search(
                index=self.store.alias("alert"),
                query=self._alert_query(flt),
                size=0,
                aggs={"by": {"terms": {"field": field_name, "size": size}}},
                ignore_unavailable=True,
                allow_no_indices=True,
                pre_filter_shard_size=self.PRE_FILTER,
            )
        except NotFoundError:
            return []
        buckets = resp.get("aggregations", {}).get("by", {}).get("buckets", [])
        return [(str(b.get("key_as_string", b["key"])), b["doc_count"]) for b in buckets]

    # Composite pages: a cardinality per bucket is exact below the precision threshold (a
    # campaign needs a handful of sites, not thousands), and paging reaches every group.
    SPREAD_PAGE = 5000

    def spread(
        self, flt: AlertFilter, fields: tuple[str, ...], by: str, min_distinct: int
    ) -> list[tuple[tuple[Any, ...], int, int]]:
        sources = [{f"f{i}": {"terms": {"field": name}}} for i, name in enumerate(fields)]
        out: list[tuple[tuple[Any, ...], int, int]] = []
        after: dict[str, Any] | None = None
        while True:
            composite: dict[str, Any] = {"size": self.SPREAD_PAGE, "sources": sources}
            if after is not None:
                composite["after"] = after
            aggs = {
                "g": {
                    "composite": composite,
                    "aggs": {"n": {"cardinality": {"field": by, "precision_threshold": 3000}}},
                }
            }
            got = self._aggregate("alert", flt, aggs).get("g", {})
            buckets = got.get("buckets", [])
            for b in buckets:
                distinct = int(b["n"]["value"])
                if distinct >= min_distinct:
                    key = tuple(b["key"][f"f{i}"] for i in range(len(fields)))
                    out.append((key, distinct, b["doc_count"]))
            after = got.get("after_key")
            if len(buckets) < self.SPREAD_PAGE or after is None:
                return out

    def search_assets(self, flt: AssetFilter) -> tuple[int, list[dict]]:
        filters: list[dict[str, Any]] = []
        if flt.sites:
            filters.append({"terms": {"labels.site": list(flt.sites)}})
        if flt.role:
            filters.append({"term": {"asset.roles": flt.role}})
        if flt.vendor:
            pattern = "*" + flt.vendor.replace("*", "\\*").replace("?", "\\?") + "*"
            filters.append(
                {"wildcard": {"ics.device.vendor": {"value": pattern, "case_insensitive": True}}}
            )
        for attr, name in (
            ("first_seen_since", "asset.first_seen"),
            ("last_seen_since", "asset.last_seen"),
        ):
            since = getattr(flt, attr, None)
            if since is not None:
                filters.append(
                    {"range": {name: {"gte": int(since * 1000), "format": "epoch_millis"}}}
                )
        query = {"bool": {"filter": filters}} if filters else {"match_all": {}}
        # One document per asset (the indexer folds every observation into it by the rule
        # the embedded store applies, pipeline.assets.merge_asset), in the store's order.
        try:
            resp = self.client.search(
                index=self._assets_index(),
                query=query,
                size=flt.limit,
                from_=flt.offset,
                sort=ASSET_ORDER,
                track_total_hits=True,
                ignore_unavailable=True,
                allow_no_indices=True,
            )
        except NotFoundError:
            return 0, []
        total = int(resp["hits"]["total"]["value"])
        return total, [flatten(hit["_source"]) for hit in resp["hits"]["hits"]]

    def _assets_index(self) -> str:
        # the merged records only: not the kind's alias, which older releases' daily asset
        # indices (one copy per asset and day) may still join
        return kinds.get("asset").current_index(self.store.prefix)

    # Aggregations the posture view needs (pipeline.query.QueryBackend); all done by ES.

    def _aggregate(
        self, kind: str, flt: AlertFilter, aggs: dict[str, Any], track_total: bool = False
    ) -> dict[str, Any]:
        try:
            resp = self.client.search(
                index=self.store.alias(kind),
                query=self._alert_query(flt),
                size=0,
                aggs=aggs,
                ignore_unavailable=True,
                allow_no_indices=True,
                pre_filter_shard_size=self.PRE_FILTER,
                track_total_hits=track_total,
            )
        except NotFoundError:
            return {}
        out = dict(resp.get("aggregations", {}))
        if track_total:
            out["_total"] = resp["hits"]["total"]["value"]
        return out

    def alert_histogram(
        self, flt: AlertFilter, interval_s: int, field_name: str | None = None, size: int = 10
    ) -> list[tuple[float, str | None, int]]:
        # fixed_interval buckets are aligned to multiples of the interval since the epoch (UTC).
        hist: dict[str, Any] = {
            "date_histogram": {
                "field": "@timestamp",
                "fixed_interval": f"{int(interval_s)}s",
                "min_doc_count": 1,
            }
        }
        if field_name is not None:
            hist["aggs"] = {"by": {"terms": {"field": field_name, "size": size}}}
        out: list[tuple[float, str | None, int]] = []
        for b in self._aggregate("alert", flt, {"h": hist}).get("h", {}).get("buckets", []):
            start = b["key"] / 1000.0
            if field_name is None:
                out.append((start, None, b["doc_count"]))
            else:
                out.extend((start, _bucket_key(t), t["doc_count"]) for t in b["by"]["buckets"])
        return out

    def count_alerts_by_pair(
        self, flt: AlertFilter, field_a: str, field_b: str, size_a: int = 100, size_b: int = 10
    ) -> list[tuple[str, str, int]]:
        aggs = {
            "a": {
                "terms": {"field": field_a, "size": size_a},
                "aggs": {"b": {"terms": {"field": field_b, "size": size_b}}},
            }
        }
        return [
            (_bucket_key(a), _bucket_key(b), b["doc_count"])
            for a in self._aggregate("alert", flt, aggs).get("a", {}).get("buckets", [])
            for b in a["b"]["buckets"]
        ]

    def alert_facets(
        self,
        flt: AlertFilter,
        terms: dict[str, tuple[str, int]],
        pairs: dict[str, tuple[str, str, int, int]],
        histogram: tuple[int, str, int] | None = None,
    ) -> dict[str, Any]:
        """Several aggregations over the same alerts in one request (one pass over them):
        ``{"total": n, name: count_alerts_by(...) for terms, name: count_alerts_by_pair(...)
        for pairs, "histogram": alert_histogram(...)}``, each shaped as its own method's."""
        aggs: dict[str, Any] = {
            f"t_{name}": {"terms": {"field": f, "size": size}} for name, (f, size) in terms.items()
        }
        for name, (fa, fb, size_a, size_b) in pairs.items():
            aggs[f"p_{name}"] = {
                "terms": {"field": fa, "size": size_a},
                "aggs": {"b": {"terms": {"field": fb, "size": size_b}}},
            }
        if histogram is not None:
            interval_s, field_name, size = histogram
            aggs["h"] = {
                "date_histogram": {
                    "field": "@timestamp",
                    "fixed_interval": f"{int(interval_s)}s",
                    "min_doc_count": 1,
                },
                "aggs": {"by": {"terms": {"field": field_name, "size": size}}},
            }
        got = self._aggregate("alert", flt, aggs, track_total=True)
        out: dict[str, Any] = {"total": got.get("_total", 0)}
        for name in terms:
            out[name] = [
                (_bucket_key(b), b["doc_count"])
                for b in got.get(f"t_{name}", {}).get("buckets", [])
            ]
        for name in pairs:
            out[name] = [
                (_bucket_key(a), _bucket_key(b), b["doc_count"])
                for a in got.get(f"p_{name}", {}).get("buckets", [])
                for b in a["b"]["buckets"]
            ]
        if histogram is not None:
            out["histogram"] = [
                (b["key"] / 1000.0, _bucket_key(t), t["doc_count"])
                for b in got.get("h", {}).get("buckets", [])
                for t in b["by"]["buckets"]
            ]
        return out

    def last_seen_by(
        self, flt: AlertFilter, field_name: str, size: int = 1000, kind: str = "event"
    ) -> list[tuple[str, float]]:
        kinds.get(kind)  # raises for an unknown kind
        # No ordering by the max: it would make ES sort thousands of buckets for nothing.
        aggs = {
            "v": {
                "terms": {"field": field_name, "size": size},
                "aggs": {"last": {"max": {"field": "@timestamp"}}},
            }
        }
        return [
            (_bucket_key(b), b["last"]["value"] / 1000.0)
            for b in self._aggregate(kind, flt, aggs).get("v", {}).get("buckets", [])
            if b["last"]["value"] is not None
        ]

    def rollup_sums(
        self,
        flt: AlertFilter,
        fields: tuple[str, ...],
        size: int = 100,
        operations: tuple[str, ...] = (),
    ) -> list[tuple[tuple[str, ...], int, int, float]]:
        """Traffic from rollups (see the store's ``rollup_sums``): multi-level terms on
        ``fields`` with sums of transactions and bytes and the earliest interval start."""
        query: dict[str, Any] = {"bool": {"filter": []}}
        if flt.since is not None or flt.until is not None:
            rng: dict[str, Any] = {"format": "epoch_millis"}
            if flt.since is not None:
                rng["gte"] = int(flt.since * 1000)
            if flt.until is not None:
                rng["lt"] = int(flt.until * 1000)
            query["bool"]["filter"].append({"range": {"@timestamp": rng}})
        if flt.sites:
            query["bool"]["filter"].append({"terms": {"labels.site": list(flt.sites)}})
        if operations:
            query["bool"]["filter"].append({"terms": {"ics.operation": list(operations)}})
        metrics = {
            "n": {"sum": {"field": "icsmon.rollup.transactions"}},
            "b": {"sum": {"field": "network.bytes"}},
            "first": {"min": {"field": "@timestamp"}},
        }
        aggs: dict[str, Any] = {"aggs": metrics}
        for name in reversed(fields):  # innermost first
            aggs = {
                "aggs": {
                    "g": {
                        "terms": {"field": name, "size": size * 4, "order": {"n_total": "desc"}},
                        "aggs": {
                            **aggs["aggs"],
                            "n_total": {"sum": {"field": "icsmon.rollup.transactions"}},
                        },
                    }
                }
            }
        try:
            resp = self.client.search(
                index=self.store.alias("rollup"),
                query=query,
                size=0,
                aggs=aggs["aggs"],
                ignore_unavailable=True,
                allow_no_indices=True,
                pre_filter_shard_size=self.PRE_FILTER,
            )
        except NotFoundError:
            return []
        out: list[tuple[tuple[str, ...], int, int, float]] = []

        def walk(node: dict[str, Any], prefix: tuple[str, ...]) -> None:
            for b in node.get("g", {}).get("buckets", []):
                key = (*prefix, _bucket_key(b))
                if "g" in b:
                    walk(b, key)
                else:
                    out.append(
                        (
                            key,
                            int(b["n"]["value"] or 0),
                            int(b["b"]["value"] or 0),
                            (b["first"]["value"] or 0) / 1000.0,
                        )
                    )

        walk(resp.get("aggregations", {}), ())
        out.sort(key=lambda r: -r[1])
        return out[:size]

    def responses(self, request_ids: list[str], payload: bool = True) -> list[dict]:
        """Every part of the sensors' answers to these requests, by request then part."""
        if not request_ids:
            return []
        extra: dict[str, Any] = {} if payload else {"source_excludes": list(PAYLOAD_FIELDS)}
        out: list[dict] = []
        after: list[Any] | None = None
        while True:  # pages: a large capture has many parts
            if after:
                extra["search_after"] = after
            try:
                resp = self.client.search(
                    index=self.store.alias("response"),
                    query={"terms": {"icsmon.control.request_id": list(request_ids)}},
                    size=200,
                    sort=[
                        {"icsmon.control.request_id": {"order": "asc"}},
                        {"icsmon.control.part": {"order": "asc"}},
                        {"event.id": {"order": "asc"}},
                    ],
                    ignore_unavailable=True,
                    allow_no_indices=True,
                    **extra,
                )
            except NotFoundError:
                return out
            hits = resp["hits"]["hits"]
            out += [flatten(hit["_source"]) for hit in hits]
            if len(hits) < 200:
                return out
            after = hits[-1]["sort"]

    def latest(self, kind: str, flt: AlertFilter, size: int = 1000) -> list[dict]:
        """The newest document of ``kind`` per value of its ``latest_by`` field, from the
        kind's latest index (one document per key: no scan of the history), newest first."""
        key = kinds.get(kind).latest_by
        if key is None:
            raise ValueError(f"document kind {kind!r} keeps no latest document")
        filters: list[dict[str, Any]] = []
        if flt.since is not None or flt.until is not None:
            rng: dict[str, Any] = {"format": "epoch_millis"}
            if flt.since is not None:
                rng["gte"] = int(flt.since * 1000)
            if flt.until is not None:
                rng["lt"] = int(flt.until * 1000)
            filters.append({"range": {"@timestamp": rng}})
        if flt.sites:
            filters.append({"terms": {"labels.site": list(flt.sites)}})
        out: list[dict] = []
        after: list[Any] | None = None
        while len(out) < size:  # pages of 5,000: a province has more sensors than one page
            extra: dict[str, Any] = {"search_after": after} if after else {}
            want = min(size - len(out), 5000)
            try:
                resp = self.client.search(
                    index=self.store.latest_index(kind),
                    query={"bool": {"filter": filters}},
                    size=want,
                    sort=[{"@timestamp": {"order": "desc"}}, {key: {"order": "asc"}}],
                    ignore_unavailable=True,
                    allow_no_indices=True,
                    **extra,
                )
            except NotFoundError:
                break
            hits = resp["hits"]["hits"]
            out += [flatten(hit["_source"]) for hit in hits]
            if len(hits) < want:
                break
            after = hits[-1]["sort"]
        return out

    # -- the assessment's reads: assets past the result window, findings, one asset -----

    def get_asset(self, asset_id: str) -> dict | None:
        """The merged document of one asset."""
        try:
            got = self.client.get(index=self._assets_index(), id=asset_id)
        except NotFoundError:
            return None
        return flatten(got["_source"]) if got.get("found") else None

    def all_assets(self, sites: list[str] | None, limit: int = 1_000_000) -> list[dict]:
        """Every asset of the sites (``None``: all), however many (pages by search_after
        past the result window of 10,000), in the store's order."""
        if sites is not None and not sites:
            return []
        query: dict[str, Any] = {"terms": {"labels.site": sites}} if sites else {"match_all": {}}
        _, hits = self._scan(self._assets_index(), query, ASSET_ORDER, limit)
        return [flatten(h["_source"]) for h in hits]

    def search_findings(
        self,
        sites: list[str] | None = None,
        asset_id: str | None = None,
        kind: str | None = None,
        limit: int = 10_000,
        offset: int = 0,
    ) -> tuple[int, list[dict]]:
        """(total matching, one page of findings, most severe and newest first): the merged
        documents of the findings index (one per ``finding.id``), any number of them."""
        filters: list[dict[str, Any]] = []
        if sites is not None:
            filters.append({"terms": {"labels.site": list(sites)}})
        if asset_id:
            filters.append({"term": {"asset.id": asset_id}})
        if kind:
            filters.append({"term": {"finding.kind": kind}})
        sort = [
            {"finding.severity": {"order": "desc", "unmapped_type": "long"}},
            {"finding.last_seen": {"order": "desc", "unmapped_type": "date"}},
            {"finding.id": {"order": "asc", "unmapped_type": "keyword"}},
        ]
        hits = self._scan(
            kinds.get("finding").current_index(self.store.prefix),
            {"bool": {"filter": filters}},
            sort,
            offset + limit,
        )
        return hits[0], [flatten(h["_source"]) for h in hits[1][offset:]]

    def _scan(
        self, index: str, query: dict[str, Any], sort: list[dict[str, Any]], want: int
    ) -> tuple[int, list[dict[str, Any]]]:
        """(total, the first ``want`` hits in ``sort`` order): pages of 5,000 by search_after
        (``sort`` must end with a unique field)."""
        out: list[dict[str, Any]] = []
        total = 0
        after: list[Any] | None = None
        while len(out) < want:
            extra: dict[str, Any] = {"search_after": after} if after else {}
            size = min(5000, want - len(out))
            try:
                resp = self.client.search(
                    index=index,
                    query=query,
                    size=size,
                    sort=sort,
                    track_total_hits=True,
                    ignore_unavailable=True,
                    allow_no_indices=True,
                    **extra,
                )
            except NotFoundError:
                break
            total = resp["hits"]["total"]["value"]
            hits = resp["hits"]["hits"]
            out += hits
            if len(hits) < size:
                break
            after = hits[-1]["sort"]
        return total, out

    def close(self) -> None:
        self.client.close()


def _bucket_key(bucket: dict[str, Any]) -> str:
    key = bucket["key"]
    if isinstance(key, float) and key.is_integer():
        key = int(key)
    return str(bucket.get("key_as_string", key)) if not isinstance(key, int | float) else str(key)


def open_query_backend(url: str | None = None, config: str | None = None) -> EsQueryBackend:
    """The query back end for ``icsmon alerts/assets`` and the posture view: the pipeline
    configuration (file, ``ICSMON_*``) with ``url`` overriding its Elasticsearch URL."""
    from pipeline.config import load_config

    cfg = load_config(config, overrides={"elasticsearch": {"url": url}})
    return EsQueryBackend(cfg)


class EsHuntSource:
    """What a hunt at the centre reads and writes: the events alias in time order (then by
    ``event.id``, search_after pages), the alerts alias to tell alerts already raised, and
    new alerts bulk-written to the alerts' daily indices the way the indexer writes them."""

    PAGE = 5000
    BATCH = 500

    def __init__(self, cfg: PipelineConfig, client: Elasticsearch | None = None) -> None:
        self.store = EsStore(cfg, client)
        self.client = self.store.client
        self.where = cfg.elasticsearch.url
        self._pending: list[dict[str, Any]] = []

    @staticmethod
    def _events_query(
        since: float | None, until: float | None, sites: Iterable[str], observers: Iterable[str]
    ) -> dict[str, Any]:
        filters: list[dict[str, Any]] = []
        if since is not None or until is not None:
            rng: dict[str, Any] = {"format": "epoch_millis"}
            if since is not None:
                rng["gte"] = int(since * 1000)
            if until is not None:
                rng["lt"] = int(until * 1000)
            filters.append({"range": {"@timestamp": rng}})
        for name, values in (("labels.site", list(sites)), ("observer.name", list(observers))):
            if values:
                filters.append({"terms": {name: values}})
        return {"bool": {"filter": filters}}

    def count_events(
        self,
        since: float | None = None,
        until: float | None = None,
        sites: Iterable[str] = (),
        observers: Iterable[str] = (),
    ) -> int:
        try:
            resp = self.client.count(
                index=self.store.alias("event"),
                query=self._events_query(since, until, sites, observers),
                ignore_unavailable=True,
                allow_no_indices=True,
            )
        except NotFoundError:
            return 0
        return int(resp["count"])

    def scan_events(
        self,
        since: float | None = None,
        until: float | None = None,
        sites: Iterable[str] = (),
        observers: Iterable[str] = (),
    ) -> Iterator[dict[str, Any]]:
        """Flat events in time order, ``@timestamp`` as epoch seconds."""
        query = self._events_query(since, until, sites, observers)
        sort = [
            {"@timestamp": {"order": "asc", "unmapped_type": "date"}},
            {"event.id": {"order": "asc", "unmapped_type": "keyword"}},
        ]
        after: list[Any] | None = None
        while True:
            extra: dict[str, Any] = {"search_after": after} if after else {}
            try:
                resp = self.client.search(
                    index=self.store.alias("event"),
                    query=query,
                    size=self.PAGE,
                    sort=sort,
                    track_total_hits=False,
                    ignore_unavailable=True,
                    allow_no_indices=True,
                    **extra,
                )
            except NotFoundError:
                return
            hits = resp["hits"]["hits"]
            if not hits:
                return
            for hit in hits:
                event = flatten(hit["_source"])
                event["@timestamp"] = parse_timestamp(event.get("@timestamp"))
                yield event
            after = hits[-1]["sort"]

    def alert_raised(self, alert_id: str, rule_id: str, event_ids: Iterable[str]) -> bool:
        """An alert with this id, or of this rule over any of these events, is indexed."""
        should: list[dict[str, Any]] = [{"ids": {"values": [alert_id]}}]
        ids = [str(x) for x in event_ids]
        if ids:
            should.append(
                {
                    "bool": {
                        "filter": [
                            {"term": {"rule.id": rule_id}},
                            {"terms": {"icsmon.alert.event_ids": ids}},
                        ]
                    }
                }
            )
        self._flush()  # the hunt's own alerts count too
        try:
            resp = self.client.count(
                index=self.store.alias("alert"),
                query={"bool": {"should": should, "minimum_should_match": 1}},
                ignore_unavailable=True,
                allow_no_indices=True,
            )
        except NotFoundError:
            return False
        return int(resp["count"]) > 0

    def write_alert(self, alert: dict[str, Any]) -> None:
        self._pending.append(alert)
        if len(self._pending) >= self.BATCH:
            self._flush()

    def _flush(self) -> None:
        if not self._pending:
            return
        lines: list[dict[str, Any]] = []
        for alert in self._pending:
            doc = nest(alert)  # the times the hunt carries as numbers become text here
            lines += [self.store.bulk_actions("alert", doc)[0], doc]
        self._pending.clear()
        resp = self.client.bulk(operations=lines, refresh="wait_for")
        if resp.get("errors"):
            reason = next(
                (i["index"]["error"] for i in resp["items"] if "error" in i.get("index", {})), ""
            )
            raise RuntimeError(f"Elasticsearch refused hunt alerts: {reason}")

    def finish(self) -> None:
        try:
            self._flush()
        finally:
            self.client.close()
