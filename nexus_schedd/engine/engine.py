"""The engine: its lifecycle and the control operations (SPEC sections 4 and 5).

:class:`Engine` is what the daemon and the control server hold. It composes the
parts, each in a file of its own:

- :mod:`.core`: timers, dispatch, outcome -> next state (the rules are in
  :mod:`.policies`), group-committed by :mod:`.checkpoint`;
- :mod:`.workers`: the worker pool and the deadline watcher;
- a source of due work (:mod:`.source`): :mod:`.local` for a store this node
  owns, :mod:`.shared` for a store several nodes share, picked by the store;
- :mod:`.reconcile` (the config's schedules) and :mod:`.recovery` (crash
  recovery, history pruning).
"""

from __future__ import annotations

import random
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from enum import Enum
from typing import Any

import anyio
import structlog
from anyio.abc import TaskGroup, TaskStatus

from nexus_schedd.clock import Clock
from nexus_schedd.engine.attempts import CANCELED, SHUTDOWN
from nexus_schedd.engine.backfill import (
    BackfillReport,
    backfill_occurrences,
    backfill_spec,
    job_for_occurrence,
)
from nexus_schedd.engine.core import TRIGGER_PRIORITY, EngineCore, TriggerWaiter
from nexus_schedd.engine.events import Subscription
from nexus_schedd.engine.local import LocalWindow
from nexus_schedd.engine.pauses import PauseTimers
from nexus_schedd.engine.policies import jittered, requeued
from nexus_schedd.engine.rates import Rate, RateLimits
from nexus_schedd.engine.reactions import NotifyRule
from nexus_schedd.engine.reconcile import reconcile_static
from nexus_schedd.engine.service import UNSET
from nexus_schedd.engine.settings import EngineSettings
from nexus_schedd.engine.shared import ClaimedWork
from nexus_schedd.engine.source import DueWorkSource
from nexus_schedd.errors import InvalidJobState, InvalidSpec, JobExists, JobNotFound
from nexus_schedd.handlers.registry import HandlerRegistry
from nexus_schedd.model import Job, JobSpec, JobStatus, Recurrence, Run
from nexus_schedd.model.events import EngineStatus, EventKind
from nexus_schedd.model.queries import JobFilter, Page, RequeueFilter, RequeueReport, RunFilter
from nexus_schedd.model.schedule import (
    first_occurrence,
    schedule_anchor,
    validate_schedule,
    without_exclusions,
)
from nexus_schedd.model.times import format_instant
from nexus_schedd.store.base import ClaimingStore, Store
from nexus_schedd.tracing import RunTracer

SAME_START_TOLERANCE_S = 60.0
"""Two adds of one name whose first due times differ by at most this are the same
job: a client that retries an add with a relative time must get its job back."""


class RunState(Enum):
    """Where the engine is in its life."""

    STARTING = "starting"
    STARTED = "started"
    STOPPING = "stopping"
    STOPPED = "stopped"


def _source_for(store: Store) -> Callable[[EngineCore], DueWorkSource]:
    """The source of due work a store calls for: leased claims on a store several
    nodes share, else a window over a store this node owns."""

    def make(core: EngineCore) -> DueWorkSource:
        if isinstance(store, ClaimingStore):
            return ClaimedWork(core, store)
        return LocalWindow(core)

    return make


