"""The sensor's core loop: frames -> packets -> flows -> dissectors -> events.

TCP segments are reassembled per direction and fed to a dissector's ``Parser``; UDP
datagrams go whole to its ``DatagramParser`` (the two sides of the contract in
``sensor/protocols/base.py``). A UDP flow exists only for datagrams a dissector wants (its
UDP port, or a heuristic probe): the DNS and NTP chatter of a plant costs a counter, no state.

    eng = Engine(EngineConfig(site="plant-7"))
    for event in eng.replay(["capture.pcap"]):   # flat ECS event dicts
        ...
    eng.stats        # counters: packets, bytes, flows, pdus, anomalies, drops, ...
    eng.errors       # one line per damaged capture (frames before the damage were processed)

Events are yielded in the order transactions complete. Everything the dissectors reject is
an anomaly event, and every counter is in ``stats``; nothing a packet contains can raise out
of :meth:`Engine.feed`.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Final

from sensor import decode as dec
from sensor.assets import AssetTracker
from sensor.capture import CaptureError, CaptureReader, Frame
from sensor.events import Context, dataset, flow_uid, mac_str, with_room
from sensor.flows import (
    ACK,
    FIN,
    HALF,
    PSH,
    RST,
    SEQ_MASK,
    SYN,
    TCP,
    UDP,
    Flow,
    FlowLimits,
    evict_candidates,
)
from sensor.logs import LazyLogger
from sensor.protocols import DISSECTORS
from sensor.schema import asset_sources, device_fields

log = LazyLogger(__name__)  # logging imported at the first message

# Final: the compiled build reads these as constants or C globals, not by a lookup in the
# module's dictionary each time
_ipv4: Final = struct.Struct("!BxHHHBBxx4s4s").unpack_from
_tcp: Final = struct.Struct("!HHIIBB").unpack_from
_udp: Final = struct.Struct("!HHH").unpack_from
_ports: Final = struct.Struct("!HH").pack
_SWEEP_INTERVAL: Final = 30.0  # seconds of capture time between idle-flow sweeps
ASSET_REFRESH: Final = 30.0  # seconds of capture time between asset observations of one flow


@dataclass(slots=True)
class EngineConfig:
    site: str = ""
    observer: str = ""
    organization: str = ""
    heuristics: tuple[str, ...] | None = (
        None  # protocols probed on any port; None = each module's default
    )
    ports: dict[int, str] = field(default_factory=dict)  # extra port -> protocol assignments
    udp_ports: dict[int, str] = field(default_factory=dict)  # the same for UDP ports
    limits: FlowLimits = field(default_factory=FlowLimits)
    track_assets: bool = True
    # False: every frame takes the general path (_slow -> _ipv4 -> _l4 -> _tcp -> _deliver);
    # tests/sensor/test_decode_paths.py holds the fast path in _process to it, event for event
    fast_path: bool = True


_DEVICE_KEYS: Final = tuple(sorted(device_fields()))
# the record fields that name a station's protocol address (sensor/assets.py keeps them)
_ADDRESS_SOURCES = asset_sources()
_ADDRESS_KEYS: Final[dict[str, tuple[str, ...]]] = {
    proto: tuple(field for field, _side, _target in sources)
    for proto, sources in _ADDRESS_SOURCES.items()
}
MAX_FLOW_ADDRESSES = 64
# an event (the flow's base copied, the record and four fields put in: ~33 keys for a Modbus
# transaction) outgrew the base's table once per event; a base grown as 22 keys would grow
# it (sensor.events.with_room: 64 slots) passes that table on to every copy, and its str-keys
# kind (the context's dict display and copies of it had the general kind: slower lookups)
_BASE_TABLE: Final = 22


def _has_device_fields(rec: dict) -> bool:
    # dict lookups in a loop: cheaper in the compiled build than a set operation on keys()
    return any(key in rec for key in _DEVICE_KEYS)


def _new_address(flow: Flow, keys: tuple[str, ...], rec: dict) -> bool:
    """Does the record name a protocol address this flow has not shown the tracker yet?"""
    seen = flow.asset_addresses
    if seen is None:
        seen = flow.asset_addresses = set()
    new = False
    for key in keys:
        value = rec.get(key)
        if value is not None and len(seen) < MAX_FLOW_ADDRESSES and (key, value) not in seen:
            seen.add((key, value))
            new = True
    return new


def _singles(frames: Iterable[Any]) -> Iterator[list[Frame]]:
    for ts, linktype, data in frames:
        yield [(ts, linktype, data if type(data) is bytes else bytes(data))]


class Engine:
    def __init__(self, config: EngineConfig | None = None) -> None:
        self.config = cfg = config or EngineConfig()
        self.ctx = Context(cfg.site, cfg.observer, cfg.organization)
        self.limits = cfg.limits
        self.port_map: dict[int, ModuleType] = {}
        by_name = {m.NAME: m for m in DISSECTORS}
        for m in DISSECTORS:
            for p in m.PORTS:
                self.port_map.setdefault(p, m)
        for port, name in cfg.ports.items():
            if name not in by_name:
                raise ValueError(
                    f"unknown protocol {name!r} for port {port}: known are {', '.join(sorted(by_name))}"
                )
            self.port_map[port] = by_name[name]
        # the datagram side: modules with a DatagramParser (base.py), by their UDP ports
        by_udp = {m.NAME: m for m in DISSECTORS if hasattr(m, "DatagramParser")}
        self.udp_port_map: dict[int, ModuleType] = {}
        for m in by_udp.values():
            for p in m.UDP_PORTS:
                self.udp_port_map.setdefault(p, m)
        for port, name in cfg.udp_ports.items():
            if name not in by_udp:
                raise ValueError(
                    f"protocol {name!r} for UDP port {port} does not run over UDP: "
                    f"those that do are {', '.join(sorted(by_udp)) or 'none'}"
                )
            self.udp_port_map[port] = by_udp[name]
        if cfg.heuristics is None:
            self.heuristic = tuple(m for m in DISSECTORS if getattr(m, "HEURISTIC_DEFAULT", False))
        else:
            unknown = set(cfg.heuristics) - set(by_name)
            if unknown:
                raise ValueError(
                    f"unknown protocol(s) for heuristics: {', '.join(sorted(unknown))}"
                )
            self.heuristic = tuple(m for m in DISSECTORS if m.NAME in cfg.heuristics)
        self.udp_heuristic = tuple(m for m in self.heuristic if hasattr(m, "probe_datagram"))
        # key: source address, destination address, source port, destination port, as bytes
        # in header order (for IPv4 the slice data[26:38] of a frame: no tuple to build); a
        # UDP flow's key has the same bytes after a "u" (a different length: never a TCP key)
        self.flows: dict[bytes, tuple[Flow, bool]] = {}
        self.nflows = 0
        self.defrag = dec.Defragmenter()
        self.assets = AssetTracker(cfg.site) if cfg.track_assets else None
        self.errors: list[str] = []
        self.ooo_total = 0
        self._next_sweep = 0.0
        self._anomaly_n = 0
        self._out: list[dict] = []
        # sees every batch of frames before it is decoded (the packet ring: sensor.evidence)
        self.tap: Any = None
        # capture time of the first and of the newest frame (0.0 before any): a replay's clock
        self.first_ts = 0.0
        self.last_ts = 0.0
        self._packets = 0  # hot counters live outside the dict: see ``stats``
        self._bytes = 0
        self._segments = 0
        self._events = 0  # events and anomalies made (the "events" counter)
        self.counters: dict[str, int] = dict.fromkeys(
            (
                "packets",
                "bytes",
                "non_ip",
                "other_transport",
                "truncated",
                "bad_headers",
                "unsupported_link",
                "ip_fragments",
                "tcp_segments",
                "udp_datagrams",
                "flows",
                "flows_dissected",
                "flows_closed",
                "flows_idle_evicted",
                "flows_cap_evicted",
                "retransmissions",
                "keepalives",
                "out_of_order",
                "gaps",
                "gap_bytes",
                "ooo_dropped_bytes",
                "events",
                "anomalies",
                "parser_errors",
            ),
            0,
        )

    @property
    def stats(self) -> dict[str, int]:
        """Every counter, for ``--stats`` and the posture view."""
        out = dict(self.counters)
        out["packets"] += self._packets
        out["bytes"] += self._bytes
        out["tcp_segments"] += self._segments
        out["events"] += self._events
        out["flows_active"] = self.nflows
        return out

    # -- entry points ---------------------------------------------------------------

    def replay(self, paths: Iterable[str | Path], progress=None) -> Iterator[dict]:
        """Events of one or more capture files, in order; damage is reported in ``errors``."""
        for batch in self.replay_batches(paths, progress):
            yield from batch

    def replay_batches(self, paths: Iterable[str | Path], progress=None) -> Iterator[list[dict]]:
        """:meth:`replay`'s events, a list for each block of frames that made some (the
        caller's to keep): a run's sinks take them a block at a time."""
        for path in paths:
            try:
                reader = CaptureReader(path)
            except CaptureError as exc:
                self.errors.append(str(exc))
                continue
            yield from self.run_batches(reader, progress)
            if reader.error:
                self.errors.append(reader.error)
        done = self._finish()
        if done:
            yield done

    def run(self, frames: Iterable[Frame], progress=None) -> Iterator[dict]:
        """Events of a frame source (a file reader or a live socket); does not flush flows."""
        for batch in self.run_batches(frames, progress):
            yield from batch

    def run_batches(self, frames: Iterable[Frame], progress=None) -> Iterator[list[dict]]:
        """:meth:`run`'s events, a list for each block of frames that made some."""
        process = self._process
        # a file is read a block of frames at a time; a live source frame by frame (it blocks)
        batches = frames.batches() if isinstance(frames, CaptureReader) else _singles(frames)
        if progress is None:
            for batch in batches:
                process(batch)
                if self._out:
                    out, self._out = self._out, []
                    yield out
            return
        n = 0
        for batch in batches:
            i, size = 0, len(batch)
            while i < size:  # progress every 1024 frames exactly, as per frame
                k = min(size, i + 1024 - (n & 0x3FF))
                process(batch[i:k] if i or k < size else batch)
                n += k - i
                i = k
                if self._out:
                    out, self._out = self._out, []
                    yield out
                if n & 0x3FF == 0:
                    progress(n)
        progress(n)

    def finish(self) -> Iterator[dict]:
        """End of input: close every flow (unanswered requests become events)."""
        yield from self._finish()

    def _finish(self) -> list[dict]:
        for flow, _ in list(self.flows.values()):
            if not flow.closed:
                self._close(flow, flow.last_ts)
        self.flows.clear()
        out, self._out = self._out, []
        return out

    def changed_assets(self) -> list[dict]:
        return self.assets.changed() if self.assets is not None else []

    # -- per packet -----------------------------------------------------------------

    def feed(self, ts: float, linktype: int, data: bytes | bytearray | memoryview) -> None:
        """One captured frame. Never raises for anything inside the frame."""
        # the compiled build takes exactly bytes (any buffer is fine for the source build)
        self._process([(ts, linktype, data if type(data) is bytes else bytes(data))])

    def _process(self, frames: list[Frame]) -> None:
        """A batch of frames; events collect in ``self._out``.

        Fast path: Ethernet + IPv4 (no options, no fragment) + TCP, in-order data or a bare
        ACK on a known flow, inlined here (no call per frame). Everything else takes the
        general path (``_slow`` / ``_tcp``), which decodes the same frames alike
        (``EngineConfig.fast_path = False`` sends every frame there: the differential test). The locals are typed so that the compiled build
        (setup.py) keeps them as machine integers and calls dict and bytes operations directly."""
        if self.tap is not None and frames:
            self.tap(frames)
        flows = self.flows
        general_only = not self.config.fast_path
        nbytes = 0
        fast = 0  # segments handled here (the general path counts its own)
        total: int
        frag: int
        proto: int
        seq: int
        off: int
        flags: int
        try:
            for ts, linktype, data in frames:
                size = len(data)
                nbytes += size
                # EtherType IPv4 and a 20-byte IPv4 header, byte by byte (no slice made)
                if (
                    general_only
                    or linktype != 1
                    or size < 54
                    or data[12] != 0x08
                    or data[13] != 0x00
                    or data[14] != 0x45
                ):
                    self._slow(ts, linktype, data)
                    continue
                # the IPv4 and TCP fields the fast path needs (size >= 54), read byte by byte:
                # in the compiled build these are machine operations, no call, no tuple
                total = data[16] << 8 | data[17]
                frag = data[20] << 8 | data[21]
                proto = data[23]
                seq = data[38] << 24 | data[39] << 16 | data[40] << 8 | data[41]
                off = data[46]
                flags = data[47]
                end = 14 + total
                if proto != 6 or frag & 0x3FFF or total < 40 or end > size:
                    self._slow(ts, linktype, data)
                    continue
                start = 34 + (off >> 4) * 4
                if start < 54 or start > end:
                    self._slow(ts, linktype, data)
                    continue
                # the flow key: addresses and ports as they sit in the header (see self.flows)
                entry = flows.get(data[26:38])
                if entry is not None and not flags & 0x07:  # no SYN, FIN, RST
                    flow, to_server = entry
                    parser = flow.parser
                    if parser is not None:
                        if to_server:
                            d, rev = flow.to_server, flow.to_client
                        else:
                            d, rev = flow.to_client, flow.to_server
                        if not rev.ooo:
                            flow.last_ts = ts
                            if start == end:  # a bare ACK
                                fast += 1
                                if ts >= self._next_sweep:  # as the general path does
                                    self._sweep(ts)
                                continue
                            if seq == d.next_seq and not d.ooo:
                                fast += 1
                                n = end - start
                                d.next_seq = (seq + n) & SEQ_MASK
                                d.bytes += n
                                d.packets += 1
                                try:
                                    records = parser.feed(to_server, data[start:end], ts)
                                except Exception as exc:  # the contract says parsers never raise
                                    self.counters["parser_errors"] += 1
                                    records = [self._parser_failure(flow, ts, exc)]
                                if records:
                                    self._emit(flow, records)
                                if ts >= self._next_sweep:
                                    self._sweep(ts)
                                continue
                sport, dport, _seq, ack, _off, _flags = _tcp(data, 34)
                self._tcp(
                    ts,
                    data[26:30],
                    data[30:34],
                    sport,
                    dport,
                    seq,
                    ack,
                    flags,
                    data[start:end],
                    data[6:12],
                    data[0:6],
                    4,
                    0,
                )
        finally:
            if frames:
                if not self.first_ts:
                    self.first_ts = frames[0][0]
                self.last_ts = frames[-1][0]
            self._packets += len(frames)
            self._bytes += nbytes
            self._segments += fast

    def _slow(self, ts: float, linktype: int, data: bytes) -> None:
        """Every other shape of frame: VLANs, cooked, raw, IPv6, IPv4 options and fragments, damage."""
        stats = self.counters
        try:
            link = dec.link_payload(linktype, data)
            if isinstance(link, str):
                if link == dec.UNSUPPORTED_LINK:
                    stats["unsupported_link"] += 1
                    if stats["unsupported_link"] == 1:
                        self._capture_anomaly(
                            ts,
                            "unsupported-link-type",
                            f"link type {linktype} is not supported; its frames are skipped",
                        )
                elif link == dec.TRUNCATED:
                    stats["truncated"] += 1
                    self._capture_anomaly(
                        ts,
                        "truncated-frame",
                        f"frame of {len(data)} bytes is too short for its link header",
                    )
                else:
                    stats["non_ip"] += 1
                return
            etype, off, smac, dmac = link
            if etype == dec.ETH_IPV4:
                self._ipv4(ts, data, off, smac, dmac)
            elif etype == dec.ETH_IPV6:
                r = dec.ipv6_payload(data, off)
                if isinstance(r, str):
                    self._decode_problem(ts, r, "IPv6")
                    return
                src, dst, proto, l4 = r
                if proto == TCP:
                    self._l4(ts, src, dst, l4, smac, dmac, 6, 0)
                elif proto == UDP:
                    self._udp(ts, src, dst, l4, smac, dmac, 6, 0)
                else:
                    stats["other_transport"] += 1
            else:
                stats["non_ip"] += 1
        except (
            struct.error,
            IndexError,
            ValueError,
        ) as exc:  # defensive: a decoder bug must not stop the sensor
            stats["bad_headers"] += 1
            self._capture_anomaly(ts, "decode-error", f"packet could not be decoded: {exc}")

    def _decode_problem(self, ts: float, reason: str, what: str) -> None:
        stats = self.counters
        if reason == dec.TRUNCATED:
            stats["truncated"] += 1
            self._capture_anomaly(
                ts, "truncated-packet", f"{what} packet cut short (snaplen or damage)"
            )
        elif reason == dec.FRAGMENT:
            stats["ip_fragments"] += 1
        elif reason == dec.NOT_TCP:
            stats["other_transport"] += 1
        else:
            stats["bad_headers"] += 1
            self._capture_anomaly(ts, "bad-header", f"invalid {what} header")

    def _ipv4(
        self, ts: float, data: bytes, off: int, smac: bytes | None, dmac: bytes | None
    ) -> None:
        stats = self.counters
        if len(data) < off + 20:
            self._decode_problem(ts, dec.TRUNCATED, "IPv4")
            return
        vhl, total, _ident, frag, _ttl, proto, src, dst = _ipv4(data, off)
        ihl = (vhl & 0x0F) * 4
        if vhl >> 4 != 4 or ihl < 20 or total < ihl:
            self._decode_problem(ts, dec.BAD_HEADER, "IPv4")
            return
        cut = off + total - len(data)
        if frag & 0x3FFF:  # more fragments, or a non-zero offset
            stats["ip_fragments"] += 1
            if cut > 0:
                self._decode_problem(ts, dec.TRUNCATED, "IPv4 fragment")
                return
            whole = self.defrag.add(ts, data, off, ihl, total)
            if whole is None:
                return
            src, dst, proto, payload = whole
            if proto == TCP:
                self._l4(ts, src, dst, payload, smac, dmac, 4, 0)
            elif proto == UDP:
                self._udp(ts, src, dst, payload, smac, dmac, 4, 0)
            else:
                stats["other_transport"] += 1
            return
        if proto != TCP and proto != UDP:
            stats["other_transport"] += 1
            return
        end = off + total
        if cut > 0:  # snaplen (or damage) cut the frame: what is missing becomes a gap
            self.counters["truncated"] += 1
            self._capture_anomaly(
                ts,
                "truncated-packet",
                f"IPv4 packet of {total} bytes captured with {total - cut} (snaplen)",
            )
        seg = data[off + ihl : min(end, len(data))]
        if proto == UDP:
            self._udp(ts, src, dst, seg, smac, dmac, 4, max(cut, 0))
        else:
            self._l4(ts, src, dst, seg, smac, dmac, 4, max(cut, 0))

    def _l4(
        self,
        ts: float,
        src: bytes,
        dst: bytes,
        seg: bytes,
        smac: bytes | None,
        dmac: bytes | None,
        ipver: int,
        missing: int,
    ) -> None:
        if len(seg) < 20:
            self._decode_problem(ts, dec.TRUNCATED, "TCP")
            return
        sport, dport, seq, ack, off, flags = _tcp(seg, 0)
        hl = (off >> 4) * 4
        if hl < 20:
            self._decode_problem(ts, dec.BAD_HEADER, "TCP")
            return
        if hl > len(seg):
            self._decode_problem(ts, dec.TRUNCATED, "TCP")
            return
        self._tcp(ts, src, dst, sport, dport, seq, ack, flags, seg[hl:], smac, dmac, ipver, missing)

    def _capture_anomaly(self, ts: float, error_type: str, message: str) -> None:
        self._anomaly_n += 1
        self.counters["anomalies"] += 1
        self._events += 1
        self._out.append(self.ctx.anomaly_event(ts, error_type, message, self._anomaly_n))

    # -- UDP: the datagram side of the contract ----------------------------------------

    def _udp(
        self,
        ts: float,
        src: bytes,
        dst: bytes,
        seg: bytes,
        smac: bytes | None,
        dmac: bytes | None,
        ipver: int,
        missing: int,
    ) -> None:
        stats = self.counters
        if len(seg) < 8:
            self._decode_problem(ts, dec.TRUNCATED, "UDP")
            return
        sport, dport, length = _udp(seg, 0)
        if length < 8 or (length > len(seg) and not missing):
            self._decode_problem(ts, dec.BAD_HEADER, "UDP")
            return
        stats["udp_datagrams"] += 1
        payload = seg[8:length]  # a short capture (snaplen) gives what there is
        entry = self.flows.get(b"u" + src + dst + _ports(sport, dport))
        if entry is None:
            if not payload:
                return
            flow, to_server = self._new_udp_flow(
                ts, src, dst, sport, dport, payload, smac, dmac, ipver
            )
            if flow is None:
                return  # a datagram no dissector wants: counted, no state kept
        else:
            flow, to_server = entry
        flow.last_ts = ts
        d = flow.to_server if to_server else flow.to_client
        d.packets += 1
        d.bytes += len(payload)
        if flow.parser is None:
            if not flow.probing or not payload:
                return
            flow.probing = False  # the first datagram decides
            for module in self.udp_heuristic:
                try:
                    hit = module.probe_datagram(payload)
                except Exception:  # a probe must never stop the sensor
                    hit = False
                if hit:
                    flow.module = module
                    flow.parser = module.DatagramParser(self.limits.parser)
                    stats["flows_dissected"] += 1
                    break
            else:
                return
        try:
            records = flow.parser.datagram(to_server, payload, ts)
        except Exception as exc:  # the contract says parsers never raise; keep going
            stats["parser_errors"] += 1
            log.debug("parser error", exc_info=True)
            records = [self._parser_failure(flow, ts, exc)]
        if records:
            self._emit(flow, records)
        if ts >= self._next_sweep:
            self._sweep(ts)

    def _new_udp_flow(
        self,
        ts: float,
        src: bytes,
        dst: bytes,
        sport: int,
        dport: int,
        payload: bytes,
        smac: bytes | None,
        dmac: bytes | None,
        ipver: int,
    ) -> tuple[Flow | None, bool]:
        port_map = self.udp_port_map
        module = port_map.get(dport)
        if module is not None and sport not in port_map:
            client_first = True
        elif module is None and sport in port_map:
            module = port_map[sport]
            client_first = False
        elif module is not None:  # both ends on a dissector's port: ask the protocol
            client_first = True
            direction = getattr(module, "datagram_to_server", None)
            if direction is not None:
                try:
                    said = direction(payload)
                except Exception:  # a hint must never stop the sensor
                    said = None
                if said is not None:
                    client_first = bool(said)
        elif self.udp_heuristic:
            client_first = True  # the first sender; the probe may name the protocol
        else:
            return None, False
        flow = self._new_flow(
            ts, UDP, src, dst, sport, dport, smac, dmac, ipver, client_first, module
        )
        return flow, client_first

    # -- flows and reassembly ---------------------------------------------------------

    def _tcp(
        self,
        ts: float,
        src: bytes,
        dst: bytes,
        sport: int,
        dport: int,
        seq: int,
        ack: int,
        flags: int,
        payload: bytes,
        smac: bytes | None,
        dmac: bytes | None,
        ipver: int,
        missing: int,
    ) -> None:
        stats = self.counters
        self._segments += 1
        entry = self.flows.get(src + dst + _ports(sport, dport))
        if entry is None:
            if not payload and not flags & SYN:
                return  # a bare ACK/FIN of a connection we do not track (or just closed)
            if flags & RST:
                return
            flow, to_server = self._new_tcp_flow(
                ts, src, dst, sport, dport, flags, smac, dmac, ipver
            )
        else:
            flow, to_server = entry
        flow.last_ts = ts
        if flow.module is None and not flow.probing:
            if flags & (FIN | RST):
                self._drop_flow(flow)
            return  # a flow no dissector wants: counted, not reassembled
        d = flow.to_server if to_server else flow.to_client
        d.packets += 1
        if flags & SYN:
            d.next_seq = (seq + 1) & SEQ_MASK
            if payload:
                seq = (seq + 1) & SEQ_MASK
            else:
                return
        # the peer acknowledged bytes of the other direction we never saw: they are lost
        rev = flow.to_client if to_server else flow.to_server
        if (
            rev.ooo
            and flags & ACK
            and rev.next_seq is not None
            and ((ack - rev.next_seq) & SEQ_MASK) - 1 < HALF - 1
        ):
            self._fill_gap(flow, not to_server, rev, ts, ack)
        if payload:
            nxt = d.next_seq
            if nxt is None:  # mid-stream pick-up
                if len(payload) == 1 and not flags & PSH:
                    # a keep-alive probe (one old byte, sent at next - 1): not a stream start
                    stats["keepalives"] += 1
                    return
                nxt = d.next_seq = seq
            diff = (seq - nxt) & SEQ_MASK
            if diff == 0:
                d.next_seq = (seq + len(payload) + missing) & SEQ_MASK
                d.bytes += len(payload)
                self._deliver(flow, to_server, payload, ts)
                if missing:
                    self._gap(flow, to_server, ts, missing)
                if d.ooo:
                    self._drain(flow, to_server, d, ts)
            elif diff < HALF:  # ahead: a hole before it
                stats["out_of_order"] += 1
                self._hold(flow, to_server, d, seq, payload, ts)
            else:  # behind: a retransmission or an overlap
                overlap = (nxt - seq) & SEQ_MASK
                if overlap >= len(payload):
                    stats["retransmissions"] += 1
                else:
                    stats["retransmissions"] += 1
                    rest = payload[overlap:]
                    d.next_seq = (nxt + len(rest)) & SEQ_MASK
                    d.bytes += len(rest)
                    self._deliver(flow, to_server, rest, ts)
                    if d.ooo:
                        self._drain(flow, to_server, d, ts)
        if flags & (FIN | RST):
            if flags & RST:
                self._close(flow, ts)
            else:
                d.fin = True
                if flow.to_client.fin and flow.to_server.fin:
                    self._close(flow, ts)
        elif ts >= self._next_sweep:
            self._sweep(ts)

    def _new_tcp_flow(
        self,
        ts: float,
        src: bytes,
        dst: bytes,
        sport: int,
        dport: int,
        flags: int,
        smac: bytes | None,
        dmac: bytes | None,
        ipver: int,
    ) -> tuple[Flow, bool]:
        port_map = self.port_map
        # a dissector's port marks the server even against the SYN: tshark and Zeek decode by
        # port too, and a server-initiated session is still requests to and answers from it
        if dport in port_map and sport not in port_map:
            client_first = True
        elif sport in port_map and dport not in port_map:
            client_first = False
        elif flags & SYN:
            client_first = not flags & ACK
        else:
            client_first = sport > dport or (sport == dport and src > dst)
        module = port_map.get(dport if client_first else sport)
        flow = self._new_flow(
            ts, TCP, src, dst, sport, dport, smac, dmac, ipver, client_first, module
        )
        return flow, client_first

    def _new_flow(
        self,
        ts: float,
        transport: int,
        src: bytes,
        dst: bytes,
        sport: int,
        dport: int,
        smac: bytes | None,
        dmac: bytes | None,
        ipver: int,
        client_first: bool,
        module: Any,
    ) -> Flow:
        """Track a new TCP or UDP flow: its two ends, its dissector (or a heuristic probe of
        its first payload) and both lookup keys; the least recently active flow makes room."""
        stats = self.counters
        if self.nflows >= self.limits.max_flows:
            self._evict_lru(ts)
        f = Flow()
        f.transport = transport
        if client_first:
            f.client, f.cport, f.server, f.sport, f.cmac, f.smac = (
                src,
                sport,
                dst,
                dport,
                smac,
                dmac,
            )
        else:
            f.client, f.cport, f.server, f.sport, f.cmac, f.smac = (
                dst,
                dport,
                src,
                sport,
                dmac,
                smac,
            )
        f.ipver = ipver
        f.first_ts = f.last_ts = ts
        if module is not None:
            f.module = module
            if transport == UDP:
                f.parser = module.DatagramParser(self.limits.parser)
            else:
                f.parser = module.Parser(self.limits.parser)
            stats["flows_dissected"] += 1
        else:
            f.probing = bool(self.udp_heuristic if transport == UDP else self.heuristic)
        stats["flows"] += 1
        # UDP keys carry a tag so a UDP and a TCP flow between the same ports stay apart
        tag = b"u" if transport == UDP else b""
        f.keys = (tag + src + dst + _ports(sport, dport), tag + dst + src + _ports(dport, sport))
        self.flows[f.keys[0]] = (f, client_first)
        self.flows[f.keys[1]] = (f, not client_first)
        self.nflows += 1
        return f

    def _deliver(self, flow: Flow, to_server: bool, data: bytes, ts: float) -> None:
        if flow.parser is None:
            if not flow.probing:
                return
            for module in self.heuristic:
                try:
                    hit = module.probe(data)
                except Exception:  # a probe must never stop the sensor
                    hit = False
                if hit:
                    flow.module = module
                    flow.parser = module.Parser(self.limits.parser)
                    flow.probing = False
                    self.counters["flows_dissected"] += 1
                    break
            else:
                flow.probing = False  # the first payload decides; later bytes are not probed
                return
        try:
            records = flow.parser.feed(to_server, data, ts)
        except Exception as exc:  # the contract says parsers never raise; if one does, keep going
            self.counters["parser_errors"] += 1
            log.debug("parser error", exc_info=True)
            records = [self._parser_failure(flow, ts, exc)]
        if records:
            self._emit(flow, records)

    def _parser_failure(self, flow: Flow, ts: float, exc: Exception) -> dict:
        # start afresh: state may be inconsistent
        module = flow.module
        new = module.DatagramParser if flow.transport == UDP else module.Parser
        flow.parser = new(self.limits.parser)
        from sensor.protocols.base import anomaly

        return anomaly(
            ts, flow.module.NAME, "parser-error", f"dissector failed: {type(exc).__name__}: {exc}"
        )

    def _gap(self, flow: Flow, to_server: bool, ts: float, size: int) -> None:
        stats = self.counters
        stats["gaps"] += 1
        stats["gap_bytes"] += size
        if flow.parser is None:
            flow.probing = False
            return
        try:
            records = flow.parser.gap(to_server, ts, size)
        except Exception as exc:
            self.counters["parser_errors"] += 1
            records = [self._parser_failure(flow, ts, exc)]
        if records:
            self._emit(flow, records)

    def _hold(self, flow: Flow, to_server: bool, d, seq: int, payload: bytes, ts: float) -> None:
        lim = self.limits
        if d.ooo is None:
            d.ooo = {}
        if seq in d.ooo:
            self.counters["retransmissions"] += 1
            return
        if (
            d.ooo_bytes + len(payload) > lim.max_ooo_bytes
            or self.ooo_total + len(payload) > lim.max_ooo_total
        ):
            # cannot wait any longer for the hole: give it up and move on
            first = min(d.ooo, key=lambda s: (s - d.next_seq) & SEQ_MASK) if d.ooo else seq
            self._fill_gap(flow, to_server, d, ts, first)
            if d.next_seq == seq:
                d.next_seq = (seq + len(payload)) & SEQ_MASK
                d.bytes += len(payload)
                self._deliver(flow, to_server, payload, ts)
                self._drain(flow, to_server, d, ts)
                return
            if d.ooo_bytes + len(payload) > lim.max_ooo_bytes:
                self.counters["ooo_dropped_bytes"] += len(payload)
                return
        d.ooo[seq] = payload
        d.ooo_bytes += len(payload)
        self.ooo_total += len(payload)

    def _drain(self, flow: Flow, to_server: bool, d, ts: float) -> None:
        """Deliver held segments that now continue the stream."""
        ooo = d.ooo
        while ooo:
            nxt = d.next_seq
            seg = ooo.pop(nxt, None)
            if seg is None:
                # a held segment may overlap what was delivered: trim it
                for s in list(ooo):
                    if ((nxt - s) & SEQ_MASK) < HALF:
                        data = ooo.pop(s)
                        d.ooo_bytes -= len(data)
                        self.ooo_total -= len(data)
                        overlap = (nxt - s) & SEQ_MASK
                        if overlap < len(data):
                            ooo[nxt] = data[overlap:]
                            d.ooo_bytes += len(data) - overlap
                            self.ooo_total += len(data) - overlap
                        break
                else:
                    return
                continue
            d.ooo_bytes -= len(seg)
            self.ooo_total -= len(seg)
            d.next_seq = (nxt + len(seg)) & SEQ_MASK
            d.bytes += len(seg)
            self._deliver(flow, to_server, seg, ts)

    def _fill_gap(self, flow: Flow, to_server: bool, d, ts: float, upto: int) -> None:
        """Bytes up to sequence ``upto`` will never come: report a gap and deliver what waits."""
        if d.next_seq is None:
            return
        lost = (upto - d.next_seq) & SEQ_MASK
        if not d.ooo:
            return
        # skip to the first held segment (not past it)
        first = min(d.ooo, key=lambda s: (s - d.next_seq) & SEQ_MASK)
        lost = (first - d.next_seq) & SEQ_MASK
        if lost and lost < HALF:
            self._gap(flow, to_server, ts, lost)
            d.next_seq = first
        self._drain(flow, to_server, d, ts)

    def _emit(self, flow: Flow, records: list[dict]) -> None:
        base = flow.base
        if base is None:
            base = flow.base = self._flow_base(flow)
        proto = base["network.protocol"]
        out = self._out
        uid = flow.uid
        assets = self.assets
        address_keys = _ADDRESS_KEYS.get(proto)
        n = flow.events
        ts: float
        # the flow's payload bytes since its previous event, in both directions: what this
        # transaction moved (the rollups' bytes); a second record of the same call gets 0
        total: int = flow.to_server.bytes + flow.to_client.bytes
        unreported: int = total - flow.reported
        flow.reported = total
        for rec in records:
            # base fields first, the record's after (the schema's order); copying the base
            # clones its hash table in one go, cheaper than inserting its keys one by one, and
            # at the size the whole event needs (_flow_base)
            ev = base.copy()
            ev.update(rec)
            ev["network.bytes"] = unreported
            unreported = 0
            if "ts" in rec:
                ts = rec["ts"]
                del ev["ts"]
            else:
                ts = flow.last_ts
            ev["@timestamp"] = ts  # a number until a document is written (sensor/timestamps.py)
            if ev["network.protocol"] != proto:  # a sub-protocol (s7comm-plus on the S7 port)
                ev["event.dataset"] = dataset(ev["network.protocol"])
            n += 1
            ev["event.id"] = f"{uid}-{n}"
            if ev["event.action"] == "anomaly":
                self.counters["anomalies"] += 1
            elif assets is not None and (
                ts >= flow.asset_due
                or _has_device_fields(rec)
                or (address_keys is not None and _new_address(flow, address_keys, rec))
            ):
                # roles and peers are the same for every event of a flow: look now and then
                flow.asset_due = ts + ASSET_REFRESH
                assets.observe(ev, ts)
            out.append(ev)
        flow.events = n
        self._events += len(records)

    def _flow_base(self, flow: Flow) -> dict:
        ctx = self.ctx
        base: dict[str, Any] = dict(ctx.common)
        cid = flow.community_id()
        flow.uid = flow_uid(ctx.site, ctx.observer, cid, flow.first_ts, flow.cport)
        base.update(
            {
                "network.transport": "udp" if flow.transport == UDP else "tcp",
                "network.type": "ipv4" if flow.ipver == 4 else "ipv6",
                "network.protocol": flow.module.NAME if flow.module else "unknown",
                "network.community_id": cid,
                "event.dataset": dataset(flow.module.NAME if flow.module else "unknown"),
                "source.ip": flow.client_ip,
                "source.port": flow.cport,
                "destination.ip": flow.server_ip,
                "destination.port": flow.sport,
            }
        )
        cmac, smac = mac_str(flow.cmac), mac_str(flow.smac)
        if cmac:
            base["source.mac"] = cmac
        if smac:
            base["destination.mac"] = smac
        return with_room(base, _BASE_TABLE)

    # -- ending flows -----------------------------------------------------------------

    def _close(self, flow: Flow, ts: float) -> None:
        if flow.closed:
            return
        for to_server, d in ((True, flow.to_server), (False, flow.to_client)):
            # the flow ends: every hole is final, deliver what waits behind each of them
            for _ in range(len(d.ooo or ())):
                if not d.ooo:
                    break
                self._fill_gap(flow, to_server, d, ts, 0)
        if flow.parser is not None:
            try:
                records = flow.parser.close(ts)
            except Exception as exc:
                self.counters["parser_errors"] += 1
                records = [self._parser_failure(flow, ts, exc)]
            if records:
                self._emit(flow, records)
        if self.assets is not None and flow.base is not None and flow.events:
            self.assets.observe(flow.base, flow.last_ts)  # last seen as of the flow's end
        self.counters["flows_closed"] += 1
        self._drop_flow(flow)

    def _drop_flow(self, flow: Flow) -> None:
        flow.closed = True
        flows = self.flows
        for key in flow.keys:
            entry = flows.get(key)
            if entry is not None and entry[0] is flow:
                del flows[key]
        self.nflows -= 1
        for d in (flow.to_server, flow.to_client):
            if d.ooo:
                self.ooo_total -= d.ooo_bytes
                d.ooo = None

    def _sweep(self, now: float) -> None:
        self._next_sweep = now + _SWEEP_INTERVAL
        self.defrag.expire(now)
        cutoff = now - self.limits.idle_timeout
        idle = [f for f, _ in self.flows.values() if f.last_ts < cutoff]
        for flow in idle:
            if not flow.closed:
                self.counters["flows_idle_evicted"] += 1
                self._close(flow, flow.last_ts)

    def _evict_lru(self, now: float) -> None:
        """The flow table is full: end the least recently active tenth of it."""
        seen: dict[int, Flow] = {}
        for f, _ in self.flows.values():
            seen[id(f)] = f
        count = max(1, self.limits.max_flows // 10)
        for flow in evict_candidates(list(seen.values()), count):
            self.counters["flows_cap_evicted"] += 1
            self._close(flow, flow.last_ts)
