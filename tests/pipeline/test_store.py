"""The embedded store: round trips, filters, aggregations, merges, errors, concurrency."""

from __future__ import annotations

import json
import random
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from datetime import datetime
from pathlib import Path

import orjson
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from pipeline import store as store_module
from pipeline.docs import dumps
from pipeline.query import AlertFilter, AssetFilter
from pipeline.store import (
    APPLICATION_ID,
    SCHEMA_VERSION,
    Store,
    StoreError,
    iter_docs,
    merge_alert,
    merge_asset,
)
from pipeline.store import schema as store_schema
from sensor.timestamps import parse_timestamp as to_epoch
from sensor.timestamps import render_times
from tests.support import REPO
from tests.support.store_samples import BASE_TS, RULES, SITES, asset_doc, corpus, iso


def epoch(doc: dict, key: str = "@timestamp") -> float:
    return datetime.fromisoformat(doc[key]).timestamp()


@pytest.fixture(scope="module")
def docs() -> tuple[list[dict], list[dict], list[dict]]:
    return corpus()


@pytest.fixture(scope="module")
def filled(tmp_path_factory: pytest.TempPathFactory, docs) -> Path:
    """A store holding the whole corpus, written the way the sensor does (batches)."""
    events, alerts, assets = docs
    path = tmp_path_factory.mktemp("store") / "icsmon.db"
    with Store(path, batch_size=64, background_flush=False) as st:
        for ev in events:
            st.write("event", ev)
        for al in alerts:
            st.write("alert", al)
        for asset in assets:
            st.write("asset", asset)
    return path


@pytest.fixture()
def reader(filled: Path):
    st = Store.open(filled, readonly=True)
    yield st
    st.close()


def alert_matches(al: dict, flt: AlertFilter) -> bool:
    ts = epoch(al)
    return (
        (flt.since is None or ts >= flt.since)
        and (flt.until is None or ts < flt.until)
        and (flt.min_severity is None or al["event.severity"] >= flt.min_severity)
        and (not flt.sites or al["labels.site"] in flt.sites)
        and (flt.technique is None or flt.technique.upper() in al["threat.technique.id"])
        and (flt.rule_id is None or al["rule.id"] == flt.rule_id)
        and (flt.protocol is None or al["network.protocol"] == flt.protocol)
        and (flt.text is None or flt.text.lower() in al["rule.name"].lower())
        and (not flt.ids or al["event.id"] in flt.ids)
        and (flt.community_id is None or al["network.community_id"] == flt.community_id)
    )


def newest_first(docs: list[dict]) -> list[dict]:
    return sorted(docs, key=epoch, reverse=True)


# ---- round trips ---------------------------------------------------------------------------


def test_documents_round_trip_field_for_field(reader: Store, docs) -> None:
    events, alerts, assets = docs
    assert reader.counts() == {
        "event": len(events),
        "alert": len(alerts),
        "asset": len(assets),
        "finding": 0,
        "heartbeat": 0,
        "rollup": 0,
        "response": 0,
    }
    for ev in events:
        assert reader.get_event(ev["event.id"]) == ev
    for al in alerts:
        assert reader.get_alert(al["event.id"]) == al
    for asset in assets:
        assert reader.get_asset(asset["asset.id"]) == asset
    assert reader.get_alert("no-such-id") is None


def test_iter_docs_returns_everything_in_write_order(reader: Store, docs) -> None:
    events, alerts, assets = docs
    assert [d for _, d in iter_docs(reader, ["event"])] == events
    assert [d for _, d in iter_docs(reader, ["alert"])] == alerts


def test_values_json_lacks_a_type_for_are_kept_readably(tmp_path: Path) -> None:
    doc = {
        "@timestamp": "2026-11-26T10:00:00.000001Z",
        "event.id": "odd-1",
        "opcua.raw": b"\x00\xffAB",
        "opcua.value_u64": 2**64 - 1,
        "opcua.value_i64": -(2**63),
        "opcua.text": "锅炉温度 setpoint",
        "modbus.values": [0, 65535],
    }
    with Store(tmp_path / "s.db") as st:
        st.write("event", doc)
        st.flush()
        got = st.get_event("odd-1")
    assert got == {**doc, "opcua.raw": "00ff4142"}


def test_store_file_is_marked_versioned_and_in_wal_mode(filled: Path) -> None:
    conn = sqlite3.connect(filled)
    try:
        assert conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        conn.close()


