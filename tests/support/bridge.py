"""A TCP port of the test's own network namespace made reachable inside a namespace a test
created (a live sensor there ships to the real Kafka): a listener on 127.0.0.1:PORT inside
the namespace (a child process) and a connector here, joined by a Unix socket, which is not
namespaced. Bytes are relayed as they are; nothing leaves 127.0.0.0/8."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
from pathlib import Path

# The side inside the namespace: TCP 127.0.0.1:PORT -> the Unix socket.
_INSIDE = r"""
import socket, sys, threading
port, path = int(sys.argv[1]), sys.argv[2]

def pump(a, b):
    try:
        while data := a.recv(65536):
            b.sendall(data)
    except OSError:
        pass
    finally:
        for s in (a, b):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", port))
srv.listen(64)
print("ready", flush=True)
while True:
    conn, _ = srv.accept()
    out = socket.socket(socket.AF_UNIX)
    out.connect(path)
    for a, b in ((conn, out), (out, conn)):
        threading.Thread(target=pump, args=(a, b), daemon=True).start()
"""


def _pump(a: socket.socket, b: socket.socket) -> None:
    try:
        while data := a.recv(65536):
            b.sendall(data)
    except OSError:
        pass
    finally:
        for s in (a, b):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class Bridge:
    """``127.0.0.1:port`` inside namespace ``ns`` relayed to ``127.0.0.1:port`` here."""

    def __init__(self, ns: str, port: int, folder: Path) -> None:
        self.path = str(folder / f"bridge-{port}.sock")
        self.port = port
        self._server = socket.socket(socket.AF_UNIX)
        self._server.bind(self.path)
        self._server.listen(64)
        self._closed = threading.Event()
        threading.Thread(target=self._accept, name=f"bridge-{port}", daemon=True).start()
        # loopback is down in a new namespace
        subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True, timeout=30)
        self._inside = subprocess.Popen(
            ["ip", "netns", "exec", ns, sys.executable, "-c", _INSIDE, str(port), self.path],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        line = self._inside.stdout.readline() if self._inside.stdout else ""
        if line.strip() != "ready":
            self.close()
            raise RuntimeError(f"bridge into {ns} did not start: {self._inside.stderr}")

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                conn, _ = self._server.accept()
            except OSError:
                return
            out = socket.create_connection(("127.0.0.1", self.port))
            for a, b in ((conn, out), (out, conn)):
                threading.Thread(target=_pump, args=(a, b), daemon=True).start()

    def close(self) -> None:
        self._closed.set()
        if self._inside.poll() is None:
            self._inside.kill()
        self._inside.communicate()
        self._server.close()
        Path(self.path).unlink(missing_ok=True)
