"""The sensor's compiled build (mypyc, see setup.py and sensor/__init__.py).

The per-packet modules (and the baseline's per-event ones) are compiled at install time; the Python source stays the reference.
These tests check that the build is the one in use, that it decodes exactly like the source,
and that an edited source file is never shadowed by an older compiled module.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import sensor
import sensor.engine as engine_module
from tests.support import REPO

CAPTURES = sorted((REPO / "pcaps").glob("*/*.pcap"))


def _built() -> bool:
    return any(sensor._extension(name) for name in sensor.COMPILED)


needs_build = pytest.mark.skipif(
    not _built(), reason="icsmon was installed without the compiled build (ICSMON_PURE=1)"
)


@needs_build
def test_the_compiled_build_is_in_use() -> None:
    if os.environ.get("ICSMON_PURE") == "1":
        pytest.skip("ICSMON_PURE=1 is set")
    assert sensor.COMPILED_IN_USE, (
        "a source file is newer than its compiled module: run `pip install -e .`"
    )
    assert not engine_module.__file__.endswith(".py")


def _run(code: str, args: list[Path], pure: bool) -> str:
    """``code`` run by a new interpreter on ``args``, the compiled build or (``pure``) the
    source; its standard output."""
    env = {k: v for k, v in os.environ.items() if k != "ICSMON_PURE"}
    if pure:
        env["ICSMON_PURE"] = "1"
    return subprocess.run(
        [sys.executable, "-c", code, *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=600,
        check=True,
    ).stdout


def _replay(paths: list[Path], pure: bool) -> str:
    code = (
        "import sys, orjson, sensor\n"
        "from sensor.engine import Engine, EngineConfig\n"
        "eng = Engine(EngineConfig(site='s', observer='o'))\n"
        "print('compiled' if sensor.COMPILED_IN_USE else 'source')\n"
        "for ev in eng.replay(sys.argv[1:]):\n"
        "    print(orjson.dumps(ev).decode())\n"
        "print(orjson.dumps(eng.stats).decode())\n"
        "print(orjson.dumps(sorted(eng.changed_assets(), key=str)).decode())\n"
    )
    return _run(code, paths, pure)


@needs_build
def test_compiled_and_source_decode_the_same() -> None:
    """Every capture in pcaps/ (all three protocols, anomalies included): same events, same
    counters, same assets, byte for byte."""
    assert CAPTURES
    compiled = _replay(CAPTURES, pure=False)
    source = _replay(CAPTURES, pure=True)
    assert compiled.split("\n", 1)[0] == "compiled"
    assert source.split("\n", 1)[0] == "source"
    assert compiled.count("\n") > 1000
    assert compiled.split("\n", 1)[1] == source.split("\n", 1)[1]


def _alerts(paths: list[Path], pure: bool) -> str:
    """The shipped pack's alerts (and the engine's counters) over a replay of ``paths``."""
    code = (
        "import sys, orjson, sensor\n"
        "import detectors.sigma.engine as module\n"
        "from detectors.sigma import SigmaEngine\n"
        "from sensor.engine import Engine, EngineConfig\n"
        "eng = Engine(EngineConfig(site='s', observer='o'))\n"
        "sigma = SigmaEngine.load()\n"
        "print('source' if module.__file__.endswith('.py') else 'compiled')\n"
        "for ev in eng.replay(sys.argv[1:]):\n"
        "    for alert in sigma.process(ev):\n"
        "        print(orjson.dumps(alert).decode())\n"
        "for alert in sigma.flush():\n"
        "    print(orjson.dumps(alert).decode())\n"
        "print(orjson.dumps(sigma.stats).decode())\n"
    )
    return _run(code, paths, pure)


@needs_build
def test_compiled_and_source_alert_the_same() -> None:
    """The Sigma engine, correlations and alerts are compiled too: over every capture in
    pcaps/, the same alerts (ids, counts, correlation fields) and counters, byte for byte."""
    compiled = _alerts(CAPTURES, pure=False)
    source = _alerts(CAPTURES, pure=True)
    assert compiled.split("\n", 1)[0] == "compiled"
    assert source.split("\n", 1)[0] == "source"
    assert compiled.count("\n") > 100
    assert compiled.split("\n", 1)[1] == source.split("\n", 1)[1]


_BASELINE_RUN = """
import sys, orjson, sensor
from pathlib import Path
from sensor.engine import Engine, EngineConfig
from detectors.baseline import BaselineDetector, BaselineLearner
import detectors.baseline.detector as detector_module
print("compiled" if sensor.COMPILED_IN_USE else "source", detector_module.__file__.endswith(".py"))
def events(path):
    return list(Engine(EngineConfig(site="s", observer="o")).replay([path]))
