"""Live capture on a veth pair inside a network namespace the test creates
(``tests/support/netns.py``; the ``netns`` fixture comes from ``tests/sensor/conftest.py``).

One end (``vsend``) gets the captures from ``pcaps/modbus/`` pushed into it by tcpreplay;
the other (``vsense``) is read by ``sensor.live.LiveSource`` or by ``icsmon sense``. Both
ends live in the namespace, so nothing touches the host's interfaces, and deleting the
namespace removes them. Needs root (namespaces, AF_PACKET), ``ip`` and ``tcpreplay``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sensor.capture import CaptureReader
from sensor.live import CaptureError, LiveSource
from tests.support import REPO
from tests.support.netns import (
    ICSMON,
    SEND,
    SENSE,
    WAIT,
    capture_ready,
    capture_running,
    comparable,
    iface_index,
    in_ns,
    queue_drained,
    run,
    tcpreplay,
    wait_on_child,
)

CAPTURES = sorted((REPO / "pcaps" / "modbus").glob("*.pcap"))
BIN = Path(sys.executable).parent

pytestmark = pytest.mark.live


def _frames(path: Path) -> list[bytes]:
    return [data for _, _, data in CaptureReader(path)]


def _write_pcap(path: Path, frames: list[bytes]) -> None:
    with path.open("wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        for i, frame in enumerate(frames):
            f.write(struct.pack("<IIII", 1_800_000_000, i, len(frame), len(frame)) + frame)


# A child that captures with LiveSource until SIGINT and writes what it saw as a pcap.
CAPTURE_CHILD = r"""
import json, signal, struct, sys
from sensor.live import LiveSource
iface, out, bpf, mode, snaplen = sys.argv[1:6]
source = LiveSource(iface, bpf or None, int(snaplen), ring=mode == "ring")
signal.signal(signal.SIGINT, lambda *_: source.stop())
timestamps = []
with open(out, "wb") as f:
    f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, source.linktype))
    for ts, linktype, data in source:
        timestamps.append(ts)
        sec = int(ts)
        f.write(struct.pack("<IIII", sec, int((ts - sec) * 1e6), len(data), len(data)) + data)
report = {"stats": source.stats(), "mode": source.mode, "first_ts": timestamps[:1]}
print(json.dumps({**report, "sorted": timestamps == sorted(timestamps)}))
"""


def _live_capture(
    ns: str,
    tmp_path: Path,
    files: list[Path],
    bpf: str = "",
    mode: str = "ring",
    snaplen: int = 65535,
) -> tuple[list[bytes], dict]:
    """Replay ``files`` into vsend while a LiveSource child reads vsense; its frames and report."""
    out = tmp_path / "live.pcap"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen(
        in_ns(ns, sys.executable, "-c", CAPTURE_CHILD, SENSE, str(out), bpf, mode, str(snaplen)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        ifindex = iface_index(ns, SENSE)
        wait_on_child("the capture socket", lambda: capture_ready(ns, ifindex), proc)
        started = time.time()
        tcpreplay(ns, *files)
        wait_on_child("the capture queue to drain", lambda: queue_drained(ns, ifindex), proc)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=WAIT)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stderr
    report = json.loads(stdout)
    assert report["mode"] == mode
    report["started"] = started
    return _frames(out), report


def _ipv4(frames: list[bytes]) -> list[bytes]:
    return [f for f in frames if f[12:14] == b"\x08\x00" or f[12:14] == b"\x81\x00"]


# -- LiveSource itself ---------------------------------------------------------------------


MODES = pytest.mark.parametrize("mode", ["ring", "recvmsg"])


@MODES
def test_live_source_delivers_the_replayed_frames_byte_for_byte(
    netns: str, tmp_path: Path, mode: str
) -> None:
    sent = [f for path in CAPTURES for f in _frames(path)]
    got, report = _live_capture(netns, tmp_path, CAPTURES, mode=mode)
    assert _ipv4(got) == sent
    stats = report["stats"]
    assert stats["kernel_drops"] == 0
    assert stats["packets"] == len(got)
    assert stats["bytes"] == sum(map(len, got))
    # Kernel receive timestamps: in order, and from this run (the capture files are older).
    assert report["sorted"]
    assert report["first_ts"][0] >= report["started"] - 1


# A child that opens a LiveSource, sends UDP datagrams to itself over the namespace's
# loopback, stops, and prints the frames it read (what was queued is drained on stop).
LOOPBACK_CHILD = r"""
import json, socket, sys, time
from sensor.live import LiveSource
iface, mode, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
source = LiveSource(iface, "udp port 9999", ring=mode == "ring")
with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
    for i in range(count):
        udp.sendto(b"icsmon-%04d" % i, ("127.0.0.1", 9999))
