"""Deviation detection against a learned baseline: each alert says what the baseline expected,
what was seen, and which baseline entry it refers to.

Deviation kinds (``rule.id``):

| rule.id | when | ATT&CK for ICS |
| --- | --- | --- |
| ``baseline-new-asset`` | an IP the baseline never saw | T0848 when it acts as a client |
| ``baseline-new-conversation`` | a client -> server/port/protocol pair never seen | T0848 (+ the operation's) |
| ``baseline-new-operation`` | a known conversation does an operation never seen (first write, PLC stop, ...); or an unknown conversation moves to a more dangerous class | by class: T0855/T0836 write, T0858 control, T0843/T0845 program, T0888 diagnostic, T0801 read |
| ``baseline-new-write-address`` / ``baseline-new-read-address`` | a known operation touches addresses never touched | T0836 / T0861 |
| ``baseline-new-node`` | an OPC UA node (or item id) never touched by that operation | T0836 write, T0861 read |
| ``baseline-value-out-of-range`` | a written (or read) value outside the learned range, with tolerance | T0836 write, T0831 read |
| ``baseline-polling-stopped`` / ``baseline-polling-slowed`` | a polling series silent beyond its learned period and jitter / its recent period far above it | T0803, T0804 |
| ``baseline-request-flood`` | requests per bucket far above the learned maximum | T0814 |
| ``baseline-security-downgrade`` | an OPC UA session weaker (mode or identity token) than any learned | T0830 / T0859 |
| ``baseline-mac-changed`` | a known IP with a MAC never seen for it | T0830 |
| ``baseline-identity-changed`` | a device identity field (vendor, firmware, ...) differs from the learned one | T0857 firmware, else T0830 |
"""

from __future__ import annotations

import math
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from statistics import median
from typing import Any

from detectors.alerts import RuleMeta, build_alert, event_identity
from detectors.baseline.features import IDENTITY_FIELDS, Observation, observe, security_rank
from detectors.baseline.model import Baseline, iso, uncovered

# Event fields a flush-time alert (no triggering event) borrows from the series' last event.
_TEMPLATE_PREFIXES = (
    "source.",
    "destination.",
    "network.",
    "observer.",
    "organization.",
    "labels.",
    "ecs.",
    "event.dataset",
)

_CLASS_SEVERITY = {
    "session": 30,
    "other": 35,
    "read": 40,
    "diagnostic": 45,
    "write": 70,
    "control": 85,
    "program": 85,
}
_CLASS_RANK = {
    "session": 0,
    "other": 1,
    "read": 2,
    "diagnostic": 3,
    "write": 4,
    "control": 5,
    "program": 6,
}

_RULES: dict[str, tuple[str, str]] = {
    "baseline-new-asset": (
        "New asset not in the baseline",
        "A host the baseline never saw takes part in industrial traffic.",
    ),
    "baseline-new-conversation": (
        "New industrial conversation",
        "A client talks to a server (protocol and port) it never talked to while the baseline was learned.",
    ),
    "baseline-new-operation": (
        "New operation on a conversation",
        "A conversation performs an operation the baseline never saw on it.",
    ),
    "baseline-new-write-address": (
        "Write to an address never written",
        "A known write operation touches addresses it never wrote during learning.",
    ),
    "baseline-new-read-address": (
        "Read of an address never read",
        "A known read operation touches addresses it never read during learning.",
    ),
    "baseline-new-node": (
        "Operation on an item never touched",
        "An operation touches a node or item id it never touched during learning.",
    ),
    "baseline-value-out-of-range": (
        "Value outside the learned range",
        "A value written to (or read from) a point lies outside the range learned for it.",
    ),
    "baseline-polling-stopped": (
        "Polling stopped",
        "A polling series went silent for longer than its learned period and jitter allow.",
    ),
    "baseline-polling-slowed": (
        "Polling slowed",
        "A polling series' recent period is far above the learned one.",
    ),
    "baseline-request-flood": (
        "Request flood",
        "A conversation's request rate is far above the highest rate learned.",
    ),
    "baseline-security-downgrade": (
        "Security downgrade",
        "A session uses a weaker security mode or identity token than any learned for it.",
    ),
    "baseline-mac-changed": (
        "Known IP with a new MAC address",
        "A known IP address appears with a MAC address the baseline never saw for it.",
    ),
    "baseline-identity-changed": (
        "Device identity changed",
        "A device reports an identity (vendor, product, firmware...) different from the learned one.",
    ),
}


