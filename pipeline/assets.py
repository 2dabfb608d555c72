"""What an asset record is made of, and how observations of one asset fold into it.

The one merge rule (``merge_asset``) for every place that keeps assets: the embedded store
and Elasticsearch (``pipeline.es``) both honour it, so ``icsmon assets`` answers the same on
either back end.
"""

from __future__ import annotations

from typing import Any

from pipeline.docs import dumps
from sensor.timestamps import parse_timestamp as to_epoch

MAX_SET_ITEMS = 1024  # items kept in an asset's merged list fields (peers, roles, ...)


def _empty(value: Any) -> bool:
    return value is None or value == "" or value == [] or value == {}


def as_list(value: Any) -> list:
    if value is None:
        return []
    if isinstance(value, list | tuple | set | frozenset):
        return list(value)
    return [value]


def union(old: Any, new: Any, cap: int = MAX_SET_ITEMS) -> list:
    """Set union of two list-or-scalar values, order of first appearance, capped."""
    out: list = []
    seen: set = set()
    for item in as_list(old) + as_list(new):
        try:
            key = (type(item), item)
            hash(key)
        except TypeError:  # dicts, lists: compared by their JSON
            key = (dict, dumps(item))
        if key in seen:
            continue
        seen.add(key)
        out.append(item)
        if len(out) >= cap:
            break
    return out


def merge_asset(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """Fold a new observation of an asset into the stored record.

    - list fields (``asset.roles``, ``asset.protocols``, ``asset.peers``, a list of MACs...)
      become set unions, in order of first appearance, capped at ``MAX_SET_ITEMS``;
    - ``asset.first_seen`` keeps the earliest, ``asset.last_seen`` the latest;
    - other fields (identity: ``ics.device.*``, ``host.mac``...) take the value of the newer
      observation (by ``asset.last_seen``) when it is not empty; an older observation only
      fills fields the record lacks.
    """
    old_last = to_epoch(old.get("asset.last_seen"))
    new_last = to_epoch(new.get("asset.last_seen"))
    new_is_newer = old_last is None or new_last is None or new_last >= old_last
    merged = dict(old)
    for key, value in new.items():
        current = merged.get(key)
        if key == "asset.first_seen":
            a, b = to_epoch(current), to_epoch(value)
            if current is None or (b is not None and (a is None or b < a)):
                merged[key] = value
        elif key == "asset.last_seen":
            a, b = to_epoch(current), to_epoch(value)
            if current is None or (b is not None and (a is None or b > a)):
                merged[key] = value
        elif isinstance(value, list | tuple | set | frozenset) or isinstance(current, list):
            merged[key] = union(current, value)
        elif _empty(value):
            continue
        elif _empty(current) or new_is_newer:
            merged[key] = value
    return merged
