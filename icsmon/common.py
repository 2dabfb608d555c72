"""What every ``icsmon`` command shares: the error console, the exit codes, the error line,
and the options that build a sensor engine (``replay``, ``sense`` and ``baseline learn``).

Every message that carries a path, a rule or text from the wire is printed as plain text,
never read as rich markup: a folder named ``[bold]plant[/]`` prints as it is.
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from rich.console import Console

    from sensor.engine import Engine, EngineConfig


def __getattr__(name: str) -> Any:
    # ``err``, the console of error lines and progress on stderr: made (and rich imported)
    # when first used, which a sensor's start-up need not pay for
    if name == "err":
        return _err()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
    return typer.Exit(int(code))


# ---- a time range over stored history (icsmon hunt, icsmon control hunt) ------------------

SinceOpt = Annotated[
    str | None,
    typer.Option("--since", help="From this time: 7d, 12h, or an ISO date/time (UTC)"),
]
UntilOpt = Annotated[
    str | None, typer.Option("--until", help="Up to this time (exclusive), same forms")
]


# ---- the options that build an engine -----------------------------------------------------

SiteOpt = Annotated[
    str, typer.Option("--site", envvar="ICSMON_SITE", help="Site id carried by every document")
]
ObserverOpt = Annotated[
    str,
    typer.Option("--observer", envvar="ICSMON_OBSERVER", help="Sensor name (default: host name)"),
]
OrgOpt = Annotated[
    str, typer.Option("--org", envvar="ICSMON_ORG", help="Organisation (enterprise) id")
]
HeurOpt = Annotated[
    list[str] | None,
    typer.Option("--heuristic", help="Probe this protocol on every port (repeatable)"),
]
PortOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--port",
        help="PORT=PROTOCOL (TCP) or PORT/udp=PROTOCOL: dissect this port as this protocol "
        "(repeatable)",
    ),
]
StoreOpt = Annotated[
    Path | None,
    typer.Option(
        "--store",
        envvar="ICSMON_STORE",
        help="Embedded store file (default: icsmon.db in the user data folder)",
    ),
]


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
