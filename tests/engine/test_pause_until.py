"""Pause until (SPEC 15): a paused job resumes by itself at its time, across
restarts, on the engine's own timer; on the memory and SQLite stores, in virtual
time (PostgreSQL: test_multinode)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from nexus_schedd.clock import VirtualClock
from nexus_schedd.errors import InvalidSpec
from nexus_schedd.model import JobSpec, JobStatus, MisfirePolicy, Recurrence, RecurrenceKind
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


async def test_a_job_paused_until_a_time_resumes_then_and_runs_what_it_missed_once(
    store: TrackedStore,
) -> None:
    clock = VirtualClock(T0)
    handler = ScriptedHandler(clock)
    async with engine_running(store, clock, handler) as engine:
        job = await engine.add_job(
            JobSpec(
                job_type="work", run_at=at(600), recurrence=HOURLY, misfire=MisfirePolicy.RUN_ONCE
            )
        )
        paused = await engine.pause_job(job.id, until=at(3 * 3600 + 30))
        assert (paused.status, paused.paused_until) == (JobStatus.PAUSED, at(3 * 3600 + 30))
        assert (await store.get_job(job.id)) == paused  # durable when it returns
        await wait_until(engine, job.id, lambda j: len(handler.calls_of(job.id)) >= 2, store)
    calls = handler.calls_of(job.id)
    # Missed 00:10, 01:10, 02:10: run_once runs the latest of them at 03:00:30,
    # then the schedule goes on at 03:10.
    assert [call.at for call in calls[:2]] == [at(3 * 3600 + 30), at(3 * 3600 + 600)]
    assert calls[0].scheduled_for == at(2 * 3600 + 600)


async def test_the_pause_survives_a_restart_and_resumes_on_time(store: TrackedStore) -> None:
    clock = VirtualClock(T0)
    handler = ScriptedHandler(clock)
    async with engine_running(store, clock, handler) as engine:
        job = await engine.add_job(JobSpec(job_type="work", run_at=at(60)))
        await engine.pause_job(job.id, until=at(7200))
    # Stopped; a new engine on the same store finds the time on disk.
    async with engine_running(store, clock, handler) as engine:
        done = await wait_until(engine, job.id, is_final, store)
    assert done.status is JobStatus.COMPLETED
    assert [call.at for call in handler.calls_of(job.id)] == [at(7200)]


async def test_resume_or_a_new_pause_before_the_time_wins_over_the_old_timer(
    store: TrackedStore,
) -> None:
    clock = VirtualClock(T0)
    handler = ScriptedHandler(clock)
    async with engine_running(store, clock, handler) as engine:
        early = await engine.add_job(JobSpec(job_type="work", run_at=at(5000)))
        later = await engine.add_job(JobSpec(job_type="work", run_at=at(60)))
        forever = await engine.add_job(JobSpec(job_type="work", run_at=at(60)))
        await engine.pause_job(early.id, until=at(1000))
        await engine.resume_job(early.id)  # resumed by hand: runs at its own 5000
        await engine.pause_job(later.id, until=at(1000))
        await engine.pause_job(later.id, until=at(3000))  # moved: resumes at 3000
        await engine.pause_job(forever.id, until=at(1000))
        await engine.pause_job(forever.id)  # the time dropped: paused until resumed
        await wait_until(engine, early.id, is_final, store)
        await wait_until(engine, later.id, is_final, store)
        still = await engine.get_job(forever.id)
    assert [call.at for call in handler.calls_of(early.id)] == [at(5000)]
    assert [call.at for call in handler.calls_of(later.id)] == [at(3000)]
    assert (still.status, still.paused_until) == (JobStatus.PAUSED, None)
    assert handler.calls_of(forever.id) == []


async def test_a_pause_until_now_or_earlier_is_refused_and_changes_nothing(
    store: TrackedStore,
) -> None:
    clock = VirtualClock(T0)
    async with engine_running(store, clock, ScriptedHandler(clock)) as engine:
        job = await engine.add_job(JobSpec(job_type="work", run_at=at(3600)))
        for until in (T0, T0 - timedelta(days=1)):
            with pytest.raises(InvalidSpec) as refused:
                await engine.pause_job(job.id, until=until)
            assert refused.value.field == "until" and "not in the future" in refused.value.reason
        assert (await engine.get_job(job.id)).status is JobStatus.PENDING
        await engine.cancel_job(job.id)
