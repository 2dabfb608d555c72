"""``icsmon replay`` and ``icsmon sense``: capture files or a live port through the engine,
the detectors and a sink (wiring only: the parts live in ``sensor``, ``detectors``,
``pipeline``; the order of calls in ``icsmon.run``)."""

from __future__ import annotations

import enum
import signal
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

from icsmon.common import (
    ExitCode,
    HeurOption,
    ObserverOption,
    Option,
    OrgOption,
    PortOption,
    SiteOption,
    StoreOption,
    engine_config,
    error_line,
    exit_with,
    fail,
    note,
    open_engine,
)

if TYPE_CHECKING:
    from icsmon.output import Printer

# icsmon.output (orjson, the events' documents) and dataclasses are imported by the commands
# when they use them: a replay's store writer starts before (``_start_store``), ~10 ms earlier


class Format(enum.StrEnum):
    table = "table"
    jsonl = "jsonl"


class SinkName(enum.StrEnum):
    store = "store"
    jsonl = "jsonl"
    kafka = "kafka"
    none = "none"


def _load_config(config: Path | None, overrides: dict | None = None):
    """The pipeline configuration (file, ICSMON_* variables, flags); one error line when bad."""
    from pipeline.config import ConfigError, load_config

    try:
        return load_config(config, overrides=overrides)
    except ConfigError as exc:
        raise fail(str(exc)) from None


def _edge(
    cfg, engine, sink, linktype: int, rules=None, site_config=None, dets=None, heartbeats=None
):
    """The packet ring, alert captures and control channel of a live sensor (icsmon.edge):
    with a store (the captures beside it) and, for requests, Kafka and the province's key;
    requested hunts write their alerts to ``sink`` and read rules with the sensor's
    ``rules`` and ``site_config``; content the province pushes goes to the run's watchlist
    detector (in ``dets``) and its ``heartbeats``."""
    from detectors.content import WatchlistDetector
    from pipeline.control import ControlError

    parts = getattr(sink, "sinks", None) or {}
    store = parts.get("store", sink if hasattr(sink, "search_events") else None)
    kafka = parts.get("kafka")
    kafka = getattr(kafka, "sink", kafka)  # the Kafka sink itself, not the shipped-kinds filter
    if store is None:
        return None
    from icsmon.edge import EdgeEvidence

    folder = Path(store.path).with_name(Path(store.path).stem + ".evidence")
    detectors = getattr(dets, "parts", ())
    watch = next((d for d in detectors if isinstance(d, WatchlistDetector)), None)
    try:
        return EdgeEvidence(
            cfg,
            engine.ctx,
            store,
            kafka,
            linktype,
            folder,
            sink,
            rules,
            site_config,
            watchlist=watch,
            heartbeats=heartbeats,
            detectors=dets,
        )
    except (ControlError, OSError) as exc:
        _close_sink(sink)
        raise fail(str(exc)) from None


def _rollups(engine, cfg, interval: float | None):
    from sensor.rollups import Rollups

    return Rollups(engine.ctx, interval or cfg.sensor.rollup_interval)


def _heartbeats(engine, cfg, dets=None):
    from icsmon import __version__
    from sensor.heartbeat import Heartbeats

    # the content version the sensor runs (--content), which a content.update raises later;
    # detectors.content not imported (a replay without --content): no watchlist among the
    # detectors, and its import (~1 ms) is spared
    content = sys.modules.get("detectors.content")
    watch = None
    if content is not None:
        kind = content.WatchlistDetector
        watch = next((p for p in getattr(dets, "parts", ()) if isinstance(p, kind)), None)
    return Heartbeats(
        engine.ctx,
        cfg.sensor.heartbeat_interval,
        version=__version__,
        content_version=str(watch.version) if watch is not None else "",
    )


def _open_store(store: Path | None, retention: dict, started=None):
    """The sensor's store, written by a process of its own (pipeline/store/process.py): the
    SQLite work runs beside the sensor's instead of on its core. ``started``: the writer
    process ``_start_store`` began (waited for here: a file that cannot be used is one
    error line, before any output)."""
    from pipeline.store import StoreError
    from pipeline.store.process import WriterStore

    try:
        if started is not None:
            return WriterStore(process=started)
        return WriterStore.open(store, **retention)
    except StoreError as exc:
        raise fail(str(exc)) from None