learner = BaselineLearner()
for event in events(sys.argv[1]):
    learner.observe(event)
baseline = learner.result()
print(baseline.to_json())
for path in sys.argv[2:]:
    for tolerance in (0.1, 0.0):
        detector = BaselineDetector(baseline, tolerance=tolerance, dedup_window=0)
        for event in events(path):
            print(orjson.dumps(detector.process(event)).decode())
        print(orjson.dumps(detector.flush()).decode())
        print(orjson.dumps(detector.stats).decode(), detector.absence_summary())
"""


@needs_build
def test_compiled_and_source_baseline_the_same() -> None:
    """The baseline (learning and every check) compiled and from source: the same learned
    document and the same alerts on every capture of pcaps/baseline and pcaps/plant."""
    train = REPO / "pcaps" / "baseline" / "train.pcap"
    others = sorted((REPO / "pcaps" / "baseline").glob("*.pcap")) + sorted(
        (REPO / "pcaps" / "plant").glob("*.pcap")
    )
    runs = {pure: _run(_BASELINE_RUN, [train, *others], pure) for pure in (False, True)}
    assert runs[False].split("\n", 1)[0] == "compiled False"
    assert runs[True].split("\n", 1)[0] == "source True"
    assert "baseline-new-conversation" in runs[False]
    assert "baseline-value-out-of-range" in runs[False]
    assert runs[False].split("\n", 1)[1] == runs[True].split("\n", 1)[1]


_ROLLUPS_RUN = """
import sys, orjson, sensor
import sensor.rollups as module
from sensor.engine import Engine, EngineConfig
from sensor.rollups import Rollups
print("source" if module.__file__.endswith(".py") else "compiled")
engine = Engine(EngineConfig(site="s", observer="o"))
rollups = Rollups(engine.ctx, 10.0)
for event in engine.replay(sys.argv[1:]):
    for doc in rollups.add(event):
        print(orjson.dumps(doc).decode())
for doc in rollups.flush():
    print(orjson.dumps(doc).decode())
print(orjson.dumps(rollups.stats).decode())
"""


@needs_build
def test_compiled_and_source_roll_up_the_same() -> None:
    """Rollups compiled and from source over every capture in pcaps/: the same documents
    (written values keep their int or float type), byte for byte."""
    runs = {pure: _run(_ROLLUPS_RUN, CAPTURES, pure) for pure in (False, True)}
    assert runs[False].split("\n", 1)[0] == "compiled"
    assert runs[True].split("\n", 1)[0] == "source"
    assert "icsmon.rollup.written.min" in runs[False]
    assert runs[False].split("\n", 1)[1] == runs[True].split("\n", 1)[1]


_RUN_LOOP = """
import sys, orjson, sensor
import icsmon.loop as module
from icsmon.run import Run, load_detectors
from sensor.engine import Engine, EngineConfig
from sensor.heartbeat import Heartbeats
from sensor.rollups import Rollups
print("source" if module.__file__.endswith(".py") else "compiled")
class Sink:
    kinds = ("event", "alert", "rollup", "heartbeat", "asset", "finding")
    def write(self, kind, doc):
        print(kind, orjson.dumps(doc).decode())
    def write_events(self, batch):
        print("block", len(batch))
