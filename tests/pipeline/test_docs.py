"""Nesting flat documents: the planned path (one generated function per key sequence) gives
what nesting key by key gives, for every shape, including the ones no plan can take."""

from __future__ import annotations

import io
import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from icsmon.output import Printer, json_line
from pipeline import docs, lines
from pipeline.docs import nest, nest_each_key
from pipeline.lines import add_lines
from sensor.engine import Engine, EngineConfig
from tests.support import REPO


def _same(flat: dict) -> None:
    expected = nest_each_key(dict(flat))
    got = nest(dict(flat))
    # the same structure and the same order at every level (it decides the output bytes)
    assert json.dumps(got) == json.dumps(expected)


def test_events_of_a_capture_nest_as_key_by_key() -> None:
    engine = Engine(EngineConfig(site="s", observer="o", organization="org"))
    events = list(engine.replay([REPO / "pcaps" / "modbus" / "modbus_polling.pcap"]))
    assert events
    for event in events:
        _same(event)
        _same(event)  # the second time through the plan made by the first


def test_shapes_a_plan_cannot_take_fall_back() -> None:
    # a key that is also the head of another: the values decide (a dict value is merged
    # into, anything else replaced), as key by key
    _same({"a": 1, "a.b": 2})
    _same({"a.b": 2, "a": 1})
    _same({"a": {"x": 1}, "a.b": 2})
    _same({"a.b": 1, "a.b.c": 2, "d": 3})
    _same({})
    _same({"": 1, ".": 2, "a..b": 3, "a.": 4})


def test_values_are_never_source() -> None:
    hostile = {"__import__('os').system('false')": 1, "x.'); raise SystemExit('": 2}
    _same(hostile)
    assert nest(hostile)["x"]["'); raise SystemExit('"] == 2


def test_keys_enter_a_plan_as_closed_literals() -> None:
    # key texts are the plan's constants (repr of an exact str): whatever they hold, and
    # whatever name they share with the plan's own (T, I, F, type, doc, v0, K0)
    odd = ['"', "'", "\\", "\n", "\x00", "\ud800", "'''", '"""', "é", "{", "}", "#"]
    names = ["T", "I", "F", "type", "doc", "v0", "K0", "__builtins__", "float"]
    flat: dict = {
        f"{a}.{b}": i for i, (a, b) in enumerate(zip(odd + names, names + odd, strict=True))
    }
    flat["@timestamp"] = 1.5
    _same(flat)
    _same(flat)

    class Sneaky(str):
        def __repr__(self) -> str:
            return "__import__('os')._exit(3)"

    _same({Sneaky("a.b"): 1, Sneaky("c"): 2, "@timestamp": 2.5})


def test_a_plan_builds_its_dicts_from_constant_keys() -> None:
    plan = docs.plan_of(("x.a", "x.b", "y"))
    assert ("a", "b") in plan.__code__.co_consts  # type: ignore[attr-defined]
    assert plan({"x.a": 1, "x.b": 2, "y": 3}) == {"x": {"a": 1, "b": 2}, "y": 3}


def test_times_of_every_kind_through_a_plan() -> None:
    # a float goes straight to iso_timestamp in the plan; anything else as _time_text says
    class Seconds(float):
        pass

    for value in (1.5, Seconds(2.25), 3, True, None, "t", float("nan"), float("inf"), -1.0):
        _same({"@timestamp": value, "event.start": value, "a.b": 1, "event.end": value})


def test_plans_are_capped() -> None:
    docs.PLANS.clear()
    for i in range(docs.MAX_PLANS + 10):
        assert nest({f"k{i}.v": i}) == {f"k{i}": {"v": i}}
    assert len(docs.PLANS) <= docs.MAX_PLANS


_part = st.sampled_from(["a", "b", "c", "", "source", "ip"])
_key = st.lists(_part, min_size=1, max_size=4).map(".".join)
_value = st.one_of(st.integers(), st.text(max_size=3), st.dictionaries(_part, st.integers()))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(_key, _value, max_size=8))
def test_any_flat_document(flat: dict) -> None:
    _same(flat)


def test_printer_blocks_hold_the_same_lines() -> None:
    engine = Engine(EngineConfig(site="s", observer="o", organization="org"))
    events = list(engine.replay([REPO / "pcaps" / "modbus" / "modbus_polling.pcap"]))
    raw = io.BytesIO()
    stream = io.TextIOWrapper(raw, encoding="utf-8")
    printer = Printer("jsonl", stream=stream)
    for event in events * 40:  # more than one block
        printer.write(event)
    printer.flush()
    expected = "".join(json_line(e) + "\n" for e in events * 40)
    assert raw.getvalue().decode() == expected


