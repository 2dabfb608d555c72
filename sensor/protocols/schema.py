"""What a dissector declares about its output: its anomaly codes (a closed enum) and, in
``fields``, the fields it emits with their types.

Everything else that names those codes or fields (the Sigma field list, the Elasticsearch
mapping, the baseline's identity fields, docs/schema.md) is derived from these declarations.
"""

from __future__ import annotations

import enum


class ProtocolAnomaly(enum.StrEnum):
    """Base of each protocol's ``Anomaly`` enum: a member is its kebab-case ``error.type``
    code and carries a one-line description (for docs/schema.md).

        class Anomaly(ProtocolAnomaly):
            MBAP_BAD_HEADER = "mbap-bad-header", "bytes that are not a valid MBAP header"
    """

    description: str

    def __new__(cls, code: str, description: str = "") -> ProtocolAnomaly:
        member = str.__new__(cls, code)
        member._value_ = code
        member.description = description
        return member
