"""Make the baseline captures: one small plant on loopback, real protocol stacks, tcpdump on lo.

Plant (each 127.0.5.x stands for a different host; clients bind their source address; 127.0.5.0/24
so that other loopback tests on 127.0.0.x never share a port or a capture with it):

- 127.0.5.10:502  Modbus/TCP PLC (pymodbus server, unit 1)
- 127.0.5.20:102  S7 PLC (python-snap7 server, DB1)
- 127.0.5.30:4840 OPC UA server (asyncua, security None, anonymous)
- 127.0.5.11      HMI: polls the Modbus PLC (FC3 0-9 every 0.5 s, FC1 coils 0-7 and FC3 100-101
                  every 1 s) and the S7 PLC (DB1 0-15 every 1 s, CPU identity (SZL 0x001C) every 5 s)
- 127.0.5.12      SCADA master: writes the setpoint (holding 100, values 40..60) every 2 s and
                  toggles coil 3 every 4 s
- 127.0.5.13      historian: reads two OPC UA variables every 1 s

Scenarios (name -> what differs from normal operation):

- train                 40 s of normal operation (the learning capture)
- clean                 20 s of normal operation, a separate run (must raise nothing)
- attack_new_host_write 127.0.5.66 connects at 6 s and writes the setpoint (in range)
- attack_out_of_range   the SCADA master writes 500 to the setpoint at 6 s
- attack_polling_stops  the HMI stops polling the Modbus PLC at 6 s (20 s capture)
- attack_flood          the HMI sends 300 back-to-back reads at 6 s
- attack_plc_stop       the HMI sends S7 PLC STOP at 6 s
- attack_opcua_write    127.0.5.67, never seen before, writes an OPC UA variable at 6 s
- attack_program_upload the HMI uploads block DB1 from the S7 PLC at 6 s

Run as root (ports 102/502 and tcpdump): ``.venv/bin/python pcaps/baseline/make_captures.py
[SCENARIO...]``. Writes ``pcaps/baseline/<scenario>.pcap``.
"""

from __future__ import annotations

import asyncio
import logging
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
MODBUS_PLC = "127.0.5.10"
S7_PLC = "127.0.5.20"
OPCUA_SERVER = "127.0.5.30"
HMI = "127.0.5.11"
SCADA = "127.0.5.12"
HISTORIAN = "127.0.5.13"
ROGUE_MODBUS = "127.0.5.66"
ROGUE_OPCUA = "127.0.5.67"
ATTACK_AT = 6.0
SETPOINTS = (40, 45, 50, 55, 60)

# Source-address binding for libraries that have no option for it (python-snap7, asyncua):
# each client thread names its host here and every socket it connects is bound to it first.
_bind = threading.local()
_original_connect = socket.socket.connect


def _bound_connect(self: socket.socket, address: object) -> None:
    src = getattr(_bind, "ip", None)
    if src and self.family == socket.AF_INET:
        try:
            self.bind((src, 0))
        except OSError:
            pass  # already bound (asyncio may retry connect on the same socket)
    _original_connect(self, address)


socket.socket.connect = _bound_connect  # type: ignore[method-assign]


class Clock:
    """Scenario time: seconds since the scenario started, and a stop flag for the pollers."""

    def __init__(self, duration: float) -> None:
        self.start = time.monotonic()
        self.duration = duration

    def now(self) -> float:
        return time.monotonic() - self.start

    def running(self) -> bool:
        return self.now() < self.duration

    def sleep_until(self, t: float) -> bool:
        """Sleep until scenario time ``t``; False if the scenario ends first."""
        delay = t - self.now()
        if t >= self.duration:
            return False
        if delay > 0:
            time.sleep(delay)
        return True


# ---------------------------------------------------------------- servers


def start_modbus_server() -> None:
    from pymodbus.datastore import (
        ModbusDeviceContext,
        ModbusSequentialDataBlock,
        ModbusServerContext,
    )
    from pymodbus.server import StartAsyncTcpServer

    holding = [200 + i for i in range(10)] + [0] * 90 + [50] + [0] * 99
    device = ModbusDeviceContext(
        co=ModbusSequentialDataBlock(1, [1, 0] * 8),
        hr=ModbusSequentialDataBlock(1, holding),
    )
    context = ModbusServerContext(devices={1: device}, single=False)

    def run() -> None:
        asyncio.run(StartAsyncTcpServer(context=context, address=(MODBUS_PLC, 502)))

    threading.Thread(target=run, daemon=True, name="modbus-server").start()


