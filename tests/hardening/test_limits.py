"""Resource limits under hostile traffic (issue 8): a SYN flood of distinct flows with real
Modbus traffic mixed in, and single connections that never complete a PDU.

The captures are generated (tests/support/floodgen.py, plain struct); the Modbus traffic mixed into
the flood is the real pymodbus capture. Each replay runs in a child process so that its peak
RSS (the child's own ``VmHWM``) is its own. The 1,000,000-flow version and the numbers are
in bench/bench_limits.py and bench/README.md ("Limits"); this is the scaled version.

The memory bounds asserted are generous multiples of what the caps allow (they catch a cap
that is not enforced, not a few MB of drift): an uncapped table of 100,000 flows costs about
150 MB of RSS more than a capped one of 4,096.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from sensor.engine import Engine
from sensor.flows import FlowLimits
from sensor.protocols.base import ParserLimits
from tests.support import REPO
from tests.support.floodgen import real_modbus_frames, syn_flood, trickle

# the child: replay with the given limits, check the flow table and the parsers' buffers at
# every progress tick (1,024 frames), print the counters and the Modbus events
CHILD = r"""
import json, sys
sys.path.insert(0, sys.argv[1])
from sensor.engine import Engine, EngineConfig
from sensor.flows import FlowLimits
from sensor.protocols.base import ParserLimits
max_flows, max_buffer = int(sys.argv[3]), int(sys.argv[4])
eng = Engine(EngineConfig(limits=FlowLimits(max_flows=max_flows, parser=ParserLimits(max_buffer=max_buffer))))
peak = {"flows": 0, "buffered": 0}
def tick(n):
    peak["flows"] = max(peak["flows"], eng.nflows)
    for flow, _ in eng.flows.values():
        p = flow.parser
        if p is None:
            continue
        held = [len(b) for b in getattr(p, "_buf", [])] if hasattr(p, "_buf") else []
        if hasattr(p, "_dirs"):
            held += [len(d.buf) + len(d.cotp) + len(d.plus) for d in p._dirs.values()]
        if hasattr(p, "_dir"):
            held += [len(d.buf) + sum(x.size for x in d.partial.values()) for d in p._dir]
        peak["buffered"] = max([peak["buffered"], *held])
modbus = []
for e in eng.replay([sys.argv[2]], progress=tick):
    if e.get("network.protocol") == "modbus":
        modbus.append([e.get("event.action"), e.get("modbus.transaction_id"), e.get("modbus.function_code"), str(e.get("modbus.values")), e.get("event.outcome"), e.get("ics.pairing")])
# VmHWM is this process's own peak: ru_maxrss would carry over the parent's peak, which Linux
# keeps across the fork and exec that started this child (pytest itself may be 400 MB)
with open("/proc/self/status") as status:
    rss = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:")) / 1024
print(json.dumps({"stats": eng.stats, "errors": eng.errors, "peak": peak, "modbus": sorted(modbus, key=str), "rss": rss}))
"""


def run_child(
    path: Path, max_flows: int, max_buffer: int = ParserLimits().max_buffer
) -> tuple[dict, float]:
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(REPO), str(path), str(max_flows), str(max_buffer)],
        capture_output=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]
    res = json.loads(proc.stdout)
    print(f"{path.name}: max_flows {max_flows}, peak RSS {res['rss']:.0f} MB, peak {res['peak']}")
    return res, res["rss"]


@pytest.fixture(scope="module")
def mix() -> list[tuple[float, bytes]]:
    return real_modbus_frames()


@pytest.fixture(scope="module")
def mix_alone(tmp_path_factory, mix) -> tuple[dict, float]:
    path = tmp_path_factory.mktemp("alone") / "alone.pcap"
    syn_flood(path, 0, mix)
    return run_child(path, FlowLimits().max_flows)


@pytest.mark.slow
def test_syn_flood_flows_are_evicted_and_counted_and_modbus_still_decoded(
    tmp_path, mix, mix_alone
) -> None:
    flows, cap = 100_000, 4096
    path = tmp_path / "flood.pcap"
    packets = syn_flood(path, flows, mix)
    res, rss = run_child(path, cap)
    s = res["stats"]
    assert s["packets"] == packets and not res["errors"]
    assert s["flows"] >= flows and res["peak"]["flows"] <= cap
    # every flow beyond the cap was evicted and counted (the real Modbus flows outlive it)
    assert s["flows_cap_evicted"] >= flows - cap
    assert s["flows_cap_evicted"] + s["flows_idle_evicted"] + s["flows_closed"] >= flows
    # the real traffic in the flood decodes to exactly what it decodes to alone
    alone, alone_rss = mix_alone
    assert res["modbus"] == alone["modbus"] and len(res["modbus"]) >= 20
    assert rss < alone_rss + 60, (rss, alone_rss)


@pytest.mark.slow
def test_syn_flood_beyond_the_cap_costs_no_more_memory(tmp_path) -> None:
    """10x the flows under the same cap: the same memory (a cap that leaks would grow)."""
    small, large = tmp_path / "small.pcap", tmp_path / "large.pcap"
    syn_flood(small, 10_000, [])
    syn_flood(large, 100_000, [])
    rss_small = run_child(small, 2048)[1]
    r_large, rss_large = run_child(large, 2048)
    assert r_large["stats"]["flows_cap_evicted"] >= 100_000 - 2048
    assert rss_large < rss_small + 15, (rss_small, rss_large)


@pytest.mark.parametrize("kind", ["cotp", "opcua"])
def test_a_pdu_that_never_completes_is_bounded_and_reported(tmp_path, kind: str) -> None:
    """One connection sending 8 MiB that never completes a PDU (COTP DT segments without
    EOT; OPC UA intermediate chunks without a final one), with a 256 KiB buffer cap."""
    cap = 256 * 1024
    path = tmp_path / f"{kind}.pcap"
    trickle(path, kind, 8 << 20)
    res, rss = run_child(path, FlowLimits().max_flows, cap)
    assert res["peak"]["buffered"] <= cap + 1500, res["peak"]
    s = res["stats"]
    assert s["anomalies"] >= (8 << 20) // cap - 2, s  # each overflow is reported
    assert s["parser_errors"] == 0
    assert rss < 120, rss


def test_flow_limit_defaults_are_the_documented_ones() -> None:
    """README.md ("Plant IT") and bench/README.md ("Limits") document these numbers."""
    f, p = FlowLimits(), ParserLimits()
    assert (f.max_flows, f.max_ooo_bytes, f.max_ooo_total, f.idle_timeout) == (
        65536,
        256 << 10,
        64 << 20,
        600.0,
    )
    assert (p.max_buffer, p.max_pending, p.max_items) == (1 << 20, 1024, 4096)
    assert Engine().limits == f
