"""The ``icsmon`` command line: registers the sub-commands, each in its own module (see
DESIGN.md for the fixed interface; the shared console, errors and options are in
``icsmon.common``)."""

from __future__ import annotations

import atexit
import enum
import gc
import os
import re
import sys
import types
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from icsmon import __version__
from icsmon.common import EXIT_CODES_HELP

if TYPE_CHECKING:
    import typer


def _new_app() -> typer.Typer:
    import typer

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
    import typer

    typer.echo(f"icsmon {__version__}")


def _register_sensor(app: typer.Typer) -> None:
    from icsmon import cmd_sensor

    command = lambda name: app.command(name=name, epilog=EXIT_CODES_HELP)  # noqa: E731
    command("replay")(_typer_command(cmd_sensor.replay))
    command("sense")(_typer_command(cmd_sensor.sense))


def _typer_command(func: Callable[..., Any]) -> Callable[..., Any]:
    """A sensor command (its options declared by ``icsmon.common.Option``, which a plain
    command line is read from without typer: :func:`_plain_line`) as typer reads a command:
    the same call and help, its options declared as typer's."""
    import functools
    import inspect

    from icsmon.common import typer_form

    signature = inspect.signature(func, eval_str=True)
    params = [p.replace(annotation=typer_form(p.annotation)) for p in signature.parameters.values()]

    @functools.wraps(func)
    def command(**kwargs: Any) -> Any:
        return func(**kwargs)

    command.__signature__ = signature.replace(parameters=params)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in params}
    return command


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
        done = _plain_value(self.annotation, self.bounds, value) if self.plain else None
        if done is not None:
            return done[0]
        if self._typer is None:
            from typer._coercion import build_runtime_param

            self._typer = build_runtime_param(self.param.type_descriptor)
        return self._typer.coerce(value, param=param, ctx=ctx)


def _plain_value(kind: Any, bounds: tuple[Any, Any], value: Any) -> tuple[Any] | None:
    """``(value,)`` made the way typer makes a value of type ``kind`` (within ``bounds``,
    ``(min, max)``), or None to leave it to typer."""
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
        low, high = bounds
        if (low is not None and number < low) or (high is not None and number > high):
            return None
        return (number,)
    if isinstance(kind, type) and issubclass(kind, enum.Enum):
        for member in kind:  # a choice: its value exactly as declared
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


# what an option's declaration may say for the plain reading to read it as typer does
_PLAIN_INFO = frozenset(("help", "envvar", "show_default", "min", "max"))
_TAKES_VALUE = object()  # an option's flag that takes a value (not a boolean flag)


def _plain_line(func: Callable[..., Any], args: list[str]) -> dict[str, Any] | None:
    """The arguments typer calls the sensor command ``func`` with for the command line
    ``args`` when it is a plain one: known options spelled in full (``--name value``,
    ``--name=value``, a short ``-f value``), values :func:`_plain_value` makes, the
    environment variables of options not given, the declared defaults; else None, and typer
    reads the line (any ``--help``, an unknown option, a missing or odd value...), so its
    help, errors and exit codes stay typer's, word for word. Without typer's import and
    its command's construction: a third of a sensor's start-up."""
    from typing import get_args, get_type_hints

    from icsmon.common import Option

    hints = get_type_hints(func, include_extras=True)
    declared = func
    while hasattr(declared, "__wrapped__"):  # the parameters of the function wrapped
        declared = declared.__wrapped__
    code = declared.__code__
    names = code.co_varnames[: code.co_argcount]
    given_defaults = declared.__defaults__ or ()
    defaults = dict(zip(names[len(names) - len(given_defaults) :], given_defaults, strict=True))
    flags: dict[str, tuple[str, Any]] = {}  # "--store" -> (parameter, _TAKES_VALUE or bool)
    kinds: dict[str, tuple[Any, tuple[Any, Any], bool]] = {}  # kind, bounds, repeatable
    envvars: dict[str, str | None] = {}
    argument = ""
    for name in names:
        kind, *extras = get_args(hints[name])
        options = [e for e in extras if isinstance(e, Option)]
        if len(options) != 1 or not set(options[0].info) <= _PLAIN_INFO:
            return None
        option = options[0]
        if isinstance(kind, types.UnionType):  # ``T | None``: T
            parts = [k for k in get_args(kind) if k is not type(None)]
            if len(parts) != 1:
                return None
            kind = parts[0]
        repeatable = kind in (list[str], list[Path])
        kinds[name] = (kind, (option.info.get("min"), option.info.get("max")), repeatable)
        envvars[name] = option.info.get("envvar")
        if option.argument:
            if argument or kind != list[Path]:
                return None
            argument = name
            continue
        for decl in option.decls:
            on, _, off = decl.partition("/")
            if kind is bool:
                flags[on] = (name, True)
                if off:
                    flags[off] = (name, False)
            else:
                flags[on] = (name, _TAKES_VALUE)
    values: dict[str, Any] = {}
    rest = list(args)
    while rest:
        token = rest.pop(0)
        if not token.startswith("-"):
            if not argument:
                return None
            values.setdefault(argument, []).append(token)
            continue
        flag, eq, value = token.partition("=") if token.startswith("--") else (token, "", "")
        name, takes = flags.get(flag, ("", None))
        if not name:
            return None  # unknown, --help, a short option with its value joined, --...
        if takes is not _TAKES_VALUE:
            if eq:
                return None
            values[name] = takes
            continue
        if not eq:
            if not rest:
                return None
            value = rest.pop(0)
        if value.startswith("-"):
            return None
        if kinds[name][2]:
            values.setdefault(name, []).append(value)
        else:
            values[name] = value
    kwargs: dict[str, Any] = {}
    for name in names:
        kind, bounds, repeatable = kinds[name]
        envvar = envvars[name]
        if name not in values and envvar and os.environ.get(envvar):  # empty: not set (click)
            if repeatable or kind is bool:
                return None
            values[name] = os.environ[envvar]
        if name not in values:
            if name not in defaults:
                return None  # a required option or argument missing: typer says so
            kwargs[name] = defaults[name]
            continue
        made = _plain_value(kind, bounds, values[name])
        if made is None:
            return None
        kwargs[name] = made[0]
    return kwargs


