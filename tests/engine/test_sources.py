"""The engine core over its source of due work: which source a store gets, and the
one error path of a source's store calls (logged, retried after a pause on the
Clock, the engine serving meanwhile)."""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import anyio.lowlevel
import pytest
from anyio.abc import TaskGroup

from nexus_schedd.clock import VirtualClock
from nexus_schedd.engine import Engine, EngineSettings
from nexus_schedd.errors import StoreError
from nexus_schedd.model import (
    Job,
    JobResult,
    JobSpec,
    JobStatus,
    Recurrence,
    RecurrenceKind,
    Run,
)
from tests.engine.harness import (
    EXACT,
    T0,
    Events,
    ScriptedHandler,
    TrackedStore,
    at,
    engine_running,
    is_final,
    sleeper,
    wait_until,
)

pytestmark = pytest.mark.anyio


class FailingWindowLoads(TrackedStore):
    """Fails the next ``failures`` window loads after start-up's first one."""

    def __init__(self, inner: TrackedStore, failures: int) -> None:
        super().__init__(inner.inner)
        self.failures = failures
        self.loads = 0

    async def next_pending(
        self, after: tuple[datetime, str] | None, limit: int, **types: Any
    ) -> list[Job]:
        self.loads += 1
        if self.loads > 1 and self.failures > 0:
            self.failures -= 1
            raise StoreError("simulated: the store is unreachable")
        return await super().next_pending(after, limit, **types)


class CountingWindowLoads(TrackedStore):
    """Counts how often each job is read by a window load."""

    def __init__(self, inner: TrackedStore) -> None:
        super().__init__(inner.inner)
        self.reads: Counter[str] = Counter()

    async def next_pending(
        self, after: tuple[datetime, str] | None, limit: int, **types: Any
    ) -> list[Job]:
        jobs = await super().next_pending(after, limit, **types)
        self.reads.update(job.id for job in jobs)
        return jobs


async def test_a_backlog_larger_than_memory_is_read_once_and_never_trimmed_back(
    store: TrackedStore,
) -> None:
    # Forty jobs due at once, a window of ten (memory bound fifteen), two slots:
    # the timers run dry as soon as a window's jobs are due, long before they
    # have run. A load then must not go on top of them past the bound: the trim
    # forgot what the load had read and the next turn read it again.
    counting = CountingWindowLoads(store)
    clock = VirtualClock(T0)
    handler = ScriptedHandler(clock, behaviour=sleeper(clock, 1.0))
    settings = EngineSettings(defaults=EXACT, window_size=10, max_concurrency=2)
    async with engine_running(counting, clock, handler, settings=settings) as engine:
        jobs = await engine.add_jobs([JobSpec(job_type="work", run_at=at(60)) for _ in range(40)])
        counting.reads.clear()  # what the adds' trim kept needs no load
        # Loads that go on top of the backlog kept the engine reading and
        # trimming the same jobs (on SQLite, for good): fail instead of hanging.
        with anyio.fail_after(60):
            done = [await wait_until(engine, job.id, is_final, counting) for job in jobs]
    assert {job.status for job in done} == {JobStatus.COMPLETED}
    assert sorted(call.job_id for call in handler.calls) == sorted(job.id for job in jobs)
    assert max(counting.reads.values()) == 1, counting.reads.most_common(3)
    assert sum(counting.reads.values()) == 40 - settings.window_size


