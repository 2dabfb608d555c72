"""Detection content for the sensors: the province's package (watchlist and pushed Sigma
rules, versioned, sealed), refused when altered; per-rule central / local policy when
installed; and the watchlist matched by the sensor, in a replay and in a running
``icsmon sense`` on a veth pair inside a network namespace the test creates."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from detectors.content import ContentError, install_rules, load_package, parse_package, seal
from tests.response.captures import CAPTURES, sense_live, shifted
from tests.support.posture import Env, make_env
from tests.support.processes import icsmon

RID = "5f0c1a52-3c1e-4f3a-9d1e-7c2a0b9e6a11"
ATTACKER = "203.0.113.66"  # only written into files and into a namespace's veth pair
RULE = """title: Modbus write to the boiler setpoint
id: 5f0c1a52-3c1e-4f3a-9d1e-7c2a0b9e6a11
status: experimental
description: A write to holding register 100 (the boiler setpoint).
author: province SOC
logsource:
  product: ics
  service: modbus
detection:
  selection:
    modbus.function_code: 16
  condition: selection
level: high
tags:
  - attack.t0836
"""


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Any:
    e = make_env(tmp_path_factory.mktemp("content"), n_alerts=50)
    yield e
    e.close()


def package(env: Env) -> dict[str, Any]:
    r = env.client.get("/api/content", headers=env.h("province"))
    assert r.status_code == 200, r.text
    return r.json()


def test_the_package_follows_the_watchlist_and_pushed_rules(env: Env) -> None:
    v0 = package(env)["version"]
    bundle = {
        "type": "bundle",
        "id": "bundle--6f1f2b9a-4d0f-4b8e-9a55-3c2f6a1e0c11",
        "objects": [
            {
                "type": "indicator",
                "spec_version": "2.1",
                "id": "indicator--1f0b6a2e-9c0d-4a7b-8e3f-2d5c4b3a2e10",
                "created": "2026-01-01T00:00:00Z",
                "modified": "2026-01-01T00:00:00Z",
                "pattern": f"[ipv4-addr:value = '{ATTACKER}']",
                "pattern_type": "stix",
                "valid_from": "2026-01-01T00:00:00Z",
            }
        ],
    }
    r = env.client.post(
        "/api/watchlist/import", headers=env.h("province"), content=json.dumps(bundle)
    )
    assert r.json()["added"] == 1
    r = env.client.post(
        "/api/content/rules", headers=env.h("province"), json={"yaml": RULE, "policy": "local"}
    )
    assert r.status_code == 201, r.text
    assert (
        env.client.post(
            "/api/content/rules",
            headers=env.h("province"),
            json={"yaml": "title: [", "policy": "central"},
        ).status_code
        == 422
    )
    assert (
        env.client.post(
            "/api/content/rules",
            headers=env.h("province"),
            json={"yaml": RULE, "policy": "sometimes"},
        ).status_code
        == 422
    )
    pkg = package(env)
    assert pkg["version"] == v0 + 2
    assert [w["value"] for w in pkg["watchlist"]] == [ATTACKER]
    assert pkg["rules"][0]["policy"] == "local" and pkg["rules"][0]["yaml"] == RULE
    parsed = parse_package(pkg)
    assert parsed.version == v0 + 2 and parsed.entries[0].value == f"{ATTACKER}/32"
    assert env.client.get("/api/content", headers=env.h("city_a")).status_code == 404


def test_an_altered_package_is_refused(tmp_path: Path) -> None:
    pkg = seal(
        {
            "type": "icsmon.content",
            "version": 3,
            "issued_at": 1.0,
            "province": "sd",
            "watchlist": [{"id": "w1", "kind": "ipv4-addr", "value": ATTACKER}],
            "rules": [],
        }
    )
    good = tmp_path / "good.json"
    good.write_text(json.dumps(pkg))
    assert load_package(good).version == 3
    tampered = dict(pkg, watchlist=[{"id": "w1", "kind": "ipv4-addr", "value": "198.51.100.1"}])
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(tampered))
    with pytest.raises(ContentError, match="digest mismatch"):
        load_package(bad)
    unsealed = tmp_path / "unsealed.json"
    unsealed.write_text(json.dumps({k: v for k, v in pkg.items() if k != "sha256"}))
    with pytest.raises(ContentError, match="digest mismatch"):
        load_package(unsealed)
    # Through the command line: one error line naming the file, exit 2.
    r = subprocess.run(
        [
            *icsmon(),
            "replay",
            str(CAPTURES / "clean.pcap"),
            "--content",
            str(bad),
            "--sink",
            "none",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2 and f"{bad}: digest mismatch" in " ".join(r.stderr.split())
    assert "Traceback" not in r.stderr


def test_rule_policy_central_or_local_when_installed(tmp_path: Path) -> None:
    def pkg(version: int, policy: str, text: str = RULE) -> Any:
        return parse_package(
            seal(
                {
                    "type": "icsmon.content",
                    "version": version,
                    "issued_at": 0,
                    "province": "sd",
                    "watchlist": [],
                    "rules": [{"id": RID, "policy": policy, "yaml": text}],
                }
            )
        )

    rules = tmp_path / "rules"
    assert install_rules(pkg(1, "local"), rules)["written"] == [RID]
    path = rules / "central" / f"{RID}.yml"
    path.write_text(RULE.replace("level: high", "level: critical"))  # a local edit
    newer = RULE.replace("boiler setpoint", "boiler setpoint (v2)")
    assert install_rules(pkg(2, "local", newer), rules)["kept"] == [RID]
    assert "level: critical" in path.read_text()  # the local edit stays
    assert install_rules(pkg(3, "central", newer), rules)["overridden"] == [RID]
    assert path.read_text() == newer  # the province's version prevails
    empty = parse_package(
        seal(
            {
                "type": "icsmon.content",
                "version": 4,
                "issued_at": 0,
                "province": "sd",
                "watchlist": [],
                "rules": [],
            }
        )
    )
    assert install_rules(empty, rules)["removed"] == [RID] and not path.exists()
    # The installed rule loads in the sensor's rule engine.
    install_rules(pkg(5, "central"), rules)
    r = subprocess.run(
        [*icsmon(), "rules", "check", str(rules)], capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0, r.stdout + r.stderr


def write_package(path: Path) -> Path:
    path.write_text(
        json.dumps(
            seal(
                {
                    "type": "icsmon.content",
                    "version": 9,
                    "issued_at": time.time(),
                    "province": "sd",
                    "watchlist": [
                        {
                            "id": "wl-campaign",
                            "kind": "ipv4-addr",
                            "value": ATTACKER,
                            "level": "high",
                            "source": "campaign:cmp-1",
                        }
                    ],
                    "rules": [],
                }
            )
        )
    )
    return path


def test_replay_matches_the_watchlist(tmp_path: Path) -> None:
    pkg = write_package(tmp_path / "content.json")
    pcap = shifted(
        CAPTURES / "attack_new_host_write.pcap", tmp_path / "a.pcap", time.time(), rewrite=ATTACKER
    )
    r = subprocess.run(
        [
            *icsmon(),
            "replay",
            str(pcap),
            "--content",
            str(pkg),
            "--no-rules",
            "--sink",
            "none",
            "--format",
            "jsonl",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    alerts = [json.loads(x) for x in r.stdout.splitlines()]
    hits = [a for a in alerts if a["rule"]["id"] == "icsmon-watchlist"]
    assert hits and {a["icsmon"]["watchlist"]["value"] for a in hits} == {f"{ATTACKER}/32"}
    assert all(a["icsmon"]["content"]["version"] == 9 for a in hits)
    assert {a["source"]["ip"] for a in hits} == {ATTACKER}
    assert len(hits) == len({a["network"]["community_id"] for a in hits})  # once per flow
    clean = shifted(CAPTURES / "clean.pcap", tmp_path / "c.pcap", time.time())
    r = subprocess.run(
        [
            *icsmon(),
            "replay",
            str(clean),
            "--content",
            str(pkg),
            "--no-rules",
            "--sink",
            "none",
            "--format",
            "jsonl",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0 and "icsmon-watchlist" not in r.stdout


@pytest.mark.live
def test_a_running_sensor_matches_the_watchlist(tmp_path: Path) -> None:
    """``icsmon sense`` on a veth pair in a namespace of the test's own; the rewritten attack
    capture is pushed into the other end with tcpreplay."""
    pkg = write_package(tmp_path / "content.json")
    pcap = shifted(
        CAPTURES / "attack_new_host_write.pcap", tmp_path / "a.pcap", time.time(), rewrite=ATTACKER
    )
    alerts = sense_live(pkg, pcap, "s1")
    hits = [a for a in alerts if a["rule"]["id"] == "icsmon-watchlist"]
    assert hits and hits[0]["source"]["ip"] == ATTACKER
    assert hits[0]["observer"]["name"] == "s1"
    assert hits[0]["icsmon"]["content"]["version"] == 9
