"""The store writer's launch (``pipeline.store.launch._spawn``, ``os.posix_spawn``): the
child gets its two pipes as stdin and stdout and the inputs it is handed, no other
descriptor beyond 0-2, its exit codes as ``subprocess.Popen`` reports them, and a launch
that fails raises OSError and leaves no descriptor open."""

from __future__ import annotations

import json
import os
import signal
import sys

import pytest

from pipeline.store.launch import _spawn

CHILD = """
import json, os, sys
line = sys.stdin.buffer.readline()
def is_open(fd):
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True
fds = [fd for fd in range(256) if is_open(fd)]
inputs = [int(a) for a in sys.argv[1:]]
sys.stdout.write(json.dumps({"line": line.decode(), "fds": fds,
    "read": [os.read(fd, 100).decode() for fd in inputs]}) + "\\n")
sys.stdout.flush()
code = sys.stdin.buffer.readline()
if code.strip() == b"hang":
    import time
    time.sleep(60)
sys.exit(int(code or 0))
"""


def _open_fds() -> set[int]:
    return {int(n) for n in os.listdir("/proc/self/fd")}


def test_the_child_gets_its_pipes_and_inputs_only() -> None:
    stray_r, stray_w = os.pipe()
    os.set_inheritable(stray_r, True)  # as a descriptor this process was started with
    in_r, in_w = os.pipe()
    os.write(in_w, b"frames")
    try:
        child = _spawn([sys.executable, "-c", CHILD, str(in_r)], [in_r])
        child.stdin.write(b"hello\n")
        seen = json.loads(child.stdout.readline())
        assert seen["line"] == "hello\n" and seen["read"] == ["frames"]
        assert seen["fds"] == sorted({0, 1, 2, in_r})  # not the stray one
        assert child.poll() is None
        child.stdin.write(b"3\n")
        assert child.wait() == 3 and child.returncode == 3 and child.poll() == 3
        child.stdin.close()
        child.stdout.close()
    finally:
        for fd in (stray_r, stray_w, in_r, in_w):
            os.close(fd)


def test_a_killed_child_reads_as_popen_reports_it() -> None:
    child = _spawn([sys.executable, "-c", CHILD], [])
    child.stdin.write(b"x\n")
    child.stdout.readline()
    child.stdin.write(b"hang\n")
    child.kill()
    assert child.wait() == -signal.SIGKILL
    child.kill()  # ended and waited for: nothing to signal, no error (as Popen)
    child.terminate()
    assert child.returncode == -signal.SIGKILL
    child.stdin.close()
    child.stdout.close()


def test_a_launch_that_fails_raises_and_leaves_nothing_open(tmp_path) -> None:
    before = _open_fds()
    with pytest.raises(OSError):
        _spawn([str(tmp_path / "no-such-python"), "-c", "pass"], [])
    assert _open_fds() == before
