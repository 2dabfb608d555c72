"""The sensor: capture readers, flows and reassembly, dissectors, events.

The per-packet modules in ``COMPILED`` (and the per-event paths of the Sigma engine and the
baseline in ``detectors``, the store's events frame in ``pipeline`` and the run's loop in
``icsmon``, whose ``__init__.py`` make them import this package first) are also compiled
with mypyc when icsmon is installed (see setup.py): same source, C extensions beside it.
Python prefers an extension module to the source next to it, even after the source was
edited; so this package loads the Python source of all of them instead when

- ``ICSMON_PURE=1`` is set (profiling with py-spy, coverage-guided fuzzing, debugging), or
- any of them is older than its source file (an edit since the last ``pip install``),
  with one warning saying so.

All or none: compiled modules reach into each other's classes natively, a mix would fail.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import sys
import warnings
from pathlib import Path

# setup.py compiles exactly these (it reads this list)
COMPILED = (
    "sensor.engine",
    "sensor.flows",
    "sensor.events",
    "sensor.capture",
    "sensor.ring",  # a live port's frames, block by block
    "sensor.assets",
    "sensor.protocols.base",
    "sensor.protocols.modbus.parser",
    "sensor.protocols.enip.encap",
    "sensor.protocols.enip.epath",
    "sensor.protocols.enip.cip",
    "sensor.protocols.enip.identity",
    "sensor.protocols.enip.records",
    "sensor.protocols.enip.parser",
    "sensor.protocols.enip.datagram",
    "sensor.rollups",  # every event is counted into a rollup
    # the baseline's per-event path (feature extraction, checks, learning)
    "detectors.baseline.features",
    "detectors.baseline.model",
    "detectors.baseline.detector",
    "detectors.baseline.learner",
    # the Sigma engine's per-event path (a hunt over stored history runs nothing else)
    "detectors.alerts",
    "detectors.sigma.correlation",
    "detectors.sigma.engine",
    "detectors.hunt",
    # what every event is offered to at the sensor besides the rules
    "detectors.findings",
    # the store's line of every event the sensor stores (its events frame)
    "pipeline.store.frames",
    # the printed JSON line of every event (a replay's --events --format jsonl)
    "pipeline.lines",
    # the run's loop: every event from the engine to the detectors, rollups and sink
    "icsmon.loop",
)
_ROOT = Path(__file__).resolve().parent.parent


def _source(name: str) -> Path:
    return _ROOT.joinpath(*name.split(".")).with_suffix(".py")


def _extension(name: str) -> Path | None:
    """The compiled code of a module: ``<module>__mypyc.*.so`` (the import shim
    ``<module>.*.so`` is not rewritten by a rebuild that leaves it unchanged)."""
    source = _source(name)
    shim = None
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        code = source.with_name(source.stem + "__mypyc" + suffix)
        if code.exists():
            return code
        if shim is None and source.with_name(source.stem + suffix).exists():
            shim = source.with_name(source.stem + suffix)
    return shim


class _SourceFirst:
    """Meta path finder: the compiled modules from their ``.py`` files."""

    @staticmethod
    def find_spec(name: str, path=None, target=None):  # noqa: ANN001 - importlib protocol
        if name in COMPILED:
            return importlib.util.spec_from_file_location(name, _source(name))
        return None


def _choose() -> bool:
    """True when the compiled modules are used; else installs the source-first finder."""
    built = {name: _extension(name) for name in COMPILED}
    if not any(built.values()):
        return False  # a pure install (ICSMON_PURE=1 at install time, or no compiler)
    if os.environ.get("ICSMON_PURE") == "1":
        reason = ""
    else:
        stale = [
            name
            for name, ext in built.items()
            if ext is None or _source(name).stat().st_mtime > ext.stat().st_mtime
        ]
        if not stale:
            return True
        reason = (
            f"{_source(stale[0]).relative_to(_ROOT)} is newer than its compiled module: "
            "running the sensor from source (slower); `pip install -e .` compiles it again"
        )
    sys.meta_path.insert(0, _SourceFirst())
    if reason:
        warnings.warn(reason, stacklevel=2)
    return False


COMPILED_IN_USE = _choose()
