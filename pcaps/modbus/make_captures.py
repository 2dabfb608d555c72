"""Record the Modbus/TCP captures in this folder from a real pymodbus server and client.

Run as root (tcpdump on ``lo`` and the server on port 502 need it), from the repository root:

    .venv/bin/python pcaps/modbus/make_captures.py            # all captures
    .venv/bin/python pcaps/modbus/make_captures.py polling    # just one
    .venv/bin/python pcaps/modbus/make_captures.py --out /tmp/m   # elsewhere (to compare)

For each capture a pymodbus TCP server listens on 127.0.0.1:502 and a pymodbus client
connects from 127.0.0.2 while ``tcpdump -i lo --immediate-mode -B 8192 -U -n -w FILE
'host 127.0.0.2 and tcp port 502'`` records (a capture is recorded again if tcpdump reports
kernel drops). Requests
pymodbus has no client call for (an undefined function code, a quantity over the limit) are
sent as raw MBAP bytes on a plain socket, still answered by the pymodbus server. The server
answers from a fixed datastore, so the payloads are the same on every run (TCP ports, sequence
numbers and timestamps differ).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import socket
import struct
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import pymodbus
from pymodbus import ModbusDeviceIdentification
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.constants import ExcCodes
from pymodbus.exceptions import ModbusException
from pymodbus.pdu import FileRecord
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from loopback import Tcpdump  # noqa: E402  (pcaps/loopback.py: tcpdump on lo, drops counted)

SERVER = ("127.0.0.1", 502)
CLIENT_IP = "127.0.0.2"
SECOND_MASTER_IP = "127.0.0.3"  # only the two_masters capture uses it
UNIT = 1
# Only this script's conversations: other Modbus traffic may share the loopback interface.
CAPTURE_FILTER = f"(host {CLIENT_IP} or host {SECOND_MASTER_IP}) and tcp port {SERVER[1]}"
ATTEMPTS = 3

Scenario = Callable[[AsyncModbusTcpClient], Awaitable[None]]


class Process:
    """The plant behind the server: input registers drift on every scan, deterministically."""

    def __init__(self) -> None:
        self.scans = 0

    async def action(
        self,
        function_code: int,
        start_address: int,
        address: int,
        count: int,
        registers: list[int],
        set_values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        if function_code == 4:  # a new scan of the sensors behind the input registers
            self.scans += 1
            for i in range(
                address - start_address, min(len(registers), address - start_address + count)
            ):
                registers[i] = (registers[i] + 7 * self.scans + i) & 0xFFFF
        return None


def make_device() -> SimDevice:
    """Unit 1 with 100 coils, discrete inputs, holding and input registers (addresses 0-99)."""
    coils = SimData(0, values=[i % 3 == 0 for i in range(100)], datatype=DataType.BITS)
    inputs = SimData(0, values=[i % 2 == 1 for i in range(100)], datatype=DataType.BITS)
    holding = SimData(0, values=[i * 10 for i in range(100)], datatype=DataType.REGISTERS)
    input_regs = SimData(0, values=[1000 + i for i in range(100)], datatype=DataType.REGISTERS)
    return SimDevice(
        id=UNIT,
        simdata=([coils], [inputs], [holding], [input_regs]),
        identity=make_identity(),
        action=Process().action,
    )


def make_identity() -> ModbusDeviceIdentification:
    return ModbusDeviceIdentification(
        info_name={
            "VendorName": "Acme Automation",
            "ProductCode": "AC-PLC-200",
            "MajorMinorRevision": "2.4.1",
            "VendorUrl": "http://acme.example",
            "ProductName": "Acme PLC 200",
            "ModelName": "PLC-200-TCP",
            "UserApplicationName": "pump-station-3",
        }
    )


def raw_request(tid: int, unit: int, pdu: bytes) -> bytes:
    """One MBAP-framed request: for PDUs the pymodbus client refuses to build."""
    return struct.pack(">HHHB", tid, 0, len(pdu) + 1, unit) + pdu


async def answered(call: Awaitable[object]) -> None:
    """Await a client call; a request the server mishandles is recorded, not fatal."""
    try:
        await call
    except ModbusException as exc:
        print(f"    (no usable answer: {str(exc).splitlines()[0]})")


async def send_raw(frames: list[bytes]) -> None:
    """Send raw requests one by one from the client address, reading each answer."""
    loop = asyncio.get_running_loop()
    sock = socket.socket()
    sock.bind((CLIENT_IP, 0))
    sock.setblocking(False)
    await loop.sock_connect(sock, SERVER)
    try:
        for frame in frames:
            await loop.sock_sendall(sock, frame)
            # A server may stay silent (unknown unit): that is part of what is recorded.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(loop.sock_recv(sock, 300), 1)
    finally:
        sock.close()


# -- scenarios ---------------------------------------------------------------------------


async def polling(client: AsyncModbusTcpClient) -> None:
    """An HMI's scan cycle: FC 1, 2, 3, 4 five times while the input registers move."""
    for _ in range(5):
        await client.read_coils(0, count=16, device_id=UNIT)
        await client.read_discrete_inputs(0, count=8, device_id=UNIT)
        await client.read_holding_registers(0, count=10, device_id=UNIT)
        await client.read_input_registers(0, count=8, device_id=UNIT)


