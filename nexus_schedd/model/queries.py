"""Listing queries shared by the store, the engine and the clients: which jobs or
runs a listing returns, and one page of the answer."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Generic, TypeVar

from nexus_schedd.model.status import JobStatus, RunOutcome

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