def start_s7_server() -> object:
    import snap7
    from snap7.type import SrvArea

    server = snap7.server.Server(log=False)
    db1 = bytearray(range(64))
    server.register_area(SrvArea.DB, 1, db1)
    server.start_to(S7_PLC, 102)
    return server


def start_opcua_server() -> None:
    from asyncua import Server, ua

    ready = threading.Event()

    async def serve() -> None:
        server = Server()
        await server.init()
        server.set_endpoint(f"opc.tcp://{OPCUA_SERVER}:4840/plant/")
        server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
        idx = await server.register_namespace("urn:icsmon:plant")
        line = await server.nodes.objects.add_object(ua.NodeId("Line1", idx), "Line1")
        temp = await line.add_variable(ua.NodeId("Line1.Temperature", idx), "Temperature", 21.5)
        speed = await line.add_variable(ua.NodeId("Line1.Speed", idx), "Speed", 1200)
        setpoint = await line.add_variable(ua.NodeId("Line1.Setpoint", idx), "Setpoint", 50.0)
        for var in (temp, speed, setpoint):
            await var.set_writable()
        async with server:
            ready.set()
            while True:
                await asyncio.sleep(3600)

    threading.Thread(target=lambda: asyncio.run(serve()), daemon=True, name="opcua-server").start()
    if not ready.wait(30):
        raise RuntimeError("OPC UA server did not start")


# ---------------------------------------------------------------- clients


def hmi_modbus(clock: Clock, stop_at: float | None = None, flood_at: float | None = None) -> None:
    from pymodbus.client import ModbusTcpClient

    client = ModbusTcpClient(MODBUS_PLC, port=502, source_address=(HMI, 0), timeout=2)
    client.connect()
    tick = 0
    flooded = False
    while clock.sleep_until(tick * 0.5):
        t = tick * 0.5
        if stop_at is not None and t >= stop_at:
            break
        if flood_at is not None and t >= flood_at and not flooded:
            flooded = True
            for _ in range(300):
                client.read_holding_registers(0, count=10, device_id=1)
        client.read_holding_registers(0, count=10, device_id=1)
        if tick % 2 == 0:
            client.read_coils(0, count=8, device_id=1)
        else:
            client.read_holding_registers(100, count=2, device_id=1)
        tick += 1
    client.close()


def scada_modbus(clock: Clock, bad_value_at: float | None = None) -> None:
    from pymodbus.client import ModbusTcpClient

    client = ModbusTcpClient(MODBUS_PLC, port=502, source_address=(SCADA, 0), timeout=2)
    client.connect()
    step = 0
    while clock.sleep_until(0.25 + step * 2.0):
        t = 0.25 + step * 2.0
        value = SETPOINTS[step % len(SETPOINTS)]
        if bad_value_at is not None and bad_value_at <= t < bad_value_at + 2.0:
            value = 500
        client.write_register(100, value, device_id=1)
        if step % 2 == 0:
            client.write_coil(3, step % 4 == 0, device_id=1)
        step += 1
    client.close()


def rogue_modbus_writer(clock: Clock) -> None:
    from pymodbus.client import ModbusTcpClient

    if not clock.sleep_until(ATTACK_AT):
        return
    client = ModbusTcpClient(MODBUS_PLC, port=502, source_address=(ROGUE_MODBUS, 0), timeout=2)
    client.connect()
    client.write_registers(100, [50], device_id=1)
    client.close()


def hmi_s7(clock: Clock, stop_plc_at: float | None = None, upload_at: float | None = None) -> None:
    import snap7

    _bind.ip = HMI
    client = snap7.client.Client()
    client.connect(S7_PLC, 0, 1, 102)
    tick = 0
    stopped = uploaded = False
    while clock.sleep_until(0.1 + tick * 1.0):
        t = 0.1 + tick * 1.0
        if stop_plc_at is not None and t >= stop_plc_at and not stopped:
            stopped = True
            client.plc_stop()
        if upload_at is not None and t >= upload_at and not uploaded:
            uploaded = True
            client.upload(1)  # DB1: start upload, upload, end upload
        client.db_read(1, 0, 16)
        if tick % 5 == 0:
            client.get_cpu_info()  # SZL 0x001C over S7 userdata: CPU identity
        tick += 1
    client.disconnect()


def historian_opcua(clock: Clock) -> None:
    from asyncua import Client, ua

    _bind.ip = HISTORIAN

    async def run() -> None:
        async with Client(f"opc.tcp://{OPCUA_SERVER}:4840/plant/", timeout=5) as client:
            idx = await client.get_namespace_index("urn:icsmon:plant")
            nodes = [
                client.get_node(ua.NodeId(name, idx))
                for name in ("Line1.Temperature", "Line1.Speed")
            ]
            tick = 0
            while True:
                t = 0.3 + tick * 1.0
                if t >= clock.duration:
                    break
                delay = t - clock.now()
                if delay > 0:
                    await asyncio.sleep(delay)
                await client.read_values(nodes)
                tick += 1

    asyncio.run(run())


