"""Webhooks against a real HTTP receiver on 127.0.0.1: only new alerts at or above the
webhook's severity, only from its enterprise / city, each delivered once, signed, retried
with back-off after failures, given up after max attempts. Time is passed in, never slept."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from posture import seed
from posture.webhooks import WebhookDispatcher
from tests.support.posture import BACKEND_PARAMS, Env, make_env


class Receiver:
    """An HTTP server that fails the first ``fail_first`` requests per alert with 500."""

    def __init__(self, fail_first: int = 0) -> None:
        self.fail_first = fail_first
        self.requests: list[dict[str, Any]] = []
        self.attempts: dict[str, int] = {}
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers["Content-Length"]))
                doc = json.loads(body)
                alert_id = doc["event"]["id"]
                n = receiver.attempts[alert_id] = receiver.attempts.get(alert_id, 0) + 1
                ok = n > receiver.fail_first
                receiver.requests.append(
                    {
                        "path": self.path,
                        "body": body,
                        "doc": doc,
                        "ok": ok,
                        "headers": dict(self.headers),
                    }
                )
                self.send_response(204 if ok else 500)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.server_port}{path}"

    def delivered(self, path: str) -> list[str]:
        return [r["doc"]["event"]["id"] for r in self.requests if r["ok"] and r["path"] == path]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(params=BACKEND_PARAMS)
def env(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Env]:
    e = make_env(tmp_path, request.param, n_alerts=200)
    yield e
    e.close()


@pytest.fixture()
def receiver() -> Iterator[Receiver]:
    r = Receiver(fail_first=2)
    yield r
    r.close()


def new_alerts(env: Env, at: float, per_site: int = 2) -> list[dict[str, Any]]:
    """Fresh alerts (after the webhooks were made) at every site: one high, one low each."""
    out = []
    for i, site in enumerate(seed.registry_sites(env.registry)):
        for k in range(per_site):
            rule = seed.RULES[0] if k % 2 == 0 else seed.RULES[2]  # severity 73, then 21
            alert, _ = seed.make_alert(site, i, at + i + k / 10, rule, 50_000 + i * 10 + k, seed=5)
            out.append(alert)
    env.write([("alert", a) for a in out])
    return out


def test_new_high_alerts_reach_their_enterprise_and_city_once(env: Env, receiver: Receiver) -> None:
    city = env.principals["city_a"][1]
    ent = env.principals["ent_b_op"][1]
    made = {}
    for who, scope, path in (
        ("city_a", f"city:{city}", "/city"),
        ("ent_b_op", f"enterprise:{ent}", "/ent"),
    ):
        r = env.client.post(
            "/api/webhooks",
            headers=env.h(who),
            json={"scope": scope, "url": receiver.url(path), "min_severity": 70},
        )
        assert r.status_code == 201, r.text
        made[path] = r.json()
    disp = WebhookDispatcher(env.backend, env.state, max_attempts=5, backoff_s=10, timeout_s=5)
    base = time.time()  # after the webhooks were made
    t0 = base + 60
    assert disp.run_once(t0)["queued"] == 0  # the seeded (older) alerts are not news
    alerts = new_alerts(env, base + 30)
    rows = {r["site"]: r for r in seed.registry_sites(env.registry)}
    want_city = {
        a["event.id"]
        for a in alerts
        if a["event.severity"] >= 70 and rows[a["labels.site"]]["city"] == city
    }
    want_ent = {
        a["event.id"]
        for a in alerts
        if a["event.severity"] >= 70 and rows[a["labels.site"]]["enterprise"] == ent
    }
    assert want_city and want_ent

    first = disp.run_once(t0 + 1)
    assert first["queued"] == len(want_city) + len(want_ent)
    assert first["delivered"] == 0 and first["retrying"] == first["queued"]
    # Not due yet: back-off is 10 s after the first failure, then 20 s.
    assert disp.run_once(t0 + 5) == {"queued": 0, "delivered": 0, "retrying": 0, "failed": 0}
    second = disp.run_once(t0 + 12)
    assert second["retrying"] == first["queued"]
    third = disp.run_once(t0 + 40)
    assert third["delivered"] == first["queued"]
    assert disp.run_once(t0 + 400) == {"queued": 0, "delivered": 0, "retrying": 0, "failed": 0}

    assert sorted(receiver.delivered("/city")) == sorted(want_city)
    assert sorted(receiver.delivered("/ent")) == sorted(want_ent)
    for req in receiver.requests:
        secret = made[req["path"]]["secret"]
        expect = "sha256=" + hmac.new(secret.encode(), req["body"], hashlib.sha256).hexdigest()
        assert req["headers"]["X-Icsmon-Signature"] == expect
        assert req["doc"]["event"]["kind"] == "alert" and req["doc"]["labels"]["site"]
    deliveries = env.client.get(
        f"/api/webhooks/{made['/ent']['id']}/deliveries", headers=env.h("ent_b_op")
    ).json()
    assert {d["status"] for d in deliveries} == {"delivered"}
    assert {d["attempts"] for d in deliveries} == {3}


def test_delivery_gives_up_after_max_attempts(env: Env, tmp_path: Path) -> None:
    always_failing = Receiver(fail_first=10**6)
    try:
        r = env.client.post(
            "/api/webhooks",
            headers=env.h("ent_a_op"),
            json={
                "scope": "enterprise:ent-0001",
                "url": always_failing.url("/x"),
                "min_severity": 70,
            },
        )
        hook = r.json()["id"]
        disp = WebhookDispatcher(env.backend, env.state, max_attempts=3, backoff_s=1)
        base = time.time()
        new_alerts(env, base + 30, per_site=1)
        t = base + 60
        results = [disp.run_once(t + k * 100) for k in range(5)]
        assert results[0]["retrying"] > 0
        assert results[2]["failed"] == results[0]["retrying"]
        assert results[3]["retrying"] == results[4]["retrying"] == 0
        rows = env.client.get(f"/api/webhooks/{hook}/deliveries", headers=env.h("ent_a_op")).json()
        assert rows and all(d["status"] == "failed" and d["attempts"] == 3 for d in rows)
        assert all(d["last_error"] == "HTTP 500" for d in rows)
        per_alert = {a: n for a, n in always_failing.attempts.items()}
        assert set(per_alert.values()) == {3}
    finally:
        always_failing.close()


def test_webhook_rejects_non_http_urls(env: Env) -> None:
    r = env.client.post(
        "/api/webhooks",
        headers=env.h("province"),
        json={"scope": "enterprise:ent-0001", "url": "file:///etc/passwd"},
    )
    assert r.status_code == 422
