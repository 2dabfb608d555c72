"""Detection content from the province at the sensor: the indicator watchlist and Sigma rules,
one versioned package (``icsmon.content``), and the detector that matches the watchlist.

The package (JSON; the province's ``GET /api/content`` and ``icsmon response content``)::

    {"type": "icsmon.content", "version": 7, "issued_at": 1796000000.0, "province": "shandong",
     "watchlist": [{"id": "wl-...", "kind": "ipv4-addr", "value": "203.0.113.66",
                    "level": "high", "source": "campaign:cmp-..."}],
     "rules": [{"id": "<sigma rule id>", "policy": "central" | "local", "yaml": "..."}],
     "sha256": "<SHA-256 of the canonical package without this field>"}

:func:`load_package` checks the shape and the digest (a package altered on the way, or cut
short, is refused with one clear error naming the file). The signature that proves the
province made it belongs to the envelope of the sensor control channel that carries it.

:class:`WatchlistDetector` raises one alert per (watchlisted address, flow) when an event's
source or destination address is on the list (addresses and networks, IPv4 and IPv6).

:func:`install_rules` writes the package's Sigma rules into ``DIR/central/`` of a rule folder,
honouring each rule's policy when the file there was edited locally since the last install:
``central`` overwrites the local edit, ``local`` keeps it. What was installed is recorded in
``DIR/central/.installed.json`` (rule id -> SHA-256 of the text written, and the version).
"""

from __future__ import annotations

import ipaddress
import json
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from detectors.alerts import SEVERITY, RuleMeta, build_alert
from sensor.digests import sha256

PACKAGE_TYPE = "icsmon.content"
POLICIES = ("central", "local")
MAX_PACKAGE_BYTES = 32 * 1024 * 1024
MAX_ENTRIES = 1_000_000
MAX_RULES = 10_000
SEEN_FLOWS = 100_000  # (entry, flow) pairs remembered to alert once per flow
WATCHLIST_RULE_ID = "icsmon-watchlist"


class ContentError(ValueError):
    """A content package that cannot be used; the message names the file."""


