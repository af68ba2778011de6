"""Workload 1, throughput: N one-shot jobs due now, a no-op handler, the SQLite store
with durability full, uvloop; jobs/s from the first start to the last checkpoint.
APScheduler 3.11: AsyncIOScheduler with its SQLAlchemy job store on SQLite, and with
its memory store (jobs/s from resume to the last call).

    python -m benchmarks.throughput [--jobs 100000] [--aps-sql-jobs 10000]
        [--concurrency 64] [--wide-concurrency 256]

The daemon runs at its default ``max_concurrency`` (64) and once more with more
slots (``--wide-concurrency``, 0 to skip): start checkpoints go in batches of at
most half the slots, so the slots bound how many jobs share one commit.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import structlog

from benchmarks.common import Report, Row, emit, run_apscheduler
from benchmarks.engine_throughput import measure


def run(jobs: int, aps_sql_jobs: int, concurrency: int = 64, wide: int = 256) -> Report:
    """Measure both schedulers; APScheduler's SQL store gets fewer jobs (it is slow)."""
    # Per-run log events would measure the log sink, not the engine.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))

    def daemon(slots: int) -> dict[str, Any]:
        with tempfile.TemporaryDirectory(dir="/tmp") as tmp:
            return anyio.run(
                partial(measure, threads=True),
                jobs,
                slots,
                Path(tmp) / "bench.db",
                backend_options={"use_uvloop": True},
            )

    ours = daemon(concurrency)
    ours_wide = daemon(wide) if wide else None
    memory = run_apscheduler("throughput", "--jobs", str(jobs), "--store", "memory")
    sql = run_apscheduler("throughput", "--jobs", str(aps_sql_jobs), "--store", "sqlalchemy")
    report = Report("1 throughput")
    report.rows.append(
        Row(
            "durable jobs/s (SQLite)",
            ours["jobs_per_s"],
            None if sql is None else round(sql["jobs_per_s"]),
            theirs_label=f"SQLAlchemy store, {aps_sql_jobs:,} jobs",
        )
    )
    report.rows.append(
        Row(
            "jobs/s vs in-memory",
            ours["jobs_per_s"],
            None if memory is None else round(memory["jobs_per_s"]),
            theirs_label=f"memory store, {jobs:,} jobs",
        )
    )
    if ours_wide is not None:
        report.rows.append(
            Row(
                f"durable jobs/s (SQLite), max_concurrency {wide}",
                ours_wide["jobs_per_s"],
                None,
                theirs_label="-",
            )
        )
    for thread in ("event loop", "SQLite writer process"):
        cpu = ours.get(f"cpu {thread}")
        if cpu is not None:
            report.rows.append(
                Row(
                    f"CPU us per job, {thread} (user + sys)",
                    round(cpu["user_us"] + cpu["sys_us"], 1),
                    None,
                    better="lower",
                    theirs_label="-",
                )
            )
    report.details = {
        "nexus_schedd": ours,
        "nexus_schedd_wide": ours_wide,
        "apscheduler_sqlalchemy": sql,
        "apscheduler_memory": memory,
    }
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--aps-sql-jobs", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--wide-concurrency", type=int, default=256)
    args = parser.parse_args()
    emit([run(args.jobs, args.aps_sql_jobs, args.concurrency, args.wide_concurrency)])


if __name__ == "__main__":
    main()
