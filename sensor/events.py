"""Turning dissector records into ECS events (see docs/schema.md)."""

from __future__ import annotations

import time
from typing import Final

from sensor.digests import blake2b

ECS_VERSION = "8.17.0"
_CATEGORY = ["network"]


class _Second:
    """The formatted date and time of the last second seen: events cluster in time."""

    __slots__ = ("sec", "prefix")

    def __init__(self) -> None:
        self.sec = -1
        self.prefix = ""


_second = _Second()
_END_OF_TIME = 253402300800.0  # 10000-01-01T00:00:00Z
_LAST_TIME = _END_OF_TIME - 1.0  # 9999-12-31T23:59:59Z (a microsecond less is the same float)
# "000" ... "999": the microseconds as two table reads and one string built from four parts
# (58 ns a time with the call, against 80 for a str() of the number, a slice and two
# concatenations)
_DIGITS3 = tuple(f"{n:03d}" for n in range(1000))


def iso_timestamp(ts: float) -> str:
    """Capture time as ISO 8601 UTC with microseconds. A time ISO text cannot say (before
    1970, from year 10000 on, NaN: a crafted pcapng timestamp, a hostile document) is clamped
    to the nearest end, never an exception."""
    if not 0.0 <= ts < _END_OF_TIME:
        ts = _LAST_TIME if ts >= _END_OF_TIME else 0.0
    sec = int(ts)
    cache = _second
    if cache.sec != sec:
        cache.sec = sec
        cache.prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec)) + "."
    # modulo a million: the answer str(1000000 + us)[1:] gave, should the product ever round
    # up to a whole second
    us = int((ts - sec) * 1e6) % 1_000_000
    return f"{cache.prefix}{_DIGITS3[us // 1000]}{_DIGITS3[us % 1000]}Z"


# keys that are never field names (those are dotted words): they stand in a dict a moment
_PADS: Final = tuple(f"\0pad{i}" for i in range(64))


def with_room(d: dict, size: int) -> dict:
    """A copy of ``d`` (same keys, order and values) made key by key, its hash table grown now
    as ``size`` keys would grow it (pad keys put in and popped again; popping keeps a table's
    size). ``dict.copy`` clones the table, so each copy of the answer takes more keys before
    it grows: CPython 3.11 moves a dict of up to 21 keys padded to 22 to 64 slots, and its
    copies then take 20 more keys (one of up to 10 padded to 11: 32 slots, 10 more).

    Key by key, because a dict of only str keys made that way has CPython's str-keys table
    (faster lookups, smaller entries), which copies and updates keep; a dict display of more
    than five items in compiled code (mypyc: ``_PyDict_NewPresized``), and ``dict()`` or
    ``copy()`` of one, has the general table, slower for every lookup in every event.
    """
    out: dict = {}
    for key, value in d.items():
        out[key] = value
    pads = _PADS[len(out) : size]
    for key in pads:
        out[key] = None
    for _ in pads:
        out.popitem()  # the last key put in: popping keeps the table's size, not its room
    return out


_mac_cache: dict[bytes, str] = {}  # a network has few MACs; every flow asks for two


def mac_str(mac: bytes | None) -> str | None:
    if not mac or len(mac) != 6 or mac == b"\0\0\0\0\0\0":
        return None
    text = _mac_cache.get(mac)
    if text is None:
        if len(_mac_cache) >= 4096:
            _mac_cache.clear()
        text = _mac_cache[mac] = mac.hex("-").upper()  # ECS: upper-case with dashes
    return text


def flow_uid(site: str, observer: str, community_id: str, first_ts: float, cport: int) -> str:
    """Stable id of one connection seen by one sensor: same capture, same ids."""
    # the time formatted apart: mypyc makes an f-string holding a format spec into a
    # str.format call per field (1.5 us a flow; 0.85 this way, the same text)
    start = format(first_ts, ".6f")
    raw = f"{site}|{observer}|{community_id}|{start}|{cport}".encode()
    return blake2b(raw, digest_size=10).hexdigest()


def dataset(protocol: str) -> str:
    return "ics." + protocol.replace("-", "_")


class Context:
    """What every event of this sensor carries: observer, site, organisation."""

    def __init__(self, site: str = "", observer: str = "", organization: str = "") -> None:
        import _socket as socket  # what socket re-exports: socket builds enums at import, ~1.7 ms

        self.site = site
        self.observer = observer or socket.gethostname()
        self.organization = organization
        common: dict[str, object] = {
            "ecs.version": ECS_VERSION,
            "event.kind": "event",
            "event.category": _CATEGORY,
            "observer.name": self.observer,
            "observer.type": "sensor",
            "observer.product": "icsmon",
        }
        if site:
            common["labels.site"] = site
        if organization:
            common["organization.id"] = organization
        self.common = common

    def anomaly_event(self, ts: float, error_type: str, message: str, n: int) -> dict:
        """An anomaly outside any flow (capture and packet decoding)."""
        ev: dict[str, object] = dict(self.common)
        ev.update(
            {
                "@timestamp": ts,
                "event.action": "anomaly",
                "event.type": ["protocol", "error"],
                "event.outcome": "failure",
                "event.dataset": "ics.capture",
                "event.id": blake2b(
                    f"{self.site}|{self.observer}|{ts!r}|{error_type}|{n}".encode(), digest_size=10
                ).hexdigest(),
                "error.type": error_type,
                "error.message": message,
                "ics.operation": "other",
            }
        )
        return ev
