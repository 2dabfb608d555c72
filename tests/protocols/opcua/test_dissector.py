"""OPC UA dissector: what the captures made with asyncua (pcaps/opcua) decode to, chunking,
mid-stream pick-up, secured channels, limits, and malformed input.

Captures come from real peers (see pcaps/README.md). Where a test damages or re-cuts that
traffic (abort chunk, truncation, mutation), it starts from the real bytes and says what it
changes; the only fully hand-built inputs are random bytes for the fuzz tests.
"""

from __future__ import annotations

import json
import random
import struct
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sensor.engine import Engine, EngineConfig
from sensor.protocols import BY_NAME, opcua
from sensor.protocols.base import OPERATIONS, ParserLimits
from sensor.protocols.opcua import SERVICES, STATUS_CODES
from tests.support import REPO
from tests.support.opcua import parse_capture, recorded_feeds, split_chunks

OWN = REPO / "pcaps" / "opcua"


def _events(name: str) -> list[dict]:
    return list(Engine(EngineConfig()).replay([OWN / name]))


def _opcua(events: list[dict]) -> list[dict]:
    return [
        e for e in events if e.get("network.protocol") == "opcua" and e["event.action"] != "anomaly"
    ]


def _feed_all(
    feeds: list[tuple[bool, bytes, float]], parser: opcua.Parser | None = None
) -> list[dict]:
    parser = parser or opcua.Parser()
    out: list[dict] = []
    for to_server, data, ts in feeds:
        out += parser.feed(to_server, data, ts)
    return out + parser.close(feeds[-1][2] if feeds else 0.0)


def _without_ts(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in ("ts", "event.duration")} for r in records]


# -- registration and contract ------------------------------------------------------------


def test_module_is_registered_with_its_contract() -> None:
    assert BY_NAME["opcua"] is opcua
    assert opcua.NAME == "opcua" and opcua.PORTS == (4840,)
    assert opcua.HEURISTIC_DEFAULT is True


def test_every_part4_service_has_an_action_and_an_operation() -> None:
    for name in SERVICES:
        assert opcua.ACTION[name] == opcua.ACTION[name].lower()
        assert opcua.OPERATION[name] in OPERATIONS
    assert opcua.ACTION["TranslateBrowsePathsToNodeIds"] == "translate-browse-paths-to-node-ids"
    assert opcua.ACTION["CreateSession"] == "create-session"


def test_service_and_status_tables_match_the_reference_stack() -> None:
    """The tables were taken from the OPC Foundation's CSVs; asyncua ships its own copy."""
    from asyncua.ua import object_ids, status_codes

    for name, (req, resp) in SERVICES.items():
        assert getattr(object_ids.ObjectIds, f"{name}Request_Encoding_DefaultBinary") == req
        assert getattr(object_ids.ObjectIds, f"{name}Response_Encoding_DefaultBinary") == resp
    for code, name in STATUS_CODES.items():
        assert getattr(status_codes.StatusCodes, name) == code
    assert len(SERVICES) >= 37


def test_status_names() -> None:
    assert opcua.status_name(0) == "Good"
    assert opcua.status_name(0x801F0000) == "BadUserAccessDenied"
    assert opcua.status_name(0x801F0000 | 0x0400) == "BadUserAccessDenied"  # info bits ignored
    assert opcua.status_name(0x80FF1234) == "0x80FF1234"


# -- probe ---------------------------------------------------------------------------------


def test_probe_accepts_the_first_bytes_of_every_own_capture() -> None:
    for path in sorted(OWN.glob("*.pcap")):
        for feeds in recorded_feeds(path):
            assert opcua.probe(feeds[0][1]), path.name


