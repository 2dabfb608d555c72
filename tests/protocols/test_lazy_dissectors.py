"""Dissector packages run when a flow first needs them (sensor/protocols/__init__.py): what
the engine reads of each at its start is set ahead of the package, from
``sensor/protocols/facts.py`` (where each fact is written once), and must be what the
package itself says."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import types

from tests.support import REPO

FACTS = ("NAME", "PORTS", "UDP_PORTS", "HEURISTIC_DEFAULT")

OPTIONAL = ("UDP_PORTS", "DatagramParser", "probe_datagram")


def _in_a_fresh_interpreter(code: str) -> object:
    run = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    return json.loads(run.stdout)


def test_the_declarations_are_the_packages_own() -> None:
    """NAME, PORTS, UDP_PORTS, HEURISTIC_DEFAULT and which of the optional callables a
    package has, as declared before it runs, equal the package's own once it has run."""
    code = """
import json
from sensor.protocols import DISSECTORS
OPTIONAL = ("UDP_PORTS", "DatagramParser", "probe_datagram")
def state():
    return {
        m.NAME: {
            **{k: getattr(m, k) for k in ("NAME", "PORTS", "HEURISTIC_DEFAULT")},
            "UDP_PORTS": getattr(m, "UDP_PORTS", None),
            "has": [k for k in OPTIONAL if hasattr(m, k)],
            "ran": type(m).__name__ == "module",
        }
        for m in DISSECTORS
    }
before = state()
for m in DISSECTORS:
    m.Parser  # runs the package
after = state()
print(json.dumps([before, after]))
"""
    before, after = _in_a_fresh_interpreter(code)  # type: ignore[misc]
    assert not any(d.pop("ran") for d in before.values())
    assert all(d.pop("ran") for d in after.values())
    assert before == after
    assert set(before) == {"opcua", "s7comm", "dnp3", "iec104", "enip", "modbus"}


def test_an_engine_starts_without_running_a_dissector() -> None:
    """An engine (its port maps, heuristics, the schema's reads of every ``fields``) runs
    no dissector package; a Modbus capture runs Modbus's alone."""
    code = """
import json, types
from sensor.engine import Engine, EngineConfig
from sensor.protocols import DISSECTORS
ran = lambda: sorted(m.NAME for m in DISSECTORS if type(m) is types.ModuleType)
engine = Engine(EngineConfig(ports={5020: "modbus"}, udp_ports={20001: "dnp3"}))
started = ran()
events = list(engine.replay(["pcaps/modbus/modbus_polling.pcap"]))
print(json.dumps([started, ran(), len(events)]))
"""
    started, after, events = _in_a_fresh_interpreter(code)  # type: ignore[misc]
    assert started == [] and after == ["modbus"] and events > 0


def test_a_package_used_before_it_ran() -> None:
    """Its datagram parser and probe, its other names and its submodules are the package's
    own whichever is asked for first; it is the module of sys.modules all along."""
    from sensor import protocols

    for short in ("dnp3", "enip"):
        module = sys.modules[f"sensor.protocols.{short}"]
        assert getattr(protocols, short) is module and protocols.BY_NAME[short] is module
    code = """
import json, sys, types
from sensor.protocols import dnp3, enip
from sensor.protocols.base import ParserLimits
first = type(dnp3.DatagramParser(ParserLimits())).__name__  # runs dnp3 on the way
probe = dnp3.probe_datagram(b"\\x05\\x64")
from sensor.protocols.enip import parser  # a submodule before its package ran
print(json.dumps([first, probe, type(dnp3) is types.ModuleType,
    sys.modules["sensor.protocols.dnp3"] is dnp3, dnp3.DatagramParser is dnp3.Parser,
    hasattr(parser, "Parser"), type(enip.DatagramParser()).__name__]))
"""
    answers = _in_a_fresh_interpreter(code)
    first, probe, ran, same, parser_is, submodule, enip = answers  # type: ignore[misc]
    assert first == "Parser" and probe is False and ran and same and parser_is and submodule
    assert enip == "DatagramParser"
    assert all(isinstance(m, types.ModuleType) for m in protocols.DISSECTORS)


def test_no_dissector_writes_its_own_facts() -> None:
    """A package, parser or record module takes its name, ports and heuristic default from
    ``facts`` (a name from an import, or ``facts.X``), never a literal of its own: a copy
    would drift from what the registry sets before the package runs."""
    literal = (ast.Constant, ast.Tuple)
    own = []
    for path in sorted((REPO / "sensor" / "protocols").glob("*/*.py")):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.Assign):
                targets, value = node.targets, node.value
            elif isinstance(node, ast.AnnAssign) and node.value is not None:
                targets, value = [node.target], node.value
            else:
                continue
            names = {t.id for t in targets if isinstance(t, ast.Name)}
            if names & set(FACTS) and isinstance(value, literal):
                own.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert own == []
