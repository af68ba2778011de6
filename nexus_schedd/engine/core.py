"""The engine core: timers, the ready heap, dispatch, and outcome -> next state.

Flow of one attempt::

    source --due--> timer heap --due--> ready heap --slot free--> start batch --on disk--> worker
    (window or      (run_at, seq)       (-priority, run_at)       (RUNNING + open run)      handler
     claims)                                                                                  |
    timer heap <--next occurrence / retry-- result (staged, group commit) <-------------------+

The scheduler task sleeps with ``clock.deadline_scope(earliest due)`` on a wake-up
event; it never wakes while nothing is due. Due work comes from a
:class:`~nexus_schedd.engine.source.DueWorkSource`; attempts run on
:class:`~nexus_schedd.engine.workers.Workers`; changes are group-committed by the
:class:`~nexus_schedd.engine.checkpoint.Checkpointer`. State lives in three
places: the store (durable), the checkpointer's staged rows (newer than the
store), and ``jobs`` (the newest version of every job in memory: on a timer,
ready, or running).
"""

from __future__ import annotations

import heapq
import itertools
import math
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any

import anyio
import anyio.lowlevel

from nexus_schedd.clock import Clock
from nexus_schedd.engine.attempts import CANCELED, Attempt, RunningJob
from nexus_schedd.engine.checkpoint import Checkpointer
from nexus_schedd.engine.events import EventHub
from nexus_schedd.engine.ids import RunIds
from nexus_schedd.engine.overdue import OverdueTimers
from nexus_schedd.engine.policies import (
    Occurrence,
    after_attempt,
    following,
    walk_missed,
)
from nexus_schedd.engine.rates import RateLimits
from nexus_schedd.engine.reactions import Reactions
from nexus_schedd.engine.recovery import HistoryPruner, crashed
from nexus_schedd.engine.settings import EngineSettings
from nexus_schedd.engine.source import DueWorkSource
from nexus_schedd.engine.workers import Workers
from nexus_schedd.errors import StoreError
from nexus_schedd.handlers.registry import HandlerRegistry
from nexus_schedd.model import (
    Job,
    JobResult,
    JobStatus,
    LastResult,
    MisfirePolicy,
    OverlapPolicy,
    Run,
    RunOutcome,
    truncate_output,
)
from nexus_schedd.model.events import Event, EventKind
from nexus_schedd.store.base import Store
from nexus_schedd.tracing import RunTracer

PIPELINE_MIN_SLOTS = 16
"""The smallest ``max_concurrency`` whose starts may be written a batch ahead
(see :meth:`EngineCore._limits`): below it a batch is too small for fewer
commits to pay, and each slot is too large a share of the pool to start a job
that might wait for it."""
PIPELINE_EVIDENCE = 4
"""Full start batches in a row, each on disk after every handler before it had
ended, before starts are written a batch ahead."""
LOOP_LAG_WARN_MS = 250.0
"""A timer wake-up this late is logged as ``event_loop_lag`` (something blocked the loop)."""
TRIGGER_PRIORITY = -(2**40)
"""Ready-heap key of a triggered attempt: ahead of every priority a job can have."""
FETCH_RETRY = timedelta(seconds=1)
"""After a store error while fetching due work, the pause before the next try
(meanwhile the loop goes on dispatching what it has and serving control calls)."""

RETRY_START_AFTER = timedelta(seconds=1)
"""A due start whose write failed is tried again this long after (the
checkpointer pauses its writes as long after a failure)."""

TriggerWaiter = tuple[anyio.Event, list[Job | BaseException]]
ReadyEntry = tuple[int, datetime, int, str]
"""(-priority, due, seq, job id): the ready heap's order; seq must match the job's token."""


