"""The control channel on the command line: keys made once, bad keys and settings are one
clear error line (a sensor, the posture server), the message types listed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.cli.test_cli import assert_clean_error, icsmon


def test_keygen_makes_a_pair_once(tmp_path: Path) -> None:
    key, pub = tmp_path / "province.key", tmp_path / "sensor.pub"
    proc = icsmon("control", "keygen", "--private", str(key), "--public", str(pub))
    assert proc.returncode == 0, proc.stderr
    assert key.stat().st_mode & 0o777 == 0o600 and b"PUBLIC KEY" in pub.read_bytes()
    before = key.read_bytes()
    again = icsmon("control", "keygen", "--private", str(key), "--public", str(pub))
    assert_clean_error(again, "province.key", "already exists")
    assert key.read_bytes() == before
    assert_clean_error(
        icsmon("control", "keygen", "--private", "/nonexistent/k", "--public", str(pub)),
        "/nonexistent/k",
    )


def test_the_types_a_sensor_can_be_asked() -> None:
    proc = icsmon("control", "types")
    assert proc.returncode == 0 and proc.stdout.startswith("evidence.request\t")


def test_a_sensors_control_key_needs_kafka(tmp_path: Path) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("not a key")
    assert_clean_error(
        icsmon("sense", "-i", "lo", "--sink", "store", "--control-key", str(junk)),
        "--control-key needs --sink kafka",
    )


@pytest.mark.skipif(os.geteuid() != 0, reason="opening the capture socket needs root")
def test_a_sensor_with_a_bad_control_key_stops_with_one_line(tmp_path: Path) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("not a key")
    env_store = tmp_path / "s.db"
    proc = icsmon(
        "sense", "-i", "lo", "--bpf", "tcp port 9", "--sink", "kafka", "--store", str(env_store),
        "--control-key", str(junk),
    )  # fmt: skip
    assert_clean_error(proc, "junk.pem", "not a PEM public key")


def test_the_posture_server_with_a_bad_signing_key_stops_with_one_line(tmp_path: Path) -> None:
    from pipeline.store import Store

    Store.open(tmp_path / "x.db").close()
    assert_clean_error(
        icsmon(
            "posture",
            "serve",
            "--store",
            str(tmp_path / "x.db"),
            "--control-key",
            str(tmp_path / "missing.key"),
        ),  # fmt: skip
        "missing.key",
        "cannot read",
    )


def test_a_hunt_request_names_its_rules_and_has_a_key(tmp_path: Path) -> None:
    proc = icsmon("control", "types")
    assert "hunt.request\t" in proc.stdout
    assert_clean_error(icsmon("control", "hunt", "--sensor", "s1"), "--rule")
    rule = tmp_path / "r.yml"
    rule.write_text("title: x\n")
    assert_clean_error(
        icsmon("control", "hunt", "--sensor", "s1", "--rule", str(rule)), "no signing key"
    )
    assert_clean_error(
        icsmon("control", "hunt", "--sensor", "s1", "--rule", str(tmp_path / "none.yml")),
        "none.yml",
    )
    junk = tmp_path / "junk.pem"
    junk.write_text("not a key")
    assert_clean_error(
        icsmon("control", "hunt", "--sensor", "s1", "--rule", str(rule), "--key", str(junk)),
        "junk.pem",
    )
    assert_clean_error(
        icsmon(
            "control", "hunt", "--sensor", "s1", "--rule-id", "x", "--since", "1h", "--until", "1d"
        ),
        "--until must be later",
    )
