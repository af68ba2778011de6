"""Due work from a store this node owns alone: a window of pending jobs in memory.

The next ``window_size`` pending jobs (by run_at) are loaded into the core's timer
heap; when the heap runs dry and the store holds more, the next window is
loaded. Jobs that become pending inside the window stay in memory; later ones
wait in the store (they are on disk) until the window reaches them.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from anyio.abc import TaskGroup

from nexus_schedd.engine.recovery import CRASHED_HERE, crashed, recover_jobs
from nexus_schedd.engine.source import Writer
from nexus_schedd.model import Job, JobStatus, Run

if TYPE_CHECKING:
    from nexus_schedd.engine.core import EngineCore

HELD_BACK_RECHECK = timedelta(seconds=1)
"""While memory is full of held-back jobs, how often the loop looks for room."""


class LocalWindow:
    """The single-node :class:`~nexus_schedd.engine.source.DueWorkSource`."""

    writer: Writer | None = None
    """Checkpoints take the store's own write path."""
    running_row_at_start = False
    """Recovery reads the open runs: a start's running row may come later."""

    def __init__(self, core: EngineCore) -> None:
        self._core = core
        self._store = core.store
        self._end: tuple[datetime, str] | None = None
        """(run_at, id) of the window's last job; None when the window is empty."""
        self._complete = True
        """The window holds every pending job of the store."""
        self._waiting_for_room = False
        """The timers ran dry and the store holds more, but memory holds a whole
        window already (jobs collected as due and not started yet): the next
        load waits for them to start and end (see :meth:`fetch`)."""
        self._held_back = False
        """Memory filled up with jobs that wait for their type's limit or rate,
        and has not come down to a window since (logged once, as it began)."""

    async def start(self, tg: TaskGroup) -> None:
        """Recover from a crash, then load the first window."""
        await self._recover()
        await self._load(None, self._core.settings.window_size)

    async def _recover(self) -> None:
        """Close runs a crash left open (``crashed``, counted as an attempt) and put
        jobs left RUNNING back to pending by the retry rules."""
        core = self._core
        now = core.clock.now()
        open_runs = await self._store.open_runs()
        running = await self._store.jobs_in_status(JobStatus.RUNNING)
        if not open_runs and not running:
            return
        running += await self._started_unwritten(open_runs, {job.id for job in running})
        closed = [crashed(run, now, CRASHED_HERE) for run in open_runs]
        recovered = recover_jobs(running, open_runs, now, core.settings.defaults, core.rng)
        # Follow-ups and notifications of the crashed runs, in the same commit.
        added = core.reactions.crashes_closed(running, recovered, closed, now)
        core.log.warning(
            "recovered_after_crash", crashed_runs=len(closed), jobs=len(recovered), added=len(added)
        )
        await core.checkpoints.commit([*recovered, *added], closed)

    async def _started_unwritten(self, open_runs: list[Run], running: set[str]) -> list[Job]:
        """Jobs whose start was written and whose running version was not (the
        core leaves it to a later write, see ``EngineCore._started``): pending on
        disk with an open run of their current attempt, that is of the occurrence
        and retry the row holds. Returned as the running versions the process
        held (updated when the run started), so they are recovered like any
        other running job. An open run of another occurrence (one overtaken by
        overlap allow/replace, or a triggered extra run) is only closed."""
        store = self._store
        started: list[Job] = []
        for run in open_runs:
            if run.job_id in running:
                continue
            job = await store.get_job(run.job_id)
            if (
                job is not None
                and job.status is JobStatus.PENDING
                and run.scheduled_for == job.scheduled_for
                and run.attempt == job.retry_count + 1
            ):
                started.append(job.transition(JobStatus.RUNNING, run.started_at))
                running.add(job.id)
        return started

    async def fetch(self, now: datetime, free: int) -> bool:
        """Load the next window once the timers ran dry, the store holds more and
        memory has room for it (and forget the latest pending jobs when adds made
        memory too big).

        A load reads only what fits under ``memory_bound``, so it is never
        trimmed back: a load past the bound had the trim forget what it had just
        read, and the next turn read it again, for good while the jobs in memory
        could not start (docs/performance.md, stops 37 and 38).

        The timers run dry as soon as every job of the window is due, long before
        those jobs have run: a backlog (jobs due at once, more than a window of
        them) waits in the ready heap. While jobs are ready to start, a load waits
        until at most one window of pending jobs is in memory (they make room as
        they end). With none ready (every job held waits for its type's limit
        or rate), a load reads whatever fits, so jobs of other types behind them
        come in as soon as there is room; with no room it waits for some. In
        both cases each finished run wakes the loop to look again (``due_by``)."""
        core = self._core
        settings = core.settings
        # Pending jobs in memory: running ones are there too, one per slot in use.
        held = len(core.jobs) - core.active
        if held > settings.memory_bound:
            self._shrink()
            held = len(core.jobs) - core.active
        self._waiting_for_room = False
        if held <= settings.window_size:
            self._held_back = False
        if self._complete or core.next_timer() is not None:
            return False
        room = settings.memory_bound - held
        if room < 1 or (held > settings.window_size and core.ready):
            self._waiting_for_room = True
            if not core.ready and not self._held_back:
                self._held_back = True
                core.log.warning(
                    "window_full_of_held_back_jobs",
                    held=held,
                    memory_bound=settings.memory_bound,
                    hint="the pending jobs in memory all wait for their type's limit or rate;"
                    " jobs due after them are read from the store as these make room"
                    " (higher [limits] or [limits.rates] for their types start them sooner)",
                )
            return False
        await self._load(self._end, min(settings.window_size, room))
        return True

    async def _load(self, after: tuple[datetime, str] | None, size: int) -> None:
        """Load the next ``size`` pending jobs from the store into the heap.

        Invariant: a job that changes while the load flushes and reads is neither
        lost nor brought back. The read may return its older row, or miss its
        newer one (staged or written after the read began) while the window's
        end moves past it. So the core records what changed meanwhile
        (``EngineCore.changed``): a row of a changed job is not taken, and a job
        that became pending outside the old window is taken as it is now if it
        falls inside the new one (otherwise the next load reads it)."""
        core = self._core
        changed: dict[str, Job | None] = {}
        core.changed = changed
        try:
            await core.checkpoints.flush()
            jobs = await self._store.next_pending(after, size)
        finally:
            core.changed = None
        complete = len(jobs) < size
        end = (jobs[-1].run_at, jobs[-1].id) if jobs else None
        for job in jobs:
            if job.id not in core.jobs and job.id not in changed:
                core.jobs[job.id] = job
                assert job.run_at is not None
                core.arm(job.id, job.run_at)
        for newer in changed.values():
            if newer is None or newer.id in core.jobs:
                continue
            assert newer.run_at is not None
            if complete or (end is not None and (newer.run_at, newer.id) <= end):
                core.jobs[newer.id] = newer
                core.arm(newer.id, newer.run_at)
        self._complete = len(jobs) < size
        if jobs:
            last = jobs[-1]
            assert last.run_at is not None
            self._end = (last.run_at, last.id)
        elif after is None:
            self._end = None

    def _shrink(self) -> None:
        """Keep at most about ``memory_bound`` pending jobs in memory: beyond that,
        forget the latest (they are on disk) and narrow the window to match."""
        core = self._core
        size = core.settings.window_size
        if len(core.jobs) <= core.settings.memory_bound:
            return
        pending = [job for job in core.jobs.values() if job.status is JobStatus.PENDING]
        if len(pending) <= core.settings.memory_bound:
            return
        pending.sort(key=lambda job: (job.run_at, job.id))
        keep, drop = pending[:size], pending[size:]
        for job in drop:
            if job.id in core.triggers:
                continue
            core.forget(job.id)
        last = keep[-1]
        assert last.run_at is not None
        self._end = (last.run_at, last.id)
        self._complete = False

    def wake_at(self, can_take: bool) -> datetime | None:
        """While memory is full of jobs held back by their type's limit or rate, a
        second from now: room made without a finish (a cancel, a delete, a
        changed limit) is seen then. Otherwise never: every due time of the
        window is on the core's timers, and a finish wakes the loop."""
        if self._waiting_for_room and not self._core.ready:
            return self._core.clock.now() + HELD_BACK_RECHECK
        return None

    def due_by(self, horizon: datetime) -> bool:
        """While the next load waits for room (:meth:`fetch`): a finished run may
        have made it. Otherwise never: due work is on the core's timers already."""
        return self._waiting_for_room

    def keeps_pending(self, job: Job) -> bool:
        """Inside the window (or the window holds everything): on a timer."""
        end = self._end
        assert job.run_at is not None
        return self._complete or end is None or (job.run_at, job.id) <= end

    def known(self, job_id: str) -> Job | None:
        # Memory first: this node is the only writer, and every change is made in
        # memory before it is staged, so memory is never older than a staged row.
        core = self._core
        return core.jobs.get(job_id) or core.checkpoints.staged_job(job_id)

    async def take_for_trigger(self, job: Job) -> Job:
        """Nothing to claim: the job is this node's already."""
        return self._core.jobs.get(job.id, job)

    async def stop(self) -> None:
        """Nothing was taken from anyone."""

    def describe(self) -> tuple[datetime | None, dict[str, Any]]:
        return None, {}
