"""A start whose checkpoint write fails (disk full, an I/O error): its handler
does not run, its run is closed as crashed, its rate token is given back, and
the job is pending again: a due start a second later, a trigger at its own
occurrence. No overlap policy applies while a start is being written. Found by
two reviews at stop 39; each test fails on the code before it (the run stayed
open, a failed trigger ran the scheduled occurrence early or lost it, a
detached attempt stayed in flight for good, a start kept its rate token)."""

from __future__ import annotations

import random

import anyio
import pytest

from nexus_schedd.clock import VirtualClock
from nexus_schedd.engine import Engine, EngineSettings
from nexus_schedd.engine.rates import Rate
from nexus_schedd.errors import StoreError
from nexus_schedd.handlers.registry import HandlerRegistry
from nexus_schedd.model import (
    Job,
    JobSpec,
    JobStatus,
    OverlapPolicy,
    Recurrence,
    RecurrenceKind,
    Run,
    RunOutcome,
)
from nexus_schedd.model.queries import RunFilter
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

HOUR = 3600
NOT_CHECKPOINTED = "the start was not checkpointed: simulated: disk full"


class FailStart(TrackedStore):
    """Fails the first write that opens a run of ``target`` (any job when None),
    once ``armed``; optionally after a stall until ``stall_until``."""

    def __init__(
        self,
        inner: TrackedStore,
        clock: VirtualClock,
        *,
        armed: bool = True,
        stall_until: float | None = None,
    ) -> None:
        super().__init__(inner.inner)
        self.clock = clock
        self.target: str | None = None
        self.armed = armed
        self.stall_until = stall_until
        self.failed = False

    async def before_write(self, jobs: list[Job], runs: list[Run]) -> None:
        if not self.armed or self.failed:
            return
        if any(r.finished_at is None and self.target in (None, r.job_id) for r in runs):
            self.failed = True
            if self.stall_until is not None:
                await self.clock.sleep_until(at(self.stall_until))
            raise StoreError("simulated: disk full")


async def test_a_start_that_failed_is_closed_as_crashed_and_the_job_runs_again(
    store: TrackedStore,
) -> None:
    clock = VirtualClock(T0)
    failing = FailStart(store, clock, armed=False)
    handler = ScriptedHandler(clock)
    async with engine_running(failing, clock, handler) as engine:
        job = await engine.add_job(JobSpec(job_type="work", run_at=at(10)))
        failing.target, failing.armed = job.id, True
        final = await wait_until(engine, job.id, is_final, failing)
        runs = (await engine.list_runs(RunFilter(job_id=job.id), 10)).items
    assert failing.failed and final.status is JobStatus.COMPLETED
    # A second after the failure (the start was dispatched start_ahead early).
    assert len(handler.calls) == 1 and at(10.5) < handler.calls[0].at <= at(11)
    assert sorted((r.outcome, r.error) for r in runs) == sorted(
        [(RunOutcome.CRASHED, NOT_CHECKPOINTED), (RunOutcome.SUCCESS, None)]
    )
    assert await failing.inner.open_runs() == []


async def test_a_start_that_failed_is_not_counted_as_an_attempt_after_a_crash(
    store: TrackedStore,
) -> None:
    """Before: the failed write's open run was written by the retry and never
    closed; a crash before the job's next start counted it as a crashed attempt,
    and a job without retries ended failed_permanent without ever running."""
    clock = VirtualClock(T0)
    failing = FailStart(store, clock, armed=False)
    handler = ScriptedHandler(clock, behaviour=sleeper(clock, 1000))
    # One slot: a long run holds it while the failed job waits for its retry.
    settings = EngineSettings(defaults=EXACT, max_concurrency=1)
    engine = Engine(failing, HandlerRegistry({"s": handler}), clock, settings, rng=random.Random(7))
    async with anyio.create_task_group() as tg:  # abandoned without stop(): a crash
        await tg.start(engine.run)
        job = await engine.add_job(JobSpec(job_type="work", run_at=at(10), max_retries=0))
        await engine.add_job(JobSpec(job_type="work", run_at=at(10.5), timeout_s=5000))
        failing.target, failing.armed = job.id, True
        for t in (10, 10.5, 11, 12, 20):
            await quiesce(failing)
            clock.advance_to(at(t))
        await quiesce(failing)
        assert failing.failed
        assert [call.job_id for call in handler.calls if call.job_id == job.id] == []
        assert [r for r in await failing.inner.open_runs() if r.job_id == job.id] == []
        tg.cancel_scope.cancel()
    after = ScriptedHandler(clock)
    async with engine_running(failing, clock, after) as engine:
        final = await wait_until(engine, job.id, is_final, failing)
    assert [call.job_id for call in after.calls].count(job.id) == 1
    assert final.status is JobStatus.COMPLETED


@pytest.mark.parametrize("recurring", [False, True], ids=["one-shot", "daily"])
async def test_a_trigger_that_failed_leaves_the_schedule_where_it_was(
    store: TrackedStore, recurring: bool
) -> None:
    """Before: the failed trigger's job went back to pending a second later at
    its scheduled occurrence, which then ran an hour early."""
    clock = VirtualClock(T0)
    failing = FailStart(store, clock, armed=False)
    handler = ScriptedHandler(clock)
    recurrence = Recurrence(RecurrenceKind.DAILY) if recurring else None
    async with engine_running(failing, clock, handler, jump=False) as engine:
        job = await engine.add_job(JobSpec(job_type="work", run_at=at(HOUR), recurrence=recurrence))
        failing.armed = True
        with pytest.raises(StoreError):
            await engine.trigger_job(job.id)  # refused: not acknowledged
        for _ in range(5):  # the checkpointer's pause after the failure, and more
            await quiesce(failing)
            clock.advance(1)
        await quiesce(failing)
        assert handler.calls == []
        now = await engine.get_job(job.id)
        assert (now.status, now.run_at, now.scheduled_for) == (
            JobStatus.PENDING,
            at(HOUR),
            at(HOUR),
        )
        assert (await failing.inner.get_job(job.id)) == now  # on disk as in memory
        clock.advance_to(at(HOUR))
        with anyio.fail_after(5):
            while not handler.calls:
                await quiesce(failing)
    assert [(call.at, call.scheduled_for) for call in handler.calls] == [(at(HOUR), at(HOUR))]


