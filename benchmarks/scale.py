"""Workload 5, scale: N jobs already in the store (inserted straight through
SQLiteStore, pending, spread a second apart from tomorrow on); seconds from spawning
the daemon to READY=1, and its resident memory (VmRSS, and the peak VmHWM) once
ready. Repeated for each count in --jobs to show memory stays flat past the
in-memory window (``window_size`` pending jobs, 100,000 by default). APScheduler
3.11: AsyncIOScheduler on a SQLAlchemy store with --aps-jobs jobs.

    python -m benchmarks.scale [--jobs 1000000,5000000] [--aps-jobs 1000000]
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
    memory_mb,
    populate_store,
    run_apscheduler,
    running_daemon,
    workdir,
)

SETTLE_S = 2.0


def _ours(counts: list[int]) -> list[dict[str, Any]]:
    results = []
    first = datetime.now(UTC) + timedelta(days=1)
    with workdir("nxb-scale-") as tmp:
        db = tmp / "state" / "schedd.db"
        filled = 0
        for count in sorted(counts):
            # Grow the same store: 2M reuses the first 1M rows.
            anyio.run(
                populate_store,
                db,
                count - filled,
                first + timedelta(seconds=filled),
                timedelta(seconds=1),
            )
            filled = count
            with running_daemon(tmp, daemon_config()) as daemon:
                ready_s = daemon.ready_after_s
                time.sleep(SETTLE_S)
                memory = memory_mb(daemon.pid)
            results.append({"jobs": count, "ready_s": round(ready_s or 0.0, 2), **memory})
    return results


def _theirs(count: int) -> dict[str, Any] | None:
    with workdir("nxb-scale-aps-") as tmp:
        db = tmp / "aps.db"
        if run_apscheduler("populate", "--db", str(db), "--jobs", str(count)) is None:
            return None
        with apscheduler_server("--db", str(db)) as server:
            if server is None:
                return None
            pid, ready_s = server
            time.sleep(SETTLE_S)
            return {"jobs": count, "ready_s": round(ready_s, 2), **memory_mb(pid)}


def run(counts: list[int], aps_jobs: int) -> Report:
    """Measure the daemon at each count, APScheduler at ``aps_jobs``."""
    ours = _ours(counts)
    theirs = _theirs(aps_jobs) if aps_jobs else None
    report = Report("5 scale")
    label = f"SQLAlchemy store, {aps_jobs:,} jobs"
    for result in ours:
        same = theirs is not None and theirs["jobs"] == result["jobs"]
        n = f"{result['jobs']:,} jobs"
        report.rows += [
            Row(
                f"start to READY s, {n}",
                result["ready_s"],
                theirs["ready_s"] if same and theirs else None,
                "lower",
                label,
            ),
            Row(
                f"VmRSS MB, {n}",
                result["VmRSS"],
                theirs["VmRSS"] if same and theirs else None,
                "lower",
                label,
            ),
            Row(
                f"VmHWM MB, {n}",
                result["VmHWM"],
                theirs["VmHWM"] if same and theirs else None,
                "lower",
                label,
            ),
        ]
    report.details = {"nexus_schedd": ours, "apscheduler": theirs}
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", default="1000000,5000000")
    parser.add_argument("--aps-jobs", type=int, default=1_000_000)
    args = parser.parse_args()
    counts = [int(part) for part in args.jobs.split(",") if part]
    emit([run(counts, args.aps_jobs)])


if __name__ == "__main__":
    main()
