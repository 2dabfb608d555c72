"""Helpers the tests share (capture writers, service fixtures, tshark readers, sample
documents), and where things are. Nothing here is collected as a test, except the checks of
the helpers themselves in ``test_helpers.py``."""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PCAPS = REPO / "pcaps"
SHARED_PCAPS = Path(os.environ.get("ICSMON_SHARED", REPO.parent / "shared")) / "pcaps" / "public"