def test_default_path_follows_env_then_user_data_dir(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("ICSMON_STORE", str(tmp_path / "env.db"))
    assert store_module.resolve_store_path(None) == tmp_path / "env.db"
    assert store_module.resolve_store_path(tmp_path / "x.db") == tmp_path / "x.db"
    monkeypatch.delenv("ICSMON_STORE")
    default = store_module.default_store_path()
    assert default.name == "icsmon.db" and default.parent.name == "icsmon"


# ---- alert queries -------------------------------------------------------------------------


FILTERS = [
    AlertFilter(),
    AlertFilter(min_severity=73),
    AlertFilter(sites=[SITES[0]]),
    AlertFilter(sites=[SITES[0], SITES[2]], min_severity=48),
    AlertFilter(technique="t0881"),
    AlertFilter(technique="T0836", protocol="opcua"),
    AlertFilter(rule_id=RULES[2][0]),
    AlertFilter(protocol="s7comm"),
    AlertFilter(text="LISTEN only"),
    AlertFilter(text="100%_"),  # LIKE wildcards in the text are literal
    AlertFilter(since=BASE_TS + 3600, until=BASE_TS + 7200),
    AlertFilter(since=BASE_TS + 5000, technique="T0855", sites=[SITES[1]]),
    AlertFilter(ids=[a["event.id"] for a in corpus()[1][::9]] + ["not-stored"]),
    AlertFilter(community_id=corpus()[1][4]["network.community_id"]),
]


@pytest.mark.parametrize("flt", FILTERS, ids=lambda f: repr(f)[12:70])
def test_search_alerts_filters_and_orders_newest_first(reader: Store, docs, flt) -> None:
    expected = newest_first([a for a in docs[1] if alert_matches(a, flt)])
    total, page = reader.search_alerts(flt)
    assert total == len(expected)
    assert [a["event.id"] for a in page] == [a["event.id"] for a in expected[: flt.limit]]


def test_pagination_walks_every_alert_once(reader: Store, docs) -> None:
    seen: list[str] = []
    offset = 0
    while True:
        total, page = reader.search_alerts(AlertFilter(limit=37, offset=offset))
        if not page:
            break
        assert total == len(docs[1])
        seen.extend(a["event.id"] for a in page)
        offset += len(page)
    assert seen == [a["event.id"] for a in newest_first(docs[1])]


def test_count_alerts_by_indexed_side_table_and_json_fields(reader: Store, docs) -> None:
    alerts = docs[1]
    flt = AlertFilter(sites=[SITES[0], SITES[1]])
    chosen = [a for a in alerts if alert_matches(a, flt)]

    def expected(values) -> list[tuple[str, int]]:
        counts = Counter(str(v) for v in values)
        return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))

    assert reader.count_alerts_by(flt, "rule.id", 50) == expected(a["rule.id"] for a in chosen)
    assert reader.count_alerts_by(flt, "event.severity") == expected(
        a["event.severity"] for a in chosen
    )
    techniques = [t for a in chosen for t in a["threat.technique.id"]]
    assert reader.count_alerts_by(flt, "threat.technique.id") == expected(techniques)
    assert (
        reader.count_alerts_by(AlertFilter(), "threat.technique.id", 3)
        == expected(t for a in alerts for t in a["threat.technique.id"])[:3]
    )
    assert reader.count_alerts_by(flt, "threat.tactic.name") == expected(
        t for a in chosen for t in a["threat.tactic.name"]
    )
    assert reader.count_alerts_by(flt, "rule.ruleset") == expected(
        a["rule.ruleset"] for a in chosen
    )
    # no column of its own: counted from the JSON document, lists element by element
    assert (
        reader.count_alerts_by(flt, "destination.ip", 5)
        == expected(a["destination.ip"] for a in chosen)[:5]
    )
    assert reader.count_alerts_by(AlertFilter(), "threat.tactic.name") == expected(
        t for a in alerts for t in a["threat.tactic.name"]
    )
    assert reader.count_alerts_by(AlertFilter(), "no.such.field") == []
    with pytest.raises(ValueError):
        reader.count_alerts_by(AlertFilter(), 'x"); DROP TABLE alerts; --')


def test_count_alerts_by_is_done_in_sql(reader: Store) -> None:
    """The plan aggregates inside SQLite (an index or a GROUP BY), it does not read documents
    into Python: the statement handed to SQLite groups, and only the buckets come back."""
    statements: list[str] = []
    reader._reader().set_trace_callback(statements.append)
    try:
        rows = reader.count_alerts_by(AlertFilter(), "labels.site")
    finally:
        reader._reader().set_trace_callback(None)
    assert len(rows) == len(SITES)
    grouped = [s for s in statements if "GROUP BY" in s]
    assert grouped and "count(*)" in grouped[0]


def test_queries_from_many_threads_at_once(reader: Store, docs) -> None:
    """The posture view sends its aggregations together from a thread pool: each thread gets
    its own connection and the same answers as one at a time."""
    from concurrent.futures import ThreadPoolExecutor

    calls = [
        lambda: reader.count_alerts_by(AlertFilter(), "threat.tactic.name"),
        lambda: reader.count_alerts_by_pair(AlertFilter(), "labels.site", "event.severity"),
        lambda: reader.alert_histogram(AlertFilter(), 600, "event.severity"),
        lambda: reader.search_alerts(AlertFilter(limit=20, sites=[SITES[1]])),
        lambda: reader.last_seen_by(AlertFilter(), "observer.name"),
        lambda: reader.search_assets(AssetFilter(role="modbus-server")),
    ] * 4
    serial = [call() for call in calls]
    with ThreadPoolExecutor(max_workers=8) as pool:
        parallel = list(pool.map(lambda call: call(), calls))
    assert parallel == serial
    assert len(reader._readers) > 1  # the threads did not share one connection


