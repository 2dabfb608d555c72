"""``icsmon hunt``: the stream's rules over the events a sensor stored.

The promise tested here: a hunt of the same rules over the same stored events raises the same
alerts as the live run that stored them (same ids, rules, triggering events and counts), for
every capture in pcaps/; alerts already raised are not written again; what a hunt writes
carries its id and the rule's version.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from typer.testing import CliRunner

from detectors.hunt import Hunt, HuntError, load_hunt_engine, select_pack
from detectors.sigma import SigmaEngine
from detectors.sigma.loader import SHIPPED_RULES, load_pack
from icsmon.cli import app
from icsmon.run import Detectors, Run
from pipeline.store import Store, iter_docs
from sensor.engine import Engine, EngineConfig
from tests.support import REPO

PCAPS = REPO / "pcaps"
CAPTURES = sorted(p for p in PCAPS.rglob("*.pcap") if p.is_file())
CONFIG = {"site": "hunt-site", "observer": "hunt-sensor", "organization": "hunt-org"}
ATTACK = PCAPS / "modbus" / "modbus_attack.pcap"
SWEEP = REPO / "rules" / "correlation"

runner = CliRunner()


def live_run(capture: Path, store_path: Path) -> list[dict]:
    """Replay ``capture`` as a sensor does (Sigma rules only) into a store; its alerts."""
    engine = Engine(EngineConfig(**CONFIG))
    store = Store.open(store_path)
    try:
        run = Run(engine, Detectors([SigmaEngine.load()]), store)
        alerts = list(run.process(engine.replay([capture]), want_events=False))
    finally:
        store.close()
    return alerts


def _key(alert: dict) -> tuple:
    return (
        alert["event.id"],
        alert["rule.id"],
        tuple(alert["icsmon.alert.event_ids"]),
        alert["icsmon.alert.count"],
        alert.get("icsmon.correlation.key"),
    )


@pytest.mark.parametrize("capture", CAPTURES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_a_hunt_raises_what_the_live_run_raised(capture: Path, tmp_path: Path) -> None:
    db = tmp_path / "sensor.db"
    live = live_run(capture, db)
    found: list[dict] = []
    with Store.open(db, readonly=True) as store:
        summary = Hunt(SigmaEngine.load(), write=found.append).run(store.scan_events())
        assert summary.events == store.count_events()
    assert sorted(map(_key, found)) == sorted(map(_key, live))
    assert summary.alerts == summary.new == len(live)
    for alert in found:
        assert alert["icsmon.hunt.id"] == summary.hunt_id
        assert len(alert["rule.version"]) == 16


def test_alerts_already_raised_are_not_written_again(tmp_path: Path) -> None:
    db = tmp_path / "sensor.db"
    live = live_run(ATTACK, db)
    assert any(a["rule.id"] for a in live if a.get("icsmon.correlation.type"))
    first = runner.invoke(app, ["hunt", "--store", str(db), "--json"])
    assert first.exit_code == 0, first.output
    summary = json.loads(first.stdout)
    assert summary["alerts"] == summary["known"] == len(live) and summary["new"] == 0
    # the live alerts gone: the hunt raises them again, marked, and a second hunt adds nothing
    with sqlite3.connect(db) as conn:
        conn.execute("DELETE FROM alert_docs")
        conn.execute("DELETE FROM alerts")
    again = json.loads(runner.invoke(app, ["hunt", "--store", str(db), "--json"]).stdout)
    assert again["new"] == len(live) and again["known"] == 0
    with Store.open(db, readonly=True) as store:
        stored = [d for _, d in iter_docs(store, ["alert"])]
    assert sorted(a["event.id"] for a in stored) == sorted(a["event.id"] for a in live)
    assert {a["icsmon.hunt.id"] for a in stored} == {again["hunt_id"]}
    third = json.loads(runner.invoke(app, ["hunt", "--store", str(db), "--json"]).stdout)
    assert third["new"] == 0 and third["known"] == len(live)


def test_the_check_for_alerts_raised_reads_those_stored_before_the_hunt(tmp_path: Path) -> None:
    """A hunt's check by triggering events reads the alerts stored when it started, not the
    ones it writes itself (they cannot match, and reading them made a hunt quadratic in its
    own alerts); by alert id it still sees every alert."""

    def alert(alert_id: str, event_id: str) -> dict:
        return {
            "@timestamp": 1_800_000_000.0,
            "event.kind": "alert",
            "event.id": alert_id,
            "rule.id": "r1",
            "icsmon.alert.event_ids": [event_id],
        }

    with Store.open(tmp_path / "s.db") as store:
        store.write("alert", alert("a-before", "e1"))
        store.flush()
        raised = store.raised_check()
        store.write("alert", alert("a-after", "e2"))
        store.flush()
        assert raised("other", "r1", ["e1"])  # another alert of the rule over e1, stored before
        assert not raised("other", "r2", ["e1"])  # another rule
        assert not raised("other", "r1", ["e2"])  # stored since: not searched by event
        assert raised("a-after", "r1", ["e2"])  # by id: every alert
        assert store.alert_raised("other", "r1", ["e2"])  # without the bound: all


def test_dry_run_counts_and_writes_nothing(tmp_path: Path) -> None:
    db = tmp_path / "sensor.db"
    live = live_run(ATTACK, db)
    with sqlite3.connect(db) as conn:
        conn.execute("DELETE FROM alert_docs")
        conn.execute("DELETE FROM alerts")
    res = runner.invoke(app, ["hunt", "--store", str(db), "--dry-run", "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert summary["dry_run"] and summary["alerts"] == len(live) and summary["new"] == 0
    with Store.open(db, readonly=True) as store:
        assert store.counts()["alert"] == 0


def test_time_range_scope_and_caps(tmp_path: Path) -> None:
    db = tmp_path / "sensor.db"
    live_run(ATTACK, db)
    with Store.open(db, readonly=True) as store:
        times = [e["@timestamp"] for e in store.scan_events()]
        total = store.count_events()
        assert len(times) == total
        mid = times[len(times) // 2]
        assert store.count_events(since=mid) == sum(1 for t in times if t >= mid)
        assert store.count_events(until=mid) == sum(1 for t in times if t < mid)
        assert [e["@timestamp"] for e in store.scan_events(since=mid, page=7)] == [
            t for t in times if t >= mid
        ]
        assert store.count_events(sites=["hunt-site"]) == total
        assert store.count_events(sites=["elsewhere"]) == 0
        assert store.count_events(observers=["hunt-sensor", "other"]) == total
    res = runner.invoke(app, ["hunt", "--store", str(db), "--json", "--site", "elsewhere"])
    assert json.loads(res.stdout)["events"] == 0
    res = runner.invoke(
        app,
        ["hunt", "--store", str(db), "--json", "--since", "2001-01-01", "--until", "2001-01-02"],
    )
    assert json.loads(res.stdout)["events"] == 0
    res = runner.invoke(
        app, ["hunt", "--store", str(db), "--json", "--dry-run", "--max-events", "10"]
    )
    summary = json.loads(res.stdout)
    assert summary["events"] == 10 and "cap of 10 events" in summary["stopped"]
    res = runner.invoke(app, ["hunt", "--store", str(db), "--until", "1d", "--since", "1h"])
    assert res.exit_code == 2 and "--until must be later" in res.output


def test_rule_selection_by_id_file_and_folder(tmp_path: Path) -> None:
    pack = load_pack([SHIPPED_RULES])
    corr = next(c for c in pack.correlations if "modbus" in c.meta.path)
    chosen, missing = select_pack(pack, [corr.meta.id])
    assert not missing and chosen.correlations == [corr]
    # the base rules the correlation reads come along, silent
    assert {r.meta.id for r in chosen.rules} == set(corr.rules)
    assert not any(r.output for r in chosen.rules)
    single = next(r for r in pack.rules if r.output)
    chosen, _ = select_pack(pack, [single.meta.path])
    assert [r.meta.id for r in chosen.rules] == [single.meta.id] and not chosen.correlations
    chosen, _ = select_pack(pack, [str(SWEEP)])
    assert chosen.correlations and all("correlation" in c.meta.path for c in chosen.correlations)
    chosen, _ = select_pack(pack, ["modbus"], base=SHIPPED_RULES)  # a folder of the pack
    assert chosen.rules and all("/modbus/" in r.meta.path for r in chosen.rules if r.output)
    _, missing = select_pack(pack, ["no-such-rule"])
    assert missing == ["no-such-rule"]
    with pytest.raises(HuntError, match="no-such-rule"):
        load_hunt_engine(["no-such-rule"])
    db = tmp_path / "sensor.db"
    live = live_run(ATTACK, db)
    with sqlite3.connect(db) as conn:
        conn.execute("DELETE FROM alert_docs")
        conn.execute("DELETE FROM alerts")
    res = runner.invoke(app, ["hunt", corr.meta.id, "--store", str(db), "--dry-run", "--json"])
    summary = json.loads(res.stdout)
    assert summary["rules"] == 1
    assert summary["by_rule"] == {
        corr.meta.id: sum(1 for a in live if a["rule.id"] == corr.meta.id)
    }
    res = runner.invoke(app, ["hunt", "no-such-rule", "--store", str(db)])
    assert res.exit_code == 2 and "no-such-rule" in res.output
    res = runner.invoke(app, ["hunt", "--store", str(tmp_path / "missing.db")])
    assert res.exit_code == 2 and "missing.db" in res.output


def test_a_rule_naming_a_field_no_event_carries_is_said_before_the_hunt(tmp_path: Path) -> None:
    db = tmp_path / "sensor.db"
    live_run(ATTACK, db)
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "typo.yml").write_text(
        "title: Typo\nid: 11111111-1111-4111-8111-111111111111\nstatus: test\n"
        "logsource:\n  product: ics\n  service: modbus\n"
        "detection:\n  sel:\n    modbus.fucntion_code: 6\n  condition: sel\nlevel: high\n"
    )
    res = runner.invoke(app, ["hunt", "--store", str(db), "--rules", str(rules), "--json"])
    assert res.exit_code == 0, res.output
    assert "warning:" in res.stderr and "modbus.fucntion_code" in res.stderr
    assert json.loads(res.stdout)["alerts"] == 0
    (rules / "typo.yml").write_text("title: [\n")
    res = runner.invoke(app, ["hunt", "--store", str(db), "--rules", str(rules)])
    assert res.exit_code == 2 and "error:" in res.stderr and "Traceback" not in res.output
