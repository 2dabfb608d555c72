"""Real Modbus/TCP traffic on loopback for live tests: a pymodbus server and a pymodbus client
(the HMI) bound to its own 127.0.0.x address, run in a thread while a sensor listens."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import Awaitable, Callable
from typing import Any

UNIT = 1


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _device() -> Any:
    from pymodbus.simulator import DataType, SimData, SimDevice

    return SimDevice(
        id=UNIT,
        simdata=(
            [SimData(0, values=[i % 3 == 0 for i in range(100)], datatype=DataType.BITS)],
            [SimData(0, values=[i % 2 == 1 for i in range(100)], datatype=DataType.BITS)],
            [SimData(0, values=[i * 10 for i in range(100)], datatype=DataType.REGISTERS)],
            [SimData(0, values=[1000 + i for i in range(100)], datatype=DataType.REGISTERS)],
        ),
    )


Plan = Callable[[Any], Awaitable[None]]


async def _serve_and_run(port: int, client_ip: str, plan: Plan) -> None:
    from pymodbus.client import AsyncModbusTcpClient
    from pymodbus.server import ModbusTcpServer

    server = ModbusTcpServer(_device(), address=("127.0.0.1", port))
    serve = asyncio.create_task(server.serve_forever())
    try:
        for _ in range(200):  # until the listener is up (a probe from 127.0.0.1, not the HMI)
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", port), timeout=0.2),
            ):
                break
            await asyncio.sleep(0.05)
        client = AsyncModbusTcpClient(
            "127.0.0.1", port=port, source_address=(client_ip, 0), retries=0, timeout=2
        )
        if not await client.connect():
            raise RuntimeError(f"the Modbus client could not connect to 127.0.0.1:{port}")
        try:
            await plan(client)
        finally:
            client.close()
        await asyncio.sleep(0.3)
    finally:
        await server.shutdown()
        serve.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await serve


def run_traffic(port: int, client_ip: str, plan: Plan) -> None:
    """Serve on 127.0.0.1:``port`` and let the HMI at ``client_ip`` run ``plan``; returns when
    done (raises what went wrong)."""
    failure: list[BaseException] = []

    def main() -> None:
        try:
            asyncio.run(_serve_and_run(port, client_ip, plan))
        except BaseException as exc:  # re-raised in the caller's thread
            failure.append(exc)

    thread = threading.Thread(target=main, daemon=True)
    thread.start()
    thread.join(300)
    if failure:
        raise failure[0]
