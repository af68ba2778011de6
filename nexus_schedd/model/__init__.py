"""The job model: jobs, recurrences, results, statuses and time parsing.

The model imports nothing from the rest of the package; everything else imports it.
"""

from __future__ import annotations

from nexus_schedd.model.events import EngineStatus, Event, EventKind
from nexus_schedd.model.job import (
    MAX_PAYLOAD_BYTES,
    BackfillOf,
    Job,
    JobDefaults,
    JobExtras,
    JobResult,
    JobSpec,
    LastResult,
    Run,
    encode_json,
    new_id,
    truncate_output,
)
from nexus_schedd.model.queries import JobFilter, Page, RunFilter
from nexus_schedd.model.recurrence import Recurrence, RecurrenceKind
from nexus_schedd.model.status import JobStatus, MisfirePolicy, OverlapPolicy, RunOutcome

__all__ = [
    "MAX_PAYLOAD_BYTES",
    "BackfillOf",
    "EngineStatus",
    "Event",
    "EventKind",
    "Job",
    "JobDefaults",
    "JobExtras",
    "JobFilter",
    "JobResult",
    "JobSpec",
    "JobStatus",
    "LastResult",
    "MisfirePolicy",
    "OverlapPolicy",
    "Page",
    "Recurrence",
    "RecurrenceKind",
    "Run",
    "RunFilter",
    "RunOutcome",
    "encode_json",
    "new_id",
    "truncate_output",
]