async def writes(client: AsyncModbusTcpClient) -> None:
    """Every write function pymodbus has: FC 5, 6, 15, 16, 22, 23, with read-backs."""
    await client.write_coil(3, True, device_id=UNIT)
    await client.write_coil(4, False, device_id=UNIT)
    await client.write_register(10, 1234, device_id=UNIT)
    await client.write_coils(
        20, [True, False, True, True, False, False, True, False, True], device_id=UNIT
    )
    await client.write_registers(30, [11, 22, 33, 44, 55], device_id=UNIT)
    await client.read_holding_registers(30, count=5, device_id=UNIT)
    await client.mask_write_register(address=10, and_mask=0x00F2, or_mask=0x0025, device_id=UNIT)
    await client.readwrite_registers(
        read_address=10, read_count=4, write_address=40, values=[7, 8, 9], device_id=UNIT
    )
    await client.read_coils(20, count=9, device_id=UNIT)


async def exceptions(client: AsyncModbusTcpClient) -> None:
    """Exception responses: illegal data address (FC 1/2/3/4/6/16), then raw requests with
    an undefined function code, a quantity out of range, and a unit the server lacks."""
    await client.read_coils(300, count=10, device_id=UNIT)  # past the 100 coils
    await client.read_discrete_inputs(200, count=1, device_id=UNIT)
    await client.read_holding_registers(120, count=2, device_id=UNIT)
    await client.read_input_registers(99, count=5, device_id=UNIT)
    await client.write_register(500, 1, device_id=UNIT)
    await client.write_registers(98, [1, 2, 3], device_id=UNIT)
    await send_raw(
        [
            # FC 65: in the user-defined range, unknown to this server
            raw_request(0x0100, UNIT, bytes([0x41, 0x00, 0x01])),
            # FC 9: not a public function
            raw_request(0x0101, UNIT, bytes([0x09, 0x00, 0x00])),
            raw_request(0x0102, UNIT, struct.pack(">BHH", 3, 0, 200)),  # 200 registers > 125
            raw_request(0x0103, UNIT, struct.pack(">BHH", 1, 0, 0)),  # quantity 0
            raw_request(0x0104, 7, struct.pack(">BHH", 3, 0, 1)),  # unit 7 does not exist
        ]
    )


async def identification(client: AsyncModbusTcpClient) -> None:
    """Device identity: FC 43/14 basic, regular, extended and one object; FC 17."""
    await client.read_device_information(read_code=1, object_id=0, device_id=UNIT)
    await client.read_device_information(read_code=2, object_id=0, device_id=UNIT)
    await client.read_device_information(read_code=3, object_id=0, device_id=UNIT)
    await client.read_device_information(read_code=4, object_id=5, device_id=UNIT)
    await client.report_device_id(device_id=UNIT)


