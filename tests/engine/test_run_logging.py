"""The per-run log events at the default level, through the daemon's logger."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
import structlog

from nexus_schedd.clock import VirtualClock
from nexus_schedd.daemon.logging import configure_logging
from nexus_schedd.model import JobSpec
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


@pytest.fixture
def log_stream(restore_logging: None) -> io.StringIO:
    """The daemon's JSON set-up at ``info`` into a string; restored afterwards."""
    stream = io.StringIO()
    configure_logging("info", "json", stream=stream)
    return stream


async def test_the_daemons_lazy_logger_is_bound_once_and_every_run_is_logged(
    store: TrackedStore, log_stream: io.StringIO
) -> None:
    # structlog.get_logger() (what the daemon hands the engine) is a lazy proxy
    # that makes a new logger, through the factory, on every event unless bound.
    factory = structlog.get_config()["logger_factory"]
    made = 0

    def counting_factory(*args: Any) -> Any:
        nonlocal made
        made += 1
        return factory(*args)

    structlog.configure(logger_factory=counting_factory)
    clock = VirtualClock(T0)
    handler = ScriptedHandler(clock)
    lazy = structlog.get_logger("nexus_schedd.daemon")
    async with engine_running(store, clock, handler, log=lazy) as engine:
        jobs = [await engine.add_job(JobSpec(job_type="work", run_at=at(i))) for i in range(5)]
        for job in jobs:
            await wait_until(engine, job.id, is_final, store)
    events = [json.loads(line) for line in log_stream.getvalue().splitlines()]
    for name in ("run_started", "run_finished"):
        assert sorted(e["job_id"] for e in events if e["event"] == name) == sorted(
            job.id for job in jobs
        )
    assert made == 1
    finished = [e for e in events if e["event"] == "run_finished"]
    assert {e["outcome"] for e in finished} == {"success"}
    for event in [e for e in events if e["event"] in ("run_started", "run_finished")]:
        assert event["level"] == "info" and event["job_type"] == "work" and event["attempt"] == 1
        # Milliseconds to the microsecond, as round(x, 3) gives them.
        for key in ("lateness_ms", "duration_ms"):
            if key in event:
                assert type(event[key]) is float and event[key] >= 0.0
                assert round(event[key], 3) == event[key]
