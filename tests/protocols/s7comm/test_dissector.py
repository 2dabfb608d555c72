"""S7comm / S7comm-plus parser: framing, reassembly, pairing, anomalies, identity.

Byte streams come from the python-snap7 captures in pcaps/s7comm/ (real client and server)
and from published captures; hand-built PDUs are used for edge cases only (COTP segmentation,
S7comm-plus fragments, malformed input) and say so.
"""

from __future__ import annotations

import importlib.util
import os
import random
import shutil
import struct
from pathlib import Path

import dpkt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sensor.protocols import BY_NAME, s7comm
from sensor.protocols.base import ParserLimits
from tests.support import REPO
from tests.support.s7comm import replay

PCAPS = REPO / "pcaps" / "s7comm"


# -- helpers --------------------------------------------------------------------------------


def tpkt(tpdu: bytes) -> bytes:
    return struct.pack(">BBH", 3, 0, len(tpdu) + 4) + tpdu


def dt(payload: bytes, eot: bool = True) -> bytes:
    """TPKT + COTP data TPDU."""
    return tpkt(bytes([2, 0xF0, 0x80 if eot else 0x00]) + payload)


def s7_job(ref: int, params: bytes, data: bytes = b"") -> bytes:
    return struct.pack(">BBHHHH", 0x32, 1, 0, ref, len(params), len(data)) + params + data


def s7_ack_data(ref: int, params: bytes, data: bytes = b"", err: int = 0) -> bytes:
    return struct.pack(">BBHHHHH", 0x32, 3, 0, ref, len(params), len(data), err) + params + data


def read_var_job(ref: int, db: int, start: int, length: int) -> bytes:
    item = struct.pack(">BBBBHHB", 0x12, 0x0A, 0x10, 0x02, length, db, 0x84) + (start * 8).to_bytes(
        3, "big"
    )
    return s7_job(ref, bytes([0x04, 1]) + item)


def read_var_ack(ref: int, payload: bytes) -> bytes:
    return s7_ack_data(
        ref, bytes([0x04, 1]), struct.pack(">BBH", 0xFF, 0x04, len(payload) * 8) + payload
    )


def streams(path: Path) -> list[tuple[bool, bytes]]:
    """(to_server, payload) of each TCP segment with data in a clean single-connection capture."""
    out = []
    with open(path, "rb") as fh:
        for _, frame in dpkt.pcap.Reader(fh):
            ip = dpkt.ethernet.Ethernet(frame).data
            tcp = ip.data
            if isinstance(tcp, dpkt.tcp.TCP) and tcp.data:
                out.append((tcp.dport == 102, bytes(tcp.data)))
    return out


def feed_all(parser: s7comm.Parser, chunks: list[tuple[bool, bytes]]) -> list[dict]:
    records = []
    for n, (to_server, data) in enumerate(chunks):
        records += parser.feed(to_server, data, 1000.0 + n)
    return records + parser.close(2000.0)


def strip(records: list[dict]) -> list[dict]:
    """Records without the times, which depend on how the bytes were cut."""
    return [{k: v for k, v in r.items() if k not in ("ts", "event.duration")} for r in records]


def actions(records: list[dict]) -> list[str]:
    return [r["event.action"] for r in records]


def anomalies(records: list[dict]) -> list[str]:
    return [r["error.type"] for r in records if r["event.action"] == "anomaly"]


# -- registration and probe -----------------------------------------------------------------


def test_registered_on_port_102() -> None:
    assert BY_NAME["s7comm"] is s7comm
    assert s7comm.PORTS == (102,)


