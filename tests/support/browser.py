"""Debian's chromium driven by playwright, for the dashboard tests: launch it, serve the app,
sign in, take screenshots."""

from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


def need_browser() -> None:
    missing = None
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing = "playwright (pip install playwright)"
    if not Path(CHROMIUM).exists():
        missing = "chromium (apt-get install -y chromium)"
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"{missing} is not installed")
        pytest.skip(f"{missing} is not installed")


def launch(pw: Any) -> Any:
    """Debian's chromium, headless, from a ``sync_playwright()`` context."""
    return pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)


def serve(app: Any) -> tuple[Any, threading.Thread, str]:
    """The app served by uvicorn on a free loopback port in a thread: (server, thread, url).
    Stop it with ``server.should_exit = True`` and ``thread.join()``."""
    import uvicorn

    from tests.support.modbus_live import free_port

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:  # start-up, not a timed assertion
        if not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    return server, thread, f"http://127.0.0.1:{port}"


def login(page: Any, url: str, token: str, lang: str = "zh") -> None:
    """Sign in to the posture view with ``token``, in ``lang`` (zh or en), from a clean
    session; returns once the tabs are drawn."""
    page.goto(url + "/")
    page.evaluate(f"localStorage.setItem('icsmon.lang', '{lang}')")
    page.evaluate("sessionStorage.clear()")
    page.reload()
    page.fill("#token", token)
    page.click("#login-form button[type=submit]")
    page.wait_for_selector("#tabs a")


def shot(page: Any, out_dir: Path, name: str) -> None:
    """A full-page screenshot ``out_dir/name.png``, from the top."""
    page.evaluate("window.scrollTo(0, 0)")  # the sticky header stays at the top of the image
    page.wait_for_timeout(400)
    page.screenshot(path=str(out_dir / f"{name}.png"), full_page=True)
