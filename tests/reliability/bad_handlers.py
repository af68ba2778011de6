"""A misbehaving handler plugin, loaded by the real daemon through
``[handlers.bad] factory = "tests.reliability.bad_handlers:make"``.

Each job type is one kind of misbehaviour; ``steady`` is the well-behaved job
whose runs prove the others did not disturb the daemon.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import anyio

from nexus_schedd.handlers.base import HandlerContext
from nexus_schedd.model import Job, JobResult

JOB_TYPES = frozenset({"raises", "hangs", "blocks", "garbage", "leaks", "huge", "steady"})
HUGE_OUTPUT_CHARS = 8_000_000
BLOCK_S = 2.0


class BadHandler:
    """Misbehaves according to the job type; ``payload.marks`` names a file where
    the blocking and leaking behaviours note what they did (monotonic times)."""

    def __init__(self) -> None:
        self.leaked_threads_release = threading.Event()

    def supports(self, job_type: str) -> bool:
        return job_type in JOB_TYPES

    async def handle(self, job: Job, ctx: HandlerContext) -> Any:
        marks = Path(str(job.payload.get("marks", "/dev/null")))
        kind = job.job_type
        if kind == "raises":
            raise RuntimeError("handler exploded on purpose")
        if kind == "hangs":
            await anyio.sleep_forever()
        if kind == "blocks":
            started = time.monotonic()
            time.sleep(BLOCK_S)  # noqa: ASYNC251 -- blocking the event loop is the point
            note(marks, f"blocked {started} {time.monotonic()}")
            return JobResult.success("blocked the loop")
        if kind == "garbage":
            return {"this is": "not a JobResult"}
        if kind == "leaks":
            loop = asyncio.get_running_loop()
            # No reference kept and never awaited: leaking it is the point.
            loop.create_task(leaked_task(marks), name="leaked-by-handler")  # noqa: RUF006
            threading.Thread(
                target=leaked_thread, args=(marks, self.leaked_threads_release), daemon=False
            ).start()
            return JobResult.success("leaked a task and a thread")
        if kind == "huge":
            return JobResult.success("x" * HUGE_OUTPUT_CHARS)
        return JobResult.success({"steady": ctx.scheduled_for.isoformat()})


def note(marks: Path, line: str) -> None:
    with marks.open("a") as handle:
        handle.write(line + "\n")


async def leaked_task(marks: Path) -> None:
    """Outlives the handler that spawned it, on the daemon's own loop."""
    note(marks, "leaked task alive")
    await asyncio.sleep(3600)


def leaked_thread(marks: Path, release: threading.Event) -> None:
    """A non-daemon thread that outlives the handler (and would hold up exit)."""
    note(marks, "leaked thread alive")
    release.wait()


def make(config: Mapping[str, Any]) -> BadHandler:
    """The plugin factory."""
    return BadHandler()
