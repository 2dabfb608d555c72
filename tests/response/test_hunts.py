"""Hunts requested by the province over the control channel: a sensor runs a signed
``hunt.request`` over its own store and answers with a summary; it refuses what the province
did not sign, and caps a hunt whatever the request asks."""

from __future__ import annotations

import base64
import json
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from detectors.hunt import Hunt, load_hunt_engine
from pipeline import control
from pipeline.control import Receiver, Signer
from pipeline.store import Store
from response.hunts import (
    HUNT_REQUEST,
    HuntLimits,
    HuntRequestHandler,
    HuntWorker,
    hunt_state,
    request_payload,
    sensor_progress,
)
from tests.detectors.test_hunt import ATTACK, live_run
from tests.support import REPO

RULE = REPO / "rules" / "modbus" / "modbus_write_from_unlisted_master.yml"
SENSOR = "sensor-7"
RULE_ID = "cf849942-e7b0-5107-bd0c-6249700874bd"  # RULE's id in the shipped pack


@pytest.fixture()
def sensor(tmp_path: Path):
    """A sensor's store holding a capture's events (alerts cleared: what a hunt finds is new),
    its handler (alerts written to a list) behind a Receiver, and the province's signer."""
    db = tmp_path / "sensor.db"
    live_run(ATTACK, db)
    with sqlite3.connect(db) as conn:
        conn.execute("DELETE FROM alert_docs")
        conn.execute("DELETE FROM alerts")
    control.generate_keys(tmp_path / "province.key", tmp_path / "sensor.pub")
    signer = Signer.from_file(tmp_path / "province.key")
    store = Store.open(db)
    written: list[dict] = []
    handler = HuntRequestHandler(
        SENSOR, store, written.append, HuntLimits(max_events=80), common={"labels.site": "s7"}
    )
    rx = Receiver(
        SENSOR,
        control.load_public_key(tmp_path / "sensor.pub"),
        {HUNT_REQUEST: handler},
        seen_file=tmp_path / "seen.json",
    )
    yield signer, rx, handler, store, written
    store.close()


def _send(signer: Signer, payload: dict) -> bytes:
    return Signer.encode(signer.envelope(HUNT_REQUEST, SENSOR, payload))


def test_a_signed_request_is_hunted_and_answered(sensor) -> None:
    signer, rx, handler, store, written = sensor
    total = store.count_events()
    expected: list[dict] = []
    Hunt(load_hunt_engine([str(RULE)]), write=expected.append).run(store.scan_events())
    assert expected, "the rule fires on the capture"
    # the sensor's cap (80 events) is below the store's events: the hunt stops there
    with Store.open(store.path, readonly=True) as copy:
        capped: list[dict] = []
        Hunt(load_hunt_engine([str(RULE)]), write=capped.append, max_events=80).run(
            copy.scan_events()
        )
    payload = request_payload("hunt-1", rules={"new.yml": RULE.read_text()}, max_events=10**9)
    [answer] = rx.handle(_send(signer, payload))
    assert answer["icsmon.control.status"] == "delivered", answer
    assert answer["icsmon.hunt.id"] == "hunt-1" and answer["labels.site"] == "s7"
    assert answer["icsmon.hunt.events"] == 80 < total
    assert "cap of 80 events" in answer["icsmon.hunt.stopped"]
    assert answer["icsmon.hunt.alerts"] == answer["icsmon.hunt.new"] == len(capped) > 0
    assert [a["event.id"] for a in written] == [a["event.id"] for a in capped]
    assert {a["icsmon.hunt.id"] for a in written} == {"hunt-1"}
    state = hunt_state([answer], "hunt-1")
    assert state[SENSOR]["status"] == "delivered" and state[SENSOR]["events"] == 80


def test_a_request_may_ask_for_less_and_the_ids_of_the_sensors_pack(sensor) -> None:
    signer, rx, _, _, written = sensor
    rule_id = "cf849942-e7b0-5107-bd0c-6249700874bd"  # RULE's id, from the sensor's own pack
    assert rule_id in RULE.read_text()
    [answer] = rx.handle(_send(signer, request_payload("hunt-2", rule_ids=[rule_id], max_events=5)))
    assert answer["icsmon.control.status"] == "delivered"
    assert answer["icsmon.hunt.events"] == 5 and answer["icsmon.hunt.rules"] == 1
    since = int(time.time()) + 86400  # nothing stored after tomorrow
    [answer] = rx.handle(_send(signer, request_payload("hunt-3", rule_ids=[rule_id], since=since)))
    assert answer["icsmon.hunt.events"] == 0 and answer["icsmon.hunt.alerts"] == 0


