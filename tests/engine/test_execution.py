"""One-shot jobs, recurrences, results, retries and timeouts on the virtual clock."""

from __future__ import annotations

import itertools
from dataclasses import replace
from datetime import timedelta
from typing import Any

import anyio
import pytest

from nexus_schedd.clock import VirtualClock
from nexus_schedd.engine import EngineSettings
from nexus_schedd.handlers.base import HandlerContext
from nexus_schedd.model import Job, JobResult, JobSpec, JobStatus, Recurrence, RecurrenceKind
from nexus_schedd.model.status import RunOutcome
from tests.engine.harness import (
    EXACT,
    T0,
    ScriptedHandler,
    TrackedStore,
    at,
    engine_running,
    is_final,
    quiesce,
    sleeper,
    wait_until,
)

pytestmark = pytest.mark.anyio


async def test_one_shot_job_runs_once_at_its_time_and_completes(store: TrackedStore) -> None:
    clock = VirtualClock(T0)
    handler = ScriptedHandler(clock)
    async with engine_running(store, clock, handler) as engine:
        job = await engine.add_job(JobSpec(job_type="work", run_at=at(600), payload={"n": 1}))
        done = await wait_until(engine, job.id, is_final, store)
    assert done.status is JobStatus.COMPLETED
    assert [call.at for call in handler.calls] == [at(600)]
    assert handler.calls[0].key == f"{job.id}:0"
    assert handler.calls[0].deadline == at(600 + 300)
    runs = await store.runs_of(job.id)
    assert [(r.outcome, r.scheduled_for, r.attempt) for r in runs] == [
        (RunOutcome.SUCCESS, at(600), 1)
    ]
    assert runs[0].output == {"ok": True}
    assert done.last_result is not None and done.last_result.success
    assert done.occurrence_count == 1


@pytest.mark.parametrize(
    ("recurrence", "first", "expected"),
    [
        (Recurrence(RecurrenceKind.MINUTELY, interval=2), at(0), [at(0), at(120), at(240)]),
        (Recurrence(RecurrenceKind.HOURLY), at(0), [at(0), at(3600), at(7200)]),
        (Recurrence(RecurrenceKind.DAILY), at(0), [at(0), at(86400), at(2 * 86400)]),
        (Recurrence(RecurrenceKind.WEEKLY), at(0), [at(0), at(7 * 86400), at(14 * 86400)]),
        (
            Recurrence(RecurrenceKind.MONTHLY),
            T0.replace(month=1, day=31),
            [
                T0.replace(month=1, day=31),
                T0.replace(month=2, day=28),
                T0.replace(month=3, day=31),
            ],
        ),
        (
            Recurrence(RecurrenceKind.YEARLY),
            at(0),
            [at(0), T0.replace(year=2026), T0.replace(year=2027)],
        ),
        (
            Recurrence(RecurrenceKind.CRON, cron="30 9 * * 1-5"),
            at(0),
            [at(5400), at(5400 + 86400), at(5400 + 2 * 86400)],
        ),
    ],
    ids=["minutely", "hourly", "daily", "weekly", "monthly", "yearly", "cron"],
)
async def test_recurring_job_runs_exactly_max_occurrences_on_schedule(
    store: TrackedStore, recurrence: Recurrence, first: Any, expected: list[Any]
) -> None:
    clock = VirtualClock(T0)
    handler = ScriptedHandler(clock)
    limited = Recurrence(recurrence.kind, recurrence.interval, recurrence.cron, max_occurrences=3)
    async with engine_running(store, clock, handler) as engine:
        job = await engine.add_job(JobSpec(job_type="work", run_at=first, recurrence=limited))
        done = await wait_until(engine, job.id, is_final, store)
    assert done.status is JobStatus.COMPLETED
    assert done.occurrence_count == 3
    assert [call.scheduled_for for call in handler.calls] == expected
    assert [call.at for call in handler.calls] == expected
    assert [call.key for call in handler.calls] == [f"{job.id}:{n}" for n in range(3)]


