"""OPC UA against tshark as the oracle: every published OPC UA capture (and the mixed ones,
which carry none), and the captures made for this project in pcaps/opcua.

Per message: message type, service type id (the encoding NodeId of the body), request handle
and ServiceResult must agree, and so must the number of messages. Checked twice: through the
whole engine (icsmon reports transactions, so messages are counted back from each event's
``ics.pairing``) and chunk by chunk straight from the dissector.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from sensor.engine import Engine, EngineConfig
from tests.support import REPO
from tests.support.opcua import icsmon_messages, parse_capture, tshark_messages

FOLDERS = ("opcua", "mixed")
OWN = REPO / "pcaps" / "opcua"

# Where icsmon and tshark differ on purpose: file -> (reason, messages only icsmon reports,
# messages only tshark reports). Each was checked frame by frame.
_GAP_REASON = (
    "frame 26 is the only copy of server bytes 10384-11843 (its first transmission was never"
    " captured; frame 25 ACKs them). tshark marks it a spurious retransmission and does not"
    " dissect it, so it loses the CreateSessionResponse (handle 1000001) those bytes complete;"
    " icsmon sees the bytes for the first time and decodes the response."
)
# The same messages in the two views: whole messages (engine) and chunks (dissector).
_GAP_EXTRA_MESSAGES = {("MSG", 464, 1000001): 1, ("status", 0): 1}
_GAP_EXTRA_CHUNKS = {("MSG", "F", 464, 1000001): 1, ("status", 0): 1}
KNOWN_DIFFERENCES: dict[str, tuple[str, dict, dict]] = {
    "icsnpp__opcua_with-gap.pcap": (_GAP_REASON, _GAP_EXTRA_MESSAGES, _GAP_EXTRA_CHUNKS),
    "icsnpp__opcua_with-gap_with-handshake.pcap": (
        _GAP_REASON,
        _GAP_EXTRA_MESSAGES,
        _GAP_EXTRA_CHUNKS,
    ),
}
# anomalies icsmon must report on published captures (everything else must decode cleanly)
EXPECTED_ANOMALIES = {
    "iti__opc-ua-ap-method-wireshark-freeze.pcap": Counter(
        {"opcua-message-too-large": 5, "opcua-malformed-body": 2}
    ),
}


def _public(public: Path) -> list[Path]:
    return sorted(p for folder in FOLDERS for p in (public / folder).glob("*.pcap*"))


def _own() -> list[Path]:
    return sorted(OWN.glob("*.pcap"))


def engine_messages(events: list[dict]) -> list[tuple]:
    """Messages counted back from transaction events, in tshark's shape (chunk type dropped:
    an event describes whole messages)."""
    rows: list[tuple] = []
    for ev in events:
        if ev.get("network.protocol") != "opcua" or ev.get("event.action") == "anomaly":
            continue
        mtype = ev["opcua.message_type"]
        pairing = ev["ics.pairing"]
        handle = ev.get("opcua.request_handle")
        if pairing in ("paired", "request-only"):
            rows.append((mtype, ev.get("opcua.service_type_id"), handle))
        if pairing in ("paired", "response-only"):
            rtype = ev.get("opcua.response_message_type", mtype)
            rows.append(
                (
                    rtype,
                    ev.get("opcua.response_type_id"),
                    ev.get("opcua.response_request_handle", handle),
                )
            )
            if (
                rtype in ("MSG", "OPN", "CLO")
                and "opcua.status_code" in ev
                and not ev.get("opcua.aborted")
            ):
                rows.append(("status", ev["opcua.status_code"]))
    return rows


def _check(name: str, theirs: Counter, ours: Counter, view: int, report: list[str]) -> None:
    """``view``: 1 for whole messages, 2 for chunks (which side of KNOWN_DIFFERENCES)."""
    missing = theirs - ours
    extra = ours - theirs
    expected_extra = KNOWN_DIFFERENCES[name][view] if name in KNOWN_DIFFERENCES else {}
    if dict(extra) != expected_extra or missing:
        report.append(
            f"{name}: tshark-only {dict(missing)} icsmon-only {dict(extra)} (expected icsmon-only {expected_extra})"
        )


def test_every_public_opcua_capture_agrees_with_tshark_through_the_engine(
    public_pcaps: Path, tshark: str
) -> None:
    files = _public(public_pcaps)
    assert len([p for p in files if p.parent.name == "opcua"]) == 31, (
        "SOURCES.md lists 31 OPC UA captures"
    )
    report: list[str] = []
    total = 0
    for path in files:
        events = list(Engine(EngineConfig()).replay([path]))
        theirs = Counter(tshark_messages(tshark, path, whole=True))
        ours = Counter(engine_messages(events))
        total += sum(theirs.values())
        _check(path.name, theirs, ours, 1, report)
        anomalies = Counter(e["error.type"] for e in events if e.get("event.action") == "anomaly")
        if anomalies != EXPECTED_ANOMALIES.get(path.name, Counter()):
            report.append(f"{path.name}: anomalies {dict(anomalies)}")
    assert total > 3000  # the oracle saw the OPC UA traffic (not a silent empty comparison)
    assert not report, "\n".join(report)


def test_every_public_opcua_capture_agrees_with_tshark_chunk_by_chunk(
    public_pcaps: Path, tshark: str
) -> None:
    report: list[str] = []
    for path in _public(public_pcaps):
        _records, messages = parse_capture(path)
        theirs = Counter(tshark_messages(tshark, path))
        ours = Counter(icsmon_messages(messages))
        _check(path.name, theirs, ours, 2, report)
    assert not report, "\n".join(report)


@pytest.mark.parametrize("path", _own(), ids=lambda p: p.name)
def test_own_captures_agree_with_tshark(path: Path, tshark: str) -> None:
    """Both views on the asyncua captures: chunk level (chunk types C/F included) and events."""
    theirs = tshark_messages(tshark, path)
    assert theirs, f"tshark sees no OPC UA in {path.name}"
    _records, messages = parse_capture(path)
    assert Counter(icsmon_messages(messages)) == Counter(theirs)
    events = list(Engine(EngineConfig()).replay([path]))
    assert Counter(engine_messages(events)) == Counter(tshark_messages(tshark, path, whole=True))
    assert not [e for e in events if e.get("event.action") == "anomaly"]
