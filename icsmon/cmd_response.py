"""``icsmon response ...``: the response policy, calendar and desk (wiring for response/)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from icsmon.cmd_posture import EsOpt, StateOpt, open_backend, open_state
from icsmon.common import StoreOpt, fail, note

app = typer.Typer(
    help="Incidents, grading policy, notices, campaigns: the response desk.", no_args_is_help=True
)
policy_app = typer.Typer(help="The grading and reporting policy file.", no_args_is_help=True)
calendar_app = typer.Typer(help="The working-day calendar file.", no_args_is_help=True)
app.add_typer(policy_app, name="policy")
app.add_typer(calendar_app, name="calendar")

PolicyArg = Annotated[
    Path | None, typer.Argument(help="Policy YAML (default: the one shipped with icsmon)")
]
PolicyOpt = Annotated[
    Path | None,
    typer.Option("--policy", envvar="ICSMON_RESPONSE_POLICY", help="Grading and reporting policy"),
]
CalendarOpt = Annotated[
    Path | None,
    typer.Option("--calendar", envvar="ICSMON_CALENDAR", help="Working-day calendar file"),
]


def load_policy_or_fail(path: Path | None):
    from response.policy import PolicyError, load_policy

    try:
        return load_policy(path)
    except PolicyError as exc:
        raise fail(str(exc)) from None


def load_calendar_or_fail(path: Path | None):
    from response.workdays import CalendarError, load_calendar

    try:
        return load_calendar(path)
    except CalendarError as exc:
        raise fail(str(exc)) from None


def open_desk(
    store: Path | None,
    es: str | None,
    state: Path | None,
    policy: Path | None,
    calendar: Path | None,
):
    from response.service import Response

    pol, cal = load_policy_or_fail(policy), load_calendar_or_fail(calendar)
    backend = open_backend(store, es)
    st = open_state(store, es, state)
    return Response(st.path, backend, pol, cal), st, backend


@policy_app.command("check")
def policy_check(file: PolicyArg = None) -> None:
    """Validate a policy file and summarise it (levels, rules, deadlines)."""
    pol = load_policy_or_fail(file)
    for lv in pol.levels:
        unverified = sum(1 for r in lv.rules if not r.verified)
        typer.echo(f"{lv.id}\t{lv.zh}\t{len(lv.rules)} rules ({unverified} unverified)")
    for d in pol.deadlines:
        when = ", ".join(c.describe() for c in d.conditions) or "always"
        typer.echo(f"deadline {d.id}: {d.report} report within {d.minutes:g} min when {when}")
    note(f"{pol.source}: ok ({pol.name})")


@policy_app.command("show")
def policy_show(file: PolicyArg = None) -> None:
    """Print the policy as the dashboard reads it (JSON)."""
    typer.echo(json.dumps(load_policy_or_fail(file).to_json(), ensure_ascii=False, indent=2))


@policy_app.command("grade")
def policy_grade(
    fact: Annotated[list[str], typer.Option("--fact", help="NAME=VALUE (repeatable)")],
    file: Annotated[Path | None, typer.Option("--policy", help="Policy YAML")] = None,
) -> None:
    """Grade a set of impact facts: the level and the rule that decided it."""
    pol = load_policy_or_fail(file)
    facts: dict[str, object] = {}
    for item in fact:
        name, sep, value = item.partition("=")
        spec = pol.facts.get(name)
        if not sep or spec is None:
            raise fail(
                f"--fact {item!r}: expected NAME=VALUE with NAME one of "
                f"{', '.join(sorted(pol.facts))}"
            )
        if spec["type"] == "boolean":
            if value.lower() not in ("true", "false", "yes", "no", "1", "0"):
                raise fail(f"--fact {item!r}: {name} is true or false")
            facts[name] = value.lower() in ("true", "yes", "1")
        else:
            try:
                facts[name] = float(value)
            except ValueError:
                raise fail(f"--fact {item!r}: {name} is a number") from None
    g = pol.grade(facts)
    verified = "" if g["verified"] else " (unverified)"
    typer.echo(f"{g['level']}\t{g['zh']}\trule {g['rule']}{verified}")
    for c in g["conditions"]:
        typer.echo(f"  {c['test']}  (value {c['value']})")


@calendar_app.command("check")
def calendar_check(
    file: Annotated[Path | None, typer.Argument(help="Calendar YAML (default: shipped)")] = None,
) -> None:
    """Validate a calendar file: the years it covers, holidays and adjusted working days."""
    cal = load_calendar_or_fail(file)
    years = ", ".join(map(str, cal.years)) or "(not stated)"
    typer.echo(
        f"{cal.name}: years {years}; {len(cal.holidays)} holidays, "
        f"{len(cal.workdays)} adjusted working days; time zone {cal.tz.key}"
    )


@app.command("escalate")
def escalate(
    store: StoreOpt = None,
    es: EsOpt = None,
    state: StateOpt = None,
    policy: PolicyOpt = None,
    calendar: CalendarOpt = None,
) -> None:
    """Escalate overdue notices and verify the notices of findings no longer observed, once
    (the posture server does both every minute, advisories too)."""
    desk, st, backend = open_desk(store, es, state, policy, calendar)
    try:
        for change in desk.notices.escalate():
            typer.echo(f"{change['id']}\tescalated to {change['escalation']}")
        for done in desk.notices.auto_verify():
            typer.echo(f"{done['notice']}\tverified from the telemetry ({done['subject']})")
    finally:
        desk.close()
        st.close()
        backend.close()


@app.command("campaigns")
def campaigns(
    hours: Annotated[float, typer.Option("--hours", help="Look back this many hours")] = 24.0,
    store: StoreOpt = None,
    es: EsOpt = None,
    state: StateOpt = None,
    policy: PolicyOpt = None,
    calendar: CalendarOpt = None,
) -> None:
    """Correlate every enterprise's alerts into campaigns once and list them."""
    import time

    desk, st, backend = open_desk(store, es, state, policy, calendar)
    try:
        now = time.time()
        got = desk.campaigns.detect(st.org(), now - hours * 3600, now, now)
        note(
            f"{got['scanned']} alerts scanned: {len(got['new'])} new campaigns, "
            f"{len(got['extended'])} extended"
        )
        from response.db import SYSTEM

        for c in desk.campaigns.list(SYSTEM)["items"]:
            typer.echo(
                f"{c['id']}\t{c['kind']}\t{c['indicator']}\t{len(c['enterprises'])} "
                f"enterprises\t{len(c['cities'])} cities\t{c['alerts']} alerts"
            )
    finally:
        desk.close()
        st.close()
        backend.close()


