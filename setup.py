"""Build step: compile the sensor's per-packet modules and the per-event paths of the Sigma
engine and the baseline with mypyc.

The modules below stay plain, type-checked Python; mypyc turns the same source into C
extensions (about 1.5x faster on a Modbus replay; the Sigma engine about 2x, the baseline 2-3x). ``ICSMON_PURE=1`` at install time skips
the compilation; at run time it makes the sensor load the Python source instead (see
``sensor/__init__.py``, which also does so by itself when a source file is newer than its
compiled module, so an edit is never shadowed by a stale build).
"""

from __future__ import annotations

import ast
import os
from pathlib import Path

from setuptools import setup


def compiled_sources() -> list[str]:
    """``sensor.COMPILED`` (the one list of the compiled modules), read without importing."""
    tree = ast.parse((Path(__file__).parent / "sensor" / "__init__.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "COMPILED" for t in node.targets
        ):
            return [name.replace(".", "/") + ".py" for name in ast.literal_eval(node.value)]
    raise SystemExit("setup.py: no COMPILED list in sensor/__init__.py")


def extensions() -> list:
    if os.environ.get("ICSMON_PURE") == "1":
        return []
    from mypyc.build import mypycify

    extensions = mypycify(
        # no mypy cache: a stale one has crashed mypyc on a rebuild
        [
            "--ignore-missing-imports",
            "--follow-imports=silent",
            "--cache-dir=/dev/null",
            *compiled_sources(),
        ],
        opt_level="3",
        separate=True,
    )
    for ext in extensions:
        # no C compiler or Python headers: install anyway, the sensor then runs from source
        ext.optional = True
    return extensions


setup(ext_modules=extensions())
