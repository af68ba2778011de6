"""What the engine offers to its callers (the control server, the daemon).

:class:`SchedulerService` is the contract between ``control`` and ``engine``:
the control server only ever calls these methods, and the engine implements
them. Every mutating method is on disk before it returns. Methods take a job
reference that is an id or a name and raise the errors of
:mod:`nexus_schedd.errors`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Protocol

from nexus_schedd.engine.backfill import BackfillReport
from nexus_schedd.engine.events import Subscription
from nexus_schedd.model import Job, JobSpec, Recurrence, Run
from nexus_schedd.model.events import EngineStatus
from nexus_schedd.model.queries import JobFilter, Page, RequeueFilter, RequeueReport, RunFilter

UNSET: Any = object()
"""Marker for "leave unchanged" in :meth:`SchedulerService.reschedule_job`."""


class SchedulerService(Protocol):
    """The operations the control protocol exposes, implemented by the engine."""

    async def add_job(self, spec: JobSpec) -> Job:
        """Schedule a job (idempotent by name: an equal definition returns the existing job)."""
        ...

    async def add_jobs(self, specs: Sequence[JobSpec]) -> list[Job]:
        """Schedule several jobs atomically: all are added or none."""
        ...

    async def get_job(self, ref: str) -> Job:
        """The job with this id or (non-final) name."""
        ...

    async def list_jobs(self, where: JobFilter, limit: int, cursor: str | None = None) -> Page[Job]:
        """A page of jobs matching ``where``."""
        ...

    async def cancel_job(self, ref: str) -> Job:
        """End the job; a running attempt is cancelled."""
        ...

    async def pause_job(self, ref: str, until: datetime | None = None) -> Job:
        """Keep the job from running until resumed, or until ``until`` (then it
        resumes by itself)."""
        ...

    async def resume_job(self, ref: str) -> Job:
        """Resume a paused job; missed occurrences follow its misfire policy."""
        ...

    async def trigger_job(self, ref: str) -> Job:
        """Run one extra occurrence now without moving the schedule."""
        ...

    async def reschedule_job(
        self,
        ref: str,
        run_at: datetime | None = None,
        recurrence: Recurrence | None = UNSET,
        requested_wall: datetime | None = None,
    ) -> Job:
        """Give a pending or paused job a new run_at and/or recurrence
        (``requested_wall``: run_at as written, when it had no offset)."""
        ...

    async def requeue_job(self, ref: str, run_at: datetime | None = None) -> Job:
        """Put a failed_permanent or canceled job back to pending (SPEC 15)."""
        ...

    async def requeue_jobs(self, where: RequeueFilter) -> RequeueReport:
        """Requeue every job ``where`` matches, up to its limit, in one commit."""
        ...

    async def backfill_job(self, ref: str, start: datetime, end: datetime) -> BackfillReport:
        """Run each occurrence of a recurring job in [start, end) once more, as
        extra one-shot jobs added in one insert (SPEC 15)."""
        ...

    async def list_runs(self, where: RunFilter, limit: int, cursor: str | None = None) -> Page[Run]:
        """A page of runs, newest first."""
        ...

    def status(self) -> EngineStatus:
        """A cheap snapshot of the engine's state."""
        ...

    def watch(self) -> Subscription:
        """Events from now on, one at a time or in batches, until the caller closes
        the subscription. A subscriber that falls too far behind loses the oldest
        events rather than slowing the engine."""
        ...

    def supported(self, job_type: str) -> bool:
        """True if a loaded handler runs ``job_type``."""
        ...

    def handler_names(self) -> list[str]:
        """Names of the loaded handlers."""
        ...
