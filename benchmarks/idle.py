"""Workload 4, idle: a real daemon with N jobs scheduled a day or more ahead; its
wake-ups (voluntary context switches summed over all its threads, from
/proc/PID/task/*/status) and CPU seconds over SECONDS. No watchdog is configured, so
every wake-up counted is the daemon's own. APScheduler 3.11: AsyncIOScheduler with
the same number of future jobs in its SQLAlchemy store.

    python -m benchmarks.idle [--jobs 100000] [--seconds 30]
"""

from __future__ import annotations

import argparse
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio

from benchmarks.common import (
    Report,
    Row,
    apscheduler_server,
    daemon_config,
    emit,
    measure_idle,
    populate_store,
    run_apscheduler,
    running_daemon,
    workdir,
)

SETTLE_S = 1.0


def run(jobs: int, seconds: float) -> Report:
    """Fill each store, start each scheduler, let it settle, then count."""
    first = datetime.now(UTC) + timedelta(days=1)
    ours: dict[str, Any]
    with workdir("nxb-idle-") as tmp:
        config = daemon_config()
        db = tmp / "state" / "schedd.db"
        anyio.run(populate_store, db, jobs, first, timedelta(seconds=1))
        with running_daemon(tmp, config) as daemon:
            time.sleep(SETTLE_S)
            sample = measure_idle(daemon.pid, seconds)
            ours = {"jobs": jobs, **sample.__dict__}
    theirs: dict[str, Any] | None = None
    with workdir("nxb-idle-aps-") as tmp:
        db = tmp / "aps.db"
        if run_apscheduler("populate", "--db", str(db), "--jobs", str(jobs)) is not None:
            with apscheduler_server("--db", str(db)) as server:
                if server is not None:
                    time.sleep(SETTLE_S)
                    sample = measure_idle(server[0], seconds)
                    theirs = {"jobs": jobs, **sample.__dict__}
    label = f"SQLAlchemy store, {jobs:,} jobs"
    report = Report("4 idle")
    report.rows += [
        Row(
            f"wake-ups in {seconds:g} s",
            ours["wakeups"],
            None if theirs is None else theirs["wakeups"],
            "lower",
            label,
        ),
        Row(
            f"CPU seconds in {seconds:g} s",
            ours["cpu_s"],
            None if theirs is None else theirs["cpu_s"],
            "lower",
            label,
        ),
    ]
    report.details = {"nexus_schedd": ours, "apscheduler": theirs}
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args()
    emit([run(args.jobs, args.seconds)])


if __name__ == "__main__":
    main()