def rogue_opcua_writer(clock: Clock) -> None:
    from asyncua import Client, ua

    _bind.ip = ROGUE_OPCUA
    if not clock.sleep_until(ATTACK_AT):
        return

    async def run() -> None:
        async with Client(f"opc.tcp://{OPCUA_SERVER}:4840/plant/", timeout=5) as client:
            idx = await client.get_namespace_index("urn:icsmon:plant")
            node = client.get_node(ua.NodeId("Line1.Setpoint", idx))
            await node.write_value(ua.DataValue(ua.Variant(95.0, ua.VariantType.Double)))

    asyncio.run(run())


# ---------------------------------------------------------------- scenarios

Worker = Callable[[Clock], None]


def normal(**overrides: Worker) -> dict[str, Worker]:
    workers: dict[str, Worker] = {
        "hmi_modbus": hmi_modbus,
        "scada_modbus": scada_modbus,
        "hmi_s7": hmi_s7,
        "historian_opcua": historian_opcua,
    }
    workers.update(overrides)
    return workers


SCENARIOS: dict[str, tuple[float, dict[str, Worker]]] = {
    "train": (40.0, normal()),
    "clean": (20.0, normal()),
    "attack_new_host_write": (14.0, normal(rogue=rogue_modbus_writer)),
    "attack_out_of_range": (
        14.0,
        normal(scada_modbus=lambda c: scada_modbus(c, bad_value_at=ATTACK_AT)),
    ),
    "attack_polling_stops": (20.0, normal(hmi_modbus=lambda c: hmi_modbus(c, stop_at=ATTACK_AT))),
    "attack_flood": (14.0, normal(hmi_modbus=lambda c: hmi_modbus(c, flood_at=ATTACK_AT))),
    "attack_plc_stop": (14.0, normal(hmi_s7=lambda c: hmi_s7(c, stop_plc_at=ATTACK_AT))),
    "attack_opcua_write": (14.0, normal(rogue=rogue_opcua_writer)),
    "attack_program_upload": (14.0, normal(hmi_s7=lambda c: hmi_s7(c, upload_at=ATTACK_AT))),
}


def run_scenario(name: str, attempts: int = 3) -> Path:
    """Record one scenario; again (up to ``attempts`` times) when tcpdump reports drops."""
    for _ in range(attempts):
        path, dropped = _record(name)
        if dropped == 0:
            return path
        print(f"{name}: tcpdump reported {dropped} dropped packets, recording again")
    raise RuntimeError(f"scenario {name}: packets dropped in {attempts} attempts")


def _record(name: str) -> tuple[Path, int]:
    duration, workers = SCENARIOS[name]
    out = HERE / f"{name}.pcap"
    bpf = "net 127.0.5.0/24 and (tcp port 502 or tcp port 102 or tcp port 4840)"
    dump = subprocess.Popen(
        [
            "tcpdump",
            "-i",
            "lo",
            "--immediate-mode",
            "-B",
            "8192",
            "-U",
            "-n",
            "-s",
            "0",
            "-w",
            str(out),
            bpf,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(1.5)  # let tcpdump attach before the first SYN
    clock = Clock(duration)
    errors: list[str] = []

    def guard(label: str, worker: Worker) -> None:
        try:
            worker(clock)
        except Exception as exc:  # report every failed peer, not only the first
            errors.append(f"{label}: {exc!r}")

    threads = [threading.Thread(target=guard, args=(k, w), name=k) for k, w in workers.items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    time.sleep(1.0)  # the last FIN/ACKs
    dump.send_signal(signal.SIGINT)
    _, stderr = dump.communicate(timeout=10)
    if errors:
        raise RuntimeError(f"scenario {name}: " + "; ".join(errors))
    match = re.search(r"(\d+) packets dropped by kernel", stderr or "")
    return out, int(match.group(1)) if match else -1


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.ERROR)
    names = argv or list(SCENARIOS)
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        print(f"unknown scenario(s): {', '.join(unknown)}; known: {', '.join(SCENARIOS)}")
        return 2
    start_modbus_server()
    s7_server = start_s7_server()
    start_opcua_server()
    time.sleep(1.0)
    try:
        for name in names:
            path = run_scenario(name)
            print(f"{path.name}: {path.stat().st_size} bytes")
    finally:
        s7_server.stop()  # type: ignore[attr-defined]
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