def test_probe_accepts_s7_and_rejects_lookalikes() -> None:
    job = dt(read_var_job(1, 1, 0, 4))
    cr_tsap = tpkt(bytes.fromhex("11e00000000100c0010ac1020100c2020102"))
    plus = dt(bytes.fromhex("7202000a31000004ca0000000100000000"))
    assert s7comm.probe(job) and s7comm.probe(cr_tsap) and s7comm.probe(plus)
    rdp_cr = tpkt(bytes.fromhex("0ee000000000000100080003000000"))  # RDP: CR without TSAPs
    mms = dt(bytes.fromhex("0100010061"))  # ISO session layer (MMS) over COTP
    for data in (
        rdp_cr,
        mms,
        b"GET / HTTP/1.1\r\n",
        b"\x03\x00",
        b"",
        job[:6],
        b"\x03\x01\x00\x1f" + job[4:],
    ):
        assert not s7comm.probe(data), data


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])  # no timing in tests
@given(st.binary(max_size=64))
def test_probe_never_raises(data: bytes) -> None:
    assert s7comm.probe(data) in (True, False)


# -- real traffic: python-snap7 client and server -------------------------------------------


def test_snap7_read_write_capture() -> None:
    records = replay(PCAPS / "s7_read_write.pcap")
    assert not anomalies(records)
    connect = records[0]
    assert connect["event.action"] == "cotp-connect"
    assert connect["s7comm.cotp.dst_tsap"] == "0102"
    assert (connect["s7comm.cotp.rack"], connect["s7comm.cotp.slot"]) == (0, 2)
    setup = records[1]
    assert setup["event.action"] == "setup-communication" and setup["s7comm.pdu_size"] == 480
    assert setup["s7comm.cotp.slot"] == 2  # COTP facts ride on later events
    reads = [r for r in records if r["event.action"] == "read-var"]
    writes = [r for r in records if r["event.action"] == "write-var"]
    assert len(reads) == 6 and len(writes) == 5
    first = reads[0]["s7comm.items"][0]
    assert (first["area_name"], first["db"], first["byte"], first["length"]) == ("DB", 1, 0, 16)
    assert first["data"] == bytes(range(16)).hex() and first["return_code_name"] == "success"
    assert writes[0]["s7comm.items"][0]["data"] == "11223344"
    assert writes[0]["ics.operation"] == "write" and writes[0]["event.type"] == [
        "protocol",
        "change",
    ]
    bit_write = writes[2]["s7comm.items"][0]
    assert (bit_write["byte"], bit_write["bit"], bit_write["value"]) == (10, 3, 1)
    multi = next(r for r in reads if r["s7comm.item_count"] == 3)
    addresses = sorted(
        (i["area_name"], i["db"], i["byte"], i["length"]) for i in multi["s7comm.items"]
    )
    assert addresses == [("DB", 1, 0, 4), ("DB", 2, 8, 2), ("M", 0, 0, 3)]  # snap7 reorders them
    assert all(
        i["return_code"] == 0xFF and len(i["data"]) == 2 * i["length"]
        for i in multi["s7comm.items"]
    )
    missing = reads[-1]
    assert missing["event.outcome"] == "failure"
    assert missing["s7comm.items"][0]["return_code_name"] == "object_does_not_exist"
    assert records[-1]["event.action"] == "cotp-disconnect"


def test_snap7_control_capture() -> None:
    records = replay(PCAPS / "s7_control.pcap")
    controls = [
        (r["event.action"], r.get("s7comm.pi.operation"))
        for r in records
        if r["ics.operation"] == "control"
    ]
    assert controls == [
        ("plc-stop", None),
        ("plc-control", "hot-start"),
        ("plc-stop", None),
        ("plc-control", "cold-start"),
        ("plc-control", "compress-memory"),
        ("plc-control", "copy-ram-to-rom"),
    ]
    assert all(r["event.outcome"] == "success" for r in records)
    security = [r for r in records if r.get("s7comm.userdata.group_name") == "security"]
    assert actions(security) == ["plc-password", "clear-password"]
    assert not any("s3cret" in str(r) for r in records)  # the password never reaches an event


