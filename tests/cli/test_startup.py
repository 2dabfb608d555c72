"""What a sensor's start-up imports: `icsmon replay` with the shipped rule pack, once the pack
is cached, runs without pySigma, PyYAML, rich (no table to print), the other commands'
modules, typer (a plain command line is read without it) and pydantic, and runs only the
dissectors its capture needs; what it prints, and every error and exit code, are the same
as typer's."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.support import REPO

CAPTURE = REPO / "pcaps" / "modbus" / "modbus_attack.pcap"

AUDIT = """
import atexit, json, sys
def audit():  # an exit handler: a replay that ended well leaves without raising SystemExit
    import types
    from sensor.protocols import DISSECTORS
    loaded = sorted({m.split(".")[0] for m in sys.modules} | {m for m in sys.modules if m.startswith("icsmon.")})
    ran = [f"dissector:{m.NAME}" for m in DISSECTORS if type(m) is types.ModuleType]
    print(json.dumps(loaded + ran), file=sys.stderr)
atexit.register(audit)
sys.argv = ["icsmon", *sys.argv[1:]]
from icsmon.cli import main
main()
"""


def _replay(cache: Path, *args: str) -> tuple[str, set[str]]:
    run = subprocess.run(
        [sys.executable, "-c", AUDIT, "replay", str(CAPTURE), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "HOME": str(cache), "ICSMON_RULE_CACHE": str(cache)},
        check=True,
    )
    return run.stdout, set(json.loads(run.stderr.strip().splitlines()[-1]))


def test_a_replay_starts_with_what_it_needs(tmp_path: Path) -> None:
    args = ("--format", "jsonl", "--sink", "none")
    first, _ = _replay(tmp_path, *args)  # loads the pack in full, and caches it
    alerts, loaded = _replay(tmp_path, *args)
    assert alerts == first and alerts.count("\n") > 0
    assert not loaded & {"sigma", "jinja2", "pyparsing", "rich", "yaml", "pydantic", "typer"}
    others = {m for m in loaded if m.startswith("icsmon.cmd_") and m != "icsmon.cmd_sensor"}
    assert not others
    # a capture of Modbus runs the Modbus dissector alone (sensor/protocols/__init__.py)
    assert {m for m in loaded if m.startswith("dissector:")} == {"dissector:modbus"}


def test_a_table_still_prints(tmp_path: Path) -> None:
    table, loaded = _replay(tmp_path, "--sink", "none")
    assert "rich" in loaded and "Modbus" in table


def _sensor_kwargs(monkeypatch, argv: list[str], plain: bool) -> dict:
    """The arguments the sensor command of ``argv`` is called with, its options checked by
    typer (pydantic) or by the sensor's plain checks (``icsmon.cli._without_pydantic``)."""
    import functools

    import typer

    from icsmon import cli, cmd_sensor

    seen: dict = {}
    name = argv[0]
    command = getattr(cmd_sensor, name)

    @functools.wraps(command)
    def record(**kwargs):
        seen.update(kwargs)

    monkeypatch.setattr(cmd_sensor, name, record)
    group = typer.main.get_command(cli._sensor_app())
    if plain:
        group = cli._without_pydantic(group)
    group.main(argv, prog_name="icsmon", standalone_mode=False)
    return seen


SENSOR_LINES = [
    ["replay", "a.pcap"],
    ["replay", "a.pcap", "b.pcap.gz", "--store", "s.db"],
    ["replay", "a.pcap", "--events", "--format", "jsonl", "--store", "s.db"],
    ["replay", "a.pcap", "-f", "table", "--sink", "jsonl", "--out", "o.jsonl", "--no-rules"],
    ["replay", "a.pcap", "--sink", "none", "--rules", "r", "--site-config", "c.yml"],
    ["replay", "a.pcap", "--site", "s1", "--observer", "o1", "--org", "e1", "--stats"],
    ["replay", "a.pcap", "--heuristic", "modbus", "--heuristic", "s7comm", "--port", "5020=modbus"],
    ["replay", "a.pcap", "--store-max-events", "100", "--store-max-bytes", "0"],
    ["replay", "a.pcap", "--store-max-age-days", "1.5", "--rollup-interval", "60", "--rollups"],
    ["replay", "a.pcap", "--no-store-events", "--ship", "all", "--sink", "kafka"],
    ["replay", "a.pcap", "--baseline", "b.json", "--learn", "90s", "--content", "p.json"],
    ["replay", "a.pcap", "--store-max-age-days", "2", "--rollup-interval", "1e2"],
    ["sense", "-i", "eth0", "--bpf", "tcp port 502", "--workers", "2", "--user", "nobody"],
    ["sense", "--iface", "eth1", "--control-key", "k.pem", "--sink", "kafka", "--stats"],
]


