"""Make the mixed-plant captures: every protocol of a small plant at once, real stacks on
loopback, tcpdump on lo, a labels file for the attack splits.

Plant (each 127.0.7.x stands for a host; clients bind their source address; 127.0.7.0/24 so
that other loopback captures and tests never share an address or a capture with it):

- 127.0.7.10:502  Modbus/TCP PLC (pymodbus server, unit 1): holding 0-9 process values that
                  move every second, holding 100 the operator's setpoint, coils 0-15
- 127.0.7.20:102  S7 PLC (python-snap7 server): DB1 process data (64 bytes, moving), DB2
                  setpoints (16 bytes)
- 127.0.7.30:4840 OPC UA server (asyncua, security None; anonymous and user name logins):
                  Line1.{Temperature, Pressure, Speed, Setpoint, Mode}, Line2.{...},
                  Maintenance.{RunHours, LastService, Firmware}
- 127.0.7.11      HMI: polls the Modbus PLC (FC 3 holding 0-9 every 1 s, FC 1 coils 0-7 every
                  2 s), the S7 PLC (Read Var DB1 0-15 every 2 s, an OP connection) and the OPC
                  UA server (Read Line1 Temperature, Pressure, Speed every 2 s, anonymous
                  session); the operator writes setpoints within their range at seeded random
                  times (Modbus holding 100 in 40..60, DB2.DBW0 in 100..200, Line1.Setpoint in
                  45..55)
- 127.0.7.12      historian: reads four Line1 variables every 10 s, logged in as user
                  ``historian`` whose password travels in clear (security None)
- 127.0.7.13      engineering station: maintenance sessions at seeded times (a PG connection:
                  SZL 0x0011 and 0x001C reads, upload of DB1)
- 127.0.7.66/67/68 attackers (see ATTACKS)

Splits (name -> duration, seed): ``train`` (300 s, seed 1) and ``test`` (150 s, seed 2) are
normal operation; ``attack_recon`` (seed 11), ``attack_process`` (seed 12) and
``attack_control`` (seed 13), 180 s each, are normal operation with attacks at fixed scenario
times, each written to ``labels.json`` with its real time window, attacker, target and ATT&CK
for ICS technique ids. The seed drives every random choice (process values, operator writes,
maintenance times); the wall clock drives nothing but the timestamps.

Run as root (ports 102/502 and tcpdump): ``.venv/bin/python pcaps/plant/make_captures.py
[SPLIT...]``. Writes ``pcaps/plant/<split>.pcap`` and updates ``pcaps/plant/labels.json``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
LABELS = HERE / "labels.json"

MODBUS_PLC = "127.0.7.10"
S7_PLC = "127.0.7.20"
OPCUA_SERVER = "127.0.7.30"
HMI = "127.0.7.11"
HISTORIAN = "127.0.7.12"
ENGINEERING = "127.0.7.13"
ROGUE_SWEEP = "127.0.7.66"
ROGUE_OPCUA = "127.0.7.67"
ROGUE_S7 = "127.0.7.68"
OPCUA_URL = f"opc.tcp://{OPCUA_SERVER}:4840/plant/"
NAMESPACE = "urn:icsmon:plant"
BPF = "net 127.0.7.0/24 and (tcp port 502 or tcp port 102 or tcp port 4840)"

# Variables of the OPC UA server: name -> initial value (Doubles).
OPCUA_VARIABLES = {
    "Line1": {"Temperature": 71.0, "Pressure": 3.2, "Speed": 1450.0, "Setpoint": 50.0, "Mode": 1.0},
    "Line2": {"Temperature": 65.0, "Pressure": 2.9, "Speed": 1200.0, "Setpoint": 48.0},
    "Maintenance": {"RunHours": 18250.0, "LastService": 20260301.0, "Firmware": 4.2},
}
HMI_READS = ("Line1.Temperature", "Line1.Pressure", "Line1.Speed")
HISTORIAN_READS = ("Line1.Temperature", "Line1.Pressure", "Line1.Speed", "Line1.Setpoint")

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
    """Scenario time: seconds since the split started."""

    def __init__(self, duration: float) -> None:
        self.start = time.monotonic()
        self.duration = duration

    def now(self) -> float:
        return time.monotonic() - self.start

    def sleep_until(self, t: float) -> bool:
        """Sleep until scenario time ``t``; False if the split ends first."""
        if t >= self.duration:
            return False
        delay = t - self.now()
        if delay > 0:
            time.sleep(delay)
        return True

    async def asleep_until(self, t: float) -> bool:
        if t >= self.duration:
            return False
        delay = t - self.now()
        if delay > 0:
            await asyncio.sleep(delay)
        return True


@dataclass
class Attack:
    """One labelled attack; ``start``/``end`` are set (epoch seconds) when it runs."""

    id: str
    attacker: str
    target: str
    techniques: list[str]
    description: str
    start: float | None = None
    end: float | None = None

    def begin(self) -> None:
        if self.start is None:
            self.start = time.time()

    def done(self) -> None:
        self.end = time.time()


@dataclass
class Split:
    duration: float
    seed: int
    attacks: dict[str, Attack] = field(default_factory=dict)
    rng: random.Random = field(init=False)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    def attack(self, attack_id: str) -> Attack | None:
        return self.attacks.get(attack_id)


def schedule(
    rng: random.Random, duration: float, first: float, gap: tuple[float, float]
) -> list[float]:
    """Times of a sporadic action: the first near ``first``, then gaps drawn from ``gap``."""
    times, t = [], first + rng.uniform(0, gap[0] / 2)
    while t < duration - 5:
        times.append(round(t, 1))
        t += rng.uniform(*gap)
    return times


# ---------------------------------------------------------------- servers


class Process:
    """The physical process behind the servers: values drawn around fixed levels from the
    split's seed (bounded noise, so every split stays in the same ranges): S7 DB1 and the OPC
    UA variables once a second, Modbus holding 0-9 on every scan."""

    def __init__(self) -> None:
        self.rng = random.Random(0)
        self.db1: bytearray | None = None
        self.opcua: dict[str, object] = {}  # "Line1.Temperature" -> asyncua node

    def reseed(self, seed: int) -> None:
        self.rng = random.Random(1000 + seed)

    def step_s7(self) -> None:
        rng = self.rng
        if self.db1 is not None:
            for i in range(16):
                self.db1[i] = 40 + 4 * i + rng.randint(-2, 2)


PROCESS = Process()


def start_modbus_server() -> None:
    from pymodbus.server import ModbusTcpServer
    from pymodbus.simulator import DataType, SimData, SimDevice

    async def action(
        function_code: int,
        start_address: int,
        address: int,
        count: int,
        registers: list[int],
        set_values: list[int] | list[bool] | None,
    ) -> None:
        if function_code == 3 and address < 10:  # a new scan of the levels behind holding 0-9
            rng = PROCESS.rng
            for i in range(
                address - start_address, min(10 - start_address, address - start_address + count)
            ):
                registers[i] = 200 + 10 * (i + start_address) + rng.randint(-3, 3)
        return None

    coils = SimData(0, values=[i % 2 == 0 for i in range(16)], datatype=DataType.BITS)
    holding = SimData(
        0,
        values=[200 + 10 * i for i in range(10)] + [0] * 90 + [50] + [0] * 99,
        datatype=DataType.REGISTERS,
    )
    inputs = SimData(0, values=[False] * 16, datatype=DataType.BITS)
    input_regs = SimData(0, values=[0] * 16, datatype=DataType.REGISTERS)
    device = SimDevice(id=1, simdata=([coils], [inputs], [holding], [input_regs]), action=action)

    def run() -> None:
        async def serve() -> None:
            await ModbusTcpServer(device, address=(MODBUS_PLC, 502)).serve_forever()

        asyncio.run(serve())

    threading.Thread(target=run, daemon=True, name="modbus-server").start()


def start_s7_server() -> object:
    import snap7
    from snap7.type import SrvArea

    server = snap7.server.Server(log=False)
    db1 = bytearray(64)
    db2 = bytearray(16)
    db2[0:2] = (150).to_bytes(2, "big")
    PROCESS.db1 = db1
    server.register_area(SrvArea.DB, 1, db1)
    server.register_area(SrvArea.DB, 2, db2)
    server.start_to(S7_PLC, 102)
    server._areas_kept = (db1, db2)  # type: ignore[attr-defined]  # must outlive the server
    return server


def start_process_clock() -> None:
    def run() -> None:
        while True:
            PROCESS.step_s7()
            time.sleep(1.0)

    threading.Thread(target=run, daemon=True, name="process").start()


class _Users:
    """The historian's account; anonymous sessions are accepted too."""

    def get_user(
        self,
        iserver: object,
        username: str | None = None,
        password: str | None = None,
        certificate: object = None,
    ) -> object:
        from asyncua.crypto.permission_rules import User, UserRole

        if username is None:
            return User(role=UserRole.User)
        if username == "historian" and password == "hist-2026":
            return User(role=UserRole.User)
        return None


