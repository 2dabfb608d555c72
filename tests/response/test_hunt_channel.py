"""Hunts the province requests, from end to end: a real sensor (``icsmon sense`` on the
loopback port, its own store holding a capture's events) is asked through the real Kafka
(``icsmon control hunt``: a signed ``hunt.request`` on the control topic) to hunt a rule over
its history; its worker hunts off the listener's thread, writes the alerts through its normal
alert path (its store, and Kafka) marked with the hunt's id, and answers accepted, running
and the summary on the response topic; ``icsmon index`` puts answers and alerts in the real
Elasticsearch, where they are the in-process hunt's, alert for alert. A request whose rule
does not load is accepted, then refused with the reason."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from detectors.hunt import Hunt, load_hunt_engine
from pipeline import control
from pipeline.store import Store, iter_docs
from response.hunts import HUNT_REQUEST, sensor_progress
from tests.detectors.test_hunt import ATTACK, CONFIG, live_run
from tests.support import REPO
from tests.support.modbus_live import free_port
from tests.support.pipeline import drop_pipe, make_pipe, require_services, wait_for
from tests.support.processes import icsmon, start_sensor_and_indexer, stop, wait_first_heartbeat

pytestmark = [pytest.mark.services, pytest.mark.live, pytest.mark.slow]

RULE = REPO / "rules" / "modbus" / "modbus_write_from_unlisted_master.yml"
SENSOR = CONFIG["observer"]


def test_a_requested_hunt_reaches_the_sensor_and_its_answer_the_centre(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("the live sensor needs root (a packet socket on the loopback port)")
    require_services()
    from pipeline.es import EsQueryBackend
    from pipeline.indexer import setup
    from pipeline.query import AlertFilter

    pipe = make_pipe(tmp_path)
    db = Path(pipe.env["ICSMON_STORE"])  # the sensor's own store
    live_run(ATTACK, db)
    with sqlite3.connect(db) as conn:  # what the hunt finds is new to this sensor
        conn.execute("DELETE FROM alert_docs")
        conn.execute("DELETE FROM alerts")
    with Store.open(db, readonly=True) as store:
        stored = store.count_events()
        expected: list[dict] = []
        Hunt(load_hunt_engine([str(RULE)]), write=expected.append).run(store.scan_events())
    assert expected, "the rule fires on the capture"
    bad_rule = tmp_path / "bad.yml"
    bad_rule.write_text("title: no detection here\nlogsource: {product: ics}\n")
    control.generate_keys(tmp_path / "province.key", tmp_path / "sensor.pub")
    setup(pipe.cfg)
    env = dict(pipe.env, ICSMON_SENSOR_HEARTBEAT_INTERVAL="5")
    port = free_port()
    procs: list[subprocess.Popen] = []
    backend = EsQueryBackend(pipe.cfg)
    try:
        sense = start_sensor_and_indexer(
            [
                "--iface",
                "lo",
                "--bpf",
                f"host 127.0.0.67 and tcp port {port}",  # quiet: the hunt is over history
                "--sink",
                "kafka",
                "--control-key",
                str(tmp_path / "sensor.pub"),
                "--site",
                CONFIG["site"],
                "--observer",
                SENSOR,
                "--org",
                CONFIG["organization"],
                "--format",
                "jsonl",
            ],
            env,
            procs,
        )

        wait_first_heartbeat(sense, backend)

        def ask(*args: str) -> tuple[str, str]:
            out = subprocess.run(
                icsmon("control", "hunt", "--sensor", SENSOR, "--key", "province.key", *args),
                env=env,
                cwd=tmp_path,
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert out.returncode == 0, out.stderr
            hunt_id, sensor, request_id = out.stdout.split()
            assert sensor == SENSOR
            return hunt_id, request_id

        hunt_id, request_id = ask("--rule", str(RULE), "--since", "2000-01-01")
        bad_id, bad_request = ask("--rule", str(bad_rule))

        def answers(rid: str) -> list[dict]:
            backend.store.refresh()
            return backend.responses([rid], payload=False)

        def final(rid: str) -> bool:
            assert sense.poll() is None, sense.communicate()[1][-3000:]
            return any(a["icsmon.control.status"] in ("delivered", "refused") for a in answers(rid))

        wait_for("the hunt's summary in Elasticsearch", lambda: final(request_id), limit_s=180)
        wait_for("the refusal in Elasticsearch", lambda: final(bad_request), limit_s=60)
        got = answers(request_id)
        assert {a["icsmon.control.type"] for a in got} == {HUNT_REQUEST}
        by_status = {a["icsmon.control.status"]: a for a in got}
        assert set(by_status) == {"accepted", "running", "delivered"}, got
        summary = by_status["delivered"]
        assert summary["labels.site"] == CONFIG["site"] and summary["observer.name"] == SENSOR
        assert summary["icsmon.hunt.id"] == hunt_id
        assert summary["icsmon.hunt.events"] == stored == by_status["running"]["icsmon.hunt.total"]
        assert summary["icsmon.hunt.new"] == summary["icsmon.hunt.alerts"] == len(expected)
        assert (
            summary["icsmon.hunt.matches"] >= len(expected) and not summary["icsmon.hunt.stopped"]
        )
        assert summary["icsmon.hunt.first"] <= summary["icsmon.hunt.last"]
        # the alerts came through Kafka like any other, marked: the in-process hunt's, exactly
        flt = AlertFilter(match={"icsmon.hunt.id": [hunt_id]}, limit=1000)

        def alerts_indexed() -> bool:
            backend.store.refresh()
            return backend.search_alerts(flt)[0] >= len(expected)

        wait_for("the hunt's alerts in Elasticsearch", alerts_indexed, limit_s=60)
        total, alerts = backend.search_alerts(flt)
        assert total == len(expected)
        assert sorted(a["event.id"] for a in alerts) == sorted(a["event.id"] for a in expected)
        assert all(a["rule.version"] and a["observer.name"] == SENSOR for a in alerts)
        # the refused one: accepted at once, refused by the worker once the rule did not load
        refused = {a["icsmon.control.status"]: a for a in answers(bad_request)}
        assert set(refused) == {"accepted", "refused"}
        assert refused["refused"]["icsmon.hunt.id"] == bad_id
        assert refused["refused"]["icsmon.control.reason"] == "bad_request"
        assert refused["refused"]["icsmon.control.message"]
        # what the posture view shows per site
        now = time.time()
        progress = sensor_progress([SENSOR, "silent-sensor"], got, hunt_id, now - 1, 600, now)
        assert progress[SENSOR]["status"] == "done" and progress[SENSOR]["events"] == stored
        assert progress["silent-sensor"]["status"] == "no_answer"
        # stopped cleanly, the sensor counts the hunt, and its own store has the alerts too
        sense.send_signal(signal.SIGINT)
        out, err = sense.communicate(timeout=60)
        assert sense.returncode == 0, err[-3000:]
        assert "Traceback" not in err
        with Store.open(db, readonly=True) as store:
            marked = [d for _, d in iter_docs(store, ["alert"]) if d.get("icsmon.hunt.id")]
        assert sorted(a["event.id"] for a in marked) == sorted(a["event.id"] for a in expected)
    finally:
        for proc in procs:
            stop(proc)
        backend.close()
        drop_pipe(pipe)
