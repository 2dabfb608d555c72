"""A loaded rule pack (what the engine runs), the placeholders it was loaded with, and its
cache.

Loading a pack (``loader``: pySigma parses, the pipeline maps, ``compiler`` compiles) takes
pySigma's import and a parse of every rule: about 0.3 s of CPU, most of the start-up of an
``icsmon replay``. What it yields is plain data (rule metadata, condition trees whose leaves
carry recipes: ``nodes``), so a pack that loaded without errors is written to a cache file
and read back by the next run that loads the same pack: the same rule files (paths and
bytes), pipeline, placeholder values, icsmon rule code, pySigma and Python. The engine then
starts without importing pySigma. The cache is a folder of small files
(``ICSMON_RULE_CACHE``, else ``$XDG_CACHE_HOME/icsmon/rules``, else
``~/.cache/icsmon/rules``; at most ``MAX_CACHED`` packs); ``ICSMON_RULE_CACHE=off`` turns it
off. A cache file that cannot be read
or written only means a full load.
"""

from __future__ import annotations

import marshal
import os
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import CodeType
from typing import TYPE_CHECKING, Any

from detectors.alerts import RuleMeta
from detectors.sigma.nodes import (
    And,
    Compiled,
    Const,
    Eq,
    Node,
    Not,
    Or,
    Test,
    Whole,
    plan,
    test_node,
    whole_node,
)
from sensor.digests import sha256

if TYPE_CHECKING:
    from sigma.correlations import SigmaCorrelationRule
    from sigma.rule import SigmaRule


PACKAGE = Path(__file__).resolve().parent.parent
PIPELINE_PATH = PACKAGE / "pipelines" / "ics_ecs.yml"


def shipped_rules(root: Path = PACKAGE.parent, prefix: str = sys.prefix) -> Path:
    """The rule pack: ``rules/`` of a source checkout (or an editable install); a wheel
    installs it as data files under ``<prefix>/share/icsmon/rules`` (pyproject.toml)."""
    source = root / "rules"
    if source.is_dir():
        return source
    return Path(prefix) / "share" / "icsmon" / "rules"


SHIPPED_RULES = shipped_rules()
UNSET = "255.255.255.255"


class SiteConfigError(ValueError):
    """A site configuration file that cannot be used (the message names the file)."""


@dataclass(frozen=True, slots=True)
class Problem:
    path: str
    line: int
    rule_id: str
    message: str
    severity: str = "error"  # "error" refuses the rule; "warning" is reported only

    def __str__(self) -> str:
        rid = f" [{self.rule_id}]" if self.rule_id else ""
        return f"{_shown(self.path)}:{self.line}:{rid} {self.severity}: {self.message}"