def test_alert_histogram_plain_and_split(reader: Store, docs) -> None:
    alerts = docs[1]
    interval = 1800
    plain = Counter(int(epoch(a) // interval) * interval for a in alerts)
    assert reader.alert_histogram(AlertFilter(), interval) == [
        (float(b), None, n) for b, n in sorted(plain.items())
    ]
    split: dict[int, Counter] = defaultdict(Counter)
    for a in alerts:
        split[int(epoch(a) // interval) * interval][a["network.protocol"]] += 1
    want = []
    for bucket in sorted(split):
        top = sorted(split[bucket].items(), key=lambda kv: (-kv[1], kv[0]))[:2]
        want.extend((float(bucket), v, n) for v, n in top)
    assert reader.alert_histogram(AlertFilter(), interval, "network.protocol", size=2) == want


def test_count_alerts_by_pair(reader: Store, docs) -> None:
    alerts = docs[1]
    totals = Counter(a["labels.site"] for a in alerts)
    pairs: dict[str, Counter] = defaultdict(Counter)
    for a in alerts:
        for t in a["threat.technique.id"]:
            pairs[a["labels.site"]][t] += 1
    top_sites = sorted(totals.items(), key=lambda kv: (-kv[1], kv[0]))[:2]
    want = []
    for site, _ in top_sites:
        top = sorted(pairs[site].items(), key=lambda kv: (-kv[1], kv[0]))[:3]
        want.extend((site, t, n) for t, n in top)
    got = reader.count_alerts_by_pair(AlertFilter(), "labels.site", "threat.technique.id", 2, 3)
    assert got == want


def test_last_seen_by_observer_for_events_and_alerts(reader: Store, docs) -> None:
    events, alerts, _ = docs
    for kind, source in (("event", events), ("alert", alerts)):
        newest: dict[str, float] = {}
        for d in source:
            newest[d["observer.name"]] = max(newest.get(d["observer.name"], 0.0), epoch(d))
        want = sorted(newest.items(), key=lambda kv: (-kv[1], kv[0]))
        got = reader.last_seen_by(AlertFilter(), "observer.name", kind=kind)
        assert [v for v, _ in got] == [v for v, _ in want]
        assert [t for _, t in got] == pytest.approx([t for _, t in want], abs=1e-6)
    with pytest.raises(ValueError):
        reader.last_seen_by(AlertFilter(), "observer.name", kind="asset")


def test_search_events_filters(reader: Store, docs) -> None:
    events = docs[0]
    flt = AlertFilter(sites=[SITES[2]], protocol="modbus", since=BASE_TS + 1000, limit=1000)
    want = newest_first(
        [
            e
            for e in events
            if e["labels.site"] == SITES[2]
            and e["network.protocol"] == "modbus"
            and epoch(e) >= BASE_TS + 1000
        ]
    )
    total, page = reader.search_events(flt)
    assert total == len(want) and page == want
    total, page = reader.search_events(AlertFilter(text="plc-", limit=1000))
    assert total == sum(1 for e in events if "plc-" in e["event.action"])
    flow = events[7]["network.community_id"]
    total, page = reader.search_events(AlertFilter(community_id=flow, limit=1000))
    assert total == sum(1 for e in events if e["network.community_id"] == flow) > 0
    assert all(e["network.community_id"] == flow for e in page)
    wanted = [e["event.id"] for e in events[10:20]]
    total, page = reader.search_events(AlertFilter(ids=wanted))
    assert total == 10 and {e["event.id"] for e in page} == set(wanted)
    # events carry no severity: a severity filter matches none of them
    assert reader.search_events(AlertFilter(min_severity=1))[0] == 0


# ---- assets --------------------------------------------------------------------------------


def test_search_assets_filters_and_sorts_by_site_then_ip(reader: Store, docs) -> None:
    import ipaddress

    assets = docs[2]
    total, page = reader.search_assets(AssetFilter())
    assert total == len(assets)
    want = sorted(assets, key=lambda a: (a["labels.site"], ipaddress.ip_address(a["host.ip"])))
    assert [a["asset.id"] for a in page] == [a["asset.id"] for a in want]

    total, page = reader.search_assets(AssetFilter(sites=[SITES[1]], role="s7comm-server"))
    want_ids = {
        a["asset.id"]
        for a in assets
        if a["labels.site"] == SITES[1] and "s7comm-server" in a["asset.roles"]
    }
    assert total == len(want_ids) and {a["asset.id"] for a in page} == want_ids

    total, page = reader.search_assets(AssetFilter(vendor="siem"))
    assert total == sum(1 for a in assets if a.get("ics.device.vendor") == "Siemens") > 0

    cut = BASE_TS + 3 * 3600
    total, _ = reader.search_assets(AssetFilter(last_seen_since=cut))
    assert total == sum(1 for a in assets if epoch(a, "asset.last_seen") >= cut)
    total, _ = reader.search_assets(AssetFilter(first_seen_since=BASE_TS + 600))
    assert total == sum(1 for a in assets if epoch(a, "asset.first_seen") >= BASE_TS + 600)

    total, page = reader.search_assets(AssetFilter(limit=5, offset=5))
    assert total == len(assets) and len(page) == 5


def test_merge_asset_rules() -> None:
    site = SITES[0]
    old = asset_doc(
        site,
        "10.0.1.10",
        ["modbus-server"],
        ["10.0.0.5"],
        BASE_TS,
        BASE_TS + 100,
        **{
            "ics.device.vendor": "Schneider Electric",
            "ics.device.firmware": "v2.1",
            "host.mac": "00-80-F4-01-02-03",
        },
    )
    newer = asset_doc(
        site,
        "10.0.1.10",
        ["s7comm-server", "modbus-server"],
        ["10.0.0.6"],
        BASE_TS + 50,
        BASE_TS + 500,
        **{"ics.device.firmware": "v2.2", "ics.device.vendor": ""},
    )
    merged = merge_asset(old, newer)
    assert merged["asset.roles"] == ["modbus-server", "s7comm-server"]
    assert merged["asset.peers"] == ["10.0.0.5", "10.0.0.6"]
    assert merged["asset.protocols"] == ["modbus", "s7comm"]
    assert merged["asset.first_seen"] == old["asset.first_seen"]
    assert merged["asset.last_seen"] == newer["asset.last_seen"]
    assert merged["ics.device.firmware"] == "v2.2"  # newer non-empty value wins
    assert merged["ics.device.vendor"] == "Schneider Electric"  # empty never erases
    assert merged["host.mac"] == "00-80-F4-01-02-03"
    # an older observation arriving late fills gaps but does not overwrite identity
    older = asset_doc(
        site,
        "10.0.1.10",
        ["modbus-server"],
        [],
        BASE_TS - 900,
        BASE_TS - 800,
        **{"ics.device.firmware": "v1.0", "ics.device.product": "M340"},
    )
    merged2 = merge_asset(merged, older)
    assert merged2["ics.device.firmware"] == "v2.2"
    assert merged2["ics.device.product"] == "M340"
    assert merged2["asset.first_seen"] == older["asset.first_seen"]
    assert merged2["asset.last_seen"] == newer["asset.last_seen"]


def test_assets_upsert_across_and_within_batches(tmp_path: Path) -> None:
    site = SITES[1]
    observations = [
        asset_doc(site, "10.1.1.10", ["modbus-server"], [f"10.1.0.{i}"], BASE_TS + i, BASE_TS + i)
        for i in range(2, 12)
    ]
    observations.append(
        asset_doc(
            site,
            "10.1.1.10",
            ["opcua-server"],
            [],
            BASE_TS + 99,
            BASE_TS + 99,
            **{"ics.device.application_uri": "urn:plant:boiler"},
        )
    )
    with Store(tmp_path / "a.db", batch_size=4, background_flush=False) as st:
        for doc in observations:
            st.write("asset", doc)
        st.flush()
        total, page = st.search_assets(AssetFilter(role="opcua-server"))
        assert total == 1
        (asset,) = page
        assert st.search_assets(AssetFilter(role="modbus-server"))[0] == 1
    assert asset["asset.peers"] == [f"10.1.0.{i}" for i in range(2, 12)]
    assert asset["asset.roles"] == ["modbus-server", "opcua-server"]
    assert asset["asset.first_seen"] == iso(BASE_TS + 2)
    assert asset["asset.last_seen"] == iso(BASE_TS + 99)
    assert asset["ics.device.application_uri"] == "urn:plant:boiler"


# ---- de-duplication ------------------------------------------------------------------------


def test_replayed_documents_are_not_duplicated(tmp_path: Path, docs) -> None:
    events, alerts, _ = docs
    path = tmp_path / "d.db"
    for attempt in range(2):  # the same capture replayed twice, or a batch redelivered
        with Store(path, background_flush=False) as st:
            for ev in events[:50]:
                st.write("event", ev)
            for al in alerts[:20]:
                st.write("alert", al)
            st.flush()
            stats = st.stats()
        stored = (50, 20, 0) if attempt == 0 else (0, 0, 70)
        assert (stats["events"], stats["alerts"], stats["duplicates"]) == stored
    with Store.open(path, readonly=True) as st:
        assert st.counts()["event"] == 50
        assert st.counts()["alert"] == 20
        for al in alerts[:20]:
            assert st.get_alert(al["event.id"])["icsmon.alert.count"] == 1


def test_an_alert_fired_again_adds_to_its_count(tmp_path: Path, docs) -> None:
    first = docs[1][0]
    again = {**first, "icsmon.alert.event_ids": ["later-event"], "event.severity": 99}
    with Store(tmp_path / "c.db", background_flush=False) as st:
        st.write("alert", first)
        st.flush()
        st.write("alert", again)
        st.write("alert", again)  # delivered twice: counted once
        st.flush()
        stored = st.get_alert(first["event.id"])
        stats = st.stats()
        assert st.search_alerts(AlertFilter(min_severity=99, rule_id=first["rule.id"]))[0] >= 1
    assert stored["icsmon.alert.count"] == 2
    assert stored["icsmon.alert.event_ids"] == [*first["icsmon.alert.event_ids"], "later-event"]
    assert stored["event.severity"] == 99
    assert stats["alerts"] == 1 and stats["alerts_merged"] == 1 and stats["duplicates"] == 1


def test_merge_alert_widens_its_time_span() -> None:
    stored = {
        "event.id": "x",
        "event.start": "2026-11-26T10:00:00Z",
        "event.end": "2026-11-26T10:01:00Z",
        "icsmon.alert.event_ids": ["e1"],
    }
    later = {
        "event.id": "x",
        "event.start": "2026-11-26T10:05:00Z",
        "event.end": "2026-11-26T10:06:00Z",
        "icsmon.alert.event_ids": ["e9"],
    }
    merged = merge_alert(stored, later)
    assert merged is not None
    assert (merged["event.start"], merged["event.end"]) == (
        stored["event.start"],
        later["event.end"],
    )


def test_merge_alert_without_event_ids_counts_each_arrival() -> None:
    a = {"event.id": "x", "rule.id": "r"}
    merged = merge_alert(a, {"event.id": "x", "icsmon.alert.count": 3})
    assert merged is not None and merged["icsmon.alert.count"] == 4
    capped = merge_alert(
        {"event.id": "x", "icsmon.alert.event_ids": [str(i) for i in range(100)]},
        {"event.id": "x", "icsmon.alert.event_ids": ["new"]},
    )
    assert capped is not None and len(capped["icsmon.alert.event_ids"]) == 100


# ---- batching, retention, failures ---------------------------------------------------------


def test_batches_commit_every_n_documents(tmp_path: Path, docs) -> None:
    path = tmp_path / "b.db"
    st = Store(path, batch_size=10, flush_interval=0, background_flush=False)
    try:
        with Store.open(path, readonly=True) as rd:
            for ev in docs[0][:9]:
                st.write("event", ev)
            assert rd.counts()["event"] == 0  # still pending
            st.write("event", docs[0][9])
            assert rd.counts()["event"] == 10
            st.write("event", docs[0][10])
            assert st.stats()["pending"] == 1
    finally:
        st.close()
    with Store.open(path, readonly=True) as rd:
        assert rd.counts()["event"] == 11


def test_a_quiet_sensor_is_flushed_by_the_background_thread(tmp_path: Path, docs) -> None:
    path = tmp_path / "q.db"
    st = Store(path, batch_size=1000, flush_interval=0.05)
    try:
        st.write("alert", docs[1][0])
        with Store.open(path, readonly=True) as rd:
            deadline = time.monotonic() + 30  # a bound against hanging, not a timing assert
            while rd.counts()["alert"] == 0 and time.monotonic() < deadline:
                time.sleep(0.02)
            assert rd.counts()["alert"] == 1
    finally:
        st.close()


def test_retention_keeps_the_newest_events_and_every_alert(tmp_path: Path, docs) -> None:
    events, alerts, _ = docs
    events = list(events)
    random.Random(5).shuffle(events)  # sensors' batches arrive out of time order
    path = tmp_path / "r.db"
    with Store(path, batch_size=50, max_events=100, background_flush=False) as st:
        for ev in events:
            st.write("event", ev)
        for al in alerts:
            st.write("alert", al)
        st.flush()
        total, kept = st.search_events(AlertFilter(limit=1000))
        assert st.stats()["pruned"] == len(events) - 100
    newest = newest_first(events)[:100]
    assert total == 100
    assert {e["event.id"] for e in kept} == {e["event.id"] for e in newest}
    with Store.open(path, readonly=True) as rd:
        assert rd.counts()["alert"] == len(alerts)


def test_a_locked_file_keeps_the_batch_and_retries(tmp_path: Path, docs) -> None:
    path = tmp_path / "l.db"
    st = Store(path, batch_size=1000, flush_interval=0, busy_timeout=0.05, max_pending=30)
    blocker = sqlite3.connect(path, isolation_level=None)
    try:
        blocker.execute("BEGIN EXCLUSIVE")
        for al in docs[1][:5]:
            st.write("alert", al)
        for ev in docs[0][:40]:
            st.write("event", ev)
        st.flush()  # must not raise
        stats = st.stats()
        assert stats["errors"] == 1
        # over max_pending: events are shed first, alerts kept
        assert stats["pending"] == 30 and stats["dropped"] == 15
        blocker.execute("ROLLBACK")
        st.flush()
        assert st.counts() == {
            "event": 25,
            "alert": 5,
            "asset": 0,
            "finding": 0,
            "heartbeat": 0,
            "rollup": 0,
            "response": 0,
        }
    finally:
        blocker.close()
        st.close()


def test_a_full_disk_keeps_the_batch_until_there_is_room(tmp_path: Path, docs) -> None:
    """SQLite's own "database or disk is full" (the file capped with max_page_count): the
    batch waits, nothing is lost, and it lands once there is room again."""
    path = tmp_path / "full.db"
    st = Store(path, batch_size=10_000, flush_interval=0)
    try:
        pages = st._conn.execute("PRAGMA page_count").fetchone()[0]
        st._conn.execute(f"PRAGMA max_page_count = {pages + 2}")
        for ev in docs[0]:
            st.write("event", ev)
        st.flush()
        stats = st.stats()
        assert stats["errors"] == 1 and stats["pending"] == len(docs[0])
        assert stats["dropped"] == 0 and stats["rejected"] == 0
        assert st.counts()["event"] == 0
        st._conn.execute("PRAGMA max_page_count = 1073741823")
        st.flush()
        assert st.counts()["event"] == len(docs[0]) and st.stats()["pending"] == 0
    finally:
        st.close()


def test_close_reports_documents_it_could_not_write(tmp_path: Path, docs) -> None:
    path = tmp_path / "x.db"
    st = Store(path, flush_interval=0, busy_timeout=0.05)
    blocker = sqlite3.connect(path, isolation_level=None)
    try:
        blocker.execute("BEGIN EXCLUSIVE")
        st.write("alert", docs[1][0])
        with pytest.raises(StoreError) as info:
            st.close()
        assert str(path) in str(info.value) and "1 documents could not be written" in str(
            info.value
        )
        assert "\n" not in str(info.value)
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()


def test_reads_while_another_process_writes(tmp_path: Path) -> None:
    """A sensor process writes batches while queries run: every read sees whole batches."""
    path = tmp_path / "w.db"
    Store(path).close()
    writer = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys\n"
            "sys.path.insert(0, sys.argv[2])\n"
            "from pipeline.store import Store\n"
            "from tests.support.store_samples import corpus\n"
            "events, alerts, _ = corpus(2000, seed=11)\n"
            "with Store(sys.argv[1], batch_size=100, flush_interval=0) as st:\n"
            "    for ev in events:\n"
            "        st.write('event', ev)\n",
            str(path),
            str(REPO),
        ],
        cwd=REPO,
    )
    seen: list[int] = []
    try:
        with Store.open(path, readonly=True) as rd:
            while writer.poll() is None:
                total, _ = rd.search_events(AlertFilter(limit=1))
                seen.append(total)
            assert writer.wait() == 0
            final = rd.search_events(AlertFilter(limit=1))[0]
    finally:
        if writer.poll() is None:
            writer.kill()
    assert final == 2000
    assert all(n % 100 == 0 for n in seen)  # only whole batches are ever visible
    assert seen == sorted(seen)


# ---- bad files -----------------------------------------------------------------------------


def one_line_error(path: Path, **kw) -> str:
    with pytest.raises(StoreError) as info:
        Store(path, **kw)
    message = str(info.value)
    assert message.startswith(str(path)) and "\n" not in message
    return message


def test_a_file_that_is_not_sqlite(tmp_path: Path) -> None:
    path = tmp_path / "capture.pcap"
    path.write_bytes(bytes.fromhex("d4c3b2a1020004000000000000000000ffff000001000000") * 200)
    assert "not an SQLite database" in one_line_error(path, readonly=True)
    assert "not an SQLite database" in one_line_error(path)


def test_an_sqlite_file_of_another_program(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE t (x)")
    conn.commit()
    conn.close()
    assert "not an icsmon store" in one_line_error(path)
    assert "not an icsmon store" in one_line_error(path, readonly=True)


def test_a_corrupt_store(filled: Path, tmp_path: Path) -> None:
    path = tmp_path / "corrupt.db"
    data = bytearray(filled.read_bytes())
    page = int.from_bytes(data[16:18], "big")
    # overwrite the pages after the schema page with noise, as a failing disk would
    for offset in range(page * 2, len(data) - page, page * 3):
        data[offset : offset + page] = bytes((i * 37 + 11) % 256 for i in range(page))
    path.write_bytes(bytes(data))
    try:
        st = Store.open(path, readonly=True)
    except StoreError as exc:
        message = str(exc)
    else:
        with pytest.raises(StoreError) as info:
            for i in range(0, 400, 50):
                st.search_events(AlertFilter(limit=50, offset=i))
                st.search_alerts(AlertFilter(limit=1000))
                st.count_alerts_by(AlertFilter(), "destination.ip")
        st.close()
        message = str(info.value)
    assert message.startswith(str(path)) and "\n" not in message
    assert "corrupt" in message or "not an" in message


def test_a_damaged_header(filled: Path, tmp_path: Path) -> None:
    path = tmp_path / "header.db"
    data = bytearray(filled.read_bytes())
    data[0:16] = b"garbage garbage!"
    path.write_bytes(bytes(data))
    assert "not an SQLite database" in one_line_error(path, readonly=True)


def test_missing_empty_and_directory(tmp_path: Path) -> None:
    assert "no icsmon store here" in one_line_error(tmp_path / "nope.db", readonly=True)
    (tmp_path / "empty.db").write_bytes(b"")
    assert "empty file" in one_line_error(tmp_path / "empty.db", readonly=True)
    Store(tmp_path / "empty.db").close()  # a writable open turns an empty file into a store
    Store.open(tmp_path / "empty.db", readonly=True).close()
    assert "is a directory" in one_line_error(tmp_path)


def test_schema_versions_newer_refused_older_migrated(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "v.db"
    Store(path).close()
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    assert "newer icsmon" in one_line_error(path, readonly=True)

    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    conn.close()
    ran: list[int] = []

    def add_column(c: sqlite3.Connection) -> None:
        c.execute("ALTER TABLE alerts ADD COLUMN workflow_state TEXT")
        ran.append(1)

    monkeypatch.setattr(store_schema, "SCHEMA_VERSION", SCHEMA_VERSION + 1)
    monkeypatch.setitem(store_schema.MIGRATIONS, SCHEMA_VERSION, add_column)
    assert "open it once read-write" in one_line_error(path, readonly=True)
    Store(path).close()
    assert ran == [1]
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION + 1
    assert "workflow_state" in [r[1] for r in conn.execute("PRAGMA table_info(alerts)")]
    conn.close()


def test_two_processes_creating_one_store(tmp_path: Path) -> None:
    """Several sensors started at once on a new file: the one that loses the race to create
    the schema finds it made and uses it."""
    path = tmp_path / "race.db"
    code = (
        "import sys\n"
        "sys.path.insert(0, sys.argv[2])\n"
        "from pipeline.store import Store\n"
        "with Store(sys.argv[1], flush_interval=0) as st:\n"
        "    for i in range(200):\n"
        "        st.write('event', {'event.id': f'{sys.argv[3]}-{i}', '@timestamp': i})\n"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", code, str(path), str(REPO), f"p{n}"])
        for n in range(4)
    ]
    assert [p.wait(timeout=120) for p in procs] == [0, 0, 0, 0]
    with Store.open(path, readonly=True) as st:
        assert st.counts()["event"] == 800
    # the losing side of the race, made deterministic: the schema exists when it gets the lock
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        store_schema.create(conn)
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    finally:
        conn.close()


# The layout version 1 stores were written with, kept to test the upgrade path.
V1_SCHEMA = """
CREATE TABLE events (rowid INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, ts REAL, site TEXT,
    protocol TEXT, action TEXT, observer TEXT, doc TEXT NOT NULL);
CREATE INDEX events_ts ON events(ts);
CREATE INDEX events_observer_ts ON events(observer, ts);
CREATE TABLE alerts (rowid INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, ts REAL,
    severity INTEGER, site TEXT, rule_id TEXT, rule_name TEXT, protocol TEXT, observer TEXT,
    org TEXT, doc TEXT NOT NULL);
CREATE INDEX alerts_ts ON alerts(ts);
CREATE INDEX alerts_site_ts ON alerts(site, ts);
CREATE INDEX alerts_severity ON alerts(severity);
CREATE INDEX alerts_rule ON alerts(rule_id);
CREATE INDEX alerts_protocol ON alerts(protocol);
CREATE TABLE alert_techniques (technique TEXT NOT NULL,
    alert_rowid INTEGER NOT NULL REFERENCES alerts(rowid),
    PRIMARY KEY (technique, alert_rowid)) WITHOUT ROWID;
CREATE INDEX alert_techniques_alert ON alert_techniques(alert_rowid);
CREATE TABLE assets (id TEXT PRIMARY KEY, site TEXT, ip TEXT, ip_key TEXT, vendor TEXT,
    first_seen REAL, last_seen REAL, doc TEXT NOT NULL);
CREATE INDEX assets_site_ip ON assets(site, ip_key);
CREATE TABLE asset_roles (role TEXT NOT NULL, asset_id TEXT NOT NULL REFERENCES assets(id),
    PRIMARY KEY (role, asset_id)) WITHOUT ROWID;
"""


def test_a_version_1_store_is_upgraded_in_place(tmp_path: Path, docs) -> None:
    """A store in the version 1 layout (documents inline, no community_id) is upgraded step
    by step on a read-write open; everything in it reads back and the new filters work."""
    events, alerts, _ = docs
    path = tmp_path / "v1.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.executescript(V1_SCHEMA)
    conn.executemany(
        "INSERT INTO events (id, ts, site, protocol, action, observer, doc) VALUES (?,?,?,?,?,?,?)",
        [
            (
                e["event.id"],
                epoch(e),
                e["labels.site"],
                e["network.protocol"],
                e["event.action"],
                e["observer.name"],
                json.dumps(e),
            )
            for e in events[:60]
        ],
    )
    for a in alerts[:30]:
        cur = conn.execute(
            "INSERT INTO alerts (id, ts, severity, site, rule_id, rule_name, protocol, observer, "
            "org, doc) VALUES (?,?,?,?,?,?,?,?,?,?)",
            (
                a["event.id"],
                epoch(a),
                a["event.severity"],
                a["labels.site"],
                a["rule.id"],
                a["rule.name"],
                a["network.protocol"],
                a["observer.name"],
                a["organization.id"],
                json.dumps(a),
            ),
        )
        conn.executemany(
            "INSERT INTO alert_techniques VALUES (?, ?)",
            [(t, cur.lastrowid) for t in a["threat.technique.id"]],
        )
    conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    conn.execute("PRAGMA user_version = 1")
    conn.close()

    assert "older" in one_line_error(path, readonly=True)
    Store(path).close()  # a read-write open upgrades
    with Store.open(path, readonly=True) as st:
        assert [st.get_event(e["event.id"]) for e in events[:60]] == events[:60]
        assert [st.get_alert(a["event.id"]) for a in alerts[:30]] == alerts[:30]
        flow = alerts[3]["network.community_id"]
        total, page = st.search_alerts(AlertFilter(community_id=flow))
        assert total == sum(1 for a in alerts[:30] if a["network.community_id"] == flow) > 0
        flow = events[5]["network.community_id"]
        total, _ = st.search_events(AlertFilter(community_id=flow))
        assert total == sum(1 for e in events[:60] if e["network.community_id"] == flow)
        assert st.count_alerts_by(AlertFilter(), "threat.tactic.name") == sorted(
            Counter(t for a in alerts[:30] for t in a["threat.tactic.name"]).items(),
            key=lambda kv: (-kv[1], kv[0]),
        )
        assert st.count_alerts_by(AlertFilter(), "rule.ruleset") == [("sigma", 30)]
        assert st.count_alerts_by(AlertFilter(), "destination.port") == sorted(
            Counter(str(a["destination.port"]) for a in alerts[:30]).items(),
            key=lambda kv: (-kv[1], kv[0]),
        )
    with Store(path, background_flush=False) as st:  # and it takes new documents
        st.write("event", events[60])
        st.flush()
        assert st.get_event(events[60]["event.id"]) == events[60]
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert "doc" not in [r[1] for r in conn.execute("PRAGMA table_info(events)")]
    conn.close()
    Store(tmp_path / "new.db").close()
    assert schema_shape(path) == schema_shape(tmp_path / "new.db")


# The events' tables of schema version 7 (documents one per row, times as text).
V7_EVENTS = """
CREATE TABLE event_docs (rowid INTEGER PRIMARY KEY, doc TEXT NOT NULL);
CREATE INDEX events_observer_ts ON events(observer, ts);
CREATE INDEX events_community ON events(community_id);
"""


def events_as_version_8(conn: sqlite3.Connection) -> None:
    """The events' table of a store as schema 8 and before had it (a UNIQUE id, no key
    entries), with the rows it holds."""
    conn.executescript(
        """
        CREATE TABLE events_8 (rowid INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, ts REAL,
            site TEXT, protocol TEXT, action TEXT, observer TEXT, community_id TEXT);
        INSERT INTO events_8 SELECT * FROM events;
        DROP TABLE events;
        ALTER TABLE events_8 RENAME TO events;
        CREATE INDEX events_ts ON events(ts);
        DROP TABLE event_keys;
        PRAGMA user_version = 8;
        """
    )


def write_as_version_7(path: Path, events: list[dict], alerts: list[dict] = ()) -> None:
    """A store as schema 7 kept ``events``: a row each, the document (times rendered as
    text) in ``event_docs`` under the same rowid (and ``alerts`` as it kept them too)."""
    with Store(path) as st:
        for alert in alerts:
            st.write("alert", alert)
    conn = sqlite3.connect(path, isolation_level=None)
    events_as_version_8(conn)
    for newer in ("event_flows", "event_blocks", "alert_events"):
        conn.execute(f"DROP TABLE {newer}")
    conn.executescript(V7_EVENTS)
    conn.execute("BEGIN")
    for doc in events:
        rendered = render_times(doc)
        cur = conn.execute(
            "INSERT INTO events (id, ts, site, protocol, action, observer, community_id) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                doc["event.id"],
                to_epoch(doc["@timestamp"]),
                doc["labels.site"],
                doc["network.protocol"],
                doc["event.action"],
                doc["observer.name"],
                doc["network.community_id"],
            ),
        )
        conn.execute(
            "INSERT INTO event_docs (rowid, doc) VALUES (?, ?)",
            (cur.lastrowid, dumps(rendered).decode()),
        )
    conn.execute("COMMIT")
    conn.execute("PRAGMA user_version = 7")
    conn.close()


def test_events_of_a_version_7_store_read_back_the_same_after_the_upgrade(
    tmp_path: Path, docs
) -> None:
    """Events stored under schema 7 (documents one per row) read back exactly as a store
    written by this version reads the same events: by id, by search, by a hunt's scan, in
    export; across holes retention left, and with blocks a migrated store goes on filling."""
    events, alerts, _ = docs
    # times as the sensor has them (numbers) for some, as text for others
    events = [
        {**e, "@timestamp": to_epoch(e["@timestamp"])} if i % 3 == 0 else e
        for i, e in enumerate(events)
    ]
    old, new = tmp_path / "v7.db", tmp_path / "v8.db"
    write_as_version_7(old, events, alerts)
    gone = {e["event.id"] for e in events[100:140]} | {events[7]["event.id"]}
    conn = sqlite3.connect(old, isolation_level=None)
    for table in ("event_docs", "events"):  # holes, as retention makes them
        conn.execute(
            f"DELETE FROM {table} WHERE rowid IN (SELECT rowid FROM events WHERE id IN "
            "(SELECT value FROM json_each(?)))",
            (json.dumps(sorted(gone)),),
        )
    conn.close()
    kept = [e for e in events if e["event.id"] not in gone]
    with Store(new, batch_size=64, background_flush=False) as st:
        for ev in kept:
            st.write("event", ev)
    Store(old).close()  # a read-write open upgrades
    assert schema_shape(old) == schema_shape(new)
    flow = kept[5]["network.community_id"]
    filters = [
        AlertFilter(limit=1000),
        AlertFilter(limit=17, offset=30),
        AlertFilter(community_id=flow, limit=1000),
        AlertFilter(sites=[SITES[1]], protocol="modbus", limit=1000),
        AlertFilter(ids=[e["event.id"] for e in kept[::9]], limit=1000),
        AlertFilter(text="read", since=to_epoch(kept[50]["@timestamp"]), limit=1000),
    ]
    with Store.open(old, readonly=True) as a, Store.open(new, readonly=True) as b:
        for ev in events:
            assert a.get_event(ev["event.id"]) == b.get_event(ev["event.id"])
            expected = None if ev["event.id"] in gone else render_times(ev)
            assert a.get_event(ev["event.id"]) == expected
        for flt in filters:
            assert a.search_events(flt) == b.search_events(flt)
        assert a.search_events(filters[2])[0] > 0
        assert list(a.scan_events()) == list(b.scan_events())
        assert list(a.scan_events()) == [
            {**render_times(e), "@timestamp": to_epoch(e["@timestamp"])} for e in kept
        ]
        assert [d for _, d in iter_docs(a, ["event"])] == [render_times(e) for e in kept]
        # alerts' triggering events, for a hunt's "already raised" check
        for alert in alerts[:50]:
            (trigger,) = alert["icsmon.alert.event_ids"][:1]
            assert a.alert_raised("not-this-id", alert["rule.id"], [trigger, "x"])
            assert not a.alert_raised("not-this-id", alert["rule.id"] + "-other", [trigger])
        assert not a.alert_raised("not-this-id", alerts[0]["rule.id"], ["no-such-event"])
    more = [{**e, "event.id": e["event.id"] + "-again"} for e in events[:300]]
    with Store(old, batch_size=100, background_flush=False) as st:  # and it takes new events
        for ev in more:
            st.write("event", ev)
        st.flush()
        assert [st.get_event(e["event.id"]) for e in more] == [render_times(e) for e in more]
        assert st.counts()["event"] == len(kept) + len(more)


def schema_shape(path: Path) -> dict[str, list]:
    """Tables with their columns, and indexes with theirs: what a query can rely on."""
    conn = sqlite3.connect(path)
    try:
        shape: dict[str, list] = {}
        for kind, name in conn.execute("SELECT type, name FROM sqlite_master ORDER BY name"):
            if name.startswith("sqlite_"):
                continue
            pragma = "table_info" if kind == "table" else "index_info"
            rows = conn.execute(f"PRAGMA {pragma}({name})").fetchall()
            shape[f"{kind} {name}"] = [r[1:3] if kind == "table" else r[2] for r in rows]
        return shape
    finally:
        conn.close()


def test_readonly_store_refuses_writes(filled: Path) -> None:
    with Store.open(filled, readonly=True) as st:
        with pytest.raises(StoreError):
            st.write("event", {"event.id": "x"})
        with pytest.raises(ValueError):
            Store.write(st, "bogus", {})


# ---- whatever the documents hold -----------------------------------------------------------

_FIELDS = st.sampled_from(
    [
        "@timestamp",
        "event.id",
        "event.severity",
        "labels.site",
        "network.protocol",
        "network.community_id",
        "observer.name",
        "rule.id",
        "rule.name",
        "threat.technique.id",
        "asset.id",
        "asset.roles",
        "asset.first_seen",
        "asset.last_seen",
        "host.ip",
        "modbus.values",
        "opcua.value",
    ]
)
_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats()
    | st.text(max_size=20)
    | st.sampled_from(["2026-11-26T10:00:00Z", "10.0.0.1", "T0855", "not-a-time", ""])
)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)
_DOCS = st.dictionaries(_FIELDS, _VALUES, max_size=10)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(["event", "alert", "asset"]), _DOCS), max_size=12))
@example([("event", {"event.id": "0", "@timestamp": 0})])  # a number time comes back as text
@example([("event", {"event.id": "\x00"})])  # SQLite's JSON functions end a text at U+0000
def test_malformed_documents_never_stop_the_store(batch: list[tuple[str, dict]]) -> None:
    """Documents come from decoders fed by attackers: whatever they hold, write/flush/close
    never raise, nothing is lost silently, and an event comes back as its JSON."""
    with tempfile.TemporaryDirectory() as folder:
        store = Store(Path(folder) / "h.db", batch_size=5, flush_interval=0)
        for kind, doc in batch:
            store.write(kind, doc)
        store.flush()
        stats = store.stats()
        for kind, doc in batch:
            doc_id = doc.get("event.id")
            if kind == "event" and isinstance(doc_id, str) and doc_id:
                got = store.get_event(doc_id)
                assert got is not None
                if sum(1 for k, d in batch if k == "event" and d.get("event.id") == doc_id) == 1:
                    # its JSON, with number-valued times as text: how the store shows events
                    assert got == render_times(orjson.loads(dumps(doc)))
        store.close()
    handled = (
        stats["events"]
        + stats["alerts"]
        + stats["alerts_merged"]
        + stats["duplicates"]
        + stats["rejected"]
    )
    assets_in = sum(1 for k, _ in batch if k == "asset")
    assert handled + assets_in >= len(batch) and stats["pending"] == 0
    assert stats["rejected"] == 0  # odd values are kept in the document, never refused