def _assert_the_same(made: dict | None, typer_made: dict, argv: list[str]) -> None:
    """The same values as typer's, of the same types (a list's items too)."""
    assert made == typer_made, argv
    assert [type(v) for v in made.values()] == [type(v) for v in typer_made.values()]
    for key, value in made.items():
        if isinstance(value, list):
            assert [type(v) for v in value] == [type(v) for v in typer_made[key]]


# values typer refuses, with its own message
BAD_VALUES = [
    ["replay", "a.pcap", "--rollup-interval", "0"],
    ["replay", "a.pcap", "--format", "xml"],
    ["replay", "a.pcap", "--format", "JSONL"],
    ["replay", "a.pcap", "--store-max-bytes", "-1"],
    ["replay", "a.pcap", "--store-max-events", "abc"],
    ["sense", "-i", "eth0", "--workers", "65"],
]


def test_the_sensor_options_are_what_typer_makes(monkeypatch) -> None:
    """The sensor's plain checks give each option the value typer's own checks give it
    (the same type too), whether set by a flag or by its environment variable."""
    import pytest

    monkeypatch.setenv("ICSMON_STORE_MAX_EVENTS", "7")
    monkeypatch.setenv("ICSMON_SITE", "plant-7")
    for argv in SENSOR_LINES:
        typer_made = _sensor_kwargs(monkeypatch, argv, plain=False)
        _assert_the_same(_sensor_kwargs(monkeypatch, argv, plain=True), typer_made, argv)
    for bad in BAD_VALUES:
        messages = []
        for plain in (False, True):
            with pytest.raises(Exception) as exc:
                _sensor_kwargs(monkeypatch, bad, plain=plain)
            messages.append((type(exc.value), str(exc.value)))
        assert messages[0] == messages[1], bad


# Command lines the sensor reads without typer (icsmon.cli._plain_line): each gives the
# command the arguments typer gives it
PLAIN_LINES = [
    *SENSOR_LINES[:11],
    ["replay", "a.pcap", "--format=jsonl", "--store=s.db", "--store-max-bytes=0"],
    ["replay", "--store", "s.db", "a.pcap", "--no-rules", "b.pcap"],
    ["replay", "a.pcap", "--sink", "none", "--sink", "store", "--site", "x", "--site", "y"],
    ["replay", "a.pcap", "--no-store-events", "--store-events", "--stats", "--rollups"],
    ["replay", "a.pcap", "--port", "5020=modbus", "--port=20001/udp=dnp3", "--heuristic=dnp3"],
    ["replay", "a.pcap", "-f", "jsonl", "--events", "--config", "c.toml", "--out", "o"],
    ["replay", "a.pcap", "--rollup-interval", "1", "--store-max-age-days", "0.5"],
    ["replay", "a.pcap", "--site", "", "--observer", "a=b", "--learn", "7d"],
    ["sense", "-i", "eth0"],
    ["sense", "--iface=eth0", "--workers", "64", "--store-max-bytes", "0"],
    ["replay", "a.pcap", "--store=", "--site=", "--out", ""],
    ["sense", "-i", "eth0", "--workers=1", "--control-key", "k", "--sink", "kafka", "--ship", "x"],
]

# ... and those it leaves to typer: its help, its errors, or a value it checks itself
TYPER_LINES = [
    ["replay", "--help"],
    ["replay", "a.pcap", "--help"],
    ["sense", "--help"],
    ["replay"],
    ["sense"],
    ["sense", "--bpf", "tcp"],
    ["replay", "a.pcap", "--bogus"],
    ["replay", "a.pcap", "-x"],
    ["replay", "a.pcap", "-fjsonl"],
    ["replay", "a.pcap", "--events=1"],
    ["replay", "a.pcap", "--store"],
    ["replay", "a.pcap", "--site", "-x"],
    ["replay", "a.pcap", "--site", "--help"],
    ["replay", "--", "a.pcap"],
    ["replay", "-", "a.pcap"],
    *BAD_VALUES,
    ["replay", "a.pcap", "--rollup-interval", "1e2"],
    ["replay", "a.pcap", "--store-max-events", " 7"],
    ["sense", "-i", "eth0", "--workers", "0"],
    ["sense", "-i", "eth0", "eth1"],
]


