"""``icsmon alerts`` and ``icsmon assets``: query the embedded store or Elasticsearch.

Wiring only: options -> ``AlertFilter``/``AssetFilter`` -> a ``QueryBackend`` -> a rich table
or nested ECS JSON lines. The back end is picked in one place, :func:`open_backend`.
"""

from __future__ import annotations

import enum
import os
import re
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from detectors.alerts import SEVERITY
from icsmon.common import ExitCode, StoreOpt, fail, table_time
from pipeline.query import AlertFilter, AssetFilter, QueryBackend
from sensor.timestamps import parse_timestamp

# event.severity (0-100) of each Sigma level, as the detectors set it: "--severity high"
# means at least the high value, and a value is labelled with the highest level it reaches.
SEVERITY_FLOOR = {"informational": 0, **{k: v for k, v in SEVERITY.items() if k != "informational"}}
_LEVEL_STYLE = {
    "critical": "bold white on red",
    "high": "bold red",
    "medium": "yellow",
    "low": "green",
    "informational": "dim",
}
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_RELATIVE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$", re.IGNORECASE)


class QueryFormat(enum.StrEnum):
    table = "table"
    jsonl = "jsonl"


class QueryError(Exception):
    """A back end cannot be opened or queried; the message is one line. ``code``: USAGE when
    what the user named is wrong (config, URL, store file), FAILED when a service failed."""

    def __init__(self, message: str, code: ExitCode = ExitCode.USAGE) -> None:
        super().__init__(message)
        self.code = code


# ---- option parsing -----------------------------------------------------------------------


def parse_time(text: str, now: float | None = None) -> float:
    """``1h``, ``30m``, ``7d``, ``2w`` (that long ago) or an ISO date/time (UTC unless it says
    otherwise: ``2026-11-01``, ``2026-11-01T08:00``, ``2026-11-01T08:00:00+08:00``) -> epoch s."""
    match = _RELATIVE.match(text)
    if match:
        now = time.time() if now is None else now
        return now - float(match.group(1)) * _UNITS[match.group(2).lower()]
    ts = parse_timestamp(text)
    if ts is None:
        raise typer.BadParameter(
            f"{text!r} is not a time: use 90s, 30m, 1h, 7d, 2w, or a date such as "
            "2026-11-01 or 2026-11-01T08:00 (UTC unless an offset is given)"
        ) from None
    return ts


def time_range(since: str | None, until: str | None) -> tuple[float | None, float | None]:
    """``--since``/``--until`` -> epoch seconds (None where not given); an empty range fails."""
    start = parse_time(since) if since else None
    end = parse_time(until) if until else None
    if start is not None and end is not None and end <= start:
        raise fail("--until must be later than --since")
    return start, end


def parse_severity(text: str) -> int:
    """A number 0-100 or a level name -> the lowest ``event.severity`` to show."""
    key = text.strip().lower()
    if key in SEVERITY_FLOOR:
        return SEVERITY_FLOOR[key]
    try:
        value = int(key)
    except ValueError:
        value = -1
    if not 0 <= value <= 100:
        raise typer.BadParameter(
            f"{text!r} is not a severity: use 0-100 or one of {', '.join(SEVERITY_FLOOR)}"
        )
    return value


def severity_label(value: Any) -> tuple[str, str]:
    """(level name, rich style) for an event.severity value."""
    try:
        number = int(value)
    except (TypeError, ValueError):
        return "", ""
    for name, floor in sorted(SEVERITY_FLOOR.items(), key=lambda kv: -kv[1]):
        if number >= floor:
            return name, _LEVEL_STYLE[name]
    return "informational", _LEVEL_STYLE["informational"]


# ---- back end -----------------------------------------------------------------------------


def open_backend(
    store: Path | None = None, es_url: str | None = None, config: Path | None = None
) -> QueryBackend:
    """The one place the query back end is chosen: Elasticsearch when ``--es URL`` or
    ``--config FILE`` is given (credentials and index prefix come from the pipeline config:
    that file, ``$ICSMON_CONFIG``, ``ICSMON_ES_*``), else the embedded store, opened read-only
    (a query never creates a store)."""
    if es_url or config:
        from pipeline.config import ConfigError, load_config

        overrides = {"elasticsearch": {"url": es_url}} if es_url else None
        try:
            cfg = load_config(config, overrides=overrides)
        except ConfigError as exc:
            raise QueryError(str(exc)) from None
        try:
            from pipeline.es import EsQueryBackend

            return EsQueryBackend(cfg)
        except Exception as exc:  # a bad URL or client option, said in one line
            raise QueryError(
                f"{cfg.elasticsearch.url}: cannot query Elasticsearch: {exc}"
            ) from None
    from pipeline.store import Store, StoreError

    try:
        return Store.open(store, readonly=True)
    except StoreError as exc:
        raise QueryError(str(exc)) from None