def start_opcua_server() -> None:
    from asyncua import Server, ua

    ready = threading.Event()

    async def serve() -> None:
        server = Server(user_manager=_Users())
        await server.init()
        server.set_endpoint(OPCUA_URL)
        server.set_server_name("Plant line controller")
        server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
        idx = await server.register_namespace(NAMESPACE)
        nodes = {}
        for obj_name, variables in OPCUA_VARIABLES.items():
            obj = await server.nodes.objects.add_object(ua.NodeId(obj_name, idx), obj_name)
            for name, value in variables.items():
                node = await obj.add_variable(ua.NodeId(f"{obj_name}.{name}", idx), name, value)
                await node.set_writable()
                nodes[f"{obj_name}.{name}"] = node
        PROCESS.opcua = nodes
        async with server:
            ready.set()
            while True:
                await asyncio.sleep(1.0)
                rng = PROCESS.rng
                for key, base, spread in (
                    ("Line1.Temperature", 71.0, 1.5),
                    ("Line1.Pressure", 3.2, 0.2),
                    ("Line1.Speed", 1450.0, 20.0),
                    ("Line2.Temperature", 65.0, 1.5),
                    ("Line2.Pressure", 2.9, 0.2),
                    ("Line2.Speed", 1200.0, 20.0),
                ):
                    value = round(base + rng.uniform(-spread, spread), 2)
                    await nodes[key].write_value(ua.Variant(value, ua.VariantType.Double))

    threading.Thread(target=lambda: asyncio.run(serve()), daemon=True, name="opcua-server").start()
    if not ready.wait(30):
        raise RuntimeError("OPC UA server did not start")