def _shown(path: str) -> str:
    """A path relative to the working directory when it is below it (shorter messages)."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd()))
    except (ValueError, OSError):
        return path


class RuleLoadError(ValueError):
    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


@dataclass(slots=True)
class LoadedRule:
    meta: RuleMeta
    name: str | None  # the Sigma ``name`` correlations refer to
    service: str | None  # None: every ICS protocol
    compiled: Compiled
    output: bool  # False for base rules that only feed correlations
    fields: frozenset[str]
    sigma: SigmaRule | None  # None when read from the cache


@dataclass(slots=True)
class LoadedCorrelation:
    meta: RuleMeta
    kind: str
    rules: list[str]  # ids of the referenced rules, in the rule's order
    rule_names: list[str]  # their names (or ids), as correlation state keys
    group_by: list[str]
    timespan: float
    threshold: int
    op: str
    value_field: str | None
    aliases: dict[str, dict[str, str]]
    sigma: SigmaCorrelationRule | None  # None when read from the cache


@dataclass(slots=True)
class Pack:
    rules: list[LoadedRule] = field(default_factory=list)
    correlations: list[LoadedCorrelation] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    placeholders: dict[str, list[str]] = field(default_factory=dict)


# --- locations --------------------------------------------------------------------------


def read_site_config(path: Path) -> dict[str, list[str]]:
    """Placeholder values from a site YAML: ``placeholders:`` (or a pySigma ``vars:``) mapping."""
    import yaml  # here: a sensor without a site configuration starts without PyYAML

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise SiteConfigError(f"{path}: cannot read site configuration: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise SiteConfigError(f"{path}: not valid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SiteConfigError(f"{path}: expected a mapping with a 'placeholders' key")
    values = data.get("placeholders", data.get("vars", {}))
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise SiteConfigError(f"{path}: 'placeholders' must map names to lists of hosts")
    return _normalise_placeholders(values, str(path))


def _normalise_placeholders(values: Mapping[str, Any], origin: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for name, items in values.items():
        if items is None:
            items = []
        if isinstance(items, str | int | float):
            items = [items]
        if not isinstance(items, list) or not all(isinstance(i, str | int | float) for i in items):
            raise SiteConfigError(f"{origin}: placeholder {name!r} must be a list of hosts")
        out[str(name).strip("%")] = [str(i) for i in items]
    return out


def pipeline_defaults() -> dict[str, list[str]]:
    """The pipeline's placeholder defaults (its ``vars``): from the cache folder when it holds
    them for these exact bytes of the pipeline file, else parsed (and cached): a sensor with
    a cached pack then starts without importing PyYAML."""
    text = PIPELINE_PATH.read_bytes()
    folder = cache_dir()
    target = None
    if folder is not None:
        target = folder / f"pipeline-{sha256(text).hexdigest()[:32]}.bin"
        try:
            cached = marshal.loads(target.read_bytes())
            if isinstance(cached, dict) and all(
                type(k) is str and type(v) is list and all(type(i) is str for i in v)
                for k, v in cached.items()
            ):
                return cached
        except Exception:  # none yet, damaged or foreign: parse the file
            pass
    import yaml

    # libyaml when PyYAML has it: the same document, a few ms instead of tens at start-up
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    data = yaml.load(text.decode("utf-8"), Loader=loader)  # noqa: S506
    values = _normalise_placeholders(data.get("vars") or {}, str(PIPELINE_PATH))
    if target is not None:
        _write_file(target, marshal.dumps(values), "pipeline-*.bin")
    return values


def resolve_placeholders(
    site_config: Path | None = None, placeholders: Mapping[str, list[str]] | None = None
) -> dict[str, list[str]]:
    merged = pipeline_defaults()
    if placeholders:
        merged.update(_normalise_placeholders(placeholders, "placeholders"))
    if site_config is not None:
        merged.update(read_site_config(site_config))
    return {k: (v if v else [UNSET]) for k, v in merged.items()}


def rule_files(paths: Iterable[Path]) -> list[Path]:
    files: list[Path] = []
    for p in paths:
        if p.is_dir():
            files.extend(sorted(p.rglob("*.yml")) + sorted(p.rglob("*.yaml")))
        else:
            files.append(p)
    return files


# --- the cache --------------------------------------------------------------------------

CACHE_FORMAT = 1  # raised whenever what a cache file holds changes shape
MAX_CACHED = 32  # pack files kept in the cache folder (the oldest go first)
MAX_CACHED_CODE = 256  # compiled matchers kept (a pack has one per dataset its rules read)


def cache_dir() -> Path | None:
    """The folder of cached packs; None when caching is off."""
    folder = os.environ.get("ICSMON_RULE_CACHE")
    if folder == "off":
        return None
    if folder:
        return Path(folder)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "icsmon" / "rules"


def load_cached(
    paths: list[Path], values: Mapping[str, list[str]], load: Callable[[], Pack]
) -> Pack:
    """The pack of the rule files under ``paths`` with placeholder ``values``: from the cache
    when it holds it, else from ``load()`` (written to the cache when it has no errors)."""
    folder = cache_dir()
    if folder is None or not all(p.exists() for p in paths):
        return load()  # a missing path is the loader's problem to report
    try:
        files = rule_files(paths)
        key = _cache_key(files, values)
    except OSError:
        return load()
    if not files:
        return load()
    target = folder / f"rules-{key}.bin"
    pack = _read(target, key)
    if pack is not None:
        return pack
    pack = load()
    if not any(p.severity == "error" for p in pack.problems):
        _write(folder, target, key, pack)
    return pack


def _sources_digest() -> bytes:
    """What decides how rule files become a pack, besides the files: icsmon's rule code,
    the pipeline, pySigma's version, Python's."""
    h = sha256(f"{CACHE_FORMAT}|{sys.version}".encode())
    here = Path(__file__).resolve().parent
    for source in (
        *sorted(here.glob("*.py")),
        here.parent / "alerts.py",
        here.parent / "attack_ics.py",
        PIPELINE_PATH,
    ):
        h.update(source.name.encode() + b"\0" + source.read_bytes())
    import importlib.util

    spec = importlib.util.find_spec("sigma")
    for location in (spec.submodule_search_locations or []) if spec else []:
        # the installed distribution's folder names its version
        h.update(" ".join(sorted(p.name for p in Path(location).parent.glob("pysigma-*"))).encode())
    return h.digest()


def _cache_key(files: list[Path], values: Mapping[str, list[str]]) -> str:
    h = sha256(_sources_digest())
    h.update(repr(sorted((str(k), list(map(str, v))) for k, v in values.items())).encode())
    for f in files:
        h.update(b"\0" + str(f).encode() + b"\0" + f.read_bytes())
    return h.hexdigest()[:32]


def _encode(node: Node) -> tuple[Any, ...]:
    if isinstance(node, Eq):
        return ("E", node.field, node.keys)
    if isinstance(node, Test):
        return ("T", node.field, node.recipe, node.what, node.compare, node.affix)
    if isinstance(node, Whole):
        return ("W", node.recipe, node.what)
    if isinstance(node, Const):
        return ("C", node.value)
    if isinstance(node, Not):
        return ("N", _encode(node.item))
    return ("A" if isinstance(node, And) else "O", tuple(_encode(i) for i in node.items))


def _decode(data: tuple[Any, ...]) -> Node:
    tag = data[0]
    if tag == "E":
        return Eq(data[1], data[2])
    if tag == "T":
        return test_node(data[1], data[2], data[3], data[4], data[5])
    if tag == "W":
        return whole_node(data[1], data[2])
    if tag == "C":
        return Const(data[1])
    if tag == "N":
        return Not(_decode(data[1]))
    if tag == "A":
        return And([_decode(i) for i in data[1]])
    if tag == "O":
        return Or([_decode(i) for i in data[1]])
    raise ValueError(f"unknown node {tag!r}")


_META = (
    "id",
    "name",
    "level",
    "description",
    "author",
    "references",
    "techniques",
    "tactics",
    "tags",
    "path",
    "correlation",
)


def _meta(meta: RuleMeta) -> tuple[Any, ...]:
    return tuple(getattr(meta, name) for name in _META)


def _dump(key: str, pack: Pack) -> bytes:
    rules = []
    for r in pack.rules:
        if r.compiled.node is None:
            raise ValueError("a rule without its condition tree")
        rules.append(
            (_meta(r.meta), r.name, r.service, _encode(r.compiled.node), r.output, r.fields)
        )
    correlations = [
        (
            _meta(c.meta),
            c.kind,
            tuple(c.rules),
            tuple(c.rule_names),
            tuple(c.group_by),
            c.timespan,
            c.threshold,
            c.op,
            c.value_field,
            c.aliases,
        )
        for c in pack.correlations
    ]
    problems = [(p.path, p.line, p.rule_id, p.message, p.severity) for p in pack.problems]
    placeholders = {k: list(v) for k, v in pack.placeholders.items()}
    return marshal.dumps(
        (CACHE_FORMAT, key, tuple(rules), tuple(correlations), tuple(problems), placeholders)
    )


def _load(data: bytes, key: str) -> Pack | None:
    fmt, stored_key, rules, correlations, problems, placeholders = marshal.loads(data)
    if fmt != CACHE_FORMAT or stored_key != key:
        return None
    pack = Pack(placeholders={k: list(v) for k, v in placeholders.items()})
    for meta, name, service, node, output, fields in rules:
        tree = _decode(node)
        compiled: Compiled = plan(tree, service, fields)
        pack.rules.append(
            LoadedRule(RuleMeta(*meta), name, service, compiled, output, fields, None)
        )
    for (
        meta,
        kind,
        ids,
        names,
        group_by,
        timespan,
        threshold,
        op,
        value_field,
        aliases,
    ) in correlations:
        pack.correlations.append(
            LoadedCorrelation(
                RuleMeta(*meta),
                kind,
                list(ids),
                list(names),
                list(group_by),
                timespan,
                threshold,
                op,
                value_field,
                aliases,
                None,
            )
        )
    pack.problems.extend(Problem(*p) for p in problems)
    return pack


def _read(target: Path, key: str) -> Pack | None:
    try:
        data = target.read_bytes()
    except OSError:
        return None
    try:
        return _load(data, key)
    except Exception:  # a damaged or foreign file: load the pack again (and rewrite it)
        return None


def _write(folder: Path, target: Path, key: str, pack: Pack) -> None:
    try:
        data = _dump(key, pack)
    except ValueError:
        return  # no cache: the next run loads the pack again
    _write_file(target, data, "rules-*.bin")


def compiled(source: str, filename: str) -> CodeType:
    """``compile(source, filename, "exec")``: from the cache folder when it holds the code
    of these exact source and name (the generated matchers of ``detectors.sigma.codegen``,
    the same for a cached pack every run: their compile was 4 ms of a sensor's start-up,
    reading them back 0.2), else compiled and cached."""
    folder = cache_dir()
    if folder is None:
        return compile(source, filename, "exec")
    text = f"{CACHE_FORMAT}|{sys.version}|{filename}\0{source}".encode()
    target = folder / f"code-{sha256(text).hexdigest()[:32]}.bin"
    try:
        code = marshal.loads(target.read_bytes())
        if isinstance(code, CodeType) and code.co_filename == filename:
            return code
    except Exception:  # none yet, damaged or foreign: compile the source
        pass
    code = compile(source, filename, "exec")
    _write_file(target, marshal.dumps(code), "code-*.bin", MAX_CACHED_CODE)
    return code


def _write_file(target: Path, data: bytes, kind: str, keep: int | None = None) -> None:
    """``data`` as the cache file ``target`` (whole or not at all); the oldest files of its
    ``kind`` beyond ``keep`` (else ``MAX_CACHED``) go."""
    folder = target.parent
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        import tempfile  # here: a cached pack is read without it (~2 ms of start-up)

        fd, tmp = tempfile.mkstemp(prefix=".rules-", dir=folder)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
            os.replace(tmp, target)  # readers see a whole file or none
        except BaseException:
            os.unlink(tmp)
            raise
        cached = sorted(folder.glob(kind), key=lambda p: p.stat().st_mtime)
        for old in cached[: -(keep or MAX_CACHED)]:
            old.unlink(missing_ok=True)
    except (OSError, ValueError):
        pass  # no cache: the next run loads the pack again
