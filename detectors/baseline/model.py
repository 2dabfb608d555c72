"""The baseline document: what "normal" is for one plant, as reviewable JSON.

Layout (``version`` 1; every entry keeps the counts and times behind it)::

    {"format": "icsmon-baseline", "version": 1,
     "window": {"start", "end", "events", "sources": [...]},
     "settings": {...the learner's knobs...},
     "truncated": {...entries dropped by memory caps...},
     "assets": {ip: {"first_seen", "last_seen", "events", "macs", "roles", "protocols",
                     "peers", "identity": {...}, "points": {point: {"read"|"write": stats}}}},
     "conversations": {"client -> server port/protocol": {
          "client", "server", "port", "protocol", "first_seen", "last_seen", "events",
          "operations": {op_key: {"class", "function", "count", "first_seen", "last_seen",
                                  "outcomes": {...}, "addresses": {dir: {space: [[lo, hi]...]}},
                                  "nodes": {dir: [...]}}},
          "polling": {series: {"requests", "intervals", "period", "mad", "min", "max",
                               "regular", "histogram": {bin: n}}},
          "rate": {"bucket_seconds", "buckets", "median", "max", "histogram": {count: n}},
          "security": {"security_mode": {value: n}, "identity_token": {value: n},
                       "cleartext_user": {user name: n}, ...},
          "attributes": {"s7comm.cotp.connection_type_name": {value: n}, ...}}}}

Values are in a point's stats: ``{"count", "min", "max", "values": [...] | null}`` (the
distinct values while there are at most ``max_value_set`` of them). Polling intervals are
kept as a log-scale histogram (bin ``b`` stands for ``1.005 ** b`` seconds: 0.5% wide), so
period (median) and jitter (MAD) come from bounded state and two baselines merge exactly.
``accepted`` lists the alerts accepted into the baseline. Empty entries are left out. Times
are ISO 8601 UTC. The file is written with sorted keys and rounded floats: same input,
byte-identical file; an analyst may edit it (``Baseline.load`` checks what it relies on).
"""

from __future__ import annotations

import bisect
import copy
import json
import math
import os
import re
from pathlib import Path
from typing import Any

from sensor.timestamps import format_timestamp, parse_timestamp

FORMAT = "icsmon-baseline"
VERSION = 1
HIST_RATIO = 1.005  # interval histogram bins are 0.5% wide (log scale)
_LOG_RATIO = math.log(HIST_RATIO)
RATE_BUCKET = 10.0  # seconds per request-rate bucket


class BaselineError(ValueError):
    """A baseline file that cannot be used; the message names the file and what is wrong."""


# ---------------------------------------------------------------- small helpers


def iso(ts: float | None) -> str | None:
    """A time as the documents write it (the sensor's one renderer), None for None."""
    return None if ts is None else format_timestamp(ts)


def parse_iso(text: Any) -> float | None:
    return parse_timestamp(text) if isinstance(text, str) else None


def rnd(x: float) -> float | int:
    """Floats rounded for a stable file; integral values written as ints."""
    r = round(x, 6)
    return int(r) if r == int(r) and abs(r) < 2**53 else r


def add_range(ranges: list[list[int]], lo: int, hi: int, cap: int) -> bool:
    """Insert [lo, hi] into sorted, merged, inclusive ranges; past ``cap``, the two closest
    neighbours merge (coarser but bounded). Returns True when something new was covered."""
    i = bisect.bisect_left(ranges, [lo, hi])
    # merge with predecessor if touching/overlapping
    if i > 0 and ranges[i - 1][1] + 1 >= lo:
        i -= 1
    if i < len(ranges) and ranges[i][0] <= lo and ranges[i][1] >= hi:
        return False
    j = i
    new_lo, new_hi = lo, hi
    while j < len(ranges) and ranges[j][0] <= new_hi + 1:
        new_lo = min(new_lo, ranges[j][0])
        new_hi = max(new_hi, ranges[j][1])
        j += 1
    ranges[i:j] = [[new_lo, new_hi]]
    while len(ranges) > cap:
        gaps = [(ranges[k + 1][0] - ranges[k][1], k) for k in range(len(ranges) - 1)]
        _, k = min(gaps)
        ranges[k : k + 2] = [[ranges[k][0], ranges[k + 1][1]]]
    return True


