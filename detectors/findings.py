"""Findings: durable observations about an asset, made at the sensor from its events.

An alert says something happened; a finding says how a device *is*: an OPC UA server that
offers SecurityMode None, an S7 CPU without a protection level, a Modbus controller written
by two masters. One finding per (site, asset, kind), whatever the number of sessions that
showed it; it carries the first and last time it was seen and the ids of some of the events
that showed it (the first five and the latest five). Made here, at the edge, so a plant
without the centre still has them; the centre merges them by ``finding.id`` and keeps their
lifecycle (open, resolved when no longer observed, accepted by a user: see ``assessment/``).

Kinds (``finding.kind``) and what shows them:

| kind | evidence |
| --- | --- |
| ``opcua-security-mode-none`` | a GetEndpoints / CreateSession answer lists an endpoint with mode None, or a session is created on a channel without security |
| ``opcua-deprecated-security-policy`` | an endpoint or an opened channel uses Basic128Rsa15 or Basic256 |
| ``opcua-anonymous-session`` | an ActivateSession with an anonymous identity token is accepted |
| ``opcua-password-in-clear`` | an ActivateSession carries a user name token whose password is not encrypted |
| ``opcua-self-signed-certificate`` | the server's certificate is signed by its own key |
| ``opcua-expired-certificate`` | the server's certificate is expired (or not yet valid) when it is shown |
| ``s7-no-protection-level`` | the CPU's protection record (SZL 0x0132 / 0x0232 index 4) says level 1 or no password assigned |
| ``s7-plc-stop-without-password`` | a PLC stop is accepted on a connection that gave no session password |
| ``s7-program-transfer-without-password`` | a block upload / download is accepted on a connection that gave no password |
| ``modbus-multiple-masters`` | a controller's writes are accepted from more than one client |
| ``modbus-write-from-unlearned-master`` | a controller accepts a write from a client that is not a learned (baseline) or declared master |
| ``engineering-access-outside-segment`` | an engineering protocol (S7comm, S7comm-plus) is answered for a client outside the site's declared control / engineering segments |
| ``firmware-observed`` | the traffic shows the device's firmware version (informational: the input to advisory matching) |

The site configuration (``--site-config``, the YAML that also holds the Sigma placeholders)
may declare segments::

    segments:
      control: [10.10.0.0/24]       # where controllers and their HMIs live
      engineering: [10.10.9.0/28]   # engineering workstations allowed to program them

Without ``segments`` the outside-segment finding is off (nothing to compare against).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from sensor.digests import blake2b
from sensor.timestamps import format_timestamp, parse_timestamp

REFRESH_S = 300.0  # a finding seen again is re-sent at most this often (last_seen moves on)
MAX_FINDINGS = 50_000  # per sensor: beyond it new findings are counted, not kept
MAX_EVIDENCE = 5  # first and latest event ids kept per finding
MAX_WRITERS = 64  # clients remembered per Modbus controller
MAX_PASSWORD_FLOWS = 4096  # S7 connections remembered as having given a password

NONE_POLICY = "http://opcfoundation.org/UA/SecurityPolicy#None"
DEPRECATED_POLICIES = ("Basic128Rsa15", "Basic256")  # deprecated by OPC UA 1.04 (SHA-1)
ENGINEERING_PROTOCOLS: Final = ("s7comm", "s7comm-plus")
# what ``FindingTracker.process`` answers for every event: findings raise no alerts
_NO_ALERTS: Final[list[dict]] = []
S7_TRANSFERS = frozenset(
    ("start-upload", "upload", "request-download", "download-block", "download-ended")
)

# kind -> (severity 0-100, category, English title)
KINDS: dict[str, tuple[int, str, str]] = {
    "opcua-security-mode-none": (60, "configuration", "OPC UA endpoint without security"),
    "opcua-deprecated-security-policy": (
        50,
        "configuration",
        "OPC UA deprecated security policy (Basic128Rsa15 / Basic256)",
    ),
    "opcua-anonymous-session": (60, "authentication", "OPC UA anonymous session accepted"),
    "opcua-password-in-clear": (80, "authentication", "OPC UA password sent without encryption"),
    "opcua-self-signed-certificate": (30, "certificate", "OPC UA server certificate self-signed"),
    "opcua-expired-certificate": (50, "certificate", "OPC UA server certificate expired"),
    "s7-no-protection-level": (60, "configuration", "S7 CPU without protection level"),
    "s7-plc-stop-without-password": (70, "authentication", "S7 PLC stop accepted without password"),
    "s7-program-transfer-without-password": (
        70,
        "authentication",
        "S7 program transfer accepted without password",
    ),
    "modbus-multiple-masters": (
        50,
        "communication",
        "Modbus controller written by several masters",
    ),
    "modbus-write-from-unlearned-master": (
        70,
        "communication",
        "Modbus controller written by an unlearned master",
    ),
    "engineering-access-outside-segment": (
        70,
        "exposure",
        "Engineering protocol reachable from outside the control segment",
    ),
    "firmware-observed": (0, "inventory", "Firmware version seen"),
}


class SiteConfigError(ValueError):
    pass


@dataclass
class Segments:
    """Declared network segments of a site (CIDRs)."""

    control: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = field(default_factory=list)
    engineering: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.control or self.engineering)

    def inside(self, ip: str) -> bool:
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            return False
        return any(addr in net for net in (*self.control, *self.engineering))

    def describe(self) -> list[str]:
        return [str(n) for n in (*self.control, *self.engineering)]


def read_segments(path: Path | None) -> Segments:
    """The ``segments:`` of a site configuration YAML (empty without a file or the key)."""
    if path is None:
        return Segments()
    import yaml  # here: a sensor without a site configuration starts without PyYAML

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise SiteConfigError(f"{path}: cannot read site configuration: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise SiteConfigError(f"{path}: not valid YAML: {exc}") from exc
    raw = (data or {}).get("segments") if isinstance(data, dict) else None
    if raw is None:
        return Segments()
    if not isinstance(raw, dict):
        raise SiteConfigError(f"{path}: 'segments' must map control/engineering to CIDR lists")
    out = Segments()
    for name, items in raw.items():
        if name not in ("control", "engineering"):
            raise SiteConfigError(f"{path}: unknown segment {name!r} (control, engineering)")
        if isinstance(items, str):
            items = [items]
        if not isinstance(items, list):
            raise SiteConfigError(f"{path}: segment {name!r} must be a list of CIDRs")
        for item in items:
            try:
                getattr(out, name).append(ipaddress.ip_network(str(item), strict=False))
            except ValueError:
                raise SiteConfigError(f"{path}: segment {name!r}: {item!r} is not a CIDR") from None
    return out


def finding_id(site: str, asset_id: str, kind: str) -> str:
    return blake2b(f"{site}|{asset_id}|{kind}".encode(), digest_size=10).hexdigest()


class _Finding:
    # first / last: the event's own time text, or None for a time given as a number (its text
    # is made when a document is: a finding seen on every write would format it each time)
    def __init__(self, kind: str, ip: str, ts: float, stamp: str | None) -> None:
        self.kind = kind
        self.ip = ip
        self.first = stamp
        self.last = stamp
        self.ts_first = ts
        self.ts_last = ts
        self.evidence: list[str] = []
        self.details: dict[str, Any] = {}
        self.summary = ""
        self.sent_ts = -1.0
        self.dirty = True


def _ts(event: Mapping[str, Any]) -> float:
    """Seconds since the epoch of an event's ``@timestamp`` (a number, or text from a file)."""
    return parse_timestamp(event.get("@timestamp")) or 0.0


