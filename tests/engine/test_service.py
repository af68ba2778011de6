"""The handler registry, Watch, status() and static-schedule reconciliation."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import anyio
import pytest

from nexus_schedd.clock import VirtualClock
from nexus_schedd.handlers.registry import HandlerRegistry
from nexus_schedd.model import JobSpec, JobStatus, Recurrence, RecurrenceKind
from nexus_schedd.model.events import EventKind
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


def test_registry_resolves_the_first_supporting_handler_and_caches_it() -> None:
    clock = VirtualClock(T0)
    first = ScriptedHandler(clock, types=frozenset({"a"}))
    second = ScriptedHandler(clock, types=frozenset({"a", "b"}))
    registry = HandlerRegistry({"one": first, "two": second}, broken={"three": "ImportError"})
    assert registry.resolve("a") is first
    assert registry.resolve("b") is second
    assert registry.resolve("c") is None
    first.types = frozenset()  # a cached answer does not ask supports() again
    assert registry.resolve("a") is first
    assert registry.names() == ["one", "two"]
    assert registry.supports("b") and not registry.supports("c")
    assert registry.broken == {"three": "ImportError"}


async def test_watch_streams_job_and_run_events(store: TrackedStore) -> None:
    clock = VirtualClock(T0)
    async with engine_running(store, clock, ScriptedHandler(clock)) as engine:
        events = engine.watch()
        kinds: list[EventKind] = []

        async def collect() -> None:
            async for event in events:
                kinds.append(event.kind)
                if event.kind is EventKind.RUN_FINISHED:
                    return

        async with anyio.create_task_group() as tg:
            tg.start_soon(collect)
            await engine.add_job(JobSpec(job_type="work", run_at=at(10)))
        await events.aclose()
    assert kinds == [EventKind.JOB_ADDED, EventKind.RUN_STARTED, EventKind.RUN_FINISHED]


async def test_status_counts_follow_transitions_without_store_queries(
    store: TrackedStore,
) -> None:
    clock = VirtualClock(T0)
    async with engine_running(store, clock, ScriptedHandler(clock)) as engine:
        done = await engine.add_job(JobSpec(job_type="work", run_at=at(10)))
        later = await engine.add_job(JobSpec(job_type="work", run_at=at(86400)))
        await engine.pause_job(later.id)
        await wait_until(engine, done.id, is_final, store)
        status = engine.status()
    assert status.counts == {JobStatus.COMPLETED: 1, JobStatus.PAUSED: 1}
    assert status.running == 0
    assert status.lateness_p50_ms == 0.0


async def test_reconcile_static_adds_updates_removes_and_keeps_by_name(
    store: TrackedStore,
) -> None:
    clock = VirtualClock(T0)
    daily = Recurrence(RecurrenceKind.DAILY)
    keep = JobSpec(job_type="work", name="keep", run_at=at(3600), recurrence=daily)
    change = JobSpec(job_type="work", name="change", run_at=at(3600), recurrence=daily)
    drop = JobSpec(job_type="work", name="drop", run_at=at(3600), recurrence=daily)
    async with engine_running(store, clock, ScriptedHandler(clock), jump=False) as engine:
        first = await engine.reconcile_static([keep, change, drop])
        assert first == {"added": ["keep", "change", "drop"], "updated": [], "removed": []}
        kept = await engine.get_job("keep")
        changed = JobSpec(
            job_type="work", name="change", run_at=at(3600), recurrence=daily, priority=3
        )
        second = await engine.reconcile_static([keep, changed])
        assert second == {"added": [], "updated": ["change"], "removed": ["drop"]}
        assert (await engine.get_job("keep")).id == kept.id
        assert (await engine.get_job("change")).priority == 3
        assert (await engine.get_job("change")).static


async def test_a_schedule_ended_in_the_config_stops_its_job_and_is_then_skipped(
    store: TrackedStore,
) -> None:
    """Giving a static schedule an ends_at in the past ends it: the running schedule
    is removed (it lacks that ends_at); the ended entry itself is skipped, and a
    later reconcile with the same entry changes nothing."""
    clock = VirtualClock(T0 + timedelta(days=10))
    hourly = Recurrence(RecurrenceKind.HOURLY)
    beat = JobSpec(job_type="work", name="beat", recurrence=hourly)
    ended = JobSpec(
        job_type="work", name="beat", recurrence=replace(hourly, ends_at=T0 + timedelta(days=1))
    )
    async with engine_running(store, clock, ScriptedHandler(clock), jump=False) as engine:
        assert (await engine.reconcile_static([beat]))["added"] == ["beat"]
        first = await engine.get_job("beat")
        report = await engine.reconcile_static([ended])
        assert report == {"added": [], "updated": [], "removed": ["beat"]}
        assert (await engine.get_job(first.id)).status is JobStatus.CANCELED
        again = await engine.reconcile_static([ended])
        assert again == {"added": [], "updated": [], "removed": []}


async def test_jobs_beyond_the_heap_window_are_loaded_when_it_drains(
    store: TrackedStore,
) -> None:
    from nexus_schedd.engine import EngineSettings
    from tests.engine.harness import EXACT

    clock = VirtualClock(T0)
    handler = ScriptedHandler(clock)
    specs = [JobSpec(job_type="work", run_at=at(60 * n)) for n in range(1, 11)]
    async with engine_running(store, clock, handler, jump=False) as loader:
        jobs = await loader.add_jobs(specs)
    settings = EngineSettings(window_size=3, defaults=EXACT)
    async with engine_running(store, clock, handler, settings=settings) as engine:
        assert engine.status().extra["window_jobs"] == 3
        for job in jobs:
            await wait_until(engine, job.id, is_final, store)
    assert [call.at for call in handler.calls] == [at(60 * n) for n in range(1, 11)]
