"""``icsmon sense --workers N``: capture processes in one PACKET_FANOUT group on a veth pair
inside a namespace the test creates (the fixture and helpers of ``test_live.py``).

What is held: the kernel hands both directions of every flow to one member and every frame
to exactly one; N workers give the events one process gives (the same as ``icsmon replay``);
a sweep whose flows land in different workers is still one alert (the detectors run over the
merged stream); the outputs are one sensor's (one heartbeat stream, counters summed).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from sensor.capture import CaptureReader
from tests.support import REPO
from tests.support.netns import (
    ICSMON,
    SENSE,
    WAIT,
    capture_ready,
    comparable,
    iface_index,
    in_ns,
    queue_drained,
    run,
    tcpreplay,
    wait_on_child,
)

CAPTURES = sorted((REPO / "pcaps" / "modbus").glob("*.pcap"))

pytestmark = pytest.mark.live

SWEEP_SERVERS = 16
SWEEP_RULE = "EtherNet/IP ListIdentity Sweep"


def _sweep_capture(path: Path, client: str = "127.0.0.1") -> Path:
    """A real cpppo/pycomm3-made EtherNet/IP session (pcaps/enip/enip_identity.pcap: its
    ListIdentity among others) repeated towards SWEEP_SERVERS servers: the server's address
    rewritten (and the client's, to ``client``; checksums recomputed by scapy), so each copy
    is a flow of its own."""
    from scapy.layers.inet import IP, TCP
    from scapy.utils import rdpcap, wrpcap

    server = "127.0.0.41"
    packets = []
    for i in range(SWEEP_SERVERS):
        address = f"127.0.0.{41 + i}"
        for original in rdpcap(str(REPO / "pcaps" / "enip" / "enip_identity.pcap")):
            p = original.copy()
            renamed = {server: address, "127.0.0.1": client}
            p[IP].src = renamed.get(p[IP].src, p[IP].src)
            p[IP].dst = renamed.get(p[IP].dst, p[IP].dst)
            del p[IP].chksum
            del p[TCP].chksum
            packets.append(p)
    wrpcap(str(path), packets)
    return path


def _flow_key(frame: bytes) -> tuple | None:
    """Both directions of an Ethernet/IPv4/TCP frame's connection give the same key."""
    if frame[12:14] != b"\x08\x00" or frame[23] != 6:
        return None
    ihl = (frame[14] & 0x0F) * 4
    a = (frame[26:30], frame[14 + ihl : 16 + ihl])
    b = (frame[30:34], frame[16 + ihl : 18 + ihl])
    return tuple(sorted((a, b)))


# Two members of one fan-out group, read by two threads until SIGINT: what each received.
FANOUT_CHILD = r"""
import json, signal, sys, threading
from sensor.live import open_fanout
sources = open_fanout(sys.argv[1], 2, ring=sys.argv[2] == "ring")
got = [[], []]
def read(i):
    for _, _, data in sources[i]:
        got[i].append(data.hex())
threads = [threading.Thread(target=read, args=(i,)) for i in range(2)]
for t in threads:
    t.start()
signal.signal(signal.SIGINT, lambda *_: [s.stop() for s in sources])
for t in threads:
    while t.is_alive():
        t.join(0.1)
groups = {s.fanout_group for s in sources}
print(json.dumps({"got": got, "groups": len(groups), "stats": [s.stats() for s in sources]}))
"""


@pytest.mark.parametrize("mode", ["ring", "recvmsg"])
def test_fanout_gives_each_flow_both_ways_to_one_member(
    netns: str, tmp_path: Path, mode: str
) -> None:
    files = [*CAPTURES, _sweep_capture(tmp_path / "sweep.pcap")]
    sent = [data for path in files for _, _, data in CaptureReader(path)]
    proc = subprocess.Popen(
        in_ns(netns, sys.executable, "-c", FANOUT_CHILD, SENSE, mode),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
    )
    try:
        ifindex = iface_index(netns, SENSE)
        wait_on_child("both sockets", lambda: _sockets(netns, ifindex) == 2, proc)
        tcpreplay(netns, *files)
        wait_on_child("the queues to drain", lambda: queue_drained(netns, ifindex), proc)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=WAIT)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stderr
    report = json.loads(stdout)
    assert report["groups"] == 1
    got = [[bytes.fromhex(h) for h in member] for member in report["got"]]
    ipv4 = [[f for f in member if f[12:14] == b"\x08\x00"] for member in got]
    # Every frame once, in one member or the other (none read twice, none lost).
    assert Counter(ipv4[0] + ipv4[1]) == Counter(sent)
    assert sum(s["kernel_drops"] for s in report["stats"]) == 0
    flows = [{_flow_key(f) for f in member} - {None} for member in ipv4]
    # Both directions of each connection went to one member, and the hash used both.
    assert not flows[0] & flows[1]
    assert flows[0] and flows[1]
    assert flows[0] | flows[1] == {_flow_key(f) for f in sent} - {None}


