"""Protocol dissectors, one module per protocol (see ``base`` for the contract)."""

from __future__ import annotations

from types import ModuleType

from sensor.protocols import dnp3, enip, iec104, modbus, opcua, s7comm

# Order matters for heuristic detection on non-standard ports: most specific probe first.
DISSECTORS: tuple[ModuleType, ...] = (opcua, s7comm, dnp3, iec104, enip, modbus)

BY_NAME: dict[str, ModuleType] = {m.NAME: m for m in DISSECTORS}


def by_port(port: int) -> ModuleType | None:
    for module in DISSECTORS:
        if port in module.PORTS:
            return module
    return None
