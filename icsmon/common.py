"""What every ``icsmon`` command shares: the error console, the exit codes, the error line,
and the options that build a sensor engine (``replay``, ``sense`` and ``baseline learn``).

Nothing here imports typer: a sensor's plain command line runs without it (``icsmon.cli``).
The shared options are declared as :class:`Option` (``SiteOption``...), which the sensor's
commands use; the other commands import typer's form of the same (``SiteOpt``...), made
when first asked for.

Every message that carries a path, a rule or text from the wire is printed as plain text,
never read as rich markup: a folder named ``[bold]plant[/]`` prints as it is.
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

if TYPE_CHECKING:
    import typer
    from rich.console import Console

    from sensor.engine import Engine, EngineConfig


def __getattr__(name: str) -> Any:
    # ``err``, the console of error lines and progress on stderr: made (and rich imported)
    # when first used, which a sensor's start-up need not pay for
    if name == "err":
        return _err()
    # the shared options as typer declares them (``SiteOpt``...), for the commands typer
    # builds: made (and typer imported) when first asked for
    if name in _TYPER_FORMS:
        value = globals()[name] = typer_form(globals()[_TYPER_FORMS[name]])
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class Option:
    """An option (or with ``argument``, an argument) as ``typer.Option(*decls, **info)``
    declares it, kept without typer: a sensor's plain command line is read from these
    without importing typer (``icsmon.cli``), and typer is given its own declaration when
    it builds the command line (:func:`typer_form`)."""

    __slots__ = ("argument", "decls", "info")

    def __init__(self, *decls: str, argument: bool = False, **info: Any) -> None:
        self.decls = decls
        self.argument = argument
        self.info = info

    def typer(self) -> Any:
        """typer's declaration of the same option."""
        import typer

        make = typer.Argument if self.argument else typer.Option
        return make(*self.decls, **self.info)


def typer_form(annotation: Any) -> Any:
    """``Annotated[T, Option(...)]`` as typer reads it (``Annotated[T, typer.Option(...)]``);
    any other annotation as it is."""
    from typing import get_args, get_origin

    if get_origin(annotation) is not Annotated:
        return annotation
    kind, *extras = get_args(annotation)
    extras = [e.typer() if isinstance(e, Option) else e for e in extras]
    return Annotated[(kind, *extras)]  # type: ignore[valid-type]


def _err() -> Console:
    console = globals().get("_console")
    if console is None:
        from rich.console import Console

        console = globals()["_console"] = Console(stderr=True, highlight=False, soft_wrap=True)
    return console


def table_time(value: Any) -> str:
    """A time (epoch seconds or ISO text) as a table or a summary line shows it, to the
    second: ``2026-11-26 10:00:00Z``; what is not a time, as it is."""
    from sensor.timestamps import parse_timestamp

    epoch = parse_timestamp(value)
    if epoch is None:
        return str(value or "")
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


class ExitCode(enum.IntEnum):
    """The exit status of every command (EXIT_CODES_HELP says it to users)."""

    OK = 0
    FAILED = 1  # the work ran and something failed on the way
    USAGE = 2  # nothing was done: a bad option, or a file or address given is missing or invalid


EXIT_CODES_HELP = (
    "Exit status: 0 done; "
    "1 the work ran and something failed (a capture could not be read to its end, Kafka or "
    "Elasticsearch could not be reached or refused, output could not be written, "
    "`rules check` found problems); "
    "2 nothing was done: a bad option, or a file, folder or address given (rules, baseline, "
    "config, store, registry, interface) is missing or invalid."
)


def error_line(message: str) -> None:
    """One ``error: ...`` line on stderr; the message is text, not markup."""
    from rich.text import Text

    _err().print(Text.assemble(("error:", "bold red"), " ", message))


def warning_line(message: str) -> None:
    """One ``warning: ...`` line on stderr; the message is text, not markup."""
    from rich.text import Text

    _err().print(Text.assemble(("warning:", "yellow"), " ", message))


