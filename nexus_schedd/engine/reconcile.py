"""Reconcile of the config's ``[[schedules]]`` with the jobs they made, like a crontab."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from nexus_schedd.clock import Clock
from nexus_schedd.errors import InvalidSpec, UnknownJobType
from nexus_schedd.handlers.registry import HandlerRegistry
from nexus_schedd.model import Job, JobDefaults, JobSpec, JobStatus
from nexus_schedd.model.queries import JobFilter, Page

_NOT_FINAL = frozenset({JobStatus.PENDING, JobStatus.RUNNING, JobStatus.PAUSED})


class StaticJobs(Protocol):
    """What reconcile needs of the engine."""

    async def list_jobs(
        self, where: JobFilter, limit: int, cursor: str | None = None
    ) -> Page[Job]: ...

    async def cancel_job(self, ref: str) -> Job: ...

    async def find_live_by_name(self, name: str) -> Job | None: ...

    async def add_static(self, spec: JobSpec) -> Job: ...


async def reconcile_static(
    engine: StaticJobs,
    specs: Sequence[JobSpec],
    *,
    clock: Clock,
    registry: HandlerRegistry,
    defaults: JobDefaults,
    log: Any,
) -> dict[str, list[str]]:
    """Reconcile ``specs`` by name: add new schedules, replace changed ones, cancel
    removed ones; the names of each, as a report.

    Every schedule is checked before anything changes: a job type no handler
    runs raises UnknownJobType with nothing changed. A schedule that can no
    longer fire (its ``ends_at`` has passed) is skipped with a warning and its
    job, if any, left as it is: a config that worked must not stop the daemon
    from starting once one of its schedules has run its course.
    """
    now = clock.now()
    wanted: dict[str, tuple[JobSpec, Job]] = {}
    ended: dict[str, JobSpec] = {}
    for spec in specs:
        if spec.name is None:
            continue
        if not registry.supports(spec.job_type):
            raise UnknownJobType(spec.job_type)
        try:
            wanted[spec.name] = (spec, Job.create(spec, now, defaults))
        except InvalidSpec as exc:
            log.warning("static_schedule_skipped", name=spec.name, reason=exc.message)
            ended[spec.name] = spec
    report: dict[str, list[str]] = {"added": [], "updated": [], "removed": []}
    for job in await _static_jobs(engine):
        assert job.name is not None
        ended_spec = ended.get(job.name)
        # An ended schedule leaves its job alone only if the job is that very
        # schedule; a job without the new ends_at (the operator ending it) goes.
        keep = ended_spec is not None and ended_spec.recurrence == job.recurrence
        if job.name not in wanted and not keep:
            await engine.cancel_job(job.id)
            report["removed"].append(job.name)
    for name, (spec, candidate) in wanted.items():
        existing = await engine.find_live_by_name(name)
        if existing is not None and not existing.static:
            log.warning("static_schedule_name_taken", name=name, job_id=existing.id)
            continue
        if existing is None:
            await engine.add_static(spec)
            report["added"].append(name)
            continue
        same_start = spec.run_at is None or candidate.anchor_at == existing.anchor_at
        if candidate.definition() == existing.definition() and same_start:
            continue
        await engine.cancel_job(existing.id)
        await engine.add_static(spec)
        report["updated"].append(name)
    return report


async def _static_jobs(engine: StaticJobs) -> list[Job]:
    found: list[Job] = []
    cursor: str | None = None
    # The static filter keeps start-up off a decode of every live job (6 s
    # at 400,000 jobs); stores that ignore it return more, hence the re-check.
    where = JobFilter(statuses=_NOT_FINAL, static=True)
    while True:
        page = await engine.list_jobs(where, 500, cursor)
        found.extend(job for job in page.items if job.static)
        if page.next_cursor is None:
            return found
        cursor = page.next_cursor
