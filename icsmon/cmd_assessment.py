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
EsOpt = Annotated[
    str | None,
    typer.Option(
        "--es",
        envvar="ICSMON_ES",
        help="Elasticsearch URL: the centre's assets, findings, advisories and decisions",
    ),
]
ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", help="Pipeline config file (Elasticsearch URL, credentials, prefix)"),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="JSON lines instead of a table")]


def catalog_path(store: Path | None, catalog: Path | None) -> Path:
    if catalog is not None:
        return catalog
    from pipeline.store import resolve_store_path

    path = resolve_store_path(store)
    return path.with_name(path.stem + ".assessment.db")


def _es_config(es: str | None, config: Path | None):
    from pipeline.config import ConfigError, load_config

    try:
        return load_config(config, overrides={"elasticsearch": {"url": es}} if es else None)
    except ConfigError as exc:
        raise fail(str(exc)) from None


def open_catalog(
    store: Path | None, catalog: Path | None, es: str | None = None, config: Path | None = None
):
    """The assessment catalog: in Elasticsearch with ``--es``/``--config`` (assessment/
    catalog.py), else the SQLite file beside the store."""
    from assessment.catalog import Catalog, CatalogError, EsCatalog

    if es or config:
        from pipeline.es import EsStore

        cfg = _es_config(es, config)
        try:
            return EsCatalog(EsStore(cfg))
        except Exception as exc:  # a bad URL or client option, said in one line
            raise fail(f"{cfg.elasticsearch.url}: cannot use Elasticsearch: {exc}") from None
    try:
        return Catalog(catalog_path(store, catalog))
    except CatalogError as exc:
        raise fail(str(exc)) from None


def _open_backend(store: Path | None, es: str | None = None, config: Path | None = None):
    from icsmon.cmd_query import QueryError, open_backend

    try:
        return open_backend(store, es, config)
    except QueryError as exc:
        raise fail(str(exc)) from None


def _es_call(what: str, call):
    """Run a call that reaches Elasticsearch; its failure becomes one line (exit 1)."""
    from elastic_transport import TransportError
    from elasticsearch import ApiError

    try:
        return call()
    except (TransportError, ApiError) as exc:
        raise fail(f"{what}: Elasticsearch: {exc}", ExitCode.FAILED) from None


def _print_json(docs: list[dict]) -> None:
    from icsmon.output import json_line

    for doc in docs:
        typer.echo(json_line(doc))


@advisories_app.command("import")
def advisories_import(
    paths: Annotated[list[Path], typer.Argument(help="CSAF 2.0 files or folders (recursive)")],
    store: StoreOpt = None,
    catalog: CatalogOpt = None,
    es: EsOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Validate CSAF 2.0 advisories (schema and mandatory tests) and keep them in the catalog
    (Elasticsearch with --es). A known-exploited catalogue among the files (CISA KEV's JSON
    format) is imported as one: its CVEs weigh as known exploited. A file that fails is named
    with its first problems and skipped; exit 1 if any failed."""
    missing = [p for p in paths if not p.exists()]
    if missing:
        raise fail(f"{missing[0]}: no such file or folder")
    cat = open_catalog(store, catalog, es, config)
    started = time.monotonic()
    from assessment.advisories import files

    count = len(files(paths))
    seen = [0]

    def progress(path: Path) -> None:
        seen[0] += 1
        if seen[0] % 500 == 0:
            note(f"{seen[0]}/{count} files ...")

    from assessment.catalog import CatalogError

    try:
        out = _es_call("import", lambda: cat.import_paths(paths, progress))
    except CatalogError as exc:
        raise fail(str(exc), ExitCode.FAILED) from None
    for problem in out["problems"]:
        note(f"refused: {problem}")
    kev = f", {out['exploited']} known-exploited CVEs" if out["exploited"] else ""
    note(
        f"{out['imported']} imported, {out['unchanged']} unchanged, {out['refused']} refused"
        f"{kev} ({count} files, {time.monotonic() - started:.1f} s) -> {cat.describe()}"
    )
    if out["refused"]:
        raise typer.Exit(int(ExitCode.FAILED))


@advisories_app.command("list")
def advisories_list(
    store: StoreOpt = None,
    catalog: CatalogOpt = None,
    es: EsOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
):
    """The imported advisories."""
    cat = open_catalog(store, catalog, es, config)
    docs = [a.summary() for a in _es_call("advisories", cat.advisories)]
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
    es: EsOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Who is affected: the stored assets each advisory matches (by vendor, product and
    firmware; unknown firmware shows as possibly affected)."""
    from assessment.matching import Matcher

    advisories = _es_call("advisories", open_catalog(store, catalog, es, config).advisories)
    if advisory is not None:
        advisories = [a for a in advisories if a.id == advisory]
        if not advisories:
            raise fail(f"no advisory {advisory!r} in the catalog")
    backend = _open_backend(store, es, config)
    try:
        assets = _es_call("assets", lambda: backend.all_assets(None))
    finally:
        backend.close()
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
    es: EsOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Findings (the store's, or Elasticsearch's with --es), merged, with their state (open /
    resolved / accepted)."""
    from assessment.findings import STATES, lifecycle

    if state is not None and state not in STATES:
        raise fail(f"--state must be one of {', '.join(STATES)}")
    backend = _open_backend(store, es, config)
    try:
        _total, docs = _es_call(
            "findings", lambda: backend.search_findings([site] if site else None, limit=1_000_000)
        )
    finally:
        backend.close()
    accepted = _es_call("findings", open_catalog(store, catalog, es, config).acceptances)
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
    es: EsOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Accept a finding with a reason: it stays accepted until reopened."""
    from assessment.catalog import CatalogError

    cat = open_catalog(store, catalog, es, config)
    try:
        _es_call("accept", lambda: cat.accept(finding_id, reason, user))
    except CatalogError as exc:
        raise fail(str(exc)) from None
    note(f"{finding_id}: accepted")


@findings_app.command("reopen")
def findings_reopen(
    finding_id: Annotated[str, typer.Argument(help="finding.id")],
    store: StoreOpt = None,
    catalog: CatalogOpt = None,
    es: EsOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Withdraw an acceptance."""
    cat = open_catalog(store, catalog, es, config)
    if not _es_call("reopen", lambda: cat.reopen(finding_id)):
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
    es: EsOpt = None,
    config: ConfigOpt = None,
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

    backend = _open_backend(store, es, config)
    st = open_state(store, es or (str(config) if config else None), state)
    try:
        try:
            sc = resolve_scope(Principal("report", "province-analyst", None), st.org(), scope)
        except NotVisible:
            raise fail(f"--scope {scope}: not in the registry") from None
        assessment = AssessmentData(backend, st, open_catalog(store, catalog, es, config))
        service = PostureService(backend, st, exposure=assessment.site_exposure)
        data = _es_call("report", lambda: report_data(service, assessment, sc, period))
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
