"""The response policy file: grading levels and their rules, the reporting clock, report
fields, notices, campaigns and warning colours, all as data (default_policy.yaml documents
the format).

The thresholds in force change (and some are not verified), so nothing here is hard-coded:
:func:`load_policy` validates a file and every problem is one :class:`PolicyError` naming the
file and the entry; :meth:`Policy.grade` evaluates the levels in order and returns the rule
that decided, with its conditions, so the grade can be explained.
"""

from __future__ import annotations

import ipaddress
import operator
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

DEFAULT_POLICY = Path(__file__).resolve().parent / "default_policy.yaml"
REPORT_KINDS = ("first", "escalation", "follow-up", "final")
INDICATOR_KINDS = ("source-ip", "write-pattern", "technique-sequence", "rule")
_TEST = re.compile(r"^\s*(>=|<=|==|!=|>|<)\s*(\S+)\s*$")
_OPS = {
    ">=": operator.ge,
    "<=": operator.le,
    ">": operator.gt,
    "<": operator.lt,
    "==": operator.eq,
    "!=": operator.ne,
}


class PolicyError(ValueError):
    """A policy file that cannot be used; the message names the file and the entry."""


@dataclass(slots=True, frozen=True)
class Condition:
    fact: str
    op: str  # one of _OPS
    value: Any  # number, bool or (for ``level``) a level id

    def describe(self) -> str:
        return f"{self.fact} {self.op} {self.value}"


@dataclass(slots=True, frozen=True)
class Rule:
    id: str
    conditions: tuple[Condition, ...]
    source: str
    verified: bool


@dataclass(slots=True, frozen=True)
class Level:
    id: str
    zh: str
    en: str
    colour: str
    rules: tuple[Rule, ...]


@dataclass(slots=True, frozen=True)
class Deadline:
    id: str
    report: str
    minutes: float
    conditions: tuple[Condition, ...]
    en: str
    zh: str
    verified: bool


@dataclass(slots=True, frozen=True)
class ReportField:
    id: str
    first: bool
    final: bool
    en: str
    zh: str


@dataclass(slots=True, frozen=True)
class GroupingRule:
    id: str
    by: tuple[str, ...]
    window_s: float
    min_alerts: int
    min_severity: int


@dataclass(slots=True, frozen=True)
class Indicator:
    kind: str
    fields: tuple[str, ...] = ()
    min_length: int = 3


