"""Asset observations: every IP seen in a transaction, its MAC, its role per protocol,
its peers, and the device identity the traffic reveals (``ics.device.*`` on events)."""

from __future__ import annotations

from sensor.events import iso_timestamp
from sensor.protocols.base import DEVICE_FIELDS

MAX_PEERS = 256  # a server polled by thousands of hosts is still one bounded record


class _Asset:
    __slots__ = ("ip", "mac", "roles", "protocols", "peers", "identity", "first", "last", "dirty")

    def __init__(self, ip: str, ts: float) -> None:
        self.ip = ip
        self.mac: str | None = None
        self.roles: set[str] = set()
        self.protocols: set[str] = set()
        self.peers: set[str] = set()
        self.identity: dict[str, object] = {}
        self.first = ts
        self.last = ts
        self.dirty = True


class AssetTracker:
    """Folds events into per-host records; ``changed()`` returns the records to (re)write."""

    def __init__(self, site: str = "", max_assets: int = 100_000) -> None:
        self.site = site
        self.max_assets = max_assets
        self._assets: dict[str, _Asset] = {}
        self.dropped = 0

    def __len__(self) -> int:
        return len(self._assets)

    def _get(self, ip: str, ts: float) -> _Asset | None:
        a = self._assets.get(ip)
        if a is None:
            if len(self._assets) >= self.max_assets:
                self.dropped += 1
                return None
            a = self._assets[ip] = _Asset(ip, ts)
        return a

    def observe(self, event: dict, ts: float) -> None:
        proto = event.get("network.protocol")
        cip = event.get("source.ip")
        sip = event.get("destination.ip")
        if not proto or not cip or not sip or event.get("event.action") == "anomaly":
            return
        client = self._get(cip, ts)
        server = self._get(sip, ts)
        for asset, role, mac, peer in (
            (client, f"{proto}-client", event.get("source.mac"), sip),
            (server, f"{proto}-server", event.get("destination.mac"), cip),
        ):
            if asset is None:
                continue
            if ts > asset.last:
                asset.last = ts
                asset.dirty = True
            if ts < asset.first:
                asset.first = ts
                asset.dirty = True
            if role not in asset.roles:
                asset.roles.add(role)
                asset.protocols.add(proto)
                asset.dirty = True
            if mac and mac != asset.mac:
                asset.mac = mac
                asset.dirty = True
            if peer not in asset.peers and len(asset.peers) < MAX_PEERS:
                asset.peers.add(peer)
                asset.dirty = True
        if server is not None:
            identity = server.identity
            for key in DEVICE_FIELDS:
                value = event.get(key)
                if value is not None and value != "" and identity.get(key) != value:
                    identity[key] = value
                    server.dirty = True

    def changed(self) -> list[dict]:
        """Documents of the assets that changed since the last call."""
        out = []
        for a in self._assets.values():
            if a.dirty:
                a.dirty = False
                out.append(self.document(a))
        return out

    def document(self, a: _Asset) -> dict:
        doc: dict = {
            "asset.id": f"{self.site}:{a.ip}" if self.site else a.ip,
            "host.ip": a.ip,
            "asset.roles": sorted(a.roles),
            "asset.protocols": sorted(a.protocols),
            "asset.peers": sorted(a.peers),
            "asset.first_seen": iso_timestamp(a.first),
            "asset.last_seen": iso_timestamp(a.last),
            "@timestamp": iso_timestamp(a.last),
            "event.kind": "asset",
        }
        if a.mac:
            doc["host.mac"] = a.mac
        if self.site:
            doc["labels.site"] = self.site
        doc.update(sorted(a.identity.items()))
        return doc