for want in ("alerts", "events", "rollups"):
    engine = Engine(EngineConfig(site="s", observer="o"))
    run = Run(engine, load_detectors(None, False, None, None), Sink(),
              heartbeats=Heartbeats(engine.ctx, 30.0), rollups=Rollups(engine.ctx, 10.0))
    for doc in run.process_batches(engine.replay_batches(sys.argv[1:], None),
                                   want_events=want == "events", want_rollups=want == "rollups"):
        print(want, orjson.dumps(doc).decode())
    run.stop()
    print(run.alerts, run.pdus, orjson.dumps(run.counters()).decode())
"""


@needs_build
def test_compiled_and_source_run_the_same() -> None:
    """The run's loop (icsmon/loop.py) compiled and from source over every capture in pcaps/:
    the same documents to the sink and to the caller, in the same order, and the same
    counters, for alerts, events and rollups asked."""
    runs = {pure: _run(_RUN_LOOP, CAPTURES, pure) for pure in (False, True)}
    assert runs[False].split("\n", 1)[0] == "compiled"
    assert runs[True].split("\n", 1)[0] == "source"
    assert "\nalert " in runs[False] and "\nheartbeat " in runs[False]
    assert runs[False].split("\n", 1)[1] == runs[True].split("\n", 1)[1]


@needs_build
def test_icsmon_chooses_compiled_or_source_before_its_modules_load() -> None:
    """``icsmon.loop`` is compiled: imported first (before any other package with compiled
    modules), it is still the source with ICSMON_PURE=1, as the rest of the sensor is."""
    probe = (
        "import icsmon.loop as m, sensor; print(m.__file__.endswith('.py'), sensor.COMPILED_IN_USE)"
    )
    assert _run(probe, [], pure=True).split() == ["True", "False"]
    assert _run(probe, [], pure=False).split() == ["False", "True"]


@needs_build
def test_an_edited_source_is_not_shadowed(tmp_path: Path) -> None:
    """A source file newer than its compiled module: the whole sensor runs from source, with
    one warning naming the file."""
    copy = tmp_path / "sensor"
    # every package with a compiled module (sensor.COMPILED), so the copy's build is whole
    for package in sorted({name.split(".")[0] for name in sensor.COMPILED}):
        shutil.copytree(
            REPO / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    probe = "import sensor, sensor.engine; print(sensor.COMPILED_IN_USE, sensor.engine.__file__.endswith('.py'))"
    env = {k: v for k, v in os.environ.items() if k != "ICSMON_PURE"}
    env["PYTHONPATH"] = str(tmp_path)

    def run() -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-c", probe],
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp_path,
            timeout=120,
            check=True,
        )

    fresh = run()
    assert fresh.stdout.split() == ["True", "False"], fresh.stderr
    modbus = copy / "protocols" / "modbus" / "parser.py"
    later = max(p.stat().st_mtime for p in tmp_path.rglob("*.so")) + 10
    os.utime(modbus, (later, later))
    stale = run()
    assert stale.stdout.split() == ["False", "True"]
    assert "sensor/protocols/modbus/parser.py is newer than its compiled module" in stale.stderr


def test_any_buffer_and_number_types_are_accepted() -> None:
    """The compiled build checks annotated types at run time: a caller's bytearray, memoryview
    or integer timestamp must still be taken, as the source build takes them."""
    frame = (REPO / "pcaps" / "modbus" / "modbus_polling.pcap").read_bytes()[40 : 40 + 60]
    seen = []
    for data in (frame, bytearray(frame), memoryview(frame)):
        eng = engine_module.Engine(engine_module.EngineConfig(site="s", observer="o"))
        eng.feed(1_800_000_000, 1, data)
        events = list(eng.run(iter([(1_800_000_001, 1, data)])))
        assert eng.stats["packets"] == 2
        seen.append((events, eng.stats))
    assert seen[0] == seen[1] == seen[2]
