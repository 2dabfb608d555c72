"""What a sensor run asks of a detector (``icsmon/run.py`` calls these, in this order).

Every detector (the Sigma engine, the baseline, learning then detecting, the findings at the
sensor, the province's watchlist) has all of them; one with nothing to say for a call
answers with an empty list or None. mypy checks each detector a run loads against this.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

Event = dict[str, Any]


class Detector(Protocol):
    def process(self, event: Event) -> list[Event]:
        """One event (times as epoch seconds); the alerts it raises now."""
        ...

    def tick(self, now: float, /) -> list[Event]:
        """Time passes without traffic (a live port, epoch seconds): alerts held for
        de-duplication, or about silence (polling that stopped), that are due now."""
        ...

    def flush(self) -> list[Event]:
        """End of input: every alert still held."""
        ...

    def absence_summary(self) -> str | None:
        """A line for the end of a run that is not an alert (docs in detectors/README.md,
        "Absence"), or None."""
        ...

    def changed_findings(self, final: bool = False) -> list[Event]:
        """Finding documents new or changed since the last call."""
        ...

    @property
    def stats(self) -> Mapping[str, int]:
        """Counters for the run summary (``<detector>.<counter>``)."""
        ...
