"""Record the DNP3 captures in this folder from a real dnp3py outstation and master.

Run as root from the repository root (the script moves itself into a network namespace of its
own: dnp3py's master cannot choose its source address, a route inside the namespace does):

    .venv/bin/python pcaps/dnp3/make_captures.py                 # all captures
    .venv/bin/python pcaps/dnp3/make_captures.py operations      # just one
    .venv/bin/python pcaps/dnp3/make_captures.py --out /tmp/x    # elsewhere (to compare)

The outstation (dnp3py ``Outstation`` over ``OutstationTcpRunner``, 127.0.8.10:20000, link
address 10) has binary inputs 0-3, analog inputs 0-1, binary outputs 0-1 and analog outputs
0-1, and accepts every control and cold and warm restarts (a command handler of the script:
dnp3py's default one refuses them). Two
additions to the stack, both in this script: the outstation answers a READ of group 0 with
device attributes (manufacturer "Example Energy", product "RTU-560 Feeder", software version
"3.1.4", serial "SN-0042"; dnp3py has no group 0), and sends the unsolicited responses its
``generate_unsolicited()`` builds on the open connection (dnp3py's TCP runner never sends
them). The master is dnp3py's ``Master`` over ``MasterTcpRunner`` from 127.0.8.2, link
address 1 (it resets the link on connecting). dnp3py's TCP runner serves one master at a
time: a second connection closes the first (the master connects again).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

from dnp3.application import builder
from dnp3.application.fragment import ObjectBlock, RequestFragment
from dnp3.application.header import RequestHeader
from dnp3.application.qualifiers import ObjectHeader
from dnp3.core.enums import FunctionCode
from dnp3.database import AnalogInputConfig, BinaryInputConfig, Database
from dnp3.datalink.builder import build_unconfirmed_user_data
from dnp3.master import CommandBuilder, DefaultSOEHandler, Master, MasterConfig, MasterTcpRunner
from dnp3.outstation import Outstation, OutstationConfig, OutstationTcpRunner
from dnp3.outstation.handler import CommandResult, DefaultCommandHandler
from dnp3.outstation.outstation import IIN
from dnp3.transport.segmenter import Segmenter

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from loopback import Tcpdump, enter_namespace, source_for  # noqa: E402

SERVER = ("127.0.8.10", 20000)
OUTSTATION = 10
MASTER_IP, MASTER = "127.0.8.2", 1
INTRUDER = "127.0.8.66"
SCANNER = "127.0.8.67"
CAPTURE_FILTER = f"net 127.0.8.0/24 and tcp port {SERVER[1]}"
ATTEMPTS = 3
ATTRIBUTES = {
    252: "Example Energy",
    250: "RTU-560 Feeder",
    242: "3.1.4",
    248: "SN-0042",
}


class Controls(DefaultCommandHandler):
    """Accepts every control on the configured outputs, and restarts with a 2 s delay (dnp3py's
    default handler refuses them all)."""

    def select_binary_output(self, index, code, count, on_time, off_time):  # noqa: ANN001, ANN201
        return CommandResult.success()

    def operate_binary_output(self, index, code, count, on_time, off_time, select_sequence):  # noqa: ANN001, ANN201
        return CommandResult.success()

    def direct_operate_binary_output(self, index, code, count, on_time, off_time):  # noqa: ANN001, ANN201
        return CommandResult.success()

    def select_analog_output(self, index, value):  # noqa: ANN001, ANN201
        return CommandResult.success()

    def operate_analog_output(self, index, value, select_sequence):  # noqa: ANN001, ANN201
        return CommandResult.success()

    def direct_operate_analog_output(self, index, value):  # noqa: ANN001, ANN201
        return CommandResult.success()

    def cold_restart(self) -> int | None:
        return 2000

    def warm_restart(self) -> int | None:
        return 2000


class AttributedOutstation(Outstation):
    """dnp3py's outstation, answering READ g0 (device attributes) as visible strings."""

    def _read_request_block(self, block, seen_keys):  # noqa: ANN001, ANN202 - dnp3py's hook
        if block.header.group != 0:
            return super()._read_request_block(block, seen_keys)
        blocks = []
        for variation, text in ATTRIBUTES.items():
            if block.header.variation not in (variation, 254):
                continue
            raw = text.encode()
            # start-stop 0-0, data type 1 (visible string), length, the text
            blocks.append(
                ObjectBlock(ObjectHeader(0, variation, 0x00), bytes([0, 0, 1, len(raw)]) + raw)
            )
        return blocks, [], IIN(0) if blocks else IIN.OBJECT_UNKNOWN


