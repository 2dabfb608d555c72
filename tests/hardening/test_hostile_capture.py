"""Hostile capture files (issue 8): the pcap and pcapng readers fed cut, edited and random files.

The properties, for both formats: reading never raises (a file that is not a capture at all
raises CaptureError when opened, by design); every frame whose record lies wholly before the
first damaged byte is yielded unchanged ("the packets before the damage are processed");
damage is reported, ``reader.error`` is one line naming the file, the byte offset and the
packets read, and a file that was not consumed to its end always has ``error`` set. The
seeds are the real captures of pcaps/ and pcapng re-encodings of them (tests/support/pcapgen.py);
tests/sensor/test_capture.py covers the well-formed variants and one cut/corrupt case each.
"""

from __future__ import annotations

import struct
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sensor.capture import CaptureError, CaptureReader
from tests.hardening.fuzz.common import pcap_seeds
from tests.hardening.fuzz.fuzz_capture import check_capture

SEEDS = {name: blob for name, blob in pcap_seeds().items() if len(blob) < 40_000}
HOSTILE = settings(
    max_examples=120,
    deadline=timedelta(seconds=2),
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.function_scoped_fixture,
        HealthCheck.data_too_large,
    ],
)
_COUNTER = iter(range(10**9))


def boundaries(blob: bytes) -> list[tuple[int, int | None]]:
    """(end offset of each record/block, index of the frame it carries or None), walked
    independently of the reader, on an undamaged file."""
    out: list[tuple[int, int | None]] = []
    frame = 0
    if blob[:4] == b"\x0a\x0d\x0d\x0a":
        pos = 0
        order = "<" if blob[8:12] == b"\x4d\x3c\x2b\x1a" else ">"
        while pos < len(blob):
            btype, blen = struct.unpack_from(order + "II", blob, pos)
            carries = btype in (2, 3, 6)
            out.append((pos + blen, frame if carries else None))
            frame += carries
            pos += blen
        return out
    order = "<" if blob[:4] in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
    pos = 24
    while pos < len(blob):
        incl = struct.unpack_from(order + "I", blob, pos + 8)[0]
        pos += 16 + incl
        out.append((pos, frame))
        frame += 1
    assert pos == len(blob)
    return out


def read(tmp: Path, blob: bytes) -> tuple[CaptureReader | None, list]:
    path = tmp / f"c{next(_COUNTER)}.cap"
    path.write_bytes(blob)
    check_capture(path)  # the contract: never raises, one-line errors naming the file
    try:
        reader = CaptureReader(path)
    except CaptureError:
        return None, []
    frames = list(reader)
    path.unlink()
    return reader, frames


@pytest.fixture(scope="module")
def originals(tmp_path_factory) -> dict[str, list]:
    tmp = tmp_path_factory.mktemp("orig")
    out = {}
    for name, blob in SEEDS.items():
        reader, frames = read(tmp, blob)
        assert reader is not None and reader.error is None and frames, name
        assert len(frames) == sum(1 for _e, f in boundaries(blob) if f is not None), name
        out[name] = frames
    return out


def test_seeds_cover_both_formats() -> None:
    kinds = {blob[:4] for blob in SEEDS.values()}
    assert b"\x0a\x0d\x0d\x0a" in kinds and b"\xd4\xc3\xb2\xa1" in kinds and len(SEEDS) >= 10


@HOSTILE
@given(name=st.sampled_from(sorted(SEEDS)), where=st.floats(0, 1, exclude_max=True))
def test_cut_file_yields_every_record_before_the_cut(
    tmp_path, originals, name: str, where: float
) -> None:
    blob = SEEDS[name]
    cut = 4 + int(where * (len(blob) - 4))
    reader, frames = read(tmp_path, blob[:cut])
    assert reader is not None
    complete = [f for end, f in boundaries(blob) if end <= cut and f is not None]
    assert frames == originals[name][: len(complete)]
    at_boundary = cut in {end for end, _f in boundaries(blob)} or cut == (
        24 if blob[:4] != b"\x0a\x0d\x0d\x0a" else -1
    )
    if at_boundary:
        assert reader.error is None
    else:
        assert reader.error and f"after {len(frames)} packets" in reader.error


@HOSTILE
@given(
    name=st.sampled_from(sorted(SEEDS)),
    edits=st.lists(
        st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255)), min_size=1, max_size=6
    ),
)
def test_edited_file_keeps_what_is_before_the_first_damaged_byte(
    tmp_path, originals, name: str, edits
) -> None:
    blob = bytearray(SEEDS[name])
    first = len(blob)
    for where, value in edits:
        i = int(where * len(blob))
        if blob[i] != value:
            blob[i] = value
            first = min(first, i)
    reader, frames = read(tmp_path, bytes(blob))
    if reader is None:
        assert first < 4  # only a damaged magic number makes it "not a capture"
        return
    intact = [f for end, f in boundaries(SEEDS[name]) if end <= first and f is not None]
    assert frames[: len(intact)] == originals[name][: len(intact)]
    if reader.error is None:
        assert walks_to_the_end(bytes(blob))