async def test_recurrence_stops_at_ends_at(store: TrackedStore) -> None:
    clock = VirtualClock(T0)
    handler = ScriptedHandler(clock)
    recurrence = Recurrence(RecurrenceKind.HOURLY, ends_at=at(3 * 3600))
    async with engine_running(store, clock, handler) as engine:
        job = await engine.add_job(JobSpec(job_type="work", run_at=at(0), recurrence=recurrence))
        done = await wait_until(engine, job.id, is_final, store)
    assert done.status is JobStatus.COMPLETED
    assert [call.at for call in handler.calls] == [at(h * 3600) for h in range(4)]


def failing(error: str = "boom", **kwargs: Any) -> Any:
    async def behave(job: Job, ctx: HandlerContext) -> JobResult:
        return JobResult.failure(error, **kwargs)

    return behave


async def test_retries_follow_backoff_doubling_from_60_capped_at_3600(
    store: TrackedStore,
) -> None:
    clock = VirtualClock(T0)
    handler = ScriptedHandler(clock, behaviour=failing())
    async with engine_running(store, clock, handler) as engine:
        job = await engine.add_job(JobSpec(job_type="work", run_at=at(0), max_retries=8))
        done = await wait_until(engine, job.id, is_final, store)
    starts = [call.at for call in handler.calls]
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(starts)]
    assert gaps == [60, 120, 240, 480, 960, 1920, 3600, 3600]
    assert [call.attempt for call in handler.calls] == list(range(1, 10))
    assert {call.key for call in handler.calls} == {f"{job.id}:0"}
    assert done.status is JobStatus.FAILED_PERMANENT
    assert done.retry_count == 8
    runs = await store.runs_of(job.id)
    assert [run.outcome for run in runs] == [RunOutcome.FAILURE] * 9
    assert runs[-1].error == "boom"


async def test_retry_uses_handler_delay_over_backoff(store: TrackedStore) -> None:
    clock = VirtualClock(T0)
    handler = ScriptedHandler(clock, behaviour=failing(retry_delay_s=5))
    async with engine_running(store, clock, handler) as engine:
        job = await engine.add_job(JobSpec(job_type="work", run_at=at(0), max_retries=2))
        await wait_until(engine, job.id, is_final, store)
    assert [call.at for call in handler.calls] == [at(0), at(5), at(10)]


async def test_should_retry_false_fails_permanently_at_once(store: TrackedStore) -> None:
    clock = VirtualClock(T0)
    handler = ScriptedHandler(clock, behaviour=failing("bad input", should_retry=False))
    async with engine_running(store, clock, handler) as engine:
        job = await engine.add_job(JobSpec(job_type="work", run_at=at(0), max_retries=5))
        done = await wait_until(engine, job.id, is_final, store)
    assert len(handler.calls) == 1
    assert done.status is JobStatus.FAILED_PERMANENT
    assert done.last_result is not None and done.last_result.error == "bad input"


async def _raise(job: Job, ctx: HandlerContext) -> JobResult:
    raise RuntimeError("handler exploded")


async def _hang(job: Job, ctx: HandlerContext) -> JobResult:
    await anyio.sleep_forever()
    raise AssertionError("unreachable")


async def _garbage(job: Job, ctx: HandlerContext) -> Any:
    return {"not": "a JobResult"}


