"""How documents of one finding fold together: the one merge rule for every place that
keeps findings (the embedded store here; the centre's assessment merges the same way).

A sensor re-sends a finding while it still observes it, and starts its first-seen anew
after a restart: the merged finding has the earliest first seen, the latest last seen, the
union of the evidence (bounded) and the details of the latest document.
"""

from __future__ import annotations

from typing import Any

from sensor.timestamps import parse_timestamp

MAX_EVIDENCE = 20


def _epoch(value: Any) -> float:
    return parse_timestamp(value) or 0.0


def merge_finding(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    newer = _epoch(new.get("finding.last_seen")) >= _epoch(old.get("finding.last_seen"))
    merged = {**old, **new} if newer else {**new, **old}
    firsts = [d["finding.first_seen"] for d in (old, new) if d.get("finding.first_seen")]
    lasts = [d["finding.last_seen"] for d in (old, new) if d.get("finding.last_seen")]
    if firsts:
        merged["finding.first_seen"] = min(firsts, key=_epoch)
    if lasts:
        merged["finding.last_seen"] = merged["@timestamp"] = max(lasts, key=_epoch)
    evidence = list(old.get("finding.evidence.event_ids") or [])
    for eid in new.get("finding.evidence.event_ids") or []:
        if eid not in evidence:
            evidence.append(eid)
    merged["finding.evidence.event_ids"] = evidence[:MAX_EVIDENCE]
    return merged
