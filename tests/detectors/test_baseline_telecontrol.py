"""Baseline learning and detection for the telecontrol protocols, on the captures in
pcaps/dnp3/ (dnp3py outstation and master) and pcaps/iec104/ (c104 controlled and
controlling station), real stacks on loopback (pcaps/README.md): learn on each training
capture; a clean capture of another run raises nothing; each attack capture raises the
expected deviations with the right ATT&CK for ICS techniques. The Sigma rules run beside
(``rules/``): the attack captures' rule alerts are checked too.

Run with ``-s`` to see the detections.
"""

from __future__ import annotations

import pytest

from detectors.baseline import Baseline, BaselineDetector, BaselineLearner
from icsmon.run import load_detectors
from sensor.engine import Engine, EngineConfig
from tests.support import REPO

PCAPS = REPO / "pcaps"
DNP3_OUTSTATION, DNP3_MASTER = "127.0.8.10", "127.0.8.2"
IEC104_STATION, IEC104_MASTER = "127.0.9.10", "127.0.9.2"


def events(protocol: str, name: str) -> list[dict]:
    path = PCAPS / protocol / f"{protocol}_{name}.pcap"
    assert path.is_file(), f"{path} missing: run pcaps/{protocol}/make_captures.py"
    return list(Engine(EngineConfig(site="substation-1", observer="sensor-1")).replay([path]))


def learn(protocol: str) -> Baseline:
    learner = BaselineLearner()
    for event in events(protocol, "train"):
        learner.observe(event)
    return learner.result()


def detect(baseline: Baseline, evs: list[dict]) -> list[dict]:
    detector = BaselineDetector(baseline)
    alerts: list[dict] = []
    for event in evs:
        alerts.extend(detector.process(event))
    alerts.extend(detector.flush())
    print(f"\n{len(alerts)} baseline alert(s)")
    for a in alerts:
        print(f"  {a['rule.id']:<28} {','.join(a['threat.technique.id']):<18} {a['message']}")
    return alerts


def rule_alerts(evs: list[dict]) -> dict[str, list[str]]:
    """Sigma rule alerts (shipped rules, no site list): rule name -> techniques."""
    detectors = load_detectors(None, False, None, None)
    out: dict[str, list[str]] = {}
    alerts = [a for event in evs for a in detectors.process(event)] + detectors.flush()
    for alert in alerts:
        out[alert["rule.name"]] = alert["threat.technique.id"]
    return out


@pytest.fixture(scope="module")
def dnp3_baseline() -> Baseline:
    return learn("dnp3")


@pytest.fixture(scope="module")
def iec104_baseline() -> Baseline:
    return learn("iec104")


# -- what is learned ------------------------------------------------------------------


def test_dnp3_baseline_learns_master_functions_points_setpoints_and_polling(
    dnp3_baseline: Baseline,
) -> None:
    conv = dnp3_baseline.conversations[f"{DNP3_MASTER} -> {DNP3_OUTSTATION} 20000/dnp3"]
    ops = conv["operations"]
    # function codes per outstation: read (class polls), write (time), select, operate
    assert {"fc=1 outstation=10", "fc=2 outstation=10", "fc=3 outstation=10"} <= set(ops)
    assert ops["fc=3 outstation=10"]["class"] == "control"
    assert ops["fc=4 outstation=10"]["addresses"]["write"] == {"analog_output": [[0, 0]]}
    # the class poll asks for class 1, 2 and 3 data: the object types are its items
    assert set(ops["fc=1 outstation=10"]["nodes"]["read"]) >= {"g60v2", "g60v3", "g60v4"}
    setpoint = dnp3_baseline.assets[DNP3_OUTSTATION]["points"]["dnp3 outstation=10 analog_output=0"]
    assert (setpoint["write"]["min"], setpoint["write"]["max"]) == (40, 60)
    assert setpoint["write"]["values"] == [40, 45, 50, 55, 60]
    regular = {k: s["period"] for k, s in conv["polling"].items() if s["regular"]}
    class_poll = next(k for k in regular if k.startswith("fc=1 outstation=10 @"))
    assert regular[class_poll] == pytest.approx(1.0, rel=0.05)
    assert dnp3_baseline.placeholders()["dnp3_masters"] == [DNP3_MASTER]


