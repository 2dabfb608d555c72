"""The run's loop (icsmon/loop.py) between events: a part replaced by pushed rules takes the
next events, and a heartbeat sent by a tick is not sent again by the loop."""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from icsmon.run import Detectors, Run
from sensor.events import Context
from sensor.heartbeat import Heartbeats


class _Engine:
    """The capture clock and counters a run reads, moved by the test."""

    def __init__(self) -> None:
        self.first_ts = 0.0
        self.last_ts = 0.0

    @property
    def stats(self) -> Mapping[str, int]:
        return {"packets": 0}

    def changed_assets(self) -> list[dict]:
        return []


class _Part:
    """A detector that remembers the events it was offered and raises one alert at flush."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.seen: list[int] = []

    def process(self, event: dict) -> list[dict]:
        self.seen.append(event["n"])
        return []

    def tick(self, now: float, /) -> list[dict]:
        return []

    def flush(self) -> list[dict]:
        return [{"rule.name": self.name, "n": len(self.seen)}]

    def absence_summary(self) -> str | None:
        return None

    def changed_findings(self, final: bool = False) -> list[dict]:
        return []

    @property
    def stats(self) -> Mapping[str, int]:
        return {}


class _Sink:
    kinds = ("event", "alert", "heartbeat", "rollup", "asset")

    def __init__(self) -> None:
        self.docs: list[tuple[str, dict]] = []

    def write(self, kind: str, doc: dict) -> None:
        self.docs.append((kind, doc))


def test_a_part_replaced_between_events_takes_the_next_ones() -> None:
    """``replace_later`` then a tick between two events (as pushed rules arrive on a live
    port): the events after it go to the new part only, and the old part's held alerts
    are released, not lost."""
    old, new = _Part("old"), _Part("new")
    detectors = Detectors([old])
    between: list[dict] = []  # alerts raised between events go to the caller's on_alert
    run = Run(_Engine(), detectors, None, live=True, on_alert=between.append)

    def events() -> Iterator[dict]:
        for n in range(6):
            if n == 3:
                detectors.replace_later(0, new)
                run.tick()  # a live port ticks between events
            yield {"n": n}

    alerts = list(run.process(events(), want_events=False))
    assert old.seen == [0, 1, 2] and new.seen == [3, 4, 5]
    assert between == [{"rule.name": "old", "n": 3}]
    assert alerts == [{"rule.name": "new", "n": 3}] and run.alerts == 2


def test_a_heartbeat_a_tick_sent_is_not_sent_again() -> None:
    """The capture clock passes an interval's end and a tick sends its heartbeat before the
    next event: the loop, which remembers when the next one is due, sends none more for it;
    the next interval's comes from the loop, once."""
    engine = _Engine()
    sink = _Sink()
    hb = Heartbeats(Context("s", "o"), interval_s=60.0)
    run = Run(engine, Detectors(), sink, store_events=False, heartbeats=hb)

    def events() -> Iterator[dict]:
        for n, ts in enumerate((1000.0, 1010.0, 1021.0, 1030.0, 1085.0, 1090.0)):
            engine.first_ts = engine.first_ts or ts
            engine.last_ts = ts
            if n == 2:
                run.tick()  # 1021: the interval ending at 1020 is due; the tick sends it
            yield {"n": n, "ics.pairing": "paired"}

    list(run.process(events(), want_events=False))
    beats = [doc for kind, doc in sink.docs if kind == "heartbeat"]
    assert [b["icsmon.sensor.reason"] for b in beats] == ["start", "interval", "interval"]
    assert [b["@timestamp"] for b in beats] == [1000.0, 1021.0, 1085.0]


def test_events_are_taken_one_at_a_time() -> None:
    """A live port's events never end: each is handled (and, asked for, handed back) before
    the next is taken from the source."""
    pulled: list[int] = []

    def endless() -> Iterator[dict]:
        n = 0
        while True:
            pulled.append(n)
            yield {"n": n, "ics.pairing": "paired"}
            n += 1

    run = Run(_Engine(), Detectors([_Part("p")]), None, live=True)
    out = run.process(endless(), want_events=True)
    assert next(out)["n"] == 0 and pulled == [0]
    assert next(out)["n"] == 1 and pulled == [0, 1]