def uncovered(ranges: list[list[int]], lo: int, hi: int) -> list[tuple[int, int]]:
    """The parts of [lo, hi] no learned range covers."""
    out: list[tuple[int, int]] = []
    cur = lo
    for rlo, rhi in ranges:
        if rhi < cur:
            continue
        if rlo > hi:
            break
        if rlo > cur:
            out.append((cur, min(hi, rlo - 1)))
        cur = max(cur, rhi + 1)
        if cur > hi:
            break
    if cur <= hi:
        out.append((cur, hi))
    return out


def covered(ranges: list[list[int]], lo: int, hi: int) -> bool:
    """True when ``uncovered(ranges, lo, hi)`` is empty, found without building it (the
    same walk: learned ranges from a file need not be merged)."""
    if lo > hi:
        return True
    cur = lo
    for rlo, rhi in ranges:
        if rhi < cur:
            continue
        if rlo > cur:
            return False  # a gap before this range (or, past hi, at the end)
        cur = max(cur, rhi + 1)
        if cur > hi:
            return True
    return False


def add_sorted(items: list, value: Any, cap: int) -> bool:
    i = bisect.bisect_left(items, value)
    if i < len(items) and items[i] == value:
        return False
    if len(items) >= cap:
        return False
    items.insert(i, value)
    return True


def hist_bin(seconds: float) -> int:
    return round(math.log(max(seconds, 1e-6)) / _LOG_RATIO)


def bin_value(b: int) -> float:
    return HIST_RATIO**b


def hist_quantile(hist: dict, q: float) -> float | None:
    """The q-quantile of a {bin: count} histogram (bins as ints or their JSON strings)."""
    items = sorted((int(k), v) for k, v in hist.items())
    total = sum(v for _, v in items)
    if not total:
        return None
    target = q * total
    acc = 0
    for b, v in items:
        acc += v
        if acc >= target:
            return bin_value(b)
    return bin_value(items[-1][0])


def hist_mad(hist: dict, center: float) -> float:
    """Median absolute deviation of a histogram around ``center`` (bin centres stand for values)."""
    devs: dict[float, int] = {}
    for k, v in hist.items():
        d = abs(bin_value(int(k)) - center)
        devs[d] = devs.get(d, 0) + v
    total = sum(devs.values())
    acc = 0
    for d in sorted(devs):
        acc += devs[d]
        if acc >= total / 2:
            return d
    return 0.0


def count_median(hist: dict) -> float | None:
    items = sorted((int(k), v) for k, v in hist.items())
    total = sum(v for _, v in items)
    if not total:
        return None
    acc = 0
    for value, v in items:
        acc += v
        if acc >= total / 2:
            return float(value)
    return float(items[-1][0])


# ---------------------------------------------------------------- derived statistics


def finalize_series(series: dict, settings: dict) -> None:
    """Period and jitter from the interval histogram; "regular" marks a polling series."""
    hist = series.get("histogram") or {}
    n = sum(hist.values())
    series["intervals"] = n
    if not n:
        for key in ("period", "mad", "min", "max"):
            series.pop(key, None)
        series["regular"] = False
        return
    period = hist_quantile(hist, 0.5) or 0.0
    mad = hist_mad(hist, period)
    bins = sorted(int(k) for k in hist)
    series["period"] = rnd(period)
    series["mad"] = rnd(mad)
    series["min"] = rnd(bin_value(bins[0]))
    series["max"] = rnd(bin_value(bins[-1]))
    series["regular"] = bool(
        n >= settings["min_poll_intervals"]
        and period <= settings["max_poll_period"]
        and mad <= settings["max_poll_jitter"] * period
    )


