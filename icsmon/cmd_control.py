"""``icsmon control ...``: the keys of the sensor control channel (pipeline/control.py) and
the message types it carries (wiring only)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from icsmon.common import fail, note

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
    from pipeline.control import types as registered

    for name, description in sorted(registered().items()):
        typer.echo(f"{name}\t{description}")
