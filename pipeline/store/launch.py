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
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, BinaryIO

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


class Child:
    """A started child process, what the store reads of a ``subprocess.Popen``: its pipes
    (``stdin``, ``stdout``: unbuffered files), ``pid``, ``returncode``, ``poll``, ``wait``
    and the signals (``send_signal``, ``terminate``, ``kill``). Started with
    ``os.posix_spawn`` (``_spawn``): subprocess, with selectors, select and locale, is ~2 ms
    of a sensor's start-up, for one child."""

    def __init__(self, pid: int, stdin: io.FileIO, stdout: io.FileIO) -> None:
        self.pid = pid
        self.stdin = stdin
        self.stdout = stdout
        self.returncode: int | None = None

    def poll(self) -> int | None:
        """The exit code (a signal's as its negative number) once ended, else None."""
        if self.returncode is None:
            self._reap(os.WNOHANG)
        return self.returncode

    def wait(self) -> int:
        while self.returncode is None:
            self._reap(0)
        return self.returncode

    def send_signal(self, sig: int) -> None:
        """``sig`` to the child, unless it has ended and been waited for (as Popen)."""
        if self.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def _reap(self, flags: int) -> None:
        try:
            pid, status = os.waitpid(self.pid, flags)
        except ChildProcessError:  # reaped already (SIGCHLD ignored): as Popen, code 0
            self.returncode = 0
            return
        if pid == self.pid:
            self.returncode = os.waitstatus_to_exitcode(status)


def _spawn(argv: list[str], inputs: Sequence[int]) -> Child:
    """``argv`` started with pipes for its stdin and stdout, and the descriptors ``inputs``
    kept open in it: what ``subprocess.Popen(argv, stdin=PIPE, stdout=PIPE, bufsize=0,
    pass_fds=inputs)`` did. The child gets no other descriptor beyond 0-2 (Python opens
    them not inheritable, PEP 446; one this process was started with is closed for it) and
    SIGPIPE and SIGXFSZ at their default actions, as Popen leaves them. An executable that
    cannot be started raises OSError, the pipes closed."""
    to_child, requests = os.pipe()
    replies, from_child = os.pipe()
    actions: list[tuple[int, ...]] = [
        (os.POSIX_SPAWN_DUP2, to_child, 0),  # (dup2 clears close-on-exec)
        (os.POSIX_SPAWN_DUP2, from_child, 1),
    ]
    with contextlib.suppress(OSError):  # no /proc: only what Python opened, not inheritable
        for name in os.listdir("/proc/self/fd"):
            fd = int(name)
            with contextlib.suppress(OSError):  # (the listing's own, closed by now)
                if fd > 2 and fd not in inputs and os.get_inheritable(fd):
                    actions.append((os.POSIX_SPAWN_CLOSE, fd))
    try:
        for fd in inputs:
            os.set_inheritable(fd, True)
        pid = os.posix_spawn(
            argv[0],
            argv,
            os.environ,
            file_actions=actions,
            setsigdef=(signal.SIGPIPE, signal.SIGXFSZ),
        )
    except BaseException:
        for fd in (requests, replies):
            os.close(fd)
        raise
    finally:
        os.close(to_child)
        os.close(from_child)
    return Child(pid, io.FileIO(requests, "wb"), io.FileIO(replies, "rb"))


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
        argv = [sys.executable, "-m", "pipeline.store.process", str(self.path)]
        argv.append(json.dumps(self.options))
        if inputs:
            argv.append(json.dumps(list(inputs)))
        try:
            self.proc = _spawn(argv, inputs)
        finally:
            for fd in inputs:  # the child's now: its end of input is the writers' closing
                os.close(fd)
        self.requests: BinaryIO = self.proc.stdin  # type: ignore[assignment]
        # replies are read by the line: buffered, a read(2) per reply (unbuffered: per byte)
        self.replies: BinaryIO = io.BufferedReader(self.proc.stdout)  # type: ignore[assignment]
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
