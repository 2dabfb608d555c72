"""Baseline file format, limits, streaming, load time, live learning and the command line.

Scenario tests on the captures are in test_baseline_captures.py. The synthetic events here
are built by hand on purpose: they stand for plant sizes no loopback capture reaches
(10,000 conversations) and for edge cases of the file format.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from detectors.baseline import (
    Baseline,
    BaselineDetector,
    BaselineError,
    BaselineLearner,
    LearnerLimits,
    LearnThenDetect,
    parse_duration,
)
from detectors.baseline.model import add_range, iso, uncovered
from sensor.engine import Engine, EngineConfig
from tests.support import REPO

CAPTURES = REPO / "pcaps" / "baseline"


def _modbus_event(
    ts: float,
    client: str,
    server: str,
    fc: int = 3,
    address: int = 0,
    values: list[int] | None = None,
) -> dict:
    op = "write" if fc in (5, 6, 15, 16) else "read"
    values = values if values is not None else [address]
    return {
        "@timestamp": iso(ts),
        "source.ip": client,
        "source.port": 40000,
        "destination.ip": server,
        "destination.port": 502,
        "network.protocol": "modbus",
        "network.transport": "tcp",
        "event.action": "read-holding-registers" if op == "read" else "write-single-register",
        "event.outcome": "success",
        "ics.operation": op,
        "ics.function": "f",
        "modbus.function_code": fc,
        "modbus.unit_id": 1,
        "modbus.address": address,
        "modbus.quantity": len(values),
        "modbus.values": values,
        "event.id": f"e{ts}",
    }


def _replay(name: str) -> list[dict]:
    return list(Engine(EngineConfig(site="t", observer="t")).replay([CAPTURES / f"{name}.pcap"]))


# ---------------------------------------------------------------- ranges


def test_ranges_merge_and_cap() -> None:
    ranges: list[list[int]] = []
    assert add_range(ranges, 10, 19, 64)
    assert not add_range(ranges, 12, 15, 64)  # already covered
    assert add_range(ranges, 20, 20, 64)  # touching: merged
    assert add_range(ranges, 0, 3, 64)
    assert ranges == [[0, 3], [10, 20]]
    assert uncovered(ranges, 11, 20) == [] and uncovered(ranges, 3, 10) == [(4, 9)]
    assert uncovered(ranges, 2, 25) == [(4, 9), (21, 25)]
    assert uncovered(ranges, 30, 31) == [(30, 31)]
    assert add_range(ranges, 5, 9, 64) and ranges == [[0, 3], [5, 20]]  # 4 is still a gap
    assert add_range(ranges, 4, 4, 64) and ranges == [[0, 20]]
    capped: list[list[int]] = []
    for start in range(0, 1000, 10):
        add_range(capped, start, start + 1, 8)
    assert len(capped) == 8 and capped[0][0] == 0 and capped[-1][1] == 991
    assert all(a[1] < b[0] for a, b in zip(capped, capped[1:], strict=False))


# ---------------------------------------------------------------- file format


def test_bad_files_name_the_file(tmp_path: Path) -> None:
    good = BaselineLearner()
    good.observe(_modbus_event(1_700_000_000.0, "10.0.0.5", "10.0.0.10"))
    doc = json.loads(good.result().to_json())
    text = json.dumps(doc)
    bad_range = text.replace('"holding": [[0, 0]]', '"holding": [[5, 1]]')
    assert bad_range != text
    cases = {
        "missing.json": None,
        "not-json.json": "{not json",
        "list.json": "[]",
        "format.json": json.dumps({**doc, "format": "something-else"}),
        "version.json": json.dumps({**doc, "version": 99}),
        "ranges.json": bad_range,
        "conv.json": json.dumps({**doc, "conversations": {"x": {"client": 1}}}),
    }
    for name, text in cases.items():
        path = tmp_path / name
        if text is not None:
            path.write_text(text)
        with pytest.raises(BaselineError) as info:
            Baseline.load(path)
        message = str(info.value)
        assert message.startswith(str(path)), message
        assert "\n" not in message


def test_file_is_versioned_and_diffable(tmp_path: Path) -> None:
    learner = BaselineLearner()
    for i in range(20):
        learner.observe(_modbus_event(1_700_000_000.0 + i, "10.0.0.5", "10.0.0.10"))
    path = tmp_path / "b.json"
    learner.result().save(path)
    text = path.read_text()
    doc = json.loads(text)
    assert doc["format"] == "icsmon-baseline" and doc["version"] == 1
    assert doc["window"] == {
        "start": "2023-11-14T22:13:20.000000Z",
        "end": "2023-11-14T22:13:39.000000Z",
        "events": 20,
        "sources": [],
    }
    assert text.count("\n") > 50  # one entry per line or so: reviewable in a diff
    series = doc["conversations"]["10.0.0.5 -> 10.0.0.10 502/modbus"]["polling"][
        "fc=3 unit=1 @ r:holding:0-0"
    ]
    assert series["requests"] == 20 and series["intervals"] == 19 and series["regular"]
    assert series["period"] == pytest.approx(1.0, rel=0.005)


# ---------------------------------------------------------------- streaming and limits


def test_learning_is_streaming_and_bounded() -> None:
    evs = _replay("train")
    span = 60.0
    once = BaselineLearner()
    for e in evs:
        once.observe(e)
    many = BaselineLearner()
    tracemalloc.start()
    for rep in range(8):  # the same plant for 8 windows: state must not grow with the input
        for e in evs:
            shifted = dict(e)
            shifted["@timestamp"] = iso(_ts(e) + rep * span)
            many.observe(shifted)
        if rep == 1:
            after_two = tracemalloc.get_traced_memory()[0]
    after_eight = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    a, b = once.result(), many.result()
    assert set(a.conversations) == set(b.conversations)
    for key, conv in a.conversations.items():
        assert set(conv["operations"]) == set(b.conversations[key]["operations"])
        assert b.conversations[key]["events"] == 8 * conv["events"]
    size_once, size_many = len(a.to_json()), len(b.to_json())
    print(
        f"\nbaseline size: 1 window {size_once} B, 8 windows {size_many} B; "
        f"learner memory after 2 windows {after_two} B, after 8 {after_eight} B"
    )
    assert size_many < 1.3 * size_once
    assert after_eight < after_two + 200_000


def _ts(event: dict) -> float:
    from detectors.baseline.features import event_time

    value = event_time(event)
    assert value is not None
    return value


def test_memory_caps_are_counted() -> None:
    learner = BaselineLearner(limits=LearnerLimits(max_conversations=3, max_assets=4, max_points=5))
    for i in range(10):
        learner.observe(
            _modbus_event(1_700_000_000.0 + i, f"10.0.0.{i + 1}", "10.0.1.1", values=list(range(8)))
        )
    result = learner.result()
    assert len(result.conversations) == 3 and len(result.assets) == 4
    # 10 clients and 1 server: 7 clients over the asset cap; 7 conversations over theirs;
    # each of the 3 stored conversations reads 8 points of which 5 fit
    assert result.doc["truncated"] == {"assets": 7, "conversations": 7, "points": 3 * 3}
    assert result.summary()["truncated"]["assets"] == 7


# ---------------------------------------------------------------- scale


def _big_baseline(conversations: int) -> BaselineLearner:
    learner = BaselineLearner()
    t0 = 1_700_000_000.0
    for i in range(conversations):
        client = f"10.{i // 250 % 250}.{i % 250}.{1 + i // 62500}"
        server = f"10.200.{i % 40}.1"
        for k in range(8):  # a polling series, a write and a value per conversation
            learner.observe(
                _modbus_event(t0 + k, client, server, fc=3, address=i % 100, values=[k])
            )
        learner.observe(_modbus_event(t0 + 9, client, server, fc=6, address=100, values=[50]))
    return learner


def test_ten_thousand_conversations_load_quickly(tmp_path: Path, out_dir: Path) -> None:
    learner = _big_baseline(10_000)
    path = tmp_path / "big.json"
    learner.result().save(path)
    started = time.perf_counter()
    baseline = Baseline.load(path)
    loaded = time.perf_counter()
    detector = BaselineDetector(baseline)
    ready = time.perf_counter()
    size = path.stat().st_size
    line = (
        f"10,000 conversations ({len(baseline.assets)} assets, {size / 1e6:.1f} MB): "
        f"load {loaded - started:.3f} s, detector ready {ready - loaded:.3f} s"
    )
    print("\n" + line)
    (out_dir / "baseline_load.txt").write_text(line + "\n")
    assert len(baseline.conversations) == 10_000
    # the loaded baseline still works: a known conversation is quiet, a new one is not
    quiet = detector.process(
        _modbus_event(1_700_000_100.0, "10.0.0.1", "10.200.0.1", address=0, values=[3])
    )
    assert quiet + detector.flush() == []
    loud = detector.process(
        _modbus_event(1_700_000_100.5, "10.0.0.1", "10.200.1.1", fc=6, address=7)
    )
    loud += detector.flush()  # alerts are held for their de-duplication window until then
    assert {a["rule.id"] for a in loud} == {"baseline-new-conversation"}


# ---------------------------------------------------------------- live learning


def test_learn_then_detect(tmp_path: Path) -> None:
    train, attack = _replay("train"), _replay("attack_new_host_write")
    span = _ts(train[-1]) - _ts(train[0])
    part = LearnThenDetect(duration=span + 0.5, output=tmp_path / "live.json")
    alerts = [a for e in train + attack for a in part.process(e)]
    alerts += part.flush()
    assert part.saved and not part.learning
    assert (tmp_path / "live.json").is_file()
    assert {a["rule.id"] for a in alerts} == {"baseline-new-asset", "baseline-new-conversation"}
    assert part.stats["learning"] == 0


def test_parse_duration() -> None:
    assert (
        parse_duration("90") == 90
        and parse_duration("30m") == 1800
        and parse_duration("2h") == 7200
    )
    assert parse_duration("7d") == 7 * 86400 and parse_duration("1.5h") == 5400
    for bad in ("", "abc", "10x", "-5m", "0"):
        with pytest.raises(ValueError):
            parse_duration(bad)


# ---------------------------------------------------------------- command line


class _Result:
    def __init__(self, returncode: int, stdout: str, stderr: str) -> None:
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


def _icsmon(*args: object) -> _Result:
    """The command line in-process (CliRunner); exit codes and streams as a shell sees them."""
    from typer.testing import CliRunner

    from icsmon.cli import app

    result = CliRunner().invoke(app, [str(a) for a in args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return _Result(result.exit_code, result.stdout, result.stderr)


def test_console_script_runs(tmp_path: Path) -> None:
    """Once through the installed entry point, as plant staff run it."""
    out = tmp_path / "b.json"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "icsmon.cli",
            "baseline",
            "learn",
            str(CAPTURES / "clean.pcap"),
            "-o",
            str(out),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert Baseline.load(out).summary()["conversations"] == 4


def test_cli_learn_show_merge_accept(tmp_path: Path) -> None:
    base = tmp_path / "plant.json"
    learned = _icsmon("baseline", "learn", CAPTURES / "train.pcap", "-o", base)
    assert learned.returncode == 0, learned.stderr
    assert "conversations" in learned.stderr
    again = _icsmon("baseline", "learn", CAPTURES / "train.pcap", "-o", tmp_path / "again.json")
    assert again.returncode == 0 and (tmp_path / "again.json").read_bytes() == base.read_bytes()
    assert json.loads(base.read_text())["window"]["sources"] == ["train.pcap"]

    shown = _icsmon("baseline", "show", base, "--json", "--placeholders")
    assert shown.returncode == 0, shown.stderr
    summary = json.loads(shown.stdout)
    assert summary["conversations"] >= 4 and "modbus_masters" in summary["placeholders"]
    table = _icsmon("baseline", "show", base)
    assert table.returncode == 0 and "127.0.5.11 -> 127.0.5.10 502/modbus" in table.stdout

    rogue = tmp_path / "rogue.json"
    assert (
        _icsmon(
            "baseline", "learn", CAPTURES / "attack_new_host_write.pcap", "-o", rogue
        ).returncode
        == 0
    )
    merged = tmp_path / "merged.json"
    result = _icsmon("baseline", "merge", base, rogue, "-o", merged)
    assert result.returncode == 0, result.stderr
    assert "127.0.5.66" in Baseline.load(merged).assets

    # replay with the baseline, then accept the new-conversation alert from its JSON line
    replay = _icsmon(
        "replay",
        CAPTURES / "attack_new_host_write.pcap",
        "--baseline",
        base,
        "--no-rules",
        "--sink",
        "none",
        "--format",
        "jsonl",
    )
    assert replay.returncode == 0, replay.stderr
    alerts = [json.loads(line) for line in replay.stdout.splitlines() if line.strip()]
    assert {a["rule"]["id"] for a in alerts} == {"baseline-new-asset", "baseline-new-conversation"}
    (tmp_path / "alerts.jsonl").write_text(replay.stdout)
    conv_alert = next(a for a in alerts if a["rule"]["id"] == "baseline-new-conversation")
    accepted = _icsmon(
        "baseline",
        "accept",
        conv_alert["event"]["id"],
        "--baseline",
        base,
        "--alerts",
        tmp_path / "alerts.jsonl",
        "-o",
        tmp_path / "accepted.json",
    )
    assert accepted.returncode == 0, accepted.stderr
    assert "accepted baseline-new-conversation" in accepted.stderr
    after = _icsmon(
        "replay",
        CAPTURES / "attack_new_host_write.pcap",
        "--baseline",
        tmp_path / "accepted.json",
        "--no-rules",
        "--sink",
        "none",
        "--format",
        "jsonl",
    )
    assert after.returncode == 0 and after.stdout.strip() == ""


def test_cli_errors_are_one_line(tmp_path: Path) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text('{"format": "icsmon-baseline", "version": 1')
    shown = _icsmon("baseline", "show", broken)
    assert shown.returncode == 2
    assert str(broken) in shown.stderr and "Traceback" not in shown.stderr
    missing = _icsmon("baseline", "learn", tmp_path / "nope.pcap", "-o", tmp_path / "x.json")
    assert missing.returncode == 2 and "nope.pcap" in missing.stderr
    unknown = _icsmon("baseline", "accept", "no-such-id", "--baseline", broken, "--alerts", broken)
    assert unknown.returncode == 2 and str(broken) in unknown.stderr
    for sub in ("learn", "show", "merge", "accept"):
        helped = _icsmon("baseline", sub, "--help")
        assert helped.returncode == 0 and "Usage" in helped.stdout


# ---------------------------------------------------------------- hostile input

_json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=10,
)
_FIELDS = (
    "@timestamp",
    "source.ip",
    "destination.ip",
    "destination.port",
    "network.protocol",
    "ics.operation",
    "event.action",
    "event.outcome",
    "source.mac",
    "modbus.function_code",
    "modbus.unit_id",
    "modbus.address",
    "modbus.quantity",
    "modbus.values",
    "modbus.read_address",
    "modbus.read_values",
    "s7comm.items",
    "s7comm.function",
    "s7comm.userdata.group",
    "s7comm.szl.id",
    "s7comm.block.type",
    "opcua.service",
    "opcua.node_ids",
    "opcua.values",
    "opcua.attributes",
    "opcua.security_mode",
    "opcua.identity_token",
    "ics.device.firmware",
    "s7comm.cotp.connection_type_name",
)


@pytest.fixture(scope="module")
def sample_events() -> list[dict]:
    evs = _replay("clean")
    by_protocol: dict[str, dict] = {}
    for e in evs:
        by_protocol.setdefault(e["network.protocol"], e)
    return list(by_protocol.values())


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_hostile_field_values_never_raise(
    sample_events: list[dict], data: st.DataObject, tmp_path: Path
) -> None:
    # Field values come from the wire: any type, any size, must not stop learning or detection.
    learner = BaselineLearner()
    mutated = []
    for base in sample_events:
        event = dict(base)
        for name in data.draw(st.lists(st.sampled_from(_FIELDS), max_size=6)):
            event[name] = data.draw(_json_values)
        mutated.append(event)
        learner.observe(event)
    baseline = learner.result()
    path = tmp_path / "fuzz.json"
    baseline.save(path)
    detector = BaselineDetector(Baseline.load(path))
    for event in mutated + sample_events:
        for alert in detector.process(event):
            json.dumps(alert, allow_nan=True)
    detector.flush()


def test_cli_accept_from_the_store(tmp_path: Path) -> None:
    base, store = tmp_path / "plant.json", tmp_path / "alerts.db"
    assert _icsmon("baseline", "learn", CAPTURES / "train.pcap", "-o", base).returncode == 0
    replay = _icsmon(
        "replay",
        CAPTURES / "attack_out_of_range.pcap",
        "--baseline",
        base,
        "--no-rules",
        "--sink",
        "store",
        "--store",
        store,
        "--no-store-events",
        "--format",
        "jsonl",
    )
    assert replay.returncode == 0, replay.stderr
    alerts = [json.loads(line) for line in replay.stdout.splitlines() if line.strip()]
    assert {a["rule"]["id"] for a in alerts} == {"baseline-value-out-of-range"}
    for alert in alerts:
        done = _icsmon(
            "baseline", "accept", alert["event"]["id"], "--baseline", base, "--store", store
        )
        assert done.returncode == 0, done.stderr
    doc = json.loads(base.read_text())
    assert [a["rule_id"] for a in doc["accepted"]] == ["baseline-value-out-of-range"] * len(alerts)
    assert doc["assets"]["127.0.5.10"]["points"]["modbus unit=1 holding=100"]["write"]["max"] == 500
    again = _icsmon(
        "replay",
        CAPTURES / "attack_out_of_range.pcap",
        "--baseline",
        base,
        "--no-rules",
        "--sink",
        "none",
        "--format",
        "jsonl",
    )
    assert again.returncode == 0 and again.stdout.strip() == ""
    missing = _icsmon("baseline", "accept", "0000", "--baseline", base, "--store", store)
    assert missing.returncode == 2 and "no alert with id 0000" in missing.stderr


def test_cli_learn_stores_the_asset_inventory(tmp_path: Path) -> None:
    store = tmp_path / "inventory.db"
    done = _icsmon(
        "baseline",
        "learn",
        CAPTURES / "train.pcap",
        "-o",
        tmp_path / "b.json",
        "--site",
        "plant-a",
        "--store",
        store,
    )
    assert done.returncode == 0, done.stderr
    listed = _icsmon("assets", "--store", store, "--format", "jsonl", "--role", "modbus-client")
    assert listed.returncode == 0, listed.stderr
    assets = [json.loads(line) for line in listed.stdout.splitlines() if line.strip()]
    assert sorted(a["host"]["ip"] for a in assets) == ["127.0.5.11", "127.0.5.12"]
    assert all(a["asset"]["id"].startswith("plant-a:") for a in assets)


def test_a_bool_is_no_port_or_address() -> None:
    """A bool where a port or an address belongs (a corrupt or hostile event file) is not
    taken for 0 or 1: the event is skipped, or learned without that range; compiled and
    from source alike (compiled, a bool checked as an int would become one)."""
    learner = BaselineLearner()
    bad_port = _modbus_event(1_700_000_000.0, "10.0.0.5", "10.0.0.10")
    bad_port["destination.port"] = True
    learner.observe(bad_port)
    assert learner.skipped == 1
    bad_address = _modbus_event(1_700_000_001.0, "10.0.0.5", "10.0.0.10", fc=6, address=4)
    bad_address["modbus.address"] = False
    learner.observe(bad_address)
    doc = learner.result().doc
    (conv,) = doc["conversations"].values()
    assert conv["port"] == 502
    assert not any(op.get("addresses") for op in conv["operations"].values())


def test_repeated_requests_checked_once_still_catch_what_differs() -> None:
    """A polling request whose baseline-only checks found nothing is not checked again in
    full (the detector keeps its verdict by request shape, MACs and hosts); what differs
    from it, or varies per request, still alerts, and alike with the full checks every time."""

    def request(ts: float, client: str = "10.0.0.1", **fields: object) -> dict:
        event = _modbus_event(ts, client, "10.0.0.2", **fields)  # type: ignore[arg-type]
        event["source.mac"] = "02:00:00:00:00:01"
        return event

    learner = BaselineLearner()
    for i in range(20):
        learner.observe(request(1000.0 + i, address=0, values=[5, 6]))
    base = learner.result()

    def stream() -> list[dict]:
        events = [request(2000.0 + i, address=0, values=[5, 6]) for i in range(5)]
        events.append(request(2010.0, address=0, values=[5, 900]))
        events.append(request(2011.0, address=0, values=[5, 6]))
        other_mac = request(2012.0, address=0, values=[5, 6])
        other_mac["source.mac"] = "02:00:00:00:00:99"
        events.append(other_mac)
        events.append(request(2013.0, address=0, values=[5, 6]))
        events.append(request(2014.0, address=40, values=[0, 0]))
        events.append(request(2015.0, fc=6, values=[1]))
        events.append(request(2016.0, "10.0.0.9", address=0, values=[5, 6]))
        return events

    def alerts(det: BaselineDetector, forget: bool) -> list[tuple]:
        out: list[dict] = []
        for event in stream():
            if forget:  # the full checks on every event
                det._quiet.clear()
                det._run_clean.clear()
            out.extend(det.process(event))
        out.extend(det.flush())
        return [(a["rule.id"], a["icsmon.baseline.observed"], a["icsmon.alert.count"]) for a in out]

    cached = BaselineDetector(base, dedup_window=0)
    found = alerts(cached, forget=False)
    assert [rule for rule, _, _ in found] == [
        "baseline-value-out-of-range",  # 900 in a known run of values
        "baseline-mac-changed",
        "baseline-new-read-address",
        "baseline-new-operation",
        "baseline-value-out-of-range",  # the write's value
        "baseline-new-asset",
        "baseline-new-conversation",
    ]
    assert cached._quiet and cached._run_clean, "the repeated request's verdicts are kept"
    assert alerts(BaselineDetector(base, dedup_window=0), forget=True) == found