@app.command("audit")
def audit(store: StoreOpt = None, es: EsOpt = None, state: StateOpt = None) -> None:
    """Check the response audit trail's hash chain; exit 1 when an entry was altered."""
    from response.db import ResponseDB

    st = open_state(store, es, state)
    db = ResponseDB(st.path)
    try:
        got = db.verify_audit()
    finally:
        db.close()
        st.close()
    if not got["ok"]:
        from icsmon.common import ExitCode

        raise fail(
            f"{st.path}: audit entry {got['broken_at']} does not match the chain "
            f"({got['entries']} entries before it are intact)",
            ExitCode.FAILED,
        )
    typer.echo(f"{got['entries']} audit entries, chain intact (head {got.get('head', '')[:16]})")


@app.command("content")
def content(
    out: Annotated[Path, typer.Option("--out", help="Write the package here (JSON)")],
    store: StoreOpt = None,
    es: EsOpt = None,
    state: StateOpt = None,
) -> None:
    """Export the detection content package (watchlist, pushed rules) for the sensors."""
    from response.content import Content
    from response.db import ResponseDB

    st = open_state(store, es, state)
    db = ResponseDB(st.path)
    try:
        pkg = Content(db, str(st.org().province.get("id") or "")).package()
    finally:
        db.close()
        st.close()
    try:
        out.write_text(json.dumps(pkg, ensure_ascii=False, indent=1))
    except OSError as exc:
        raise fail(f"{out}: cannot write: {exc.strerror or exc}") from None
    note(
        f"content version {pkg['version']}: {len(pkg['watchlist'])} watchlist entries, "
        f"{len(pkg['rules'])} rules -> {out}"
    )
