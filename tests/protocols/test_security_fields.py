"""Fields the security assessment reads from the dissectors: the OPC UA server's certificate
(GetEndpoints, CreateSession and OpenSecureChannel answers) and the S7 CPU's protection level
(SZL 0x0132 / 0x0232 index 4), on captures made with asyncua and python-snap7, with tshark
as the oracle for the S7 record; hostile certificate bytes never raise."""

from __future__ import annotations

import datetime as dt
import shutil
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from sensor.engine import Engine, EngineConfig
from sensor.protocols import certificates
from sensor.timestamps import parse_timestamp
from tests.support import REPO

PCAPS = REPO / "pcaps"


def _events(path: Path) -> list[dict]:
    return [e for e in Engine(EngineConfig()).replay([path]) if e["event.action"] != "anomaly"]


def _cert(events: list[dict], service: str) -> dict:
    for e in events:
        if e.get("opcua.service") == service and "opcua.server_certificate.sha1" in e:
            return {
                k.rsplit(".", 1)[1]: v
                for k, v in e.items()
                if k.startswith("opcua.server_certificate.")
            }
    raise AssertionError(f"no server certificate on a {service} event")


def test_expired_self_signed_certificate_on_every_answer_that_carries_it() -> None:
    events = _events(PCAPS / "opcua" / "opcua_legacy_policies.pcap")
    seen = {s: _cert(events, s) for s in ("GetEndpoints", "OpenSecureChannel", "CreateSession")}
    for cert in seen.values():
        assert cert["self_signed"] is True
        assert cert["subject"] == cert["issuer"] == "CN=icsmon test server,O=icsmon test"
        # expired when the capture was made
        assert parse_timestamp(cert["not_after"]) < events[0]["@timestamp"]
        assert cert["key_bits"] == 2048 and cert["signature_hash"] == "sha256"
    assert len({c["sha1"] for c in seen.values()}) == 1  # one certificate, shown three times
    endpoints = next(e for e in events if e.get("opcua.service") == "GetEndpoints")
    assert endpoints["opcua.security_modes"] == ["None", "Sign", "SignAndEncrypt"]
    assert [u.rsplit("#", 1)[1] for u in endpoints["opcua.security_policy_uris"]] == [
        "None",
        "Basic256",
        "Basic128Rsa15",
    ]


def test_ca_issued_certificate_is_not_self_signed() -> None:
    events = _events(PCAPS / "opcua" / "opcua_ca_signed.pcap")
    cert = _cert(events, "GetEndpoints")
    assert cert["self_signed"] is False
    assert cert["issuer"] == "CN=icsmon test plant CA,O=icsmon test"
    when = events[0]["@timestamp"]  # a number: times are text only in written documents
    assert parse_timestamp(cert["not_before"]) <= when <= parse_timestamp(cert["not_after"])
    # the OPN answer's asymmetric header is readable even on a SignAndEncrypt channel
    assert _cert(events, "OpenSecureChannel")["sha1"] == cert["sha1"]


def test_no_certificate_no_fields() -> None:
    events = _events(PCAPS / "opcua" / "opcua_anonymous.pcap")
    assert not any(k.startswith("opcua.server_certificate.") for e in events for k in e)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_hostile_certificate_bytes_give_a_parse_error_never_an_exception(data: bytes) -> None:
    out = certificates.summarise(data)
    assert "sha1" in out
    assert "parse_error" in out or "not_after" in out


def test_a_truncated_real_certificate_and_a_chain() -> None:
    events = _events(PCAPS / "opcua" / "opcua_sign.pcap")
    assert _cert(events, "OpenSecureChannel")["self_signed"] is True
    key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "edge case")])
    now = dt.datetime.now(dt.UTC)
    der = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(7)
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
        .public_bytes(serialization.Encoding.DER)
    )
    assert certificates.summarise(der + der)["subject"] == "CN=edge case"  # a chain: the first
    assert "parse_error" in certificates.summarise(der[: len(der) // 2])


def _protection(path: Path) -> list[dict]:
    return [
        {k.rsplit(".", 1)[1]: v for k, v in e.items() if k.startswith("s7comm.protection.")}
        | {"szl": e["s7comm.szl.id"]}
        for e in _events(path)
        if "s7comm.protection.level" in e
    ]


def test_s7_protection_levels() -> None:
    assert _protection(PCAPS / "s7comm" / "s7_unprotected.pcap") == [
        {
            "key_switch_level": 1,
            "assigned_level": 0,
            "level": 1,
            "mode_switch": "run",
            "startup_switch": "wrst",
            "szl": 0x0232,
        },
    ]
    protected = _protection(PCAPS / "s7comm" / "s7_protected.pcap")
    assert [(p["szl"], p["level"], p["assigned_level"]) for p in protected] == [
        (0x0132, 3, 3),
        (0x0232, 3, 3),
    ]
    # python-snap7's stock stub (s7_identity.pcap: no record header) is not read as a record
    assert _protection(PCAPS / "s7comm" / "s7_identity.pcap") == []


@pytest.mark.skipif(not shutil.which("tshark"), reason="tshark not installed")
def test_s7_protection_matches_tshark() -> None:
    out = subprocess.run(
        [
            "tshark",
            "-r",
            str(PCAPS / "s7comm" / "s7_protected.pcap"),
            "-Y",
            "s7comm.szl.0132.0004.real",
            "-T",
            "fields",
            "-e",
            "s7comm.szl.0132.0004.key",
            "-e",
            "s7comm.szl.0132.0004.param",
            "-e",
            "s7comm.szl.0132.0004.real",
            "-e",
            "s7comm.szl.0132.0004.bart_sch",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    ours = _protection(PCAPS / "s7comm" / "s7_protected.pcap")[0]
    modes = {"1": "run", "2": "run-p", "3": "stop", "4": "mres"}
    assert [int(out[0]), int(out[1]), int(out[2]), modes[out[3]]] == [
        ours["key_switch_level"],
        ours["assigned_level"],
        ours["level"],
        ours["mode_switch"],
    ]
