"""What a wheel of icsmon carries: a plant installs the sensor from one, not from a checkout.

The wheel is built from this tree with ``pip wheel`` (the source build, ``ICSMON_PURE=1``:
the compiled modules are checked in tests/sensor/test_compiled.py) and its file list compared with
what the sensor loads at run time.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.support import REPO

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def wheel_files(tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    out = tmp_path_factory.mktemp("wheel")
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(REPO)],
        capture_output=True,
        text=True,
        timeout=800,
        env={**os.environ, "ICSMON_PURE": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (wheel,) = out.glob("icsmon-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        return set(zf.namelist())


def test_the_wheel_carries_the_rule_pack_where_the_loader_looks(wheel_files: set[str]) -> None:
    rules = sorted(
        p.relative_to(REPO / "rules").as_posix() for p in (REPO / "rules").rglob("*.yml")
    )
    assert len(rules) >= 30
    data = {n.split("/data/", 1)[1] for n in wheel_files if ".data/data/" in n}
    missing = [r for r in rules if f"share/icsmon/rules/{r}" not in data]
    assert not missing, f"rules not in the wheel: {missing}"


def test_without_a_checkout_the_loader_reads_the_installed_pack(tmp_path: Path) -> None:
    """A wheel install has no rules/ beside the packages: the pack comes from the data files,
    which pip puts under the environment's prefix."""
    from detectors.sigma.loader import shipped_rules

    assert shipped_rules() == REPO / "rules"
    site = tmp_path / "site-packages"
    site.mkdir()
    assert shipped_rules(site, str(tmp_path)) == tmp_path / "share" / "icsmon" / "rules"


def test_the_wheel_carries_the_files_modules_read(wheel_files: set[str]) -> None:
    for name in (
        "detectors/pipelines/ics_ecs.yml",
        "detectors/sigma/sigma-validation.yml",
        "detectors/sigma/validators.py",
        "sigma/validators/icsmon/__init__.py",  # the pySigma plugin `sigma check` finds
        "posture/static/index.html",
        "posture/static/vendor/echarts/echarts.min.js",
        "sensor/protocols/modbus/parser.py",
        "sensor/protocols/opcua/nodeids.py",
        "sensor/protocols/s7comm/parser.py",
        "icsmon/cli.py",
    ):
        assert name in wheel_files, name
    assert not any(n.startswith(("tests/", "bench/", "pcaps/")) for n in wheel_files)
    # pySigma's packages are namespaces: a file of ours there would hide pySigma's own
    assert not {"sigma/__init__.py", "sigma/validators/__init__.py"} & wheel_files


def test_the_wheel_installs_only_the_known_top_level_names(wheel_files: set[str]) -> None:
    """The top-level packages are the design's plain names (README: install in a virtual
    environment of its own); a new one must be added here deliberately."""
    tops = {n.split("/", 1)[0] for n in wheel_files if "/" in n and ".dist-info" not in n}
    tops -= {n for n in tops if n.endswith(".data")}
    assert tops == {
        "icsmon", "sensor", "detectors", "pipeline", "posture", "assessment", "response",
        "sigma",  # only sigma/validators/icsmon: pySigma's namespace packages
    }  # fmt: skip
    assert {n for n in wheel_files if n.startswith("sigma/")} == {
        "sigma/validators/icsmon/__init__.py"
    }
