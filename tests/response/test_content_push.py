"""Detection content pushed to a sensor over the signed control channel (``content.update``).

The province's package (a watchlist entry added the way a campaign adds one) is signed into
one envelope per sensor; the sensor's Receiver + handler swap the running watchlist without a
restart, which then matches the events of a real capture (pcaps/modbus, pymodbus on
loopback); the heartbeats carry the version; unsigned, tampered, expired, replayed,
mis-addressed, stale and altered pushes are refused and counted. The province's view of who
runs which version (``/api/content/fleet``) reads the sensors' heartbeats.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from detectors.content import WatchlistDetector, empty_package, load_package
from pipeline import control
from pipeline.control import Receiver, Signer
from pipeline.store import Store
from posture.state import PostureState
from response.content_push import CONTENT_UPDATE, live_content, sign_updates
from response.db import Viewer
from response.service import Response
from sensor.engine import Engine, EngineConfig
from sensor.heartbeat import Heartbeats
from tests.support import REPO

CAPTURE = REPO / "pcaps" / "modbus" / "modbus_identification.pcap"
SENSOR = "sensor-0001-a-1"
PROVINCE = Viewer("soc", "province-analyst", None, None)


@pytest.fixture()
def world(tmp_path: Path) -> Iterator[dict[str, Any]]:
    control.generate_keys(tmp_path / "province.key", tmp_path / "sensor.pub")
    store = Store.open(tmp_path / "icsmon.db")
    state = PostureState(tmp_path / "icsmon.posture.db")
    desk = Response(state.path, store)
    engine = Engine(EngineConfig(site="site-0001-a", observer=SENSOR))
    events = [e for e in engine.replay([CAPTURE]) if e.get("event.kind") == "event"]
    assert events, "the capture decodes to events"
    detector = WatchlistDetector(empty_package())
    beats = Heartbeats(engine.ctx, 60.0, content_version="0")

    def running(version: int) -> None:
        beats.content_version = str(version)

    handler = live_content(SENSOR, detector, tmp_path / "content.json", running)
    rx = Receiver(
        SENSOR,
        control.load_public_key(tmp_path / "sensor.pub"),
        {CONTENT_UPDATE: handler},
        seen_file=tmp_path / "seen.json",
    )
    yield {
        "signer": Signer.from_file(tmp_path / "province.key"),
        "desk": desk,
        "rx": rx,
        "handler": handler,
        "detector": detector,
        "events": events,
        "beats": beats,
        "tmp": tmp_path,
    }
    desk.close()
    state.close()
    store.close()


def push(w: dict[str, Any], sensor: str = SENSOR) -> dict[str, Any]:
    return sign_updates(w["signer"], w["desk"].content.package(), [sensor])[0]


def alerts(w: dict[str, Any]) -> list[dict[str, Any]]:
    return [a for e in w["events"] for a in w["detector"].process(dict(e))]


def test_a_signed_push_swaps_the_watchlist_without_a_restart(world: dict[str, Any]) -> None:
    assert alerts(world) == []  # version 0: nothing watched
    world["desk"].campaigns.watch(PROVINCE, "ipv4-addr", "127.0.0.2", "campaign", "cmp-x")
    envelope = push(world)
    answers = world["rx"].handle(Signer.encode(envelope))
    assert [a["icsmon.control.status"] for a in answers] == ["delivered"]
    version = world["desk"].content.version()
    assert answers[0]["icsmon.content.status"] == "applied"
    assert answers[0]["icsmon.content.version"] == version >= 1
    assert world["detector"].version == version
    found = alerts(world)
    assert found and {a["icsmon.watchlist.value"] for a in found} == {"127.0.0.2/32"}
    assert {a["icsmon.content.version"] for a in found} == {version}
    # the heartbeat says what runs; the package is on disk for the next start
    beat = world["beats"].beat(time.time(), {})
    assert beat["icsmon.sensor.content_version"] == str(version)
    assert load_package(world["tmp"] / "content.json").version == version
    assert world["rx"].counters["handled"] == 1


def test_unsigned_tampered_expired_replayed_misaddressed_pushes_are_refused_and_counted(
    world: dict[str, Any],
) -> None:
    rx, signer = world["rx"], world["signer"]
    world["desk"].campaigns.watch(PROVINCE, "ipv4-addr", "127.0.0.2", "campaign", "cmp-x")
    good = push(world)

    unsigned = {k: v for k, v in good.items() if k != "signature"}
    assert rx.handle(Signer.encode(unsigned)) == []
    tampered = json.loads(json.dumps(good))
    tampered["payload"]["package"]["watchlist"].append(
        {"id": "wl-evil", "kind": "ipv4-addr", "value": "127.0.0.1"}
    )
    assert rx.handle(Signer.encode(tampered)) == []
    other_key = Signer(Ed25519PrivateKey.generate())  # not the province's
    forged = sign_updates(other_key, world["desk"].content.package(), [SENSOR])[0]
    assert rx.handle(Signer.encode(forged)) == []
    old = signer.envelope(
        CONTENT_UPDATE, SENSOR, good["payload"], lifetime_s=60, now=time.time() - 86_400
    )
    # signed but expired: refused, and answered with the reason (the channel tells the province why)
    refused = rx.handle(Signer.encode(old))
    assert [(r["icsmon.control.status"], r["icsmon.control.reason"]) for r in refused] == [
        ("refused", "expired")
    ]
    elsewhere = sign_updates(signer, world["desk"].content.package(), ["sensor-other"])[0]
    assert rx.handle(Signer.encode(elsewhere)) == []
    assert world["detector"].version == 0 and alerts(world) == []  # nothing got through

    assert rx.handle(Signer.encode(good))[0]["icsmon.content.status"] == "applied"
    assert rx.handle(Signer.encode(good)) == []  # the same message again
    c = rx.counters
    assert (c["refused_unsigned"], c["refused_bad_signature"], c["refused_expired"]) == (1, 2, 1)
    assert (c["refused_misaddressed"], c["refused_replayed"], c["handled"]) == (1, 1, 1)


def test_a_stale_or_altered_package_is_refused_by_the_sensor(world: dict[str, Any]) -> None:
    rx, signer, desk = world["rx"], world["signer"], world["desk"]
    desk.campaigns.watch(PROVINCE, "ipv4-addr", "127.0.0.2", "campaign", "cmp-x")
    first = push(world)
    assert rx.handle(Signer.encode(first))[0]["icsmon.content.status"] == "applied"
    # the same package under a new (validly signed) envelope: not newer, not applied
    again = signer.envelope(CONTENT_UPDATE, SENSOR, first["payload"], message_id="content-again")
    answer = rx.handle(Signer.encode(again))[0]
    assert answer["icsmon.control.status"] == "refused"
    assert answer["icsmon.content.status"] == "stale"
    # a package altered before the province signed it (digest no longer matches)
    desk.campaigns.watch(PROVINCE, "ipv4-addr", "127.0.0.3", "campaign", "cmp-y")
    payload = sign_updates(signer, desk.content.package(), [SENSOR])[0]["payload"]
    payload["package"]["watchlist"] = []
    bad = signer.envelope(CONTENT_UPDATE, SENSOR, payload, message_id="content-altered")
    answer = rx.handle(Signer.encode(bad))[0]
    assert answer["icsmon.content.status"] == "invalid"
    assert "digest mismatch" in answer["icsmon.control.message"]
    assert world["handler"].updater.counters == {"applied": 1, "stale": 1, "invalid": 1}
    assert world["detector"].version == 1


def test_the_signature_covers_the_package(world: dict[str, Any]) -> None:
    envelope = push(world)
    body = control.canonical_bytes({k: v for k, v in envelope.items() if k != "signature"})
    key = control.load_public_key(world["tmp"] / "sensor.pub")
    key.verify(base64.b64decode(envelope["signature"]), body)  # raises if not
    assert envelope["payload"]["package"]["sha256"]


def test_who_is_behind_from_the_heartbeats(tmp_path: Path) -> None:
    from posture import seed
    from tests.support.posture import make_env

    env = make_env(tmp_path, n_alerts=50)
    try:
        desk = env.client.app.state.response
        desk.campaigns.watch(PROVINCE, "ipv4-addr", "203.0.113.9", "campaign", "cmp-x")
        desk.campaigns.watch(PROVINCE, "ipv4-addr", "203.0.113.10", "campaign", "cmp-x")
        version = desk.content.version()
        # newer heartbeats: the first sensor runs the current content, the second one older
        beats = list(seed.heartbeats(env.registry, time.time(), silent_every=0))
        for k, beat in enumerate(beats):
            beat["event.id"] = f"hb-content-{k}"
            beat["icsmon.sensor.content_version"] = str(version if k == 0 else version - 1)
        env.write([("heartbeat", b) for b in beats])
        r = env.client.get("/api/content/fleet", headers=env.h("province"))
        assert r.status_code == 200, r.text
        got = r.json()
        assert got["version"] == version and got["total"] == len(beats)
        assert got["current"] == 1 and got["behind"] == len(beats) - 1
        first = next(s for s in got["sensors"] if s["name"] == beats[0]["observer.name"])
        assert first["status"] == "current" and first["running"] == version
        assert got["sensors"][0]["status"] == "behind" and got["sensors"][0]["behind_by"] == 1
        # a city sees its own sensors only
        r = env.client.get("/api/content/fleet", headers=env.h("city_a"))
        mine = env.sites_of("city_a")
        assert r.status_code == 200 and r.json()["total"] >= 1
        assert {s["site"] for s in r.json()["sensors"]} <= mine
    finally:
        env.close()


def test_a_push_state_per_sensor_from_its_answers_and_heartbeats(world: dict[str, Any]) -> None:
    """Sensors' answers made by the real Receiver and handler give each sensor's state."""
    from response.content_push import push_view

    rx, signer, desk = world["rx"], world["signer"], world["desk"]
    desk.campaigns.watch(PROVINCE, "ipv4-addr", "127.0.0.2", "campaign", "cmp-x")
    names = ["s-applied", "s-stale", "s-invalid", "s-expired", "s-silent", "s-beat", "z-down"]
    targets = [{"name": n, "site": "site-1", "enterprise": "ent-1", "city": "c-1"} for n in names]
    sent: dict[str, dict[str, Any]] = {}

    def send(sensor: str, payload: dict[str, Any]) -> dict[str, Any]:
        if sensor == "z-down":  # the last one: after a failure the rest are not tried
            raise ConnectionError("Kafka unavailable")
        lifetime = 60
        now = time.time() - (86_400 if sensor == "s-expired" else 0)
        if sensor == "s-invalid":  # a package that does not match its digest
            payload = json.loads(json.dumps(payload))
            payload["package"]["watchlist"] = []
        sent[sensor] = signer.envelope(CONTENT_UPDATE, SENSOR, payload, lifetime, now=now)
        return sent[sensor]

    push_id = desk.pushes.push(PROVINCE, "enterprise:ent-1", targets, send)
    version = desk.content.version()
    answers = []
    for sensor in ("s-invalid", "s-expired", "s-applied", "s-stale"):
        # (one Receiver answers for all: once "s-applied" applied it, the version runs, so
        # "s-stale" is answered as a sensor that already runs it)
        answers += rx.handle(Signer.encode(sent[sensor]))
    assert len(answers) == 4
    got = push_view(desk.pushes.get(PROVINCE, push_id), answers, {"s-beat": str(version)})
    state = {s["sensor"]: (s["state"], s["reason"]) for s in got["sensors"]}
    assert state["s-applied"] == ("applied", None)
    assert state["s-stale"] == ("applied", f"already runs version {version}")
    assert state["s-invalid"][0] == "refused" and "digest mismatch" in state["s-invalid"][1]
    assert state["s-expired"] == ("refused", "expired")
    assert state["s-silent"] == ("sent", None)
    assert state["s-beat"] == ("applied", None)  # its heartbeat says it runs it
    assert state["z-down"] == ("not-sent", "ConnectionError: Kafka unavailable")
    assert got["counts"] == {"sent": 1, "applied": 3, "refused": 2, "expired": 0, "not-sent": 1}
    # with no answer once the message's lifetime is over: expired
    later = push_view(desk.pushes.get(PROVINCE, push_id), answers, {}, now=time.time() + 3600)
    assert {s["sensor"]: s["state"] for s in later["sensors"]}["s-silent"] == "expired"


def test_who_may_push_and_what_fits_in_a_message(world: dict[str, Any]) -> None:
    from response.content_push import MAX_PUSH_BYTES
    from response.db import Forbidden, Invalid

    desk, signer = world["desk"], world["signer"]
    target = [{"name": SENSOR, "site": "site-1", "enterprise": "ent-1", "city": "c-1"}]

    def send(sensor: str, payload: dict[str, Any]) -> dict[str, Any]:
        return signer.envelope(CONTENT_UPDATE, sensor, payload)

    for role in ("enterprise-operator", "enterprise-viewer"):
        with pytest.raises(Forbidden):
            desk.pushes.push(
                Viewer("plant", role, "ent-1", frozenset({"site-1"})), "x", target, send
            )
    with pytest.raises(Invalid, match="no registered sensor"):
        desk.pushes.push(PROVINCE, "city:c-9", [], send)
    rule = "title: big\nid: 0c3a7f0e-2b8f-4a57-9c7e-1d2f3a4b5c6d\nlogsource:\n  product: icsmon\n"
    rule += "detection:\n  sel:\n    x:\n" + "".join(f"      - v{i:07d}\n" for i in range(70_000))
    rule += "  condition: sel\n"
    with desk.db.tx() as conn:  # a rule too big for one message (pushed rules are 256 KiB each)
        for k in range(5):
            conn.execute(
                "INSERT INTO content_rule VALUES (?,?,?,?,?,?)",
                (f"big-{k}", "big", rule[:250_000], "central", time.time(), "soc"),
            )
    with pytest.raises(Invalid, match=f"at most {MAX_PUSH_BYTES:,}"):
        desk.pushes.push(PROVINCE, "site:site-1", target, send)
    assert desk.db.rows("SELECT * FROM content_push") == []


def test_a_restarted_sensor_runs_the_content_last_pushed_to_it(world: dict[str, Any]) -> None:
    """The package kept beside the sensor's store is run again at the next start when it is
    newer than the one the sensor was started with; a damaged one is left aside."""
    from icsmon.edge import EdgeEvidence
    from pipeline.config import load_config

    tmp, desk = world["tmp"], world["desk"]
    desk.campaigns.watch(PROVINCE, "ipv4-addr", "127.0.0.2", "campaign", "cmp-x")
    version = desk.content.version()
    store = Store.open(tmp / "sensor.db")
    cfg = load_config(env={}, overrides={"spool": {"dir": str(tmp / "spool")}})
    engine = Engine(EngineConfig(site="site-0001-a", observer=SENSOR))
    try:
        # what a push left there (the handler writes the package it applied)
        kept = tmp / "sensor.content.json"
        kept.write_text(json.dumps(desk.content.package()))
        for started_with, runs in ((empty_package(), version), (None, version)):
            watch = WatchlistDetector(started_with or load_package(kept))
            beats = Heartbeats(engine.ctx, 60.0, content_version=str(watch.version))
            edge = EdgeEvidence(
                cfg, engine.ctx, store, None, 1, None, watchlist=watch, heartbeats=beats
            )
            assert watch.version == runs and beats.content_version == str(runs)
            edge.close()
        kept.write_text(kept.read_text()[:-20])  # cut short
        watch = WatchlistDetector(empty_package())
        EdgeEvidence(cfg, engine.ctx, store, None, 1, None, watchlist=watch).close()
        assert watch.version == 0
    finally:
        store.close()


RULE_ID = "0f6a1c2d-3b4e-4f50-8a61-7b8c9d0e1f2a"
RULE = f"""title: Device identification read by a watched host
id: {RULE_ID}
status: test
logsource:
  product: ics
  service: modbus
