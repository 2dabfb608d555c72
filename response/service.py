"""The response desk: one object holding the state, the policy, the calendar and the query
back end, with the incidents, notices and campaigns built on them."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from pipeline.query import QueryBackend
from response.campaigns import Campaigns
from response.content import Content
from response.content_push import ContentPushes
from response.db import ResponseDB, Viewer
from response.incidents import Incidents, OrgLike
from response.notices import Notices
from response.policy import Policy, load_policy
from response.warnings import Warnings
from response.workdays import Calendar, load_calendar


class Response:
    def __init__(
        self,
        state_path: str | Path,
        backend: QueryBackend,
        policy: Policy | None = None,
        calendar: Calendar | None = None,
    ) -> None:
        self.db = ResponseDB(state_path)
        self.policy = policy or load_policy()
        self.calendar = calendar or load_calendar()
        self.backend = backend
        self.incidents = Incidents(self.db, self.policy, self.calendar, backend)
        self.notices = Notices(self.db, self.policy, self.calendar, backend, self.incidents)
        self.campaigns = Campaigns(self.db, self.policy, backend)
        self.warnings = Warnings(self.db, self.policy, backend, self.campaigns)
        self.content = Content(self.db)
        self.pushes = ContentPushes(self.db, self.content)

    def close(self) -> None:
        self.db.close()

    def command(
        self, who: Viewer, incident_id: str, org: OrgLike, now: float | None = None
    ) -> dict[str, Any]:
        """The emergency command view of one incident: per affected enterprise its sites,
        the notices (tasks) given to it with their state and answers; and the clock."""
        now = time.time() if now is None else now
        inc = self.incidents.detail(who, incident_id, org, now)
        notices = [
            self.notices.detail(who, n["id"], now)
            for n in self.db.rows(
                "SELECT id FROM notice WHERE subject_kind='incident' AND subject_ref=? "
                "ORDER BY number",
                (incident_id,),
            )
            if who.sites is None or set(self._sites(n["id"])) & who.sites
        ]
        enterprises: dict[str, dict[str, Any]] = {}
        for a in inc["affected"]:
            e = enterprises.setdefault(
                a["enterprise"],
                {
                    "id": a["enterprise"],
                    "name": a["enterprise_name"],
                    "name_zh": a["enterprise_name_zh"],
                    "city": a["city"],
                    "industry": a["industry"],
                    "sites": [],
                    "tasks": [],
                },
            )
            e["sites"].append(a["site"])
        for n in notices:
            e = enterprises.get(n["enterprise"])
            if e is not None:
                e["tasks"].append(
                    {
                        k: n[k]
                        for k in (
                            "id",
                            "number",
                            "title",
                            "state",
                            "deadline",
                            "overdue",
                            "escalation",
                            "actions",
                            "replies",
                            "submitted_at",
                        )
                    }
                )
        for e in enterprises.values():
            states = [t["state"] for t in e["tasks"]]
            e["state"] = (
                "no-notice"
                if not states
                else "overdue"
                if any(t["overdue"] for t in e["tasks"])
                else min(states, key=_progress)
            )
        return {
            "incident": {
                k: inc[k]
                for k in (
                    "id",
                    "number",
                    "title",
                    "state",
                    "grade",
                    "discovered_at",
                    "assignees",
                    "transitions",
                )
            },
            "clock": inc["clock"],
            "enterprises": list(enterprises.values()),
            "generated": now,
        }

    def _sites(self, notice_id: str) -> list[str]:
        import json

        row = self.db.one("SELECT sites FROM notice WHERE id=?", (notice_id,))
        return json.loads(row["sites"]) if row else []


_ORDER = ("issued", "rejected", "acknowledged", "in-progress", "submitted", "verified", "closed")


def _progress(state: str) -> int:
    """The least advanced task state stands for the enterprise."""
    return _ORDER.index(state) if state in _ORDER else 0


class Background:
    """The response desk's periodic work while the posture server runs: escalate overdue
    notices, verify the notices the telemetry confirms (findings, advisories), and look for
    campaigns over the last window of alerts."""

    def __init__(
        self, desk: Response, org: Any, *, escalate_s: float = 60.0, campaigns_s: float = 600.0
    ) -> None:
        import threading

        self.desk = desk
        self.org = org  # a callable returning the current registry
        self.escalate_s = escalate_s
        self.campaigns_s = campaigns_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def run_once(self, now: float | None = None, campaigns: bool = True) -> dict[str, Any]:
        now = time.time() if now is None else now
        out: dict[str, Any] = {
            "escalated": self.desk.notices.escalate(now),
            "verified": self.desk.notices.auto_verify(now),
        }
        if campaigns:
            window = self.desk.policy.campaign_window_s
            out["campaigns"] = self.desk.campaigns.detect(self.org(), now - 2 * window, now, now)
        return out

    def start(self) -> None:
        import logging
        import threading

        log = logging.getLogger("icsmon.response")

        def loop() -> None:
            last_campaigns = 0.0
            while not self._stop.wait(self.escalate_s):
                now = time.time()
                due = self.campaigns_s > 0 and now - last_campaigns >= self.campaigns_s
                try:
                    self.run_once(now, campaigns=due)
                except Exception:  # keep going after a store outage
                    log.exception("response background pass failed")
                if due:
                    last_campaigns = now

        self._thread = threading.Thread(target=loop, name="response-background", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=10)
