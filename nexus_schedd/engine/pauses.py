"""Jobs paused until a time (SPEC 15 "pause until"): resumed by the engine's own
timer, across restarts, without polling.

One timer for all of them, armed at the earliest ``paused_until`` (like the
deadline watcher in :mod:`.workers`); an engine with no such job arms none. The
times are on disk (``Job.paused_until``): each engine loads them when it starts,
and in shared mode again every ``safety_recheck_s``, so a job paused through a
node that has since stopped is still resumed by the others.
"""

from __future__ import annotations

import heapq
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

import anyio
from anyio.abc import TaskStatus

from nexus_schedd.clock import Clock
from nexus_schedd.errors import StoreError
from nexus_schedd.model import Job, JobStatus

RETRY = timedelta(seconds=1)
"""How soon a resume or a load that met a store error is tried again."""

Resume = Callable[[str, datetime], Awaitable[None]]
"""Resume job ``id`` if it is still paused until exactly that instant."""
Load = Callable[[], Awaitable[list[Job]]]
"""Every paused job on disk."""


class PauseTimers:
    """Resumes each job paused until a time once that time has come."""

    def __init__(
        self, clock: Clock, log: Any, resume: Resume, load: Load, reload_every: timedelta | None
    ) -> None:
        self._clock = clock
        self._log = log
        self._resume = resume
        self._load_paused = load
        self._reload_every = reload_every
        self._heap: list[tuple[datetime, str, datetime]] = []
        """(when to act, job id, the paused_until it was armed for)."""
        self._watched: set[tuple[str, datetime]] = set()
        """(job id, paused_until) on the heap: a reload does not add them twice."""
        self._armed: datetime | None = None
        self._changed = anyio.Event()
        self._load_at: datetime | None = None
        """When to (re)load the paused jobs from the store: now at start, then in
        shared mode every ``reload_every``, and after a failed load."""

    def watch(self, job_id: str, until: datetime) -> None:
        """Resume ``job_id`` at ``until`` (if it is then still paused until it)."""
        if (job_id, until) not in self._watched:
            self._watched.add((job_id, until))
            self._push(until, job_id, until)

    def rearm(self) -> None:
        """Work the timer out again (the wall clock stepped)."""
        self._changed.set()

    def _push(self, at: datetime, job_id: str, until: datetime) -> None:
        heapq.heappush(self._heap, (at, job_id, until))
        if self._armed is None or at < self._armed:
            self._changed.set()

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Load the paused jobs, then resume each at its time, until cancelled."""
        self._load_at = self._clock.now()
        task_status.started()
        heap = self._heap
        while True:
            now = self._clock.now()
            if self._load_at is not None and self._load_at <= now:
                await self._load(now)
            while heap and heap[0][0] <= self._clock.now():
                _, job_id, until = heapq.heappop(heap)
                self._watched.discard((job_id, until))
                try:
                    await self._resume(job_id, until)
                except StoreError as exc:
                    self._log.error(
                        "paused_job_resume_failed",
                        job_id=job_id,
                        error=exc.message,
                        retry_in_s=RETRY.total_seconds(),
                    )
                    self._watched.add((job_id, until))
                    self._push(self._clock.now() + RETRY, job_id, until)
            armed = heap[0][0] if heap else None
            if self._load_at is not None and (armed is None or self._load_at < armed):
                armed = self._load_at
            self._armed = armed
            changed = self._changed = anyio.Event()
            with self._clock.deadline_scope(armed):
                await changed.wait()

    async def _load(self, now: datetime) -> None:
        try:
            paused = await self._load_paused()
        except StoreError as exc:
            self._log.error(
                "paused_jobs_load_failed", error=exc.message, retry_in_s=RETRY.total_seconds()
            )
            self._load_at = now + RETRY
            return
        for job in paused:
            if job.status is JobStatus.PAUSED and job.paused_until is not None:
                self.watch(job.id, job.paused_until)
        every = self._reload_every
        self._load_at = None if every is None else now + every
