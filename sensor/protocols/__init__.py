"""Protocol dissectors, one package per protocol (see ``base`` for the contract).

A dissector's package is imported when a flow first needs it (``Parser``, ``probe``...):
a capture of one protocol loads one dissector, not six (a sixth of a sensor's start-up
imports). What the engine reads of every dissector when it starts (its name, ports, whether
it probes by default: written once, in ``facts``; whether it reads datagrams) is set here on
the package ahead of its code (its ``DatagramParser`` and ``probe_datagram`` stand in for the
package's own until then); ``fields``, which ``sensor.schema`` reads of every dissector, is
imported alone. ``tests/protocols/test_lazy_dissectors.py`` checks the packages agree.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from types import ModuleType
from typing import Any

from sensor.protocols import facts

# Each package's attributes the engine reads at its start, as the package sets them (from
# ``facts``, where each is written once)
_DECLARED: dict[str, dict[str, Any]] = {
    "opcua": {
        "NAME": facts.OPCUA_NAME,
        "PORTS": facts.OPCUA_PORTS,
        "HEURISTIC_DEFAULT": facts.OPCUA_HEURISTIC_DEFAULT,
    },
    "s7comm": {
        "NAME": facts.S7COMM_NAME,
        "PORTS": facts.S7COMM_PORTS,
        "HEURISTIC_DEFAULT": facts.S7COMM_HEURISTIC_DEFAULT,
    },
    "dnp3": {
        "NAME": facts.DNP3_NAME,
        "PORTS": facts.DNP3_PORTS,
        "UDP_PORTS": facts.DNP3_UDP_PORTS,
        "HEURISTIC_DEFAULT": facts.DNP3_HEURISTIC_DEFAULT,
    },
    "iec104": {
        "NAME": facts.IEC104_NAME,
        "PORTS": facts.IEC104_PORTS,
        "HEURISTIC_DEFAULT": facts.IEC104_HEURISTIC_DEFAULT,
    },
    "enip": {
        "NAME": facts.ENIP_NAME,
        "PORTS": facts.ENIP_PORTS,
        "UDP_PORTS": facts.ENIP_UDP_PORTS,
        "HEURISTIC_DEFAULT": facts.ENIP_HEURISTIC_DEFAULT,
    },
    "modbus": {
        "NAME": facts.MODBUS_NAME,
        "PORTS": facts.MODBUS_PORTS,
        "HEURISTIC_DEFAULT": facts.MODBUS_HEURISTIC_DEFAULT,
    },
}
# the optional callables the engine asks a dissector for (hasattr), with those it has
_OPTIONAL = ("UDP_PORTS", "DatagramParser", "probe_datagram")
_CALLABLES: dict[str, tuple[str, ...]] = {
    "dnp3": ("DatagramParser", "probe_datagram"),
    "enip": ("DatagramParser",),
}
_ALONE = ("fields",)  # submodules imported without their package's other modules


class _NotYetImported(ModuleType):
    """A dissector package whose code has not run: its declared attributes are there, an
    optional one it lacks is missing, anything else runs the package first (in this very
    module object, the one in ``sys.modules``; then it is an ordinary module)."""

    def __getattr__(self, name: str) -> Any:
        if name in _OPTIONAL:  # declared ones are in the module's dict: this one it lacks
            raise AttributeError(f"module {self.__name__!r} has no attribute {name!r}")
        if name in _ALONE:
            return importlib.import_module(f"{self.__name__}.{name}")
        _run(self)
        return getattr(self, name)


def _run(module: ModuleType) -> None:
    """Run a dissector package's code, once (as ``importlib.util.LazyLoader`` does)."""
    if type(module) is _NotYetImported:
        module.__class__ = ModuleType  # type: ignore[assignment]
        module.__spec__.loader.exec_module(module)  # type: ignore[union-attr]


class _FirstUse:
    """A dissector's ``DatagramParser`` or ``probe_datagram`` before its package has run:
    called, it runs the package and calls the package's own."""

    def __init__(self, module: ModuleType, name: str) -> None:
        self.module = module
        self.name = name

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        _run(self.module)
        return getattr(self.module, self.name)(*args, **kwargs)


def _dissector(short: str) -> ModuleType:
    """The package ``sensor.protocols.<short>``, its code run when first needed."""
    name = f"{__name__}.{short}"
    module = sys.modules.get(name)
    if module is None:
        spec = importlib.util.find_spec(name)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        module.__dict__.update(_DECLARED[short])
        for attr in _CALLABLES.get(short, ()):
            setattr(module, attr, _FirstUse(module, attr))
        module.__class__ = _NotYetImported
        sys.modules[name] = module
    globals()[short] = module  # the package's attribute, as an import sets it
    return module


# Order matters for heuristic detection on non-standard ports: most specific probe first.
DISSECTORS: tuple[ModuleType, ...] = tuple(
    _dissector(short) for short in ("opcua", "s7comm", "dnp3", "iec104", "enip", "modbus")
)

BY_NAME: dict[str, ModuleType] = {m.NAME: m for m in DISSECTORS}


def by_port(port: int) -> ModuleType | None:
    for module in DISSECTORS:
        if port in module.PORTS:
            return module
    return None
