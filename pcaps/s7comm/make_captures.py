"""Record the S7comm captures in this folder from a real python-snap7 server and client.

Run as root (tcpdump on ``lo`` and the server on port 102 need it), from the repository root:

    .venv/bin/python pcaps/s7comm/make_captures.py             # all captures
    .venv/bin/python pcaps/s7comm/make_captures.py control     # just one

For each capture a python-snap7 ``Server`` listens on 127.0.0.31:102 with DB1 (64 bytes), DB2 (256 bytes) and
merkers (M) registered, and a python-snap7 ``Client`` connects to rack 0 / slot 2 while
``tcpdump -i lo -U -w FILE 'host 127.0.0.31 and tcp port 102'`` records. The areas start from
fixed contents, so the payloads are the same on every run (TCP ports, sequence numbers,
timestamps and the clock the server reports differ).
"""

from __future__ import annotations

import contextlib
import datetime
import socket
import struct
import sys
import time
from collections.abc import Callable
from pathlib import Path

import snap7
from snap7.client import Client
from snap7.server import Server
from snap7.type import Area, Block, SrvArea, WordLen

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from loopback import Tcpdump  # noqa: E402  (pcaps/loopback.py: tcpdump on lo, drops counted)

SERVER_IP, PORT = "127.0.0.31", 102
RACK, SLOT = 0, 2
CAPTURE_FILTER = f"host {SERVER_IP} and tcp port {PORT}"  # only this script's conversations
ATTEMPTS = 3

Scenario = Callable[[Client], None]


