"""The ``greet`` handler: says hello to the job's target.

A domain package's handler looks the same: a class with ``supports()`` and an
async ``handle()``, and a factory that takes the ``[handlers.NAME]`` table.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from nexus_schedd.errors import ConfigError
from nexus_schedd.handlers.base import HandlerContext
from nexus_schedd.model import Job, JobResult


class GreetHandler:
    """Runs ``greet`` jobs: ``{"name": "Ada"}`` (or the job's target) -> a greeting."""

    def __init__(self, greeting: str = "Hello") -> None:
        self.greeting = greeting

    def supports(self, job_type: str) -> bool:
        """Only the ``greet`` job type."""
        return job_type == "greet"

    async def handle(self, job: Job, ctx: HandlerContext) -> JobResult:
        """Greet ``payload.name`` (else the target); a missing name is a permanent failure."""
        name = job.payload.get("name") or job.target_id
        if not isinstance(name, str) or not name:
            return JobResult.failure("greet needs payload.name or a target_id", should_retry=False)
        message = f"{self.greeting}, {name}!"
        ctx.log.info("greeted", message=message)
        return JobResult.success({"message": message})


def make_handler(config: Mapping[str, Any]) -> GreetHandler:
    """Entry point ``greet``: ``[handlers.greet]`` takes ``greeting`` (default "Hello")."""
    greeting = config.get("greeting", "Hello")
    if not isinstance(greeting, str) or not greeting:
        raise ConfigError("<config>", "handlers.greet.greeting", "must be a non-empty string")
    return GreetHandler(greeting)
