"""Coverage-guided fuzz target: the pcap and pcapng readers (``sensor/capture.py``).

Input: a whole capture file (plain; gzip input is left out while the reader lets zlib.error
escape, see tests/hardening/test_hostile_capture.py). Written to a scratch file (``ICSMON_FUZZ_SCRATCH``,
else /dev/shm) and read to the end. A crash is any exception other than
``CaptureError`` at open, or a broken reader contract: the error is one line naming the file
and the byte offset, and the frame count matches what was yielded. Run it through run.py:

    .venv/bin/python tests/hardening/fuzz/run.py capture --seconds 600
"""

import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
# atheris instruments Python bytecode: run the sensor from source, not its compiled build
# (only as the fuzzing process: a test importing this module must not change its process)
if __name__ == "__main__":
    os.environ["ICSMON_PURE"] = "1"

import atheris  # noqa: E402

with atheris.instrument_imports(include=["sensor"]):
    from sensor.capture import CaptureError, CaptureReader  # noqa: E402

# the reader opens paths: each input is written here (run.py points it into its work
# directory and removes it afterwards; libFuzzer exits without running Python's cleanup)
_DIR = Path("/dev/shm") if os.access("/dev/shm", os.W_OK) else Path(tempfile.gettempdir())
_PATH = Path(
    os.environ.get("ICSMON_FUZZ_SCRATCH") or _DIR / f"icsmon-fuzz-capture-{os.getpid()}.bin"
)


def check_capture(path: Path) -> int:
    """Read ``path`` to the end; assert the reader's contract. Returns the frames read."""
    try:
        reader = CaptureReader(path)
    except CaptureError as exc:
        msg = str(exc)
        assert "\n" not in msg and str(path) in msg, msg
        return 0
    n = 0
    for ts, link, data in reader:
        assert isinstance(ts, float) and isinstance(link, int) and isinstance(data, bytes)
        assert len(data) <= 256 * 1024 + 64
        n += 1
    assert reader.frames == n, (reader.frames, n)
    if reader.error is not None:
        assert "\n" not in reader.error and str(path) in reader.error, reader.error
        assert f"after {n} packets" in reader.error, reader.error
    return n


def test_one_input(data: bytes) -> None:
    _PATH.write_bytes(data)
    check_capture(_PATH)


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
