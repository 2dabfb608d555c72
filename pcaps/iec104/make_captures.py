"""Record the IEC 60870-5-104 captures in this folder from a real c104 server and client.

Run as root from the repository root (the script moves itself into a network namespace of its
own: c104's client cannot choose its source address, a route inside the namespace does):

    .venv/bin/python pcaps/iec104/make_captures.py                 # all captures
    .venv/bin/python pcaps/iec104/make_captures.py operations      # just one
    .venv/bin/python pcaps/iec104/make_captures.py --out /tmp/x    # elsewhere (to compare)

The controlled station (c104 ``Server``, 127.0.9.10:2404) holds two stations, common
addresses 1 and 2. Station 1: single points 100-101 (M_SP_NA_1), double point 110
(M_DP_NA_1), short floats 200-202 (M_ME_NC_1), scaled value 210 (M_ME_NB_1), integrated
total 300 (M_IT_NA_1); single command 5000 (C_SC_NA_1, select-before-operate, reported back
on 100), double command 5001 (C_DC_NA_1, direct), set point 6000 (C_SE_NC_1, short float,
select-before-operate, reported back on 202). Station 2: short float 200. The controlling
station is c104's ``Client`` from 127.0.9.2 (originator address 0). Values follow a fixed
pattern: the payloads are the same on every run (ports, times and CP56 time tags differ).
"""

from __future__ import annotations

import argparse
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import c104

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from loopback import Tcpdump, enter_namespace, source_for  # noqa: E402

SERVER = ("127.0.9.10", 2404)
MASTER = "127.0.9.2"  # the controlling station (SCADA)
INTRUDER = "127.0.9.66"  # attacks: a host never seen
SCANNER = "127.0.9.67"
CAPTURE_FILTER = f"net 127.0.9.0/24 and tcp port {SERVER[1]}"
ATTEMPTS = 3


class Station:
    """The controlled station (c104 server) and what it reports."""

    def __init__(self) -> None:
        self.server = c104.Server(
            ip=SERVER[0], port=SERVER[1], tick_rate_ms=50, select_timeout_ms=5000
        )
        st = self.server.add_station(common_address=1)
        self.st1 = st
        self.breaker = st.add_point(io_address=100, type=c104.Type.M_SP_NA_1)
        self.alarm = st.add_point(io_address=101, type=c104.Type.M_SP_NA_1)
        self.switch = st.add_point(io_address=110, type=c104.Type.M_DP_NA_1)
        self.flows = [st.add_point(io_address=200 + i, type=c104.Type.M_ME_NC_1) for i in range(3)]
        self.level = st.add_point(io_address=210, type=c104.Type.M_ME_NB_1)
        self.energy = st.add_point(io_address=300, type=c104.Type.M_IT_NA_1)
        st.add_point(
            io_address=5000,
            type=c104.Type.C_SC_NA_1,
            related_io_address=100,
            related_io_autoreturn=True,
            command_mode=c104.CommandMode.SELECT_AND_EXECUTE,
        )
        st.add_point(io_address=5001, type=c104.Type.C_DC_NA_1, related_io_address=110)
        st.add_point(
            io_address=6000,
            type=c104.Type.C_SE_NC_1,
            related_io_address=202,
            related_io_autoreturn=True,
            command_mode=c104.CommandMode.SELECT_AND_EXECUTE,
        )
        st2 = self.server.add_station(common_address=2)
        self.st2_flow = st2.add_point(io_address=200, type=c104.Type.M_ME_NC_1)
        self.ticks = 0
        self.tick()

    def tick(self) -> None:
        """The process moves (deterministically): flows, level and energy."""
        k = self.ticks
        for i, p in enumerate(self.flows[:2]):
            p.value = 40.0 + i * 5 + (k * 7 + i) % 10 / 4
        self.level.value = c104.Int16(1200 + (k * 13) % 50)
        self.st2_flow.value = 12.5 + k % 4
        self.ticks += 1

    def spontaneous(self) -> None:
        """Report a change of the first flow and the level (cause spontaneous)."""
        self.tick()
        self.flows[0].transmit(cause=c104.Cot.SPONTANEOUS)
        self.level.transmit(cause=c104.Cot.SPONTANEOUS)


class Master:
    """A c104 client connection to the controlled station, with its command points."""

    def __init__(self, source: str) -> None:
        source_for(SERVER[0], source)
        self.client = c104.Client(tick_rate_ms=50, command_timeout_ms=2000)
        self.con = self.client.add_connection(ip=SERVER[0], port=SERVER[1], init=c104.Init.NONE)
        st = self.con.add_station(common_address=1)
        self.command = st.add_point(
            io_address=5000,
            type=c104.Type.C_SC_NA_1,
            command_mode=c104.CommandMode.SELECT_AND_EXECUTE,
        )
        self.double = st.add_point(io_address=5001, type=c104.Type.C_DC_NA_1)
        self.setpoint = st.add_point(
            io_address=6000,
            type=c104.Type.C_SE_NC_1,
            command_mode=c104.CommandMode.SELECT_AND_EXECUTE,
        )
        self.flow = st.add_point(io_address=200, type=c104.Type.M_ME_NC_1)
        self.client.start()
        for _ in range(100):
            if self.con.is_connected:
                break
            time.sleep(0.05)
        else:
            raise SystemExit(f"the client could not connect to {SERVER}")
        self.con.unmute()  # STARTDT act / con

    def write_setpoint(self, value: float) -> None:
        self.setpoint.value = value
        self.setpoint.transmit(cause=c104.Cot.ACTIVATION)  # select, then execute

    def close(self) -> None:
        time.sleep(0.3)
        self.client.stop()


