"""Records of attempts in flight: one handler call, and what the engine knows about
a job while its attempts run."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import anyio

from nexus_schedd.engine.policies import Occurrence
from nexus_schedd.handlers.base import Handler
from nexus_schedd.model import Job, Run

CANCELED = "canceled"
"""Cancel reason of an attempt a control call (cancel, overlap replace) ended."""
SHUTDOWN = "shutdown"
"""Cancel reason of an attempt the engine's stop ended (retried on next start)."""


@dataclass(eq=False, slots=True)
class Attempt:
    """One handler call in flight."""

    job: Job
    run: Run
    handler: Handler | None
    triggered: bool
    """A triggered extra run (TriggerJob), not one of the schedule's occurrences."""
    time_limit: timedelta | None
    """The job's timeout; :meth:`Workers._execute` sets ``deadline`` from it when
    the handler starts."""
    deadline: datetime | None
    """None until the handler starts (then its start + ``time_limit``, if any)."""
    due: datetime | None
    """The run_at it was due at, for its lateness (None for a trigger: never late)."""
    scope: anyio.CancelScope | None = None
    """The running worker's cancel scope while the attempt runs, else None."""
    cancel_reason: str | None = None
    """Set by cancel/replace (CANCELED), shutdown (SHUTDOWN) or a lost lease before
    cancelling."""
    durable: bool = False
    """Its start is on disk (set by ``EngineCore._started``): until then whether
    it runs at all is not known, and no overlap policy is applied to it."""

    def cancel(self, reason: str) -> None:
        """End the attempt for ``reason`` (before its handler starts, or while it runs)."""
        self.cancel_reason = reason
        if self.scope is not None:
            self.scope.cancel()


@dataclass(eq=False, slots=True)
class RunningJob:
    """What the engine knows about a job with attempts in flight."""

    current: Attempt | None
    """The attempt the job's RUNNING status stands for (None once it ended)."""
    upcoming: Occurrence | None
    """Where the schedule goes when ``current`` ends; its run_at is the overlap timer."""
    detached: set[Attempt] = field(default_factory=set)
    """Attempts overtaken by a newer occurrence (overlap allow/replace): recorded only."""

    def attempts(self) -> list[Attempt]:
        """Every attempt of the job in flight."""
        attempts = list(self.detached)
        if self.current is not None:
            attempts.append(self.current)
        return attempts


class AttemptLog:
    """A logger bound with the attempt's keys on first use (most handlers never log)."""

    __slots__ = ("_attempt", "_bound", "_log")

    def __init__(self, log: Any, attempt: Attempt) -> None:
        self._log = log
        self._attempt = attempt
        self._bound: Any = None

    def __getattr__(self, name: str) -> Any:
        if self._bound is None:
            self._bound = self._log.bind(**log_keys(self._attempt))
        return getattr(self._bound, name)


def log_keys(attempt: Attempt) -> dict[str, Any]:
    """The keys every log event of an attempt carries."""
    job = attempt.job
    return {"job_id": job.id, "job_type": job.job_type, "attempt": attempt.run.attempt}


def logs_info(log: Any) -> bool:
    """Whether ``log`` writes info events (a structlog filtering logger can tell;
    any other logger is assumed to)."""
    enabled = getattr(log, "is_enabled_for", None)
    return True if enabled is None else bool(enabled(logging.INFO))
