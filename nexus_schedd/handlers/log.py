"""The built-in ``log`` handler: logs the job's payload and succeeds (SPEC section 6).

Useful for demos, smoke tests and checking that a schedule fires when expected.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from nexus_schedd.errors import ConfigError
from nexus_schedd.handlers.base import HandlerContext
from nexus_schedd.model import Job, JobResult

_LEVELS = ("debug", "info", "warning", "error")


class LogHandler:
    """Runs ``log`` jobs: one structlog event with the payload; the output is the payload."""

    def __init__(self, level: str = "info") -> None:
        if level not in _LEVELS:
            raise ValueError(f"unknown level {level!r}")
        self.level = level

    def supports(self, job_type: str) -> bool:
        """Only the ``log`` job type."""
        return job_type == "log"

    async def handle(self, job: Job, ctx: HandlerContext) -> JobResult:
        """Log the payload and succeed."""
        emit = getattr(ctx.log, self.level)
        emit(
            "log_job",
            job_name=job.name,
            target_id=job.target_id,
            scheduled_for=ctx.scheduled_for.isoformat(),
            payload=job.payload,
        )
        return JobResult.success(job.payload)


def make_handler(config: Mapping[str, Any]) -> LogHandler:
    """Entry point ``log``: ``[handlers.log]`` takes ``level`` (debug|info|warning|error)."""
    unknown = set(config) - {"level"}
    if unknown:
        raise ConfigError(
            "<config>", f"handlers.log.{sorted(unknown)[0]}", "unknown key (use level)"
        )
    level = config.get("level", "info")
    if level not in _LEVELS:
        raise ConfigError(
            "<config>", "handlers.log.level", f"must be one of {' | '.join(_LEVELS)}, got {level!r}"
        )
    return LogHandler(str(level))


__all__ = ["LogHandler", "make_handler"]
