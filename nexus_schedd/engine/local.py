"""Due work from a store this node owns alone: a window of pending jobs in memory.

The next ``window_size`` pending jobs (by run_at) are loaded into the core's timer
heap; when the heap runs dry and the store holds more, the next window is
loaded. Jobs that become pending inside the window stay in memory; later ones
wait in the store (they are on disk) until the window reaches them. A job type
whose held-back backlog fills memory is parked: a few of its jobs stay in memory
and the rest are read on their own as those start, while the window reads past
the type (see :meth:`LocalWindow._park`).
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
"""While memory is full of held-back jobs that parking cannot thin out, how
often the loop looks for room."""
PARKED_SHARE = 100
"""A parked job type keeps ``window_size // PARKED_SHARE`` jobs in memory (1,000
at the daemon's window; at least twice its limit and its rate's count, at most
half the window, see :meth:`LocalWindow._keep`): a buffer for many starts
between reads, and few enough that counting them each loop turn
(:meth:`LocalWindow._in_memory`) costs little."""

Key = tuple[datetime, str]
"""A pending job's place in the window: (run_at, id)."""


def _key(job: Job) -> Key:
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
        self._held_back = False
        """Memory filled up with jobs that wait for their type's limit or rate
        and parking made no room, and it has not come down to a window since
        (logged once, as it began)."""
        self._parked: dict[str, Key] = {}
        """Parked job types (:meth:`_park`), each with the key of its last job in
        memory: its pending jobs up to that key are in memory, later ones wait in
        the store. Never past the window's end unless the window holds
        everything else."""
        self._kept: dict[str, set[str]] = {}
        """Per parked type, the ids of its jobs put in memory (those started or
        gone since are pruned when counted, :meth:`_in_memory`)."""

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
        """Read what parked types need, then load the next window once no timer
        is left inside the window, the store holds more and memory has room for
        it (and forget the latest pending jobs when adds made memory too big).

        A load reads only what fits under ``memory_bound``, so it is never
        trimmed back: a load past the bound had the trim forget what it had just
        read, and the next turn read it again, for good while the jobs in memory
        could not start (docs/performance.md, stops 37 and 38).

        The timers run dry as soon as every job of the window is due, long before
        those jobs have run: a backlog (jobs due at once, more than a window of
        them) waits in the ready heap. While jobs are ready to start, a load waits
        until at most one window of pending jobs is in memory (they make room as
        they end; each finished run wakes the loop to look again, ``due_by``).
        With none ready, every job in memory waits for its type's limit or rate:
        a load reads whatever fits, and when nothing fits the types holding
        memory are parked (:meth:`_park`), which makes room for the jobs of
        other types behind them (SPEC 15: other types are not held up by them).

        A load waits for the timers inside the window, not for every timer: a
        timer past the window's end (the overlap timer of a running job) must
        not keep the jobs due before it in the store."""
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
        reserved = 0
        if self._parked:
            read, reserved = await self._refill()
            if read:
                return True
        next_at = core.next_timer()
        end = self._end
        if self._complete or (next_at is not None and (end is None or next_at <= end[0])):
            return False
        room = settings.memory_bound - held - reserved
        if room < 1 and not core.ready:
            room += self._park()
        if room < 1 or (held > settings.window_size and core.ready):
            self._waiting_for_room = True
            if not core.ready and not self._held_back:
                self._held_back = True
                core.log.warning(
                    "window_full_of_held_back_jobs",
                    held=held,
                    memory_bound=settings.memory_bound,
                    hint="the pending jobs in memory all wait for their type's limit or rate,"
                    " spread over too many types to park; jobs due after them are read"
                    " from the store as these make room (higher [limits] or"
                    " [limits.rates] for their types start them sooner)",
                )
            return False
        await self._load(self._end, min(settings.window_size, room))
        return True

    def _keep(self, job_type: str) -> int:
        """How many jobs of a parked type stay in memory (read again at half):
        a hundredth of the window, and at least twice the type's limit and its
        rate's burst, so the slots it may take find its jobs in memory when
        they free together; at most half the window."""
        settings = self._core.settings
        window = settings.window_size
        wanted = window // PARKED_SHARE
        limit = settings.type_limits.get(job_type)
        if limit is not None:
            wanted = max(wanted, 2 * limit)
        rate = settings.type_rates.get(job_type)
        if rate is not None:
            wanted = max(wanted, 2 * rate.count)
        return max(1, min(wanted, window // 2))

    def _park(self) -> int:
        """Leave all but the first few jobs of each held-back type in the store.

        Called with memory full, no timer inside the window and no job ready to
        start: every pending job in memory waits for its type's limit or rate.
        Each type with a limit or a rate and more than its ``_keep`` jobs in
        memory keeps its first ``_keep`` (by run_at, id); the rest leave memory (they
        are on disk) and the window's loads read past the type from now on. Its
        later jobs are read by :meth:`_refill` as these start. Returns how many
        jobs left memory."""
        core = self._core
        settings = core.settings
        by_type: dict[str, list[Job]] = {}
        for job in core.jobs.values():
            job_type = job.job_type
            if (
                job.status is JobStatus.PENDING
                and job_type not in self._parked
                and (job_type in settings.type_limits or job_type in settings.type_rates)
            ):
                by_type.setdefault(job_type, []).append(job)
        left = 0
        for job_type, jobs in by_type.items():
            keep = self._keep(job_type)
            if len(jobs) <= keep:
                continue
            jobs.sort(key=_key)
            for job in jobs[keep:]:
                if job.id not in core.triggers:  # a trigger's caller waits for its start
                    core.forget(job.id)
                    left += 1
            core.drop_stale_held(job_type)
            self._parked[job_type] = _key(jobs[keep - 1])
            self._kept[job_type] = {job.id for job in jobs[:keep]}
            core.log.warning(
                "job_type_parked",
                job_type=job_type,
                in_memory=keep,
                left_in_store=len(jobs) - keep,
                hint="its due jobs wait for its [limits] or [limits.rates] entry; they wait"
                " in the store and are read as these start, and jobs of other types are"
                " read past them",
            )
        return left

    def _in_memory(self, job_type: str) -> int:
        """How many pending jobs of a parked type are in memory (exact: a job
        started, cancelled or moved past the type's last key is no longer
        counted). Costs a look-up per job kept, ``window_size / PARKED_SHARE`` at most
        but for adds."""
        kept = self._kept[job_type]
        jobs = self._core.jobs
        gone = [
            job_id
            for job_id in kept
            if (job := jobs.get(job_id)) is None or job.status is not JobStatus.PENDING
        ]
        kept.difference_update(gone)
        return len(kept)

    async def _refill(self) -> tuple[bool, int]:
        """Read the next jobs of each parked type down to half its share in
        memory, whatever else is ready (a parked type of high priority must not
        wait behind the ready jobs of other types). A read never goes past the
        window's end: a job there would be on a timer the window has not
        reached. A type whose jobs up to the window's end are all in memory is
        parked no more. Returns whether anything was read, and the memory the
        parked types may still take (kept free by the window's loads)."""
        read = False
        reserved = 0
        for job_type, after in list(self._parked.items()):
            keep = self._keep(job_type)
            count = self._in_memory(job_type)
            if count > keep // 2:
                reserved += keep - count if count < keep else 0
                continue
            read = await self._read_type(job_type, after, keep - count) or read
        return read, reserved

    async def _read_type(self, job_type: str, after: Key, size: int) -> bool:
        """Read up to ``size`` jobs of a parked type after ``after``, up to the
        window's end; unpark the type when that reaches the end. True when the
        store returned anything."""
        core = self._core
        bound = None if self._complete else self._end
        jobs, changed = await self._read(after, size, only_type=job_type)
        inside = [job for job in jobs if bound is None or _key(job) <= bound]
        kept = self._kept[job_type]
        for job in inside:
            if job.id not in core.jobs and job.id not in changed:
                self._take(job)
                kept.add(job.id)
        last: Key | None
        if len(inside) == size:
            last = self._parked[job_type] = _key(inside[-1])
        else:
            # Every job of the type up to the window's end is in memory: the
            # window takes the type again from here.
            last = bound
            del self._parked[job_type], self._kept[job_type]
            core.log.info("job_type_unparked", job_type=job_type)
        for newer in changed.values():
            if newer is None or newer.job_type != job_type or newer.id in core.jobs:
                continue
            if last is None or _key(newer) <= last:
                self._take(newer)
                if job_type in self._kept:
                    kept.add(newer.id)
        return bool(jobs)

    async def _read(
        self, after: Key | None, size: int, *, only_type: str | None = None
    ) -> tuple[list[Job], dict[str, Job | None]]:
        """Read the next ``size`` pending jobs after ``after`` from the store, of
        ``only_type`` or else of no parked type, with the jobs that changed
        meanwhile.

        Invariant: a job that changes while the read flushes and reads is
        neither lost nor brought back. The read may return its older row, or
        miss its newer one (staged or written after the read began) while the
        window's end moves past it. So the core records what changed meanwhile
        (``EngineCore.changed``): the caller takes no row of a changed job, and
        takes a job that became pending outside the old window as it is now if
        it falls inside the new one (otherwise the next read reads it)."""
        core = self._core
        changed: dict[str, Job | None] = {}
        core.changed = changed
        try:
            await core.checkpoints.flush()
            jobs = await self._store.next_pending(
                after,
                size,
                only_type=only_type,
                skip_types=() if only_type is not None else tuple(self._parked),
            )
        finally:
            core.changed = None
        return jobs, changed

    def _take(self, job: Job) -> None:
        """Put a pending job read from the store on the core's timers."""
        core = self._core
        core.jobs[job.id] = job
        assert job.run_at is not None
        core.arm(job.id, job.run_at)

    async def _load(self, after: Key | None, size: int) -> None:
        """Load the next ``size`` pending jobs from the store into the heap (none
        of a parked type: those are read by :meth:`_refill`), as :meth:`_read`
        says."""
        core = self._core
        jobs, changed = await self._read(after, size)
        complete = len(jobs) < size
        end = _key(jobs[-1]) if jobs else None
        for job in jobs:
            if job.id not in core.jobs and job.id not in changed:
                self._take(job)
        parked = self._parked
        for newer in changed.values():
            # A parked type's job placed during the read fell past its last key
            # (up to it, it stayed in memory): it waits for the type's read.
            if newer is None or newer.id in core.jobs or newer.job_type in parked:
                continue
            if complete or (end is not None and _key(newer) <= end):
                self._take(newer)
        self._complete = complete
        if end is not None:
            self._end = end
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
        pending.sort(key=_key)
        keep, drop = pending[:size], pending[size:]
        for job in drop:
            if job.id in core.triggers:
                continue
            core.forget(job.id)
        self._end = end = _key(keep[-1])
        self._complete = False
        for job_type, last in self._parked.items():
            # The type's jobs past the new end left memory too.
            self._parked[job_type] = min(last, end)

    def wake_at(self, can_take: bool) -> datetime | None:
        """While memory is full of jobs held back by their type's limit or rate
        and parking made no room, a second from now: room made without a
        finish (a cancel, a delete, a changed limit) is seen then. Otherwise
        never: every due time of the window is on the core's timers, and a
        finish wakes the loop."""
        if self._waiting_for_room and not self._core.ready:
            return self._core.clock.now() + HELD_BACK_RECHECK
        return None

    def due_by(self, horizon: datetime) -> bool:
        """While the next load waits for room (:meth:`fetch`), or a type is
        parked: a finished run may have made room, or left the parked type
        with few jobs in memory (:meth:`_refill`). Otherwise never: due work is
        on the core's timers already."""
        return self._waiting_for_room or bool(self._parked)

    def keeps_pending(self, job: Job) -> bool:
        """Inside the window (or the window holds everything), or for a parked
        type up to its last job in memory: on a timer."""
        key = _key(job)
        if self._parked:
            last = self._parked.get(job.job_type)
            if last is not None:
                if key <= last:
                    self._kept[job.job_type].add(job.id)
                    return True
                return False
        end = self._end
        return self._complete or end is None or key <= end

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
        """Extra: the parked job types, while there are any."""
        return None, {"parked_types": sorted(self._parked)} if self._parked else {}
