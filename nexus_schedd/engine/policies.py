"""The pure rules of the engine: backoff, the next occurrence, misfire walks, and
the next state of a job after an attempt or a crash.

Nothing here touches the store, the clock or the event loop (time and randomness
are arguments), so every rule can be read (and tested) on its own.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from nexus_schedd.errors import InvalidJobState
from nexus_schedd.model import Job, JobDefaults, JobResult, JobStatus, LastResult, RunOutcome
from nexus_schedd.model.frozen import fast_init
from nexus_schedd.model.schedule import next_occurrence, occurrences
from nexus_schedd.model.status import REQUEUABLE
from nexus_schedd.model.times import format_instant

MISFIRE_SKIP_RECORD_LIMIT = 100
"""A misfire ``skip`` records at most this many skipped runs (the most recent)."""

MISFIRE_WALK_LIMIT = 1_000_000
"""Missed occurrences counted before a walk gives up and jumps to the present."""


@fast_init
@dataclass(frozen=True, slots=True)
class Occurrence:
    """Where a job's schedule stands: the occurrence, when it is due, and the counters."""

    scheduled_for: datetime
    run_at: datetime
    occurrence_count: int
    retry_count: int = 0

    @classmethod
    def of(cls, job: Job) -> Occurrence:
        """The occurrence ``job`` currently describes."""
        assert job.scheduled_for is not None and job.run_at is not None
        return cls(job.scheduled_for, job.run_at, job.occurrence_count, job.retry_count)

    def changes(self) -> dict[str, Any]:
        """Keyword arguments for :meth:`Job.transition` that put a job on this occurrence."""
        return {
            "scheduled_for": self.scheduled_for,
            "run_at": self.run_at,
            "occurrence_count": self.occurrence_count,
            "retry_count": self.retry_count,
        }


def backoff_delay(retry_count: int, defaults: JobDefaults, rng: random.Random) -> float:
    """Seconds before retry number ``retry_count + 1``: base * factor**retry_count,
    capped at the maximum, then spread by +-backoff_jitter."""
    try:
        delay = defaults.backoff_base_s * defaults.backoff_factor**retry_count
    except OverflowError:
        delay = defaults.backoff_max_s
    delay = min(delay, defaults.backoff_max_s)
    if defaults.backoff_jitter > 0:
        delay *= 1 + rng.uniform(-defaults.backoff_jitter, defaults.backoff_jitter)
    return max(0.0, delay)


def jittered(instant: datetime, jitter_s: float, rng: random.Random) -> datetime:
    """``instant`` plus a random 0..jitter_s seconds (unchanged when jitter_s is 0)."""
    if jitter_s <= 0:
        return instant
    return instant + timedelta(seconds=rng.uniform(0.0, jitter_s))


def following(job: Job, after: Occurrence, rng: random.Random) -> Occurrence | None:
    """The occurrence after ``after`` for ``job``'s recurrence, or None when the
    schedule is over (not recurring, past ends_at, or max_occurrences reached).

    ``after.occurrence_count`` does not yet count ``after`` itself, so with
    max_occurrences = N the N-th occurrence has no successor: exactly N in total.
    """
    recurrence = job.recurrence
    if recurrence is None or not recurrence.repeats:
        return None
    count = after.occurrence_count + 1
    if recurrence.max_occurrences is not None and count >= recurrence.max_occurrences:
        return None
    instant = next_occurrence(recurrence, job.anchor_at, after.scheduled_for)
    if instant is None or (recurrence.ends_at is not None and instant > recurrence.ends_at):
        return None
    return Occurrence(instant, jittered(instant, job.jitter_s, rng), count)


@dataclass(frozen=True, slots=True)
class MissedWalk:
    """The result of walking a job's schedule from a missed occurrence to now."""

    latest_missed: Occurrence
    """The last occurrence at or before now (what ``run_once`` runs)."""
    missed: int
    """How many occurrences were at or before now, ``latest_missed`` included."""
    recent: tuple[datetime, ...]
    """The most recent missed instants, at most MISFIRE_SKIP_RECORD_LIMIT."""
    upcoming: Occurrence | None
    """The first occurrence after now, or None when the schedule ended."""


def walk_missed(job: Job, now: datetime, rng: random.Random) -> MissedWalk:
    """Walk from ``job``'s current (missed) occurrence to the first one after ``now``."""
    current = Occurrence.of(job)
    recent: deque[datetime] = deque([current.scheduled_for], maxlen=MISFIRE_SKIP_RECORD_LIMIT)
    missed = 1
    upcoming = following(job, current, rng)
    while upcoming is not None and upcoming.scheduled_for <= now and missed < MISFIRE_WALK_LIMIT:
        current = upcoming
        recent.append(current.scheduled_for)
        missed += 1
        upcoming = following(job, current, rng)
    return MissedWalk(current, missed, tuple(recent), upcoming)


# -- the next state of a job -----------------------------------------------------


def move_on(job: Job, upcoming: Occurrence | None, now: datetime, last: LastResult) -> Job:
    """The job once its occurrence has passed: pending at the next one, or
    completed (the passed occurrence counted) when the schedule is over."""
    if upcoming is None:
        return job.transition(
            JobStatus.COMPLETED,
            now,
            last_result=last,
            occurrence_count=job.occurrence_count + 1,
        )
    return job.transition(JobStatus.PENDING, now, last_result=last, **upcoming.changes())


