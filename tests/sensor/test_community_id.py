"""Community ID v1 computed from raw addresses agrees with the reference implementation."""

from __future__ import annotations

import ipaddress

import pytest
from communityid import CommunityID, FlowTuple

from sensor.flows import community_id


@pytest.mark.parametrize(
    ("src", "dst", "sport", "dport"),
    [
        ("10.0.0.5", "10.0.0.10", 49152, 502),
        ("192.168.1.200", "10.0.0.1", 102, 40000),  # the larger address first: order swaps
        ("10.0.0.1", "10.0.0.1", 5000, 502),  # same address: ports decide
        ("fd00::5", "fd00::1", 33000, 4840),
        ("2001:db8::1", "fe80::2", 4840, 4840),
    ],
)
def test_matches_reference(src: str, dst: str, sport: int, dport: int) -> None:
    ref = CommunityID().calc(FlowTuple.make_tcp(src, dst, sport, dport))
    raw = community_id(
        ipaddress.ip_address(src).packed, ipaddress.ip_address(dst).packed, sport, dport
    )
    assert raw == ref
    assert (
        community_id(
            ipaddress.ip_address(dst).packed, ipaddress.ip_address(src).packed, dport, sport
        )
        == ref
    )