def test_snap7_identity_capture() -> None:
    records = replay(PCAPS / "s7_identity.pcap")
    szl = [r for r in records if r["event.action"] == "read-szl"]
    assert [r["s7comm.szl.id"] for r in szl] == [0x0011, 0x001C, 0x0131, 0x0232]
    # python-snap7's server answers SZL 0x0011 with 26-byte records (28 is standard): the order
    # number is where it always is; the firmware version is not in the record.
    assert szl[0]["ics.device.order_number"] == "6ES7 315-2EH14-0AB0"
    clock = [r for r in records if r.get("s7comm.userdata.group_name") == "time_functions"]
    assert actions(clock) == ["read-clock", "set-clock"]
    assert clock[1]["s7comm.clock"] == "2026-11-26T08:30:15.000"
    # python-snap7's get_cpu_state() sends a Read Var job without an item count (tshark: malformed)
    assert anomalies(records) == ["s7-bad-parameter"]


def test_snap7_blocks_capture() -> None:
    records = replay(PCAPS / "s7_blocks.pcap")
    assert actions(records)[1:7] == [
        "setup-communication",
        "list-blocks",
        "list-blocks-of-type",
        "get-block-info",
        "start-upload",
        "upload",
    ]
    assert records[2]["s7comm.block.counts"]["DB"] == 2
    start = records[5]
    assert (
        start["s7comm.block.type"],
        start["s7comm.block.number"],
        start["s7comm.block.filesystem"],
    ) == ("DB", 1, "A")
    upload = records[6]
    assert (
        upload["s7comm.upload_id"] == start["s7comm.upload_id"]
        and upload["s7comm.block.number"] == 1
    )
    download = [
        r
        for r in records
        if r["ics.operation"] == "program"
        and r["event.action"].startswith(("request-down", "download"))
    ]
    assert actions(download) == ["request-download", "download-block", "download-ended"]
    assert all(r["s7comm.block.number"] == 2 for r in download)
    # during a download the PLC asks the client for the block: jobs from the server side
    assert [r.get("s7comm.initiator") for r in download] == [None, "server", "server"]


@pytest.mark.slow
@pytest.mark.parametrize("scenario", ["read_write", "control"])
def test_live_snap7_traffic_decodes_like_the_committed_capture(
    scenario: str, tmp_path: Path
) -> None:
    """Real python-snap7 client and server on loopback, recorded now with tcpdump: the events
    are the ones of the committed capture (the script that made it is the one used here)."""
    if os.geteuid() != 0 or not shutil.which("tcpdump"):
        pytest.skip("needs root and tcpdump (port 102, capture on lo)")
    spec = importlib.util.spec_from_file_location("s7_make_captures", PCAPS / "make_captures.py")
    assert spec and spec.loader
    maker = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(maker)
    fresh = tmp_path / f"{scenario}.pcap"
    assert maker.record(scenario, maker.SCENARIOS[scenario], fresh) == 0, "tcpdump dropped packets"

    def summary(path: Path) -> list[tuple]:
        return [
            (
                r["event.action"],
                r["event.outcome"],
                r.get("s7comm.pi_service"),
                str(r.get("s7comm.items", "")),
            )
            for r in replay(path)
        ]

    assert summary(fresh) == summary(PCAPS / f"s7_{scenario}.pcap")


def test_engine_finds_s7_on_another_port(tmp_path: Path) -> None:
    """The engine's heuristic probe: the snap7 control capture moved from port 102 to 1102."""
    moved = tmp_path / "s7_port_1102.pcap"
    with open(PCAPS / "s7_control.pcap", "rb") as src, open(moved, "wb") as dst:
        writer = dpkt.pcap.Writer(dst)
        for ts, frame in dpkt.pcap.Reader(src):
            eth = dpkt.ethernet.Ethernet(frame)
            tcp = eth.data.data
            tcp.sport, tcp.dport = (1102 if p == 102 else p for p in (tcp.sport, tcp.dport))
            tcp.sum = 0  # recomputed on write
            writer.writepkt(bytes(eth), ts)
    original = [
        (r["event.action"], r.get("s7comm.pi_service")) for r in replay(PCAPS / "s7_control.pcap")
    ]
    records = replay(moved)
    assert [(r["event.action"], r.get("s7comm.pi_service")) for r in records] == original
    assert {r["destination.port"] for r in records} == {1102}


