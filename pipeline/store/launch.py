"""The store's writer process, started: the one part of ``pipeline.store.process`` a sensor
needs before anything else, light to import (no SQLite, no writer, no queries), so that the
child's own start-up (an interpreter and the store's imports, about 70 ms) runs beside the
sensor's imports and rule loading instead of after them. ``WriterStore(process=...)`` takes
a started process over; ``abandon`` ends one that is not wanted after all.

Also where a store's file is found (``--store``, ``$ICSMON_STORE``, the default), which the
start needs; ``pipeline.store.schema`` names the same functions.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, cast

if TYPE_CHECKING:
    import subprocess

STORE_ENV = "ICSMON_STORE"
PIPE_BYTES = 1 << 20  # the pipe's buffer (Linux lets a process raise its own up to 1 MiB)


def default_store_path() -> Path:
    """``$ICSMON_STORE`` if set, else ``icsmon.db`` in the user's data directory."""
    env = os.environ.get(STORE_ENV)
    if env:
        return Path(env).expanduser()
    import platformdirs  # only for the default: a sensor's start-up names its store

    return Path(platformdirs.user_data_dir("icsmon")) / "icsmon.db"


def resolve_store_path(path: str | os.PathLike[str] | None) -> Path:
    """An explicit ``--store PATH`` wins over ``$ICSMON_STORE`` and the default."""
    return Path(path).expanduser() if path else default_store_path()


class WriterProcess:
    """The writer process of the store at ``path`` (``python -m pipeline.store.process``),
    started with the store's ``options`` (``Store``'s) and ``inputs`` (read ends of the
    capture workers' pipes: the child's now, closed here). Its first reply says whether it
    opened the file (``WriterStore.ready``)."""

    def __init__(
        self,
        path: str | os.PathLike[str] | None,
        options: dict[str, Any],
        inputs: Sequence[int] = (),
    ) -> None:
        self.path = resolve_store_path(path)
        self.options = dict(options)
        self.new_file = not os.path.exists(self.path)  # abandon() removes what it made
        self.proc: subprocess.Popen[bytes]
        import subprocess  # here: the writer process imports this module, and needs none

        argv = [sys.executable, "-m", "pipeline.store.process", str(self.path)]
        argv.append(json.dumps(self.options))
        if inputs:
            argv.append(json.dumps(list(inputs)))
        try:
            self.proc = subprocess.Popen(
                argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                bufsize=0,
                pass_fds=tuple(inputs),
            )
        finally:
            for fd in inputs:  # the child's now: its end of input is the writers' closing
                os.close(fd)
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.requests: BinaryIO = self.proc.stdin  # type: ignore[assignment]
        # replies are read by the line: buffered, a read(2) per reply (unbuffered: per byte)
        raw = cast(io.FileIO, self.proc.stdout)  # bufsize=0: the pipe's file itself
        self.replies: BinaryIO = io.BufferedReader(raw)  # type: ignore[assignment]
        try:
            fcntl.fcntl(self.requests.fileno(), fcntl.F_SETPIPE_SZ, PIPE_BYTES)
        except OSError:
            pass  # a smaller pipe only means more, shorter waits

    def end(self) -> None:
        """The child's input closed (it closes the file and exits), waited for."""
        with contextlib.suppress(OSError):
            self.requests.close()
        self.proc.wait()
        self.replies.close()

    def abandon(self) -> None:
        """Not wanted after all (a bad rules file, say): the child ends without writing
        anything, and a file it created is removed."""
        self.end()
        if self.new_file:
            for suffix in ("", "-wal", "-shm"):
                with contextlib.suppress(OSError):
                    os.unlink(f"{self.path}{suffix}")
