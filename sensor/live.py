"""Live capture from a network interface (a mirrored/SPAN port or a TAP) on Linux.

``LiveSource(iface, bpf=None, snaplen=65535)`` is an iterable of frames
``(ts, linktype, data)``, the same shape the capture-file readers in ``sensor.capture``
yield: ``ts`` is the kernel's receive time (epoch seconds, from ``SO_TIMESTAMPNS``),
``linktype`` a pcap ``LINKTYPE_*`` number (1 Ethernet, 101 raw IP, 113 Linux cooked) and
``data`` the frame, cut at ``snaplen``.

How it works: one ``AF_PACKET`` raw socket (stdlib ``socket``), bound to the interface, with
a large receive buffer and promiscuous membership (a mirror port carries traffic for other
hosts' MAC addresses). An optional BPF filter (tcpdump syntax) is compiled by libpcap through
scapy and attached in the kernel (``SO_ATTACH_FILTER``) before the socket is bound, so no
unfiltered packet is ever queued. scapy is used only for that compilation: the receive loop
touches plain bytes and builds no scapy objects. VLAN tags stripped by the NIC (VLAN
offload) are put back from ``PACKET_AUXDATA``, as libpcap does, so the decoder sees the
frame as it was on the wire. ``iface="any"`` captures every interface in cooked mode
(``LINKTYPE_LINUX_SLL``); there the filter sees packets from the IP header on, so only
network-level expressions (``tcp port 502``, ``host 10.0.0.5``) make sense.

Privileges: opening an ``AF_PACKET`` socket needs ``CAP_NET_RAW`` (root, or e.g.
``setcap cap_net_raw,cap_net_admin=eip`` on the Python interpreter); ``CAP_NET_ADMIN`` lets
the receive buffer grow beyond ``net.core.rmem_max`` (without it the buffer is capped
there, which is not an error). Everything else runs unprivileged.

Stopping: ``stop()`` may be called from a signal handler (SIGINT/SIGTERM) or another
thread. It wakes the receive loop through a self-pipe; the loop then drains the packets
already queued in the socket (so nothing that reached the sensor is lost), closes the socket
and ends the iteration. ``stats()`` keeps working after that and reports the final counts.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import select
import socket
import struct
from collections.abc import Iterator

from sensor import capture

__all__ = ["CaptureError", "LiveSource", "Frame"]

Frame = capture.Frame

# Linux constants the socket module does not export (linux/if_packet.h, asm/socket.h).
ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_ADD_MEMBERSHIP = 1
PACKET_MR_PROMISC = 1
PACKET_STATISTICS = 6
PACKET_AUXDATA = 8
SO_ATTACH_FILTER = 26
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

DEFAULT_RCVBUF = 64 << 20  # bytes: absorbs bursts while the decoder is busy
DRAIN_LIMIT = 1_000_000  # packets read after stop(): what was queued, not a live stream forever


class CaptureError(capture.CaptureError):
    """Live capture cannot start or continue; the message is one line, fit for the user.

    A subclass of the file readers' error, so one ``except`` serves both kinds of source."""


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
        self._stopping = False
        self._closed = False
        self._iterating = False

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
            self._setup(program, rcvbuf, promisc)
        except OSError as exc:
            self._sock.close()
            raise CaptureError(f"cannot capture on {iface!r}: {exc.strerror or exc}") from None
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)

    def _setup(self, program: bytes | None, rcvbuf: int, promisc: bool) -> None:
        sock = self._sock
        if program is not None:
            count = len(program) // ctypes.sizeof(_SockFilter)
            insns = (_SockFilter * count).from_buffer_copy(program)
            fprog = _SockFprog(count, insns)
            sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, bytes(fprog))
        try:
            sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, rcvbuf)
        except PermissionError:  # no CAP_NET_ADMIN: the kernel caps at net.core.rmem_max
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        sock.setsockopt(SOL_PACKET, PACKET_AUXDATA, 1)
        if self._ifindex:
            sock.bind((self.iface, ETH_P_ALL))
        else:
            sock.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                while True:  # packets queued before the filter was attached
                    sock.recv(1)
        if promisc and self._ifindex:
            mreq = struct.pack("=iHH8s", self._ifindex, PACKET_MR_PROMISC, 0, b"")
            sock.setsockopt(SOL_PACKET, PACKET_ADD_MEMBERSHIP, mreq)
        sock.setblocking(False)

    # -- control -------------------------------------------------------------------------

    def stop(self) -> None:
        """Ask the capture loop to finish. Async-signal-safe: sets a flag, writes one byte."""
        self._stopping = True
        with contextlib.suppress(OSError):  # pipe full or closed: the flag is enough
            os.write(self._wake_w, b"x")

    def close(self) -> None:
        """Release the socket (statistics are read one last time first)."""
        if self._closed:
            return
        self._read_kernel_stats()
        self._closed = True
        self._sock.close()
        os.close(self._wake_r)
        os.close(self._wake_w)

    def __enter__(self) -> LiveSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def stats(self) -> dict[str, int]:
        """packets and bytes delivered, frames cut at snaplen, kernel-side counts and drops."""
        self._read_kernel_stats()
        return {
            "packets": self._packets,
            "bytes": self._bytes,
            "truncated": self._truncated,
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
            yield from self._frames()
        finally:
            self.close()

    def _frames(self) -> Iterator[Frame]:
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
                try:
                    poller.poll(1000)
                except InterruptedError:  # pragma: no cover - PEP 475 retries
                    pass
                continue
            except OSError as exc:
                if self._stopping:
                    return
                raise CaptureError(
                    f"capture on {self.iface!r} failed: {exc.strerror or exc}"
                ) from None
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
            yield ts, linktype, data

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