def test_probe_rejects_other_protocols_and_noise(public_pcaps: Path) -> None:
    others = [
        public_pcaps / "modbus" / "iti__modbus_test.pcap",
        public_pcaps / "s7comm" / "icsnpp__snap7.pcap",
    ]
    firsts = [feeds[0][1] for path in others for feeds in recorded_feeds(path, (502, 102)) if feeds]
    assert firsts
    for data in firsts:
        assert not opcua.probe(data)
    rng = random.Random(4840)
    noise = [bytes(rng.getrandbits(8) for _ in range(rng.randrange(0, 40))) for _ in range(2000)]
    assert not [n for n in noise if opcua.probe(n)]
    assert not opcua.probe(b"HELF\x08\x00\x00\x00")  # a HEL cannot be 8 bytes long
    assert not opcua.probe(b"HELC" + struct.pack("<I", 64))  # HEL is never chunked
    assert not opcua.probe(b"MSGF" + struct.pack("<I", 64 << 20))  # not a sane size
    assert not opcua.probe(b"GET / HTTP/1.1\r\n")


# -- asyncua captures ----------------------------------------------------------------------


def test_anonymous_session_is_decoded_service_by_service() -> None:
    events = _opcua(_events("opcua_anonymous.pcap"))
    actions = [e["event.action"] for e in events]
    assert actions[:4] == ["hello", "open-secure-channel", "get-endpoints", "close-secure-channel"]
    assert actions[4:8] == ["hello", "open-secure-channel", "create-session", "activate-session"]
    for expected in (
        "browse",
        "translate-browse-paths-to-node-ids",
        "read",
        "write",
        "call",
        "register-nodes",
        "create-subscription",
        "create-monitored-items",
        "publish",
        "delete-subscriptions",
        "close-session",
    ):
        assert expected in actions
    assert all(e["event.outcome"] in ("success", "unknown") for e in events)
    # each paired transaction has a response time; only CLO and the last Publish go unanswered
    unanswered = [e["event.action"] for e in events if e["ics.pairing"] != "paired"]
    assert sorted(unanswered) == ["close-secure-channel", "close-secure-channel", "publish"]
    assert all(e["event.duration"] >= 0 for e in events if e["ics.pairing"] == "paired")

    endpoints = next(e for e in events if e["event.action"] == "get-endpoints")
    assert endpoints["opcua.endpoint_urls"] == ["opc.tcp://127.0.0.21:4840/icsmon/"]
    assert endpoints["opcua.security_policy_uris"] == [
        "http://opcfoundation.org/UA/SecurityPolicy#None"
    ]
    assert set(endpoints["opcua.user_token_types"]) >= {"anonymous", "username"}
    assert endpoints["ics.device.application_uri"] == "urn:icsmon:test:plc"
    assert endpoints["ics.operation"] == "diagnostic"

    session = next(e for e in events if e["event.action"] == "create-session")
    assert session["opcua.client.application_type"] == "client"
    assert session["opcua.application_name"] == "icsmon test PLC"
    assert session["opcua.session_id"].startswith(("i=", "ns="))
    activate = next(e for e in events if e["event.action"] == "activate-session")
    assert activate["opcua.identity_token"] == "anonymous" and "opcua.user_name" not in activate

    reads = [e for e in events if e["event.action"] == "read"]
    pump = next(
        e
        for e in reads
        if len(e["opcua.node_ids"]) == 5 and e["opcua.node_ids"][0].startswith("ns=2;")
    )
    assert pump["opcua.attributes"] == ["Value"] * 5
    assert pump["opcua.values"] == [
        {"type": "Double", "value": 1450.5},
        {"type": "Boolean", "value": True},
        {"type": "String", "value": "P-101"},
        {"type": "Int32", "value": 7},
        {"type": "Float", "value": [10.0, 20.0, 30.0]},
    ]
    build = next(e for e in reads if e["opcua.node_ids"][0] == "i=2261")
    assert build["ics.device.vendor"] == "Example Automation"
    assert build["ics.device.product"] == build["ics.device.model"] == "Example PLC 1500"
    assert build["ics.device.firmware"] == "4.2.1 (build 77)"

    writes = [e for e in events if e["event.action"] == "write"]
    assert writes[0]["opcua.node_ids"] == ["ns=2;i=2"] and writes[0]["opcua.attribute_ids"] == [13]
    assert writes[0]["opcua.values"] == [{"type": "Double", "value": 1500.25}]
    assert (
        writes[0]["event.type"] == ["protocol", "change"] and writes[0]["ics.operation"] == "write"
    )
    assert writes[1]["opcua.values"] == [{"type": "Float", "value": [11.0, 22.0, 33.0]}]

    call = next(e for e in events if e["event.action"] == "call")
    assert call["opcua.object_ids"] == [pump["opcua.node_ids"][0].rsplit("=", 1)[0] + "=1"]
    assert len(call["opcua.method_ids"]) == 1 and call["opcua.method_ids"][0].startswith("ns=2;i=")
    assert call["opcua.input_arguments"] == [{"type": "Int32", "value": 2}]
    assert call["opcua.output_arguments"] == [{"type": "Boolean", "value": True}]
    assert call["ics.operation"] == "control"

    sub = next(e for e in events if e["event.action"] == "create-subscription")
    items = next(e for e in events if e["event.action"] == "create-monitored-items")
    publishes = [
        e for e in events if e["event.action"] == "publish" and e["ics.pairing"] == "paired"
    ]
    assert sub["opcua.publishing_interval"] == 100.0
    assert items["opcua.subscription_id"] == sub["opcua.subscription_id"]
    assert len(items["opcua.monitored_item_ids"]) == 2 and items["opcua.result_codes"] == [0, 0]
    assert all(p["opcua.subscription_id"] == sub["opcua.subscription_id"] for p in publishes)
    assert sum(p["opcua.notification_count"] for p in publishes) == 5
    changed = [
        v["value"] for p in publishes for v in p.get("opcua.values", []) if v["type"] == "Int32"
    ]
    assert changed == [7, 8, 9, 10]


