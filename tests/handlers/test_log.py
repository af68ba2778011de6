"""The log handler: one structlog event with the payload, and success."""

from __future__ import annotations

import pytest
import structlog

from nexus_schedd.errors import ConfigError
from nexus_schedd.handlers.log import make_handler
from tests.handlers.conftest import MakeJob


@pytest.mark.anyio
async def test_logs_the_payload_and_returns_it_as_output(make_job: MakeJob) -> None:
    handler = make_handler({})
    job, ctx = make_job("log", {"message": "hello"}, name="demo", target_id="t-1")
    with structlog.testing.capture_logs() as logs:
        result = await handler.handle(job, ctx)
    assert result.ok and result.output == {"message": "hello"}
    [event] = logs
    assert event["event"] == "log_job"
    assert event["log_level"] == "info"
    assert event["payload"] == {"message": "hello"}
    assert (event["job_id"], event["job_name"], event["target_id"]) == (job.id, "demo", "t-1")


@pytest.mark.anyio
async def test_level_is_configurable(make_job: MakeJob) -> None:
    job, ctx = make_job("log", {})
    with structlog.testing.capture_logs() as logs:
        await make_handler({"level": "warning"}).handle(job, ctx)
    assert logs[0]["log_level"] == "warning"


def test_supports_only_log() -> None:
    handler = make_handler({})
    assert handler.supports("log") and not handler.supports("exec")


def test_bad_level_is_refused() -> None:
    with pytest.raises(ConfigError) as caught:
        make_handler({"level": "loud"})
    assert caught.value.key == "handlers.log.level"
