"""Wiring of a live sensor's evidence and control channel (``icsmon sense``): the packet
ring and per-alert captures (``sensor.evidence``) fed by the engine's tap, and, with the
province's public key and a Kafka uplink, the control listener (``pipeline.control_kafka``)
whose handlers answer requests (``pipeline.evidence`` for ``evidence.request``,
``response.hunts`` for ``hunt.request``: hunts run in their own worker thread, their alerts
written to the sensor's sink like any other; ``response.content_push`` for ``content.update``;
later features add theirs with ``receiver.on``).

Content the province pushes replaces the run's watchlist at once and is kept beside the store
(``<store>.content.json``): a restarted sensor runs it again (or the ``--content`` package,
whichever is newer), so it is not behind until the province pushes again."""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any

from pipeline.config import PipelineConfig

log = logging.getLogger(__name__)


class EdgeEvidence:
    """What a live sensor keeps for the province, and the channel it is asked through."""

    def __init__(
        self,
        cfg: PipelineConfig,
        ctx: Any,
        store: Any | None,
        kafka: Any | None,
        linktype: int,
        folder: Path | None,
        alerts: Any | None = None,
        rules_dir: Path | None = None,
        site_config: Path | None = None,
        watchlist: Any | None = None,
        heartbeats: Any | None = None,
        detectors: Any | None = None,
    ) -> None:
        """``alerts``: the sink a requested hunt's alerts are written to (the sensor's own,
        store then Kafka); ``rules_dir`` and ``site_config``: the sensor's pack and placeholder
        values, which a hunt's rule ids and rules are read with."""
        from sensor.evidence import AlertCaptures, PacketRing

        ev = cfg.evidence
        self.linktype = linktype
        self.ring: PacketRing | None = None
        self.captures: AlertCaptures | None = None
        if ev.ring_max_bytes > 0:
            self.ring = PacketRing(ev.ring_max_bytes, ev.ring_max_age_s)
            if folder is not None:
                self.captures = AlertCaptures(
                    folder,
                    self.ring,
                    before_s=ev.before_s,
                    after_s=ev.after_s,
                    max_capture_bytes=ev.capture_max_bytes,
                    max_folder_bytes=ev.dir_max_bytes,
                    max_age_s=ev.dir_max_age_days * 86400,
                )
        self.listener = None
        self.handler = None
        self.hunts = None
        self.alert_sink = alerts
        self.rules_dir = rules_dir
        self.site_config = site_config
        self.content: Any | None = None  # the content.update handler
        self.watchlist = watchlist
        self.heartbeats = heartbeats
        self.content_file: Path | None = None
        self.live_rules: Any | None = None  # pushed Sigma rules, put in place while running
        if detectors is not None and detectors.rule_source and store is not None:
            from icsmon.pushed_rules import LiveRules, rules_folder

            self.live_rules = LiveRules(detectors, rules_folder(store.path))
        if watchlist is not None and store is not None:
            self.content_file = Path(store.path).with_name(Path(store.path).stem + ".content.json")
            self._resume_content()
        if cfg.control.public_key and kafka is not None:
            self.listener = self._listener(cfg, ctx, store, kafka)

    def _listener(self, cfg: PipelineConfig, ctx: Any, store: Any, kafka: Any) -> Any:
        from pipeline.control import Receiver, load_public_key
        from pipeline.control_kafka import ControlListener
        from pipeline.evidence import EvidenceHandler, EvidenceLimits
        from response.hunts import HuntLimits, HuntRequestHandler, HuntWorker

        common = {"labels.site": ctx.site, "organization.id": ctx.organization}
        common = {k: v for k, v in common.items() if v}
        seen = cfg.control.seen_file or str(Path(cfg.spool.dir) / "control-seen.json")
        Path(seen).parent.mkdir(parents=True, exist_ok=True)
        receiver = Receiver(
            ctx.observer,
            load_public_key(cfg.control.public_key),
            {},
            seen_file=seen,
            common=common,
        )
        ev = cfg.evidence
        self.handler = EvidenceHandler(
            ctx.observer,
            store,
            self.ring,
            self.captures,
            EvidenceLimits(ev.max_events, ev.max_pcap_bytes, ev.max_window_s),
            common=common,
            linktype=self.linktype,
        )
        receiver.on(self.handler.type, self.handler)

        def answer(doc: dict) -> None:
            kafka.write("response", doc)

        sink = self.alert_sink or store
        hunt = cfg.hunt
        self.hunts = HuntWorker(
            HuntRequestHandler(
                ctx.observer,
                store,
                lambda alert: sink.write("alert", alert),
                HuntLimits(hunt.max_events, hunt.max_seconds, hunt.max_alerts),
                rules_dir=self.rules_dir,
                common=common,
                site_config=self.site_config,
            ),
            answer,
            max_queued=hunt.max_queued,
        )
        receiver.on(self.hunts.type, self.hunts)
        if self.watchlist is not None:
            from response.content_push import CONTENT_UPDATE, live_content

            self.content = live_content(
                ctx.observer,
                self.watchlist,
                self.content_file,
                self._running_content,
                live_rules=self.live_rules,
            )
            receiver.on(CONTENT_UPDATE, self.content)
        listener = ControlListener(cfg, receiver, answer)
        listener.start()
        return listener

    # -- pushed content ---------------------------------------------------------------------

    def _resume_content(self) -> None:
        """Run the content last pushed to this sensor if it is newer than what it started with."""
        from detectors.content import ContentError, load_package

        path = self.content_file
        if path is None or not path.exists() or self.watchlist is None:
            return
        try:
            package = load_package(path)
        except ContentError as exc:  # the province pushes again: it sees this sensor behind
            log.warning("pushed content not resumed: %s", exc)
            return
        if package.version > self.watchlist.version:
            self.watchlist.replace(package)
            self._running_content(package.version)

    def _running_content(self, version: int) -> None:
        """A new content version runs: the heartbeats say so, the next one at once."""
        hb = self.heartbeats
        if hb is not None:
            hb.content_version = str(version)
            if hb.started is not None:
                hb.next_due = -math.inf

    # -- the frame and alert paths ----------------------------------------------------------

    def tap(self, frames: list) -> None:
        if self.ring is not None:
            self.ring.add(frames)
        if self.captures is not None:
            self.captures.add(frames)

    def alert(self, alert: dict) -> None:
        if self.captures is not None:
            self.captures.arm_alert(alert, self.linktype)

    def tick(self) -> None:
        """Wall time passes: captures whose window ended are written even without traffic."""
        if self.captures is not None:
            self.captures.close_due(time.time())

    def close(self) -> None:
        if self.listener is not None:
            self.listener.stop()
        if self.hunts is not None:  # a hunt under way stops early and answers with its summary
            self.hunts.close()
        if self.captures is not None:
            self.captures.close_all()

    def stats(self) -> dict[str, int]:
        out: dict[str, int] = {}
        if self.ring is not None:
            out.update({f"ring.{k}": v for k, v in self.ring.stats.items()})
            out["ring.bytes"] = self.ring.bytes
        if self.captures is not None:
            out.update({f"evidence.{k}": v for k, v in self.captures.stats.items()})
        if self.listener is not None:
            out.update({f"control.{k}": v for k, v in self.listener.stats().items()})
        if self.handler is not None:
            out.update({f"evidence.{k}": v for k, v in self.handler.stats.items()})
        if self.hunts is not None:
            out.update({f"hunt.{k}": v for k, v in self.hunts.handler.stats.items()})
            out.update({f"hunt.{k}": v for k, v in self.hunts.stats.items()})
        if self.content is not None:
            out.update({f"content.{k}": v for k, v in self.content.updater.counters.items()})
        if self.live_rules is not None:
            out["content.rule_reloads"] = self.live_rules.reloads
        return out
