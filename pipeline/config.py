"""Pipeline configuration: where Kafka and Elasticsearch are, how to authenticate, the spool.

Three layers, later ones winning: a config file (TOML or YAML), environment variables
``ICSMON_*``, then command-line flags (passed as ``overrides``). The file's shape::

    [kafka]
    brokers = ["127.0.0.1:9092"]        # or "host1:9092,host2:9092"
    security_protocol = "SASL_SSL"      # PLAINTEXT | SSL | SASL_PLAINTEXT | SASL_SSL
    sasl_mechanism = "SCRAM-SHA-512"    # PLAIN | SCRAM-SHA-256 | SCRAM-SHA-512
    sasl_username = "sensor-0042"
    sasl_password = "..."
    ca_file = "/etc/icsmon/kafka-ca.pem"
    topic_prefix = "icsmon"             # topics <prefix>.alerts/.events/... (pipeline.kinds)
    compression = "lz4"

    [elasticsearch]
    url = "https://soc.example:9200"
    api_key = "..."                     # or username + password
    ca_file = "/etc/icsmon/es-ca.pem"
    index_prefix = "icsmon"             # aliases <prefix>-alerts/-events/... (pipeline.kinds)

    [spool]
    dir = "/var/lib/icsmon/spool"
    max_bytes = 1073741824

    [indexer]
    group_id = "icsmon-indexer"
    batch_size = 2000

    [sensor]
    heartbeat_interval = 60             # seconds; also one heartbeat at start and clean stop
    events = "rollups"                  # to Kafka besides alerts, assets, heartbeats: none | rollups | all
    rollup_interval = 60                # seconds per rollup
    asset_refresh_s = 3600              # an unchanged asset re-sent after this (0: every minute)
    store_max_bytes = 2147483648        # the sensor's own store: full events kept up to this size
    store_max_age_days = 30             # ... and this age

    [control]                           # requests from the province (pipeline/control.py)
    public_key = "/etc/icsmon/control.pub"   # a sensor: the province's key; none: no requests
    private_key = "/etc/icsmon/control.key"  # the province (posture serve): signs requests
    lifetime_s = 900                    # how long a request stays valid

    [evidence]                          # a sensor's packets kept for evidence requests
    ring_max_bytes = 67108864           # recent packets, at most this many bytes
    ring_max_age_s = 300                # ... and this old
    before_s = 5                        # an alert's capture: its flow this long before
    after_s = 5                         # ... and after
    max_events = 2000                   # one request returns at most this many events
    max_pcap_bytes = 8388608            # ... and this much capture

    [hunt]                              # hunts the province requests of a sensor: its caps
    max_events = 10000000               # events one hunt scans at most
    max_seconds = 600                   # ... and how long it runs
    max_alerts = 10000                  # alerts one hunt writes at most
    max_queued = 4                      # hunts waiting behind the one running; more: "busy"

    [retention]                         # the centre's indices, per kind: days kept (0: all)
    alerts = 365
    events = 14
    rollups = 90
    interval_s = 3600                   # how often `icsmon index` prunes

    [shards]                            # primary shards of each kind's daily index (default 1)
    rollups = 19                        # docs/scale.md: a primary per ~40 GB a day

Every key has an environment variable: ``ICSMON_<SECTION>_<KEY>`` upper-cased, e.g.
``ICSMON_KAFKA_BROKERS``, ``ICSMON_ES_URL`` (``ES`` is short for ``ELASTICSEARCH``),
``ICSMON_SPOOL_MAX_BYTES``. A bad file or value raises :class:`ConfigError` naming its origin.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import MISSING, FrozenInstanceError, dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline import kinds

KAFKA_SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
COMPRESSIONS = ("none", "gzip", "snappy", "lz4", "zstd")


#: topics that carry no document kind: dead letters (the indexer's), and the control topic
#: (signed requests to sensors, keyed by sensor id: pipeline/control.py)
TOPICS_NOT_KINDS = ("deadletter", "control")


class ConfigError(ValueError):
    """A configuration problem; the message names the file or variable it came from."""


class _Frozen:
    """What ``@dataclass(frozen=True)`` writes into each class (``__init__``, ``==``,
    ``hash``, ``repr``, no assignment), written once for every section: the dataclass
    decorator compiles six functions per class, ~0.35 ms each of the 11 sections at every
    command's start-up (a replay reads three values of the config). The sections are still
    dataclasses (``fields``, ``replace``, ``asdict``); mypy checks them as frozen ones
    (``_section``). tests/pipeline/test_config.py holds them to what the decorator makes."""

    __slots__ = ()

    def __init__(self, *args: Any, **values: Any) -> None:
        known = self.__dataclass_fields__  # type: ignore[attr-defined]
        if len(args) > len(known):
            raise TypeError(
                f"{type(self).__name__}.__init__() takes {len(known) + 1} positional "
                f"arguments but {len(args) + 1} were given"
            )
        for name, value in zip(known, args, strict=False):
            if name in values:
                raise TypeError(
                    f"{type(self).__name__}.__init__() got multiple values for argument {name!r}"
                )
            values[name] = value
        for name in values:
            if name not in known:
                raise TypeError(
                    f"{type(self).__name__}.__init__() got an unexpected keyword argument {name!r}"
                )
        for name, f in known.items():
            if name in values:
                value = values[name]
            elif f.default_factory is not MISSING:
                value = f.default_factory()
            else:
                value = f.default
            object.__setattr__(self, name, value)
        post_init = getattr(self, "__post_init__", None)
        if post_init is not None:
            post_init()

    def _values(self) -> tuple[Any, ...]:
        return tuple(getattr(self, name) for name in self.__dataclass_fields__)  # type: ignore[attr-defined]

    def __repr__(self) -> str:
        shown = ", ".join(
            f"{name}={getattr(self, name)!r}"
            for name in self.__dataclass_fields__  # type: ignore[attr-defined]
        )
        return f"{type(self).__qualname__}({shown})"

    def __eq__(self, other: object) -> bool:
        if other.__class__ is self.__class__:
            return self._values() == other._values()  # type: ignore[attr-defined]
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._values())

    def __setattr__(self, name: str, value: Any) -> None:
        raise FrozenInstanceError(f"cannot assign to field {name!r}")

    def __delattr__(self, name: str) -> None:
        raise FrozenInstanceError(f"cannot delete field {name!r}")

    def __getstate__(self) -> tuple[Any, ...]:  # pickle and copy (slots, no assignment)
        return self._values()

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        for name, value in zip(self.__dataclass_fields__, state, strict=True):  # type: ignore[attr-defined]
            object.__setattr__(self, name, value)


if TYPE_CHECKING:  # mypy's dataclass checks: frozen, the fields as __init__'s arguments
    from dataclasses import dataclass as _section
else:

    def _section(*, frozen: bool, slots: bool):
        """``@dataclass(frozen=True, slots=True)`` of a ``_Frozen`` subclass: the fields
        found as the decorator finds them, the methods ``_Frozen``'s."""
        assert frozen

        def wrap(cls: type) -> type:
            assert issubclass(cls, _Frozen)
            return dataclass(init=False, repr=False, eq=False, slots=slots)(cls)

        return wrap


