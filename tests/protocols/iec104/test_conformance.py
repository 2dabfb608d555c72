"""IEC 60870-5-104 against tshark as the oracle, on every published IEC 104 capture and on
the captures made here with c104 (pcaps/iec104/).

What is compared, per APDU: the frame format, and for I-format APDUs the type
identification, cause of transmission, common address and number of information objects; for
U-format APDUs the function. Counted as multisets (our records are per transaction: a command
stands for its activation, confirmation and termination). S-format APDUs only acknowledge;
the sensor gives them no record (it follows their sequence numbers), so they are left out of
both sides.

The numbers (published captures): tshark reports 322 I/U APDUs; 317 agree. The other 5 are
APDUs tshark itself marks [Malformed Packet] in iti__TestDissectIec104.pcap (a dissector test
file): garbage octets tshark reads as I-format APDUs too short for an ASDU, and a control octet
that is no U function. icsmon reports those octets as anomalies instead of APDUs, so they
cannot agree field by field. Agreement is 317 / 317 = 100% on the APDUs tshark decodes as
well-formed (the 99.9% target), and 317 / 322 = 98.4% counting every APDU tshark lists: both
are asserted below, so neither number can drift unnoticed.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from sensor.protocols.iec104.parser import type_name
from sensor.protocols.iec104.tables import TYPES
from tests.support import REPO, SHARED_PCAPS
from tests.support.conformance import Tally, check_section, table
from tests.support.iec104 import U_CODES, record_apdus, replay, tshark_apdus

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


def test_agreement_counting_every_apdu(public_pcaps: Path, tshark: str) -> None:
    """The other number: the 5 APDUs tshark marks malformed counted as disagreements."""
    total = agree = 0
    for name in CAPTURES:
        path = public_pcaps / "iec104" / name
        ours, theirs = record_apdus(replay(path)), tshark_apdus(tshark, path)
        total += sum(theirs.values())
        agree += sum((ours & theirs).values())
    assert (agree, total) == (317, 322), f"{agree} of {total} ({agree / total:.1%})"


OWN = sorted((REPO / "pcaps" / "iec104").glob("*.pcap"))


@pytest.mark.parametrize("path", OWN, ids=[p.name for p in OWN])
def test_own_captures_match_tshark(path: Path, tshark: str) -> None:
    """The c104 captures: every APDU as tshark decodes it, no anomaly (the raw reset
    process command of iec104_attack_reset is well-formed too)."""
    records = replay(path)
    ours, theirs = record_apdus(records), tshark_apdus(tshark, path)
    assert sum(theirs.values()) > 0
    assert (dict(ours - theirs), dict(theirs - ours)) == ({}, {})
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


def test_agreement_per_type_is_documented(
    public_pcaps: Path, tshark: str, update_golden: bool
) -> None:
    """The agreement per type identification and U function over every published capture:
    the table of docs/conformance.md, and no type below the target except the ones tshark
    itself marks malformed (KNOWN_DIFFERENCES)."""
    tally = Tally()
    for name in CAPTURES:
        path = public_pcaps / "iec104" / name
        tally.add(record_apdus(replay(path)), tshark_apdus(tshark, path), lambda k: k[:2])
    pinned = Counter(KNOWN_DIFFERENCES["iti__TestDissectIec104.pcap"][2])
    malformed: Counter = Counter()
    for k, n in pinned.items():
        malformed[k[:2]] += n
    for key, theirs, agree, only_ours in tally.rows():
        assert (theirs - agree, only_ours) == (malformed[key], 0), key
    u_names = {v: k for k, v in U_CODES.items()}

    def label(key: object) -> tuple[str, ...]:
        frame, code = key  # type: ignore[misc]
        if frame == "U":
            return ("U", f"0x{code:02x}", u_names.get(code, "not a U function"))
        mnemonic, name = type_name(code)
        return ("I", str(code), f"{mnemonic} {name}" if code in TYPES else "(garbage octets)")

    check_section(
        "iec104-per-type", table(("format", "type / function", "name"), tally, label), update_golden
    )
