"""icsmon's rule checks as pySigma validators: one mechanism and one configuration for
``icsmon rules check`` and ``sigma check``.

Each check is a subclass of pySigma's ``SigmaRuleValidator``; the namespace plugin
``sigma.validators.icsmon`` (``sigma/validators/icsmon/`` in this repository, installed with
icsmon) makes ``sigma check`` discover them beside pySigma's own, and both commands read the
same configuration, ``detectors/sigma/sigma-validation.yml`` (which validators run, which are
off and why, per-rule exclusions with their reason).

- ``ics_logsource``: ``product: ics`` with a service icsmon decodes (``detectors/sigma/fields.py``);
- ``ics_field``: every field a rule or correlation names is one the service's events carry
  (the field schema each dissector declares): a typo would make the rule silently dead;
- ``ics_attack_tag``: ``attack.*`` tags are ATT&CK for ICS techniques or tactics
  (``detectors/attack_ics.py``; pySigma's ``attacktag`` knows Enterprise ATT&CK only and
  downloads it);
- ``ics_technique_tag``: a rule that alerts (not only feeding a correlation) names at least
  one ATT&CK for ICS technique, which alerts carry as ``threat.technique.id``.

Field names are checked after the pipeline's aliases (``detectors/pipelines/ics_ecs.yml``,
its ``field_name_mapping``), so a rule written with ``id.orig_h`` passes as the engine runs it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, cast

import yaml
from sigma.correlations import SigmaCorrelationRule
from sigma.rule import SigmaDetection, SigmaDetectionItem, SigmaLogSource, SigmaRule
from sigma.types import SigmaFieldReference
from sigma.validation import SigmaValidator
from sigma.validators.base import (
    SigmaRuleValidator,
    SigmaValidationIssue,
    SigmaValidationIssueSeverity,
)
from sigma.validators.core import validator_classname_to_identifier

from detectors.attack_ics import TECHNIQUES, tactic_from_tag
from detectors.sigma.fields import SERVICES, known_fields

if TYPE_CHECKING:
    from detectors.sigma.loader import Problem

PRODUCT = "ics"


def logsource_problem(logsource: SigmaLogSource) -> tuple[str, str] | None:
    """Why icsmon cannot run a rule of this logsource (message, the rule key it concerns),
    or None. The loader refuses such a rule with the same words."""
    if logsource.product != PRODUCT or logsource.category is not None:
        return (
            f"logsource must be product: {PRODUCT} with an ICS service "
            f"(got product={logsource.product} category={logsource.category})",
            "logsource",
        )
    if logsource.service is not None and logsource.service not in SERVICES:
        return (
            f"unknown service {logsource.service!r} (one of {', '.join(SERVICES)})",
            "service",
        )
    return None


@cache
def field_aliases() -> dict[str, str]:
    """The pipeline's field name aliases (``id.orig_h`` -> ``source.ip``)."""
    from detectors.sigma.loader import PIPELINE_PATH  # it imports this module

    text = PIPELINE_PATH.read_text(encoding="utf-8")
    out: dict[str, str] = {}
    for step in yaml.safe_load(text).get("transformations", []):
        if step.get("type") == "field_name_mapping":
            for name, target in (step.get("mapping") or {}).items():
                if isinstance(target, str):
                    out[str(name)] = target
    return out


def _detection_fields(detection: SigmaDetection) -> Iterator[str]:
    for item in detection.detection_items:
        if isinstance(item, SigmaDetection):
            yield from _detection_fields(item)
            continue
        if isinstance(item, SigmaDetectionItem):
            if item.field is not None:
                yield item.field
            for value in item.value:
                if isinstance(value, SigmaFieldReference):
                    yield value.field


def rule_fields(rule: SigmaRule) -> set[str]:
    """The event fields a rule names, as the engine sees them (aliases resolved)."""
    aliases = field_aliases()
    return {
        aliases.get(name, name)
        for detection in rule.detection.detections.values()
        for name in _detection_fields(detection)
    }


def _service(rule: SigmaRule | SigmaCorrelationRule) -> str | None:
    if isinstance(rule, SigmaRule):
        return rule.logsource.service
    services = set()
    for ref in rule.rules or []:
        target = getattr(ref, "rule", None)
        if isinstance(target, SigmaRule):
            services.add(target.logsource.service)
    return services.pop() if len(services) == 1 else None


