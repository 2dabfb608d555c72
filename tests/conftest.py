"""Shared fixtures: where the published captures are, tshark, output folders."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.support import REPO

PCAPS = REPO / "pcaps"
SHARED_PCAPS = Path(os.environ.get("ICSMON_SHARED", REPO.parent / "shared")) / "pcaps" / "public"
OUT = REPO / "tests" / "out"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--update-golden",
        action="store_true",
        default=False,
        help="rewrite the golden outputs beside the captures in pcaps/ (review the diff)",
    )


@pytest.fixture(scope="session")
def update_golden(request: pytest.FixtureRequest) -> bool:
    return bool(
        request.config.getoption("--update-golden") or os.environ.get("ICSMON_UPDATE_GOLDEN")
    )


@pytest.fixture(scope="session")
def public_pcaps() -> Path:
    """../shared/pcaps/public, or skip when this checkout has no shared captures beside it."""
    if not (SHARED_PCAPS / "SOURCES.md").is_file():
        pytest.skip(f"published captures not found at {SHARED_PCAPS}")
    return SHARED_PCAPS


@pytest.fixture(scope="session")
def tshark() -> str:
    path = shutil.which("tshark")
    if not path:
        if os.environ.get("CI"):
            pytest.fail("tshark is not installed: scripts/test.sh installs Debian's tshark")
        pytest.skip("tshark not installed (scripts/test.sh installs it)")
    return path


@pytest.fixture()
def out_dir(request: pytest.FixtureRequest) -> Path:
    """A per-test folder under tests/out/ for artefacts worth looking at (screenshots, logs)."""
    path = OUT / request.node.name.replace("/", "_")
    path.mkdir(parents=True, exist_ok=True)
    return path
