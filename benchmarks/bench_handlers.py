"""Handlers the benchmarks load into a real daemon (``factory = "benchmarks.bench_handlers:bench_handler"``).

``bench`` succeeds at once. ``bench.lateness`` also appends, per attempt, how late
it started against its ``scheduled_for`` (milliseconds, wall clock) to the file
named by the table's ``lateness_file``.

With ``progress_socket`` (a Unix datagram socket the benchmark bound) and
``progress_every`` (N), every N-th call sends one datagram holding the count so
far: the benchmark learns how far a run has got without asking the daemon
anything (one counter increment per job, one datagram per N jobs).
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections.abc import Mapping
from typing import Any

from nexus_schedd.handlers.base import HandlerContext
from nexus_schedd.model import Job, JobResult

_SUCCESS = JobResult.success()


class BenchHandler:
    """No-op jobs, and jobs that report their start lateness."""

    def __init__(
        self,
        lateness_file: str | None,
        progress_socket: str | None = None,
        progress_every: int = 1000,
    ) -> None:
        self._fd = (
            None
            if lateness_file is None
            else os.open(lateness_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        )
        self._progress: socket.socket | None = None
        self._progress_to = progress_socket or ""
        self._every = max(1, progress_every)
        self._calls = 0
        if progress_socket is not None:
            self._progress = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self._progress.setblocking(False)

    def supports(self, job_type: str) -> bool:
        return job_type in ("bench", "bench.lateness")

    async def handle(self, job: Job, ctx: HandlerContext) -> JobResult:
        if self._fd is not None and job.job_type == "bench.lateness":
            # The wall clock on purpose: lateness is what an outside observer sees.
            late_ms = (time.time() - ctx.scheduled_for.timestamp()) * 1000.0
            os.write(self._fd, f"{late_ms:.3f}\n".encode())
        if self._progress is not None:
            self._calls += 1
            if self._calls % self._every == 0:
                # A benchmark that stopped listening must not fail the job.
                with contextlib.suppress(OSError):
                    self._progress.sendto(str(self._calls).encode(), self._progress_to)
        return _SUCCESS

    async def aclose(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self._progress is not None:
            self._progress.close()
            self._progress = None


def bench_handler(config: Mapping[str, Any]) -> BenchHandler:
    """The factory named in the benchmark config."""
    path = config.get("lateness_file")
    progress = config.get("progress_socket")
    return BenchHandler(
        None if path is None else str(path),
        None if progress is None else str(progress),
        int(config.get("progress_every", 1000)),
    )