# --- issues -------------------------------------------------------------------------------
# ``message`` is icsmon's line for the issue; ``hint`` the rule key it concerns (its line).


class IcsIssue(SigmaValidationIssue):
    """An issue found by one of icsmon's validators: the rule does not run as written."""

    severity: ClassVar[SigmaValidationIssueSeverity] = SigmaValidationIssueSeverity.HIGH

    @property
    def message(self) -> str:
        raise NotImplementedError

    @property
    def hint(self) -> str:
        return "detection"


@dataclass
class IcsLogsourceIssue(IcsIssue):
    description: ClassVar[str] = "icsmon runs rules of logsource product: ics and an ICS service"
    reason: str
    key: str

    @property
    def message(self) -> str:
        return self.reason

    @property
    def hint(self) -> str:
        return self.key


@dataclass
class IcsUnknownFieldIssue(IcsIssue):
    description: ClassVar[str] = "A field no icsmon event of the rule's service carries"
    field: str
    service: str

    @property
    def message(self) -> str:
        if self.service == "correlation":
            return f"field {self.field!r} is not a known event field"
        return (
            f"field {self.field!r} is not emitted for service "
            f"{self.service} (see detectors/sigma/fields.py)"
        )

    @property
    def hint(self) -> str:
        return self.field


@dataclass
class IcsAttackTagIssue(IcsIssue):
    description: ClassVar[str] = "An attack tag that is not an ATT&CK for ICS technique or tactic"
    tag: str

    @property
    def message(self) -> str:
        if _is_technique(self.tag):
            return f"attack.{self.tag}: not a technique of ATT&CK for ICS (see detectors/attack_ics.py)"
        return f"attack.{self.tag}: not an ATT&CK for ICS tactic or technique"

    @property
    def hint(self) -> str:
        return "tags"


@dataclass
class IcsTechniqueTagIssue(IcsIssue):  # the rule is all it concerns
    description: ClassVar[str] = "An alerting rule without an ATT&CK for ICS technique tag"

    @property
    def message(self) -> str:
        return "no attack.t0xxx technique tag"

    @property
    def hint(self) -> str:
        return "tags"


# --- validators ---------------------------------------------------------------------------


def _is_technique(name: str) -> bool:
    return len(name) == 5 and name[0] == "t" and name[1:].isdigit()


def _technique_tags(rule: SigmaRule | SigmaCorrelationRule) -> Iterator[str]:
    for tag in rule.tags:
        if tag.namespace == "attack" and _is_technique(tag.name.lower()):
            yield tag.name.lower()


class IcsLogsourceValidator(SigmaRuleValidator):
    """Rules must be of logsource ``product: ics`` with a service icsmon decodes."""

    def validate(self, rule: SigmaRule | SigmaCorrelationRule) -> list[SigmaValidationIssue]:
        if not isinstance(rule, SigmaRule):
            return []
        problem = logsource_problem(rule.logsource)
        return [] if problem is None else [IcsLogsourceIssue([rule], *problem)]


class IcsFieldValidator(SigmaRuleValidator):
    """Every field a rule (or a correlation's group-by and value field) names is carried by
    the events of its service."""

    def validate(self, rule: SigmaRule | SigmaCorrelationRule) -> list[SigmaValidationIssue]:
        if isinstance(rule, SigmaRule):
            if logsource_problem(rule.logsource) is not None:
                return []  # ics_logsource says why; its fields mean nothing to icsmon
            known = known_fields(rule.logsource.service)
            service = rule.logsource.service or "any"
            names = sorted(rule_fields(rule))
        else:
            known = known_fields(_service(rule)) | {a.alias for a in rule.aliases}
            service = "correlation"
            names = list(rule.group_by or [])
            ref = getattr(rule.condition, "fieldref", None)
            names += ref if isinstance(ref, list) else [ref] if ref else []
        issues: list[SigmaValidationIssue] = []
        for name in names:
            if name not in known:
                issues.append(IcsUnknownFieldIssue([rule], name, service))
        return issues