class Runner(OutstationTcpRunner):
    """The TCP runner, remembering its connection so unsolicited responses can be sent."""

    channel = None

    async def _handle_connection(self, channel) -> None:  # noqa: ANN001 - dnp3py's hook
        self.channel = channel
        await super()._handle_connection(channel)

    async def unsolicited(self, master: int) -> None:
        fragment = self.outstation.generate_unsolicited()
        if fragment is None or self.channel is None:
            return
        for seg in Segmenter().segment(fragment.to_bytes()):
            frame = build_unconfirmed_user_data(
                destination=master,
                source=self.outstation.config.address,
                dir_from_master=False,
                user_data=seg.to_bytes(),
            )
            await self.channel.write_all(frame.to_bytes())


def make_outstation() -> tuple[AttributedOutstation, Database]:
    db = Database()
    for i in range(4):
        db.add_binary_input(i, BinaryInputConfig())
    for i in range(2):
        db.add_analog_input(i, AnalogInputConfig())
        db.add_binary_output(i)
        db.add_analog_output(i)
    outstation = AttributedOutstation(
        database=db, config=OutstationConfig(address=OUTSTATION), handler=Controls()
    )
    return outstation, db


class Plant:
    """The outstation and its process: inputs move on every tick, deterministically."""

    def __init__(self) -> None:
        self.outstation, self.db = make_outstation()
        self.runner = Runner(outstation=self.outstation, host=SERVER[0], port=SERVER[1])
        self.ticks = 0

    def tick(self) -> None:
        k = self.ticks
        self.db.update_analog_input(0, value=400 + (k * 7) % 20)
        self.db.update_analog_input(1, value=1200 + (k * 13) % 50)
        if k % 4 == 0:
            self.db.update_binary_input(1, value=bool(k // 4 % 2))
        self.ticks += 1


async def connect(source: str, address: int = MASTER, destination: int = OUTSTATION):
    source_for(SERVER[0], source)
    master = Master(
        handler=DefaultSOEHandler(),
        config=MasterConfig(address=address, outstation_address=destination),
    )
    runner = MasterTcpRunner(master=master, host=SERVER[0], port=SERVER[1], response_timeout=1.0)
    await runner.open()
    return master, runner


def time_write(master: Master):
    ms = int(datetime.now(UTC).timestamp() * 1000)
    block = ObjectBlock(ObjectHeader(50, 1, 0x07), bytes([1]) + ms.to_bytes(6, "little"))
    return builder.build_write_request((block,), seq=master.next_request_sequence())


def clear_restart(master: Master):
    block = ObjectBlock(ObjectHeader(80, 1, 0x00), bytes([7, 7, 0]))
    return builder.build_write_request((block,), seq=master.next_request_sequence())


async def operate(master: Master, runner: MasterTcpRunner, commands: CommandBuilder) -> None:
    """Select, then operate (select-before-operate)."""
    await runner.request(master.build_select(commands.build_select()))
    await runner.request(master.build_operate(commands.build_operate()))


# -- scenarios ---------------------------------------------------------------------------


async def operations(plant: Plant) -> None:
    """Integrity poll; time synchronisation (WRITE g50v1); clear the restart bit (WRITE
    g80v1); device attributes (READ g0v254); enable unsolicited; an unsolicited response
    with events, confirmed; a class poll; select-before-operate CROB latch on point 0 and
    analog output 1 = 55; direct operate CROB pulse on point 1; delay measurement; record
    current time; disable unsolicited; cold restart."""
    master, runner = await connect(MASTER_IP)
    try:
        await runner.integrity_poll()
        await runner.request(time_write(master))
        await runner.request(clear_restart(master))
        await runner.request(
            builder.build_read_request(
                (ObjectBlock(ObjectHeader(0, 254, 0x06)),), seq=master.next_request_sequence()
            )
        )
        await runner.enable_unsolicited()
        plant.tick()
        plant.tick()
        await plant.runner.unsolicited(MASTER)
        await runner.listen_unsolicited(timeout=1.0)
        plant.tick()
        await runner.class_poll()
        await operate(master, runner, CommandBuilder().latch_on(0))
        await operate(master, runner, CommandBuilder().add_analog(1, 55))
        await runner.request(
            master.build_direct_operate(CommandBuilder().pulse_on(1, 500).build_direct_operate())
        )
        await runner.request(master.build_delay_measure())
        header = RequestHeader.build(
            function=FunctionCode.RECORD_CURRENT_TIME, seq=master.next_request_sequence()
        )
        await runner.request(RequestFragment(header=header))
        await runner.disable_unsolicited()
        await runner.request(builder.build_cold_restart_request(seq=master.next_request_sequence()))
    finally:
        await runner.close()


Attack = Callable[[Plant], Awaitable[None]]


async def normal(plant: Plant, seconds: float, attack: Attack | None = None) -> None:
    """The master's day: an integrity poll at start and every 10 s, a class 1/2/3 poll every
    1 s, the analog output 0 set point (40..60, select-before-operate) every 3 s; the
    outstation's inputs move every 0.5 s. ``attack`` runs 6 s in (it may take the connection
    over: the master connects again)."""
    master, runner = await connect(MASTER_IP)
    start = time.monotonic()
    tick = 0
    attacked = attack is None
    try:
        await runner.integrity_poll()
        await runner.request(time_write(master))
        while time.monotonic() - start < seconds:
            await asyncio.sleep(max(0.0, start + tick * 0.5 - time.monotonic()))
            plant.tick()
            try:
                if tick % 2 == 0:
                    await runner.class_poll()
                if tick % 6 == 3:
                    value = (40, 45, 50, 55, 60)[(tick // 6) % 5]
                    await operate(master, runner, CommandBuilder().add_analog(0, value))
                if tick % 20 == 19:
                    await runner.integrity_poll()
            except Exception as exc:  # the attacker took the connection: connect again
                print(f"    master: {type(exc).__name__}; connecting again")
                with contextlib.suppress(Exception):
                    await runner.close()
                master, runner = await connect(MASTER_IP)
            if not attacked and time.monotonic() - start >= 6.0:
                attacked = True
                await attack(plant)
                source_for(SERVER[0], MASTER_IP)
            tick += 1
    finally:
        with contextlib.suppress(Exception):
            await runner.close()


async def intruder_control(plant: Plant) -> None:
    """A host never seen (link address 1, as the master) directly operates CROB point 0 latch
    off."""
    master, runner = await connect(INTRUDER)
    try:
        await runner.request(
            master.build_direct_operate(CommandBuilder().latch_off(0).build_direct_operate())
        )
    finally:
        await runner.close()


async def out_of_range(plant: Plant) -> None:
    """The master's address writes 500 to analog output 0 (learned: 40..60), on a connection
    of its own."""
    master, runner = await connect(MASTER_IP)
    try:
        await operate(master, runner, CommandBuilder().add_analog(0, 500))
    finally:
        await runner.close()


async def restart(plant: Plant) -> None:
    """The master's address sends a cold restart."""
    master, runner = await connect(MASTER_IP)
    try:
        await runner.request(builder.build_cold_restart_request(seq=master.next_request_sequence()))
    finally:
        await runner.close()


async def sweep(plant: Plant) -> None:
    """A host never seen reads the device attributes of link addresses 1..16 in turn (only 10
    answers)."""
    for destination in range(1, 17):
        master, runner = await connect(SCANNER, address=100, destination=destination)
        try:
            with contextlib.suppress(Exception):
                await runner.request(
                    builder.build_read_request(
                        (ObjectBlock(ObjectHeader(0, 254, 0x06)),),
                        seq=master.next_request_sequence(),
                    )
                )
        finally:
            await runner.close()


SCENARIOS: dict[str, Callable[[Plant], Awaitable[None]]] = {
    "operations": operations,
    "train": lambda p: normal(p, 40.0),
    "clean": lambda p: normal(p, 20.0),
    "attack_new_master": lambda p: normal(p, 14.0, intruder_control),
    "attack_setpoint": lambda p: normal(p, 14.0, out_of_range),
    "attack_restart": lambda p: normal(p, 14.0, restart),
    "attack_sweep": lambda p: normal(p, 14.0, sweep),
}


async def record(name: str, out_dir: Path) -> int:
    path = out_dir / f"dnp3_{name}.pcap"
    plant = Plant()
    serve = asyncio.create_task(plant.runner.run())
    await asyncio.sleep(0.5)
    dump = Tcpdump(path, CAPTURE_FILTER)
    try:
        await SCENARIOS[name](plant)
        await asyncio.sleep(0.3)
    finally:
        await plant.runner.stop()
        serve.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await serve
        dropped = dump.stop()
    print(f"{path}: {path.stat().st_size} bytes")
    return dropped


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description="Record the dnp3py captures (as root).")
    parser.add_argument("names", nargs="*", help=", ".join(SCENARIOS))
    parser.add_argument("--out", type=Path, default=HERE)
    args = parser.parse_args(argv)
    unknown = [n for n in args.names if n not in SCENARIOS]
    if unknown:
        parser.error(f"unknown capture {unknown[0]!r}: choose from {', '.join(SCENARIOS)}")
    enter_namespace()
    for name in args.names or list(SCENARIOS):
        for attempt in range(1, ATTEMPTS + 1):
            print(f"{name} (attempt {attempt})")
            if asyncio.run(record(name, args.out)) == 0:
                break
        else:
            sys.exit(f"{name}: tcpdump kept dropping packets")


if __name__ == "__main__":
    main(sys.argv[1:])
