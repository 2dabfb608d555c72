"""``icsmon index``: the Kafka -> Elasticsearch indexer, and ``icsmon index prune`` (wiring only;
see pipeline/indexer.py and pipeline/retention.py)."""

from __future__ import annotations

import json
import logging
import signal
import sys
from pathlib import Path
from typing import Annotated

import typer

from icsmon.common import EXIT_CODES_HELP, ExitCode, fail

ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", envvar="ICSMON_CONFIG", help="Pipeline config file (TOML or YAML)"),
]
EsUrlOpt = Annotated[str | None, typer.Option("--es", help="Elasticsearch URL")]
RetentionOpt = Annotated[
    str | None,
    typer.Option(
        "--retention",
        help="Days each kind is kept, e.g. events=14d,rollups=90d,alerts=365 (a bare number is days; 0 keeps) [default: the config's retention section]",
    ),
]

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


def _retention_overrides(spec: str | None) -> dict[str, float]:
    """``events=14d,rollups=90d`` -> ``{"events": 14.0, "rollups": 90.0}`` (days)."""
    if not spec:
        return {}
    from detectors.baseline import parse_duration

    out: dict[str, float] = {}
    for item in spec.split(","):
        name, sep, value = item.strip().partition("=")
        if not sep or not name or not value:
            raise fail(f"--retention: {item.strip()!r} is not KIND=AGE (e.g. events=14d)")
        value = value.strip()
        try:
            days = float(value) if value.replace(".", "", 1).isdigit() else None
            if days is None:
                days = parse_duration(value) / 86400
        except ValueError as exc:
            raise fail(f"--retention: {name}: {exc}") from None
        out[name.strip()] = days
    return out


def _config(config: Path | None, retention: str | None, **sections: dict):
    from pipeline.config import ConfigError, load_config

    overrides = dict(sections)
    overrides["retention"] = _retention_overrides(retention)
    try:
        return load_config(config, overrides=overrides)
    except ConfigError as exc:
        raise fail(str(exc)) from None


def _logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if not verbose:
        # the clients log every retry with its traceback; the error line below says it once
        for noisy in ("kafka", "elastic_transport", "elasticsearch"):
            logging.getLogger(noisy).setLevel(logging.ERROR)


@app.callback(invoke_without_command=True, epilog=EXIT_CODES_HELP)
def index_command(
    ctx: typer.Context,
    setup: Annotated[
        bool,
        typer.Option(
            "--setup", help="Create the topics and install the index templates, then exit"
        ),
    ] = False,
    once: Annotated[
        bool, typer.Option("--once", help="Index what the topics hold now, then exit")
    ] = False,
    config: ConfigOpt = None,
    brokers: Annotated[
        str | None, typer.Option("--brokers", help="Kafka brokers, host:port[,host:port...]")
    ] = None,
    es_url: EsUrlOpt = None,
    group: Annotated[str | None, typer.Option("--group", help="Consumer group id")] = None,
    batch_size: Annotated[
        int | None, typer.Option("--batch-size", min=1, help="Messages per bulk request")
    ] = None,
    retention: RetentionOpt = None,
    stats: Annotated[
        bool, typer.Option("--stats", help="Print the counters as JSON at exit")
    ] = False,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Log progress to stderr")
    ] = False,
) -> None:
    """Consume alerts, events, assets, heartbeats, rollups and the sensors' answers from Kafka
    and index them into Elasticsearch.

    Offsets are committed only after Elasticsearch acknowledged a batch.

    Undecodable or rejected messages go to the dead-letter topic with the reason.

    With a retention section in the config (or --retention), each kind's daily indices past their age are deleted at start and every retention.interval_s; `icsmon index prune` does it once.

    Settings come from the config file, then ICSMON_* variables, then these flags.

    Topics and index templates are installed idempotently before indexing; --setup does only that.
    """
    if ctx.invoked_subcommand is not None:
        return
    _logging(verbose)
    cfg = _config(
        config,
        retention,
        kafka={"brokers": brokers},
        elasticsearch={"url": es_url},
        indexer={"group_id": group, "batch_size": batch_size},
    )

    from kafka.errors import KafkaError

    from pipeline.indexer import Indexer
    from pipeline.indexer import setup as setup_pipeline

    try:
        done = setup_pipeline(cfg)
    except KafkaError as exc:
        raise fail(f"Kafka at {','.join(cfg.kafka.brokers)}: {exc}", ExitCode.FAILED) from None
    except Exception as exc:  # the Elasticsearch client's errors, reported as one line
        raise fail(f"Elasticsearch at {cfg.elasticsearch.url}: {exc}", ExitCode.FAILED) from None
    if setup:
        for line in done or ["everything already in place"]:
            typer.echo(line)
        return

    try:
        indexer = Indexer(cfg)
    except KafkaError as exc:
        raise fail(f"Kafka at {','.join(cfg.kafka.brokers)}: {exc}", ExitCode.FAILED) from None

    def stop(_signum: int, _frame: object) -> None:
        indexer.stop()  # finish the batch in hand, commit, leave the group

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        counters = indexer.run(once=once)
    finally:
        indexer.close()
    if stats:
        typer.echo(json.dumps(counters, sort_keys=True))


@app.command("prune", epilog=EXIT_CODES_HELP)
def prune_command(
    config: ConfigOpt = None,
    es_url: EsUrlOpt = None,
    retention: RetentionOpt = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="List what would be deleted, delete nothing")
    ] = False,
) -> None:
    """Delete each kind's daily indices older than its retention (config or --retention),
    once, and list them (kind, index, documents, size)."""
    cfg = _config(config, retention, elasticsearch={"url": es_url})
    days = cfg.retention.by_kind()
    if not any(v > 0 for v in days.values()):
        raise fail("no retention set: give --retention KIND=AGE or [retention] in --config")
    from pipeline.es import EsStore
    from pipeline.retention import prune

    store = EsStore(cfg)
    try:
        gone = prune(store.client, store.prefix, days, dry_run=dry_run)
    except Exception as exc:  # the Elasticsearch client's errors, reported as one line
        raise fail(f"Elasticsearch at {cfg.elasticsearch.url}: {exc}", ExitCode.FAILED) from None
    finally:
        store.close()
    verb = "would delete" if dry_run else "deleted"
    for d in gone:
        typer.echo(f"{verb}\t{d.kind}\t{d.name}\t{d.docs} docs\t{d.bytes} bytes")
    kept = ", ".join(f"{k} {v:g} d" for k, v in sorted(days.items()) if v > 0)
    typer.echo(f"{len(gone)} indices {verb} (kept: {kept})", err=True)


if __name__ == "__main__":
    app()