@dataclass(slots=True)
class Policy:
    name: str
    source: str
    facts: dict[str, dict[str, Any]]
    cii_min_criticality: int
    grade_by_criticality: dict[int, int]
    levels: list[Level]
    report_from_level: str
    warn_at: list[float]
    deadlines: list[Deadline]
    final_working_days: int
    final_verified: bool
    fields: list[ReportField]
    grouping: list[GroupingRule]
    notice_working_days: int
    escalate_after_working_days: int
    verify_quiet_s: float
    verify_min_events: int
    verify_finding_quiet_s: float
    campaign_min_enterprises: int
    campaign_window_s: float
    campaign_min_severity: int
    internal_networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network]
    indicators: list[Indicator]
    allowlist: list[dict[str, str]]
    warning_levels: list[dict[str, str]]
    raw: dict[str, Any] = field(default_factory=dict, repr=False)
    # subjects whose notices verify themselves when the telemetry confirms the fix
    verify_auto: tuple[str, ...] = ("finding", "advisory")

    # -- levels ------------------------------------------------------------------------

    def level(self, level_id: str) -> Level:
        for lv in self.levels:
            if lv.id == level_id:
                return lv
        raise KeyError(level_id)

    def rank(self, level_id: str) -> int:
        """0 for the most severe level; larger is less severe."""
        return [lv.id for lv in self.levels].index(level_id)

    def holds(self, cond: Condition, facts: dict[str, Any], level: str | None = None) -> bool:
        if cond.fact == "level":
            if level is None:
                return False
            # ">= major" means at least as severe as major: a smaller or equal rank.
            have, want = -self.rank(level), -self.rank(str(cond.value))
            return bool(_OPS[cond.op](have, want))
        value = facts.get(cond.fact)
        if value is None:
            return False
        try:
            return bool(_OPS[cond.op](value, cond.value))
        except TypeError:
            return False

    def grade(self, facts: dict[str, Any]) -> dict[str, Any]:
        """The first level (most severe first) with a rule whose conditions all hold."""
        for lv in self.levels:
            for rule in lv.rules:
                if all(self.holds(c, facts) for c in rule.conditions):
                    return {
                        "level": lv.id,
                        "zh": lv.zh,
                        "en": lv.en,
                        "colour": lv.colour,
                        "rule": rule.id,
                        "source": rule.source,
                        "verified": rule.verified,
                        "conditions": [
                            {"test": c.describe(), "fact": c.fact, "value": facts.get(c.fact)}
                            for c in rule.conditions
                        ],
                        "policy": self.name,
                    }
        raise PolicyError(
            f"{self.source}: no level applies (the last level needs a rule without conditions)"
        )

    def registry_facts(
        self, criticalities: list[int], grades: list[int | None] | None = None
    ) -> dict[str, Any]:
        """Facts the registry gives: the most critical affected site decides; the enterprise
        grade is the registered one (the classification guide's 1-3) where the registry has
        it, else derived from criticality (``enterprise_grade_by_criticality``)."""
        top = max(criticalities, default=0)
        registered = [g for g in grades or [] if g]
        derived = self.grade_by_criticality.get(top, 0) if top else 0
        return {
            "critical_infrastructure": top >= self.cii_min_criticality,
            "enterprise_grade": max(registered) if registered else derived,
        }

    def reportable(self, level_id: str) -> bool:
        return self.rank(level_id) <= self.rank(self.report_from_level)

    def required_fields(self, kind: str) -> list[str]:
        """Fields a report of ``kind`` needs before it can be submitted."""
        return [f.id for f in self.fields if (f.final if kind == "final" else f.first)]

    def to_json(self) -> dict[str, Any]:
        """The policy as served to the dashboard (labels, levels, deadlines, fields)."""
        return {
            "name": self.name,
            "facts": self.facts,
            "levels": [
                {
                    "id": lv.id,
                    "zh": lv.zh,
                    "en": lv.en,
                    "colour": lv.colour,
                    "rules": [
                        {
                            "id": r.id,
                            "when": [c.describe() for c in r.conditions],
                            "source": r.source,
                            "verified": r.verified,
                        }
                        for r in lv.rules
                    ],
                }
                for lv in self.levels
            ],
            "reporting": {
                "report_from_level": self.report_from_level,
                "warn_at": self.warn_at,
                "deadlines": [
                    {
                        "id": d.id,
                        "report": d.report,
                        "minutes": d.minutes,
                        "when": [c.describe() for c in d.conditions],
                        "en": d.en,
                        "zh": d.zh,
                        "verified": d.verified,
                    }
                    for d in self.deadlines
                ],
                "final_report": {
                    "working_days": self.final_working_days,
                    "verified": self.final_verified,
                },
                "fields": [
                    {"id": f.id, "first": f.first, "final": f.final, "en": f.en, "zh": f.zh}
                    for f in self.fields
                ],
            },
            "notices": {
                "default_working_days": self.notice_working_days,
                "escalate_to_province_after_working_days": self.escalate_after_working_days,
            },
            "campaigns": {
                "min_enterprises": self.campaign_min_enterprises,
                "window_hours": self.campaign_window_s / 3600,
                "indicators": [i.kind for i in self.indicators],
            },
            "warning_levels": self.warning_levels,
        }


# -- loading -------------------------------------------------------------------------------


def _map(parent: dict[str, Any], key: str, where: str, required: bool = True) -> dict[str, Any]:
    value = parent.get(key)
    if value is None and not required:
        return {}
    if not isinstance(value, dict):
        raise PolicyError(f"{where}: '{key}' must be a mapping")
    return value


def _list(parent: dict[str, Any], key: str, where: str, required: bool = True) -> list[Any]:
    value = parent.get(key)
    if value is None and not required:
        return []
    if not isinstance(value, list):
        raise PolicyError(f"{where}: '{key}' must be a list")
    return value


