"""What tracing costs the dispatch path (SPEC 15): the same no-op jobs through the
engine (``benchmarks.engine_throughput``, one fresh process per run) with tracing
off, off with jobs that carry a trace context, and on; optionally the tree from
before tracing existed (``--before DIR``: an export of that commit, run with its own
code), to show what the disabled path costs.

    python -m benchmarks.tracing_overhead [--rounds 5] [--jobs 30000]
        [--store discard|sqlite] [--before DIR]

Runs are interleaved (each round runs every mode, in an order rotated from round
to round) and the figures are ratios to ``off`` within each round, so a machine
that is busy with other work shifts every mode alike. Besides jobs/s (wall clock,
which other work on the machine moves a lot) it reports the CPU time the run took
per job, over every thread of the process and the SQLite writer process
(``engine_throughput --threads``): the steadier figure on a busy machine.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODES: dict[str, list[str]] = {
    "off": ["--tracing", "off"],
    "off, jobs with context": ["--tracing", "off", "--trace-context"],
    "on, jobs with context": ["--tracing", "on", "--trace-context"],
    "on, root spans": ["--tracing", "on"],
}
BEFORE = "before tracing (8fb9f61)"


_CPU = re.compile(r"cpu [^:]+: \{'user_us': ([\d.]+), 'sys_us': ([\d.]+)\}")


def run_once(tree: Path, jobs: int, store: str, flags: list[str]) -> tuple[float, float]:
    """(jobs/s, CPU us per job) of one ``engine_throughput`` process on the code in ``tree``."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("OTEL_")}
    env["PYTHONPATH"] = str(tree)
    command = [sys.executable, "-m", "benchmarks.engine_throughput", "--jobs", str(jobs)]
    done = subprocess.run(
        [*command, "--store", store, "--threads", *flags],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=900,
    )
    found = re.search(r"jobs_per_s: (\d+)", done.stdout)
    if found is None:
        raise RuntimeError(f"no jobs_per_s in:\n{done.stdout}\n{done.stderr}")
    cpu = sum(float(user) + float(system) for user, system in _CPU.findall(done.stdout))
    return float(found.group(1)), cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--jobs", type=int, default=30_000)
    parser.add_argument("--store", choices=("discard", "sqlite"), default="discard")
    parser.add_argument(
        "--before", type=Path, metavar="DIR", help="a tree of the code before tracing"
    )
    args = parser.parse_args()
    runs: list[tuple[str, Path, list[str]]] = [(mode, ROOT, flags) for mode, flags in MODES.items()]
    if args.before is not None:
        runs.insert(0, (BEFORE, args.before.resolve(), []))
    rates: dict[str, list[float]] = {mode: [] for mode, _, _ in runs}
    cpus: dict[str, list[float]] = {mode: [] for mode, _, _ in runs}
    for number in range(args.rounds):
        shift = number % len(runs)
        for mode, tree, flags in runs[shift:] + runs[:shift]:
            rate, cpu = run_once(tree, args.jobs, args.store, flags)
            rates[mode].append(rate)
            cpus[mode].append(cpu)
        print(
            f"round {number + 1}: "
            + ", ".join(
                f"{mode} {rates[mode][-1]:,.0f}/s {cpus[mode][-1]:.1f} us" for mode, _, _ in runs
            ),
            flush=True,
        )
    print(f"\n{args.jobs:,} no-op jobs, store {args.store}, {args.rounds} interleaved rounds")
    print("medians; ratios are to off in the same round (median of the rounds' ratios)")
    print(f"{'mode':<28} {'jobs/s':>8} {'ratio':>6} {'CPU us/job':>11} {'ratio':>6}")
    for mode, _, _ in runs:
        rate_ratio = statistics.median(
            value / off for value, off in zip(rates[mode], rates["off"], strict=True)
        )
        cpu_ratio = statistics.median(
            value / off for value, off in zip(cpus[mode], cpus["off"], strict=True)
        )
        print(
            f"{mode:<28} {statistics.median(rates[mode]):>8,.0f} {rate_ratio:>6.2f}"
            f" {statistics.median(cpus[mode]):>11.1f} {cpu_ratio:>6.2f}"
        )


if __name__ == "__main__":
    main()
