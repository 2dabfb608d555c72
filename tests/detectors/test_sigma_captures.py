"""The rule pack on real traffic: captures replayed through ``sensor.engine.Engine`` and the
Sigma engine, with tshark as the oracle for how many requests should have fired a rule."""

from __future__ import annotations

import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from detectors.sigma import SigmaEngine
from sensor.engine import Engine, EngineConfig
from tests.support import REPO

PCAPS = REPO / "pcaps"


def replay(paths: list[Path], site_config: Path | None = None) -> list[dict[str, Any]]:
    engine = SigmaEngine.load(None, site_config=site_config)
    alerts: list[dict[str, Any]] = []
    for ev in Engine(EngineConfig(site="test-site", observer="test-sensor")).replay(paths):
        alerts.extend(engine.process(ev))
    alerts.extend(engine.flush())
    assert engine.stats["errors"] == 0
    return alerts


def matches_by_rule(alerts: list[dict[str, Any]]) -> Counter[str]:
    """Rule file stem -> events it matched (alert counts summed over de-duplicated alerts)."""
    pack = SigmaEngine.load(None).pack
    stem = {r.meta.id: Path(r.meta.path).stem for r in pack.rules}
    stem.update({c.meta.id: Path(c.meta.path).stem for c in pack.correlations})
    out: Counter[str] = Counter()
    for a in alerts:
        out[stem[a["rule.id"]]] += a["icsmon.alert.count"]
    return out


def tshark_count(tshark: str, pcap: Path, display_filter: str) -> int:
    res = subprocess.run(
        [tshark, "-r", str(pcap), "-Y", display_filter], capture_output=True, text=True, check=True
    )
    return len(res.stdout.splitlines())


REQUEST = "tcp.dstport==502 && "


@pytest.mark.parametrize(
    ("capture", "rule", "display_filter"),
    [
        (
            "part1",
            "modbus_force_listen_only_mode",
            REQUEST + "modbus.func_code==8 && modbus.diagnostic_code==4",
        ),
        (
            "part1",
            "modbus_restart_communications",
            REQUEST + "modbus.func_code==8 && modbus.diagnostic_code==1",
        ),
        ("part1", "modbus_report_server_id", REQUEST + "modbus.func_code==17"),
        (
            "part1",
            "modbus_read_device_identification",
            REQUEST + "modbus.func_code==43 && modbus.mei==14",
        ),
        (
            "part1",
            "modbus_write_from_unlisted_master",
            REQUEST + "modbus.func_code in {5,6,15,16,22,23}",
        ),
        (
            "part2",
            "modbus_write_from_unlisted_master",
            REQUEST + "modbus.func_code in {5,6,15,16,22,23}",
        ),
        ("part2", "modbus_write_file_record", REQUEST + "modbus.func_code==21"),
        ("part2", "modbus_report_server_id", REQUEST + "modbus.func_code==17"),
    ],
)
def test_digitalbond_requests_fire_their_rules(
    public_pcaps: Path, tshark: str, capture: str, rule: str, display_filter: str
) -> None:
    pcap = public_pcaps / "modbus" / f"digitalbond__modbus_test_data_{capture}.pcap"
    expected = tshark_count(tshark, pcap, display_filter)
    assert expected > 0
    assert matches_by_rule(replay([pcap]))[rule] == expected


# Controls the station refused, in the answers: tshark counts the refusing responses (one
# control per request in these captures), the rules see the request paired with its answer.
REFUSED = [
    (
        "dnp3",
        "zeek__dnp3.pcap",
        "dnp3_control_refused",
        "dnp3.al.func==129 && dnp3.al.ctrlstatus!=0",
    ),
    (
        "dnp3",
        "digitalbond__dnp3_test_data_part2.pcap",
        "dnp3_control_refused",
        "dnp3.al.func==129 && dnp3.al.ctrlstatus!=0",
    ),
    (
        "iec104",
        "iti__TestDissectIec104.pcap",
        "iec104_command_refused",
        "iec60870_asdu.nega==1 && iec60870_asdu.causetx==7"
        " && iec60870_asdu.typeid>=45 && iec60870_asdu.typeid<=64",
    ),
]


