"""S7comm / S7comm-plus decoding against an oracle, on every published Siemens capture.

S7comm: tshark decodes every capture; per PDU the ROSCTR, function, item count and PDU
reference must agree (compared as multisets: our records are per transaction, tshark's per
frame). Both sides decode each TCP byte once (see ``tshark_rows``). That is where tshark's
defaults and icsmon differ on purpose, and why tshark runs with its sequence analysis off:
in ``iti__s7comm_clean.pcap`` 12 answers (e.g. frame 398) arrive in segments tshark calls
"spurious retransmissions" and does not dissect, though their first copy was never captured;
icsmon decodes those bytes the first time it sees them. With the analysis off tshark would
instead decode true retransmissions twice (``iti__wincc_s300_setup-alarm-read_2.pcapng``
frame 422 resends a 7-byte COTP keep-alive plus the job of frame 421), so frames that bring
no new bytes are dropped from tshark's side, as icsmon's reassembly drops them.

S7comm-plus: stock tshark has no dissector. SOURCES.md lists, per capture, the PDU types and
the request/response function codes read at fixed header offsets of every frame that starts
with TPKT + COTP DT + 0x72. We repeat that frame-level reading (checked equal to SOURCES.md),
drop frames that only repeat bytes already seen, and compare it to our records: per version
the number of TPKT packets (fragments) and per function the number of requests and responses,
and the number of notifications.
"""

from __future__ import annotations

import re
import subprocess
from collections import Counter
from pathlib import Path

import pytest

from sensor.protocols import s7comm
from tests.support import REPO
from tests.support import SHARED_PCAPS as SHARED
from tests.support.s7comm import record_pdus, replay, tshark_pdus, tshark_rows

FOLDERS = ("s7comm", "s7comm-plus", "mixed")


def _captures() -> list[str]:
    names = []
    for folder in FOLDERS:
        names += [f"{folder}/{p.name}" for p in sorted((SHARED / folder).glob("*.pcap*"))]
    return names or ["(no published captures)"]


CAPTURES = _captures()


@pytest.mark.parametrize("name", CAPTURES, ids=CAPTURES)
def test_s7comm_pdus_match_tshark(name: str, public_pcaps: Path, tshark: str) -> None:
    path = public_pcaps / name
    records = replay(path)
    ours = Counter(record_pdus(records))
    theirs = Counter(tshark_pdus(tshark, path))
    assert sum(ours.values()) == sum(theirs.values()), f"{name}: PDU count differs"
    assert ours == theirs, (
        f"{name}: only ours {list((ours - theirs).items())[:5]}, only tshark {list((theirs - ours).items())[:5]}"
    )
    # The published captures are well formed: no decoding errors may hide behind the counts.
    errors = [
        r
        for r in records
        if r.get("error.type") in ("s7-bad-parameter", "s7-bad-length", "s7-decode-error")
    ]
    assert not errors, errors[:3]


OWN = REPO / "pcaps" / "s7comm"
OWN_CAPTURES = sorted(p.name for p in OWN.glob("*.pcap"))


@pytest.mark.parametrize("name", OWN_CAPTURES, ids=OWN_CAPTURES)
def test_own_captures_match_tshark(name: str, tshark: str) -> None:
    """The python-snap7 captures in pcaps/s7comm: same PDUs as tshark, including the PDUs
    python-snap7 gets wrong (tshark flags them malformed; we report an anomaly and still
    give the transaction, with the header fields both sides agree on)."""
    records = replay(OWN / name)
    assert Counter(record_pdus(records)) == Counter(tshark_pdus(tshark, OWN / name))


