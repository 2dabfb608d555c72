"""Run one coverage-guided fuzz target (atheris/libFuzzer) with a seed corpus from pcaps/.

    .venv/bin/python tests/hardening/fuzz/run.py modbus --seconds 600     # or s7comm, opcua, enip, dnp3, iec104, capture, all
    .venv/bin/python tests/hardening/fuzz/run.py all --seconds 60 --workdir /tmp/icsmon-fuzz

Seeds are written to WORKDIR/TARGET/seeds (rebuilt each run from the captures in pcaps/: the
per-direction TCP payloads of each connection for the dissectors, the capture files and
pcapng re-encodings for the readers); the fuzzer's growing corpus is kept in
WORKDIR/TARGET/corpus between runs and crashes go to WORKDIR/TARGET/crash-*. Exit status 0 when
no target crashed; otherwise the status of the first failure, and the crash file is printed.
Extra arguments after ``--`` go to libFuzzer (e.g. ``-- -jobs=2 -workers=2``).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[2]))

from tests.hardening.fuzz.common import encode, pcap_seeds, streams_for  # noqa: E402

TARGETS = ("modbus", "s7comm", "opcua", "enip", "dnp3", "iec104", "capture")


def write_seeds(target: str, seeds_dir: Path) -> int:
    seeds_dir.mkdir(parents=True, exist_ok=True)
    if target == "capture":
        blobs = list(pcap_seeds().values())
    else:
        blobs = []
        for segs in streams_for(target):
            blobs.append(encode(segs))
            blobs.append(encode([s for s in segs if s[0]]))  # requests only
            blobs.append(encode([s for s in segs if not s[0]]))  # responses only (mid-stream)
    for blob in blobs:
        (seeds_dir / hashlib.sha1(blob).hexdigest()).write_bytes(blob)
    return len(blobs)


def run(target: str, seconds: int, workdir: Path, extra: list[str]) -> tuple[int, str]:
    base = workdir / target
    corpus = base / "corpus"
    corpus.mkdir(parents=True, exist_ok=True)
    nseeds = write_seeds(target, base / "seeds")
    argv = [
        sys.executable,
        str(HERE / f"fuzz_{target}.py"),
        str(corpus),
        str(base / "seeds"),
        f"-max_total_time={seconds}",
        f"-artifact_prefix={base}/",
        "-timeout=10",  # one input taking longer is a hang: reported as a crash
        "-rss_limit_mb=2048",
        "-max_len=65536",
        "-print_final_stats=1",
        *extra,
    ]
    print(f"== {target}: {nseeds} seeds, {seconds} s; {' '.join(argv[1:])}", flush=True)
    t = time.monotonic()
    scratch = base / "scratch.bin"  # the capture target's file for each input
    # ICSMON_PURE: the sensor from its source, the bytecode atheris instruments
    env = dict(os.environ, ICSMON_FUZZ_SCRATCH=str(scratch), ICSMON_PURE="1")
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 120, env=env)
    finally:
        scratch.unlink(missing_ok=True)
    log = proc.stdout + proc.stderr
    (base / "last.log").write_text(log)
    done = [
        ln
        for ln in log.splitlines()
        if ln.startswith(("Done ", "stat::number_of_executed_units", "stat::peak_rss_mb"))
    ]
    print("\n".join(done) or log[-2000:], flush=True)
    print(
        f"   {target}: exit {proc.returncode} after {time.monotonic() - t:.0f} s; log {base / 'last.log'}",
        flush=True,
    )
    if proc.returncode:
        print(log[-4000:], flush=True)
        crashes = (
            sorted(base.glob("crash-*"))
            + sorted(base.glob("timeout-*"))
            + sorted(base.glob("oom-*"))
        )
        for c in crashes:
            print(f"   artifact: {c}", flush=True)
    return proc.returncode, log


def main() -> int:
    argv = sys.argv[1:]
    extra: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, extra = argv[:i], argv[i + 1 :]
    ap = argparse.ArgumentParser(description="Run icsmon's fuzz targets (atheris).")
    ap.add_argument("target", choices=(*TARGETS, "all"))
    ap.add_argument("--seconds", type=int, default=600, help="per target (default 600)")
    ap.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "icsmon-fuzz")
    ns = ap.parse_args(argv)
    status = 0
    for target in TARGETS if ns.target == "all" else (ns.target,):
        rc, _ = run(target, ns.seconds, ns.workdir, extra)
        status = status or rc
    return status


if __name__ == "__main__":
    sys.exit(main())