detection:
  selection:
    modbus.function_code: 43
    source.ip: 127.0.0.2
  condition: selection
level: medium
"""
BAD_RULE = """title: Look-ahead the sensor cannot run
id: 1a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d
status: test
logsource:
  product: ics
  service: modbus
detection:
  selection:
    source.ip|re: '^127\\\\.(?!1$)'
  condition: selection
level: high
"""


def test_pushed_rules_are_checked_then_put_in_place_between_events(world: dict[str, Any]) -> None:
    """A running sensor's rules: a package's rule is loaded by the sensor's own loader, the
    new engine replaces the running one at the run's next swap (between two events), and a
    package with a rule the sensor cannot run is refused whole, the running rules kept."""
    from icsmon.pushed_rules import LiveRules, rules_folder
    from icsmon.run import load_detectors

    tmp, desk, rx = world["tmp"], world["desk"], world["rx"]
    pushed = rules_folder(tmp / "sensor.db")
    dets = load_detectors(None, False, None, None, watchlist=True, pushed_rules=pushed / "central")
    watch = dets.parts[-1]
    live = LiveRules(dets, pushed)
    rx.on(CONTENT_UPDATE, live_content(SENSOR, watch, tmp / "content.json", live_rules=live))

    def fired() -> set[str]:
        alerts = [a for e in world["events"] for a in dets.process(dict(e))]
        return {a["rule.id"] for a in alerts + dets.flush()}

    assert RULE_ID not in fired()
    desk.content.add_rule(PROVINCE, RULE, "central")
    answer = rx.handle(Signer.encode(push(world)))[0]
    assert answer["icsmon.content.status"] == "applied", answer
    assert answer["icsmon.content.rules_written"] == 1
    assert RULE_ID not in fired()  # built aside: the run has not swapped yet
    engine = dets.parts[0]
    assert dets.swap() == [] and dets.parts[0] is not engine
    assert RULE_ID in fired()
    # a rule pySigma takes but this sensor's loader refuses: the whole package is refused
    desk.content.add_rule(PROVINCE, BAD_RULE, "central")
    answer = rx.handle(Signer.encode(push(world)))[0]
    assert answer["icsmon.content.status"] == "invalid"
    assert "look-around" in answer["icsmon.control.message"]
    assert answer["icsmon.content.version"] == watch.version == desk.content.version() - 1
    assert dets._next == {} and RULE_ID in fired()
    assert sorted(p.name for p in (pushed / "central").glob("*.yml")) == [f"{RULE_ID}.yml"]
    # the next start runs the pushed rule with the pack
    again = load_detectors(None, False, None, None, pushed_rules=pushed / "central")
    assert RULE_ID in {r.meta.id for r in again.parts[0].rules}
