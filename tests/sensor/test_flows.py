"""Flow table behaviour: port assignment and heuristics, eviction under caps, idle and
FIN/RST endings. Built by rewriting ports and addresses of a real pymodbus capture."""

from __future__ import annotations

from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether

from sensor.engine import Engine, EngineConfig
from sensor.flows import FlowLimits
from tests.support import REPO, pcapgen

SOURCE = REPO / "pcaps" / "modbus" / "modbus_polling.pcap"


def rewrite(
    frames,
    port: int | None = None,
    client_port: int | None = None,
    src_last: int | None = None,
    shift: float = 0.0,
) -> list:
    out = []
    for t, lt, d in frames:
        pkt = Ether(d)
        tcp = pkt[TCP]
        if port is not None:
            if tcp.sport == 502:
                tcp.sport = port
            if tcp.dport == 502:
                tcp.dport = port
        if client_port is not None:
            if tcp.sport not in (502, port):
                tcp.sport = client_port
            if tcp.dport not in (502, port):
                tcp.dport = client_port
        if src_last is not None:
            for attr in ("src", "dst"):
                if getattr(pkt[IP], attr) == "127.0.0.2":
                    setattr(pkt[IP], attr, f"127.0.1.{src_last}")
        del tcp.chksum, pkt[IP].chksum
        out.append((t + shift, lt, bytes(pkt)))
    return out


def modbus_events(events) -> list[dict]:
    return [
        e
        for e in events
        if e.get("network.protocol") == "modbus" and e["event.action"] != "anomaly"
    ]


def test_non_standard_port_needs_heuristic_or_assignment(tmp_path) -> None:
    frames = pcapgen.frames_of(SOURCE)
    path = pcapgen.write_pcap(tmp_path / "p5020.pcap", rewrite(frames, port=5020))
    baseline = modbus_events(Engine(EngineConfig()).replay([SOURCE]))
    assert not modbus_events(Engine(EngineConfig()).replay([path]))
    by_heuristic = modbus_events(Engine(EngineConfig(heuristics=("modbus",))).replay([path]))
    by_port = modbus_events(Engine(EngineConfig(ports={5020: "modbus"})).replay([path]))
    assert len(by_heuristic) == len(by_port) == len(baseline)
    assert {e["destination.port"] for e in by_port} == {5020}


def test_flow_cap_evicts_least_recently_active(tmp_path) -> None:
    frames = pcapgen.frames_of(SOURCE)
    many = []
    for i in range(40):  # 40 connections one after the other, each a copy of the capture
        many += rewrite(frames, client_port=20000 + i, src_last=i + 1, shift=i * 100.0)
    path = pcapgen.write_pcap(tmp_path / "many.pcap", many)
    eng = Engine(EngineConfig(limits=FlowLimits(max_flows=10)))
    events = modbus_events(eng.replay([path]))
    stats = eng.stats
    assert stats["flows"] == 40
    assert stats["flows_active"] == 0
    assert len(events) == 40 * len(modbus_events(Engine(EngineConfig()).replay([SOURCE])))


def test_idle_flows_end_and_report_unanswered_requests(tmp_path) -> None:
    frames = pcapgen.frames_of(SOURCE)
    # keep only the requests of the first connection, then much later another connection
    requests = [f for f in frames if Ether(f[2])[TCP].dport == 502]
    later = rewrite(frames, client_port=30000, src_last=9, shift=5000.0)
    path = pcapgen.write_pcap(tmp_path / "idle.pcap", requests + later)
    eng = Engine(EngineConfig(limits=FlowLimits(idle_timeout=60.0)))
    events = list(eng.replay([path]))
    assert eng.stats["flows_idle_evicted"] >= 1
    unanswered = [e for e in modbus_events(events) if e["ics.pairing"] == "request-only"]
    assert unanswered and all(e["event.outcome"] == "unknown" for e in unanswered)
    assert (
        unanswered[0]["@timestamp"]
        < [e for e in events if e.get("source.ip") == "127.0.1.9"][0]["@timestamp"]
    )


def test_assets_with_roles_and_peers() -> None:
    eng = Engine(EngineConfig(site="s1"))
    list(eng.replay([SOURCE]))
    assets = {a["host.ip"]: a for a in eng.changed_assets()}
    assert assets["127.0.0.1"]["asset.roles"] == ["modbus-server"]
    assert assets["127.0.0.2"]["asset.roles"] == ["modbus-client"]
    assert assets["127.0.0.1"]["asset.peers"] == ["127.0.0.2"]
    assert assets["127.0.0.1"]["asset.id"] == "s1:127.0.0.1"
    assert eng.changed_assets() == []  # nothing changed since
