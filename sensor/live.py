"""Live capture from a network interface (a mirrored/SPAN port or a TAP) on Linux.

``LiveSource(iface, bpf=None, snaplen=65535)`` is an iterable of frames
``(ts, linktype, data)``, the same shape the capture-file readers in ``sensor.capture``
yield: ``ts`` is the kernel's receive time (epoch seconds, nanosecond resolution),
``linktype`` a pcap ``LINKTYPE_*`` number (1 Ethernet, 101 raw IP, 113 Linux cooked) and
``data`` the frame, cut at ``snaplen``.

How it works: one ``AF_PACKET`` raw socket (stdlib ``socket``), bound to the interface, in
promiscuous mode (a mirror port carries traffic for other hosts' MAC addresses). Frames
arrive through a ``TPACKET_V3`` memory-mapped ring (``PACKET_RX_RING``, 64 MiB by default):
the kernel fills blocks of frames with their timestamps, and the loop reads them with no
system call per packet, which roughly doubles what one CPU can take in. Where the ring cannot
be set up (``ring=False``, or a kernel that refuses it) the socket is read with
``recvmsg`` instead, with the same receive-buffer size, ``SO_TIMESTAMPNS`` timestamps and
``PACKET_AUXDATA``. An optional BPF filter (tcpdump syntax) is compiled by libpcap through
scapy and attached in the kernel (``SO_ATTACH_FILTER``) before the socket is bound, so no
unfiltered packet is ever queued. scapy is used only for that compilation: the receive loop
touches plain bytes and builds no scapy objects. VLAN tags stripped by the NIC (VLAN
offload) are put back, as libpcap does, so the decoder sees the frame as it was on the wire. ``iface="any"`` captures every interface in cooked mode
(``LINKTYPE_LINUX_SLL``); there the filter sees packets from the IP header on, so only
network-level expressions (``tcp port 502``, ``host 10.0.0.5``) make sense.

Privileges: opening an ``AF_PACKET`` socket needs ``CAP_NET_RAW`` (root, or e.g.
``setcap cap_net_raw,cap_net_admin=eip`` on the Python interpreter); ``CAP_NET_ADMIN`` lets
the receive buffer grow beyond ``net.core.rmem_max`` (without it the buffer is capped
there, which is not an error). Everything else runs unprivileged: ``LiveSource(...,
user="icsmon")`` (``icsmon sense --user icsmon``), started as root, switches to that user
(its group and supplementary groups, then its uid) once the socket is open, the filter
attached and the ring mapped; and whatever the start (root, or a service user given
``CAP_NET_RAW`` as an ambient capability, see ``deploy/icsmon-sensor.service``), every
capability is then dropped (``capset`` to empty sets), so the process that decodes hostile
traffic can open no new raw socket and can never regain root. ``drop_privileges()`` does the
same for a caller that opens its socket itself.

Several processes on one port: ``open_fanout(iface, n)`` opens ``n`` sockets in one
``PACKET_FANOUT`` group with ``PACKET_FANOUT_HASH``: the kernel hands each packet to one
member chosen by its flow hash, which it computes symmetrically, so both directions of a
connection reach the same member (``sensor.workers`` gives each member a process). A socket
is held closed by a drop-all filter until it has joined the group, so no packet is read twice.

Stopping: ``stop()`` may be called from a signal handler (SIGINT/SIGTERM) or another
thread. It wakes the receive loop through a self-pipe; the loop then drains the packets
already queued in the ring or socket (so nothing that reached the sensor is lost), closes
the socket and ends the iteration. ``stats()`` keeps working after that and reports the final counts.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import logging
import mmap
import os
import select
import socket
import struct
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

from sensor import capture
from sensor.ring import block_frames

__all__ = ["CaptureError", "LiveSource", "Frame", "drop_privileges", "open_fanout"]

log = logging.getLogger(__name__)

Frame = capture.Frame

# Linux constants the socket module does not export (linux/if_packet.h, asm/socket.h).
ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_ADD_MEMBERSHIP = 1
PACKET_MR_PROMISC = 1
PACKET_STATISTICS = 6
PACKET_AUXDATA = 8
PACKET_RX_RING = 5
PACKET_VERSION = 10
TPACKET_V3 = 2
TP_STATUS_USER = 1
SO_ATTACH_FILTER = 26
SO_DETACH_FILTER = 27
PACKET_FANOUT = 18
PACKET_FANOUT_HASH = 0
PACKET_FANOUT_FLAG_UNIQUEID = 0x2000
PACKET_FANOUT_FLAG_DEFRAG = 0x8000
NEW_FANOUT_GROUP = -1  # LiveSource(fanout=...): start a group of its own (the kernel picks the id)
SO_TIMESTAMPNS = 35  # the cmsg type is the same number (SCM_TIMESTAMPNS)
SO_RCVBUFFORCE = 33
TP_STATUS_VLAN_VALID = 0x10
TP_STATUS_VLAN_TPID_VALID = 0x40
ARPHRD_ETHER = 1
ARPHRD_LOOPBACK = 772
ARPHRD_NONE = 65534  # tun devices: frames start at the IP header

LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101
LINKTYPE_LINUX_SLL = 113
DLT_RAW = 12  # libpcap's DLT for raw IP on Linux (LINKTYPE_RAW in files)

_TIMESPEC = struct.Struct("=qq")
# struct tpacket_auxdata: status, len, snaplen, mac, net, vlan_tci, vlan_tpid
_AUXDATA = struct.Struct("=IIIHHHH")
_SLL_HEADER = struct.Struct(">HHH8sH")
_VLAN_TAG = struct.Struct(">HH")
_ANC_SIZE = socket.CMSG_SPACE(_TIMESPEC.size) + socket.CMSG_SPACE(_AUXDATA.size)

DEFAULT_RCVBUF = 64 << 20  # bytes of ring or socket buffer: absorbs bursts while decoding
DRAIN_LIMIT = 1_000_000  # packets read after stop(): what was queued, not a live stream forever
RING_BLOCK = 1 << 20  # bytes per ring block
RING_FRAME = 2048  # nominal frame size the kernel wants to hear of (V3 packs frames tightly)
RING_RETIRE_MS = 50  # the kernel hands over a partly filled block after this long
TICK_S = 1.0  # how often on_tick is called
# struct tpacket_block_desc: block_status, num_pkts, offset_to_first_pkt, blk_len (bytes
# used, header included), from byte 8
_BLOCK = struct.Struct("=IIII")
# the frames of a block: sensor/ring.py


class CaptureError(capture.CaptureError):
    """Live capture cannot start or continue; the message is one line, fit for the user.

    A subclass of the file readers' error, so one ``except`` serves both kinds of source."""