class EngineCore:
    """Dispatch, attempts and their outcomes, over a source of due work.

    Used by :class:`~nexus_schedd.engine.engine.Engine` (the facade that owns the
    lifecycle and the control operations) and by the sources of due work.
    ``make_source`` builds the source with this core.
    """

    def __init__(
        self,
        store: Store,
        registry: HandlerRegistry,
        clock: Clock,
        settings: EngineSettings,
        log: Any,
        rng: random.Random,
        make_source: Callable[[EngineCore], DueWorkSource],
        tracer: RunTracer | None = None,
    ) -> None:
        self.store = store
        self.registry = registry
        self.clock = clock
        self.settings = settings
        self.log = log
        self.rng = rng
        self.events = EventHub()
        self.run_ids = RunIds(random.Random())  # unseeded: ids must differ across engines

        self.jobs: dict[str, Job] = {}
        """The newest version of every job in memory (on a timer, ready or running)."""
        self.running: dict[str, RunningJob] = {}
        self.token: dict[str, int] = {}
        """Each job's live timer or ready entry; entries with another seq are stale."""
        self.changed: dict[str, Job | None] | None = None
        """While the source reads pending jobs from the store: each job that left
        memory meanwhile, by id, with its newest version when it became pending
        outside the source's window, None otherwise (see LocalWindow._load)."""
        self.seq = itertools.count()
        self.ready: list[ReadyEntry] = []
        self.triggers: dict[str, list[TriggerWaiter]] = {}
        """Callers of TriggerJob waiting for their attempt's start to be on disk."""
        self.status_counts: dict[JobStatus, int] = dict.fromkeys(JobStatus, 0)
        """Jobs per status, kept up to date in memory (GetStatus reads no store)."""
        self.active = 0
        """Attempts started (staged or running) and not yet finished."""
        self.start_ahead = timedelta(milliseconds=settings.start_ahead_ms)
        self.loop_lag_ms = 0.0
        self.loop_iterations = 0
        """Scheduler loop passes so far (grows only while there is work)."""
        self.stopping = False
        self.tracer = tracer
        """Set when tracing is on: the workers make each run a span (SPEC 15)."""

        self._timers: list[tuple[datetime, int, str]] = []
        self._blocked: dict[str, list[ReadyEntry]] = {}
        self.reactions = Reactions(settings.notify, settings.defaults, self.run_ids.next)
        """Builds follow-up and notification jobs (SPEC 15)."""
        self.overdue = OverdueTimers(
            clock, timedelta(seconds=settings.defaults.overdue_after_s), self._check_overdue
        )
        """Watches due jobs that wait to start, when a ``[[notify]]`` rule wants ``overdue``."""
        self.rates = RateLimits(settings.type_rates)
        """Token buckets of the job types with a rate, and the jobs waiting for one."""
        self._active_by_type: dict[str, int] = {}
        self._unwritten = 0
        """Starts staged and not yet taken by a write (see :meth:`_dispatch`)."""
        self._starting = 0
        """Starts staged or being written: not yet on disk (see :meth:`_started`)."""
        self._overlap_waits: set[str] = set()
        """Jobs whose next occurrence came due while their current attempt's
        start was not on disk yet: the overlap policy waits for that write
        (:meth:`_overlap`, :meth:`_started`)."""
        self._start_cap = max(1, settings.max_concurrency // 2)
        self._fast_batches = 0
        """Full start batches in a row that reached the disk after every handler
        started before them had ended (see :meth:`_limits`)."""
        self._wakeup = anyio.Event()
        self._sleeping_until: datetime | None = None
        self._sleeping = False
        self._fetch_paused_until: datetime | None = None
        self.drained: anyio.Event | None = None
        """Set when the last attempt finishes, while stop() waits for that."""
        self._awaited: list[tuple[set[Attempt], anyio.Event]] = []
        """Attempts someone waits to see end (:meth:`wait_for_attempts`)."""

        self.pruner = HistoryPruner(store, clock, settings, log)
        self.workers = Workers(self)
        self.source = make_source(self)
        self.checkpoints = Checkpointer(
            store,
            log,
            writer=self.source.writer,
            on_write=self._write_begun,
            clock=clock,
            commit_interval=timedelta(milliseconds=settings.commit_interval_ms),
        )

    # -- small shared operations ------------------------------------------------------

    def wake_scheduler(self) -> None:
        """Make the scheduler loop look again (work may have become possible)."""
        self._wakeup.set()

    def count(self, old: JobStatus, new: JobStatus) -> None:
        """A job moved from ``old`` to ``new``: keep ``status_counts`` right."""
        if old is not new:
            self.status_counts[old] -= 1
            self.status_counts[new] += 1

    def publish(self, kind: EventKind, job: Job | None = None, run: Run | None = None) -> None:
        """Tell Watch subscribers, if any."""
        if self.events.active:
            self.events.publish(Event(kind, self.clock.now(), job=job, run=run))

    def place(self, job: Job) -> None:
        """Make ``job`` the engine's newest version and put it on (or off) the heap."""
        if job.status is JobStatus.PENDING:
            assert job.run_at is not None
            if self.source.keeps_pending(job):
                jobs = self.jobs
                jobs[job.id] = job
                self.arm(job.id, job.run_at)
                if len(jobs) > self.settings.memory_bound:
                    # Adds beyond the window: the source trims memory when the
                    # loop next looks (fetch), and a loop asleep until the first
                    # due job would not look for hours (1,000,000 adds kept every
                    # job in memory, 700 MB).
                    self.wake_scheduler()
                return
            self.forget(job.id)
            if self.changed is not None:
                self.changed[job.id] = job  # on disk; a read in flight may miss it
            return
        elif job.status is JobStatus.RUNNING:
            self.jobs[job.id] = job
            return
        self.forget(job.id)

    def forget(self, job_id: str) -> None:
        """Drop a job from memory (its timer or ready entry goes stale)."""
        self.jobs.pop(job_id, None)
        self.token.pop(job_id, None)
        if self.changed is not None:
            self.changed[job_id] = None

    def arm(self, job_id: str, at: datetime) -> None:
        """Put the job's one timer at ``at`` (earlier timers of the job go stale)."""
        seq = next(self.seq)
        self.token[job_id] = seq
        heapq.heappush(self._timers, (at, seq, job_id))
        if self._sleeping and (self._sleeping_until is None or at < self._sleeping_until):
            self.wake_scheduler()

    def enqueue(self, job: Job, rank: int, at: datetime) -> None:
        """Make ``job`` ready to start now, ahead of jobs with a larger ``rank``
        (-priority, or TRIGGER_PRIORITY)."""
        self.jobs[job.id] = job
        seq = next(self.seq)
        self.token[job.id] = seq
        heapq.heappush(self.ready, (rank, at, seq, job.id))

    def next_timer(self) -> datetime | None:
        """The earliest live timer, dropping stale entries from the top."""
        timers = self._timers
        while timers:
            at, seq, job_id = timers[0]
            if self.token.get(job_id) == seq:
                return at
            heapq.heappop(timers)
        return None

    def backlog(self) -> int:
        """Due jobs waiting for a slot (or a token of their type's rate)."""
        waiting = sum(len(queue) for queue in self.rates.waiting.values())
        return len(self.ready) + sum(len(queue) for queue in self._blocked.values()) + waiting

    def drop_stale_held(self, job_type: str) -> None:
        """Drop the entries of jobs no longer in memory from ``job_type``'s queues
        of jobs waiting for its limit or rate (after the source forgot many of
        them at once: they would count in the backlog until popped)."""
        token = self.token
        blocked = self._blocked.get(job_type)
        if blocked:
            blocked[:] = [entry for entry in blocked if token.get(entry[3]) == entry[2]]
            heapq.heapify(blocked)
        waiting = self.rates.waiting.get(job_type)
        if waiting:
            waiting[:] = [entry for entry in waiting if token.get(entry[3]) == entry[2]]

    def unblock_all(self) -> None:
        """Type limits or rates changed: every job waiting on one is ready again."""
        for queue in self._blocked.values():
            for entry in queue:
                heapq.heappush(self.ready, entry)
        self._blocked.clear()
        for entry in self.rates.release_all():
            heapq.heappush(self.ready, entry)
        self.wake_scheduler()

    def cancel_job_attempts(self, job_id: str, reason: str) -> int:
        """Cancel every attempt of the job in flight and forget its running state."""
        state = self.running.pop(job_id, None)
        if state is None:
            return 0
        attempts = state.attempts()
        for attempt in attempts:
            attempt.cancel(reason)
        return len(attempts)

    def all_attempts(self) -> list[Attempt]:
        """Every attempt in flight."""
        return [a for state in self.running.values() for a in state.attempts()]

    def fail_triggers(self, job_id: str, error: BaseException) -> None:
        """Callers waiting to trigger ``job_id`` get ``error``."""
        for event, box in self.triggers.pop(job_id, ()):
            box.append(error)
            event.set()

    # -- the scheduler loop -------------------------------------------------------

    async def schedule(self) -> None:
        """The scheduler task: collect due timers, dispatch, fetch from the source,
        sleep until the next due time; until stop. The source is stopped after."""
        try:
            await self._schedule()
        finally:
            with anyio.CancelScope(shield=True):
                await self.source.stop()

    async def _schedule(self) -> None:
        ahead = self.start_ahead
        source = self.source
        while not self.stopping:
            self.loop_iterations += 1
            now = self.clock.now()
            self._collect_due(now + ahead)
            if self.rates.waiting:
                for entry in self.rates.due(now):
                    heapq.heappush(self.ready, entry)
            limit = self._limits()[0]
            if self.ready and self.active < limit:
                self._dispatch(now)
            free = limit - self.active - len(self.ready)
            if await self._fetch(now, free):
                continue
            next_at = self.next_timer()
            if next_at is not None and next_at <= self.clock.now() + ahead:
                await anyio.lowlevel.checkpoint()
                continue
            if self.pruner.due:
                await self.pruner.prune()
                # Jobs added or finished meanwhile armed timers without a wake-up
                # (the loop was not asleep): look at the heap again.
                continue
            wake_at = None if next_at is None else next_at - ahead
            wanted = source.wake_at(free > 0)
            if self._fetch_paused_until is not None:
                wanted = (
                    self._fetch_paused_until
                    if wanted is None
                    else min(wanted, self._fetch_paused_until)
                )
            if self.rates.waiting:
                token_at = self.rates.wake_at()
                if token_at is not None and (wanted is None or token_at < wanted):
                    wanted = token_at
            if wanted is not None and (wake_at is None or wanted < wake_at):
                wake_at = wanted
            self._sleeping_until = None if wake_at is None else wake_at + ahead
            self._sleeping = True
            if not self._wakeup.is_set():
                with self.clock.deadline_scope(wake_at) as scope:
                    await self._wakeup.wait()
                if wake_at is not None:
                    self._note_wakeup_lag(scope, wake_at, timer=scope.cancelled_caught)
            self._sleeping = False
            self._wakeup = anyio.Event()

    async def _fetch(self, now: datetime, free: int) -> bool:
        """The source's turn, behind the one error path for its store calls: a
        store error is logged, fetching pauses for FETCH_RETRY (the loop goes on
        with the work it has) and then the source is asked again.

        Invariant (issue 17, finding 1): every store call of a source's part of
        the scheduler loop is made from :meth:`DueWorkSource.fetch`, so no store
        error (a reset connection, a refusing or silent server) ends the loop,
        except one that says the store is unusable for good
        (``StoreError.permanent``: its schema changed or vanished, the user lost
        a privilege): that is logged as ``store_unusable`` and raised, so the
        engine and then the daemon end saying what happened.
        """
        paused = self._fetch_paused_until
        if paused is not None:
            if now < paused:
                return False
            self._fetch_paused_until = None
        try:
            return await self.source.fetch(now, free)
        except StoreError as exc:
            if exc.permanent:
                self.log.critical(
                    "store_unusable", source=type(self.source).__name__, error=exc.message
                )
                raise
            self.log.error(
                "due_work_fetch_failed",
                source=type(self.source).__name__,
                error=exc.message,
                retry_in_s=FETCH_RETRY.total_seconds(),
            )
            self._fetch_paused_until = self.clock.now() + FETCH_RETRY
            return False

    def _note_wakeup_lag(self, scope: anyio.CancelScope, due: datetime, *, timer: bool) -> None:
        """How late the scheduler woke after its deadline: a blocked event loop
        shows here first.

        Measured on the loop's monotonic clock where the scope has a real deadline,
        so a wall-clock step is not mistaken for lag. A timer wake-up counts, and
        so does a poke that came after the deadline: a loop blocked across the
        deadline runs whichever of the two it finds first, and the timer would
        have woken the scheduler at its deadline had the loop been free. A poke
        before the deadline is not late for anything.
        """
        if math.isfinite(scope.deadline):
            lag = (anyio.current_time() - scope.deadline) * 1000.0
        else:
            lag = (self.clock.now() - due).total_seconds() * 1000.0
        if not timer and lag <= 0.0:
            return
        self.loop_lag_ms = max(0.0, lag)
        if lag >= LOOP_LAG_WARN_MS:
            self.log.warning("event_loop_lag", lag_ms=round(lag, 1), source="scheduler")

    def _collect_due(self, horizon: datetime) -> None:
        """Move timers due by ``horizon`` (now + start_ahead) to the ready heap, or
        apply the overlap policy (overlap timers are armed start_ahead late, so
        they fire on time)."""
        now = horizon - self.start_ahead
        timers = self._timers
        reactions = self.reactions
        overdue = self.overdue if reactions.watches_overdue else None
        watched = reactions.overdue_types
        while timers and timers[0][0] <= horizon:
            at, seq, job_id = heapq.heappop(timers)
            if self.token.get(job_id) != seq:
                continue
            job = self.jobs[job_id]
            if job.status is JobStatus.PENDING:
                heapq.heappush(self.ready, (-job.priority, at, seq, job_id))
                if overdue is not None:
                    wanted = watched.get(job.job_type)
                    if wanted is None:
                        wanted = reactions.overdue_watched(job.job_type)
                    if wanted:
                        overdue.watch(job_id, at)
            elif job.status is JobStatus.RUNNING:
                self._overlap(job, now)

    # -- dispatch -----------------------------------------------------------------

    def _limits(self) -> tuple[int, int]:
        """(attempts in flight, starts per write) that :meth:`_dispatch` may reach.

        At most ``max_concurrency`` attempts are in flight (started and not
        ended), and at most half of them wait to be written: under load two
        start batches are in flight, one written while the next is staged and
        the previous one's handlers run.

        When handlers end faster than a write (``PIPELINE_EVIDENCE`` full
        batches in a row reached the disk while no handler ran, and the pool
        has at least ``PIPELINE_MIN_SLOTS`` slots), a
        batch's starts are written ahead of the slots they will take: up to
        twice ``max_concurrency`` attempts in flight, a whole pool's starts per
        write. The handlers of one batch have ended by the time the next is on
        disk, so no more than ``max_concurrency`` handlers run (the workers
        are that many in any case) and each write carries twice the jobs:
        half the commits per job. The first batch that reaches the disk while
        a handler runs ends it at once; a batch written ahead just then waits
        for workers as they come free, in order. Handlers that wait on I/O
        are usually running when a batch lands, so this is the case of handlers
        that return without waiting (or within a turn of the loop).
        """
        slots = self.settings.max_concurrency
        if self._fast_batches >= PIPELINE_EVIDENCE and slots >= PIPELINE_MIN_SLOTS:
            return 2 * slots, slots
        return slots, self._start_cap

    def _dispatch(self, now: datetime) -> None:
        """Start as many ready jobs as slots allow (:meth:`_limits`), highest
        priority first."""
        limits = self.settings.type_limits
        rates = self.rates if self.rates else None
        starts: list[Attempt] = []
        # The running versions to write with the start; the others (see
        # _started) are left to a later write, which a fast run's finish makes
        # unneeded: crash recovery reads the open run (LocalWindow._recover).
        rows: list[Job] = []
        deferred: list[Attempt] = []
        eager = self.source.running_row_at_start
        ready = self.ready
        jobs, token, triggers = self.jobs, self.token, self.triggers
        slots, cap = self._limits()
        while ready and self.active < slots and self._unwritten < cap:
            entry = heapq.heappop(ready)
            job_id = entry[3]
            if token.get(job_id) != entry[2]:
                continue
            job = jobs[job_id]
            if job.status is not JobStatus.PENDING:
                continue
            limit = limits.get(job.job_type)
            if limit is not None and self._active_by_type.get(job.job_type, 0) >= limit:
                heapq.heappush(self._blocked.setdefault(job.job_type, []), entry)
                continue
            triggered = job_id in triggers
            if rates is not None:
                # The token is taken when the handler will start (start-ahead
                # dispatches a due job early), so the rate holds for the calls.
                run_at = job.run_at
                starts_at = run_at if run_at is not None and run_at > now and not triggered else now
                if not rates.take(job.job_type, starts_at):
                    # Over its type's rate: late, not failed; other types go on.
                    rates.waiting.setdefault(job.job_type, []).append(entry)
                    continue
            token.pop(job_id, None)
            attempt = self._begin(job, now, triggered=triggered)
            if attempt is not None:
                starts.append(attempt)
                self._unwritten += 1
                self._starting += 1
                if eager or (not triggered and attempt.run.scheduled_for != job.scheduled_for):
                    # A misfire moved the occurrence: the pending row would not
                    # match the open run, so recovery could not tell it started.
                    rows.append(attempt.job)
                else:
                    deferred.append(attempt)
            elif rates is not None:
                rates.give_back(job.job_type)  # skipped (misfire): no start
        if starts:
            self.checkpoints.stage(
                rows,
                [a.run for a in starts],
                on_durable=lambda error: self._started(starts, error, deferred),
            )

    def _begin(self, job: Job, now: datetime, *, triggered: bool) -> Attempt | None:
        """Turn a due pending job into an attempt (in memory; staged by the caller)."""
        if self.reactions.watches_overdue:
            self.overdue.started(job.id)
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
            upcoming = following(job, Occurrence.of(job), self.rng)
        else:
            upcoming = None  # what following() gives a job that does not repeat
        running = job.transition(JobStatus.RUNNING, now)
        scheduled_for = now if triggered else job.scheduled_for
        # Started up to start_ahead early: the start is on disk by run_at and the
        # worker calls the handler at run_at (started_at), off the fsync's latency.
        start = job.run_at if not triggered and job.run_at > now else now
        run = Run(
            id=self.run_ids.next(now),
            job_id=job.id,
            scheduled_for=scheduled_for,
            attempt=1 if triggered else job.retry_count + 1,
            started_at=start,
            node=self.settings.node,
            job_type=job.job_type,
        )
        timeout = job.timeout_s if job.timeout_s is not None else self.settings.defaults.timeout_s
        attempt = Attempt(
            job=running,
            run=run,
            handler=self.registry.resolve(job.job_type),
            # A trigger is always an extra run: the schedule (a one-shot's only
            # occurrence too) stays where it was (SPEC 4).
            triggered=triggered,
            time_limit=_time_limit(timeout) if timeout else None,
            # Set by Workers._execute when the handler starts, not here: the start
            # checkpoint's commit (store latency) must not use up the handler's time.
            deadline=None,
            due=None if triggered else job.run_at,
        )
        state = self.running.get(job.id)
        if state is None:
            self.running[job.id] = RunningJob(attempt, upcoming)
        else:
            state.current, state.upcoming = attempt, upcoming
        if upcoming is not None and upcoming.run_at > now and job.recurring:
            # Overlap timer. An upcoming occurrence already due is a catch-up
            # (run_all after downtime or backlog): it runs after this one instead.
            self.arm(job.id, upcoming.run_at + self.start_ahead)
        self.count(JobStatus.PENDING, JobStatus.RUNNING)
        self.jobs[job.id] = running
        self.active += 1
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
        walk = walk_missed(job, now, self.rng)
        if job.misfire is MisfirePolicy.RUN_ONCE:
            if walk.missed == 1:
                return job
            # One run stands for every missed occurrence; the others are counted.
            latest = walk.latest_missed
            self.log.info("misfire_run_once", job_id=job.id, missed=walk.missed)
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
            self._skipped_run(
                job, instant, now, f"misfire: {missed} occurrence(s) missed, policy skip"
            )
            for instant in skipped
        ]
        self.log.info("misfire_skip", job_id=job.id, missed=missed)
        added = self.reactions.skipped(job, runs, missed, now)
        if runs_latest:
            self.checkpoints.stage(added, runs)
            self.added(added)
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
        self.count(job.status, done.status)
        self.place(done)
        self.checkpoints.stage([done, *added], runs)
        self.added(added)
        self.publish(EventKind.JOB_UPDATED, done)
        return None

    def _skipped_run(self, job: Job, scheduled_for: datetime, now: datetime, why: str) -> Run:
        """The history record of an occurrence that was skipped."""
        self.pruner.note_run(job.id)
        return Run(
            id=self.run_ids.next(now),
            job_id=job.id,
            scheduled_for=scheduled_for,
            attempt=1,
            started_at=now,
            finished_at=now,
            outcome=RunOutcome.SKIPPED,
            error=why,
            node=self.settings.node,
            job_type=job.job_type,
        )

    def _overlap(self, job: Job, now: datetime) -> None:
        """The next occurrence came due while the job still runs: apply its overlap policy."""
        state = self.running.get(job.id)
        if state is None or state.current is None or state.upcoming is None:
            return
        if not state.current.durable:
            # Its start is still being written: if that write fails, nothing ran
            # and the job goes back to that occurrence (_abandon_start). The
            # policy applies once the start is on disk (_started).
            self._overlap_waits.add(job.id)
            return
        upcoming = state.upcoming
        if job.overlap is OverlapPolicy.FORBID:
            skipped = self._skipped_run(
                job,
                upcoming.scheduled_for,
                now,
                "overlap forbid: the previous occurrence was still running",
            )
            self.checkpoints.stage(runs=[skipped])
            self.publish(EventKind.RUN_FINISHED, job, skipped)
            state.upcoming = following(job, upcoming, self.rng)
            if state.upcoming is not None:
                self.arm(job.id, state.upcoming.run_at + self.start_ahead)
            return
        current = state.current
        state.current = None
        state.detached.add(current)
        if job.overlap is OverlapPolicy.REPLACE:
            current.cancel(CANCELED)
        pending = job.transition(JobStatus.PENDING, now, **upcoming.changes())
        self.count(JobStatus.RUNNING, JobStatus.PENDING)
        self.place(pending)
        self.checkpoints.stage([pending])

    def _started(
        self, attempts: list[Attempt], error: BaseException | None, deferred: list[Attempt]
    ) -> None:
        """The start batch is on disk (or failed): hand the attempts to the workers.

        The running versions of ``deferred`` (not written with the start) go to
        the next write, unless their finish (or any newer version) replaces them
        first: for a run that ends before that write, the job row is written once
        per attempt, not twice."""
        now = self.clock.now()
        # No handler runs as this batch reaches the disk: those started before it
        # have ended (attempts on disk, less those still queued for a worker,
        # less those ended: none). Handlers end faster than a write (_limits).
        running = self.active - self._starting - len(self.workers.work)
        if error is None and running == 0 and len(attempts) >= self._start_cap:
            self._fast_batches += 1
        else:
            self._fast_batches = 0
        self._starting -= len(attempts)
        if error is None and deferred:
            jobs = self.jobs
            self.checkpoints.stage_lazily([a.job for a in deferred if jobs.get(a.job.id) is a.job])
        if self.ready and not self.stopping:
            if error is None:
                # Stage the next batch (if it was not staged during the write)
                # before these handlers run: its start is then written while they
                # run (the checkpointer writes at once).
                self._dispatch(now)
            else:
                self.wake_scheduler()
        triggers = self.triggers
        workers = self.workers
        queue = workers.work.append
        for attempt in attempts:
            # Only a triggered attempt answers the job's trigger callers.
            waiters = (
                triggers.pop(attempt.job.id, None)
                if attempt.triggered and attempt.job.id in triggers
                else None
            )
            if error is not None:
                self._abandon_start(attempt, now, error)
                for event, box in waiters or ():
                    box.append(error)
                    event.set()
                continue
            attempt.durable = True
            for event, box in waiters or ():
                box.append(attempt.job)
                event.set()
            self.publish(EventKind.RUN_STARTED, attempt.job, attempt.run)
            queue(attempt)
        if self._overlap_waits:
            self._overlap_after_start(attempts, now)
        workers.wake()

    def _overlap_after_start(self, attempts: list[Attempt], now: datetime) -> None:
        """Apply the overlap policy that waited for these starts' write (see
        :meth:`_overlap`); a failed start put its job back already."""
        waits = self._overlap_waits
        for attempt in attempts:
            job_id = attempt.job.id
            if job_id not in waits:
                continue
            waits.discard(job_id)
            job = self.jobs.get(job_id)
            if attempt.durable and job is not None and job.status is JobStatus.RUNNING:
                self._overlap(job, now)

    def _write_begun(self) -> None:
        """The checkpointer took what was staged into a write: the next batch of
        starts may be staged meanwhile, if jobs wait for free slots."""
        self._unwritten = 0
        if self.ready and self.active < self._limits()[0] and not self.stopping:
            self.wake_scheduler()

    def _abandon_start(self, attempt: Attempt, now: datetime, error: BaseException) -> None:
        """A start whose write failed: its handler does not run, its run is closed
        as crashed, and the job is pending again (both written with the next
        write, fenced in shared mode like any leased row).

        The run is closed even though the failed write most likely wrote nothing:
        the checkpointer stages a failed write's rows again, open run included,
        and a write may have committed before its error (a lost connection).
        Left open, the run stays "running" in the history, and recovery after a
        crash counts it as an attempt the handler never made.

        A due start is retried a second later. A trigger (its caller was told it
        failed) leaves the schedule where it was, as the trigger's end would
        have. An attempt that overlap allow/replace had detached already is only
        recorded: a newer occurrence stands for the job.
        """
        self.log.error("start_not_checkpointed", job_id=attempt.job.id, error=str(error))
        job_id = attempt.job.id
        self._release(attempt, now)
        if self.rates:
            self.rates.give_back(attempt.job.job_type)  # no handler call used it
        run = attempt.run
        if run.started_at > now:  # dispatched start_ahead early: it never began
            run = replace(run, started_at=now)
        self.checkpoints.stage(runs=[crashed(run, now, f"the start was not checkpointed: {error}")])
        state = self.running.get(job_id)
        if state is None:
            return  # canceled or deleted meanwhile: that version stands
        if state.current is not attempt:
            state.detached.discard(attempt)
        else:
            state.current = None
            job = self.jobs.get(job_id, attempt.job)
            if job.status is JobStatus.RUNNING:
                upcoming = state.upcoming
                if attempt.triggered and upcoming is not None:
                    back = job.transition(JobStatus.PENDING, now, **upcoming.changes())
                else:
                    back = job.transition(JobStatus.PENDING, now, run_at=now + RETRY_START_AFTER)
                self.count(JobStatus.RUNNING, JobStatus.PENDING)
                self.place(back)
                # Written too: past the window's end memory drops it, and the
                # store's row (pending, inside the window) was read already.
                self.checkpoints.stage([back])
        if state.current is None and not state.detached:
            del self.running[job_id]

    # -- outcomes -----------------------------------------------------------------

    def finish(
        self, attempt: Attempt, outcome: RunOutcome, result: JobResult | None, error: str | None
    ) -> None:
        """Record the attempt's run and move the job on (retry, next occurrence, final)."""
        now = self.clock.now()
        output = None if result is None or result.output is None else truncate_output(result.output)
        run = attempt.run.closed(now, outcome, error, output)
        self._release(attempt, now)
        job_id = attempt.job.id
        state = self.running.get(job_id)
        job = self.jobs.get(job_id)
        if state is None or job is None or state.current is not attempt:
            # Canceled, overtaken by a newer occurrence, or left behind: history only.
            if state is not None:
                state.detached.discard(attempt)
                if state.current is None and not state.detached:
                    del self.running[job_id]
            self.checkpoints.stage(runs=[run])
            self.publish(EventKind.RUN_FINISHED, job, run)
            return
        state.current = None
        if not state.detached:
            del self.running[job_id]
        last = LastResult(
            success=outcome is RunOutcome.SUCCESS,
            output=run.output,
            error=error,
            started_at=run.started_at,
            finished_at=now,
            duration_ms=(now - run.started_at).total_seconds() * 1000.0,
        )
        new = after_attempt(
            job,
            triggered=attempt.triggered,
            upcoming=state.upcoming,
            outcome=outcome,
            result=result,
            now=now,
            last=last,
            defaults=self.settings.defaults,
            rng=self.rng,
        )
        self.count(job.status, new.status)
        self.place(new)
        reactions = self.reactions
        # Most jobs have no follow-ups, and no event notifies about a success: a
        # few tests, not a call, on the path every run takes.
        added = (
            reactions.attempt_ended(job, new, run, now)
            if job.extras is not None or (reactions.rules and outcome is not RunOutcome.SUCCESS)
            else None
        )
        if added:
            # One write: the outcome and the jobs it adds land together or not at all.
            self.checkpoints.stage([new, *added], [run])
            self.added(added)
        else:
            self.checkpoints.stage([new], [run])
        self.publish(EventKind.RUN_FINISHED, new, run)

    def _check_overdue(self, job_id: str, run_at: datetime) -> None:
        """The overdue timer's deadline for a job that came due at ``run_at``: if it
        still waits to start, notify (the ``[[notify]]`` rules on ``overdue``)."""
        job = self.jobs.get(job_id)
        if job is None or job.status is not JobStatus.PENDING or job.run_at != run_at:
            return
        now = self.clock.now()
        added = self.reactions.overdue(job, now)
        self.log.warning(
            "job_overdue",
            job_id=job_id,
            job_type=job.job_type,
            late_s=round((now - run_at).total_seconds(), 3),
            notifications=len(added),
        )
        if added:
            self.checkpoints.stage(added)
            self.added(added)

    def added(self, jobs: Sequence[Job]) -> None:
        """Take in pending jobs the engine itself added (follow-ups, notifications),
        staged by the caller together with what caused them."""
        for job in jobs:
            self.status_counts[JobStatus.PENDING] += 1
            self.place(job)
            self.publish(EventKind.JOB_ADDED, job)

    def attempts_in_flight(self) -> list[Attempt]:
        """Every attempt placed and not yet ended (started, queued or starting)."""
        return [attempt for state in self.running.values() for attempt in state.attempts()]

    async def wait_for_attempts(self, attempts: Iterable[Attempt]) -> None:
        """Return once each of ``attempts`` has ended (its slot released)."""
        waiting = set(attempts)
        if not waiting:
            return
        ended = anyio.Event()
        self._awaited.append((waiting, ended))
        await ended.wait()

    def _release(self, attempt: Attempt, now: datetime) -> None:
        """Free the attempt's slot and let a job waiting on its type limit move up."""
        if self._awaited:
            for waiting, ended in self._awaited:
                waiting.discard(attempt)
                if not waiting:
                    ended.set()
            self._awaited = [entry for entry in self._awaited if entry[0]]
        job_type = attempt.job.job_type
        self.active -= 1
        self._active_by_type[job_type] -= 1
        blocked = self._blocked.get(job_type)
        while blocked:
            entry = heapq.heappop(blocked)
            if self.token.get(entry[3]) == entry[2]:
                heapq.heappush(self.ready, entry)
                break
        if blocked is not None and not blocked:
            del self._blocked[job_type]
        pruner = self.pruner
        pruner.note_finished(now, attempt.job.id)
        if self.ready or pruner.due or self.source.due_by(now + self.start_ahead):
            self.wake_scheduler()
        if self.active == 0:
            self._fast_batches = 0  # the burst is over: the next one shows its own pace
            self.workers.all_done()
            if self.drained is not None:
                self.drained.set()


@lru_cache(maxsize=256)
def _time_limit(timeout_s: float) -> timedelta:
    """An attempt's time limit: jobs share a few timeouts (the default 300 s for
    most), and ``timedelta(seconds=<float>)`` costs more than the lookup."""
    return timedelta(seconds=timeout_s)