@pytest.mark.parametrize(
    ("behaviour", "outcome", "error_part"),
    [
        (_raise, RunOutcome.FAILURE, "RuntimeError: handler exploded"),
        (_hang, RunOutcome.TIMEOUT, "timed out after 30 s"),
        (_garbage, RunOutcome.FAILURE, "handler returned dict, not a JobResult"),
    ],
    ids=["exception", "timeout", "non-jobresult"],
)
async def test_exception_timeout_and_garbage_are_retriable_failures(
    store: TrackedStore, behaviour: Any, outcome: RunOutcome, error_part: str
) -> None:
    clock = VirtualClock(T0)
    handler = ScriptedHandler(clock, behaviour=behaviour)
    async with engine_running(store, clock, handler) as engine:
        job = await engine.add_job(
            JobSpec(job_type="work", run_at=at(0), max_retries=1, timeout_s=30)
        )
        done = await wait_until(engine, job.id, is_final, store)
    assert done.status is JobStatus.FAILED_PERMANENT
    runs = await store.runs_of(job.id)
    assert [run.outcome for run in runs] == [outcome, outcome]
    assert all(error_part in (run.error or "") for run in runs)
    if outcome is RunOutcome.TIMEOUT:
        assert all(run.duration_ms == 30_000 for run in runs)
    assert [call.at for call in handler.calls][1] >= at(60)


async def test_recurring_job_carries_on_after_exhausting_retries(store: TrackedStore) -> None:
    clock = VirtualClock(T0)
    handler = ScriptedHandler(clock, behaviour=failing())
    recurrence = Recurrence(RecurrenceKind.DAILY, max_occurrences=2)
    async with engine_running(store, clock, handler) as engine:
        job = await engine.add_job(
            JobSpec(job_type="work", run_at=at(0), recurrence=recurrence, max_retries=1)
        )
        done = await wait_until(engine, job.id, is_final, store)
    assert [call.at for call in handler.calls] == [at(0), at(60), at(86400), at(86460)]
    assert [call.key for call in handler.calls] == [
        f"{job.id}:0",
        f"{job.id}:0",
        f"{job.id}:1",
        f"{job.id}:1",
    ]
    assert done.status is JobStatus.COMPLETED
    assert done.occurrence_count == 2
    assert done.last_result is not None and not done.last_result.success


async def test_unknown_job_type_is_refused_at_add(store: TrackedStore) -> None:
    from nexus_schedd.errors import UnknownJobType

    clock = VirtualClock(T0)
    async with engine_running(store, clock, ScriptedHandler(clock)) as engine:
        with pytest.raises(UnknownJobType):
            await engine.add_job(JobSpec(job_type="nobody-runs-this"))


async def test_name_makes_add_idempotent_and_refuses_a_different_definition(
    store: TrackedStore,
) -> None:
    from nexus_schedd.errors import JobExists

    clock = VirtualClock(T0)
    async with engine_running(store, clock, ScriptedHandler(clock)) as engine:
        spec = JobSpec(job_type="work", name="report", run_at=at(3600), payload={"a": 1})
        first = await engine.add_job(spec)
        again = await engine.add_job(spec)
        assert again.id == first.id
        with pytest.raises(JobExists):
            await engine.add_job(JobSpec(job_type="work", name="report", payload={"a": 2}))
        # The first due time is part of the definition when the add gives one; a
        # retried relative add lands seconds later and is still the same job.
        with pytest.raises(JobExists):
            await engine.add_job(replace(spec, run_at=at(7200)))
        assert (await engine.add_job(replace(spec, run_at=at(3605)))).id == first.id
        recurring = JobSpec(
            job_type="work", name="daily", recurrence=Recurrence(RecurrenceKind.DAILY)
        )
        daily = await engine.add_job(recurring)
        clock.advance(60)
        assert (await engine.add_job(recurring)).id == daily.id  # "now" matches on the rest