# ---------------------------------------------------------------- normal operation


def hmi_modbus(clock: Clock, split: Split) -> None:
    from pymodbus.client import ModbusTcpClient

    rng = random.Random(split.seed * 100 + 1)
    writes = [(t, rng.randint(40, 60)) for t in schedule(rng, clock.duration, 12.0, (20.0, 45.0))]
    out_of_range = split.attack("hmi-setpoint-out-of-range")
    restart = split.attack("hmi-modbus-restart")
    client = ModbusTcpClient(MODBUS_PLC, port=502, source_address=(HMI, 0), timeout=2)
    client.connect()
    tick = 0
    while clock.sleep_until(0.2 + tick * 1.0):
        t = 0.2 + tick * 1.0
        client.read_holding_registers(0, count=10, device_id=1)
        if tick % 2 == 0:
            client.read_coils(0, count=8, device_id=1)
        while writes and writes[0][0] <= t:
            client.write_register(100, writes.pop(0)[1], device_id=1)
        if out_of_range is not None and out_of_range.start is None and t >= 40.0:
            out_of_range.begin()
            client.write_register(100, 95, device_id=1)  # the learned range is 40..60
            out_of_range.done()
        if restart is not None and restart.start is None and t >= 90.0:
            restart.begin()
            try:
                client.diag_restart_communication(False, device_id=1)  # FC 8 sub-function 1
            except Exception:  # the server may drop the connection: reconnect below
                client.close()
            restart.done()
            if not client.connected:
                client.connect()
        tick += 1
    client.close()


