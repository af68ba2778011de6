"""Shared mode: several engines (nodes) on one :class:`ClaimingStore` (PostgreSQL).

The store is the schedule; a node's memory holds only what it claimed. The
scheduler sleeps until the store's earliest due run_at (``next_due_at``), the
next lease expiry (a take-over may be due), an overlap timer of its own running
jobs, or the safety re-check, whichever comes first; notifications from the
store (``listen``) wake it when any node adds a job or moves one earlier.

Awake, it claims due jobs up to its free slots (``claim_due``: priority, then
run_at, ``FOR UPDATE SKIP LOCKED``) and runs them through the single-node
dispatch, workers and policies. Claimed jobs are checkpointed with
``write_leased``, so a node that lost a lease cannot overwrite the new owner.
Leases are renewed every ``lease_s / 3`` while this node holds any; a renewal
or write that the store refuses means another node changed the job (cancel,
pause, take-over): the local attempt is cancelled and nothing more is recorded
for the job. See docs/multi-node.md for the guarantees.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import anyio

from nexus_schedd.clock import Clock
from nexus_schedd.engine.checkpoint import Checkpointer
from nexus_schedd.engine.engine import TRIGGER_PRIORITY, Engine, _Attempt
from nexus_schedd.engine.service import EngineStatus
from nexus_schedd.engine.settings import EngineSettings
from nexus_schedd.errors import InvalidJobState, StoreError
from nexus_schedd.handlers.registry import HandlerRegistry
from nexus_schedd.model import Job, JobStatus, Run, RunOutcome
from nexus_schedd.store.base import ClaimingStore, Store, StoreWakeup

TAKE_OVER_BATCH = 500
"""Expired leases taken over per transaction."""

LEASE_LOST = "lease lost: another node changed or took over this job"


class SharedEngine(Engine):
    """The engine in shared mode (multi-node); see the module docstring.

    Used instead of :class:`Engine` when the store is a :class:`ClaimingStore`
    (:func:`engine_for`). Control operations work on the shared state: reads go
    to the store, changes are written through it and announced to every node.
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
        if not isinstance(store, ClaimingStore):
            raise TypeError("SharedEngine needs a store with the multi-node primitives")
        super().__init__(store, registry, clock, settings, log=log, rng=rng)
        self._claiming: ClaimingStore = store
        self._ckpt = Checkpointer(
            store, self._log, writer=self._write_shared, on_write=self._write_begun
        )
        self._leased: set[str] = set()
        """Jobs this node holds a lease on (claimed, running, or being written)."""
        self._leases_held = anyio.Event()
        self._due_at: datetime | None = None
        """The store's earliest pending run_at as last read or announced."""
        self._announced: datetime | None = None
        """The earliest run_at announced (an add here, a notification) since the
        last read of ``next_due_at`` began (see :meth:`_read_due_at`)."""
        self._takeover_at: datetime | None = None
        self._recheck_at: datetime | None = None
        self._reread = True

    # -- start-up: take over instead of single-node recovery ------------------------

    async def _recover(self) -> None:
        """Leases of dead nodes (ours from a previous process included) that expired."""
        await self._take_over(self._clock.now())

    async def _load_window(self, after: tuple[datetime, str] | None) -> None:
        # No window: pending jobs stay in the store until this node claims them.
        self._window_complete = True
        self._window_end = None
        self._reread = True

    # -- the scheduler loop ---------------------------------------------------------

    async def _schedule_loop(self) -> None:
        async with anyio.create_task_group() as tg:
            await tg.start(self._claiming.listen, self._on_wakeup)
            tg.start_soon(self._keep_leases)
            try:
                await self._shared_loop()
            finally:
                with anyio.CancelScope(shield=True):
                    await self._release_unstarted()
            # The lease keeper and the listener go on while running attempts drain;
            # stop() cancels the engine's task group once they are done.

    async def _shared_loop(self) -> None:
        ahead = self._ahead
        settings = self._settings
        recheck = timedelta(seconds=settings.safety_recheck_s)
        failures = 0
        while not self._stopping:
            self.loop_iterations += 1
            # Invariant (issue 17, finding 1): every store call of this loop is
            # inside this one handler; a store error (a reset connection, a
            # refusing or silent server) is logged, backed off and retried, with
            # a full re-read of the store's state, and never ends the engine
            # unless the store is unusable for good (Engine._store_failed).
            try:
                now = self._clock.now()
                if self._reread or self._recheck_at is None or now >= self._recheck_at:
                    self._reread = False
                    self._recheck_at = now + recheck
                    await self._reread_store()
                    now = self._clock.now()
                self._collect_due(now + ahead)
                if self._takeover_at is not None and self._takeover_at <= now:
                    await self._take_over(now)
                    expiry = await self._claiming.next_lease_expiry()
                    # Expired leases still locked by another node's take-over: look
                    # again shortly instead of spinning on them.
                    floor = self._clock.now() + timedelta(seconds=1)
                    self._takeover_at = None if expiry is None else max(expiry, floor)
                    continue
                if self._ready and self._active < settings.max_concurrency:
                    self._dispatch(now)
                free = settings.max_concurrency - self._active - len(self._ready)
                due = self._due_at
                if (
                    free > 0
                    and due is not None
                    and due <= now + ahead
                    and await self._claim(now, free)
                ):
                    continue
                if self._prune_due:
                    self._prune_due = False
                    await self._prune()
            except StoreError as exc:
                failures += 1
                self._reread = True
                await self._store_failed(exc, failures)
                continue
            failures = 0
            await self._sleep(now, free > 0)
            self._wakeup = anyio.Event()

    async def _claim(self, now: datetime, free: int) -> bool:
        """Claim up to ``free`` due jobs; True when the loop should go round again."""
        lease_s = self._settings.lease_s
        try:
            claimed = await self._claiming.claim_due(
                self._settings.node, now + self._ahead, free, lease_s
            )
        except StoreError as exc:
            if exc.permanent:
                raise  # the loop's handler stops the engine (see _store_failed)
            self._log.error("claim_failed", error=exc.message)
            self._due_at = now + timedelta(seconds=1)
            return False
        for job in claimed:
            self._enqueue_claimed(job, -job.priority)
        if len(claimed) < free:
            # Everything due was claimed (by us or others): sleep until the next one.
            await self._read_due_at()
        if claimed:
            if self._takeover_at is None:
                self._takeover_at = now + timedelta(seconds=lease_s)
            self._dispatch(now)
            return True
        # Due rows that another node holds locked (SKIP LOCKED) are about to
        # become running; yield instead of spinning on them.
        await anyio.sleep(0.001)
        return self._due_at is not None and self._due_at <= self._clock.now() + self._ahead

    async def _sleep(self, now: datetime, can_claim: bool) -> None:
        ahead = self._ahead
        candidates: list[datetime] = []
        timer = self._peek_timer()
        if timer is not None:
            candidates.append(timer - ahead)
        if can_claim and self._due_at is not None:
            candidates.append(self._due_at - ahead)
        if self._takeover_at is not None:
            candidates.append(self._takeover_at)
        if self._recheck_at is not None:
            candidates.append(self._recheck_at)
        wake_at = min(candidates) if candidates else None
        self._sleeping_until = None if wake_at is None else wake_at + ahead
        self._sleeping = True
        try:
            if not self._wakeup.is_set():
                with self._clock.deadline_scope(wake_at):
                    await self._wakeup.wait()
        finally:
            self._sleeping = False

    async def _reread_store(self) -> None:
        """Refresh what notifications may have missed: due time, leases, counts."""
        try:
            await self._read_due_at()
            self._takeover_at = await self._claiming.next_lease_expiry()
            counts = await self._store.count_by_status()
        except StoreError as exc:
            if exc.permanent:
                raise  # the loop's handler stops the engine (see _store_failed)
            self._log.error("store_reread_failed", error=exc.message)
            self._reread = True
            self._recheck_at = self._clock.now() + timedelta(seconds=1)
            return
        self._tally = dict.fromkeys(JobStatus, 0) | counts

    async def _read_due_at(self) -> None:
        """Read the store's earliest pending run_at into ``_due_at``.

        Invariant (issue 17, finding 5): a due time announced while the read is
        in flight (a job added through this node, a notification) is never
        overwritten by the read's older answer: the earlier of the two is kept.
        The read began before the add committed and may not see it; without
        this, a job added right after start-up waited for the safety re-check.
        """
        self._announced = None
        stored = await self._claiming.next_due_at()
        announced, self._announced = self._announced, None
        if announced is not None and (stored is None or announced < stored):
            stored = announced
        self._due_at = stored

    def _announce(self, run_at: datetime) -> None:
        """Remember a due time learnt outside a store read (see :meth:`_read_due_at`)."""
        if self._announced is None or run_at < self._announced:
            self._announced = run_at

    def _on_wakeup(self, wakeup: StoreWakeup) -> None:
        """A store notification: earlier work, or (None) a re-read after lost ones."""
        earliest = wakeup.earliest
        if earliest is not None:
            self._announce(earliest)
        if earliest is None:
            self._reread = True
        elif self._due_at is None or earliest < self._due_at:
            self._due_at = earliest
        else:
            return
        self._poke()

    def _enqueue_claimed(self, job: Job, rank: int) -> None:
        """A job claimed in the store: ready to start here (the claim's ``running``
        is only the lease; :meth:`_begin` makes the real transition)."""
        assert job.run_at is not None
        self._leased.add(job.id)
        self._leases_held.set()
        self._jobs[job.id] = replace(job, status=JobStatus.PENDING)
        seq = next(self._seq)
        self._token[job.id] = seq
        at = self._clock.now() if rank == TRIGGER_PRIORITY else job.run_at
        heapq.heappush(self._ready, (rank, at, seq, job.id))

    def _place(self, job: Job) -> None:
        if job.status is JobStatus.PENDING:
            # Pending jobs live in the store; only remember when one is due sooner.
            self._jobs.pop(job.id, None)
            self._token.pop(job.id, None)
            assert job.run_at is not None
            self._announce(job.run_at)
            if self._due_at is None or job.run_at < self._due_at:
                self._due_at = job.run_at
                self._poke()
            return
        super()._place(job)

    def _abandon_start(self, attempt: _Attempt, now: datetime, error: BaseException) -> None:
        """A start batch whose write failed (it may have committed all the same):
        close its run and give the job back, fenced by the lease this node holds."""
        job = attempt.job
        unchanged = self._ckpt.staged_job(job.id) in (None, job)
        super()._abandon_start(attempt, now, error)
        closed = replace(
            attempt.run,
            finished_at=now,
            outcome=RunOutcome.CRASHED,
            error=f"the start was not checkpointed: {error}",
        )
        retry = [job.transition(JobStatus.PENDING, now, run_at=now)] if unchanged else []
        self._ckpt.stage(retry, [closed])

    def _release(self, attempt: _Attempt, now: datetime) -> None:
        super()._release(attempt, now)
        due = self._due_at
        if due is not None and due <= now + self._ahead:
            self._poke()

    # -- leases -----------------------------------------------------------------------

    async def _write_shared(self, jobs: Sequence[Job], runs: Sequence[Run]) -> None:
        """The checkpoint write: leased jobs fenced by the lease, others (control
        operations on jobs this node does not hold) written as they are."""
        node = self._settings.node
        leased = [job for job in jobs if job.id in self._leased]
        # A running row is only ever written under this node's lease: one whose
        # lease was lost meanwhile must not overwrite the new owner (or leave a
        # running job without a lease that nobody could take over).
        plain = [
            job
            for job in jobs
            if job.id not in self._leased and job.status is not JobStatus.RUNNING
        ]
        if plain:
            await self._store.write(plain, ())
        refused = await self._claiming.write_leased(node, leased, runs)
        for job in leased:
            if job.id in refused:
                self._lease_lost(job.id, "write_refused")
            elif job.id not in self._jobs:
                # Out of running and not claimed again meanwhile: the lease is gone.
                self._leased.discard(job.id)

    async def _keep_leases(self) -> None:
        """Renew this node's leases every lease_s / 3, only while it holds any."""
        interval = timedelta(seconds=self._settings.lease_s / 3)
        while True:
            if not self._leased:
                self._leases_held = anyio.Event()
                await self._leases_held.wait()
            await self._clock.sleep_until(self._clock.now() + interval)
            ids = list(self._leased)
            if not ids:
                continue
            until = self._clock.now() + timedelta(seconds=self._settings.lease_s)
            try:
                kept = await self._claiming.extend_leases(self._settings.node, ids, until)
            except StoreError as exc:
                self._log.error("lease_renewal_failed", error=exc.message, jobs=len(ids))
                continue
            for job_id in ids:
                # A job that left running through our own write is not ours either,
                # but that is no loss: only jobs still held in memory count.
                if job_id not in kept and job_id in self._leased and job_id in self._jobs:
                    self._lease_lost(job_id, "renewal_refused")

    def _lease_lost(self, job_id: str, why: str) -> None:
        """Another node changed or took the job: cancel local attempts, record nothing
        more for it (their runs still go to the history)."""
        self._leased.discard(job_id)
        job = self._jobs.pop(job_id, None)
        self._token.pop(job_id, None)
        state = self._running.pop(job_id, None)
        attempts = [] if state is None else self._attempts_of(state)
        for attempt in attempts:
            self._cancel_attempt(attempt, LEASE_LOST)
        if job is not None and job.status is JobStatus.RUNNING:
            self._count(JobStatus.RUNNING, JobStatus.PENDING)
        self._log.warning("lease_lost", job_id=job_id, reason=why, attempts=len(attempts))

    async def _take_over(self, now: datetime) -> None:
        """Take over expired leases: open runs become ``crashed``, jobs follow the
        crash rules of single-node recovery (a claimed, unstarted job just runs)."""
        node = self._settings.node
        lease_s = self._settings.lease_s
        while True:
            try:
                taken = await self._claiming.take_over_expired(node, now, TAKE_OVER_BATCH, lease_s)
            except StoreError as exc:
                if exc.permanent:
                    raise  # the loop's handler stops the engine (see _store_failed)
                self._log.error("take_over_failed", error=exc.message)
                return
            if not taken:
                return
            jobs: list[Job] = []
            runs: list[Run] = []
            for job, run in taken:
                if run is not None:
                    runs.append(
                        replace(
                            run,
                            finished_at=now,
                            outcome=RunOutcome.CRASHED,
                            error=f"node {run.node or '?'} stopped renewing its lease "
                            "during this attempt (crash, kill or partition)",
                        )
                    )
                regular = run is not None and run.scheduled_for == job.scheduled_for
                jobs.append(self._after_crash(job, now, regular=regular))
            try:
                refused = await self._claiming.write_leased(node, jobs, runs)
            except StoreError as exc:
                # Our lease on them expires too; another node (or we) retry later.
                self._log.error("take_over_failed", error=exc.message)
                return
            self._log.warning(
                "leases_taken_over", jobs=len(jobs), crashed_runs=len(runs), refused=len(refused)
            )
            if len(taken) < TAKE_OVER_BATCH:
                return

    async def _release_unstarted(self) -> None:
        """At shutdown: give claimed jobs that never started back to the others."""
        unstarted = [job_id for job_id in self._leased if job_id not in self._running]
        if not unstarted:
            return
        try:
            await self._claiming.release(self._settings.node, unstarted)
        except StoreError as exc:
            self._log.error("release_failed", error=exc.message, jobs=len(unstarted))
            return
        for job_id in unstarted:
            self._leased.discard(job_id)
            self._jobs.pop(job_id, None)
            self._token.pop(job_id, None)

    # -- control operations on the shared state ---------------------------------------

    async def _find(self, ref: str) -> Job | None:
        if ref in self._leased:
            local = self._ckpt.staged_job(ref) or self._jobs.get(ref)
            if local is not None:
                return local
        stored = await self._store.get_job(ref)
        if stored is None:
            live = await self._find_by_name(ref)
            if live is not None:
                return live
            await self._ckpt.flush()
            # As in single-node mode: else the newest final job that had the name.
            return await self._store.get_job_by_name(ref, include_final=True)
        return self._ckpt.staged_job(ref) or stored

    async def _find_by_name(self, name: str) -> Job | None:
        stored = await self._store.get_job_by_name(name)
        if stored is None:
            return None
        newest = stored
        if stored.id in self._leased:
            newest = self._ckpt.staged_job(stored.id) or self._jobs.get(stored.id) or stored
        return None if newest.status.is_final else newest

    async def trigger_job(self, ref: str) -> Job:
        """Run one extra occurrence now on this node (claimed first, so no other runs it)."""
        job = await self.get_job(ref)
        if job.status is not JobStatus.PENDING or job.id in self._leased:
            raise InvalidJobState(
                f"only a pending job can be triggered; job {job.id} is {job.status.value}",
                status=job.status,
            )
        claimed = await self._claiming.claim_job(
            self._settings.node, job.id, self._clock.now(), self._settings.lease_s
        )
        if claimed is None:
            raise InvalidJobState(
                f"job {job.id} is no longer pending (claimed or changed by another node)",
                status=JobStatus.RUNNING,
            )
        waiter: tuple[anyio.Event, list[Job | BaseException]] = (anyio.Event(), [])
        self._triggers.setdefault(job.id, []).append(waiter)
        self._enqueue_claimed(claimed, TRIGGER_PRIORITY)
        self._poke()
        await waiter[0].wait()
        outcome = waiter[1][0]
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    def status(self) -> EngineStatus:
        """The local snapshot, with the store's next due time and counts (refreshed
        at every safety re-check, adjusted locally in between)."""
        status = super().status()
        next_due = status.next_due
        if self._due_at is not None and (next_due is None or self._due_at < next_due):
            next_due = self._due_at
        extra = dict(status.extra, shared=True, leases=len(self._leased))
        return replace(status, next_due=next_due, extra=extra)


def engine_for(
    store: Store,
    registry: HandlerRegistry,
    clock: Clock,
    settings: EngineSettings,
    *,
    log: Any | None = None,
    rng: random.Random | None = None,
) -> Engine:
    """A shared-mode engine for a multi-node store, else the single-node engine."""
    if isinstance(store, ClaimingStore):
        return SharedEngine(store, registry, clock, settings, log=log, rng=rng)
    return Engine(store, registry, clock, settings, log=log, rng=rng)
