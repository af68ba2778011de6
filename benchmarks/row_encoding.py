"""The model and row-encoding part of the per-job path, without the event loop: for
each of N one-shot jobs, what the engine and the SQLite store do to it on the loop
(``Job.create``; ``Job.transition`` to running and a ``Run``; both rows encoded with
``job_row``/``run_row``; the finished ``Run``, a ``LastResult``, ``Job.transition`` to
completed; both rows encoded again; a run id from ``RunIds.next``).

    python -m benchmarks.row_encoding [--jobs 20000]

Meant for callgrind (instruction counts are repeatable on a busy machine): run it
at two sizes and divide the difference by the difference in jobs, which cancels
start-up. Prints the wall time per job too, for a quick look.
"""

from __future__ import annotations

import argparse
import random
import time
from datetime import UTC, datetime, timedelta

from nexus_schedd.engine.ids import RunIds
from nexus_schedd.model import Job, JobDefaults, JobSpec, JobStatus, LastResult, Run, RunOutcome
from nexus_schedd.store.rows import job_row, run_row


def one_job(
    spec: JobSpec, now: datetime, defaults: JobDefaults, ids: RunIds, n: int
) -> tuple[object, ...]:
    job = Job.create(spec, now, defaults, job_id=f"job-{n}")
    running = job.transition(JobStatus.RUNNING, now)
    assert job.run_at is not None and job.scheduled_for is not None
    run = Run(
        id=ids.next(now),
        job_id=job.id,
        scheduled_for=job.scheduled_for,
        attempt=1,
        started_at=now,
        node="bench",
        job_type=job.job_type,
    )
    started = (job_row(running), run_row(run))
    end = now + timedelta(microseconds=250)
    finished = run.closed(end, RunOutcome.SUCCESS)
    last = LastResult(
        success=True,
        output=None,
        error=None,
        started_at=run.started_at,
        finished_at=end,
        duration_ms=(end - run.started_at).total_seconds() * 1000.0,
    )
    done = running.transition(
        JobStatus.COMPLETED, end, last_result=last, occurrence_count=job.occurrence_count + 1
    )
    return (*started, job_row(done), run_row(finished))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--jobs", type=int, default=20_000)
    args = parser.parse_args()
    spec = JobSpec(job_type="noop", payload={"n": 1})
    defaults = JobDefaults()
    ids = RunIds(random.Random(1))
    base = datetime(2026, 1, 1, tzinfo=UTC)
    began = time.perf_counter()
    for n in range(args.jobs):
        # About ten jobs start per millisecond, as in the daemon at its rate.
        one_job(spec, base + timedelta(microseconds=100 * n), defaults, ids, n)
    elapsed = time.perf_counter() - began
    print(f"jobs: {args.jobs}  us/job: {elapsed / args.jobs * 1e6:.2f}")


if __name__ == "__main__":
    main()
