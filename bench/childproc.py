"""Run a bench child to completion: wall time, CPU time and its own peak RSS.

The peak is the child's ``VmHWM`` read from ``/proc/PID/status`` while it runs, the figure
the tests use (tests/hardening/test_limits.py). ``wait4``'s ``ru_maxrss`` is not the
child's own: at ``exec`` Linux records the size of the address space being replaced, which
after a fork is a copy of the bench's own process (and with ``vfork`` the bench's own
peak), so a small child started by a large bench reads as large as the bench. ``VmHWM``
is sampled every few milliseconds; a child that lives shorter than one sample falls back
to ``ru_maxrss``, an upper bound, and says so.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from dataclasses import dataclass

SAMPLE_S = 0.005


@dataclass
class ChildRun:
    returncode: int
    wall_s: float
    cpu_s: float
    peak_rss_mb: float
    rss_source: str  # "VmHWM" or "ru_maxrss" (the child ended before a sample)
    stdout: bytes
    stderr: bytes
    # The child process itself (its threads, not its own children), from the kernel's
    # schedstat sampled like VmHWM: seconds on a CPU, and waiting for one while runnable.
    # Its wall time less both was spent blocked (disk, a pipe, a lock).
    main_cpu_s: float = 0.0
    main_wait_s: float = 0.0


def _vmhwm_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status", "rb") as status:
            for line in status:
                if line.startswith(b"VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0  # gone, a zombie (no Vm lines) or not readable


def own_peak_rss_mb() -> float:
    """This process's own peak RSS (``VmHWM``), without what it inherited at ``exec``."""
    return _vmhwm_kb(os.getpid()) / 1024


def _schedstat(pid: int, into: dict[tuple[int, int], tuple[int, int]]) -> None:
    """Each thread's time on a CPU and waiting on a run queue, in ns
    (``/proc/PID/task/TID/schedstat``), of ``pid`` and of its children, into ``into`` (the
    newest values per thread)."""
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat", "rb") as stat:
                fields = stat.read().split()
                into[(pid, int(tid))] = (int(fields[0]), int(fields[1]))
        except (OSError, ValueError, IndexError):
            continue
        try:
            with open(f"/proc/{pid}/task/{tid}/children", "rb") as kids:
                children = [int(k) for k in kids.read().split()]
        except (OSError, ValueError):
            continue
        for child in children:
            _schedstat(child, into)


def _drain(stream, into: list[bytes]) -> None:
    into.append(stream.read())


def run_measured(
    argv: list[str],
    *,
    env: dict[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    stdout: int | None = subprocess.PIPE,
    stderr: int | None = subprocess.PIPE,
) -> ChildRun:
    """Run ``argv`` to completion; its output is read in threads so a full pipe never stalls it."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=stdout, stderr=stderr, env=env, cwd=cwd)
    out: list[bytes] = []
    err: list[bytes] = []
    readers = [
        threading.Thread(target=_drain, args=(stream, into), daemon=True)
        for stream, into in ((proc.stdout, out), (proc.stderr, err))
        if stream is not None
    ]
    for reader in readers:
        reader.start()
    peak_kb = 0
    sched: dict[tuple[int, int], tuple[int, int]] = {}
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        peak_kb = max(peak_kb, _vmhwm_kb(proc.pid))
        _schedstat(proc.pid, sched)
        time.sleep(SAMPLE_S)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    for reader in readers:
        reader.join()
    source = "VmHWM" if peak_kb else "ru_maxrss"
    return ChildRun(
        returncode=proc.returncode,
        wall_s=wall,
        cpu_s=usage.ru_utime + usage.ru_stime,
        peak_rss_mb=(peak_kb or usage.ru_maxrss) / 1024,
        rss_source=source,
        stdout=out[0] if proc.stdout is not None else b"",
        stderr=err[0] if proc.stderr is not None else b"",
        main_cpu_s=sum(v[0] for k, v in sched.items() if k[0] == proc.pid) / 1e9,
        main_wait_s=sum(v[1] for k, v in sched.items() if k[0] == proc.pid) / 1e9,
    )