_LINUX_CAPABILITY_VERSION_3 = 0x20080522
PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL = 47, 4


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    ]


def _clear_capabilities() -> None:
    """Empty the effective, permitted, inheritable and ambient capability sets of this thread
    (the only thread: call it before any other starts). Raises OSError when the kernel refuses."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)  # absent on old kernels: fine
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()  # all zero: no capability kept
    if libc.capset(ctypes.byref(header), data) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


def drop_privileges(user: str | None = None) -> None:
    """Give up what only opening the capture socket needed.

    With ``user`` and running as root: switch to that user's gid, supplementary groups and uid
    (real, effective and saved, so it cannot switch back). Running as someone else, ``user``
    must name that same account. Then every capability is dropped, so ``CAP_NET_RAW`` granted
    by a service manager does not outlive the socket. Raises :class:`CaptureError` with a clear
    message when the user does not exist or the switch is refused.
    """
    import pwd

    if user is not None:
        try:
            entry = pwd.getpwnam(user)
        except KeyError:
            raise CaptureError(f"--user {user}: no such user") from None
        if os.geteuid() == 0:
            try:
                os.setgroups(os.getgrouplist(entry.pw_name, entry.pw_gid))
                os.setresgid(entry.pw_gid, entry.pw_gid, entry.pw_gid)
                os.setresuid(entry.pw_uid, entry.pw_uid, entry.pw_uid)
            except OSError as exc:
                raise CaptureError(
                    f"--user {user}: cannot switch to that user ({exc.strerror})"
                ) from None
        elif os.geteuid() != entry.pw_uid:
            raise CaptureError(
                f"--user {user}: only root can switch users (running as uid {os.geteuid()})"
            )
    try:
        _clear_capabilities()
    except OSError as exc:
        raise CaptureError(
            f"cannot drop capabilities after opening the capture socket ({exc.strerror})"
        ) from None
    log.info("capture socket open; running as uid %d with no capabilities", os.geteuid())


class _SockFilter(ctypes.Structure):
    _fields_ = [
        ("code", ctypes.c_ushort),
        ("jt", ctypes.c_ubyte),
        ("jf", ctypes.c_ubyte),
        ("k", ctypes.c_uint32),
    ]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(_SockFilter))]


def compile_bpf(expression: str, dlt: int) -> bytes:
    """Compile a tcpdump-syntax filter with libpcap (via scapy) for link type ``dlt``.

    Returns the raw ``struct sock_filter`` array. Raises CaptureError when the
    expression is invalid or libpcap is missing.
    """
    try:
        from scapy.arch.common import compile_filter, free_filter
        from scapy.error import Scapy_Exception
    except ImportError as exc:  # scapy without libpcap support
        raise CaptureError(f"cannot compile BPF filter {expression!r}: {exc}") from None
    try:
        program = compile_filter(expression, linktype=dlt)
    except (Scapy_Exception, ImportError, OSError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CaptureError(f"invalid BPF filter {expression!r}: {reason}") from None
    try:
        size = program.bf_len * ctypes.sizeof(_SockFilter)
        return ctypes.string_at(ctypes.cast(program.bf_insns, ctypes.c_void_p), size)
    finally:
        free_filter(program)


def _attach_filter(sock: socket.socket, program: bytes) -> None:
    count = len(program) // ctypes.sizeof(_SockFilter)
    insns = (_SockFilter * count).from_buffer_copy(program)
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, bytes(_SockFprog(count, insns)))


_DROP_ALL = bytes(_SockFilter(0x06, 0, 0, 0))  # BPF_RET | BPF_K, 0: keep no byte


def _join_fanout(sock: socket.socket, group: int) -> int:
    """Join (or, with NEW_FANOUT_GROUP, start) a PACKET_FANOUT group; returns its id.

    PACKET_FANOUT_HASH picks the member by the packet's flow hash, which the kernel computes
    symmetrically (the same for both directions of a connection); DEFRAG reassembles IP
    fragments first, so every fragment of a datagram goes where its flow goes."""
    flags = PACKET_FANOUT_HASH | PACKET_FANOUT_FLAG_DEFRAG
    if group == NEW_FANOUT_GROUP:
        arg = (flags | PACKET_FANOUT_FLAG_UNIQUEID) << 16
    else:
        arg = (group & 0xFFFF) | flags << 16
    sock.setsockopt(SOL_PACKET, PACKET_FANOUT, struct.pack("=I", arg))
    joined = struct.unpack("=I", sock.getsockopt(SOL_PACKET, PACKET_FANOUT, 4))[0]
    return joined & 0xFFFF


def open_fanout(iface: str, count: int, bpf: str | None = None, **options: Any) -> list[LiveSource]:
    """``count`` sources on one interface, in one new fan-out group (flow hash): each packet
    reaches exactly one of them, and both directions of a flow the same one."""
    user = options.pop("user", None)  # privileges go once every socket is open
    sources: list[LiveSource] = []
    try:
        for _ in range(count):
            group = sources[0].fanout_group if sources else NEW_FANOUT_GROUP
            sources.append(LiveSource(iface, bpf, fanout=group, **options))
        if user is not None:
            drop_privileges(user)
    except CaptureError:
        for src in sources:
            src.close()
        raise
    return sources


def _link_of(iface: str) -> tuple[int, int, bool]:
    """(pcap linktype, libpcap DLT for the filter compiler, cooked?) for an interface."""
    # Cooked sockets hand the kernel filter the frame from the network header on, so their
    # filters are compiled as for raw IP (link-level primitives such as ``ether`` do not apply).
    if iface == "any":
        return LINKTYPE_LINUX_SLL, DLT_RAW, True
    try:
        with open(f"/sys/class/net/{iface}/type") as f:
            arphrd = int(f.read().strip())
    except (OSError, ValueError):
        arphrd = ARPHRD_ETHER  # no sysfs (unusual): Ethernet is by far the common case
    if arphrd in (ARPHRD_ETHER, ARPHRD_LOOPBACK):
        return LINKTYPE_ETHERNET, LINKTYPE_ETHERNET, False
    if arphrd == ARPHRD_NONE:
        return LINKTYPE_RAW, DLT_RAW, False
    # Other hardware types: let the kernel strip the link header and describe it in SLL.
    return LINKTYPE_LINUX_SLL, DLT_RAW, True


class LiveSource:
    """Frames ``(ts, linktype, data)`` from a live interface; see the module docstring."""

    def __init__(
        self,
        iface: str,
        bpf: str | None = None,
        snaplen: int = 65535,
        *,
        promisc: bool = True,
        rcvbuf: int = DEFAULT_RCVBUF,
        ring: bool = True,
        user: str | None = None,
        on_tick: Callable[[], None] | None = None,
        fanout: int | None = None,
    ) -> None:
        if snaplen < 64:
            raise CaptureError(f"snaplen {snaplen} is too small (at least 64 bytes)")
        self.iface = iface
        self.bpf = bpf
        self.snaplen = snaplen
        self.linktype, dlt, self._cooked = _link_of(iface)
        self._packets = 0
        self._bytes = 0
        self._kernel_packets = 0
        self._kernel_drops = 0
        self._truncated = 0
        self._link_errors = 0
        self._failure: CaptureError | None = None  # raised once the queue is drained
        self._stopping = False
        self._closed = False
        self._iterating = False
        self._ring: mmap.mmap | None = None
        self._ring_blocks = 0
        self._ring_block_size = 0
        self.fanout_group: int | None = None  # the PACKET_FANOUT group joined, if any
        # Called from the receive loop about every TICK_S, traffic or not (heartbeats, the
        # detectors that watch for silence): in the reading thread, between frames.
        self.on_tick = on_tick
        self._next_tick = 0.0

        if iface == "any":
            self._ifindex = 0
        else:
            try:
                self._ifindex = socket.if_nametoindex(iface)
            except OSError:
                raise CaptureError(f"no such network interface: {iface!r}") from None
        program = compile_bpf(bpf, dlt) if bpf else None

        kind = socket.SOCK_DGRAM if self._cooked else socket.SOCK_RAW
        try:
            # Protocol 0: the socket receives nothing until bound, so the filter is in
            # place before the first packet is queued. "any" cannot be bound (no ifindex 0
            # in bind): it listens from creation and is drained once the filter is on.
            proto = socket.htons(ETH_P_ALL) if self._ifindex == 0 else 0
            self._sock = socket.socket(socket.AF_PACKET, kind, proto)
        except PermissionError:
            raise CaptureError(
                f"no permission to capture on {iface!r}: live capture needs root or CAP_NET_RAW"
            ) from None
        except OSError as exc:
            raise CaptureError(
                f"cannot open a packet socket on {iface!r}: {exc.strerror}"
            ) from None
        try:
            self._setup(program, rcvbuf, promisc, ring, fanout)
        except OSError as exc:
            if self._ring is not None:
                self._ring.close()
            self._sock.close()
            raise CaptureError(f"cannot capture on {iface!r}: {exc.strerror or exc}") from None
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        if user is not None:
            try:
                drop_privileges(user)
            except CaptureError:
                self.close()
                raise

    def _setup(
        self, program: bytes | None, rcvbuf: int, promisc: bool, ring: bool, fanout: int | None
    ) -> None:
        sock = self._sock
        # A socket takes every packet itself from bind until it joins its fan-out group, and
        # the group's members take the same packets: read twice. Closed by a drop-all filter
        # until it has joined.
        first = _DROP_ALL if fanout is not None else program
        if first is not None:
            _attach_filter(sock, first)
        if not self._ifindex:
            sock.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                while True:  # "any": packets queued before the filter was attached
                    sock.recv(1)
        if not (ring and self._setup_ring(rcvbuf)):
            try:
                sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, rcvbuf)
            except PermissionError:  # no CAP_NET_ADMIN: the kernel caps at net.core.rmem_max
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            sock.setsockopt(SOL_PACKET, PACKET_AUXDATA, 1)
        if self._ifindex:
            sock.bind((self.iface, ETH_P_ALL))
        if fanout is not None:
            self.fanout_group = _join_fanout(sock, fanout)
            if program is not None:
                _attach_filter(sock, program)
            else:
                sock.setsockopt(socket.SOL_SOCKET, SO_DETACH_FILTER, 0)
        if promisc and self._ifindex:
            mreq = struct.pack("=iHH8s", self._ifindex, PACKET_MR_PROMISC, 0, b"")
            sock.setsockopt(SOL_PACKET, PACKET_ADD_MEMBERSHIP, mreq)
        sock.setblocking(False)

    def _setup_ring(self, size: int) -> bool:
        """Map a TPACKET_V3 receive ring of about ``size`` bytes; False if the kernel refuses."""
        if sys.byteorder != "little":
            return False  # sensor/ring.py reads the ring's headers as little-endian
        block = RING_BLOCK
        while block < self.snaplen + 4096:  # a block must hold the largest frame
            block <<= 1
        blocks = max(4, size // block)
        req = struct.pack(
            "=7I", block, blocks, RING_FRAME, block // RING_FRAME * blocks, RING_RETIRE_MS, 0, 0
        )
        try:
            self._sock.setsockopt(SOL_PACKET, PACKET_VERSION, TPACKET_V3)
            self._sock.setsockopt(SOL_PACKET, PACKET_RX_RING, req)
            self._ring = mmap.mmap(
                self._sock.fileno(),
                block * blocks,
                mmap.MAP_SHARED,
                mmap.PROT_READ | mmap.PROT_WRITE,
            )
        except OSError:
            return False  # e.g. no memory for the ring: the recvmsg path still works
        self._ring_blocks, self._ring_block_size = blocks, block
        return True

    @property
    def mode(self) -> str:
        """``ring`` (TPACKET_V3 memory map) or ``recvmsg``."""
        return "ring" if self._ring is not None else "recvmsg"

    # -- control -------------------------------------------------------------------------

    def stop(self) -> None:
        """Ask the capture loop to finish. Async-signal-safe: sets a flag, writes one byte."""
        self._stopping = True
        with contextlib.suppress(OSError):  # pipe full or closed: the flag is enough
            os.write(self._wake_w, b"x")

    def close(self) -> None:
        """Release the socket (statistics are read one last time first)."""
        if not self._closed:
            self._read_kernel_stats()
        self.release()

    def release(self) -> None:
        """Close this process's copy of the socket without reading the kernel's counters
        (which reset on every read): after a fork, for the copies another process reads."""
        if self._closed:
            return
        self._closed = True
        if self._ring is not None:
            self._ring.close()
        self._sock.close()
        os.close(self._wake_r)
        os.close(self._wake_w)

    def __enter__(self) -> LiveSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def stats(self) -> dict[str, int]:
        """Packets and bytes delivered, frames cut at snaplen, link-down reports from the
        kernel, and the kernel's own counts: packets passed to the socket and dropped."""
        self._read_kernel_stats()
        return {
            "packets": self._packets,
            "bytes": self._bytes,
            "truncated": self._truncated,
            "link_errors": self._link_errors,
            "ring": int(self._ring is not None),  # 1: memory-mapped ring, 0: recvmsg
            "kernel_packets": self._kernel_packets,
            "kernel_drops": self._kernel_drops,
        }

    def _read_kernel_stats(self) -> None:
        if self._closed:
            return
        try:
            raw = self._sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8)
        except OSError:
            return
        # The kernel resets its counters on every read: accumulate.
        received, dropped = struct.unpack("=II", raw)
        self._kernel_packets += received
        self._kernel_drops += dropped

    # -- the receive loop ----------------------------------------------------------------

    def __iter__(self) -> Iterator[Frame]:
        if self._closed:
            raise CaptureError(f"capture on {self.iface!r} is closed")
        if self._iterating:
            raise CaptureError(f"capture on {self.iface!r} is already being read")
        self._iterating = True
        try:
            yield from self._ring_frames() if self._ring is not None else self._recv_frames()
            if self._failure is not None:
                raise self._failure
        finally:
            self.close()

    def _ring_frames(self) -> Iterator[Frame]:
        ring = self._ring
        assert ring is not None
        nblocks, block_size = self._ring_blocks, self._ring_block_size
        linktype, cooked, snaplen = self.linktype, self._cooked, self.snaplen
        unpack_block = _BLOCK.unpack_from
        skip_outgoing = self._loopback_indexes()
        sock_fd = self._sock.fileno()
        poller = select.poll()
        poller.register(sock_fd, select.POLLIN)
        poller.register(self._wake_r, select.POLLIN)
        released = bytes(8)  # block_status = TP_STATUS_KERNEL, num_pkts = 0
        block = 0
        blocks_after_stop = 0  # blocks read once stop() was seen
        waits_after_stop = 0

        while True:
            base = block * block_size
            status, count, offset, used = unpack_block(ring, base + 8)
            if not status & TP_STATUS_USER:
                if self._stopping:
                    # A kernel-owned block with packets is the one being filled: those
                    # packets reached the sensor before stop(), and the kernel hands the
                    # block over within RING_RETIRE_MS. Wait for it (bounded), then end.
                    if count and waits_after_stop < 100:
                        waits_after_stop += 1
                        time.sleep(RING_RETIRE_MS / 1000 / 5)
                        continue
                    return
                for fd, revents in poller.poll(1000):
                    if fd == sock_fd and revents & select.POLLERR:
                        self._link_error(None)
                self._tick()
                continue
            if self._stopping:
                blocks_after_stop += 1
                if blocks_after_stop > nblocks:
                    return  # traffic keeps coming: what was queued at stop() has been read
            # one copy of the block's used part, read natively (sensor/ring.py)
            frames, nbytes, truncated = block_frames(
                ring[base : base + (used if offset <= used <= block_size else block_size)],
                offset,
                count,
                linktype,
                snaplen,
                cooked,
                skip_outgoing,
            )
            # Hand the block back (its frames are copies); a zero packet count marks it as not
            # being filled (above).
            ring[base + 8 : base + 16] = released
            block = block + 1 if block + 1 < nblocks else 0
            self._packets += len(frames)
            self._bytes += nbytes
            self._truncated += truncated
            yield from frames
            self._tick()

    def _recv_frames(self) -> Iterator[Frame]:
        sock = self._sock
        buf = bytearray(self.snaplen + 4)  # + room to re-insert a stripped VLAN tag
        view = memoryview(buf)
        recv = sock.recvmsg_into
        buffers = [view[: self.snaplen]]
        linktype = self.linktype
        cooked = self._cooked
        snaplen = self.snaplen
        unpack_ts = _TIMESPEC.unpack_from
        unpack_aux = _AUXDATA.unpack_from
        skip_outgoing = self._loopback_ifaces()
        poller = select.poll()
        poller.register(sock.fileno(), select.POLLIN)
        poller.register(self._wake_r, select.POLLIN)
        drained_after_stop = 0

        while True:
            # Drain everything queued before sleeping: poll() only when the queue is empty,
            # so a busy capture costs one syscall per packet.
            try:
                size, ancdata, flags, address = recv(buffers, _ANC_SIZE)
            except BlockingIOError:
                if self._stopping:
                    return
                self._tick()
                try:
                    poller.poll(1000)
                except InterruptedError:  # pragma: no cover - PEP 475 retries
                    pass
                self._tick()
                continue
            except OSError as exc:
                if self._stopping:
                    return
                self._link_error(exc.errno)
                continue
            if self._stopping:
                drained_after_stop += 1
                if drained_after_stop > DRAIN_LIMIT:
                    return

            # address: (ifname, ethertype, pkttype, hatype, hwaddr)
            if address[2] == socket.PACKET_OUTGOING and address[0] in skip_outgoing:
                continue  # loopback shows each packet twice (out and in): keep one, as libpcap

            ts = 0.0
            wire_len = size
            vlan = None
            for level, kind, cdata in ancdata:
                if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                    sec, nsec = unpack_ts(cdata)
                    ts = sec + nsec * 1e-9
                elif level == SOL_PACKET and kind == PACKET_AUXDATA:
                    status, wire_len, _, _, _, tci, tpid = unpack_aux(cdata)
                    if status & TP_STATUS_VLAN_VALID and not cooked:
                        vlan = _VLAN_TAG.pack(
                            tpid if status & TP_STATUS_VLAN_TPID_VALID else 0x8100, tci
                        )
            if wire_len > size:
                self._truncated += 1
            if cooked:
                hwaddr = address[4]
                data = (
                    _SLL_HEADER.pack(address[2], address[3], len(hwaddr), hwaddr[:8], address[1])
                    + view[:size]
                )
            elif vlan is not None and size >= 12:
                data = bytes(view[:12]) + vlan + view[12:size]
                if len(data) > snaplen:
                    data = data[:snaplen]
            else:
                data = bytes(view[:size])
            self._packets += 1
            self._bytes += len(data)
            if not self._packets & 0x3FF:  # a busy port never waits in poll()
                self._tick()
            yield ts, linktype, data

    def _tick(self) -> None:
        callback = self.on_tick
        if callback is None:
            return
        now = time.monotonic()
        if now >= self._next_tick:
            self._next_tick = now + TICK_S
            callback()

    def _link_error(self, code: int | None) -> None:
        """The kernel reported an error on the socket (the link went down, or away).

        A link that goes down and up again is survived: the kernel resumes delivery by itself.
        An interface that no longer exists (or was re-created under a new index, which this
        socket is not bound to) ends the capture: the loop drains what was already received,
        as on stop(), and then raises a CaptureError."""
        if code is None:
            code = self._sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)  # also clears it
        if not code:
            return
        self._link_errors += 1
        if self._ifindex:
            try:
                present = socket.if_nametoindex(self.iface) == self._ifindex
            except OSError:
                present = False
            if not present:
                self._fail(f"interface {self.iface!r} disappeared during capture")
                return
        if code not in (errno.ENETDOWN, errno.ENXIO, errno.ENODEV):
            self._fail(f"capture on {self.iface!r} failed: {os.strerror(code)}")
            return
        log.warning("capture on %s: %s; waiting for the link", self.iface, os.strerror(code))

    def _fail(self, message: str) -> None:
        if self._failure is None:
            self._failure = CaptureError(message)
        self._stopping = True

    def _loopback_indexes(self) -> frozenset[int]:
        indexes = []
        for name in self._loopback_ifaces():
            with contextlib.suppress(OSError):
                indexes.append(socket.if_nametoindex(name))
        return frozenset(indexes)

    def _loopback_ifaces(self) -> frozenset[str]:
        """Names of loopback interfaces: their outgoing copies are skipped."""
        names = []
        candidates = socket.if_nameindex() if self._ifindex == 0 else [(0, self.iface)]
        for _, name in candidates:
            try:
                with open(f"/sys/class/net/{name}/type") as f:
                    if int(f.read().strip()) == ARPHRD_LOOPBACK:
                        names.append(name)
            except (OSError, ValueError):
                continue
        return frozenset(names)
