"""The worker pool that calls handlers, and the one watcher of their deadlines."""

from __future__ import annotations

import heapq
import itertools
import time
from collections import deque
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import anyio
from anyio.abc import TaskGroup

from nexus_schedd.engine.attempts import (
    CANCELED,
    SHUTDOWN,
    Attempt,
    AttemptLog,
    logs_info,
)
from nexus_schedd.handlers.base import HandlerContext
from nexus_schedd.model import JobResult, RunOutcome

if TYPE_CHECKING:
    from nexus_schedd.engine.core import EngineCore
    from nexus_schedd.tracing import RunSpan

LATENCY_SAMPLES = 1000
"""Lateness samples kept for the status snapshot's percentiles."""

_MILLISECOND = timedelta(milliseconds=1)

_CANCEL_ERRORS = {CANCELED: "canceled", SHUTDOWN: "daemon shutdown"}
"""The run's error for each cancel reason; other reasons (a lost lease) are
recorded as given."""


class Workers:
    """``max_concurrency`` long-lived worker tasks over one work queue, and the
    deadline watcher. Each attempt's outcome goes to :meth:`EngineCore.finish`."""

    def __init__(self, core: EngineCore) -> None:
        self._core = core
        self._clock = core.clock
        self._log = core.log
        self._log_runs = logs_info(core.log)
        """Per-run info events (run_started, run_finished) are written: their
        fields are only worked out when they are."""
        self._tracer = core.tracer
        """Set when tracing is on (SPEC 15): each run is a span."""
        self.work: deque[Attempt] = deque()
        """Attempts whose start is on disk, waiting for a worker."""
        self.lateness: deque[float] = deque(maxlen=LATENCY_SAMPLES)
        """How late recent handlers started (ms), for the status snapshot."""
        self._idle: deque[anyio.Event] = deque()
        self._waking = False
        """A worker was signalled and has not run yet (see :meth:`wake`)."""
        self._seq = itertools.count()
        self._deadlines: list[tuple[datetime, int, Attempt]] = []
        """Deadlines of attempts in flight, earliest first (see :meth:`_watch_deadlines`);
        entries of attempts that ended are dropped lazily."""
        self._deadline_armed: datetime | None = None
        self._deadlines_changed = anyio.Event()
        self._watcher_poked = False
        """``_deadlines_changed`` is set (the watcher will look again): no need to
        set it again. With nothing armed (the handlers before returned at once),
        every attempt's deadline would otherwise set it again."""

    def start(self, tg: TaskGroup, count: int) -> None:
        """Start ``count`` workers and the deadline watcher in ``tg``."""
        for number in range(count):
            tg.start_soon(self._worker, name=f"engine worker {number}")
        tg.start_soon(self._watch_deadlines, name="engine deadline watcher")

    def wake(self) -> None:
        """Signal one idle worker, unless one is already on its way.

        Workers are woken one at a time: a worker that takes an attempt while more
        wait wakes the next one first, so attempts that suspend (I/O) still run
        concurrently, one task switch per suspension, while handlers that return
        at once run back to back in one worker instead of costing a switch each.
        """
        if self.work and not self._waking and self._idle:
            self._waking = True
            self._idle.popleft().set()

    def all_done(self) -> None:
        """Nothing runs any more: disarm the deadline timer."""
        if self._deadline_armed is not None and not self._watcher_poked:
            self._watcher_poked = True
            self._deadlines_changed.set()

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
        work = self.work
        while True:
            if work:
                with anyio.CancelScope() as scope:
                    while work and not scope.cancel_called:
                        attempt = work.popleft()
                        self.wake()
                        await self._execute(attempt, scope)
                        del attempt
            else:
                wake = anyio.Event()
                self._idle.append(wake)
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
            self._watcher_poked = False
            with self._clock.deadline_scope(self._deadline_armed):
                await changed.wait()

    def _watch(self, attempt: Attempt, deadline: datetime) -> None:
        """Add the attempt's deadline; wake the watcher if it is the earliest."""
        heap = self._deadlines
        if len(heap) > 2 * self._core.active + 64:
            # Ended attempts whose entries are not on top: drop them all at once.
            heap[:] = [entry for entry in heap if entry[2].scope is not None]
            heapq.heapify(heap)
        heapq.heappush(heap, (deadline, next(self._seq), attempt))
        armed = self._deadline_armed
        if (armed is None or deadline < armed) and not self._watcher_poked:
            self._watcher_poked = True
            self._deadlines_changed.set()

    def _unwatch(self) -> None:
        """Drop ended attempts from the top of the deadlines (the timer stays armed
        while attempts run; :meth:`all_done` disarms it when none do)."""
        heap = self._deadlines
        while heap and heap[0][2].scope is None:
            heapq.heappop(heap)

    async def _execute(self, attempt: Attempt, scope: anyio.CancelScope) -> None:
        """Call the handler at its time, under ``scope`` (the worker's) and the
        attempt's deadline."""
        job, run = attempt.job, attempt.run
        log_runs = self._log_runs
        result: JobResult | None = None
        outcome: RunOutcome
        error: str | None = None
        cancelled = False
        started = time.perf_counter_ns() if log_runs else 0
        lateness_ms = 0.0  # stays 0 for an attempt cancelled before its handler was due
        tracer = self._tracer
        span: RunSpan | None = None
        attempt.scope = scope
        try:
            now = self._clock.now()
            if run.started_at > now and attempt.cancel_reason is None:
                # Started ahead: wait for run_at. Loop timers are rounded to the
                # millisecond and may fire early; a handler must never run early.
                while run.started_at > now:
                    await self._clock.sleep_until(run.started_at)
                    now = self._clock.now()
                started = time.perf_counter_ns() if log_runs else 0
            if attempt.time_limit is not None:
                # Invariant (issue 17, finding 3): an attempt's time limit runs from
                # the moment its handler starts, on every store; the time its start
                # checkpoint took to commit is not charged to the handler.
                attempt.deadline = now + attempt.time_limit
                self._watch(attempt, attempt.deadline)
            due = attempt.due
            if due is not None and now > due:
                # Whole microseconds over a millisecond: already what round(x, 3)
                # would log, without its decimal conversion.
                lateness_ms = (now - due) / _MILLISECOND
            self.lateness.append(lateness_ms)
            if log_runs:
                # log_keys' keys, spelled out: no dict to build and splat per line.
                self._log.info(
                    "run_started",
                    job_id=job.id,
                    job_type=job.job_type,
                    attempt=run.attempt,
                    lateness_ms=lateness_ms,
                )
            extras = job.extras
            trace_context = None if extras is None else extras.trace_context
            if tracer is not None:
                span = tracer.start(job, run, lateness_ms)
                trace_context = span.trace_context
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
                        f"{job.id}:extra:{run.id}" if attempt.triggered else job.idempotency_key
                    ),
                    deadline=attempt.deadline,
                    scheduled_for=run.scheduled_for,
                    log=AttemptLog(self._log, attempt),
                    run_id=run.id,
                    trace_context=trace_context,
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
                if span is not None:
                    span.end(None, "the engine stopped during the run", self._clock.now())
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
                error = _CANCEL_ERRORS.get(reason, reason)
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
                job_id=job.id,
                job_type=job.job_type,
                attempt=run.attempt,
                outcome=outcome._value_,
                lateness_ms=lateness_ms,
                duration_ms=round((time.perf_counter_ns() - started) / 1000) / 1000,
            )
        if span is not None:
            span.end(outcome, error, self._clock.now())
        self._core.finish(attempt, outcome, result, error)