def _rule(rule_id: str, techniques: list[str]) -> RuleMeta:
    name, description = _RULES[rule_id]
    return RuleMeta(
        id=rule_id,
        name=name,
        level="medium",
        description=description,
        author="icsmon",
        techniques=tuple(dict.fromkeys(techniques)),
    )


def op_techniques(op_class: str, event: dict | None = None, function: str = "") -> list[str]:
    """ATT&CK for ICS ids for an operation by its class (and a few telling functions)."""
    action = str((event or {}).get("event.action") or function or "").lower()
    if (event or {}).get("modbus.function_code") == 8:
        sub = (event or {}).get("modbus.subfunction")
        if sub == 1:
            return ["T0816"]
        if sub == 4:
            return ["T0881"]
    if op_class == "write":
        return ["T0855", "T0836"]
    if op_class == "control":
        return ["T0858", "T0881"] if "stop" in action else ["T0858"]
    if op_class == "program":
        return ["T0845"] if "upload" in action else ["T0843"]
    if op_class == "diagnostic":
        return ["T0888"]
    if op_class == "read":
        return ["T0861"] if "browse" in action else ["T0801"]
    if op_class == "session":
        return ["T0886"]
    return []


@dataclass(slots=True)
class _Series:
    period: float
    mad: float
    conv: str
    key: str
    last: float | None = None
    last_event_id: str | None = None
    recent: deque = field(default_factory=lambda: deque(maxlen=5))
    stopped: bool = False
    slowed: bool = False


