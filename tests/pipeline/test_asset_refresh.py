"""Assets to the centre: an asset whose record did not change (only ``last_seen`` moved) is
re-sent after ``[sensor] asset_refresh_s`` (default an hour), not every minute; a change, a
new day or a clean stop sends it at once. The sensor's own store keeps every snapshot. Through
the real Kafka and Elasticsearch: fewer asset messages, the same final view at the centre."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from icsmon.cmd_sensor import SinkName, _open_sink, _retention
from icsmon.run import Detectors, Run
from pipeline.config import ConfigError, load_config
from pipeline.docs import flatten
from pipeline.query import AssetFilter
from pipeline.sinks import DEFAULT_ASSET_REFRESH_S, AssetRefresh
from pipeline.store import Store
from sensor.engine import Engine, EngineConfig
from sensor.timestamps import parse_timestamp
from tests.support.pipeline import drop_pipe, es_docs, make_pipe, require_services, topic_messages

REPO = Path(__file__).resolve().parents[2]
POLLING = REPO / "pcaps" / "polling" / "modbus_10hz.pcap.gz"  # 3 controllers, 10 Hz, 180 s
DAY = 86400.0


class Kept:
    def __init__(self) -> None:
        self.docs: list[tuple[str, dict]] = []
        self.closed = False

    def write(self, kind: str, doc: dict) -> None:
        self.docs.append((kind, doc))

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True

    def stats(self) -> dict[str, int]:
        return {"written": len(self.docs)}


def asset(last: float, peers: list[str], first: float = 1000.0) -> dict[str, Any]:
    return {
        "asset.id": "s:10.0.0.1",
        "host.ip": "10.0.0.1",
        "asset.peers": peers,
        "asset.first_seen": first,
        "asset.last_seen": last,
        "@timestamp": last,
        "event.kind": "asset",
    }


def test_an_unchanged_asset_waits_for_its_refresh_a_change_or_a_new_day() -> None:
    t0 = 21 * DAY - 2 * 3600 + 120.0  # 22:02, so the day ends within the hour after 23:04
    kept = Kept()
    refresh = AssetRefresh(kept, 3600)
    sent = lambda: [d["asset.last_seen"] for k, d in kept.docs if k == "asset"]  # noqa: E731
    refresh.write("asset", asset(t0, ["a"]))  # new: sent
    for minute in range(1, 60):  # last_seen moves every minute: held back
        refresh.write("asset", asset(t0 + 60 * minute, ["a"]))
    assert sent() == [t0]
    refresh.write("asset", asset(t0 + 3600, ["a"]))  # an hour after the last one sent
    refresh.write("asset", asset(t0 + 3660, ["a", "b"]))  # a new peer: at once
    refresh.write("asset", asset(t0 + 3720, ["a", "b"], first=900.0))  # earlier first_seen
    assert sent() == [t0, t0 + 3600, t0 + 3660, t0 + 3720]
    day_end = (t0 // DAY + 1) * DAY
    refresh.write("asset", asset(day_end - 1, ["a", "b"], first=900.0))  # held back
    refresh.write("asset", asset(day_end + 1, ["a", "b"], first=900.0))  # a new day: at once
    refresh.write("asset", asset(day_end + 61, ["a", "b"], first=900.0))
    refresh.write("alert", {"event.id": "x"})  # other kinds pass
    assert sent() == [t0, t0 + 3600, t0 + 3660, t0 + 3720, day_end + 1]
    assert refresh.stats()["assets_held_back"] == 59 + 2
    refresh.close()  # a clean stop: the newest held back goes, then the sink closes
    assert sent()[-1] == day_end + 61 and kept.closed
    assert [k for k, _ in kept.docs].count("alert") == 1
    every = AssetRefresh(Kept(), 0)  # 0: the old behaviour, every snapshot
    for minute in range(5):
        every.write("asset", asset(t0 + 60 * minute, ["a"]))
    assert len(every.sink.docs) == 5  # type: ignore[attr-defined]


def test_the_refresh_setting_is_checked() -> None:
    assert load_config(env={}).sensor.asset_refresh_s == DEFAULT_ASSET_REFRESH_S == 3600
    cfg = load_config(env={"ICSMON_SENSOR_ASSET_REFRESH_S": "900"})
    assert cfg.sensor.asset_refresh_s == 900
    for bad in (-1, 86401):
        with pytest.raises(ConfigError, match="asset_refresh_s must be between 0 and 86400"):
            load_config(env={}, overrides={"sensor": {"asset_refresh_s": bad}})


def _minutely(run: Run, events: Iterator[dict]) -> Iterator[dict]:
    """A live sensor's asset snapshots (``Run.tick``: once a minute) at every minute of
    capture time, so a replay of three minutes writes them as a sensor would."""
    next_at = None
    for event in events:
        ts = parse_timestamp(event.get("@timestamp"))
        if ts is not None:
            if next_at is None:
                next_at = ts + 60
            elif ts >= next_at:
                next_at += 60
                run.write_assets()
        yield event


def _sense(pipe, tmp_path: Path, refresh_s: float) -> tuple[dict[str, float], Path]:
    """The polling capture through the sensor's Kafka sink (its store beside it); the
    last_seen per asset in the sensor's own store at the end."""
    cfg = load_config(
        env={},
        overrides={
            **{s: dict(v) for s, v in _sections(pipe).items()},
            "sensor": {"asset_refresh_s": refresh_s},
        },
    )
    db = tmp_path / f"sensor-{refresh_s:g}.db"
    sink = _open_sink(
        SinkName.kafka, db, None, "site-a", cfg, _retention(cfg, True, None, None, None)
    )
    engine = Engine(EngineConfig(site="site-a", observer="sensor-a", organization="org-a"))
    run = Run(engine, Detectors(), sink, store_events=False)
    try:
        for _ in run.process(_minutely(run, engine.replay([POLLING])), want_events=False):
            pass
    finally:
        sink.close()
    with Store.open(db, readonly=True) as store:  # the sensor's own view: every snapshot
        _, docs = store.search_assets(AssetFilter())
    final = {}
    for doc in docs:
        flat = flatten(doc)
        final[str(flat["asset.id"])] = parse_timestamp(flat["asset.last_seen"]) or 0.0
    return final, db


