"""Job types whose held-back backlog is larger than memory (SPEC 15, rate limits:
jobs over the rate wait, and other types are not held up by them).

When memory is full and every pending job in it waits for its type's limit or
rate, each such type is parked: a few of its jobs stay in memory, the rest wait
in the store and are read as those start, and the window reads past the type
(docs/engine.md, Window). Settings here: a window of 10 (memory bound 15), so a
parked type keeps one job in memory."""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

import anyio
import pytest

from nexus_schedd.clock import VirtualClock
from nexus_schedd.engine import Engine, EngineSettings
from nexus_schedd.engine.rates import Rate
from nexus_schedd.handlers.base import HandlerContext
from nexus_schedd.model import Job, JobResult, JobSpec, JobStatus
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

HELD_BACK = [{"type_limits": {"limited": 1}}, {"type_rates": {"limited": Rate(1, 3600.0)}}]
"""A type that starts one at a time, or one an hour."""


class Reads(TrackedStore):
    """Counts how often each job is read by ``next_pending``; runs ``on_type_read``
    once, after the first read of one job type alone has been answered."""

    def __init__(self, inner: TrackedStore) -> None:
        super().__init__(inner.inner)
        self.reads: Counter[str] = Counter()
        self.on_type_read: Callable[[], Awaitable[Any]] | None = None

    async def next_pending(
        self, after: tuple[datetime, str] | None, limit: int, **types: Any
    ) -> list[Job]:
        jobs = await super().next_pending(after, limit, **types)
        self.reads.update(job.id for job in jobs)
        change = self.on_type_read
        if change is not None and types.get("only_type") is not None:
            self.on_type_read = None
            await change()
        return jobs


def limited_handler(clock: VirtualClock, seconds: float) -> ScriptedHandler:
    """A handler of "work" and "limited" jobs; the latter take ``seconds``."""
    return ScriptedHandler(
        clock, types=frozenset({"work", "limited"}), behaviour=limited_take(clock, seconds)
    )


def limited_take(clock: VirtualClock, seconds: float) -> Callable[[Job, HandlerContext], Any]:
    """Jobs of type ``limited`` take ``seconds`` of virtual time; others none."""

    async def behave(job: Job, ctx: HandlerContext) -> Any:
        if job.job_type == "limited":
            await clock.sleep_until(clock.now() + timedelta(seconds=seconds))
        return JobResult.success()

    return behave


def parked(engine: Engine) -> list[str]:
    return list(engine.status().extra.get("parked_types", []))


def started_at(handler: ScriptedHandler) -> dict[str, datetime]:
    return {call.job_id: call.at for call in handler.calls}


async def all_final(engine: Engine, jobs: list[Job], store: TrackedStore) -> list[Job]:
    with anyio.fail_after(30):
        return [await wait_until(engine, job.id, is_final, store) for job in jobs]


@pytest.mark.parametrize("held_back", HELD_BACK, ids=["type limit", "type rate"])
async def test_other_types_run_when_due_behind_more_held_back_jobs_than_memory_holds(
    store: TrackedStore, held_back: dict[str, Any]
) -> None:
    # Twenty jobs of a type that starts one at a time (a limit of 1, or a rate
    # of 1/hour), due at once, then five of another type due a second later.
    # Memory fills with jobs that cannot start. Waiting for them to make room
    # kept the other type waiting behind the whole backlog (20 s, or 20 hours).
    reads = Reads(store)
    clock = VirtualClock(T0)
    handler = limited_handler(clock, 1.0)
    settings = EngineSettings(defaults=EXACT, window_size=10, max_concurrency=2, **held_back)
    events = Events()
    async with engine_running(reads, clock, handler, settings=settings, log=events) as engine:
        limited = await engine.add_jobs(
            [JobSpec(job_type="limited", run_at=at(60)) for _ in range(20)]
        )
        others = await engine.add_jobs([JobSpec(job_type="work", run_at=at(61)) for _ in range(5)])
        await all_final(engine, others, reads)
        assert parked(engine) == ["limited"]
        if "type_rates" in held_back:
            # Everything in memory waits for the next token, an hour away: the
            # loop sleeps until then, it does not look every second.
            await clock.sleep_until(at(600))
            turns = engine._core.loop_iterations
            await clock.sleep_until(at(1800))
            assert engine._core.loop_iterations - turns <= 2
        done = await all_final(engine, limited, reads)
    assert {job.status for job in done} == {JobStatus.COMPLETED}
    started = started_at(handler)
    assert [started[job.id] for job in others] == [at(61)] * 5
    assert handler.max_running["limited"] == 1
    # Jobs that left memory when the type was parked are read once more.
    assert max(reads.reads.values()) <= 2, reads.reads.most_common(3)
    assert events.names.count("job_type_parked") == 1


