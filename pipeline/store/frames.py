"""The events frame: what the sensor's process makes of each event it stores, for the
store's writer process (``pipeline.store.process``). Compiled with mypyc when icsmon is
installed (``sensor.COMPILED``): it runs for every stored event, in the sensor's (or a
capture worker's) process.

A frame is the rows' columns (one JSON array of them), a NUL, the documents' lengths (a JSON
array), a NUL, the documents joined by newlines (compact JSON holds neither a NUL nor a
newline). The writer takes it apart without a bytes object per document
(``process.decode_events``): the rows go to SQLite, and each block of documents is a slice
of it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

import orjson

from pipeline.docs import default_value, dumps
from pipeline.store.writer import _TEXT_FIELDS, event_columns
from sensor.timestamps import MAX_EPOCH

_EVENT_TEXT: Final = _TEXT_FIELDS.get("event")  # the event row's columns, when all are text
_MAX_EPOCH: Final = MAX_EPOCH  # (Final: the compiled build reads it as a C global)


def event_parts(doc: dict) -> tuple[bytes, bytes]:
    """An event as it travels to the child, the general way (``EventsFrame.add_all`` makes
    the usual event's parts itself): its row's columns (``event_columns``, a JSON array) and
    its JSON, which the child stores as it is, never parsed. Raises for a value JSON cannot
    hold."""
    return orjson.dumps(event_columns(doc, content_id=False)), dumps(doc)


def _usual_row(event: dict) -> list[Any] | None:
    """The row's columns of a usual event (a text id, a float time in ``parse_timestamp``'s
    range), made without ``event_columns``' general calls, the same values; None for any
    other event (``event_parts`` makes its row)."""
    fields = _EVENT_TEXT
    key: Any = event.get("event.id")
    ts: Any = event.get("@timestamp")
    if not (
        fields is not None
        and type(key) is str
        and key
        and type(ts) is float
        and 0.0 <= ts < _MAX_EPOCH  # NaN fails too
    ):
        return None
    columns: list[Any] = [key, ts]
    for name in fields:
        value = event.get(name)
        columns.append(value if isinstance(value, str) else None)
    return columns


class EventsFrame:
    """Events made into an EVENTS frame as they come. Rows and documents are copied into two
    buffers as they come: keeping each event's JSONs alive until the frame is sent cost the
    sender 0.25 µs more per event (allocations), the buffers 0.1."""

    def __init__(self) -> None:
        self._rows = bytearray(b"[")  # each row and a comma
        self._docs = bytearray()  # each document and a newline
        self._lengths: list[int] = []

    def add(self, event: dict) -> None:
        """Raises for a value JSON cannot hold (and then holds nothing of it)."""
        rejected = self.add_all((event,), 0, 1)
        if rejected:
            raise rejected[0][1]

    def add_all(self, events: Sequence[dict], start: int, stop: int) -> list[tuple[int, Exception]]:
        """``events[start:stop]`` added (what ``add`` does for each); the positions of those
        JSON cannot hold, which are left out, and what was raised for each."""
        rejected: list[tuple[int, Exception]] = []
        stop = min(stop, len(events))
        i = start
        while i < stop:
            i = self._add_usual(events, i, stop, rejected)
        return rejected

    def _add_usual(
        self, events: Sequence[dict], start: int, stop: int, rejected: list[tuple[int, Exception]]
    ) -> int:
        """The usual events from ``start`` on (a text id, a float time in range, a document
        orjson takes without options), made here without event_parts' general calls, the
        same bytes: up to the first other event, which ``_add_each`` adds; returns where the
        next run starts. Their rows are made into JSON in one call at the end (one orjson
        call an event less: about 0.1-0.2 us); should that call refuse a row (a text JSON
        cannot hold: a lone surrogate), the run's documents are taken back and the run is
        added event by event by ``_add_each``, which says which events JSON cannot hold."""
        docs = self._docs
        lengths = self._lengths
        docs_mark = len(docs)
        lengths_mark = len(lengths)
        block: list[list[Any]] = []  # the run's rows
        # bound once: the compiled build looks a module's attribute (orjson.dumps) up by name
        # on every use, and an imported name in this module's dictionary
        to_json = orjson.dumps
        newline: Any = orjson.OPT_APPEND_NEWLINE  # kept boxed (an int local is boxed per call)
        default = default_value
        i = start
        while i < stop:
            event = events[i]
            columns = _usual_row(event)
            if columns is None:
                break
            try:
                doc = to_json(event, default=default, option=newline)
            except orjson.JSONEncodeError:
                break
            block.append(columns)
            docs += doc
            lengths.append(len(doc) - 1)
            i += 1
        if block:
            try:
                text = to_json(block)
            except orjson.JSONEncodeError:
                del docs[docs_mark:]
                del lengths[lengths_mark:]
                self._add_each(events, start, i, rejected)
            else:
                rows = self._rows
                rows += memoryview(text)[1:-1]  # the rows without the outer list's brackets
                rows += b","
        if i < stop:  # an event other than the usual: the general way
            self._add_each(events, i, i + 1, rejected)
            i += 1
        return i

    def _add_each(
        self, events: Sequence[dict], start: int, stop: int, rejected: list[tuple[int, Exception]]
    ) -> None:
        """``events[start:stop]`` added one at a time, each row made into JSON on its own; the
        positions of those JSON cannot hold go to ``rejected``, with what was raised."""
        rows = self._rows
        docs = self._docs
        lengths = self._lengths
        to_json = orjson.dumps
        newline: Any = orjson.OPT_APPEND_NEWLINE
        default = default_value
        for i in range(start, stop):
            event = events[i]
            doc: bytes | None = None
            row = b""
            columns = _usual_row(event)
            if columns is not None:
                try:
                    row = to_json(columns)
                    doc = to_json(event, default=default, option=newline)
                except orjson.JSONEncodeError:
                    doc = None
            if doc is None:
                try:
                    row, text = event_parts(event)
                except Exception as exc:  # a value JSON cannot hold: it costs only itself
                    rejected.append((i, exc))
                    continue
                doc = text + b"\n"
            rows += row
            rows += b","
            docs += doc
            lengths.append(len(doc) - 1)

    def __len__(self) -> int:
        return len(self._lengths)

    def frame(self) -> bytes:
        """The frame's payload."""
        if not self._lengths:
            return b"[]\0[]\0"
        return b"".join(
            (
                memoryview(self._rows)[:-1],
                b"]\0",
                orjson.dumps(self._lengths),
                b"\0",
                memoryview(self._docs)[:-1],
            )
        )


def encode_events(events: list[dict]) -> tuple[bytes, int, list[int]]:
    """A batch of events as one EVENTS frame's payload (a capture worker's: ``sense
    --workers``, passed on by ``WriterStore.write_encoded``), how many it holds, and the
    positions of those it could not hold (a value JSON cannot hold: the parent's sink says
    so)."""
    frame = EventsFrame()
    rejected = frame.add_all(events, 0, len(events))
    return frame.frame(), len(frame), [i for i, _ in rejected]