def _run_query(backend: QueryBackend, call: Any) -> Any:
    """Run one query and close the back end; any back end's failure becomes one line."""
    from pipeline.store import StoreError

    try:
        return call()
    except StoreError as exc:
        raise QueryError(str(exc)) from None
    except Exception as exc:
        if type(exc).__module__.split(".")[0] not in ("elasticsearch", "elastic_transport"):
            raise
        cfg = getattr(getattr(backend, "store", None), "cfg", None)
        where = cfg.elasticsearch.url if cfg is not None else "Elasticsearch"
        raise QueryError(
            f"{where}: {type(exc).__name__}: {_first_line(exc)}", ExitCode.FAILED
        ) from None
    finally:
        backend.close()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# ---- output -------------------------------------------------------------------------------


def _console() -> Console:
    # Piped into grep/less, a table still wants its full width rather than rich's default 80.
    wide = not sys.stdout.isatty() and "COLUMNS" not in os.environ
    return Console(soft_wrap=False, width=200 if wide else None, highlight=False)


def _endpoint(doc: dict, side: str) -> str:
    ip = doc.get(f"{side}.ip") or "?"
    port = doc.get(f"{side}.port")
    if port in (None, ""):
        return str(ip)
    return f"[{ip}]:{port}" if ":" in str(ip) else f"{ip}:{port}"


def _joined(value: Any, limit: int = 6) -> str:
    if value is None:
        return ""
    if not isinstance(value, list | tuple):
        return str(value)
    items = [str(v) for v in value]
    more = f" +{len(items) - limit}" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


def _cells(*values: str | Text) -> list[Text]:
    # Values come from the wire (device names, rule text): never read as rich markup.
    return [v if isinstance(v, Text) else Text(v) for v in values]


def _write_jsonl(kind: str, docs: list[dict]) -> None:
    from pipeline.jsonl import JsonlSink

    sink = JsonlSink(sys.stdout, kinds=(kind,))
    for doc in docs:
        sink.write(kind, doc)
    sink.close()


def alerts_table(total: int, alerts: list[dict], offset: int) -> Table:
    table = Table(header_style="bold", caption_justify="left")
    for name in ("time", "severity", "rule", "technique", "source -> destination", "protocol"):
        table.add_column(name, overflow="fold")
    table.add_column("site")
    for doc in alerts:
        level, style = severity_label(doc.get("event.severity"))
        sev = doc.get("event.severity")
        rule = str(doc.get("rule.name") or doc.get("rule.id") or "")
        count = doc.get("icsmon.alert.count")
        if isinstance(count, int) and count > 1:
            rule += f" (x{count})"
        table.add_row(
            *_cells(
                table_time(doc.get("@timestamp")),
                Text(f"{sev} {level}".strip() if sev is not None else "", style=style),
                rule,
                _joined(doc.get("threat.technique.id")),
                f"{_endpoint(doc, 'source')} -> {_endpoint(doc, 'destination')}",
                str(doc.get("network.protocol") or ""),
                str(doc.get("labels.site") or ""),
            )
        )
    shown = f"{offset + 1}-{offset + len(alerts)}" if alerts else "0"
    table.caption = f"{shown} of {total} alerts, newest first"
    return table


def assets_table(total: int, assets: list[dict], offset: int) -> Table:
    table = Table(header_style="bold", caption_justify="left")
    for name in ("ip", "site", "roles", "protocols", "addresses", "device", "firmware", "peers"):
        table.add_column(name, overflow="fold")
    table.add_column("first seen")
    table.add_column("last seen")
    for doc in assets:
        device = " ".join(
            str(doc[key])
            for key in ("ics.device.vendor", "ics.device.product", "ics.device.model")
            if doc.get(key)
        )
        peers = doc.get("asset.peers") or []
        # the protocol addresses a station uses: a DNP3 link address, IEC 104 common addresses
        addresses = " ".join(
            f"{label} {_joined(doc.get(key))}"
            for key, label in (
                ("asset.dnp3.link_addresses", "dnp3"),
                ("asset.iec104.common_addresses", "iec104 ca"),
            )
            if doc.get(key)
        )
        table.add_row(
            *_cells(
                str(doc.get("host.ip") or doc.get("asset.id") or ""),
                str(doc.get("labels.site") or ""),
                _joined(doc.get("asset.roles")),
                _joined(doc.get("asset.protocols")),
                addresses,
                device,
                str(doc.get("ics.device.firmware") or ""),
                str(len(peers) if isinstance(peers, list) else 1),
                table_time(doc.get("asset.first_seen")),
                table_time(doc.get("asset.last_seen")),
            )
        )
    shown = f"{offset + 1}-{offset + len(assets)}" if assets else "0"
    table.caption = f"{shown} of {total} assets"
    return table


