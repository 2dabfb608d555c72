"""``icsmon alerts`` and ``icsmon assets`` against stores filled with realistic documents, and
end to end: ``icsmon replay --store`` a capture, then query what it stored."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from icsmon.cli import app
from icsmon.cmd_query import SEVERITY_FLOOR, parse_severity, parse_time, severity_label
from pipeline.docs import flatten, nest
from pipeline.store import Store
from tests.support import REPO
from tests.support.store_samples import BASE_TS, RULES, SITES, corpus, iso

PCAPS = REPO / "pcaps"
runner = CliRunner()


@pytest.fixture(scope="module")
def docs():
    return corpus()


@pytest.fixture(scope="module")
def store_path(tmp_path_factory: pytest.TempPathFactory, docs) -> Path:
    events, alerts, assets = docs
    path = tmp_path_factory.mktemp("cli") / "icsmon.db"
    with Store(path, background_flush=False) as st:
        for kind, items in (("event", events), ("alert", alerts), ("asset", assets)):
            for doc in items:
                st.write(kind, doc)
    return path


def invoke(*args: str | Path, env: dict[str, str] | None = None):
    return runner.invoke(app, [str(a) for a in args], env={"COLUMNS": "250", **(env or {})})


def jsonl(output: str) -> list[dict]:
    return [json.loads(line) for line in output.splitlines() if line.strip()]


def epoch(doc: dict) -> float:
    return datetime.fromisoformat(doc["@timestamp"]).timestamp()


def newest_first(docs: list[dict]) -> list[dict]:
    return sorted(docs, key=epoch, reverse=True)


# ---- alerts --------------------------------------------------------------------------------


def test_alerts_jsonl_prints_nested_ecs_newest_first(store_path: Path, docs) -> None:
    result = invoke("alerts", "--store", store_path, "--format", "jsonl", "--limit", "1000")
    assert result.exit_code == 0, result.output
    lines = jsonl(result.stdout)
    expected = newest_first(docs[1])
    assert lines == [nest(a) for a in expected]
    assert all("source" in line and "source.ip" not in line for line in lines)
    assert [flatten(line) for line in lines] == expected


@pytest.mark.parametrize(
    ("args", "keep"),
    [
        (["--severity", "high"], lambda a: a["event.severity"] >= SEVERITY_FLOOR["high"]),
        (["--severity", "99"], lambda a: a["event.severity"] >= 99),
        (["--site", SITES[0], "--site", SITES[2]], lambda a: a["labels.site"] in SITES[::2]),
        (["--technique", "t0836"], lambda a: "T0836" in a["threat.technique.id"]),
        (["--rule", RULES[1][0]], lambda a: a["rule.id"] == RULES[1][0]),
        (["--protocol", "OPCUA"], lambda a: a["network.protocol"] == "opcua"),
        (
            ["--since", "2026-11-26T09:00", "--until", "2026-11-26T10:30:00Z"],
            lambda a: BASE_TS + 3600 <= epoch(a) < BASE_TS + 9000,
        ),
        (
            ["--since", "2026-11-26T17:00+08:00", "--severity", "critical", "--site", SITES[1]],
            lambda a: (
                epoch(a) >= BASE_TS + 3600
                and a["event.severity"] >= SEVERITY_FLOOR["critical"]
                and a["labels.site"] == SITES[1]
            ),
        ),
    ],
)
def test_alerts_filters(store_path: Path, docs, args: list[str], keep) -> None:
    result = invoke("alerts", "--store", store_path, "-f", "jsonl", "--limit", "1000", *args)
    assert result.exit_code == 0, result.output
    got = [flatten(d)["event.id"] for d in jsonl(result.stdout)]
    want = [a["event.id"] for a in newest_first([a for a in docs[1] if keep(a)])]
    assert want and got == want


def test_alerts_limit_and_offset_page_through(store_path: Path, docs) -> None:
    want = [a["event.id"] for a in newest_first(docs[1])]
    got: list[str] = []
    for offset in range(0, len(want) + 40, 40):
        result = invoke(
            "alerts", "--store", store_path, "-f", "jsonl", "--limit", "40", "--offset", str(offset)
        )
        assert result.exit_code == 0
        got.extend(flatten(d)["event.id"] for d in jsonl(result.stdout))
    assert got == want


def test_alerts_table(store_path: Path, docs) -> None:
    result = invoke("alerts", "--store", store_path, "--limit", "5", "--technique", "T0858")
    assert result.exit_code == 0, result.output
    out = result.stdout
    for column in (
        "time",
        "severity",
        "rule",
        "technique",
        "source -> destination",
        "protocol",
        "site",
    ):
        assert column in out
    chosen = newest_first([a for a in docs[1] if "T0858" in a["threat.technique.id"]])
    for alert in chosen[:5]:
        when = datetime.fromisoformat(alert["@timestamp"]).strftime("%Y-%m-%d %H:%M:%S")
        assert when in out
        assert (
            f"{alert['source.ip']}:{alert['source.port']} -> "
            f"{alert['destination.ip']}:{alert['destination.port']}"
        ) in out
    assert alert["rule.name"] in out and "99 critical" in out and "T0858, T0881" in out
    assert f"1-5 of {len(chosen)} alerts" in out


def test_alerts_since_relative_to_now(tmp_path: Path, docs) -> None:
    now = time.time()
    template = docs[1][0]
    path = tmp_path / "recent.db"
    with Store(path, background_flush=False) as st:
        for i, age in enumerate((7200, 1800, 60)):  # 2 h, 30 min and 1 min ago
            st.write("alert", {**template, "event.id": f"recent-{i}", "@timestamp": iso(now - age)})
    result = invoke("alerts", "--store", path, "-f", "jsonl", "--since", "1h")
    assert [flatten(d)["event.id"] for d in jsonl(result.stdout)] == ["recent-2", "recent-1"]
    result = invoke("alerts", "--store", path, "-f", "jsonl", "--since", "90s")
    assert [flatten(d)["event.id"] for d in jsonl(result.stdout)] == ["recent-2"]


def test_store_from_environment(store_path: Path, docs) -> None:
    result = invoke("alerts", "-f", "jsonl", "--limit", "3", env={"ICSMON_STORE": str(store_path)})
    assert result.exit_code == 0, result.output
    assert len(jsonl(result.stdout)) == 3


def test_no_matching_alerts(store_path: Path) -> None:
    result = invoke("alerts", "--store", store_path, "--technique", "T0800")
    assert result.exit_code == 0
    assert "no alerts match" in result.stdout


def test_parse_time_and_severity() -> None:
    now = BASE_TS
    assert parse_time("1h", now) == now - 3600
    assert parse_time("2w", now) == now - 14 * 86400
    assert parse_time("2026-11-26", now) == datetime(2026, 11, 26, tzinfo=UTC).timestamp()
    assert parse_time("2026-11-26T16:00+08:00") == BASE_TS
    assert parse_severity("HIGH") == SEVERITY_FLOOR["high"]
    assert parse_severity("0") == 0 and parse_severity("100") == 100
    assert [severity_label(v)[0] for v in (1, 21, 50, 73, 99, "x")] == [
        "informational",
        "low",
        "medium",
        "high",
        "critical",
        "",
    ]


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--severity", "severe"], "is not a severity"),
        (["--severity", "101"], "is not a severity"),
        (["--since", "yesterday"], "is not a time"),
        (["--format", "xml"], "xml"),
        (["--limit", "-1"], "--limit"),
    ],
)
def test_bad_options_exit_2(store_path: Path, args: list[str], fragment: str) -> None:
    result = invoke("alerts", "--store", store_path, *args)
    assert result.exit_code == 2
    assert fragment in result.output


def test_missing_store_is_one_clear_line(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "icsmon.db"
    for command in ("alerts", "assets"):
        result = invoke(command, "--store", missing)
        assert result.exit_code == 2  # a file named on the command line is missing
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and str(missing) in lines[0] and "no icsmon store" in lines[0]
    assert not missing.exists()  # a query never creates a store


def test_bad_store_files_are_one_clear_line(tmp_path: Path, store_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("plant notes, not a database\n" * 100)
    corrupt = tmp_path / "corrupt.db"
    data = bytearray(store_path.read_bytes())
    page = int.from_bytes(data[16:18], "big")
    for offset in range(page, len(data), page):
        data[offset + 8 : offset + page] = bytes(page - 8)
    corrupt.write_bytes(bytes(data))
    for path, fragment in ((text, "not an SQLite database"), (corrupt, "corrupt")):
        result = invoke("alerts", "--store", path, "--limit", "1000")
        assert result.exit_code == 2, result.output
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and str(path) in lines[0] and fragment in lines[0], lines
        assert "Traceback" not in result.output


# ---- assets --------------------------------------------------------------------------------


def test_assets_table_and_filters(store_path: Path, docs) -> None:
    assets = docs[2]
    result = invoke(
        "assets", "--store", store_path, "--role", "s7comm-server", "--vendor", "siemens"
    )
    assert result.exit_code == 0, result.output
    chosen = [
        a
        for a in assets
        if "s7comm-server" in a["asset.roles"] and a.get("ics.device.vendor") == "Siemens"
    ]
    assert chosen
    for asset in chosen:
        assert asset["host.ip"] in result.stdout
    assert "CPU 315-2 PN/DP" in result.stdout and "V3.2.6" in result.stdout
    assert f"of {len(chosen)} assets" in result.stdout

    result = invoke("assets", "--store", store_path, "--site", SITES[2], "-f", "jsonl")
    got = [flatten(d) for d in jsonl(result.stdout)]
    assert {a["asset.id"] for a in got} == {
        a["asset.id"] for a in assets if a["labels.site"] == SITES[2]
    }
    by_id = {a["asset.id"]: a for a in assets}
    assert all(by_id[a["asset.id"]] == a for a in got)


def test_text_from_the_wire_is_not_rich_markup(tmp_path: Path, docs) -> None:
    """Device names and rule text come from traffic and files: shown as they are, even when
    they look like rich markup (an unbalanced closing tag would otherwise raise)."""
    folder = tmp_path / "[bold]odd[/]"
    path = folder / "icsmon.db"
    vendor = "[/bold]Evil[link=http://x]Corp"
    asset = {**docs[2][0], "ics.device.vendor": vendor}
    alert = {**docs[1][0], "rule.name": "[/] write [red]"}
    with Store(path, background_flush=False) as st:
        st.write("asset", asset)
        st.write("alert", alert)
    result = invoke("assets", "--store", path)
    assert result.exit_code == 0, result.output
    assert vendor in result.stdout
    result = invoke("alerts", "--store", path)
    assert result.exit_code == 0, result.output
    assert "[/] write [red]" in result.stdout
    missing = folder / "[/x].db"
    result = invoke("alerts", "--store", missing)
    assert result.exit_code == 2 and str(missing) in result.stderr


# ---- end to end: replay into a store, then query it ----------------------------------------


def icsmon(*args: str | Path, check: bool = True) -> subprocess.CompletedProcess:
    exe = shutil.which("icsmon", path=str(Path(sys.executable).parent)) or "icsmon"
    proc = subprocess.run(
        [exe, *map(str, args)],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "COLUMNS": "250"},
        timeout=300,
    )
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


GOLDEN_IDENTITY = ("--site", "golden-site", "--observer", "golden-sensor", "--org", "golden-org")


def test_replay_into_a_store_then_query_assets_and_events(tmp_path: Path) -> None:
    capture = PCAPS / "modbus" / "modbus_identification.pcap"
    if not capture.is_file():
        pytest.skip(f"{capture} not in this checkout")
    store = tmp_path / "replay.db"
    icsmon("replay", capture, "--store", store, "--no-rules", *GOLDEN_IDENTITY)
    # the same capture printed as events, straight from the engine
    printed = jsonl(
        icsmon(
            "replay",
            capture,
            "--events",
            "-f",
            "jsonl",
            "--no-rules",
            "--sink",
            "none",
            *GOLDEN_IDENTITY,
        ).stdout
    )
    with Store.open(store, readonly=True) as st:
        from pipeline.query import AlertFilter

        total, stored = st.search_events(AlertFilter(limit=10_000))
    assert total == len(printed) > 0
    # compared nested: some protocol fields are objects themselves (modbus.objects)
    assert sorted((nest(d) for d in stored), key=lambda d: d["event"]["id"]) == sorted(
        printed, key=lambda d: d["event"]["id"]
    )

    assets = jsonl(icsmon("assets", "--store", store, "-f", "jsonl").stdout)
    hosts = {d["source"]["ip"] for d in printed} | {d["destination"]["ip"] for d in printed}
    assert {a["host"]["ip"] for a in assets} == hosts
    # the engine's own asset records, field for field (the CLI writes them all at the end)
    from sensor.engine import Engine, EngineConfig

    engine = Engine(
        EngineConfig(site="golden-site", observer="golden-sensor", organization="golden-org")
    )
    for _ in engine.replay([capture]):
        pass
    want = [nest(a) for a in engine.changed_assets()]
    assert sorted(assets, key=lambda a: a["asset"]["id"]) == sorted(
        want, key=lambda a: a["asset"]["id"]
    )
    table = icsmon("assets", "--store", store, "--role", "modbus-server").stdout
    server = next(a for a in assets if "modbus-server" in a["asset"]["roles"])
    assert server["host"]["ip"] in table and "golden-site" in table

    # replaying the same capture again adds nothing (deterministic ids)
    icsmon("replay", capture, "--store", store, "--no-rules", *GOLDEN_IDENTITY)
    with Store.open(store, readonly=True) as st:
        assert st.counts()["event"] == total


def test_replay_alerts_into_a_store_then_query_them(tmp_path: Path) -> None:
    try:
        from detectors.sigma import SigmaEngine  # noqa: F401
    except ImportError:
        pytest.skip("the Sigma rule engine is not in this checkout yet")
    if not any((REPO / "rules").rglob("*.yml")):
        pytest.skip("no shipped rules in rules/ yet")
    captures = sorted((PCAPS / "modbus").glob("*.pcap"))
    if not captures:
        pytest.skip("no Modbus captures in pcaps/modbus")
    store = tmp_path / "alerts.db"
    printed = jsonl(
        icsmon("replay", *captures, "--store", store, "-f", "jsonl", *GOLDEN_IDENTITY).stdout
    )
    assert printed, "the shipped rules fire on none of the Modbus captures"
    queried = jsonl(icsmon("alerts", "--store", store, "-f", "jsonl", "--limit", "100000").stdout)
    # de-duplication may merge alerts that share an id: compare the sets of ids
    assert {a["event"]["id"] for a in queried} == {a["event"]["id"] for a in printed}
    assert queried == sorted(queried, key=lambda a: a["@timestamp"], reverse=True)
    technique = printed[0]["threat"]["technique"]["id"][0]
    only = jsonl(icsmon("alerts", "--store", store, "-f", "jsonl", "--technique", technique).stdout)
    assert only and all(technique in a["threat"]["technique"]["id"] for a in only)
    assert {a["event"]["id"] for a in only} == {
        a["event"]["id"] for a in printed if technique in a["threat"]["technique"]["id"]
    }
    table = icsmon("alerts", "--store", store).stdout
    assert printed[0]["rule"]["name"] in table and "golden-site" in table


# ---- the same queries against Elasticsearch ------------------------------------------------


@pytest.fixture(scope="module")
def es_corpus(docs):
    """The corpus's alerts indexed the way the indexer does (nested, daily indices behind the
    alias, _id = event.id) under a prefix of this test's own."""
    from pipeline.config import load_config
    from pipeline.es import EsStore, day_of

    url = os.environ.get("ICSMON_TEST_ES_URL", "http://127.0.0.1:9200")
    prefix = f"icsmon-querytest-{os.getpid()}"
    cfg = load_config(env={}, overrides={"elasticsearch": {"url": url, "index_prefix": prefix}})
    es = EsStore(cfg)
    if not es.healthy():
        es.close()
        if os.environ.get("CI"):
            pytest.fail(f"Elasticsearch is not answering at {url} (deploy/services.sh start)")
        pytest.skip(f"Elasticsearch is not running at {url} (deploy/services.sh start)")
    try:
        es.setup()
        ops: list[dict] = []
        for kind, items in (("alert", docs[1]), ("asset", docs[2])):
            for doc in items:
                key = "@timestamp" if kind == "alert" else "asset.last_seen"
                index = es.index_name(kind, day_of(doc[key]))
                doc_id = doc["event.id"] if kind == "alert" else doc["asset.id"]
                ops.append({"index": {"_index": index, "_id": doc_id}})
                ops.append(nest(doc))
        resp = es.client.bulk(operations=ops, refresh=True)
        assert not resp["errors"], [i for i in resp["items"] if "error" in i["index"]][:3]
        yield url, prefix
    finally:
        es.delete_all()
        es.close()


