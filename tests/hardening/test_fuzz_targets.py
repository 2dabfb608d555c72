"""The atheris fuzz targets of tests/hardening/fuzz/ (issue 8), a short bounded run of each in the suite.

The long run is documented in tests/hardening/fuzz/README.md. Each target gets a few seconds of
coverage-guided fuzzing from its seed corpus (built from pcaps/); a crash, a hang (libFuzzer
-timeout) or a broken contract fails the test with the crash file named in the output.
"""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

pytest.importorskip("atheris")

from tests.hardening.fuzz.common import decode, encode, pcap_seeds, streams_for  # noqa: E402
from tests.support import REPO

SECONDS = 3


@pytest.mark.parametrize(
    "target", ["modbus", "s7comm", "opcua", "enip", "dnp3", "iec104", "capture"]
)
def test_fuzz_target_short_run(tmp_path, target: str) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "tests/hardening/fuzz/run.py"),
            target,
            "--seconds",
            str(SECONDS),
            "--workdir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=SECONDS + 120,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    runs = re.search(r"Done (\d+) runs", proc.stdout)
    assert runs and int(runs[1]) > 50, proc.stdout[-2000:]  # it really ran inputs
    assert list((tmp_path / target / "seeds").iterdir()), "no seeds"
    assert not list((tmp_path / target).glob("crash-*"))


def test_seeds_round_trip() -> None:
    """The seed encoding is lossless (what the fuzzer starts from is the real traffic)."""
    for name in ("modbus", "s7comm", "opcua", "enip", "dnp3", "iec104"):
        for segs in streams_for(name):
            joined = [(t, p) for t, _g, p in decode(encode(segs))]
            for to_server in (True, False):
                assert b"".join(p for t, p in joined if t == to_server) == b"".join(
                    p for t, p in segs if t == to_server
                )
    assert len(pcap_seeds()) >= 20
