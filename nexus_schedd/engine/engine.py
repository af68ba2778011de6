"""The engine: a heap of due times, dispatch to long-lived workers, the retry,
misfire and overlap policies, and batched checkpoints to the store.

Flow of one attempt::

    timer heap --due--> ready heap --slot free--> start batch --on disk--> worker
    (run_at, seq)       (-priority, run_at)       (RUNNING + open run)      handler
                                                                              |
    timer heap <--next occurrence / retry-- result (staged, group commit) <---+

The scheduler task sleeps with ``clock.deadline_scope(earliest due)`` on a wake-up
event; it never wakes while nothing is due. State lives in three places: the
store (durable), the checkpointer's staged rows (newer than the store), and
``_jobs`` (the newest version of every job in the heap window or running).
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
import random
import statistics
import time
from collections import deque
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

import anyio
import structlog
from anyio.abc import TaskGroup, TaskStatus

from nexus_schedd.clock import Clock
from nexus_schedd.engine.checkpoint import Checkpointer
from nexus_schedd.engine.events import EventHub
from nexus_schedd.engine.policies import (
    Occurrence,
    RunIds,
    backoff_delay,
    following,
    jittered,
    walk_missed,
)
from nexus_schedd.engine.service import UNSET, EngineStatus, Event, EventKind
from nexus_schedd.engine.settings import EngineSettings
from nexus_schedd.errors import (
    InvalidJobState,
    InvalidSpec,
    JobExists,
    JobNotFound,
    StoreError,
    UnknownJobType,
)
from nexus_schedd.handlers.base import Handler, HandlerContext
from nexus_schedd.handlers.registry import HandlerRegistry
from nexus_schedd.model import (
    Job,
    JobResult,
    JobSpec,
    JobStatus,
    LastResult,
    MisfirePolicy,
    OverlapPolicy,
    Recurrence,
    Run,
    RunOutcome,
    truncate_output,
)
from nexus_schedd.model.schedule import first_occurrence, validate_schedule
from nexus_schedd.store.base import JobFilter, Page, RunFilter, Store

PRUNE_EVERY_RUNS = 10_000
"""Finished runs between two history prunes."""
PRUNE_INTERVAL = timedelta(hours=1)
"""History is also pruned when a run finishes this long after the last prune, and
once soon after start. No timer: an idle engine never wakes to prune."""

LATENCY_SAMPLES = 1000
LOOP_LAG_WARN_MS = 250.0
"""A timer wake-up this late is logged as ``event_loop_lag`` (something blocked the loop)."""
SAME_START_TOLERANCE_S = 60.0
"""Two adds of one name whose first due times differ by at most this are the same
job: a client that retries an add with a relative time must get its job back."""
TRIGGER_PRIORITY = -(2**40)
STORE_RETRY_FIRST_S = 0.5
STORE_RETRY_MAX_S = 10.0
"""Back-off of a scheduler loop after a store error: doubling from the first to the max."""
"""Ready-heap key of a triggered attempt: ahead of every priority a job can have."""

_NOT_FINAL = frozenset({JobStatus.PENDING, JobStatus.RUNNING, JobStatus.PAUSED})


@dataclass(eq=False, slots=True)
class _Attempt:
    """One handler call in flight."""

    job: Job
    run: Run
    handler: Handler | None
    extra: bool
    time_limit: timedelta | None
    """The job's timeout; the deadline is set from it when the handler starts."""
    deadline: datetime | None
    due: datetime | None
    """The run_at it was due at, for its lateness (None for a trigger: never late)."""
    scope: anyio.CancelScope | None = None
    """The running worker's cancel scope while the attempt runs, else None."""
    cancel_reason: str | None = None
    """Set by cancel/replace ("canceled") or shutdown ("shutdown") before cancelling."""


@dataclass(eq=False, slots=True)
class _Running:
    """What the engine knows about a job with attempts in flight."""

    current: _Attempt | None
    """The attempt the job's RUNNING status stands for (None once it ended)."""
    upcoming: Occurrence | None
    """Where the schedule goes when ``current`` ends; its run_at is the overlap timer."""
    detached: set[_Attempt] = field(default_factory=set)
    """Attempts overtaken by a newer occurrence (overlap allow/replace): recorded only."""


class _AttemptLog:
    """A logger bound with the attempt's keys on first use (most handlers never log)."""

    __slots__ = ("_attempt", "_bound", "_log")

    def __init__(self, log: Any, attempt: _Attempt) -> None:
        self._log = log
        self._attempt = attempt
        self._bound: Any = None

    def __getattr__(self, name: str) -> Any:
        if self._bound is None:
            self._bound = self._log.bind(**_log_keys(self._attempt))
        return getattr(self._bound, name)


def _log_keys(attempt: _Attempt) -> dict[str, Any]:
    """The keys every log event of an attempt carries."""
    job = attempt.job
    return {"job_id": job.id, "job_type": job.job_type, "attempt": attempt.run.attempt}


def _logs_info(log: Any) -> bool:
    """Whether ``log`` writes info events (a structlog filtering logger can tell;
    any other logger is assumed to)."""
    enabled = getattr(log, "is_enabled_for", None)
    return True if enabled is None else bool(enabled(logging.INFO))