def _start_store(store: Path | None, retention: dict):
    """The store's writer process, started now and waited for later (``_open_store``): its
    start-up (an interpreter and the store's imports, about 70 ms) runs while the engine,
    the detectors and the rules load. ``pipeline.store.launch`` is light to import: the
    process starts before the store's modules are imported here."""
    from pipeline.store.launch import WriterProcess

    return WriterProcess(store, retention)


def _retention(cfg, sensor: bool, max_events, max_bytes, max_age_days) -> dict:
    """The store's bounds: the flags; for a sensor's own store the configuration's too."""
    if sensor:
        s = cfg.sensor
        max_bytes = s.store_max_bytes if max_bytes is None else max_bytes
        max_age_days = s.store_max_age_days if max_age_days is None else max_age_days
    return {
        "max_events": max_events,
        "max_bytes": max_bytes or None,
        "max_age_s": max_age_days * 86400 if max_age_days else None,
    }


def _open_sink(
    name: SinkName,
    store: Path | None,
    out: Path | None,
    site: str,
    cfg,
    retention: dict,
    ship: str | None = None,
    started=None,
):
    """The sink; with Kafka, the sensor's own store (everything) and Kafka (what ``ship``,
    else ``[sensor] events``, sends: docs/schema.md, "What a sensor ships")."""
    if name == SinkName.none:
        return None
    if name == SinkName.store:
        return _open_store(store, retention, started)
    if name == SinkName.jsonl:
        from pipeline.jsonl import JsonlSink

        if out is None:
            raise fail("--sink jsonl needs --out FILE (stdout carries the printed output)")
        return JsonlSink(out)
    from pipeline.kafka import KafkaSink
    from pipeline.sinks import AssetRefresh, Only, Tee, shipped_kinds

    local = _open_store(store, retention)
    try:
        kafka = KafkaSink.from_config(cfg, site=site)
    except OSError as exc:  # the spool folder: in use by another sensor, or not writable
        local.close()
        raise fail(str(exc)) from None
    # the store keeps every asset snapshot; the centre gets an unchanged one once an hour
    to_centre = AssetRefresh(kafka, cfg.sensor.asset_refresh_s)
    return Tee({"store": local, "kafka": Only(to_centre, shipped_kinds(ship or cfg.sensor.events))})


def _detectors(
    rules: Path | None,
    no_rules: bool,
    site_config: Path | None,
    baseline: Path | None,
    learn: str | None = None,
    content: Path | None = None,
    watchlist: bool = False,
    pushed_rules: Path | None = None,
):
    from icsmon.run import load_detectors

    try:
        return load_detectors(
            rules,
            no_rules,
            site_config,
            baseline,
            learn,
            content=content,
            watchlist=watchlist,
            pushed_rules=pushed_rules,
        )
    except (OSError, ValueError) as exc:
        raise fail(" ".join(str(exc).split())) from None
    except Exception:  # pySigma raises on unparsable rule files: name the file, no traceback
        from icsmon.cmd_rules import unreadable_rule_files

        problems = unreadable_rule_files([rules]) if rules is not None else []
        if not problems:
            raise
        first = problems[0]
        more = f" (and {len(problems) - 1} more unreadable rule files)" if len(problems) > 1 else ""
        raise fail(f"{first.path}:{first.line}: {first.message}{more}") from None


