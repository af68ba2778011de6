"""Misfire after downtime, overlap, priority and type limits, job operations, crash
recovery, and the no-polling guarantee."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import anyio
import pytest

from nexus_schedd.clock import VirtualClock
from nexus_schedd.engine import EngineSettings
from nexus_schedd.handlers.base import HandlerContext
from nexus_schedd.model import (
    Job,
    JobSpec,
    JobStatus,
    MisfirePolicy,
    OverlapPolicy,
    Recurrence,
    RecurrenceKind,
    Run,
    RunOutcome,
)
from nexus_schedd.model.queries import JobFilter, RunFilter
from tests.engine.harness import (
    EXACT,
    T0,
    ScriptedHandler,
    TrackedStore,
    at,
    crashing_engine,
    engine_running,
    is_final,
    quiesce,
    sleeper,
    wait_until,
)

pytestmark = pytest.mark.anyio

HOUR = 3600


@pytest.mark.parametrize("policy", list(MisfirePolicy))
async def test_misfire_policy_after_downtime(store: TrackedStore, policy: MisfirePolicy) -> None:
    clock = VirtualClock(T0)
    handler = ScriptedHandler(clock)
    recurrence = Recurrence(RecurrenceKind.HOURLY, max_occurrences=8)
    spec = JobSpec(job_type="work", run_at=at(0), recurrence=recurrence, misfire=policy)
    async with engine_running(store, clock, handler, jump=False) as engine:
        job = await engine.add_job(spec)
        await quiesce(store)
        assert len(handler.calls) == 1
    # Down for a little over five hours: occurrences 2..6 (T0+1h..T0+5h) are missed.
    clock.advance(5 * HOUR + 600)
    restart = clock.now()
    async with engine_running(store, clock, handler) as engine:
        done = await wait_until(engine, job.id, is_final, store)
    assert done.status is JobStatus.COMPLETED
    assert done.occurrence_count == 8
    ran = [(call.scheduled_for, call.at) for call in handler.calls[1:]]
    on_time = [(at(6 * HOUR), at(6 * HOUR)), (at(7 * HOUR), at(7 * HOUR))]
    runs = await store.runs_of(job.id)
    skipped = [run.scheduled_for for run in runs if run.outcome is RunOutcome.SKIPPED]
    if policy is MisfirePolicy.RUN_ALL:
        assert ran == [(at(h * HOUR), restart) for h in range(1, 6)] + on_time
        assert skipped == []
    elif policy is MisfirePolicy.RUN_ONCE:
        assert ran == [(at(5 * HOUR), restart), *on_time]
        assert skipped == []
    else:
        assert ran == on_time
        assert skipped == [at(h * HOUR) for h in range(1, 6)]


@pytest.mark.parametrize("policy", list(OverlapPolicy))
async def test_overlap_policy_when_an_occurrence_outlasts_the_interval(
    store: TrackedStore, policy: OverlapPolicy
) -> None:
    clock = VirtualClock(T0)
    handler = ScriptedHandler(clock, behaviour=sleeper(clock, 90 * 60))
    recurrence = Recurrence(RecurrenceKind.HOURLY, max_occurrences=3)
    spec = JobSpec(
        job_type="work", run_at=at(0), recurrence=recurrence, overlap=policy, timeout_s=10 * HOUR
    )
    async with engine_running(store, clock, handler) as engine:
        job = await engine.add_job(spec)
        await wait_until(engine, job.id, is_final, store)
    runs = await store.runs_of(job.id)
    summary = [(run.scheduled_for, run.outcome, run.started_at, run.finished_at) for run in runs]
    if policy is OverlapPolicy.FORBID:
        assert summary == [
            (at(0), RunOutcome.SUCCESS, at(0), at(90 * 60)),
            (at(HOUR), RunOutcome.SKIPPED, at(HOUR), at(HOUR)),
            (at(2 * HOUR), RunOutcome.SUCCESS, at(2 * HOUR), at(2 * HOUR + 90 * 60)),
        ]
        assert handler.max_running["work"] == 1
    elif policy is OverlapPolicy.ALLOW:
        assert summary == [
            (at(h * HOUR), RunOutcome.SUCCESS, at(h * HOUR), at(h * HOUR + 90 * 60))
            for h in range(3)
        ]
        assert handler.max_running["work"] == 2
    else:
        assert summary == [
            (at(0), RunOutcome.CANCELED, at(0), at(HOUR)),
            (at(HOUR), RunOutcome.CANCELED, at(HOUR), at(2 * HOUR)),
            (at(2 * HOUR), RunOutcome.SUCCESS, at(2 * HOUR), at(2 * HOUR + 90 * 60)),
        ]
        assert handler.max_running["work"] == 1


async def test_higher_priority_then_earlier_run_at_wins_when_saturated(
    store: TrackedStore,
) -> None:
    clock = VirtualClock(T0)
    handler = ScriptedHandler(clock, behaviour=sleeper(clock, 100))
    settings = EngineSettings(max_concurrency=1, defaults=EXACT)
    async with engine_running(store, clock, handler, settings=settings) as engine:
        blocker = await engine.add_job(JobSpec(job_type="work", run_at=at(0), name="blocker"))
        await wait_until(engine, blocker.id, lambda j: j.status is JobStatus.RUNNING, store)
        specs = [
            JobSpec(job_type="work", run_at=at(50), priority=0, name="low-early"),
            JobSpec(job_type="work", run_at=at(10), priority=0, name="low-earliest"),
            JobSpec(job_type="work", run_at=at(60), priority=5, name="high-late"),
            JobSpec(job_type="work", run_at=at(20), priority=5, name="high-early"),
            JobSpec(job_type="work", run_at=at(30), priority=-3, name="lowest"),
        ]
        added = await engine.add_jobs(specs)
        for job in added:
            await wait_until(engine, job.id, is_final, store)
    names = {job.id: job.name for job in [blocker, *added]}
    order = [names[call.job_id] for call in handler.calls]
    assert order == ["blocker", "high-early", "high-late", "low-earliest", "low-early", "lowest"]


async def test_type_limit_is_never_exceeded_and_does_not_block_other_types(
    store: TrackedStore,
) -> None:
    clock = VirtualClock(T0)
    handler = ScriptedHandler(
        clock, types=frozenset({"export", "mail"}), behaviour=sleeper(clock, 10)
    )
    settings = EngineSettings(max_concurrency=10, type_limits={"export": 2}, defaults=EXACT)
    async with engine_running(store, clock, handler, settings=settings) as engine:
        jobs = await engine.add_jobs(
            [JobSpec(job_type="export", run_at=at(0)) for _ in range(6)]
            + [JobSpec(job_type="mail", run_at=at(0)) for _ in range(3)]
        )
        for job in jobs:
            await wait_until(engine, job.id, is_final, store)
    assert handler.max_running == {"export": 2, "mail": 3}
    assert sorted(call.at for call in handler.calls if call.job_type == "export") == [
        at(0),
        at(0),
        at(10),
        at(10),
        at(20),
        at(20),
    ]
    assert [call.at for call in handler.calls if call.job_type == "mail"] == [at(0)] * 3


async def test_pause_keeps_a_job_from_running_and_resume_follows_misfire(
    store: TrackedStore,
) -> None:
    clock = VirtualClock(T0)
    handler = ScriptedHandler(clock)
    recurrence = Recurrence(RecurrenceKind.HOURLY, max_occurrences=5)
    async with engine_running(store, clock, handler, jump=False) as engine:
        job = await engine.add_job(JobSpec(job_type="work", run_at=at(HOUR), recurrence=recurrence))
        paused = await engine.pause_job(job.id)
        assert paused.status is JobStatus.PAUSED
        clock.advance(3 * HOUR + 60)
        await quiesce(store)
        assert handler.calls == []
        resumed = await engine.resume_job(job.id)
        assert resumed.status is JobStatus.PENDING
        await quiesce(store)
        # run_once: one run for the three missed occurrences (T0+1h..3h), now.
        assert [(c.scheduled_for, c.at) for c in handler.calls] == [(at(3 * HOUR), clock.now())]
        current = await engine.get_job(job.id)
        assert current.run_at == at(4 * HOUR)
        assert current.occurrence_count == 3


async def test_trigger_runs_one_extra_occurrence_without_moving_the_schedule(
    store: TrackedStore,
) -> None:
    clock = VirtualClock(T0)
    handler = ScriptedHandler(clock)
    recurrence = Recurrence(RecurrenceKind.DAILY)
    async with engine_running(store, clock, handler, jump=False) as engine:
        job = await engine.add_job(JobSpec(job_type="work", run_at=at(HOUR), recurrence=recurrence))
        triggered = await engine.trigger_job(job.id)
        assert triggered.status is JobStatus.RUNNING
        await quiesce(store)
        after = await engine.get_job(job.id)
    assert [(c.at, c.scheduled_for) for c in handler.calls] == [(at(0), at(0))]
    assert after.status is JobStatus.PENDING
    assert (after.run_at, after.scheduled_for, after.occurrence_count) == (at(HOUR), at(HOUR), 0)


async def test_trigger_leaves_a_one_shot_job_its_own_occurrence(store: TrackedStore) -> None:
    """SPEC 4: trigger runs one extra occurrence now without moving the schedule, so a
    one-shot job still runs at its run_at afterwards."""
    clock = VirtualClock(T0)
    handler = ScriptedHandler(clock)
    async with engine_running(store, clock, handler, jump=False) as engine:
        job = await engine.add_job(JobSpec(job_type="work", run_at=at(HOUR)))
        await engine.trigger_job(job.id)
        await quiesce(store)
        after = await engine.get_job(job.id)
        assert after.status is JobStatus.PENDING
        assert (after.run_at, after.scheduled_for, after.occurrence_count) == (
            at(HOUR),
            at(HOUR),
            0,
        )
        assert after.last_result is not None and after.last_result.success
        clock.advance_to(at(HOUR))
        final = await wait_until(engine, job.id, is_final, store)
    assert final.status is JobStatus.COMPLETED
    extra, scheduled = handler.calls
    assert (extra.at, scheduled.at) == (at(0), at(HOUR))
    assert scheduled.key == f"{job.id}:0" and extra.key.startswith(f"{job.id}:extra:")


async def test_a_triggered_one_shot_outlasting_its_run_at_still_runs_its_occurrence(
    store: TrackedStore,
) -> None:
    """Overlap rules are for recurring jobs: an extra run of a one-shot job that is
    still going at the job's run_at must not skip the job's only occurrence."""
    clock = VirtualClock(T0)
    handler = ScriptedHandler(clock, behaviour=sleeper(clock, 200))
    async with engine_running(store, clock, handler) as engine:
        job = await engine.add_job(JobSpec(job_type="work", run_at=at(60)))
        await engine.trigger_job(job.id)
        final = await wait_until(engine, job.id, is_final, store)
        history = await engine.list_runs(RunFilter(job_id=job.id), 10)
    assert final.status is JobStatus.COMPLETED and final.occurrence_count == 1
    assert sorted(run.outcome for run in history.items) == [RunOutcome.SUCCESS] * 2
    assert [call.at for call in handler.calls] == [at(0), at(200)]


async def test_a_one_shot_job_missed_beyond_its_grace_follows_misfire_skip(
    store: TrackedStore,
) -> None:
    """SPEC 4's misfire rule is about occurrences, one-shot ones too: with skip, an
    occurrence later than misfire_grace_s is recorded as skipped, not run."""
    clock = VirtualClock(T0)
    handler = ScriptedHandler(clock)
    async with engine_running(store, clock, handler, jump=False) as engine:
        skip = await engine.add_job(
            JobSpec(job_type="work", run_at=at(60), misfire=MisfirePolicy.SKIP, misfire_grace_s=10)
        )
        run = await engine.add_job(JobSpec(job_type="work", run_at=at(60), misfire_grace_s=10))
        await engine.pause_job(skip.id)
        await engine.pause_job(run.id)
        clock.advance_to(at(120))  # 60 s late: beyond the 10 s grace
        await engine.resume_job(skip.id)
        await engine.resume_job(run.id)
        skipped = await wait_until(engine, skip.id, is_final, store)
        ran = await wait_until(engine, run.id, is_final, store)
        history = await engine.list_runs(RunFilter(job_id=skip.id), 10)
    assert skipped.status is JobStatus.COMPLETED
    assert [(r.outcome, r.scheduled_for) for r in history.items] == [(RunOutcome.SKIPPED, at(60))]
    assert ran.status is JobStatus.COMPLETED  # run_once (the default) still runs it
    assert [call.job_id for call in handler.calls] == [run.id]


async def test_jitter_delays_the_first_occurrence_too(store: TrackedStore) -> None:
    """SPEC 2: jitter is added to each occurrence; the first keeps its nominal
    scheduled_for and only its run_at moves, by at most jitter_s."""
    clock = VirtualClock(T0)
    handler = ScriptedHandler(clock)
    async with engine_running(store, clock, handler, jump=False) as engine:
        jobs = await engine.add_jobs(
            [JobSpec(job_type="work", run_at=at(HOUR), jitter_s=30) for _ in range(20)]
        )
    for job in jobs:
        assert job.scheduled_for == at(HOUR)
        assert job.run_at is not None and at(HOUR) <= job.run_at <= at(HOUR + 30)
    assert len({job.run_at for job in jobs}) > 1


async def test_a_triggered_run_has_its_own_idempotency_key(store: TrackedStore) -> None:
    clock = VirtualClock(T0)
    handler = ScriptedHandler(clock)
    recurrence = Recurrence(RecurrenceKind.DAILY, max_occurrences=1)
    async with engine_running(store, clock, handler) as engine:
        job = await engine.add_job(JobSpec(job_type="work", run_at=at(HOUR), recurrence=recurrence))
        await engine.trigger_job(job.id)
        await wait_until(engine, job.id, lambda j: j.status is JobStatus.COMPLETED, store)
    extra, scheduled = handler.calls
    assert scheduled.key == f"{job.id}:0"  # the first real occurrence keeps its key
    assert extra.key != scheduled.key
    assert extra.key.startswith(f"{job.id}:extra:")


async def test_cancel_while_running_cancels_the_attempt(store: TrackedStore) -> None:
    clock = VirtualClock(T0)
    cancelled = anyio.Event()

    async def stuck(job: Job, ctx: object) -> object:
        try:
            await anyio.sleep_forever()
        finally:
            cancelled.set()
        raise AssertionError("unreachable")

    handler = ScriptedHandler(clock, behaviour=stuck)
    async with engine_running(store, clock, handler, jump=False) as engine:
        job = await engine.add_job(JobSpec(job_type="work", run_at=at(0)))
        await handler.started.wait()
        result = await engine.cancel_job(job.id)
        assert result.status is JobStatus.CANCELED
        await cancelled.wait()
        await quiesce(store)
        stored = await store.get_job(job.id)
        runs = await store.runs_of(job.id)
    assert stored is not None and stored.status is JobStatus.CANCELED
    assert [(run.outcome, run.error) for run in runs] == [(RunOutcome.CANCELED, "canceled")]


async def test_reschedule_moves_a_pending_job(store: TrackedStore) -> None:
    clock = VirtualClock(T0)
    handler = ScriptedHandler(clock)
    async with engine_running(store, clock, handler) as engine:
        job = await engine.add_job(JobSpec(job_type="work", run_at=at(HOUR)))
        moved = await engine.reschedule_job(job.id, run_at=at(600))
        assert moved.run_at == at(600)
        stored = await store.get_job(job.id)
        assert stored is not None and stored.run_at == at(600)
        await wait_until(engine, job.id, is_final, store)
    assert [call.at for call in handler.calls] == [at(600)]


async def test_crashed_run_is_recorded_and_its_job_retried(store: TrackedStore) -> None:
    clock = VirtualClock(T0)
    job = Job.create(JobSpec(job_type="work", run_at=at(0)), at(0), EXACT)
    running = job.transition(JobStatus.RUNNING, at(0))
    open_run = Run(id="run-1", job_id=job.id, scheduled_for=at(0), attempt=1, started_at=at(0))
    await store.insert_jobs([job])
    await store.write([running], [open_run])
    clock.advance(30)
    handler = ScriptedHandler(clock)
    async with engine_running(store, clock, handler) as engine:
        done = await wait_until(engine, job.id, is_final, store)
    runs = await store.runs_of(job.id)
    assert [(run.outcome, run.attempt) for run in runs] == [
        (RunOutcome.CRASHED, 1),
        (RunOutcome.SUCCESS, 2),
    ]
    assert done.status is JobStatus.COMPLETED
    assert handler.calls[0].at == at(30 + 60)
    assert handler.calls[0].key == f"{job.id}:0"


async def test_poison_job_ends_failed_permanent_after_max_retries_crashes(
    store: TrackedStore,
) -> None:
    clock = VirtualClock(T0)

    async def crash_the_daemon(job: Job, ctx: object) -> object:
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    max_retries = 2
    job_id = ""
    for life in range(max_retries + 1):
        handler = ScriptedHandler(clock, behaviour=crash_the_daemon)
        async with crashing_engine(store, clock, handler) as engine:
            if life == 0:
                job_id = (
                    await engine.add_job(
                        JobSpec(job_type="work", run_at=at(0), max_retries=max_retries)
                    )
                ).id
            # The handler is only called once the start is on disk: crash now.
            await handler.started.wait()
    handler = ScriptedHandler(clock)
    async with engine_running(store, clock, handler) as engine:
        final = await engine.get_job(job_id)
    assert handler.calls == []
    assert final.status is JobStatus.FAILED_PERMANENT
    runs = await store.runs_of(job_id)
    assert [run.outcome for run in runs] == [RunOutcome.CRASHED] * (max_retries + 1)
    assert [run.attempt for run in runs] == [1, 2, 3]


async def test_a_start_whose_running_row_was_never_written_counts_as_an_attempt(
    store: TrackedStore,
) -> None:
    """The local engine writes a start as its open run and leaves the job's
    running version to a later write: a crash in between leaves the job pending
    on disk with an open run of its current attempt, and recovery counts it."""
    clock = VirtualClock(T0)
    job = Job.create(JobSpec(job_type="work", run_at=at(0)), at(0), EXACT)
    open_run = Run(id="run-1", job_id=job.id, scheduled_for=at(0), attempt=1, started_at=at(0))
    # Another job's open run of an occurrence it has moved past (overlap allow
    # or a trigger): closed, and the job is left where it is.
    daily = Job.create(
        JobSpec(job_type="work", run_at=at(HOUR), recurrence=Recurrence(RecurrenceKind.DAILY)),
        at(0),
        EXACT,
    )
    stray = Run(id="run-2", job_id=daily.id, scheduled_for=at(0), attempt=1, started_at=at(0))
    await store.insert_jobs([job, daily])
    await store.write([], [open_run, stray])
    clock.advance(30)
    handler = ScriptedHandler(clock)
    async with engine_running(store, clock, handler, jump=False) as engine:
        await quiesce(store)
        retried = await engine.get_job(job.id)
        assert retried.status is JobStatus.PENDING and retried.retry_count == 1
        assert retried.run_at == at(30 + 60)
        untouched = await engine.get_job(daily.id)
        assert untouched.retry_count == 0 and untouched.run_at == at(HOUR)
    assert [(r.outcome, r.attempt) for r in await store.runs_of(job.id)] == [
        (RunOutcome.CRASHED, 1)
    ]
    assert [r.outcome for r in await store.runs_of(daily.id)] == [RunOutcome.CRASHED]


async def test_a_misfire_that_moves_the_occurrence_writes_the_running_row_with_the_start(
    store: TrackedStore,
) -> None:
    """run_once after missed occurrences starts the latest one: the pending row
    on disk names an older occurrence, so the running row goes with the start
    and a crash during that run still counts as an attempt."""
    clock = VirtualClock(T0)
    recurrence = Recurrence(RecurrenceKind.HOURLY, max_occurrences=5)
    job = Job.create(JobSpec(job_type="work", run_at=at(HOUR), recurrence=recurrence), at(0), EXACT)
    await store.insert_jobs([job])
    clock.advance(3 * HOUR + 60)
    blocked = ScriptedHandler(clock, behaviour=sleeper(clock, 10 * HOUR))
    async with crashing_engine(store, clock, blocked):
        await blocked.started.wait()
    assert [c.scheduled_for for c in blocked.calls] == [at(3 * HOUR)]
    handler = ScriptedHandler(clock)
    async with engine_running(store, clock, handler, jump=False) as engine:
        await quiesce(store)
        recovered = await engine.get_job(job.id)
    crashed = [r for r in await store.runs_of(job.id) if r.outcome is RunOutcome.CRASHED]
    assert [(r.scheduled_for, r.attempt) for r in crashed] == [(at(3 * HOUR), 1)]
    assert recovered.retry_count == 1 and recovered.scheduled_for == at(3 * HOUR)


async def test_a_fast_run_writes_its_job_row_once_and_a_long_one_is_listed_running(
    store: TrackedStore,
) -> None:
    """A start writes the open run only: the running version waits for a later
    write, which the run's finish usually replaces first (how often depends on
    how the loop's turns fall, so this checks what always holds: never with the
    start, at most once, and the completed version last). One still running is
    written by the next write, and a listing (which flushes) shows it running."""
    written: list[Job] = []
    with_their_start: list[str] = []

    async def logged_write(jobs: list[Job], runs: list[Run]) -> None:
        written.extend(jobs)
        starting = {run.job_id for run in runs if run.outcome is None}
        with_their_start.extend(j.id for j in jobs if j.id in starting)

    store.before_write = logged_write  # type: ignore[method-assign]
    clock = VirtualClock(T0)
    handler = ScriptedHandler(clock)
    settings = EngineSettings(max_concurrency=4, defaults=EXACT)
    async with engine_running(store, clock, handler, settings=settings) as engine:
        jobs = await engine.add_jobs([JobSpec(job_type="work", run_at=at(0)) for _ in range(12)])
        for job in jobs:
            await wait_until(engine, job.id, is_final, store)
    assert with_their_start == []
    for job in jobs:
        rows = [j.status for j in written if j.id == job.id]
        assert rows in ([JobStatus.COMPLETED], [JobStatus.RUNNING, JobStatus.COMPLETED]), rows

    clock = VirtualClock(T0 + timedelta(days=1))
    slow = ScriptedHandler(clock, behaviour=sleeper(clock, HOUR))
    async with engine_running(store, clock, slow, jump=False) as engine:
        long = await engine.add_job(JobSpec(job_type="work", run_at=clock.now()))
        await slow.started.wait()
        page = await engine.list_jobs(JobFilter(statuses=frozenset({JobStatus.RUNNING})), 10)
        assert [j.id for j in page.items] == [long.id]
        on_disk = await store.get_job(long.id)
        assert on_disk is not None and on_disk.status is JobStatus.RUNNING


async def test_no_wakeups_while_only_far_future_jobs_exist(store: TrackedStore) -> None:
    clock = VirtualClock(T0)
    handler = ScriptedHandler(clock)
    async with engine_running(store, clock, handler, jump=False) as engine:
        far = await engine.add_jobs(
            [JobSpec(job_type="work", run_at=at(30 * 86400 + n)) for n in range(50)]
        )
        await quiesce(store)
        armed, loops = clock.timers_armed, engine.loop_iterations
        for _ in range(5):
            clock.advance(86400)  # days pass with nothing due
            await quiesce(store)
        assert (clock.timers_armed, engine.loop_iterations) == (armed, loops)
        # A change that makes an earlier job due wakes it once, to re-arm.
        near = await engine.add_job(
            JobSpec(job_type="work", run_at=clock.now() + timedelta(hours=1))
        )
        await quiesce(store)
        assert clock.timers_armed == armed + 1
        clock.advance(3600)
        await quiesce(store)
        assert [call.job_id for call in handler.calls] == [near.id]
        assert len(far) == 50


async def _runs_of(store: TrackedStore, job_id: str) -> list[Run]:
    page = await store.inner.list_runs(RunFilter(job_id=job_id), 100)
    return list(page.items)


async def test_history_is_pruned_after_start_and_hourly_while_runs_finish(
    store: TrackedStore,
) -> None:
    """history.keep_per_job holds for a daemon that restarts now and then and runs
    little: pruning happens once after start and when a run finishes an hour or more
    after the last prune (no timer, so an idle engine still never wakes for it)."""
    clock = VirtualClock(T0)
    handler = ScriptedHandler(clock)
    every_minute = Recurrence(RecurrenceKind.MINUTELY, interval=1)
    keep_all = EngineSettings(defaults=EXACT, history_keep_per_job=1000)
    async with engine_running(store, clock, handler, settings=keep_all) as engine:
        job = await engine.add_job(JobSpec(job_type="work", run_at=at(0), recurrence=every_minute))
        await wait_until(engine, job.id, lambda j: j.occurrence_count >= 5, store)
    assert len(await _runs_of(store, job.id)) >= 5

    keep_two = EngineSettings(defaults=EXACT, history_keep_per_job=2)
    async with engine_running(store, clock, handler, settings=keep_two, jump=False) as engine:
        await quiesce(store)  # nothing is due: the first idle moment prunes
        assert len(await _runs_of(store, job.id)) == 2
        first = handler.calls[-1].at
        # Runs finishing within the hour are not pruned one by one...
        clock.advance_to(first + timedelta(minutes=30))
        await quiesce(store)
        assert len(await _runs_of(store, job.id)) > 2
        # ...the first run finishing an hour after the last prune prunes again.
        clock.advance_to(first + timedelta(minutes=75))
        await quiesce(store)
        assert len(await _runs_of(store, job.id)) == 2


@pytest.mark.parametrize(("late_s", "runs_latest"), [(30, True), (120, False)])
async def test_skip_runs_the_latest_occurrence_when_it_is_within_the_grace(
    store: TrackedStore, late_s: int, runs_latest: bool
) -> None:
    """SPEC 4: skip is for occurrences later than misfire_grace_s. After an outage,
    the earlier occurrences are recorded as skipped; the latest runs if it is only
    late within the grace, and is skipped too otherwise."""
    clock = VirtualClock(T0)
    handler = ScriptedHandler(clock)
    hourly = Recurrence(RecurrenceKind.HOURLY)
    async with engine_running(store, clock, handler, jump=False) as engine:
        job = await engine.add_job(
            JobSpec(
                job_type="work",
                run_at=at(0),
                recurrence=hourly,
                misfire=MisfirePolicy.SKIP,
                misfire_grace_s=60,
            )
        )
        await engine.pause_job(job.id)
        clock.advance_to(at(3 * HOUR + late_s))
        await engine.resume_job(job.id)
        await quiesce(store)
        after = await engine.get_job(job.id)
        history = await engine.list_runs(RunFilter(job_id=job.id), 10)
    outcomes = sorted((run.scheduled_for, run.outcome) for run in history.items)
    skipped = [(at(h * HOUR), RunOutcome.SKIPPED) for h in range(3)]
    if runs_latest:
        assert outcomes == [*skipped, (at(3 * HOUR), RunOutcome.SUCCESS)]
        assert [call.scheduled_for for call in handler.calls] == [at(3 * HOUR)]
    else:
        assert outcomes == [*skipped, (at(3 * HOUR), RunOutcome.SKIPPED)]
        assert handler.calls == []
    assert after.status is JobStatus.PENDING and after.run_at == at(4 * HOUR)


async def test_the_next_batch_is_checkpointed_while_the_current_one_runs(
    store: TrackedStore,
) -> None:
    """A write carries at most half the slots' starts; the next batch's start is
    being written before the current batch's handlers are called."""
    log: list[tuple[str, frozenset[str]]] = []

    async def logged_write(jobs: list[Job], runs: list[Run]) -> None:
        # A start is the write of its open run (the running job row may come later).
        log.append(("write", frozenset(r.job_id for r in runs if r.finished_at is None)))

    store.before_write = logged_write  # type: ignore[method-assign]
    clock = VirtualClock(T0)
    handler = ScriptedHandler(clock)
    call = handler.handle

    async def logged_call(job: Job, ctx: HandlerContext) -> Any:
        log.append(("call", frozenset({job.id})))
        return await call(job, ctx)

    handler.handle = logged_call  # type: ignore[method-assign]
    settings = EngineSettings(max_concurrency=4, defaults=EXACT)
    async with engine_running(store, clock, handler, settings=settings) as engine:
        jobs = await engine.add_jobs([JobSpec(job_type="work", run_at=at(0)) for _ in range(12)])
        for job in jobs:
            await wait_until(engine, job.id, is_final, store)

    starts = [ids for kind, ids in log if kind == "write" and ids]
    assert all(len(ids) <= 2 for ids in starts)
    assert sorted(j for ids in starts for j in ids) == sorted(j.id for j in jobs)
    first_call = next(i for i, (kind, _) in enumerate(log) if kind == "call")
    assert len([ids for kind, ids in log[:first_call] if kind == "write" and ids]) == 2
    assert handler.max_running["work"] <= 4


