"""Starts written a batch ahead (EngineCore._limits): only while handlers end faster
than a write, never past max_concurrency handlers, and never for a small pool."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import pytest

from nexus_schedd.clock import VirtualClock
from nexus_schedd.engine import Engine, EngineSettings
from nexus_schedd.engine.core import PIPELINE_MIN_SLOTS
from nexus_schedd.handlers.base import HandlerContext
from nexus_schedd.model import Job, JobResult, JobSpec, JobStatus, Run
from tests.engine.harness import (
    EXACT,
    T0,
    Behaviour,
    ScriptedHandler,
    TrackedStore,
    engine_running,
    quiesce,
)

pytestmark = pytest.mark.anyio

SLOTS = PIPELINE_MIN_SLOTS
POOL = EngineSettings(max_concurrency=SLOTS, defaults=EXACT)
"""The smallest pool whose starts may be written a batch ahead."""


class Watched(TrackedStore):
    """Notes, for every write, its starts (open runs) and the attempts in flight."""

    def __init__(self, inner: TrackedStore) -> None:
        super().__init__(inner.inner)
        self.engine: Engine | None = None
        self.starts: list[int] = []
        self.running_seen: list[int] = []

    async def before_write(self, jobs: list[Job], runs: list[Run]) -> None:
        self.starts.append(sum(1 for run in runs if run.finished_at is None))
        if self.engine is not None:
            self.running_seen.append(self.engine.status().running)


def spec(name: str, payload: dict[str, object] | None = None) -> JobSpec:
    return JobSpec(job_type="work", run_at=T0, name=name, payload=payload or {}, max_retries=0)


async def add(engine: Engine, count: int, prefix: str, **payload: object) -> list[Job]:
    jobs: list[Job] = []
    for first in range(0, count, 500):
        batch = [
            spec(f"{prefix}-{n}", dict(payload)) for n in range(first, min(count, first + 500))
        ]
        jobs += await engine.add_jobs(batch)
    return jobs


async def all_final(engine: Engine, jobs: list[Job], store: TrackedStore) -> None:
    for job in jobs:
        while not (await engine.get_job(job.id)).status.is_final:
            await store.changed.wait()


@pytest.fixture
async def watched(store: TrackedStore) -> Watched:
    return Watched(store)


async def test_handlers_that_end_at_once_get_a_pools_starts_per_write(watched: Watched) -> None:
    clock = VirtualClock(T0)
    handler = ScriptedHandler(clock)
    slots, settings = SLOTS, POOL
    async with engine_running(watched, clock, handler, settings=settings) as engine:
        watched.engine = engine
        jobs = await add(engine, 1500, "fast")
        await all_final(engine, jobs, watched)
    assert len(handler.calls) == 1500
    assert handler.max_running["work"] <= slots
    # Written ahead: writes with more than half the pool's starts, never more than a pool.
    assert max(watched.starts) > slots // 2
    assert max(watched.starts) <= slots
    assert max(watched.running_seen) <= 2 * slots


def held_until(release: anyio.Event) -> Behaviour:
    """Jobs added with ``{"wait": true}`` wait for ``release``; the others end at once."""

    async def behave(job: Job, ctx: HandlerContext) -> JobResult:
        if job.payload.get("wait"):
            await release.wait()
        return JobResult.success()

    return behave


@asynccontextmanager
async def held_pool(watched: Watched) -> AsyncIterator[tuple[Engine, ScriptedHandler, anyio.Event]]:
    """The smallest pipelining pool running :func:`held_until` handlers: the
    engine, its handler and the event that releases the jobs that wait."""
    clock = VirtualClock(T0)
    release = anyio.Event()
    handler = ScriptedHandler(clock, behaviour=held_until(release))
    async with engine_running(watched, clock, handler, settings=POOL, jump=False) as engine:
        watched.engine = engine
        yield engine, handler, release


async def test_handlers_that_wait_never_have_starts_written_ahead(watched: Watched) -> None:
    slots = SLOTS
    async with held_pool(watched) as (engine, handler, release):
        jobs = await add(engine, 5 * slots, "slow", wait=True)
        await quiesce(watched)  # every task waits: the pool's handlers on release
        assert handler.running["work"] == slots
        assert engine.status().running == slots  # the pool, and no start ahead of it
        release.set()
        await all_final(engine, jobs, watched)
    assert handler.max_running["work"] == slots
    assert max(watched.starts) <= slots // 2
    assert max(watched.running_seen) <= slots


async def test_a_burst_that_turns_slow_starts_at_most_one_pool_ahead(watched: Watched) -> None:
    """Handlers that end at once, then (the same type, in the same burst) ones that
    wait: a batch written ahead as they turn waits for workers, and no more is."""
    slots = SLOTS
    async with held_pool(watched) as (engine, handler, release):
        # One burst: the jobs that wait are due with the others, behind them.
        burst = await engine.add_jobs(
            [spec(f"fast-{n}") for n in range(900)]
            + [spec(f"slow-{n}", {"wait": True}) for n in range(4 * slots)]
        )
        fast, slow = burst[:900], burst[900:]
        await quiesce(watched)  # every task waits: the pool's handlers on release
        assert handler.running["work"] == slots
        # A batch written ahead as they turned (if one was, as the writes fell)
        # waits for workers; nothing after it.
        assert slots <= engine.status().running <= 2 * slots
        release.set()
        await all_final(engine, fast + slow, watched)
    assert handler.max_running["work"] == slots
    assert max(watched.running_seen) <= 2 * slots
    for job in fast + slow:
        stored = await watched.get_job(job.id)
        assert stored is not None and stored.status is JobStatus.COMPLETED


async def test_a_small_pool_never_writes_starts_ahead(watched: Watched) -> None:
    clock = VirtualClock(T0)
    handler = ScriptedHandler(clock)
    slots = PIPELINE_MIN_SLOTS // 2
    settings = EngineSettings(max_concurrency=slots, defaults=EXACT)
    async with engine_running(watched, clock, handler, settings=settings) as engine:
        watched.engine = engine
        jobs = await add(engine, 600, "fast")
        await all_final(engine, jobs, watched)
    assert len(handler.calls) == 600
    assert max(watched.starts) <= slots // 2
    assert max(watched.running_seen) <= slots
