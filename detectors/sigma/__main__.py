"""``python -m detectors.sigma [rules_dir]``: print the Python source generated for a pack's
matchers (the shipped ``rules/`` by default), to review what the engine runs."""

from __future__ import annotations

import sys
from pathlib import Path

from detectors.sigma.engine import SigmaEngine


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    engine = SigmaEngine.load(Path(args[0]) if args else None, strict=False)
    sys.stdout.write(engine.generated_source())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
