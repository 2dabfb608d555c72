"""``icsmon hunt``: run Sigma rules over stored events (the embedded store, or Elasticsearch
with ``--es``/``--config``). Wiring only: the hunt itself is ``detectors.hunt``; reading events in time
order and checking for alerts already raised are the back ends' (``pipeline.store``,
``pipeline.es``)."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from icsmon.common import (
    ExitCode,
    SinceOpt,
    StoreOpt,
    UntilOpt,
    fail,
    note,
    table_time,
    warning_line,
)


def hunt_command(
    select: Annotated[
        list[str] | None,
        typer.Argument(
            help="Rules to run: rule ids, rule files or folders of the pack (default: all)",
            show_default=False,
        ),
    ] = None,
    rules: Annotated[
        Path | None,
        typer.Option("--rules", help="Rule pack the selection is taken from (default: rules/)"),
    ] = None,
    site_config: Annotated[
        Path | None,
        typer.Option("--site-config", help="Site YAML with 'placeholders:' host lists"),
    ] = None,
    baseline: Annotated[
        Path | None,
        typer.Option("--baseline", help="Baseline whose learned host lists fill placeholders"),
    ] = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    site: Annotated[
        list[str] | None, typer.Option("--site", help="Only events of this site (repeatable)")
    ] = None,
    observer: Annotated[
        list[str] | None,
        typer.Option("--observer", help="Only events of this sensor (repeatable)"),
    ] = None,
    store: StoreOpt = None,
    es_url: Annotated[
        str | None,
        typer.Option("--es", help="Hunt in Elasticsearch at this URL instead of the store"),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config", help="Pipeline config (Elasticsearch URL, credentials, index prefix)"
        ),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Count matches and alerts; write nothing")
    ] = False,
    max_events: Annotated[
        int | None, typer.Option("--max-events", min=1, help="Stop after this many events")
    ] = None,
    max_seconds: Annotated[
        float | None, typer.Option("--max-seconds", min=0.1, help="Stop after this long")
    ] = None,
    hunt_id: Annotated[
        str | None, typer.Option("--hunt-id", help="Id the alerts carry (default: a new one)")
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the summary as one JSON object")
    ] = False,
) -> None:
    """Run rules over stored history with the stream's engine (correlations in time order);
    new alerts are written where the events are, marked with the hunt's id and the rule's
    version; alerts already raised are counted, not written again."""
    from detectors.hunt import Hunt, HuntError, field_warnings, load_hunt_engine, new_hunt_id
    from detectors.sigma.loader import RuleLoadError, SiteConfigError
    from icsmon.cmd_query import time_range

    start, end = time_range(since, until)
    placeholders = None
    if baseline is not None:
        from detectors.baseline import Baseline

        try:
            placeholders = Baseline.load(baseline).placeholders()
        except (OSError, ValueError) as exc:
            raise fail(f"{baseline}: {exc}") from None
    if rules is not None and not rules.exists():
        raise fail(f"{rules}: no such file or directory")
    try:
        engine = load_hunt_engine(select or [], rules, site_config, placeholders)
    except (RuleLoadError, SiteConfigError, HuntError) as exc:
        raise fail(str(exc).splitlines()[0]) from None
    for line in field_warnings(engine.pack):
        warning_line(line)
    source = _open_source(store, es_url, config, dry_run)
    sites, observers = tuple(site or ()), tuple(observer or ())
    stop: Any = None
    try:
        update, stop = _progress(lambda: source.count_events(start, end, sites, observers))
        job = Hunt(
            engine,
            hunt_id or new_hunt_id(),
            known=lambda a: source.alert_raised(
                str(a["event.id"]), str(a["rule.id"]), a.get("icsmon.alert.event_ids") or []
            ),
            write=source.write_alert,
            dry_run=dry_run,
            max_events=max_events,
            max_seconds=max_seconds,
            progress=update,
        )
        summary = job.run(source.scan_events(start, end, sites, observers))
        source.finish()
    except Exception as exc:  # the store's or Elasticsearch's failure, in one line
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise fail(f"{source.where}: {type(exc).__name__}: {message}", ExitCode.FAILED) from None
    finally:
        if stop is not None:
            stop()
    doc = summary.as_doc()
    if as_json:
        sys.stdout.write(json.dumps(doc, ensure_ascii=False) + "\n")
    else:
        span = ""
        if summary.first is not None and summary.last is not None:
            span = f" from {table_time(summary.first)} to {table_time(summary.last)}"
        verb = "would raise" if dry_run else "raised"
        typer.echo(
            f"hunt {summary.hunt_id}: {summary.rules} rules over {summary.events:,} events"
            f"{span} in {summary.elapsed_s:.1f} s ({summary.rate:,.0f} events/s): "
            f"{summary.matches:,} matches, {verb} {summary.alerts:,} alerts"
            + ("" if dry_run else f" ({summary.new:,} new, {summary.known:,} already raised)")
        )
        titles = {r.meta.id: r.meta.name for r in engine.pack.rules}
        titles.update({c.meta.id: c.meta.name for c in engine.pack.correlations})
        for rid, n in sorted(summary.by_rule.items(), key=lambda kv: (-kv[1], kv[0])):
            typer.echo(f"  {n:>6}  {titles.get(rid, '')} [{rid}]")
    if summary.stopped:
        note(f"stopped early: {summary.stopped}")
    if summary.errors:
        note(f"{summary.errors} events could not be processed (see the log)")


def _open_source(store: Path | None, es_url: str | None, config: Path | None, dry_run: bool):
    if es_url or config:
        from pipeline.config import ConfigError, load_config
        from pipeline.es import EsHuntSource

        try:
            cfg = load_config(config, overrides={"elasticsearch": {"url": es_url}})
        except ConfigError as exc:
            raise fail(str(exc)) from None
        return EsHuntSource(cfg)
    from pipeline.store import Store, StoreError, resolve_store_path

    path = resolve_store_path(store)
    if not path.exists():
        raise fail(f"{path}: no such store (replay or sense with --store first)")
    try:
        opened = Store.open(path, readonly=dry_run)
    except StoreError as exc:
        raise fail(str(exc)) from None
    return _StoreSource(opened)


class _StoreSource:
    def __init__(self, store: Any) -> None:
        self.store = store
        self.where = str(store.path)
        self.count_events = store.count_events
        self.scan_events = store.scan_events
        self.alert_raised = store.raised_check()  # alerts stored before the hunt

    def write_alert(self, alert: dict[str, Any]) -> None:
        self.store.write("alert", alert)

    def finish(self) -> None:
        self.store.close()


def _progress(total: Callable[[], int]):
    """A progress bar on stderr at a terminal: events scanned of ``total()`` (counted only
    then: over millions of events the count is a scan of an index) and the percentage;
    nothing otherwise."""
    if not sys.stderr.isatty():
        return None, lambda: None
    from rich.progress import Progress

    from icsmon.common import err

    events = total()
    bar = Progress(console=err, transient=True)  # description, bar, percentage, time left
    task = bar.add_task("hunting", total=events or None)
    bar.start()
    of = f" of {events:,}" if events else ""

    def update(n: int, _ts: float | None) -> None:
        bar.update(task, completed=n, description=f"{n:,}{of} events")

    return update, bar.stop