def after_failure(
    job: Job,
    now: datetime,
    last: LastResult,
    upcoming: Callable[[], Occurrence | None],
    defaults: JobDefaults,
    rng: random.Random,
    *,
    result: JobResult | None = None,
) -> Job:
    """The retry rule, for a failed attempt (``result`` None: no result, as after a
    crash or a timeout): retried after the handler's delay or the backoff while
    retries remain and the result allows it; else a one-shot job fails for good
    and a recurring one moves on to ``upcoming()`` (called only then: drawing the
    next occurrence's jitter must not depend on whether a retry came first)."""
    retriable = result.should_retry if result is not None else True
    if retriable and job.retry_count < job.max_retries:
        if result is not None and result.retry_delay_s is not None:
            delay = result.retry_delay_s
        else:
            delay = backoff_delay(job.retry_count, defaults, rng)
        return job.transition(
            JobStatus.PENDING,
            now,
            retry_count=job.retry_count + 1,
            run_at=now + timedelta(seconds=delay),
            last_result=last,
        )
    if not job.recurring:
        return job.transition(JobStatus.FAILED_PERMANENT, now, last_result=last)
    return move_on(job, upcoming(), now, last)


def after_attempt(
    job: Job,
    *,
    triggered: bool,
    upcoming: Occurrence | None,
    outcome: RunOutcome,
    result: JobResult | None,
    now: datetime,
    last: LastResult,
    defaults: JobDefaults,
    rng: random.Random,
) -> Job:
    """The job after its current attempt ended with ``outcome``.

    ``upcoming`` is where the schedule goes next (for a triggered attempt: the
    occurrence it stood beside). A cancel (shutdown) retries the occurrence
    without counting; a triggered extra run never retries and never moves the
    schedule; a failure follows :func:`after_failure`.
    """
    if outcome is RunOutcome.CANCELED:
        if triggered and upcoming is not None:
            return job.transition(JobStatus.PENDING, now, **upcoming.changes())
        return job.transition(JobStatus.PENDING, now, run_at=now)
    if triggered:
        # upcoming is None when the occurrence it stood beside was skipped
        # meanwhile (overlap forbid) and was the schedule's last one.
        return move_on(job, upcoming, now, last)
    if outcome is not RunOutcome.SUCCESS:
        return after_failure(job, now, last, lambda: upcoming, defaults, rng, result=result)
    return move_on(job, upcoming, now, last)


def after_crash(
    job: Job, now: datetime, defaults: JobDefaults, rng: random.Random, *, regular: bool
) -> Job:
    """A job left running by a process that died (or lost its lease).

    ``regular``: the open attempt was the job's own occurrence (not a triggered
    extra run), so it counts as a failed attempt under the retry rule; otherwise
    the job just goes back to pending where its schedule stands.
    """
    if not regular:
        return job.transition(JobStatus.PENDING, now)
    last = LastResult(
        success=False,
        output=None,
        error="crashed",
        started_at=job.updated_at,
        finished_at=now,
        duration_ms=max(0.0, (now - job.updated_at).total_seconds() * 1000.0),
    )
    return after_failure(
        job, now, last, lambda: following(job, Occurrence.of(job), rng), defaults, rng
    )


def requeued(job: Job, now: datetime, run_at: datetime | None, rng: random.Random) -> Job:
    """A failed_permanent or canceled job back to pending (SPEC 15), retries reset.

    A one-shot job runs its occurrence again at ``run_at`` (default now), with
    the same idempotency key (it is the same occurrence). A recurring job
    resumes at its schedule's first occurrence at or after that instant (never
    before its first occurrence), counted from its anchor as before;
    InvalidJobState when the schedule has
    none left (``ends_at`` passed or ``max_occurrences`` used up).
    """
    if job.status not in REQUEUABLE:
        raise InvalidJobState(
            f"only a failed_permanent or canceled job can be requeued; job {job.id} is "
            f"{job.status.value}",
            status=job.status.value,
        )
    start = now if run_at is None else run_at
    recurrence = job.recurrence
    if recurrence is None or not recurrence.repeats:
        return job.transition(
            JobStatus.PENDING, now, scheduled_for=start, run_at=start, retry_count=0
        )
    start = max(start, job.anchor_at)  # canceled before its first occurrence: that one
    if (
        recurrence.max_occurrences is not None
        and job.occurrence_count >= recurrence.max_occurrences
    ):
        raise InvalidJobState(
            f"job {job.id} has run all {recurrence.max_occurrences} of its occurrences",
            status=job.status.value,
        )
    found = occurrences(recurrence, job.anchor_at, start, 1, inclusive=True)
    if not found or (recurrence.ends_at is not None and found[0] > recurrence.ends_at):
        raise InvalidJobState(
            f"job {job.id}'s schedule has no occurrence at or after {format_instant(start)}",
            status=job.status.value,
        )
    instant = found[0]
    return job.transition(
        JobStatus.PENDING,
        now,
        scheduled_for=instant,
        run_at=jittered(instant, job.jitter_s, rng),
        retry_count=0,
    )
