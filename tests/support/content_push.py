"""What the content-push tests share: the province's control plane (signing keys, an isolated
pipeline on the real Kafka with its topics, the publisher the dashboard pushes through) and
the flags of an ``icsmon sense`` listening on that control channel. The browser's part
(serve, sign in, screenshots) is tests/support/browser.py."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support.pipeline import Pipe, drop_pipe, make_pipe, require_services


@dataclass
class ControlPlane:
    pipe: Pipe
    publisher: Any  # pipeline.control_kafka.ControlPublisher, signing with the province's key
    public_key: Path  # what a sensor is given (--control-key)

    def sense_args(self, site: str, observer: str, organization: str) -> list[str]:
        """The ``icsmon sense`` flags of a sensor shipping to this pipeline and taking its
        control messages (its environment is ``pipe.env``)."""
        return [
            "--sink",
            "kafka",
            "--control-key",
            str(self.public_key),
            "--site",
            site,
            "--observer",
            observer,
            "--org",
            organization,
        ]


@contextmanager
def control_plane(folder: Path) -> Iterator[ControlPlane]:
    """Keys, topics and a publisher on the real Kafka; everything dropped afterwards."""
    from pipeline import control
    from pipeline.control import Signer
    from pipeline.control_kafka import ControlPublisher
    from pipeline.indexer import setup

    require_services()
    control.generate_keys(folder / "province.key", folder / "sensor.pub")
    pipe = make_pipe(folder)
    setup(pipe.cfg)
    publisher = ControlPublisher(pipe.cfg, Signer.from_file(folder / "province.key"))
    try:
        yield ControlPlane(pipe, publisher, folder / "sensor.pub")
    finally:
        publisher.close()
        drop_pipe(pipe)