def finalize_rate(rate: dict) -> None:
    hist = rate.get("histogram") or {}
    rate["buckets"] = sum(hist.values())
    med = count_median(hist)
    rate["median"] = rnd(med) if med is not None else None
    rate["max"] = max((int(k) for k in hist), default=None)


DEFAULT_SETTINGS: dict[str, Any] = {
    "min_poll_intervals": 6,  # intervals before a series counts as polling
    "max_poll_period": 3600.0,  # seconds; slower than this is not "polling"
    # MAD / period above which a series is irregular. Pollers keep their period to a few per
    # cent; operator actions at random times (gaps within +-40%) have a MAD near 20% of their
    # median and must not count as polling (their absence is no evidence of anything).
    "max_poll_jitter": 0.05,
    "rate_bucket_seconds": RATE_BUCKET,
    "max_value_set": 16,  # distinct values listed per point
}


# ---------------------------------------------------------------- the document


def empty_document(settings: dict | None = None) -> dict:
    return {
        "format": FORMAT,
        "version": VERSION,
        "window": {"start": None, "end": None, "events": 0, "sources": []},
        "settings": dict(settings or DEFAULT_SETTINGS),
        "truncated": {},
        "assets": {},
        "conversations": {},
    }


def _fail(path: str, what: str) -> BaselineError:
    return BaselineError(f"{path}: not a usable icsmon baseline: {what}")


def validate(doc: Any, path: str) -> None:
    """Structure checks strong enough that the detector never meets a surprise type."""
    if not isinstance(doc, dict):
        raise _fail(path, "the top level is not a JSON object")
    if doc.get("format") != FORMAT:
        raise _fail(path, f"'format' is {doc.get('format')!r}, expected {FORMAT!r}")
    if doc.get("version") != VERSION:
        raise _fail(
            path, f"version {doc.get('version')!r} is not supported (this icsmon reads {VERSION})"
        )
    for key, kind in (
        ("window", dict),
        ("settings", dict),
        ("assets", dict),
        ("conversations", dict),
    ):
        if not isinstance(doc.get(key), kind):
            raise _fail(path, f"'{key}' is missing or not an object")
    settings = doc["settings"]
    for key, default in DEFAULT_SETTINGS.items():
        value = settings.setdefault(key, default)
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise _fail(path, f"settings.{key} is not a number")
    for ip, asset in doc["assets"].items():
        if not isinstance(asset, dict):
            raise _fail(path, f"assets[{ip!r}] is not an object")
        if not isinstance(asset.get("macs") or [], list) or not isinstance(
            asset.get("identity") or {}, dict
        ):
            raise _fail(path, f"assets[{ip!r}] needs a list of macs and an identity object")
        points = asset.get("points", {})
        if not isinstance(points, dict):
            raise _fail(path, f"assets[{ip!r}].points is not an object")
        for name, point in points.items():
            if not isinstance(point, dict):
                raise _fail(path, f"assets[{ip!r}].points[{name!r}] is not an object")
            for direction, stats in point.items():
                if not (
                    isinstance(stats, dict) and _num(stats.get("min")) and _num(stats.get("max"))
                ):
                    raise _fail(
                        path,
                        f"assets[{ip!r}].points[{name!r}].{direction} needs numeric min and max",
                    )
    for key, conv in doc["conversations"].items():
        where = f"conversations[{key!r}]"
        if not isinstance(conv, dict):
            raise _fail(path, f"{where} is not an object")
        field_types: tuple[tuple[str, type], ...] = (
            ("client", str),
            ("server", str),
            ("port", int),
            ("protocol", str),
            ("operations", dict),
        )
        for field_name, field_type in field_types:
            if not isinstance(conv.get(field_name), field_type):
                raise _fail(path, f"{where}.{field_name} is missing or has the wrong type")
        for op_key, op in conv["operations"].items():
            if not isinstance(op, dict) or not isinstance(op.get("class", ""), str):
                raise _fail(path, f"{where}.operations[{op_key!r}] is not an operation entry")
            for direction, spaces in (op.get("addresses") or {}).items():
                if not isinstance(spaces, dict) or not all(
                    isinstance(r, list) and all(_range(x) for x in r) for r in spaces.values()
                ):
                    raise _fail(
                        path,
                        f"{where}.operations[{op_key!r}].addresses.{direction} needs [[lo, hi], ...] lists",
                    )
        for series_key, series in (conv.get("polling") or {}).items():
            if not isinstance(series, dict) or (
                series.get("regular")
                and not (_num(series.get("period")) and _num(series.get("mad")))
            ):
                raise _fail(path, f"{where}.polling[{series_key!r}] needs numeric period and mad")
            nodes = op.get("nodes") or {}
            if not isinstance(nodes, dict) or not all(
                isinstance(n, list) and all(isinstance(x, str) for x in n) for n in nodes.values()
            ):
                raise _fail(path, f"{where}.operations[{op_key!r}].nodes needs lists of item ids")
        rate = conv.get("rate")
        if rate is not None and (
            not isinstance(rate, dict) or not (rate.get("max") is None or _num(rate["max"]))
        ):
            raise _fail(path, f"{where}.rate needs a numeric max")
        for section in ("security", "attributes"):
            counts = conv.get(section) or {}
            if not isinstance(counts, dict) or not all(
                isinstance(v, dict) for v in counts.values()
            ):
                raise _fail(path, f"{where}.{section} needs {{name: {{value: count}}}}")


