"""``icsmon posture ...`` and ``icsmon org ...``: wiring for posture/ (no logic here)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from icsmon.common import StoreOpt, fail, note, warning_line

app = typer.Typer(help="The provincial posture API and dashboard.", no_args_is_help=True)
token_app = typer.Typer(
    help="Access tokens for the posture API (stored hashed).", no_args_is_help=True
)
app.add_typer(token_app, name="token")
org_app = typer.Typer(
    help="The organisation registry: province, cities, enterprises, sites.", no_args_is_help=True
)
EsOpt = Annotated[
    str | None,
    typer.Option("--es", envvar="ICSMON_ES", help="Elasticsearch URL instead of the store"),
]
StateOpt = Annotated[
    Path | None,
    typer.Option(
        "--state",
        envvar="ICSMON_POSTURE_STATE",
        help="Posture state file (registry, tokens, workflow); default: beside the store",
    ),
]


def state_path(store: Path | None, es: str | None, state: Path | None) -> Path:
    """The posture state lives beside the store (``icsmon.db`` -> ``icsmon.posture.db``);
    with Elasticsearch, in the user's data folder unless --state says otherwise."""
    if state is not None:
        return state
    if es is None:
        from pipeline.store import resolve_store_path

        path = resolve_store_path(store)
        return path.with_name(path.stem + ".posture.db")
    import platformdirs

    return Path(platformdirs.user_data_dir("icsmon")) / "posture.db"


def open_state(store: Path | None, es: str | None, state: Path | None):
    from posture.state import PostureState

    path = state_path(store, es, state)
    try:
        return PostureState(path)
    except ValueError as exc:
        raise fail(str(exc)) from None


def open_backend(store: Path | None, es: str | None):
    if es is not None:
        from pipeline.config import ConfigError
        from pipeline.es import open_query_backend

        try:
            return open_query_backend(es)
        except ConfigError as exc:
            raise fail(str(exc)) from None
        except Exception as exc:  # a bad URL or client option: say it in one line
            raise fail(f"{es}: cannot query Elasticsearch: {exc}") from None
    from pipeline.store import Store, StoreError

    try:
        return Store.open(store, readonly=True)
    except StoreError as exc:
        raise fail(str(exc)) from None


