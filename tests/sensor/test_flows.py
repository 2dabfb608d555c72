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


def test_with_room_grows_the_table_and_keeps_the_dict() -> None:
    """sensor.events.with_room: a copy with the same keys, order and values, no pad left; its
    table grown now (a copy of it takes keys up to the size asked without growing) and of
    the str-keys kind even when the dict it copies has the general kind."""
    import sys

    from sensor.events import with_room

    d = {f"k.{i}": i for i in range(15)}
    before = dict(d)
    out = with_room(d, 22)
    assert out is not d and d == before and out == before and list(out) == list(before)
    grown = sys.getsizeof(out)
    assert grown > sys.getsizeof(before)
    copy = out.copy()
    assert sys.getsizeof(copy) == grown
    for i in range(7):
        copy[f"more.{i}"] = i
    assert sys.getsizeof(copy) == grown  # 22 keys: no resize on the way
    big = {f"k.{i}": i for i in range(30)}
    assert with_room(big, 22) == big  # already that big: as it is
    general = dict(before)
    general[0] = 0  # a key that is not a str: the general kind, kept after it is gone
    del general[0]
    assert general == before and sys.getsizeof(with_room(general, 0)) < sys.getsizeof(general)
    assert sys.getsizeof(with_room(general, 0)) == sys.getsizeof(before)


def test_an_event_fits_the_table_of_its_flow_s_base() -> None:
    """_flow_base grows the base's table (with_room) so that the event copied from it takes
    the record without a resize: every Modbus event of a replay is exactly as big as its
    flow's base (without it, the base is a size smaller), and the base has only its keys."""
    import sys

    from sensor.capture import CaptureReader

    engine = Engine(EngineConfig())
    bases: list[dict] = []
    for ts, linktype, data in CaptureReader(SOURCE):
        engine.feed(ts, linktype, data)
        bases += [flow.base for flow, _ in engine.flows.values() if flow.base is not None]
    events = modbus_events(list(engine.finish()))
    assert events and bases
    sizes = {sys.getsizeof(e) for e in events} | {sys.getsizeof(b) for b in bases}
    assert len(sizes) == 1
    # the str-keys kind: as big as the same event made key by key in this (interpreted) test
    assert sizes == {sys.getsizeof({k: v for k, v in e.items()}) for e in events}
    for base in bases:
        assert not any(key.startswith("\0") for key in base)
        assert sys.getsizeof(dict(base)) < sys.getsizeof(base)


def test_flow_uid_is_the_hash_of_the_flow_s_text() -> None:
    # flow_uid formats the time apart from the rest of the text (mypyc's f-string with a
    # format spec is slow): the same text, hence the same ids, whatever the time is
    import hashlib

    from sensor.events import flow_uid

    for first_ts in (1700000000.123456, 0.0, -0.0, 1e300, float("nan"), float("inf"), 3):
        text = f"site|obs|1:abc=|{first_ts:.6f}|50123".encode()
        expected = hashlib.blake2b(text, digest_size=10).hexdigest()
        assert flow_uid("site", "obs", "1:abc=", first_ts, 50123) == expected
