"""The configuration's sections are written without the dataclass decorator's generated
methods (``pipeline.config._Frozen``: its start-up cost) and behave as
``@dataclass(frozen=True, slots=True)`` classes of the same fields do: construction,
``repr``, ``==``, ``hash``, no assignment, ``replace``, ``fields``, ``asdict``, pickle and
copy; the spool's default folder is platformdirs', found when first read."""

from __future__ import annotations

import copy
import dataclasses
import pickle
import subprocess
import sys
from dataclasses import MISSING, FrozenInstanceError, asdict, fields, replace

import pytest

from pipeline import config
from tests.support import REPO

SECTIONS = [
    cls
    for cls in vars(config).values()
    if isinstance(cls, type) and issubclass(cls, config._Frozen) and cls is not config._Frozen
]


def _reference(cls: type) -> type:
    """The same fields under the dataclass decorator."""
    specs = []
    for f in fields(cls):
        if f.default_factory is not MISSING:
            made = lambda name=f.name: getattr(cls(), name)  # noqa: E731 (the spool's folder found)
            specs.append((f.name, f.type, dataclasses.field(default_factory=made)))
        else:
            specs.append((f.name, f.type, dataclasses.field(default=f.default)))
    return dataclasses.make_dataclass(cls.__name__, specs, frozen=True, slots=True)


def _values(cls: type) -> dict:
    """A value of each field that is not its default."""
    out = {}
    for f in fields(cls):
        default = getattr(cls(), f.name)
        out[f.name] = {tuple: ("x",), bool: not default, int: 7, float: 2.5}.get(type(default), "v")
        if default is None or isinstance(default, str):
            out[f.name] = "v"
    return out


def test_every_section_is_there() -> None:
    assert {c.__name__ for c in SECTIONS} == {
        "KafkaConfig", "EsConfig", "SpoolConfig", "IndexerConfig", "SensorConfig",
        "ControlConfig", "EvidenceConfig", "HuntConfig", "RetentionConfig", "ShardsConfig",
        "PipelineConfig",
    }  # fmt: skip


@pytest.mark.parametrize("cls", SECTIONS, ids=lambda c: c.__name__)
def test_a_section_behaves_as_a_frozen_dataclass(cls: type) -> None:
    ref = _reference(cls)
    assert dataclasses.is_dataclass(cls) and cls.__slots__ == ref.__slots__
    assert cls.__match_args__ == ref.__match_args__
    for kwargs in ({}, _values(cls)):
        ours, theirs = cls(**kwargs), ref(**kwargs)
        assert repr(ours) == repr(theirs)
        assert ours == cls(**kwargs) and hash(ours) == hash(cls(**kwargs))
        assert hash(ours) == hash(theirs)  # the fields' tuple, as the decorator hashes
        assert ours != theirs and ours != object()
        assert asdict(ours) == asdict(theirs)
        assert pickle.loads(pickle.dumps(ours)) == ours
        assert copy.copy(ours) == ours and copy.deepcopy(ours) == ours
        assert replace(ours) == ours
        positional = cls(*(getattr(ours, f.name) for f in fields(cls)))
        assert positional == ours
    if _values(cls):
        changed = replace(cls(), **_values(cls))
        assert changed == cls(**_values(cls)) and changed != cls()
        name = fields(cls)[0].name
        for act in (lambda o: setattr(o, name, 1), lambda o: delattr(o, name)):
            with pytest.raises(FrozenInstanceError) as ours_err:
                act(cls())
            with pytest.raises(FrozenInstanceError) as ref_err:
                act(ref())
            assert str(ours_err.value) == str(ref_err.value)
    for bad_args, bad_kwargs in (((), {"nope": 1}), ((None,) * (len(fields(cls)) + 1), {})):
        with pytest.raises(TypeError):
            cls(*bad_args, **bad_kwargs)
        with pytest.raises(TypeError):
            ref(*bad_args, **bad_kwargs)
    with pytest.raises(AttributeError):
        cls().nope  # noqa: B018


def test_the_spool_folder_is_found_when_read(tmp_path) -> None:
    """``spool.dir`` not given is platformdirs' state folder, looked up when read: making
    a config (every command does) does not import platformdirs."""
    code = """
import sys
from dataclasses import replace
from pipeline.config import SpoolConfig, load_config
cfg = load_config(env={})
print("platformdirs" in sys.modules)
spool = cfg.spool
print(spool.dir, "platformdirs" in sys.modules)
import platformdirs
from pathlib import Path
print(spool.dir == str(Path(platformdirs.user_state_dir("icsmon")) / "spool"))
print(spool == SpoolConfig() == replace(SpoolConfig(), max_bytes=spool.max_bytes))
print(load_config(env={"ICSMON_SPOOL_DIR": "/q"}).spool.dir, SpoolConfig(dir="/r").dir)
"""
    run = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
        check=True,
    )
    lines = run.stdout.splitlines()
    assert lines[0] == "False"
    assert lines[1] == f"{tmp_path}/.local/state/icsmon/spool True"
    assert lines[2:] == ["True", "True", "/q /r"]