def _num(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


def _range(x: Any) -> bool:
    return (
        isinstance(x, list)
        and len(x) == 2
        and isinstance(x[0], int)
        and isinstance(x[1], int)
        and x[0] <= x[1]
    )


# An innermost list of scalars spread over lines by the indenter (no bracket or brace inside;
# JSON strings hold no raw newline, so a match never starts or ends inside a string).
_SCALAR_LIST = re.compile(r"\[\n\s*([^\[\]{}]*?)\n\s*\]")
_ITEM_BREAK = re.compile(r",\n\s*")


def dumps(doc: dict) -> str:
    """Sorted keys, one entry per line, short lists ([lo, hi] ranges, value sets) on one line."""
    text = json.dumps(doc, indent=1, sort_keys=True, ensure_ascii=False, allow_nan=False)
    text = _SCALAR_LIST.sub(lambda m: "[" + _ITEM_BREAK.sub(", ", m.group(1)) + "]", text)
    return text + "\n"


def prune(doc: dict) -> None:
    """Leave out empty entries: smaller, faster to load, easier to read."""
    for conv in doc["conversations"].values():
        for op in conv["operations"].values():
            for key in ("outcomes", "nodes", "addresses", "function"):
                if not op.get(key) and key in op:
                    del op[key]
        polling = conv.get("polling") or {}
        for key in [k for k, series in polling.items() if not series.get("intervals")]:
            del polling[key]  # a single request has no period to learn
    for asset in doc["assets"].values():
        for key in ("macs", "identity", "points"):
            if not asset.get(key) and key in asset:
                del asset[key]


class Baseline:
    """A learned baseline: the JSON document plus the queries the detector and rules need."""

    def __init__(self, doc: dict | None = None) -> None:
        self.doc = doc if doc is not None else empty_document()
        self.path: str | None = None

    # -- files

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Baseline:
        name = str(path)
        try:
            with open(path, "rb") as fh:
                data = fh.read()
        except FileNotFoundError:
            raise BaselineError(f"{name}: baseline file not found") from None
        except OSError as exc:
            raise BaselineError(
                f"{name}: cannot read the baseline file: {exc.strerror or exc}"
            ) from None
        try:  # the standard parser: exact integers of any size (orjson turns big ones into floats)
            doc = json.loads(data.decode("utf-8"))
        except UnicodeDecodeError:
            raise BaselineError(f"{name}: not UTF-8 text") from None
        except json.JSONDecodeError as exc:
            raise BaselineError(
                f"{name}: not valid JSON (line {exc.lineno}, column {exc.colno}): {exc.msg}"
            ) from None
        validate(doc, name)
        baseline = cls(doc)
        baseline.path = name
        return baseline

    def save(self, path: str | os.PathLike[str]) -> None:
        text = dumps(self.doc)
        target = Path(path)
        tmp = target.with_name(target.name + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, target)  # never leave a half-written baseline behind
        self.path = str(path)

    def to_json(self) -> str:
        return dumps(self.doc)

    # -- views

    @property
    def assets(self) -> dict[str, dict]:
        return self.doc["assets"]

    @property
    def conversations(self) -> dict[str, dict]:
        return self.doc["conversations"]

    @property
    def window(self) -> dict:
        return self.doc["window"]

    def placeholders(self) -> dict[str, list[str]]:
        """Sigma placeholder values learned from traffic (``%modbus_masters%`` ...).

        Roles follow what hosts did while learning: a client that changed a program or the
        operating mode, opened an S7 PG (programming device) connection or used a vendor
        engineering function is an engineering station; any other client that read, wrote or
        ran diagnostics is an HMI host. Per protocol, every client and server is listed.
        """
        clients: dict[str, set[str]] = {}
        servers: dict[str, set[str]] = {}
        engineering: set[str] = set()
        operators: set[str] = set()
        writers: dict[str, set[str]] = {}
        anonymous: set[str] = set()  # OPC UA clients seen with an anonymous identity token
        insecure: set[str] = set()  # OPC UA clients seen on a channel without security
        cleartext: set[str] = set()  # OPC UA clients seen sending a password in clear
        for conv in self.conversations.values():
            proto = conv["protocol"].replace("-", "_")
            client = conv["client"]
            clients.setdefault(proto, set()).add(client)
            servers.setdefault(proto, set()).add(conv["server"])
            ops = conv["operations"].values()
            classes = {op.get("class") for op in ops}
            functions = {str(op.get("function") or "") for op in ops}
            connection_types = set(
                (conv.get("attributes") or {}).get("s7comm.cotp.connection_type_name") or {}
            )
            if (
                classes & {"program", "control"}
                or "pg" in connection_types
                or any(
                    f.startswith("user_defined") or f in ("unity_umas", "invoke") for f in functions
                )
            ):
                engineering.add(client)
            if classes & {"read", "write", "diagnostic"}:
                operators.add(client)
            if "write" in classes:
                writers.setdefault(proto, set()).add(client)
            security = conv.get("security") or {}
            if "anonymous" in (security.get("identity_token") or {}):
                anonymous.add(client)
            if "None" in (security.get("security_mode") or {}):
                insecure.add(client)
            if security.get("cleartext_user"):
                cleartext.add(client)
        out: dict[str, set[str]] = {}
        for proto, ips in clients.items():
            out[f"{proto}_clients"] = ips
        for proto, ips in servers.items():
            out[f"{proto}_servers"] = ips
        for proto, ips in writers.items():
            out[f"{proto}_writers"] = ips
        s7_clients = clients.get("s7comm", set()) | clients.get("s7comm_plus", set())
        s7_servers = servers.get("s7comm", set()) | servers.get("s7comm_plus", set())
        out["modbus_masters"] = clients.get("modbus", set())
        out["modbus_slaves"] = servers.get("modbus", set())
        out["opcua_clients"] = clients.get("opcua", set())
        out["dnp3_masters"] = clients.get("dnp3", set())
        out["iec104_masters"] = clients.get("iec104", set())
        out["opcua_anonymous_clients"] = anonymous
        out["opcua_insecure_clients"] = insecure
        out["opcua_cleartext_password_clients"] = cleartext
        out["s7_clients"] = s7_clients
        out["s7_servers"] = s7_servers
        out["plcs"] = servers.get("modbus", set()) | s7_servers | servers.get("enip", set())
        out["engineering_stations"] = engineering
        out["hmi_hosts"] = operators - engineering
        out["known_clients"] = set().union(*clients.values())
        out["known_servers"] = set().union(*servers.values())
        out["known_hosts"] = set(self.assets)
        return {k: sorted(v, key=_ip_sort_key) for k, v in sorted(out.items())}

    def asset_documents(self, site: str = "") -> list[dict[str, Any]]:
        """The learned assets as inventory documents (docs/schema.md "Asset"), for the store."""
        docs = []
        for ip, a in sorted(self.assets.items(), key=lambda item: _ip_sort_key(item[0])):
            doc: dict[str, Any] = {
                "asset.id": f"{site}:{ip}" if site else ip,
                "host.ip": ip,
                "asset.roles": list(a.get("roles") or []),
                "asset.protocols": list(a.get("protocols") or []),
                "asset.peers": list(a.get("peers") or []),
                "asset.first_seen": a.get("first_seen"),
                "asset.last_seen": a.get("last_seen"),
                "@timestamp": a.get("last_seen"),
                "event.kind": "asset",
            }
            if a.get("macs"):
                doc["host.mac"] = a["macs"][-1]
            if site:
                doc["labels.site"] = site
            for name, value in sorted((a.get("identity") or {}).items()):
                doc[f"ics.device.{name}"] = value
            docs.append(doc)
        return docs

    # -- merging

    def merge(self, other: Baseline) -> Baseline:
        """A new baseline that accepts what either accepts (union of entries, summed counts)."""
        doc = copy.deepcopy(self.doc)
        merge_documents(doc, other.doc)
        return Baseline(doc)

    def summary(self) -> dict[str, Any]:
        convs = self.conversations.values()
        return {
            "window": {k: self.window.get(k) for k in ("start", "end", "events")},
            "sources": list(self.window.get("sources") or []),
            "assets": len(self.assets),
            "conversations": len(self.conversations),
            "operations": sum(len(c["operations"]) for c in convs),
            "polling_series": sum(
                1 for c in convs for s in (c.get("polling") or {}).values() if s.get("regular")
            ),
            "points": sum(len(a.get("points") or {}) for a in self.assets.values()),
            "truncated": dict(self.doc.get("truncated") or {}),
        }


def _ip_sort_key(ip: str) -> tuple:
    import ipaddress

    try:
        addr = ipaddress.ip_address(ip)
        return (addr.version, int(addr), "")
    except ValueError:
        return (9, 0, ip)


# ---------------------------------------------------------------- merge


def _min_iso(a: str | None, b: str | None) -> str | None:
    return b if a is None else a if b is None else min(a, b)


def _max_iso(a: str | None, b: str | None) -> str | None:
    return b if a is None else a if b is None else max(a, b)


def _sum_hist(a: dict, b: dict) -> dict:
    out = dict(a)
    for k, v in b.items():
        out[k] = out.get(k, 0) + v
    return out


def merge_stats(a: dict, b: dict, cap: int) -> dict:
    out = {
        "count": a.get("count", 0) + b.get("count", 0),
        "min": min(a["min"], b["min"]),
        "max": max(a["max"], b["max"]),
    }
    if a.get("values") is not None and b.get("values") is not None:
        values = sorted(set(a["values"]) | set(b["values"]))
        out["values"] = values if len(values) <= cap else None
    else:
        out["values"] = None
    return out


def merge_documents(doc: dict, other: dict) -> None:
    cap_values = int(doc["settings"].get("max_value_set", 16))
    w, ow = doc["window"], other["window"]
    w["start"] = _min_iso(w.get("start"), ow.get("start"))
    w["end"] = _max_iso(w.get("end"), ow.get("end"))
    w["events"] = int(w.get("events") or 0) + int(ow.get("events") or 0)
    w["sources"] = sorted(set(w.get("sources") or []) | set(ow.get("sources") or []))
    for k, v in (other.get("truncated") or {}).items():
        doc.setdefault("truncated", {})[k] = doc["truncated"].get(k, 0) + v
    for ip, oa in other["assets"].items():
        a = doc["assets"].get(ip)
        if a is None:
            doc["assets"][ip] = copy.deepcopy(oa)
            continue
        a["first_seen"] = _min_iso(a.get("first_seen"), oa.get("first_seen"))
        a["last_seen"] = _max_iso(a.get("last_seen"), oa.get("last_seen"))
        a["events"] = a.get("events", 0) + oa.get("events", 0)
        for key in ("macs", "roles", "protocols", "peers"):
            a[key] = sorted(set(a.get(key) or []) | set(oa.get(key) or []))
        ident = a.setdefault("identity", {})
        for k, v in (oa.get("identity") or {}).items():
            ident.setdefault(k, v)
        points = a.setdefault("points", {})
        for name, op in (oa.get("points") or {}).items():
            p = points.setdefault(name, {})
            for direction, stats in op.items():
                p[direction] = (
                    merge_stats(p[direction], stats, cap_values) if direction in p else dict(stats)
                )
    settings = doc["settings"]
    for key, oc in other["conversations"].items():
        c = doc["conversations"].get(key)
        if c is None:
            doc["conversations"][key] = copy.deepcopy(oc)
            continue
        c["first_seen"] = _min_iso(c.get("first_seen"), oc.get("first_seen"))
        c["last_seen"] = _max_iso(c.get("last_seen"), oc.get("last_seen"))
        c["events"] = c.get("events", 0) + oc.get("events", 0)
        for op_key, oop in oc["operations"].items():
            op = c["operations"].get(op_key)
            if op is None:
                c["operations"][op_key] = copy.deepcopy(oop)
                continue
            op["count"] = op.get("count", 0) + oop.get("count", 0)
            op["first_seen"] = _min_iso(op.get("first_seen"), oop.get("first_seen"))
            op["last_seen"] = _max_iso(op.get("last_seen"), oop.get("last_seen"))
            op["outcomes"] = _sum_hist(op.get("outcomes") or {}, oop.get("outcomes") or {})
            for direction, spaces in (oop.get("addresses") or {}).items():
                mine = op.setdefault("addresses", {}).setdefault(direction, {})
                for space, ranges in spaces.items():
                    target = mine.setdefault(space, [])
                    for lo, hi in ranges:
                        add_range(target, lo, hi, 1 << 30)
            for direction, nodes in (oop.get("nodes") or {}).items():
                op.setdefault("nodes", {})[direction] = sorted(
                    set(op.get("nodes", {}).get(direction, [])) | set(nodes)
                )
        for series_key, os_ in (oc.get("polling") or {}).items():
            s = c.setdefault("polling", {}).get(series_key)
            if s is None:
                c["polling"][series_key] = copy.deepcopy(os_)
                continue
            s["requests"] = s.get("requests", 0) + os_.get("requests", 0)
            s["histogram"] = _sum_hist(s.get("histogram") or {}, os_.get("histogram") or {})
            finalize_series(s, settings)
        if oc.get("rate"):
            r = c.setdefault(
                "rate", {"bucket_seconds": settings["rate_bucket_seconds"], "histogram": {}}
            )
            r["histogram"] = _sum_hist(r.get("histogram") or {}, oc["rate"].get("histogram") or {})
            finalize_rate(r)
        for section in ("security", "attributes"):
            for kind, counts in (oc.get(section) or {}).items():
                mine = c.setdefault(section, {}).setdefault(kind, {})
                for value, n in counts.items():
                    mine[value] = mine.get(value, 0) + n
