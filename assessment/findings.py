"""The lifecycle of findings at the centre.

Sensors send each finding again while they still observe it (``detectors/findings.py``); a
sensor that restarts starts its first-seen anew. So the centre merges the documents of one
``finding.id``: earliest first seen, latest last seen, the union of their evidence (bounded),
the details of the latest. Its state is then:

- ``accepted``: a user accepted it, with a reason (kept in the assessment catalog, or in the
  finding's document in Elasticsearch; it stays accepted however often it is seen again,
  until reopened);
- ``resolved``: not observed for ``resolve_after`` (default 7 days: a weekly job, a
  maintenance window or a quiet shift must not resolve what is still there);
- ``open``: otherwise.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pipeline.findings import merge_finding
from sensor.timestamps import parse_timestamp

RESOLVE_AFTER_S = 7 * 86400.0
STATES = ("open", "resolved", "accepted")


def epoch(stamp: Any) -> float:
    """Seconds since the epoch of an ISO 8601 time (or a number)."""
    return parse_timestamp(stamp) or 0.0


def merge(docs: Iterable[Mapping[str, Any]]) -> dict[str, dict]:
    """One document per ``finding.id``, by the one merge rule (``pipeline.findings``)."""
    out: dict[str, dict] = {}
    for doc in docs:
        fid = doc.get("finding.id")
        if not fid:
            continue
        old = out.get(fid)
        out[fid] = dict(doc) if old is None else merge_finding(old, dict(doc))
    return out


def state(
    doc: Mapping[str, Any],
    now: float,
    acceptances: Mapping[str, Mapping[str, Any]] | None = None,
    resolve_after_s: float = RESOLVE_AFTER_S,
) -> dict:
    """The document with its ``finding.state`` (and the acceptance, when accepted)."""
    out = dict(doc)
    accepted = (acceptances or {}).get(str(doc.get("finding.id")))
    if accepted is None and doc.get("finding.state") == "accepted":
        # the decision kept in the finding's own document (Elasticsearch: assessment/catalog.py)
        accepted = {
            "reason": doc.get("finding.accepted.reason", ""),
            "user": doc.get("finding.accepted.user", ""),
            "at": doc.get("finding.accepted.at"),
        }
    if accepted is not None:
        out["finding.state"] = "accepted"
        out["finding.accepted.reason"] = accepted["reason"]
        out["finding.accepted.user"] = accepted["user"]
        out["finding.accepted.at"] = accepted["at"]
    elif now - epoch(doc.get("finding.last_seen")) > resolve_after_s:
        out["finding.state"] = "resolved"
    else:
        out["finding.state"] = "open"
    return out


def lifecycle(
    docs: Iterable[Mapping[str, Any]],
    now: float,
    acceptances: Mapping[str, Mapping[str, Any]] | None = None,
    resolve_after_s: float = RESOLVE_AFTER_S,
) -> list[dict]:
    """Merged findings with their states, newest last seen first."""
    merged = merge(docs).values()
    out = [state(d, now, acceptances, resolve_after_s) for d in merged]
    out.sort(key=lambda d: epoch(d.get("finding.last_seen")), reverse=True)
    return out
