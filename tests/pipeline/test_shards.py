"""Primary shards per kind (``[shards]``): checked when the configuration is read, carried by
the kind's index template into every daily index Elasticsearch creates from it (real
Elasticsearch), set through the pipeline configuration that ``icsmon index`` reads."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from pipeline.config import ConfigError, load_config
from pipeline.es import EsStore
from tests.support.pipeline import drop_pipe, make_pipe, require_services, write_config_file


def test_shards_settings_are_checked(tmp_path: Path) -> None:
    cfg = load_config(env={"ICSMON_SHARDS_ROLLUPS": "19"}, overrides={"shards": {"event": 4}})
    assert cfg.shards.by_kind() == {"rollup": 19, "event": 4}  # singular or plural, one key
    assert cfg.shards.of("rollup") == 19 and cfg.shards.of("alert") == 1
    with pytest.raises(ConfigError, match="unknown key shards.logs"):
        load_config(env={}, overrides={"shards": {"logs": 3}})
    for bad in (0, 1025, -2):
        with pytest.raises(ConfigError, match="shards.rollups must be between 1 and 1024"):
            load_config(env={}, overrides={"shards": {"rollups": bad}})
    path = tmp_path / "bad.toml"
    path.write_text("[shards]\nrollups = 'many'\n")
    with pytest.raises(ConfigError, match="bad.toml: bad value for shards.rollups"):
        load_config(path, env={})


def _primaries(store: EsStore, index: str) -> int:
    settings = store.client.indices.get_settings(index=index)[index]["settings"]["index"]
    return int(settings["number_of_shards"])


@pytest.mark.services
def test_the_template_carries_each_kinds_primaries_into_its_daily_indices(
    tmp_path: Path,
) -> None:
    require_services()
    pipe = make_pipe(tmp_path, shards={"rollups": 3, "events": 2})
    config = write_config_file(pipe.cfg, tmp_path / "centre.toml")
    store = EsStore(pipe.cfg)
    try:
        # what an operator runs: the file read by `icsmon index`, its templates installed
        pipe.cli("index", "--setup", "--config", str(config))
        for kind, want in (("rollup", 3), ("event", 2), ("alert", 1), ("heartbeat", 1)):
            name = store.alias(kind)
            template = store.client.indices.get_index_template(name=name)["index_templates"][0]
            settings = template["index_template"]["template"]["settings"]["index"]
            assert int(settings["number_of_shards"]) == want, (kind, settings)
            today = store.index_name(kind, datetime.now(UTC).strftime("%Y.%m.%d"))
            assert _primaries(store, today) == want, kind
        # a later day's index, made by Elasticsearch from the template on the first write
        day = store.index_name("rollup", "2031.01.02")
        store.client.index(index=day, id="r1", document={"@timestamp": "2031-01-02T00:00:00Z"})
        assert _primaries(store, day) == 3
        assert store.client.indices.exists_alias(name=store.alias("rollup"), index=day)
        # the heartbeats' latest index is one small index whatever the setting
        assert _primaries(store, store.latest_index("heartbeat")) == 1
    finally:
        store.close()
        drop_pipe(pipe)