# ---- commands -----------------------------------------------------------------------------

EsOption = Annotated[
    str | None,
    typer.Option(
        "--es", envvar="ICSMON_ES", help="Query this Elasticsearch URL instead of the store"
    ),
]
ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        help="Pipeline config file: query its Elasticsearch instead of the store",
    ),
]
FormatOption = Annotated[
    QueryFormat,
    typer.Option("--format", "-f", help="table for people, jsonl (nested ECS) for programs"),
]
SiteOption = Annotated[
    list[str] | None, typer.Option("--site", help="Only this site (repeatable)", show_default=False)
]


def alerts_command(
    since: Annotated[
        str | None,
        typer.Option("--since", help="From: 30m, 1h, 7d, or 2026-11-01[T08:00] (UTC)"),
    ] = None,
    until: Annotated[
        str | None, typer.Option("--until", help="Up to (exclusive), same forms as --since")
    ] = None,
    severity: Annotated[
        str | None,
        typer.Option("--severity", help="At least: 0-100 or low|medium|high|critical"),
    ] = None,
    site: SiteOption = None,
    technique: Annotated[
        str | None, typer.Option("--technique", help="ATT&CK for ICS technique id, e.g. T0855")
    ] = None,
    rule: Annotated[str | None, typer.Option("--rule", help="Rule id")] = None,
    protocol: Annotated[
        str | None, typer.Option("--protocol", help="modbus, s7comm, s7comm-plus, opcua, enip")
    ] = None,
    text: Annotated[str | None, typer.Option("--text", help="Rule name contains this")] = None,
    fmt: FormatOption = QueryFormat.table,
    limit: Annotated[int, typer.Option("--limit", min=0, help="At most this many alerts")] = 50,
    offset: Annotated[int, typer.Option("--offset", min=0, help="Skip this many first")] = 0,
    store: StoreOpt = None,
    es: EsOption = None,
    config: ConfigOption = None,
) -> None:
    """List stored alerts, newest first."""
    flt = AlertFilter(
        since=parse_time(since) if since else None,
        until=parse_time(until) if until else None,
        min_severity=parse_severity(severity) if severity is not None else None,
        sites=list(site or []),
        technique=technique.strip().upper() if technique else None,
        rule_id=rule,
        protocol=protocol.strip().lower() if protocol else None,
        text=text,
        limit=limit,
        offset=offset,
    )
    try:
        backend = open_backend(store, es, config)
        total, alerts = _run_query(backend, lambda: backend.search_alerts(flt))
    except QueryError as exc:
        raise fail(str(exc), exc.code) from None
    if fmt == QueryFormat.jsonl:
        _write_jsonl("alert", alerts)
        return
    console = _console()
    if not alerts:
        console.print(f"no alerts match ({total} in total for this filter)")
        return
    console.print(alerts_table(total, alerts, offset))


def assets_command(
    site: SiteOption = None,
    role: Annotated[
        str | None, typer.Option("--role", help="e.g. modbus-server, s7comm-client")
    ] = None,
    vendor: Annotated[str | None, typer.Option("--vendor", help="Vendor contains this")] = None,
    seen_since: Annotated[
        str | None, typer.Option("--seen-since", help="Last seen since: 1h, 7d, 2026-11-01")
    ] = None,
    new_since: Annotated[
        str | None, typer.Option("--new-since", help="First seen since: 1h, 7d, 2026-11-01")
    ] = None,
    fmt: FormatOption = QueryFormat.table,
    limit: Annotated[int, typer.Option("--limit", min=0, help="At most this many assets")] = 1000,
    offset: Annotated[int, typer.Option("--offset", min=0, help="Skip this many first")] = 0,
    store: StoreOpt = None,
    es: EsOption = None,
    config: ConfigOption = None,
) -> None:
    """List the assets (hosts) seen on the monitored networks, by site and IP."""
    flt = AssetFilter(
        sites=list(site or []),
        role=role,
        vendor=vendor,
        first_seen_since=parse_time(new_since) if new_since else None,
        last_seen_since=parse_time(seen_since) if seen_since else None,
        limit=limit,
        offset=offset,
    )
    try:
        backend = open_backend(store, es, config)
        total, assets = _run_query(backend, lambda: backend.search_assets(flt))
    except QueryError as exc:
        raise fail(str(exc), exc.code) from None
    if fmt == QueryFormat.jsonl:
        _write_jsonl("asset", assets)
        return
    console = _console()
    if not assets:
        console.print(f"no assets match ({total} in total for this filter)")
        return
    console.print(assets_table(total, assets, offset))
