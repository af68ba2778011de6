"""Jobs that other jobs' fates add (SPEC 15): follow-ups and notifications.

An occurrence that succeeds or ends failed adds the follow-up its job names
(``on_success`` / ``on_failure``); an attempt that will be retried, a failure
for good, a crashed run, a misfire skip and an overdue job add one job per
matching ``[[notify]]`` rule. This module only *builds* those jobs, as plain
pending jobs: the engine stages them in the same checkpoint as the change that
caused them (the run's outcome, the skipped run), so after a crash both are on
disk or neither. Notification jobs never notify again, about anything.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from nexus_schedd.errors import InvalidSpec
from nexus_schedd.model import Job, JobDefaults, JobSpec, JobStatus, Run, RunOutcome
from nexus_schedd.model.times import format_instant

NOTIFY_EVENTS = ("failed_permanent", "retry", "crashed", "overdue", "misfire_skipped")
"""What a ``[[notify]]`` rule may be ``on`` (SPEC 15)."""

ERROR_EXCERPT = 2000
"""Characters of a run's error kept in a trigger or an event."""


@dataclass(frozen=True, slots=True)
class NotifyRule:
    """One ``[[notify]]`` table: on which events, for which job types, which job to add."""

    on: frozenset[str]
    job_types: tuple[str, ...]
    """Globs of the job types it watches (``*`` by default)."""
    spec: JobSpec
    """The notification job; its payload gains ``"event"``."""

    def __post_init__(self) -> None:
        unknown = sorted(self.on - set(NOTIFY_EVENTS))
        if unknown:
            raise InvalidSpec(
                "on", f"unknown event {unknown[0]!r} (use {', '.join(NOTIFY_EVENTS)})"
            )
        if not self.on:
            raise InvalidSpec("on", f"name at least one event ({', '.join(NOTIFY_EVENTS)})")

    def matches(self, event: str, job_type: str) -> bool:
        return event in self.on and any(fnmatch.fnmatchcase(job_type, g) for g in self.job_types)


