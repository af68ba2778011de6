"""Backfill (SPEC 15): past occurrences of a recurring job run once more, each as an
extra one-shot job with that occurrence's ``scheduled_for`` and idempotency key.

The rules here are pure (time is an argument; nothing touches the store): which
occurrences a range holds and the number each had, and the job that stands for
one. The engine checks for backfill jobs already queued and inserts the rest.

Numbering. A job's runs carry the key ``"{job_id}:{occurrence_count}"``, and
``occurrence_count`` advances by one per occurrence of the schedule, skipped ones
(misfire, overlap) included. So an occurrence's number is its distance, counted
in occurrences, from the job's current occurrence (``scheduled_for``, numbered
``occurrence_count``). Counting from there rather than from ``anchor_at`` keeps
the numbers the job's own runs had also after a reschedule (which moves the
anchor, not the count) and when the anchor is an instant the job never ran at
(a first run asked for inside a DST gap). An occurrence that would be numbered
below 0 came before the job's first: it does not exist.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import NoReturn

from nexus_schedd.errors import InvalidSpec
from nexus_schedd.model import Job, JobDefaults, JobSpec, JobStatus, RecurrenceKind
from nexus_schedd.model.job import BackfillOf
from nexus_schedd.model.recurrence import Recurrence
from nexus_schedd.model.schedule import occurrences
from nexus_schedd.model.status import MisfirePolicy
from nexus_schedd.model.times import format_instant

MAX_BACKFILL_OCCURRENCES = 10_000
"""At most this many occurrences per backfill call (SPEC 15)."""

MAX_NUMBERING_WALK = 50_000
"""Occurrences walked, at most, between a backfill range and the job's current
occurrence to number the range's occurrences (interval kinds in elapsed time
need no walk). Keeps a call bounded: a cron job firing every minute reaches
about 35 days back from its current occurrence."""

_CHUNK = 1000
_ELAPSED_STEP = {
    RecurrenceKind.MINUTELY: timedelta(minutes=1),
    RecurrenceKind.HOURLY: timedelta(hours=1),
}


@dataclass(frozen=True, slots=True)
class BackfillOccurrence:
    """One occurrence a backfill runs again: its instant and its number."""

    scheduled_for: datetime
    number: int
    """The job's ``occurrence_count`` while this occurrence was current."""


@dataclass(frozen=True, slots=True)
class BackfillReport:
    """What a backfill did."""

    jobs: list[Job] = field(default_factory=list)
    """The backfill jobs added, one per occurrence, oldest occurrence first."""
    already_queued: int = 0
    """Occurrences in the range left out because a backfill job of this job for
    them is still pending, running or paused (a retried call adds nothing twice)."""


def backfill_occurrences(
    job: Job, start: datetime, end: datetime, now: datetime
) -> list[BackfillOccurrence]:
    """The occurrences of ``job``'s schedule in [``start``, ``end``) that have come
    (at or before ``now``), numbered, oldest first.

    They are the schedule's own (the model's occurrence functions from the job's
    anchor: DST rules, ``ends_at`` and ``max_occurrences`` apply); none before the
    job's first occurrence. Raises InvalidSpec: ``id`` for a job that does not
    repeat, ``to`` when ``end`` is not after ``start`` or the range holds more than
    :data:`MAX_BACKFILL_OCCURRENCES`, ``from`` when the range is too far from the
    job's current occurrence to number (:data:`MAX_NUMBERING_WALK`).
    """
    recurrence = job.recurrence
    if recurrence is None or not recurrence.repeats:
        raise InvalidSpec(
            "id",
            f"job {job.id} is a one-shot job; backfill takes a recurring job "
            "(trigger runs a one-shot job once more)",
        )
    if end <= start:
        raise InvalidSpec(
            "to", f"{format_instant(end)} is not after from ({format_instant(start)})"
        )
    reference, count = _reference(job)
    low = max(start, job.anchor_at)
    if _elapsed_grid(recurrence, job.anchor_at, reference):
        found = _elapsed(job, recurrence, reference, count, low, end, now)
    else:
        found = _walked(job, recurrence, reference, count, low, end, now)
    limit = recurrence.max_occurrences
    return [o for o in found if o.number >= 0 and (limit is None or o.number < limit)]


def backfill_spec(job: Job) -> JobSpec:
    """The spec every backfill job of ``job`` shares: its type, target, payload,
    priority, retries, timeout, follow-ups and trace context; no name, no
    recurrence, no jitter. Misfire ``run_all``: a backfill job must run once
    however long it waits for a slot (its ``run_at`` is when it was queued)."""
    extras = job.extras
    return JobSpec(
        job_type=job.job_type,
        target_id=job.target_id,
        payload=job.payload,
        priority=job.priority,
        max_retries=job.max_retries,
        timeout_s=job.timeout_s,
        misfire=MisfirePolicy.RUN_ALL,
        misfire_grace_s=job.misfire_grace_s,
        overlap=job.overlap,
        on_success=None if extras is None else extras.on_success,
        on_failure=None if extras is None else extras.on_failure,
        trace_context=None if extras is None else extras.trace_context,
    )