@_section(frozen=True, slots=True)
class KafkaConfig(_Frozen):
    """``[kafka]``: the brokers, how to authenticate to them, the topics' prefix."""

    brokers: tuple[str, ...] = ("127.0.0.1:9092",)
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: str | None = None
    ca_file: str | None = None
    topic_prefix: str = "icsmon"
    compression: str = "lz4"  # cheap on CPU, which a sensor box needs for decoding
    # How long a send may wait for metadata or buffer space before the sink spools instead.
    max_block_ms: int = 200


@_section(frozen=True, slots=True)
class EsConfig(_Frozen):
    """``[elasticsearch]``: where the centre's Elasticsearch is, and its credentials."""

    url: str = "http://127.0.0.1:9200"
    api_key: str | None = None
    username: str | None = None
    password: str | None = None
    ca_file: str | None = None
    index_prefix: str = "icsmon"
    request_timeout: float = 30.0


#: ``SpoolConfig.dir`` not given (checked by identity): the user's state folder, found when
#: ``dir`` is first read
_STATE_SPOOL = "<the user's state folder>/spool"


def _state_spool() -> str:
    return _STATE_SPOOL


@_section(frozen=True, slots=True)
class SpoolConfig(_Frozen):
    """``[spool]``: where Kafka documents wait while the brokers are away, and how much."""

    # The default folder is found when ``dir`` is first read, not when the config is made:
    # platformdirs (and its tempfile, shutil...) is ~4 ms of every command's start-up, and
    # only the Kafka sink's spool and a live sensor's control channel read it. Not given,
    # ``dir`` is left unset on the instance (``__post_init__``) and ``__getattr__``, called
    # for an attribute not found, sets it; ``==``, ``repr``, ``hash``, ``replace`` and
    # ``fields`` read it as any field (tests/pipeline/test_config.py).
    dir: str = field(default_factory=_state_spool)
    max_bytes: int = 1 << 30
    segment_bytes: int = 4 << 20

    def __post_init__(self) -> None:
        if self.dir is _STATE_SPOOL:
            object.__delattr__(self, "dir")

    if not TYPE_CHECKING:  # (for mypy, no attribute is dynamic)

        def __getattr__(self, name: str) -> str:
            if name != "dir":
                raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
            import platformdirs

            folder = str(Path(platformdirs.user_state_dir("icsmon")) / "spool")
            object.__setattr__(self, "dir", folder)
            return folder


