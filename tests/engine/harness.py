"""Test helpers: a store wrapper that knows when I/O is in flight, a virtual-time
driver that only jumps when the engine is truly idle, and a scriptable handler."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import anyio
import anyio.lowlevel

from nexus_schedd.clock import VirtualClock
from nexus_schedd.engine import Engine, EngineSettings
from nexus_schedd.handlers.base import HandlerContext
from nexus_schedd.handlers.registry import HandlerRegistry
from nexus_schedd.model import Job, JobDefaults, JobResult, JobStatus, Run
from nexus_schedd.model.queries import JobFilter, Page, RunFilter
from nexus_schedd.store.base import StagedWrites, Store
from nexus_schedd.store.rows import job_from_row, run_from_row
from nexus_schedd.store.sqlite import SQLiteStore
from nexus_schedd.tracing import RunTracer

T = TypeVar("T")
T0 = datetime(2025, 1, 6, 8, 0, tzinfo=UTC)
"""A Monday morning: where every engine test's virtual clock starts."""

EXACT = JobDefaults(backoff_jitter=0.0)
"""Defaults without backoff jitter, so retry times are exact."""


class TrackedStore(Store):
    """Delegates to a real store, counting calls in flight (SQLite hops threads
    and processes, which anyio cannot see, so the virtual clock must not jump
    meanwhile). It forwards the staged write path (StagedWrites) too, so engine
    tests on SQLite run the production checkpoint writes; over a store without
    it, rows are the objects themselves and go to ``write``."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.in_flight = 0
        self.changed = anyio.Event()
        """Set (and replaced) after every completed write."""

    async def _call(self, awaitable: Awaitable[T]) -> T:
        self.in_flight += 1
        try:
            return await awaitable
        finally:
            self.in_flight -= 1

    async def open(self) -> None:
        await self._call(self.inner.open())

    async def close(self) -> None:
        await self._call(self.inner.close())

    async def insert_jobs(self, jobs: Sequence[Job]) -> None:
        await self._call(self.inner.insert_jobs(jobs))
        self._notify()

    async def write(self, jobs: Sequence[Job] = (), runs: Sequence[Run] = ()) -> None:
        await self.before_write(list(jobs), list(runs))
        await self._call(self.inner.write(jobs, runs))
        self._notify()

    async def before_write(self, jobs: list[Job], runs: list[Run]) -> None:
        """Called with the objects of every write, either path (tests override it)."""

    @property
    def writes_in_flight(self) -> int:
        inner = self.inner
        return inner.writes_in_flight if isinstance(inner, StagedWrites) else 1

    def encode_job(self, job: Job) -> Any:
        inner = self.inner
        return inner.encode_job(job) if isinstance(inner, StagedWrites) else job

    def encode_run(self, run: Run) -> Any:
        inner = self.inner
        return inner.encode_run(run) if isinstance(inner, StagedWrites) else run

    async def write_encoded(self, jobs: Sequence[Any], runs: Sequence[Any]) -> None:
        inner = self.inner
        if isinstance(inner, StagedWrites):
            if isinstance(inner, SQLiteStore):
                await self.before_write(
                    [job_from_row(row) for row in jobs], [run_from_row(row) for row in runs]
                )
            await self._call(inner.write_encoded(jobs, runs))
        else:
            await self.before_write(list(jobs), list(runs))
            await self._call(inner.write(jobs, runs))
        self._notify()

    def _notify(self) -> None:
        changed, self.changed = self.changed, anyio.Event()
        changed.set()

    async def prune_runs(
        self, older_than: datetime, keep_per_job: int, jobs: Collection[str] | None = None
    ) -> int:
        return await self._call(self.inner.prune_runs(older_than, keep_per_job, jobs))

    async def get_job(self, job_id: str) -> Job | None:
        return await self._call(self.inner.get_job(job_id))

    async def get_job_by_name(self, name: str, *, include_final: bool = False) -> Job | None:
        return await self._call(self.inner.get_job_by_name(name, include_final=include_final))

    async def list_jobs(self, where: JobFilter, limit: int, cursor: str | None = None) -> Page[Job]:
        return await self._call(self.inner.list_jobs(where, limit, cursor))

    async def next_pending(
        self,
        after: tuple[datetime, str] | None,
        limit: int,
        *,
        only_type: str | None = None,
        skip_types: Collection[str] = (),
    ) -> list[Job]:
        return await self._call(
            self.inner.next_pending(after, limit, only_type=only_type, skip_types=skip_types)
        )

    async def jobs_in_status(self, status: JobStatus) -> list[Job]:
        return await self._call(self.inner.jobs_in_status(status))

    async def open_runs(self) -> list[Run]:
        return await self._call(self.inner.open_runs())

    async def list_runs(self, where: RunFilter, limit: int, cursor: str | None = None) -> Page[Run]:
        return await self._call(self.inner.list_runs(where, limit, cursor))

    async def count_by_status(self) -> dict[JobStatus, int]:
        return await self._call(self.inner.count_by_status())

    async def runs_of(self, job_id: str) -> list[Run]:
        """Every run of a job, oldest first."""
        page = await self.inner.list_runs(RunFilter(job_id=job_id), 1000)
        return sorted(page.items, key=lambda run: (run.started_at, run.scheduled_for, run.attempt))


async def all_tasks_blocked() -> None:
    """Like anyio.wait_all_tasks_blocked, but polling every 1 ms instead of 100 ms.

    A task counts as blocked while it awaits a future (a sleeping poller too,
    so two of these never keep each other spinning).
    """
    this = asyncio.current_task()
    while True:
        await asyncio.sleep(0.001)  # uvloop starves sub-ms timers
        if all(
            task is this or (task._fut_waiter is not None and not task._fut_waiter.done())  # type: ignore[attr-defined]
            for task in asyncio.all_tasks()
        ):
            return


async def quiesce(store: TrackedStore) -> None:
    """Return once every task is blocked and no store call is in flight."""
    while True:
        await all_tasks_blocked()
        if store.in_flight == 0:
            await all_tasks_blocked()
            if store.in_flight == 0:
                return


async def autojump(clock: VirtualClock, store: TrackedStore) -> None:
    """Forever: once all is idle, jump the clock to the earliest armed deadline."""
    while True:
        await quiesce(store)
        target = clock.next_deadline()
        if target is None:
            await anyio.sleep(0.001)
            continue
        clock.advance_to(target)
        await anyio.lowlevel.checkpoint()


class Events:
    """A logger double that keeps each event's name."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def bind(self, **_: Any) -> Events:
        return self

    def _keep(self, event: str, **fields: Any) -> None:
        self.names.append(event)

    debug = info = warning = error = critical = _keep