async def test_a_running_jobs_next_occurrence_does_not_keep_the_next_window_in_the_store(
    store: TrackedStore,
) -> None:
    # An hourly job runs for half an hour from t0; its next occurrence is on a
    # timer (for its overlap policy) at t3600, past the window's end. Ten jobs
    # one a second from t60 and a window of two: a load waited for every
    # timer to fire, not only those inside the window, and t61..t69 ran at
    # t1800, when the hourly job ended.
    clock = VirtualClock(T0)
    handler = ScriptedHandler(
        clock,
        types=frozenset({"work", "hourly"}),
        behaviour=lambda job, ctx: (
            sleeper(clock, 1800.0)(job, ctx) if job.job_type == "hourly" else instant()
        ),
    )
    settings = EngineSettings(defaults=EXACT, window_size=2)
    hourly = JobSpec(
        job_type="hourly",
        run_at=at(0),
        recurrence=Recurrence(RecurrenceKind.HOURLY, max_occurrences=2),
        timeout_s=7200,
    )
    async with engine_running(store, clock, handler, settings=settings) as engine:
        await engine.add_job(hourly)
        jobs = await engine.add_jobs(
            [JobSpec(job_type="work", run_at=at(60 + n)) for n in range(10)]
        )
        with anyio.fail_after(60):
            for job in jobs:
                await wait_until(engine, job.id, is_final, store)
    started = {call.job_id: call.at for call in handler.calls}
    assert [started[job.id] for job in jobs] == [job.run_at for job in jobs]


async def instant() -> JobResult:
    """A handler's success at once."""
    return JobResult.success()


async def test_more_jobs_held_back_by_a_type_limit_than_memory_holds_are_read_at_most_twice(
    store: TrackedStore,
) -> None:
    # Thirty jobs of a type limited to one at a time, due at once, then five of
    # another type: a window of ten (memory bound fifteen), two slots. Memory
    # fills with jobs that cannot start. A load past the bound was trimmed right
    # back and read again on the next turn, for as long as they waited (the
    # loop never idled: under the virtual clock, time never moved on). The type
    # is parked instead: the jobs that leave memory then are read once more,
    # one at a time as the type's jobs start (tests/engine/test_parked_types.py).
    counting = CountingWindowLoads(store)
    clock = VirtualClock(T0)
    handler = ScriptedHandler(
        clock, types=frozenset({"work", "limited"}), behaviour=sleeper(clock, 1.0)
    )
    settings = EngineSettings(
        defaults=EXACT, window_size=10, max_concurrency=2, type_limits={"limited": 1}
    )
    events = Events()
    async with engine_running(counting, clock, handler, settings=settings, log=events) as engine:
        limited = await engine.add_jobs(
            [JobSpec(job_type="limited", run_at=at(60)) for _ in range(30)]
        )
        others = await engine.add_jobs([JobSpec(job_type="work", run_at=at(61)) for _ in range(5)])
        counting.reads.clear()  # what the adds' trim kept needs no load
        with anyio.fail_after(60):
            done = [
                await wait_until(engine, job.id, is_final, counting) for job in limited + others
            ]
    assert {job.status for job in done} == {JobStatus.COMPLETED}
    assert handler.max_running["limited"] == 1
    assert max(counting.reads.values()) <= 2, counting.reads.most_common(3)
    # Read at all: the 25 the adds' trim left on disk; twice: those the
    # parking left on disk (all but the one kept of the 15 in memory).
    assert sum(counting.reads.values()) <= 25 + 14
    assert events.names.count("job_type_parked") == 1
    assert "window_full_of_held_back_jobs" not in events.names


class ChangeDuringLoad(TrackedStore):
    """Runs ``change`` once, after the store answered the next window load and
    before the engine takes the answer (a change made while the read is in
    flight)."""

    def __init__(self, inner: TrackedStore) -> None:
        super().__init__(inner.inner)
        self.change: Callable[[], Awaitable[Any]] | None = None
        self.hold: anyio.Event | None = None
        """While set, writes wait until the next window read has been answered."""

    async def before_write(self, jobs: list[Job], runs: list[Run]) -> None:
        if self.hold is not None:
            await self.hold.wait()

    async def next_pending(
        self, after: tuple[datetime, str] | None, limit: int, **types: Any
    ) -> list[Job]:
        jobs = await super().next_pending(after, limit, **types)
        if self.hold is not None:
            hold, self.hold = self.hold, None
            hold.set()
        change, self.change = self.change, None
        if change is not None:
            await change()
        return jobs