async def diagnostics(client: AsyncModbusTcpClient) -> None:
    """FC 8 sub-functions, FC 7, 11, 12 (serial-line heritage), FC 24 FIFO, FC 20/21 files."""
    await answered(client.diag_query_data(b"\x12\x34", device_id=UNIT))  # sub 0: echo
    await answered(client.diag_read_diagnostic_register(device_id=UNIT))  # sub 2
    await answered(client.diag_clear_counters(device_id=UNIT))  # sub 10
    await answered(client.diag_read_bus_message_count(device_id=UNIT))  # sub 11
    await answered(client.diag_read_bus_comm_error_count(device_id=UNIT))  # sub 12
    await answered(client.diag_read_device_message_count(device_id=UNIT))  # sub 14
    await answered(client.read_exception_status(device_id=UNIT))
    await answered(client.diag_get_comm_event_counter(device_id=UNIT))
    await answered(client.diag_get_comm_event_log(device_id=UNIT))
    await answered(client.read_fifo_queue(address=5, device_id=UNIT))
    await answered(
        client.read_file_record(
            [FileRecord(file_number=4, record_number=1, record_length=2)], device_id=UNIT
        )
    )
    await answered(
        client.write_file_record(
            [FileRecord(file_number=4, record_number=7, record_data=b"\x06\xaf\x04\xbe")],
            device_id=UNIT,
        )
    )
    # Sub-function 1 last: it restarts the server's communication state.
    await answered(client.diag_restart_communication(False, device_id=UNIT))


async def two_masters(client: AsyncModbusTcpClient) -> None:
    """Two masters write the same controller: the SCADA master (127.0.0.2) sets holding
    register 10 and coil 3, then a second master (127.0.0.3, its own connection) writes
    register 10 and coil 3 too; each reads back."""
    await client.write_register(10, 1200, device_id=UNIT)
    await client.write_coil(3, True, device_id=UNIT)
    second = AsyncModbusTcpClient(
        SERVER[0], port=SERVER[1], source_address=(SECOND_MASTER_IP, 0), retries=0, timeout=1
    )
    await second.connect()
    try:
        await second.write_register(10, 1500, device_id=UNIT)
        await second.write_coil(3, False, device_id=UNIT)
        await second.read_holding_registers(10, count=1, device_id=UNIT)
    finally:
        second.close()
    await client.read_holding_registers(10, count=1, device_id=UNIT)


SCENARIOS: dict[str, Scenario] = {
    "polling": polling,
    "writes": writes,
    "exceptions": exceptions,
    "identification": identification,
    "diagnostics": diagnostics,
    "two_masters": two_masters,
}


# -- recording ---------------------------------------------------------------------------


async def record(name: str, scenario: Scenario, out_dir: Path) -> int:
    """Record one capture; return the kernel's drop count (0 for a complete capture)."""
    path = out_dir / f"modbus_{name}.pcap"
    server = ModbusTcpServer(make_device(), identity=make_identity(), address=SERVER)
    serve = asyncio.create_task(server.serve_forever())
    for _ in range(100):  # wait until the listener is up
        with contextlib.suppress(OSError), socket.create_connection(SERVER, timeout=0.2):
            break
        await asyncio.sleep(0.05)
    # That probe connection is not part of the capture: tcpdump starts after it.
    await asyncio.sleep(0.2)
    dump = await asyncio.to_thread(Tcpdump, path, CAPTURE_FILTER)
    try:
        client = AsyncModbusTcpClient(
            SERVER[0], port=SERVER[1], source_address=(CLIENT_IP, 0), retries=0, timeout=1
        )
        if not await client.connect():
            raise SystemExit(f"client could not connect to {SERVER}")
        try:
            await scenario(client)
        finally:
            client.close()
        await asyncio.sleep(0.2)
    finally:
        await server.shutdown()
        serve.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await serve
        dropped = await asyncio.to_thread(dump.stop)
    print(f"{path}: {path.stat().st_size} bytes")
    return dropped


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description="Record the pymodbus captures (as root).")
    parser.add_argument(
        "names", nargs="*", help=f"captures to make (default all: {', '.join(SCENARIOS)})"
    )
    parser.add_argument("--out", type=Path, default=HERE, help="folder for the captures")
    args = parser.parse_args(argv)
    names = args.names or list(SCENARIOS)
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        parser.error(f"unknown capture(s) {', '.join(unknown)}; choose from {', '.join(SCENARIOS)}")
    # pymodbus logs its own complaints about the deliberately bad requests: expected output.
    args.out.mkdir(parents=True, exist_ok=True)
    print(f"pymodbus {pymodbus.__version__}, Python {sys.version.split()[0]}")
    for name in names:
        for attempt in range(1, ATTEMPTS + 1):
            if asyncio.run(record(name, SCENARIOS[name], args.out)) == 0:
                break
            print(f"    packets were dropped, recording {name} again ({attempt}/{ATTEMPTS})")
        else:
            sys.exit(f"could not record {name} without drops")


if __name__ == "__main__":
    main(sys.argv[1:])
