"""Printing events and alerts for people (rich tables) and programs (JSON lines)."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, BinaryIO, TextIO

import orjson

from pipeline.docs import default_value, dumps, nest
from pipeline.lines import add_lines
from sensor.timestamps import render_times

if TYPE_CHECKING:
    from rich.console import Console

# protocol fields worth a glance in a table, in order
_DETAIL_FIELDS = (
    "modbus.unit_id",
    "modbus.address",
    "modbus.quantity",
    "modbus.values",
    "modbus.subfunction_name",
    "modbus.exception",
    "s7comm.function",
    "s7comm.item_count",
    "s7comm.szl.id",
    "s7comm.pi_service",
    "s7comm_plus.function",
    "opcua.service",
    "opcua.node_ids",
    "opcua.status",
    "cip.service",
    "cip.class_name",
    "cip.tag",
    "cip.values",
    "cip.status_name",
    "rule.name",
    "error.type",
    "error.message",
)


def json_bytes(doc: dict) -> bytes:
    """One document as compact nested JSON, the bytes every sink writes (``pipeline.jsonl``)."""
    return dumps(nest(doc))


def json_line(doc: dict) -> str:
    return dumps(nest(doc)).decode()


BLOCK_BYTES = 1 << 16  # JSON lines are written in blocks of about this size


class Printer:
    """Writes documents to stdout as JSON lines, or collects table rows printed at the end
    in batches (a table per 200 rows so long replays show progress).

    JSON lines go out in blocks of ``BLOCK_BYTES`` (a pipe or a file), or line by line to a
    terminal, where a person waits for each; ``flush`` writes what is held."""

    def __init__(self, fmt: str, stream: TextIO | None = None, kind: str = "event") -> None:
        self.fmt = fmt
        self.kind = kind
        self.stream = stream or sys.stdout
        tty = self.stream.isatty()
        self._tty = tty
        self._console: Console | None = None  # rich, for tables only (made when first used)
        self.rows: list[dict] = []
        self.count = 0
        # the bytes under a text stream (sys.stdout), else the stream itself, decoded
        self._binary: BinaryIO | None = getattr(self.stream, "buffer", None)
        self._held = bytearray()  # JSON lines not written yet, each with its newline
        self._block = 0 if tty else BLOCK_BYTES

    @property
    def blocks(self) -> bool:
        """JSON lines to a pipe or a file: :meth:`write_all` takes a block of documents at
        once (a terminal gets each line as it comes, from :meth:`write`)."""
        return self.fmt == "jsonl" and self._block > 0

    def write(self, doc: dict) -> None:
        self.count += 1
        if self.fmt == "jsonl":
            nested = nest(doc)
            try:  # dumps' first try, inline (a call less for every line)
                line = orjson.dumps(nested, default=default_value, option=orjson.OPT_APPEND_NEWLINE)
            except orjson.JSONEncodeError:
                line = dumps(nested) + b"\n"
            self._held += line
            if len(self._held) > self._block:
                self._write_lines()
            return
        self.rows.append(render_times(doc))  # a table shows times as the documents do
        if len(self.rows) >= 200:
            self.flush()

    def write_all(self, docs: list[dict]) -> None:
        """:meth:`write` for each of ``docs`` (a block of the engine's events): their JSON
        lines made by one compiled call (``pipeline.lines``), not an interpreted call and a
        plan lookup each (about 0.2 us a line less)."""
        if not self.blocks:
            for doc in docs:
                self.write(doc)
            return
        self.count += len(docs)
        add_lines(docs, self._held)
        if len(self._held) > self._block:
            self._write_lines()

    def _write_lines(self) -> None:
        block, self._held = self._held, bytearray()
        if self._binary is not None:
            self.stream.flush()  # anything written as text before goes first
            self._binary.write(block)
            if not self._block:  # a terminal: each line as it comes
                self._binary.flush()
        else:
            self.stream.write(block.decode())

    def flush(self) -> None:
        if self.fmt == "jsonl":
            if self._held:
                self._write_lines()
            if self._binary is not None:
                self._binary.flush()
            self.stream.flush()
            return
        if not self.rows:
            return
        from rich.table import Table

        table = Table(show_lines=False, header_style="bold")
        if self.kind == "alert":
            for col in (
                "time",
                "sev",
                "rule",
                "technique",
                "source -> destination",
                "protocol",
                "count",
            ):
                table.add_column(col)
            for d in self.rows:
                table.add_row(
                    str(d.get("@timestamp", ""))[:23],
                    str(d.get("event.severity", "")),
                    str(d.get("rule.name", "")),
                    ",".join(d.get("threat.technique.id") or []),
                    f"{d.get('source.ip', '')}:{d.get('source.port', '')} -> {d.get('destination.ip', '')}:{d.get('destination.port', '')}",
                    str(d.get("network.protocol", "")),
                    str(d.get("icsmon.alert.count", 1)),
                )
        elif self.kind == "rollup":
            for col in (
                "interval",
                "protocol",
                "client -> server",
                "function",
                "object",
                "tx",
                "ok/exc/fail",
                "rtt ms (min/mean/max)",
                "bytes",
            ):
                table.add_column(col, overflow="fold")
            for d in self.rows:
                rtt = (
                    ""
                    if "icsmon.rollup.response_time.min" not in d
                    else "/".join(
                        f"{d[f'icsmon.rollup.response_time.{k}'] / 1e6:.2f}"
                        for k in ("min", "mean", "max")
                    )
                )
                table.add_row(
                    str(d.get("@timestamp", ""))[:19],
                    str(d.get("network.protocol", "")),
                    f"{d.get('source.ip', '')} -> {d.get('destination.ip', '')}:{d.get('destination.port', '')}",
                    str(d.get("ics.function", "")),
                    str(d.get("icsmon.rollup.object", "")),
                    str(d.get("icsmon.rollup.transactions", "")),
                    f"{d.get('icsmon.rollup.success', 0)}/{d.get('icsmon.rollup.exception', 0)}/{d.get('icsmon.rollup.failure', 0)}",
                    rtt,
                    str(d.get("network.bytes", "")),
                )
        else:
            for col in (
                "time",
                "protocol",
                "source -> destination",
                "action",
                "outcome",
                "details",
            ):
                table.add_column(col, overflow="fold")
            for d in self.rows:
                details = []
                for key in _DETAIL_FIELDS:
                    if key in d:
                        value = d[key]
                        if isinstance(value, list) and len(value) > 8:
                            value = f"{value[:8]}+{len(value) - 8}"
                        details.append(f"{key.split('.', 1)[1]}={value}")
                table.add_row(
                    str(d.get("@timestamp", ""))[:23],
                    str(d.get("network.protocol", d.get("event.dataset", ""))),
                    f"{d.get('source.ip', '')}:{d.get('source.port', '')} -> {d.get('destination.ip', '')}:{d.get('destination.port', '')}",
                    str(d.get("event.action", "")),
                    str(d.get("event.outcome", "")),
                    " ".join(details)[:160],
                )
        self.console.print(table)
        self.rows.clear()

    @property
    def console(self) -> Console:
        if self._console is None:
            from rich.console import Console

            width = 200 if not self._tty else None
            self._console = Console(file=self.stream, soft_wrap=False, width=width)
        return self._console


def print_stats(
    stats: dict[str, int], title: str = "sensor counters", stream: TextIO | None = None
) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(file=stream or sys.stderr)
    table = Table(title=title, show_header=True, header_style="bold")
    table.add_column("counter")
    table.add_column("value", justify="right")
    for key, value in stats.items():
        table.add_row(key, f"{value:,}")
    console.print(table)