def hmi_s7(clock: Clock, split: Split) -> None:
    import snap7

    rng = random.Random(split.seed * 100 + 2)
    writes = [(t, rng.randint(100, 200)) for t in schedule(rng, clock.duration, 20.0, (30.0, 60.0))]
    db_write = split.attack("hmi-s7-db-write")
    blocked = split.attack("hmi-s7-polling-blocked")
    _bind.ip = HMI
    client = snap7.client.Client()
    client.connection_type = 2  # OP: an operator panel, not a programming device
    client.connect(S7_PLC, 0, 1, 102)
    tick = 0
    while clock.sleep_until(0.6 + tick * 2.0):
        t = 0.6 + tick * 2.0
        if blocked is not None and t >= 130.0:
            blocked.begin()  # the HMI's view of the PLC goes dark: no request from here on
            time.sleep(max(0.0, clock.duration - 1.0 - clock.now()))
            blocked.done()  # it lasts until the split ends (1 s before the last polls)
            break
        try:
            client.db_read(1, 0, 16)
        except Exception:  # refused while the PLC is stopped: the HMI keeps polling
            pass
        while writes and writes[0][0] <= t:
            client.db_write(2, 0, bytearray(writes.pop(0)[1].to_bytes(2, "big")))
        if db_write is not None and db_write.start is None and t >= 120.0:
            db_write.begin()
            client.db_write(1, 4, bytearray(b"\x00\x00\x00\x00"))  # process data, never written
            db_write.done()
        tick += 1
    client.disconnect()


def _opcua_nodes(client: object, idx: int, names: tuple[str, ...]) -> list:
    from asyncua import ua

    return [client.get_node(ua.NodeId(name, idx)) for name in names]  # type: ignore[attr-defined]


def hmi_opcua(clock: Clock, split: Split) -> None:
    from asyncua import Client, ua

    rng = random.Random(split.seed * 100 + 3)
    writes = [
        (t, round(rng.uniform(45.0, 55.0), 1))
        for t in schedule(rng, clock.duration, 25.0, (30.0, 60.0))
    ]
    _bind.ip = HMI

    async def run() -> None:
        # the watchdog (a Read of ServerStatus.State) every 5 s instead of asyncua's 1 s
        async with Client(OPCUA_URL, timeout=5, watchdog_intervall=5.0) as client:
            idx = await client.get_namespace_index(NAMESPACE)
            nodes = _opcua_nodes(client, idx, HMI_READS)
            (setpoint,) = _opcua_nodes(client, idx, ("Line1.Setpoint",))
            tick = 0
            while await clock.asleep_until(1.0 + tick * 2.0):
                t = 1.0 + tick * 2.0
                await client.read_values(nodes)
                while writes and writes[0][0] <= t:
                    value = writes.pop(0)[1]
                    await setpoint.write_value(
                        ua.DataValue(ua.Variant(value, ua.VariantType.Double))
                    )
                tick += 1

    asyncio.run(run())


