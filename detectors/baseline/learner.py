"""Streaming baseline learning: one event at a time, bounded state, deterministic output."""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any

from detectors.baseline.features import (
    IDENTITY_FIELDS,
    MAX_VALUES_PER_EVENT,
    Observation,
    observe,
    run_numbers,
)
from detectors.baseline.model import (
    DEFAULT_SETTINGS,
    Baseline,
    add_range,
    add_sorted,
    empty_document,
    finalize_rate,
    finalize_series,
    hist_bin,
    iso,
    parse_iso,
    prune,
)

# Connection-level facts kept per conversation (value -> count): who connects how. They feed
# the placeholders (a PG connection marks an engineering station) and ``baseline show``.
ATTRIBUTE_FIELDS = (
    "s7comm.cotp.connection_type_name",
    "s7comm.cotp.src_tsap",
    "s7comm.cotp.dst_tsap",
    "opcua.security_policy",
    "opcua.client.application_uri",
)
MAX_ATTRIBUTE_VALUES = 16
_MAX_SHAPES = 4096  # runs of points whose point names are kept (a scan stays bounded)
_MAX_LINKS = 100_000  # (client, server, protocol) links remembered as done


@dataclass(frozen=True, slots=True)
class LearnerLimits:
    """Memory caps: past them entries are counted in ``truncated`` instead of stored."""

    max_assets: int = 100_000
    max_conversations: int = 100_000
    max_operations: int = 256  # per conversation
    max_ranges: int = 64  # per address space (closest ranges merge past this)
    max_nodes: int = 1024  # item ids per operation and direction
    max_points: int = 4096  # value points per server
    max_series: int = 256  # polling series per conversation
    max_peers: int = 256  # peers listed per asset
    max_macs: int = 8


