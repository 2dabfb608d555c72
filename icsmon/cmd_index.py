"""``icsmon index``: the Kafka -> Elasticsearch indexer (wiring only; see pipeline/indexer.py)."""

from __future__ import annotations

import json
import logging
import signal
import sys
from pathlib import Path
from typing import Annotated

import typer

from icsmon.common import ExitCode, fail


def index_command(
    setup: Annotated[
        bool,
        typer.Option(
            "--setup", help="Create the topics and install the index templates, then exit"
        ),
    ] = False,
    once: Annotated[
        bool, typer.Option("--once", help="Index what the topics hold now, then exit")
    ] = False,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config", envvar="ICSMON_CONFIG", help="Pipeline config file (TOML or YAML)"
        ),
    ] = None,
    brokers: Annotated[
        str | None, typer.Option("--brokers", help="Kafka brokers, host:port[,host:port...]")
    ] = None,
    es_url: Annotated[str | None, typer.Option("--es", help="Elasticsearch URL")] = None,
    group: Annotated[str | None, typer.Option("--group", help="Consumer group id")] = None,
    batch_size: Annotated[
        int | None, typer.Option("--batch-size", min=1, help="Messages per bulk request")
    ] = None,
    stats: Annotated[
        bool, typer.Option("--stats", help="Print the counters as JSON at exit")
    ] = False,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Log progress to stderr")
    ] = False,
) -> None:
    """Consume alerts, events and assets from Kafka and index them into Elasticsearch.

    Offsets are committed only after Elasticsearch acknowledged a batch.

    Undecodable or rejected messages go to the dead-letter topic with the reason.

    Settings come from the config file, then ICSMON_* variables, then these flags.

    Topics and index templates are installed idempotently before indexing; --setup does only that.
    """
    from pipeline.config import ConfigError, load_config

    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if not verbose:
        # the clients log every retry with its traceback; the error line below says it once
        for noisy in ("kafka", "elastic_transport", "elasticsearch"):
            logging.getLogger(noisy).setLevel(logging.ERROR)
    overrides = {
        "kafka": {"brokers": brokers},
        "elasticsearch": {"url": es_url},
        "indexer": {"group_id": group, "batch_size": batch_size},
    }
    try:
        cfg = load_config(config, overrides=overrides)
    except ConfigError as exc:
        raise fail(str(exc)) from None

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


app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
app.command(name="index")(index_command)

if __name__ == "__main__":
    typer.run(index_command)
