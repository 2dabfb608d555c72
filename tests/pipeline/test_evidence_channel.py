"""Evidence on demand: the sensor's handler answers from its own store, its packet ring and
the alert's kept capture (a real capture replayed through the engine); the request and the
answer travel through the real Kafka (a listener reading only its sensor's partition), the
indexer stores the answer in the real Elasticsearch, and both back ends give the pcap back
byte for byte."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from icsmon.run import Run, load_detectors
from pipeline import control, kinds
from pipeline.control import Envelope, Receiver, Signer
from pipeline.evidence import (
    EvidenceHandler,
    EvidenceLimits,
    PcapUnavailable,
    events_of,
    evidence_state,
    pcap_of,
    request_payload,
)
from pipeline.kafka import encode_doc
from pipeline.query import AlertFilter
from pipeline.store import Store
from sensor.capture import CaptureReader
from sensor.engine import Engine, EngineConfig
from sensor.evidence import AlertCaptures, PacketRing, flow_of
from tests.support import REPO
from tests.support.pipeline import drop_pipe, make_pipe, require_services, wait_for

ATTACK = REPO / "pcaps" / "baseline" / "attack_new_host_write.pcap"
SENSOR = "sensor-ev"


class Edge:
    """A replayed capture as a sensor keeps it: store, packet ring, alert captures."""

    def __init__(self, folder: Path, capture: Path = ATTACK) -> None:
        self.store = Store.open(folder / "sensor.db")
        self.ring = PacketRing(max_bytes=64 << 20, max_age_s=1e9)
        self.captures = AlertCaptures(folder / "evidence", self.ring, before_s=2.0, after_s=2.0)
        engine = Engine(EngineConfig(site="site-ev", observer=SENSOR, organization="ent-ev"))

        def tap(frames: list) -> None:
            self.ring.add(frames)
            self.captures.add(frames)

        engine.tap = tap
        run = Run(engine, load_detectors(None, False, None, None), self.store)
        run.on_alert_written = lambda alert: self.captures.arm_alert(alert, 1)
        self.alerts = list(run.process(engine.replay([capture]), want_events=False))
        self.captures.close_all()
        self.store.flush()
        self.frames = [f for batch in CaptureReader(capture).batches() for f in batch]

    def handler(self, **limits: Any) -> EvidenceHandler:
        return EvidenceHandler(
            SENSOR,
            self.store,
            self.ring,
            self.captures,
            EvidenceLimits(**limits),
            common={"labels.site": "site-ev", "organization.id": "ent-ev"},
        )

    def close(self) -> None:
        self.store.close()


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory):
    e = Edge(tmp_path_factory.mktemp("edge"))
    assert e.alerts
    yield e
    e.close()


def envelope(payload: dict[str, Any], rid: str = "req-1") -> Envelope:
    now = int(time.time())
    return Envelope(control.EVIDENCE_REQUEST, rid, SENSOR, now, now + 900, payload)


def request_of(env: Envelope) -> dict[str, Any]:
    return {"id": env.id, "target": env.target, "expires_at": env.expires_at}


def flow_alert(edge: Edge) -> dict[str, Any]:
    return next(a for a in edge.alerts if a.get("network.community_id") and a.get("source.port"))


def test_the_answer_holds_the_flows_events_and_the_alerts_packets(edge: Edge) -> None:
    alert = flow_alert(edge)
    env = envelope(request_payload(alert, before_s=30, after_s=30))
    parts = edge.handler()(env)
    head = parts[0]
    assert head["icsmon.control.status"] == "delivered" and head["icsmon.control.part"] == 0
    assert head["labels.site"] == "site-ev" and head["observer.name"] == SENSOR
    assert [p["icsmon.control.part"] for p in parts] == list(range(head["icsmon.control.parts"]))
    # the events: the flow's, in the window, oldest first, as the sensor stored them
    payload = env.payload
    total, want = edge.store.search_events(
        AlertFilter(
            community_id=alert["network.community_id"],
            since=payload["start"],
            until=payload["end"] + 1,
            limit=10_000,
        )
    )
    got = events_of(request_of(env), parts)
    assert got == list(reversed(want)) and total == head["icsmon.evidence.events_total"] > 0
    # the packets: the alert's kept capture, byte for byte
    pcap = pcap_of(request_of(env), parts)
    assert head["icsmon.evidence.pcap_source"] == "alert-capture"
    assert pcap == edge.captures.path(alert["event.id"]).read_bytes()
    state = evidence_state(request_of(env), parts)
    assert state["state"] == "delivered" and state["complete"] and state["pcap_bytes"] == len(pcap)
    for part in parts:  # every message fits the kind's cap (and Kafka's 1 MiB)
        assert len(encode_doc(part)) <= kinds.RESPONSE.max_doc_bytes


def test_packets_come_from_the_ring_when_no_capture_was_kept(edge: Edge, tmp_path: Path) -> None:
    alert = flow_alert(edge)
    payload = request_payload(alert, before_s=600, after_s=600)
    payload["alert_id"] = "no-capture-for-this-id"
    env = envelope(payload)
    parts = edge.handler()(env)
    assert parts[0]["icsmon.evidence.pcap_source"] == "ring"
    data = pcap_of(request_of(env), parts)
    (tmp_path / "ring.pcap").write_bytes(data)
    got = [f for batch in CaptureReader(tmp_path / "ring.pcap").batches() for f in batch]
    flow = (
        bytes(map(int, alert["source.ip"].split("."))),
        bytes(map(int, alert["destination.ip"].split("."))),
        alert["source.port"],
        alert["destination.port"],
    )
    want = [
        f
        for f in edge.frames
        if payload["start"] <= f[0] <= payload["end"] + 1
        and (k := flow_of(f[1], f[2])) is not None
        and {(k[0], k[2]), (k[1], k[3])} == {(flow[0], flow[2]), (flow[1], flow[3])}
    ]
    assert got and [f[2] for f in got] == [f[2] for f in want]
    if shutil.which("tshark"):  # Wireshark reads it, and finds the alert's protocol in it
        wanted = {"modbus": "mbtcp", "s7comm": "s7comm", "opcua": "opcua"}
        out = subprocess.run(
            ["tshark", "-r", str(tmp_path / "ring.pcap"), "-T", "fields", "-e", "frame.protocols"],
            capture_output=True,
            text=True,
            check=True,
        )
        lines = out.stdout.split()
        assert len(lines) == len(got)
        assert any(wanted[alert["network.protocol"]] in line for line in lines)


def test_a_request_gets_no_more_than_the_caps(edge: Edge) -> None:
    alert = flow_alert(edge)
    env = envelope(request_payload(alert, before_s=600, after_s=600, max_events=2))
    parts = edge.handler(max_pcap_bytes=300)(env)
    head = parts[0]
    assert head["icsmon.evidence.events_sent"] == 2 < head["icsmon.evidence.events_total"]
    assert head["icsmon.evidence.events_truncated"] and head["icsmon.evidence.pcap_truncated"]
    pcap = pcap_of(request_of(env), parts)
    assert 24 < len(pcap) <= 300 and "events: the newest 2" in head["icsmon.control.message"]
    # a request may ask for less than the caps, never more
    env = envelope(request_payload(alert, max_events=10**9, max_pcap_bytes=10**12), "req-2")
    head = edge.handler(max_events=3, max_pcap_bytes=1000)(env)[0]
    assert head["icsmon.evidence.events_sent"] <= 3 and head["icsmon.evidence.pcap_bytes"] <= 1000
    # a window longer than the sensor allows is cut around its middle
    payload = request_payload(alert, before_s=86400, after_s=86400)
    head = edge.handler(max_window_s=60)(envelope(payload, "req-3"))[0]
    assert "window cut to 60 s" in head["icsmon.control.message"]


@pytest.mark.parametrize(
    "payload",
    [
        {},
        {"alert_id": "a"},
        {"alert_id": "a", "start": 5, "end": 1, "flow": {}},
        {"alert_id": 7, "start": 1, "end": 2, "flow": {}},
        {"alert_id": "a", "start": 1, "end": 2, "flow": []},
    ],
)
def test_a_malformed_request_is_refused_with_the_reason(edge: Edge, payload: dict) -> None:
    env = envelope(payload)
    parts = edge.handler()(env)
    assert len(parts) == 1 and parts[0]["icsmon.control.status"] == "refused"
    assert parts[0]["icsmon.control.reason"] == "bad_request"
    state = evidence_state(request_of(env), parts)
    assert state["state"] == "refused" and state["reason"] == "bad_request"
    with pytest.raises(PcapUnavailable):
        pcap_of(request_of(env), parts)


def test_the_state_of_a_request_without_an_answer() -> None:
    req = {"id": "r", "target": SENSOR, "expires_at": 1000}
    assert evidence_state(req, [], now=999)["state"] == "requested"
    assert evidence_state(req, [], now=1001)["state"] == "expired"
    # an answer from another sensor than the one asked is not believed
    env = Envelope(control.EVIDENCE_REQUEST, "r", "other", 1, 2, {})
    forged = [control.response_doc(env, "other", "delivered", 0, 1, {}, now=1)]
    assert evidence_state(req, forged, now=999)["state"] == "requested"


def test_missing_or_altered_parts_give_no_pcap(edge: Edge) -> None:
    alert = flow_alert(edge)
    env = envelope(request_payload(alert))
    parts = edge.handler()(env)
    req = request_of(env)
    with pytest.raises(PcapUnavailable, match="parts received"):
        pcap_of(req, parts[:-1])
    altered = [dict(p) for p in parts]
    last = altered[-1]
    last["icsmon.evidence.pcap"] = last["icsmon.evidence.pcap"][:-8] + "AAAAAAAA"
    with pytest.raises(PcapUnavailable, match="do not add up"):
        pcap_of(req, altered)


# -- through the real Kafka and Elasticsearch ---------------------------------------------------


def same_partition_name(name: str, partitions: int) -> str:
    from pipeline.control_kafka import partition_of

    want = partition_of(name, partitions)
    return next(
        f"{name}-neighbour-{i}"
        for i in range(1000)
        if partition_of(f"{name}-neighbour-{i}", partitions) == want
    )


@pytest.mark.services
def test_a_request_travels_to_its_sensor_and_the_answer_to_elasticsearch(
    edge: Edge, tmp_path: Path
) -> None:
    require_services()
    from kafka import KafkaProducer

    from pipeline.control_kafka import ControlListener, ControlPublisher
    from pipeline.es import EsQueryBackend
    from pipeline.indexer import Indexer, setup
    from pipeline.kafka import KafkaSink

    control.generate_keys(tmp_path / "province.key", tmp_path / "sensor.pub")
    pipe = make_pipe(tmp_path)
    setup(pipe.cfg)
    sink = KafkaSink.from_config(pipe.cfg, site="site-ev")
    listener: ControlListener | None = None
    publisher = ControlPublisher(pipe.cfg, Signer.from_file(tmp_path / "province.key"))
    neighbour = same_partition_name(SENSOR, pipe.cfg.indexer.partitions)
    try:

        def start_listener() -> ControlListener:
            receiver = Receiver(
                SENSOR,
                control.load_public_key(tmp_path / "sensor.pub"),
                {},
                seen_file=tmp_path / "seen.json",
                common={"labels.site": "site-ev"},
            )
            handler = edge.handler()
            receiver.on(handler.type, handler)
            lst = ControlListener(pipe.cfg, receiver, lambda d: sink.write("response", d))
            lst.start()
            wait_for("the listener's partition", lst.ready.is_set, limit_s=60)
            return lst

        listener = start_listener()
        alert = flow_alert(edge)
        mine = publisher.send(control.EVIDENCE_REQUEST, SENSOR, request_payload(alert))
        # a neighbour's request on the same partition, and junk keyed to this sensor
        publisher.send(control.EVIDENCE_REQUEST, neighbour, request_payload(alert))
        raw = KafkaProducer(bootstrap_servers=pipe.cfg.kafka.brokers, api_version=(4, 3))
        forged = dict(mine, id="forged", payload={**mine["payload"], "alert_id": "x"})
        for junk in (b"not json", json.dumps(forged).encode()):
            raw.send(pipe.cfg.topic("control"), key=SENSOR.encode(), value=junk).get(10)
        raw.close()
        wait_for("the answer", lambda: listener.counters["messages"] >= 4, limit_s=60)
        stats = listener.stats()
        assert stats["others"] == 1 and stats["handled"] == 1
        assert stats["refused_malformed"] == 1 and stats["refused_bad_signature"] == 1
        sink.flush()
        counters = Indexer(pipe.cfg).run(once=True)
        assert counters["deadlettered"] == 0
        backend = EsQueryBackend(pipe.cfg)
        backend.store.refresh()
        req = {"id": mine["id"], "target": SENSOR, "expires_at": mine["expires_at"]}
        parts = backend.responses([mine["id"]])
        state = evidence_state(req, backend.responses([mine["id"]], payload=False))
        assert state["state"] == "delivered" and state["complete"], state
        assert pcap_of(req, parts) == edge.captures.path(alert["event.id"]).read_bytes()
        assert events_of(req, parts) and all(
            e["network.community_id"] == alert["network.community_id"]
            for e in events_of(req, parts)
        )
        backend.close()
        # the embedded store serves the same answer back the same way
        with Store.open(tmp_path / "centre.db") as centre:
            for part in parts:
                centre.write("response", part)
            centre.flush()
            assert pcap_of(req, centre.responses([mine["id"]])) == pcap_of(req, parts)
        # restarted, the sensor does not answer again (offsets committed, ids remembered)
        listener.stop()
        answers = listener.counters["answers"]
        listener = start_listener()
        publisher.send(control.EVIDENCE_REQUEST, SENSOR, request_payload(alert))
        # the answer is counted once the handler has run: wait for it, not for the message
        wait_for("the next answer", lambda: listener.counters["answers"] >= 1, limit_s=60)
        assert listener.counters["messages"] == 1
        assert answers > 1
    finally:
        if listener is not None:
            listener.stop()
        publisher.close()
        sink.close(timeout=5)
        drop_pipe(pipe)