def test_unsigned_and_tampered_requests_are_refused_before_any_hunt(sensor) -> None:
    signer, rx, handler, _, written = sensor
    env = signer.envelope(HUNT_REQUEST, SENSOR, request_payload("hunt-x", rule_ids=["x"]))
    unsigned = {k: v for k, v in env.items() if k != "signature"}
    assert rx.handle(Signer.encode(unsigned)) == []
    tampered = dict(env, payload=dict(env["payload"], max_events=10**9))
    assert rx.handle(Signer.encode(tampered)) == []
    forged = dict(env, signature=base64.b64encode(b"\0" * 64).decode())
    assert rx.handle(Signer.encode(forged)) == []
    assert rx.counters["refused_unsigned"] == 1 and rx.counters["refused_bad_signature"] == 2
    assert handler.stats["hunts"] == handler.stats["refused"] == 0 and not written


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        ({"hunt_id": "h"}, "no rules"),
        ({"hunt_id": "h", "rules": {"a.yml": "title: [\n"}}, "do not load"),
        ({"hunt_id": "h", "rule_ids": ["no-such-rule"]}, "no-such-rule"),
        ({"hunt_id": "h", "rule_ids": "x"}, "rule_ids"),
        ({"hunt_id": "h", "rule_ids": ["x"], "since": "yesterday"}, "since"),
        ({"rule_ids": ["x"]}, "hunt_id"),
        ({"hunt_id": "h", "rules": {"a.yml": "x" * 300_000}}, "larger than"),
    ],
)
def test_requests_the_sensor_cannot_serve_are_answered_with_the_reason(
    sensor, payload: dict, reason: str
) -> None:
    signer, rx, handler, _, written = sensor
    [answer] = rx.handle(_send(signer, payload))
    assert answer["icsmon.control.status"] == "refused"
    assert reason in answer["icsmon.control.message"]
    assert handler.stats["refused"] == 1 and not written
    json.dumps(answer)  # a plain document, ready for Kafka


