"""start_ahead_ms: a due job's start reaches the disk before its run_at, and its
handler is still called exactly at run_at (never early)."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from nexus_schedd.clock import VirtualClock
from nexus_schedd.engine import EngineSettings
from nexus_schedd.model import Job, JobSpec, JobStatus, Run
from tests.engine.harness import (
    EXACT,
    T0,
    ScriptedHandler,
    TrackedStore,
    at,
    engine_running,
    is_final,
    quiesce,
    wait_until,
)

pytestmark = pytest.mark.anyio


class WriteLog(TrackedStore):
    """Notes the virtual time of every write that starts a job."""

    def __init__(self, inner: TrackedStore, clock: VirtualClock) -> None:
        super().__init__(inner.inner)
        self.clock = clock
        self.started_at: list[datetime] = []

    async def before_write(self, jobs: list[Job], runs: list[Run]) -> None:
        if any(run.finished_at is None for run in runs):  # a start: its open run
            self.started_at.append(self.clock.now())


@pytest.mark.parametrize("ahead_ms", [0.0, 10.0, 250.0])
async def test_start_is_written_ahead_and_the_handler_runs_at_run_at(
    store: TrackedStore, ahead_ms: float
) -> None:
    clock = VirtualClock(T0)
    log = WriteLog(store, clock)
    handler = ScriptedHandler(clock)
    settings = EngineSettings(defaults=EXACT, start_ahead_ms=ahead_ms)
    async with engine_running(log, clock, handler, settings=settings) as engine:
        job = await engine.add_job(JobSpec(job_type="work", run_at=at(600)))
        await wait_until(engine, job.id, is_final, log)
        runs = await log.runs_of(job.id)
    assert log.started_at == [at(600) - timedelta(milliseconds=ahead_ms)]
    assert [call.at for call in handler.calls] == [at(600)]
    assert [run.started_at for run in runs] == [at(600)]
    assert handler.calls[0].deadline == at(600 + 300)


def test_start_ahead_is_bounded() -> None:
    with pytest.raises(ValueError, match="start_ahead_ms"):
        EngineSettings(start_ahead_ms=-1)
    with pytest.raises(ValueError, match="start_ahead_ms"):
        EngineSettings(start_ahead_ms=5000)


async def test_a_job_canceled_while_started_ahead_is_recorded_and_never_called(
    store: TrackedStore,
) -> None:
    """Cancelled in the start-ahead window, before its run_at: the handler is never
    called, the run is recorded canceled, and the engine carries on (this path once
    crashed the worker on a log field computed only after the wait)."""
    clock = VirtualClock(T0)
    handler = ScriptedHandler(clock)
    settings = EngineSettings(defaults=EXACT, start_ahead_ms=250.0)
    async with engine_running(store, clock, handler, settings=settings, jump=False) as engine:
        job = await engine.add_job(JobSpec(job_type="work", run_at=at(0.2)))
        await wait_until(engine, job.id, lambda j: j.status is JobStatus.RUNNING, store)
        await quiesce(store)  # its worker now waits for run_at
        await engine.cancel_job(job.id)
        clock.advance(1)
        later = await engine.add_job(JobSpec(job_type="work", run_at=at(2)))
        clock.advance(2)
        await wait_until(engine, later.id, is_final, store)
        runs = await store.runs_of(job.id)
    assert [call.job_id for call in handler.calls] == [later.id]
    assert [run.outcome.value if run.outcome else None for run in runs] == ["canceled"]
