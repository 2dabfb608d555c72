"""Sigma rules the province pushes to a running sensor (``content.update``), taking effect
without a restart.

The rules live in a folder beside the sensor's store (``<store>.rules/central/``, written by
``detectors.content.install_rules`` under each rule's policy: ``central`` replaces a local
edit there, ``local`` keeps it) and are loaded with the sensor's own pack at every start.

When a package arrives (on the control listener's thread): the package's rules are installed
into a copy of that folder and compiled with the sensor's pack by the sensor's own loader;
if any pushed rule is refused, the whole package is refused with the loader's reasons and
nothing changes (the running rules, watchlist and version stay). Otherwise the rules are
installed, a new Sigma engine is compiled aside, and the run puts it in place between two
events (``icsmon.run.Detectors.swap``, at its next tick, about a second later on a live
port). The old engine's held alerts are released then; its correlation windows under way
start again empty.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from detectors.content import Package, install_rules


def rules_folder(store_path: str | Path) -> Path:
    """Where the rules pushed to the sensor whose store is ``store_path`` are kept."""
    store_path = Path(store_path)
    return store_path.with_name(store_path.stem + ".rules")


class LiveRules:
    """The pushed rules of a running sensor: ``check`` then ``commit`` (``ContentUpdater``)."""

    def __init__(self, detectors: Any, folder: Path) -> None:
        self.detectors = detectors
        self.folder = folder  # <store>.rules; the rules are in its central/
        self.source = detectors.rule_source
        self.reloads = 0

    def _engine(self, folder: Path) -> Any:
        from detectors.sigma import SigmaEngine

        central = folder / "central"
        extra = (central,) if central.is_dir() and any(central.glob("*.yml")) else ()
        return SigmaEngine.load(
            self.source["rules"],
            site_config=self.source["site_config"],
            placeholders=self.source["placeholders"],
            strict=False,
            extra_dirs=extra,
        )

    def _unchanged(self, package: Package) -> bool:
        """No rule pushed before, none now: nothing to install or compile."""
        return not package.rules and not any((self.folder / "central").glob("*.yml"))

    def check(self, package: Package) -> str | None:
        """Why the package's rules cannot run at this sensor (None: they can)."""
        if self._unchanged(package):
            return None
        stage = self.folder.with_name(self.folder.name + ".next")
        shutil.rmtree(stage, ignore_errors=True)
        try:
            if self.folder.is_dir():
                shutil.copytree(self.folder, stage)
            install_rules(package, stage)
            engine = self._engine(stage)
            prefix = str(stage / "central")
            refused = [
                p for p in engine.problems if p.severity == "error" and p.path.startswith(prefix)
            ]
        finally:
            shutil.rmtree(stage, ignore_errors=True)
        if not refused:
            return None
        said = "; ".join(f"{Path(p.path).name}:{p.line}: {p.message}" for p in refused[:5])
        more = f" (and {len(refused) - 5} more)" if len(refused) > 5 else ""
        return f"rules refused by the sensor: {said}{more}"

    def commit(self, package: Package) -> dict[str, list[str]]:
        """Install the rules and have the run put the new engine in place; the rule ids
        written, kept, overridden and removed (``install_rules``)."""
        if self._unchanged(package):
            return {}
        done = install_rules(package, self.folder)
        self.detectors.replace_later(self.source["index"], self._engine(self.folder))
        self.reloads += 1
        return done
