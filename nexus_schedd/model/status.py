"""Job statuses, their transition table, and the enumerations of the job model."""

from __future__ import annotations

from enum import StrEnum

from nexus_schedd.errors import InvalidJobState


class JobStatus(StrEnum):
    """Where a job is in its life. ``completed``, ``failed_permanent`` and ``canceled`` are final."""

    PENDING = "pending"
    RUNNING = "running"
    PAUSED = "paused"
    COMPLETED = "completed"
    FAILED_PERMANENT = "failed_permanent"
    CANCELED = "canceled"

    @property
    def is_final(self) -> bool:
        """True for the statuses that end a job: completed never changes again;
        failed_permanent and canceled change only by a requeue (SPEC 15)."""
        return self in _FINAL

    @property
    def can_execute(self) -> bool:
        """True when a job in this status may start an attempt (seed parity: pending only)."""
        return self is JobStatus.PENDING

    def can_transition_to(self, new: JobStatus) -> bool:
        """Whether the transition table allows moving from this status to ``new``."""
        return new in _TRANSITIONS[self]

    def ensure_transition(self, new: JobStatus) -> JobStatus:
        """Return ``new`` if the move is allowed, else raise :class:`InvalidJobState`."""
        if not self.can_transition_to(new):
            raise InvalidJobState(
                f"a {self.value} job cannot become {new.value}", status=self.value
            )
        return new


_FINAL = frozenset({JobStatus.COMPLETED, JobStatus.FAILED_PERMANENT, JobStatus.CANCELED})

_TRANSITIONS: dict[JobStatus, frozenset[JobStatus]] = {
    JobStatus.PENDING: frozenset({JobStatus.RUNNING, JobStatus.PAUSED, JobStatus.CANCELED}),
    JobStatus.RUNNING: frozenset(
        {
            JobStatus.PENDING,
            JobStatus.COMPLETED,
            JobStatus.FAILED_PERMANENT,
            JobStatus.CANCELED,
        }
    ),
    JobStatus.PAUSED: frozenset({JobStatus.PENDING, JobStatus.CANCELED}),
    JobStatus.COMPLETED: frozenset(),
    # Final, but a requeue (SPEC 15) puts them back to pending.
    JobStatus.FAILED_PERMANENT: frozenset({JobStatus.PENDING}),
    JobStatus.CANCELED: frozenset({JobStatus.PENDING}),
}

REQUEUABLE = frozenset({JobStatus.FAILED_PERMANENT, JobStatus.CANCELED})
"""The final statuses a job leaves by a requeue (SPEC 15); completed is not one."""


class RunOutcome(StrEnum):
    """How one attempt (a run in the history) ended."""

    SUCCESS = "success"
    FAILURE = "failure"
    TIMEOUT = "timeout"
    CRASHED = "crashed"
    CANCELED = "canceled"
    SKIPPED = "skipped"


class MisfirePolicy(StrEnum):
    """What to do with occurrences that are later than ``misfire_grace_s``."""

    RUN_ONCE = "run_once"
    RUN_ALL = "run_all"
    SKIP = "skip"


class OverlapPolicy(StrEnum):
    """What a recurring job does when its next occurrence is due while one still runs."""

    FORBID = "forbid"
    ALLOW = "allow"
    REPLACE = "replace"
