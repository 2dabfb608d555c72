"""The ``icsmon`` command line: registers the sub-commands, each in its own module (see
DESIGN.md for the fixed interface; the shared console, errors and options are in
``icsmon.common``)."""

from __future__ import annotations

import os
import sys

import typer

from icsmon import __version__
from icsmon.common import EXIT_CODES_HELP


def _new_app() -> typer.Typer:
    return typer.Typer(
        name="icsmon",
        help="Industrial (OT/ICS) network security monitor: Modbus/TCP, S7comm, OPC UA.",
        epilog=EXIT_CODES_HELP,
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
    )


def version() -> None:
    """Print the version."""
    typer.echo(f"icsmon {__version__}")


def _register_sensor(app: typer.Typer) -> None:
    from icsmon import cmd_sensor

    command = lambda name: app.command(name=name, epilog=EXIT_CODES_HELP)  # noqa: E731
    command("replay")(cmd_sensor.replay)
    command("sense")(cmd_sensor.sense)


def _register_subcommands(app: typer.Typer) -> None:
    """Sub-commands that live in their own modules (one per feature area)."""
    from icsmon import (
        cmd_assessment,
        cmd_baseline,
        cmd_control,
        cmd_hunt,
        cmd_index,
        cmd_posture,
        cmd_query,
        cmd_response,
        cmd_rules,
    )

    command = lambda name: app.command(name=name, epilog=EXIT_CODES_HELP)  # noqa: E731
    _register_sensor(app)
    app.command(name="version")(version)
    app.add_typer(cmd_rules.app, name="rules")
    app.add_typer(cmd_baseline.app, name="baseline")
    app.add_typer(cmd_posture.app, name="posture")
    app.add_typer(cmd_posture.org_app, name="org")
    app.add_typer(cmd_response.app, name="response")
    app.add_typer(cmd_control.app, name="control")
    command("alerts")(cmd_query.alerts_command)
    command("assets")(cmd_query.assets_command)
    app.add_typer(cmd_index.app, name="index")
    command("hunt")(cmd_hunt.hunt_command)
    app.add_typer(cmd_assessment.advisories_app, name="advisories")
    app.add_typer(cmd_assessment.findings_app, name="findings")
    command("report")(cmd_assessment.report_command)


def full_app() -> typer.Typer:
    """The whole command line (``icsmon.cli.app``)."""
    global _app
    if _app is None:
        _app = _new_app()
        _register_subcommands(_app)
    return _app


_app: typer.Typer | None = None


def __getattr__(name: str) -> typer.Typer:
    # ``from icsmon.cli import app``: every command, its modules imported on first use
    if name == "app":
        return full_app()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _sensor_app() -> typer.Typer:
    """``replay`` and ``sense`` alone: the same commands, options and help, without
    importing and building the rest of the command line (a sensor's start-up)."""
    app = _new_app()

    @app.callback()
    def _group() -> None:  # a group, as the whole command line is: ``icsmon replay F``
        pass

    _register_sensor(app)
    return app


def main() -> None:
    os.environ.setdefault("PYTHONIOENCODING", "utf-8")
    sensor = len(sys.argv) > 1 and sys.argv[1] in ("replay", "sense")
    if sensor:
        # typer checks options with pydantic, whose first use scans every installed package
        # for plugins (tens of ms of a sensor's start-up); a sensor's options need none
        os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
    try:
        (_sensor_app() if sensor else full_app())()
    except BrokenPipeError:
        sys.exit(0)


if __name__ == "__main__":
    main()