async def forty_jobs_then_change(
    store: TrackedStore,
    change: Callable[[Engine, list[Job]], Awaitable[Any]],
    extra: JobSpec | None = None,
) -> tuple[list[Job], Job | None, ScriptedHandler, VirtualClock]:
    """Forty jobs one a second from t60 in a window of ten; ``change`` runs while
    the load after the first window reads the store. Returns when every job and
    ``extra`` (if given) is final, or after 60 s."""
    changing = ChangeDuringLoad(store)
    clock = VirtualClock(T0)
    handler = ScriptedHandler(clock)
    settings = EngineSettings(defaults=EXACT, window_size=10, max_concurrency=2)
    everything: list[Job] = []
    async with engine_running(changing, clock, handler, settings=settings) as engine:
        # Armed before the adds: start-up's load has happened, and the next one
        # is the load of t70..t79 (the clock does not move while adds are in flight).
        changing.change = lambda: change(engine, everything)
        jobs = await engine.add_jobs(
            [JobSpec(job_type="work", run_at=at(60 + n)) for n in range(40)]
        )
        added = None if extra is None else await engine.add_job(extra)
        everything += jobs if added is None else [*jobs, added]
        with anyio.fail_after(60):
            for job in everything:
                await wait_until(engine, job.id, is_final, changing)
    assert changing.change is None  # it ran
    return jobs, added, handler, clock


async def test_a_job_cancelled_while_a_load_reads_the_store_is_not_brought_back(
    store: TrackedStore,
) -> None:
    # The read returns the job's pending row; the cancel made it final and
    # forgot it meanwhile. Taking the row put it back on a timer, and it ran.
    cancelled: list[Job] = []

    async def cancel(engine: Engine, jobs: list[Job]) -> None:
        cancelled.append(await engine.cancel_job(jobs[15].id))

    jobs, _, handler, _ = await forty_jobs_then_change(store, cancel)
    assert cancelled[0].status is JobStatus.CANCELED
    assert jobs[15].id not in {call.job_id for call in handler.calls}
    assert len(handler.calls) == 39


async def test_a_job_moved_into_the_window_while_a_load_reads_runs_on_time(
    store: TrackedStore,
) -> None:
    # A job due tomorrow, moved to t75 while the load of t70..t79 reads the
    # store: the read does not see the new row, and the job was outside the
    # window when it moved; once the window's end passed t75, no load would
    # read it again.
    async def move(engine: Engine, jobs: list[Job]) -> None:
        await engine.reschedule_job(jobs[-1].id, run_at=at(75))

    _, moved, handler, _ = await forty_jobs_then_change(
        store, move, JobSpec(job_type="work", run_at=at(86_400))
    )
    assert moved is not None
    assert [call.at for call in handler.calls if call.job_id == moved.id] == [at(75)]


async def test_a_job_placed_past_the_window_during_a_load_does_not_stall_it(
    store: TrackedStore,
) -> None:
    # A job due tomorrow, added while a load reads the store, stays in memory
    # (see the test above) past the window's end. Its timer must not keep the
    # window from reading the jobs due before it: they ran a day late.
    async def add(engine: Engine, jobs: list[Job]) -> None:
        await engine.add_job(JobSpec(job_type="work", run_at=at(86_400)))

    jobs, _, handler, _ = await forty_jobs_then_change(store, add)
    started = {call.job_id: call.at for call in handler.calls}
    assert [started[job.id] for job in jobs] == [job.run_at for job in jobs]


async def test_a_job_moved_out_of_the_window_during_a_load_does_not_widen_it(
    store: TrackedStore,
) -> None:
    # While the load of t70..t79 reads: t75 moves to tomorrow and six jobs due
    # tomorrow are added, past the bound. Kept in memory, they made the trim's
    # new window end tomorrow, past t80..t99 that no load had read: those never
    # ran (review of 17b9c98).
    async def change(engine: Engine, jobs: list[Job]) -> None:
        await engine.reschedule_job(jobs[15].id, run_at=at(86_400))
        await engine.add_jobs([JobSpec(job_type="work", run_at=at(86_401)) for _ in range(6)])

    jobs, _, handler, _ = await forty_jobs_then_change(store, change)
    started = {call.job_id: call.at for call in handler.calls}
    assert [started[job.id] for job in jobs[20:]] == [job.run_at for job in jobs[20:]]