ControlKeyOpt = Annotated[
    Path | None,
    Option(
        "--control-key",
        help="The province's public key (PEM): answer its signed requests (evidence, hunts, content pushes) over Kafka [default: [control] public_key]",
    ),
]
ContentOpt = Annotated[
    Path | None,
    Option(
        "--content",
        envvar="ICSMON_CONTENT",
        help="Detection content package from the province (its indicator watchlist is matched)",
    ),
]
RulesOpt = Annotated[
    Path | None, Option("--rules", help="Sigma rule folder (default: the shipped pack)")
]
NoRulesOpt = Annotated[bool, Option("--no-rules", help="Do not apply Sigma rules")]
SiteConfigOpt = Annotated[
    Path | None,
    Option(
        "--site-config",
        help="Site YAML: placeholder values for rules, declared segments for findings",
    ),
]
BaselineOpt = Annotated[
    Path | None, Option("--baseline", help="Baseline file: alert on deviations")
]
FormatOpt = Annotated[
    Format, Option("--format", "-f", help="Output: table for people, jsonl for programs")
]
EventsOpt = Annotated[bool, Option("--events", help="Print decoded events instead of alerts")]
SinkOpt = Annotated[SinkName, Option("--sink", help="Where events, alerts and assets go")]
OutOpt = Annotated[Path | None, Option("--out", help="File for --sink jsonl")]
ConfigOpt = Annotated[
    Path | None,
    Option("--config", envvar="ICSMON_CONFIG", help="Pipeline config file (Kafka, Elasticsearch)"),
]
StatsOpt = Annotated[bool, Option("--stats", help="Print the sensor's counters at the end")]
LearnOpt = Annotated[
    str | None,
    Option(
        "--learn",
        help="Learn a baseline from the first DURATION of traffic (90s, 30m, 12h, 7d), write it to --baseline FILE, then detect with it",
    ),
]
MaxEventsOpt = Annotated[
    int | None,
    Option(
        "--store-max-events",
        envvar="ICSMON_STORE_MAX_EVENTS",
        help="Keep at most this many events in the embedded store (oldest pruned; alerts never)",
    ),
]
ShipOpt = Annotated[
    str | None,
    Option(
        "--ship",
        help="With --sink kafka: none | rollups | all (events too); alerts, assets and heartbeats always go [default: [sensor] events, rollups]",
    ),
]
RollupsOpt = Annotated[
    bool, Option("--rollups", help="Print rollups (traffic summaries) instead of alerts")
]
RollupIntervalOpt = Annotated[
    float | None,
    Option(
        "--rollup-interval",
        min=1,
        help="Seconds per rollup [default: [sensor] rollup_interval, 60]",
    ),
]
MaxBytesOpt = Annotated[
    int | None,
    Option(
        "--store-max-bytes",
        min=0,
        help="Prune the oldest events (then rollups, heartbeats) beyond this size of the store [sense: [sensor] store_max_bytes]",
    ),
]
MaxAgeOpt = Annotated[
    float | None,
    Option(
        "--store-max-age-days",
        min=0,
        help="Prune events, rollups and heartbeats older than this [sense: [sensor] store_max_age_days]",
    ),
]
StoreEventsOpt = Annotated[
    bool,
    Option(
        "--store-events/--no-store-events",
        help="Also write every event (not only alerts and assets) to the sink",
    ),
]