time.sleep(0.2)
source.stop()
frames = [data.hex() for _, _, data in source]
print(json.dumps({"linktype": source.linktype, "frames": frames, "stats": source.stats()}))
"""


@pytest.mark.parametrize("iface", ["lo", "any"])
def test_loopback_and_any_give_each_packet_once_alike_in_both_modes(netns: str, iface: str) -> None:
    """The loopback shows every packet twice (going out, coming in): one is kept, as libpcap
    does; on ``any`` the frames carry a Linux cooked header made from the socket's address.
    The memory-mapped ring (sensor/ring.py) and recvmsg give the same bytes."""
    run("ip", "-n", netns, "link", "set", "lo", "up")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    seen = {}
    for mode in ("ring", "recvmsg"):
        child = subprocess.run(
            in_ns(netns, sys.executable, "-c", LOOPBACK_CHILD, iface, mode, "20"),
            capture_output=True, text=True, env=env, timeout=WAIT,
        )  # fmt: skip
        assert child.returncode == 0, child.stderr
        report = json.loads(child.stdout)
        frames = [bytes.fromhex(f) for f in report["frames"]]
        assert report["linktype"] == (113 if iface == "any" else 1)
        payloads = [f[-11:] for f in frames]
        assert payloads == [b"icsmon-%04d" % i for i in range(20)], (mode, payloads)
        assert report["stats"]["packets"] == 20
        # the link-level header (Ethernet, or cooked from the socket's address) and the size;
        # each run's datagrams differ in IP id and source port
        header = 16 if iface == "any" else 14
        seen[mode] = [(f[:header], len(f)) for f in frames]
    assert seen["ring"] == seen["recvmsg"]


@MODES
def test_bpf_filter_runs_in_the_kernel(netns: str, tmp_path: Path, mode: str) -> None:
    path = REPO / "pcaps" / "modbus" / "modbus_polling.pcap"
    frames = _frames(path)
    # Requests only: TCP payload towards port 502 (hand-computed from the file).
    expected = [
        f
        for f in frames
        if struct.unpack_from("!H", f, 36)[0] == 502 and len(f) > 14 + 20 + (f[46] >> 4) * 4
    ]
    assert 0 < len(expected) < len(frames)
    got, report = _live_capture(
        netns, tmp_path, [path], "tcp dst port 502 and (tcp[tcpflags] & tcp-push != 0)", mode
    )
    assert got == expected
    # Filtered in the kernel: the socket never queued the others.
    assert report["stats"]["kernel_packets"] == len(expected)


@MODES
def test_vlan_tags_reach_the_decoder(netns: str, tmp_path: Path, mode: str) -> None:
    """Hand-built edge case: 802.1Q-tagged copies of real frames. Where the NIC strips the
    tag (VLAN offload), LiveSource puts it back from PACKET_AUXDATA."""
    tagged = [
        f[:12] + struct.pack("!HH", 0x8100, 42) + f[12:]
        for f in _frames(REPO / "pcaps" / "modbus" / "modbus_writes.pcap")
    ]
    path = tmp_path / "vlan.pcap"
    _write_pcap(path, tagged)
    got, _ = _live_capture(netns, tmp_path, [path], mode=mode)
    assert _ipv4(got) == tagged


FLAP_CHILD = r"""
import json, sys
from sensor.live import CaptureError, LiveSource
source = LiveSource(sys.argv[1], ring=sys.argv[2] == "ring")
frames, error = [], None
try:
    for _, _, data in source:
        frames.append(data.hex())
except CaptureError as exc:
    error = str(exc)