def test_identity_from_szl_answers(public_pcaps: Path) -> None:
    """A published SZL identification (snap7 C server): 0x0011 and 0x001C records decoded."""
    records = replay(public_pcaps / "s7comm" / "icsnpp__s7ident.pcap")
    device = {}
    for rec in records:
        device.update({k[11:]: v for k, v in rec.items() if k.startswith("ics.device.")})
    assert device == {
        "vendor": "Siemens",
        "order_number": "6ES7 315-2EH14-0AB0",
        "hardware": "4",
        "firmware": "V3.2.6",
        "name": "SNAP7-SERVER",
        "model": "CPU 315-2 PN/DP",
        "module_type": "CPU 315-2 PN/DP",
        "serial": "S C-C2UR28922012",
    }


def test_s7comm_plus_session_and_identity(public_pcaps: Path) -> None:
    records = replay(public_pcaps / "s7comm-plus" / "iti__S7-1511_db2_var1_HMI.pcap")
    plus = [r for r in records if r["network.protocol"] == "s7comm-plus"]
    create = plus[0]
    assert create["event.action"] == "create-object" and create["s7comm_plus.version"] == 1
    assert create["s7comm.cotp.dst_tsap"] == "SIMATIC-ROOT-HMI"
    assert create["ics.device.order_number"] == "6ES7 511-1AK00-0AB0"
    # the session the PLC created is the one every later request names
    later = {r["s7comm_plus.session_id"] for r in plus[1:] if "s7comm_plus.session_id" in r}
    assert later == {create["s7comm_plus.created_object_id"]}
    assert all(r["s7comm_plus.body_decoded"] is False for r in plus)


def test_s7comm_plus_v3_integrity(public_pcaps: Path) -> None:
    records = replay(public_pcaps / "s7comm-plus" / "icsnpp__s7comm_plus.pcap")
    v3 = [r for r in records if r.get("s7comm_plus.version") == 3]
    assert v3 and all(
        r["s7comm_plus.integrity"] and r["s7comm_plus.digest_length"] == 32 for r in v3
    )
    writes = [r for r in v3 if r["event.action"] == "set-variable"]
    assert len(writes) == 26 and all(r["ics.operation"] == "write" for r in writes)


def test_s7comm_plus_fragmented_message_reassembled(public_pcaps: Path) -> None:
    """TIA V12 sends a CreateObject of 2233 bytes in three TPKT packets (the last with the trailer)."""
    records = replay(public_pcaps / "s7comm-plus" / "iti__S7-1200-Uploading-OB1-TIAV12.pcap")
    creates = [r for r in records if r["event.action"] == "create-object"]
    assert [(r["s7comm_plus.fragments"], r["s7comm_plus.data_length"]) for r in creates] == [
        (1, 206),
        (3, 2233),
    ]
    assert not anomalies(records)


# -- framing: TCP splits and COTP segmentation ----------------------------------------------


@pytest.mark.parametrize("capture", ["s7_read_write.pcap", "s7_blocks.pcap"])
def test_tcp_splits_give_the_same_records(capture: str) -> None:
    """The same byte streams cut at every byte, and at random places, decode identically."""
    chunks = streams(PCAPS / capture)
    whole = strip(feed_all(s7comm.Parser(), chunks))
    assert len(whole) > 10
    bytewise = [(d, data[i : i + 1]) for d, data in chunks for i in range(len(data))]
    assert strip(feed_all(s7comm.Parser(), bytewise)) == whole
    rng = random.Random(7)
    for _ in range(5):
        cut = []
        for d, data in chunks:
            i = 0
            while i < len(data):
                n = rng.randint(1, 40)
                cut.append((d, data[i : i + n]))
                i += n
        assert strip(feed_all(s7comm.Parser(), cut)) == whole