def test_printer_on_a_text_stream_without_bytes_under_it() -> None:
    out = io.StringIO()
    printer = Printer("jsonl", stream=out)
    printer.write({"@timestamp": "t", "source.ip": "10.0.0.1", "note": "é"})
    printer.flush()
    assert out.getvalue() == '{"@timestamp":"t","source":{"ip":"10.0.0.1"},"note":"é"}\n'


def _printed(docs_: list[dict], by_block: bool) -> bytes:
    raw = io.BytesIO()
    printer = Printer("jsonl", stream=io.TextIOWrapper(raw, encoding="utf-8"))
    assert printer.blocks  # not a terminal
    if by_block:
        for start in range(0, len(docs_), 7):
            printer.write_all(docs_[start : start + 7])
    else:
        for doc in docs_:
            printer.write(doc)
    printer.flush()
    assert printer.count == len(docs_)
    return raw.getvalue()


# what the line-by-line path prints whatever the values: integers beyond 64 bits (the
# standard library's JSON), keys other than text, odd floats (a time that is NaN...)
_odd = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.dictionaries(st.integers(0, 3), st.integers(0, 3), max_size=2),
    st.binary(max_size=3),
)
_odd_doc = st.dictionaries(
    st.sampled_from(["@timestamp", "event.start", "a", "a.b", "a.c", "b", "c.d.e"]),
    st.one_of(_value, _odd),
    max_size=6,
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_odd_doc, max_size=20))
def test_a_block_prints_what_line_by_line_prints(flat_docs: list[dict]) -> None:
    # blocks mixing key sequences (the same keys in another order take another plan)
    assert _printed(flat_docs, by_block=True) == _printed(flat_docs, by_block=False)


def test_a_block_with_equal_keys_that_are_other_objects() -> None:
    # the same keys in a block are mostly the same objects; equal ones made apart, or the
    # same keys in another order, take their own plan
    first = {"a.b": 1, "a.c": 2, "@timestamp": 1.5}
    made = {"".join(["a", ".b"]): 3, "".join(["a", ".c"]): 4, "@timestamp": 2.5}
    swapped = {"a.c": 5, "a.b": 6, "@timestamp": 3.5}
    block = [first, made, swapped, first, {"a.b": 7}]
    assert _printed(block, by_block=True) == _printed(block, by_block=False)
    assert _printed(block, by_block=True).splitlines()[2].startswith(b'{"a":{"c":5,"b":6}')


def test_a_key_that_says_it_equals_another_takes_its_own_shape() -> None:
    # a block reuses the shape of the document before when its keys are the same objects:
    # never on equality alone (a key's own __eq__ could say it is another key)
    class Liar(str):
        __hash__ = str.__hash__

        def __eq__(self, other: object) -> bool:
            return True

    block = [{"a.b": 1, "c": 2}, {Liar("x.y"): 3, Liar("z"): 4}, {"a.b": 5, "c": 6}]
    printed = _printed(block, by_block=True)
    assert printed == _printed(block, by_block=False)
    assert printed.splitlines()[1] == b'{"x":{"y":3},"z":4}'


def test_a_shape_in_use_is_never_filled_by_another_call() -> None:
    # a block's lines fill the output dicts of their key sequence (pipeline.lines): a value
    # whose text prints a line of the same keys while orjson writes it (default_value's
    # str) gets dicts of its own, and the line being written keeps its values
    inner = bytearray()

    class Loud:
        def __str__(self) -> str:
            add_lines([{"a.b": 7, "c": 8, "@timestamp": 2.5}], inner)
            return "loud"

    out = bytearray()
    add_lines(
        [{"a.b": Loud(), "c": 2, "@timestamp": 1.5}, {"a.b": 3, "c": 4, "@timestamp": 1.5}], out
    )
    assert out.splitlines() == [
        b'{"a":{"b":"loud"},"c":2,"@timestamp":"1970-01-01T00:00:01.500000Z"}',
        b'{"a":{"b":3},"c":4,"@timestamp":"1970-01-01T00:00:01.500000Z"}',
    ]
    assert inner == b'{"a":{"b":7},"c":8,"@timestamp":"1970-01-01T00:00:02.500000Z"}\n'
    assert not any(shape.busy for shape in lines.SHAPES.values())


def test_times_of_every_kind_in_a_block() -> None:
    class Seconds(float):
        pass

    block = [
        {"@timestamp": value, "event.start": value, "a.b": 1, "event.end": value}
        for value in (1.5, Seconds(2.25), 3, True, None, "t", float("nan"), float("inf"), -1.0)
    ]
    assert _printed(block, by_block=True) == _printed(block, by_block=False)


def test_a_terminal_gets_each_line_from_a_block_as_it_comes() -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    out = Tty()
    printer = Printer("jsonl", stream=out)
    assert not printer.blocks
    printer.write_all([{"a.b": 1}, {"a.b": 2}])
    assert out.getvalue() == '{"a":{"b":1}}\n{"a":{"b":2}}\n'  # written, not held