print(json.dumps({"frames": frames, "error": error, "stats": source.stats()}))
"""


@MODES
def test_link_down_and_up_is_survived_and_removal_ends_capture(netns: str, mode: str) -> None:
    path = REPO / "pcaps" / "modbus" / "modbus_polling.pcap"
    proc = subprocess.Popen(
        in_ns(netns, sys.executable, "-c", FLAP_CHILD, SENSE, mode),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
    )
    try:
        ifindex = iface_index(netns, SENSE)
        wait_on_child("the capture socket", lambda: capture_ready(netns, ifindex), proc)
        tcpreplay(netns, path)
        run("ip", "-n", netns, "link", "set", SENSE, "down")
        wait_on_child("the link to go down", lambda: capture_running(netns, ifindex, 0), proc)
        run("ip", "-n", netns, "link", "set", SENSE, "up")
        wait_on_child("delivery to resume", lambda: capture_running(netns, ifindex, 1), proc)
        tcpreplay(netns, path)
        # No wait for the reader here: what was received before the interface went away is
        # still delivered, then the capture ends with the error.
        run("ip", "-n", netns, "link", "del", SEND)  # takes its peer, vsense, with it
        stdout, stderr = proc.communicate(timeout=WAIT)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stderr
    report = json.loads(stdout)
    assert report["error"] == f"interface '{SENSE}' disappeared during capture"
    assert report["stats"]["link_errors"] >= 1
    assert "waiting for the link" in stderr
    got = _ipv4([bytes.fromhex(h) for h in report["frames"]])
    assert got == _frames(path) * 2


@MODES
def test_snaplen_cuts_frames_and_counts_them(netns: str, tmp_path: Path, mode: str) -> None:
    path = REPO / "pcaps" / "modbus" / "modbus_identification.pcap"
    sent = _frames(path)
    got, report = _live_capture(netns, tmp_path, [path], mode=mode, snaplen=80)
    assert got == [f[:80] for f in sent]
    assert report["stats"]["truncated"] == sum(len(f) > 80 for f in sent) > 0


def test_missing_interface_is_one_clear_error() -> None:
    with pytest.raises(CaptureError, match=r"^no such network interface: 'icsmon-nope0'$"):
        LiveSource("icsmon-nope0")


def test_invalid_filter_is_one_clear_error() -> None:
    if os.geteuid() != 0:
        pytest.skip("opening a packet socket needs root")
    with pytest.raises(CaptureError, match=r"^invalid BPF filter 'tcp port': .*syntax error"):
        LiveSource("lo", "tcp port")


def _without_net_raw(*argv: str) -> subprocess.CompletedProcess[str]:
    if os.geteuid() != 0 or not shutil.which("setpriv"):
        pytest.skip("needs root and setpriv to drop CAP_NET_RAW")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run(
        ["setpriv", "--bounding-set", "-net_raw", "--inh-caps", "-net_raw", *argv],
        capture_output=True,
        text=True,
        timeout=WAIT,
        env=env,
    )


def test_no_permission_is_one_clear_error() -> None:
    code = "from sensor.live import LiveSource, CaptureError\ntry:\n    LiveSource('lo')\nexcept CaptureError as e:\n    print(e)\n"
    out = _without_net_raw(sys.executable, "-c", code)
    assert out.stdout.strip() == (
        "no permission to capture on 'lo': live capture needs root or CAP_NET_RAW"
    ), out.stderr


# -- icsmon sense --------------------------------------------------------------------------


def test_sense_cli_errors_are_one_line() -> None:
    missing = run(
        ICSMON, "sense", "--iface", "icsmon-nope0", "--no-rules", "--sink", "none", check=False
    )
    assert missing.returncode != 0
    assert missing.stderr.strip().splitlines() == [
        "error: no such network interface: 'icsmon-nope0'"
    ]
    denied = _without_net_raw(ICSMON, "sense", "--iface", "lo", "--no-rules", "--sink", "none")
    assert denied.returncode != 0
    assert "Traceback" not in denied.stderr
    assert denied.stderr.strip().splitlines() == [
        "error: no permission to capture on 'lo': live capture needs root or CAP_NET_RAW"
    ]


def test_sense_emits_the_same_events_as_replay(netns: str) -> None:
    common = ["--events", "--format", "jsonl", "--no-rules", "--sink", "none", "--observer", "t"]
    replayed = run(ICSMON, "replay", *map(str, CAPTURES), *common)
    expected = comparable(replayed.stdout)
    assert len(expected) > 40  # every capture contributes transactions

    proc = subprocess.Popen(
        in_ns(netns, ICSMON, "sense", "--iface", SENSE, "--bpf", "tcp port 502", *common),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        ifindex = iface_index(netns, SENSE)
        wait_on_child("icsmon sense to listen", lambda: capture_ready(netns, ifindex), proc)
        tcpreplay(netns, *CAPTURES)
        wait_on_child(
            "icsmon sense to read every frame", lambda: queue_drained(netns, ifindex), proc
        )
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=WAIT)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr
    assert comparable(stdout) == expected


def test_sense_stops_cleanly_on_sigterm_when_idle(netns: str) -> None:
    proc = subprocess.Popen(
        in_ns(netns, ICSMON, "sense", "--iface", SENSE, "--no-rules", "--sink", "none"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        ifindex = iface_index(netns, SENSE)
        wait_on_child("icsmon sense to listen", lambda: capture_ready(netns, ifindex), proc)
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=WAIT)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr
