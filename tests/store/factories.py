"""Jobs and runs for store tests, with fixed times and explicit, sortable ids."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from nexus_schedd.model import Job, JobStatus, Run, RunOutcome

T0 = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)


def make_job(number: int, **changes: Any) -> Job:
    """Pending job ``J{number:04d}`` due ``number`` seconds after T0."""
    due = T0 + timedelta(seconds=number)
    job = Job(
        id=f"J{number:04d}",
        job_type="noop",
        status=JobStatus.PENDING,
        run_at=due,
        scheduled_for=due,
        anchor_at=due,
        created_at=T0,
        updated_at=T0,
    )
    return replace(job, **changes)


def make_run(number: int, job_id: str, **changes: Any) -> Run:
    """Finished successful run ``R{number:04d}`` of ``job_id`` started ``number`` minutes after T0."""
    started = T0 + timedelta(minutes=number)
    run = Run(
        id=f"R{number:04d}",
        job_id=job_id,
        job_type="noop",
        scheduled_for=started,
        attempt=1,
        started_at=started,
        finished_at=started + timedelta(seconds=1),
        outcome=RunOutcome.SUCCESS,
    )
    return replace(run, **changes)
