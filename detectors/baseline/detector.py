"""Deviation detection against a learned baseline: each alert says what the baseline expected,
what was seen, and which baseline entry it refers to.

Deviation kinds (``rule.id``):

| rule.id | when | ATT&CK for ICS |
| --- | --- | --- |
| ``baseline-new-asset`` | an IP the baseline never saw | T0848 when it acts as a client |
| ``baseline-new-conversation`` | a client -> server/port/protocol pair never seen | T0848 (+ the operation's) |
| ``baseline-new-operation`` | a known conversation does an operation never seen (first write, PLC stop, ...); or an unknown conversation moves to a more dangerous class | by class: T0855/T0836 write, T0858 control, T0843/T0845 program, T0888 diagnostic, T0801 read |
| ``baseline-new-write-address`` / ``baseline-new-read-address`` | a known operation touches addresses never touched | T0836 (+ T0831 for coils and outputs) / T0861 |
| ``baseline-new-node`` | an OPC UA node (or item id) never touched by that operation | T0836 write, T0855 call, T0861 read |
| ``baseline-point-sweep`` | a client reads ``sweep_points`` or more points of a server that no client read while learning, however slowly (within ``sweep_window``) | T0861 |
| ``baseline-value-out-of-range`` | a written (or read) value outside the learned range, with tolerance | T0836 + T0831 write, T0831 read |
| ``baseline-polling-stopped`` / ``baseline-polling-slowed`` | a polling series silent beyond its learned period and jitter / its recent period far above it | T0803, T0804 |
| ``baseline-request-flood`` | requests per bucket far above the learned maximum | T0814 |
| ``baseline-security-downgrade`` | an OPC UA session weaker (mode or identity token) than any learned | T0830 / T0859 |
| ``baseline-cleartext-password`` | on a known conversation, a user whose password travels in clear and never did while learning | T0859 |
| ``baseline-mac-changed`` | a known IP with a MAC never seen for it | T0830 |
| ``baseline-identity-changed`` | a device identity field (vendor, firmware, ...) differs from the learned one | T0857 firmware, else T0830 |

Findings are not alerts: what the baseline learned as normal (an anonymous OPC UA session,
security mode None, a password in clear, an S7 connection without protection, an
unauthenticated Modbus write) raises nothing when it happens again; only what is new against
it does (a new client, a weaker setting, a user never seen sending a password in clear). The
insecure configuration itself is a property of the asset, recorded once per asset and kind
by the security assessment.

Absence has a scope (docs: detectors/README.md). A learned polling series is checked for
silence only once its server has been seen *answering* on the series' port and protocol in
this run (live: since the sensor started): the series itself, or any client of that service.
Its silence counts from the later of its last request and that moment. So a series seen and
then silent is reported (``no request since ...``), and so is a client that never shows up
while its server keeps answering others (loss of view, ``no request at all``); a server
absent from the input, or seen only on another protocol (a replayed file without that
protocol, a BPF filter), is never reported. Learned conversations that never appear are one
summary line (:meth:`BaselineDetector.absence_summary`) and counters in ``stats``, not
alerts.

Volume: deviations of one rule between one source and one target within ``dedup_window``
seconds of event time are one alert whose ``icsmon.alert.count`` says how many (as Sigma
alerts are); the alert is the first deviation's, released when the window ends.
"""

from __future__ import annotations

import math
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any

from detectors.alerts import Deduplicator, RuleMeta, event_identity
from detectors.baseline.features import (
    IDENTITY_FIELDS,
    MAX_VALUES_PER_EVENT,
    Observation,
    event_time,
    number_value,
    observe,
    security_rank,
)
from detectors.baseline.model import Baseline, add_range, covered, iso, uncovered