def test_findings_merge_by_id_and_old_stores_gain_the_table(tmp_path: Path) -> None:
    path = tmp_path / "f.db"
    base = {
        "finding.id": "f1",
        "finding.kind": "opcua-anonymous-session",
        "asset.id": "s1:10.0.0.1",
        "labels.site": "s1",
        "finding.severity": 60,
        "finding.evidence.event_ids": ["e1"],
        "finding.first_seen": "2026-11-02T00:00:00Z",
        "finding.last_seen": "2026-11-03T00:00:00Z",
    }
    with Store.open(path) as store:
        store.write("finding", base)
        store.flush()
        # a restarted sensor: later first seen, later last seen, new evidence
        store.write(
            "finding",
            {
                **base,
                "finding.first_seen": "2026-11-04T00:00:00Z",
                "finding.last_seen": "2026-11-05T00:00:00Z",
                "finding.evidence.event_ids": ["e2"],
            },
        )
        store.write("finding", {**base, "finding.id": "f2", "labels.site": "s2"})
    with Store.open(path, readonly=True) as store:
        total, docs = store.search_findings(["s1"])
        assert total == 1
        (doc,) = docs
        assert doc["finding.first_seen"] == "2026-11-02T00:00:00Z"
        assert doc["finding.last_seen"] == doc["@timestamp"] == "2026-11-05T00:00:00Z"
        assert doc["finding.evidence.event_ids"] == ["e1", "e2"]
        assert store.search_findings()[0] == 2
        assert store.search_findings([], asset_id="s1:10.0.0.1")[0] == 0
    old = tmp_path / "v4.db"
    with Store.open(old) as store:
        pass
    conn = sqlite3.connect(old, isolation_level=None)
    events_as_version_8(conn)  # version 9's id keys
    for newer in ("findings", "heartbeats", "rollups", "responses"):  # versions 5, 6 and 7
        conn.execute(f"DROP TABLE {newer}")
    # and version 8's blocks of event documents, and alerts' triggering events
    conn.execute("DROP TABLE alert_events")
    conn.execute("DROP TABLE event_flows")
    conn.execute("DROP TABLE event_blocks")
    conn.execute("CREATE TABLE event_docs (rowid INTEGER PRIMARY KEY, doc TEXT NOT NULL)")
    conn.execute("CREATE INDEX events_observer_ts ON events(observer, ts)")
    conn.execute("CREATE INDEX events_community ON events(community_id)")
    conn.execute("PRAGMA user_version = 4")
    conn.commit()
    conn.close()
    with Store.open(old) as store:
        store.write("finding", base)
    with Store.open(old, readonly=True) as store:
        assert store.search_findings()[0] == 1