def raw_apdus(source: str, asdus: list[bytes]) -> None:
    """STARTDT, then I-format APDUs carrying ``asdus`` from a plain socket (for what c104's
    client cannot send: reset process), each answer read; the server is c104's."""
    sock = socket.socket()
    sock.bind((source, 0))
    sock.settimeout(1.0)
    sock.connect(SERVER)
    try:
        sock.sendall(bytes([0x68, 4, 0x07, 0, 0, 0]))
        sock.recv(64)
        recv = 0
        for n, asdu in enumerate(asdus):
            control = struct.pack("<HH", n << 1, recv << 1)
            sock.sendall(bytes([0x68, 4 + len(asdu)]) + control + asdu)
            time.sleep(0.3)
            try:
                data = sock.recv(4096)
            except TimeoutError:
                continue
            recv += data.count(b"\x68") and 1  # one answer per command is enough here
    finally:
        sock.close()


# -- scenarios ---------------------------------------------------------------------------


def operations(station: Station) -> None:
    """STARTDT, general and counter interrogation, clock synchronisation, test command,
    select-before-operate single command and set point, direct double command, read,
    spontaneous data, end of initialisation after a remote reset, STOPDT."""
    m = Master(MASTER)
    try:
        m.con.interrogation(common_address=1)
        m.con.counter_interrogation(common_address=1)
        m.con.clock_sync(common_address=1)
        m.con.test(common_address=1)
        m.command.value = True
        m.command.transmit(cause=c104.Cot.ACTIVATION)
        m.write_setpoint(47.5)
        m.double.value = c104.Double.ON
        m.double.transmit(cause=c104.Cot.ACTIVATION)
        m.flow.read()
        for _ in range(3):
            station.spontaneous()
            time.sleep(0.2)
        station.st1.signal_initialized(cause=c104.Coi.REMOTE_RESET)
        time.sleep(0.3)
        m.con.interrogation(common_address=2)
        m.con.mute()  # STOPDT act / con
    finally:
        m.close()


def normal(
    station: Station, seconds: float, attack: Callable[[Master], None] | None = None
) -> None:
    """The controlling station's day: general interrogation at start and every 10 s, clock
    synchronisation at start, a read of flow 200 every 1 s, the set point (45..55) every 3 s;
    the station reports flow 200 and the level spontaneously every 0.5 s. ``attack`` runs
    6 s in, in a thread of its own."""
    m = Master(MASTER)
    try:
        m.con.interrogation(common_address=1)
        m.con.clock_sync(common_address=1)
        start = time.monotonic()
        tick = 0
        attacked = attack is None
        thread = None
        while time.monotonic() - start < seconds:
            time.sleep(max(0.0, start + tick * 0.5 - time.monotonic()))
            station.spontaneous()
            if tick % 2 == 0:
                m.flow.read()
            if tick % 6 == 3:
                m.write_setpoint((45.0, 50.0, 55.0, 47.5, 52.5)[(tick // 6) % 5])
            if tick % 20 == 19:
                m.con.interrogation(common_address=1)
            if not attacked and time.monotonic() - start >= 6.0:
                attacked = True  # beside the controlling station, which goes on
                thread = threading.Thread(target=attack, args=(m,))
                thread.start()
            tick += 1
        if thread is not None:
            thread.join()
    finally:
        m.close()


def intruder_command(m: Master) -> None:
    """A host never seen opens its own connection and operates single command 5000."""
    other = Master(INTRUDER)
    try:
        other.command.value = False
        other.command.transmit(cause=c104.Cot.ACTIVATION)
    finally:
        other.close()
    source_for(SERVER[0], MASTER)


def out_of_range(m: Master) -> None:
    """The controlling station writes 500.0 to the set point (learned: 45..55)."""
    m.write_setpoint(500.0)


def reset_process(m: Master) -> None:
    """The controlling station's address sends C_RP_NA_1 general reset on a connection of
    its own (raw APDUs: c104's client has no reset process command)."""
    asdu = bytes([105, 0x01, 6, 0, 1, 0, 0, 0, 0, 1])  # type 105, act, CA 1, IOA 0, QRP 1
    raw_apdus(MASTER, [asdu])


def sweep(m: Master) -> None:
    """A host never seen interrogates common addresses 1..24 one after the other (only 1 and
    2 exist: the others are refused with cause unknown common address)."""
    other = Master(SCANNER)
    try:
        for ca in range(1, 25):
            other.con.interrogation(common_address=ca, wait_for_response=True)
    finally:
        other.close()
    source_for(SERVER[0], MASTER)


SCENARIOS: dict[str, Callable[[Station], None]] = {
    "operations": operations,
    "train": lambda s: normal(s, 40.0),
    "clean": lambda s: normal(s, 20.0),
    "attack_new_host": lambda s: normal(s, 14.0, intruder_command),
    "attack_setpoint": lambda s: normal(s, 14.0, out_of_range),
    "attack_reset": lambda s: normal(s, 14.0, reset_process),
    "attack_sweep": lambda s: normal(s, 14.0, sweep),
}


def record(name: str, out_dir: Path) -> int:
    path = out_dir / f"iec104_{name}.pcap"
    station = Station()
    station.server.start()
    time.sleep(0.3)
    dump = Tcpdump(path, CAPTURE_FILTER)
    try:
        SCENARIOS[name](station)
        time.sleep(0.3)
    finally:
        station.server.stop()
        dropped = dump.stop()
    print(f"{path}: {path.stat().st_size} bytes")
    return dropped


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description="Record the c104 captures (as root).")
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
            if record(name, args.out) == 0:
                break
        else:
            sys.exit(f"{name}: tcpdump kept dropping packets")


if __name__ == "__main__":
    main(sys.argv[1:])
