"""The hash functions of ids, content ids and cache keys, taken from CPython's own modules:
the same digests as hashlib's, without hashlib, whose import loads OpenSSL's ``_hashlib``
(~2-4 ms of each process's start-up: the sensor's and its store writer's;
tests/cli/test_startup.py holds that a replay loads neither)."""

from __future__ import annotations

from _blake2 import blake2b  # what hashlib.blake2b is
from _sha1 import sha1  # what hashlib.sha1 is

try:
    from _sha256 import sha256  # what hashlib.sha256 is (3.11)
except ImportError:  # 3.12 on: _sha2, which hashlib serves
    from hashlib import sha256

__all__ = ["blake2b", "sha1", "sha256"]