def _stamp(event: Mapping[str, Any], ts: float) -> str:
    value = event.get("@timestamp")
    if isinstance(value, str):
        return value
    return format_timestamp(ts)


def _text(event: Mapping[str, Any]) -> str | None:
    """The event's time as text when it came as text (None: ``_shown`` formats it later)."""
    value = event.get("@timestamp")
    return value if isinstance(value, str) else None


def _shown(stamp: str | None, ts: float) -> str:
    return stamp if stamp is not None else format_timestamp(ts)


class FindingTracker:
    """A detector part: folds events into findings; ``changed_findings()`` gives the
    documents to (re)write. It raises no alerts (``process`` returns nothing)."""

    def __init__(
        self,
        site: str = "",
        organization: str = "",
        observer: str = "",
        segments: Segments | None = None,
        masters: Iterable[str] = (),
        refresh_s: float = REFRESH_S,
        max_findings: int = MAX_FINDINGS,
    ) -> None:
        self.site = site
        self.organization = organization
        self.observer = observer
        self.segments = segments or Segments()
        self.masters = frozenset(masters)  # learned or declared Modbus masters ("" : none known)
        self.refresh_s = refresh_s
        self.max_findings = max_findings
        self._findings: dict[tuple[str, str], _Finding] = {}
        self._writers: dict[str, set[str]] = {}
        self._password_flows: dict[str, None] = {}
        self.stats = {"findings": 0, "dropped": 0}

    # -- the detector interface --------------------------------------------------------------

    def process(self, event: dict) -> list[dict]:
        """Findings raise no alerts: the answer is always the one shared empty list (the
        caller reads it, never adds to it), not a new one per event."""
        proto = event.get("network.protocol")
        if proto is None or event.get("event.action") == "anomaly":
            return _NO_ALERTS
        if self.site == "" and event.get("labels.site"):
            self.site = event["labels.site"]
        if not self.organization and event.get("organization.id"):
            self.organization = event["organization.id"]
        if proto == "opcua":
            self._opcua(event)
        elif proto == "s7comm":
            self._s7(event)
        elif proto == "modbus":
            self._modbus(event)
        if proto in ENGINEERING_PROTOCOLS and self.segments:
            self._segment(event)
        if event.get("ics.device.firmware"):
            self._firmware(event)
        return _NO_ALERTS

    def flush(self) -> list[dict]:
        return []

    def tick(self, now: float) -> list[dict]:
        return []  # findings raise no alerts

    def absence_summary(self) -> str | None:
        return None

    def changed_findings(self, final: bool = False) -> list[dict]:
        """Documents of the findings that are new, changed, or seen again for ``refresh_s``
        since they were last sent (every one seen since, with ``final``)."""
        out = []
        for f in self._findings.values():
            due = f.ts_last - f.sent_ts >= self.refresh_s or (final and f.ts_last > f.sent_ts)
            if f.dirty or due:
                f.dirty = False
                f.sent_ts = f.ts_last
                out.append(self.document(f))
        return out

    # -- the rules ----------------------------------------------------------------------------

    def _opcua(self, e: dict) -> None:
        server = e.get("destination.ip")
        if not server:
            return
        service = e.get("opcua.service")
        ok = e.get("event.outcome") == "success"
        modes = e.get("opcua.security_modes") or ()
        policies = e.get("opcua.security_policy_uris") or ()
        channel = e.get("opcua.security_policy_uri")
        if "None" in modes or (service == "CreateSession" and ok and channel == NONE_POLICY):
            where = "an endpoint offers" if "None" in modes else "a session runs on a channel with"
            self._see(
                "opcua-security-mode-none",
                server,
                e,
                f"{where} SecurityMode None",
                {"opcua.security_modes": list(modes)}
                if modes
                else {"opcua.security_policy": "None"},
            )
        old = sorted(
            {
                name
                for uri in (*policies, channel or "")
                if (name := uri.rsplit("#", 1)[-1]) in DEPRECATED_POLICIES
            }
        )
        if old and (policies or ok or e.get("opcua.message_type") == "OPN"):
            self._see(
                "opcua-deprecated-security-policy",
                server,
                e,
                "deprecated security policy " + ", ".join(old),
                {"opcua.deprecated_policies": old},
            )
        if service == "ActivateSession":
            token = e.get("opcua.identity_token")
            if token == "anonymous" and ok:
                self._see("opcua-anonymous-session", server, e, "anonymous session accepted")
            if token == "username" and e.get("opcua.password_encrypted") is False:
                user = e.get("opcua.user_name")
                self._see(
                    "opcua-password-in-clear",
                    server,
                    e,
                    f"password of user {user!r} sent without encryption",
                    {"opcua.user_names": [user] if user else []},
                )
        if "opcua.server_certificate.sha1" in e:
            cert = {
                "opcua.server_certificate." + k: e.get("opcua.server_certificate." + k)
                for k in ("sha1", "subject", "issuer", "not_before", "not_after")
            }
            if e.get("opcua.server_certificate.self_signed") is True:
                self._see(
                    "opcua-self-signed-certificate",
                    server,
                    e,
                    f"self-signed certificate {cert['opcua.server_certificate.subject']}",
                    cert,
                )
            not_after = e.get("opcua.server_certificate.not_after")
            not_before = e.get("opcua.server_certificate.not_before")
            stamp = _stamp(e, _ts(e))[:19]
            if not_after and not_before and (not_after[:19] < stamp or not_before[:19] > stamp):
                state = "expired" if not_after[:19] < stamp else "not yet valid"
                self._see(
                    "opcua-expired-certificate",
                    server,
                    e,
                    f"certificate {state}: valid {not_before} to {not_after}",
                    cert,
                )

    def _s7(self, e: dict) -> None:
        server = e.get("destination.ip")
        if not server:
            return
        action = e.get("event.action")
        ok = e.get("event.outcome") == "success"
        flow = e.get("network.community_id") or f"{e.get('source.ip')}>{server}"
        if action == "plc-password" and ok:
            self._password_flows[flow] = None
            if len(self._password_flows) > MAX_PASSWORD_FLOWS:
                self._password_flows.pop(next(iter(self._password_flows)))
            return
        level = e.get("s7comm.protection.level")
        if level is not None:
            assigned = e.get("s7comm.protection.assigned_level")
            if level == 1 or assigned == 0:
                self._see(
                    "s7-no-protection-level",
                    server,
                    e,
                    f"protection level {level}, assigned level {assigned}"
                    + (" (no password)" if assigned == 0 else ""),
                    {
                        "s7comm.protection.level": level,
                        "s7comm.protection.assigned_level": assigned,
                        "s7comm.protection.mode_switch": e.get("s7comm.protection.mode_switch"),
                    },
                )
        if not ok or flow in self._password_flows:
            return
        client = e.get("source.ip")
        if action == "plc-stop":
            self._see(
                "s7-plc-stop-without-password",
                server,
                e,
                f"PLC stop from {client} accepted without a password",
                {"source.ips": [client]},
            )
        elif action in S7_TRANSFERS and e.get("s7comm.initiator") != "server":
            self._see(
                "s7-program-transfer-without-password",
                server,
                e,
                f"{action} from {client} accepted without a password",
                {"source.ips": [client], "s7comm.transfers": [action]},
            )

    def _modbus(self, e: dict) -> None:
        if e.get("ics.operation") != "write" or e.get("event.outcome") != "success":
            return
        server, client = e.get("destination.ip"), e.get("source.ip")
        if not server or not client:
            return
        writers = self._writers.setdefault(server, set())
        if client not in writers and len(writers) < MAX_WRITERS:
            writers.add(client)
        if len(writers) > 1:
            self._see(
                "modbus-multiple-masters",
                server,
                e,
                f"written by {len(writers)} masters: {', '.join(sorted(writers))}",
                {"modbus.masters": sorted(writers)},
            )
        if self.masters and client not in self.masters:
            self._see(
                "modbus-write-from-unlearned-master",
                server,
                e,
                f"write from {client}, not a learned master",
                {"source.ips": [client]},
            )

    def _segment(self, e: dict) -> None:
        if e.get("ics.pairing") == "request-only" or e.get("event.outcome") == "unknown":
            return  # reachable means answered
        client, server = e.get("source.ip"), e.get("destination.ip")
        if not client or not server or self.segments.inside(client):
            return
        proto = e.get("network.protocol")
        self._see(
            "engineering-access-outside-segment",
            server,
            e,
            f"{proto} answered for {client}, outside {', '.join(self.segments.describe())}",
            {"source.ips": [client], "network.protocols": [proto]},
        )

    def _firmware(self, e: dict) -> None:
        server = e.get("destination.ip")
        if not server:
            return
        device = {
            k: e[k]
            for k in (
                "ics.device.vendor",
                "ics.device.product",
                "ics.device.model",
                "ics.device.order_number",
                "ics.device.firmware",
            )
            if e.get(k)
        }
        parts: list[str] = []
        for k in ("ics.device.vendor", "ics.device.product", "ics.device.model"):
            if k in device and str(device[k]) not in parts:
                parts.append(str(device[k]))
        name = " ".join(parts)
        self._see(
            "firmware-observed",
            server,
            e,
            f"{name or 'device'} firmware {device['ics.device.firmware']}".strip(),
            device,
        )

    # -- bookkeeping --------------------------------------------------------------------------

    def _see(
        self,
        kind: str,
        ip: str,
        event: dict,
        summary: str,
        details: dict | None = None,
    ) -> None:
        key = (kind, ip)
        ts = _ts(event)
        f = self._findings.get(key)
        if f is None:
            if len(self._findings) >= self.max_findings:
                self.stats["dropped"] += 1
                return
            f = self._findings[key] = _Finding(kind, ip, ts, _text(event))
            self.stats["findings"] += 1
        elif ts < f.ts_first:
            f.ts_first, f.first, f.dirty = ts, _text(event), True
        if ts >= f.ts_last:
            f.ts_last, f.last = ts, _text(event)
        eid = event.get("event.id")
        if eid and eid not in f.evidence:
            if len(f.evidence) >= 2 * MAX_EVIDENCE:
                del f.evidence[MAX_EVIDENCE]  # keep the first five, roll the latest five
            f.evidence.append(eid)
        if details:
            new = dict(f.details)
            for k, v in details.items():
                old = new.get(k)
                if isinstance(v, list) and isinstance(old, list):
                    v = (old + [x for x in v if x not in old])[:MAX_WRITERS]
                new[k] = v
            if new != f.details:
                f.details = new
                f.dirty = True
                f.summary = summary
        if not f.summary:
            f.summary = summary

    def document(self, f: _Finding) -> dict:
        asset_id = f"{self.site}:{f.ip}" if self.site else f.ip
        severity, category, title = KINDS[f.kind]
        first = _shown(f.first, f.ts_first)
        last = _shown(f.last, f.ts_last)
        doc: dict[str, Any] = {
            "@timestamp": last,
            "event.kind": "state",
            "event.dataset": "icsmon.finding",
            "finding.id": finding_id(self.site, asset_id, f.kind),
            "finding.kind": f.kind,
            "finding.category": category,
            "finding.title": title,
            "finding.severity": severity,
            "finding.summary": f.summary,
            "finding.first_seen": first,
            "finding.last_seen": last,
            "finding.state": "open",
            "finding.evidence.event_ids": list(f.evidence),
            "asset.id": asset_id,
            "host.ip": f.ip,
        }
        if self.site:
            doc["labels.site"] = self.site
        if self.organization:
            doc["organization.id"] = self.organization
        if self.observer:
            doc["observer.name"] = self.observer
        doc.update(sorted(f.details.items()))
        return doc
