"""The methods of ``io.nexus.Scheduler``: protocol parameters in, engine calls, JSON out.

Parameters arrive already checked against the IDL (types, required and unknown
fields); this module checks what the IDL cannot express (ranges, times,
zones, recurrences) and raises :mod:`nexus_schedd.errors` exceptions or
:class:`~nexus_schedd.control.varlink.ParameterError`.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, tzinfo
from typing import Any

import anyio

from nexus_schedd import __version__
from nexus_schedd.clock import Clock
from nexus_schedd.control.calendar import build_calendar
from nexus_schedd.control.varlink import ParameterError
from nexus_schedd.engine.service import UNSET, SchedulerService
from nexus_schedd.errors import InvalidSpec, UnknownJobType
from nexus_schedd.model import Job, JobSpec, JobStatus, Recurrence, RunOutcome
from nexus_schedd.model.events import Event
from nexus_schedd.model.queries import JobFilter, RequeueFilter, RunFilter
from nexus_schedd.model.schedule import preview, validate_schedule
from nexus_schedd.model.status import REQUEUABLE
from nexus_schedd.model.times import (
    format_instant,
    local_wall_time,
    parse_instant,
    resolve_zone,
)

ReloadCallback = Callable[[], Awaitable[Mapping[str, Any]]]
Params = dict[str, Any]

DEFAULT_PAGE = 100
MAX_PAGE = 1000
DEFAULT_PREVIEW = 10
MAX_PREVIEW = 1000
DEFAULT_REQUEUE = 1000
MAX_REQUEUE = 10_000
DEFAULT_EXPORT_DAYS = 30
MAX_EXPORT_DAYS = 366


class NotImplementedByDaemon(Exception):
    """The method exists in the IDL but this daemon cannot serve it (Reload without config)."""


@dataclass(frozen=True, slots=True)
class MethodContext:
    """What the methods need besides the engine."""

    clock: Clock
    default_timezone: str
    overdue_after_s: float
    reload: ReloadCallback | None


class SchedulerMethods:
    """One coroutine per method of ``io.nexus.Scheduler`` (Watch streams)."""

    def __init__(self, service: SchedulerService, context: MethodContext) -> None:
        self._service = service
        self._context = context

    def names(self) -> frozenset[str]:
        """The methods implemented here, to be matched against the IDL."""
        return frozenset(
            name for name in dir(self) if name[:1].isupper() and callable(getattr(self, name))
        )

    async def call(self, method: str, params: Params) -> Params:
        """Run one non-streaming method."""
        handler: Callable[[Params], Awaitable[Params]] = getattr(self, method)
        return await handler(params)

    # -- reads --------------------------------------------------------------------

    async def GetStatus(self, params: Params) -> Params:
        status = self._service.status()
        now = self._context.clock.now()
        return {
            "status": {
                "version": __version__,
                "node": status.node,
                "started_at": format_instant(status.started_at),
                "uptime_s": max(0.0, (now - status.started_at).total_seconds()),
                "counts": {s.value: int(status.counts.get(s, 0)) for s in JobStatus},
                "running": status.running,
                "due_backlog": status.due_backlog,
                "next_due": None if status.next_due is None else format_instant(status.next_due),
                "lateness_p50_ms": status.lateness_p50_ms,
                "lateness_p99_ms": status.lateness_p99_ms,
                "loop_lag_ms": status.loop_lag_ms,
                "extra": dict(status.extra),
            }
        }

    async def GetJob(self, params: Params) -> Params:
        return {"job": (await self._service.get_job(params["id"])).to_json()}

    async def ListJobs(self, params: Params) -> Params:
        due_before = None
        if params.get("overdue"):
            overdue_after = timedelta(seconds=self._context.overdue_after_s)
            due_before = self._context.clock.now() - overdue_after
        where = JobFilter(
            statuses=frozenset(JobStatus(s) for s in params.get("status") or ()),
            job_type=params.get("job_type"),
            target_id=params.get("target_id"),
            due_before=due_before,
        )
        page = await self._service.list_jobs(where, _limit(params), params.get("cursor"))
        return {"jobs": [job.to_json() for job in page.items], "next_cursor": page.next_cursor}

    async def ListRuns(self, params: Params) -> Params:
        job_id = params.get("job_id")
        if job_id is not None:
            job_id = (await self._service.get_job(job_id)).id
        where = RunFilter(
            job_id=job_id, outcomes=frozenset(RunOutcome(o) for o in params.get("outcome") or ())
        )
        page = await self._service.list_runs(where, _limit(params), params.get("cursor"))
        return {"runs": [run.to_json() for run in page.items], "next_cursor": page.next_cursor}

    async def Preview(self, params: Params) -> Params:
        recurrence = Recurrence.from_json(params["recurrence"], self._context.default_timezone)
        zone = resolve_zone(recurrence.timezone)
        start_raw = params.get("start")
        start = (
            self._context.clock.now()
            if start_raw is None
            else parse_instant(start_raw, zone, "start")
        )
        count = _bounded(params, "count", DEFAULT_PREVIEW, MAX_PREVIEW)
        until_raw = params.get("until")
        if until_raw is not None:
            recurrence = replace(recurrence, ends_at=parse_instant(until_raw, zone, "until"))
        if params.get("max_occurrences") is not None:
            limit = params["max_occurrences"]
            if limit < 1:
                raise ParameterError("max_occurrences", "must be at least 1")
            recurrence = replace(recurrence, max_occurrences=limit)
        exclude_raw = params.get("exclude")
        try:
            if exclude_raw is not None:
                recurrence = replace(recurrence, exclude=tuple(exclude_raw))
            validate_schedule(recurrence, start)
        except InvalidSpec as exc:
            # As AddJob would refuse it, naming the parameter this call was given.
            if exc.field == "recurrence.ends_at" and until_raw is not None:
                raise InvalidSpec("until", exc.reason) from None
            if exc.field == "recurrence.exclude" and exclude_raw is not None:
                raise InvalidSpec("exclude", exc.reason) from None
            raise
        wall = None if start_raw is None else local_wall_time(start_raw)
        found = preview(recurrence, start, count, wall)
        return {"occurrences": [format_instant(instant, zone) for instant in found]}

    async def ListHandlers(self, params: Params) -> Params:
        return {"handlers": sorted(self._service.handler_names())}

    async def ExportCalendar(self, params: Params) -> Params:
        days = _bounded(params, "days", DEFAULT_EXPORT_DAYS, MAX_EXPORT_DAYS)
        jobs: list[Job] = []
        where = JobFilter(statuses=frozenset({JobStatus.PENDING, JobStatus.RUNNING}))
        cursor: str | None = None
        while True:
            page = await self._service.list_jobs(where, MAX_PAGE, cursor)
            jobs.extend(page.items)
            cursor = page.next_cursor
            if cursor is None:
                break
        ical = build_calendar(jobs, self._context.clock.now(), days)
        return {"ical": ical.decode("utf-8")}

    async def Watch(self, params: Params) -> AsyncGenerator[list[Params], None]:
        """Events matching the filters, until the caller stops iterating, as lists
        of replies: the events ready together (one loop turn's, or those published
        while the server wrote the last list), which the server writes together.
        With ``announce``, the first reply says the subscription is in place."""
        job_type = params.get("job_type")
        job_id = params.get("job_id")
        # The service subscribes when asked, before any event: from the announcement
        # on, the client misses nothing.
        subscription = self._service.watch()
        try:
            if params.get("announce"):
                yield [{"subscribed": True}]
            while batch := await subscription.next_batch():
                replies = [
                    {"event": event.to_json()}
                    for event in batch
                    if _matches(event, job_type, job_id)
                ]
                if replies:
                    yield replies
        finally:
            # Shielded: this runs when the watcher was cancelled (client gone).
            with anyio.CancelScope(shield=True):
                await subscription.aclose()

    # -- writes -------------------------------------------------------------------

    async def AddJob(self, params: Params) -> Params:
        spec = self._spec(params["job"], "job", params.get("trace_context"))
        return {"job": (await self._service.add_job(spec)).to_json()}

    async def AddJobs(self, params: Params) -> Params:
        trace = params.get("trace_context")
        specs = [self._spec(raw, f"jobs[{i}]", trace) for i, raw in enumerate(params["jobs"])]
        if not specs:
            return {"jobs": []}
        return {"jobs": [job.to_json() for job in await self._service.add_jobs(specs)]}

    async def CancelJob(self, params: Params) -> Params:
        return {"job": (await self._service.cancel_job(params["id"])).to_json()}

    async def PauseJob(self, params: Params) -> Params:
        ref = params["id"]
        until = await self._job_time(ref, params.get("until"), "until")
        return {"job": (await self._service.pause_job(ref, until)).to_json()}

    async def ResumeJob(self, params: Params) -> Params:
        return {"job": (await self._service.resume_job(params["id"])).to_json()}

    async def TriggerJob(self, params: Params) -> Params:
        return {"job": (await self._service.trigger_job(params["id"])).to_json()}

    async def RequeueJob(self, params: Params) -> Params:
        ref = params["id"]
        run_at = await self._job_time(ref, params.get("run_at"), "run_at")
        return {"job": (await self._service.requeue_job(ref, run_at)).to_json()}

    async def _job_time(self, ref: str, raw: str | None, field: str) -> datetime | None:
        """A time given for job ``ref``: without an offset it is read in the job's
        recurrence zone, else in the daemon's default zone, as in AddJob (the IDL)."""
        if raw is None:
            return None
        current = (await self._service.get_job(ref)).recurrence
        zone_name = current.timezone if current is not None else self._context.default_timezone
        return parse_instant(raw, resolve_zone(zone_name), field)

    async def RequeueJobs(self, params: Params) -> Params:
        statuses = frozenset(JobStatus(s) for s in params.get("status") or ())
        if statuses - REQUEUABLE:
            raise InvalidSpec(
                "status",
                "a requeue takes failed_permanent and/or canceled jobs, not "
                + ", ".join(sorted(s.value for s in statuses - REQUEUABLE)),
            )
        since_raw = params.get("since")
        since = (
            None
            if since_raw is None
            else parse_instant(since_raw, resolve_zone(self._context.default_timezone), "since")
        )
        filters = (statuses, params.get("job_type"), params.get("target_id"), since)
        error_contains = params.get("error_contains")
        if not any(filters) and not error_contains and not params.get("all"):
            raise InvalidSpec(
                "all",
                "no filter given: name a status, job_type, target_id, error_contains or "
                "since, or pass all: true to requeue every failed job",
            )
        where = RequeueFilter(
            job_type=params.get("job_type"),
            target_id=params.get("target_id"),
            error_contains=error_contains or None,
            since=since,
            limit=_bounded(params, "limit", DEFAULT_REQUEUE, MAX_REQUEUE),
        )
        if statuses:
            where = replace(where, statuses=statuses)
        report = await self._service.requeue_jobs(where)
        return {
            "count": len(report.ids),
            "ids": report.ids,
            "skipped": [{"id": job_id, "reason": reason} for job_id, reason in report.skipped],
            "more": report.more,
        }

    async def BackfillJob(self, params: Params) -> Params:
        parent = await self._service.get_job(params["id"])
        # Without an offset, read in the job's recurrence zone (as _job_time does).
        zone = resolve_zone(
            parent.recurrence.timezone if parent.recurrence else self._context.default_timezone
        )
        start = parse_instant(params["from"], zone, "from")
        end = parse_instant(params["to"], zone, "to")
        report = await self._service.backfill_job(parent.id, start, end)
        jobs = report.jobs
        return {
            "count": len(jobs),
            "ids": [job.id for job in jobs],
            "first": _occurrence(jobs[0], zone) if jobs else None,
            "last": _occurrence(jobs[-1], zone) if jobs else None,
            "already_queued": report.already_queued,
        }

    async def RescheduleJob(self, params: Params) -> Params:
        ref = params["id"]
        recurrence: Recurrence | None = UNSET
        if params.get("clear_recurrence"):
            if params.get("recurrence") is not None:
                raise InvalidSpec("recurrence", "cannot be given with clear_recurrence")
            recurrence = None
        elif params.get("recurrence") is not None:
            recurrence = Recurrence.from_json(params["recurrence"], self._context.default_timezone)
        run_at = requested_wall = None
        if params.get("run_at") is not None:
            # A time without an offset is read in the (new) recurrence's zone,
            # else in the daemon's default zone, as in AddJob (the IDL says so).
            if recurrence is UNSET:
                run_at = await self._job_time(ref, params["run_at"], "run_at")
            else:
                zone_name = (
                    self._context.default_timezone if recurrence is None else recurrence.timezone
                )
                run_at = parse_instant(params["run_at"], resolve_zone(zone_name), "run_at")
            # Read in the recurrence's zone: a time inside a DST gap keeps its
            # wall-clock time for the later occurrences (SPEC 3), as in AddJob.
            requested_wall = local_wall_time(params["run_at"])
        if run_at is None and recurrence is UNSET:
            raise InvalidSpec("run_at", "give a new run_at and/or a recurrence")
        job = await self._service.reschedule_job(
            ref, run_at=run_at, recurrence=recurrence, requested_wall=requested_wall
        )
        return {"job": job.to_json()}

    async def Reload(self, params: Params) -> Params:
        if self._context.reload is None:
            raise NotImplementedByDaemon("Reload")
        return {"result": dict(await self._context.reload())}

    def _spec(self, raw: Any, field: str, trace_context: Any = None) -> JobSpec:
        try:
            spec = JobSpec.from_json(raw, self._context.default_timezone)
        except InvalidSpec as exc:
            if exc.field == "job" and field != "job":
                raise InvalidSpec(field, exc.reason) from None
            raise
        if trace_context:
            # The call's parameter (SPEC 15); the spec checks it (field trace_context.KEY).
            spec = replace(spec, trace_context=trace_context)
        if not self._service.supported(spec.job_type):
            raise UnknownJobType(spec.job_type)
        return spec


def _occurrence(job: Job, zone: tzinfo) -> str | None:
    """The occurrence a backfill job stands for, in its recurring job's zone."""
    return None if job.scheduled_for is None else format_instant(job.scheduled_for, zone)


def _matches(event: Event, job_type: str | None, job_id: str | None) -> bool:
    if job_type is not None:
        types = {
            event.job.job_type if event.job else None,
            event.run.job_type if event.run else None,
        }
        if job_type not in types:
            return False
    if job_id is not None:
        ids = {event.job.id if event.job else None, event.run.job_id if event.run else None}
        if job_id not in ids:
            return False
    return True


def _limit(params: Params) -> int:
    return _bounded(params, "limit", DEFAULT_PAGE, MAX_PAGE)


def _bounded(params: Params, name: str, default: int, maximum: int) -> int:
    value = params.get(name)
    if value is None:
        return default
    if not 1 <= value <= maximum:
        raise ParameterError(name, f"must be between 1 and {maximum}")
    return int(value)