async def test_a_parked_type_runs_its_adds_and_is_unparked_after_its_backlog(
    store: TrackedStore,
) -> None:
    clock = VirtualClock(T0)
    handler = limited_handler(clock, 1.0)
    settings = EngineSettings(
        defaults=EXACT, window_size=10, max_concurrency=2, type_limits={"limited": 1}
    )
    events = Events()
    async with engine_running(store, clock, handler, settings=settings, log=events) as engine:
        limited = await engine.add_jobs(
            [JobSpec(job_type="limited", run_at=at(60)) for _ in range(20)]
        )
        await clock.sleep_until(at(62))
        assert parked(engine) == ["limited"]
        # Added while the type is parked: one due now (it waits in the store
        # behind the backlog), some due later than the backlog lasts.
        now = await engine.add_job(JobSpec(job_type="limited", run_at=at(62)))
        later = await engine.add_jobs(
            [JobSpec(job_type="limited", run_at=at(150 + n)) for n in range(3)]
        )
        done = await all_final(engine, [*limited, now, *later], store)
        # The backlog is over: the type is no longer parked, and a new job of
        # it runs like any other.
        assert parked(engine) == []
        again = await engine.add_job(JobSpec(job_type="limited", run_at=at(200)))
        done += await all_final(engine, [again], store)
    assert {job.status for job in done} == {JobStatus.COMPLETED}
    started = started_at(handler)
    assert sorted(started[job.id] for job in limited) == [at(60 + n) for n in range(20)]
    assert started[now.id] == at(80)
    assert [started[job.id] for job in later] == [at(150), at(151), at(152)]
    assert started[again.id] == at(200)
    assert events.names.count("job_type_parked") == 1
    assert events.names.count("job_type_unparked") == 1


async def test_cancelling_a_parked_types_jobs_in_memory_does_not_stall_its_backlog(
    store: TrackedStore,
) -> None:
    # A type limited to one, its jobs 10 s each; parked, it keeps one job in
    # memory. Cancelling that job left a queue entry that still counted as one
    # in memory, and the finish of the running job woke nothing: the backlog
    # stayed in the store until something unrelated (here, a job at t500)
    # woke the engine.
    clock = VirtualClock(T0)
    handler = limited_handler(clock, 10.0)
    settings = EngineSettings(
        defaults=EXACT, window_size=10, max_concurrency=2, type_limits={"limited": 1}
    )
    async with engine_running(store, clock, handler, settings=settings) as engine:
        limited = await engine.add_jobs(
            [JobSpec(job_type="limited", run_at=at(60)) for _ in range(20)]
        )
        await engine.add_job(JobSpec(job_type="work", run_at=at(500)))
        await clock.sleep_until(at(61))
        assert parked(engine) == ["limited"]
        kept = [
            job.id
            for job in engine._core.jobs.values()
            if job.job_type == "limited" and job.status is JobStatus.PENDING
        ]
        assert kept
        for job_id in kept:
            await engine.cancel_job(job_id)
        rest = [job for job in limited if job.id not in kept]
        done = await all_final(engine, rest, store)
    assert {job.status for job in done} == {JobStatus.COMPLETED}
    started = started_at(handler)
    # Each one as the one before it ends.
    assert sorted(started[job.id] for job in rest) == [at(60 + 10 * n) for n in range(len(rest))]


async def test_a_job_placed_past_the_window_during_a_parked_types_read_does_not_stall_it(
    store: TrackedStore,
) -> None:
    # While a parked type is read on its own, jobs due tomorrow are added (one
    # of that type, one of another). Kept in memory because a read was in
    # flight, they put timers past the window's end, and no load happened
    # until tomorrow: the jobs of t110..t119 (past the window then) ran a day late.
    reads = Reads(store)
    clock = VirtualClock(T0)
    handler = limited_handler(clock, 1.0)
    settings = EngineSettings(
        defaults=EXACT, window_size=10, max_concurrency=2, type_limits={"limited": 1}
    )
    async with engine_running(reads, clock, handler, settings=settings) as engine:

        async def add_tomorrow() -> None:
            await engine.add_jobs(
                [JobSpec(job_type=job_type, run_at=at(86_400)) for job_type in ("work", "limited")]
            )

        reads.on_type_read = add_tomorrow
        limited = await engine.add_jobs(
            [JobSpec(job_type="limited", run_at=at(60)) for _ in range(20)]
        )
        work = await engine.add_jobs(
            [JobSpec(job_type="work", run_at=at(100 + n)) for n in range(20)]
        )
        done = await all_final(engine, [*limited, *work], reads)
        assert reads.on_type_read is None  # it ran
    assert {job.status for job in done} == {JobStatus.COMPLETED}
    started = started_at(handler)
    assert [started[job.id] for job in work] == [job.run_at for job in work]