def test_the_plain_reading_is_what_typer_makes(monkeypatch) -> None:
    """A plain command line read without typer gives the command the values typer gives it
    (the same types too, flags, environment variables and defaults included); any other
    line is left to typer, so its help and errors stay typer's."""
    from icsmon import cli, cmd_sensor

    for env in ({}, {"ICSMON_STORE_MAX_EVENTS": "7", "ICSMON_SITE": "plant-7"}):
        for name in ("ICSMON_STORE_MAX_EVENTS", "ICSMON_SITE", "ICSMON_STORE", "ICSMON_CONFIG"):
            monkeypatch.delenv(name, raising=False)
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        monkeypatch.setenv("ICSMON_CONTENT", "")  # empty: not set, as click reads it
        for argv in PLAIN_LINES:
            plain = cli._plain_line(getattr(cmd_sensor, argv[0]), argv[1:])
            _assert_the_same(plain, _sensor_kwargs(monkeypatch, argv, plain=False), argv)
        for argv in TYPER_LINES:
            assert cli._plain_line(getattr(cmd_sensor, argv[0]), argv[1:]) is None, argv
    monkeypatch.setenv("ICSMON_STORE_MAX_EVENTS", "abc")  # typer's error for the variable
    assert cli._plain_line(cmd_sensor.replay, ["a.pcap"]) is None


RUN_AS = """
import sys
from icsmon import cli
how, *args = sys.argv[1:]
sys.argv = ["icsmon", *args]
if how == "plain":
    cli.main()
else:  # the sensor's command line as typer reads it
    import typer
    cli._without_pydantic(typer.main.get_command(cli._sensor_app()))(args, prog_name="icsmon")
"""


def _as(home: Path, how: str, *args: str, script: str = RUN_AS) -> tuple[int, str, str]:
    run = subprocess.run(
        [sys.executable, "-c", script, how, *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "COLUMNS": "200", "HOME": str(home)},
        timeout=120,
    )
    return run.returncode, run.stdout, run.stderr


def test_a_plain_line_prints_and_ends_as_typer(tmp_path: Path) -> None:
    """Output, error lines and exit codes of sensor runs read without typer are typer's."""
    notes = tmp_path / "notes.txt"
    notes.write_text("not a capture\n")
    capture = str(CAPTURE)
    for args in (
        [capture, "--format", "jsonl", "--sink", "none", "--no-rules", "--events"],
        [capture, "--sink", "none", "--stats"],
        [str(tmp_path / "missing.pcap"), "--sink", "none"],
        [str(notes), "--sink", "none"],
        [capture, "--sink", "none", "--port", "bad"],
        [capture, "--sink", "none", "--heuristic", "nope"],
        [capture, "--sink", "none", "--ship", "all"],
        [capture, "--sink", "jsonl"],
        [capture, "--sink", "none", "--rules", str(tmp_path / "no-rules")],
    ):
        plain = _as(tmp_path, "plain", "replay", *args)
        assert plain == _as(tmp_path, "typer", "replay", *args), args
        assert plain[0] == 0 or plain[2].startswith("error:"), plain


RAISE = """
import errno, functools, sys
from icsmon import cli, cmd_sensor
how, kind, *args = sys.argv[1:]
replay = cmd_sensor.replay

@functools.wraps(replay)
def raising(**kwargs):
    import typer
    raise {
        "interrupt": KeyboardInterrupt(),
        "eof": EOFError(),
        "pipe": BrokenPipeError(errno.EPIPE, "Broken pipe"),
        "exit": typer.Exit(3),
        "bug": RuntimeError("a bug"),
    }[kind]

cmd_sensor.replay = raising
sys.argv = ["icsmon", *args]
if how == "plain":
    cli.main()
else:
    import typer
    cli._without_pydantic(typer.main.get_command(cli._sensor_app()))(args, prog_name="icsmon")
"""