def test_the_server_asset_carries_the_identity_the_traffic_shows() -> None:
    engine = Engine(EngineConfig())
    list(engine.replay([OWN / "opcua_anonymous.pcap"]))
    server = next(a for a in engine.changed_assets() if a["host.ip"] == "127.0.0.21")
    assert server["asset.roles"] == ["opcua-server"]
    assert server["ics.device.vendor"] == "Example Automation"
    assert server["ics.device.model"] == "Example PLC 1500"
    assert server["ics.device.firmware"] == "4.2.1 (build 77)"
    assert server["ics.device.application_uri"] == "urn:icsmon:test:plc"


def test_username_sessions_report_the_user_never_the_password() -> None:
    events = _events("opcua_username.pcap")
    activations = [e for e in events if e.get("event.action") == "activate-session"]
    assert [a["event.outcome"] for a in activations] == ["failure", "success"]
    rejected, accepted = activations
    assert (
        rejected["opcua.status"] == "BadUserAccessDenied"
        and rejected["opcua.service_fault"] is True
    )
    for a in activations:
        assert a["opcua.identity_token"] == "username"
        assert a["opcua.user_name"] == "operator"
        assert (
            a["opcua.password_encrypted"] is False
        )  # no server certificate: asyncua sends it in clear
    text = json.dumps(events)
    assert "wrong-password" not in text and "secret" not in text
    assert [e["event.action"] for e in _opcua(events)].count("write") == 1


def test_chunked_messages_are_reassembled() -> None:
    events = _opcua(_events("opcua_chunked.pcap"))
    hello = events[0]
    assert hello["opcua.revised_receive_buffer_size"] == 8192
    read = next(e for e in events if e["event.action"] == "read")
    write = next(e for e in events if e["event.action"] == "write")
    assert read["opcua.response_chunk_count"] == 3 and "opcua.chunk_count" not in read
    assert write["opcua.chunk_count"] == 3
    (value,) = read["opcua.values"]
    assert value["type"] == "Double"
    assert value["value"] == [
        float(i) for i in range(opcua.MAX_ARRAY_VALUES)
    ]  # 2500 sent, a sample kept
    assert read["opcua.truncated"] is True
    assert write["opcua.values"][0]["value"][:3] == [0.0, 2.0, 4.0]
    _records, messages = parse_capture(OWN / "opcua_chunked.pcap")
    assert [
        m["chunk"]
        for m in messages
        if m["type"] == "MSG" and m.get("request_id") == write["opcua.request_id"]
    ] == [
        "C",
        "C",
        "F",
        "F",  # the request's three chunks, then the one-chunk answer
    ]