def _both_workers(ns: str, ifindex: int, proc: subprocess.Popen) -> list[int]:
    """The two capture workers' pids, once both are forked and listening. The parent opens
    the sockets before it forks, so two sockets alone do not yet mean two workers."""
    wait_on_child("both workers to listen", lambda: _sockets(ns, ifindex) == 2, proc)
    wait_on_child("both workers to be forked", lambda: len(_children(proc.pid)) == 2, proc)
    return _children(proc.pid)


def _children(pid: int) -> list[int]:
    return [int(p) for p in run("pgrep", "-P", str(pid), check=False).stdout.split()]


def _sockets(ns: str, ifindex: int) -> int:
    from tests.support.netns import packet_sockets

    return sum(r["iface"] == ifindex and r["proto"] == 0x0003 for r in packet_sockets(ns))


def _flat(line: str) -> dict:
    from pipeline.docs import flatten

    return flatten(json.loads(line))


def _sense_with_two_workers(
    netns: str,
    files: list[Path],
    args: list[str],
    stop: int = signal.SIGINT,
    icsmon: tuple[str, ...] = (ICSMON,),
) -> tuple[str, str]:
    """``icsmon sense --workers 2 ARGS`` on the namespace's port while FILES are replayed into
    it, stopped by STOP once the workers have read every frame: its stdout and stderr (it
    must exit 0). ``icsmon``: the command that runs it."""
    proc = subprocess.Popen(
        in_ns(netns, *icsmon, "sense", "--iface", SENSE, "--workers", "2", *args),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        ifindex = iface_index(netns, SENSE)
        wait_on_child("both workers to listen", lambda: _sockets(netns, ifindex) == 2, proc)
        assert capture_ready(netns, ifindex)
        tcpreplay(netns, *files)
        wait_on_child(
            "the workers to read every frame", lambda: queue_drained(netns, ifindex), proc
        )
        proc.send_signal(stop)
        stdout, stderr = proc.communicate(timeout=WAIT)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stderr
    return stdout, stderr


def test_sense_with_workers_matches_replay_and_is_one_sensor(netns: str, tmp_path: Path) -> None:
    files = [*CAPTURES, _sweep_capture(tmp_path / "sweep.pcap")]
    packets = sum(1 for path in files for _ in CaptureReader(path))
    common = ["--format", "jsonl", "--observer", "t", "--site", "s1"]
    replay_events = run(ICSMON, "replay", *map(str, files), "--events", "--sink", "none", *common)
    replay_alerts = run(ICSMON, "replay", *map(str, files), "--sink", "none", *common)
    out = tmp_path / "sensor.jsonl"
    stdout, stderr = _sense_with_two_workers(
        netns, files, ["--events", "--sink", "jsonl", "--out", str(out), *common]
    )
    assert "Traceback" not in stderr

    # The events are those of one process (each flow decoded whole in one worker).
    assert comparable(stdout) == comparable(replay_events.stdout)

    docs = [_flat(line) for line in out.read_text().splitlines()]
    alerts = [d for d in docs if d.get("event.kind") == "alert"]
    expected = [_flat(line) for line in replay_alerts.stdout.splitlines()]

    # The detectors ran over the merged stream: the same alerts as one process. Which
    # destination a correlation alert names depends on the order flows arrive in (and that
    # order differs between workers): rule and source are compared.
    def rules(found: list[dict]) -> Counter:
        return Counter((a["rule.id"], a["source.ip"]) for a in found)

    assert rules(alerts) == rules(expected)
    sweep = [a for a in alerts if a["rule.name"] == SWEEP_RULE]
    assert len(sweep) == 1 and sweep[0]["source.ip"] == "127.0.0.1"

    # ... though the sweep's flows were split between the workers.
    per_worker = [
        int(m.replace(",", ""))
        for m in re.findall(r"capture\.worker\d\.packets\s*│\s*([\d,]+)", stderr)
    ]
    assert len(per_worker) == 2 and min(per_worker) > 0, stderr
    assert sum(per_worker) >= packets

    # One sensor: one heartbeat stream (a start and a stop), counters of both workers summed.
    beats = [d for d in docs if d.get("event.dataset") == "icsmon.heartbeat"]
    reasons = [b["icsmon.sensor.reason"] for b in beats]
    assert reasons[0] == "start" and reasons[-1] == "stop" and reasons.count("stop") == 1
    assert {b["observer.name"] for b in beats} == {"t"}
    last = beats[-1]
    assert last["icsmon.sensor.packets"] >= packets
    assert last["icsmon.sensor.kernel_drops"] == 0
    assert last["icsmon.sensor.events"] == len(stdout.splitlines())
    assert last["icsmon.sensor.alerts"] == len(alerts)


def test_sense_with_workers_baseline_sees_talkers_across_workers(
    netns: str, tmp_path: Path
) -> None:
    """The baseline runs in the parent over the merged stream: a new client whose connections
    land in different workers (one per server of the sweep) is one new asset and each of its
    servers one new conversation, as in one process (``replay --baseline`` of the same
    traffic). The traffic is unknown to the baseline as a whole (learned from the Modbus
    captures): its checks do not depend on timing, which a replay at full speed changes."""
    baseline = tmp_path / "b.json"
    run(ICSMON, "baseline", "learn", *map(str, CAPTURES), "-o", str(baseline))
    files = [_sweep_capture(tmp_path / "sweep.pcap", client="127.0.0.30")]
    common = ["--format", "jsonl", "--observer", "t", "--site", "s1", "--baseline", str(baseline)]
    common += ["--no-rules"]
    replayed = run(ICSMON, "replay", *map(str, files), "--sink", "none", *common)
    out = tmp_path / "sensor.jsonl"
    _, stderr = _sense_with_two_workers(
        netns, files, ["--sink", "jsonl", "--out", str(out), *common]
    )

    def deviations(docs: list[dict]) -> Counter:
        """What each baseline alert is about (which event of a group came first, and so
        the alert's other fields, depends on the order flows arrive in)."""
        return Counter(
            (d["rule.id"], d.get("icsmon.baseline.asset"), d.get("icsmon.baseline.conversation"))
            for d in docs
            if d.get("rule.ruleset") == "baseline"
        )

    live = deviations([_flat(line) for line in out.read_text().splitlines()])
    expected = deviations([_flat(line) for line in replayed.stdout.splitlines()])
    assert live == expected
    assert sum(n for (rule, _, _), n in live.items() if rule == "baseline-new-conversation") == (
        SWEEP_SERVERS
    )
    # the client is new once, though its connections were split between the workers
    new_assets = [asset for (rule, asset, _) in live if rule == "baseline-new-asset"]
    assert live[("baseline-new-asset", "127.0.0.30", None)] == 1
    assert len(new_assets) == len(set(new_assets)) == SWEEP_SERVERS + 1
    per_worker = re.findall(r"capture\.worker\d\.packets\s*│\s*([\d,]+)", stderr)
    assert len(per_worker) == 2 and min(int(n.replace(",", "")) for n in per_worker) > 0, stderr


def test_sense_workers_errors_are_one_line() -> None:
    missing = run(
        ICSMON,
        "sense",
        "--iface",
        "icsmon-nope0",
        "--workers",
        "2",
        "--no-rules",
        "--sink",
        "none",
        check=False,
    )
    assert missing.returncode != 0
    assert missing.stderr.strip().splitlines() == [
        "error: no such network interface: 'icsmon-nope0'"
    ]
    zero = run(ICSMON, "sense", "--iface", "lo", "--workers", "0", check=False)
    assert zero.returncode != 0 and "Traceback" not in zero.stderr


def test_a_worker_that_dies_is_reported_and_the_others_take_its_flows(netns: str) -> None:
    common = ["--events", "--format", "jsonl", "--no-rules", "--sink", "none", "--observer", "t"]
    replayed = run(ICSMON, "replay", *map(str, CAPTURES), *common)
    proc = subprocess.Popen(
        in_ns(netns, ICSMON, "sense", "--iface", SENSE, "--workers", "2", *common),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        ifindex = iface_index(netns, SENSE)
        workers = _both_workers(netns, ifindex, proc)
        os.kill(workers[1], signal.SIGKILL)
        # its socket leaves the fan-out group with it: the kernel hashes over the rest
        wait_on_child(
            "the dead worker's socket to close", lambda: _sockets(netns, ifindex) == 1, proc
        )
        tcpreplay(netns, *CAPTURES)
        wait_on_child("the worker to read every frame", lambda: queue_drained(netns, ifindex), proc)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=WAIT)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0
    assert "Traceback" not in stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, stderr
    assert re.fullmatch(
        rf"error: capture worker [01] on '{SENSE}' ended unexpectedly \(exit code -9\)", errors[0]
    )
    assert comparable(stdout) == comparable(replayed.stdout)


def test_sense_with_workers_stores_the_events_it_prints(netns: str, tmp_path: Path) -> None:
    """The default sink with workers: each worker makes its events into the store's lines and
    the parent passes them on by the batch; the store holds exactly the events printed, and
    the alerts, after a SIGTERM."""
    from pipeline.docs import nest
    from pipeline.query import AlertFilter
    from pipeline.store import Store

    store = tmp_path / "s.db"
    common = ["--format", "jsonl", "--observer", "t", "--site", "s1"]
    stdout, stderr = _sense_with_two_workers(
        netns, CAPTURES, ["--events", "--store", str(store), *common], stop=signal.SIGTERM
    )
    printed = [json.loads(line) for line in stdout.splitlines()]
    assert len(printed) > 100
    with Store.open(store, readonly=True) as st:
        total, stored = st.search_events(AlertFilter(limit=100_000))
        alerts = st.search_alerts(AlertFilter(limit=100_000))[0]
    assert total == len(printed)
    assert sorted((nest(d) for d in stored), key=lambda d: d["event"]["id"]) == sorted(
        printed, key=lambda d: d["event"]["id"]
    )
    assert alerts == int(re.search(r"alerts\s*│\s*([\d,]+)", stderr).group(1).replace(",", ""))


# ``icsmon`` (the arguments after the first) with the embedded store's sink watched: how many
# read ends of workers' pipes it was given, how many events the parent passed on itself
# (``write_encoded``: a worker's frame that did not go into its own pipe); written to the
# first argument when the sensor's process ends.
WATCHED_STORE = r"""
import atexit, json, os, sys
from pipeline.store import process
seen = {"inputs": 0, "passed": 0}
parent, out = os.getpid(), sys.argv.pop(1)
opened, passed = process.WriterStore.__init__, process.WriterStore.write_encoded
def watch_open(self, *args, inputs=(), **options):
    seen["inputs"] += len(inputs)
    opened(self, *args, inputs=inputs, **options)
def watch_passed(self, frame, count):
    seen["passed"] += count
    passed(self, frame, count)
process.WriterStore.__init__ = watch_open
process.WriterStore.write_encoded = watch_passed
def report():
    if os.getpid() == parent:  # not in a forked worker
        with open(out, "w") as f:
            json.dump(seen, f)
atexit.register(report)
from icsmon.cli import main
sys.argv[0] = "icsmon"
main()
"""


def test_sense_with_workers_writes_the_store_from_the_workers(netns: str, tmp_path: Path) -> None:
    """Each worker writes its events' frames into its own pipe to the store's writer process
    (the bytes never pass through the parent): the parent opens the store with two inputs
    and passes on none of the events, which the store holds all of."""
    from pipeline.query import AlertFilter
    from pipeline.store import Store

    store, seen = tmp_path / "s.db", tmp_path / "seen.json"
    common = ["--format", "jsonl", "--observer", "t", "--site", "s1"]
    stdout, _ = _sense_with_two_workers(
        netns,
        CAPTURES,
        ["--events", "--store", str(store), *common],
        icsmon=(sys.executable, "-c", WATCHED_STORE, str(seen)),
    )
    printed = stdout.splitlines()
    assert len(printed) > 100
    assert json.loads(seen.read_text()) == {"inputs": 2, "passed": 0}
    with Store.open(store, readonly=True) as st:
        assert st.search_events(AlertFilter(limit=1))[0] == len(printed)


def test_workers_end_when_their_parent_is_killed(netns: str) -> None:
    """A SIGKILLed sensor leaves no capture worker behind: each worker holds only the write
    end of its pipe, so its next send (a state tick at the latest) fails and it exits.
    Before, the workers held the read ends too and blocked on a full pipe for ever."""
    proc = subprocess.Popen(
        in_ns(netns, ICSMON, "sense", "--iface", SENSE, "--workers", "2", "--no-rules",
              "--sink", "none", "--observer", "t"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    workers: list[int] = []
    try:
        ifindex = iface_index(netns, SENSE)
        workers = _both_workers(netns, ifindex, proc)
        tcpreplay(netns, *CAPTURES)  # traffic in flight when the parent dies
        proc.kill()
        proc.wait(timeout=WAIT)
        deadline = time.monotonic() + WAIT  # a bound on waiting, not a timing assertion
        while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not [pid for pid in workers if _alive(pid)], "capture workers outlived the sensor"
    finally:
        if proc.poll() is None:
            proc.kill()
        for pid in workers:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return False
    return fields[0] != "Z"