# Read/write var item by item: addresses, return codes and data as tshark decodes them.
ITEM_FIELDS = (
    "s7comm.header.rosctr", "s7comm.param.func", "s7comm.header.pduref", "s7comm.param.item.syntaxid",
    "s7comm.param.item.area", "s7comm.param.item.db", "s7comm.param.item.address.byte",
    "s7comm.param.item.address.bit", "s7comm.param.item.length", "s7comm.param.item.transp_size",
    "s7comm.data.returncode", "s7comm.resp.data", "s7comm.param.item.address.number",
)  # fmt: skip
TIMERS_COUNTERS = (0x1C, 0x1D, 0x1E, 0x1F)  # addressed by number, not byte.bit
# Captures whose read/write items are all S7ANY on I/Q/M/DB areas (tshark gives counters and
# timers a different address field).
ITEM_CAPTURES = [
    "own/s7_read_write.pcap",
    "s7comm/iti__s7comm_varservice_libnodavedemo.pcap",
    "s7comm/iti__wincc_s300_setup-alarm-read-write.pcapng",
    "s7comm/iti__wincc_s300_setup-alarm-read_2.pcapng",
    "s7comm/iti__s7comm_clean.pcap",
]


def _tshark_items(tshark: str, path: Path) -> Counter:
    seen: Counter = Counter()
    for row in tshark_rows(
        tshark, path, "s7comm.param.func==4 || s7comm.param.func==5", list(ITEM_FIELDS)
    ):
        cols = [c.split(",") if c else [] for c in row]
        rosctr, func, ref = int(cols[0][0]), int(cols[1][0], 16), int(cols[2][0])
        if rosctr == 1:
            assert set(cols[3]) == {"0x10"}, "only S7ANY addresses are compared"
            byte_bits, numbers = list(zip(cols[6], cols[7], strict=True)), list(cols[12])
            addresses = []
            for area, db, length, tsize in zip(cols[4], cols[5], cols[8], cols[9], strict=True):
                a = int(area, 16)
                byte, bit = (numbers.pop(0), None) if a in TIMERS_COUNTERS else byte_bits.pop(0)
                addresses.append(
                    (
                        a,
                        int(db),
                        int(byte),
                        None if bit is None else int(bit),
                        int(length),
                        int(tsize),
                    )
                )
            assert not byte_bits and not numbers
            addresses = tuple(addresses)
            seen[("request", func, ref, addresses, tuple(cols[11]) if func == 5 else ())] += 1
        else:
            codes = tuple(int(c, 16) for c in cols[10])
            seen[("response", func, ref, codes, tuple(cols[11]) if func == 4 else ())] += 1
    return seen


def _our_items(records: list[dict]) -> Counter:
    seen: Counter = Counter()
    for rec in records:
        func = rec.get("s7comm.function_code")
        if (
            rec.get("network.protocol") != "s7comm"
            or func not in (4, 5)
            or "s7comm.items" not in rec
        ):
            continue
        items = rec["s7comm.items"]
        ref = rec["s7comm.pdu_reference"]
        if rec["s7comm.rosctr"] == 1:
            addresses = tuple(
                (i["area"], i["db"], i["byte"], i.get("bit"), i["length"], i["transport_size"])
                for i in items
            )
            seen[
                (
                    "request",
                    func,
                    ref,
                    addresses,
                    tuple(i["data"] for i in items) if func == 5 else (),
                )
            ] += 1
        if rec["s7comm.rosctr"] == 3 or "s7comm.response.rosctr" in rec:
            codes = tuple(i["return_code"] for i in items)
            data = tuple(i["data"] for i in items if "data" in i) if func == 4 else ()
            seen[("response", func, ref, codes, data)] += 1
    return seen


@pytest.mark.parametrize("name", ITEM_CAPTURES, ids=ITEM_CAPTURES)
def test_read_write_items_match_tshark(
    name: str, tshark: str, request: pytest.FixtureRequest
) -> None:
    if name.startswith("own/"):
        path = OWN / name[4:]
    else:
        path = request.getfixturevalue("public_pcaps") / name
    ours, theirs = _our_items(replay(path)), _tshark_items(tshark, path)
    assert sum(theirs.values()) > 0
    assert ours == theirs, (
        f"only ours {list(ours - theirs)[:3]}, only tshark {list(theirs - ours)[:3]}"
    )


