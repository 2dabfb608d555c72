"""Coverage-guided fuzz target: the EtherNet/IP dissector (``sensor/protocols/enip/``).

Input: segments as encoded by ``tests/hardening/fuzz/common.py`` (direction, optional gap, payload),
fed to one parser, then ``close()``. A crash is any exception out of the parser or a record
breaking the dissector contract (see ``common.check_record``). Run it through run.py:

    .venv/bin/python tests/hardening/fuzz/run.py enip --seconds 600
"""

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
# atheris instruments Python bytecode: run the sensor from source, not its compiled build
# (only as the fuzzing process: a test importing this module must not change its process)
if __name__ == "__main__":
    os.environ["ICSMON_PURE"] = "1"

import atheris  # noqa: E402

with atheris.instrument_imports(include=["sensor"]):
    from sensor.protocols import enip  # noqa: E402

from tests.hardening.fuzz.common import run_parser  # noqa: E402


def test_one_input(data: bytes) -> None:
    run_parser(enip, data)


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