@_section(frozen=True, slots=True)
class IndexerConfig(_Frozen):
    """``[indexer]``: how ``icsmon index`` reads Kafka into Elasticsearch."""

    group_id: str = "icsmon-indexer"
    batch_size: int = 2000
    poll_timeout_ms: int = 500
    retry_initial_s: float = 0.5
    retry_max_s: float = 30.0
    partitions: int = 3  # for the topics `index --setup` creates


@_section(frozen=True, slots=True)
class SensorConfig(_Frozen):
    """``[sensor]``: a sensor's heartbeats, what it ships, and its own store's bounds."""

    heartbeat_interval: float = 60.0  # seconds between heartbeats (and one at start and stop)
    events: str = "rollups"  # what goes to Kafka besides alerts, assets...: none|rollups|all
    rollup_interval: float = 60.0  # seconds per rollup interval
    # an asset whose record did not change is re-sent to Kafka after this long (pipeline/sinks.py
    # AssetRefresh): the centre's last_seen lags the sensor's by at most this; 0: every minute
    asset_refresh_s: float = 3600.0
    # the sensor's own store (icsmon sense, and the local store of --sink kafka):
    store_max_bytes: int = 2 << 30  # events, rollups, heartbeats pruned oldest first beyond
    store_max_age_days: float = 30.0  # and beyond this age (0: no limit)


@_section(frozen=True, slots=True)
class ControlConfig(_Frozen):
    """``[control]``: signed requests from the province to sensors (``pipeline.control``)."""

    public_key: str | None = None  # a sensor: the province's public key (PEM); None: no requests
    private_key: str | None = None  # the province: its private key (PEM), signs requests
    lifetime_s: int = 900  # how long a request stays valid
    seen_file: str | None = None  # ids a sensor has acted on (default: beside the spool)


@_section(frozen=True, slots=True)
class EvidenceConfig(_Frozen):
    """``[evidence]``: a sensor's packets kept for evidence requests."""

    ring_max_bytes: int = 64 << 20  # the packet ring: recent packets by bytes...
    ring_max_age_s: float = 300.0  # ... and by age
    before_s: float = 5.0  # an alert's capture: its flow's packets this long before it
    after_s: float = 5.0  # ... and after
    capture_max_bytes: int = 4 << 20  # one alert's capture
    dir_max_bytes: int = 256 << 20  # every alert capture kept, oldest removed first
    dir_max_age_days: float = 30.0
    max_events: int = 2000  # what one evidence request may return: events...
    max_pcap_bytes: int = 8 << 20  # ... and capture bytes
    max_window_s: float = 3600.0  # ... from a window at most this long


@_section(frozen=True, slots=True)
class HuntConfig(_Frozen):
    """``[hunt]``: the caps of hunts the province requests of a sensor."""

    max_events: int = 10_000_000  # what one requested hunt may scan...
    max_seconds: float = 600.0  # ... for how long
    max_alerts: int = 10_000  # ... and write
    max_queued: int = 4  # requests waiting behind the running hunt; beyond: refused "busy"


@_section(frozen=True, slots=True)
class RetentionConfig(_Frozen):
    """Days each kind's daily indices are kept at the centre (``pipeline/retention.py``);
    a kind not named is kept for ever. Keys are the kinds' plurals (``alerts``...)."""

    days: tuple[tuple[str, float], ...] = ()
    interval_s: float = 3600.0  # how often the indexer prunes

    def by_kind(self) -> dict[str, float]:
        return {kinds.by_plural(plural).name: days for plural, days in self.days}


#: Elasticsearch's own limit on the primary shards of one index
MAX_PRIMARY_SHARDS = 1024


