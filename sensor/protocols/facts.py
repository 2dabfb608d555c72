"""What the engine reads of every dissector when it starts, written once: its name, the TCP
ports and UDP ports it owns by default, and whether it probes streams on other ports by
default (heuristic detection).

The registry (``sensor.protocols``) sets these on a dissector's package before the package
runs (so an engine starts without importing one), and each package, parser and record module
takes its own from here. This module imports nothing of the packages: it is read at every
start. ``Final`` so the compiled modules (Modbus's parser, EtherNet/IP's) read them as
constants.
"""

from __future__ import annotations

from typing import Final

OPCUA_NAME: Final = "opcua"
OPCUA_PORTS: Final = (4840,)
# a 4-byte message/chunk signature makes probing any port safe
OPCUA_HEURISTIC_DEFAULT: Final = True

S7COMM_NAME: Final = "s7comm"
S7COMM_PORTS: Final = (102,)
# The probe wants TPKT + COTP + an S7 header (or a CR with TSAPs): RDP's TPKT/COTP does not pass.
S7COMM_HEURISTIC_DEFAULT: Final = True

DNP3_NAME: Final = "dnp3"
DNP3_PORTS: Final = (20000,)
DNP3_UDP_PORTS: Final = (20000,)
# A link header carries its own CRC: a stream or datagram that passes the probe is DNP3.
DNP3_HEURISTIC_DEFAULT: Final = True

IEC104_NAME: Final = "iec104"
IEC104_PORTS: Final = (2404,)
# A probe needs whole APDUs with valid control fields end to end: safe on any port.
IEC104_HEURISTIC_DEFAULT: Final = True

ENIP_NAME: Final = "enip"
ENIP_PORTS: Final = (44818,)
ENIP_UDP_PORTS: Final = (44818, 2222)  # encapsulation (ListIdentity broadcasts), implicit I/O
# The header has no magic: a probe on every port would take 24 zero bytes for a NOP.
ENIP_HEURISTIC_DEFAULT: Final = False

MODBUS_NAME: Final = "modbus"
MODBUS_PORTS: Final = (502,)
# Modbus has no magic: probing every port would misfire
MODBUS_HEURISTIC_DEFAULT: Final = False
