"""The posture API's security: a token on every route but health and the login page, wrong
tokens rate-limited, security headers on every answer, no secret in logs or error pages."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from posture.app import SECURITY_HEADERS, create_app
from tests.support.posture import Env, make_env

# Answer without a token on purpose: the health probe, and the dashboard's shell (the login
# page and its static files: no data, and a browser must load them before it has a token).
PUBLIC = {"/healthz", "/", "/static"}


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    e = make_env(tmp_path_factory.mktemp("posture-sec"), "store", n_alerts=200)
    yield e
    for fn in e.cleanup:
        fn()


def all_routes(client: TestClient) -> list[tuple[str, str]]:
    out = []
    for route in client.app.routes:  # type: ignore[attr-defined]
        path = getattr(route, "path", "")
        methods = getattr(route, "methods", None) or {"GET"}  # a Mount has none: GET into it
        for method in sorted(methods - {"HEAD", "OPTIONS"}):
            out.append((method, path))
    return out


def concrete(path: str) -> str:
    path = re.sub(r"\{hook_id\}", "1", path)
    path = re.sub(r"\{[a-z_]+\}", "x", path)
    return path + "/app.js" if path == "/static" else path


def test_every_route_but_health_and_the_login_page_needs_a_token(env: Env) -> None:
    routes = all_routes(env.client)
    assert len(routes) > 20 and ("GET", "/openapi.json") in routes
    assert {p for _, p in routes} >= PUBLIC
    for method, path in routes:
        url = concrete(path)
        bare = env.client.request(method, url, json={})
        if path in PUBLIC:
            assert bare.status_code == 200, (method, path)
            continue
        assert bare.status_code == 401, (method, path, bare.status_code)
        assert bare.headers["www-authenticate"] == "Bearer"
        assert (
            env.client.request(
                method, url, json={}, headers={"Authorization": "Basic eDp5"}
            ).status_code
            == 401
        )


def test_security_headers_on_every_kind_of_answer(env: Env) -> None:
    answers = [
        env.client.get("/"),
        env.client.get("/static/app.js"),
        env.client.get("/healthz"),
        env.client.get("/api/me"),
        env.client.get("/api/me", headers=env.h("province")),
        env.client.get("/nowhere"),
        env.client.get("/api/alerts/none", headers=env.h("province")),
    ]
    assert [a.status_code for a in answers] == [200, 200, 200, 401, 200, 404, 404]
    for resp in answers:
        for name, value in SECURITY_HEADERS.items():
            assert resp.headers.get(name) == value, (resp.url, name)
    csp = SECURITY_HEADERS["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in csp and "script-src 'self';" in csp
    assert (
        "unsafe-eval" not in csp
        and "'unsafe-inline'" not in csp.split("script-src")[1].split(";")[0]
    )


def test_wrong_tokens_are_rate_limited_per_address(tmp_path: Path, env: Env) -> None:
    app = create_app(env.backend, env.state, auth_failures=5, auth_window_s=60)
    client = TestClient(app)
    good = env.h("province")
    assert client.get("/api/me", headers=good).status_code == 200
    codes = [
        client.get("/api/me", headers={"Authorization": f"Bearer guess-{i}"}).status_code
        for i in range(8)
    ]
    assert codes == [401] * 5 + [429] * 3
    # Locked out: even a right token from that address waits, so guessing cannot go on.
    blocked = client.get("/api/me", headers=good)
    assert blocked.status_code == 429 and 0 < int(blocked.headers["retry-after"]) <= 61
    # Requests without any token are not guesses: they get 401, not 429.
    assert client.get("/api/me").status_code == 401
    # Another address is not affected.
    other = TestClient(app, client=("10.9.8.7", 5555))
    assert other.get("/api/me", headers=good).status_code == 200
    # The window passes: the address may try again.
    limiter = app.state.auth_limiter
    limiter.window_s = 0.01
    import time

    time.sleep(0.05)
    assert client.get("/api/me", headers=good).status_code == 200


def test_no_secret_in_logs_or_error_pages(env: Env, caplog: pytest.LogCaptureFixture) -> None:
    secret_guess = "Sup3rS3cretGuess-0123456789"
    token = env.tokens["province"]
    app = create_app(env.backend, env.state)

    @app.get("/api/boom")
    def boom() -> None:
        raise RuntimeError(f"database password hunter2 and token {token}")

    client = TestClient(app, raise_server_exceptions=False)
    caplog.set_level(logging.DEBUG)
    assert (
        client.get("/api/me", headers={"Authorization": f"Bearer {secret_guess}"}).status_code
        == 401
    )
    assert client.get("/api/me", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    resp = client.get(
        "/api/boom", headers={"Authorization": f"Bearer {token}"}, params={"api_key": "hunter2"}
    )
    assert resp.status_code == 500 and resp.json() == {"detail": "internal error"}
    for name in SECURITY_HEADERS:
        assert name in resp.headers
    # The server's records (httpx's own lines are the test client's, not the server's).
    text = "\n".join(r.getMessage() for r in caplog.records if not r.name.startswith("httpx"))
    assert "wrong bearer token" in text and "internal error on GET /api/boom (RuntimeError)" in text
    for secret in (secret_guess, token, "hunter2"):
        assert secret not in text
        assert secret not in resp.text
    bad = client.post(
        "/api/webhooks",
        headers={"Authorization": f"Bearer {token}"},
        json={"scope": "city:nowhere", "url": "https://u:hunter2@example/x?k=hunter2"},
    )
    assert bad.status_code in (404, 422) and "hunter2" not in bad.text
    assert "hunter2" not in "\n".join(
        r.getMessage() for r in caplog.records if not r.name.startswith("httpx")
    )