class Reactions:
    """Builds the follow-up and notification jobs of the events the engine reports.

    ``new_id`` makes job ids (the engine's ULID-format generator).
    """

    def __init__(
        self,
        rules: Sequence[NotifyRule],
        defaults: JobDefaults,
        new_id: Callable[[datetime], str],
    ) -> None:
        self._defaults = defaults
        self._new_id = new_id
        self.set_rules(rules)

    def set_rules(self, rules: Sequence[NotifyRule]) -> None:
        """Take a reloaded config's rules (jobs already added are kept)."""
        self.rules = tuple(rules)
        self.watches_overdue = any("overdue" in rule.on for rule in self.rules)
        """Some rule wants ``overdue``: the engine watches due jobs only then."""
        self.overdue_types: dict[str, bool] = {}
        """Job type -> whether an ``overdue`` rule names it (filled as types come due)."""

    def overdue_watched(self, job_type: str) -> bool:
        """True if a rule wants ``overdue`` for ``job_type`` (cached per type: the
        globs are matched once, not per due job)."""
        watched = self.overdue_types.get(job_type)
        if watched is None:
            watched = self.overdue_types[job_type] = any(
                rule.matches("overdue", job_type) for rule in self.rules
            )
        return watched

    # -- events -------------------------------------------------------------------

    def attempt_ended(self, before: Job, after: Job, run: Run, now: datetime) -> list[Job]:
        """The jobs an attempt's end adds: ``before`` is the job as the attempt
        found it, ``after`` its next version, ``run`` the closed run.

        The occurrence succeeded (``on_success``), ended failed (``on_failure``,
        notify ``failed_permanent``: a one-shot job failed for good, or a
        recurring one's occurrence used up its retries), or will be retried
        (notify ``retry``); a ``crashed`` run also notifies ``crashed``. A
        cancelled attempt adds nothing.
        """
        outcome = run.outcome
        if outcome is None or outcome in (RunOutcome.CANCELED, RunOutcome.SKIPPED):
            return []
        success = outcome is RunOutcome.SUCCESS
        retrying = (
            not success
            and after.status is JobStatus.PENDING
            and after.retry_count > before.retry_count
        )
        added: list[Job] = []
        extras = before.extras
        if extras is not None and not retrying:
            follow_up = extras.follow_up(success)
            if follow_up is not None:
                added.append(self._follow_up(follow_up, before, run, now))
        if self.rules and not (extras is not None and extras.notification):
            if outcome is RunOutcome.CRASHED:
                added.extend(self._notify("crashed", after, run, now))
            if retrying:
                added.extend(self._notify("retry", after, run, now))
            elif not success:
                added.extend(self._notify("failed_permanent", after, run, now))
        return added

    def crashes_closed(
        self, before: Sequence[Job], after: Sequence[Job], runs: Sequence[Run], now: datetime
    ) -> list[Job]:
        """What recovery adds (restart after a crash, or a lease take-over):
        ``before[i]`` was left running and becomes ``after[i]``; ``runs`` are the
        open runs closed ``crashed``. Each job's own run ends like an attempt."""
        by_job = {run.job_id: run for run in runs}
        added: list[Job] = []
        for old, new in zip(before, after, strict=True):
            run = by_job.get(old.id)
            if run is not None:
                added.extend(self.attempt_ended(old, new, run, now))
        return added

    def skipped(self, job: Job, runs: Sequence[Run], missed: int, now: datetime) -> list[Job]:
        """Notifications for a misfire ``skip`` of ``missed`` occurrences (one
        event, about the latest skipped run of ``runs``)."""
        if not self.rules or not runs or (job.extras is not None and job.extras.notification):
            return []
        return self._notify("misfire_skipped", job, runs[-1], now, missed=missed)

    def overdue(self, job: Job, now: datetime) -> list[Job]:
        """Notifications for a pending job still not started ``overdue_after_s``
        after its run_at."""
        if job.extras is not None and job.extras.notification:
            return []
        return self._notify("overdue", job, None, now)

    # -- building the jobs ----------------------------------------------------------

    def _follow_up(self, spec: JobSpec, job: Job, run: Run, now: datetime) -> Job:
        trigger = {
            "job_id": job.id,
            "run_id": run.id,
            "outcome": None if run.outcome is None else run.outcome.value,
            "error": _excerpt(run.error),
            "output": run.output,
        }
        spec = _with_added(spec, "trigger", trigger)
        return Job.create(spec, now, self._defaults, self._new_id(now))

    def _notify(
        self, event: str, job: Job, run: Run | None, now: datetime, **details: Any
    ) -> list[Job]:
        rules = [rule for rule in self.rules if rule.matches(event, job.job_type)]
        if not rules:
            return []
        described = {**event_json(event, job, run, now), **details}
        return [
            Job.create(
                _with_added(rule.spec, "event", described),
                now,
                self._defaults,
                self._new_id(now),
                notification=True,
            )
            for rule in rules
        ]


def event_json(event: str, job: Job, run: Run | None, now: datetime) -> dict[str, Any]:
    """What a notification's payload carries under ``"event"``: the event, the job
    (without its payload) and the run (without its output)."""
    return {
        "event": event,
        "at": format_instant(now),
        "job": {
            "id": job.id,
            "name": job.name,
            "job_type": job.job_type,
            "target_id": job.target_id,
            "status": job.status.value,
            "run_at": None if job.run_at is None else format_instant(job.run_at),
            "scheduled_for": None
            if job.scheduled_for is None
            else format_instant(job.scheduled_for),
            "retry_count": job.retry_count,
            "max_retries": job.max_retries,
        },
        "run": None
        if run is None
        else {
            "id": run.id,
            "scheduled_for": format_instant(run.scheduled_for),
            "attempt": run.attempt,
            "started_at": format_instant(run.started_at),
            "finished_at": None if run.finished_at is None else format_instant(run.finished_at),
            "outcome": None if run.outcome is None else run.outcome.value,
            "error": _excerpt(run.error),
            "node": run.node,
        },
    }


def _with_added(spec: JobSpec, key: str, value: dict[str, Any]) -> JobSpec:
    """``spec`` with ``value`` under ``key`` in its payload. Never raises: a value
    that would take the payload over its size limit loses its ``output`` (a
    trigger's) or its ``run`` (an event's), marked ``"truncated": true``; if even
    that does not fit, the payload is left as it was."""
    smaller = {k: v for k, v in value.items() if k not in ("output", "run")}
    for added in (value, {**smaller, "truncated": True}):
        try:
            return replace(spec, payload={**spec.payload, key: added})
        except InvalidSpec:
            continue
    return spec


def _excerpt(error: str | None) -> str | None:
    if error is None or len(error) <= ERROR_EXCERPT:
        return error
    return error[:ERROR_EXCERPT] + "..."
