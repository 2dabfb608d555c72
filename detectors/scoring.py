"""Detection quality against labelled captures: which alerts belong to which attack, which
attacks were detected with their techniques, false alerts, precision.

A labels file (``pcaps/plant/labels.json``, written by the script that records the captures)::

    {"format": "icsmon-attack-labels", "version": 1,
     "learn": ["train.pcap"], "clean": ["test.pcap"],
     "attacks": [{"id", "capture", "start", "end", "attacker", "target", "techniques": [...],
                  "description"}, ...]}

``start``/``end`` are ISO 8601 UTC times of the attack's first and last request; ``attacker``
is the host whose traffic shows the attack (for a blocked poller, the poller), ``target`` the
host it is aimed at.

Attribution: an alert of a capture belongs to an attack of that capture when both the
attacker and the target are among the alert's ``source.ip`` / ``destination.ip`` and the
alert's time (``event.start``, else ``@timestamp``) lies within the attack's window, from
``before`` seconds ahead of its start to ``after`` seconds past its end (detection is late by
design for silence: a polling series is stopped only after several of its periods). An alert
that belongs to no attack is a false alert. Precision is the alerts that belong to an attack
over all alerts of the attack captures; an attack is detected when at least one alert
belongs to it, and detected *with its techniques* when the union of those alerts'
``threat.technique.id`` holds every labelled technique.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from detectors.baseline.features import event_time

FORMAT = "icsmon-attack-labels"
BEFORE = 5.0  # seconds an alert may precede an attack's first request (clock skew, dedup start)
AFTER = 60.0  # seconds an alert may follow its last one (silence is reported periods later)


class LabelsError(ValueError):
    """A labels file that cannot be used; the message names the file."""


@dataclass(frozen=True, slots=True)
class Attack:
    id: str
    capture: str
    start: float
    end: float
    attacker: str
    target: str
    techniques: tuple[str, ...]
    description: str = ""


@dataclass(frozen=True, slots=True)
class Labels:
    learn: tuple[str, ...]
    clean: tuple[str, ...]
    attacks: tuple[Attack, ...]

    @property
    def attack_captures(self) -> list[str]:
        return sorted({a.capture for a in self.attacks})


def load_labels(path: str | Path) -> Labels:
    name = str(path)
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise LabelsError(f"{name}: cannot read the labels file: {exc.strerror or exc}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise LabelsError(f"{name}: not a JSON labels file: {exc}") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise LabelsError(f"{name}: 'format' is not {FORMAT!r}")
    attacks = []
    for i, entry in enumerate(doc.get("attacks") or []):
        try:
            start, end = (
                event_time({"@timestamp": entry["start"]}),
                event_time({"@timestamp": entry["end"]}),
            )
            if start is None or end is None or end < start:
                raise ValueError("start and end must be ISO times, start first")
            attacks.append(
                Attack(
                    str(entry["id"]),
                    str(entry["capture"]),
                    start,
                    end,
                    str(entry["attacker"]),
                    str(entry["target"]),
                    tuple(str(t) for t in entry["techniques"]),
                    str(entry.get("description", "")),
                )
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise LabelsError(f"{name}: attacks[{i}]: {exc}") from None
    return Labels(tuple(doc.get("learn") or ()), tuple(doc.get("clean") or ()), tuple(attacks))


def alert_time(alert: dict[str, Any]) -> float | None:
    for key in ("event.start", "@timestamp"):
        ts = event_time({"@timestamp": alert.get(key)})
        if ts is not None:
            return ts
    return None


def attribute(
    alert: dict[str, Any],
    attacks: list[Attack] | tuple[Attack, ...],
    *,
    before: float = BEFORE,
    after: float = AFTER,
) -> Attack | None:
    """The attack (of the alert's capture) an alert belongs to, or None: a false alert."""
    hosts = {alert.get("source.ip"), alert.get("destination.ip")}
    ts = alert_time(alert)
    if ts is None:
        return None
    best: tuple[float, Attack] | None = None
    for attack in attacks:
        if attack.attacker not in hosts or attack.target not in hosts:
            continue
        if not attack.start - before <= ts <= attack.end + after:
            continue
        distance = (
            0.0
            if attack.start <= ts <= attack.end
            else min(abs(ts - attack.start), abs(ts - attack.end))
        )
        if best is None or distance < best[0]:
            best = (distance, attack)
    return best[1] if best else None


@dataclass
class AttackResult:
    attack: Attack
    alerts: int = 0
    by_rule: Counter = field(default_factory=Counter)  # rule name -> alerts
    matches: int = 0  # sum of icsmon.alert.count: the deviations or matches behind the alerts
    techniques: set[str] = field(default_factory=set)

    @property
    def detected(self) -> bool:
        return self.alerts > 0

    @property
    def missing(self) -> list[str]:
        return [t for t in self.attack.techniques if t not in self.techniques]


@dataclass
class Score:
    attacks: list[AttackResult]
    clean_alerts: list[dict[str, Any]]  # alerts on the clean captures: all false
    attack_alerts: int  # alerts on the attack captures
    false_alerts: list[dict[str, Any]]  # alerts on the attack captures that belong to no attack

    @property
    def precision(self) -> float:
        if not self.attack_alerts:
            return 0.0
        return (self.attack_alerts - len(self.false_alerts)) / self.attack_alerts

    @property
    def detected(self) -> int:
        return sum(1 for r in self.attacks if r.detected and not r.missing)

    def to_dict(self) -> dict[str, Any]:
        return {
            "attacks": [
                {
                    "id": r.attack.id,
                    "capture": r.attack.capture,
                    "attacker": r.attack.attacker,
                    "target": r.attack.target,
                    "techniques": list(r.attack.techniques),
                    "detected": r.detected,
                    "techniques_seen": sorted(r.techniques),
                    "missing": r.missing,
                    "alerts": r.alerts,
                    "matches": r.matches,
                    "by_rule": dict(sorted(r.by_rule.items())),
                }
                for r in self.attacks
            ],
            "clean_alerts": len(self.clean_alerts),
            "attack_alerts": self.attack_alerts,
            "false_alerts": len(self.false_alerts),
            "precision": round(self.precision, 4),
            "detected_with_techniques": self.detected,
        }


def score(
    labels: Labels,
    alerts: dict[str, list[dict[str, Any]]],
    *,
    before: float = BEFORE,
    after: float = AFTER,
) -> Score:
    """Score flat alerts per capture name (``alerts["attack_recon.pcap"]``)."""
    results = {a.id: AttackResult(a) for a in labels.attacks}
    false: list[dict[str, Any]] = []
    total = 0
    for capture in labels.attack_captures:
        attacks = [a for a in labels.attacks if a.capture == capture]
        for alert in alerts.get(capture, []):
            total += 1
            attack = attribute(alert, attacks, before=before, after=after)
            if attack is None:
                false.append(alert)
                continue
            result = results[attack.id]
            result.alerts += 1
            result.by_rule[str(alert.get("rule.name") or alert.get("rule.id"))] += 1
            count = alert.get("icsmon.alert.count")
            result.matches += count if isinstance(count, int) else 1
            result.techniques.update(alert.get("threat.technique.id") or ())
    clean = [a for capture in labels.clean for a in alerts.get(capture, [])]
    return Score(list(results.values()), clean, total, false)
