"""What the engine reports about itself: the events Watch streams and the status
snapshot. Values of the model, so clients can decode them without the engine."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from nexus_schedd.model.job import Job, Run
from nexus_schedd.model.status import JobStatus
from nexus_schedd.model.times import format_instant, parse_instant


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

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Event:
        """An event from Watch's JSON (what :meth:`to_json` writes)."""
        job = data.get("job")
        run = data.get("run")
        return cls(
            kind=EventKind(data["kind"]),
            at=parse_instant(data["at"]),
            job=None if job is None else Job.from_json(job),
            run=None if run is None else Run.from_json(run),
        )


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