async def test_the_next_batch_is_staged_while_the_current_start_is_written(
    store: TrackedStore,
) -> None:
    """The writer never waits for the loop to dispatch: while one batch's start
    is being written, the next batch takes the free slots and is staged, so the
    next write carries it the moment the first commit ends."""
    held = anyio.Event()
    release = anyio.Event()
    writes: list[frozenset[str]] = []

    async def held_write(jobs: list[Job], runs: list[Run]) -> None:
        starts = frozenset(r.job_id for r in runs if r.finished_at is None)
        writes.append(starts)
        if starts and not held.is_set():
            held.set()
            await release.wait()

    store.before_write = held_write  # type: ignore[method-assign]
    clock = VirtualClock(T0)
    handler = ScriptedHandler(clock)
    settings = EngineSettings(max_concurrency=4, defaults=EXACT)
    async with engine_running(store, clock, handler, settings=settings) as engine:
        jobs = await engine.add_jobs([JobSpec(job_type="work", run_at=at(0)) for _ in range(6)])
        with anyio.fail_after(5):
            await held.wait()
        for _ in range(5000):  # the second batch takes the other two slots
            if engine.status().running == 4:
                break
            await anyio.sleep(0.001)
        assert engine.status().running == 4
        assert handler.calls == []  # the first batch is not on disk: nothing runs yet
        staged = [s for s in writes if s]
        assert len(staged) == 1 and len(staged[0]) == 2
        release.set()
        for job in jobs:
            await wait_until(engine, job.id, is_final, store)
    starts = [s for s in writes if s]
    assert len(starts[1]) == 2 and not starts[0] & starts[1]
    assert sorted(j for s in starts for j in s) == sorted(j.id for j in jobs)