def replay(
    pcap: Annotated[
        list[Path],
        Option(argument=True, help="pcap or pcapng files (plain or gzip)", show_default=False),
    ],
    events: EventsOpt = False,
    rules: RulesOpt = None,
    no_rules: NoRulesOpt = False,
    site_config: SiteConfigOpt = None,
    baseline: BaselineOpt = None,
    learn: LearnOpt = None,
    site: SiteOption = "",
    observer: ObserverOption = "",
    org: OrgOption = "",
    fmt: FormatOpt = Format.table,
    sink: SinkOpt = SinkName.store,
    store: StoreOption = None,
    out: OutOpt = None,
    config: ConfigOpt = None,
    stats: StatsOpt = False,
    heuristic: HeurOption = None,
    port: PortOption = None,
    store_events: StoreEventsOpt = True,
    store_max_events: MaxEventsOpt = None,
    store_max_bytes: MaxBytesOpt = None,
    store_max_age_days: MaxAgeOpt = None,
    rollups: RollupsOpt = False,
    rollup_interval: RollupIntervalOpt = None,
    ship: ShipOpt = None,
    content: ContentOpt = None,
) -> None:
    """Decode capture files: print alerts (or events with --events, rollups with --rollups)
    and send them to the sink."""
    started = None
    if sink == SinkName.store:  # bounds from the flags alone: the writer starts first of all
        flags = _retention(None, False, store_max_events, store_max_bytes, store_max_age_days)
        started = _start_store(store, flags)
    try:
        engine = open_engine(engine_config(site, observer, org, heuristic, port))
        dets = _detectors(rules, no_rules, site_config, baseline, learn, content)
        cfg = _load_config(config)
        _check_ship(ship, sink)
    except BaseException:
        if started is not None:
            started.abandon()
        raise
    retention = _retention(
        cfg, sink == SinkName.kafka, store_max_events, store_max_bytes, store_max_age_days
    )
    out_sink = _open_sink(sink, store, out, site, cfg, retention, ship, started)
    from icsmon.output import Printer, print_stats

    printer = Printer(fmt.value, kind="event" if events else "rollup" if rollups else "alert")
    from icsmon.run import Run

    run = Run(
        engine,
        dets,
        out_sink,
        store_events=store_events,
        heartbeats=_heartbeats(engine, cfg, dets),
        rollups=_rollups(engine, cfg, rollup_interval) if out_sink or rollups else None,
    )
    progress, stop_progress = _progress(pcap)
    batches = engine.replay_batches(pcap, progress)
    # events as JSON lines to a pipe or a file: printed a block at a time, the block once the
    # run is done with it, so the loop yields no event (only alerts, not printed)
    printed = _Printed(batches, printer) if events and not rollups and printer.blocks else None
    try:
        if printed is not None:
            for _ in run.process_batches(printed, want_events=False):
                pass
        else:
            for doc in run.process_batches(batches, want_events=events, want_rollups=rollups):
                printer.write(doc)
        run.stop()
    except BrokenPipeError:
        sys.stderr.close()  # reader went away (| head): not an error worth a traceback
        raise exit_with(0) from None
    except KeyboardInterrupt:
        if printed is not None:
            printed.finish()
        note("interrupted")
    finally:
        stop_progress()
        printer.flush()
        _close_sink(out_sink)
    if stats:
        counters = dict(engine.stats)
        counters["alerts"] = run.alerts
        counters.update(dets.stats())
        if out_sink is not None and hasattr(out_sink, "stats"):
            counters.update(
                {f"sink.{k}": v for k, v in out_sink.stats().items() if isinstance(v, int)}
            )
        print_stats(counters)
    for line in dets.notes():
        note(f"note: {line}")
    for line in engine.errors:
        error_line(line)
    if engine.errors:  # a capture could not be read (to its end): what was read is processed
        raise exit_with(ExitCode.FAILED)


class _Printed:
    """The engine's blocks of events, each printed (``Printer.write_all``) once the run has
    processed it, as the run asks for the next: the printed lines are the events as the
    run leaves them, in order, without an event passing through the interpreted loop."""

    def __init__(self, batches: Iterable[list[dict]], printer: Printer) -> None:
        self._batches = batches
        self._printer = printer
        self._pending: list[dict] | None = None  # the block being processed

    def __iter__(self) -> Iterator[list[dict]]:
        for batch in self._batches:
            self._pending = batch
            yield batch
            self._pending = None  # (an interrupt while printing loses lines, never doubles)
            self._printer.write_all(batch)

    def finish(self) -> None:
        """An interrupted run: the block it was processing is printed too, whole (a store
        has it already: the run hands a store each block before the detectors)."""
        pending, self._pending = self._pending, None
        if pending is not None:
            self._printer.write_all(pending)


def _store_encoded(store):
    """A batch of events a worker made into the store's frame: to the store as it is (an
    event it could not encode goes the ordinary way, and is counted there if it fails)."""

    def write(events: list[dict], encoded: tuple[bytes, int, list[int]]) -> None:
        lines, count, failed = encoded
        if count:
            store.write_encoded(lines, count)
        for i in failed:
            store.write("event", events[i])

    return write


def _check_ship(ship: str | None, sink: SinkName) -> None:
    if ship is None:
        return
    if ship not in ("none", "rollups", "all"):
        raise fail(f"--ship must be none, rollups or all, not {ship!r}")
    if sink != SinkName.kafka:
        raise fail("--ship applies to --sink kafka (the other sinks keep everything)")