_NO_BANDS: Any = object()  # a run of points not looked up yet
_MAX_SHAPES = 4096  # runs of points whose bands are kept (a scan of addresses stays bounded)
_NO_POINTS: tuple[dict[str, list[list[int]]], set[str]] = ({}, set())

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
    "baseline-point-sweep": (
        "Sweep of points never read (at any rate)",
        "A client reads many points (registers, items, nodes) of a server that no client read "
        "while the baseline was learned, at any rate: Point & Tag Identification (T0861) is "
        "how an adversary learns what a device controls before acting on it.",
    ),
    "baseline-cleartext-password": (
        "Password in clear never seen before",
        "On a known conversation, a user whose password travels in clear and who never "
        "did so there while learning: a new credential exposed on the network or used "
        "from this client (Valid Accounts, T0859). Users who always did are a finding "
        "of the security assessment, not an alert.",
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
    """ATT&CK for ICS (v18) ids for an operation: by its class, refined by what it does.

    - write: Unauthorized Command Message (T0855: a command the baseline did not expect from
      this client) and Modify Parameter (T0836); a write to coils or outputs also drives the
      process directly: Manipulation of Control (T0831).
    - control: a stop is Change Operating Mode (T0858), Device Restart/Shutdown (T0816: the
      controller stops controlling) and Service Stop (T0881); a (re)start or memory reset is
      T0858 and T0816; alarm acknowledge/lock is Alarm Suppression (T0878); an OPC UA method
      call and any other command is T0855.
    - program: upload is Program Upload (T0845); download and block insertion Program
      Download (T0843); deleting or copying blocks is Modify Program (T0889).
    - diagnostic: Remote System Information Discovery (T0888); reading the CPU's operating
      mode (SZL 0x0424 / 0x0174) Detect Operating Mode (T0868).
    - read: Monitor Process State (T0801); browsing Point & Tag Identification (T0861).
    - session: Remote Services (T0886).
    - DNP3 cold and warm restart and the IEC 104 reset process command are T0816.
    - Modbus FC 8 sub-function 1 (restart communications) is T0816; sub-function 4 (force
      listen only) T0881 and Denial of Service (T0814).
    """
    ev = event or {}
    action = str(ev.get("event.action") or function or "").lower()
    if ev.get("modbus.function_code") == 8:
        sub = ev.get("modbus.subfunction")
        if sub == 1:
            return ["T0816"]
        if sub == 4:
            return ["T0881", "T0814"]
    if op_class == "write":
        return ["T0855", "T0836", "T0831"] if _writes_outputs(ev) else ["T0855", "T0836"]
    if op_class == "control":
        if ev.get("network.protocol") == "opcua":
            return ["T0855"]
        if "restart" in action or action == "reset-process":  # DNP3 cold/warm, IEC 104 C_RP
            return ["T0816"]
        if "stop" in action:
            return ["T0858", "T0816", "T0881"]
        operation = str(
            ev.get("s7comm.pi.operation") or ev.get("s7comm.userdata.subfunction_name") or ""
        )
        if "start" in operation or "start" in action or operation in ("memory_reset", "exit_hold"):
            return ["T0858", "T0816"]
        if "alarm" in operation:
            return ["T0878"]
        if operation == "breakpoint":
            return ["T0858"]
        return ["T0855"]
    if op_class == "program":
        operation = str(ev.get("s7comm.pi.operation") or "")
        if "upload" in action:
            return ["T0845"]
        if operation in ("delete-block", "copy-ram-to-rom", "compress-memory"):
            return ["T0889"]
        if ev.get("network.protocol") == "opcua":
            return ["T0855"]
        return ["T0843"]
    if op_class == "diagnostic":
        if ev.get("s7comm.szl.id") in (0x0424, 0x0174):
            return ["T0868"]
        return ["T0888"]
    if op_class == "read":
        return ["T0861"] if "browse" in action else ["T0801"]
    if op_class == "session":
        return ["T0886"]
    return []


def _address_techniques(direction: str, space: str) -> list[str]:
    """A new write address is a parameter changed (T0836); on coils or the S7 output image it
    drives the process directly (T0831). A new read address is a point being looked for (T0861)."""
    if direction != "write":
        return ["T0861"]
    return ["T0836", "T0831"] if space in ("coil", "q", "binary_output") else ["T0836"]


def _writes_outputs(event: dict) -> bool:
    """A write that sets outputs (Modbus coils, the S7 output image or a forced value)."""
    if event.get("modbus.function_code") in (5, 15):
        return True
    if event.get("s7comm.userdata.subfunction_name") == "force":
        return True
    items = event.get("s7comm.items")
    return isinstance(items, list) and any(
        isinstance(i, dict) and i.get("area_name") == "Q" for i in items
    )


_RECENT = 5  # intervals a series' recent period is the median of (odd: the middle one)


@dataclass(slots=True)
class _Series:
    period: float
    mad: float
    conv: str
    key: str
    last: float | None = None
    last_event_id: str | None = None
    recent: deque[float] = field(default_factory=lambda: deque(maxlen=_RECENT))
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
    sweep_points/sweep_window: that many distinct points never read from a server, read by
    one client within that many seconds, are a sweep. dedup_window: seconds of event time
    during which deviations of one rule between one source and one target are one alert
    (0: every deviation at once).
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
        sweep_points: int = 8,
        sweep_window: float = 3600.0,
        dedup_window: float = 60.0,
        max_state: int = 100_000,
    ) -> None:
        self.baseline = baseline
        self.tolerance = float(tolerance)
        # per learned point statistics (by identity): (stats, lowest, highest) normal values,
        # computed once, not per value of every event; and per run of points (server,
        # protocol, prefix, direction, start, length) the band of each of its points
        self._bands: dict[int, tuple[dict[str, Any], float, float]] = {}
        self._run_bands: dict[
            tuple[str, str, str, str, int, int],
            list[tuple[dict[str, Any], float, float] | None] | None,
        ] = {}
        self._bands_tolerance = self.tolerance
        self.stop_factor = stop_factor
        self.min_stop_gap = min_stop_gap
        self.slow_factor = slow_factor
        self.flood_factor = flood_factor
        self.flood_margin = flood_margin
        self.realert = realert
        self.check_read_values = check_read_values
        self.sweep_points = max(1, int(sweep_points))
        self.sweep_window = float(sweep_window)
        self.max_state = max_state
        # counters for --stats; suppressed = repeats of a deviation already raised
        self.stats: dict[str, int] = {"events": 0, "skipped": 0, "alerts": 0, "suppressed": 0}
        doc = baseline.doc
        self._assets: dict[str, dict] = doc["assets"]
        self._convs: dict[str, dict] = doc["conversations"]
        # learned conversations seen in this run / never seen (sensor health: absence_summary)
        self.stats.update(
            conversations_learned=len(self._convs),
            conversations_seen=0,
            conversations_unseen=len(self._convs),
        )
        self._bucket_width = float(doc["settings"].get("rate_bucket_seconds", 10.0))
        self._dedup = Deduplicator(dedup_window, max_pending=max(1, min(max_state, 10_000)))
        self._series: dict[tuple[str, str], _Series] = {}
        # (server, port, protocol) -> its learned polling series: what absence is checked on
        self._by_service: dict[tuple[str, int, str], list[_Series]] = {}
        for conv_key, conv in self._convs.items():
            for series_key, s in (conv.get("polling") or {}).items():
                if s.get("regular") and s.get("period"):
                    st = _Series(
                        float(s["period"]), float(s.get("mad") or 0.0), conv_key, series_key
                    )
                    self._series[(conv_key, series_key)] = st
                    self._by_service.setdefault(_service(conv), []).append(st)
        self._clients: dict[tuple[str, str], set[str]] = {}  # (server, protocol) -> learned clients
        for conv in self._convs.values():
            self._clients.setdefault((conv["server"], conv["protocol"]), set()).add(conv["client"])
        self._server_security: dict[str, dict[str, set[str]]] = {}
        for conv in self._convs.values():
            for kind, counts in (conv.get("security") or {}).items():
                self._server_security.setdefault(conv["server"], {}).setdefault(kind, set()).update(
                    counts
                )
        # (server, protocol) -> points any client read while learning: what a sweep is measured against
        self._known_points: dict[tuple[str, str], tuple[dict[str, list[list[int]]], set[str]]] = {}
        for conv in self._convs.values():
            ranges, nodes = self._known_points.setdefault(
                (conv["server"], conv["protocol"]), ({}, set())
            )
            for op in conv["operations"].values():
                for space, spans in ((op.get("addresses") or {}).get("read") or {}).items():
                    target = ranges.setdefault(space, [])
                    for lo, hi in spans:
                        add_range(target, lo, hi, 1 << 30)
                nodes.update((op.get("nodes") or {}).get("read") or ())
        self._nodes_learned: dict[tuple[str, str, str], frozenset[str]] = {}
        self._service_seen: dict[tuple[str, int, str], float] = {}  # answering in this run, since
        self._convs_seen: set[str] = set()  # learned conversations seen in this run
        self._last_event: dict[str, dict] = {}  # known conversation -> its latest event
        self._once: OrderedDict[tuple, None] = OrderedDict()  # deviations already raised
        self._last_alert: OrderedDict[tuple, float] = OrderedDict()  # value deviations: last raised
        self._unknown: OrderedDict[str, int] = (
            OrderedDict()
        )  # unknown conversation -> highest class rank alerted
        self._sweeps: OrderedDict[tuple[str, str, str], _Sweep] = OrderedDict()
        self._buckets: dict[str, list] = {}  # conversation -> [bucket index, count, alerted]
        self._start: float | None = None
        self._now: float | None = None
        self._next_check = -math.inf
        # events whose baseline-only checks found nothing (``_quiet_key`` -> the conversation's
        # key and entry, the server's learned identity); deviations found so far (any, even
        # repeats): an event that finds one is not kept there
        self._quiet: dict[tuple, tuple[str, dict, dict | None]] = {}
        self._deviations = 0
        # runs of values (``_check_values``' shapes) -> their latest values, all within
        # their bands: the same values again need no look at each
        self._run_clean: dict[tuple[str, str, str, str, int, int], list[Any]] = {}

    # ------------------------------------------------------------ public

    def process(self, event: dict) -> list[dict]:
        obs = observe(event)
        if obs is None:
            self.stats["skipped"] += 1
            return []
        self.stats["events"] += 1
        out: list[dict] = []
        if obs.ts >= self._dedup.next_due:
            out.extend(self._release(self._dedup.tick(obs.ts)))
        ts = obs.ts
        if self._start is None:
            self._start = ts
        if self._now is None or ts > self._now:
            self._now = ts
        if ts >= self._next_check:
            self._next_check = ts + 1.0  # the polling series, at most once per second of traffic
            out.extend(self._overdue(ts))
        if not obs.anomaly and event.get("event.outcome") in ("success", "failure"):
            service = (obs.server, obs.port, obs.protocol)
            if service in self._by_service:  # bounded by the baseline
                self._service_seen.setdefault(service, obs.ts)
        quiet = self._quiet_key(obs, event)
        if quiet is not None:
            known = self._quiet.get(quiet)
            if known is not None:  # checked before and nothing deviated: what varies only
                conv_key, learned, identity = known
                obs._conversation = conv_key
                if identity is not None:
                    self._check_identity(obs.server, identity, event, out)
                self._last_event[conv_key] = event
                self._check_timing(learned, obs, event, out)
                self._check_values(obs, event, out)
                return out
        deviations = self._deviations
        self._check_assets(obs, event, out)
        conv = self._convs.get(obs.conversation)
        if conv is None:
            self._check_unknown_conversation(obs, event, out)
            self._check_security(None, obs, event, out)
        elif not obs.anomaly:
            if obs.conversation not in self._convs_seen:
                self._convs_seen.add(obs.conversation)
                self.stats["conversations_seen"] += 1
                self.stats["conversations_unseen"] -= 1
            self._last_event[obs.conversation] = event  # fields for a later polling alert
            self._check_operation(conv, obs, event, out)
            self._check_security(conv, obs, event, out)
            self._check_timing(conv, obs, event, out)
        if not obs.anomaly:
            self._check_sweep(obs, event, out)
            self._check_values(obs, event, out)
        if quiet is not None and conv is not None and self._deviations == deviations:
            if len(self._quiet) >= _MAX_SHAPES:
                self._quiet.clear()
            server = self._assets.get(obs.server) or {}
            self._quiet[quiet] = (obs.conversation, conv, server.get("identity") or None)
        return out

    def _quiet_key(self, obs: Observation, event: dict) -> tuple | None:
        """What decides the checks that depend on the baseline alone (assets and MACs, the
        conversation, its operation, addresses and nodes, sweeps), for an event whose
        extractor worked its fields out by shape; None for any other event (checked in full).
        Events of one key that passed those checks once pass them again: they are skipped."""
        if obs.shape is None or obs.security:
            return None
        smac = event.get("source.mac")
        dmac = event.get("destination.mac")
        if not (smac is None or type(smac) is str) or not (dmac is None or type(dmac) is str):
            return None
        return (obs.shape, obs.client, obs.server, obs.port, obs.protocol, smac, dmac)

    def tick(self, now_ts: float) -> list[dict]:
        """Timing checks on a live clock (call every few seconds): polling that stopped is
        reported even when the whole network has gone quiet and no event arrives; alerts
        whose de-duplication window ended are released."""
        return self._overdue(now_ts) + self._release(self._dedup.tick(now_ts))

    def flush(self, now_ts: float | None = None) -> list[dict]:
        """End of input: timing checks at ``now_ts`` (default: the latest event time), then
        every alert still held."""
        now = now_ts if now_ts is not None else self._now
        out = self._overdue(now) if now is not None else []
        return out + self._release(self._dedup.flush())

    def changed_findings(self, final: bool = False) -> list[dict]:
        return []  # deviations are alerts; findings come from detectors/findings.py

    def absence_summary(self) -> str | None:
        """One line on the learned conversations that never appeared in this input (None when
        every one did): they are not alerted unless their server was seen answering others."""
        unseen = [k for k in self._convs if k not in self._convs_seen]
        if not unseen:
            return None
        checked = [k for k in unseen if _service(self._convs[k]) in self._service_seen]
        silent = [k for k in unseen if k not in checked]
        parts = [f"{len(unseen)} of {len(self._convs)} learned conversations never appeared"]
        if silent:
            shown = ", ".join(silent[:5]) + (
                f" (+{len(silent) - 5} more)" if len(silent) > 5 else ""
            )
            parts.append(
                f"{len(silent)} not checked for silence, their server never answered on that "
                f"service here: {shown}"
            )
        if checked:
            polled = [
                k
                for k in checked
                if any(st.conv == k for st in self._by_service[_service(self._convs[k])])
            ]
            if polled:
                parts.append(
                    f"{len(polled)} reported as stopped polling (their server answered others)"
                )
            if len(checked) > len(polled):
                parts.append(
                    f"{len(checked) - len(polled)} without a polling series (nothing to miss)"
                )
        return "baseline: " + "; ".join(parts)

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
        group: str | None = None,
    ) -> list[dict]:
        """Record a deviation; returns the alerts whose de-duplication window ended.

        ``group``: what repeats merge on (default: the event's source -> destination); ``key``
        names this deviation (the alert id when the window is 0)."""
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
        if group is None:
            group = f"{event.get('source.ip')}->{event.get('destination.ip')}"
        ts = event_time(event)
        if ts is None:
            ts = self._now or 0.0
        when = event.get("@timestamp")
        return self._release(
            self._dedup.add(
                _rule(rule_id, techniques),
                event,
                ts,
                key=group if self._dedup.window > 0 else key,
                event_ids=event_ids,
                start=when,
                extra=extra,
                keep_first=True,
            )
        )

    def _release(self, alerts: list[dict]) -> list[dict]:
        for alert in alerts:
            alert.pop("tags", None)
        self.stats["alerts"] += len(alerts)
        return alerts

    def _first(self, key: tuple) -> bool:
        """True the first time a deviation key is seen (bounded memory: oldest forgotten)."""
        self._deviations += 1
        if key in self._once:
            self.stats["suppressed"] += 1
            return False
        self._once[key] = None
        if len(self._once) > self.max_state:
            self._once.popitem(last=False)
        return True

    # ------------------------------------------------------------ checks

    def _check_assets(self, obs: Observation, event: dict, out: list[dict]) -> None:
        self._check_asset(obs.client, "client", obs, event, out)
        self._check_asset(obs.server, "server", obs, event, out)

    def _check_asset(
        self, ip: str, side: str, obs: Observation, event: dict, out: list[dict]
    ) -> None:
        asset = self._assets.get(ip)
        if asset is None:
            if not self._first(("asset", ip)):
                return
            if side == "client":
                techniques = ["T0848"]
                severity = 80 if obs.op_class in ("write", "control", "program") else 60
            else:
                techniques, severity = [], 45
            known = len(self._assets)
            out.extend(
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
                    group=ip,
                )
            )
            return
        mac = event.get("source.mac" if side == "client" else "destination.mac")
        macs = asset.get("macs") or []
        if (
            isinstance(mac, str)
            and mac
            and macs
            and mac not in macs
            and self._first(("mac", ip, mac))
        ):
            out.extend(
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
                    group=ip,
                )
            )
        if side == "server":
            identity = asset.get("identity") or {}
            if identity:
                self._check_identity(ip, identity, event, out)

    def _check_identity(self, ip: str, identity: dict, event: dict, out: list[dict]) -> None:
        """A server's device identity fields against those learned for it (``identity``)."""
        for field_name, name in IDENTITY_FIELDS:
            v = event.get(field_name)
            learned = identity.get(name)
            if v is None or v == "" or learned is None or str(learned) == str(v):
                continue
            if not self._first(("identity", ip, name, str(v))):
                continue
            out.extend(
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
                    group=f"{ip}|{name}",
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
            out.extend(
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
        out.extend(
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
            learned_ops = ", ".join(f"{k} ({o.get('class')})" for k, o in sorted(ops.items()))
            out.extend(
                self._alert(
                    "baseline-new-operation",
                    techniques,
                    severity,
                    event,
                    key=f"{key}|{obs.op_key}",
                    message=f"{obs.client} did {_what(obs)} ({obs.op_class}) on {obs.server} "
                    f"{obs.port}/{obs.protocol}; learned operations: {learned_ops or 'none'}.",
                    expected=learned_ops,
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
                    if covered(learned, lo, hi):  # the common case: no gap list built
                        continue
                    gaps = uncovered(learned, lo, hi)
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
                    out.extend(
                        self._alert(
                            rid,
                            _address_techniques(direction, space),
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
            learned_nodes = self._learned_nodes(key, obs.op_key or "", direction, op)
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
            out.extend(
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

    def _learned_nodes(
        self, conversation: str, op_key: str, direction: str, op: dict[str, Any]
    ) -> frozenset[str]:
        """The nodes an operation touched while learning, as a set made once (not per event)."""
        cache_key = (conversation, op_key, direction)
        learned = self._nodes_learned.get(cache_key)
        if learned is None:
            learned = frozenset((op.get("nodes") or {}).get(direction) or [])
            self._nodes_learned[cache_key] = learned  # bounded: the learned operations
        return learned

    def _check_security(
        self, conv: dict | None, obs: Observation, event: dict, out: list[dict]
    ) -> None:
        if not obs.security:
            return
        user = obs.security.get("cleartext_user")
        if conv is not None and user is not None:
            learned_users = set((conv.get("security") or {}).get("cleartext_user") or {})
            if user not in learned_users and self._first(("cleartext", obs.conversation, user)):
                before = ", ".join(sorted(learned_users)) or "none"
                out.extend(
                    self._alert(
                        "baseline-cleartext-password",
                        ["T0859"],
                        70,
                        event,
                        key=f"{obs.conversation}|{user}",
                        message=f"{obs.client} -> {obs.server}: user {user!r} sent its password in clear, which it never "
                        f"did on this conversation while learning (users seen in clear: {before}).",
                        expected=f"passwords in clear only from: {before}",
                        observed=user,
                        entry=f"conversations[{obs.conversation!r}].security.cleartext_user",
                        refs={"conversation": obs.conversation},
                    )
                )
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
            out.extend(
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
                    group=f"{obs.client}->{obs.server}|{kind}",
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
            eid = event.get("event.id")  # event_identity's answer for the sensor's events
            st.last_event_id = eid if type(eid) is str and eid else event_identity(event)
            if len(st.recent) == _RECENT:
                recent = sorted(st.recent)[_RECENT // 2]  # the median (an odd count)
                slow_at = max(self.slow_factor * st.period, st.period + 6 * 1.4826 * st.mad)
                if recent > slow_at and not st.slowed:
                    st.slowed = True
                    out.extend(
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
            out.extend(
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

    def _check_values(self, obs: Observation, event: dict[str, Any], out: list[dict]) -> None:
        if not obs.values and not obs.runs:
            return
        asset = self._assets.get(obs.server)
        points = (asset or {}).get("points") or {}
        if not points:
            return
        if self._bands_tolerance != self.tolerance:  # bands depend on it: work them out again
            self._bands.clear()
            self._run_bands.clear()
            self._run_clean.clear()
            self._bands_tolerance = self.tolerance
        for prefix, direction, start, raw in obs.runs:
            if direction == "read" and not self.check_read_values:
                continue
            shape = (obs.server, obs.protocol, prefix, direction, start, len(raw))
            bands = self._run_bands.get(shape, _NO_BANDS)
            if bands is _NO_BANDS:
                bands = self._bands_of_run(points, obs.protocol, prefix, direction, start, len(raw))
                if len(self._run_bands) >= _MAX_SHAPES:
                    self._run_bands.clear()
                    self._run_clean.clear()
                self._run_bands[shape] = bands
            if bands is None:
                continue  # no point of this run was learned
            if self._run_clean.get(shape) == raw:
                continue  # the values last found within their bands, again (polling)
            deviated = False
            for i in range(min(len(raw), MAX_VALUES_PER_EVENT)):
                band = bands[i]
                if band is None:
                    continue
                number = raw[i]
                if type(number) is int:  # register values, the common case
                    value = float(number)
                else:
                    parsed = number_value(number)
                    if parsed is None:
                        continue
                    value = parsed
                if band[1] <= value <= band[2]:
                    continue
                deviated = True
                self._value_deviation(
                    obs, event, f"{prefix}={start + i}", direction, value, band[0], out
                )
            if not deviated:
                self._run_clean[shape] = list(raw)
        for name, direction, value in obs.values:
            if direction == "read" and not self.check_read_values:
                continue
            point = points.get(f"{obs.protocol} {name}")
            if point is None:
                continue
            stats = point.get(direction) or (point.get("read") if direction == "write" else None)
            if stats is None:
                continue
            band = self._band(stats)
            if band[1] <= value <= band[2]:
                continue
            self._value_deviation(obs, event, name, direction, value, stats, out)

    def _band(self, stats: dict[str, Any]) -> tuple[dict[str, Any], float, float]:
        """A learned point's stats with its normal band (its range widened by the tolerance),
        worked out once per point, not per value of every event."""
        band = self._bands.get(id(stats))
        if band is None or band[0] is not stats:
            lo, hi = stats["min"], stats["max"]
            margin = self.tolerance * max(hi - lo, abs(lo), abs(hi), 1.0)
            band = self._bands[id(stats)] = (stats, lo - margin, hi + margin)
        return band

    def _bands_of_run(
        self, points: dict[str, Any], protocol: str, prefix: str, direction: str, start: int, n: int
    ) -> list[tuple[dict[str, Any], float, float] | None] | None:
        """The band of each point of a run (None where nothing was learned); None for none."""
        bands: list[tuple[dict[str, Any], float, float] | None] = []
        found = False
        for i in range(min(n, MAX_VALUES_PER_EVENT)):
            point = points.get(f"{protocol} {prefix}={start + i}")
            stats = None
            if point is not None:
                stats = point.get(direction) or (
                    point.get("read") if direction == "write" else None
                )
            if stats is None:
                bands.append(None)
            else:
                bands.append(self._band(stats))
                found = True
        return bands if found else None

    def _value_deviation(
        self,
        obs: Observation,
        event: dict[str, Any],
        name: str,
        direction: str,
        value: float,
        stats: dict[str, Any],
        out: list[dict],
    ) -> None:
        point_key = f"{obs.protocol} {name}"
        lo, hi = stats["min"], stats["max"]
        span = hi - lo
        dedup = ("value", obs.server, point_key, direction, value > hi)
        last = self._last_alert.get(dedup)
        if last is not None and obs.ts - last < self.realert:
            self.stats["suppressed"] += 1
            return
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
        out.extend(
            self._alert(
                # a setpoint outside its operating range is a parameter change that manipulates
                # the process (T0836 + T0831); a process value outside it, evidence of that
                "baseline-value-out-of-range",
                ["T0836", "T0831"] if direction == "write" else ["T0831"],
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

    def _stop_after(self, st: _Series) -> float:
        return max(
            self.stop_factor * st.period, st.period + self.min_stop_gap + 6 * 1.4826 * st.mad
        )

    def _overdue(self, now: float) -> list[dict]:
        out: list[dict] = []
        for service, series in self._by_service.items():
            seen_at = self._service_seen.get(service)
            if seen_at is None:
                continue  # the server never answered on this service here: nothing to say (scope)
            stopped: dict[str, list[tuple[_Series, float]]] = {}
            for st in series:
                if st.stopped:
                    continue
                since = st.last if st.last is not None else seen_at
                if now - since > self._stop_after(st):
                    st.stopped = True
                    stopped.setdefault(st.conv, []).append((st, since))
            # one alert per conversation: siblings already silent for several of their own
            # periods stopped with it (a client stopping stops all its series at once)
            for st in series:
                if st.stopped or st.conv not in stopped:
                    continue
                since = st.last if st.last is not None else seen_at
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
                event["@timestamp"] = now
                event["event.action"] = "polling-stopped"
                since = max(s for _, s in items)
                names = "; ".join(f"{st.key} (every {st.period:.3f} s)" for st, _ in items)
                ids = [st.last_event_id for st, _ in items if st.last_event_id]
                never = all(st.last is None for st, _ in items)
                what = (
                    "no request since " + (iso(since) or "?")
                    if not never
                    else f"no request at all while the server answered others since {iso(seen_at)}"
                )
                out.extend(
                    self._alert(
                        "baseline-polling-stopped",
                        ["T0803", "T0804"],
                        65,
                        event,
                        key=f"{conv_key}|{since:.6f}",
                        message=(
                            f"{conv['client']} stopped polling {conv['server']} {conv['port']}/{conv['protocol']}: "
                            f"{what} ({now - since:.1f} s); series: {names}."
                        ),
                        expected=names,
                        observed=f"silent for {now - since:.1f} s",
                        entry=f"conversations[{conv_key!r}].polling",
                        refs={"conversation": conv_key, "series": [st.key for st, _ in items]},
                        event_ids=ids or None,
                    )
                )
        return out

    # ------------------------------------------------------------ sweeps

    def _check_sweep(self, obs: Observation, event: dict, out: list[dict]) -> None:
        """Distinct points no client read while learning, read by one client: counted over
        ``sweep_window`` seconds whatever the rate (a slow sweep stays under every rate
        threshold), alerted once per window when they reach ``sweep_points``."""
        if obs.op_class != "read" or not (obs.addresses.get("read") or obs.nodes.get("read")):
            return
        ranges, nodes = self._known_points.get((obs.server, obs.protocol), _NO_POINTS)
        new: list[str] = []
        for space, spans in (obs.addresses.get("read") or {}).items():
            learned = ranges.get(space) or []
            for lo, hi in spans:
                if covered(learned, lo, hi):  # the common case: nothing to build
                    continue
                new.extend(
                    f"{space} {a}" if a == b else f"{space} {a}-{b}"
                    for a, b in uncovered(learned, lo, hi)
                )
        for node in obs.nodes.get("read") or ():
            if node not in nodes:
                new.append(node)
        if not new:
            return
        self._deviations += 1
        key = (obs.client, obs.server, obs.protocol)
        sweep = self._sweeps.get(key)
        if sweep is None or obs.ts - sweep.start > self.sweep_window:
            sweep = self._sweeps[key] = _Sweep(obs.ts)
            if len(self._sweeps) > self.max_state:
                self._sweeps.popitem(last=False)
        self._sweeps.move_to_end(key)
        for point in new:
            if len(sweep.points) < 4 * self.sweep_points and point not in sweep.points:
                sweep.points.append(point)
                sweep.event_ids.append(event_identity(event))
        if sweep.alerted or len(sweep.points) < self.sweep_points:
            return
        sweep.alerted = True
        span = obs.ts - sweep.start
        rate = len(sweep.points) / span * 60 if span > 0 else float(len(sweep.points))
        shown = ", ".join(sweep.points[:12]) + (" ..." if len(sweep.points) > 12 else "")
        out.extend(
            self._alert(
                "baseline-point-sweep",
                ["T0861"],
                60,
                event,
                key=f"{obs.client}|{obs.server}|{sweep.start:.6f}",
                message=f"{obs.client} read {len(sweep.points)} points of {obs.server} ({obs.protocol}) that no client "
                f"read while learning, in {span:.0f} s ({rate:.1f} a minute): {shown}.",
                expected=f"reads of the points learned for {obs.server}",
                observed=f"{len(sweep.points)} points never read: {shown}",
                entry=f"conversations[{obs.conversation!r}]",
                refs={"conversation": obs.conversation, "points": list(sweep.points)},
                event_ids=list(dict.fromkeys(sweep.event_ids)),
            )
        )


def _service(conv: dict) -> tuple[str, int, str]:
    return conv["server"], conv["port"], conv["protocol"]


@dataclass(slots=True)
class _Sweep:
    start: float
    points: list[str] = field(default_factory=list)
    event_ids: list[str] = field(default_factory=list)
    alerted: bool = False


def _what(obs: Observation) -> str:
    """The operation for people: its function name, and the baseline's key when that says more."""
    if obs.function and obs.op_key and obs.op_key.lower() != obs.function.lower():
        return f"{obs.function} [{obs.op_key}]"
    return obs.function or obs.op_key or obs.op_class


def _template(event: dict) -> dict:
    return {k: v for k, v in event.items() if k.startswith(_TEMPLATE_PREFIXES)}


def _fmt(x: float) -> str:
    return str(int(x)) if float(x) == int(x) else f"{x:g}"