def historian_opcua(clock: Clock, split: Split) -> None:
    from asyncua import Client

    sweep = split.attack("opcua-slow-tag-sweep")
    _bind.ip = HISTORIAN

    async def run() -> None:
        client = Client(OPCUA_URL, timeout=5, watchdog_intervall=5.0)
        client.set_user("historian")
        client.set_password("hist-2026")
        async with client:
            idx = await client.get_namespace_index(NAMESPACE)
            nodes = _opcua_nodes(client, idx, HISTORIAN_READS)
            tick = 0
            task = None
            while await clock.asleep_until(3.0 + tick * 10.0):
                t = 3.0 + tick * 10.0
                await client.read_values(nodes)
                if sweep is not None and task is None and t >= 40.0:
                    # on the same session, beside the normal reads (which go on)
                    task = asyncio.create_task(_tag_sweep(client, idx, clock, sweep, t + 2.0))
                tick += 1
            if task is not None:
                await task

    asyncio.run(run())


async def _tag_sweep(client: object, idx: int, clock: Clock, attack: Attack, t: float) -> None:
    """Walk the plant's part of the address space and read every variable not read in normal
    operation, one request every 4 s: a slow sweep no rate threshold sees."""
    await clock.asleep_until(t)
    attack.begin()
    objects = [
        o
        for o in await client.nodes.objects.get_children()  # type: ignore[attr-defined]
        if o.nodeid.NamespaceIndex == idx
    ]
    found = []
    for obj in objects:
        t += 4.0
        await clock.asleep_until(t)
        found.extend(await obj.get_children())
    for node in found:
        if node.nodeid.Identifier in HISTORIAN_READS:
            continue
        t += 4.0
        await clock.asleep_until(t)
        await node.read_value()
    attack.done()


def engineering_s7(clock: Clock, split: Split) -> None:
    import snap7

    rng = random.Random(split.seed * 100 + 4)
    visits = schedule(rng, clock.duration - 20, 50.0, (110.0, 160.0))
    stop = split.attack("eng-plc-stop")
    _bind.ip = ENGINEERING
    actions: list[tuple[float, str]] = [(t, "maintenance") for t in visits]
    if stop is not None:
        actions = [(30.0, "maintenance"), (60.0, "stop")]
    for t, what in actions:
        if not clock.sleep_until(t):
            break
        client = snap7.client.Client()  # a PG connection (python-snap7's default type)
        client.connect(S7_PLC, 0, 1, 102)
        if what == "maintenance":
            client.read_szl(0x0011, 0)  # module identification
            client.get_cpu_info()  # SZL 0x001C: component identification
            client.upload(1)  # a backup of DB1: start upload, upload, end upload
        else:
            assert stop is not None
            stop.begin()
            client.plc_stop()
            time.sleep(8.0)
            client.plc_hot_start()
            stop.done()
        client.disconnect()


# ---------------------------------------------------------------- attacks


def rogue_modbus_sweep(clock: Clock, split: Split) -> None:
    """127.0.7.66 reads 4 holding registers at a time, stepping through the address space,
    one request every 4 s."""
    from pymodbus.client import ModbusTcpClient

    attack = split.attacks["modbus-slow-sweep"]
    if not clock.sleep_until(30.0):
        return
    client = ModbusTcpClient(MODBUS_PLC, port=502, source_address=(ROGUE_SWEEP, 0), timeout=2)
    client.connect()
    attack.begin()
    for step in range(16):
        if not clock.sleep_until(30.0 + 4.0 * step):
            break
        client.read_holding_registers(8 * (step + 1), count=4, device_id=1)
    attack.done()
    client.close()


def rogue_s7_recon(clock: Clock, split: Split) -> None:
    """127.0.7.68 identifies the S7 PLC (SZL reads) and uploads DB1."""
    import snap7

    attack = split.attacks["s7-recon-upload"]
    _bind.ip = ROGUE_S7
    if not clock.sleep_until(140.0):
        return
    client = snap7.client.Client()
    attack.begin()
    client.connect(S7_PLC, 0, 1, 102)
    client.read_szl(0x0011, 0)
    client.get_cpu_info()
    client.read_szl(0x0131, 1)  # communication capabilities
    client.upload(1)
    client.disconnect()
    attack.done()


