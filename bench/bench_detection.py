"""Detection quality on the mixed plant (pcaps/plant/): learn on the train split, replay the
clean test split and the attack splits with the default rules and that baseline, score the
alerts against labels.json.

    .venv/bin/python bench/bench_detection.py [--plant DIR] [--json] [--markdown]

It runs what a user runs, as child processes: ``icsmon baseline learn TRAIN -o FILE``, then
``icsmon replay CAPTURE --baseline FILE --format jsonl --sink none`` per capture. Scoring is
``detectors.scoring`` (attribution by attacker, target and time window; see its docstring).
Prints, per attack, whether it was detected with its labelled technique ids and what it
produced (alerts per rule, the matches folded into them); then the false alerts on the clean
split and the precision on the attack splits. Numbers, never asserts (the tests assert the
targets: tests/plant/).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from detectors.scoring import Score, load_labels, score  # noqa: E402
from pipeline.docs import flatten  # noqa: E402

ICSMON = str(Path(sys.executable).parent / "icsmon")


def replay(capture: Path, baseline: Path) -> list[dict]:
    proc = subprocess.run(
        [
            ICSMON,
            "replay",
            str(capture),
            "--baseline",
            str(baseline),
            "--format",
            "jsonl",
            "--sink",
            "none",
            "--site",
            "plant",
            "--observer",
            "bench",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise SystemExit(
            f"icsmon replay {capture.name} failed ({proc.returncode}): {proc.stderr.strip()}"
        )
    return [flatten(json.loads(line)) for line in proc.stdout.splitlines() if line.strip()]


def run(plant: Path) -> tuple[Score, dict[str, list[dict]], dict[str, float]]:
    labels = load_labels(plant / "labels.json")
    timings: dict[str, float] = {}
    alerts: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        baseline = Path(tmp) / "plant.baseline.json"
        started = time.perf_counter()
        subprocess.run(
            [
                ICSMON,
                "baseline",
                "learn",
                *(str(plant / c) for c in labels.learn),
                "-o",
                str(baseline),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        timings["learn"] = time.perf_counter() - started
        for capture in [*labels.clean, *labels.attack_captures]:
            started = time.perf_counter()
            alerts[capture] = replay(plant / capture, baseline)
            timings[capture] = time.perf_counter() - started
    return score(labels, alerts), alerts, timings


def report(result: Score, alerts: dict[str, list[dict]], markdown: bool) -> str:
    lines: list[str] = []
    if markdown:
        lines += [
            "| attack | capture | labelled | detected | techniques seen | alerts (matches) | what it produced |",
            "| --- | --- | --- | --- | --- | ---: | --- |",
        ]
        for r in result.attacks:
            produced = "; ".join(f"{name} x{n}" for name, n in sorted(r.by_rule.items()))
            status = (
                "yes"
                if r.detected and not r.missing
                else ("missing " + ", ".join(r.missing) if r.detected else "**no**")
            )
            lines.append(
                f"| {r.attack.id} | {r.attack.capture} | {', '.join(r.attack.techniques)} | {status} | "
                f"{', '.join(sorted(r.techniques))} | {r.alerts} ({r.matches}) | {produced} |"
            )
    else:
        for r in result.attacks:
            status = (
                "DETECTED"
                if r.detected and not r.missing
                else ("PARTIAL" if r.detected else "MISSED")
            )
            lines.append(
                f"{r.attack.id:<26} {status:<9} labelled {','.join(r.attack.techniques):<18} "
                f"seen {','.join(sorted(r.techniques)):<40} {r.alerts:>3} alerts ({r.matches} matches)"
            )
            for name, n in sorted(r.by_rule.items()):
                lines.append(f"    {n:>3} x {name}")
    lines.append("")
    clean = Counter(str(a.get("rule.name")) for a in result.clean_alerts)
    lines.append(
        f"clean split: {len(result.clean_alerts)} alert(s)"
        + (": " + "; ".join(f"{k} x{v}" for k, v in clean.items()) if clean else "")
    )
    lines.append(
        f"attack splits: {result.attack_alerts} alerts, {len(result.false_alerts)} belong to no attack, "
        f"precision {result.precision:.3f}"
    )
    for a in result.false_alerts:
        lines.append(
            f"    false: {a.get('@timestamp')} {a.get('rule.name')} {a.get('source.ip')} -> "
            f"{a.get('destination.ip')}"
        )
    lines.append(
        f"attacks detected with their labelled techniques: {result.detected} of {len(result.attacks)}"
    )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--plant",
        type=Path,
        default=REPO / "pcaps" / "plant",
        help="folder with the splits and labels.json",
    )
    parser.add_argument("--json", action="store_true", help="print the score as JSON")
    parser.add_argument(
        "--markdown", action="store_true", help="print the per-attack table as Markdown"
    )
    args = parser.parse_args()
    result, alerts, timings = run(args.plant)
    if args.json:
        print(
            json.dumps(
                {**result.to_dict(), "seconds": {k: round(v, 2) for k, v in timings.items()}},
                indent=1,
            )
        )
        return 0
    print(report(result, alerts, args.markdown))
    print("seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in timings.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
