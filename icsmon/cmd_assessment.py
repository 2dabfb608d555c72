"""``icsmon advisories ...`` and ``icsmon findings ...``: wiring of the assessment package
(``assessment/``) to the store and the assessment catalog."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from icsmon.common import ExitCode, fail, note

advisories_app = typer.Typer(
    help="CSAF 2.0 advisories: import (validated), list, who is affected.",
    no_args_is_help=True,
)
findings_app = typer.Typer(
    help="Findings: what the sensors observed about assets, with their state.",
    no_args_is_help=True,
)

StoreOpt = Annotated[
    Path | None,
    typer.Option("--store", envvar="ICSMON_STORE", help="The embedded store (assets, findings)"),
]
CatalogOpt = Annotated[
    Path | None,
    typer.Option(
        "--catalog",
        help="Assessment catalog file (default: beside the store, icsmon.assessment.db)",
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="JSON lines instead of a table")]


def catalog_path(store: Path | None, catalog: Path | None) -> Path:
    if catalog is not None:
        return catalog
    from pipeline.store import resolve_store_path

    path = resolve_store_path(store)
    return path.with_name(path.stem + ".assessment.db")


def open_catalog(store: Path | None, catalog: Path | None):
    from assessment.catalog import Catalog, CatalogError

    try:
        return Catalog(catalog_path(store, catalog))
    except CatalogError as exc:
        raise fail(str(exc)) from None


def _open_store(store: Path | None):
    from pipeline.store import Store, StoreError

    try:
        return Store.open(store, readonly=True)
    except StoreError as exc:
        raise fail(str(exc)) from None


def _assets(st) -> list[dict]:
    from pipeline.query import AssetFilter

    out: list[dict] = []
    offset = 0
    while True:
        total, page = st.search_assets(AssetFilter(limit=5000, offset=offset))
        out.extend(page)
        offset += len(page)
        if not page or offset >= total:
            return out


def _print_json(docs: list[dict]) -> None:
    from icsmon.output import json_line

    for doc in docs:
        typer.echo(json_line(doc))


@advisories_app.command("import")
def advisories_import(
    paths: Annotated[list[Path], typer.Argument(help="CSAF 2.0 files or folders (recursive)")],
    store: StoreOpt = None,
    catalog: CatalogOpt = None,
) -> None:
    """Validate CSAF 2.0 advisories (schema and mandatory tests) and keep them in the catalog.
    A file that fails is named with its first problems and skipped; exit 1 if any failed."""
    missing = [p for p in paths if not p.exists()]
    if missing:
        raise fail(f"{missing[0]}: no such file or folder")
    cat = open_catalog(store, catalog)
    started = time.monotonic()
    from assessment.advisories import files

    count = len(files(paths))
    seen = [0]

    def progress(path: Path) -> None:
        seen[0] += 1
        if seen[0] % 500 == 0:
            note(f"{seen[0]}/{count} files ...")

    out = cat.import_paths(paths, progress)
    for problem in out["problems"]:
        note(f"refused: {problem}")
    note(
        f"{out['imported']} imported, {out['unchanged']} unchanged, {out['refused']} refused "
        f"({count} files, {time.monotonic() - started:.1f} s) -> {cat.path}"
    )
    if out["refused"]:
        raise typer.Exit(int(ExitCode.FAILED))


@advisories_app.command("list")
def advisories_list(store: StoreOpt = None, catalog: CatalogOpt = None, as_json: JsonOpt = False):
    """The imported advisories."""
    docs = [a.summary() for a in open_catalog(store, catalog).advisories()]
    if as_json:
        _print_json(docs)
        return
    table = Table(header_style="bold")
    for col in ("id", "title", "CVEs", "CVSS", "exploited", "products"):
        table.add_column(col, overflow="fold")
    for d in docs:
        table.add_row(
            d["advisory.id"],
            d["advisory.title"],
            ", ".join(d["advisory.cves"]),
            str(d["advisory.cvss"] or ""),
            "yes" if d["advisory.exploited"] else "",
            ", ".join(d["advisory.products"]),
        )
    table.caption = f"{len(docs)} advisories"
    Console().print(table)


@advisories_app.command("affected")
def advisories_affected(
    advisory: Annotated[str | None, typer.Argument(help="Advisory id (default: every one)")] = None,
    store: StoreOpt = None,
    catalog: CatalogOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Who is affected: the stored assets each advisory matches (by vendor, product and
    firmware; unknown firmware shows as possibly affected)."""
    from assessment.matching import Matcher

    advisories = open_catalog(store, catalog).advisories()
    if advisory is not None:
        advisories = [a for a in advisories if a.id == advisory]
        if not advisories:
            raise fail(f"no advisory {advisory!r} in the catalog")
    with _open_store(store) as st:
        assets = _assets(st)
    matches = [m.doc() for m in Matcher(advisories).match(assets)]
    if as_json:
        _print_json(matches)
        return
    table = Table(header_style="bold")
    for col in ("advisory", "asset", "status", "product", "firmware", "range", "CVSS", "fix"):
        table.add_column(col, overflow="fold")
    for m in sorted(matches, key=lambda m: (m["advisory.id"], m["asset.id"])):
        table.add_row(
            m["advisory.id"],
            m["asset.id"],
            m["match.status"],
            m["match.product"],
            m["ics.device.firmware"] or "?",
            m["match.range"],
            str(m["vulnerability.score.base"] or ""),
            m["advisory.remediation"],
        )
    table.caption = f"{len(matches)} matches on {len({m['asset.id'] for m in matches})} assets"
    Console().print(table)


