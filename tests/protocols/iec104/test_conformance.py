"""IEC 60870-5-104 against tshark as the oracle, on every published IEC 104 capture.

Per APDU: the frame format, and for I-format APDUs the type identification, cause of
transmission, common address and number of information objects; for U-format APDUs the
function. Counted as multisets (our records are per transaction: a command stands for its
activation, confirmation and termination). S-format APDUs only acknowledge; the sensor gives
them no record (it follows their sequence numbers), so they are left out of both sides.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from tests.support import SHARED_PCAPS
from tests.support.iec104 import record_apdus, replay, tshark_apdus

# Where icsmon and tshark differ on purpose: file -> (reason, APDUs only icsmon reports,
# APDUs only tshark reports). Each was checked frame by frame.
KNOWN_DIFFERENCES: dict[str, tuple[str, dict, dict]] = {
    "iti__TestDissectIec104.pcap": (
        "a dissector test file with 9 frames tshark marks [Malformed Packet]: garbage before an"
        " APCI (frames 25, 41, 83: tshark decodes it as an 'ERR prefix' and then an I-format"
        " APDU of length 4 to 8, too short for an ASDU, whose type and cause are the garbage"
        " octets 0x16, 0x18, 0x1a) and the rest of such an APDU in the next frame (58, 96), and"
        " one control octet that is no U function (0x05). icsmon reports these octets as"
        " anomalies (bad-apci, not-iec104) and decodes the well-formed APDUs around them.",
        {},
        {("U", 5): 1, ("I", 24, None, None, 24): 2, ("I", 26, 26, None, 26): 2},
    ),
}


def _captures() -> list[str]:
    return sorted(p.name for p in (SHARED_PCAPS / "iec104").glob("*.pcap*")) or ["(none)"]


CAPTURES = _captures()


@pytest.mark.parametrize("name", CAPTURES, ids=CAPTURES)
def test_iec104_apdus_match_tshark(name: str, public_pcaps: Path, tshark: str) -> None:
    path = public_pcaps / "iec104" / name
    records = replay(path)
    ours, theirs = record_apdus(records), tshark_apdus(tshark, path)
    assert sum(theirs.values()) > 0
    _reason, only_ours, only_theirs = KNOWN_DIFFERENCES.get(name, ("", {}, {}))
    assert (dict(ours - theirs), dict(theirs - ours)) == (only_ours, only_theirs)
    if name not in KNOWN_DIFFERENCES:  # well-formed captures: no anomaly may hide
        assert not [r for r in records if r.get("event.action") == "anomaly"]


def test_agreement_on_well_formed_apdus(public_pcaps: Path, tshark: str) -> None:
    """The target: at least 99.9% of tshark's APDUs found with the same key fields, the
    APDUs tshark itself marks malformed (pinned above) aside."""
    total = agree = 0
    for name in CAPTURES:
        path = public_pcaps / "iec104" / name
        ours, theirs = record_apdus(replay(path)), tshark_apdus(tshark, path)
        theirs = theirs - Counter(KNOWN_DIFFERENCES.get(name, ("", {}, {}))[2])
        total += sum(theirs.values())
        agree += sum((ours & theirs).values())
    assert total >= 300
    assert agree / total >= 0.999, f"{agree} of {total} APDUs agree"