@pytest.mark.services
@pytest.mark.parametrize(
    "args",
    [
        [],
        ["--severity", "high", "--site", SITES[0]],
        ["--technique", "T0881"],
        ["--protocol", "opcua", "--since", "2026-11-26T09:30"],
        ["--rule", RULES[0][0], "--limit", "7", "--offset", "3"],
    ],
    ids=lambda a: " ".join(a) or "all",
)
def test_elasticsearch_answers_as_the_store_does(es_corpus, store_path: Path, args) -> None:
    url, prefix = es_corpus
    common = ["alerts", "-f", "jsonl", "--limit", "1000", *args]
    from_store = invoke(*common, "--store", store_path)
    from_es = invoke(*common, "--es", url, env={"ICSMON_ES_INDEX_PREFIX": prefix})
    assert from_store.exit_code == 0 and from_es.exit_code == 0, from_es.output
    store_docs = jsonl(from_store.stdout)
    assert store_docs and jsonl(from_es.stdout) == store_docs


@pytest.mark.services
def test_elasticsearch_assets_and_errors(es_corpus, store_path: Path) -> None:
    url, prefix = es_corpus
    env = {"ICSMON_ES_INDEX_PREFIX": prefix}
    from_es = invoke("assets", "-f", "jsonl", "--role", "modbus-server", "--es", url, env=env)
    from_store = invoke("assets", "-f", "jsonl", "--role", "modbus-server", "--store", store_path)
    key = lambda d: d["asset"]["id"]  # noqa: E731
    assert sorted(jsonl(from_es.stdout), key=key) == sorted(jsonl(from_store.stdout), key=key)
    bad = invoke("alerts", "--es", "ftp://127.0.0.1:9200")
    assert bad.exit_code == 2 and len(bad.stderr.strip().splitlines()) == 1
    assert "elasticsearch.url" in bad.stderr


@pytest.mark.services
def test_elasticsearch_from_a_config_file(es_corpus, store_path: Path, tmp_path: Path) -> None:
    url, prefix = es_corpus
    config = tmp_path / "pipeline.toml"
    config.write_text(f'[elasticsearch]\nurl = "{url}"\nindex_prefix = "{prefix}"\n')
    args = ["alerts", "-f", "jsonl", "--technique", "T0836", "--limit", "1000"]
    from_es = invoke(*args, "--config", config)
    from_store = invoke(*args, "--store", store_path)
    assert from_es.exit_code == 0, from_es.output
    assert jsonl(from_es.stdout) == jsonl(from_store.stdout) != []
    broken = tmp_path / "broken.toml"
    broken.write_text("[elasticsearch\nurl = 1\n")
    bad = invoke("alerts", "--config", broken)
    assert bad.exit_code == 2 and len(bad.stderr.strip().splitlines()) == 1
    assert str(broken) in bad.stderr