@pytest.mark.parametrize(("folder", "capture", "rule", "display_filter"), REFUSED)
def test_refused_controls_fire_their_rules(
    public_pcaps: Path, tshark: str, folder: str, capture: str, rule: str, display_filter: str
) -> None:
    pcap = public_pcaps / folder / capture
    expected = tshark_count(tshark, pcap, display_filter)
    assert expected > 0
    assert matches_by_rule(replay([pcap]))[rule] == expected


def test_digitalbond_function_code_sweep_and_exception_burst(
    public_pcaps: Path, tshark: str
) -> None:
    pcap = public_pcaps / "modbus" / "digitalbond__modbus_test_data_part2.pcap"
    alerts = replay([pcap])
    fired = matches_by_rule(alerts)
    # The capture walks function codes 0-127 (Quickdraw's function code scan test).
    codes = set(
        subprocess.run(
            [
                tshark,
                "-r",
                str(pcap),
                "-Y",
                "tcp.dstport==502 && mbtcp",
                "-T",
                "fields",
                "-e",
                "modbus.func_code",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
    )
    assert len(codes) >= 12
    assert fired["modbus_function_code_sweep"] >= 1
    sweep = next(a for a in alerts if a["rule.name"] == "Modbus Function Code Sweep")
    assert sweep["icsmon.correlation.value"] >= 12
    assert sweep["threat.technique.id"] == ["T0888"]
    exceptions = tshark_count(tshark, pcap, "tcp.srcport==502 && modbus.exception_code")
    assert exceptions >= 20
    assert fired["modbus_exception_burst"] >= 1
    assert fired["modbus_unknown_function_code"] > 0


def test_s7_plc_stop_capture_is_critical() -> None:
    alerts = replay([PCAPS / "baseline" / "attack_plc_stop.pcap"])
    stops = [a for a in alerts if a["rule.name"] == "S7comm PLC Stop"]
    assert len(stops) == 1
    a = stops[0]
    assert a["event.severity"] == 99
    assert a["threat.technique.id"] == [
        "T0858",
        "T0816",
        "T0881",
    ]  # mode change, device stop, service stop
    assert a["s7comm.function"] == "plc_stop"
    assert a["network.protocol"] == "s7comm"
    assert a["source.ip"] == "127.0.5.11" and a["destination.ip"] == "127.0.5.20"
    assert a["labels.site"] == "test-site" and a["observer.name"] == "test-sensor"


@pytest.fixture()
def plant_site(tmp_path: Path) -> Path:
    """The site configuration of the plant in pcaps/baseline (see pcaps/README.md)."""
    site = tmp_path / "site.yml"
    site.write_text(
        "placeholders:\n"
        "  modbus_masters: [127.0.5.12]\n"
        "  hmi_hosts: [127.0.5.11]\n"
        "  opcua_clients: [127.0.5.13]\n"
        "  engineering_stations: []\n"
    )
    return site


def test_clean_plant_traffic_with_its_site_configuration(plant_site: Path) -> None:
    alerts = replay([PCAPS / "baseline" / "clean.pcap"], plant_site)
    # What remains is posture, not attack: the OPC UA server accepts anonymous sessions (the
    # site configuration does not list the historian as an anonymous client), and the HMI
    # (python-snap7) opens its S7 connection with a PG (programming device) TSAP.
    assert sorted({a["rule.name"] for a in alerts}) == [
        "OPC UA Anonymous Session From a New Client",
        "S7 Programming Device Connection From a Host Outside the Engineering Stations",
    ]
    without_site = {a["rule.name"] for a in replay([PCAPS / "baseline" / "clean.pcap"])}
    assert "Modbus Write From a Host Outside the Modbus Masters List" in without_site


@pytest.mark.parametrize(
    ("capture", "rule", "source"),
    [
        (
            "attack_new_host_write",
            "Modbus Write From a Host Outside the Modbus Masters List",
            "127.0.5.66",
        ),
        ("attack_opcua_write", "OPC UA Write From a Host Outside the OPC UA Clients", "127.0.5.67"),
        (
            "attack_opcua_write",
            "OPC UA Write or Call Without Security From a New Client",
            "127.0.5.67",
        ),
    ],
)
def test_attacks_on_the_plant_are_found(
    plant_site: Path, capture: str, rule: str, source: str
) -> None:
    alerts = replay([PCAPS / "baseline" / f"{capture}.pcap"], plant_site)
    hits = [a for a in alerts if a["rule.name"] == rule]
    assert [a["source.ip"] for a in hits] == [source]


def test_s7_program_transfer_captures(tshark: str) -> None:
    blocks = PCAPS / "s7comm" / "s7_blocks.pcap"
    fired = matches_by_rule(replay([blocks]))
    downloads = tshark_count(
        tshark, blocks, "s7comm.header.rosctr==1 && s7comm.param.func in {0x1a,0x1b,0x1c}"
    )
    uploads = tshark_count(
        tshark, blocks, "s7comm.header.rosctr==1 && s7comm.param.func in {0x1d,0x1e,0x1f}"
    )
    assert downloads and uploads
    assert fired["s7_program_download"] == downloads
    assert fired["s7_program_upload"] == uploads
    control = PCAPS / "s7comm" / "s7_control.pcap"
    fired = matches_by_rule(replay([control]))
    assert fired["s7_plc_stop"] == tshark_count(
        tshark, control, "s7comm.header.rosctr==1 && s7comm.param.func==0x29"
    )


@pytest.mark.parametrize(
    ("capture", "rule", "listing"),
    [
        (
            "iti__s7-1200-hmi.pcap",
            "S7comm-plus SetVariable From a Host Outside the Engineering Stations and HMIs",
            "hmi_hosts",
        ),
        (
            "iti__S7-1200-Uploading-OB1-TIAV12.pcap",
            "S7comm-plus Program Transfer From a Host Outside the Engineering Stations",
            "engineering_stations",
        ),
    ],
)
def test_s7comm_plus_writes_and_program_transfer(
    public_pcaps: Path, tmp_path: Path, capture: str, rule: str, listing: str
) -> None:
    """TIA Portal / HMI traffic to S7-1200s: alerts while the client is unlisted, none once
    the site lists it where it belongs."""
    pcap = public_pcaps / "s7comm-plus" / capture
    hits = [a for a in replay([pcap]) if a["rule.name"] == rule]
    assert hits
    assert {a["network.protocol"] for a in hits} == {"s7comm-plus"}
    clients = sorted({a["source.ip"] for a in hits})
    site = tmp_path / "site.yml"
    site.write_text(f"placeholders:\n  {listing}: {clients}\n")
    assert [a for a in replay([pcap], site) if a["rule.name"] == rule] == []


def test_modbus_attack_capture_fires_every_modbus_correlation(tshark: str) -> None:
    """pcaps/modbus/modbus_attack.pcap (pymodbus): each phase of the attack is one
    correlation; tshark confirms the traffic is what the correlation needs."""
    pcap = PCAPS / "modbus" / "modbus_attack.pcap"
    fields = subprocess.run(
        [
            tshark,
            "-r",
            str(pcap),
            "-Y",
            "tcp.dstport==502 && mbtcp",
            "-T",
            "fields",
            "-e",
            "modbus.func_code",
            "-e",
            "mbtcp.unit_id",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\n")
    codes = {line.split("\t")[0] for line in fields if line}
    units = {line.split("\t")[1] for line in fields if line}
    assert len(codes) >= 12 and len(units) >= 10
    assert tshark_count(tshark, pcap, "tcp.srcport==502 && modbus.exception_code") >= 20
    assert (
        tshark_count(
            tshark, pcap, "tcp.dstport==502 && modbus.func_code==5 && modbus.reference_num==3"
        )
        >= 20
    )
    alerts = replay([pcap])
    fired = matches_by_rule(alerts)
    for rule in (
        "modbus_function_code_sweep",
        "modbus_unit_id_sweep",
        "modbus_exception_burst",
        "modbus_register_brute_force",
        "modbus_identification_then_write",
    ):
        assert fired[rule] >= 1, rule
    brute = next(
        a for a in alerts if a["rule.name"] == "Modbus Brute Force Writes to One Coil or Register"
    )
    assert brute["modbus.address"] == 3 and brute["icsmon.correlation.value"] == 20
    assert (
        brute["icsmon.correlation.key"]
        == "source.ip=127.0.0.8|destination.ip=127.0.0.9|modbus.unit_id=1|modbus.address=3"
    )
    assert len(brute["icsmon.alert.event_ids"]) == 20
