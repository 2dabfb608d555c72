"""A module's logger made at its first message: the modules a replay and its store writer
load log only when something goes wrong, and ``logging`` (with traceback, string, weakref:
~2 ms of each process's start-up) is then never imported (tests/cli/test_startup.py)."""

from __future__ import annotations

from typing import Any


class LazyLogger:
    """``logging.getLogger(name)``, imported and looked up when a method is first read.
    ``log.error`` and the others are the logger's own bound methods: a record names its
    caller (function, line) as the logger's would."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.logger: Any = None

    def __getattr__(self, attr: str) -> Any:  # only for what __init__ did not set
        logger = self.logger
        if logger is None:
            import logging

            logger = self.logger = logging.getLogger(self.name)
        return getattr(logger, attr)
