"""The engine's side of the handler contract: the add-time check and ctx.run_id."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from nexus_schedd.clock import VirtualClock
from nexus_schedd.errors import InvalidSpec
from nexus_schedd.handlers.base import HandlerContext
from nexus_schedd.model import JobResult, JobSpec, RunOutcome
from nexus_schedd.store.base import JobFilter, RunFilter
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


class CheckingHandler(ScriptedHandler):
    """A scripted handler with an add-time check: ``payload.queue`` must be "ok"."""

    def validate(self, job_type: str, payload: Mapping[str, Any]) -> None:
        if payload.get("queue") != "ok":
            raise InvalidSpec("payload.queue", "must be 'ok'")


async def test_an_add_the_handler_refuses_is_invalid_spec_and_stores_nothing(
    store: TrackedStore,
) -> None:
    clock = VirtualClock(T0)
    async with engine_running(store, clock, CheckingHandler(clock)) as engine:
        with pytest.raises(InvalidSpec) as refused:
            await engine.add_jobs(
                [
                    JobSpec(job_type="work", payload={"queue": "ok"}, run_at=at(10)),
                    JobSpec(job_type="work", payload={"queue": "other"}, run_at=at(10)),
                ]
            )
        assert refused.value.field == "payload.queue"
        assert (await engine.list_jobs(JobFilter(), 10)).items == []
        job = await engine.add_job(JobSpec(job_type="work", payload={"queue": "ok"}))
        assert job.payload == {"queue": "ok"}


async def test_the_context_carries_the_run_id_of_the_attempt(store: TrackedStore) -> None:
    clock = VirtualClock(T0)
    seen: list[str] = []

    async def remember(job: Any, ctx: HandlerContext) -> Any:
        seen.append(ctx.run_id)
        return JobResult.success()

    handler = ScriptedHandler(clock, behaviour=remember)
    async with engine_running(store, clock, handler) as engine:
        job = await engine.add_job(JobSpec(job_type="work", run_at=at(5)))
        await wait_until(engine, job.id, is_final, store)
        runs = (await engine.list_runs(RunFilter(job_id=job.id), 10)).items
    assert [run.outcome for run in runs] == [RunOutcome.SUCCESS]
    assert seen == [runs[0].id]
