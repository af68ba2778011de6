"""Reliability soak: kill -9 of the REAL daemon under mixed control-socket load.

    python -m benchmarks.reliability_soak --cycles 50

Each cycle starts ``nexus-schedd``, drives adds (one-shot and recurring exec
jobs), cancels, pauses and resumes from four clients, and SIGKILLs it at a
random moment; the next start must show every acknowledged change. At the end
every due occurrence must have run (the jobs' script appends
``job_id idempotency_key`` with fsync), duplicates must be covered by runs that
were open at a kill, and ``PRAGMA integrity_check`` must pass after every kill.
The short form of the same run is ``tests/reliability/test_crash.py``.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import tempfile
from pathlib import Path

from tests.reliability.crash import CrashRun


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cycles", type=int, default=50)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else random.randrange(2**32)
    workdir = Path(tempfile.mkdtemp(prefix="reliability-soak-", dir="/tmp"))
    print(f"seed {seed}, {args.cycles} kill -9 cycles, work directory {workdir}", flush=True)
    run = CrashRun(workdir, seed=seed)
    for number in range(1, args.cycles + 1):
        run.cycle()
        if number % 10 == 0:
            print(f"cycle {number}: {json.dumps(run.report.summary())}", flush=True)
    report = run.finish(timeout=120.0)
    print(json.dumps(report.summary(), indent=1))
    for problem in report.problems[:50]:
        print("PROBLEM:", problem)
    code = 1 if report.problems else 0
    if not args.keep and code == 0:
        shutil.rmtree(workdir, ignore_errors=True)
    sys.exit(code)


if __name__ == "__main__":
    main()
