"""The JSON lines sink: nested ECS documents, one per line, to files, streams and pipes."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.docs import dumps, flatten, nest
from pipeline.jsonl import JsonlSink, JsonlSinkError
from tests.support import REPO
from tests.support.store_samples import corpus


def test_file_gets_one_nested_document_per_line(tmp_path: Path) -> None:
    events, alerts, assets = corpus(60)
    path = tmp_path / "out" / "docs.jsonl"
    with JsonlSink(path) as sink:
        for kind, docs in (("event", events), ("alert", alerts), ("asset", assets)):
            for doc in docs:
                sink.write(kind, doc)
        stats = sink.stats()
    lines = path.read_bytes().splitlines()
    assert stats["written"] == len(lines) == len(events) + len(alerts) + len(assets)
    parsed = [json.loads(line) for line in lines]
    assert parsed == [nest(d) for d in (*events, *alerts, *assets)]
    assert [flatten(p) for p in parsed[: len(events)]] == events
    assert all(b", " not in line and b'": ' not in line for line in lines)  # compact


def test_kinds_filter_and_text_stream() -> None:
    events, alerts, _ = corpus(60)
    stream = io.StringIO()
    sink = JsonlSink(stream, kinds=["alert"])
    for ev in events:
        sink.write("event", ev)
    for al in alerts:
        sink.write("alert", al)
    sink.close()
    lines = stream.getvalue().splitlines()
    assert [json.loads(line) for line in lines] == [nest(a) for a in alerts]
    assert sink.stats()["skipped"] == len(events)
    assert not stream.closed  # a stream it was given is not its to close
    with pytest.raises(ValueError):
        JsonlSink(io.StringIO(), kinds=["alerts"])
    with pytest.raises(ValueError):
        sink.write("flow", {})


def test_binary_stream_and_unicode() -> None:
    stream = io.BytesIO()
    sink = JsonlSink(stream)
    doc = {"event.id": "u1", "ics.device.name": "一号锅炉 PLC", "opcua.raw": b"\x01\x02"}
    sink.write("event", doc)
    sink.flush()
    line = stream.getvalue()
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert json.loads(line) == {
        "event": {"id": "u1"},
        "ics": {"device": {"name": "一号锅炉 PLC"}},
        "opcua": {"raw": "0102"},
    }


def test_append_mode_and_huge_integers(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    for i in range(2):
        with JsonlSink(path, append=True) as sink:
            sink.write("event", {"event.id": f"a{i}", "opcua.value": 2**70})
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [d["event"]["id"] for d in lines] == ["a0", "a1"]
    assert lines[0]["opcua"]["value"] == 2**70  # beyond orjson's 64 bits, still exact
    assert dumps({"x": 1}) == b'{"x":1}'


def test_unwritable_path_is_one_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    target = blocker / "out.jsonl"  # a folder that is a file
    with pytest.raises(JsonlSinkError) as info:
        JsonlSink(target)
    assert str(target) in str(info.value) and "\n" not in str(info.value)


def test_a_closed_pipe_stops_output_quietly() -> None:
    """``icsmon ... | head -1``: the reader goes away; the writer counts, never raises."""
    code = (
        "import sys\n"
        "sys.path.insert(0, sys.argv[1])\n"
        "from pipeline.jsonl import JsonlSink\n"
        "sink = JsonlSink(sys.stdout.buffer, line_buffered=True)\n"
        "for i in range(200000):\n"
        "    sink.write('event', {'event.id': str(i), 'x.y': 'z' * 100})\n"
        "sink.close()\n"
        "print(sink.stats(), file=sys.stderr)\n"
    )
    writer = subprocess.Popen(
        [sys.executable, "-c", code, str(REPO)], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert writer.stdout is not None
    first = writer.stdout.readline()
    writer.stdout.close()
    _, err = writer.communicate(timeout=120)
    assert json.loads(first) == {"event": {"id": "0"}, "x": {"y": "z" * 100}}
    assert writer.returncode == 0, err
    assert b"'dropped': " in err and b"Traceback" not in err