def _sections(pipe) -> dict[str, dict[str, Any]]:
    c = pipe.cfg
    return {
        "kafka": {"topic_prefix": c.kafka.topic_prefix},
        "elasticsearch": {"index_prefix": c.elasticsearch.index_prefix},
        "spool": {"dir": c.spool.dir, "max_bytes": c.spool.max_bytes},
        "indexer": {"group_id": c.indexer.group_id},
    }


@pytest.mark.services
def test_the_centre_gets_fewer_asset_documents_and_the_same_final_view(tmp_path: Path) -> None:
    require_services()
    counts: dict[float, int] = {}
    for refresh_s in (0.0, DEFAULT_ASSET_REFRESH_S):
        pipe = make_pipe(tmp_path / f"r{refresh_s:g}")
        try:
            pipe.cli("index", "--setup")
            final, _ = _sense(pipe, tmp_path, refresh_s)
            assert len(final) == 4  # the HMI and three controllers
            messages = topic_messages(pipe, pipe.cfg.topic("asset"))
            counts[refresh_s] = len(messages)
            sent = [json.loads(m.value) for m in messages]
            # the centre, indexed: one document per asset (one day), the sensor's own view
            pipe.cli("index", "--once")
            centre = {
                h["_source"]["asset"]["id"]: parse_timestamp(h["_source"]["asset"]["last_seen"])
                for h in es_docs(pipe, "asset")
            }
            assert centre.keys() == final.keys()
            for asset_id, last in final.items():
                assert centre[asset_id] == pytest.approx(last, abs=1e-6), asset_id
            if refresh_s:
                # sent when new, then once more at the stop: the minutes between held back
                per_asset: dict[str, int] = {}
                for doc in sent:
                    per_asset[doc["asset"]["id"]] = per_asset.get(doc["asset"]["id"], 0) + 1
                assert per_asset == dict.fromkeys(final, 2)
        finally:
            drop_pipe(pipe)
    # without the refresh, every snapshot: at minutes 1 and 2 of the capture and at its end;
    # with it, when new and at the end (an hour-long run would send 2 instead of 61 each)
    assert counts == {0.0: 4 * 3, DEFAULT_ASSET_REFRESH_S: 4 * 2}, counts