async def test_a_parked_types_job_due_later_than_the_window_does_not_stall_it(
    store: TrackedStore,
) -> None:
    # Forty jobs of a type limited to one (t60..t99), and one of it due
    # tomorrow; fifty of another type, one a second from t70. The read of the
    # parked type that reached tomorrow's job put it on a timer past the
    # window's end, and no load happened until tomorrow: the jobs of t100..t119
    # ran a day late.
    clock = VirtualClock(T0)
    handler = limited_handler(clock, 1.0)
    settings = EngineSettings(
        defaults=EXACT, window_size=10, max_concurrency=2, type_limits={"limited": 1}
    )
    async with engine_running(store, clock, handler, settings=settings) as engine:
        limited = await engine.add_jobs(
            [JobSpec(job_type="limited", run_at=at(60)) for _ in range(40)]
        )
        tomorrow = await engine.add_job(JobSpec(job_type="limited", run_at=at(86_400)))
        work = await engine.add_jobs(
            [JobSpec(job_type="work", run_at=at(70 + n)) for n in range(50)]
        )
        done = await all_final(engine, [*limited, *work], store)
        done += await all_final(engine, [tomorrow], store)
    assert {job.status for job in done} == {JobStatus.COMPLETED}
    started = started_at(handler)
    assert [started[job.id] for job in work] == [job.run_at for job in work]
    assert sorted(started[job.id] for job in limited) == [at(60 + n) for n in range(40)]
    assert started[tomorrow.id] == at(86_400)


async def test_a_parked_high_priority_type_is_not_queued_behind_lower_priority_jobs(
    store: TrackedStore,
) -> None:
    # Two slots; a type of priority 10 limited to one, its backlog parked;
    # twenty jobs of priority 0 due at t61 wait for the other slot. Reading
    # the parked type only once no job was ready to start left it out of
    # memory whenever its slot came free, and every lower-priority job took
    # it first.
    clock = VirtualClock(T0)
    handler = ScriptedHandler(
        clock,
        types=frozenset({"work", "limited"}),
        behaviour=sleeper(clock, 1.0),
    )
    settings = EngineSettings(
        defaults=EXACT, window_size=10, max_concurrency=2, type_limits={"limited": 1}
    )
    async with engine_running(store, clock, handler, settings=settings) as engine:
        limited = await engine.add_jobs(
            [JobSpec(job_type="limited", run_at=at(60), priority=10) for _ in range(20)]
        )
        work = await engine.add_jobs([JobSpec(job_type="work", run_at=at(61)) for _ in range(20)])
        done = await all_final(engine, [*limited, *work], store)
    assert {job.status for job in done} == {JobStatus.COMPLETED}
    started = started_at(handler)
    # The parked type keeps its slot busy, one job as the one before it ends;
    # the other type has the other slot from when it is due.
    assert sorted(started[job.id] for job in limited) == [at(60 + n) for n in range(20)]
    assert sorted(started[job.id] for job in work) == [at(61 + n) for n in range(20)]


async def test_a_parked_type_keeps_as_many_jobs_as_its_limit_can_start(
    store: TrackedStore,
) -> None:
    """Three slots; "limited" (priority 10) limited to two at a time, 1 s per
    job, twenty due at t60; twenty priority-0 jobs due at t61. Parked with one
    job in memory (a hundredth of the window), its two running jobs ended
    together and found one job to start: a priority-0 job took the other slot
    every second. Found by review at stop 39; now a parked type keeps at least
    twice its limit."""
    clock = VirtualClock(T0)
    handler = ScriptedHandler(
        clock, types=frozenset({"work", "limited"}), behaviour=sleeper(clock, 1.0)
    )
    settings = EngineSettings(
        defaults=EXACT, window_size=10, max_concurrency=3, type_limits={"limited": 2}
    )
    events = Events()
    async with engine_running(store, clock, handler, settings=settings, log=events) as engine:
        limited = await engine.add_jobs(
            [JobSpec(job_type="limited", run_at=at(60), priority=10) for _ in range(20)]
        )
        work = await engine.add_jobs([JobSpec(job_type="work", run_at=at(61)) for _ in range(20)])
        await all_final(engine, [*limited, *work], store)
    started = started_at(handler)
    assert "job_type_parked" in events.names
    assert handler.max_running["limited"] == 2
    got = sorted(started[job.id] for job in limited)
    assert got == sorted([at(60 + n // 2) for n in range(20)]), [t - T0 for t in got]
