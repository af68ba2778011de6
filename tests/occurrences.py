"""The instants a job runs at from its current occurrence, as the engine walks
them (``Job.next_run_time`` from each one), for tests that check a schedule."""

from __future__ import annotations

from dataclasses import replace

from nexus_schedd.model import Job


def walk(job: Job, count: int) -> list[str]:
    """``job``'s current occurrence and the ``count - 1`` after it, ISO-formatted in
    the zone each instant carries."""
    assert job.scheduled_for is not None
    seen = [job.scheduled_for.isoformat()]
    for _ in range(count - 1):
        following = job.next_run_time()
        assert following is not None, f"the schedule ended after {seen}"
        job = replace(job, scheduled_for=following, run_at=following)
        seen.append(following.isoformat())
    return seen
