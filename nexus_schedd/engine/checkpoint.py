"""Group commit of the engine's state changes: many jobs and runs, one store write."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

import anyio
import anyio.lowlevel
from anyio.abc import TaskStatus

from nexus_schedd.errors import SchedulerError, StoreError
from nexus_schedd.model import Job, Run
from nexus_schedd.store.base import Store

DurableCallback = Callable[[BaseException | None], None]
"""Called once a staged change is on disk (None) or its write failed (the error)."""

RETRY_AFTER_FAILURE_S = 1.0

Writer = Callable[[Sequence[Job], Sequence[Run]], Awaitable[None]]
"""How a batch reaches the store (default ``store.write``; shared mode fences leased jobs)."""


class _Batch:
    """Everything staged between two writes, and who waits for it."""

    __slots__ = ("callbacks", "done", "error")

    def __init__(self) -> None:
        self.done = anyio.Event()
        self.error: BaseException | None = None
        self.callbacks: list[DurableCallback] = []


class Checkpointer:
    """Collects job and run rows and writes them in as few transactions as possible.

    Whatever is staged while a write is in flight goes into the next write, so
    under load one fsync carries hundreds of changes (group commit) without a
    timer: an idle engine never wakes for it. The newest version of a row wins.
    ``on_write`` is called as each write takes what was staged, so the engine can
    stage the next batch while this one is written.
    """

    def __init__(
        self,
        store: Store,
        log: Any,
        writer: Writer | None = None,
        on_write: Callable[[], None] | None = None,
    ) -> None:
        self._store = store
        self._writer: Writer = writer if writer is not None else store.write
        self._log = log
        self._jobs: dict[str, Job] = {}
        self._runs: dict[str, Run] = {}
        self._in_flight: dict[str, Job] = {}
        self._batch = _Batch()
        self._wake = anyio.Event()
        self._writing = False
        self._on_write = on_write

    def stage(
        self,
        jobs: Iterable[Job] = (),
        runs: Iterable[Run] = (),
        on_durable: DurableCallback | None = None,
    ) -> None:
        """Queue rows for the next write; ``on_durable`` hears how it went."""
        for job in jobs:
            self._jobs[job.id] = job
        for run in runs:
            self._runs[run.id] = run
        if on_durable is not None:
            self._batch.callbacks.append(on_durable)
        self._wake.set()

    async def commit(self, jobs: Iterable[Job] = (), runs: Iterable[Run] = ()) -> None:
        """Stage rows and return once they (and everything staged before) are on disk."""
        batch = self._batch
        self.stage(jobs, runs)
        await batch.done.wait()
        if batch.error is not None:
            if isinstance(batch.error, SchedulerError):
                raise batch.error
            raise StoreError(f"checkpoint failed: {batch.error}") from batch.error

    async def flush(self) -> None:
        """Return once everything staged so far is on disk."""
        if self._jobs or self._runs or self._writing or self._batch.callbacks:
            await self.commit()

    def staged_job(self, job_id: str) -> Job | None:
        """The newest version of a job that is staged or being written, if any."""
        return self._jobs.get(job_id) or self._in_flight.get(job_id)

    @property
    def pending(self) -> int:
        """Rows waiting for the next write."""
        return len(self._jobs) + len(self._runs)

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Write staged rows until cancelled."""
        task_status.started()
        while True:
            if not self._wake.is_set():
                await self._wake.wait()
                # One yield lets every task made ready in this loop turn (workers
                # finishing, the dispatcher starting a batch) stage first.
                await anyio.lowlevel.checkpoint()
            # Rows staged while the last write was in flight (or by its callbacks)
            # go at once: waiting a turn would let the handlers that write just made
            # durable run first, and the disk would sit idle meanwhile.
            self._wake = anyio.Event()
            jobs, runs, batch = self._jobs, self._runs, self._batch
            self._jobs, self._runs, self._batch = {}, {}, _Batch()
            self._in_flight = jobs
            self._writing = True
            if self._on_write is not None:
                self._on_write()
            try:
                if jobs or runs:
                    await self._writer(list(jobs.values()), list(runs.values()))
            except Exception as exc:
                batch.error = exc
                self._log.error("checkpoint_failed", error=str(exc), jobs=len(jobs), runs=len(runs))
                # Keep the rows: a newer staged version wins, the rest are retried.
                for job_id, job in jobs.items():
                    self._jobs.setdefault(job_id, job)
                for run_id, run in runs.items():
                    self._runs.setdefault(run_id, run)
            finally:
                self._in_flight = {}
                self._writing = False
            batch.done.set()
            for callback in batch.callbacks:
                callback(batch.error)
            if batch.error is not None:
                await anyio.sleep(RETRY_AFTER_FAILURE_S)
                self._wake.set()