@dataclass
class Call:
    """One handler invocation as the handler saw it."""

    job_id: str
    job_type: str
    at: datetime
    attempt: int
    scheduled_for: datetime
    key: str
    deadline: datetime | None


Behaviour = Callable[[Job, HandlerContext], Awaitable[Any]]


@dataclass
class ScriptedHandler:
    """Records every call; runs ``behaviour`` (default: succeed at once)."""

    clock: VirtualClock
    types: frozenset[str] = frozenset({"work"})
    behaviour: Behaviour | None = None
    calls: list[Call] = field(default_factory=list)
    running: dict[str, int] = field(default_factory=dict)
    max_running: dict[str, int] = field(default_factory=dict)
    started: anyio.Event = field(default_factory=anyio.Event)

    def supports(self, job_type: str) -> bool:
        return job_type in self.types

    async def handle(self, job: Job, ctx: HandlerContext) -> Any:
        self.calls.append(
            Call(
                job.id,
                job.job_type,
                self.clock.now(),
                ctx.attempt,
                ctx.scheduled_for,
                ctx.idempotency_key,
                ctx.deadline,
            )
        )
        self.running[job.job_type] = self.running.get(job.job_type, 0) + 1
        self.max_running[job.job_type] = max(
            self.max_running.get(job.job_type, 0), self.running[job.job_type]
        )
        self.started.set()
        try:
            if self.behaviour is None:
                return JobResult.success({"ok": True})
            return await self.behaviour(job, ctx)
        finally:
            self.running[job.job_type] -= 1

    def calls_of(self, job_id: str) -> list[Call]:
        return [call for call in self.calls if call.job_id == job_id]


def sleeper(clock: VirtualClock, seconds: float, result: Any = None) -> Behaviour:
    """A behaviour that takes ``seconds`` of virtual time, then succeeds."""

    async def behave(job: Job, ctx: HandlerContext) -> Any:
        await clock.sleep_until(clock.now() + timedelta(seconds=seconds))
        return JobResult.success() if result is None else result

    return behave


@asynccontextmanager
async def engine_running(
    store: TrackedStore,
    clock: VirtualClock,
    handler: ScriptedHandler,
    *,
    settings: EngineSettings | None = None,
    jump: bool = True,
    tracer: RunTracer | None = None,
    log: Any | None = None,
) -> AsyncIterator[Engine]:
    """An engine serving ``store``; stopped (gracefully) on exit."""
    engine = Engine(
        store,
        HandlerRegistry({"scripted": handler}),
        clock,
        settings or EngineSettings(defaults=EXACT),
        rng=random.Random(7),
        tracer=tracer,
        log=log,
    )
    async with anyio.create_task_group() as tg:
        if jump:
            tg.start_soon(autojump, clock, store)
        await tg.start(engine.run)
        yield engine
        await engine.stop(grace_s=0)
        tg.cancel_scope.cancel()


@asynccontextmanager
async def crashing_engine(
    store: TrackedStore,
    clock: VirtualClock,
    handler: ScriptedHandler,
    *,
    settings: EngineSettings | None = None,
) -> AsyncIterator[Engine]:
    """An engine whose task group is abandoned on exit, without stop(): a crash."""
    engine = Engine(
        store,
        HandlerRegistry({"scripted": handler}),
        clock,
        settings or EngineSettings(defaults=EXACT),
        rng=random.Random(7),
    )
    async with anyio.create_task_group() as tg:
        tg.start_soon(autojump, clock, store)
        await tg.start(engine.run)
        yield engine
        tg.cancel_scope.cancel()


async def wait_until(
    engine: Engine, ref: str, predicate: Callable[[Job], bool], store: TrackedStore
) -> Job:
    """Wait (in virtual time) until the job satisfies ``predicate``; every change
    of a job reaches a store write, so each write is a reason to look again."""
    while True:
        changed = store.changed
        job = await engine.get_job(ref)
        if predicate(job):
            return job
        await changed.wait()


def is_final(job: Job) -> bool:
    return job.status.is_final


def at(seconds: float) -> datetime:
    """T0 plus ``seconds``."""
    return T0 + timedelta(seconds=seconds)