@_section(frozen=True, slots=True)
class ShardsConfig(_Frozen):
    """Primary shards of each kind's indices at the centre, set in its index template
    (``pipeline/es.py``); a kind not named gets 1. Keys are the kinds' plurals. Elasticsearch
    fixes an index's shards when it creates it: a change applies from the next daily index."""

    primaries: tuple[tuple[str, int], ...] = ()

    def by_kind(self) -> dict[str, int]:
        return {kinds.by_plural(plural).name: n for plural, n in self.primaries}

    def of(self, kind: str) -> int:
        return self.by_kind().get(kind, 1)


@_section(frozen=True, slots=True)
class PipelineConfig(_Frozen):
    """Every section, and where their values came from (``source``)."""

    kafka: KafkaConfig = field(default_factory=KafkaConfig)
    elasticsearch: EsConfig = field(default_factory=EsConfig)
    spool: SpoolConfig = field(default_factory=SpoolConfig)
    indexer: IndexerConfig = field(default_factory=IndexerConfig)
    sensor: SensorConfig = field(default_factory=SensorConfig)
    control: ControlConfig = field(default_factory=ControlConfig)
    evidence: EvidenceConfig = field(default_factory=EvidenceConfig)
    hunt: HuntConfig = field(default_factory=HuntConfig)
    retention: RetentionConfig = field(default_factory=RetentionConfig)
    shards: ShardsConfig = field(default_factory=ShardsConfig)
    source: str = "defaults"  # where the values came from, for messages

    def topic(self, kind: str) -> str:
        """Topic of a document kind: ``event`` -> ``icsmon.events``; ``deadletter`` and
        ``control`` (requests to sensors, not documents) as they are."""
        if kind in TOPICS_NOT_KINDS:
            return f"{self.kafka.topic_prefix}.{kind}"
        return kinds.get(kind).topic(self.kafka.topic_prefix)

    def alias(self, kind: str) -> str:
        return kinds.get(kind).alias(self.elasticsearch.index_prefix)


_SECTIONS: dict[str, type] = {
    "kafka": KafkaConfig,
    "elasticsearch": EsConfig,
    "spool": SpoolConfig,
    "indexer": IndexerConfig,
    "sensor": SensorConfig,
    "control": ControlConfig,
    "evidence": EvidenceConfig,
    "hunt": HuntConfig,
    "retention": RetentionConfig,
    "shards": ShardsConfig,
}
_ENV_SECTION = {
    "kafka": "KAFKA",
    "elasticsearch": "ES",
    "spool": "SPOOL",
    "indexer": "INDEXER",
    "sensor": "SENSOR",
    "control": "CONTROL",
    "evidence": "EVIDENCE",
    "hunt": "HUNT",
    "retention": "RETENTION",
    "shards": "SHARDS",
}