def job_for_occurrence(
    parent: Job,
    spec: JobSpec,
    occurrence: BackfillOccurrence,
    now: datetime,
    defaults: JobDefaults,
    job_id: str,
) -> Job:
    """The pending job that runs ``occurrence`` of ``parent`` once more: due now,
    with the occurrence's ``scheduled_for`` and (through ``backfill_of``) its
    idempotency key."""
    job = Job.create(
        spec, now, defaults, job_id, backfill_of=BackfillOf(parent.id, occurrence.number)
    )
    return replace(job, scheduled_for=occurrence.scheduled_for)


def _reference(job: Job) -> tuple[datetime, int]:
    """An occurrence of ``job`` and its number: the current one. A completed job
    has counted its last occurrence (``scheduled_for``) already."""
    if job.scheduled_for is None:
        return job.anchor_at, 0
    count = job.occurrence_count
    if job.status is JobStatus.COMPLETED:
        count = max(0, count - 1)
    return job.scheduled_for, count


def _elapsed_grid(recurrence: Recurrence, anchor: datetime, reference: datetime) -> bool:
    """True when occurrences are anchor + k * step with none removed, so numbers
    are arithmetic: minutely and hourly without exclusion calendars."""
    step = _ELAPSED_STEP.get(recurrence.kind)
    if step is None:
        return False
    # Exclusion calendars (SPEC 15) remove occurrences: then the count is walked.
    if recurrence.exclude:
        return False
    return (reference - anchor) % (step * recurrence.interval) == timedelta(0)


def _elapsed(
    job: Job,
    recurrence: Recurrence,
    reference: datetime,
    count: int,
    low: datetime,
    end: datetime,
    now: datetime,
) -> list[BackfillOccurrence]:
    """Occurrences on an elapsed-time grid, numbered by arithmetic."""
    step = _ELAPSED_STEP[recurrence.kind] * recurrence.interval
    low = max(low, reference - count * step)  # number 0: the job's first
    if recurrence.max_occurrences is not None:
        end = min(end, reference + (recurrence.max_occurrences - count) * step)
    instants = occurrences(
        recurrence, job.anchor_at, low, MAX_BACKFILL_OCCURRENCES + 1, inclusive=True
    )
    instants = [t for t in instants if t < end and t <= now]
    if len(instants) > MAX_BACKFILL_OCCURRENCES:
        first = instants[0]
        last_index = [-((first - end) // step) - 1, (now - first) // step]
        if recurrence.ends_at is not None:
            last_index.append((recurrence.ends_at - first) // step)
        total = min(last_index) + 1
        _too_many(job, low, end, instants[-1], f"{total:,}")
    return [BackfillOccurrence(t, count + (t - reference) // step) for t in instants]


def _walked(
    job: Job,
    recurrence: Recurrence,
    reference: datetime,
    count: int,
    low: datetime,
    end: datetime,
    now: datetime,
) -> list[BackfillOccurrence]:
    """Walk the schedule from the range (or from the reference, when that comes
    first) until both the range and the reference are passed, counting."""
    limit = recurrence.max_occurrences
    found: list[tuple[datetime, int]] = []
    reference_index: int | None = None
    walked = 0
    for instant in _schedule(recurrence, job.anchor_at, min(low, reference)):
        if reference_index is None and instant >= reference:
            reference_index = walked
        if (
            reference_index is not None
            and limit is not None
            and count + walked - reference_index >= limit
        ):
            break  # past the job's last occurrence (max_occurrences)
        if instant >= end or instant > now:
            if reference_index is not None:
                break
        elif instant >= low:
            if len(found) == MAX_BACKFILL_OCCURRENCES:
                _too_many(job, low, end, instant, f"more than {MAX_BACKFILL_OCCURRENCES:,}")
            found.append((instant, walked))
        walked += 1
        if walked > MAX_NUMBERING_WALK:
            raise InvalidSpec(
                "from",
                f"more than {MAX_NUMBERING_WALK:,} occurrences lie between the range and "
                f"job {job.id}'s current occurrence ({format_instant(reference)}): too far "
                "to number them (each run's idempotency key holds its number); backfill "
                "a range nearer to it",
            )
    if reference_index is None:
        reference_index = walked  # the schedule ended before the reference
    return [BackfillOccurrence(t, count + i - reference_index) for t, i in found]


def _schedule(recurrence: Recurrence, anchor: datetime, start: datetime) -> Iterator[datetime]:
    """The schedule's occurrences at or after ``start``, in order, until it ends."""
    after, inclusive = start, True
    while True:
        chunk = occurrences(recurrence, anchor, after, _CHUNK, inclusive=inclusive)
        yield from chunk
        if len(chunk) < _CHUNK:
            return
        after, inclusive = chunk[-1], False


def _too_many(job: Job, low: datetime, end: datetime, first_over: datetime, total: str) -> NoReturn:
    raise InvalidSpec(
        "to",
        f"[{format_instant(low)}, {format_instant(end)}) holds {total} occurrences of job "
        f"{job.id}; a backfill takes at most {MAX_BACKFILL_OCCURRENCES:,}: split the range "
        f"(the first {MAX_BACKFILL_OCCURRENCES:,} end before {format_instant(first_over)})",
    )
