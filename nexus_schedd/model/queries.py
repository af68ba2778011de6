"""Listing queries shared by the store, the engine and the clients: which jobs or
runs a listing returns, and one page of the answer."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Generic, TypeVar

from nexus_schedd.model.status import JobStatus, RunOutcome

if TYPE_CHECKING:
    from nexus_schedd.model.job import Job

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class JobFilter:
    """Which jobs a listing returns. Empty fields do not filter."""

    statuses: frozenset[JobStatus] = frozenset()
    job_type: str | None = None
    target_id: str | None = None
    due_before: datetime | None = None
    """Only pending jobs whose run_at is at or before this instant (``--overdue``)."""
    static: bool | None = None
    """Only jobs declared in the config's ``[[schedules]]`` (True) or not (False).
    Added for reconcile at start-up; a store may ignore it and return more, so
    callers re-check ``Job.static``."""
    backfill_of: str | None = None
    """Only backfill jobs (SPEC 15) of the recurring job with this id. A store
    may ignore it and return more, so callers re-check ``Job.extras``."""


@dataclass(frozen=True, slots=True)
class RequeueFilter:
    """Which failed or canceled jobs a bulk requeue takes (SPEC 15). Empty fields
    do not filter; ``statuses`` defaults to failed_permanent alone (a cancel was
    somebody's decision: bring canceled jobs back by asking for them)."""

    statuses: frozenset[JobStatus] = frozenset({JobStatus.FAILED_PERMANENT})
    """Default: failed_permanent alone (SPEC 15's "re-run what failed")."""
    job_type: str | None = None
    target_id: str | None = None
    error_contains: str | None = None
    """Only jobs whose last result's error contains this text (any case)."""
    since: datetime | None = None
    """Only jobs that ended (their ``updated_at``) at or after this instant."""
    limit: int = 1000
    """At most this many jobs, oldest first."""

    def matches(self, job: Job) -> bool:
        """True if ``job`` (already of a wanted status, type and target) passes
        the filters the store does not apply."""
        if self.since is not None and job.updated_at < self.since:
            return False
        if self.error_contains is not None:
            error = job.last_result.error if job.last_result is not None else None
            if error is None or self.error_contains.casefold() not in error.casefold():
                return False
        return True


@dataclass(frozen=True, slots=True)
class RequeueReport:
    """What a bulk requeue did: the jobs back to pending, in the order found."""

    ids: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    """(job id, reason) of matching jobs left as they were: their name is held by
    a live job, or their schedule has no occurrence left."""
    more: bool = False
    """More jobs matched than ``limit``; run it again for the next ones."""


@dataclass(frozen=True, slots=True)
class RunFilter:
    """Which runs a listing returns. Empty fields do not filter."""

    job_id: str | None = None
    outcomes: frozenset[RunOutcome] = frozenset()


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """One page of a listing; pass ``next_cursor`` back to get the next one."""

    items: list[T] = field(default_factory=list)
    next_cursor: str | None = None
