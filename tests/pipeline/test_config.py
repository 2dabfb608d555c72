"""Pipeline configuration: file, then ICSMON_* variables, then flags; clear errors naming the file."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.config import ConfigError, load_config

TOML = """
[kafka]
brokers = ["k1:9092", "k2:9092"]
topic_prefix = "plant"
compression = "lz4"

[elasticsearch]
url = "https://soc.example:9200"
username = "indexer"
password = "secret"

[spool]
dir = "/var/lib/icsmon/spool"
max_bytes = 104857600

[indexer]
group_id = "soc-indexers"
batch_size = 500
"""

YAML = """
kafka:
  brokers: "k1:9092,k2:9092"
  security_protocol: SASL_SSL
  sasl_mechanism: SCRAM-SHA-512
  sasl_username: sensor-0042
  sasl_password: pw
elasticsearch:
  url: http://10.1.1.1:9200
  api_key: abc==
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_defaults_point_at_loopback() -> None:
    cfg = load_config(env={})
    assert cfg.kafka.brokers == ("127.0.0.1:9092",)
    assert cfg.elasticsearch.url == "http://127.0.0.1:9200"
    assert cfg.topic("alert") == "icsmon.alerts"
    assert cfg.topic("deadletter") == "icsmon.deadletter"
    assert cfg.alias("event") == "icsmon-events"
    assert cfg.source == "defaults"


def test_toml_file(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, "p.toml", TOML), env={})
    assert cfg.kafka.brokers == ("k1:9092", "k2:9092")
    assert cfg.topic("event") == "plant.events"
    assert cfg.elasticsearch.username == "indexer"
    assert cfg.spool.max_bytes == 104857600
    assert cfg.indexer.batch_size == 500
    assert cfg.source.endswith("p.toml")


def test_yaml_file_with_sasl_and_api_key(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, "p.yaml", YAML), env={})
    assert cfg.kafka.brokers == ("k1:9092", "k2:9092")  # comma string becomes a list
    assert cfg.kafka.sasl_mechanism == "SCRAM-SHA-512"
    assert cfg.elasticsearch.api_key == "abc=="


def test_precedence_file_then_env_then_flags(tmp_path: Path) -> None:
    path = write(tmp_path, "p.toml", TOML)
    env = {
        "ICSMON_KAFKA_BROKERS": "env1:9092",
        "ICSMON_INDEXER_BATCH_SIZE": "900",
        "ICSMON_ES_URL": "http://env:9200",
    }
    cfg = load_config(
        path,
        env=env,
        overrides={"kafka": {"brokers": "flag:9092"}, "indexer": {"batch_size": None}},
    )
    assert cfg.kafka.brokers == ("flag:9092",)  # flag beats env beats file
    assert cfg.indexer.batch_size == 900  # env beats file; a flag left unset changes nothing
    assert cfg.elasticsearch.url == "http://env:9200"
    assert cfg.kafka.topic_prefix == "plant"  # only in the file
    assert cfg.source.endswith("p.toml + environment + flags")


def test_config_file_from_environment(tmp_path: Path) -> None:
    path = write(tmp_path, "p.toml", TOML)
    assert load_config(env={"ICSMON_CONFIG": str(path)}).kafka.topic_prefix == "plant"


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("bad.toml", "[kafka\nbrokers = 1", "not valid TOML"),
        ("bad.yaml", "kafka: [unclosed", "not valid YAML"),
        ("bad.toml", "[kafak]\nbrokers = ['a:1']", "unknown section [kafak]"),
        ("bad.toml", "[kafka]\nbroker = 'a:1'", "unknown key kafka.broker"),
        ("bad.toml", "[spool]\nmax_bytes = 'lots'", "bad value for spool.max_bytes"),
        ("bad.toml", "[indexer]\nbatch_size = true", "bad value for indexer.batch_size"),
        ("bad.yaml", "- just\n- a list", "top level must be a table"),
        ("bad.ini", "[kafka]", "unknown config format"),
        ("bad.toml", "[kafka]\nsecurity_protocol = 'SASL_SSL'", "sasl_mechanism"),
        ("bad.toml", "[elasticsearch]\nurl = '127.0.0.1:9200'", "must start with http"),
        ("bad.toml", "[elasticsearch]\nusername = 'u'", "username and password go together"),
        ("bad.toml", "[elasticsearch]\nca_file = '/nonexistent/ca.pem'", "is not a file"),
    ],
)
def test_bad_files_give_one_error_naming_the_file(
    tmp_path: Path, name: str, text: str, message: str
) -> None:
    path = write(tmp_path, name, text)
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert str(path) in str(info.value)
    assert message in str(info.value)


def test_missing_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError, match="nope.toml: cannot read"):
        load_config(missing, env={})


def test_bad_environment_value_names_the_environment() -> None:
    with pytest.raises(
        ConfigError, match=r"environment \(ICSMON_\*\): bad value for spool.max_bytes"
    ):
        load_config(env={"ICSMON_SPOOL_MAX_BYTES": "huge"})