class Engine:
    """The scheduler of SPEC sections 4 and 5 (single node); see the module docstring.

    Start it with ``await tg.start(engine.run)``; stop it with ``await engine.stop()``.
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
    ) -> None:
        self._store = store
        self._registry = registry
        self._clock = clock
        self._settings = settings
        # bind() turns structlog's lazy proxy into a real logger once, instead of
        # re-binding on every per-run event.
        self._log: Any = (
            log if log is not None else structlog.get_logger("nexus_schedd.engine").bind()
        )
        self._log_runs = _logs_info(self._log)
        """Per-run info events (run_started, run_finished) are written: their
        fields are only worked out when they are."""
        self._rng = rng or random.Random()
        self._ckpt = Checkpointer(store, self._log, on_write=self._write_begun)
        self._events = EventHub()

        self._jobs: dict[str, Job] = {}
        self._running: dict[str, _Running] = {}
        self._timers: list[tuple[datetime, int, str]] = []
        self._ready: list[tuple[int, datetime, int, str]] = []
        self._blocked: dict[str, list[tuple[int, datetime, int, str]]] = {}
        self._token: dict[str, int] = {}
        self._seq = itertools.count()
        self._triggers: dict[str, list[tuple[anyio.Event, list[Job | BaseException]]]] = {}

        self._window_end: tuple[datetime, str] | None = None
        self._window_complete = True

        self._active = 0
        self._unwritten = 0
        """Starts staged and not yet taken by a write (see :meth:`_dispatch`)."""
        self._start_cap = max(1, settings.max_concurrency // 2)
        self._active_by_type: dict[str, int] = {}
        self._tally: dict[JobStatus, int] = dict.fromkeys(JobStatus, 0)
        self._lateness: deque[float] = deque(maxlen=LATENCY_SAMPLES)
        self._ahead = timedelta(milliseconds=settings.start_ahead_ms)
        self._loop_lag_ms = 0.0
        self._finished_since_prune = 0
        self._prune_due = False
        self._last_prune = clock.now()

        self._wakeup = anyio.Event()
        self._sleeping_until: datetime | None = None
        self._sleeping = False
        self._work: deque[_Attempt] = deque()
        self._deadlines: list[tuple[datetime, int, _Attempt]] = []
        """Deadlines of attempts in flight, earliest first (see :meth:`_watch_deadlines`);
        entries of attempts that ended are dropped lazily."""
        self._deadline_armed: datetime | None = None
        self._deadlines_changed = anyio.Event()
        self._idle_workers: deque[anyio.Event] = deque()
        self._waking = False
        """A worker was signalled and has not run yet (see :meth:`_wake_worker`)."""
        self._run_ids = RunIds(random.Random())  # unseeded: ids must differ across engines
        self._tg: TaskGroup | None = None
        self._stopping = False
        self._drained: anyio.Event | None = None
        self._done = anyio.Event()
        self._alive = False
        self.loop_iterations = 0
        """Scheduler loop passes so far (grows only while there is work)."""
        self.started_at = clock.now()

    # -- lifecycle --------------------------------------------------------------

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Recover, load the heap window, report started, then schedule until stop()."""
        try:
            async with anyio.create_task_group() as tg:
                self._tg = tg
                await tg.start(self._ckpt.run)
                self.started_at = self._clock.now()
                await self._recover()
                self._tally.update(await self._store.count_by_status())
                await self._load_window(None)
                # Prune once after start, when the scheduler first has nothing due:
                # a daemon restarted now and then must still honour history.*.
                self._prune_due = True
                for _ in range(self._settings.max_concurrency):
                    tg.start_soon(self._worker)
                tg.start_soon(self._watch_deadlines)
                tg.start_soon(self._schedule_loop)
                self._alive = True
                self._log.info(
                    "engine_started",
                    node=self._settings.node,
                    pending=self._tally[JobStatus.PENDING],
                    max_concurrency=self._settings.max_concurrency,
                )
                task_status.started()
        finally:
            self._alive = False
            self._done.set()

    async def stop(self, grace_s: float | None = None) -> None:
        """Stop starting jobs, give running attempts ``grace_s`` to finish, cancel the
        rest (recorded canceled, retried on next start without counting), checkpoint,
        and make run() return."""
        if self._stopping:
            await self._done.wait()
            return
        self._stopping = True
        self._poke()
        grace = self._settings.shutdown_grace_s if grace_s is None else grace_s
        self._log.info("engine_stopping", running=self._active, grace_s=grace)
        if self._active:
            self._drained = anyio.Event()
            with self._clock.deadline_scope(self._clock.now() + timedelta(seconds=grace)):
                await self._drained.wait()
        if self._active:
            self._drained = anyio.Event()
            for attempt in self._all_attempts():
                self._cancel_attempt(attempt, "shutdown")
            await self._drained.wait()
        await self._ckpt.flush()
        if self._tg is not None:
            self._tg.cancel_scope.cancel()
        await self._done.wait()
        self._log.info("engine_stopped")

    @property
    def healthy(self) -> bool:
        """True while run() is serving and its scheduler task is alive.

        The daemon pings the systemd watchdog from a task on the same event loop,
        so a blocked loop stops the pings by itself; this adds "the engine has not
        died or stopped". (The scheduler sleeps while nothing is due, so an
        iteration counter would not tell a quiet engine from a dead one.)
        """
        return self._alive and not self._stopping

    def clock_stepped(self) -> None:
        """The wall clock was stepped: re-evaluate due times now, not when the
        current sleep (measured in elapsed time) would have ended."""
        self._log.info("wall_clock_stepped", now=self._clock.now().isoformat())
        self._poke()

    def set_registry(self, registry: HandlerRegistry) -> None:
        """Use ``registry`` for attempts started from now on (reload)."""
        self._registry = registry

    def set_type_limits(self, limits: Mapping[str, int]) -> None:
        """Replace the per-job-type concurrency limits (reload)."""
        self._settings = replace(self._settings, type_limits=dict(limits))
        for queue in self._blocked.values():
            for entry in queue:
                heapq.heappush(self._ready, entry)
        self._blocked.clear()
        self._poke()

    # -- SchedulerService: adding ---------------------------------------------------

    async def add_job(self, spec: JobSpec) -> Job:
        """Schedule a job (idempotent by name: an equal definition returns the existing job)."""
        return (await self.add_jobs([spec]))[0]

    async def add_jobs(self, specs: Sequence[JobSpec]) -> list[Job]:
        """Schedule several jobs atomically: all are added or none."""
        return await self._add(specs, static=False)

    async def _add(self, specs: Sequence[JobSpec], *, static: bool) -> list[Job]:
        now = self._clock.now()
        result: list[Job] = []
        fresh: list[Job] = []
        by_name: dict[str, Job] = {}
        for spec in specs:
            if not self._registry.supports(spec.job_type):
                raise UnknownJobType(spec.job_type)
            # Ids from the engine's ULID-format generator: the ulid package costs
            # ~15 us an id, a quarter of a batched add.
            job = Job.create(spec, now, self._settings.defaults, self._run_ids.next(now))
            if static or job.jitter_s > 0:
                # Jitter is added to every occurrence (SPEC 2), the first one too.
                assert job.run_at is not None
                job = replace(
                    job, static=static, run_at=jittered(job.run_at, job.jitter_s, self._rng)
                )
            if spec.name is not None:
                existing = by_name.get(spec.name) or await self._find_by_name(spec.name)
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
            await self._store.insert_jobs(fresh)
            for job in fresh:
                self._tally[JobStatus.PENDING] += 1
                self._place(job)
                self._publish(EventKind.JOB_ADDED, job)
            self._shrink_window_if_needed()
        return result

    # -- SchedulerService: reading --------------------------------------------------

    async def get_job(self, ref: str) -> Job:
        """The job with this id or (non-final) name."""
        job = await self._find(ref)
        if job is None:
            raise JobNotFound(ref)
        return job

    async def list_jobs(self, where: JobFilter, limit: int, cursor: str | None = None) -> Page[Job]:
        """A page of jobs from the store, with in-flight changes overlaid."""
        await self._ckpt.flush()
        page = await self._store.list_jobs(where, limit, cursor)
        items = [self._jobs.get(job.id, job) for job in page.items]
        return Page(items=items, next_cursor=page.next_cursor)

    async def list_runs(self, where: RunFilter, limit: int, cursor: str | None = None) -> Page[Run]:
        """A page of runs, newest first (finished runs are flushed first)."""
        await self._ckpt.flush()
        return await self._store.list_runs(where, limit, cursor)

    def supported(self, job_type: str) -> bool:
        """True if a loaded handler runs ``job_type``."""
        return self._registry.supports(job_type)

    def handler_names(self) -> list[str]:
        """Names of the loaded handlers."""
        return self._registry.names()

    def status(self) -> EngineStatus:
        """A cheap snapshot: counts from an in-memory tally, no store query."""
        samples = sorted(self._lateness)
        p50 = statistics.median(samples) if samples else None
        p99 = samples[min(len(samples) - 1, int(len(samples) * 0.99))] if samples else None
        next_due = self._peek_timer()
        return EngineStatus(
            counts={status: count for status, count in self._tally.items() if count},
            running=self._active,
            due_backlog=len(self._ready) + sum(len(q) for q in self._blocked.values()),
            next_due=next_due,
            lateness_p50_ms=p50,
            lateness_p99_ms=p99,
            loop_lag_ms=self._loop_lag_ms,
            started_at=self.started_at,
            node=self._settings.node,
            extra={"window_jobs": len(self._token), "checkpoint_pending": self._ckpt.pending},
        )

    def watch(self) -> AsyncIterator[Event]:
        """Events from now on; a subscriber that falls behind loses the oldest."""
        return self._events.subscribe()

    # -- SchedulerService: operations ------------------------------------------------

    async def cancel_job(self, ref: str) -> Job:
        """End the job; running attempts are cancelled (their runs recorded canceled)."""
        job = await self.get_job(ref)
        if job.status.is_final:
            raise InvalidJobState(f"job {job.id} is already {job.status.value}", status=job.status)
        running = self._running.pop(job.id, None)
        if running is not None:
            for attempt in self._attempts_of(running):
                self._cancel_attempt(attempt, "canceled")
        updated = job.transition(JobStatus.CANCELED, self._clock.now())
        self._fail_triggers(job.id, InvalidJobState("the job was canceled", status="canceled"))
        return await self._commit_change(job, updated)

    async def pause_job(self, ref: str) -> Job:
        """Keep a pending job from running until resumed."""
        job = await self.get_job(ref)
        updated = job.transition(JobStatus.PAUSED, self._clock.now())
        self._fail_triggers(job.id, InvalidJobState("the job was paused", status="paused"))
        return await self._commit_change(job, updated)

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
        is not retried and has an idempotency key of its own.
        """
        job = await self.get_job(ref)
        if job.status is not JobStatus.PENDING:
            raise InvalidJobState(
                f"only a pending job can be triggered; job {job.id} is {job.status.value}",
                status=job.status,
            )
        if job.id not in self._jobs:
            self._jobs[job.id] = job
        waiter: tuple[anyio.Event, list[Job | BaseException]] = (anyio.Event(), [])
        self._triggers.setdefault(job.id, []).append(waiter)
        seq = next(self._seq)
        self._token[job.id] = seq
        heapq.heappush(self._ready, (TRIGGER_PRIORITY, self._clock.now(), seq, job.id))
        self._poke()
        await waiter[0].wait()
        outcome = waiter[1][0]
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    async def reschedule_job(
        self, ref: str, run_at: datetime | None = None, recurrence: Recurrence | None = UNSET
    ) -> Job:
        """Give a pending or paused job a new run_at and/or recurrence."""
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
            start = first
            if new_recurrence is not None:
                start = first_occurrence(new_recurrence, first) or first
            changes.update(scheduled_for=start, run_at=start, anchor_at=start, retry_count=0)
        # Same status: a field update, not a transition.
        updated = replace(job, **changes)
        return await self._commit_change(job, updated)

    # -- static schedules -------------------------------------------------------

    async def reconcile_static(self, specs: Sequence[JobSpec]) -> dict[str, list[str]]:
        """Reconcile the config's ``[[schedules]]`` by name, like a crontab.

        Every schedule is checked before anything changes: a job type no handler
        runs raises UnknownJobType with nothing changed. A schedule that can no
        longer fire (its ``ends_at`` has passed) is skipped with a warning and its
        job, if any, left as it is: a config that worked must not stop the daemon
        from starting once one of its schedules has run its course.
        """
        now = self._clock.now()
        wanted: dict[str, tuple[JobSpec, Job]] = {}
        ended: dict[str, JobSpec] = {}
        for spec in specs:
            if spec.name is None:
                continue
            if not self._registry.supports(spec.job_type):
                raise UnknownJobType(spec.job_type)
            try:
                wanted[spec.name] = (spec, Job.create(spec, now, self._settings.defaults))
            except InvalidSpec as exc:
                self._log.warning("static_schedule_skipped", name=spec.name, reason=exc.message)
                ended[spec.name] = spec
        report: dict[str, list[str]] = {"added": [], "updated": [], "removed": []}
        for job in await self._static_jobs():
            assert job.name is not None
            ended_spec = ended.get(job.name)
            # An ended schedule leaves its job alone only if the job is that very
            # schedule; a job without the new ends_at (the operator ending it) goes.
            keep = ended_spec is not None and ended_spec.recurrence == job.recurrence
            if job.name not in wanted and not keep:
                await self.cancel_job(job.id)
                report["removed"].append(job.name)
        for name, (spec, candidate) in wanted.items():
            existing = await self._find_by_name(name)
            if existing is not None and not existing.static:
                self._log.warning("static_schedule_name_taken", name=name, job_id=existing.id)
                continue
            if existing is None:
                await self._add([spec], static=True)
                report["added"].append(name)
                continue
            same_start = spec.run_at is None or spec.run_at == existing.anchor_at
            if candidate.definition() == existing.definition() and same_start:
                continue
            await self.cancel_job(existing.id)
            await self._add([spec], static=True)
            report["updated"].append(name)
        return report

    async def _static_jobs(self) -> list[Job]:
        found: list[Job] = []
        cursor: str | None = None
        # The static filter keeps start-up off a decode of every live job (6 s
        # at 400,000 jobs); stores that ignore it return more, hence the re-check.
        where = JobFilter(statuses=_NOT_FINAL, static=True)
        while True:
            page = await self.list_jobs(where, 500, cursor)
            found.extend(job for job in page.items if job.static)
            if page.next_cursor is None:
                return found
            cursor = page.next_cursor

    # -- lookups ----------------------------------------------------------------

    async def _find(self, ref: str) -> Job | None:
        """The job with this id, else the live job with this name, else the newest
        final job that had the name (``show NAME`` after a one-shot job ran)."""
        job = self._jobs.get(ref) or self._ckpt.staged_job(ref)
        if job is not None:
            return job
        stored = await self._store.get_job(ref)
        if stored is not None:
            return self._jobs.get(ref) or self._ckpt.staged_job(ref) or stored
        live = await self._find_by_name(ref)
        if live is not None:
            return live
        await self._ckpt.flush()  # a job that just became final may not be stored as such yet
        final = await self._store.get_job_by_name(ref, include_final=True)
        if final is None:
            return None
        return self._jobs.get(final.id) or self._ckpt.staged_job(final.id) or final

    async def _find_by_name(self, name: str) -> Job | None:
        # Names are only given at insert (written directly), so the store knows every
        # holder; a holder that became final in memory is overlaid below.
        stored = await self._store.get_job_by_name(name)
        if stored is None:
            return None
        newest = self._jobs.get(stored.id) or self._ckpt.staged_job(stored.id) or stored
        return None if newest.status.is_final else newest

    # -- state changes ------------------------------------------------------------

    async def _commit_change(self, old: Job, new: Job) -> Job:
        """Apply a control operation in memory and return once it is on disk."""
        self._count(old.status, new.status)
        self._place(new)
        self._publish(EventKind.JOB_REMOVED if new.status.is_final else EventKind.JOB_UPDATED, new)
        await self._ckpt.commit([new])
        return new

    def _count(self, old: JobStatus, new: JobStatus) -> None:
        if old is not new:
            self._tally[old] -= 1
            self._tally[new] += 1

    def _place(self, job: Job) -> None:
        """Make ``job`` the engine's newest version and put it on (or off) the heap."""
        if job.status is JobStatus.PENDING:
            assert job.run_at is not None
            end = self._window_end
            if self._window_complete or end is None or (job.run_at, job.id) <= end:
                self._jobs[job.id] = job
                self._arm(job.id, job.run_at)
                return
        elif job.status is JobStatus.RUNNING:
            self._jobs[job.id] = job
            return
        self._jobs.pop(job.id, None)
        self._token.pop(job.id, None)

    def _arm(self, job_id: str, at: datetime) -> None:
        """Put the job's one timer at ``at`` (earlier timers of the job go stale)."""
        seq = next(self._seq)
        self._token[job_id] = seq
        heapq.heappush(self._timers, (at, seq, job_id))
        if self._sleeping and (self._sleeping_until is None or at < self._sleeping_until):
            self._poke()

    def _poke(self) -> None:
        self._wakeup.set()

    def _publish(self, kind: EventKind, job: Job | None = None, run: Run | None = None) -> None:
        if self._events.active:
            self._events.publish(Event(kind, self._clock.now(), job=job, run=run))

    # -- the heap window ----------------------------------------------------------

    async def _load_window(self, after: tuple[datetime, str] | None) -> None:
        """Load the next ``window_size`` pending jobs from the store into the heap."""
        size = self._settings.window_size
        await self._ckpt.flush()
        jobs = await self._store.next_pending(after, size)
        for job in jobs:
            if job.id not in self._jobs:
                self._jobs[job.id] = job
                assert job.run_at is not None
                self._arm(job.id, job.run_at)
        self._window_complete = len(jobs) < size
        if jobs:
            last = jobs[-1]
            assert last.run_at is not None
            self._window_end = (last.run_at, last.id)
        elif after is None:
            self._window_end = None

    def _shrink_window_if_needed(self) -> None:
        """Keep at most about 2 x window_size pending jobs in memory: beyond that,
        forget the latest (they are on disk) and narrow the window to match."""
        size = self._settings.window_size
        if len(self._jobs) <= 2 * size:
            return
        pending = [job for job in self._jobs.values() if job.status is JobStatus.PENDING]
        if len(pending) <= 2 * size:
            return
        pending.sort(key=lambda job: (job.run_at, job.id))
        keep, drop = pending[:size], pending[size:]
        for job in drop:
            if job.id in self._triggers:
                continue
            del self._jobs[job.id]
            self._token.pop(job.id, None)
        last = keep[-1]
        assert last.run_at is not None
        self._window_end = (last.run_at, last.id)
        self._window_complete = False

    def _peek_timer(self) -> datetime | None:
        """The earliest live timer, dropping stale entries from the top."""
        timers = self._timers
        while timers:
            at, seq, job_id = timers[0]
            if self._token.get(job_id) == seq:
                return at
            heapq.heappop(timers)
        return None

    # -- the scheduler loop -------------------------------------------------------

    async def _schedule_loop(self) -> None:
        ahead = self._ahead
        failures = 0
        while not self._stopping:
            self.loop_iterations += 1
            now = self._clock.now()
            self._collect_due(now + ahead)
            if self._ready and self._active < self._settings.max_concurrency:
                self._dispatch(now)
            next_at = self._peek_timer()
            if next_at is None and not self._window_complete:
                try:
                    await self._load_window(self._window_end)
                except StoreError as exc:
                    failures += 1
                    await self._store_failed(exc, failures)
                    continue
                failures = 0
                continue
            if next_at is not None and next_at <= self._clock.now() + ahead:
                await anyio.lowlevel.checkpoint()
                continue
            if self._prune_due:
                self._prune_due = False
                await self._prune()
                # Jobs added or finished meanwhile armed timers without a wake-up
                # (the loop was not asleep): look at the heap again.
                continue
            self._sleeping_until = next_at
            self._sleeping = True
            wake_at = None if next_at is None else next_at - ahead
            if not self._wakeup.is_set():
                with self._clock.deadline_scope(wake_at) as scope:
                    await self._wakeup.wait()
                if scope.cancelled_caught and wake_at is not None:
                    self._note_wakeup_lag(scope, wake_at)
            self._sleeping = False
            self._wakeup = anyio.Event()

    async def _store_failed(self, exc: StoreError, failures: int) -> None:
        """After a store call in a scheduler loop failed: log, back off, and return
        so the loop retries (control calls are served meanwhile).

        Invariant (issue 17, finding 1): no store error ends the engine's loops
        except a permanent one (``StoreError.permanent``: the schema changed or
        the user lost a privilege), which is logged and raised so the daemon
        exits saying what happened. A stop() or a new job cuts the back-off short.
        """
        if exc.permanent:
            self._log.critical("store_unusable", error=exc.message)
            raise exc
        delay = min(STORE_RETRY_MAX_S, STORE_RETRY_FIRST_S * 2 ** min(failures - 1, 10))
        self._log.error("store_call_failed", error=exc.message, failures=failures, retry_s=delay)
        if self._stopping:
            return
        self._wakeup = anyio.Event()
        with self._clock.deadline_scope(self._clock.now() + timedelta(seconds=delay)):
            await self._wakeup.wait()

    def _note_wakeup_lag(self, scope: anyio.CancelScope, due: datetime) -> None:
        """How late the timer wake-up came: a blocked event loop shows here first.

        Measured on the loop's monotonic clock where the scope has a real deadline,
        so a wall-clock step is not mistaken for lag; only timer wake-ups count
        (a poke is not late for anything).
        """
        if math.isfinite(scope.deadline):
            lag = (anyio.current_time() - scope.deadline) * 1000.0
        else:
            lag = (self._clock.now() - due).total_seconds() * 1000.0
        self._loop_lag_ms = max(0.0, lag)
        if lag >= LOOP_LAG_WARN_MS:
            self._log.warning("event_loop_lag", lag_ms=round(lag, 1), source="scheduler")

    def _collect_due(self, horizon: datetime) -> None:
        """Move timers due by ``horizon`` (now + start_ahead) to the ready heap, or
        apply the overlap policy (overlap timers are armed start_ahead late, so
        they fire on time)."""
        now = horizon - self._ahead
        timers = self._timers
        while timers and timers[0][0] <= horizon:
            at, seq, job_id = heapq.heappop(timers)
            if self._token.get(job_id) != seq:
                continue
            job = self._jobs[job_id]
            if job.status is JobStatus.PENDING:
                heapq.heappush(self._ready, (-job.priority, at, seq, job_id))
            elif job.status is JobStatus.RUNNING:
                self._overlap(job, now)

    def _dispatch(self, now: datetime) -> None:
        """Start as many ready jobs as slots allow, highest priority first.

        At most half the slots' starts wait to be written, so under load there
        are two batches in flight: while one batch's start is written to disk,
        the next is staged and the previous one's handlers run, and the writer
        takes the next batch the moment the last commit ends, instead of the
        loop and the writer taking turns.
        """
        limits = self._settings.type_limits
        starts: list[_Attempt] = []
        ready = self._ready
        slots, cap = self._settings.max_concurrency, self._start_cap
        while ready and self._active < slots and self._unwritten < cap:
            entry = heapq.heappop(ready)
            job_id = entry[3]
            if self._token.get(job_id) != entry[2]:
                continue
            job = self._jobs[job_id]
            if job.status is not JobStatus.PENDING:
                continue
            limit = limits.get(job.job_type)
            if limit is not None and self._active_by_type.get(job.job_type, 0) >= limit:
                heapq.heappush(self._blocked.setdefault(job.job_type, []), entry)
                continue
            self._token.pop(job_id, None)
            attempt = self._begin(job, now, triggered=job_id in self._triggers)
            if attempt is not None:
                starts.append(attempt)
                self._unwritten += 1
        if starts:
            self._ckpt.stage(
                [a.job for a in starts],
                [a.run for a in starts],
                on_durable=lambda error: self._started(starts, error),
            )

    def _begin(self, job: Job, now: datetime, *, triggered: bool) -> _Attempt | None:
        """Turn a due pending job into an attempt (in memory; staged by the caller)."""
        misfire_applies = job.recurring or job.misfire is MisfirePolicy.SKIP
        if not triggered and misfire_applies and job.retry_count == 0:
            misfired = self._apply_misfire(job, now)
            if misfired is None:
                return None
            job = misfired
        assert job.run_at is not None and job.scheduled_for is not None
        if triggered:
            upcoming: Occurrence | None = Occurrence.of(job)
        elif job.recurring:
            upcoming = following(job, Occurrence.of(job), self._rng)
        else:
            upcoming = None  # what following() gives a job that does not repeat
        running = job.transition(JobStatus.RUNNING, now)
        scheduled_for = now if triggered else job.scheduled_for
        # Started up to start_ahead early: the start is on disk by run_at and the
        # worker calls the handler at run_at (started_at), off the fsync's latency.
        start = job.run_at if not triggered and job.run_at > now else now
        run = Run(
            id=self._run_ids.next(now),
            job_id=job.id,
            scheduled_for=scheduled_for,
            attempt=1 if triggered else job.retry_count + 1,
            started_at=start,
            node=self._settings.node,
            job_type=job.job_type,
        )
        timeout = job.timeout_s if job.timeout_s is not None else self._settings.defaults.timeout_s
        attempt = _Attempt(
            job=running,
            run=run,
            handler=self._registry.resolve(job.job_type),
            # A trigger is always an extra run: the schedule (a one-shot's only
            # occurrence too) stays where it was (SPEC 4).
            extra=triggered,
            time_limit=timedelta(seconds=timeout) if timeout else None,
            # Set by _execute when the handler starts, not here: the start
            # checkpoint's commit (store latency) must not use up the handler's time.
            deadline=None,
            due=None if triggered else job.run_at,
        )
        state = self._running.get(job.id)
        if state is None:
            self._running[job.id] = _Running(attempt, upcoming)
        else:
            state.current, state.upcoming = attempt, upcoming
        if upcoming is not None and upcoming.run_at > now and job.recurring:
            # Overlap timer. An upcoming occurrence already due is a catch-up
            # (run_all after downtime or backlog): it runs after this one instead.
            self._arm(job.id, upcoming.run_at + self._ahead)
        self._count(JobStatus.PENDING, JobStatus.RUNNING)
        self._jobs[job.id] = running
        self._active += 1
        self._active_by_type[job.job_type] = self._active_by_type.get(job.job_type, 0) + 1
        return attempt

    def _apply_misfire(self, job: Job, now: datetime) -> Job | None:
        """Apply run_once / skip to a recurring occurrence later than its grace:
        the job to run now, or None when the occurrences were skipped."""
        assert job.run_at is not None
        if job.misfire is MisfirePolicy.RUN_ALL:
            return job
        if (now - job.run_at).total_seconds() <= job.misfire_grace_s:
            return job
        walk = walk_missed(job, now, self._rng)
        if job.misfire is MisfirePolicy.RUN_ONCE:
            if walk.missed == 1:
                return job
            # One run stands for every missed occurrence; the others are counted.
            latest = walk.latest_missed
            self._log.info("misfire_run_once", job_id=job.id, missed=walk.missed)
            return replace(
                job, scheduled_for=latest.scheduled_for, occurrence_count=latest.occurrence_count
            )
        latest = walk.latest_missed
        # Skip applies to occurrences later than the grace: the latest one may be
        # within it (an hourly job after a 3-hour outage, restarted just after one).
        runs_latest = (now - latest.run_at).total_seconds() <= job.misfire_grace_s
        skipped = walk.recent[:-1] if runs_latest else walk.recent
        missed = walk.missed - 1 if runs_latest else walk.missed
        runs = [
            Run(
                id=self._run_ids.next(now),
                job_id=job.id,
                scheduled_for=instant,
                attempt=1,
                started_at=now,
                finished_at=now,
                outcome=RunOutcome.SKIPPED,
                error=f"misfire: {missed} occurrence(s) missed, policy skip",
                node=self._settings.node,
                job_type=job.job_type,
            )
            for instant in skipped
        ]
        self._log.info("misfire_skip", job_id=job.id, missed=missed)
        if runs_latest:
            self._ckpt.stage(runs=runs)
            return replace(
                job,
                scheduled_for=latest.scheduled_for,
                run_at=latest.run_at,
                occurrence_count=latest.occurrence_count,
            )
        if walk.upcoming is None:
            # The schedule ended while nobody ran it: through running to completed,
            # the only path the transition table allows.
            done = job.transition(JobStatus.RUNNING, now).transition(
                JobStatus.COMPLETED,
                now,
                occurrence_count=walk.latest_missed.occurrence_count + 1,
            )
        else:
            done = job.transition(JobStatus.RUNNING, now).transition(
                JobStatus.PENDING, now, **walk.upcoming.changes()
            )
        self._count(job.status, done.status)
        self._place(done)
        self._ckpt.stage([done], runs)
        self._publish(EventKind.JOB_UPDATED, done)
        return None

    def _overlap(self, job: Job, now: datetime) -> None:
        """The next occurrence came due while the job still runs: apply its overlap policy."""
        state = self._running.get(job.id)
        if state is None or state.current is None or state.upcoming is None:
            return
        upcoming = state.upcoming
        if job.overlap is OverlapPolicy.FORBID:
            skipped = Run(
                id=self._run_ids.next(now),
                job_id=job.id,
                scheduled_for=upcoming.scheduled_for,
                attempt=1,
                started_at=now,
                finished_at=now,
                outcome=RunOutcome.SKIPPED,
                error="overlap forbid: the previous occurrence was still running",
                node=self._settings.node,
                job_type=job.job_type,
            )
            self._ckpt.stage(runs=[skipped])
            self._publish(EventKind.RUN_FINISHED, job, skipped)
            state.upcoming = following(job, upcoming, self._rng)
            if state.upcoming is not None:
                self._arm(job.id, state.upcoming.run_at + self._ahead)
            return
        current = state.current
        state.current = None
        state.detached.add(current)
        if job.overlap is OverlapPolicy.REPLACE:
            self._cancel_attempt(current, "canceled")
        pending = job.transition(JobStatus.PENDING, now, **upcoming.changes())
        self._count(JobStatus.RUNNING, JobStatus.PENDING)
        self._place(pending)
        self._ckpt.stage([pending])

    def _started(self, attempts: list[_Attempt], error: BaseException | None) -> None:
        """The start batch is on disk (or failed): hand the attempts to the workers."""
        now = self._clock.now()
        if self._ready and not self._stopping:
            if error is None:
                # Stage the next batch (if it was not staged during the write)
                # before these handlers run: its start is then written while they
                # run (the checkpointer writes at once).
                self._dispatch(now)
            else:
                self._poke()
        for attempt in attempts:
            waiters = (
                self._triggers.pop(attempt.job.id, None)
                if attempt.job.id in self._triggers
                else None
            )
            if error is not None:
                self._abandon_start(attempt, now, error)
                for event, box in waiters or ():
                    box.append(error)
                    event.set()
                continue
            for event, box in waiters or ():
                box.append(attempt.job)
                event.set()
            self._publish(EventKind.RUN_STARTED, attempt.job, attempt.run)
            self._work.append(attempt)
        self._wake_worker()

    def _write_begun(self) -> None:
        """The checkpointer took what was staged into a write: the next batch of
        starts may be staged meanwhile, if jobs wait for free slots."""
        self._unwritten = 0
        if self._ready and self._active < self._settings.max_concurrency and not self._stopping:
            self._poke()

    def _abandon_start(self, attempt: _Attempt, now: datetime, error: BaseException) -> None:
        """A start that never reached the disk: the job goes back to pending soon."""
        self._log.error("start_not_checkpointed", job_id=attempt.job.id, error=str(error))
        self._release(attempt, now)
        state = self._running.get(attempt.job.id)
        if state is None or state.current is not attempt:
            return
        state.current = None
        if not state.detached:
            del self._running[attempt.job.id]
        job = self._jobs.get(attempt.job.id, attempt.job)
        if job.status is JobStatus.RUNNING:
            retry = job.transition(JobStatus.PENDING, now, run_at=now + timedelta(seconds=1))
            self._count(JobStatus.RUNNING, JobStatus.PENDING)
            self._place(retry)

    # -- workers ------------------------------------------------------------------

    def _wake_worker(self) -> None:
        """Signal one idle worker, unless one is already on its way.

        Workers are woken one at a time: a worker that takes an attempt while more
        wait wakes the next one first, so attempts that suspend (I/O) still run
        concurrently, one task switch per suspension, while handlers that return
        at once run back to back in one worker instead of costing a switch each.
        """
        if self._work and not self._waking and self._idle_workers:
            self._waking = True
            self._idle_workers.popleft().set()

    async def _worker(self) -> None:
        """Run attempts from the work queue, one at a time.

        A worker runs its attempts inside one cancel scope, entered when it wakes
        and left when the queue is empty or the scope was cancelled (an attempt
        canceled or past its deadline: a cancelled scope cannot be used again).
        A scope per attempt, with its deadline timer, was the costliest part of
        running a job that returns at once; deadlines are watched by
        :meth:`_watch_deadlines` instead.
        """
        # A deque and one event per idle worker: cheaper than a memory stream hop.
        # No loop variable: a finished attempt must not stay referenced while the
        # worker waits for the next one.
        work = self._work
        while True:
            if work:
                with anyio.CancelScope() as scope:
                    while work and not scope.cancel_called:
                        attempt = work.popleft()
                        self._wake_worker()
                        await self._execute(attempt, scope)
                        del attempt
            else:
                wake = anyio.Event()
                self._idle_workers.append(wake)
                await wake.wait()
                self._waking = False

    async def _watch_deadlines(self) -> None:
        """Cancel the scope of each attempt still running at its deadline.

        One timer for all attempts, armed at the earliest deadline; an engine with
        nothing running arms none.
        """
        heap = self._deadlines
        while True:
            now = self._clock.now()
            while heap and (heap[0][2].scope is None or heap[0][0] <= now):
                _, _, attempt = heapq.heappop(heap)
                if attempt.scope is not None:
                    attempt.scope.cancel()  # cancel_reason stays None: a timeout
            self._deadline_armed = heap[0][0] if heap else None
            changed = self._deadlines_changed = anyio.Event()
            with self._clock.deadline_scope(self._deadline_armed):
                await changed.wait()

    def _watch(self, attempt: _Attempt, deadline: datetime) -> None:
        """Add the attempt's deadline; wake the watcher if it is the earliest."""
        heap = self._deadlines
        if len(heap) > 2 * self._active + 64:
            # Ended attempts whose entries are not on top: drop them all at once.
            heap[:] = [entry for entry in heap if entry[2].scope is not None]
            heapq.heapify(heap)
        heapq.heappush(heap, (deadline, next(self._seq), attempt))
        armed = self._deadline_armed
        if armed is None or deadline < armed:
            self._deadlines_changed.set()

    def _unwatch(self) -> None:
        """Drop ended attempts from the top of the deadlines (the timer stays armed
        while attempts run; :meth:`_release` disarms it when none do)."""
        heap = self._deadlines
        while heap and heap[0][2].scope is None:
            heapq.heappop(heap)

    async def _execute(self, attempt: _Attempt, scope: anyio.CancelScope) -> None:
        """Call the handler at its time, under ``scope`` (the worker's) and the
        attempt's deadline."""
        job, run = attempt.job, attempt.run
        log_runs = self._log_runs
        result: JobResult | None = None
        outcome: RunOutcome
        error: str | None = None
        cancelled = False
        started = time.perf_counter() if log_runs else 0.0
        lateness_ms = 0.0  # stays 0 for an attempt cancelled before its handler was due
        attempt.scope = scope
        try:
            now = self._clock.now()
            if run.started_at > now and attempt.cancel_reason is None:
                # Started ahead: wait for run_at. Loop timers are rounded to the
                # millisecond and may fire early; a handler must never run early.
                while run.started_at > now:
                    await self._clock.sleep_until(run.started_at)
                    now = self._clock.now()
                started = time.perf_counter() if log_runs else 0.0
            if attempt.time_limit is not None:
                # Invariant (issue 17, finding 3): an attempt's time limit runs from
                # the moment its handler starts, on every store; the time its start
                # checkpoint took to commit is not charged to the handler.
                attempt.deadline = now + attempt.time_limit
                self._watch(attempt, attempt.deadline)
            due = attempt.due
            if due is not None and now > due:
                lateness_ms = (now - due).total_seconds() * 1000.0
            self._lateness.append(lateness_ms)
            if log_runs:
                self._log.info(
                    "run_started", **_log_keys(attempt), lateness_ms=round(lateness_ms, 3)
                )
            if attempt.cancel_reason is not None:
                cancelled = True  # canceled before it started: the handler is not called
            elif attempt.handler is None:
                error = f"no loaded handler supports job type {job.job_type!r}"
            else:
                ctx = HandlerContext(
                    attempt=run.attempt,
                    # A triggered extra run is not one of the schedule's occurrences:
                    # it must not share the key of the occurrence that comes next.
                    idempotency_key=(
                        f"{job.id}:extra:{run.id}" if attempt.extra else job.idempotency_key
                    ),
                    deadline=attempt.deadline,
                    scheduled_for=run.scheduled_for,
                    log=_AttemptLog(self._log, attempt),
                )
                try:
                    value = await attempt.handler.handle(job, ctx)
                except Exception as exc:
                    error = f"{type(exc).__name__}: {exc}"
                else:
                    if isinstance(value, JobResult):
                        result = value
                    else:
                        error = f"handler returned {type(value).__name__}, not a JobResult"
        except anyio.get_cancelled_exc_class():
            if not scope.cancel_called:
                raise  # not this attempt's: the engine is going down
            # This attempt's (canceled, or its deadline passed): recorded below; the
            # worker leaves the cancelled scope before its next attempt.
        finally:
            attempt.scope = None
            self._unwatch()
        if cancelled or scope.cancel_called:
            if attempt.cancel_reason is not None:
                outcome = RunOutcome.CANCELED
                reason = attempt.cancel_reason
                # Other reasons (shared mode: a lost lease) are recorded as given.
                error = {"canceled": "canceled", "shutdown": "daemon shutdown"}.get(reason, reason)
            else:
                outcome = RunOutcome.TIMEOUT
                limit = attempt.time_limit or timedelta()
                error = f"timed out after {limit.total_seconds():g} s"
            result = None
        elif result is not None:
            outcome = RunOutcome.SUCCESS if result.ok else RunOutcome.FAILURE
            error = result.error
        else:
            outcome = RunOutcome.FAILURE
        if log_runs:
            self._log.info(
                "run_finished",
                **_log_keys(attempt),
                outcome=outcome.value,
                lateness_ms=round(lateness_ms, 3),
                duration_ms=round((time.perf_counter() - started) * 1000.0, 3),
            )
        self._finish(attempt, outcome, result, error)

    def _finish(
        self, attempt: _Attempt, outcome: RunOutcome, result: JobResult | None, error: str | None
    ) -> None:
        """Record the attempt's run and move the job on (retry, next occurrence, final)."""
        now = self._clock.now()
        started = attempt.run
        run = Run(
            id=started.id,
            job_id=started.job_id,
            scheduled_for=started.scheduled_for,
            attempt=started.attempt,
            started_at=started.started_at,
            finished_at=now,
            outcome=outcome,
            error=error,
            output=None
            if result is None or result.output is None
            else truncate_output(result.output),
            node=started.node,
            job_type=started.job_type,
        )
        self._release(attempt, now)
        job_id = attempt.job.id
        state = self._running.get(job_id)
        job = self._jobs.get(job_id)
        if state is None or job is None or state.current is not attempt:
            # Canceled, overtaken by a newer occurrence, or left behind: history only.
            if state is not None:
                state.detached.discard(attempt)
                if state.current is None and not state.detached:
                    del self._running[job_id]
            self._ckpt.stage(runs=[run])
            self._publish(EventKind.RUN_FINISHED, job, run)
            return
        state.current = None
        if not state.detached:
            del self._running[job_id]
        last = LastResult(
            success=outcome is RunOutcome.SUCCESS,
            output=run.output,
            error=error,
            started_at=run.started_at,
            finished_at=now,
            duration_ms=(now - run.started_at).total_seconds() * 1000.0,
        )
        new = self._next_state(job, attempt, state.upcoming, outcome, result, now, last)
        self._count(job.status, new.status)
        self._place(new)
        self._ckpt.stage([new], [run])
        self._publish(EventKind.RUN_FINISHED, new, run)

    def _next_state(
        self,
        job: Job,
        attempt: _Attempt,
        upcoming: Occurrence | None,
        outcome: RunOutcome,
        result: JobResult | None,
        now: datetime,
        last: LastResult,
    ) -> Job:
        if outcome is RunOutcome.CANCELED:
            # Shutdown: the occurrence is retried on next start, the cancel not counted.
            if attempt.extra and upcoming is not None:
                return job.transition(JobStatus.PENDING, now, **upcoming.changes())
            return job.transition(JobStatus.PENDING, now, run_at=now)
        if attempt.extra:
            # upcoming is None when the occurrence it stood beside was skipped
            # meanwhile (overlap forbid) and was the schedule's last one.
            return self._move_on(job, upcoming, now, last)
        if outcome is not RunOutcome.SUCCESS:
            retriable = result.should_retry if result is not None else True
            if retriable and job.retry_count < job.max_retries:
                if result is not None and result.retry_delay_s is not None:
                    delay = result.retry_delay_s
                else:
                    delay = backoff_delay(job.retry_count, self._settings.defaults, self._rng)
                return job.transition(
                    JobStatus.PENDING,
                    now,
                    retry_count=job.retry_count + 1,
                    run_at=now + timedelta(seconds=delay),
                    last_result=last,
                )
            if not job.recurring:
                return job.transition(JobStatus.FAILED_PERMANENT, now, last_result=last)
        return self._move_on(job, upcoming, now, last)

    @staticmethod
    def _move_on(job: Job, upcoming: Occurrence | None, now: datetime, last: LastResult) -> Job:
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

    def _release(self, attempt: _Attempt, now: datetime) -> None:
        """Free the attempt's slot and let a job waiting on its type limit move up."""
        job_type = attempt.job.job_type
        self._active -= 1
        self._active_by_type[job_type] -= 1
        blocked = self._blocked.get(job_type)
        while blocked:
            entry = heapq.heappop(blocked)
            if self._token.get(entry[3]) == entry[2]:
                heapq.heappush(self._ready, entry)
                break
        if blocked is not None and not blocked:
            del self._blocked[job_type]
        self._finished_since_prune += 1
        if self._finished_since_prune >= PRUNE_EVERY_RUNS or (
            now - self._last_prune >= PRUNE_INTERVAL
        ):
            self._finished_since_prune = 0
            self._prune_due = True
        if self._ready or self._prune_due:
            self._poke()
        if self._active == 0:
            if self._deadline_armed is not None:
                self._deadlines_changed.set()  # nothing runs: disarm the deadline timer
            if self._drained is not None:
                self._drained.set()

    def _cancel_attempt(self, attempt: _Attempt, reason: str) -> None:
        attempt.cancel_reason = reason
        if attempt.scope is not None:
            attempt.scope.cancel()

    def _attempts_of(self, state: _Running) -> list[_Attempt]:
        attempts = list(state.detached)
        if state.current is not None:
            attempts.append(state.current)
        return attempts

    def _all_attempts(self) -> list[_Attempt]:
        return [a for state in self._running.values() for a in self._attempts_of(state)]

    def _fail_triggers(self, job_id: str, error: BaseException) -> None:
        for event, box in self._triggers.pop(job_id, ()):
            box.append(error)
            event.set()

    # -- recovery and housekeeping ------------------------------------------------

    async def _recover(self) -> None:
        """Close runs a crash left open (``crashed``, counted as an attempt) and put
        jobs left RUNNING back to pending by the retry rules."""
        now = self._clock.now()
        open_runs = await self._store.open_runs()
        running = await self._store.jobs_in_status(JobStatus.RUNNING)
        if not open_runs and not running:
            return
        crashed = [
            replace(
                run,
                finished_at=now,
                outcome=RunOutcome.CRASHED,
                error="the daemon stopped during this attempt (crash or kill)",
            )
            for run in open_runs
        ]
        by_job: dict[str, list[Run]] = {}
        for run in open_runs:
            by_job.setdefault(run.job_id, []).append(run)
        recovered: list[Job] = []
        for job in running:
            runs = by_job.get(job.id, [])
            regular = not runs or any(run.scheduled_for == job.scheduled_for for run in runs)
            recovered.append(self._after_crash(job, now, regular=regular))
        self._log.warning("recovered_after_crash", crashed_runs=len(crashed), jobs=len(recovered))
        await self._ckpt.commit(recovered, crashed)

    def _after_crash(self, job: Job, now: datetime, *, regular: bool) -> Job:
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
        if job.retry_count < job.max_retries:
            delay = backoff_delay(job.retry_count, self._settings.defaults, self._rng)
            return job.transition(
                JobStatus.PENDING,
                now,
                retry_count=job.retry_count + 1,
                run_at=now + timedelta(seconds=delay),
                last_result=last,
            )
        if not job.recurring:
            return job.transition(JobStatus.FAILED_PERMANENT, now, last_result=last)
        return self._move_on(job, following(job, Occurrence.of(job), self._rng), now, last)

    async def _prune(self) -> None:
        self._last_prune = self._clock.now()
        cutoff = self._last_prune - timedelta(days=self._settings.history_keep_days)
        try:
            deleted = await self._store.prune_runs(cutoff, self._settings.history_keep_per_job)
        except Exception as exc:
            self._log.warning("prune_failed", error=str(exc))
        else:
            self._log.info("runs_pruned", deleted=deleted)