def canonical(package: dict[str, Any]) -> bytes:
    """The bytes the digest (and the control channel's signature) are computed over."""
    body = {k: v for k, v in package.items() if k != "sha256"}
    return json.dumps(body, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode()


def seal(package: dict[str, Any]) -> dict[str, Any]:
    """The package with its ``sha256``."""
    return {**package, "sha256": sha256(canonical(package)).hexdigest()}


@dataclass(frozen=True, slots=True)
class Entry:
    id: str
    network: ipaddress.IPv4Network | ipaddress.IPv6Network
    value: str
    level: str
    source: str


@dataclass(slots=True)
class Package:
    version: int
    issued_at: float
    province: str
    entries: list[Entry] = field(default_factory=list)
    rules: list[dict[str, str]] = field(default_factory=list)
    sha256: str = ""


def parse_package(data: Any, source: str = "<package>") -> Package:
    if not isinstance(data, dict) or data.get("type") != PACKAGE_TYPE:
        raise ContentError(f"{source}: not an icsmon content package (type {PACKAGE_TYPE})")
    digest = data.get("sha256")
    if not isinstance(digest, str) or sha256(canonical(data)).hexdigest() != digest:
        raise ContentError(f"{source}: digest mismatch: the package was altered or cut short")
    version = data.get("version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 0:
        raise ContentError(f"{source}: 'version' must be a whole number")
    watch = data.get("watchlist") or []
    rules = data.get("rules") or []
    if not isinstance(watch, list) or len(watch) > MAX_ENTRIES:
        raise ContentError(f"{source}: 'watchlist' must be a list of at most {MAX_ENTRIES}")
    if not isinstance(rules, list) or len(rules) > MAX_RULES:
        raise ContentError(f"{source}: 'rules' must be a list of at most {MAX_RULES}")
    pkg = Package(
        version=version,
        issued_at=float(data.get("issued_at") or 0),
        province=str(data.get("province") or ""),
        sha256=digest,
    )
    for i, item in enumerate(watch):
        where = f"{source}: watchlist[{i}]"
        if not isinstance(item, dict):
            raise ContentError(f"{where}: must be a mapping")
        try:
            net = ipaddress.ip_network(str(item.get("value")), strict=False)
        except ValueError:
            raise ContentError(f"{where}: {item.get('value')!r} is not an address") from None
        level = str(item.get("level") or "high")
        if level not in SEVERITY:
            raise ContentError(f"{where}: level must be one of {', '.join(SEVERITY)}")
        pkg.entries.append(
            Entry(
                id=str(item.get("id") or net),
                network=net,
                value=str(net),
                level=level,
                source=str(item.get("source") or ""),
            )
        )
    for i, item in enumerate(rules):
        where = f"{source}: rules[{i}]"
        if (
            not isinstance(item, dict)
            or not isinstance(item.get("id"), str)
            or not isinstance(item.get("yaml"), str)
        ):
            raise ContentError(f"{where}: needs 'id' and 'yaml'")
        if item.get("policy", "central") not in POLICIES:
            raise ContentError(f"{where}: policy must be central or local")
        if not item["id"].replace("-", "").isalnum():
            raise ContentError(f"{where}: rule id {item['id']!r} must be letters, digits, '-'")
        pkg.rules.append(
            {"id": item["id"], "yaml": item["yaml"], "policy": item.get("policy", "central")}
        )
    return pkg


def load_package(path: str | Path) -> Package:
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ContentError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    if len(raw) > MAX_PACKAGE_BYTES:
        raise ContentError(f"{path}: larger than {MAX_PACKAGE_BYTES} bytes")
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ContentError(f"{path}: not JSON: {exc}") from None
    return parse_package(data, str(path))


class WatchlistDetector:
    """Alerts on events whose source or destination address is on the watchlist.

    :meth:`replace` swaps in a newer package while the sensor runs (a ``content.update`` from
    the control channel): the lookup tables are rebuilt aside and installed in one assignment,
    so an event is matched against the old list or the new one, never half of each."""

    def __init__(self, package: Package) -> None:
        self._seen: OrderedDict[tuple[str, str], None] = OrderedDict()
        self.stats: dict[str, Any] = {"matches": 0, "alerts": 0}
        self._install(package)

    def _install(self, package: Package) -> None:
        exact: dict[str, Entry] = {}
        networks: list[Entry] = []
        for e in package.entries:
            if e.network.num_addresses == 1:
                exact[str(e.network.network_address)] = e
            else:
                networks.append(e)
        self._table = (package.version, exact, networks)
        self.version = package.version
        self.sha256 = package.sha256
        self.stats["entries"] = len(package.entries)
        self.stats["content_version"] = package.version

    def replace(self, package: Package) -> None:
        """Run ``package`` from now on (the caller checked it is newer)."""
        self._install(package)

    def _lookup(self, ip: Any) -> Entry | None:
        if not ip:
            return None
        _, exact, networks = self._table
        hit = exact.get(str(ip))
        if hit is not None or not networks:
            return hit
        try:
            addr = ipaddress.ip_address(str(ip))
        except ValueError:
            return None
        return next((e for e in networks if addr in e.network), None)

    def process(self, event: dict[str, Any]) -> list[dict[str, Any]]:
        if not self.stats["entries"]:  # nothing pushed yet (a live sensor's empty list)
            return []
        out = []
        for side in ("source.ip", "destination.ip"):
            entry = self._lookup(event.get(side))
            if entry is None:
                continue
            self.stats["matches"] += 1
            flow = str(event.get("network.community_id") or event.get("source.port") or "")
            key = (entry.id, flow)
            if key in self._seen:
                continue
            self._seen[key] = None
            if len(self._seen) > SEEN_FLOWS:
                self._seen.popitem(last=False)
            rule = RuleMeta(
                id=WATCHLIST_RULE_ID,
                name=f"Traffic with a watchlisted address ({entry.value})",
                level=entry.level,
                description="An address the province put on the indicator watchlist "
                f"({entry.source or 'by hand'}) talks to this plant.",
                author="icsmon",
            )
            alert = build_alert(
                rule,
                event,
                key=f"{entry.id}|{flow}",
                extra={
                    "rule.ruleset": "watchlist",
                    "icsmon.watchlist.id": entry.id,
                    "icsmon.watchlist.value": entry.value,
                    "icsmon.watchlist.source": entry.source,
                    "icsmon.watchlist.side": side.split(".")[0],
                    "icsmon.content.version": self._table[0],
                },
            )
            self.stats["alerts"] += 1
            out.append(alert)
        return out

    def flush(self) -> list[dict[str, Any]]:
        return []

    def tick(self, now: float) -> list[dict[str, Any]]:
        return []

    def absence_summary(self) -> str | None:
        return None

    def changed_findings(self, final: bool = False) -> list[dict[str, Any]]:
        return []


class ContentUpdater:
    """The sensor's side of a content push: a package arriving in a signed control message
    (the envelope's signature proved the province sent it; the package's own digest proves it
    arrived whole) replaces the running watchlist without a restart, is written to ``path``
    (so a restart runs it too) and its version goes into the heartbeats (``on_version``).

    A package no newer than the one running is not applied (``stale``: an old push replayed
    under a new envelope, or two pushes crossing); an unusable one is refused (``invalid``);
    both are counted and answered."""

    def __init__(
        self,
        detector: WatchlistDetector,
        path: str | Path | None = None,
        on_version: Any = None,
        rules_dir: str | Path | None = None,
        live_rules: Any = None,
    ) -> None:
        """``live_rules``: the running sensor's pushed Sigma rules (``check(package)``: the
        reason the package's rules cannot run, or None; ``commit(package)``: install them and
        put them in place), so a package's rules take effect without a restart too."""
        self.detector = detector
        self.path = Path(path) if path is not None else None
        self.on_version = on_version
        self.rules_dir = Path(rules_dir) if rules_dir is not None else None
        self.live_rules = live_rules
        self.counters = {"applied": 0, "stale": 0, "invalid": 0}

    def apply(self, payload: Any) -> dict[str, Any]:
        """Act on a ``content.update`` payload (``{"package": {...}}``): what happened."""
        data = payload.get("package") if isinstance(payload, dict) else None
        try:
            package = parse_package(data, "content.update")
        except ContentError as exc:
            self.counters["invalid"] += 1
            return {"status": "invalid", "reason": str(exc), "running": self.detector.version}
        if package.version <= self.detector.version:
            self.counters["stale"] += 1
            return {
                "status": "stale",
                "reason": f"version {package.version} is not newer than "
                f"{self.detector.version}, which runs",
                "running": self.detector.version,
            }
        if self.live_rules is not None:
            # every rule must load at this sensor, or nothing of the package is applied
            reason = self.live_rules.check(package)
            if reason:
                self.counters["invalid"] += 1
                return {"status": "invalid", "reason": reason, "running": self.detector.version}
        if self.path is not None:
            tmp = self.path.with_name(self.path.name + ".tmp")
            tmp.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
            tmp.replace(self.path)
        installed = install_rules(package, self.rules_dir) if self.rules_dir else None
        if self.live_rules is not None:
            installed = self.live_rules.commit(package)
        self.detector.replace(package)
        if self.on_version is not None:
            self.on_version(package.version)
        self.counters["applied"] += 1
        out: dict[str, Any] = {
            "status": "applied",
            "running": package.version,
            "entries": len(package.entries),
            "sha256": package.sha256,
        }
        if installed is not None:
            out["rules"] = {k: len(v) for k, v in installed.items()}
        return out


def empty_package() -> Package:
    """Version 0: what a sensor runs before the province sent it anything."""
    return Package(version=0, issued_at=0.0, province="")


def install_rules(package: Package, rules_dir: str | Path) -> dict[str, list[str]]:
    """Write the package's rules into ``rules_dir/central`` under each rule's policy.
    Returns the rule ids written, kept (local edit, local policy), overridden (local edit,
    central policy) and removed (no longer in the package, not edited)."""
    folder = Path(rules_dir) / "central"
    folder.mkdir(parents=True, exist_ok=True)
    state_path = folder / ".installed.json"
    try:
        state = json.loads(state_path.read_text())
    except (OSError, ValueError):
        state = {"rules": {}}
    installed: dict[str, str] = dict(state.get("rules") or {})
    done: dict[str, list[str]] = {"written": [], "kept": [], "overridden": [], "removed": []}
    wanted = {r["id"] for r in package.rules}
    for rule in package.rules:
        path = folder / f"{rule['id']}.yml"
        text = rule["yaml"] if rule["yaml"].endswith("\n") else rule["yaml"] + "\n"
        digest = sha256(text.encode()).hexdigest()
        on_disk = path.read_text() if path.exists() else None
        edited = (
            on_disk is not None
            and rule["id"] in installed
            and sha256(on_disk.encode()).hexdigest() != installed[rule["id"]]
        )
        if edited and rule["policy"] == "local":
            done["kept"].append(rule["id"])
            continue
        if on_disk != text:
            path.write_text(text)
        installed[rule["id"]] = digest
        done["overridden" if edited else "written"].append(rule["id"])
    for rid in sorted(set(installed) - wanted):
        path = folder / f"{rid}.yml"
        if path.exists() and sha256(path.read_bytes()).hexdigest() == installed[rid]:
            path.unlink()
            done["removed"].append(rid)
        installed.pop(rid)
    state_path.write_text(
        json.dumps({"version": package.version, "rules": installed}, indent=1, sort_keys=True)
    )
    return done
