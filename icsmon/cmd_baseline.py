"""``icsmon baseline``: learn a baseline from captures, show it, merge two, accept an alert.

Wiring only: the learning and the file format live in ``detectors.baseline``.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from detectors.baseline import Baseline, BaselineError, BaselineLearner, accept_alert
from icsmon.common import (
    ExitCode,
    HeurOpt,
    PortOpt,
    SiteOpt,
    engine_config,
    error_line,
    fail,
    note,
    open_engine,
    warning_line,
)

app = typer.Typer(
    help="Learn what normal traffic looks like, review it, and accept deviations.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _load(path: Path) -> Baseline:
    try:
        return Baseline.load(path)
    except BaselineError as exc:
        raise fail(str(exc)) from None


def _save(baseline: Baseline, path: Path) -> None:
    try:
        baseline.save(path)
    except OSError as exc:
        raise fail(f"{path}: cannot write the baseline: {exc.strerror or exc}") from None


@app.command()
def learn(
    pcap: Annotated[
        list[Path],
        typer.Argument(help="Captures of normal traffic (pcap/pcapng)", show_default=False),
    ],
    output: Annotated[Path, typer.Option("--output", "-o", help="Baseline file to write (JSON)")],
    site: SiteOpt = "",
    merge_into: Annotated[
        Path | None,
        typer.Option("--base", help="Start from this baseline and add what the captures show"),
    ] = None,
    heuristic: HeurOpt = None,
    port: PortOpt = None,
    store: Annotated[
        Path | None,
        typer.Option(
            "--store", help="Also write the learned assets to this embedded store (icsmon assets)"
        ),
    ] = None,
) -> None:
    """Learn a baseline from captures taken as normal; same captures, byte-identical file."""
    for path in pcap:
        if not path.is_file():
            raise fail(f"{path}: capture file not found")
    base = _load(merge_into) if merge_into is not None else None
    learner = BaselineLearner(base=base)
    engine = open_engine(engine_config(site, "baseline", "", heuristic, port))
    for path in pcap:
        learner.add_source(path.name)
    for event in engine.replay(pcap):
        learner.observe(event)
    for line in engine.errors:
        error_line(line)
    baseline = learner.result()
    _save(baseline, output)
    s = baseline.summary()
    note(
        f"{output}: {s['assets']} assets, {s['conversations']} conversations, {s['operations']} operations, "
        f"{s['polling_series']} polling series, {s['points']} value points from "
        f"{s['window']['events']} events ({s['window']['start']} .. {s['window']['end']})"
    )
    if s["truncated"]:
        warning_line(f"memory caps dropped entries: {s['truncated']}")
    if store is not None:
        _store_assets(baseline, site, store)
    if engine.errors:
        raise typer.Exit(ExitCode.FAILED)


def _store_assets(baseline: Baseline, site: str, path: Path) -> None:
    from pipeline.store import Store, StoreError

    docs = baseline.asset_documents(site)
    try:
        with Store.open(path) as st:
            for doc in docs:
                st.write("asset", doc)
    except StoreError as exc:
        raise fail(str(exc)) from None
    note(f"{path}: {len(docs)} learned assets stored")


def _ranges(spaces: dict) -> str:
    parts = []
    for space, ranges in sorted(spaces.items()):
        text = ",".join(f"{a}" if a == b else f"{a}-{b}" for a, b in ranges[:6])
        parts.append(f"{space} {text}{'...' if len(ranges) > 6 else ''}")
    return "; ".join(parts)


@app.command()
def show(
    baseline_file: Annotated[Path, typer.Argument(help="Baseline file", show_default=False)],
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON")] = False,
    placeholders: Annotated[
        bool, typer.Option("--placeholders", help="Also list the Sigma placeholder values")
    ] = False,
    limit: Annotated[int, typer.Option("--limit", help="Conversations listed at most")] = 200,
) -> None:
    """Summarise a baseline: window, assets, conversations, operations, polling."""
    baseline = _load(baseline_file)
    summary = baseline.summary()
    if as_json:
        if placeholders:
            summary["placeholders"] = baseline.placeholders()
        sys.stdout.write(json.dumps(summary, sort_keys=True) + "\n")
        return
    out = Console(soft_wrap=True)
    if not out.is_terminal:
        out = Console(soft_wrap=True, width=200)  # piped: long keys stay on one line, greppable
    w = summary["window"]
    # paths, keys and device identities are text from files and the wire, never markup
    out.print(
        Text.assemble(
            (str(baseline_file), "bold"),
            f": learned {w['start']} .. {w['end']} from {w['events']} events"
            + (f" ({', '.join(summary['sources'])})" if summary["sources"] else ""),
        ),
        highlight=False,
    )
    out.print(
        f"{summary['assets']} assets, {summary['conversations']} conversations, "
        f"{summary['operations']} operations, {summary['polling_series']} polling series, "
        f"{summary['points']} value points",
        highlight=False,
    )
    if summary["truncated"]:
        out.print(f"[yellow]truncated by memory caps:[/] {summary['truncated']}", highlight=False)
    accepted = baseline.doc.get("accepted") or []
    if accepted:
        out.print(f"{len(accepted)} accepted deviation(s)", highlight=False)
    assets = Table(title="assets", title_justify="left")
    for col in ("ip", "roles", "events", "first seen", "last seen", "identity"):
        assets.add_column(col)
    for ip, a in sorted(baseline.assets.items()):
        ident = ", ".join(f"{k}={v}" for k, v in sorted((a.get("identity") or {}).items()))
        assets.add_row(
            *map(
                Text,
                (
                    ip,
                    ", ".join(a.get("roles") or []),
                    str(a.get("events")),
                    str(a.get("first_seen")),
                    str(a.get("last_seen")),
                    ident,
                ),
            )
        )
    out.print(assets)
    for shown, (key, c) in enumerate(sorted(baseline.conversations.items())):
        if shown >= limit:
            out.print(
                f"... {len(baseline.conversations) - shown} more conversation(s) (--limit)",
                highlight=False,
            )
            break
        extras = [
            f"{kind} {'/'.join(sorted(values))}"
            for kind, values in sorted((c.get("security") or {}).items())
        ]
        rate = c.get("rate") or {}
        if rate.get("max"):
            extras.append(
                f"rate median {rate.get('median')} max {rate['max']} per {rate.get('bucket_seconds')} s"
            )
        out.print(
            Text.assemble(
                "\n",
                (key, "bold"),
                f": {c.get('events')} events, {c.get('first_seen')} .. {c.get('last_seen')}"
                + (f"; {'; '.join(extras)}" if extras else ""),
            ),
            highlight=False,
        )
        polling = c.get("polling") or {}
        table = Table(show_edge=False, pad_edge=False)
        for col in ("operation", "class", "count", "addresses / items", "polling"):
            table.add_column(col)
        for op_key, op in sorted(c["operations"].items()):
            where = "; ".join(
                [f"{d}: {_ranges(s)}" for d, s in sorted((op.get("addresses") or {}).items()) if s]
                + [
                    f"{d}: {len(n)} item(s)"
                    for d, n in sorted((op.get("nodes") or {}).items())
                    if n
                ]
            )
            periods = sorted(
                {
                    f"{s['period']:.3g} s"
                    for k, s in polling.items()
                    if s.get("regular") and (k == op_key or k.startswith(op_key + " @"))
                }
            )
            table.add_row(
                *map(
                    Text,
                    (op_key, str(op.get("class")), str(op.get("count")), where, ", ".join(periods)),
                )
            )
        out.print(table)
    if placeholders:
        for name, values in baseline.placeholders().items():
            out.print(f"%{name}%: {', '.join(values) or '-'}", highlight=False, markup=False)


@app.command()
def merge(
    first: Annotated[Path, typer.Argument(help="Baseline A", show_default=False)],
    second: Annotated[Path, typer.Argument(help="Baseline B", show_default=False)],
    output: Annotated[Path, typer.Option("--output", "-o", help="Merged baseline to write")],
) -> None:
    """Combine two baselines: whatever either accepts, the result accepts."""
    merged = _load(first).merge(_load(second))
    _save(merged, output)
    s = merged.summary()
    note(f"{output}: {s['assets']} assets, {s['conversations']} conversations")


def _find_alert(alert_id: str, alerts_file: Path | None, store: Path | None) -> dict[str, Any]:
    from pipeline.docs import flatten

    if alerts_file is not None:
        try:
            fh = open(alerts_file, encoding="utf-8")  # noqa: SIM115 - closed below
        except OSError as exc:
            raise fail(f"{alerts_file}: cannot read alerts: {exc.strerror or exc}") from None
        with fh:
            for number, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    doc = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise fail(f"{alerts_file}:{number}: not a JSON line: {exc.msg}") from None
                flat = flatten(doc) if isinstance(doc, dict) else {}
                if flat.get("event.id") == alert_id:
                    return flat
        raise fail(f"{alerts_file}: no alert with id {alert_id}")
    from pipeline.store import Store, StoreError

    try:
        with Store.open(store, readonly=True) as st:
            doc = st.get_alert(alert_id)
    except StoreError as exc:
        raise fail(str(exc)) from None
    if doc is None:
        raise fail(f"no alert with id {alert_id} in the store")
    return flatten(doc)


@app.command()
def accept(
    alert_id: Annotated[
        str, typer.Argument(help="event.id of a baseline alert", show_default=False)
    ],
    baseline_file: Annotated[
        Path, typer.Option("--baseline", "-b", help="Baseline file to update")
    ],
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Write here instead of updating --baseline"),
    ] = None,
    alerts_file: Annotated[
        Path | None,
        typer.Option(
            "--alerts", help="Find the alert in this JSON lines file (e.g. replay --format jsonl)"
        ),
    ] = None,
    store: Annotated[
        Path | None,
        typer.Option("--store", envvar="ICSMON_STORE", help="Embedded store holding the alert"),
    ] = None,
) -> None:
    """Accept a deviation: fold what a baseline alert saw into the baseline."""
    baseline = _load(baseline_file)
    alert = _find_alert(alert_id, alerts_file, store)
    try:
        updated, what = accept_alert(baseline, alert, accepted_at=time.time())
    except (BaselineError, ValueError) as exc:
        raise fail(str(exc)) from None
    target = output or baseline_file
    _save(updated, target)
    note(f"{target}: accepted {alert.get('rule.id')} ({what})")
