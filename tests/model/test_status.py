"""The status transition table of SPEC section 2, all 36 pairs."""

from __future__ import annotations

import itertools
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from nexus_schedd.errors import InvalidJobState
from nexus_schedd.model import Job, JobDefaults, JobSpec, JobStatus

P, R, Z, C, F, X = (
    JobStatus.PENDING,
    JobStatus.RUNNING,
    JobStatus.PAUSED,
    JobStatus.COMPLETED,
    JobStatus.FAILED_PERMANENT,
    JobStatus.CANCELED,
)
# Requeue (SPEC 15) is the only way out of failed_permanent and canceled.
ALLOWED = {
    (P, R), (P, Z), (P, X), (R, P), (R, C), (R, F), (R, X), (Z, P), (Z, X), (F, P), (X, P)
}  # fmt: skip
ALL_PAIRS = list(itertools.product(JobStatus, repeat=2))
NOW = datetime(2025, 1, 1, tzinfo=UTC)


def test_the_table_covers_all_36_pairs() -> None:
    assert len(ALL_PAIRS) == 36
    assert {pair for pair in ALL_PAIRS if pair[0].can_transition_to(pair[1])} == ALLOWED


@pytest.mark.parametrize(("old", "new"), sorted(ALLOWED))
def test_allowed_transition_changes_status(old: JobStatus, new: JobStatus) -> None:
    job = Job.create(JobSpec(job_type="log"), NOW, JobDefaults())
    job = replace(job, status=old)
    moved = job.transition(new, NOW)
    assert moved.status is new
    assert old.ensure_transition(new) is new


@pytest.mark.parametrize(("old", "new"), sorted(set(ALL_PAIRS) - ALLOWED))
def test_refused_transition_raises_invalid_job_state(old: JobStatus, new: JobStatus) -> None:
    job = Job.create(JobSpec(job_type="log"), NOW, JobDefaults())
    job = replace(job, status=old)
    with pytest.raises(InvalidJobState) as caught:
        job.transition(new, NOW)
    assert caught.value.status == old.value
    assert f"a {old.value} job cannot become {new.value}" in caught.value.message


@pytest.mark.parametrize("status", list(JobStatus))
def test_final_statuses_are_completed_and_the_two_a_requeue_leaves(status: JobStatus) -> None:
    assert status.is_final == (status in {C, F, X})
    assert status.is_final == (status is C or (status.can_transition_to(P) and status in {F, X}))
    assert status.can_execute == (status is P)