def test_cotp_segmentation_reassembled() -> None:
    """Hand-built: a read-var answer cut into three COTP DT TPDUs (EOT only on the last),
    the TPDUs themselves split across TCP segments, S7 header split as well."""
    payload = bytes(range(200))
    ack = read_var_ack(0x0101, payload)
    segments = dt(ack[:7], eot=False) + dt(ack[7:90], eot=False) + dt(ack[90:])
    parser = s7comm.Parser()
    records = parser.feed(True, dt(read_var_job(0x0101, 5, 100, 200)), 1.0)
    for i in range(0, len(segments), 13):  # TCP segments of 13 bytes
        records += parser.feed(False, segments[i : i + 13], 2.0)
    assert not anomalies(records)
    (rec,) = records
    item = rec["s7comm.items"][0]
    assert (item["db"], item["byte"], item["length"], item["data_length"]) == (5, 100, 200, 200)
    assert item["data"] == payload.hex()
    assert rec["event.outcome"] == "success" and rec["event.duration"] == 1_000_000_000


def test_s7comm_plus_fragments_hand_built() -> None:
    """Hand-built: an S7comm-plus request in three TPKTs, each with a 72 02 len header, the
    last followed by the 72 02 00 00 trailer; then its single-packet response."""
    body = bytes.fromhex("31 0000 054c 0000 0007 00000388 34") + bytes(300)
    parts = [body[:100], body[100:250], body[250:]]
    request = b"".join(
        dt(b"\x72\x02" + len(p).to_bytes(2, "big") + p + (b"\x72\x02\x00\x00" if k == 2 else b""))
        for k, p in enumerate(parts)
    )
    resp_body = bytes.fromhex("32 0000 054c 0000 0007 34 00") + bytes(4)
    response = dt(b"\x72\x02" + len(resp_body).to_bytes(2, "big") + resp_body + b"\x72\x02\x00\x00")
    parser = s7comm.Parser()
    records = []
    for i in range(0, len(request), 50):
        records += parser.feed(True, request[i : i + 50], 1.0)
    assert records == []
    records += parser.feed(False, response, 1.5)
    (rec,) = records
    assert rec["network.protocol"] == "s7comm-plus"
    assert rec["event.action"] == "get-multi-variables" and rec["ics.operation"] == "read"
    assert rec["s7comm_plus.fragments"] == 3 and rec["s7comm_plus.data_length"] == len(body)
    assert rec["s7comm_plus.session_id"] == 0x388 and rec["s7comm_plus.sequence_number"] == 7
    assert rec["s7comm_plus.return_value"] == 0 and rec["event.outcome"] == "success"


def test_gap_resynchronises_on_next_tpkt() -> None:
    parser = s7comm.Parser()
    job1, job2 = dt(read_var_job(1, 1, 0, 2)), dt(read_var_job(2, 1, 2, 2))
    ack2 = dt(read_var_ack(2, b"\xab\xcd"))
    records = parser.feed(True, job1[:10], 1.0)
    records += parser.gap(True, 1.1, 25)  # the rest of job1 was lost
    records += parser.feed(True, job1[-5:] + job2, 1.2)  # resumes mid-PDU, then a good one
    records += parser.feed(False, ack2, 1.3)
    assert [r["s7comm.pdu_reference"] for r in records if "s7comm.pdu_reference" in r] == [2]
    assert records[-1]["s7comm.items"][0]["data"] == "abcd"
    assert not anomalies(records)  # a gap is not malformed input


# -- malformed input ------------------------------------------------------------------------