@pytest.mark.parametrize("policy", list(OverlapPolicy))
async def test_the_overlap_policy_waits_for_a_start_being_written(
    store: TrackedStore, policy: OverlapPolicy
) -> None:
    """The first occurrence's start write stalls past the next occurrence, then
    fails. Nothing ran, so no policy applies: the first occurrence is retried and
    each occurrence runs once, none recorded as skipped. Before: allow/replace
    detached the attempt, which then stayed in flight for good (a reload's wait
    for unused handlers never returned) with its run open on disk, and its
    occurrence never ran; forbid recorded the next occurrence as skipped, and
    then ran it too."""
    clock = VirtualClock(T0)
    failing = FailStart(store, clock, stall_until=HOUR + 60)
    handler = ScriptedHandler(clock)
    spec = JobSpec(
        job_type="work",
        run_at=at(0),
        overlap=policy,
        recurrence=Recurrence(RecurrenceKind.HOURLY, max_occurrences=3),
    )
    async with engine_running(failing, clock, handler) as engine:
        job = await engine.add_job(spec)
        final = await wait_until(engine, job.id, is_final, failing)
        in_flight = engine._core.attempts_in_flight()
        with anyio.fail_after(5):
            await engine.wait_unused(engine._core.registry)
        runs = (await engine.list_runs(RunFilter(job_id=job.id), 10)).items
    assert failing.failed and final.status is JobStatus.COMPLETED
    assert in_flight == []
    assert await failing.inner.open_runs() == []
    assert sorted((r.scheduled_for, r.outcome) for r in runs) == [
        (T0, RunOutcome.CRASHED),
        (T0, RunOutcome.SUCCESS),
        (at(HOUR), RunOutcome.SUCCESS),
        (at(2 * HOUR), RunOutcome.SUCCESS),
    ]
    assert [call.scheduled_for for call in handler.calls] == [T0, at(HOUR), at(2 * HOUR)]


async def test_a_failed_trigger_beside_the_due_occurrence_lets_that_occurrence_run(
    store: TrackedStore,
) -> None:
    """The trigger's start write stalls 30 s past the job's occurrence, then
    fails. Before: overlap forbid (the default) recorded that occurrence as
    skipped behind a trigger that never ran, and the job moved to the next one."""
    clock = VirtualClock(T0)
    failing = FailStart(store, clock, armed=False, stall_until=HOUR + 30)
    handler = ScriptedHandler(clock)
    spec = JobSpec(
        job_type="work",
        run_at=at(HOUR),
        overlap=OverlapPolicy.FORBID,
        recurrence=Recurrence(RecurrenceKind.HOURLY, max_occurrences=2),
    )
    async with engine_running(failing, clock, handler) as engine:
        job = await engine.add_job(spec)
        failing.target, failing.armed = job.id, True
        with pytest.raises(StoreError):
            await engine.trigger_job(job.id)
        final = await wait_until(engine, job.id, is_final, failing)
        runs = (await engine.list_runs(RunFilter(job_id=job.id), 10)).items
    assert final.status is JobStatus.COMPLETED
    assert RunOutcome.SKIPPED not in [r.outcome for r in runs]
    assert [call.scheduled_for for call in handler.calls] == [at(HOUR), at(2 * HOUR)]


async def test_a_failed_start_gives_back_its_rate_token(store: TrackedStore) -> None:
    """Before: the token stayed taken, and the retry waited an hour for the next."""
    clock = VirtualClock(T0)
    failing = FailStart(store, clock, armed=False)
    handler = ScriptedHandler(clock)
    settings = EngineSettings(defaults=EXACT, type_rates={"work": Rate(1, 3600.0)})
    async with engine_running(failing, clock, handler, settings=settings) as engine:
        job = await engine.add_job(JobSpec(job_type="work", run_at=at(10)))
        failing.target, failing.armed = job.id, True
        final = await wait_until(engine, job.id, is_final, failing)
    assert failing.failed and final.status is JobStatus.COMPLETED
    assert len(handler.calls) == 1 and handler.calls[0].at <= at(11)


async def test_the_crashed_run_of_a_start_ahead_does_not_end_before_it_began(
    store: TrackedStore,
) -> None:
    clock = VirtualClock(T0)
    failing = FailStart(store, clock, armed=False)
    handler = ScriptedHandler(clock)
    settings = EngineSettings(defaults=EXACT, start_ahead_ms=1000)
    async with engine_running(failing, clock, handler, settings=settings) as engine:
        job = await engine.add_job(JobSpec(job_type="work", run_at=at(10)))
        failing.target, failing.armed = job.id, True
        await wait_until(engine, job.id, is_final, failing)
        runs = (await engine.list_runs(RunFilter(job_id=job.id), 10)).items
    (crash,) = [r for r in runs if r.outcome is RunOutcome.CRASHED]
    assert crash.finished_at is not None and crash.finished_at >= crash.started_at
