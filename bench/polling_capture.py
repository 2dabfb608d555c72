"""Record a plant's fast polling: one HMI scanning several pymodbus controllers ten times a
second (the issue's plant model), to measure the event-to-rollup reduction at that rate.

Run as root (a network namespace of its own: tcpdump on its ``lo``, servers on port 502):

    .venv/bin/python bench/polling_capture.py --out /tmp/polling_10hz.pcap [--controllers 5]
        [--rate 10] [--seconds 180]

Each controller is a pymodbus TCP server (the datastore and identity of
``pcaps/modbus/make_captures.py``) on 127.0.0.(11+i):502; the HMI connects to each from
127.0.0.2 and, per controller, sends ``--rate`` requests a second, alternating FC 3 (holding
registers 0-9) and FC 4 (input registers 0-7), and every 5 seconds writes a set point
(FC 6, holding register 20). ``pcaps/polling/make_captures.py`` records the committed
capture with it (three controllers, 180 s); this script makes a capture of any size.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import socket
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "pcaps" / "modbus"))

from make_captures import UNIT, make_device, make_identity  # noqa: E402
from pymodbus.client import AsyncModbusTcpClient  # noqa: E402
from pymodbus.server import ModbusTcpServer  # noqa: E402

from pcaps.loopback import Tcpdump, enter_namespace  # noqa: E402

HMI = "127.0.0.2"
PORT = 502


def controller_ip(i: int) -> str:
    return f"127.0.0.{11 + i}"


async def poll(ip: str, rate: float, until: float, counts: dict[str, int]) -> None:
    client = AsyncModbusTcpClient(ip, port=PORT, source_address=(HMI, 0), retries=0, timeout=2)
    if not await client.connect():
        raise SystemExit(f"the HMI could not connect to {ip}:{PORT}")
    period = 1.0 / rate
    tick = time.monotonic()
    n = 0
    try:
        while time.monotonic() < until:
            if n % 2 == 0:
                await client.read_holding_registers(0, count=10, device_id=UNIT)
            else:
                await client.read_input_registers(0, count=8, device_id=UNIT)
            n += 1
            if n % int(5 * rate) == 0:
                await client.write_register(20, 100 + n % 50, device_id=UNIT)
                counts["writes"] += 1
            counts["requests"] += 1
            tick += period
            await asyncio.sleep(max(0.0, tick - time.monotonic()))
    finally:
        client.close()


async def record(out: Path, controllers: int, rate: float, seconds: float) -> int:
    servers = [
        ModbusTcpServer(make_device(), identity=make_identity(), address=(controller_ip(i), PORT))
        for i in range(controllers)
    ]
    serving = [asyncio.create_task(s.serve_forever()) for s in servers]
    for i in range(controllers):
        for _ in range(100):
            with (
                contextlib.suppress(OSError),
                socket.create_connection((controller_ip(i), PORT), timeout=0.2),
            ):
                break
            await asyncio.sleep(0.05)
    await asyncio.sleep(0.2)
    dump = await asyncio.to_thread(Tcpdump, out, f"host {HMI} and tcp port {PORT}")
    counts = {"requests": 0, "writes": 0}
    try:
        until = time.monotonic() + seconds
        await asyncio.gather(
            *(poll(controller_ip(i), rate, until, counts) for i in range(controllers))
        )
        await asyncio.sleep(0.3)
    finally:
        for s in servers:
            await s.shutdown()
        for task in serving:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        dropped = await asyncio.to_thread(dump.stop)
    print(
        f"{out}: {out.stat().st_size} bytes, {controllers} controllers x {rate:g} Hz for "
        f"{seconds:g} s: {counts['requests']} polls, {counts['writes']} writes, "
        f"{dropped} dropped by the kernel"
    )
    return dropped


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="the pcap to write")
    parser.add_argument("--controllers", type=int, default=5)
    parser.add_argument("--rate", type=float, default=10.0, help="polls a second per controller")
    parser.add_argument("--seconds", type=float, default=180.0)
    args = parser.parse_args()
    args.out = args.out.resolve()
    enter_namespace()
    if asyncio.run(record(args.out, args.controllers, args.rate, args.seconds)):
        sys.exit("the kernel dropped packets: record again")


if __name__ == "__main__":
    main()