def rogue_opcua_write(clock: Clock, split: Split) -> None:
    """127.0.7.67 opens an anonymous session, reads the setpoint and writes an in-range value."""
    from asyncua import Client, ua

    attack = split.attacks["opcua-rogue-write"]
    _bind.ip = ROGUE_OPCUA
    if not clock.sleep_until(80.0):
        return

    async def run() -> None:
        attack.begin()
        async with Client(OPCUA_URL, timeout=5) as client:
            idx = await client.get_namespace_index(NAMESPACE)
            (node,) = _opcua_nodes(client, idx, ("Line1.Setpoint",))
            await node.read_value()
            await node.write_value(ua.DataValue(ua.Variant(52.0, ua.VariantType.Double)))
        attack.done()

    asyncio.run(run())


# ---------------------------------------------------------------- splits

Worker = Callable[[Clock, Split], None]
NORMAL: dict[str, Worker] = {
    "hmi_modbus": hmi_modbus,
    "hmi_s7": hmi_s7,
    "hmi_opcua": hmi_opcua,
    "historian_opcua": historian_opcua,
    "engineering_s7": engineering_s7,
}

ATTACKS: dict[str, list[Attack]] = {
    "attack_recon": [
        Attack(
            "modbus-slow-sweep",
            ROGUE_SWEEP,
            MODBUS_PLC,
            ["T0861"],
            "A host never seen reads 4 holding registers at a time at 16 addresses, one request "
            "every 4 s (no rate threshold sees it).",
        ),
        Attack(
            "opcua-slow-tag-sweep",
            HISTORIAN,
            OPCUA_SERVER,
            ["T0861"],
            "The historian (trusted, read-only) browses the address space and reads every "
            "variable it never reads, one request every 4 s.",
        ),
        Attack(
            "s7-recon-upload",
            ROGUE_S7,
            S7_PLC,
            ["T0888", "T0845"],
            "A host never seen reads the S7 PLC's identity (SZL 0x0011, 0x001C, 0x0131) and "
            "uploads block DB1.",
        ),
    ],
    "attack_process": [
        Attack(
            "hmi-setpoint-out-of-range",
            HMI,
            MODBUS_PLC,
            ["T0836", "T0831"],
            "The HMI (trusted) writes 95 to the setpoint (holding 100), which the operator keeps "
            "within 40..60.",
        ),
        Attack(
            "opcua-rogue-write",
            ROGUE_OPCUA,
            OPCUA_SERVER,
            ["T0848", "T0855", "T0836"],
            "A host never seen opens an anonymous session among the busy HMI and historian "
            "sessions and writes Line1.Setpoint = 52 (a value inside the normal range).",
        ),
        Attack(
            "hmi-s7-db-write",
            HMI,
            S7_PLC,
            ["T0836"],
            "The HMI (trusted, writes DB2 setpoints) writes 4 bytes of DB1, the process data "
            "block it only ever reads.",
        ),
    ],
    "attack_control": [
        Attack(
            "eng-plc-stop",
            ENGINEERING,
            S7_PLC,
            ["T0858", "T0816"],
            "The engineering station (trusted, does maintenance) stops the S7 PLC and starts "
            "it again 8 s later.",
        ),
        Attack(
            "hmi-modbus-restart",
            HMI,
            MODBUS_PLC,
            ["T0816"],
            "The HMI (trusted, reads and writes the setpoint) sends Modbus FC 8 sub-function 1 "
            "(restart communications option).",
        ),
        Attack(
            "hmi-s7-polling-blocked",
            HMI,
            S7_PLC,
            ["T0804"],
            "The HMI's polling of the S7 PLC stops at 130 s (its reporting path is blocked) "
            "while it keeps polling the Modbus PLC and the OPC UA server.",
        ),
    ],
}

