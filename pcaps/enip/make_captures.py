"""Record the EtherNet/IP captures in this folder from real stacks: cpppo's EtherNet/IP server
(a Logix-style controller simulator) and its client, and pycomm3's CIP driver.

Run as root (tcpdump on ``lo``), from the repository root:

    .venv/bin/python pcaps/enip/make_captures.py              # all captures
    .venv/bin/python pcaps/enip/make_captures.py tags         # just one

For each capture ``python -m cpppo.server.enip`` listens on 127.0.0.41:44818 with the tags
``Speed=REAL``, ``Counter=DINT[10]``, ``Setpoints=INT[20]`` and ``Mode=SINT``, and
``tcpdump -i lo -U -w FILE 'host 127.0.0.41 and port 44818'`` records what the clients do:

- ``identity``: cpppo's client asks ListIdentity, ListServices and ListInterfaces, then reads
  the Identity object (Get_Attributes_All of @1/1, Get_Attribute_Single of the product name).
- ``tags``: cpppo's client reads and writes tags (REAL, DINT and INT arrays, SINT), one request
  at a time, then several at once in a Multiple Service Packet, then fragmented.
- ``connected``: cpppo's client opens a CIP connection (Forward Open, class 3), reads and
  writes over it (SendUnitData, sequence counts), closes it (Forward Close); pycomm3's
  driver does the same with its own Forward Open and a connected Identity read.
- ``dangerous``: pycomm3 sends what attackers send to Rockwell controllers: Identity Reset
  (class 0x01, service 0x05), Stop and Start to the Logix controller object (class 0x8e),
  a service to the Non-Volatile Storage object (class 0xa1, firmware update), an Initiate
  Download to the File object (class 0x37), and Set_Attribute_Single of an output assembly
  (class 0x04, instance 100, attribute 3); cpppo's client writes a tag as well. cpppo answers
  what it does not implement with a CIP error, which is part of the capture.
- ``udp``: cpppo's client asks ListIdentity, ListServices and ListInterfaces over UDP 44818.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from loopback import Tcpdump  # noqa: E402  (pcaps/loopback.py: tcpdump on lo, drops counted)

SERVER_IP, PORT = "127.0.0.41", 44818
ADDRESS = f"{SERVER_IP}:{PORT}"
CAPTURE_FILTER = f"host {SERVER_IP} and port {PORT}"
TAGS = ["Speed=REAL", "Counter=DINT[10]", "Setpoints=INT[20]", "Mode=SINT"]
PY = sys.executable
ATTEMPTS = 3


def cpppo_client(*args: str) -> None:
    """cpppo's EtherNet/IP client (a separate process, as a user runs it)."""
    cmd = [PY, "-m", "cpppo.server.enip.client", "-a", ADDRESS, "--no-print", *args]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    print(f"    client {' '.join(args)}: exit {result.returncode}")


def cpppo_get_attribute(*args: str) -> None:
    cmd = [PY, "-m", "cpppo.server.enip.get_attribute", "-a", ADDRESS, *args]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    print(f"    get_attribute {' '.join(args)}: exit {result.returncode}")


def identity() -> None:
    cpppo_client("-i", "-s", "-I")
    cpppo_get_attribute("-S", "@1/1")  # Get_Attributes_All of the Identity object
    cpppo_get_attribute("-S", "@1/1/7")  # its product name


def tags() -> None:
    cpppo_client("Speed=(REAL)12.5", "Speed", "Counter[0-3]=(DINT)1,2,3,4", "Counter[0-9]")
    cpppo_client("Setpoints[0-4]=(INT)100,200,300,400,500", "Mode=(SINT)2", "Mode")
    cpppo_client("-m", "Speed", "Counter[0-9]", "Setpoints[0-19]", "Mode")  # one MSP
    cpppo_client("-f", "Setpoints[0-19]", "Counter[2-5]=(DINT)7,8,9,10")  # fragmented


def _pycomm3(calls: Callable[[object], None]) -> None:
    from pycomm3 import CIPDriver
    from pycomm3.exceptions import CommError

    try:
        with CIPDriver(f"{SERVER_IP}/1/0") as driver:
            calls(driver)
    except CommError as exc:  # the target dropped the connection: part of the capture
        print(f"    pycomm3: {exc}")


def connected() -> None:
    cpppo_client("-c", "Speed", "Counter[0-3]=(DINT)5,6,7,8", "Counter[0-3]")

    def calls(driver) -> None:  # noqa: ANN001 - pycomm3's driver
        driver.generic_message(service=0x0E, class_code=0x01, instance=1, attribute=7,
                               connected=True, name="product_name")  # fmt: skip
        driver.generic_message(service=0x01, class_code=0x01, instance=1, connected=True)

    _pycomm3(calls)


def dangerous() -> None:
    for service, klass, instance, attribute, data in (
        (0x05, 0x01, 1, b"", b"\x00"),  # Identity reset (power cycle)
        (0x07, 0x8E, 1, b"", b""),  # stop the controller (program mode)
        (0x06, 0x8E, 1, b"", b""),  # start it again (run mode)
        (0x4B, 0xA1, 1, b"", b"\x01\x00"),  # Non-Volatile Storage: begin an update
        (0x4C, 0x37, 1, b"", b"\x00\x10\x00\x00\x01"),  # File: initiate download
        (0x10, 0x04, 100, 3, bytes(range(8))),  # write an output assembly's data
    ):
        # one session each: a target may drop the connection on a service it refuses
        _pycomm3(
            lambda driver, s=service, k=klass, i=instance, a=attribute, d=data: (
                driver.generic_message(
                    service=s,
                    class_code=k,
                    instance=i,
                    attribute=a,  # type: ignore[attr-defined]
                    request_data=d,
                    connected=False,
                    unconnected_send=True,
                )  # fmt: skip
            )
        )
    cpppo_client("Mode=(SINT)0")


def udp() -> None:
    cpppo_client("-u", "-i", "-s", "-I")  # the list commands over UDP, as discovery tools do


SCENARIOS: dict[str, Callable[[], None]] = {
    "identity": identity,
    "tags": tags,
    "connected": connected,
    "dangerous": dangerous,
    "udp": udp,
}


def record(name: str) -> int:
    path = HERE / f"enip_{name}.pcap"
    server = subprocess.Popen(
        [PY, "-m", "cpppo.server.enip", "-a", ADDRESS, "--no-print", *TAGS],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(200):  # wait for the listener (this probe is not captured)
            with contextlib.suppress(OSError), socket.create_connection((SERVER_IP, PORT), 0.2):
                break
            time.sleep(0.05)
        time.sleep(0.3)
        dump = Tcpdump(path, CAPTURE_FILTER)
        try:
            SCENARIOS[name]()
            time.sleep(0.2)
        finally:
            dropped = dump.stop()
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
    print(f"{path}: {path.stat().st_size} bytes")
    return dropped


def main(argv: list[str]) -> None:
    names = argv or list(SCENARIOS)
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        sys.exit(f"unknown capture(s) {unknown}; choose from {list(SCENARIOS)}")
    for name in names:
        for n in range(1, ATTEMPTS + 1):
            if record(name) == 0:
                break
            print(f"    packets were dropped, recording {name} again ({n}/{ATTEMPTS})")
        else:
            sys.exit(f"could not record {name} without drops")


if __name__ == "__main__":
    main(sys.argv[1:])