def test_garbage_then_resync_reports_once() -> None:
    parser = s7comm.Parser()
    good = dt(read_var_job(9, 1, 0, 2))
    records = parser.feed(True, b"\x05garbage\x03\x01junk" * 3 + good, 1.0)
    records += parser.feed(False, dt(read_var_ack(9, b"\x00\x01")), 1.1)
    assert anomalies(records) == ["tpkt-bad-header"]
    assert records[-1]["event.action"] == "read-var" and records[-1]["s7comm.pdu_reference"] == 9


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (tpkt(b"\x02\xf0"), "tpkt-bad-header"),  # 6-byte TPKT: length below the minimum
        (tpkt(bytes([9, 0xF0, 0x80, 0x32])), "cotp-bad-header"),  # LI past the TPDU
        (tpkt(bytes([2, 0x30, 0x80, 0x32])), "cotp-unknown-type"),
        (tpkt(bytes([6, 0x70, 0, 0, 0, 0, 0])), "cotp-error"),
        (dt(b"\x32\x01\x00"), "s7-short-pdu"),
        (dt(s7_job(1, b"\x04\x01")[:-1]), "s7-bad-length"),
        (dt(b"\x32\x05" + bytes(8)), "s7-unknown-rosctr"),
        (dt(s7_job(1, b"\x04\x02\x12\x0a\x10")), "s7-bad-parameter"),  # items cut short
        (dt(s7_job(1, b"\x04\x01\x99\x0a" + bytes(10))), "s7-bad-parameter"),  # not 0x12
        (
            dt(s7_ack_data(1, b"\x04\x01", b"\xff\x04\x00\x80\x01")),
            "s7-bad-parameter",
        ),  # 16 bytes announced, 1 sent
        (dt(s7_job(1, b"\x28" + bytes(9))), "s7-bad-parameter"),  # PI service without its name
        (dt(b"\x72\x02\x00\x40\x31"), "s7plus-short-pdu"),
        (dt(b"\x72\x02\x00\x02\x31\x00\x99\x99\x99"), "s7plus-bad-fragment"),
        (dt(b"\x72\x02\x00\x03\x31\x00\x00\x72\x02\x00\x00"), "s7plus-short-pdu"),
        (dt(b"\x61\x00\x01"), "s7-unknown-protocol"),
    ],
)
def test_malformed_pdu_is_an_anomaly(data: bytes, error: str) -> None:
    parser = s7comm.Parser()
    records = parser.feed(True, data, 1.0) + parser.close(2.0)
    assert error in anomalies(records), records
    for rec in records:
        if rec["event.action"] == "anomaly":
            assert rec["error.message"] and rec["event.outcome"] == "failure"
    # the parser keeps working afterwards
    after = s7comm.Parser()
    after.feed(True, data, 1.0)
    follow = after.feed(True, dt(read_var_job(3, 1, 0, 1)), 3.0) + after.feed(
        False, dt(read_var_ack(3, b"\x07")), 3.1
    )
    assert follow and follow[-1]["event.action"] == "read-var"


def test_foreign_protocol_reported_once_per_connection() -> None:
    parser = s7comm.Parser()
    mms = dt(b"\x01\x00\x01\x00\x61\x0c")
    records = parser.feed(True, mms * 5, 1.0)
    assert anomalies(records) == ["s7-unknown-protocol"]


def test_buffer_and_pending_caps() -> None:
    limits = ParserLimits(max_buffer=256, max_pending=4, max_items=8)
    parser = s7comm.Parser(limits)
    # a TPKT announcing 4000 bytes cannot be buffered under a 256-byte cap
    records = parser.feed(True, b"\x03\x00\x0f\xa0\x02\xf0\x80\x32" + bytes(300), 1.0)
    assert "buffer-overflow" in anomalies(records)
    assert len(parser._dirs[True].buf) <= limits.max_buffer
    # COTP segments that never end
    parser = s7comm.Parser(limits)
    records = []
    for _ in range(10):
        records += parser.feed(True, dt(b"\x32" + bytes(60), eot=False), 1.0)
    assert "buffer-overflow" in anomalies(records)
    assert len(parser._dirs[True].cotp) <= limits.max_buffer
    # unanswered jobs: the oldest is reported once the cap is reached
    parser = s7comm.Parser(limits)
    records = []
    for ref in range(10):
        records += parser.feed(True, dt(read_var_job(ref, 1, 0, 1)), 1.0 + ref)
    assert anomalies(records).count("too-many-pending") == 1  # once per connection
    unanswered = [r for r in records if r["event.action"] == "read-var"]
    assert [r["s7comm.pdu_reference"] for r in unanswered] == list(range(6))
    assert all(r["event.outcome"] == "unknown" for r in unanswered)
    assert len(parser._pending) == 4
    closing = parser.close(20.0)
    assert [r["s7comm.pdu_reference"] for r in closing] == [6, 7, 8, 9]
    # many items: decoded up to max_items
    items = b"".join(
        struct.pack(">BBBBHHB", 0x12, 0x0A, 0x10, 2, 1, 1, 0x84) + b"\x00\x00\x00"
        for _ in range(20)
    )
    parser = s7comm.Parser(limits)
    rec = parser.feed(True, dt(s7_job(1, bytes([4, 20]) + items)), 1.0) + parser.close(2.0)
    assert rec[-1]["s7comm.item_count"] == 20 and len(rec[-1]["s7comm.items"]) == 8


