"""Fixtures the sensor tests share."""

from tests.support.netns import netns  # noqa: F401 - the namespace with a veth pair
