"""Cold wall time of `pytest acceptance/ -m dryrun` on the local stack, PostgreSQL start-up included.

Each round is a fresh process with a fresh embedded PostgreSQL and a throw-away audit folder.
Prints every round and the median:

    python benchmarks/bench_cold_start.py [--rounds 3] [-- extra pytest args]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def one_round(extra: list[str]) -> tuple[float, int]:
    with tempfile.TemporaryDirectory(prefix="cron-dryrun-bench-") as audit:
        command = [
            sys.executable,
            "-m",
            "pytest",
            "acceptance/",
            "-m",
            "dryrun",
            "-q",
            "-p",
            "no:cacheprovider",
            f"--audit-dir={audit}",
            *extra,
        ]
        started = time.perf_counter()
        result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
        return time.perf_counter() - started, result.returncode


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("extra", nargs="*", help="extra pytest arguments (after --)")
    args = parser.parse_args()
    times = []
    for n in range(1, args.rounds + 1):
        seconds, rc = one_round(args.extra)
        times.append(seconds)
        print(f"round {n}: {seconds:.2f} s (exit {rc})")
    print(f"median of {args.rounds}: {statistics.median(times):.2f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