@pytest.mark.parametrize("name", ["opcua_chunked.pcap", "opcua_anonymous.pcap"])
def test_records_do_not_depend_on_tcp_segmentation(name: str) -> None:
    """The same bytes cut at random points, and one byte at a time, give the same records."""
    for feeds in recorded_feeds(OWN / name):
        whole = _without_ts(_feed_all(feeds))
        rng = random.Random(len(feeds))
        recut: list[tuple[bool, bytes, float]] = []
        for to_server, data, ts in feeds:
            pos = 0
            while pos < len(data):
                step = rng.randrange(1, 700)
                recut.append((to_server, data[pos : pos + step], ts))
                pos += step
        assert _without_ts(_feed_all(recut)) == whole
        bytewise = [(t, d[i : i + 1], ts) for t, d, ts in feeds for i in range(len(d))]
        assert _without_ts(_feed_all(bytewise)) == whole


def test_an_aborted_message_is_reported_and_dropped() -> None:
    """Real client bytes of opcua_chunked.pcap; the write request's final chunk is replaced by
    an abort chunk (``A``: error code + reason) as a sender would send (asyncua never aborts)."""
    (feeds,) = recorded_feeds(OWN / "opcua_chunked.pcap")
    chunks = split_chunks(b"".join(d for t, d, _ in feeds if t))
    final = next(
        i for i, c in enumerate(chunks) if c[:4] == b"MSGF" and chunks[i - 1][:4] == b"MSGC"
    )
    head = chunks[final][8:24]  # channel id, token id, sequence number, request id
    reason = b"request cancelled by client"
    body = struct.pack("<I", 0x802C0000) + struct.pack("<i", len(reason)) + reason
    chunks[final] = b"MSGA" + struct.pack("<I", 24 + len(body)) + head + body
    parser = opcua.Parser()
    records = parser.feed(True, b"".join(chunks), 1.0) + parser.close(2.0)
    aborted = [r for r in records if r.get("opcua.aborted")]
    assert len(aborted) == 1
    (abort,) = aborted
    assert abort["opcua.status"] == "BadRequestCancelledByClient"
    assert abort["opcua.error_reason"] == reason.decode()
    assert abort["event.outcome"] == "failure" and abort["opcua.chunk_count"] == 3
    assert (
        abort["event.action"] == "write" and abort["opcua.service_type_id"] == 673
    )  # from its first chunk
    assert abort["ics.pairing"] == "request-only" and "opcua.decode_error" not in abort
    assert not parser._dir[1].partial
    # the messages after the abort still decode (only client bytes were fed: unanswered)
    assert {"close-session", "close-secure-channel"} <= {r["event.action"] for r in records}


def test_an_aborted_answer_fails_its_transaction() -> None:
    """Real bytes of opcua_chunked.pcap; the final chunk of the server's chunked Read answer is
    replaced by an abort chunk (BadResponseTooLarge), as a server that gives up would send."""
    (feeds,) = recorded_feeds(OWN / "opcua_chunked.pcap")
    up = b"".join(d for t, d, _ in feeds if t)
    down = split_chunks(b"".join(d for t, d, _ in feeds if not t))
    final = next(i for i, c in enumerate(down) if c[:4] == b"MSGF" and down[i - 1][:4] == b"MSGC")
    body = struct.pack("<I", 0x80B90000) + struct.pack("<i", -1)  # null reason
    down[final] = b"MSGA" + struct.pack("<I", 24 + len(body)) + down[final][8:24] + body
    parser = opcua.Parser()
    records = (
        parser.feed(True, up, 1.0) + parser.feed(False, b"".join(down), 1.5) + parser.close(2.0)
    )
    read = next(r for r in records if r["event.action"] == "read")
    assert read["ics.pairing"] == "paired" and read["opcua.aborted"] is True
    assert read["opcua.status"] == "BadResponseTooLarge" and read["event.outcome"] == "failure"
    assert read["opcua.response_chunk_count"] == 3 and "opcua.values" not in read
    assert not [r for r in records if r["event.action"] == "anomaly"]