async def test_jobs_cancelled_and_added_during_a_load_do_not_stall_the_window(
    store: TrackedStore,
) -> None:
    # While the load of t70..t79 reads: all ten are cancelled and memory fills
    # up to its bound with jobs due tomorrow. Kept in memory, those left no room
    # for t80..t99, which waited for tomorrow (review of 17b9c98). Adds during
    # a read do not grow memory past the bound either.
    peak: list[int] = []

    async def change(engine: Engine, jobs: list[Job]) -> None:
        for job in jobs[10:20]:
            await engine.cancel_job(job.id)
        for _ in range(10):
            await engine.add_jobs([JobSpec(job_type="work", run_at=at(86_400)) for _ in range(10)])
        peak.append(len(engine._core.jobs))

    jobs, _, handler, _ = await forty_jobs_then_change(store, change)
    started = {call.job_id: call.at for call in handler.calls}
    assert [started[job.id] for job in jobs[20:]] == [job.run_at for job in jobs[20:]]
    assert peak[0] <= EngineSettings(window_size=10).memory_bound


def change_during_the_flush(
    engine: Engine,
    changing: ChangeDuringLoad,
    tg: TaskGroup,
    change: Callable[[], Awaitable[Any]],
    staged: Callable[[Job | None], bool],
    job_id: str,
) -> None:
    """Make ``change`` while the next window load's flush is in flight: its
    write lands after the load's read (held until the read has answered)."""
    checkpoints = engine._core.checkpoints
    flush = checkpoints.flush
    armed = [True]

    async def flush_then_change() -> None:
        await flush()
        # Only the flush of a window read (other callers flush too).
        if armed[0] and sys._getframe(1).f_code.co_name == "_read":
            armed[0] = False
            changing.hold = anyio.Event()
            tg.start_soon(change)
            with anyio.fail_after(5):
                while not staged(checkpoints.staged_job(job_id)):
                    await anyio.lowlevel.checkpoint()

    checkpoints.flush = flush_then_change  # type: ignore[method-assign]


@pytest.mark.parametrize("what", ["cancel", "move"])
async def test_a_change_made_while_a_load_flushes_is_neither_lost_nor_undone(
    store: TrackedStore, what: str
) -> None:
    # The load flushes what is staged, then reads. A change placed while the
    # flush is in flight is written after the read: the read returns the
    # cancelled job's old pending row (it ran), or misses the moved job's new
    # one while the window's end moves past it (it never ran).
    changing = ChangeDuringLoad(store)
    clock = VirtualClock(T0)
    handler = ScriptedHandler(clock)
    settings = EngineSettings(defaults=EXACT, window_size=10, max_concurrency=2)
    async with (
        anyio.create_task_group() as tg,
        engine_running(changing, clock, handler, settings=settings) as engine,
    ):
        jobs = await engine.add_jobs(
            [JobSpec(job_type="work", run_at=at(60 + n)) for n in range(40)]
        )
        if what == "cancel":
            target = jobs[15]  # t75: in the store only when the load of t70..t79 starts

            async def change() -> None:
                await engine.cancel_job(target.id)

            def staged(job: Job | None) -> bool:
                return job is not None and job.status is JobStatus.CANCELED
        else:
            target = await engine.add_job(JobSpec(job_type="work", run_at=at(86_400)))

            async def change() -> None:
                await engine.reschedule_job(target.id, run_at=at(75))

            def staged(job: Job | None) -> bool:
                return job is not None and job.run_at == at(75)

        change_during_the_flush(engine, changing, tg, change, staged, target.id)
        with anyio.fail_after(60):
            for job in jobs:
                await wait_until(engine, job.id, is_final, changing)
            await clock.sleep_until(at(120))
        assert changing.hold is None  # the load's read released the held write
        ran = [call.at for call in handler.calls if call.job_id == target.id]
        assert ran == ([] if what == "cancel" else [at(75)])
        assert len(handler.calls) == (39 if what == "cancel" else 41)