def note(message: str) -> None:
    """A progress or summary line on stderr, printed as it is."""
    _err().print(message, markup=False)


def fail(message: str, code: ExitCode = ExitCode.USAGE) -> typer.Exit:
    """Print the error line and return the exit to raise: ``raise fail(...) from None``."""
    error_line(message)
    return exit_with(code)


def exit_with(code: int) -> typer.Exit:
    """The exit to raise to end a command with ``code`` (typer's, imported when first
    needed: a sensor's plain start-up runs without typer, icsmon.cli)."""
    import typer

    return typer.Exit(int(code))


# ---- a time range over stored history (icsmon hunt, icsmon control hunt) ------------------

SinceOption = Annotated[
    str | None,
    Option("--since", help="From this time: 7d, 12h, or an ISO date/time (UTC)"),
]
UntilOption = Annotated[
    str | None, Option("--until", help="Up to this time (exclusive), same forms")
]


# ---- the options that build an engine -----------------------------------------------------

SiteOption = Annotated[
    str, Option("--site", envvar="ICSMON_SITE", help="Site id carried by every document")
]
ObserverOption = Annotated[
    str,
    Option("--observer", envvar="ICSMON_OBSERVER", help="Sensor name (default: host name)"),
]
OrgOption = Annotated[
    str, Option("--org", envvar="ICSMON_ORG", help="Organisation (enterprise) id")
]
HeurOption = Annotated[
    list[str] | None,
    Option("--heuristic", help="Probe this protocol on every port (repeatable)"),
]
PortOption = Annotated[
    list[str] | None,
    Option(
        "--port",
        help="PORT=PROTOCOL (TCP) or PORT/udp=PROTOCOL: dissect this port as this protocol "
        "(repeatable)",
    ),
]
StoreOption = Annotated[
    Path | None,
    Option(
        "--store",
        envvar="ICSMON_STORE",
        help="Embedded store file (default: icsmon.db in the user data folder)",
    ),
]

# the same as typer declares them (module __getattr__), by the name the other commands use
_TYPER_FORMS = {
    "SinceOpt": "SinceOption",
    "UntilOpt": "UntilOption",
    "SiteOpt": "SiteOption",
    "ObserverOpt": "ObserverOption",
    "OrgOpt": "OrgOption",
    "HeurOpt": "HeurOption",
    "PortOpt": "PortOption",
    "StoreOpt": "StoreOption",
}
if TYPE_CHECKING:
    SinceOpt = SinceOption
    UntilOpt = UntilOption
    SiteOpt = SiteOption
    ObserverOpt = ObserverOption
    OrgOpt = OrgOption
    HeurOpt = HeurOption
    PortOpt = PortOption
    StoreOpt = StoreOption


def engine_config(
    site: str,
    observer: str,
    organization: str,
    heuristic: list[str] | None,
    port: list[str] | None,
) -> EngineConfig:
    """The engine settings from the shared options; a bad ``--port`` is a usage error."""
    from sensor.engine import EngineConfig

    ports: dict[int, str] = {}
    udp_ports: dict[int, str] = {}
    for item in port or []:
        spec, _, proto = item.partition("=")
        num, _, transport = spec.partition("/")
        if not num.isdigit() or not proto or transport not in ("", "tcp", "udp"):
            raise fail(
                f"--port expects PORT=PROTOCOL or PORT/udp=PROTOCOL (e.g. 5020=modbus, "
                f"20001/udp=dnp3), got {item!r}"
            )
        (udp_ports if transport == "udp" else ports)[int(num)] = proto
    return EngineConfig(
        site=site,
        observer=observer,
        organization=organization,
        heuristics=tuple(heuristic) if heuristic else None,
        ports=ports,
        udp_ports=udp_ports,
    )


def open_engine(config: EngineConfig) -> Engine:
    """An engine, or the usage error its configuration raises (unknown protocol name...)."""
    from sensor.engine import Engine

    try:
        return Engine(config)
    except ValueError as exc:
        raise fail(str(exc)) from None