# Userdata services (type, function group, sub-function, SZL id/index) and block/PI-service
# jobs (service name, block type, number, filesystem), PDU by PDU, as tshark decodes them.
USERDATA_FIELDS = [
    "s7comm.header.pduref", "s7comm.param.userdata.type", "s7comm.param.userdata.funcgroup",
    "s7comm.param.userdata.subfunc", "s7comm.param.modetrans.subfunc",
    "s7comm.data.userdata.szl_id", "s7comm.data.userdata.szl_index",
]  # fmt: skip
JOB_FIELDS = [
    "s7comm.header.pduref", "s7comm.param.func", "s7comm.param.pistart.servicename",
    "s7comm.data.blockcontrol.block_type", "s7comm.data.blockcontrol.block_number",
    "s7comm.data.blockcontrol.dest_filesys",
]  # fmt: skip
BLOCK_CODES = {name: code for code, name in s7comm.BLOCK_TYPES.items()}


def _tshark_services(tshark: str, path: Path) -> Counter:
    seen: Counter = Counter()
    for ref, utype, group, sub, mode, szl_id, szl_index in tshark_rows(
        tshark, path, "s7comm.header.rosctr==7", USERDATA_FIELDS
    ):
        request = utype == "4"
        seen[("userdata", int(ref), int(utype), int(group), int(sub or mode),
              int(szl_id, 16) if request and szl_id else None, int(szl_index, 16) if request and szl_index else None)] += 1  # fmt: skip
    jobs = "s7comm.header.rosctr==1 && (s7comm.param.func==0x28 || (s7comm.param.func>=0x1a && s7comm.param.func<=0x1d))"
    for ref, func, service, btype, number, fs in tshark_rows(tshark, path, jobs, JOB_FIELDS):
        seen[
            (
                "job",
                int(ref),
                int(func, 16),
                service,
                btype or None,
                int(number) if number else None,
                fs or None,
            )
        ] += 1
    return seen


def _our_services(records: list[dict]) -> Counter:
    seen: Counter = Counter()
    for rec in records:
        if rec.get("s7comm.rosctr") == 7:
            ref, utype = rec["s7comm.pdu_reference"], rec["s7comm.userdata.type"]
            group, sub = rec["s7comm.userdata.group"], rec["s7comm.userdata.subfunction"]
            request = utype == 4
            seen[("userdata", ref, utype, group, sub, rec.get("s7comm.szl.id") if request else None,
                  rec.get("s7comm.szl.index") if request else None)] += 1  # fmt: skip
            if "s7comm.response.rosctr" in rec:
                seen[("userdata", ref, 8, group, sub, None, None)] += 1
        elif rec.get("s7comm.rosctr") == 1 and rec.get("s7comm.function_code") in (
            0x1A,
            0x1B,
            0x1C,
            0x1D,
            0x28,
        ):
            btype = rec.get("s7comm.block.type")
            seen[("job", rec["s7comm.pdu_reference"], rec["s7comm.function_code"], rec.get("s7comm.pi_service", ""),
                  BLOCK_CODES.get(btype, btype), rec.get("s7comm.block.number"), rec.get("s7comm.block.filesystem"))] += 1  # fmt: skip
    return seen


BLOCK_INFO_FIELDS = [
    "s7comm.header.pduref", "s7comm.blockinfo.block_num", "s7comm.blockinfo.block_lang",
    "s7comm.blockinfo.load_mem_len", "s7comm.blockinfo.mc7_len", "s7comm.blockinfo.author",
    "s7comm.blockinfo.family", "s7comm.blockinfo.headername", "s7comm.blockinfo.headerversion",
    "s7comm.blockinfo.checksum",
]  # fmt: skip


def _tshark_block_info(tshark: str, path: Path) -> Counter:
    seen: Counter = Counter()
    for ref, num, lang, load, mc7, author, family, name, version, checksum in tshark_rows(
        tshark, path, "s7comm.blockinfo.author", BLOCK_INFO_FIELDS
    ):
        seen[
            (
                int(ref),
                int(num),
                int(lang),
                int(load),
                int(mc7),
                author.strip(),
                family.strip(),
                name.strip(),
                version,
                int(checksum, 16),
            )
        ] += 1
    return seen


