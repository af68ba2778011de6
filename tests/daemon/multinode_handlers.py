"""A handler plugin for the multi-node end-to-end test: it records every call durably.

Each call appends one line ``pid job_id scheduled_for attempt`` to the file named
by the ``path`` option, with a single O_APPEND write (atomic for short lines, so
the daemons of one test can share the file and a kill -9 leaves whole lines).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import anyio

from nexus_schedd.handlers.base import HandlerContext
from nexus_schedd.model import Job, JobResult


@dataclass(frozen=True)
class RecordingHandler:
    """Runs job type ``rec``: records the call, sleeps ``payload.sleep_s``, succeeds."""

    path: str

    def supports(self, job_type: str) -> bool:
        return job_type == "rec"

    async def handle(self, job: Job, ctx: HandlerContext) -> JobResult:
        line = f"{os.getpid()} {job.id} {ctx.scheduled_for.isoformat()} {ctx.attempt}\n"
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)
        await anyio.sleep(float(job.payload.get("sleep_s", 0.0)))
        return JobResult.success()


def make(config: Mapping[str, Any]) -> RecordingHandler:
    """The factory named by ``[handlers.rec] factory = "tests.daemon.multinode_handlers:make"``."""
    return RecordingHandler(path=str(config["path"]))