def test_unanswered_request_reported_after_timeout() -> None:
    parser = s7comm.Parser()
    records = parser.feed(True, dt(read_var_job(1, 1, 0, 2)), 100.0)
    records += parser.feed(True, dt(read_var_job(2, 1, 0, 2)), 110.0)  # 10 s: still waiting
    assert records == []
    records += parser.feed(True, dt(read_var_job(3, 1, 0, 2)), 139.0)  # job 1: 39 s, job 2: 29 s
    assert [(r["s7comm.pdu_reference"], r["event.outcome"]) for r in records] == [(1, "unknown")]
    assert "event.duration" not in records[0]


def test_truncated_stream_reported_at_close() -> None:
    parser = s7comm.Parser()
    job = dt(read_var_job(1, 1, 0, 2))
    records = parser.feed(True, job[:-3], 1.0) + parser.close(2.0)
    assert anomalies(records) == ["truncated-stream"]


def test_response_without_request_and_push() -> None:
    parser = s7comm.Parser()
    records = parser.feed(False, dt(read_var_ack(0x55, b"\x01\x02")), 1.0)
    (rec,) = records
    assert (
        rec["s7comm.rosctr"] == 3
        and rec["event.outcome"] == "success"
        and "event.duration" not in rec
    )
    # userdata push (mode transition to STOP), as STEP 7 captures show it
    push = dt(bytes.fromhex("320700000000000800000100101000000000"))
    records = parser.feed(False, push, 2.0)
    assert records[0]["event.action"] == "mode-transition" and records[0]["s7comm.mode"] == "stop"


_CAPTURE_CHUNKS = streams(PCAPS / "s7_read_write.pcap") + streams(PCAPS / "s7_blocks.pcap")


@settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.data())
def test_mutated_traffic_never_raises(data: st.DataObject) -> None:
    """Real snap7 streams with random bytes flipped, inserted or cut: records, never errors."""
    limits = ParserLimits(max_buffer=4096, max_pending=16, max_items=64)
    parser = s7comm.Parser(limits)
    for to_server, chunk in _CAPTURE_CHUNKS:
        buf = bytearray(chunk)
        for _ in range(data.draw(st.integers(0, 3))):
            if not buf:
                break
            op = data.draw(st.sampled_from(["flip", "insert", "cut"]))
            i = data.draw(st.integers(0, len(buf) - 1))
            if op == "flip":
                buf[i] = data.draw(st.integers(0, 255))
            elif op == "insert":
                buf[i:i] = data.draw(st.binary(min_size=1, max_size=8))
            else:
                del buf[i : i + data.draw(st.integers(1, 8))]
        for rec in parser.feed(to_server, bytes(buf), 1.0):
            assert rec["event.action"] and rec["network.protocol"] in ("s7comm", "s7comm-plus")
            assert rec.get("error.type") != "s7-decode-error", rec  # a bug caught by the safety net
        for d in parser._dirs.values():
            assert len(d.buf) <= limits.max_buffer and len(d.cotp) <= limits.max_buffer
    parser.close(2.0)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.booleans(), st.binary(max_size=120)), max_size=12))
def test_random_bytes_never_raise(chunks: list[tuple[bool, bytes]]) -> None:
    parser = s7comm.Parser(ParserLimits(max_buffer=512, max_pending=8, max_items=16))
    records = []
    for to_server, chunk in chunks:
        records += parser.feed(
            to_server, b"\x03\x00" + chunk if chunk[:1] == b"\x00" else chunk, 1.0
        )
    records += parser.close(2.0)
    assert "s7-decode-error" not in anomalies(records)