class BaselineLearner:
    """Folds events into a baseline document.

    ``observe(event)`` for each event (any order within a connection is fine; timing needs
    time order per series, which replay and live capture give), then ``result()``.
    """

    def __init__(
        self,
        limits: LearnerLimits | None = None,
        settings: dict | None = None,
        base: Baseline | None = None,
    ) -> None:
        self.limits = limits or LearnerLimits()
        merged = dict(DEFAULT_SETTINGS)
        merged.update(settings or {})
        self.doc = copy.deepcopy(base.doc) if base is not None else empty_document(merged)
        if base is not None:
            _restore_empty_entries(self.doc)
        self.settings = self.doc["settings"]
        self._start: float | None = parse_iso(self.doc["window"].get("start"))
        self._end: float | None = parse_iso(self.doc["window"].get("end"))
        self._last_request: dict[tuple[str, str], float] = {}  # (conversation, series) -> ts
        self._bucket: dict[str, tuple[int, int]] = {}  # conversation -> (bucket index, count)
        # (client, server, protocol) already in both assets' roles, protocols and peers
        self._linked: set[tuple[str, str, str]] = set()
        # (protocol, prefix, start, length) of a run of points -> their names
        self._run_keys: dict[tuple[str, str, int, int], list[str]] = {}
        self.skipped = 0  # events without a client/server pair or a timestamp

    # -- public

    def add_source(self, name: str) -> None:
        sources = self.doc["window"].setdefault("sources", [])
        add_sorted(sources, name, 10_000)

    def observe(self, event: dict) -> None:
        obs = observe(event)
        if obs is None:
            self.skipped += 1
            return
        self._observe(obs, event)

    def observe_accepted(self, event: dict) -> None:
        """Learn one accepted event: its structure and values, not its timing (one event has
        no period and would skew the rate statistics)."""
        obs = observe(event)
        if obs is None:
            raise ValueError("the event has no client, server, protocol or timestamp to learn")
        self._observe(obs, event, timing=False)

    def result(self) -> Baseline:
        """The baseline so far (learning may continue afterwards)."""
        doc = copy.deepcopy(self.doc)
        for key, (_, count) in self._bucket.items():
            conv = doc["conversations"].get(key)
            if conv is not None and count:
                _hist_add(
                    conv.setdefault("rate", _new_rate(self.settings))["histogram"], str(count)
                )
        for conv in doc["conversations"].values():
            for series in (conv.get("polling") or {}).values():
                finalize_series(series, self.settings)
            if conv.get("rate"):
                finalize_rate(conv["rate"])
        prune(doc)
        doc["window"]["start"] = iso(self._start)
        doc["window"]["end"] = iso(self._end)
        return Baseline(doc)

    # -- internals

    def _truncate(self, what: str) -> None:
        t = self.doc["truncated"]
        t[what] = t.get(what, 0) + 1

    def _observe(self, obs: Observation, event: dict, timing: bool = True) -> None:
        ts = obs.ts
        stamp = iso(ts)
        if self._start is None or ts < self._start:
            self._start = ts
        if self._end is None or ts > self._end:
            self._end = ts
        self.doc["window"]["events"] += 1
        client = self._asset(obs.client, stamp, event.get("source.mac"))
        server = self._asset(obs.server, stamp, event.get("destination.mac"))
        link = (obs.client, obs.server, obs.protocol)
        if link not in self._linked:
            self._link(client, server, obs)
            if (
                client is not None
                and server is not None
                and obs.server in client["peers"]
                and obs.client in server["peers"]
            ):
                # roles, protocols and peers only grow: linking these two again changes nothing
                if len(self._linked) >= _MAX_LINKS:
                    self._linked.clear()
                self._linked.add(link)
        if server is not None:
            for key, name in IDENTITY_FIELDS:
                value = event.get(key)
                if value is not None and isinstance(value, str | int) and value != "":
                    server["identity"][name] = value  # the latest wins: firmware moves forward
        conv = self._conversation(obs, stamp)
        if conv is None or obs.anomaly:
            return
        self._operation(conv, obs, stamp, event)
        if timing:
            self._timing(conv, obs)
        if server is not None:
            self._values(server, obs)
        for kind, value in obs.security.items():
            counts = conv.setdefault("security", {}).setdefault(kind, {})
            counts[value] = counts.get(value, 0) + 1
        for name in ATTRIBUTE_FIELDS:
            value = event.get(name)
            if isinstance(value, str | int) and value != "":
                counts = conv.setdefault("attributes", {}).setdefault(name, {})
                text = str(value)
                if text in counts or len(counts) < MAX_ATTRIBUTE_VALUES:
                    counts[text] = counts.get(text, 0) + 1

    def _link(
        self, client: dict[str, Any] | None, server: dict[str, Any] | None, obs: Observation
    ) -> None:
        """Roles, protocols and peers of a client and its server."""
        for asset, role, peer in ((client, "client", obs.server), (server, "server", obs.client)):
            if asset is None:
                continue
            add_sorted(asset["roles"], f"{obs.protocol}-{role}", 64)
            add_sorted(asset["protocols"], obs.protocol, 64)
            if (
                not add_sorted(asset["peers"], peer, self.limits.max_peers)
                and peer not in asset["peers"]
            ):
                self._truncate("peers")

    def _asset(self, ip: str, stamp: str | None, mac: Any) -> dict | None:
        assets = self.doc["assets"]
        asset = assets.get(ip)
        if asset is None:
            if len(assets) >= self.limits.max_assets:
                self._truncate("assets")
                return None
            asset = assets[ip] = {
                "first_seen": stamp,
                "last_seen": stamp,
                "events": 0,
                "macs": [],
                "roles": [],
                "protocols": [],
                "peers": [],
                "identity": {},
                "points": {},
            }
        asset["events"] += 1
        if stamp is not None:
            if asset["first_seen"] is None or stamp < asset["first_seen"]:
                asset["first_seen"] = stamp
            if asset["last_seen"] is None or stamp > asset["last_seen"]:
                asset["last_seen"] = stamp
        if isinstance(mac, str) and mac:
            add_sorted(asset["macs"], mac, self.limits.max_macs)
        return asset

    def _conversation(self, obs: Observation, stamp: str | None) -> dict | None:
        convs = self.doc["conversations"]
        key = obs.conversation
        conv = convs.get(key)
        if conv is None:
            if len(convs) >= self.limits.max_conversations:
                self._truncate("conversations")
                return None
            conv = convs[key] = {
                "client": obs.client,
                "server": obs.server,
                "port": obs.port,
                "protocol": obs.protocol,
                "first_seen": stamp,
                "last_seen": stamp,
                "events": 0,
                "operations": {},
                "polling": {},
            }
        conv["events"] += 1
        if stamp is not None:
            conv["first_seen"] = min(conv["first_seen"] or stamp, stamp)
            conv["last_seen"] = max(conv["last_seen"] or stamp, stamp)
        return conv

    def _operation(self, conv: dict, obs: Observation, stamp: str | None, event: dict) -> None:
        ops = conv["operations"]
        op = ops.get(obs.op_key)
        if op is None:
            if len(ops) >= self.limits.max_operations:
                self._truncate("operations")
                return
            op = ops[obs.op_key] = {
                "class": obs.op_class,
                "function": obs.function,
                "count": 0,
                "first_seen": stamp,
                "last_seen": stamp,
                "outcomes": {},
                "addresses": {},
                "nodes": {},
            }
        op["count"] += 1
        if stamp is not None:
            op["first_seen"] = min(op["first_seen"] or stamp, stamp)
            op["last_seen"] = max(op["last_seen"] or stamp, stamp)
        outcome = event.get("event.outcome")
        if isinstance(outcome, str):
            op["outcomes"][outcome] = op["outcomes"].get(outcome, 0) + 1
        for direction, spaces in obs.addresses.items():
            target = op["addresses"].setdefault(direction, {})
            for space, ranges in spaces.items():
                learned = target.setdefault(space, [])
                for lo, hi in ranges:
                    add_range(learned, lo, hi, self.limits.max_ranges)
        for direction, nodes in obs.nodes.items():
            learned_nodes = op["nodes"].setdefault(direction, [])
            for node in nodes:
                if (
                    not add_sorted(learned_nodes, node, self.limits.max_nodes)
                    and len(learned_nodes) >= self.limits.max_nodes
                ):
                    self._truncate("nodes")

    def _timing(self, conv: dict, obs: Observation) -> None:
        key = obs.conversation
        # request rate: tumbling buckets of event time; only buckets with traffic count
        width = float(self.settings["rate_bucket_seconds"])
        index = math.floor(obs.ts / width)
        current = self._bucket.get(key)
        if current is not None and index < current[0]:
            index = current[0]  # a late event (transactions complete out of order): count it now
        if current is None or current[0] != index:
            if current is not None and current[1]:
                _hist_add(
                    conv.setdefault("rate", _new_rate(self.settings))["histogram"], str(current[1])
                )
            current = (index, 0)
        self._bucket[key] = (index, current[1] + 1)
        # polling: intervals between successive requests of the same series
        series_key = obs.series or obs.op_key or ""
        polling = conv["polling"]
        series = polling.get(series_key)
        if series is None:
            if len(polling) >= self.limits.max_series:
                self._truncate("series")
                return
            series = polling[series_key] = {"requests": 0, "histogram": {}}
        series["requests"] += 1
        last = self._last_request.get((key, series_key))
        if last is None or obs.ts > last:
            if last is not None:
                _hist_add(series["histogram"], str(hist_bin(obs.ts - last)))
            self._last_request[(key, series_key)] = obs.ts

    def _values(self, server: dict[str, Any], obs: Observation) -> None:
        cap = int(self.settings["max_value_set"])
        for prefix, direction, start, raw in obs.runs:
            shape = (obs.protocol, prefix, start, len(raw))
            keys = self._run_keys.get(shape)
            if keys is None:
                if len(self._run_keys) >= _MAX_SHAPES:
                    self._run_keys.clear()
                keys = self._run_keys[shape] = [
                    f"{obs.protocol} {prefix}={start + i}"
                    for i in range(min(len(raw), MAX_VALUES_PER_EVENT))
                ]
            for i, value in run_numbers(raw):
                self._value(server, keys[i], direction, value, cap)
        for name, direction, value in obs.values:
            self._value(server, f"{obs.protocol} {name}", direction, value, cap)

    def _value(
        self, server: dict[str, Any], key: str, direction: str, value: float, cap: int
    ) -> None:
        points = server["points"]
        point = points.get(key)
        if point is None:
            if len(points) >= self.limits.max_points:
                self._truncate("points")
                return
            point = points[key] = {}
        stats = point.get(direction)
        v: float | int = int(value) if value == int(value) else value
        if stats is None:
            point[direction] = {"count": 1, "min": v, "max": v, "values": [v]}
            return
        stats["count"] += 1
        if v < stats["min"]:
            stats["min"] = v
        if v > stats["max"]:
            stats["max"] = v
        values = stats["values"]
        if values is not None and v not in values:
            if len(values) >= cap:
                stats["values"] = None  # too many distinct values to list: a range only
            else:
                add_sorted(values, v, cap)


def _new_rate(settings: dict) -> dict:
    return {"bucket_seconds": settings["rate_bucket_seconds"], "histogram": {}}


def _hist_add(hist: dict, key: str) -> None:
    hist[key] = hist.get(key, 0) + 1


def _restore_empty_entries(doc: dict) -> None:
    """Put back the empty entries ``prune`` left out of a saved baseline (learning adds to them)."""
    doc.setdefault("truncated", {})
    for asset in doc["assets"].values():
        for key, empty in (
            ("macs", list),
            ("roles", list),
            ("protocols", list),
            ("peers", list),
            ("identity", dict),
            ("points", dict),
        ):
            asset.setdefault(key, empty())
    for conv in doc["conversations"].values():
        conv.setdefault("polling", {})
        for op in conv["operations"].values():
            op.setdefault("function", "")
            for key in ("outcomes", "addresses", "nodes"):
                op.setdefault(key, {})
