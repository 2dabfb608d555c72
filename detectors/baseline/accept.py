"""Accepting a deviation: fold what a baseline alert saw back into the baseline.

Structural deviations (new asset, conversation, operation, address, node, value, MAC,
security setting) are accepted by learning the alert's triggering event, whose fields the
alert carries. Timing deviations change the learned timing: an accepted stopped or slowed
polling series is dropped (it is learned again from later traffic), an accepted flood raises
the learned maximum rate. Each acceptance is recorded under ``accepted`` in the file. An
alert that stands for several deviations (``icsmon.alert.count`` above 1: repeats of one rule
between one source and target within its window) carries its first one's event: accepting it
learns that one; the others alert again until accepted or learned.
"""

from __future__ import annotations

import copy
from typing import Any

from detectors.baseline.model import Baseline, BaselineError, finalize_rate, iso

_RELEARN = {
    "baseline-new-asset",
    "baseline-new-conversation",
    "baseline-new-operation",
    "baseline-new-write-address",
    "baseline-new-read-address",
    "baseline-new-node",
    "baseline-value-out-of-range",
    "baseline-mac-changed",
    "baseline-security-downgrade",
}


def accept_alert(
    baseline: Baseline, alert: dict[str, Any], accepted_at: float | None = None
) -> tuple[Baseline, str]:
    """(new baseline, one line saying what changed). ``alert`` is flat (dotted keys)."""
    from detectors.baseline.learner import BaselineLearner

    rule_id = alert.get("rule.id")
    if alert.get("rule.ruleset") != "baseline" or not isinstance(rule_id, str):
        raise BaselineError(
            f"alert {alert.get('event.id')!r} is not a baseline alert (rule {rule_id!r})"
        )
    if rule_id in _RELEARN:
        learner = BaselineLearner(base=baseline)
        window = dict(learner.doc["window"])
        learner.observe_accepted(alert)
        result = learner.result()
        result.doc["window"] = (
            window  # the learning window stays what it was; 'accepted' says the rest
        )
        what = f"learned the alert's event ({alert.get('icsmon.baseline.entry')})"
    elif rule_id == "baseline-identity-changed":
        result = Baseline(copy.deepcopy(baseline.doc))
        entry = str(alert.get("icsmon.baseline.entry") or "")
        name = entry.rsplit(".", 1)[-1]
        ip = alert.get("icsmon.baseline.asset")
        asset = result.assets.get(ip) if isinstance(ip, str) else None
        if asset is None or not name:
            raise BaselineError(
                f"alert {alert.get('event.id')!r}: asset {ip!r} is not in the baseline"
            )
        asset.setdefault("identity", {})[name] = alert.get("icsmon.baseline.observed")
        what = f"{ip} identity {name} = {alert.get('icsmon.baseline.observed')!r}"
    elif rule_id in ("baseline-polling-stopped", "baseline-polling-slowed"):
        result = Baseline(copy.deepcopy(baseline.doc))
        conv = result.conversations.get(str(alert.get("icsmon.baseline.conversation")))
        series = alert.get("icsmon.baseline.series")
        names: list[Any] = series if isinstance(series, list) else [series]
        if conv is None:
            raise BaselineError(
                f"alert {alert.get('event.id')!r}: its conversation is not in the baseline"
            )
        for name in names:
            (conv.get("polling") or {}).pop(str(name), None)
        what = f"dropped polling series {', '.join(map(str, names))}"
    elif rule_id == "baseline-request-flood":
        result = Baseline(copy.deepcopy(baseline.doc))
        conv = result.conversations.get(str(alert.get("icsmon.baseline.conversation")))
        count = alert.get("icsmon.baseline.count")
        if conv is None or not isinstance(count, int):
            raise BaselineError(
                f"alert {alert.get('event.id')!r}: no conversation or request count to accept"
            )
        rate = conv.setdefault(
            "rate",
            {"bucket_seconds": result.doc["settings"]["rate_bucket_seconds"], "histogram": {}},
        )
        rate["histogram"][str(count)] = rate["histogram"].get(str(count), 0) + 1
        finalize_rate(rate)
        what = f"learned {count} requests per bucket"
    else:
        raise BaselineError(f"alert {alert.get('event.id')!r}: rule {rule_id!r} cannot be accepted")
    record = {
        "alert_id": alert.get("event.id"),
        "rule_id": rule_id,
        "at": iso(accepted_at),
        "entry": alert.get("icsmon.baseline.entry"),
        "observed": alert.get("icsmon.baseline.observed"),
    }
    result.doc.setdefault("accepted", []).append({k: v for k, v in record.items() if v is not None})
    return result, what
