"""How documents of one finding fold together: the one merge rule for every place that
keeps findings (the sensor's embedded store, the centre's Elasticsearch through the indexer,
the assessment's read of several documents of one id).

A sensor re-sends a finding while it still observes it, starts its first-seen anew after a
restart, and may deliver an older document late (from its spool after an outage). Whatever
the order of arrival, the merged finding has:

- the earliest ``finding.first_seen`` and the latest ``finding.last_seen`` (``@timestamp``
  follows the last seen);
- the details of the document seen last (list-valued details are unioned, capped);
- the union of the evidence, bounded: the first and the latest event ids
  (``MAX_EVIDENCE`` in all);
- the centre's decision (:data:`CENTRE_FIELDS`: the state a user set, accepted with a reason)
  from the stored document only. A sensor observes; it does not decide. Its documents say
  ``finding.state = open`` and carry no acceptance, and whatever a (careless or hostile)
  sensor puts there is ignored, so a decision taken at the centre is never undone by a
  sensor document that arrives after it, however new. Time-based states (resolved when not
  observed for a while) are not stored: readers derive them from ``finding.last_seen``
  (``assessment.findings``), so a late document can only ever move ``last_seen`` forward.
"""

from __future__ import annotations

from typing import Any

from sensor.timestamps import parse_timestamp

MAX_EVIDENCE = 20  # event ids kept per finding: the first half and the latest half
MAX_LIST = 64  # items kept in a list-valued detail (masters, client addresses, ...)
EVIDENCE = "finding.evidence.event_ids"
#: what only the centre writes (posture API, ``icsmon findings accept``): never a sensor
CENTRE_FIELDS = (
    "finding.state",
    "finding.accepted.reason",
    "finding.accepted.user",
    "finding.accepted.at",
)
OPEN = "open"


def _epoch(value: Any) -> float:
    return parse_timestamp(value) or 0.0


def _union(first: list, second: list, cap: int) -> list:
    out = list(first)
    for item in second:
        if item not in out:
            out.append(item)
    return out[:cap]


def bounded_evidence(ids: list) -> list:
    """At most ``MAX_EVIDENCE`` ids: the first half and the latest half of ``ids``."""
    if len(ids) <= MAX_EVIDENCE:
        return ids
    half = MAX_EVIDENCE // 2
    return ids[:half] + ids[-(MAX_EVIDENCE - half) :]


def from_sensor(doc: dict[str, Any]) -> dict[str, Any]:
    """A sensor's document as the centre takes it: without any decision it claims."""
    out = {k: v for k, v in doc.items() if k not in CENTRE_FIELDS}
    out["finding.state"] = OPEN
    return out


def merge_finding(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """``new`` (a sensor's document) folded into ``old`` (the kept one; may be empty)."""
    newer = _epoch(new.get("finding.last_seen")) >= _epoch(old.get("finding.last_seen"))
    incoming = from_sensor(new)
    merged = {**old, **incoming} if newer else {**incoming, **old}
    for key in set(old) & set(incoming):
        a, b = old[key], incoming[key]
        if key != EVIDENCE and isinstance(a, list) and isinstance(b, list):
            merged[key] = _union(b, a, MAX_LIST) if newer else _union(a, b, MAX_LIST)
    firsts = [d["finding.first_seen"] for d in (old, new) if d.get("finding.first_seen")]
    lasts = [d["finding.last_seen"] for d in (old, new) if d.get("finding.last_seen")]
    if firsts:
        merged["finding.first_seen"] = min(firsts, key=_epoch)
    if lasts:
        merged["finding.last_seen"] = merged["@timestamp"] = max(lasts, key=_epoch)
    # evidence in the order it was seen: the older document's first
    early, late = (old, new) if newer else (new, old)
    evidence = _union(list(early.get(EVIDENCE) or []), list(late.get(EVIDENCE) or []), 1 << 30)
    merged[EVIDENCE] = bounded_evidence(evidence)
    # the centre's decision: the kept document's, never the incoming one's
    for key in CENTRE_FIELDS:
        if key in old:
            merged[key] = old[key]
        else:
            merged.pop(key, None)
    merged.setdefault("finding.state", OPEN)
    return merged
