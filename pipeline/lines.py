"""JSON lines of flat documents, a block of them in one call: the printed events of a replay
(``icsmon.output.Printer.write_all``), made without a call into the interpreter per line
but the document's nesting plan (``pipeline.docs``). Compiled with mypyc when icsmon is
installed (``sensor.COMPILED``): it runs for every printed event, in the sensor's process.
"""

from __future__ import annotations

from typing import Any

import orjson

from pipeline.docs import PLANS, Plan, default_value, dumps, plan_of


def add_lines(docs: list[dict[str, Any]], out: bytearray) -> None:
    """Each document's line, ``dumps(nest(doc))`` and a newline, appended to ``out``."""
    # The plan of the document before is tried first: documents of a block mostly share
    # their keys (same objects, in the same order), which a walk over them tells in less
    # time than making the tuple of them and looking it up (about 0.2 us a line less).
    last: tuple[str, ...] = ()
    plan: Plan | None = None
    # bound once a call: the compiled module looked orjson's attributes and the imported
    # names up by name for every line (as EventsFrame.add_all does; the option kept boxed)
    to_json = orjson.dumps
    default: Any = default_value
    option: Any = orjson.OPT_APPEND_NEWLINE
    for doc in docs:
        if plan is None or not _same_keys(doc, last):
            last = tuple(doc)
            plan = PLANS.get(last)
            if plan is None:
                plan = plan_of(last)
        nested = plan(doc)
        try:
            out += to_json(nested, default=default, option=option)
        except orjson.JSONEncodeError:  # what dumps does then (integers beyond 64 bits...)
            out += dumps(nested)
            out += b"\n"


def _same_keys(doc: dict[str, Any], keys: tuple[str, ...]) -> bool:
    """``tuple(doc) == keys`` where the keys are the same objects (else False: the caller
    then looks the plan up by value)."""
    if len(doc) != len(keys):
        return False
    return all(key is keys[i] for i, key in enumerate(doc))
