"""Assets mean the same on every back end: the embedded store and Elasticsearch fold the
observations of one asset by the one rule, ``pipeline.assets.merge_asset`` (union of roles,
protocols and peers; earliest first seen, latest last seen; identity from the newer
observation, an older one filling what is missing).

Two sensor runs (two processes: the second's asset tracker starts empty) see the same PLC:
the first the device identification exchange, the second two masters polling it. The sensor
writes its own store and ships to Kafka; the indexer folds the assets into their records in
Elasticsearch. ``search_assets`` must then answer the same from both: the newest observation
alone (what Elasticsearch answered before, collapsing to the newest daily document) lacks
the identity and the first time seen.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pipeline.es import EsQueryBackend, EsStore
from pipeline.query import AssetFilter
from pipeline.store import Store, to_epoch
from tests.support import REPO
from tests.support.pipeline import drop_pipe, make_pipe, read_jsonl, require_services

pytestmark = pytest.mark.services

IDENTIFICATION = REPO / "pcaps" / "modbus" / "modbus_identification.pcap"  # 12:45, .2 -> .1
TWO_MASTERS = REPO / "pcaps" / "modbus" / "modbus_two_masters.pcap"  # 14:29, .2 and .3 -> .1


def _golden_server(capture: Path) -> dict:
    return next(
        a for a in read_jsonl(Path(f"{capture}.assets.jsonl")) if a["host"]["ip"] == "127.0.0.1"
    )


def test_store_and_elasticsearch_fold_assets_by_the_same_rule(tmp_path: Path) -> None:
    require_services()
    pipe = make_pipe(tmp_path)
    # every document in Kafka when the replay ends, even on a machine too busy to answer the
    # first metadata request within the sensor's default 0.2 s (it would spool the rest)
    pipe.env["ICSMON_KAFKA_MAX_BLOCK_MS"] = "30000"
    try:
        pipe.cli("index", "--setup")
        for capture in (IDENTIFICATION, TWO_MASTERS):
            pipe.cli(
                "replay",
                str(capture),
                "--site",
                "site-m",
                "--observer",
                "sensor-m",
                "--sink",
                "kafka",
                "--no-rules",
            )
        pipe.cli("index", "--once")
        EsStore(pipe.cfg).refresh()
        with Store.open(pipe.env["ICSMON_STORE"], readonly=True) as store:
            local, local_counts = _answers(store)
        backend = EsQueryBackend(pipe.cfg)
        try:
            central, central_counts = _answers(backend)
        finally:
            backend.close()
    finally:
        drop_pipe(pipe)

    assert local[0] == central[0] == 3  # the PLC and its two masters
    assert central[1] == local[1]  # the same records, field for field, in the same order
    assert central_counts == local_counts == [1, 2, 1, 1]  # only .3 is new since 14:29

    plc = next(a for a in central[1] if a["host.ip"] == "127.0.0.1")
    identified, polled = _golden_server(IDENTIFICATION), _golden_server(TWO_MASTERS)
    assert sorted(plc["asset.peers"]) == ["127.0.0.2", "127.0.0.3"]
    assert to_epoch(plc["asset.first_seen"]) == to_epoch(identified["asset"]["first_seen"])
    assert to_epoch(plc["asset.last_seen"]) == to_epoch(polled["asset"]["last_seen"])
    # the identity only the first run saw stays on the record
    assert plc["ics.device.vendor"] == identified["ics"]["device"]["vendor"] == "Acme Automation"
    assert "ics" not in polled


def _answers(backend: Any) -> tuple[tuple[int, list[dict]], list[int]]:
    """Every asset, and how many match each filter, from one back end."""
    filters = (
        AssetFilter(role="modbus-server", limit=0),
        AssetFilter(role="modbus-client", limit=0),
        AssetFilter(vendor="acme", limit=0),
        AssetFilter(first_seen_since=_first(TWO_MASTERS), limit=0),
    )
    return backend.search_assets(AssetFilter(limit=100)), [
        backend.search_assets(flt)[0] for flt in filters
    ]


def _first(capture: Path) -> float:
    stamps = [
        to_epoch(a["asset"]["first_seen"]) for a in read_jsonl(Path(f"{capture}.assets.jsonl"))
    ]
    return min(s for s in stamps if s is not None)
