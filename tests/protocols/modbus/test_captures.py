"""The pymodbus captures in pcaps/modbus/, transaction by transaction, against tshark.

Beyond the golden files (which pin icsmon's output) these check that output is *right*: each
transaction icsmon reports matches what tshark decodes from the same frames (function,
unit, exception, addresses, quantities, register values, device-identification strings,
diagnostic sub-function), and the register values hang together the way Modbus says they
must (what was written is what is read back).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from sensor.engine import Engine, EngineConfig
from tests.support import REPO

CAPTURES = sorted((REPO / "pcaps" / "modbus").glob("*.pcap"))
FIELDS = (
    "tcp.srcport",
    "tcp.dstport",
    "mbtcp.trans_id",
    "mbtcp.unit_id",
    "modbus.func_code",
    "modbus.exception_code",
    "modbus.reference_num",
    "modbus.word_cnt",
    "modbus.bit_cnt",
    "modbus.regval_uint16",
    "modbus.object_str_value",
    "modbus.diagnostic_code",
    "modbus.and_mask",
    "modbus.or_mask",
    "modbus.read_reference_num",
    "modbus.write_reference_num",
    "modbus.data",
)

Row = dict[str, list[str]]


def tshark_transactions(tshark: str, path: Path) -> dict[tuple[int, int], dict[str, Row]]:
    """(client port, transaction id) -> {"request": fields, "response": fields}."""
    argv = [tshark, "-r", str(path), "-Y", "mbtcp", "-T", "fields"]
    argv += ["-E", "occurrence=a", "-E", "aggregator=|"]
    for name in FIELDS:
        argv += ["-e", name]
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    transactions: dict[tuple[int, int], dict[str, Row]] = {}
    for line in out.splitlines():
        row = {
            name: (col.split("|") if col else [])
            for name, col in zip(FIELDS, line.split("\t"), strict=True)
        }
        assert len(row["mbtcp.trans_id"]) == 1, "these captures carry one PDU per frame"
        to_server = row["tcp.dstport"] == ["502"]
        client_port = int(row["tcp.srcport" if to_server else "tcp.dstport"][0])
        key = (client_port, int(row["mbtcp.trans_id"][0]))
        transactions.setdefault(key, {})["request" if to_server else "response"] = row
    return transactions


def icsmon_events(path: Path) -> tuple[dict[tuple[int, int], dict], list[dict], Engine]:
    engine = Engine(EngineConfig())
    events = list(engine.replay([path]))
    transactions, anomalies = {}, []
    for ev in events:
        key = (ev["source.port"], ev.get("modbus.transaction_id"))
        if ev["event.action"] == "anomaly":
            anomalies.append(ev)
        else:
            assert key not in transactions, f"two events for transaction {key}"
            transactions[key] = ev
    return transactions, anomalies, engine


def _ints(values: list[str]) -> list[int]:
    return [int(v, 0) for v in values]


def _registers(data: list[str]) -> list[int]:
    raw = bytes.fromhex(data[0].replace(":", "")) if data else b""
    return [int.from_bytes(raw[i : i + 2], "big") for i in range(0, len(raw), 2)]


def _one(row: Row, name: str) -> int | None:
    return int(row[name][0], 0) if row.get(name) else None


@pytest.mark.parametrize("capture", CAPTURES, ids=[p.name for p in CAPTURES])
def test_every_transaction_agrees_with_tshark(capture: Path, tshark: str) -> None:
    theirs = tshark_transactions(tshark, capture)
    ours, anomalies, engine = icsmon_events(capture)
    assert theirs, "tshark sees no Modbus in the capture"
    assert sorted(ours) == sorted(theirs)
    assert engine.errors == []
    mismatched = set()
    for key, pair in theirs.items():
        ev, request, response = ours[key], pair["request"], pair["response"]
        fc = _one(request, "modbus.func_code")
        where = f"{capture.name} transaction {key}"
        assert ev["modbus.function_code"] == fc, where
        assert ev["modbus.unit_id"] == _one(request, "mbtcp.unit_id"), where
        assert ev["ics.pairing"] == "paired", where
        assert ev.get("modbus.exception_code") == _one(response, "modbus.exception_code"), where
        assert ev["event.outcome"] == (
            "failure" if response["modbus.exception_code"] else "success"
        )
        if _one(response, "modbus.func_code") != fc:
            mismatched.add(key)  # pymodbus answered with function byte 0x80 (see pcaps/README.md)
        if fc == 23:
            assert ev["modbus.read_address"] == _one(request, "modbus.read_reference_num"), where
            assert ev["modbus.write_address"] == _one(request, "modbus.write_reference_num"), where
        elif request["modbus.reference_num"]:
            assert ev["modbus.address"] == _one(request, "modbus.reference_num"), where
        quantity = _one(request, "modbus.word_cnt") or _one(request, "modbus.bit_cnt")
        if fc in (1, 2, 3, 4, 15, 16):
            assert ev["modbus.quantity"] == quantity, where
        if fc in (20, 21):  # tshark's word count is each file sub-request's record length
            lengths = [rec["length"] for rec in ev["modbus.file_records"]]
            assert lengths == _ints(request["modbus.word_cnt"]), where
        if fc in (3, 4) and response["modbus.regval_uint16"]:
            assert ev["modbus.values"] == _ints(response["modbus.regval_uint16"]), where
        if fc == 16:
            assert ev["modbus.values"] == _ints(request["modbus.regval_uint16"]), where
        if fc == 23:  # tshark shows FC 23's registers as raw data
            assert ev["modbus.values"] == _registers(request["modbus.data"]), where
            assert ev["modbus.read_values"] == _registers(response["modbus.data"]), where
        if fc == 22:
            assert ev["modbus.and_mask"] == _one(request, "modbus.and_mask"), where
            assert ev["modbus.or_mask"] == _one(request, "modbus.or_mask"), where
        if fc == 8:
            assert ev["modbus.subfunction"] == _one(request, "modbus.diagnostic_code"), where
        if fc == 43 and response["modbus.object_str_value"]:
            assert list(ev["modbus.objects"].values()) == response["modbus.object_str_value"], where
    # Every response that does not echo its request's function code is also an anomaly.
    flagged = {(a["source.port"], a["modbus.transaction_id"]) for a in anomalies}
    assert flagged == mismatched
    assert all(a["error.type"] == "function-mismatch" for a in anomalies)


def _by_function(path: Path) -> dict[int, list[dict]]:
    ours, _, _ = icsmon_events(path)
    by_fc: dict[int, list[dict]] = {}
    for key in sorted(ours, key=lambda k: ours[k]["@timestamp"]):
        by_fc.setdefault(ours[key]["modbus.function_code"], []).append(ours[key])
    return by_fc


def test_writes_are_what_the_reads_return() -> None:
    """Decoded values obey Modbus semantics: a write shows up in the next read of that range."""
    by_fc = _by_function(CAPTURES[0].with_name("modbus_writes.pcap"))
    (fc16,), (fc3,) = by_fc[16], by_fc[3]
    assert fc3["modbus.address"] == fc16["modbus.address"]
    assert fc3["modbus.values"] == fc16["modbus.values"]
    (fc15,), (fc1,) = by_fc[15], by_fc[1]
    assert (fc1["modbus.address"], fc1["modbus.values"]) == (
        fc15["modbus.address"],
        fc15["modbus.values"],
    )
    # FC 22 on the register FC 6 wrote: result = (current AND and_mask) OR (or_mask AND NOT and_mask),
    # which FC 23 reads back as the first of its read values.
    (fc6,), (fc22,), (fc23,) = by_fc[6], by_fc[22], by_fc[23]
    assert fc22["modbus.address"] == fc6["modbus.address"] == fc23["modbus.read_address"]
    and_mask, or_mask = fc22["modbus.and_mask"], fc22["modbus.or_mask"]
    masked = (fc6["modbus.values"][0] & and_mask) | (or_mask & ~and_mask & 0xFFFF)
    assert fc23["modbus.read_values"][0] == masked


def test_polled_input_registers_move_and_holding_registers_stay() -> None:
    by_fc = _by_function(CAPTURES[0].with_name("modbus_polling.pcap"))
    inputs = [ev["modbus.values"] for ev in by_fc[4]]
    holding = [ev["modbus.values"] for ev in by_fc[3]]
    assert len(inputs) == len(holding) == 5
    assert all(a != b for a, b in zip(inputs, inputs[1:], strict=False))
    assert all(h == holding[0] for h in holding)


def test_device_identity_reaches_the_server_asset(tshark: str) -> None:
    path = CAPTURES[0].with_name("modbus_identification.pcap")
    theirs = tshark_transactions(tshark, path)
    strings = max((t["response"]["modbus.object_str_value"] for t in theirs.values()), key=len)
    vendor, product_code, revision, _url, product, model = strings[:6]
    _, _, engine = icsmon_events(path)
    assets = {doc["host.ip"]: doc for doc in engine.changed_assets()}
    server = assets["127.0.0.1"]
    assert "modbus-server" in server["asset.roles"]
    assert "modbus-client" in assets["127.0.0.2"]["asset.roles"]
    assert server["ics.device.vendor"] == vendor
    assert server["ics.device.firmware"] == revision
    assert server["ics.device.model"] == model
    assert product in (server["ics.device.product"], product_code)