class BaselineDetector:
    """Checks events against a baseline; ``process(event)`` and ``flush(now_ts)`` return alerts.

    tolerance: fraction of a point's learned range (or magnitude, for a constant) a value may
    lie outside it. stop_factor/min_stop_gap: a polling series is stopped once silent for
    ``max(stop_factor * period, period + min_stop_gap + 6 * MAD)`` seconds. slow_factor: the
    median of its last 5 intervals above ``slow_factor * period`` is "slowed". flood_factor/
    flood_margin: a rate bucket above ``flood_factor * learned max + flood_margin`` is a flood.
    realert: seconds of event time before a repeated value deviation on the same point alerts
    again. check_read_values: also check values read (process values), not only writes.
    """

    def __init__(
        self,
        baseline: Baseline,
        tolerance: float = 0.1,
        *,
        stop_factor: float = 3.0,
        min_stop_gap: float = 5.0,
        slow_factor: float = 2.0,
        flood_factor: float = 3.0,
        flood_margin: int = 20,
        realert: float = 300.0,
        check_read_values: bool = True,
        max_state: int = 100_000,
    ) -> None:
        self.baseline = baseline
        self.tolerance = float(tolerance)
        self.stop_factor = stop_factor
        self.min_stop_gap = min_stop_gap
        self.slow_factor = slow_factor
        self.flood_factor = flood_factor
        self.flood_margin = flood_margin
        self.realert = realert
        self.check_read_values = check_read_values
        self.max_state = max_state
        # counters for --stats; suppressed = repeats of a deviation already raised
        self.stats: dict[str, int] = {"events": 0, "skipped": 0, "alerts": 0, "suppressed": 0}
        doc = baseline.doc
        self._assets: dict[str, dict] = doc["assets"]
        self._convs: dict[str, dict] = doc["conversations"]
        self._bucket_width = float(doc["settings"].get("rate_bucket_seconds", 10.0))
        self._series: dict[tuple[str, str], _Series] = {}
        self._by_server: dict[str, list[_Series]] = {}
        for conv_key, conv in self._convs.items():
            for series_key, s in (conv.get("polling") or {}).items():
                if s.get("regular") and s.get("period"):
                    st = _Series(
                        float(s["period"]), float(s.get("mad") or 0.0), conv_key, series_key
                    )
                    self._series[(conv_key, series_key)] = st
                    self._by_server.setdefault(conv["server"], []).append(st)
        self._clients: dict[tuple[str, str], set[str]] = {}  # (server, protocol) -> learned clients
        for conv in self._convs.values():
            self._clients.setdefault((conv["server"], conv["protocol"]), set()).add(conv["client"])
        self._server_security: dict[str, dict[str, set[str]]] = {}
        for conv in self._convs.values():
            for kind, counts in (conv.get("security") or {}).items():
                self._server_security.setdefault(conv["server"], {}).setdefault(kind, set()).update(
                    counts
                )
        self._seen_servers: dict[str, float] = {}
        self._last_event: dict[str, dict] = {}  # known conversation -> its latest event
        self._once: OrderedDict[tuple, None] = OrderedDict()  # deviations already raised
        self._last_alert: OrderedDict[tuple, float] = OrderedDict()  # value deviations: last raised
        self._unknown: OrderedDict[str, int] = (
            OrderedDict()
        )  # unknown conversation -> highest class rank alerted
        self._buckets: dict[str, list] = {}  # conversation -> [bucket index, count, alerted]
        self._start: float | None = None
        self._now: float | None = None
        self._next_check = -math.inf

    # ------------------------------------------------------------ public

    def process(self, event: dict) -> list[dict]:
        obs = observe(event)
        if obs is None:
            self.stats["skipped"] += 1
            return []
        self.stats["events"] += 1
        out = self._tick(obs.ts)
        if (
            obs.server in self._by_server
        ):  # only servers with learned polling: bounded by the baseline
            self._seen_servers.setdefault(obs.server, obs.ts)
        self._check_assets(obs, event, out)
        conv = self._convs.get(obs.conversation)
        if conv is None:
            self._check_unknown_conversation(obs, event, out)
            self._check_security(None, obs, event, out)
        elif not obs.anomaly:
            self._last_event[obs.conversation] = event  # fields for a later polling alert
            self._check_operation(conv, obs, event, out)
            self._check_security(conv, obs, event, out)
            self._check_timing(conv, obs, event, out)
        if not obs.anomaly:
            self._check_values(obs, event, out)
        self.stats["alerts"] += len(out)
        return out

    def tick(self, now_ts: float) -> list[dict]:
        """Timing checks on a live clock (call every few seconds): polling that stopped is
        reported even when the whole network has gone quiet and no event arrives."""
        return self.flush(now_ts)

    def flush(self, now_ts: float | None = None) -> list[dict]:
        """Timing checks at ``now_ts`` (default: the latest event time), e.g. at end of input."""
        now = now_ts if now_ts is not None else self._now
        if now is None:
            return []
        out = self._overdue(now)
        self.stats["alerts"] += len(out)
        return out

    # ------------------------------------------------------------ alert building

    def _alert(
        self,
        rule_id: str,
        techniques: list[str],
        severity: int,
        event: dict,
        *,
        key: str,
        message: str,
        expected: str,
        observed: str,
        entry: str,
        refs: dict[str, Any] | None = None,
        event_ids: list[str] | None = None,
    ) -> dict:
        extra: dict[str, Any] = {
            "rule.ruleset": "baseline",
            "event.severity": max(1, min(100, int(severity))),
            "message": message,
            "icsmon.baseline.expected": expected,
            "icsmon.baseline.observed": observed,
            "icsmon.baseline.entry": entry,
        }
        if self.baseline.path:
            extra["icsmon.baseline.file"] = self.baseline.path
        for k, v in (refs or {}).items():
            extra[f"icsmon.baseline.{k}"] = v
        alert = build_alert(
            _rule(rule_id, techniques), event, key=key, event_ids=event_ids, extra=extra
        )
        alert["rule.reference"] = []
        alert.pop("tags", None)
        return alert

    def _first(self, key: tuple) -> bool:
        """True the first time a deviation key is seen (bounded memory: oldest forgotten)."""
        if key in self._once:
            self.stats["suppressed"] += 1
            return False
        self._once[key] = None
        if len(self._once) > self.max_state:
            self._once.popitem(last=False)
        return True

    # ------------------------------------------------------------ checks

    def _check_assets(self, obs: Observation, event: dict, out: list[dict]) -> None:
        for ip, side in ((obs.client, "client"), (obs.server, "server")):
            asset = self._assets.get(ip)
            if asset is None:
                if not self._first(("asset", ip)):
                    continue
                if side == "client":
                    techniques = ["T0848"]
                    severity = 80 if obs.op_class in ("write", "control", "program") else 60
                else:
                    techniques, severity = [], 45
                known = len(self._assets)
                out.append(
                    self._alert(
                        "baseline-new-asset",
                        techniques,
                        severity,
                        event,
                        key=ip,
                        message=f"{ip} is not in the baseline ({known} known assets); seen as {obs.protocol} {side}"
                        f" ({obs.function or obs.op_class}) {'to' if side == 'client' else 'from'} "
                        f"{obs.server if side == 'client' else obs.client}.",
                        expected=f"one of the {known} assets learned",
                        observed=f"{ip} as {obs.protocol}-{side}",
                        entry=f"assets[{ip!r}]",
                        refs={"asset": ip},
                    )
                )
                continue
            mac = event.get(f"{'source' if side == 'client' else 'destination'}.mac")
            macs = asset.get("macs") or []
            if (
                isinstance(mac, str)
                and mac
                and macs
                and mac not in macs
                and self._first(("mac", ip, mac))
            ):
                out.append(
                    self._alert(
                        "baseline-mac-changed",
                        ["T0830"],
                        60,
                        event,
                        key=f"{ip}|{mac}",
                        message=f"{ip} appears with MAC {mac}; the baseline knows it as {', '.join(macs)}.",
                        expected=", ".join(macs),
                        observed=mac,
                        entry=f"assets[{ip!r}].macs",
                        refs={"asset": ip},
                    )
                )
            if side == "server":
                identity = asset.get("identity") or {}
                for field_name, name in IDENTITY_FIELDS if identity else ():
                    v = event.get(field_name)
                    learned = identity.get(name)
                    if v is None or v == "" or learned is None or str(learned) == str(v):
                        continue
                    if not self._first(("identity", ip, name, str(v))):
                        continue
                    out.append(
                        self._alert(
                            "baseline-identity-changed",
                            ["T0857"] if name == "firmware" else ["T0830"],
                            70 if name == "firmware" else 55,
                            event,
                            key=f"{ip}|{name}|{v}",
                            message=f"{ip} reports {name} {v!r}; the baseline learned {learned!r}.",
                            expected=str(learned),
                            observed=str(v),
                            entry=f"assets[{ip!r}].identity.{name}",
                            refs={"asset": ip},
                        )
                    )

    def _check_unknown_conversation(self, obs: Observation, event: dict, out: list[dict]) -> None:
        key = obs.conversation
        rank = _CLASS_RANK.get(obs.op_class, 1) if not obs.anomaly else -1
        previous = self._unknown.get(key)
        if previous is None:
            self._unknown[key] = rank
            if len(self._unknown) > self.max_state:
                self._unknown.popitem(last=False)
            client_known = obs.client in self._assets
            techniques = ([] if client_known else ["T0848"]) + op_techniques(
                obs.op_class, event, obs.function
            )
            severity = {"write": 85, "control": 90, "program": 90}.get(obs.op_class, 50) + (
                0 if client_known else 5
            )
            clients = sorted(self._clients.get((obs.server, obs.protocol), ()))
            expected = (
                f"clients of {obs.server} {obs.port}/{obs.protocol}: {', '.join(clients)}"
                if clients
                else f"no {obs.protocol} client of {obs.server} port {obs.port}"
            )
            out.append(
                self._alert(
                    "baseline-new-conversation",
                    techniques,
                    severity,
                    event,
                    key=key,
                    message=f"{obs.client} -> {obs.server} {obs.port}/{obs.protocol} was never seen while learning; "
                    f"first operation: {obs.function or obs.op_class} ({obs.op_class}).",
                    expected=expected,
                    observed=f"{obs.client} ({obs.function or obs.op_class})",
                    entry=f"conversations[{key!r}]",
                    refs={"conversation": key},
                )
            )
            return
        if rank <= previous:
            return
        self._unknown[key] = rank
        if rank < _CLASS_RANK["write"]:
            return  # reads after a session on an unknown conversation: already reported
        techniques = (["T0848"] if obs.client not in self._assets else []) + op_techniques(
            obs.op_class, event, obs.function
        )
        out.append(
            self._alert(
                "baseline-new-operation",
                techniques,
                _CLASS_SEVERITY.get(obs.op_class, 50) + 10,
                event,
                key=f"{key}|{obs.op_class}",
                message=f"{obs.client}, on a conversation unknown to the baseline, now does {_what(obs)} "
                f"({obs.op_class}) on {obs.server}.",
                expected=f"no {obs.op_class} operation from {obs.client}",
                observed=f"{obs.op_key} ({obs.op_class})",
                entry=f"conversations[{key!r}]",
                refs={"conversation": key, "operation": obs.op_key},
            )
        )

    def _check_operation(self, conv: dict, obs: Observation, event: dict, out: list[dict]) -> None:
        key = obs.conversation
        ops = conv["operations"]
        op = ops.get(obs.op_key)
        if op is None:
            if not self._first(("op", key, obs.op_key)):
                return
            techniques = op_techniques(obs.op_class, event, obs.function)
            # a sequence (start upload, upload, end upload) is one deviation, not three
            burst = ("op-burst", key, obs.op_class, tuple(techniques))
            last = self._last_alert.get(burst)
            self._last_alert[burst] = obs.ts
            if last is not None and obs.ts - last < self.realert:
                self.stats["suppressed"] += 1
                return
            classes = sorted({o.get("class", "other") for o in ops.values()})
            severity = _CLASS_SEVERITY.get(obs.op_class, 40) + (
                10 if obs.op_class not in classes else 0
            )
            learned = ", ".join(f"{k} ({o.get('class')})" for k, o in sorted(ops.items()))
            out.append(
                self._alert(
                    "baseline-new-operation",
                    techniques,
                    severity,
                    event,
                    key=f"{key}|{obs.op_key}",
                    message=f"{obs.client} did {_what(obs)} ({obs.op_class}) on {obs.server} "
                    f"{obs.port}/{obs.protocol}; learned operations: {learned or 'none'}.",
                    expected=learned,
                    observed=f"{obs.op_key} ({obs.op_class})",
                    entry=f"conversations[{key!r}].operations",
                    refs={"conversation": key, "operation": obs.op_key},
                )
            )
            return
        for direction, spaces in obs.addresses.items():
            learned_spaces = (op.get("addresses") or {}).get(direction) or {}
            for space, ranges in spaces.items():
                learned = learned_spaces.get(space) or []
                for lo, hi in ranges:
                    gaps = uncovered(learned, lo, hi)
                    if not gaps:
                        continue
                    rid = (
                        "baseline-new-write-address"
                        if direction == "write"
                        else "baseline-new-read-address"
                    )
                    gap_text = ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in gaps[:8])
                    if not self._first((rid, key, obs.op_key, space, gap_text)):
                        continue
                    learned_text = (
                        ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in learned[:16])
                        or "none"
                    )
                    out.append(
                        self._alert(
                            rid,
                            ["T0836"] if direction == "write" else ["T0861"],
                            60 if direction == "write" else 25,
                            event,
                            key=f"{key}|{obs.op_key}|{space}|{gap_text}",
                            message=f"{obs.client} {direction}s {space} {gap_text} on {obs.server} with {obs.op_key}; "
                            f"learned {direction} addresses: {learned_text}.",
                            expected=f"{space} {learned_text}",
                            observed=f"{space} {gap_text}",
                            entry=f"conversations[{key!r}].operations[{obs.op_key!r}].addresses.{direction}.{space}",
                            refs={"conversation": key, "operation": obs.op_key},
                        )
                    )
        for direction, nodes in obs.nodes.items():
            learned_nodes = set((op.get("nodes") or {}).get(direction) or [])
            new = [n for n in nodes if n not in learned_nodes]
            if not new or not self._first(("node", key, obs.op_key, direction, tuple(new[:8]))):
                continue
            severity = {"write": 60, "call": 65}.get(direction, 25)
            techniques = (
                ["T0836"]
                if direction == "write"
                else ["T0855"]
                if direction == "call"
                else ["T0861"]
            )
            out.append(
                self._alert(
                    "baseline-new-node",
                    techniques,
                    severity,
                    event,
                    key=f"{key}|{obs.op_key}|{direction}|{new[0]}",
                    message=f"{obs.client} {direction}s {', '.join(new[:8])} on {obs.server} with {obs.op_key}, never "
                    f"{direction} by it while learning.",
                    expected=", ".join(sorted(learned_nodes)[:16]) or "none",
                    observed=", ".join(new[:16]),
                    entry=f"conversations[{key!r}].operations[{obs.op_key!r}].nodes.{direction}",
                    refs={"conversation": key, "operation": obs.op_key},
                )
            )

    def _check_security(
        self, conv: dict | None, obs: Observation, event: dict, out: list[dict]
    ) -> None:
        if not obs.security:
            return
        learned_all = (conv or {}).get("security") or {}
        for kind in ("security_mode", "identity_token"):
            value = obs.security.get(kind)
            if value is None:
                continue
            learned = set(learned_all.get(kind) or ()) or self._server_security.get(
                obs.server, {}
            ).get(kind, set())
            if not learned or value in learned:
                continue
            rank = security_rank(kind, value)
            ranks = [r for r in (security_rank(kind, v) for v in learned) if r is not None]
            if rank is None or not ranks or rank >= min(ranks):
                continue
            if not self._first(("security", obs.conversation, kind, value)):
                continue
            out.append(
                self._alert(
                    "baseline-security-downgrade",
                    ["T0830"] if kind == "security_mode" else ["T0859"],
                    75,
                    event,
                    key=f"{obs.conversation}|{kind}|{value}",
                    message=f"{obs.client} -> {obs.server}: {kind.replace('_', ' ')} {value}, weaker than anything "
                    f"learned ({', '.join(sorted(learned))}).",
                    expected=", ".join(sorted(learned)),
                    observed=value,
                    entry=f"conversations[{obs.conversation!r}].security.{kind}",
                    refs={"conversation": obs.conversation},
                )
            )

    def _check_timing(self, conv: dict, obs: Observation, event: dict, out: list[dict]) -> None:
        key = obs.conversation
        st = self._series.get((key, obs.series or ""))
        if st is not None and (st.last is None or obs.ts > st.last):  # late events say nothing new
            if st.last is not None:
                st.recent.append(obs.ts - st.last)
            if st.stopped:
                st.stopped = False  # polling resumed: a new silence is a new episode
                st.recent.clear()
            st.last = obs.ts
            st.last_event_id = event_identity(event)
            if len(st.recent) == st.recent.maxlen:
                recent = median(st.recent)
                slow_at = max(self.slow_factor * st.period, st.period + 6 * 1.4826 * st.mad)
                if recent > slow_at and not st.slowed:
                    st.slowed = True
                    out.append(
                        self._alert(
                            "baseline-polling-slowed",
                            ["T0803", "T0804"],
                            45,
                            event,
                            key=f"{key}|{st.key}|{obs.ts:.6f}",
                            message=f"{obs.client} polls {obs.server} ({st.key}) every {recent:.3f} s lately; "
                            f"learned period {st.period:.3f} s (MAD {st.mad:.3f} s).",
                            expected=f"period {st.period:.3f} s, MAD {st.mad:.3f} s",
                            observed=f"period {recent:.3f} s",
                            entry=f"conversations[{key!r}].polling[{st.key!r}]",
                            refs={"conversation": key, "series": [st.key]},
                        )
                    )
                elif recent <= (1 + (self.slow_factor - 1) / 2) * st.period:
                    st.slowed = False
        rate = conv.get("rate") or {}
        learned_max = rate.get("max")
        if not learned_max:
            return
        index = math.floor(obs.ts / self._bucket_width)
        bucket = self._buckets.get(key)
        if bucket is not None and index < bucket[0]:
            index = bucket[0]  # a late event counts in the current bucket
        if bucket is None or bucket[0] != index:
            bucket = self._buckets[key] = [index, 0, False]
        bucket[1] += 1
        limit = self.flood_factor * learned_max + self.flood_margin
        if bucket[1] > limit and not bucket[2]:
            bucket[2] = True
            ratio = bucket[1] / learned_max
            severity = 60 + min(20, int(10 * math.log2(max(ratio / self.flood_factor, 1.0))))
            out.append(
                self._alert(
                    "baseline-request-flood",
                    ["T0814"],
                    severity,
                    event,
                    key=f"{key}|{index}",
                    message=f"{obs.client} -> {obs.server}: {bucket[1]} requests so far in this {self._bucket_width:g} s "
                    f"bucket (threshold {int(limit)}); learned at most {learned_max} (median {rate.get('median')}).",
                    expected=f"at most {learned_max} requests per {self._bucket_width:g} s",
                    observed=f"more than {int(limit)} requests per {self._bucket_width:g} s",
                    entry=f"conversations[{key!r}].rate",
                    refs={"conversation": key, "count": bucket[1]},
                )
            )

    def _check_values(self, obs: Observation, event: dict, out: list[dict]) -> None:
        if not obs.values:
            return
        asset = self._assets.get(obs.server)
        points = (asset or {}).get("points") or {}
        if not points:
            return
        for name, direction, value in obs.values:
            if direction == "read" and not self.check_read_values:
                continue
            point_key = f"{obs.protocol} {name}"
            point = points.get(point_key)
            if point is None:
                continue
            stats = point.get(direction) or (point.get("read") if direction == "write" else None)
            if stats is None:
                continue
            lo, hi = stats["min"], stats["max"]
            span = hi - lo
            margin = self.tolerance * max(span, abs(lo), abs(hi), 1.0)
            if lo - margin <= value <= hi + margin:
                continue
            dedup = ("value", obs.server, point_key, direction, value > hi)
            last = self._last_alert.get(dedup)
            if last is not None and obs.ts - last < self.realert:
                self.stats["suppressed"] += 1
                continue
            self._last_alert[dedup] = obs.ts
            if len(self._last_alert) > self.max_state:
                self._last_alert.popitem(last=False)
            excess = (value - hi if value > hi else lo - value) / max(span, 1.0)
            base, top = (60, 25) if direction == "write" else (30, 20)
            severity = base + min(top, int(10 * math.log2(1 + excess)))
            shown = int(value) if value == int(value) else value
            learned_values = stats.get("values")
            expected = f"{_fmt(lo)}..{_fmt(hi)}" + (
                f" (seen: {', '.join(_fmt(v) for v in learned_values)})" if learned_values else ""
            )
            out.append(
                self._alert(
                    "baseline-value-out-of-range",
                    ["T0836"] if direction == "write" else ["T0831"],
                    severity,
                    event,
                    key=f"{obs.server}|{point_key}|{direction}|{obs.ts:.6f}",
                    message=f"{obs.client} {'wrote' if direction == 'write' else 'read'} {shown} "
                    f"{'to' if direction == 'write' else 'from'} {name} on {obs.server}; learned "
                    f"{direction} range {_fmt(lo)}..{_fmt(hi)} over {stats.get('count')} values "
                    f"(tolerance {self.tolerance:g}).",
                    expected=expected,
                    observed=_fmt(value),
                    entry=f"assets[{obs.server!r}].points[{point_key!r}].{direction}",
                    refs={"asset": obs.server, "point": point_key, "direction": direction},
                )
            )

    # ------------------------------------------------------------ timing

    def _tick(self, now: float) -> list[dict]:
        if self._start is None:
            self._start = now
        if self._now is None or now > self._now:
            self._now = now
        if now < self._next_check:
            return []
        self._next_check = now + 1.0  # scan the polling series at most once per second of traffic
        return self._overdue(now)

    def _stop_after(self, st: _Series) -> float:
        return max(
            self.stop_factor * st.period, st.period + self.min_stop_gap + 6 * 1.4826 * st.mad
        )

    def _overdue(self, now: float) -> list[dict]:
        out: list[dict] = []
        for server, series in self._by_server.items():
            seen_at = self._seen_servers.get(server)
            if seen_at is None:
                continue  # a server absent from this input: nothing to say about its polling
            stopped: dict[str, list[tuple[_Series, float]]] = {}
            for st in series:
                if st.stopped:
                    continue
                since = st.last if st.last is not None else max(seen_at, self._start or seen_at)
                if now - since > self._stop_after(st):
                    st.stopped = True
                    stopped.setdefault(st.conv, []).append((st, since))
            # one alert per conversation: siblings already silent for several of their own
            # periods stopped with it (a client stopping stops all its series at once)
            for st in series:
                if st.stopped or st.conv not in stopped:
                    continue
                since = st.last if st.last is not None else max(seen_at, self._start or seen_at)
                if now - since > max(self.stop_factor * st.period, st.period + 6 * 1.4826 * st.mad):
                    st.stopped = True
                    stopped[st.conv].append((st, since))
            for conv_key, items in stopped.items():
                conv = self._convs[conv_key]
                last = self._last_event.get(conv_key)
                template = (
                    _template(last)
                    if last is not None
                    else {
                        "source.ip": conv["client"],
                        "destination.ip": conv["server"],
                        "destination.port": conv["port"],
                        "network.protocol": conv["protocol"],
                        "network.transport": "tcp",
                    }
                )
                event = dict(template)
                event["@timestamp"] = iso(now)
                event["event.action"] = "polling-stopped"
                since = max(s for _, s in items)
                names = "; ".join(f"{st.key} (every {st.period:.3f} s)" for st, _ in items)
                ids = [st.last_event_id for st, _ in items if st.last_event_id]
                never = all(st.last is None for st, _ in items)
                out.append(
                    self._alert(
                        "baseline-polling-stopped",
                        ["T0803", "T0804"],
                        65,
                        event,
                        key=f"{conv_key}|{since:.6f}",
                        message=(
                            f"{conv['client']} stopped polling {conv['server']} {conv['port']}/{conv['protocol']}: "
                            f"{'no request since ' + (iso(since) or '?') if not never else 'no request at all'} "
                            f"({now - since:.1f} s); series: {names}."
                        ),
                        expected=names,
                        observed=f"silent for {now - since:.1f} s",
                        entry=f"conversations[{conv_key!r}].polling",
                        refs={"conversation": conv_key, "series": [st.key for st, _ in items]},
                        event_ids=ids or None,
                    )
                )
        return out


def _what(obs: Observation) -> str:
    """The operation for people: its function name, and the baseline's key when that says more."""
    if obs.function and obs.op_key and obs.op_key.lower() != obs.function.lower():
        return f"{obs.function} [{obs.op_key}]"
    return obs.function or obs.op_key or obs.op_class


def _template(event: dict) -> dict:
    return {k: v for k, v in event.items() if k.startswith(_TEMPLATE_PREFIXES)}


def _fmt(x: float) -> str:
    return str(int(x)) if float(x) == int(x) else f"{x:g}"