def test_limits_negotiated_and_hard() -> None:
    (feeds,) = recorded_feeds(OWN / "opcua_chunked.pcap")
    # hard cap: 16 KiB per message; the 20 KB read answer and write request are dropped
    records = _feed_all(feeds, opcua.Parser(ParserLimits(max_buffer=16384)))
    too_large = [r for r in records if r.get("error.type") == "opcua-message-too-large"]
    assert len(too_large) == 2
    actions = [r["event.action"] for r in records if r["event.action"] != "anomaly"]
    assert "close-session" in actions
    # the dropped request's answer still arrives: reported on its own, without the request's values
    write = next(r for r in records if r["event.action"] == "write")
    assert write["ics.pairing"] == "response-only" and "opcua.values" not in write
    read = next(r for r in records if r["event.action"] == "read")
    assert read["ics.pairing"] == "request-only" and read["event.outcome"] == "unknown"
    # negotiated: the server's ACK (real bytes) edited to allow 2 chunks per message
    edited = []
    for to_server, data, ts in feeds:
        if data[:4] == b"ACKF":
            data = data[:24] + struct.pack("<I", 2) + data[28:]
        edited.append((to_server, data, ts))
    records = _feed_all(edited)
    assert (
        Counter(r.get("error.type") for r in records)["opcua-too-many-chunks"] == 1
    )  # the request
    assert (
        next(r for r in records if r["event.action"] == "write")["opcua.chunk_count"] == 3
    )  # still decoded


def test_midstream_capture_decodes_without_handshake() -> None:
    events = _events("opcua_midstream.pcap")
    assert not [e for e in events if e["event.action"] == "anomaly"]
    actions = [e["event.action"] for e in events]
    assert actions[:3] == ["create-session", "activate-session", "read"]
    assert "hello" not in actions and "open-secure-channel" not in actions
    assert all(e["opcua.service"] != "unknown" for e in events if e["opcua.message_type"] == "MSG")
    assert all(e["opcua.encrypted"] is False for e in events)
    assert all("opcua.security_policy_uri" not in e for e in events)  # never seen: not claimed
    write = next(e for e in events if e["event.action"] == "write")
    assert write["opcua.values"] == [{"type": "Double", "value": 1500.25}]


def test_pick_up_inside_a_chunk_skips_to_the_next_header() -> None:
    """The anonymous session's traffic, each direction starting 5 bytes into its third chunk."""
    feeds = recorded_feeds(OWN / "opcua_anonymous.pcap")[-1]
    cut: list[tuple[bool, bytes, float]] = []
    for direction in (True, False):
        data = b"".join(d for t, d, _ in feeds if t == direction)
        chunks = split_chunks(data)
        start = sum(len(c) for c in chunks[:2]) + 5
        cut.append((direction, data[start:], 1.0))
    records = _feed_all(cut)
    skipped = [r for r in records if r.get("error.type") == "opcua-bad-header"]
    assert len(skipped) == 2
    assert all(r["opcua.skipped_bytes"] > 0 for r in skipped)
    decoded = [r for r in records if r["event.action"] == "read" and r["ics.pairing"] == "paired"]
    assert len(decoded) >= 3


def test_a_gap_inside_a_chunked_message_drops_it_and_resynchronises() -> None:
    (feeds,) = recorded_feeds(OWN / "opcua_chunked.pcap")
    up = b"".join(d for t, d, _ in feeds if t)
    chunks = split_chunks(up)
    first_c = next(i for i, c in enumerate(chunks) if c[:4] == b"MSGC")
    parser = opcua.Parser()
    records = parser.feed(True, b"".join(chunks[: first_c + 1]), 1.0)
    records += parser.gap(True, 1.1, 4000)
    rest = b"".join(chunks[first_c + 1 :])
    records += parser.feed(True, rest[3000:], 1.2)  # 3000 bytes into the next chunk
    records += parser.close(2.0)
    types = [r.get("error.type") for r in records]
    assert "opcua-lost-chunk" in types
    assert "opcua-bad-header" in types  # the bytes after the gap start inside a chunk
    assert {"close-session", "close-secure-channel"} <= {r["event.action"] for r in records}
    # the write request is lost with its middle chunk; its final chunk is not taken for a message
    assert not {"write", "message"} & {r["event.action"] for r in records}