async def test_a_timeout_or_cancel_ends_only_its_own_attempt_on_a_worker(
    store: TrackedStore,
) -> None:
    """Attempts share their worker's cancel scope: a timed-out or canceled attempt
    must leave the attempts after it on the same worker untouched."""
    clock = VirtualClock(T0)

    async def behave(job: Job, ctx: HandlerContext) -> Any:
        if job.name in ("slow", "canceled"):
            await clock.sleep_until(clock.now() + timedelta(seconds=100))
        return JobResult.success()

    handler = ScriptedHandler(clock, behaviour=behave)
    settings = EngineSettings(max_concurrency=1, defaults=EXACT)
    async with engine_running(store, clock, handler, settings=settings) as engine:

        def spec(name: str, priority: int, **changes: Any) -> JobSpec:
            return JobSpec(
                job_type="work",
                run_at=at(0),
                name=name,
                priority=priority,
                max_retries=0,
                **changes,
            )

        slow, after_slow = await engine.add_jobs(
            [spec("slow", 9, timeout_s=5), spec("after-slow", 8)]
        )
        assert (await wait_until(engine, slow.id, is_final, store)).status is (
            JobStatus.FAILED_PERMANENT
        )
        assert (await wait_until(engine, after_slow.id, is_final, store)).status is (
            JobStatus.COMPLETED
        )
        canceled, after_cancel = await engine.add_jobs(
            [spec("canceled", 9), spec("after-cancel", 8)]
        )
        await wait_until(engine, canceled.id, lambda j: j.status is JobStatus.RUNNING, store)
        await engine.cancel_job(canceled.id)
        assert (await wait_until(engine, after_cancel.id, is_final, store)).status is (
            JobStatus.COMPLETED
        )
    outcomes = {
        name: [run.outcome for run in await store.runs_of(job.id)]
        for name, job in [
            ("slow", slow),
            ("after-slow", after_slow),
            ("canceled", canceled),
            ("after-cancel", after_cancel),
        ]
    }
    assert outcomes == {
        "slow": [RunOutcome.TIMEOUT],
        "after-slow": [RunOutcome.SUCCESS],
        "canceled": [RunOutcome.CANCELED],
        "after-cancel": [RunOutcome.SUCCESS],
    }


async def test_no_deadline_timer_stays_armed_once_nothing_runs(store: TrackedStore) -> None:
    """Attempt deadlines share one timer; with nothing running it is disarmed, so
    an engine that ran jobs is idle again (no wake-up at their old deadlines)."""
    clock = VirtualClock(T0)
    handler = ScriptedHandler(clock, behaviour=sleeper(clock, 10))
    async with engine_running(store, clock, handler, jump=False) as engine:
        jobs = await engine.add_jobs(
            [JobSpec(job_type="work", run_at=at(0), timeout_s=600) for _ in range(5)]
        )
        await quiesce(store)
        assert len(handler.calls) == 5
        assert clock.next_deadline() is not None  # the handlers sleep, the timer is armed
        clock.advance(10)
        for job in jobs:
            await wait_until(engine, job.id, is_final, store)
        await quiesce(store)
        assert clock.next_deadline() is None


class SlowPrune(TrackedStore):
    """Holds the engine's start-up prune until ``release`` is set."""

    def __init__(self, inner: TrackedStore) -> None:
        super().__init__(inner.inner)
        self.pruning = anyio.Event()
        self.release = anyio.Event()

    async def prune_runs(self, older_than: Any, keep_per_job: int, jobs: Any = None) -> int:
        self.pruning.set()
        await self.release.wait()
        return await super().prune_runs(older_than, keep_per_job, jobs)


async def test_a_job_added_while_the_start_up_prune_runs_is_still_scheduled(
    store: TrackedStore,
) -> None:
    """The scheduler prunes history when it first has nothing due; a job added
    meanwhile must wake it (it once went to sleep on the timer it had looked at
    before the prune, with no timer at all, and never ran the new job)."""
    slow = SlowPrune(store)
    clock = VirtualClock(T0)
    handler = ScriptedHandler(clock)
    async with engine_running(slow, clock, handler, jump=False) as engine:
        with anyio.fail_after(5):
            await slow.pruning.wait()
        job = await engine.add_job(JobSpec(job_type="work", run_at=at(0)))
        slow.release.set()
        with anyio.fail_after(5):
            done = await wait_until(engine, job.id, is_final, slow)
    assert done.status is JobStatus.COMPLETED
    assert [call.job_id for call in handler.calls] == [job.id]
