"""Asset observations: every IP seen in a transaction, its MAC, its role per protocol,
its peers, the device identity the traffic reveals (``ics.device.*`` on events) and the
protocol addresses it uses (a DNP3 outstation's link address, an IEC 104 station's common
addresses: the dissectors' ``ASSET_SOURCES``)."""

from __future__ import annotations

from sensor.schema import asset_sources, device_fields

DEVICE_FIELDS = device_fields()  # the identity fields the dissectors fill
# network.protocol -> (event field, "client" | "server", asset field) of the protocol addresses
ADDRESS_SOURCES = asset_sources()
MAX_ADDRESSES = 64  # protocol addresses kept per asset and field

MAX_PEERS = 256  # a server polled by thousands of hosts is still one bounded record


class _Asset:
    __slots__ = (
        "ip",
        "mac",
        "roles",
        "protocols",
        "peers",
        "identity",
        "addresses",
        "first",
        "last",
        "dirty",
    )

    def __init__(self, ip: str, ts: float, role: str, proto: str, mac: str | None, peer: str):
        # born from its first observation (what _update would make of an empty record)
        self.ip = ip
        self.mac: str | None = mac or None
        self.roles: set[str] = {role}
        self.protocols: set[str] = {proto}
        self.peers: set[str] = {peer}
        self.identity: dict[str, object] = {}
        self.addresses: dict[str, set[int]] = {}
        self.first = ts
        self.last = ts
        self.dirty = True


class AssetTracker:
    """Folds events into per-host records; ``changed()`` returns the records to (re)write."""

    def __init__(self, site: str = "", max_assets: int = 100_000) -> None:
        self.site = site
        self.max_assets = max_assets
        self._assets: dict[str, _Asset] = {}
        self._roles: dict[str, tuple[str, str]] = {}  # protocol -> its two role names
        self.dropped = 0

    def __len__(self) -> int:
        return len(self._assets)

    def _add(self, ip: str, ts: float, role: str, proto: str, mac, peer: str) -> _Asset | None:
        if len(self._assets) >= self.max_assets:
            self.dropped += 1
            return None
        a = self._assets[ip] = _Asset(ip, ts, role, proto, mac, peer)
        return a

    def observe(self, event: dict, ts: float) -> None:
        get = event.get
        proto = get("network.protocol")
        cip = get("source.ip")
        sip = get("destination.ip")
        if not proto or not cip or not sip or get("event.action") == "anomaly":
            return
        roles = self._roles.get(proto)
        if roles is None:
            roles = self._roles[proto] = (f"{proto}-client", f"{proto}-server")
        assets = self._assets
        client = assets.get(cip)
        if client is None:
            self._add(cip, ts, roles[0], proto, get("source.mac"), sip)
        else:
            self._update(client, ts, roles[0], proto, get("source.mac"), sip)
        server = assets.get(sip)
        if server is None:
            server = self._add(sip, ts, roles[1], proto, get("destination.mac"), cip)
        else:
            self._update(server, ts, roles[1], proto, get("destination.mac"), cip)
        sources = ADDRESS_SOURCES.get(proto)
        if sources is not None and not get(proto + ".broadcast"):
            answered = get("event.outcome") == "success"
            for field, side, target in sources:
                if side == "server" and not answered:
                    continue  # asked for, not answered: a scan names addresses nobody has
                value = get(field)
                asset = server if side == "server" else assets.get(cip)
                if asset is not None and isinstance(value, int) and not isinstance(value, bool):
                    known = asset.addresses.setdefault(target, set())
                    if value not in known and len(known) < MAX_ADDRESSES:
                        known.add(value)
                        asset.dirty = True
        if server is not None:
            # the event's identity fields (few events have any); a dict view against the set
            # looks up the identity names in the event instead of iterating its 30 keys
            keys = event.keys()
            if not keys.isdisjoint(DEVICE_FIELDS):
                identity = server.identity
                for key in keys & DEVICE_FIELDS:
                    value = event[key]
                    if value is not None and value != "" and identity.get(key) != value:
                        identity[key] = value
                        server.dirty = True

    @staticmethod
    def _update(asset: _Asset, ts: float, role: str, proto: str, mac, peer: str) -> None:
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
        peers = asset.peers
        if peer not in peers and len(peers) < MAX_PEERS:
            peers.add(peer)
            asset.dirty = True

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
            "asset.first_seen": a.first,
            "asset.last_seen": a.last,
            "@timestamp": a.last,
            "event.kind": "asset",
        }
        if a.mac:
            doc["host.mac"] = a.mac
        if self.site:
            doc["labels.site"] = self.site
        for field, values in sorted(a.addresses.items()):
            doc[field] = sorted(values)
        doc.update(sorted(a.identity.items()))
        return doc
