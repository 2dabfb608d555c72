"""Record the fast-polling capture of pcaps/polling/: an HMI scanning three pymodbus
controllers ten times a second for three minutes (the issue's plant model, scaled down),
the capture on which the event-to-rollup reduction is measured (docs/scale.md).

Run as root (a network namespace of its own, as bench/polling_capture.py does):

    .venv/bin/python pcaps/polling/make_captures.py

It records with ``bench/polling_capture.py``'s ``record`` (the same servers, HMI and
schedule), again when tcpdump reports kernel drops, and stores the capture gzip-compressed
(``gzip -n``: no name or time in the header, so the same pcap gives the same bytes): at this
rate the plain pcap is about 1.6 MB, the compressed one a fraction of that. The sensor,
tshark and Wireshark read ``.pcap.gz`` as they are.
"""

from __future__ import annotations

import asyncio
import gzip
import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(REPO / "bench"))

from polling_capture import record  # noqa: E402

from pcaps.loopback import enter_namespace  # noqa: E402

NAME = "modbus_10hz.pcap"
CONTROLLERS = 3
RATE_HZ = 10.0
SECONDS = 180.0
ATTEMPTS = 3


def main() -> None:
    enter_namespace()
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / NAME
        for _ in range(ATTEMPTS):
            if not asyncio.run(record(raw, CONTROLLERS, RATE_HZ, SECONDS)):
                break
            print("the kernel dropped packets: recording again")
        else:
            sys.exit(f"kernel drops in {ATTEMPTS} attempts: try on a quieter machine")
        out = HERE / f"{NAME}.gz"
        with (
            raw.open("rb") as src,
            out.open("wb") as dst_file,
            gzip.GzipFile(filename="", mode="wb", fileobj=dst_file, mtime=0) as dst,
        ):
            shutil.copyfileobj(src, dst)
        print(f"{out}: {out.stat().st_size} bytes ({raw.stat().st_size} uncompressed)")


if __name__ == "__main__":
    main()
