"""Record modbus_attack.pcap: an attacker host working through a pymodbus server the way a
scanner and then an operator of malicious intent would, for the Sigma correlation rules.

Run as root from the repository root (tcpdump on ``lo`` and port 502 need it):

    .venv/bin/python pcaps/modbus/make_attack_captures.py [--out DIR]

It reuses make_captures.py's server (same datastore and identity), tcpdump handling and
raw-request helpers, but on its own addresses so it can run next to that script: server
127.0.0.9:502, attacker 127.0.0.8, capture filter ``host 127.0.0.8 and tcp port 502``.
One pymodbus client connection plus a few plain sockets for requests pymodbus will not build.

Phases (seconds are approximate):
1. identification: FC 43/14 (basic) and FC 17;
2. function code sweep: one well-formed request for each of 17 function codes (public ones
   and undefined 9, 10, 13, 14, 18, 19), raw MBAP;
3. unit id sweep: FC 3 to unit ids 1-12 (pymodbus answers unit 1 only: the rest stay
   unanswered, one second each);
4. exception burst: 25 reads of holding register 150 (past the 100 registers);
5. brute force I/O: 24 writes toggling coil 3, back to back;
6. one write of holding register 10.
"""

from __future__ import annotations

import argparse
import asyncio
import struct
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import make_captures as base  # noqa: E402

base.SERVER = ("127.0.0.9", 502)
base.CLIENT_IP = "127.0.0.8"
base.CAPTURE_FILTER = f"host {base.CLIENT_IP} and tcp port {base.SERVER[1]}"
UNIT = base.UNIT

# Function code -> a well-formed request body for it (so the sweep is not malformed input).
SWEEP: dict[int, bytes] = {
    1: struct.pack(">HH", 0, 8),
    2: struct.pack(">HH", 0, 8),
    3: struct.pack(">HH", 0, 2),
    4: struct.pack(">HH", 0, 2),
    7: b"",
    8: struct.pack(">HH", 0, 0x1234),  # sub-function 0: return query data
    11: b"",
    12: b"",
    17: b"",
    24: struct.pack(">H", 5),
    43: bytes([14, 1, 0]),
    9: struct.pack(">HH", 0, 1),
    10: struct.pack(">HH", 0, 1),
    13: struct.pack(">HH", 0, 1),
    14: struct.pack(">HH", 0, 1),
    18: struct.pack(">HH", 0, 1),
    19: struct.pack(">HH", 0, 1),
}


async def attack(client: base.AsyncModbusTcpClient) -> None:
    await client.read_device_information(read_code=1, object_id=0, device_id=UNIT)
    await client.report_device_id(device_id=UNIT)
    await base.send_raw(
        [
            base.raw_request(0x200 + i, UNIT, bytes([fc]) + body)
            for i, (fc, body) in enumerate(SWEEP.items())
        ]
    )
    await base.send_raw(
        [
            base.raw_request(0x300 + unit, unit, struct.pack(">BHH", 3, 0, 1))
            for unit in range(1, 13)
        ]
    )
    for _ in range(25):
        await base.answered(client.read_holding_registers(150, count=1, device_id=UNIT))
    for i in range(24):
        await client.write_coil(3, i % 2 == 0, device_id=UNIT)
    await client.write_register(10, 4321, device_id=UNIT)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description="Record modbus_attack.pcap (as root).")
    parser.add_argument("--out", type=Path, default=HERE, help="folder for the capture")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    print(f"pymodbus {base.pymodbus.__version__}, Python {sys.version.split()[0]}")
    for attempt in range(1, base.ATTEMPTS + 1):
        if asyncio.run(base.record("attack", attack, args.out)) == 0:
            return
        print(f"    packets were dropped, recording again ({attempt}/{base.ATTEMPTS})")
    sys.exit("could not record modbus_attack.pcap without drops")


if __name__ == "__main__":
    main(sys.argv[1:])
