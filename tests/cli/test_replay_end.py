"""How a replay's process ends (``icsmon.cli._end_now``): a replay that ended well runs its
exit handlers, flushes its output and leaves without the interpreter's teardown; any other
end is the ordinary one."""

from __future__ import annotations

from pathlib import Path

from tests.cli.test_startup import CAPTURE, _as

ENDS = """
import atexit, os, sys

real_exit = os._exit

def _exit(code):  # how the process ends without the interpreter's teardown
    os.write(2, f"os._exit({code})\\n".encode())
    real_exit(code)

os._exit = _exit
atexit.register(lambda: print("handlers ran", file=sys.stderr, flush=True))
how, *args = sys.argv[1:]
sys.argv = ["icsmon", *args]
if how == "plain":
    from icsmon.cli import main
    main()
else:  # the sensor's command line as typer reads it: always the ordinary end
    import typer
    from icsmon import cli
    cli._without_pydantic(typer.main.get_command(cli._sensor_app()))(args, prog_name="icsmon")
"""


def test_a_replay_that_ended_well_leaves_without_the_teardown(tmp_path: Path) -> None:
    """Its exit handlers run, then ``os._exit``; its output is whole (as the ordinary end's,
    typer's), its store closed (no WAL beside it)."""
    for sink in ("none", "store"):
        ends = {}
        for how in ("plain", "typer"):
            to = ["--store", str(tmp_path / f"{how}.db")] if sink == "store" else ["--sink", "none"]
            args = ["replay", str(CAPTURE), "--events", "--format", "jsonl", "--stats", *to]
            ends[how] = _as(tmp_path, how, *args, script=ENDS)
        fast, ordinary = ends["plain"], ends["typer"]
        assert fast[0] == ordinary[0] == 0, fast[2]
        assert fast[1] == ordinary[1] and fast[1].count("\n") > 50
        assert fast[2].splitlines()[-2:] == ["handlers ran", "os._exit(0)"], fast[2]
        assert ordinary[2].splitlines()[-1] == "handlers ran", ordinary[2]
        assert fast[2].replace("os._exit(0)\n", "") == ordinary[2]
        assert (tmp_path / "plain.db").exists() == (sink == "store")
        assert not list(tmp_path.glob("*.db-*"))


def test_a_replay_that_failed_or_another_command_ends_the_ordinary_way(tmp_path: Path) -> None:
    """Its exit code is its own, its exit handlers run, and no os._exit."""
    for args, code in (
        (["replay", str(tmp_path / "missing.pcap"), "--sink", "none"], 1),
        (["version"], 0),
    ):
        returncode, _, stderr = _as(tmp_path, "plain", *args, script=ENDS)
        assert returncode == code, stderr
        assert stderr.splitlines()[-1] == "handlers ran", stderr