def _run_plain(name: str, func: Callable[..., Any], kwargs: dict[str, Any]) -> None:
    """``func(**kwargs)``, ended as typer's main ends a command: done or an exit, by
    ``sys.exit`` at its code; the rest (Ctrl-C, a broken pipe...) by typer's own handling
    (:func:`_typer_ends`)."""
    try:
        func(**kwargs)
    except BaseException as exc:  # noqa: BLE001 - each kind ended as typer ends it
        typer = sys.modules.get("typer")  # imported by whatever raised typer's Exit
        if typer is not None and isinstance(exc, typer.Exit):
            sys.exit(exc.exit_code)
        if isinstance(exc, SystemExit):
            raise
        _typer_ends(name, exc)
        raise
    if name == "replay":
        _end_now()
    sys.exit(0)


def _end_now() -> None:
    """A replay that ended well ends now: its exit handlers run (logging's flush, the
    sensor's ``gc.freeze``, a caller's), its output is flushed, and the process ends without
    the interpreter's teardown (freeing every module and object: 3-4 ms of the command's
    end, after its store was closed and its writer process had exited; 5-9 ms on a busy
    machine). Returns, for the ordinary end, while a thread that Python would wait for
    still runs, or when the output cannot be flushed (a closed pipe: the ordinary end
    reports it, as it always did)."""
    import threading

    main = threading.main_thread()
    if any(t is not main and not t.daemon and t.is_alive() for t in threading.enumerate()):
        return
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):
        return
    atexit._run_exitfuncs()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(0)


def _typer_ends(name: str, exc: BaseException) -> None:
    """``exc``, raised by the sensor command ``name`` run from a plain command line, raised
    again inside typer's main on the same line: its message, exit code or traceback are
    then typer's (a rare path: typer's import is no longer the cost that matters)."""
    import typer

    group = _without_pydantic(typer.main.get_command(_sensor_app()))

    def raise_again(**_: Any) -> None:
        raise exc

    group.commands[name].callback = raise_again
    group(sys.argv[1:])


def _plain_sensor(args: list[str]) -> tuple[Callable[..., Any], dict[str, Any]] | None:
    """The sensor command of ``args`` (``replay ...``, ``sense ...``) and its arguments,
    when the line is a plain one (:func:`_plain_line`) and no shell completion is asked
    for (typer answers that); else None."""
    if any(k.startswith("_") and k.endswith("_COMPLETE") for k in os.environ):
        return None
    from icsmon import cmd_sensor

    func = getattr(cmd_sensor, args[0])
    kwargs = _plain_line(func, args[1:])
    return None if kwargs is None else (func, kwargs)


def main() -> None:
    os.environ.setdefault("PYTHONIOENCODING", "utf-8")
    sensor = len(sys.argv) > 1 and sys.argv[1] in ("replay", "sense")
    if sensor:
        # typer checks options with pydantic, whose first use scans every installed package
        # for plugins (tens of ms of a sensor's start-up); a sensor's options need none
        os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
        # registered first, run last: after every other exit handler (logging's flush, the
        # finalizers), the interpreter's teardown leaves out its collector's walks over the
        # sensor's heap (its rules, tables, compiled modules): 9 ms of its exit
        atexit.register(gc.freeze)
    try:
        plain = _plain_sensor(sys.argv[1:]) if sensor else None
        if plain is not None:  # read without typer: what typer would call the command with
            _run_plain(sys.argv[1], *plain)
        elif sensor:
            import typer

            _without_pydantic(typer.main.get_command(_sensor_app()))()
        else:
            full_app()()
    except BrokenPipeError:
        sys.exit(0)


if __name__ == "__main__":
    main()