def _our_block_info(records: list[dict]) -> Counter:
    seen: Counter = Counter()
    for r in records:
        if "s7comm.block.checksum" in r:
            seen[(r["s7comm.pdu_reference"], r["s7comm.block.number"], r["s7comm.block.language"],
                  r["s7comm.block.load_memory_length"], r["s7comm.block.mc7_length"],
                  r.get("s7comm.block.author", ""), r.get("s7comm.block.family", ""),
                  r.get("s7comm.block.name", ""), r["s7comm.block.version"], r["s7comm.block.checksum"])] += 1  # fmt: skip
    return seen


def _tshark_diagnostics(tshark: str, path: Path) -> Counter:
    fields = [
        "s7comm.header.pduref",
        "s7comm.cpu.diag_msg.eventid",
        "s7comm.cpu.diag_msg.obnumber",
        "s7comm.cpu.diag_msg.prioclass",
    ]
    seen: Counter = Counter()
    for ref, ids, obs, prios in tshark_rows(tshark, path, "s7comm.cpu.diag_msg.eventid", fields):
        events = zip(ids.split(","), obs.split(","), prios.split(","), strict=True)
        seen[(int(ref), tuple((int(i, 16), int(o), int(p)) for i, o, p in events))] += 1
    return seen


def _our_diagnostics(records: list[dict]) -> Counter:
    seen: Counter = Counter()
    for r in records:
        if "s7comm.diagnostic.events" in r:
            events = tuple(
                (e["event_id"], e["ob_number"], e["priority_class"])
                for e in r["s7comm.diagnostic.events"]
            )
            seen[(r["s7comm.pdu_reference"], events)] += 1
    return seen


SERVICE_CAPTURES = [n for n in CAPTURES if n.startswith("s7comm/")]


@pytest.mark.parametrize("name", SERVICE_CAPTURES, ids=SERVICE_CAPTURES)
def test_userdata_and_block_services_match_tshark(
    name: str, public_pcaps: Path, tshark: str
) -> None:
    path = public_pcaps / name
    records = replay(path)
    ours, theirs = _our_services(records), _tshark_services(tshark, path)
    assert ours == theirs, (
        f"only ours {list(ours - theirs)[:3]}, only tshark {list(theirs - ours)[:3]}"
    )
    ours, theirs = _our_block_info(records), _tshark_block_info(tshark, path)
    assert ours == theirs, (
        f"block info: only ours {list(ours - theirs)[:3]}, only tshark {list(theirs - ours)[:3]}"
    )
    ours, theirs = _our_diagnostics(records), _tshark_diagnostics(tshark, path)
    assert ours == theirs, (
        f"diagnostics: only ours {list(ours - theirs)[:2]}, only tshark {list(theirs - ours)[:2]}"
    )


# -- S7comm-plus ----------------------------------------------------------------------------

HEURISTIC = "tcp.len>7 && tcp.payload[0]==03 && tcp.payload[5]==f0 && tcp.payload[7]==72"
PLUS_ROW = re.compile(r"S7comm-plus PDU types: ([^;|]*); functions: ([^;|]*); notifications (\d+)")


def _camel_to_snake(name: str) -> str:
    return re.sub(r"(?<!^)([A-Z])", r"_\1", name).lower()


def _sources_plus_counts(public_pcaps: Path, filename: str) -> tuple[Counter, Counter, int] | None:
    """PDU types, function counts ("Req get_link") and notifications as SOURCES.md lists them."""
    for line in (public_pcaps / "SOURCES.md").read_text().splitlines():
        if line.startswith(f"| `{filename}` |"):
            match = PLUS_ROW.search(line)
            if not match:
                return None
            types = Counter(
                {int(k, 16): int(v) for k, v in re.findall(r"(0x[0-9a-f]+) (\d+)", match.group(1))}
            )
            funcs = Counter()
            for kind, fname, count in re.findall(r"(Req|Res) (\w+) (\d+)", match.group(2)):
                funcs[f"{kind} {_camel_to_snake(fname)}"] = int(count)
            return types, funcs, int(match.group(3))
    return None


