"""Coverage as compliance: heartbeat gaps simulated (documents in the heartbeat contract's
shape), "connected but no traffic" told apart from "disconnected", stale and never-onboarded
enterprises, coverage of the required ones per city and industry; and the posture API's
coverage of a seeded province, cut to the caller's scope."""

from __future__ import annotations

from assessment.coverage import EnterpriseInfo, coverage, sensor_state, signals_from_heartbeats
from sensor.events import iso_timestamp as format_timestamp

NOW = 1_796_000_000.0


def beats(sensor: str, start: float, end: float, traffic: int, every: float = 60.0) -> list[dict]:
    """One heartbeat per interval from ``start`` to ``end`` (a gap is simply no documents)."""
    out, t = [], start
    while t <= end:
        out.append(
            {
                "@timestamp": format_timestamp(t),
                "event.kind": "state",
                "event.dataset": "icsmon.heartbeat",
                "observer.name": sensor,
                "icsmon.sensor.traffic": traffic,
                "icsmon.sensor.packets": 1000,
            }
        )
        t += every
    return out


def test_heartbeat_gaps_and_no_traffic() -> None:
    docs = (
        beats("s-live", NOW - 3600, NOW - 30, traffic=120)
        + beats("s-idle", NOW - 3600, NOW - 30, traffic=0)  # up, but the mirror port is silent
        + beats("s-gap", NOW - 3600, NOW - 1200, traffic=80)  # 20 minutes without a heartbeat
        + beats("s-old", NOW - 9 * 86400, NOW - 8 * 86400, traffic=5)
    )
    signals = signals_from_heartbeats(docs)
    assert {
        n: sensor_state(signals.get(n), NOW)
        for n in ("s-live", "s-idle", "s-gap", "s-old", "s-none")
    } == {
        "s-live": "connected",
        "s-idle": "no-traffic",
        "s-gap": "disconnected",
        "s-old": "stale",
        "s-none": "never-onboarded",
    }
    # the idle sensor's events keep flowing (traffic counted elsewhere): connected after all
    signals["s-idle"].last_event = NOW - 10
    assert sensor_state(signals["s-idle"], NOW) == "connected"
    # the gap closes: a new heartbeat with traffic
    signals = signals_from_heartbeats(docs + beats("s-gap", NOW - 60, NOW - 60, traffic=3))
    assert sensor_state(signals["s-gap"], NOW) == "connected"


def test_a_clean_stop_is_disconnected_until_the_sensor_speaks_again() -> None:
    docs = beats("s-stop", NOW - 600, NOW - 60, traffic=50)
    docs[-1]["icsmon.sensor.reason"] = "stop"  # the heartbeat a sensor sends as it stops
    signals = signals_from_heartbeats(docs)
    assert sensor_state(signals["s-stop"], NOW) == "disconnected"
    # an event after its goodbye (a restart whose first heartbeat is late): connected
    signals["s-stop"].last_event = NOW - 10
    assert sensor_state(signals["s-stop"], NOW) == "connected"
    # restarted: the next heartbeat is a start's
    signals = signals_from_heartbeats(docs + beats("s-stop", NOW - 30, NOW - 30, traffic=5))
    assert sensor_state(signals["s-stop"], NOW) == "connected"


def test_enterprise_states_and_required_coverage_by_city_and_industry() -> None:
    docs = (
        beats("a1", NOW - 600, NOW - 30, 50)
        + beats("a2", NOW - 600, NOW - 30, 0)
        + beats("b1", NOW - 600, NOW - 30, 0)
        + beats("c1", NOW - 7200, NOW - 3600, 10)
    )
    ents = [
        EnterpriseInfo("ent-a", "A", "jinan", "chemicals", grade=3, sensors=["a1", "a2"]),
        EnterpriseInfo("ent-b", "B", "jinan", "tyres", key_connected=True, sensors=["b1"]),
        EnterpriseInfo("ent-c", "C", "qingdao", "chemicals", grade=3, sensors=["c1"]),
        EnterpriseInfo("ent-d", "D", "qingdao", "chemicals", grade=3, sensors=[]),
        EnterpriseInfo("ent-e", "E", "qingdao", "tyres", grade=1, sensors=["e1"]),
    ]
    cov = coverage(ents, signals_from_heartbeats(docs), NOW)
    states = {r["enterprise"]: r["state"] for r in cov["enterprises"]}
    assert states == {
        "ent-a": "connected",
        "ent-b": "no-traffic",
        "ent-c": "disconnected",
        "ent-d": "never-onboarded",
        "ent-e": "never-onboarded",
    }
    assert cov["required"] == 4 and cov["required_connected"] == 1 and cov["ratio"] == 0.25
    assert cov["by_city"]["jinan"] == {
        "required": 2,
        "connected": 1,
        "enterprises": 2,
        "ratio": 0.5,
    }
    assert cov["by_city"]["qingdao"]["ratio"] == 0.0
    assert cov["by_industry"]["chemicals"] == {
        "required": 3,
        "connected": 1,
        "enterprises": 3,
        "ratio": 0.333,
    }
    assert cov["by_industry"]["tyres"]["required"] == 1  # the grade-1 enterprise is not required
    assert [r["enterprise"] for r in cov["enterprises"]][:2] == ["ent-d", "ent-c"]  # worst first


def test_api_coverage_is_scoped(tmp_path) -> None:
    from posture import seed
    from tests.support.posture import make_env

    env = make_env(tmp_path, "store", n_alerts=200)
    try:
        prov = env.client.get("/api/assessment", headers=env.h("province")).json()["coverage"]
        ent = env.client.get("/api/assessment", headers=env.h("ent_a_op")).json()["coverage"]
        enterprises = {r["enterprise"] for r in seed.registry_sites(env.registry)}
        assert sum(prov["by_state"].values()) == len(enterprises)
        assert [r["enterprise"] for r in ent["enterprises"]] == ["ent-0001"]
        # the seed leaves every ninth sensor two hours silent: those enterprises are disconnected
        assert prov["by_state"]["disconnected"] >= 1 and prov["by_state"]["connected"] >= 1
        assert prov["required"] >= 1
    finally:
        env.close()