class ProtectionServer(Server):
    """python-snap7's server, answering SZL 0x0132 / 0x0232 index 4 (protection) in the layout
    a CPU uses (record length 40, one record: index 4, key switch level, assigned level, valid
    level, mode switch, startup switch, reserved words); the stock server answers a headerless
    five-word stub that no reader of the standard layout can interpret."""

    def __init__(self, level: int, assigned: int, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.protection = (level, assigned)

    def _get_szl_data(self, szl_id: int, szl_index: int) -> bytes | None:
        if szl_id in (0x0132, 0x0232) and szl_index == 4:
            level, assigned = self.protection
            record = struct.pack(">HHHHHH", 4, max(level, 1), assigned, level, 1, 2) + bytes(28)
            return struct.pack(">HH", len(record), 1) + record
        return super()._get_szl_data(szl_id, szl_index)


def make_server(protection: tuple[int, int] | None = None) -> tuple[Server, list[bytearray]]:
    """A snap7 server with DB1 (64 bytes), DB2 (256 bytes) and 32 merker bytes; with
    ``protection`` (valid level, assigned level) it answers the protection SZL."""
    server = Server(log=False) if protection is None else ProtectionServer(*protection, log=False)
    db1 = bytearray(range(64))
    db2 = bytearray(b"\xaa" * 256)
    merkers = bytearray(32)
    merkers[0] = 0x05
    server.register_area(SrvArea.DB, 1, db1)
    server.register_area(SrvArea.DB, 2, db2)
    server.register_area(SrvArea.MK, 0, merkers)
    server.start_to(SERVER_IP, PORT)
    return server, [db1, db2, merkers]  # the areas must outlive the server


def attempt(label: str, call: Callable[[], object]) -> None:
    """Run a client call; a call the server refuses is part of the capture, not fatal."""
    try:
        call()
    except Exception as exc:  # snap7 raises its own error types for refused requests
        print(f"    ({label}: {type(exc).__name__}: {str(exc).splitlines()[0]})")


def read_write(client: Client) -> None:
    """Read/write var on DB and M areas: bytes, a bit, multi-item reads/writes, a missing DB."""
    client.db_read(1, 0, 16)
    client.db_write(1, 4, bytearray(b"\x11\x22\x33\x44"))
    client.db_read(1, 0, 8)
    client.mb_read(0, 4)
    client.mb_write(2, 2, bytearray(b"\xbe\xef"))
    client.read_area(Area.MK, 0, 0, 1, WordLen.Bit)  # M0.0
    client.write_area(Area.DB, 1, 10 * 8 + 3, bytearray(b"\x01"), WordLen.Bit)  # DB1.DBX10.3
    client.read_multi_vars(
        [
            {"area": Area.DB, "db_number": 1, "start": 0, "size": 4},
            {"area": Area.MK, "db_number": 0, "start": 0, "size": 3},
            {"area": Area.DB, "db_number": 2, "start": 8, "size": 2},
        ]
    )
    client.write_multi_vars(
        [
            {"area": Area.DB, "db_number": 2, "start": 0, "data": bytearray(b"\x01\x02")},
            {"area": Area.MK, "db_number": 0, "start": 8, "data": bytearray(b"\x7f")},
        ]
    )
    attempt("read DB9", lambda: client.db_read(9, 0, 4))  # not registered: item error


def identity(client: Client) -> None:
    """SZL reads: module identification (0x0011), component identification (0x001C), CPU
    state (0x0424), communication (0x0131), protection (0x0232); read and set the clock."""
    client.read_szl(0x0011, 0)
    client.read_szl(0x001C, 0)
    client.get_cpu_state()
    client.get_cp_info()
    client.get_protection()
    client.get_plc_datetime()
    client.set_plc_datetime(datetime.datetime(2026, 11, 26, 8, 30, 15))


def control(client: Client) -> None:
    """PLC stop, hot start, cold start, compress, copy RAM to ROM, session password set/clear."""
    client.plc_stop()
    client.plc_hot_start()
    client.plc_stop()
    client.plc_cold_start()
    client.compress(1000)
    client.copy_ram_to_rom(1000)
    client.set_session_password("s3cret")
    client.clear_session_password()


def blocks(client: Client) -> None:
    """List blocks, list DBs, block info, upload DB1, download it as DB2, delete DB2."""
    client.list_blocks()
    client.list_blocks_of_type(Block.DB, 16)
    client.get_block_info(Block.DB, 1)
    client.upload(1)
    data, _ = client.full_upload(Block.DB, 1)
    attempt("download DB2", lambda: client.download(data, 2))
    client.delete(Block.DB, 2)


def unprotected(client: Client) -> None:
    """A CPU at protection level 1 with no password assigned: read its protection (SZL 0x0232
    index 4), stop it and upload DB1, no password given."""
    client.read_szl(0x0232, 4)
    client.plc_stop()
    client.upload(1)


def protected(client: Client) -> None:
    """A CPU at protection level 3 (password assigned): the session password first, then the
    protection SZL (0x0132 and 0x0232, index 4), a stop and an upload of DB1."""
    client.set_session_password("s3cret")
    client.read_szl(0x0132, 4)
    client.read_szl(0x0232, 4)
    client.plc_stop()
    client.upload(1)


SCENARIOS: dict[str, Scenario] = {
    "read_write": read_write,
    "identity": identity,
    "control": control,
    "blocks": blocks,
    "unprotected": unprotected,
    "protected": protected,
}
PROTECTION = {"unprotected": (1, 0), "protected": (3, 3)}  # (valid level, assigned level)


def record(name: str, scenario: Scenario, path: Path | None = None) -> int:
    """Record one capture (to ``path``, default beside this script); return the kernel's drop
    count (0 for a complete capture)."""
    path = path or HERE / f"s7_{name}.pcap"
    server, _areas = make_server(PROTECTION.get(name))
    try:
        for _ in range(100):  # wait for the listener (this probe is not captured)
            with (
                contextlib.suppress(OSError),
                socket.create_connection((SERVER_IP, PORT), timeout=0.2),
            ):
                break
            time.sleep(0.05)
        time.sleep(0.2)
        dump = Tcpdump(path, CAPTURE_FILTER)
        try:
            client = Client()
            client.connect(SERVER_IP, RACK, SLOT, PORT)
            try:
                scenario(client)
            finally:
                client.disconnect()
            time.sleep(0.2)
        finally:
            dropped = dump.stop()
    finally:
        server.stop()
    print(f"{path}: {path.stat().st_size} bytes")
    return dropped


def main(argv: list[str]) -> None:
    names = argv or list(SCENARIOS)
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        sys.exit(f"unknown capture(s) {unknown}; choose from {list(SCENARIOS)}")
    print(f"python-snap7 {snap7.__version__}, Python {sys.version.split()[0]}")
    for name in names:
        for n in range(1, ATTEMPTS + 1):
            if record(name, SCENARIOS[name]) == 0:
                break
            print(f"    packets were dropped, recording {name} again ({n}/{ATTEMPTS})")
        else:
            sys.exit(f"could not record {name} without drops")


if __name__ == "__main__":
    main(sys.argv[1:])
