"""Group commit of the engine's state changes: many jobs and runs, one store write."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

import anyio
import anyio.lowlevel
from anyio.abc import TaskStatus

from nexus_schedd.clock import Clock, SystemClock
from nexus_schedd.errors import SchedulerError, StoreError
from nexus_schedd.model import Job, Run
from nexus_schedd.store.base import StagedWrites, Store

DurableCallback = Callable[[BaseException | None], None]
"""Called once a staged change is on disk (None) or its write failed (the error)."""

RETRY_AFTER_FAILURE = timedelta(seconds=1)
"""After a failed write, the pause before the next write (on the engine's Clock)."""

Writer = Callable[[Sequence[Job], Sequence[Run]], Awaitable[None]]
"""A write of job and run objects (shared mode's writer fences leased jobs)."""


class _Batch:
    """Everything staged between two writes, and who waits for it."""

    __slots__ = ("awaited", "behind_retry", "callbacks", "done", "error", "jobs", "number")

    def __init__(self) -> None:
        self.done = anyio.Event()
        self.error: BaseException | None = None
        self.callbacks: list[DurableCallback] = []
        self.awaited = False
        """Someone waits for it to be written (:meth:`Checkpointer.commit`), even empty."""
        self.number = 0
        """Its place in the order of writes (set when a write takes it)."""
        self.jobs: dict[str, Job] = {}
        """The jobs it writes (while in flight, for :meth:`Checkpointer.staged_job`)."""
        self.behind_retry = False
        """A write taken before it failed after it was taken: that write's rows
        are staged again, so "everything staged before" is not on disk with it."""


class Checkpointer:
    """Collects job and run rows and writes them in as few transactions as possible.

    Whatever is staged while a write is in flight goes into the next write, so
    under load one fsync carries hundreds of changes (group commit) without a
    timer: an idle engine never wakes for it. The newest version of a row wins.

    ``commit_interval`` bounds how long rows that nobody waits for (finished
    runs, a job's next state) may wait for company while the store could take
    them: they go with the next start batch or awaited change if one comes
    within it, else when it ends, so a trickle of finishes does not cost one
    fsync each. Rows someone waits for (``commit``, a start's ``on_durable``)
    end that wait at once. Zero writes everything at once.
    ``on_write`` is called as each write takes what was staged, so the engine can
    stage the next batch while this one is written. Versions a newer one will
    most likely replace soon (a start's running job) can be staged lazily: they
    wait one write, so a fast run's job row is written once, as it ended.

    How rows reach the store, in order of preference: a custom ``writer`` gets
    the objects; a store with :class:`~nexus_schedd.store.base.StagedWrites`
    gets rows encoded as they are staged (while the previous write is in flight)
    and up to its ``writes_in_flight`` writes at once, so a store that applies
    writes in order (SQLite's writer process) gets the next write while it still
    commits the previous one; any other store gets :meth:`Store.write`, one at a
    time. Writes are reported (``on_durable``, ``commit``) in the order they
    were taken.
    """

    def __init__(
        self,
        store: Store,
        log: Any,
        writer: Writer | None = None,
        on_write: Callable[[], None] | None = None,
        clock: Clock | None = None,
        commit_interval: timedelta = timedelta(0),
    ) -> None:
        self._write: Callable[[Sequence[Any], Sequence[Any]], Awaitable[None]]
        self._encode_job: Callable[[Job], Any] = _same
        self._encode_run: Callable[[Run], Any] = _same
        self._writers = 1
        if writer is not None:
            self._write = writer
        elif isinstance(store, StagedWrites):
            self._write = store.write_encoded
            self._encode_job, self._encode_run = store.encode_job, store.encode_run
            # The store owns the bound (its pipeline depth); one write task each.
            self._writers = store.writes_in_flight
        else:
            self._write = store.write
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._log = log
        self._jobs: dict[str, Job] = {}
        self._lazy: dict[str, Job] = {}
        """Versions staged lazily, not yet passed over by a write (:meth:`stage_lazily`)."""
        self._job_rows: dict[str, Any] = {}
        """Each staged job's row, encoded as staged; None for one staged lazily
        (encoded from ``_jobs`` when a write takes it)."""
        self._run_rows: dict[str, Any] = {}
        self._batch = _Batch()
        self._wake = anyio.Event()
        self._on_write = on_write
        self._in_flight: list[_Batch] = []
        """Batches taken by a write and not yet reported, oldest first."""
        self._taken = 0
        self._reported = 0
        self._turn = anyio.Event()
        """Set (and replaced) whenever a batch is reported."""
        self._paused_until: datetime | None = None
        """After a failed write, no write starts before this (on the Clock)."""
        self._commit_interval = commit_interval
        self._first_staged_at: datetime | None = None
        """When the oldest row of the current batch was staged (with an interval)."""
        self._awaited = anyio.Event()
        """Set when someone waits for the current batch: the interval's wait ends."""

    def stage(
        self,
        jobs: Iterable[Job] = (),
        runs: Iterable[Run] = (),
        on_durable: DurableCallback | None = None,
    ) -> None:
        """Queue rows for the next write; ``on_durable`` hears how it went."""
        encode_job, encode_run = self._encode_job, self._encode_run
        if self._commit_interval and self._first_staged_at is None:
            self._first_staged_at = self._clock.now()
        lazy = self._lazy
        for job in jobs:
            self._jobs[job.id] = job
            self._job_rows[job.id] = encode_job(job)
            if lazy:
                lazy.pop(job.id, None)  # replaced by a newer version
        for run in runs:
            self._run_rows[run.id] = encode_run(run)
        if on_durable is not None:
            self._batch.callbacks.append(on_durable)
            self._awaited.set()
        self._wake.set()

    def stage_lazily(self, jobs: Iterable[Job]) -> None:
        """Queue job versions that a newer one will most likely replace soon (a
        start's running version, which the run's finish replaces).

        They skip the next write taken (which may be taken in this very turn of
        the loop, before any handler ran) and go with the one after, if still
        the newest version then: a run that ends in between has its job row
        written once, as it ended. Nothing is woken for them; ``commit`` and
        ``flush`` write them at once.
        """
        lazy = self._lazy
        for job in jobs:
            lazy[job.id] = job

    async def commit(self, jobs: Iterable[Job] = (), runs: Iterable[Run] = ()) -> None:
        """Stage rows and return once they (and everything staged before) are on disk."""
        batch = self._batch
        batch.awaited = True
        self._awaited.set()
        self._promote_lazy()
        self.stage(jobs, runs)
        await batch.done.wait()
        if batch.error is not None:
            if isinstance(batch.error, SchedulerError):
                raise batch.error
            raise StoreError(f"checkpoint failed: {batch.error}") from batch.error
        if batch.behind_retry:
            # An earlier write failed after this one was taken: its rows went
            # into a later write, which this wait covers too.
            await self.commit()

    async def flush(self) -> None:
        """Return once everything staged so far is on disk."""
        if self._jobs or self._run_rows or self._lazy or self._in_flight or self._batch.callbacks:
            await self.commit()

    def staged_job(self, job_id: str) -> Job | None:
        """The newest version of a job that is staged or being written, if any."""
        job = self._lazy.get(job_id) or self._jobs.get(job_id)
        if job is None:
            for batch in reversed(self._in_flight):
                job = batch.jobs.get(job_id)
                if job is not None:
                    break
        return job

    @property
    def pending(self) -> int:
        """Rows waiting for the next write."""
        return len(self._jobs) + len(self._run_rows)

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Write staged rows until cancelled."""
        async with anyio.create_task_group() as tg:
            for number in range(self._writers):
                tg.start_soon(self._write_staged, name=f"checkpoint write {number}")
            task_status.started()

    def _has_staged(self) -> bool:
        batch = self._batch
        return bool(self._jobs or self._run_rows or batch.callbacks or batch.awaited)

    async def _write_staged(self) -> None:
        """One of the store's writes in flight: take what is staged, write it, report."""
        while True:
            if not self._wake.is_set():
                await self._wake.wait()
                # One yield lets every task made ready in this loop turn (workers
                # finishing, the dispatcher starting a batch) stage first.
                await anyio.lowlevel.checkpoint()
            if not self._has_staged():
                # Another write took it: wait for more.
                if self._wake.is_set():
                    self._wake = anyio.Event()
                continue
            paused_until = self._paused_until
            if paused_until is not None:
                if self._clock.now() < paused_until:
                    await self._clock.sleep_until(paused_until)
                    continue
                self._paused_until = None
            if await self._waited_for_company():
                continue
            # Rows staged while the last write was in flight (or by its callbacks)
            # go at once: waiting a turn would let the handlers that write just made
            # durable run first, and the disk would sit idle meanwhile.
            self._wake = anyio.Event()
            jobs, job_rows, run_rows, batch = (
                self._jobs,
                self._job_rows,
                self._run_rows,
                self._batch,
            )
            self._jobs, self._job_rows, self._run_rows, self._batch = {}, {}, {}, _Batch()
            # Passed over by this write: they go with the next one.
            self._promote_lazy()
            self._first_staged_at = None
            if self._awaited.is_set():
                self._awaited = anyio.Event()
            batch.jobs, batch.number = jobs, self._taken
            self._taken += 1
            self._in_flight.append(batch)
            if self._on_write is not None:
                self._on_write()
            try:
                if job_rows or run_rows:
                    encode = self._encode_job
                    rows = [
                        encode(jobs[job_id]) if row is None else row
                        for job_id, row in job_rows.items()
                    ]
                    await self._write(rows, list(run_rows.values()))
            except Exception as exc:
                batch.error = exc
                self._log.error(
                    "checkpoint_failed", error=str(exc), jobs=len(job_rows), runs=len(run_rows)
                )
                self._keep_for_retry(batch, job_rows, run_rows)
            if batch.error is not None:
                # Retried once the pause is over, by whichever write comes first.
                self._paused_until = self._clock.now() + RETRY_AFTER_FAILURE
                self._wake.set()
            await self._report(batch)

    def _promote_lazy(self) -> None:
        """Stage the lazily staged versions for the next write (encoded when a
        write takes them, if no newer version replaced them by then)."""
        if self._lazy:
            for job_id, job in self._lazy.items():
                self._jobs[job_id] = job
                self._job_rows[job_id] = None
            self._lazy = {}

    async def _waited_for_company(self) -> bool:
        """Within the commit interval, wait for rows someone waits for (or the
        interval's end) before writing rows nobody waits for; True if it waited."""
        batch, since = self._batch, self._first_staged_at
        if since is None or batch.callbacks or batch.awaited:
            return False
        until = since + self._commit_interval
        if self._clock.now() >= until:
            return False
        with self._clock.deadline_scope(until):
            await self._awaited.wait()
        return True

    def _keep_for_retry(
        self, batch: _Batch, job_rows: dict[str, Any], run_rows: dict[str, Any]
    ) -> None:
        """Stage a failed write's rows again, except where a newer version of the
        row is staged or in a later write."""
        later = [b for b in self._in_flight if b.number > batch.number]
        for b in later:
            b.behind_retry = True
        for job_id, job in batch.jobs.items():
            newer = job_id in self._jobs or job_id in self._lazy
            if not newer and not any(job_id in b.jobs for b in later):
                self._jobs[job_id] = job
                self._job_rows[job_id] = job_rows[job_id]
        for run_id, row in run_rows.items():
            self._run_rows.setdefault(run_id, row)

    async def _report(self, batch: _Batch) -> None:
        """Tell the batch's waiters and callbacks how its write went, after every
        batch taken before it (shielded: a report must not be skipped)."""
        with anyio.CancelScope(shield=True):
            while self._reported != batch.number:
                turn = self._turn
                await turn.wait()
        self._in_flight.remove(batch)
        self._reported += 1
        self._turn.set()
        self._turn = anyio.Event()
        batch.done.set()
        for callback in batch.callbacks:
            callback(batch.error)


def _same(item: Any) -> Any:
    """The encoding for a custom writer: the object itself."""
    return item