def test_what_a_command_raises_ends_as_typer_ends_it(tmp_path: Path) -> None:
    """An exception out of a sensor command read without typer ends the process as typer's
    main ends it: Ctrl-C at 130, end of input and a closed pipe at 1 with typer's words, an
    exit at its code, anything else as a traceback."""
    for kind, code in (("interrupt", 130), ("eof", 1), ("pipe", 1), ("exit", 3), ("bug", 1)):
        args = ("replay", str(CAPTURE), "--sink", "none")
        plain = _as(tmp_path, "plain", kind, *args, script=RAISE)
        typer_ended = _as(tmp_path, "typer", kind, *args, script=RAISE)
        assert plain[0] == typer_ended[0] == code, (kind, plain, typer_ended)
        assert plain[1] == typer_ended[1], kind
        last = [p[2].strip().splitlines()[-1:] for p in (plain, typer_ended)]
        assert last[0] == last[1], (kind, plain[2], typer_ended[2])


def test_the_store_writer_starts_first_and_goes_when_the_start_fails(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    """``replay``'s store writer process starts before the engine opens and the rules load
    (its own start-up then runs beside theirs); when what follows fails (a bad ``--port``),
    the process ends and the file it would have made is not left behind; a store that
    cannot be used is still one error line, before any output."""
    import pytest
    import typer

    from icsmon import cmd_sensor

    order: list[str] = []
    for name, what in (("_start_store", "store"), ("open_engine", "engine")):
        real = getattr(cmd_sensor, name)

        def called(*args, _real=real, _what=what, **kwargs):
            order.append(_what)
            return _real(*args, **kwargs)

        monkeypatch.setattr(cmd_sensor, name, called)
    monkeypatch.setenv("ICSMON_RULE_CACHE", str(tmp_path / "cache"))
    db = tmp_path / "s.db"
    cmd_sensor.replay([CAPTURE], store=db, fmt=cmd_sensor.Format.jsonl)
    assert order == ["store", "engine"]
    assert capsys.readouterr().out.count("\n") > 0 and db.exists()
    with pytest.raises(typer.Exit):
        cmd_sensor.replay([CAPTURE], store=tmp_path / "new.db", port=["bad"])
    assert not list(tmp_path.glob("new.db*"))
    assert capsys.readouterr().err.startswith("error: --port expects")
    bad = tmp_path / "not-a-store.db"
    bad.write_bytes(b"this is not SQLite" * 100)
    with pytest.raises(typer.Exit):
        cmd_sensor.replay([CAPTURE], store=bad, fmt=cmd_sensor.Format.jsonl)
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and str(bad) in err


FROZEN_AT_EXIT = """
import atexit, gc, sys
# registered before the command's own: runs after them, when the interpreter's teardown is next
atexit.register(lambda: print("frozen", gc.get_freeze_count() > 0, file=sys.stderr))
sys.argv = ["icsmon", *sys.argv[1:]]
from icsmon.cli import main
main()
"""


def test_a_sensor_leaves_its_heap_out_of_the_exit_collection(tmp_path: Path) -> None:
    """A sensor command's last exit handler freezes the collector's objects (its rules,
    tables...): the interpreter's teardown then does not walk them; its output and exit
    code are as before, and the other commands are left as they were."""
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "ICSMON_RULE_CACHE": "off"}
    for args, frozen in (
        (["replay", str(CAPTURE), "--sink", "none", "--format", "jsonl"], True),
        (["version"], False),
    ):
        run = subprocess.run(
            [sys.executable, "-c", FROZEN_AT_EXIT, *args],
            cwd=REPO,
            capture_output=True,
            text=True,
            env=env,
        )
        assert run.returncode == 0, run.stderr
        assert run.stderr.splitlines()[-1] == f"frozen {frozen}", run.stderr
        assert run.stdout


AT_LAUNCH = """
import atexit, json, sys
import pipeline.store.launch as launch
start = launch.WriterProcess.__init__
def started(self, *args, **kwargs):
    if not hasattr(launch, "loaded"):
        launch.loaded = sorted(sys.modules)
    start(self, *args, **kwargs)
launch.WriterProcess.__init__ = started
sys.argv = ["icsmon", *sys.argv[1:]]
from icsmon.cli import main
# an exit handler: a replay that ended well leaves without returning from main
atexit.register(lambda: print(json.dumps(launch.loaded), file=sys.stderr))
main()
"""