@HOSTILE
@given(
    header=st.sampled_from([b"\xd4\xc3\xb2\xa1", b"\xa1\xb2\x3c\x4d", b"\x0a\x0d\x0d\x0a"]),
    body=st.binary(max_size=2000),
)
def test_random_bytes_behind_a_magic_number(tmp_path, header: bytes, body: bytes) -> None:
    reader, frames = read(tmp_path, header + body)
    assert reader is not None
    if len(header + body) < 24 and header != b"\x0a\x0d\x0d\x0a":
        assert reader.error and "truncated pcap file header" in reader.error
    if reader.error is None:
        # no error: the bytes are a chain of well-formed records/blocks to the very end
        assert walks_to_the_end(header + body), (header + body).hex()


def walks_to_the_end(blob: bytes) -> bool:
    """Do the record (pcap) or block (pcapng) lengths chain exactly to the end of the file
    with no length beyond the reader's sanity caps? (a necessary condition for no error)"""
    n = len(blob)
    if blob[:4] == b"\x0a\x0d\x0d\x0a":
        if n < 12 or blob[8:12] not in (b"\x4d\x3c\x2b\x1a", b"\x1a\x2b\x3c\x4d"):
            return n == 0
        order = "<" if blob[8:12] == b"\x4d\x3c\x2b\x1a" else ">"
        pos = 0
        while pos < n:
            if n - pos < 12:
                return False
            blen = struct.unpack_from(order + "I", blob, pos + 4)[0]
            if blen < 12 or blen % 4 or blen > 256 * 1024 + 64 or pos + blen > n:
                return False
            pos += blen
        return True
    order = "<" if blob[:4] in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
    pos = 24
    if n < 24:
        return False
    while pos < n:
        if n - pos < 16:
            return False
        incl = struct.unpack_from(order + "I", blob, pos + 8)[0]
        if incl > 256 * 1024 or pos + 16 + incl > n:
            return False
        pos += 16 + incl
    return True


def test_huge_record_length_is_not_allocated(tmp_path) -> None:
    """A record (or block) announcing 4 GiB: rejected from its length field, nothing read."""
    blob = SEEDS["modbus_writes.pcap"]
    bad = blob[:24] + blob[24:32] + struct.pack("<I", 0xFFFFFFF0) + blob[36:]
    reader, frames = read(tmp_path, bad)
    assert (
        frames == []
        and "corrupt record length 4294967280 at byte 24 after 0 packets" in reader.error
    )
    ng = SEEDS["modbus_writes.pcapng"]
    shb_len = struct.unpack_from("<I", ng, 4)[0]
    bad = ng[: shb_len + 4] + struct.pack("<I", 0xFFFFFFF0) + ng[shb_len + 8 :]
    reader, frames = read(tmp_path, bad)
    assert frames == [] and "corrupt block length" in reader.error


def _gzip(tmp_path: Path, edit) -> Path:
    import gzip

    path = tmp_path / "damaged.pcap.gz"
    path.write_bytes(edit(gzip.compress(SEEDS["modbus_writes.pcap"])))
    return path


def test_corrupt_gzip_is_an_error_line_not_an_exception(tmp_path) -> None:
    def flip(blob: bytes) -> bytes:
        b = bytearray(blob)
        b[len(b) // 2] ^= 0xFF
        return bytes(b)

    path = _gzip(tmp_path, flip)
    # the damage is met either on opening (a small file is one deflate block) or while reading
    try:
        reader = CaptureReader(path)
    except CaptureError as exc:
        assert "damaged.pcap.gz" in str(exc) and "decompressing" in str(exc)
        return
    list(reader)
    assert reader.error and "decompression failed" in reader.error


def test_cut_gzip_keeps_the_packets_before_the_cut(tmp_path, originals) -> None:
    path = _gzip(tmp_path, lambda blob: blob[:-3])  # only the CRC/size trailer is missing
    reader = CaptureReader(path)
    frames = list(reader)
    assert reader.error  # reported (this part works today)
    assert frames == originals["modbus_writes.pcap"]


def _short_block(btype: int) -> bytes:
    """A pcapng section header, then a block of ``btype`` with the minimum length 12 (no body)
    at the end of the file. Hand-made: minimised from crash-12c8f080 of the capture fuzz target
    (tests/hardening/fuzz/fuzz_capture.py, 2026-11-26)."""
    shb = (
        struct.pack("<II", 0x0A0D0D0A, 28)
        + struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1)
        + struct.pack("<I", 28)
    )
    return shb + struct.pack("<III", btype, 12, 12)


FUZZ_CRASH_12C8F080 = bytes.fromhex(
    "0a0d0d0a0000001c1a2b3c4d00010000ffffffffffffffff0000001c00000001"
    "0000002000ff0100000000ff0009000109000000000000000000002000000001"
    "0000000c004504ffffffa5"
)


@pytest.mark.parametrize(
    "blob",
    [_short_block(1), _short_block(6), _short_block(2), FUZZ_CRASH_12C8F080],
    ids=["idb", "epb", "opb", "fuzz-crash"],
)
def test_pcapng_block_too_short_for_its_type_is_damage(tmp_path, blob: bytes) -> None:
    path = tmp_path / "short.pcapng"
    path.write_bytes(blob)
    reader = CaptureReader(path)
    assert list(reader) == []
    assert reader.error and "after 0 packets" in reader.error
