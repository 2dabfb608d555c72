"""``icsmon rules``: check, list and convert Sigma rule packs.

Wiring only: loading and compiling live in ``detectors.sigma``, conversion in
``detectors.sigma.convert``.
"""

from __future__ import annotations

import enum
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from icsmon.common import ExitCode, fail, note

if TYPE_CHECKING:
    from detectors.sigma.loader import Problem

# detectors.sigma is imported where a command needs it: it loads pySigma, most of the start-up
# time of every icsmon command (this module is imported by all of them)


def unreadable_rule_files(paths: list[Path]) -> list[Problem]:
    """Rule files pySigma cannot even parse (bad YAML, or YAML that is not a mapping): it raises
    on those instead of reporting them, so they are found here first, one Problem per file."""
    import yaml

    from detectors.sigma.loader import Problem, rule_files

    out: list[Problem] = []
    for f in rule_files(p for p in paths if p.exists()):
        try:
            docs = list(yaml.safe_load_all(f.read_text(encoding="utf-8")))
        except (OSError, UnicodeDecodeError) as exc:
            out.append(Problem(str(f), 1, "", f"cannot read the rule file ({exc})"))
            continue
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            line = mark.line + 1 if mark is not None else 1
            what = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            out.append(Problem(str(f), line, "", f"not valid YAML: {what}"))
            continue
        for doc in docs:
            if doc is not None and not isinstance(doc, dict):
                out.append(
                    Problem(
                        str(f),
                        1,
                        "",
                        f"a Sigma rule must be a YAML mapping, not {type(doc).__name__}",
                    )
                )
                break
    return out