def _num(value: Any, where: str, minimum: float = 0) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < minimum:
        raise PolicyError(f"{where}: expected a number >= {minimum:g}, got {value!r}")
    return float(value)


def _int(value: Any, where: str, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise PolicyError(f"{where}: expected an integer >= {minimum}, got {value!r}")
    return value


def _str(entry: dict[str, Any], key: str, where: str, default: str | None = None) -> str:
    value = entry.get(key, default)
    if not isinstance(value, str) or (default is None and not value):
        raise PolicyError(f"{where}: '{key}' must be text")
    return value


def _conditions(
    when: Any, where: str, facts: dict[str, Any], level_ids: list[str] | None
) -> tuple[Condition, ...]:
    if when is None:
        return ()
    if not isinstance(when, dict):
        raise PolicyError(f"{where}: 'when' must be a mapping of fact -> test")
    out = []
    for fact, test in when.items():
        if fact == "level":
            if level_ids is None:
                raise PolicyError(f"{where}: a level cannot depend on the level")
            m = _TEST.match(str(test))
            if not m or m.group(2) not in level_ids:
                raise PolicyError(
                    f"{where}: level test {test!r} must be like '>= major' with "
                    f"one of {', '.join(level_ids)}"
                )
            out.append(Condition("level", m.group(1), m.group(2)))
            continue
        if fact not in facts:
            raise PolicyError(f"{where}: unknown fact {fact!r} (declare it under 'facts')")
        if isinstance(test, bool):
            out.append(Condition(fact, "==", test))
            continue
        if isinstance(test, int | float):
            out.append(Condition(fact, "==", float(test)))
            continue
        m = _TEST.match(str(test))
        if not m:
            raise PolicyError(f"{where}: test {test!r} for {fact!r} must be like '>= 6'")
        try:
            number = float(m.group(2))
        except ValueError:
            raise PolicyError(f"{where}: {test!r}: {m.group(2)!r} is not a number") from None
        out.append(Condition(fact, m.group(1), number))
    return tuple(out)


def parse_policy(data: Any, source: str = "<policy>") -> Policy:
    if not isinstance(data, dict):
        raise PolicyError(f"{source}: expected a mapping (see response/default_policy.yaml)")
    facts = _map(data, "facts", source)
    for name, spec in facts.items():
        if not isinstance(spec, dict) or spec.get("type") not in ("number", "boolean"):
            raise PolicyError(f"{source}: facts.{name}: needs type: number or boolean")
    reg = _map(data, "registry", source, required=False)
    cii_min = _int(
        reg.get("critical_infrastructure_min_criticality", 5),
        f"{source}: registry.critical_infrastructure_min_criticality",
        1,
    )
    grades_raw = reg.get("enterprise_grade_by_criticality", {1: 1, 2: 1, 3: 2, 4: 3, 5: 3})
    if not isinstance(grades_raw, dict):
        raise PolicyError(f"{source}: registry.enterprise_grade_by_criticality must be a mapping")
    grades = {
        _int(k, f"{source}: registry criticality", 1): _int(v, f"{source}: grade", 1)
        for k, v in grades_raw.items()
    }

    levels: list[Level] = []
    raw_levels = _list(data, "levels", source)
    level_ids = [lv.get("id") for lv in raw_levels if isinstance(lv, dict)]
    if not raw_levels or len(set(level_ids)) != len(raw_levels):
        raise PolicyError(f"{source}: 'levels' must be a non-empty list with distinct ids")
    for i, lv in enumerate(raw_levels):
        lw = f"{source}: levels[{i}]"
        rules = []
        for j, r in enumerate(_list(lv, "rules", lw)):
            rw = f"{lw}.rules[{j}]"
            if not isinstance(r, dict):
                raise PolicyError(f"{rw}: must be a mapping")
            rules.append(
                Rule(
                    id=_str(r, "id", rw),
                    conditions=_conditions(r.get("when"), rw, facts, None),
                    source=_str(r, "source", rw, default=""),
                    verified=bool(r.get("verified", False)),
                )
            )
        if not rules:
            raise PolicyError(f"{lw}: a level needs at least one rule")
        levels.append(
            Level(
                id=_str(lv, "id", lw),
                zh=_str(lv, "zh", lw, default=""),
                en=_str(lv, "en", lw, default=lv["id"]),
                colour=_str(lv, "colour", lw, default="blue"),
                rules=tuple(rules),
            )
        )
    if levels[-1].rules[-1].conditions:
        raise PolicyError(
            f"{source}: the last level's last rule must have no conditions "
            "(every incident gets a level)"
        )

    rep = _map(data, "reporting", source)
    report_from = _str(rep, "report_from_level", f"{source}: reporting")
    if report_from not in level_ids:
        raise PolicyError(f"{source}: reporting.report_from_level: unknown level {report_from!r}")
    warn_at = [_num(x, f"{source}: reporting.warn_at") for x in _list(rep, "warn_at", source)]
    if any(not 0 < x < 1 for x in warn_at):
        raise PolicyError(f"{source}: reporting.warn_at: fractions between 0 and 1")
    deadlines = []
    for i, d in enumerate(_list(rep, "deadlines", f"{source}: reporting")):
        dw = f"{source}: reporting.deadlines[{i}]"
        if not isinstance(d, dict):
            raise PolicyError(f"{dw}: must be a mapping")
        kind = _str(d, "report", dw)
        if kind not in REPORT_KINDS:
            raise PolicyError(f"{dw}: report must be one of {', '.join(REPORT_KINDS)}")
        deadlines.append(
            Deadline(
                id=_str(d, "id", dw),
                report=kind,
                minutes=_num(d.get("minutes"), dw, 1),
                conditions=_conditions(d.get("when"), dw, facts, level_ids),
                en=_str(d, "en", dw, default=""),
                zh=_str(d, "zh", dw, default=""),
                verified=bool(d.get("verified", False)),
            )
        )
    final = _map(rep, "final_report", f"{source}: reporting", required=False)
    fields = []
    for i, f in enumerate(_list(rep, "fields", f"{source}: reporting")):
        fw = f"{source}: reporting.fields[{i}]"
        if not isinstance(f, dict):
            raise PolicyError(f"{fw}: must be a mapping")
        fields.append(
            ReportField(
                id=_str(f, "id", fw),
                first=bool(f.get("first", False)),
                final=bool(f.get("first", False) or f.get("final", False)),
                en=_str(f, "en", fw, default=f["id"]),
                zh=_str(f, "zh", fw, default=""),
            )
        )
    if not any(f.first for f in fields):
        raise PolicyError(f"{source}: reporting.fields: mark the first report's items first: true")

    inc = _map(data, "incidents", source, required=False)
    grouping = []
    for i, g in enumerate(_list(inc, "grouping", f"{source}: incidents", required=False)):
        gw = f"{source}: incidents.grouping[{i}]"
        if not isinstance(g, dict):
            raise PolicyError(f"{gw}: must be a mapping")
        by = _list(g, "by", gw)
        if not by or not all(isinstance(x, str) for x in by):
            raise PolicyError(f"{gw}: 'by' must list alert fields")
        grouping.append(
            GroupingRule(
                id=_str(g, "id", gw),
                by=tuple(by),
                window_s=_num(g.get("window_hours", 6), gw, 0.01) * 3600,
                min_alerts=_int(g.get("min_alerts", 2), gw, 1),
                min_severity=_int(g.get("min_severity", 0), gw, 0),
            )
        )

    notices = _map(data, "notices", source, required=False)
    verification = _map(notices, "verification", f"{source}: notices", required=False)
    auto = verification.get("auto", ["finding", "advisory"])
    if not isinstance(auto, list) or not set(auto) <= {"incident", "finding", "advisory"}:
        raise PolicyError(
            f"{source}: notices.verification.auto: a list of incident, finding, advisory"
        )
    camp = _map(data, "campaigns", source, required=False)
    networks = []
    for net in _list(camp, "internal_networks", f"{source}: campaigns", required=False):
        try:
            networks.append(ipaddress.ip_network(str(net), strict=False))
        except ValueError:
            raise PolicyError(
                f"{source}: campaigns.internal_networks: bad network {net!r}"
            ) from None
    indicators = []
    for i, ind in enumerate(_list(camp, "indicators", f"{source}: campaigns", required=False)):
        iw = f"{source}: campaigns.indicators[{i}]"
        if not isinstance(ind, dict) or ind.get("kind") not in INDICATOR_KINDS:
            raise PolicyError(f"{iw}: kind must be one of {', '.join(INDICATOR_KINDS)}")
        flds = ind.get("fields") or []
        if ind["kind"] == "write-pattern" and not flds:
            raise PolicyError(f"{iw}: write-pattern needs 'fields'")
        indicators.append(
            Indicator(
                kind=ind["kind"],
                fields=tuple(str(x) for x in flds),
                min_length=_int(ind.get("min_length", 3), iw, 2),
            )
        )
    allow = []
    for i, a in enumerate(_list(camp, "allowlist", f"{source}: campaigns", required=False)):
        aw = f"{source}: campaigns.allowlist[{i}]"
        value = a.get("value") if isinstance(a, dict) else None
        try:
            ipaddress.ip_network(str(value), strict=False)
        except ValueError:
            raise PolicyError(f"{aw}: 'value' must be an address or network") from None
        allow.append({"value": str(value), "reason": str(a.get("reason", ""))})
    warn = _map(data, "warnings", source, required=False)
    warning_levels = [
        {
            "id": _str(w, "id", f"{source}: warnings"),
            "zh": str(w.get("zh", "")),
            "en": str(w.get("en", w.get("id"))),
        }
        for w in _list(warn, "levels", f"{source}: warnings", required=False)
        if isinstance(w, dict)
    ] or [
        {"id": c, "zh": zh, "en": c.title()}
        for c, zh in (("red", "红色"), ("orange", "橙色"), ("yellow", "黄色"), ("blue", "蓝色"))
    ]

    return Policy(
        name=str(data.get("name") or source),
        source=source,
        facts=facts,
        cii_min_criticality=cii_min,
        grade_by_criticality=grades,
        levels=levels,
        report_from_level=report_from,
        warn_at=sorted(warn_at),
        deadlines=deadlines,
        final_working_days=_int(final.get("working_days", 5), f"{source}: final_report", 1),
        final_verified=bool(final.get("verified", False)),
        fields=fields,
        grouping=grouping,
        notice_working_days=_int(
            notices.get("default_working_days", 10), f"{source}: notices.default_working_days", 1
        ),
        escalate_after_working_days=_int(
            notices.get("escalate_to_province_after_working_days", 3),
            f"{source}: notices.escalate_to_province_after_working_days",
            0,
        ),
        verify_quiet_s=_num(verification.get("quiet_hours", 0), f"{source}: verification") * 3600,
        verify_min_events=_int(verification.get("min_events", 1), f"{source}: verification", 0),
        verify_finding_quiet_s=_num(
            verification.get("finding_quiet_minutes", 10),
            f"{source}: verification.finding_quiet_minutes",
        )
        * 60,
        campaign_min_enterprises=_int(
            camp.get("min_enterprises", 3), f"{source}: campaigns.min_enterprises", 2
        ),
        campaign_window_s=_num(camp.get("window_hours", 6), f"{source}: campaigns", 0.01) * 3600,
        campaign_min_severity=_int(camp.get("min_severity", 0), f"{source}: campaigns", 0),
        internal_networks=networks,
        indicators=indicators,
        allowlist=allow,
        warning_levels=warning_levels,
        raw=data,
        verify_auto=tuple(auto),
    )


def load_policy(path: str | Path | None = None) -> Policy:
    """Read and validate a policy file (default: the one shipped with icsmon)."""
    path = Path(path) if path is not None else DEFAULT_POLICY
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PolicyError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise PolicyError(f"{path}: not UTF-8 text: {exc}") from exc
    try:
        data = yaml.safe_load(text)
    except (yaml.YAMLError, ValueError) as exc:  # ValueError: a date such as 2026-13-01
        raise PolicyError(f"{path}: not valid YAML: {' '.join(str(exc).split())}") from exc
    return parse_policy(data, str(path))