class IcsAttackTagValidator(SigmaRuleValidator):
    """``attack.*`` tags name ATT&CK for ICS techniques or tactics."""

    def validate(self, rule: SigmaRule | SigmaCorrelationRule) -> list[SigmaValidationIssue]:
        issues: list[SigmaValidationIssue] = []
        for tag in rule.tags:
            if tag.namespace != "attack":
                continue
            name = tag.name.lower()
            if _is_technique(name):
                if name.upper() not in TECHNIQUES:
                    issues.append(IcsAttackTagIssue([rule], name))
            elif tactic_from_tag(tag.namespace, tag.name) is None and not name.startswith("ics"):
                issues.append(IcsAttackTagIssue([rule], name))
        return issues


class IcsTechniqueTagValidator(SigmaRuleValidator):
    """A rule that raises alerts names at least one ATT&CK for ICS technique (a rule only
    feeding correlations, without ``generate: true``, need not)."""

    def validate(self, rule: SigmaRule | SigmaCorrelationRule) -> list[SigmaValidationIssue]:
        alerts = isinstance(rule, SigmaCorrelationRule) or getattr(rule, "_output", True)
        if alerts and next(_technique_tags(rule), None) is None:
            return [IcsTechniqueTagIssue([rule])]
        return []


#: icsmon's validators by the identifier pySigma derives from the class name: the names the
#: validation configuration uses (``ics_field`` ...)
VALIDATORS: dict[str, type[SigmaRuleValidator]] = {
    validator_classname_to_identifier(cls.__name__): cls
    for cls in (
        IcsLogsourceValidator,
        IcsFieldValidator,
        IcsAttackTagValidator,
        IcsTechniqueTagValidator,
    )
}


# --- running them -------------------------------------------------------------------------

#: the one validation configuration: ``icsmon rules check`` and
#: ``sigma check -c detectors/sigma/sigma-validation.yml`` both read it
VALIDATION_CONFIG = Path(__file__).resolve().parent / "sigma-validation.yml"

_ISSUE_KEYS = (
    ("tag", "tags"), ("title", "title"), ("identifier", "id"), ("date", "date"),
    ("description", "description"), ("level", "level"), ("status", "status"),
    ("falsepositive", "falsepositives"), ("reference", "references"), ("author", "author"),
    ("logsource", "logsource"), ("condition", "condition"),
)  # fmt: skip


def configured_validator(
    config: Path = VALIDATION_CONFIG, icsmon_only: bool = False
) -> SigmaValidator:
    """The validators ``config`` turns on, with its exclusions and settings: pySigma's
    (found the way ``sigma check`` finds them) and icsmon's (known even where the namespace
    plugin is not installed). ``icsmon_only``: icsmon's alone (a pack already compiled)."""
    from sigma.plugins import InstalledSigmaPlugins

    found = InstalledSigmaPlugins.autodiscover(include_backends=False, include_pipelines=False)
    # (pySigma annotates the discovered validators as instances; they are classes)
    known = cast(dict[str, type[SigmaRuleValidator]], found.validators) | VALIDATORS
    validator = SigmaValidator.from_yaml(config.read_text(encoding="utf-8"), known)
    if icsmon_only:
        mine = tuple(VALIDATORS.values())
        validator.validators = {v for v in validator.validators if isinstance(v, mine)}
    return validator


def check(
    rules: Iterable[SigmaRule | SigmaCorrelationRule],
    config: Path = VALIDATION_CONFIG,
    icsmon_only: bool = False,
) -> list[Problem]:
    """Validate ``rules`` (of one collection: correlations resolved) by the configuration;
    one Problem per issue and rule. icsmon's issues are errors (the rule does not run as
    written), pySigma's warnings (``icsmon rules check --strict``, the default, fails on them
    too)."""
    from detectors.sigma.loader import Problem, locate  # it imports this module

    out: list[Problem] = []
    for issue in configured_validator(config, icsmon_only).validate_rules(
        cast(Iterator[SigmaRule], iter(rules))
    ):
        name = type(issue).__name__
        if isinstance(issue, IcsIssue):
            hint, message, severity = issue.hint, issue.message, "error"
        else:
            hint = next((key for word, key in _ISSUE_KEYS if word in name.lower()), "detection")
            message, severity = f"{name}: {issue.description}", "warning"
        for rule in issue.rules:
            src = rule.source.path if rule.source and rule.source.path else None
            rid = rule.id or rule.name or rule.title
            out.append(
                Problem(str(src or "?"), locate(src, hint), str(rid or ""), message, severity)
            )
    return out
