"""Handlers the benchmarks load into a real daemon (``factory = "benchmarks.bench_handlers:bench_handler"``).

``bench`` succeeds at once. ``bench.lateness`` also appends, per attempt, how late
it started against its ``scheduled_for`` (milliseconds, wall clock) to the file
named by the table's ``lateness_file``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from typing import Any

from nexus_schedd.handlers.base import HandlerContext
from nexus_schedd.model import Job, JobResult

_SUCCESS = JobResult.success()


class BenchHandler:
    """No-op jobs, and jobs that report their start lateness."""

    def __init__(self, lateness_file: str | None) -> None:
        self._fd = (
            None
            if lateness_file is None
            else os.open(lateness_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        )

    def supports(self, job_type: str) -> bool:
        return job_type in ("bench", "bench.lateness")

    async def handle(self, job: Job, ctx: HandlerContext) -> JobResult:
        if self._fd is not None and job.job_type == "bench.lateness":
            # The wall clock on purpose: lateness is what an outside observer sees.
            late_ms = (time.time() - ctx.scheduled_for.timestamp()) * 1000.0
            os.write(self._fd, f"{late_ms:.3f}\n".encode())
        return _SUCCESS

    async def aclose(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def bench_handler(config: Mapping[str, Any]) -> BenchHandler:
    """The factory named in the benchmark config."""
    path = config.get("lateness_file")
    return BenchHandler(None if path is None else str(path))
