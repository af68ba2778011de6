"""Workload 2, add rate: durable adds over the control socket of a real daemon
subprocess: AddJobs in batches of 1,000 from one client, and single AddJob round
trips from 16 concurrent clients (jobs/s, round-trip p50/p99). APScheduler 3.11:
add_job into a running scheduler's SQLAlchemy store (each add commits).

    python -m benchmarks.add_rate [--batches 100] [--singles 8000] [--aps-jobs 2000]
"""

from __future__ import annotations

import argparse
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio

from benchmarks.common import (
    Report,
    Row,
    daemon_config,
    emit,
    run_apscheduler,
    running_daemon,
    summary_ms,
    workdir,
)
from nexus_schedd.client import Client
from nexus_schedd.model.times import format_instant

CLIENTS = 16
BATCH = 1000


async def _batched(socket_path: Path, batches: int, run_at: str) -> dict[str, Any]:
    async with Client(socket_path, timeout=120) as client:
        started = time.perf_counter()
        for _ in range(batches):
            await client.add_jobs([{"job_type": "bench", "run_at": run_at}] * BATCH)
        elapsed = time.perf_counter() - started
    return {
        "jobs": batches * BATCH,
        "seconds": round(elapsed, 3),
        "jobs_per_s": batches * BATCH / elapsed,
    }


async def _singles(socket_path: Path, total: int, run_at: str) -> dict[str, Any]:
    per_client = total // CLIENTS
    round_trips: list[float] = []

    async def one_client() -> None:
        async with Client(socket_path, timeout=120) as client:
            for _ in range(per_client):
                sent = time.perf_counter()
                await client.add_job({"job_type": "bench", "run_at": run_at})
                round_trips.append((time.perf_counter() - sent) * 1000.0)

    started = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for _ in range(CLIENTS):
            tg.start_soon(one_client)
    elapsed = time.perf_counter() - started
    return {
        "clients": CLIENTS,
        "jobs": per_client * CLIENTS,
        "jobs_per_s": per_client * CLIENTS / elapsed,
        **summary_ms(round_trips),
    }


def run(batches: int, singles: int, aps_jobs: int) -> Report:
    """Measure both; the daemon's jobs are a month ahead so nothing runs meanwhile."""
    run_at = format_instant(datetime.now(UTC) + timedelta(days=30))
    with workdir("nxb-add-") as tmp, running_daemon(tmp, daemon_config()) as daemon:
        batched = anyio.run(_batched, daemon.socket_path, batches, run_at)
        single = anyio.run(_singles, daemon.socket_path, singles, run_at)
    aps = run_apscheduler("add", "--jobs", str(aps_jobs))
    label = f"add_job, SQLAlchemy store, {aps_jobs:,} jobs"
    report = Report("2 add rate")
    report.rows += [
        Row(
            "batched adds/s (1,000 per call)",
            round(batched["jobs_per_s"]),
            None if aps is None else round(aps["jobs_per_s"]),
            theirs_label=label,
        ),
        Row(
            f"single adds/s ({CLIENTS} clients)",
            round(single["jobs_per_s"]),
            None if aps is None else round(aps["jobs_per_s"]),
            theirs_label=label,
        ),
        Row(
            "single add p50 ms",
            single["p50_ms"],
            None if aps is None else round(aps["p50_ms"], 3),
            "lower",
            label,
        ),
        Row(
            "single add p99 ms",
            single["p99_ms"],
            None if aps is None else round(aps["p99_ms"], 3),
            "lower",
            label,
        ),
    ]
    report.details = {"batched": batched, "single": single, "apscheduler": aps}
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batches", type=int, default=100)
    parser.add_argument("--singles", type=int, default=8000)
    parser.add_argument("--aps-jobs", type=int, default=2000)
    args = parser.parse_args()
    emit([run(args.batches, args.singles, args.aps_jobs)])


if __name__ == "__main__":
    main()
