"""The rule pack's cache (detectors/sigma/pack.py): a pack read back runs exactly as the pack
it was written from, is never used for other rule files, placeholders or a damaged file, and
a pack with errors is never cached."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from detectors.sigma import RuleLoadError, SigmaEngine
from detectors.sigma import pack as rule_pack
from tests.detectors.test_sigma_engine import (
    MODIFIER_CASES,
    RULE_ID,
    engine_for,
    event,
    fires,
    rule_text,
)
from tests.support import REPO


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setenv("ICSMON_RULE_CACHE", str(folder))
    return folder


def _from_cache(engine: SigmaEngine) -> bool:
    return all(r.sigma is None for r in engine.rules)


def _same_engines(a: SigmaEngine, b: SigmaEngine) -> None:
    assert a._sources == b._sources  # the generated matchers, source for source
    assert a._legends == b._legends  # and the values bound to their names
    assert [r.meta for r in a.rules] == [r.meta for r in b.rules]
    assert [(r.output, r.fields, r.service) for r in a.rules] == [
        (r.output, r.fields, r.service) for r in b.rules
    ]
    for ra, rb in zip(a.rules, b.rules, strict=True):
        ca, cb = ra.compiled, rb.compiled
        assert (ca.anchor, ca.dataset, ca.kind) == (cb.anchor, cb.dataset, cb.kind)
    strip = [{**vars_of(c), "sigma": None} for c in a.pack.correlations]
    assert strip == [vars_of(c) for c in b.pack.correlations]
    assert a.pack.problems == b.pack.problems
    assert a.pack.placeholders == b.pack.placeholders


def vars_of(obj: Any) -> dict[str, Any]:
    return {name: getattr(obj, name) for name in obj.__slots__}


def test_the_shipped_pack_read_back_is_the_pack_loaded(cache: Path) -> None:
    loaded = SigmaEngine.load()
    assert not _from_cache(loaded)
    assert len(list(cache.glob("rules-*.bin"))) == 1
    read_back = SigmaEngine.load()
    assert _from_cache(read_back)
    _same_engines(loaded, read_back)


@pytest.mark.parametrize(
    ("detection", "hits", "misses"), MODIFIER_CASES, ids=range(len(MODIFIER_CASES))
)
def test_every_kind_of_condition_read_back(
    tmp_path: Path, detection: str, hits: list[dict[str, Any]], misses: list[dict[str, Any]]
) -> None:
    """Wildcards, regular expressions and their flags, CIDR ranges, comparisons, exists,
    null, field references, keywords...: the same answers from a pack read back, on the
    general path and through the generated matcher."""
    rules = tmp_path / "rules"
    rules.mkdir()
    loaded = engine_for(rules, detection)
    read_back = engine_for(rules, detection)
    assert not _from_cache(loaded) and _from_cache(read_back)
    _same_engines(loaded, read_back)
    for fields, want in [(f, True) for f in hits] + [(f, False) for f in misses]:
        for action in (None, "read-coils"):  # general path; generated matcher
            ev = event(**{k.replace(".", "__"): v for k, v in fields.items()})
            if action:
                ev["event.action"] = action
            assert fires(read_back, dict(ev)) is want, fields
            assert fires(loaded, dict(ev)) is want, fields


def test_a_changed_rule_file_is_loaded_again(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    engine_for(rules, "sel:\n  modbus.function_code: 5\ncondition: sel")
    changed = engine_for(rules, "sel:\n  modbus.function_code: 6\ncondition: sel")
    assert not _from_cache(changed)
    assert fires(changed, event(modbus__function_code=6))
    assert not fires(changed, event(modbus__function_code=5))


def test_other_placeholder_values_are_another_pack(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "rule.yml").write_text(
        rule_text("sel:\n  source.ip|expand: '%engineering_stations%'\ncondition: sel")
    )
    first = SigmaEngine.load(rules, placeholders={"engineering_stations": ["10.0.0.66"]})
    other = SigmaEngine.load(rules, placeholders={"engineering_stations": ["10.0.0.67"]})
    assert not _from_cache(first) and not _from_cache(other)
    assert any(a["rule.id"] == RULE_ID for a in first.process(event()) + first.flush())
    assert not any(a["rule.id"] == RULE_ID for a in other.process(event()) + other.flush())
    again = SigmaEngine.load(rules, placeholders={"engineering_stations": ["10.0.0.66"]})
    assert _from_cache(again)
    _same_engines(first, again)


def test_a_damaged_cache_file_means_a_full_load(tmp_path: Path, cache: Path) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    detection = "sel:\n  modbus.function|contains: hold\ncondition: sel"
    loaded = engine_for(rules, detection)
    (cached,) = cache.glob("rules-*.bin")
    for damage in (b"", cached.read_bytes()[:100], b"\xff" * 64):
        cached.write_bytes(damage)
        again = engine_for(rules, detection)
        assert not _from_cache(again)  # loaded in full, and the file written again
        _same_engines(loaded, again)
    assert _from_cache(engine_for(rules, detection))


def test_a_pack_with_errors_is_never_cached(tmp_path: Path, cache: Path) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "rule.yml").write_text(
        rule_text("sel:\n  modbus.function|re: '(?<=x)y'\ncondition: sel")
    )
    for _ in range(2):
        with pytest.raises(RuleLoadError, match="look-around"):
            SigmaEngine.load(rules)
    assert not list(cache.glob("rules-*.bin"))


def test_no_cache_when_turned_off(
    tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ICSMON_RULE_CACHE", "off")
    assert not _from_cache(SigmaEngine.load())
    assert not _from_cache(SigmaEngine.load())
    assert not cache.exists()


def test_an_unwritable_cache_folder_is_no_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("ICSMON_RULE_CACHE", str(blocker / "cache"))
    assert not _from_cache(SigmaEngine.load())


def test_the_cache_is_bounded(tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rule_pack, "MAX_CACHED", 3)
    for n in range(5):
        rules = tmp_path / f"rules{n}"
        rules.mkdir()
        engine_for(rules, f"sel:\n  modbus.function_code: {n}\ncondition: sel")
    assert len(list(cache.glob("rules-*.bin"))) == 3


def test_a_replay_starts_without_pysigma(tmp_path: Path) -> None:
    """The point of the cache: a replay with the shipped pack, once cached, does not import
    pySigma (about a third of a second of start-up)."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from icsmon.run import load_detectors\n"
        "load_detectors(None, False, None, None)\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'sigma', 'jinja2', 'pyparsing'}))\n"
    )
    runs = [
        subprocess.run(
            [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
        ).stdout.strip()
        for _ in range(2)
    ]
    assert runs[0] != "[]"  # the first run loads the pack in full (and caches it)
    assert runs[1] == "[]"


def test_the_matchers_code_is_read_back_not_compiled_again(
    tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The generated matchers' code objects are cached beside the packs (``compiled``): a
    second load compiles nothing, and runs what the first ran; a damaged file is compiled
    again; with the cache off nothing is written."""
    rules = tmp_path / "rules"
    rules.mkdir()
    detection = "sel:\n  modbus.function_code: 8\ncondition: sel"
    loaded = engine_for(rules, detection)
    codes = sorted(cache.glob("code-*.bin"))
    assert codes and len(codes) == len(loaded._sources)

    def no_compile(*_: object) -> None:
        raise AssertionError("compiled again")

    with monkeypatch.context() as m:
        m.setattr(rule_pack, "compile", no_compile, raising=False)
        read_back = engine_for(rules, detection)
    _same_engines(loaded, read_back)
    for engine in (loaded, read_back):
        assert fires(engine, event(**{"modbus.function_code": 8}))
        assert not fires(engine, event(**{"modbus.function_code": 5}))
    for code in codes:
        code.write_bytes(b"\xff" * 16)
    _same_engines(loaded, engine_for(rules, detection))
    assert all(code.read_bytes() != b"\xff" * 16 for code in codes)  # written again
    monkeypatch.setenv("ICSMON_RULE_CACHE", "off")
    assert rule_pack.compiled("x = 1\n", "<probe>").co_filename == "<probe>"
