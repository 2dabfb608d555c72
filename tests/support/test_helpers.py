"""Checks of the shared test helpers themselves: a helper that lost bytes or broke the schema
would let the tests built on it pass on a lossy view."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from pipeline.docs import flatten, nest
from sensor.protocols import opcua
from tests.support.opcua import DECODE_AS, replay_streams
from tests.support.store_samples import RULES, corpus


def test_samples_follow_the_schema() -> None:
    events, alerts, assets = corpus()
    assert len(events) == 400 and alerts and assets
    assert {a["rule.id"] for a in alerts} == {r[0] for r in RULES}
    for ev in events:
        for key in (
            "@timestamp",
            "event.kind",
            "event.id",
            "network.protocol",
            "source.ip",
            "destination.ip",
            "labels.site",
            "observer.name",
            "ics.operation",
        ):
            assert ev.get(key) not in (None, ""), key
        assert flatten(nest(ev)) == ev
    for al in alerts:
        assert al["event.kind"] == "alert"
        assert 0 <= al["event.severity"] <= 100
        assert al["threat.framework"] == "MITRE ATT&CK for ICS"
        assert all(t.startswith("T0") for t in al["threat.technique.id"])
    assert len({a["event.id"] for a in alerts}) == len(alerts)
    assert len({a["asset.id"] for a in assets}) == len(assets)


def test_stream_helper_sees_every_payload_byte_of_a_clean_capture(
    public_pcaps: Path, tshark: str
) -> None:
    """The helper's reassembled byte count equals tshark's sum of tcp.len for a capture with
    no retransmissions, so tests built on it are not testing a lossy view."""
    path = public_pcaps / "opcua" / "icsnpp__open62541_client-server_mainloop.pcap"
    fed = 0

    class Counting(opcua.Parser):
        def feed(self, to_server: bool, data: bytes, ts: float) -> list[dict]:
            nonlocal fed
            fed += len(data)
            return super().feed(to_server, data, ts)

    replay_streams(path, Counting, (4840,))
    out = subprocess.run(
        [tshark, "-r", str(path), "-Y", "tcp.port==4840", "-T", "fields", "-e", "tcp.len"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert fed == sum(int(x) for x in out.split()) > 0


@pytest.mark.parametrize("name", sorted(DECODE_AS))
def test_decode_as_ports_match_the_sources_list(public_pcaps: Path, name: str) -> None:
    assert name in (public_pcaps / "SOURCES.md").read_text(encoding="utf-8")