def test_sign_mode_is_decoded_and_marked_signed() -> None:
    events = _opcua(_events("opcua_sign.pcap"))
    opn = next(e for e in events if e["event.action"] == "open-secure-channel")
    assert opn["opcua.security_policy"] == "Basic256Sha256" and opn["opcua.encrypted"] is True
    assert opn["opcua.certificate_present"] is True
    assert opn["event.outcome"] == "unknown"  # the answer's ServiceResult is encrypted
    msgs = [e for e in events if e["opcua.message_type"] == "MSG"]
    assert msgs and all(e["opcua.signed"] is True and e["opcua.encrypted"] is False for e in msgs)
    assert all(e["opcua.security_mode"] == "Sign" for e in msgs)
    write = next(e for e in msgs if e["event.action"] == "write")
    assert write["opcua.values"] == [{"type": "Double", "value": 1234.5}]
    assert write["opcua.result_codes"] == [0]  # the 32-byte signature was not read as data


def test_sign_and_encrypt_is_reported_without_guessing() -> None:
    events = _opcua(_events("opcua_encrypted.pcap"))
    secured = [e for e in events if e["opcua.message_type"] in ("MSG", "CLO", "OPN")]
    assert len(secured) >= 8
    for e in secured:
        assert e["opcua.encrypted"] is True and e["opcua.security_policy"] == "Basic256Sha256"
        for field in (
            "opcua.sequence_number",
            "opcua.request_id",
            "opcua.request_handle",
            "opcua.status_code",
        ):
            assert field not in e
        assert e["event.outcome"] == "unknown"
    assert {e["opcua.service"] for e in secured if "opcua.service" in e} == {
        "OpenSecureChannel",
        "CloseSecureChannel",
    }
    assert all(e["event.action"] == "message" for e in secured if e["opcua.message_type"] == "MSG")


# -- published captures: cases worth a test of their own -------------------------------------


def test_discovery_services(public_pcaps: Path) -> None:
    events = list(
        Engine(EngineConfig()).replay(
            [public_pcaps / "opcua" / "icsnpp__open62541_discover_getendpoints_discover_urls.pcap"]
        )
    )
    find = next(e for e in events if e.get("event.action") == "find-servers")
    assert find["opcua.server_count"] >= 1 and find["opcua.discovery_urls"]
    on_network = next(e for e in events if e.get("event.action") == "find-servers-on-network")
    assert on_network["ics.operation"] == "diagnostic"


def test_a_method_call_crafted_to_crash_dissectors(public_pcaps: Path) -> None:
    """ITI's capture of a Call request that froze Wireshark: an anomaly, never an exception."""
    events = list(
        Engine(EngineConfig()).replay(
            [public_pcaps / "opcua" / "iti__opc-ua-ap-method-wireshark-freeze.pcap"]
        )
    )
    calls = [e for e in events if e.get("event.action") == "call"]
    assert len(calls) == 2 and all("opcua.decode_error" in c for c in calls)
    errors = [e for e in events if e.get("event.action") == "error"]
    assert [e["opcua.status"] for e in errors] == ["BadInternalError", "BadDecodingError"]
    assert all(e["event.outcome"] == "failure" for e in errors)


def test_answers_without_requests_and_pending_limit(public_pcaps: Path) -> None:
    """ICSNPP's trace answers CreateMonitoredItems requests with GetEndpoints responses."""
    path = public_pcaps / "opcua" / "icsnpp__pending_overflow_tests-traces.pcap"
    records, _messages = parse_capture(path)
    assert Counter(r["ics.pairing"] for r in records) == {"response-only": 12, "request-only": 12}
    assert {r["opcua.service"] for r in records if r["ics.pairing"] == "response-only"} == {
        "GetEndpoints"
    }
    (feeds,) = recorded_feeds(OWN / "opcua_anonymous.pcap")[-1:]
    requests_only = [f for f in feeds if f[0]]
    records = _feed_all(requests_only, opcua.Parser(ParserLimits(max_pending=4)))
    assert any(r.get("error.type") == "opcua-pending-overflow" for r in records)