@findings_app.command("list")
def findings_list(
    site: Annotated[str | None, typer.Option("--site", help="Only this site")] = None,
    state: Annotated[str | None, typer.Option("--state", help="open, resolved or accepted")] = None,
    resolve_after: Annotated[
        float, typer.Option("--resolve-after", help="Days unobserved before a finding resolves")
    ] = 7.0,
    store: StoreOpt = None,
    catalog: CatalogOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Findings in the store, merged, with their state (open / resolved / accepted)."""
    from assessment.findings import STATES, lifecycle

    if state is not None and state not in STATES:
        raise fail(f"--state must be one of {', '.join(STATES)}")
    with _open_store(store) as st:
        _total, docs = st.search_findings([site] if site else None, limit=1_000_000)
    accepted = open_catalog(store, catalog).acceptances()
    rows = lifecycle(docs, time.time(), accepted, resolve_after * 86400)
    if state is not None:
        rows = [r for r in rows if r["finding.state"] == state]
    if as_json:
        _print_json(rows)
        return
    table = Table(header_style="bold")
    for col in ("id", "asset", "kind", "sev", "state", "summary", "first seen", "last seen"):
        table.add_column(col, overflow="fold")
    for r in rows:
        table.add_row(
            r["finding.id"],
            r["asset.id"],
            r["finding.kind"],
            str(r.get("finding.severity", "")),
            r["finding.state"],
            r.get("finding.summary", ""),
            str(r.get("finding.first_seen", ""))[:19],
            str(r.get("finding.last_seen", ""))[:19],
        )
    table.caption = f"{len(rows)} findings"
    Console().print(table)


@findings_app.command("accept")
def findings_accept(
    finding_id: Annotated[str, typer.Argument(help="finding.id")],
    reason: Annotated[str, typer.Option("--reason", help="Why the risk is accepted")],
    user: Annotated[str, typer.Option("--user", help="Who accepts it")] = "cli",
    store: StoreOpt = None,
    catalog: CatalogOpt = None,
) -> None:
    """Accept a finding with a reason: it stays accepted until reopened."""
    from assessment.catalog import CatalogError

    try:
        open_catalog(store, catalog).accept(finding_id, reason, user)
    except CatalogError as exc:
        raise fail(str(exc)) from None
    note(f"{finding_id}: accepted")


@findings_app.command("reopen")
def findings_reopen(
    finding_id: Annotated[str, typer.Argument(help="finding.id")],
    store: StoreOpt = None,
    catalog: CatalogOpt = None,
) -> None:
    """Withdraw an acceptance."""
    if not open_catalog(store, catalog).reopen(finding_id):
        raise fail(f"{finding_id}: not accepted")
    note(f"{finding_id}: open again")


def report_command(
    period: Annotated[str, typer.Option("--period", help="weekly or monthly")] = "weekly",
    scope: Annotated[
        str,
        typer.Option("--scope", help="province, city:ID, industry:NAME, enterprise:ID, site:ID"),
    ] = "province",
    fmt: Annotated[
        str, typer.Option("--format", help="pdf, html or json (the report's data)")
    ] = "pdf",
    lang: Annotated[str, typer.Option("--lang", help="zh or en")] = "zh",
    out: Annotated[Path, typer.Option("-o", "--out", help="Where to write the report")] = Path(
        "report.pdf"
    ),
    store: StoreOpt = None,
    state: Annotated[
        Path | None, typer.Option("--state", help="Posture state (registry) file")
    ] = None,
    catalog: CatalogOpt = None,
) -> None:
    """A weekly or monthly report of a scope: score and trend, top-risk enterprises,
    findings, exposure, coverage, alerts by technique; PDF or HTML, in Chinese by default."""
    from posture.report import PERIODS, render_html, render_pdf, report_data

    if period not in PERIODS:
        raise fail(f"--period must be one of {', '.join(PERIODS)}")
    if fmt not in ("pdf", "html", "json"):
        raise fail("--format must be pdf, html or json")
    if lang not in ("zh", "en"):
        raise fail("--lang must be zh or en")
    from icsmon.cmd_posture import open_state
    from posture.access import NotVisible, Principal, resolve_scope
    from posture.assessment_api import AssessmentData
    from posture.service import PostureService

    backend = _open_store(store)
    st = open_state(store, None, state)
    try:
        try:
            sc = resolve_scope(Principal("report", "province-analyst", None), st.org(), scope)
        except NotVisible:
            raise fail(f"--scope {scope}: not in the registry") from None
        data = report_data(
            PostureService(backend, st),
            AssessmentData(backend, st, open_catalog(store, catalog)),
            sc,
            period,
        )
        if fmt == "json":
            import json

            payload = json.dumps(data, ensure_ascii=False, indent=1).encode()
        else:
            page = render_html(data, lang)
            payload = render_pdf(page) if fmt == "pdf" else page.encode()
        try:
            out.write_bytes(payload)
        except OSError as exc:
            raise fail(f"{out}: cannot write: {exc.strerror}", ExitCode.FAILED) from None
        note(f"{period} report of {sc.key} ({data['since']} - {data['until']}) -> {out}")
    finally:
        backend.close()
        st.close()