class GatedStore:
    """The sensor's store, whose scan waits for ``gate``: a hunt that takes as long as the
    test wants."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.gate = threading.Event()
        self.scanning = threading.Event()

    def __getattr__(self, name: str):
        return getattr(self.store, name)

    def scan_events(self, *args, **kwargs):
        self.scanning.set()
        self.gate.wait(60)
        yield from self.store.scan_events(*args, **kwargs)


def test_the_worker_hunts_off_the_listeners_thread_and_caps_its_queue(sensor) -> None:
    signer, _, _, store, _ = sensor
    gated = GatedStore(store)
    answers: list[dict] = []

    def write(alert: dict) -> None:  # the sensor's store: a later hunt knows the alert
        store.write("alert", alert)
        store.flush()

    worker = HuntWorker(HuntRequestHandler(SENSOR, gated, write, HuntLimits()), answers.append, 1)
    rx = Receiver(SENSOR, signer.key.public_key(), {HUNT_REQUEST: worker})
    try:
        rule = {"r.yml": RULE.read_text()}
        # the first hunt starts and blocks in its scan: the listener's call has returned
        [first] = rx.handle(_send(signer, request_payload("hunt-a", rules=rule)))
        assert first["icsmon.control.status"] == "accepted"
        assert first["event.id"].endswith("-accepted") and first["icsmon.hunt.id"] == "hunt-a"
        assert gated.scanning.wait(30)
        # one more waits; beyond the queue's cap the sensor says it is busy
        [second] = rx.handle(_send(signer, request_payload("hunt-b", rules=rule)))
        assert second["icsmon.control.status"] == "accepted"
        [third] = rx.handle(_send(signer, request_payload("hunt-c", rules=rule)))
        assert third["icsmon.control.status"] == "refused"
        assert third["icsmon.control.reason"] == "busy" and third["icsmon.hunt.id"] == "hunt-c"
        # a request that cannot be served is refused at once, not queued
        [bad] = rx.handle(_send(signer, request_payload("hunt-d")))
        assert (
            bad["icsmon.control.status"] == "refused"
            and "no rules" in bad["icsmon.control.message"]
        )
        assert [a["icsmon.control.status"] for a in answers] == ["running"]
        gated.gate.set()
        deadline = time.monotonic() + 60
        while not worker.idle() and time.monotonic() < deadline:
            time.sleep(0.05)
        done = [a for a in answers if a["icsmon.control.status"] == "delivered"]
        assert [a["icsmon.hunt.id"] for a in done] == ["hunt-a", "hunt-b"]
        assert done[0]["icsmon.hunt.new"] > 0 and done[1]["icsmon.hunt.new"] == 0  # known
        assert len({a["event.id"] for a in answers}) == len(answers)  # stored side by side
        state = hunt_state(answers, "hunt-a")[SENSOR]
        assert state["status"] == "delivered" and state["total"] == store.count_events()
    finally:
        gated.gate.set()
        worker.close()


def test_a_stopping_sensor_cancels_the_hunt_under_way(sensor) -> None:
    signer, _, _, store, _ = sensor
    gated = GatedStore(store)
    answers: list[dict] = []
    handler = HuntRequestHandler(SENSOR, gated, lambda a: None, HuntLimits())
    worker = HuntWorker(handler, answers.append)
    env = signer.envelope(HUNT_REQUEST, SENSOR, request_payload("hunt-z", rule_ids=[RULE_ID]))
    worker(control.Envelope(**{k: v for k, v in env.items() if k != "signature"}))
    assert gated.scanning.wait(30)
    handler.cancel()
    gated.gate.set()
    worker.close()
    [summary] = [a for a in answers if a["icsmon.control.status"] == "delivered"]
    assert summary["icsmon.hunt.stopped"] == "cancelled"


def test_progress_per_sensor_from_the_answers() -> None:
    env = control.Envelope(HUNT_REQUEST, "req", "s1", 0, 100, {"hunt_id": "h"})
    h = HuntRequestHandler("s1", None, lambda a: None)
    accepted = h.answer(env, "accepted", {"icsmon.hunt.id": "h"}, "accepted")
    running = h.answer(env, "running", {"icsmon.hunt.id": "h", "icsmon.hunt.total": 9}, "running")
    done = h.answer(env, "delivered", {"icsmon.hunt.id": "h", "icsmon.hunt.events": 9})
    targets = ["s1", "s2"]
    # answers arrive in any order: the furthest state wins, the total is kept
    got = sensor_progress(targets, [done, accepted, running], "h", 100, 600, now=50)
    assert got["s1"]["status"] == "done" and got["s1"]["total"] == got["s1"]["events"] == 9
    assert got["s2"]["status"] == "requested"
    assert sensor_progress(targets, [accepted], "h", 100, 600, now=50)["s1"]["status"] == "accepted"
    # nothing back once the request expired; a hunt that started and never finished after
    # its time cap on top
    assert sensor_progress(targets, [], "h", 100, 600, now=101)["s2"]["status"] == "no_answer"
    late = sensor_progress(targets, [running], "h", 100, 600, now=650)
    assert late["s1"]["status"] == "running"
    late = sensor_progress(targets, [running], "h", 100, 600, now=701)
    assert late["s1"]["status"] == "no_answer"


def test_a_running_hunt_answers_with_its_progress(sensor) -> None:
    """While a requested hunt runs, the sensor sends ``running`` again with the events scanned
    so far and the percentage (the same id each time, so the latest is what is kept), at most
    every ``progress_every_s``; the centre's progress per sensor shows the latest."""
    _, _, handler, store, _ = sensor
    env = control.Envelope(HUNT_REQUEST, "req", SENSOR, 0, 100, {"hunt_id": "h"})
    sent: list[dict] = []
    total = store.count_events()
    assert total > 10
    handler.progress_every_s = 3600.0
    progress = handler._running(env, "h", sent.append, None, None, 10**9)
    progress(5, None)  # too soon after the first answer: nothing sent
    assert [(a["icsmon.hunt.scanned"], a["icsmon.hunt.percent"]) for a in sent] == [(0, 0.0)]
    assert sent[0]["icsmon.hunt.total"] == total
    handler.progress_every_s = 0.0
    progress(10, None)
    progress(total, None)  # the end: the summary follows, no progress answer
    assert [a["icsmon.hunt.scanned"] for a in sent] == [0, 10]
    assert sent[1]["icsmon.hunt.percent"] == round(1000 / total, 1)
    assert sent[0]["event.id"] == sent[1]["event.id"] == "req-running"
    # the latest progress wins whatever order the answers come back in
    got = sensor_progress([SENSOR], [sent[1], sent[0]], "h", 100, 600, now=50)[SENSOR]
    assert (got["status"], got["scanned"], got["total"]) == ("running", 10, total)
    assert got["percent"] == sent[1]["icsmon.hunt.percent"]
    # capped by the request: the percentage is of the events the hunt will read
    capped = handler._running(env, "h", sent.append, None, None, 20)
    handler.progress_every_s = 0.0
    capped(5, None)
    assert (sent[-1]["icsmon.hunt.total"], sent[-1]["icsmon.hunt.percent"]) == (20, 25.0)
