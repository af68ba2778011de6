"""Requeue (SPEC 15): failed_permanent and canceled jobs back to pending, one at a
time and in bulk, on the memory and SQLite stores (PostgreSQL: test_multinode)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from nexus_schedd.clock import VirtualClock
from nexus_schedd.errors import InvalidJobState, JobExists
from nexus_schedd.model import (
    Job,
    JobResult,
    JobSpec,
    JobStatus,
    Recurrence,
    RecurrenceKind,
    RunOutcome,
)
from nexus_schedd.model.queries import RequeueFilter, RunFilter
from nexus_schedd.store.base import Store
from tests.engine.harness import (
    T0,
    ScriptedHandler,
    TrackedStore,
    at,
    engine_running,
    is_final,
    wait_until,
)

pytestmark = pytest.mark.anyio

HOURLY = Recurrence(RecurrenceKind.HOURLY, timezone="UTC")


def failing_until(clock: VirtualClock, fail_before: float, error: str = "boom") -> Any:
    """A behaviour that fails (no retry) before ``T0 + fail_before`` and succeeds after."""

    async def behave(job: Job, ctx: Any) -> JobResult:
        if clock.now() < at(fail_before):
            return JobResult.failure(error, should_retry=False)
        return JobResult.success({"ok": True})

    return behave


def pending(job: Job) -> bool:
    return job.status is JobStatus.PENDING


async def outcomes(store: Store, job_id: str) -> list[RunOutcome | None]:
    page = await store.list_runs(RunFilter(job_id=job_id), 100)
    return [run.outcome for run in reversed(page.items)]


async def test_a_failed_one_shot_runs_again_with_the_same_key_and_retries_reset(
    store: TrackedStore,
) -> None:
    clock = VirtualClock(T0)
    handler = ScriptedHandler(clock, behaviour=failing_until(clock, 100))
    async with engine_running(store, clock, handler) as engine:
        job = await engine.add_job(JobSpec(job_type="work", run_at=at(10), max_retries=2))
        failed = await wait_until(engine, job.id, is_final, store)
        assert failed.status is JobStatus.FAILED_PERMANENT
        clock.advance_to(at(200))
        back = await engine.requeue_job(job.id, at(300))
        assert (back.status, back.run_at, back.retry_count) == (JobStatus.PENDING, at(300), 0)
        assert (await store.get_job(job.id)) == back  # on disk when it returns
        done = await wait_until(engine, job.id, is_final, store)
    assert done.status is JobStatus.COMPLETED
    first, second = handler.calls_of(job.id)
    assert second.at == at(300)
    assert first.key == second.key  # the same occurrence, run again
    assert await outcomes(store, job.id) == [RunOutcome.FAILURE, RunOutcome.SUCCESS]


async def test_a_canceled_recurring_job_resumes_at_its_next_anchored_occurrence(
    store: TrackedStore,
) -> None:
    clock = VirtualClock(T0)
    async with engine_running(store, clock, ScriptedHandler(clock)) as engine:
        job = await engine.add_job(JobSpec(job_type="work", run_at=at(0), recurrence=HOURLY))
        await engine.cancel_job(job.id)
        clock.advance_to(at(90 * 60))
        back = await engine.requeue_job(job.id)
    assert back.status is JobStatus.PENDING
    assert back.scheduled_for == back.run_at == at(2 * 3600)  # T0 + 2 h, not 90 min


@pytest.mark.parametrize("status", ["pending", "running", "paused", "completed"])
async def test_only_failed_permanent_or_canceled_jobs_are_requeued(
    store: TrackedStore, status: str
) -> None:
    clock = VirtualClock(T0)

    async def block(job: Job, ctx: Any) -> JobResult:
        await clock.sleep_until(at(10_000))
        return JobResult.success()

    handler = ScriptedHandler(clock, behaviour=block)
    async with engine_running(store, clock, handler) as engine:
        job = await engine.add_job(JobSpec(job_type="work", run_at=at(3600)))
        if status == "running":
            job = await engine.reschedule_job(job.id, at(1))
            job = await wait_until(engine, job.id, lambda j: j.status.value == status, store)
        elif status == "paused":
            job = await engine.pause_job(job.id)
        elif status == "completed":
            handler.behaviour = None
            job = await engine.reschedule_job(job.id, at(1))
            job = await wait_until(engine, job.id, is_final, store)
        with pytest.raises(InvalidJobState) as refused:
            await engine.requeue_job(job.id)
        assert f"is {status}" in refused.value.message
        assert (await engine.get_job(job.id)).status.value == status
        if status == "running":
            await engine.cancel_job(job.id)


async def test_a_name_a_live_job_took_meanwhile_refuses_the_requeue(store: TrackedStore) -> None:
    clock = VirtualClock(T0)
    async with engine_running(store, clock, ScriptedHandler(clock)) as engine:
        old = await engine.add_job(JobSpec(job_type="work", name="nightly", run_at=at(3600)))
        await engine.cancel_job(old.id)
        new = await engine.add_job(JobSpec(job_type="work", name="nightly", run_at=at(7200)))
        with pytest.raises(JobExists) as refused:
            await engine.requeue_job(old.id)
        assert refused.value.job_id == new.id
        assert (await engine.get_job(old.id)).status is JobStatus.CANCELED
        await engine.cancel_job(new.id)
        back = await engine.requeue_job(old.id, at(9000))  # the name is free again
        assert back.status is JobStatus.PENDING
        assert (await engine.get_job("nightly")).id == old.id
        await engine.cancel_job(old.id)


async def test_a_schedule_with_no_occurrence_left_cannot_be_requeued(store: TrackedStore) -> None:
    clock = VirtualClock(T0)
    async with engine_running(store, clock, ScriptedHandler(clock)) as engine:
        ending = Recurrence(RecurrenceKind.HOURLY, timezone="UTC", ends_at=at(3 * 3600))
        job = await engine.add_job(JobSpec(job_type="work", run_at=at(3600), recurrence=ending))
        await engine.cancel_job(job.id)
        clock.advance_to(at(4 * 3600))
        with pytest.raises(InvalidJobState) as refused:
            await engine.requeue_job(job.id)
        assert "no occurrence at or after" in refused.value.message
        counted = Recurrence(RecurrenceKind.HOURLY, timezone="UTC", max_occurrences=2)
        twice = await engine.add_job(JobSpec(job_type="work", run_at=at(4 * 3600 + 1)))
        twice = await engine.reschedule_job(twice.id, at(4 * 3600 + 1), counted)
        twice = await wait_until(engine, twice.id, is_final, store)
        assert twice.status is JobStatus.COMPLETED
        assert twice.occurrence_count == 2


async def test_bulk_requeue_takes_what_the_filter_matches_in_one_commit(
    store: TrackedStore,
) -> None:
    clock = VirtualClock(T0)
    handler = ScriptedHandler(
        clock, types=frozenset({"work", "mail"}), behaviour=failing_until(clock, 10**6)
    )
    written: list[list[Job]] = []

    async def record(jobs: list[Job], runs: list[Any]) -> None:
        written.append(jobs)

    async with engine_running(store, clock, handler) as engine:
        specs = [
            JobSpec(job_type="work", run_at=at(1), max_retries=0, target_id="t1"),
            JobSpec(job_type="work", run_at=at(2), max_retries=0, target_id="t2"),
            JobSpec(job_type="work", run_at=at(3), max_retries=0, target_id="t1"),
            JobSpec(job_type="mail", run_at=at(4), max_retries=0),
        ]
        failed = [await engine.add_job(spec) for spec in specs]
        canceled = await engine.add_job(JobSpec(job_type="work", run_at=at(5000)))
        await engine.cancel_job(canceled.id)
        for job in failed:
            await wait_until(engine, job.id, is_final, store)

        by_target = await engine.requeue_jobs(RequeueFilter(job_type="work", target_id="t1"))
        assert sorted(by_target.ids) == sorted([failed[0].id, failed[2].id])
        assert not by_target.more and not by_target.skipped
        for job in failed[:3]:
            await wait_until(engine, job.id, is_final, store)

        store.before_write = record  # type: ignore[method-assign]
        limited = await engine.requeue_jobs(RequeueFilter(job_type="work", limit=2))
        # Oldest first: ids (ULIDs) of jobs added in the same millisecond sort at random.
        assert limited.ids == sorted(job.id for job in failed[:3])[:2] and limited.more
        assert any(set(limited.ids) <= {j.id for j in batch} for batch in written)
        for job_id in limited.ids:
            await wait_until(engine, job_id, is_final, store)

        only_canceled = await engine.requeue_jobs(
            RequeueFilter(statuses=frozenset({JobStatus.CANCELED}))
        )
        assert only_canceled.ids == [canceled.id]
        nothing = await engine.requeue_jobs(RequeueFilter(error_contains="no such error"))
        assert nothing.ids == []
        clock.advance_to(clock.now() + timedelta(hours=1))
        recent = await engine.requeue_jobs(RequeueFilter(since=clock.now()))
        assert recent.ids == []
        by_error = await engine.requeue_jobs(RequeueFilter(job_type="mail", error_contains="BOO"))
        assert by_error.ids == [failed[3].id]


async def test_bulk_requeue_skips_a_match_whose_name_is_taken(store: TrackedStore) -> None:
    clock = VirtualClock(T0)
    async with engine_running(store, clock, ScriptedHandler(clock)) as engine:
        first = await engine.add_job(JobSpec(job_type="work", name="report", run_at=at(3600)))
        await engine.cancel_job(first.id)
        second = await engine.add_job(JobSpec(job_type="work", name="report", run_at=at(3600)))
        await engine.cancel_job(second.id)
        free = await engine.add_job(JobSpec(job_type="work", run_at=at(3600)))
        await engine.cancel_job(free.id)
        report = await engine.requeue_jobs(RequeueFilter(statuses=frozenset({JobStatus.CANCELED})))
    # Oldest first (by id): the first of the two "report" jobs takes the name.
    one, two = sorted([first.id, second.id])
    assert sorted(report.ids) == sorted([one, free.id])
    assert [job_id for job_id, _reason in report.skipped] == [two]
    assert "took the name 'report'" in report.skipped[0][1]
