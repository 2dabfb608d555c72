"""``icsmon control ...``: the keys of the sensor control channel (pipeline/control.py) and
the message types it carries (wiring only)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from icsmon.common import SinceOpt, UntilOpt, fail, note

app = typer.Typer(
    help="The signed channel from the province to its sensors (requests over Kafka).",
    no_args_is_help=True,
)


@app.command("keygen")
def keygen(
    private: Annotated[
        Path,
        typer.Option("--private", help="Where the province's private key goes (PEM, mode 0600)"),
    ],
    public: Annotated[
        Path, typer.Option("--public", help="Where the public key for every sensor goes (PEM)")
    ],
) -> None:
    """Make the province's Ed25519 key pair: the private key signs requests (icsmon posture
    serve --control-key), the public key goes into every sensor's configuration
    ([control] public_key, or icsmon sense --control-key)."""
    from pipeline.control import generate_keys

    if private.exists():
        raise fail(f"{private}: already exists; a new key would orphan every sensor's copy")
    try:
        generate_keys(private, public)
    except OSError as exc:
        raise fail(f"{exc.filename or private}: cannot write the key ({exc.strerror})") from None
    note(f"private key {private} (keep it at the province), public key {public} (for sensors)")


@app.command("types")
def types() -> None:
    """The message types sensors can be asked (registered by the features that handle them)."""
    import pipeline.evidence  # noqa: F401  (registers its types)
    import response.hunts  # noqa: F401
    from pipeline.control import types as registered

    for name, description in sorted(registered().items()):
        typer.echo(f"{name}\t{description}")


@app.command("hunt")
def hunt(
    sensor: Annotated[
        list[str],
        typer.Option("--sensor", help="Sensor id to ask (repeatable)", show_default=False),
    ],
    rule: Annotated[
        list[Path] | None,
        typer.Option("--rule", help="Sigma rule file or folder sent with the request (repeatable)"),
    ] = None,
    rule_id: Annotated[
        list[str] | None,
        typer.Option("--rule-id", help="Id of a rule of the sensor's own pack (repeatable)"),
    ] = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    max_events: Annotated[
        int | None,
        typer.Option("--max-events", min=1, help="Scan at most this many events (sensors cap too)"),
    ] = None,
    max_seconds: Annotated[
        int | None,
        typer.Option("--max-seconds", min=1, help="Run at most this long (sensors cap too)"),
    ] = None,
    hunt_id: Annotated[
        str | None, typer.Option("--hunt-id", help="Id of the hunt (default: a new one)")
    ] = None,
    key: Annotated[
        Path | None,
        typer.Option(
            "--key", help="The province's private key (default: control.private_key of --config)"
        ),
    ] = None,
    config: Annotated[
        Path | None, typer.Option("--config", help="Pipeline config: Kafka, control.private_key")
    ] = None,
) -> None:
    """Ask sensors to hunt rules over their own stored events (a signed hunt.request on the
    control topic). Each sensor answers on the response topic (accepted, running, then the
    summary: events scanned, time covered, matches) and writes its alerts, marked with the
    hunt's id, like any other; the posture view shows both (Hunts)."""
    from detectors.hunt import new_hunt_id
    from icsmon.cmd_query import time_range
    from pipeline.config import ConfigError, load_config
    from pipeline.control import ControlError
    from pipeline.control_kafka import ControlPublisher
    from response.hunts import request_payload, rule_texts, send_hunt

    if not rule and not rule_id:
        raise fail("name the rules to run: --rule FILE|FOLDER and/or --rule-id ID")
    start, end = time_range(since, until)
    try:
        texts = rule_texts(rule or [])
    except OSError as exc:
        raise fail(f"{exc.filename}: cannot read the rule ({exc.strerror})") from None
    if rule and not texts:
        raise fail(f"{rule[0]}: no .yml rule files there")
    try:
        cfg = load_config(config, overrides={"control": {"private_key": str(key) if key else None}})
        if not cfg.control.private_key:
            raise fail("no signing key: --key, or [control] private_key in --config")
        publisher = ControlPublisher.from_config(cfg)
    except (ConfigError, ControlError) as exc:
        raise fail(str(exc)) from None
    the_id = hunt_id or new_hunt_id()
    payload = request_payload(the_id, texts, rule_id or [], start, end, max_events, max_seconds)
    try:
        sent = send_hunt(publisher, sensor, payload)
    except Exception as exc:  # Kafka's errors, in one line
        raise fail(f"the request could not be sent: {type(exc).__name__}: {exc}") from None
    finally:
        publisher.close()
    for name, envelope in sent.items():
        typer.echo(f"{the_id}\t{name}\t{envelope['id']}")
    note(f"hunt {the_id} requested of {len(sent)} sensor(s); answers come on the response topic")