class Engine:
    """The scheduler: see the module docstring.

    Start it with ``await tg.start(engine.run)``; stop it with ``await engine.stop()``.
    On a :class:`~nexus_schedd.store.base.ClaimingStore` it runs in shared mode
    (several nodes, docs/multi-node.md): control operations then work on the
    shared state (reads go to the store, changes are announced to every node).
    """

    def __init__(
        self,
        store: Store,
        registry: HandlerRegistry,
        clock: Clock,
        settings: EngineSettings,
        *,
        log: Any | None = None,
        rng: random.Random | None = None,
        tracer: RunTracer | None = None,
    ) -> None:
        self._log: Any = _bound(
            log if log is not None else structlog.get_logger("nexus_schedd.engine")
        )
        self._store = store
        self._clock = clock
        self._rng = rng or random.Random()
        self._core = EngineCore(
            store, registry, clock, settings, self._log, self._rng, _source_for(store), tracer
        )
        self._source = self._core.source
        self._checkpoints = self._core.checkpoints
        self._pauses = PauseTimers(
            clock,
            self._log,
            self._resume_if_still_paused,
            lambda: store.jobs_in_status(JobStatus.PAUSED),
            timedelta(seconds=settings.safety_recheck_s) if self.shared else None,
        )
        self.state = RunState.STOPPED
        self._tg: TaskGroup | None = None
        self._done = anyio.Event()
        self._backfill_lock = anyio.Lock()
        self.started_at = clock.now()

    @property
    def shared(self) -> bool:
        """True in shared mode (the store is shared by several nodes)."""
        return isinstance(self._source, ClaimedWork)

    @property
    def loop_iterations(self) -> int:
        """Scheduler loop passes so far (grows only while there is work)."""
        return self._core.loop_iterations

    # -- lifecycle --------------------------------------------------------------

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Recover, load the first due work, report started, then schedule until stop()."""
        core = self._core
        node = core.settings.node
        self.state = RunState.STARTING
        reason = "stop() was called"
        try:
            async with anyio.create_task_group() as tg:
                self._tg = tg
                await tg.start(self._checkpoints.run, name=f"engine {node} checkpointer")
                self.started_at = self._clock.now()
                await self._source.start(tg)
                core.status_counts.update(await self._store.count_by_status())
                # Prune once after start, when the scheduler first has nothing due:
                # a daemon restarted now and then must still honour history.*.
                core.pruner.due = True
                core.workers.start(tg, core.settings.max_concurrency)
                tg.start_soon(core.schedule, name=f"engine {node} scheduler")
                await tg.start(self._pauses.run, name=f"engine {node} pause timers")
                await tg.start(core.overdue.run, name=f"engine {node} overdue timer")
                self.state = RunState.STARTED
                self._log.info(
                    "engine_started",
                    node=node,
                    pending=core.status_counts[JobStatus.PENDING],
                    max_concurrency=core.settings.max_concurrency,
                )
                task_status.started()
        except anyio.get_cancelled_exc_class():
            reason = "cancelled from outside"
            raise
        except BaseException as exc:
            failed = "start" if self.state is RunState.STARTING else "run"
            reason = f"{failed} failed: {type(exc).__name__}: {exc}"
            raise
        finally:
            # Whatever ended it, say why (the daemon's exit follows from here).
            self.state = RunState.STOPPED
            self._done.set()
            self._log.info("engine_stopped", node=node, reason=reason, running=core.active)

    async def stop(self, grace_s: float | None = None) -> None:
        """Stop starting jobs, give running attempts ``grace_s`` to finish, cancel the
        rest (recorded canceled, retried on next start without counting), checkpoint,
        and make run() return."""
        core = self._core
        if core.stopping:
            await self._done.wait()
            return
        core.stopping = True
        if self.state is RunState.STARTED:
            self.state = RunState.STOPPING
        core.wake_scheduler()
        grace = core.settings.shutdown_grace_s if grace_s is None else grace_s
        self._log.info("engine_stopping", running=core.active, grace_s=grace)
        if core.active:
            core.drained = anyio.Event()
            with self._clock.deadline_scope(self._clock.now() + timedelta(seconds=grace)):
                await core.drained.wait()
        if core.active:
            core.drained = anyio.Event()
            for attempt in core.all_attempts():
                attempt.cancel(SHUTDOWN)
            await core.drained.wait()
        await self._checkpoints.flush()
        if self._tg is not None:
            self._tg.cancel_scope.cancel()
        await self._done.wait()

    @property
    def healthy(self) -> bool:
        """True while run() is serving and its scheduler task is alive.

        The daemon pings the systemd watchdog from a task on the same event loop,
        so a blocked loop stops the pings by itself; this adds "the engine has not
        died or stopped". (The scheduler sleeps while nothing is due, so an
        iteration counter would not tell a quiet engine from a dead one.)
        """
        return self.state is RunState.STARTED

    def clock_stepped(self) -> None:
        """The wall clock was stepped: re-evaluate due times now, not when the
        current sleep (measured in elapsed time) would have ended."""
        self._log.info("wall_clock_stepped", now=self._clock.now().isoformat())
        self._core.wake_scheduler()
        self._pauses.rearm()
        self._core.overdue.rearm()

    def set_registry(self, registry: HandlerRegistry) -> None:
        """Use ``registry`` for attempts started from now on (reload)."""
        self._core.registry = registry

    async def wait_unused(self, registry: HandlerRegistry) -> None:
        """Return once no attempt in flight runs a handler of ``registry``: after
        :meth:`set_registry` replaced it, its handlers can then be closed (a reload
        must not close a connection an attempt is still using)."""
        core = self._core
        users = [a for a in core.attempts_in_flight() if registry.owns(a.handler)]
        await core.wait_for_attempts(users)

    def set_type_limits(
        self, limits: Mapping[str, int], rates: Mapping[str, Rate] | None = None
    ) -> None:
        """Replace the per-job-type concurrency limits and, when given, the rates
        (reload; the buckets start full)."""
        core = self._core
        core.settings = replace(core.settings, type_limits=dict(limits))
        core.unblock_all()  # every job waiting on a limit or a token is ready again
        if rates is not None and dict(rates) != core.rates.rates:
            core.settings = replace(core.settings, type_rates=dict(rates))
            core.rates = RateLimits(rates)

    def set_notify_rules(self, rules: Sequence[NotifyRule]) -> None:
        """Replace the ``[[notify]]`` rules (reload); jobs they added are kept."""
        core = self._core
        core.settings = replace(core.settings, notify=tuple(rules))
        core.reactions.set_rules(rules)

    # -- SchedulerService: adding ---------------------------------------------------

    async def add_job(self, spec: JobSpec) -> Job:
        """Schedule a job (idempotent by name: an equal definition returns the existing job)."""
        return (await self.add_jobs([spec]))[0]

    async def add_jobs(self, specs: Sequence[JobSpec]) -> list[Job]:
        """Schedule several jobs atomically: all are added or none."""
        return await self._add(specs, static=False)

    async def add_static(self, spec: JobSpec) -> Job:
        """Add a job of the config's ``[[schedules]]`` (see :meth:`reconcile_static`)."""
        return (await self._add([spec], static=True))[0]

    async def _add(self, specs: Sequence[JobSpec], *, static: bool) -> list[Job]:
        core = self._core
        now = self._clock.now()
        result: list[Job] = []
        fresh: list[Job] = []
        by_name: dict[str, Job] = {}
        for spec in specs:
            # UnknownJobType, or InvalidSpec from the handler's add-time check.
            core.registry.check_job(spec.job_type, spec.payload)
            if spec.on_success is not None or spec.on_failure is not None:
                for key, follow_up in spec.follow_ups():
                    check_follow_up(core.registry, key, follow_up)
            # Ids from the engine's ULID-format generator: the ulid package costs
            # ~15 us an id, a quarter of a batched add.
            job = Job.create(spec, now, core.settings.defaults, core.run_ids.next(now))
            if static or job.jitter_s > 0:
                # Jitter is added to every occurrence (SPEC 2), the first one too.
                assert job.run_at is not None
                job = replace(
                    job, static=static, run_at=jittered(job.run_at, job.jitter_s, self._rng)
                )
            if spec.name is not None:
                existing = by_name.get(spec.name) or await self.find_live_by_name(spec.name)
                if existing is not None:
                    # The first due time is part of the definition (SPEC 2) when
                    # the add names one; an add for "now" matches on the rest.
                    # A retried relative add ("--in 5m") lands a little later
                    # than the first: within the tolerance it is the same job.
                    moved = spec.run_at is not None and (
                        abs((job.anchor_at - existing.anchor_at).total_seconds())
                        > SAME_START_TOLERANCE_S
                    )
                    if moved or existing.definition() != job.definition():
                        raise JobExists(spec.name, existing.id)
                    result.append(existing)
                    continue
                by_name[spec.name] = job
            fresh.append(job)
            result.append(job)
        if fresh:
            await self._insert(fresh)
        return result

    async def _insert(self, fresh: list[Job]) -> None:
        """Insert new pending jobs in one write (all or none), then schedule them.

        Invariant: a job already in memory when the insert returns was taken in
        by the source while the insert finished (in shared mode this node's loop
        claims a row as soon as its commit's notification arrives; a window load
        may read it); that version is the newer one and stays. Placing the added
        version over a claimed job dropped it from memory while its lease was
        renewed for good: the job never ran (stop 40).
        """
        core = self._core
        await self._store.insert_jobs(fresh)
        jobs = core.jobs
        for job in fresh:
            core.status_counts[JobStatus.PENDING] += 1
            if job.id not in jobs:
                core.place(job)
            core.publish(EventKind.JOB_ADDED, job)

    # -- SchedulerService: reading --------------------------------------------------

    async def get_job(self, ref: str) -> Job:
        """The job with this id or (non-final) name."""
        job = await self._find(ref)
        if job is None:
            raise JobNotFound(ref)
        return job

    async def list_jobs(self, where: JobFilter, limit: int, cursor: str | None = None) -> Page[Job]:
        """A page of jobs from the store, with in-flight changes overlaid."""
        await self._checkpoints.flush()
        page = await self._store.list_jobs(where, limit, cursor)
        known = self._source.known
        items = [known(job.id) or job for job in page.items]
        return Page(items=items, next_cursor=page.next_cursor)

    async def list_runs(self, where: RunFilter, limit: int, cursor: str | None = None) -> Page[Run]:
        """A page of runs, newest first (finished runs are flushed first)."""
        await self._checkpoints.flush()
        return await self._store.list_runs(where, limit, cursor)

    def supported(self, job_type: str) -> bool:
        """True if a loaded handler runs ``job_type``."""
        return self._core.registry.supports(job_type)

    def handler_names(self) -> list[str]:
        """Names of the loaded handlers."""
        return self._core.registry.names()

    def status(self) -> EngineStatus:
        """A cheap snapshot: counts from an in-memory tally, no store query."""
        core = self._core
        samples = sorted(core.workers.lateness)
        p50 = statistics.median(samples) if samples else None
        p99 = samples[min(len(samples) - 1, int(len(samples) * 0.99))] if samples else None
        next_due = core.next_timer()
        source_due, extra = self._source.describe()
        if source_due is not None and (next_due is None or source_due < next_due):
            next_due = source_due
        return EngineStatus(
            counts={status: count for status, count in core.status_counts.items() if count},
            running=core.active,
            due_backlog=core.backlog(),
            next_due=next_due,
            lateness_p50_ms=p50,
            lateness_p99_ms=p99,
            loop_lag_ms=core.loop_lag_ms,
            started_at=self.started_at,
            node=core.settings.node,
            extra={
                "window_jobs": len(core.token),
                "checkpoint_pending": self._checkpoints.pending,
                **(
                    {"waiting_for_rate": {t: len(q) for t, q in core.rates.waiting.items() if q}}
                    if core.rates.waiting
                    else {}
                ),
                **extra,
            },
        )

    def watch(self) -> Subscription:
        """Events from now on; a subscriber that falls behind loses the oldest."""
        return self._core.events.subscribe()

    # -- SchedulerService: operations ------------------------------------------------

    async def cancel_job(self, ref: str) -> Job:
        """End the job; running attempts are cancelled (their runs recorded canceled)."""
        job = await self.get_job(ref)
        if job.status.is_final:
            raise InvalidJobState(f"job {job.id} is already {job.status.value}", status=job.status)
        self._core.cancel_job_attempts(job.id, CANCELED)
        updated = job.transition(JobStatus.CANCELED, self._clock.now())
        self._core.fail_triggers(job.id, InvalidJobState("the job was canceled", status="canceled"))
        return await self._commit_change(job, updated)

    async def pause_job(self, ref: str, until: datetime | None = None) -> Job:
        """Keep a pending job from running until resumed, or until ``until``: then
        the engine resumes it by itself (SPEC 15), across restarts. Pausing a
        paused job again sets a new time, or, without ``until``, drops the time
        it had (a job paused without one is refused, as before)."""
        job = await self.get_job(ref)
        now = self._clock.now()
        if until is not None and until <= now:
            raise InvalidSpec("until", f"{format_instant(until)} is not in the future")
        if job.status is JobStatus.PAUSED and (until is not None or job.paused_until):
            # Same status: a field update, not a transition.
            updated = replace(job, paused_until=until, updated_at=now)
        else:
            updated = job.transition(JobStatus.PAUSED, now, paused_until=until)
        self._core.fail_triggers(job.id, InvalidJobState("the job was paused", status="paused"))
        paused = await self._commit_change(job, updated)
        if until is not None:
            self._pauses.watch(paused.id, until)
        return paused

    async def _resume_if_still_paused(self, job_id: str, until: datetime) -> None:
        """The pause timer of ``job_id`` fired: resume it if nobody resumed,
        canceled or re-paused it meanwhile."""
        job = await self._find(job_id)
        if job is None or job.status is not JobStatus.PAUSED or job.paused_until != until:
            return
        now = self._clock.now()
        await self._commit_change(job, job.transition(JobStatus.PENDING, now))
        self._log.info(
            "paused_job_resumed",
            job_id=job.id,
            paused_until=format_instant(until),
            late_ms=round((now - until).total_seconds() * 1000.0, 3),
        )

    async def resume_job(self, ref: str) -> Job:
        """Resume a paused job; occurrences missed meanwhile follow its misfire policy."""
        job = await self.get_job(ref)
        if job.status is not JobStatus.PAUSED:
            raise InvalidJobState(
                f"only a paused job can be resumed; job {job.id} is {job.status.value}",
                status=job.status,
            )
        return await self._commit_change(job, job.transition(JobStatus.PENDING, self._clock.now()))

    async def trigger_job(self, ref: str) -> Job:
        """Run one extra occurrence now; returns once its start is on disk.

        The schedule does not move (SPEC 4): afterwards the job is pending for the
        occurrence it had, a one-shot job's only one included. The extra attempt
        is not retried and has an idempotency key of its own. In shared mode the
        job is claimed first, so no other node runs it meanwhile.
        """
        job = await self.get_job(ref)
        if job.status is not JobStatus.PENDING:
            raise InvalidJobState(
                f"only a pending job can be triggered; job {job.id} is {job.status.value}",
                status=job.status,
            )
        job = await self._source.take_for_trigger(job)
        core = self._core
        waiter: TriggerWaiter = (anyio.Event(), [])
        core.triggers.setdefault(job.id, []).append(waiter)
        core.enqueue(job, TRIGGER_PRIORITY, self._clock.now())
        core.wake_scheduler()
        await waiter[0].wait()
        outcome = waiter[1][0]
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    async def requeue_job(self, ref: str, run_at: datetime | None = None) -> Job:
        """Put a failed_permanent or canceled job back to pending, its retries reset:
        a one-shot job at ``run_at`` (default now), a recurring one at its first
        occurrence from then (see :func:`~nexus_schedd.engine.policies.requeued`)."""
        job = await self.get_job(ref)
        updated = requeued(job, self._clock.now(), run_at, self._core.rng)
        await self._ensure_name_free(job)
        return await self._commit_change(job, updated)

    async def requeue_jobs(self, where: RequeueFilter) -> RequeueReport:
        """Requeue the jobs ``where`` matches, oldest first, at most ``where.limit``,
        all in one commit (atomic: on disk together or not at all). A match whose
        name a live job holds (or an earlier match took), or whose schedule is
        over, is reported as skipped and left as it was."""
        report = RequeueReport()
        changes: list[tuple[Job, Job]] = []
        taken: set[str] = set()
        rng = self._core.rng
        listing = JobFilter(
            statuses=where.statuses, job_type=where.job_type, target_id=where.target_id
        )
        cursor: str | None = None
        while True:
            page = await self.list_jobs(listing, 500, cursor)
            for job in page.items:
                if job.status not in where.statuses or not where.matches(job):
                    continue  # changed since the store read, or filtered here
                if len(changes) == where.limit:
                    return await self._requeue_all(changes, replace(report, more=True))
                try:
                    if job.name is not None and job.name in taken:
                        raise InvalidJobState(
                            f"an earlier match in this requeue took the name {job.name!r}"
                        )
                    updated = requeued(job, self._clock.now(), None, rng)
                    await self._ensure_name_free(job)
                except (InvalidJobState, JobExists) as exc:
                    report.skipped.append((job.id, exc.message))
                    continue
                if job.name is not None:
                    taken.add(job.name)
                changes.append((job, updated))
            cursor = page.next_cursor
            if cursor is None:
                return await self._requeue_all(changes, report)

    async def _requeue_all(
        self, changes: list[tuple[Job, Job]], report: RequeueReport
    ) -> RequeueReport:
        core = self._core
        for old, new in changes:
            core.count(old.status, new.status)
            core.place(new)
            core.publish(EventKind.JOB_UPDATED, new)
            report.ids.append(new.id)
        if changes:
            await self._checkpoints.commit([new for _old, new in changes])
        return report

    async def backfill_job(self, ref: str, start: datetime, end: datetime) -> BackfillReport:
        """Run every occurrence of a recurring job in [start, end) that has come once
        more (SPEC 15): one one-shot job each, due now, with the occurrence's
        scheduled_for and idempotency key, all added in one insert (all or none).
        The job itself does not change. Occurrences that still have a live
        backfill job of this job are left out (a retried call adds nothing twice);
        see :func:`~nexus_schedd.engine.backfill.backfill_occurrences` for which
        occurrences count and the errors."""
        parent = await self.get_job(ref)
        core = self._core
        now = self._clock.now()
        planned = backfill_occurrences(parent, start, end, now)
        core.registry.check_job(parent.job_type, parent.payload)
        # One backfill at a time here, so two calls cannot both find nothing queued.
        async with self._backfill_lock:
            queued = await self._live_backfills(parent)
            spec = backfill_spec(parent)
            fresh = [
                job_for_occurrence(
                    parent, spec, occurrence, now, core.settings.defaults, core.run_ids.next(now)
                )
                for occurrence in planned
                if occurrence.number not in queued
            ]
            if fresh:
                await self._insert(fresh)
        if fresh:
            self._log.info(
                "backfill_queued",
                job_id=parent.id,
                job_type=parent.job_type,
                count=len(fresh),
                first=format_instant(planned[0].scheduled_for),
                last=format_instant(planned[-1].scheduled_for),
            )
        return BackfillReport(fresh, already_queued=len(planned) - len(fresh))

    async def _live_backfills(self, parent: Job) -> set[int]:
        """The occurrence numbers of ``parent`` that have a pending, running or
        paused backfill job."""
        numbers: set[int] = set()
        where = JobFilter(
            statuses=frozenset({JobStatus.PENDING, JobStatus.RUNNING, JobStatus.PAUSED}),
            job_type=parent.job_type,
            target_id=parent.target_id,
            backfill_of=parent.id,
        )
        cursor: str | None = None
        while True:
            page = await self.list_jobs(where, 1000, cursor)
            for job in page.items:
                of = None if job.extras is None else job.extras.backfill_of
                if of is not None and of.job_id == parent.id and not job.status.is_final:
                    numbers.add(of.occurrence)
            cursor = page.next_cursor
            if cursor is None:
                return numbers

    async def _ensure_name_free(self, job: Job) -> None:
        """Raise JobExists when a live job other than ``job`` holds its name (a
        requeued job takes its name back; names are unique among live jobs)."""
        if job.name is None:
            return
        holder = await self.find_live_by_name(job.name)
        if holder is not None and holder.id != job.id:
            raise JobExists(job.name, holder.id)

    async def reschedule_job(
        self,
        ref: str,
        run_at: datetime | None = None,
        recurrence: Recurrence | None = UNSET,
        requested_wall: datetime | None = None,
    ) -> Job:
        """Give a pending or paused job a new run_at and/or recurrence.
        ``requested_wall`` is ``run_at`` as written when it had no offset: a daily
        02:30 asked for inside a DST gap then keeps 02:30 after the shifted first
        run, as in AddJob (see :func:`~nexus_schedd.model.schedule.schedule_anchor`)."""
        job = await self.get_job(ref)
        if job.status not in (JobStatus.PENDING, JobStatus.PAUSED):
            raise InvalidJobState(
                f"only a pending or paused job can be rescheduled; job {job.id} is "
                f"{job.status.value}",
                status=job.status,
            )
        now = self._clock.now()
        new_recurrence = job.recurrence if recurrence is UNSET else recurrence
        first = run_at if run_at is not None else job.scheduled_for or now
        if new_recurrence is not None:
            validate_schedule(new_recurrence, first)
        changes: dict[str, Any] = {"recurrence": new_recurrence, "updated_at": now}
        if run_at is not None or recurrence is not UNSET:
            start = anchor = first
            if new_recurrence is not None:
                start = first_occurrence(new_recurrence, first) or first
                # With exclusions the schedule counts from its unexcluded first occurrence.
                base = first_occurrence(without_exclusions(new_recurrence), first) or start
                anchor = schedule_anchor(new_recurrence, base, requested_wall)
            changes.update(scheduled_for=start, run_at=start, anchor_at=anchor, retry_count=0)
        # Same status: a field update, not a transition.
        updated = replace(job, **changes)
        return await self._commit_change(job, updated)

    async def reconcile_static(self, specs: Sequence[JobSpec]) -> dict[str, list[str]]:
        """Reconcile the config's ``[[schedules]]`` by name, like a crontab (see
        :func:`~nexus_schedd.engine.reconcile.reconcile_static`)."""
        core = self._core
        return await reconcile_static(
            self,
            specs,
            clock=self._clock,
            registry=core.registry,
            defaults=core.settings.defaults,
            log=self._log,
        )

    # -- lookups ----------------------------------------------------------------

    async def _find(self, ref: str) -> Job | None:
        """The job with this id, else the live job with this name, else the newest
        final job that had the name (``show NAME`` after a one-shot job ran)."""
        known = self._source.known
        job = known(ref)
        if job is not None:
            return job
        stored = await self._store.get_job(ref)
        if stored is not None:
            # Looked at again: the job may have changed here while the store read.
            return known(ref) or self._checkpoints.staged_job(ref) or stored
        live = await self.find_live_by_name(ref)
        if live is not None:
            return live
        await self._checkpoints.flush()  # a job that just became final may not be stored yet
        final = await self._store.get_job_by_name(ref, include_final=True)
        if final is None:
            return None
        return known(final.id) or final

    async def find_live_by_name(self, name: str) -> Job | None:
        """The non-final job holding ``name``, in its newest version, or None."""
        # Names are only given at insert (written directly), so the store knows every
        # holder; a holder that became final here is overlaid below.
        stored = await self._store.get_job_by_name(name)
        if stored is None:
            return None
        newest = self._source.known(stored.id) or stored
        return None if newest.status.is_final else newest

    # -- state changes ------------------------------------------------------------

    async def _commit_change(self, old: Job, new: Job) -> Job:
        """Apply a control operation in memory and return once it is on disk."""
        core = self._core
        core.count(old.status, new.status)
        core.place(new)
        core.publish(EventKind.JOB_REMOVED if new.status.is_final else EventKind.JOB_UPDATED, new)
        await self._checkpoints.commit([new])
        return new