def _close_sink(sink) -> None:
    """Flush the sink; a failure to write what remained is one error line, not a traceback."""
    if sink is None:
        return
    try:
        sink.close()
    except Exception as exc:  # each sink has its own error class; all end the same way here
        raise fail(f"{type(exc).__name__}: {exc}", ExitCode.FAILED) from None


def _progress(paths: list[Path]):
    """A progress bar on stderr for long replays at a terminal; nothing otherwise."""
    total = 0
    for p in paths:
        try:
            total += p.stat().st_size
        except OSError:
            pass
    if not sys.stderr.isatty() or total < 20 << 20:
        return None, lambda: None
    from rich.progress import Progress

    from icsmon.common import err

    bar = Progress(console=err, transient=True)
    task = bar.add_task("replaying", total=None)
    bar.start()

    def update(n: int) -> None:
        bar.update(task, completed=n, description=f"{n:,} packets")

    return update, bar.stop


def sense(
    iface: Annotated[
        str, Option("--iface", "-i", help="Interface on the mirrored (SPAN/TAP) port")
    ],
    bpf: Annotated[
        str | None, Option("--bpf", help="BPF capture filter, e.g. 'tcp port 502'")
    ] = None,
    events: EventsOpt = False,
    rules: RulesOpt = None,
    no_rules: NoRulesOpt = False,
    site_config: SiteConfigOpt = None,
    baseline: BaselineOpt = None,
    learn: LearnOpt = None,
    site: SiteOption = "",
    observer: ObserverOption = "",
    org: OrgOption = "",
    fmt: FormatOpt = Format.table,
    sink: SinkOpt = SinkName.store,
    store: StoreOption = None,
    out: OutOpt = None,
    config: ConfigOpt = None,
    stats: StatsOpt = True,
    heuristic: HeurOption = None,
    port: PortOption = None,
    store_events: StoreEventsOpt = True,
    store_max_events: MaxEventsOpt = None,
    store_max_bytes: MaxBytesOpt = None,
    store_max_age_days: MaxAgeOpt = None,
    rollups: RollupsOpt = False,
    rollup_interval: RollupIntervalOpt = None,
    ship: ShipOpt = None,
    content: ContentOpt = None,
    control_key: ControlKeyOpt = None,
    user: Annotated[
        str | None,
        Option("--user", help="Started as root: run as this user once the capture socket is open"),
    ] = None,
    workers: Annotated[
        int,
        Option(
            "--workers",
            min=1,
            max=64,
            help="Capture processes on the interface (the kernel spreads flows over them); detectors and sinks run in one more process over their merged events",
        ),
    ] = 1,
) -> None:
    """Listen on a live interface until SIGINT/SIGTERM; then print the final counters."""
    from sensor.engine import Engine
    from sensor.live import CaptureError, LiveSource
    from sensor.workers import MergedEngine, WorkerPool, settle

    single = open_engine(engine_config(site, observer, org, heuristic, port))
    from icsmon.pushed_rules import rules_folder
    from pipeline.store.schema import resolve_store_path

    # a live sensor always has a watchlist (empty until content is given or pushed to it),
    # and runs the rules the province pushed to it with its own pack
    pushed = rules_folder(resolve_store_path(store)) / "central"
    dets = _detectors(
        rules, no_rules, site_config, baseline, learn, content, watchlist=True, pushed_rules=pushed
    )
    cfg = _load_config(
        config, {"control": {"public_key": str(control_key) if control_key else None}}
    )
    _check_ship(ship, sink)
    if control_key is not None and sink != SinkName.kafka:
        raise fail("--control-key needs --sink kafka (requests and answers travel through Kafka)")
    # A stop request is honoured from before the port opens: one that arrives while the
    # capture, sink, store and control channel are still being set up ends the run as soon as
    # it starts (not the process, half set up, by the signal's default action).
    opened: list[LiveSource | WorkerPool] = []
    stop_asked: list[int] = []

    def stop(signum, _frame) -> None:
        stop_asked.append(signum)
        for src in opened:
            src.stop()

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    pool: WorkerPool | None = None
    # With workers and the embedded store, each worker makes its events into the store's
    # lines, and the parent passes them on by the batch (sensor/workers.py)
    encoded = workers > 1 and sink == SinkName.store and store_events
    try:
        if workers > 1:
            from pipeline.store.process import encode_events, send_events

            # forked now, before any thread (Kafka, the control channel) or output exists
            pool = WorkerPool(
                iface,
                workers,
                single.config,
                bpf,
                user=user,
                encode=encode_events if encoded else None,
                send_frame=send_events if encoded else None,
            )
            pool.start()
            engine: Engine | MergedEngine = pool.engine
            capture_stats = pool.capture_stats
            linktype = pool.linktype
            # the packet ring is fed per frame, and frames stay in the workers
            from dataclasses import replace

            cfg = replace(cfg, evidence=replace(cfg.evidence, ring_max_bytes=0))
        else:
            source = LiveSource(iface, bpf, user=user)
            engine = single
            capture_stats = source.stats
            linktype = source.linktype
    except CaptureError as exc:
        raise fail(str(exc)) from None
    opened.append(pool or source)
    if stop_asked:
        opened[0].stop()
    # A sensor's own store is bounded (it runs for months): by the flags, else the config.
    retention = _retention(cfg, True, store_max_events, store_max_bytes, store_max_age_days)
    if encoded and pool is not None:  # the workers write their frames straight to the store
        retention |= {"inputs": pool.store_inputs(), "input_frames": pool.store_frames}
    out_sink = _open_sink(sink, store, out, site, cfg, retention, ship)
    from icsmon.output import Printer, print_stats

    printer = Printer(fmt.value, kind="event" if events else "rollup" if rollups else "alert")
    from icsmon.run import Run

    def print_alert(alert: dict) -> None:  # raised between packets (silence detectors)
        if not events and not rollups:
            printer.write(alert)
            printer.flush()

    def print_rollup(doc: dict) -> None:  # intervals closed by the clock, traffic or not
        if rollups:
            printer.write(doc)
            printer.flush()

    if pool is not None and encoded and out_sink is not None:
        pool.on_encoded = _store_encoded(out_sink)
    run = Run(
        engine,
        dets,
        out_sink,
        store_events=store_events and not encoded,
        live=True,
        heartbeats=_heartbeats(engine, cfg, dets),
        source_counters=capture_stats,
        on_alert=print_alert,
        rollups=_rollups(engine, cfg, rollup_interval) if out_sink or rollups else None,
    )
    run.on_rollup = print_rollup
    edge = _edge(cfg, engine, out_sink, linktype, rules, site_config, dets, run.heartbeats)
    if edge is not None:
        if pool is None:
            single.tap = edge.tap
        run.on_alert_written = edge.alert

    def tick() -> None:
        run.tick()
        if edge is not None:
            edge.tick()

    if pool is not None:
        pool.on_tick = tick
    else:
        source.on_tick = tick

    if fmt == Format.table:
        note(f"listening on {iface}" + (f" ({bpf})" if bpf else "") + "; Ctrl-C stops")

    capture_error: list[str] = []

    def live_events():
        if pool is not None:  # each worker flushes its own flows when it ends
            yield from pool.events()
            capture_error.extend(pool.failures())
            return
        try:
            yield from single.run(source)
        except CaptureError as exc:  # the interface went away: still flush what is open
            capture_error.append(str(exc))
        yield from single.finish()

    settle()  # what was loaded stays; the collector walks what the traffic makes
    try:
        run.start()
        for doc in run.process(live_events(), want_events=events, want_rollups=rollups):
            printer.write(doc)
            if fmt == Format.jsonl:
                printer.flush()
        run.stop()
    finally:
        printer.flush()
        if edge is not None:
            edge.close()  # no more answers: the sink closes next
        _close_sink(out_sink)
    if stats:
        counters = dict(engine.stats)
        counters["alerts"] = run.alerts
        counters.update({f"capture.{k}": v for k, v in capture_stats().items()})
        counters.update(dets.stats())
        if edge is not None:
            counters.update(edge.stats())
        print_stats(counters, title=f"sensor counters ({iface})")
    for line in dets.notes():
        note(f"note: {line}")
    if capture_error:
        raise fail(capture_error[0], ExitCode.FAILED)
