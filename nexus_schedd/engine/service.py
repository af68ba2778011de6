"""What the engine offers to its callers (the control server, the daemon).

:class:`SchedulerService` is the contract between ``control`` and ``engine``:
the control server only ever calls these methods, and the engine implements
them. Every mutating method is on disk before it returns. Methods take a job
reference that is an id or a name and raise the errors of
:mod:`nexus_schedd.errors`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Protocol

from nexus_schedd.model import Job, JobSpec, JobStatus, Recurrence, Run
from nexus_schedd.model.times import format_instant
from nexus_schedd.store.base import JobFilter, Page, RunFilter


class EventKind(StrEnum):
    """What happened, as streamed by Watch."""

    JOB_ADDED = "job_added"
    JOB_UPDATED = "job_updated"
    JOB_REMOVED = "job_removed"
    RUN_STARTED = "run_started"
    RUN_FINISHED = "run_finished"


@dataclass(frozen=True, slots=True)
class Event:
    """One change to a job or run."""

    kind: EventKind
    at: datetime
    job: Job | None = None
    run: Run | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind.value,
            "at": format_instant(self.at),
            "job": None if self.job is None else self.job.to_json(),
            "run": None if self.run is None else self.run.to_json(),
        }


@dataclass(frozen=True, slots=True)
class EngineStatus:
    """A snapshot for GetStatus and the sd_notify STATUS line."""

    counts: dict[JobStatus, int]
    running: int
    due_backlog: int
    next_due: datetime | None
    lateness_p50_ms: float | None
    lateness_p99_ms: float | None
    loop_lag_ms: float
    started_at: datetime
    node: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


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

    async def pause_job(self, ref: str) -> Job:
        """Keep the job from running until resumed."""
        ...

    async def resume_job(self, ref: str) -> Job:
        """Resume a paused job; missed occurrences follow its misfire policy."""
        ...

    async def trigger_job(self, ref: str) -> Job:
        """Run one extra occurrence now without moving the schedule."""
        ...

    async def reschedule_job(
        self, ref: str, run_at: datetime | None = None, recurrence: Recurrence | None = UNSET
    ) -> Job:
        """Give a pending or paused job a new run_at and/or recurrence."""
        ...

    async def list_runs(self, where: RunFilter, limit: int, cursor: str | None = None) -> Page[Run]:
        """A page of runs, newest first."""
        ...

    def status(self) -> EngineStatus:
        """A cheap snapshot of the engine's state."""
        ...

    def watch(self) -> AsyncIterator[Event]:
        """Events from now on, until the caller stops iterating. A subscriber that
        falls too far behind loses the oldest events rather than slowing the engine."""
        ...

    def supported(self, job_type: str) -> bool:
        """True if a loaded handler runs ``job_type``."""
        ...

    def handler_names(self) -> list[str]:
        """Names of the loaded handlers."""
        ...