def test_service_fault_answers_fail_the_transaction(public_pcaps: Path) -> None:
    path = (
        public_pcaps
        / "opcua"
        / "icsnpp__open62541_client-server_mainloop-ActivateSession-diagInfo.pcap"
    )
    events = _opcua(list(Engine(EngineConfig()).replay([path])))
    faults = [e for e in events if e.get("opcua.service_fault")]
    assert len(faults) == 20
    assert all(
        e["event.outcome"] == "failure" and e["opcua.status"].startswith("Bad") for e in faults
    )


# -- malformed input ---------------------------------------------------------------------


def test_every_truncation_of_every_real_message_is_an_anomaly_not_an_exception() -> None:
    """Each client chunk of the anonymous session, cut at every length (size field adjusted
    so the chunk is complete but its body is short), after the real HEL and OPN."""
    feeds = recorded_feeds(OWN / "opcua_anonymous.pcap")[-1]
    chunks = split_chunks(b"".join(d for t, d, _ in feeds if t))
    prefix = b"".join(chunks[:2])
    malformed = 0
    for chunk in chunks[2:]:
        for cut in range(8, len(chunk)):
            data = chunk[:4] + struct.pack("<I", cut) + chunk[8:cut]
            parser = opcua.Parser()
            records = parser.feed(True, prefix + data, 1.0) + parser.close(2.0)
            assert all(isinstance(r, dict) and r["network.protocol"] == "opcua" for r in records)
            malformed += sum(r.get("error.type") == "opcua-malformed-body" for r in records)
    assert malformed > 100


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=600), st.booleans())
def test_random_bytes_never_raise(data: bytes, to_server: bool) -> None:
    parser = opcua.Parser()
    records = (
        parser.feed(to_server, data, 1.0)
        + parser.gap(to_server, 1.5, 10)
        + parser.feed(to_server, data, 2.0)
    )
    records += parser.close(3.0)
    for r in records:
        assert r["network.protocol"] == "opcua" and r["event.action"]


_REAL = (
    recorded_feeds(OWN / "opcua_anonymous.pcap")[-1]
    if (OWN / "opcua_anonymous.pcap").exists()
    else []
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=1, max_size=8))
def test_mutated_real_traffic_never_raises(flips: list[tuple[int, int]]) -> None:
    assert _REAL, "opcua_anonymous.pcap is missing"
    feeds = [list(x) for x in _REAL]
    for where, value in flips:
        i = where % len(feeds)
        data = bytearray(feeds[i][1])
        data[(where // len(feeds)) % len(data)] = value
        feeds[i][1] = bytes(data)
    records = _feed_all([tuple(f) for f in feeds])  # type: ignore[misc]
    assert all(r["network.protocol"] == "opcua" for r in records)
    json.dumps(records)  # records are plain data


def test_memory_stays_bounded() -> None:
    limits = ParserLimits(max_buffer=1 << 16)
    parser = opcua.Parser(limits)
    # a header announcing 8 MiB: skipped, not buffered
    records = parser.feed(True, b"MSGF" + struct.pack("<I", 8 << 20) + b"\x00" * 100_000, 1.0)
    assert any(r.get("error.type") == "opcua-chunk-too-large" for r in records)
    assert len(parser._dir[1].buf) <= limits.max_buffer
    # many messages left half-way: reassembly keeps at most MAX_PARTIAL_MESSAGES
    parser = opcua.Parser(limits)
    out = parser.feed(True, b"HELF" + struct.pack("<I", 32) + b"\x00" * 24, 1.0)
    for rid in range(200):
        body = struct.pack("<IIII", 1, 1, rid + 1, rid + 1) + b"\x01\x00\x77\x02" + b"\x00" * 40
        out += parser.feed(True, b"MSGC" + struct.pack("<I", 8 + len(body)) + body, 1.0)
    assert len(parser._dir[1].partial) <= opcua.MAX_PARTIAL_MESSAGES
    assert any(r.get("error.type") == "opcua-too-many-chunks" for r in out)
    # garbage never accumulates beyond the buffer limit
    parser = opcua.Parser(limits)
    for _ in range(40):
        parser.feed(False, b"\xaa" * 10_000, 1.0)
        assert len(parser._dir[0].buf) <= limits.max_buffer