def test_the_store_writer_starts_before_the_printing_and_the_events_modules(
    tmp_path: Path,
) -> None:
    """A replay with a store starts its writer process before it imports what prints
    (icsmon.output), the events' documents (orjson, pipeline.docs) and dataclasses: the
    writer's own start-up (an interpreter, the store's modules) is the longer one. The
    writer process itself imports no subprocess (``pipeline.store.launch`` does when it
    starts one)."""
    run = subprocess.run(
        [
            sys.executable,
            "-c",
            AT_LAUNCH,
            "replay",
            str(CAPTURE),
            "--store",
            str(tmp_path / "s.db"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "ICSMON_RULE_CACHE": "off"},
        check=True,
    )
    loaded = set(json.loads(run.stderr.strip().splitlines()[-1]))
    assert "pipeline.store.launch" in loaded and "Modbus" in run.stdout
    assert not loaded & {"icsmon.output", "orjson", "pipeline.docs", "dataclasses", "sensor.engine"}
    code = "import sys, pipeline.store.process, pipeline.store.store; print('subprocess' in sys.modules)"
    child = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert child.stdout.strip() == "False"


def test_a_replay_hashes_without_openssl(tmp_path: Path) -> None:
    """The event ids (BLAKE2b), the store's content ids (SHA-1) and the rule cache's keys
    (SHA-256) come from CPython's own hash modules: a replay with a store, and its writer
    process, never load hashlib with OpenSSL's _hashlib (2-4 ms of each start-up); the
    digests are hashlib's."""
    import hashlib

    from pipeline.docs import dumps
    from pipeline.store.writer import doc_id
    from sensor.events import flow_uid

    args = ("--format", "jsonl", "--store", str(tmp_path / "s.db"))
    first, _ = _replay(tmp_path, *args)  # caches the pack
    alerts, loaded = _replay(tmp_path, *args)
    assert alerts == first and alerts.count("\n") > 0
    assert not loaded & {"hashlib", "_hashlib"}
    code = (
        "import sys, pipeline.store.process, pipeline.store.store; print('_hashlib' in sys.modules)"
    )
    child = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert child.stdout.strip() == "False"
    raw = b"site|observer|1:abc|1.000000|502"
    assert flow_uid("site", "observer", "1:abc", 1.0, 502) == (
        hashlib.blake2b(raw, digest_size=10).hexdigest()
    )
    doc = {"event.kind": "event", "n": 1}
    assert doc_id(doc) == "sha1:" + hashlib.sha1(dumps(doc)).hexdigest()


AT_END = """
import atexit, json, sys
sys.argv = ["icsmon", *sys.argv[1:]]
from icsmon.cli import main
# an exit handler: a replay that ended well does not return from main (cli._end_now)
atexit.register(lambda: print(json.dumps(sorted(sys.modules)), file=sys.stderr))
main()
"""


def test_a_replay_starts_without_what_it_never_uses(tmp_path: Path) -> None:
    """A replay with a store, and its writer process, import none of what only an error, a
    cache miss, Kafka or a watchlist needs: logging (a logger is made at its first message:
    sensor.logs), platformdirs
    (the spool's default folder, found when read: pipeline.config), tempfile (written only
    to the rule cache), detectors.content (no --content) and socket (the addresses' text
    and the host name come from _socket); what it prints is the same."""
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "ICSMON_RULE_CACHE": str(tmp_path)}
    runs = []
    for _ in range(2):  # the first caches the pack
        db = tmp_path / "s.db"
        for suffix in ("", "-wal", "-shm"):
            Path(f"{db}{suffix}").unlink(missing_ok=True)
        argv = ["replay", str(CAPTURE), "--format", "jsonl", "--events", "--store", str(db)]
        runs.append(
            subprocess.run(
                [sys.executable, "-c", AT_END, *argv],
                cwd=REPO,
                capture_output=True,
                text=True,
                env=env,
                check=True,
            )
        )
    assert runs[0].stdout == runs[1].stdout and runs[1].stdout.count("\n") > 0
    loaded = set(json.loads(runs[1].stderr.strip().splitlines()[-1]))
    assert "pipeline.store.launch" in loaded and "sensor.logs" in loaded
    never = {"logging", "platformdirs", "tempfile", "detectors.content", "socket"}
    assert not loaded & never
    code = "import sys, json, pipeline.store.process, pipeline.store.store; print(json.dumps(sorted(sys.modules)))"
    child = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert not set(json.loads(child.stdout)) & {"logging", "platformdirs"}