def _frame_level_plus(tshark: str, path: Path, dedupe: bool) -> tuple[Counter, Counter, int]:
    """SOURCES.md's reading: PDU type and header function code of each matching frame."""
    cmd = [
        tshark, "-r", str(path), "-o", "tcp.analyze_sequence_numbers:FALSE", "-Y", HEURISTIC,
        "-T", "fields", "-e", "tcp.stream", "-e", "tcp.srcport", "-e", "tcp.seq_raw",
        "-e", "tcp.len", "-e", "tcp.payload",
    ]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    types: Counter = Counter()
    funcs: Counter = Counter()
    notifications = 0
    seen_end: dict[tuple[str, str], int] = {}
    for line in out.splitlines():
        stream, sport, seq, tlen, payload_hex = line.split("\t")
        end = int(seq) + int(tlen)
        last = seen_end.get((stream, sport))
        if dedupe and last is not None and 0 <= (last - end) & 0xFFFFFFFF < 0x80000000:
            continue
        seen_end[(stream, sport)] = end
        p = bytes.fromhex(payload_hex)
        types[p[8]] += 1
        i = 11
        if p[8] == 3 and len(p) > 11:
            i += 1 + p[11]
        if i >= len(p):
            continue
        if p[i] == 0x33:
            notifications += 1
        elif p[i] in (0x31, 0x32, 0x02) and i + 5 <= len(p):  # 0x02: the older response opcode
            code = int.from_bytes(p[i + 3 : i + 5], "big")
            if code in s7comm.PLUS_FUNCTIONS:
                kind = "Req" if p[i] == 0x31 else "Res"
                funcs[f"{kind} {s7comm.PLUS_FUNCTIONS[code][0]}"] += 1
    return types, funcs, notifications


def _our_plus_counts(records: list[dict]) -> tuple[Counter, Counter, int]:
    types: Counter = Counter()
    funcs: Counter = Counter()
    notifications = 0
    for rec in records:
        if rec.get("network.protocol") != "s7comm-plus" or rec["event.action"] == "anomaly":
            continue
        version = rec["s7comm_plus.version"]
        types[version] += rec["s7comm_plus.fragments"] + rec.get(
            "s7comm_plus.response.fragments", 0
        )
        if rec["s7comm_plus.opcode"] == 0x33:
            notifications += 1
            continue
        name = rec["s7comm_plus.function"]
        if rec["s7comm_plus.opcode"] == 0x31:
            funcs[f"Req {name}"] += 1
            if "s7comm_plus.response.opcode" in rec:
                funcs[f"Res {name}"] += 1
        else:
            funcs[f"Res {name}"] += 1
    return types, funcs, notifications


PLUS_CAPTURES = [
    n for n in CAPTURES if n.startswith("s7comm-plus/") or n == "mixed/zeek__modbusBig.pcap"
]


@pytest.mark.parametrize("name", PLUS_CAPTURES, ids=PLUS_CAPTURES)
def test_s7comm_plus_matches_sources(name: str, public_pcaps: Path, tshark: str) -> None:
    path = public_pcaps / name
    listed = _sources_plus_counts(public_pcaps, path.name)
    assert listed is not None, f"SOURCES.md has no S7comm-plus row for {path.name}"
    listed_types, listed_funcs, listed_notifications = listed

    # 1. Our frame-level reading is the one SOURCES.md made (it lists the top functions only).
    raw_types, raw_funcs, raw_notifications = _frame_level_plus(tshark, path, dedupe=False)
    assert raw_types == listed_types
    assert raw_notifications == listed_notifications
    for key, count in listed_funcs.items():
        assert raw_funcs[key] == count, key

    # 2. Our records agree with it once retransmitted frames are dropped.
    frame_types, frame_funcs, frame_notifications = _frame_level_plus(tshark, path, dedupe=True)
    records = replay(path)
    our_types, our_funcs, our_notifications = _our_plus_counts(records)
    assert our_types == frame_types
    assert our_funcs == frame_funcs
    assert our_notifications == frame_notifications
    assert not [r for r in records if r.get("error.type", "").startswith("s7plus")]
