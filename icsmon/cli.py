"""The ``icsmon`` command line: registers the sub-commands, each in its own module (see
DESIGN.md for the fixed interface; the shared console, errors and options are in
``icsmon.common``)."""

from __future__ import annotations

import enum
import os
import re
import sys
from pathlib import Path
from typing import Any

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


_WHOLE_NUMBER = re.compile(r"[0-9]{1,15}")
_PLAIN_NUMBER = re.compile(r"[0-9]{1,15}(\.[0-9]{1,15})?")


class _PlainValue:
    """A sensor option's value as typer makes it, for the plain cases a command line holds
    (a text, a path, a whole or decimal number within its bounds, a choice spelled as
    declared, a list of paths), without pydantic: typer checks every option with a pydantic
    TypeAdapter, and pydantic's import and the adapters are a third of a sensor's start-up.
    Anything else (a value out of bounds, an odd spelling, an annotation not listed here)
    goes to typer's own check, so its errors stay typer's, word for word."""

    def __init__(self, param: Any) -> None:
        self.param = param
        desc = param.type_descriptor
        info = desc.parameter_info
        self.annotation = desc.annotation
        self.bounds = (info.min, info.max)
        plain_path = not (
            info.exists
            or info.resolve_path
            or info.allow_dash
            or info.path_type is not None
            or not info.file_okay
            or not info.dir_okay
            or info.writable
            or info.readable is False
        )
        self.plain = (
            info.parser is None
            and desc.file_annotation is None
            and not getattr(info, "clamp", False)
            and (
                self.annotation in (str, int, float, bool)
                or (isinstance(self.annotation, type) and issubclass(self.annotation, enum.Enum))
                or self.annotation == list[str]
                or (self.annotation in (Path, list[Path]) and plain_path)
            )
        )
        self._typer: Any = None

    def coerce(self, value: Any, param: Any, ctx: Any) -> Any:
        if value is None:  # as typer's RuntimeParam.coerce
            return () if param.multiple or param.nargs == -1 else None
        done = self._plain(value) if self.plain else None
        if done is not None:
            return done[0]
        if self._typer is None:
            from typer._coercion import build_runtime_param

            self._typer = build_runtime_param(self.param.type_descriptor)
        return self._typer.coerce(value, param=param, ctx=ctx)

    def _plain(self, value: Any) -> tuple[Any] | None:
        """``(value,)`` made the way typer makes it, or None to leave it to typer."""
        kind = self.annotation
        if kind == list[Path] or kind == list[str]:
            if isinstance(value, tuple | list) and all(type(v) is str for v in value):
                return ([Path(v) for v in value] if kind == list[Path] else list(value),)
            return None
        if type(value) is not str:
            return (value,) if isinstance(kind, type) and type(value) is kind else None
        if kind is str:
            return (value,)
        if kind is Path:
            return (Path(value),)
        if kind is int or kind is float:
            if not (_WHOLE_NUMBER if kind is int else _PLAIN_NUMBER).fullmatch(value):
                return None
            number = kind(value)
            low, high = self.bounds
            if (low is not None and number < low) or (high is not None and number > high):
                return None
            return (number,)
        for member in kind:  # an Enum (a choice): its value exactly as declared
            if member.value == value:
                return (member,)
        return None


def _without_pydantic(command: Any) -> Any:
    """``command`` (typer's click group of the sensor commands) with :class:`_PlainValue`
    checking the options of its commands (and their ``--help``, which click makes when first
    asked for the parameters); as it was when typer's parameters are not what this expects."""

    def plain(cmd: Any) -> None:
        get_params = cmd.get_params

        def params_with_plain_values(ctx: Any) -> list[Any]:
            params = get_params(ctx)
            for param in params:
                if getattr(param, "_runtime_param", 1) is None and hasattr(
                    param, "type_descriptor"
                ):
                    param._runtime_param = _PlainValue(param)
            return params

        cmd.get_params = params_with_plain_values

    plain(command)
    for sub in getattr(command, "commands", {}).values():
        plain(sub)
    return command


def main() -> None:
    os.environ.setdefault("PYTHONIOENCODING", "utf-8")
    sensor = len(sys.argv) > 1 and sys.argv[1] in ("replay", "sense")
    if sensor:
        # typer checks options with pydantic, whose first use scans every installed package
        # for plugins (tens of ms of a sensor's start-up); a sensor's options need none
        os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
    try:
        if sensor:
            _without_pydantic(typer.main.get_command(_sensor_app()))()
        else:
            full_app()()
    except BrokenPipeError:
        sys.exit(0)


if __name__ == "__main__":
    main()