def test_an_interrupted_replay_prints_the_block_it_was_processing() -> None:
    # ``replay --events --format jsonl`` into a pipe prints each block once the run is done
    # with it; a Ctrl-C during a block prints that block too (the run gave it to the sink)
    import io

    from icsmon.cmd_sensor import _Printed
    from icsmon.output import Printer

    raw = io.BytesIO()
    printer = Printer("jsonl", stream=io.TextIOWrapper(raw, encoding="utf-8"))
    blocks = [[{"n": 1}, {"n": 2}], [{"n": 3}], [{"n": 4}]]
    printed = _Printed(iter(blocks), printer)
    taken = iter(printed)
    assert next(taken) == blocks[0] and next(taken) == blocks[1]  # the first one printed
    printed.finish()  # interrupted in the second
    printed.finish()  # once
    printer.flush()
    assert raw.getvalue() == b'{"n":1}\n{"n":2}\n{"n":3}\n'


def test_a_replay_reads_its_clock_once_a_block() -> None:
    """A replay's clock is the engine's newest frame, which stands still while a block's
    events go by: the loop reads it once a block. A heartbeat that came due is sent once
    in its block (not for each of the block's events), at the block's time."""
    engine = _Engine()
    sink = _Sink()
    hb = Heartbeats(Context("s", "o"), interval_s=60.0)
    run = Run(engine, Detectors(), sink, store_events=False, heartbeats=hb)

    def blocks() -> Iterator[list[dict]]:
        for ts, size in ((1000.0, 3), (1050.0, 2), (1085.0, 4), (1130.0, 1), (1150.0, 2)):
            engine.first_ts = engine.first_ts or ts
            engine.last_ts = ts
            yield [{"n": n, "ics.pairing": "paired"} for n in range(size)]

    list(run.process_batches(blocks(), want_events=False))
    beats = [doc for kind, doc in sink.docs if kind == "heartbeat"]
    # intervals end on multiples of 60 s: 1020 (due in the second block), 1080, 1140
    assert [b["icsmon.sensor.reason"] for b in beats] == ["start"] + ["interval"] * 3
    assert [b["@timestamp"] for b in beats] == [1000.0, 1050.0, 1085.0, 1150.0]


def test_parts_that_raise_nothing_answer_one_shared_empty_list() -> None:
    """Rollups, the Sigma engine and the findings answer an event that closed or raised
    nothing with one shared empty list (no list made and freed per event); after a replay
    with the rule pack every one of them is still empty: no caller added to it."""
    from detectors import findings
    from detectors.sigma import engine as sigma_engine
    from icsmon.run import load_detectors
    from sensor import rollups as rollups_module
    from sensor.engine import Engine, EngineConfig
    from sensor.rollups import Rollups
    from tests.support import REPO

    engine = Engine(EngineConfig())
    detectors = load_detectors(None, False, None, None)
    rollups = Rollups(engine.ctx, 60.0)
    run = Run(engine, detectors, _Sink(), rollups=rollups, heartbeats=Heartbeats(engine.ctx))
    path = REPO / "pcaps" / "modbus" / "modbus_attack.pcap"  # raises alerts
    alerts = list(run.process_batches(engine.replay_batches([path]), want_events=False))
    assert alerts
    shared = (rollups_module._NONE_CLOSED, sigma_engine._NO_ALERTS, findings._NO_ALERTS)
    assert shared == ([], [], [])
    event = {"@timestamp": engine.last_ts, "network.protocol": "modbus", "event.action": "x"}
    assert rollups.add(event) is rollups.add(dict(event)) is rollups_module._NONE_CLOSED
    for part in detectors.parts:
        if isinstance(part, findings.FindingTracker):
            assert part.process(event) is findings._NO_ALERTS
        if isinstance(part, sigma_engine.SigmaEngine):
            assert part.process(event) is sigma_engine._NO_ALERTS