@app.command()
def serve(
    store: StoreOpt = None,
    es: EsOpt = None,
    state: StateOpt = None,
    host: Annotated[str, typer.Option("--host", help="Address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="TCP port")] = 8080,
    silent_after: Annotated[
        float, typer.Option("--silent-after", help="Minutes without data before a sensor is silent")
    ] = 15.0,
    refresh: Annotated[int, typer.Option("--refresh", help="Dashboard refresh, seconds")] = 30,
    webhooks: Annotated[
        bool, typer.Option("--webhooks/--no-webhooks", help="Send webhook notifications")
    ] = True,
    webhook_interval: Annotated[
        float, typer.Option("--webhook-interval", help="Seconds between webhook passes")
    ] = 15.0,
    catalog: Annotated[
        Path | None,
        typer.Option(
            "--catalog",
            help="Assessment catalog (advisories, accepted findings; default beside the store; "
            "with --es, Elasticsearch keeps them)",
        ),
    ] = None,
    response_policy: Annotated[
        Path | None,
        typer.Option(
            "--response-policy",
            envvar="ICSMON_RESPONSE_POLICY",
            help="Incident grading and reporting policy (default: shipped)",
        ),
    ] = None,
    calendar: Annotated[
        Path | None,
        typer.Option(
            "--calendar",
            envvar="ICSMON_CALENDAR",
            help="Working-day calendar for notice deadlines (default: shipped)",
        ),
    ] = None,
    control_key: Annotated[
        Path | None,
        typer.Option(
            "--control-key",
            help="The province's private key (PEM) that signs evidence requests to sensors [default: [control] private_key]",
        ),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            envvar="ICSMON_CONFIG",
            help="Pipeline config file: Kafka for evidence requests, [control] private_key",
        ),
    ] = None,
    campaign_interval: Annotated[
        float,
        typer.Option(
            "--campaign-interval", help="Seconds between campaign correlation passes (0: off)"
        ),
    ] = 600.0,
) -> None:
    """Serve the posture API (OpenAPI at /docs) and the dashboard (/)."""
    if store is not None and es is not None:
        raise fail("give either --store or --es, not both")
    import uvicorn

    from icsmon.cmd_response import load_calendar_or_fail, load_policy_or_fail
    from posture.app import create_app
    from posture.webhooks import WebhookDispatcher
    from response.service import Background, Response

    pol, cal = load_policy_or_fail(response_policy), load_calendar_or_fail(calendar)
    backend = open_backend(store, es)
    st = open_state(store, es, state)
    if not st.org().sites:
        warning_line("the registry is empty: load one with `icsmon org import FILE`")
    from icsmon.cmd_assessment import open_catalog

    desk = Response(st.path, backend, pol, cal)
    publisher = _control_publisher(config, control_key)
    application = create_app(
        backend,
        st,
        silent_after_s=silent_after * 60,
        refresh_s=refresh,
        response=desk,
        # with Elasticsearch, the assessment's data lives there too (assessment/catalog.py)
        catalog=open_catalog(store, catalog, es),
        control=publisher,
    )
    dispatcher = WebhookDispatcher(backend, st) if webhooks else None
    if dispatcher:
        dispatcher.start(webhook_interval)
    background = Background(desk, st.org, campaigns_s=campaign_interval)
    background.start()
    note(f"posture view on http://{host}:{port}/ (state {st.path})")
    try:
        uvicorn.run(application, host=host, port=port, log_level="info")
    finally:
        background.stop()
        if dispatcher:
            dispatcher.stop()
        if publisher is not None:
            publisher.close()
        desk.close()
        backend.close()
        st.close()


def _control_publisher(config: Path | None, control_key: Path | None):
    """What sends evidence requests to sensors: the signing key and Kafka; None (requests
    answer 503) when no key is given."""
    from pipeline.config import ConfigError, load_config
    from pipeline.control import ControlError
    from pipeline.control_kafka import ControlPublisher

    try:
        cfg = load_config(
            config,
            overrides={"control": {"private_key": str(control_key) if control_key else None}},
        )
    except ConfigError as exc:
        raise fail(str(exc)) from None
    if not cfg.control.private_key:
        return None
    try:
        return ControlPublisher.from_config(cfg)
    except ControlError as exc:
        raise fail(str(exc)) from None


@app.command()
def demo(
    store: StoreOpt = None,
    state: StateOpt = None,
    alerts: Annotated[int, typer.Option("--alerts", help="Alerts to generate")] = 5000,
    enterprises: Annotated[int, typer.Option("--enterprises")] = 48,
    sites: Annotated[int, typer.Option("--sites")] = 64,
    days: Annotated[float, typer.Option("--days", help="Spread alerts over this many days")] = 7,
) -> None:
    """Fill a store with a demo province (16 cities of Shandong) and its assessment catalog
    (made-up advisories for its made-up devices), and print a province token."""
    from pipeline.store import Store, StoreError
    from posture import seed
    from posture.orgfile import parse_org

    registry = seed.make_registry(enterprises, sites)
    now = time.time()
    try:
        sink = Store.open(store)
    except StoreError as exc:
        raise fail(str(exc)) from None
    with sink:
        for kind, doc in seed.generate(registry, alerts, now - days * 86400, now):
            sink.write(kind, doc)
        for beat in seed.heartbeats(registry, now):
            sink.write("heartbeat", beat)
        for asset in seed.assets(registry, now):
            sink.write("asset", asset)
        for finding in seed.findings(registry, now):
            sink.write("finding", finding)
    st = open_state(store, None, state)
    counts = st.import_org(parse_org(registry, "demo registry"))
    token = st.create_token("demo", "province-analyst", None)
    # the demo's advisories and known-exploited catalogue (made up, describing its devices)
    import tempfile

    from assessment import samples
    from icsmon.cmd_assessment import open_catalog

    cat = open_catalog(sink.path, None)
    with tempfile.TemporaryDirectory(prefix="icsmon-demo-") as folder:
        imported = cat.import_paths(samples.write(Path(folder), with_catalogue=True))
    cat.close()
    note(
        f"demo: {alerts} alerts, {counts['sites']} sites in {sink.path}; state {st.path}; "
        f"{imported['imported'] + imported['unchanged']} advisories in {cat.describe()}"
    )
    typer.echo(token)


@token_app.command("create")
def token_create(
    role: Annotated[
        str,
        typer.Option(
            "--role",
            help="province-analyst | city-analyst | enterprise-operator | enterprise-viewer",
        ),
    ],
    name: Annotated[str, typer.Option("--name", help="Who uses it (shown in the audit trail)")],
    scope: Annotated[str | None, typer.Option("--scope", help="City id or enterprise id")] = None,
    store: StoreOpt = None,
    es: EsOpt = None,
    state: StateOpt = None,
) -> None:
    """Create a token and print it once (only its SHA-256 digest is kept)."""
    st = open_state(store, es, state)
    try:
        token = st.create_token(name, role, scope)
    except ValueError as exc:
        raise fail(str(exc)) from None
    typer.echo(token)


@token_app.command("list")
def token_list(store: StoreOpt = None, es: EsOpt = None, state: StateOpt = None) -> None:
    """Tokens (never the secrets): id, name, role, scope, revoked."""
    for row in open_state(store, es, state).list_tokens():
        revoked = " revoked" if row["revoked"] else ""
        typer.echo(f"{row['id']}\t{row['name']}\t{row['role']}\t{row['scope_id'] or '-'}{revoked}")


@token_app.command("revoke")
def token_revoke(
    token_id: Annotated[int, typer.Argument(help="Id from `token list`")],
    store: StoreOpt = None,
    es: EsOpt = None,
    state: StateOpt = None,
) -> None:
    if not open_state(store, es, state).revoke_token(token_id):
        raise fail(f"no active token with id {token_id}")


@org_app.command("import")
def org_import(
    file: Annotated[Path, typer.Argument(help="Registry YAML (see deploy/org-example.yaml)")],
    store: StoreOpt = None,
    es: EsOpt = None,
    state: StateOpt = None,
) -> None:
    """Load the registry (replaces the previous one; tokens and workflow are kept)."""
    from posture.orgfile import OrgFileError, load_org_file

    try:
        org = load_org_file(file)
    except OrgFileError as exc:
        raise fail(str(exc)) from None
    st = open_state(store, es, state)
    counts = st.import_org(org)
    typer.echo(
        f"{file}: {counts['cities']} cities, {counts['enterprises']} enterprises, "
        f"{counts['sites']} sites, {counts['sensors']} sensors -> {st.path}"
    )


@org_app.command("show")
def org_show(store: StoreOpt = None, es: EsOpt = None, state: StateOpt = None) -> None:
    """The registry as loaded: cities with their enterprise and site counts."""
    org = open_state(store, es, state).org()
    for cid, city in org.cities.items():
        ents = [e for e in org.enterprises.values() if e["city_id"] == cid]
        typer.echo(
            f"{cid}\t{city['name']} {city['name_zh']}\t{len(ents)} enterprises\t"
            f"{len(org.sites_of_city(cid))} sites"
        )
