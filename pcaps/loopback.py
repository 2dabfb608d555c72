"""Recording helpers shared by the capture scripts whose stacks cannot choose their source
address (c104's client, several DNP3 masters): the script runs in a network namespace of its
own, with only a loopback interface, so it may route freely and no other traffic on the
machine reaches the capture.

- ``enter_namespace()``: re-runs the calling script under ``unshare --net`` (once) and brings
  ``lo`` up inside;
- ``source_for(server, client)``: from now on, new connections to ``server`` leave from
  ``client`` (a local route with that preferred source; connections already open keep theirs);
- ``Tcpdump``: ``tcpdump -i lo --immediate-mode -B 8192 -U -n -s 0 -w FILE FILTER``, started
  once it says it listens, stopped with SIGINT; ``stop()`` returns the kernel's drop count
  (the scripts record again when it is not 0). Every make-script records with it.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

_MARK = "ICSMON_CAPTURE_NAMESPACE"


def enter_namespace() -> None:
    """Run the rest of this script in a new network namespace (needs root)."""
    if os.environ.get(_MARK) != "1":
        unshare = shutil.which("unshare")
        if not unshare:
            sys.exit("unshare not found (util-linux)")
        os.environ[_MARK] = "1"
        os.execv(unshare, [unshare, "--net", sys.executable, *sys.argv])
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)


def source_for(server: str, client: str) -> None:
    """New connections to ``server`` use ``client`` as their source address."""
    subprocess.run(
        ["ip", "route", "replace", "local", f"{server}/32", "dev", "lo", "src", client]
        + ["table", "local"],
        check=True,
    )


class Tcpdump:
    def __init__(self, path: Path, capture_filter: str) -> None:
        tcpdump = shutil.which("tcpdump")
        if not tcpdump:
            sys.exit("tcpdump not found: apt-get install tcpdump")
        self.proc = subprocess.Popen(
            [tcpdump, "-i", "lo", "--immediate-mode", "-B", "8192", "-U", "-n", "-s", "0"]
            + ["-w", str(path), capture_filter],
            stderr=subprocess.PIPE,
        )
        assert self.proc.stderr is not None
        line = self.proc.stderr.readline().decode(errors="replace")  # "listening on lo, ..."
        if "listening" not in line:
            self.proc.kill()
            sys.exit(f"tcpdump did not start: {line.strip()}")

    def stop(self, settle_s: float = 0.3) -> int:
        time.sleep(settle_s)  # let the last FIN/ACK reach the capture buffer
        self.proc.send_signal(signal.SIGINT)
        _, err = self.proc.communicate(timeout=10)
        summary = err.decode(errors="replace").strip().replace("\n", "; ")
        print("   ", summary)
        match = re.search(r"(\d+) packets? dropped by kernel", summary)
        return int(match.group(1)) if match else 0