app = typer.Typer(
    help="Check, list and convert Sigma rule packs (default: the shipped rules/).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

RulesDir = Annotated[
    Path | None,
    typer.Argument(help="Folder (or file) of Sigma rules; default: the shipped rules/ pack."),
]
SiteConfig = Annotated[
    Path | None,
    typer.Option("--site-config", help="Site YAML with 'placeholders:' host lists."),
]


class Target(enum.StrEnum):
    lucene = "lucene"
    esql = "esql"
    eql = "eql"


class ListFormat(enum.StrEnum):
    table = "table"
    json = "json"


class ConvertFormat(enum.StrEnum):
    plain = "plain"
    json = "json"


def _values(site_config: Path | None) -> dict[str, list[str]]:
    from detectors.sigma.loader import SiteConfigError, resolve_placeholders

    try:
        return resolve_placeholders(site_config)
    except SiteConfigError as exc:
        raise fail(str(exc)) from None


def _where(rules_dir: Path | None) -> Path:
    from detectors.sigma.loader import SHIPPED_RULES

    path = rules_dir or SHIPPED_RULES
    if not path.exists():
        raise fail(f"{path}: no such file or directory")
    return path


def _validation_issues(path: Path, config: Path) -> list[Problem]:
    """The validators the configuration turns on (pySigma's and icsmon's,
    ``detectors.sigma.validators``) over every rule file, as ``sigma check -c`` runs them."""
    from sigma.collection import SigmaCollection

    from detectors.sigma.loader import rule_files
    from detectors.sigma.validators import check as validate

    collection = SigmaCollection.load_ruleset(rule_files([path]), collect_errors=True)
    return validate((r for r in collection.rules if not r.errors), config)


@app.command("check")
def check(
    rules_dir: RulesDir = None,
    site_config: SiteConfig = None,
    strict: Annotated[
        bool, typer.Option("--strict/--lenient", help="Fail on pySigma warnings too.")
    ] = True,
    validation: Annotated[
        Path | None,
        typer.Option(
            "--validation-config",
            help="pySigma validation configuration (validators on and off, per-rule "
            "exclusions), the file `sigma check -c` takes; default: "
            "detectors/sigma/sigma-validation.yml.",
        ),
    ] = None,
) -> None:
    """Validate every rule: it parses and compiles, and passes the validators the validation
    configuration turns on: icsmon's (known fields, ATT&CK for ICS tags, logsource) and
    pySigma's, the same as `sigma check`. One line per problem: FILE:LINE: [RULE ID] message."""
    path = _where(rules_dir)
    from detectors.sigma.validators import VALIDATION_CONFIG

    config = validation or VALIDATION_CONFIG
    if not config.is_file():
        raise fail(f"{config}: no such validation configuration")
    unreadable = unreadable_rule_files([path])
    if unreadable:  # pySigma would stop with a traceback on these: report them alone
        for p in unreadable:
            print(str(p))
        note(f"{len(unreadable)} rule files cannot be parsed")
        raise typer.Exit(ExitCode.FAILED)
    import yaml
    from sigma.exceptions import SigmaError

    from detectors.sigma.loader import load_pack

    pack = load_pack([path], _values(site_config))
    try:
        checked = _validation_issues(path, config)
    except (SigmaError, OSError, yaml.YAMLError) as exc:
        raise fail(f"{config}: {exc}") from None
    # a rule the loader refuses for its logsource is also an ics_logsource issue: once
    problems = sorted(set([*pack.problems, *checked]), key=lambda p: (p.path, p.line, p.message))
    for p in problems:
        print(str(p))
    errors = [p for p in problems if p.severity == "error"]
    warnings = [p for p in problems if p.severity != "error"]
    n = len(pack.rules) + len(pack.correlations)
    note(
        f"{n} rules checked ({len(pack.correlations)} correlations): "
        f"{len(errors)} errors, {len(warnings)} warnings"
    )
    if errors or (strict and warnings):
        raise typer.Exit(ExitCode.FAILED)


@app.command("list")
def list_rules(
    rules_dir: RulesDir = None,
    fmt: Annotated[ListFormat, typer.Option("--format", help="table or json")] = ListFormat.table,
) -> None:
    """List the rules: id, title, level, protocol, ATT&CK for ICS techniques."""
    path = _where(rules_dir)
    from detectors.sigma.loader import load_pack

    pack = load_pack([path], _values(None))
    for p in pack.problems:
        note(str(p))
    rows = []
    for r in pack.rules:
        rows.append(
            {
                "id": r.meta.id,
                "title": r.meta.name,
                "level": r.meta.level,
                "service": r.service or "any",
                "type": "rule" if r.output else "base",
                "techniques": list(r.meta.techniques),
                "path": r.meta.path,
            }
        )
    for c in pack.correlations:
        services = {r.service for r in pack.rules if r.meta.id in c.rules}
        rows.append(
            {
                "id": c.meta.id,
                "title": c.meta.name,
                "level": c.meta.level,
                "service": (services.pop() if len(services) == 1 else None) or "any",
                "type": c.kind,
                "techniques": list(c.meta.techniques),
                "path": c.meta.path,
            }
        )
    rows.sort(key=lambda r: (r["service"], r["path"]))
    if fmt == ListFormat.json:
        for row in rows:
            print(json.dumps(row, ensure_ascii=False))
        return
    table = Table(show_lines=False)
    for col in ("id", "title", "level", "protocol", "type", "techniques"):
        table.add_column(col, overflow="fold")
    for row in rows:
        table.add_row(
            row["id"],
            row["title"],
            row["level"],
            row["service"],
            row["type"],
            ", ".join(row["techniques"]),
        )
    Console(width=200).print(table)
    if pack.problems:
        raise typer.Exit(ExitCode.FAILED)


@app.command("matchers")
def show_matchers(rules_dir: RulesDir = None, site_config: SiteConfig = None) -> None:
    """Print the Python source the engine generates from the rules: one matcher per protocol
    dataset, each after a legend of the rule values bound to its names (rule values are never
    pasted into the source). For reviewing what runs on every event."""
    from detectors.sigma.engine import SigmaEngine

    path = _where(rules_dir)
    values = _values(site_config)
    engine = SigmaEngine.load(path, placeholders=values, strict=False)
    for p in engine.pack.problems:
        note(str(p))
    sys.stdout.write(engine.generated_source())


@app.command("convert")
def convert_rules(
    to: Annotated[Target, typer.Option("--to", help="Query language: lucene, esql or eql.")],
    rules_dir: RulesDir = None,
    site_config: SiteConfig = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write here instead of stdout.")
    ] = None,
    fmt: Annotated[
        ConvertFormat,
        typer.Option(
            "--format",
            help="plain: one query per line; json: one object per query with its index and "
            "the Elasticsearch request that runs it.",
        ),
    ] = ConvertFormat.plain,
    index: Annotated[
        str | None,
        typer.Option(
            "--index",
            help="Index, alias or pattern the queries search (default: the events alias of "
            "the pipeline config, <index_prefix>-events).",
        ),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config", envvar="ICSMON_CONFIG", help="Pipeline config file (TOML or YAML)"
        ),
    ] = None,
) -> None:
    """Convert the rules to Elasticsearch queries with the same pipeline the sensor uses,
    over the deployment's events alias (ES|QL names it in ``from``; for Lucene and EQL it is
    in the JSON output's ``index`` and ``request``)."""
    from detectors.sigma.convert import convert
    from detectors.sigma.loader import SiteConfigError, locate
    from pipeline.config import ConfigError, load_config

    path = _where(rules_dir)
    if index is None:
        try:
            index = load_config(config).alias("event")
        except ConfigError as exc:
            raise fail(str(exc)) from None
    try:
        result = convert(to.value, path, site_config, index=index)
    except SiteConfigError as exc:
        raise fail(str(exc)) from None
    except ValueError as exc:
        raise fail(f"--index: {exc}") from None
    lines = []
    for q in result.queries:
        if fmt == ConvertFormat.json:
            lines.append(
                json.dumps(
                    {
                        "id": q.rule_id,
                        "title": q.title,
                        "path": q.path,
                        "index": q.index,
                        "query": q.query,
                        "request": q.request(),
                    },
                    ensure_ascii=False,
                )
            )
        else:
            lines.append(q.query)
    text = "\n".join(lines) + ("\n" if lines else "")
    if output is None:
        sys.stdout.write(text)
    else:
        try:
            output.write_text(text, encoding="utf-8")
        except OSError as exc:
            raise fail(f"{output}: cannot write: {exc.strerror}", ExitCode.FAILED) from None
    for p, rid, reason in result.skipped:
        note(f"{p}:{locate(p, 'correlation')}: [{rid}] skipped: {reason}")
    for p, rid, reason in result.errors:
        note(f"{p}:{locate(p, 'detection')}: [{rid}] error: {reason}")
    if result.errors:
        raise typer.Exit(ExitCode.FAILED)


@app.command("install")
def install(
    package: Annotated[Path, typer.Argument(help="Content package from the province (JSON)")],
    rules_dir: Annotated[
        Path, typer.Option("--dir", help="The sensor's rule folder (rules go to DIR/central)")
    ],
) -> None:
    """Install a content package's Sigma rules under each rule's policy (central: the
    province's version replaces a local edit; local: a local edit is kept)."""
    from detectors.content import ContentError, install_rules, load_package

    try:
        pkg = load_package(package)
        done = install_rules(pkg, rules_dir)
    except ContentError as exc:
        raise fail(str(exc)) from None
    except OSError as exc:
        raise fail(f"{rules_dir}: cannot write: {exc.strerror or exc}") from None
    for what, ids in done.items():
        for rid in ids:
            typer.echo(f"{what}\t{rid}")
    note(
        f"content version {pkg.version}: {len(done['written'])} written, {len(done['kept'])} "
        f"kept (local edits), {len(done['overridden'])} overridden, {len(done['removed'])} "
        "removed"
    )
