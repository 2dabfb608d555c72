"""Detection quality on the mixed plant (pcaps/plant/): learned on the train split, the default
rules and the baseline raise nothing on the clean test split, detect every labelled attack
with its labelled ATT&CK for ICS techniques, with precision of at least 0.9 on the attack
splits, and a handful of alerts per attack (bench/bench_detection.py prints the same score
through the command line; its output is in bench/README.md).

Run with ``-s`` to see the score.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from detectors.attack_ics import TECHNIQUES
from detectors.scoring import LabelsError, Score, attribute, load_labels, score
from sensor.capture import CaptureReader
from tests.support.plant import LABELS, PLANT, capture, detect, events, save_baseline

MAX_ALERTS_PER_ATTACK = 12  # "a handful of alerts each, not hundreds"


@pytest.fixture(scope="module")
def result(tmp_path_factory: pytest.TempPathFactory) -> tuple[Score, dict[str, list[dict]]]:
    labels = load_labels(LABELS)
    baseline_file = save_baseline(tmp_path_factory.mktemp("plant") / "plant.baseline.json")
    alerts = {
        name: detect(baseline_file, events(name))[0]
        for name in (*labels.clean, *labels.attack_captures)
    }
    scored = score(labels, alerts)
    print("\n" + json.dumps(scored.to_dict(), indent=1))
    return scored, alerts


def test_labels_describe_real_attacks_in_their_captures() -> None:
    labels = load_labels(LABELS)
    assert labels.learn == ("train.pcap",) and labels.clean == ("test.pcap",)
    assert len(labels.attacks) >= 8
    protocols = set()
    for attack in labels.attacks:
        frames = [ts for ts, _, _ in CaptureReader(capture(attack.capture))]
        assert frames[0] <= attack.start <= attack.end <= frames[-1], attack.id
        assert attack.techniques and all(t in TECHNIQUES for t in attack.techniques), attack.id
        evs = [
            e
            for e in events(attack.capture)
            if {e["source.ip"], e["destination.ip"]} == {attack.attacker, attack.target}
        ]
        assert evs, f"{attack.id}: no traffic between {attack.attacker} and {attack.target}"
        protocols.update(e["network.protocol"] for e in evs)
    assert protocols == {"modbus", "s7comm", "opcua"}
    ids = [a.id for a in labels.attacks]
    assert len(ids) == len(set(ids))


def test_clean_test_split_raises_nothing(result: tuple[Score, dict]) -> None:
    scored, _ = result
    assert [
        (a["rule.name"], a["source.ip"], a["destination.ip"]) for a in scored.clean_alerts
    ] == []


def test_every_attack_is_detected_with_its_techniques(result: tuple[Score, dict]) -> None:
    scored, _ = result
    missed = {
        r.attack.id: (r.detected, r.missing) for r in scored.attacks if not r.detected or r.missing
    }
    assert missed == {}
    assert scored.detected == len(scored.attacks)


def test_precision_on_the_attack_splits(result: tuple[Score, dict]) -> None:
    scored, _ = result
    false = [
        (a["rule.name"], a["source.ip"], a["destination.ip"], a["@timestamp"])
        for a in scored.false_alerts
    ]
    assert scored.precision >= 0.9, false


def test_each_attack_is_a_handful_of_alerts(result: tuple[Score, dict]) -> None:
    scored, _ = result
    volume = {r.attack.id: r.alerts for r in scored.attacks}
    assert all(1 <= n <= MAX_ALERTS_PER_ATTACK for n in volume.values()), volume
    # repeats are folded into alerts with a count, not dropped
    assert sum(r.matches for r in scored.attacks) > sum(volume.values())


def test_attribution_needs_attacker_target_and_window() -> None:
    labels = load_labels(LABELS)
    attack = labels.attacks[0]
    alert = {
        "source.ip": attack.attacker,
        "destination.ip": attack.target,
        "@timestamp": "1970-01-01T00:00:00.000000Z",
    }
    assert attribute(alert, [attack]) is None  # outside the window
    from detectors.baseline.model import iso

    alert["@timestamp"] = iso(attack.start + 1)
    assert attribute(alert, [attack]) is attack
    assert attribute(dict(alert, **{"destination.ip": "192.0.2.1"}), [attack]) is None


def test_bad_labels_file_is_one_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "labels.json"
    bad.write_text('{"format": "icsmon-attack-labels", "attacks": [{"id": "x"}]}')
    with pytest.raises(LabelsError, match=r"labels.json: attacks\[0\]"):
        load_labels(bad)
    with pytest.raises(LabelsError, match="cannot read"):
        load_labels(tmp_path / "missing.json")
    assert (PLANT / "make_captures.py").is_file()


def test_training_baseline_golden(update_golden: bool) -> None:
    """The baseline learned from train.pcap, as reviewed: a change in learning shows as a diff
    of pcaps/plant/train.baseline.json (regenerate with ICSMON_UPDATE_GOLDEN=1). `icsmon
    baseline learn pcaps/plant/train.pcap -o FILE` gives the same apart from window.sources."""
    from tests.support.plant import trained

    golden = PLANT / "train.baseline.json"
    text = trained().to_json()
    if update_golden:
        golden.write_text(text, encoding="utf-8")
    assert golden.is_file(), "regenerate with ICSMON_UPDATE_GOLDEN=1"
    assert golden.read_text(encoding="utf-8") == text
