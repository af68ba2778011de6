"""A blocked event loop is noticed by the scheduler however it is woken.

Real time and the asyncio loop: after a block, asyncio runs callbacks queued
during the block (a poke of the scheduler) before the timers that came due
meanwhile, so the scheduler can resume by a poke after its deadline had passed.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import pytest

from nexus_schedd.clock import SystemClock
from nexus_schedd.engine import Engine, EngineSettings
from nexus_schedd.engine.core import LOOP_LAG_WARN_MS
from nexus_schedd.handlers.base import HandlerContext
from nexus_schedd.handlers.registry import HandlerRegistry
from nexus_schedd.model import Job, JobResult, JobSpec
from nexus_schedd.store.memory import MemoryStore

pytestmark = pytest.mark.anyio

BLOCK_S = 1.6
DUE_IN_S = 1.0


@pytest.fixture
def anyio_backend() -> str:
    """asyncio's order (queued callbacks before due timers) is the case here."""
    return "asyncio"


class Events:
    """A logger that keeps every event (bound once by the engine)."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, dict[str, Any]]] = []

    def bind(self, **_: Any) -> Events:
        return self

    def _keep(self, event: str, **fields: Any) -> None:
        self.seen.append((event, fields))

    debug = info = warning = error = critical = _keep


class Ran:
    def __init__(self) -> None:
        self.done = anyio.Event()

    def supports(self, job_type: str) -> bool:
        return job_type == "noop"

    async def handle(self, job: Job, ctx: HandlerContext) -> JobResult:
        self.done.set()
        return JobResult.success()


async def test_a_poke_after_the_deadline_of_a_blocked_loop_is_logged_as_lag() -> None:
    events, handler, store = Events(), Ran(), MemoryStore()
    await store.open()
    engine = Engine(
        store,
        HandlerRegistry({"noop": handler}),
        SystemClock(),
        EngineSettings(),
        log=events,
    )
    core = engine._core
    async with anyio.create_task_group() as tg:
        await tg.start(engine.run)
        await engine.add_job(
            JobSpec(job_type="noop", run_at=datetime.now(UTC) + timedelta(seconds=DUE_IN_S))
        )
        with anyio.fail_after(10):
            while not core._sleeping or core._sleeping_until is None:
                await anyio.lowlevel.checkpoint()
        started = time.monotonic()
        time.sleep(BLOCK_S)  # noqa: ASYNC251 -- blocking the loop past the deadline is the point
        blocked_s = time.monotonic() - started
        core.wake_scheduler()  # queued before the timer that came due during the block
        with anyio.fail_after(10):
            await handler.done.wait()
        await engine.stop(grace_s=0)
        tg.cancel_scope.cancel()
    await store.close()
    lags = [fields["lag_ms"] for event, fields in events.seen if event == "event_loop_lag"]
    assert lags, "the late wake-up was not logged"
    # The deadline was at most DUE_IN_S into the block (less the start-ahead).
    assert max(lags) >= max(LOOP_LAG_WARN_MS, (blocked_s - DUE_IN_S) * 1000 - 50)
    assert core.loop_lag_ms >= LOOP_LAG_WARN_MS