def _coerce(value: Any, default: Any, name: str, origin: str) -> Any:
    """Convert a file/env/flag value to the type of the field's default."""
    want = type(default)
    try:
        if isinstance(default, tuple):
            items = value.split(",") if isinstance(value, str) else list(value)
            out = tuple(str(x).strip() for x in items if str(x).strip())
            if not out:
                raise ValueError("empty list")
            return out
        if isinstance(default, bool):
            if isinstance(value, str):
                if value.lower() in ("1", "true", "yes", "on"):
                    return True
                if value.lower() in ("0", "false", "no", "off"):
                    return False
                raise ValueError(f"not a boolean: {value!r}")
            return bool(value)
        if isinstance(default, int):
            if isinstance(value, bool):
                raise ValueError("a boolean where a number is expected")
            return int(value)
        if isinstance(default, float):
            return float(value)
        if default is None or want is str:
            return None if value is None else str(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{origin}: bad value for {name}: {value!r} ({exc})") from None
    return value


def _apply(
    cfg: PipelineConfig, values: Mapping[str, Mapping[str, Any]], origin: str
) -> PipelineConfig:
    changes: dict[str, Any] = {}
    for section, entries in values.items():
        cls = _SECTIONS.get(section)
        if cls is None:
            raise ConfigError(
                f"{origin}: unknown section [{section}] (known: {', '.join(_SECTIONS)})"
            )
        if not isinstance(entries, Mapping):
            raise ConfigError(f"{origin}: [{section}] must be a table of keys")
        current = changes.get(section, getattr(cfg, section))
        if cls is RetentionConfig:
            changes[section] = _apply_retention(current, entries, origin)
            continue
        if cls is ShardsConfig:
            changes[section] = _apply_shards(current, entries, origin)
            continue
        known = {f.name: getattr(current, f.name) for f in fields(cls)}
        updates = {}
        for key, value in entries.items():
            if key not in known:
                raise ConfigError(
                    f"{origin}: unknown key {section}.{key} (known: {', '.join(sorted(known))})"
                )
            if value is None:
                continue
            updates[key] = _coerce(value, known[key], f"{section}.{key}", origin)
        changes[section] = replace(current, **updates)
    return replace(cfg, **changes)


def _apply_retention(
    current: RetentionConfig, entries: Mapping[str, Any], origin: str
) -> RetentionConfig:
    """``[retention]``: days per kind (its plural, ``alerts = 365``; 0 keeps everything) and
    ``interval_s``."""
    days = dict(current.days)
    interval = current.interval_s
    for key, value in entries.items():
        if value is None:
            continue
        if key == "interval_s":
            interval = _coerce(value, 1.0, "retention.interval_s", origin)
            continue
        try:
            kind = kinds.by_plural(key)
        except ValueError:
            known = ", ".join(k.plural for k in kinds.all_kinds() if k.daily)
            raise ConfigError(
                f"{origin}: unknown key retention.{key} (a kind: {known}; or interval_s)"
            ) from None
        if not kind.daily:
            # one document per id, kept up to date: no daily indices to age out
            raise ConfigError(
                f"{origin}: retention.{key}: {kind.plural} are kept as one document per "
                f"{kind.id_field}, not in daily indices; retention does not apply"
            )
        number = _coerce(value, 1.0, f"retention.{key}", origin)
        if not number >= 0:
            raise ConfigError(f"{origin}: retention.{key} must be 0 (keep) or a number of days")
        days[key] = number
    return replace(current, days=tuple(sorted(days.items())), interval_s=interval)


def _apply_shards(current: ShardsConfig, entries: Mapping[str, Any], origin: str) -> ShardsConfig:
    """``[shards]``: primary shards per kind (its plural, ``rollups = 19``)."""
    primaries = dict(current.primaries)
    for key, value in entries.items():
        if value is None:
            continue
        try:
            plural = kinds.by_plural(key).plural
        except ValueError:
            known = ", ".join(k.plural for k in kinds.all_kinds())
            raise ConfigError(f"{origin}: unknown key shards.{key} (a kind: {known})") from None
        number = _coerce(value, 1, f"shards.{key}", origin)
        if not 1 <= number <= MAX_PRIMARY_SHARDS:
            raise ConfigError(
                f"{origin}: shards.{key} must be between 1 and {MAX_PRIMARY_SHARDS} primaries"
            )
        primaries[plural] = number
    return replace(current, primaries=tuple(sorted(primaries.items())))


def _read_file(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config file ({exc.strerror})") from None
    # the parsers only when a file is read: most runs have none, and a sensor starts faster
    import tomllib

    import yaml

    try:
        if path.suffix.lower() in (".yaml", ".yml"):
            data = yaml.safe_load(text)
        elif path.suffix.lower() == ".toml":
            data = tomllib.loads(text)
        else:
            raise ConfigError(f"{path}: unknown config format (use .toml, .yaml or .yml)")
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: not valid {path.suffix[1:].upper()}: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a table of sections")
    return data


def _from_env(env: Mapping[str, str]) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for section, cls in _SECTIONS.items():
        prefix = f"ICSMON_{_ENV_SECTION[section]}_"
        names = [f.name for f in fields(cls)]
        if cls is RetentionConfig:  # ICSMON_RETENTION_ALERTS=365 ...
            names = [k.plural for k in kinds.all_kinds()] + ["interval_s"]
        elif cls is ShardsConfig:  # ICSMON_SHARDS_ROLLUPS=19 ...
            names = [k.plural for k in kinds.all_kinds()]
        for name in names:
            var = prefix + name.upper()
            if var in env and env[var] != "":
                out.setdefault(section, {})[name] = env[var]
    return out


def load_config(
    path: str | Path | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
) -> PipelineConfig:
    """File, then ``ICSMON_*`` variables, then ``overrides`` (flags: ``{"kafka": {"brokers": ...}}``).

    ``path`` defaults to ``$ICSMON_CONFIG`` when set. ``None`` values in overrides are ignored
    (a flag that was not given).
    """
    env = os.environ if env is None else env
    cfg = PipelineConfig()
    origins = []
    if path is None and env.get("ICSMON_CONFIG"):
        path = env["ICSMON_CONFIG"]
    if path is not None:
        file_path = Path(path)
        cfg = _apply(cfg, _read_file(file_path), str(file_path))
        origins.append(str(file_path))
    env_values = _from_env(env)
    if env_values:
        cfg = _apply(cfg, env_values, "environment (ICSMON_*)")
        origins.append("environment")
    if overrides:
        cfg = _apply(cfg, overrides, "command line")
        origins.append("flags")
    cfg = replace(cfg, source=" + ".join(origins) or "defaults")
    _validate(cfg)
    return cfg


def _validate(cfg: PipelineConfig) -> None:
    where = cfg.source
    k = cfg.kafka
    if k.security_protocol not in KAFKA_SECURITY_PROTOCOLS:
        raise ConfigError(
            f"{where}: kafka.security_protocol must be one of {KAFKA_SECURITY_PROTOCOLS}"
        )
    if k.security_protocol.startswith("SASL"):
        if k.sasl_mechanism not in SASL_MECHANISMS:
            raise ConfigError(
                f"{where}: kafka.sasl_mechanism must be one of {SASL_MECHANISMS} with SASL"
            )
        if not (k.sasl_username and k.sasl_password):
            raise ConfigError(
                f"{where}: kafka.sasl_username and sasl_password are needed with SASL"
            )
    if k.compression not in COMPRESSIONS:
        raise ConfigError(f"{where}: kafka.compression must be one of {COMPRESSIONS}")
    for name, ca in (
        ("kafka.ca_file", k.ca_file),
        ("elasticsearch.ca_file", cfg.elasticsearch.ca_file),
    ):
        if ca and not Path(ca).is_file():
            raise ConfigError(f"{where}: {name} {ca} is not a file")
    es = cfg.elasticsearch
    if not es.url.startswith(("http://", "https://")):
        raise ConfigError(f"{where}: elasticsearch.url must start with http:// or https://")
    if es.api_key and es.username:
        raise ConfigError(f"{where}: give elasticsearch.api_key or username/password, not both")
    if bool(es.username) != bool(es.password):
        raise ConfigError(f"{where}: elasticsearch.username and password go together")
    if cfg.spool.max_bytes < 4 * cfg.spool.segment_bytes:
        raise ConfigError(
            f"{where}: spool.max_bytes must be at least 4 segments ({4 * cfg.spool.segment_bytes})"
        )
    if cfg.indexer.batch_size < 1:
        raise ConfigError(f"{where}: indexer.batch_size must be positive")
    s = cfg.sensor
    if not s.heartbeat_interval >= 1:
        raise ConfigError(f"{where}: sensor.heartbeat_interval must be at least 1 second")
    if not s.rollup_interval >= 1:
        raise ConfigError(f"{where}: sensor.rollup_interval must be at least 1 second")
    if not 0 <= s.asset_refresh_s <= 86400:
        raise ConfigError(f"{where}: sensor.asset_refresh_s must be between 0 and 86400 seconds")
    if s.events not in ("none", "rollups", "all"):
        raise ConfigError(f"{where}: sensor.events must be none, rollups or all, not {s.events!r}")
    if s.store_max_bytes < 0 or not s.store_max_age_days >= 0:
        raise ConfigError(
            f"{where}: sensor.store_max_bytes and store_max_age_days cannot be negative"
        )
    c = cfg.control
    if not 60 <= c.lifetime_s <= 7 * 86400:
        raise ConfigError(f"{where}: control.lifetime_s must be between 60 s and 7 days")
    ev = cfg.evidence
    for name in ("ring_max_bytes", "capture_max_bytes", "dir_max_bytes", "max_pcap_bytes"):
        if getattr(ev, name) < 0:
            raise ConfigError(f"{where}: evidence.{name} cannot be negative")
    for name in ("ring_max_age_s", "before_s", "after_s", "dir_max_age_days"):
        if not getattr(ev, name) >= 0:
            raise ConfigError(f"{where}: evidence.{name} cannot be negative")
    if ev.max_events < 0 or not ev.max_window_s > 0:
        raise ConfigError(f"{where}: evidence.max_events >= 0 and max_window_s > 0, please")
    h = cfg.hunt
    if h.max_events < 1 or not h.max_seconds > 0 or h.max_alerts < 0 or h.max_queued < 1:
        raise ConfigError(
            f"{where}: hunt.max_events, max_seconds and max_queued must be positive, "
            "max_alerts not negative"
        )
    if not cfg.retention.interval_s >= 60:
        raise ConfigError(f"{where}: retention.interval_s must be at least 60 seconds")
