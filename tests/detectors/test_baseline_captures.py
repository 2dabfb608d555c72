"""Baseline learning and detection on the captures in pcaps/baseline/ (real pymodbus,
python-snap7 and asyncua peers on loopback; see pcaps/README.md): learn on the training
capture, then no alert on a clean capture of another run, and each attack capture raises the
expected deviation with the right ATT&CK for ICS technique.

Run with ``-s`` to see the false-alert count and the detections.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from detectors.attack_ics import FRAMEWORK, TECHNIQUES
from detectors.baseline import Baseline, BaselineDetector, BaselineLearner, accept_alert
from sensor.engine import Engine, EngineConfig
from sensor.protocols import BY_NAME
from tests.support import REPO

CAPTURES = REPO / "pcaps" / "baseline"
HMI, SCADA, HISTORIAN = "127.0.5.11", "127.0.5.12", "127.0.5.13"
MODBUS_PLC, S7_PLC, OPCUA_SERVER = "127.0.5.10", "127.0.5.20", "127.0.5.30"


def events(name: str) -> list[dict]:
    path = CAPTURES / f"{name}.pcap"
    assert path.is_file(), f"{path} missing: run pcaps/baseline/make_captures.py"
    return list(Engine(EngineConfig(site="plant-a", observer="sensor-1")).replay([path]))


def learn(*names: str) -> Baseline:
    learner = BaselineLearner()
    for name in names:
        for event in Engine(EngineConfig(site="plant-a", observer="sensor-1")).replay(
            [CAPTURES / f"{name}.pcap"]
        ):
            learner.observe(event)
    return learner.result()


def detect(baseline: Baseline, evs: list[dict], **options) -> list[dict]:
    detector = BaselineDetector(baseline, **options)
    alerts: list[dict] = []
    for event in evs:
        alerts.extend(detector.process(event))
    alerts.extend(detector.flush())
    return alerts


def report(name: str, alerts: list[dict], out_dir: Path | None = None) -> None:
    """Print the detections (``-s``) and keep them under tests/out/ for the record."""
    lines = [f"[{name}] {len(alerts)} baseline alert(s)"] + [
        f"  {a['rule.id']:<30} {','.join(a['threat.technique.id']):<18} sev {a['event.severity']:>3}  {a['message']}"
        for a in alerts
    ]
    print("\n" + "\n".join(lines))
    if out_dir is not None:
        (out_dir / "detections.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")


@pytest.fixture(scope="module")
def baseline() -> Baseline:
    return learn("train")


def test_training_baseline_content(baseline: Baseline) -> None:
    convs = baseline.conversations
    hmi_modbus = convs[f"{HMI} -> {MODBUS_PLC} 502/modbus"]
    assert set(hmi_modbus["operations"]) == {"fc=3 unit=1", "fc=1 unit=1"}
    reads = hmi_modbus["operations"]["fc=3 unit=1"]["addresses"]["read"]["holding"]
    assert reads == [[0, 9], [100, 101]]
    regular = {k: s["period"] for k, s in hmi_modbus["polling"].items() if s["regular"]}
    # the HMI polls FC3 0-9 every 0.5 s, coils and FC3 100-101 every 1 s (script schedule)
    assert regular == pytest.approx(
        {
            "fc=3 unit=1 @ r:holding:0-9": 0.5,
            "fc=1 unit=1 @ r:coil:0-7": 1.0,
            "fc=3 unit=1 @ r:holding:100-101": 1.0,
        },
        rel=0.05,
    )
    scada = convs[f"{SCADA} -> {MODBUS_PLC} 502/modbus"]
    assert {op["class"] for op in scada["operations"].values()} == {"write"}
    setpoint = baseline.assets[MODBUS_PLC]["points"]["modbus unit=1 holding=100"]
    assert (setpoint["write"]["min"], setpoint["write"]["max"]) == (40, 60)
    assert setpoint["write"]["values"] == [40, 45, 50, 55, 60]
    opcua = convs[f"{HISTORIAN} -> {OPCUA_SERVER} 4840/opcua"]
    assert "Read" in opcua["operations"]
    assert opcua["security"]["security_mode"] == {
        "None": opcua["security"]["security_mode"]["None"]
    }
    assert set(opcua["security"]["identity_token"]) == {"anonymous"}
    # the window covers the capture and every entry carries its counts
    assert baseline.window["events"] == sum(c["events"] for c in convs.values())
    assert baseline.window["start"] < baseline.window["end"]


def test_learning_is_deterministic(tmp_path: Path) -> None:
    first, second = learn("train"), learn("train")
    first.save(tmp_path / "a.json")
    second.save(tmp_path / "b.json")
    assert (tmp_path / "a.json").read_bytes() == (tmp_path / "b.json").read_bytes()
    # and the file round-trips unchanged
    again = Baseline.load(tmp_path / "a.json")
    again.save(tmp_path / "c.json")
    assert (tmp_path / "c.json").read_bytes() == (tmp_path / "a.json").read_bytes()


def test_clean_capture_raises_nothing(baseline: Baseline, out_dir: Path) -> None:
    alerts = detect(baseline, events("clean"))
    report("clean: false alerts", alerts, out_dir)
    assert alerts == []


ATTACKS = {
    # capture: {rule.id: techniques that must be among the alert's}, exact set of rule ids
    "attack_new_host_write": {
        "baseline-new-asset": {"T0848"},
        "baseline-new-conversation": {"T0848", "T0855", "T0836"},
    },
    "attack_out_of_range": {"baseline-value-out-of-range": {"T0836"}},
    "attack_polling_stops": {"baseline-polling-stopped": {"T0803", "T0804"}},
    "attack_flood": {"baseline-request-flood": {"T0814"}},
    "attack_plc_stop": {"baseline-new-operation": {"T0858"}},
    "attack_program_upload": {"baseline-new-operation": {"T0845"}},
    "attack_opcua_write": {
        "baseline-new-asset": {"T0848"},
        "baseline-new-conversation": {"T0848"},
        "baseline-new-operation": {"T0855", "T0836"},
    },
}


S7_CAPTURES = {"attack_plc_stop", "attack_program_upload"}


@pytest.mark.parametrize("capture", sorted(ATTACKS))
def test_attack_is_detected(baseline: Baseline, capture: str, out_dir: Path) -> None:
    if capture in S7_CAPTURES and "s7comm" not in BY_NAME:
        pytest.skip("the S7comm dissector is not registered in sensor.protocols")
    alerts = detect(baseline, events(capture))
    report(capture, alerts, out_dir)
    expected = ATTACKS[capture]
    by_rule: dict[str, set[str]] = {}
    for a in alerts:
        by_rule.setdefault(a["rule.id"], set()).update(a["threat.technique.id"])
    assert set(by_rule) == set(expected), f"deviations raised: {sorted(by_rule)}"
    for rule_id, techniques in expected.items():
        assert techniques <= by_rule[rule_id], (rule_id, by_rule[rule_id])


def test_attack_details(baseline: Baseline) -> None:
    alerts = detect(baseline, events("attack_out_of_range"))
    write = next(a for a in alerts if a["icsmon.baseline.direction"] == "write")
    assert write["source.ip"] == SCADA and write["modbus.values"] == [500]
    assert write["icsmon.baseline.observed"] == "500"
    assert write["icsmon.baseline.expected"].startswith("40..60")
    assert (
        write["icsmon.baseline.entry"]
        == f"assets['{MODBUS_PLC}'].points['modbus unit=1 holding=100'].write"
    )
    read = next(a for a in alerts if a["icsmon.baseline.direction"] == "read")
    assert read["source.ip"] == HMI
    # a written value outranks the same value read back
    assert write["event.severity"] > read["event.severity"]

    stops = detect(baseline, events("attack_polling_stops"))
    assert len(stops) == 1  # one alert for the conversation, naming each silent series
    assert stops[0]["source.ip"] == HMI and stops[0]["destination.ip"] == MODBUS_PLC
    assert len(stops[0]["icsmon.baseline.series"]) == 3
    assert stops[0]["icsmon.alert.event_ids"], "the last requests seen are the evidence"


def test_alerts_follow_the_schema(baseline: Baseline) -> None:
    names = sorted(ATTACKS)
    for capture in names:
        if capture in S7_CAPTURES and "s7comm" not in BY_NAME:
            continue
        evs = events(capture)
        first = detect(baseline, evs)
        again = detect(baseline, evs)
        assert [a["event.id"] for a in first] == [a["event.id"] for a in again], (
            "alert ids must be deterministic"
        )
        for a in first:
            assert a["event.kind"] == "alert"
            assert a["event.category"] == ["network", "intrusion_detection"]
            assert a["rule.ruleset"] == "baseline" and a["rule.id"].startswith("baseline-")
            assert a["rule.name"] and a["rule.description"] and a["message"]
            assert isinstance(a["event.severity"], int) and 0 < a["event.severity"] <= 100
            assert a["threat.framework"] == FRAMEWORK
            assert all(t in TECHNIQUES for t in a["threat.technique.id"])
            assert len(a["threat.technique.name"]) == len(a["threat.technique.id"])
            for key in (
                "@timestamp",
                "source.ip",
                "destination.ip",
                "destination.port",
                "network.protocol",
                "icsmon.baseline.expected",
                "icsmon.baseline.observed",
                "icsmon.baseline.entry",
            ):
                assert a.get(key) not in (None, ""), (a["rule.id"], key)
            json.dumps(a)  # plain JSON types only


def test_severity_scales_with_danger(baseline: Baseline) -> None:
    rogue_write = detect(baseline, events("attack_new_host_write"))
    rogue_session = detect(baseline, events("attack_opcua_write"))
    conv_write = next(a for a in rogue_write if a["rule.id"] == "baseline-new-conversation")
    conv_session = next(a for a in rogue_session if a["rule.id"] == "baseline-new-conversation")
    escalation = next(a for a in rogue_session if a["rule.id"] == "baseline-new-operation")
    assert conv_write["event.severity"] > conv_session["event.severity"]
    assert escalation["event.severity"] > conv_session["event.severity"]


def test_tolerance_setting(baseline: Baseline) -> None:
    evs = events("attack_out_of_range")
    strict = detect(baseline, evs, tolerance=0.1)
    loose = detect(baseline, evs, tolerance=10.0)  # 10x the learned magnitude: 500 is in range
    assert any(a["rule.id"] == "baseline-value-out-of-range" for a in strict)
    assert not any(a["rule.id"] == "baseline-value-out-of-range" for a in loose)


def test_polling_slowed(baseline: Baseline) -> None:
    # The clean run with three of every four FC3 0-9 polls taken out: the HMI polls every
    # 2 s instead of 0.5 s (slower, but never silent long enough to count as stopped).
    evs, kept = [], 0
    for e in events("clean"):
        if e.get("modbus.function_code") == 3 and e.get("modbus.address") == 0:
            kept += 1
            if kept % 4:
                continue
        evs.append(e)
    alerts = detect(baseline, evs)
    report("clean minus 3/4 of one polling series", alerts)
    assert [a["rule.id"] for a in alerts] == ["baseline-polling-slowed"]
    assert alerts[0]["icsmon.baseline.series"] == ["fc=3 unit=1 @ r:holding:0-9"]
    assert set(alerts[0]["threat.technique.id"]) == {"T0803", "T0804"}


def test_security_downgrade_against_an_edited_baseline(baseline: Baseline) -> None:
    # An analyst's edit (as for a plant whose historian signs and encrypts): the clean run's
    # security mode None and anonymous token are then weaker than anything learned.
    edited = Baseline(json.loads(baseline.to_json()))
    security = edited.conversations[f"{HISTORIAN} -> {OPCUA_SERVER} 4840/opcua"]["security"]
    security["security_mode"] = {"SignAndEncrypt": 10}
    security["identity_token"] = {"username": 3}
    alerts = detect(edited, events("clean"))
    report("clean vs. a baseline edited to SignAndEncrypt", alerts)
    kinds = {
        (a["rule.id"], a["icsmon.baseline.observed"], tuple(a["threat.technique.id"]))
        for a in alerts
    }
    assert kinds == {
        ("baseline-security-downgrade", "None", ("T0830",)),
        ("baseline-security-downgrade", "anonymous", ("T0859",)),
    }


def test_identity_change_against_an_edited_baseline(baseline: Baseline) -> None:
    edited = Baseline(json.loads(baseline.to_json()))
    identity = edited.assets[OPCUA_SERVER]["identity"]
    assert identity.get("name"), "the OPC UA server's CreateSession answer names it"
    identity["name"] = "Other Server"
    alerts = detect(edited, events("clean"))
    assert [(a["rule.id"], a["icsmon.baseline.expected"]) for a in alerts] == [
        ("baseline-identity-changed", "Other Server")
    ]


def test_merge_and_accept(baseline: Baseline) -> None:
    # merging the baseline learned from the rogue host's capture accepts that host
    rogue = learn("attack_new_host_write")
    merged = baseline.merge(rogue)
    assert detect(merged, events("attack_new_host_write")) == []
    assert detect(merged, events("clean")) == []
    conv = f"{HMI} -> {MODBUS_PLC} 502/modbus"
    assert merged.conversations[conv]["events"] == (
        baseline.conversations[conv]["events"] + rogue.conversations[conv]["events"]
    )
    # accepting alerts one by one removes exactly those deviations
    current = baseline
    for alert in detect(baseline, events("attack_out_of_range")):
        current, _ = accept_alert(current, alert, accepted_at=0.0)
    assert detect(current, events("attack_out_of_range")) == []
    assert len(current.doc["accepted"]) == 2
    assert current.window == baseline.window
    flood = detect(baseline, events("attack_flood"))
    accepted, what = accept_alert(baseline, flood[0])
    assert "requests per bucket" in what
    assert detect(accepted, events("attack_flood")) == []
    stopped = detect(baseline, events("attack_polling_stops"))
    accepted, what = accept_alert(baseline, stopped[0])
    assert what.startswith("dropped polling series")
    assert detect(accepted, events("attack_polling_stops")) == []
    # a non-baseline alert cannot be accepted
    with pytest.raises(ValueError, match="not a baseline alert"):
        accept_alert(baseline, dict(stopped[0], **{"rule.ruleset": "sigma"}))


def test_placeholders_cover_learned_hosts(baseline: Baseline) -> None:
    values = baseline.placeholders()
    assert values["modbus_masters"] == [HMI, SCADA]
    assert values["opcua_clients"] == [HISTORIAN]
    assert values["modbus_servers"] == [MODBUS_PLC]
    assert values["known_hosts"] == sorted(
        baseline.assets, key=lambda ip: tuple(map(int, ip.split(".")))
    )
    every_client = set(values["engineering_stations"]) | set(values["hmi_hosts"])
    assert every_client == {HMI, SCADA, HISTORIAN}
    assert not set(values["engineering_stations"]) & set(values["hmi_hosts"])
    if "s7comm" in BY_NAME:
        assert values["s7_clients"] == [HMI]


def _placeholder_rule_ids() -> set[str]:
    """Ids of the shipped Sigma rules whose detection uses a %placeholder% list."""
    import yaml

    ids = set()
    for path in (CAPTURES.parent.parent / "rules").rglob("*.yml"):
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if isinstance(doc, dict) and "%" in json.dumps(doc.get("detection") or {}):
                ids.add(str(doc.get("id")))
    return ids


def test_baseline_fills_sigma_placeholders(baseline: Baseline, tmp_path: Path) -> None:
    from icsmon.run import load_detectors

    with_placeholders = _placeholder_rule_ids()
    if not with_placeholders:
        pytest.skip("no shipped Sigma rule uses a placeholder")
    path = tmp_path / "plant.json"
    baseline.save(path)
    evs = events("clean")

    def sigma_alerts(baseline_file: Path | None) -> list[dict]:
        dets = load_detectors(None, False, None, baseline_file)
        found = [a for e in evs for a in dets.process(e)] + dets.flush()
        return [a for a in found if a["rule.ruleset"] == "sigma"]

    without = sigma_alerts(None)
    learned = sigma_alerts(path)
    print(
        f"\n[clean, Sigma rules] without a baseline: {len(without)} alert(s) "
        f"{sorted({a['rule.name'] for a in without})}; with the baseline's placeholders: {len(learned)} "
        f"{sorted({a['rule.name'] for a in learned})}"
    )
    # allow-list rules fire on the clean run without a baseline, and stay silent with it
    assert any(a["rule.id"] in with_placeholders for a in without)
    assert [a["rule.name"] for a in learned if a["rule.id"] in with_placeholders] == []


def test_training_baseline_golden(baseline: Baseline, update_golden: bool) -> None:
    """The baseline learned from train.pcap, as reviewed: a change in learning shows as a diff
    of pcaps/baseline/train.baseline.json (regenerate with ICSMON_UPDATE_GOLDEN=1)."""
    golden = CAPTURES / "train.baseline.json"
    text = baseline.to_json()
    if update_golden:
        golden.write_text(text, encoding="utf-8")
    assert golden.is_file(), "regenerate with ICSMON_UPDATE_GOLDEN=1"
    assert golden.read_text(encoding="utf-8") == text