class FailFirstStart(TrackedStore):
    """Fails the first write that opens a run, once armed."""

    def __init__(self, inner: TrackedStore) -> None:
        super().__init__(inner.inner)
        self.armed = False
        self.failed: list[str] = []

    async def before_write(self, jobs: list[Job], runs: list[Run]) -> None:
        opened = [run.job_id for run in runs if run.finished_at is None]
        if self.armed and opened and not self.failed:
            self.failed += opened
            raise StoreError("simulated: the start's write failed")


async def test_a_start_whose_write_failed_runs_again_past_the_window(
    store: TrackedStore,
) -> None:
    # Thirty jobs due at t60, a window of ten: the window ends at (t60, id).
    # The first start's write fails and the job is pending again a second
    # later, past the window's end: memory dropped it, and the store's row
    # stayed pending inside the window, where no later load reads. It never ran.
    failing = FailFirstStart(store)
    clock = VirtualClock(T0)
    handler = ScriptedHandler(clock)
    settings = EngineSettings(defaults=EXACT, window_size=10, max_concurrency=2)
    async with engine_running(failing, clock, handler, settings=settings) as engine:
        jobs = await engine.add_jobs([JobSpec(job_type="work", run_at=at(60)) for _ in range(30)])
        failing.armed = True
        with anyio.fail_after(60):
            done = [await wait_until(engine, job.id, is_final, failing) for job in jobs]
    assert failing.failed
    assert {job.status for job in done} == {JobStatus.COMPLETED}
    assert {call.job_id for call in handler.calls} == {job.id for job in jobs}


async def test_a_store_on_one_node_gets_the_local_window(store: TrackedStore) -> None:
    clock = VirtualClock(T0)
    async with engine_running(store, clock, ScriptedHandler(clock)) as engine:
        assert not engine.shared
        assert "shared" not in engine.status().extra


async def test_a_failed_window_load_is_retried_and_every_job_still_runs(
    store: TrackedStore,
) -> None:
    flaky = FailingWindowLoads(store, failures=2)
    clock = VirtualClock(T0)
    handler = ScriptedHandler(clock)
    # Ten jobs in a window of two: memory is trimmed to the first two, and the
    # rest come in through window loads, the first two of which fail.
    settings = EngineSettings(defaults=EXACT, window_size=2)
    async with engine_running(flaky, clock, handler, settings=settings) as engine:
        jobs = await engine.add_jobs(
            [JobSpec(job_type="work", run_at=at(60 + n)) for n in range(10)]
        )
        done = [await wait_until(engine, job.id, is_final, flaky) for job in jobs]
        assert engine.healthy
    assert flaky.failures == 0
    assert {job.status for job in done} == {JobStatus.COMPLETED}
    assert sorted(call.job_id for call in handler.calls) == sorted(job.id for job in jobs)


async def test_adds_to_an_idle_engine_keep_memory_within_its_bound(
    store: TrackedStore,
) -> None:
    # The loop sleeps until the first job is due, an hour away; jobs added later
    # than that do not wake it. Memory must still stay bounded: past its bound
    # the adds wake it, and the window forgets the latest jobs (they are on disk).
    clock = VirtualClock(T0)
    handler = ScriptedHandler(clock)
    settings = EngineSettings(defaults=EXACT, window_size=6)
    async with engine_running(store, clock, handler, settings=settings) as engine:
        jobs: list[Job] = []
        for batch in range(6):
            jobs += await engine.add_jobs(
                [JobSpec(job_type="work", run_at=at(3600 + 10 * batch + n)) for n in range(10)]
            )
            # The loop's turn: it trims the window once the adds yield (with a
            # store read on SQLite, which a loaded machine may take a while to
            # answer); a window that never comes back within its bound fails here.
            with anyio.fail_after(30):
                while engine.status().extra["window_jobs"] > settings.memory_bound:  # noqa: ASYNC110 - no event to wait on; bounded above
                    await anyio.sleep(0.001)
        done = [await wait_until(engine, job.id, is_final, store) for job in jobs]
    assert {job.status for job in done} == {JobStatus.COMPLETED}
    assert sorted(call.job_id for call in handler.calls) == sorted(job.id for job in jobs)
