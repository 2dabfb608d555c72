"""JSON lines of flat documents, a block of them in one call: the printed events of a replay
(``icsmon.output.Printer.write_all``), made without a call into the interpreter per line.
Compiled with mypyc when icsmon is installed (``sensor.COMPILED``): it runs for every printed
event, in the sensor's process.

Each key sequence has a shape: the nested dicts of its output, made once (as a plan would
nest them, ``pipeline.docs.plan_tree``), into which each document's values are put in
place, then written by orjson. Putting 32 values into dicts that exist costs about 0.45 us a
line less than a plan building ten dicts anew (and freeing them), and no interpreted call.
"""

from __future__ import annotations

from typing import Any, Final

import orjson

from pipeline.docs import MAX_PLANS, _time_text, default_value, dumps, nest, plan_tree
from sensor.events import iso_timestamp
from sensor.timestamps import TIME_FIELDS


class _Shape:
    """A key sequence's output dicts, with, for each value position, the dict and key it
    goes to and whether it is a time (ISO text on output, as ``nest`` gives it). Its dicts
    hold the values of the last document put in: it is used by one call at a time
    (``busy``), so what orjson reads is never changed under it."""

    def __init__(self, keys: tuple[str, ...], tree: dict[str, Any] | None) -> None:
        self.keys = keys
        self.tree = tree  # None: no plan takes these keys (``nest`` is asked)
        self.busy = False
        n = len(keys)
        self.targets: list[dict[str, Any]] = [{}] * n
        self.names: list[str] = [""] * n
        self.times: list[bool] = [key in TIME_FIELDS for key in keys]
        self.root: dict[str, Any] = {}
        if tree is not None:
            self._make(tree, self.root)

    def _make(self, tree: dict[str, Any], node: dict[str, Any]) -> None:
        # the output's dicts in the tree's order (the order a plan builds them in)
        for part, child in tree.items():
            if isinstance(child, dict):
                inner: dict[str, Any] = {}
                node[part] = inner
                self._make(child, inner)
            else:
                node[part] = None
                self.targets[child] = node
                self.names[child] = part

    def fresh(self) -> _Shape:
        return _Shape(self.keys, self.tree)


# the shapes by key sequence, shared: a call takes one (``busy``) for its block, a call
# that finds it busy (another thread, a value's __str__ printing from orjson's default)
# makes its own
SHAPES: Final[dict[tuple[str, ...], _Shape]] = {}


def _shape(keys: tuple[str, ...], taken: dict[tuple[str, ...], _Shape]) -> _Shape:
    """A shape of these keys for this call (``taken``: those it holds already)."""
    shape = taken.get(keys)
    if shape is not None:
        return shape
    shape = SHAPES.get(keys)
    if shape is None:
        shape = _Shape(keys, plan_tree(keys))
        if len(SHAPES) >= MAX_PLANS:
            SHAPES.clear()
        SHAPES[keys] = shape
    if shape.busy:
        shape = shape.fresh()
    shape.busy = True
    taken[keys] = shape
    return shape


def add_lines(docs: list[dict[str, Any]], out: bytearray) -> None:
    """Each document's line, ``dumps(nest(doc))`` and a newline, appended to ``out``."""
    # The shape of the document before is tried first: documents of a block mostly share
    # their keys (same objects, in the same order). The keys and the values are each taken
    # as a list in one C call (``PyDict_Keys``/``PyDict_Values``).
    taken: dict[tuple[str, ...], _Shape] = {}
    last: list[Any] = []
    shape: _Shape | None = None
    # bound once a call: the compiled module looked orjson's attributes and the imported
    # names up by name for every line (as EventsFrame.add_all does; the option kept boxed)
    to_json = orjson.dumps
    default: Any = default_value
    option: Any = orjson.OPT_APPEND_NEWLINE
    try:
        for doc in docs:
            keys = list(doc.keys())
            if shape is None or not _same_keys(keys, last):
                last = keys
                shape = _shape(tuple(keys), taken)
            if shape.tree is None:
                nested = nest(doc)
            else:
                targets = shape.targets
                names = shape.names
                # a loop over zip (no strict=): mypyc walks the lists by index
                for target, name, value, time in zip(  # noqa: B905 - all as long as keys
                    targets, names, list(doc.values()), shape.times
                ):
                    if time:  # what a plan does with a time
                        value = iso_timestamp(value) if type(value) is float else _time_text(value)
                    target[name] = value
                nested = shape.root
            try:
                out += to_json(nested, default=default, option=option)
            except orjson.JSONEncodeError:  # what dumps does then (integers beyond 64 bits...)
                out += dumps(nested)
                out += b"\n"
    finally:
        for held in taken.values():
            held.busy = False


def _same_keys(keys: list[Any], last: list[Any]) -> bool:
    """``keys == last`` where the keys are the same objects (else False: the caller then
    looks the shape up by value). Not ``==``: a key's own ``__eq__`` could say it is another
    key, and the line would carry the other key's text."""
    if len(keys) != len(last):
        return False
    # a loop over zip without strict=, not all(...) of it: mypyc makes the loop an index
    # over both lists (all() of a generator, or a strict zip, cost 0.6 us more a line)
    for key, known in zip(keys, last):  # noqa: B905, SIM110 - lengths are equal, see above
        if key is not known:
            return False
    return True
