"""Due work from a store this node owns alone: a window of pending jobs in memory.

The next ``window_size`` pending jobs (by run_at) are loaded into the core's timer
heap; when the heap runs dry and the store holds more, the next window is
loaded. Jobs that become pending inside the window stay in memory; later ones
wait in the store (they are on disk) until the window reaches them.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from anyio.abc import TaskGroup

from nexus_schedd.engine.attempts import Attempt
from nexus_schedd.engine.recovery import CRASHED_HERE, crashed, recover_jobs
from nexus_schedd.engine.source import Writer
from nexus_schedd.model import Job, JobStatus, Run

if TYPE_CHECKING:
    from nexus_schedd.engine.core import EngineCore

PARKED_SHARE = 10
"""A parked job type keeps ``window_size // PARKED_SHARE`` due jobs in memory."""


def _window_key(job: Job) -> tuple[datetime, str]:
    """A pending job's place in the window: (run_at, id)."""
    assert job.run_at is not None
    return job.run_at, job.id


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
        self._reading = 0
        """Store reads in flight (see :meth:`_read`)."""
        self._parked: dict[str, tuple[datetime, str]] = {}
        """Job types whose backlog waits in the store for their limit or rate:
        the (run_at, id) of the last of their pending jobs in memory. The
        window's loads read past these types; each is read on its own as its
        jobs start (see :meth:`_park`)."""

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
        read, and the next turn read it again (docs/performance.md, stops 37
        and 38).

        The timers run dry as soon as every job of the window is due, long before
        those jobs have run: a backlog (jobs due at once, more than a window of
        them) waits in the ready heap. While jobs are ready to start, a load waits
        until at most one window of pending jobs is in memory (they make room as
        they end; each finished run wakes the loop to look again, ``due_by``).
        When memory is full and none is ready, every job in it waits for its
        type's limit or rate: those types are parked (:meth:`_park`), which makes
        room for the jobs of other types behind them (SPEC 15: other types are
        not held up by them)."""
        core = self._core
        settings = core.settings
        # Pending jobs in memory: running ones are there too, one per slot in use.
        held = len(core.jobs) - core.active
        if held > settings.memory_bound:
            self._shrink()
            held = len(core.jobs) - core.active
        self._waiting_for_room = False
        if self._parked and not core.ready and await self._refill(now):
            return True
        if self._complete or core.next_timer() is not None:
            return False
        room = settings.memory_bound - held
        if room < 1 and not core.ready:
            room += self._park()
        if room < 1 or (held > settings.window_size and core.ready):
            self._waiting_for_room = True
            return False
        await self._load(self._end, min(settings.window_size, room))
        return True

    @property
    def _keep(self) -> int:
        """How many due jobs of a parked type stay in memory (refilled at half)."""
        return max(1, self._core.settings.window_size // PARKED_SHARE)

    def _park(self) -> int:
        """Leave all but the first few due jobs of each held-back type in the store.

        Called with memory full and no job ready to start: every pending job in
        memory waits for its type's limit or rate. Each such type keeps its
        first ``_keep`` jobs in memory, and the window's loads read past the
        type from now on; its later jobs are read by :meth:`_refill` as these
        start. Returns how many jobs left memory."""
        core = self._core
        held = core.held_back()
        keep = self._keep
        parked: dict[str, list[Job]] = {t: [] for t, count in held.items() if count > keep}
        if not parked:
            return 0
        for job in core.jobs.values():
            if job.status is JobStatus.PENDING and job.job_type in parked:
                parked[job.job_type].append(job)
        left = 0
        for job_type, jobs in parked.items():
            if len(jobs) <= keep:
                continue
            jobs.sort(key=_window_key)
            for job in jobs[keep:]:
                if job.id not in core.triggers:
                    core.forget(job.id)
                    left += 1
            core.drop_stale_held(job_type)
            self._parked[job_type] = _window_key(jobs[keep - 1])
            core.log.warning(
                "job_type_parked",
                job_type=job_type,
                in_memory=keep,
                left_in_store=len(jobs) - keep,
                hint="its due jobs wait for its [limits] or [limits.rates] entry; they"
                " wait in the store and are read as these start, and jobs of other"
                " types are read past them",
            )
        return left

    async def _refill(self, now: datetime) -> bool:
        """Read the next due jobs of each parked type that has few left in memory;
        a type whose backlog in the store ended (or is not due yet) is parked
        no more. True when anything was read."""
        core = self._core
        held = core.held_back()
        keep = self._keep
        horizon = now + core.start_ahead
        read = False
        for job_type, after in list(self._parked.items()):
            if held.get(job_type, 0) > keep // 2:
                continue
            jobs = await self._read(after, keep, only_type=job_type)
            read = read or bool(jobs)
            last = _window_key(jobs[-1]) if jobs else after
            assert last[0] is not None
            if len(jobs) == keep and last[0] <= horizon:
                self._parked[job_type] = last
                continue
            # Every due job of the type is in memory now: the window takes the
            # type again. Later ones (not due yet) may wait in the store: the
            # next loads read them, from the last one read if the window's end
            # is past it.
            del self._parked[job_type]
            if len(jobs) == keep:
                self._complete = False
                if self._end is not None and last < self._end:
                    self._end = last
            core.log.info("job_type_unparked", job_type=job_type)
        return read

    async def _read(
        self,
        after: tuple[datetime, str] | None,
        size: int,
        *,
        only_type: str | None = None,
        skip_types: frozenset[str] = frozenset(),
    ) -> list[Job]:
        """Read pending jobs from the store (what was staged, written first) and
        put them on the core's timers; those in memory already are newer there.

        A job placed while the read is in flight stays in memory wherever it
        falls (``keeps_pending``): the read may not see it, and the window's
        end moves past it when the read returns."""
        core = self._core
        self._reading += 1
        try:
            await core.checkpoints.flush()
            jobs = await self._store.next_pending(
                after, size, only_type=only_type, skip_types=skip_types
            )
        finally:
            self._reading -= 1
        for job in jobs:
            if job.id not in core.jobs:
                core.jobs[job.id] = job
                assert job.run_at is not None
                core.arm(job.id, job.run_at)
        return jobs

    async def _load(self, after: tuple[datetime, str] | None, size: int) -> None:
        """Load the next ``size`` pending jobs from the store into the heap (none
        of a parked type: those are read by :meth:`_refill`)."""
        jobs = await self._read(after, size, skip_types=frozenset(self._parked))
        self._complete = len(jobs) < size
        if jobs:
            self._end = _window_key(jobs[-1])
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
        self._end = end = _window_key(keep[-1])
        self._complete = False
        for job_type, parked_at in self._parked.items():
            # Jobs of the type after the new end left memory too.
            self._parked[job_type] = min(parked_at, end)

    def wake_at(self, can_take: bool) -> datetime | None:
        """Never: every due time of the window is on the core's timers."""
        return None

    def due_by(self, horizon: datetime) -> bool:
        """While the next load waits for room (:meth:`fetch`): a finished run may
        have made it. Otherwise never: due work is on the core's timers already."""
        return self._waiting_for_room

    def keeps_pending(self, job: Job) -> bool:
        """Inside the window (or the window holds everything), or for a parked
        type no later than its last job in memory: on a timer."""
        assert job.run_at is not None
        if self._reading:
            return True
        if self._parked:
            parked_at = self._parked.get(job.job_type)
            if parked_at is not None:
                return (job.run_at, job.id) <= parked_at
        end = self._end
        return self._complete or end is None or (job.run_at, job.id) <= end

    def known(self, job_id: str) -> Job | None:
        # Memory first: this node is the only writer, and every change is made in
        # memory before it is staged, so memory is never older than a staged row.
        core = self._core
        return core.jobs.get(job_id) or core.checkpoints.staged_job(job_id)

    async def take_for_trigger(self, job: Job) -> Job:
        """Nothing to claim: the job is this node's already."""
        return self._core.jobs.get(job.id, job)

    def start_failed(
        self, attempt: Attempt, now: datetime, error: BaseException, *, unchanged: bool
    ) -> None:
        """Nothing more: the job is pending again in memory; the open run (if the
        start committed after all) is closed by the next start's recovery."""

    async def stop(self) -> None:
        """Nothing was taken from anyone."""

    def describe(self) -> tuple[datetime | None, dict[str, Any]]:
        return None, {"parked_types": sorted(self._parked)} if self._parked else {}
