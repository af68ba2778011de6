"""Workload 3, lateness: RATE jobs/s spread evenly over SECONDS against a real daemon
(SQLite, durability full); each attempt's start lateness against its scheduled_for is
measured by the handler (benchmarks.bench_handlers, loaded as a ``module:attr``
factory) on the wall clock. APScheduler 3.11: the same spread, measured by the job
function, with its memory store and with its SQLAlchemy store.

    python -m benchmarks.lateness [--rate 1000] [--seconds 60] [--log-level info]
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


async def _add_spread(socket_path: Path, first: datetime, rate: int, count: int) -> None:
    async with Client(socket_path, timeout=120) as client:
        for offset in range(0, count, 1000):
            await client.add_jobs(
                [
                    {
                        "job_type": "bench.lateness",
                        "run_at": format_instant(first + timedelta(seconds=index / rate)),
                    }
                    for index in range(offset, min(count, offset + 1000))
                ]
            )


def _ours(rate: int, seconds: float, log_level: str) -> dict[str, Any]:
    count = int(rate * seconds)
    with workdir("nxb-late-") as tmp:
        samples = tmp / "lateness.txt"
        config = daemon_config(extra=f'lateness_file = "{samples}"', log_level=log_level)
        with running_daemon(tmp, config) as daemon:
            # Far enough ahead that every add is on disk before the first is due.
            first = datetime.now(UTC) + timedelta(seconds=2 + count / 5000)
            anyio.run(_add_spread, daemon.socket_path, first, rate, count)
            deadline = time.monotonic() + (first - datetime.now(UTC)).total_seconds() + seconds + 30
            while time.monotonic() < deadline:
                if samples.exists() and samples.read_text().count("\n") >= count:
                    break
                time.sleep(0.5)
        values = [float(line) for line in samples.read_text().split()]
    return {"jobs": count, "ran": len(values), **summary_ms(values)}


def _theirs(rate: int, seconds: float, store: str) -> dict[str, Any] | None:
    result = run_apscheduler(
        "lateness", "--rate", str(rate), "--seconds", str(seconds), "--store", store
    )
    if result is None:
        return None
    values = result.pop("lateness_ms")
    return {**result, **summary_ms(values)}


def run(rate: int, seconds: float, log_level: str = "info") -> Report:
    """Measure the daemon, then APScheduler with each store."""
    ours = _ours(rate, seconds, log_level)
    memory = _theirs(rate, seconds, "memory")
    sql = _theirs(rate, seconds, "sqlalchemy")
    report = Report("3 lateness")
    for label, theirs in (("memory store", memory), ("SQLAlchemy store", sql)):
        for key in ("p50_ms", "p99_ms", "max_ms"):
            report.rows.append(
                Row(
                    f"start lateness {key[:-3]} ms ({rate}/s, {seconds:g} s)",
                    ours[key],
                    None if theirs is None else theirs[key],
                    "lower",
                    label,
                )
            )
    report.details = {
        "nexus_schedd": {**ours, "log_level": log_level},
        "apscheduler_memory": memory,
        "apscheduler_sqlalchemy": sql,
    }
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rate", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--log-level", default="info", choices=["info", "warning"])
    args = parser.parse_args()
    emit([run(args.rate, args.seconds, args.log_level)])


if __name__ == "__main__":
    main()
