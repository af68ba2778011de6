"""Job.transition and Job.with_status are hand-written for speed: they must behave
like dataclasses.replace."""

from __future__ import annotations

from dataclasses import fields, replace
from datetime import UTC, datetime, timedelta

import pytest

from nexus_schedd.model import Job, JobStatus, MisfirePolicy, OverlapPolicy, Run, RunOutcome
from nexus_schedd.model.job import LastResult
from nexus_schedd.model.recurrence import Recurrence, RecurrenceKind

T0 = datetime(2030, 1, 1, tzinfo=UTC)
CHANGEABLE = [f.name for f in fields(Job) if f.name not in {"status", "updated_at"}]


def _distinct_job(n: int) -> Job:
    """A pending job whose fields all hold values that differ with ``n``."""
    at = T0 + timedelta(days=n)
    return Job(
        id=f"01J000000000000000000000{n:02d}",
        job_type=f"type{n}",
        status=JobStatus.PENDING,
        run_at=at + timedelta(seconds=1),
        scheduled_for=at + timedelta(seconds=2),
        anchor_at=at + timedelta(seconds=3),
        created_at=at + timedelta(seconds=4),
        updated_at=at + timedelta(seconds=5),
        name=f"name{n}",
        target_id=f"target{n}",
        payload={"k": n},
        recurrence=Recurrence(RecurrenceKind.MINUTELY, interval=1 + n),
        priority=100 + n,
        max_retries=200 + n,
        retry_count=300 + n,
        occurrence_count=400 + n,
        timeout_s=500.0 + n,
        misfire=[MisfirePolicy.SKIP, MisfirePolicy.RUN_ALL][n % 2],
        misfire_grace_s=600.0 + n,
        overlap=[OverlapPolicy.ALLOW, OverlapPolicy.REPLACE][n % 2],
        jitter_s=700.0 + n,
        last_result=LastResult(bool(n % 2), f"out{n}", None, at, at, float(n)),
        static=bool(n % 2),
    )


def test_transition_carries_every_field_like_replace() -> None:
    job = _distinct_job(1)
    now = T0 + timedelta(hours=1)
    assert job.transition(JobStatus.RUNNING, now) == replace(
        job, status=JobStatus.RUNNING, updated_at=now
    )


@pytest.mark.parametrize("name", CHANGEABLE)
def test_transition_applies_each_change_to_its_own_field(name: str) -> None:
    job, other = _distinct_job(1), _distinct_job(2)
    value = getattr(other, name)
    now = T0 + timedelta(hours=1)
    changed = job.transition(JobStatus.RUNNING, now, **{name: value})
    assert changed == replace(job, status=JobStatus.RUNNING, updated_at=now, **{name: value})


@pytest.mark.parametrize("status", list(JobStatus))
def test_with_status_changes_the_status_and_nothing_else(status: JobStatus) -> None:
    paused = replace(_distinct_job(1), status=JobStatus.PAUSED, paused_until=T0 + timedelta(days=9))
    assert paused.with_status(status) == replace(paused, status=status)


def test_transition_rejects_unknown_and_reserved_fields() -> None:
    job = _distinct_job(1)
    with pytest.raises(TypeError, match="colour"):
        job.transition(JobStatus.RUNNING, T0, colour="red")
    with pytest.raises(TypeError, match="updated_at"):
        job.transition(JobStatus.RUNNING, T0, updated_at=T0)


def test_a_run_closed_carries_every_other_field_like_replace() -> None:
    # Run.closed is hand-written too (the engine closes every run with it).
    started = Run(
        id="01J00000000000000000000R01",
        job_id="01J00000000000000000000J01",
        scheduled_for=T0,
        attempt=3,
        started_at=T0 + timedelta(seconds=1),
        node="node-a",
        job_type="type1",
        lease_lost=True,
    )
    end = T0 + timedelta(seconds=2)
    closed = started.closed(end, RunOutcome.FAILURE, "boom", {"n": 1})
    assert closed == replace(
        started, finished_at=end, outcome=RunOutcome.FAILURE, error="boom", output={"n": 1}
    )
    assert {f.name for f in fields(Run)} == {
        *("id", "job_id", "scheduled_for", "attempt", "started_at", "node", "job_type"),
        *("lease_lost", "finished_at", "outcome", "error", "output"),
    }
