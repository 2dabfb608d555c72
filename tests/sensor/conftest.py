"""Fixtures the sensor tests share."""

from tests.sensor.test_live import netns  # noqa: F401 - the namespace with a veth pair
