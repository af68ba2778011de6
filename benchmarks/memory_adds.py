"""Resident memory after a million jobs added over the control socket (issue 21).

``python -m benchmarks.memory_adds [--jobs 1000000] [--cron-every 10]``

A real daemon (SQLite, durability full, the default window) is given ``--jobs``
jobs with AddJobs of 1,000 over its socket, as a client would add them: one in
``--cron-every`` is a cron job (``M H * * *``, spread over the day), the rest
one-shot jobs spread a second apart from tomorrow on, so nothing falls due
while it is measured. Once the adds are done and the daemon has settled (two
samples a second apart that agree within 1 MB), it prints the resident memory
(VmRSS, and the peak VmHWM) of the daemon and its SQLite writer process, each
and summed. SPEC section 10 allows 250 MB for a million jobs.

``jobs_in_memory`` is how many jobs the daemon holds in memory then (at most
``memory_bound``, one and a half windows). Unlike ``benchmarks.scale`` (a store filled directly, then a daemon started on
it), every job here went through the engine's add path, so what the adds leave
behind in the daemon's memory (the window of pending jobs in memory, caches,
allocator fragmentation) is counted.
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio

from benchmarks.common import (
    Report,
    Row,
    count_at_least,
    daemon_config,
    memory_mb,
    process_tree,
    running_daemon,
)
from benchmarks.common import workdir as scratch
from benchmarks.daemon_throughput import load_average
from nexus_schedd.client import Client
from nexus_schedd.model.times import format_instant

BATCH = 1000
LIMIT_MB = 250.0
"""SPEC section 10: resident memory with a million jobs."""
LIMIT_JOBS = 1_000_000


async def _add(socket_path: Path, jobs: int, cron_every: int) -> tuple[float, int]:
    """Add the jobs; the adds' rate (jobs/s) and the jobs the daemon then holds in
    memory (GetStatus ``extra.window_jobs``)."""
    tomorrow = datetime.now(UTC).replace(microsecond=0) + timedelta(days=1)
    started = time.perf_counter()
    async with Client(socket_path, timeout=300) as client:
        for first in range(0, jobs, BATCH):
            specs: list[dict[str, Any]] = []
            for n in range(first, min(first + BATCH, jobs)):
                if cron_every and n % cron_every == 0:
                    cron = f"{n % 60} {(n // 60) % 24} * * *"
                    specs.append(
                        {"job_type": "bench", "recurrence": {"kind": "cron", "cron": cron}}
                    )
                else:
                    run_at = format_instant(tomorrow + timedelta(seconds=n))
                    specs.append({"job_type": "bench", "run_at": run_at})
            await client.add_jobs(specs)
        rate = jobs / (time.perf_counter() - started)
        status = await client.status()
    return rate, int(status["extra"]["window_jobs"])


def _settled(pid: int) -> dict[str, dict[str, float]]:
    """Memory of the daemon and of its writer once two samples agree within 1 MB."""
    previous = -1.0
    for _ in range(30):
        time.sleep(1.0)
        total = memory_mb(pid)["VmRSS"]
        if abs(total - previous) <= 1.0:
            break
        previous = total
    children = [p for p in process_tree(pid) if p != pid]
    writer: dict[str, float] = {"VmRSS": 0.0, "VmHWM": 0.0}
    for child in children:
        for key, value in memory_mb(child).items():
            writer[key] += value
    whole = memory_mb(pid)
    daemon = {key: round(whole[key] - writer[key], 1) for key in whole}
    return {"daemon": daemon, "writer": writer, "total": whole}


def measure(jobs: int, cron_every: int = 10) -> dict[str, Any]:
    """One daemon given ``jobs`` jobs over its socket; what it then holds."""
    with scratch("nxb-mem-") as tmp, running_daemon(tmp, daemon_config()) as daemon:
        assert daemon.proc is not None
        adds_per_s, in_memory = anyio.run(_add, daemon.socket_path, jobs, cron_every)
        memory = _settled(daemon.proc.pid)
    return {
        "jobs": jobs,
        "cron_every": cron_every,
        "adds_per_s": round(adds_per_s),
        "jobs_in_memory": in_memory,
        "memory_mb": memory,
        "load": load_average(),
    }


def run(jobs: int) -> Report:
    """``make bench``'s row: resident MB after the adds, against SPEC 10's limit."""
    result = measure(jobs)
    memory = result["memory_mb"]
    n = f"{jobs:,} jobs added over the socket, a tenth cron"
    limit = f"SPEC 10 limit ({LIMIT_JOBS:,} jobs)"
    report = Report("5b memory after adds", details=result)
    report.rows += [
        Row(f"VmRSS MB, daemon + writer, {n}", memory["total"]["VmRSS"], LIMIT_MB, "lower", limit),
        Row(f"VmRSS MB, daemon, {n}", memory["daemon"]["VmRSS"], None, "lower", "-"),
        Row(f"VmRSS MB, writer, {n}", memory["writer"]["VmRSS"], None, "lower", "-"),
    ]
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=count_at_least(1), default=LIMIT_JOBS)
    parser.add_argument(
        "--cron-every", type=count_at_least(0), default=10, help="one cron job in N (0: none)"
    )
    args = parser.parse_args()
    print(json.dumps(measure(args.jobs, args.cron_every), indent=2))


if __name__ == "__main__":
    main()