def test_iec104_baseline_learns_types_ioas_setpoints_and_polling(
    iec104_baseline: Baseline,
) -> None:
    conv = iec104_baseline.conversations[f"{IEC104_MASTER} -> {IEC104_STATION} 2404/iec104"]
    ops = conv["operations"]
    assert {"C_IC_NA_1 ca=1", "C_CS_NA_1 ca=1", "C_RD_NA_1 ca=1", "C_SE_NC_1 ca=1"} <= set(ops)
    assert ops["C_SE_NC_1 ca=1"]["addresses"]["write"] == {"ca=1 ioa": [[6000, 6000]]}
    assert ops["M_ME_NC_1 ca=1"]["addresses"]["read"] == {"ca=1 ioa": [[200, 202]]}
    setpoint = iec104_baseline.assets[IEC104_STATION]["points"]["iec104 ca=1 ioa=6000"]
    assert (setpoint["write"]["min"], setpoint["write"]["max"]) == (45, 55)
    regular = {k: s["period"] for k, s in conv["polling"].items() if s["regular"]}
    assert regular["C_RD_NA_1 ca=1 @ r:ca=1 ioa:200-200"] == pytest.approx(1.0, rel=0.05)
    assert iec104_baseline.placeholders()["iec104_masters"] == [IEC104_MASTER]


# -- clean and attack captures ----------------------------------------------------------


@pytest.mark.parametrize("protocol", ["dnp3", "iec104"])
def test_clean_capture_raises_nothing(protocol: str, request: pytest.FixtureRequest) -> None:
    baseline = request.getfixturevalue(f"{protocol}_baseline")
    assert detect(baseline, events(protocol, "clean")) == []


ATTACKS = {
    # (protocol, capture): {rule.id: techniques it must carry}
    ("dnp3", "attack_new_master"): {
        "baseline-new-asset": {"T0848"},
        "baseline-new-conversation": {"T0848"},
        "baseline-new-operation": {"T0855"},
    },
    ("dnp3", "attack_setpoint"): {"baseline-value-out-of-range": {"T0836", "T0831"}},
    ("dnp3", "attack_restart"): {"baseline-new-operation": {"T0816"}},
    ("dnp3", "attack_sweep"): {
        "baseline-new-asset": {"T0848"},
        "baseline-new-conversation": {"T0848"},
    },
    ("iec104", "attack_new_host"): {
        "baseline-new-asset": {"T0848"},
        "baseline-new-conversation": {"T0848"},
        "baseline-new-operation": {"T0855"},
    },
    ("iec104", "attack_setpoint"): {"baseline-value-out-of-range": {"T0836", "T0831"}},
    ("iec104", "attack_reset"): {"baseline-new-operation": {"T0816"}},
    ("iec104", "attack_sweep"): {
        "baseline-new-asset": {"T0848"},
        "baseline-point-sweep": {"T0861"},
    },
}

RULES = {
    # (protocol, capture): Sigma rule names that must fire (with the site list unset)
    ("dnp3", "attack_new_master"): {
        "DNP3 Control or Write From a Host Outside the DNP3 Masters List"
    },
    ("dnp3", "attack_restart"): {"DNP3 Cold or Warm Restart"},
    ("dnp3", "attack_sweep"): {"DNP3 Sweep of Outstation Addresses"},
    ("iec104", "attack_reset"): {"IEC 104 Reset Process Command"},
    ("iec104", "attack_sweep"): {"IEC 104 Interrogation Sweep of Common Addresses"},
}


@pytest.mark.parametrize(
    ("protocol", "capture"), list(ATTACKS), ids=[f"{p}-{c}" for p, c in ATTACKS]
)
def test_attack_is_detected(protocol: str, capture: str, request: pytest.FixtureRequest) -> None:
    baseline = request.getfixturevalue(f"{protocol}_baseline")
    evs = events(protocol, capture)
    alerts = detect(baseline, evs)
    by_rule: dict[str, set[str]] = {}
    for alert in alerts:
        by_rule.setdefault(alert["rule.id"], set()).update(alert["threat.technique.id"])
    for rule_id, techniques in ATTACKS[(protocol, capture)].items():
        assert rule_id in by_rule, f"{capture}: no {rule_id} in {sorted(by_rule)}"
        assert techniques <= by_rule[rule_id], (rule_id, by_rule[rule_id])
    # every alert names what the baseline expected and the entry it refers to
    for alert in alerts:
        assert alert["icsmon.baseline.expected"] and alert["icsmon.baseline.entry"]
    fired = rule_alerts(evs)
    missing = RULES.get((protocol, capture), set()) - set(fired)
    assert not missing, f"Sigma rules that did not fire: {missing} (fired: {sorted(fired)})"
