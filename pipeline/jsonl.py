"""JSON lines sink: one nested ECS document per line, to a file or a stream (stdout).

Documents arrive flat (dotted keys) and leave nested (``pipeline.docs.nest``), compact, one
per line, so ``jq``, Filebeat or ``icsmon`` itself can read them back line by line.
"""

from __future__ import annotations

import io
import logging
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any

from pipeline import kinds as doc_kinds
from pipeline.docs import dumps, nest

log = logging.getLogger(__name__)


class JsonlSinkError(Exception):
    """The output file cannot be opened; the message is one line naming the file."""


class JsonlSink:
    """Writes ``nest(doc)`` as one compact JSON line per document.

    ``target`` is a path (``"-"`` means stdout), a binary stream or a text stream. Only
    documents whose kind is in ``kinds`` are written (default: all). A stream that goes away
    (``icsmon ... | head``) stops the output quietly; it is counted, not raised.
    """

    def __init__(
        self,
        target: str | Path | IO[str] | IO[bytes] | None = None,
        *,
        kinds: Iterable[str] | None = None,
        append: bool = False,
        line_buffered: bool | None = None,
    ) -> None:
        known = doc_kinds.names()
        self.kinds = frozenset(kinds) if kinds is not None else frozenset(known)
        unknown = self.kinds - set(known)
        if unknown:
            raise ValueError(f"unknown document kinds {sorted(unknown)}; known: {', '.join(known)}")
        self._owns_stream = False
        self.name: str
        if target is None or target == "-":
            target = sys.stdout
        if isinstance(target, str | Path):
            path = Path(target)
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                self._stream: IO[Any] = open(path, "ab" if append else "wb")  # noqa: SIM115
            except OSError as exc:
                raise JsonlSinkError(
                    f"{path}: cannot open for writing: {exc.strerror or exc}"
                ) from exc
            self._owns_stream = True
            self._binary = True
            self.name = str(path)
        else:
            self._stream = target
            self._binary = _is_binary(target)
            self.name = getattr(target, "name", "<stream>")
        # A terminal or a pipe read by a person should see alerts as they happen.
        if line_buffered is None:
            line_buffered = not self._owns_stream
        self._line_buffered = line_buffered
        self._closed = False
        self._broken = False
        self._counts = {"written": 0, "skipped": 0, "dropped": 0, "errors": 0}

    def write(self, kind: str, doc: dict) -> None:
        if kind not in self.kinds:
            doc_kinds.get(kind)  # an unknown kind is a programming error: raises
            self._counts["skipped"] += 1
            return
        if self._closed or self._broken:
            self._counts["dropped"] += 1
            return
        line = dumps(nest(doc)) + b"\n"
        try:
            if self._binary:
                self._stream.write(line)
            else:
                self._stream.write(line.decode())
            if self._line_buffered:
                self._stream.flush()
        except BrokenPipeError:
            self._broken = True
            self._counts["dropped"] += 1
            return
        except (OSError, ValueError) as exc:
            # Disk full, stream closed under us: count and carry on, the sensor must not stop.
            self._counts["errors"] += 1
            self._counts["dropped"] += 1
            if self._counts["errors"] == 1:
                log.error("%s: cannot write: %s", self.name, exc)
            return
        self._counts["written"] += 1

    def flush(self) -> None:
        if self._closed or self._broken:
            return
        try:
            self._stream.flush()
        except BrokenPipeError:
            self._broken = True
        except (OSError, ValueError) as exc:
            self._counts["errors"] += 1
            log.error("%s: cannot flush: %s", self.name, exc)

    def close(self) -> None:
        if self._closed:
            return
        self.flush()
        self._closed = True
        if self._owns_stream:
            try:
                self._stream.close()
            except OSError as exc:
                self._counts["errors"] += 1
                log.error("%s: cannot close: %s", self.name, exc)

    def stats(self) -> dict[str, int]:
        return dict(self._counts)

    def __enter__(self) -> JsonlSink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _is_binary(stream: object) -> bool:
    """Text streams (sys.stdout, StringIO, files opened "w") get str; binary ones bytes."""
    if isinstance(stream, io.TextIOBase):
        return False
    if isinstance(stream, io.BufferedIOBase | io.RawIOBase):
        return True
    mode = getattr(stream, "mode", "")
    return isinstance(mode, str) and "b" in mode