def check_follow_up(registry: HandlerRegistry, key: str, spec: JobSpec) -> None:
    """Refuse a follow-up (``on_success`` / ``on_failure``) no loaded handler would
    run, naming the field: it must not fail later, when its trigger has ended."""
    if not registry.supports(spec.job_type):
        raise InvalidSpec(
            f"{key}.job_type", f"no loaded handler supports job type {spec.job_type!r}"
        )
    try:
        registry.check_job(spec.job_type, spec.payload)
    except InvalidSpec as exc:
        raise InvalidSpec(f"{key}.{exc.field}", exc.reason) from None


def engine_for(
    store: Store,
    registry: HandlerRegistry,
    clock: Clock,
    settings: EngineSettings,
    *,
    log: Any | None = None,
    rng: random.Random | None = None,
    tracer: RunTracer | None = None,
) -> Engine:
    """The engine for ``store`` (shared mode on a multi-node store); ``tracer``
    when tracing is on (SPEC 15)."""
    return Engine(store, registry, clock, settings, log=log, rng=rng, tracer=tracer)


def _bound(log: Any) -> Any:
    """A real logger for ``log``, bound once.

    ``structlog.get_logger()`` returns a lazy proxy that builds a new bound
    logger (its processors, wrapper and output) on every call: about a third of
    the cost of each per-run event at the default ``info`` level, two per run
    (docs/performance.md, round 6, stop 32). The daemon passes its module
    logger, such a proxy. ``bind()`` with no keys makes the logger once; a
    logger that is already bound is copied; anything without ``bind`` (a test
    double) is used as it is. Logging is configured before the engine is made,
    so the bound logger writes where the configuration says.
    """
    bind = getattr(log, "bind", None)
    return bind() if callable(bind) else log