SPLITS: dict[str, tuple[float, int, dict[str, Worker]]] = {
    "train": (300.0, 1, NORMAL),
    "test": (150.0, 2, NORMAL),
    "attack_recon": (
        180.0,
        11,
        {**NORMAL, "rogue_sweep": rogue_modbus_sweep, "rogue_s7": rogue_s7_recon},
    ),
    "attack_process": (180.0, 12, {**NORMAL, "rogue_opcua": rogue_opcua_write}),
    "attack_control": (180.0, 13, NORMAL),
}


def run_split(name: str, attempts: int = 3) -> tuple[Path, list[Attack]]:
    """Record one split; again (up to ``attempts`` times) when tcpdump reports drops."""
    for _ in range(attempts):
        path, dropped, attacks = _record(name)
        if dropped == 0:
            return path, attacks
        print(f"{name}: tcpdump reported {dropped} dropped packets, recording again")
    raise RuntimeError(f"split {name}: packets dropped in {attempts} attempts")


def _record(name: str) -> tuple[Path, int, list[Attack]]:
    duration, seed, workers = SPLITS[name]
    attacks = [
        Attack(a.id, a.attacker, a.target, list(a.techniques), a.description)
        for a in ATTACKS.get(name, [])
    ]
    split = Split(duration, seed, {a.id: a for a in attacks})
    PROCESS.reseed(seed)
    out = HERE / f"{name}.pcap"
    dump = subprocess.Popen(
        [
            "tcpdump",
            "-i",
            "lo",
            "--immediate-mode",
            "-B",
            "16384",
            "-U",
            "-n",
            "-s",
            "0",
            "-w",
            str(out),
            BPF,
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
            worker(clock, split)
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
        raise RuntimeError(f"split {name}: " + "; ".join(errors))
    missing = [a.id for a in attacks if a.start is None or a.end is None]
    if missing:
        raise RuntimeError(f"split {name}: attacks that did not run: {', '.join(missing)}")
    match = re.search(r"(\d+) packets dropped by kernel", stderr or "")
    return out, int(match.group(1)) if match else -1, attacks


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def write_labels(recorded: dict[str, list[Attack]]) -> None:
    """labels.json: one entry per attack, splits recorded now replace their old entries."""
    doc = json.loads(LABELS.read_text(encoding="utf-8")) if LABELS.exists() else {}
    entries = [
        e for e in doc.get("attacks", []) if e["capture"] not in {f"{n}.pcap" for n in recorded}
    ]
    for name, attacks in recorded.items():
        for a in attacks:
            assert a.start is not None and a.end is not None
            entries.append(
                {
                    "id": a.id,
                    "capture": f"{name}.pcap",
                    "start": _iso(a.start),
                    "end": _iso(a.end),
                    "attacker": a.attacker,
                    "target": a.target,
                    "techniques": a.techniques,
                    "description": a.description,
                }
            )
    order = list(SPLITS)
    entries.sort(
        key=lambda e: (
            order.index(e["capture"][:-5]) if e["capture"][:-5] in order else 99,
            e["start"],
        )
    )
    doc = {
        "format": "icsmon-attack-labels",
        "version": 1,
        "learn": ["train.pcap"],
        "clean": ["test.pcap"],
        "attacks": entries,
    }
    LABELS.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.ERROR)
    names = argv or list(SPLITS)
    unknown = [n for n in names if n not in SPLITS]
    if unknown:
        print(f"unknown split(s): {', '.join(unknown)}; known: {', '.join(SPLITS)}")
        return 2
    start_modbus_server()
    s7_server = start_s7_server()
    start_opcua_server()
    start_process_clock()
    time.sleep(1.0)
    recorded: dict[str, list[Attack]] = {}
    try:
        for name in names:
            path, attacks = run_split(name)
            recorded[name] = attacks
            print(f"{path.name}: {path.stat().st_size} bytes", flush=True)
    finally:
        s7_server.stop()  # type: ignore[attr-defined]
        if recorded:
            write_labels(recorded)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
