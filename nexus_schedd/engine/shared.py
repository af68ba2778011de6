"""Due work from a store several nodes share (:class:`ClaimingStore`, PostgreSQL).

The store is the schedule; a node's memory holds only what it claimed. The
scheduler sleeps until the store's earliest due run_at (``next_due_at``), the
next lease expiry (a take-over may be due), an overlap timer of its own running
jobs, or the safety re-check, whichever comes first; notifications from the
store (``listen``) wake it when any node adds a job or moves one earlier.

Awake, it claims due jobs up to its free slots (``claim_due``: priority, then
run_at, ``FOR UPDATE SKIP LOCKED``) and hands them to the core, which runs them
as it runs every job. Claimed jobs are checkpointed with ``write_leased``, so a
node that lost a lease cannot overwrite the new owner. Leases are renewed every
``lease_s / 3`` while this node holds any; a renewal or write that the store
refuses means another node changed the job (cancel, pause, take-over): the
local attempt is cancelled and nothing more is recorded for the job. See
docs/multi-node.md for the guarantees.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from dataclasses import fields
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import anyio
from anyio.abc import TaskGroup

from nexus_schedd.engine.policies import after_crash
from nexus_schedd.engine.recovery import crashed
from nexus_schedd.engine.source import Writer
from nexus_schedd.errors import InvalidJobState, StoreError
from nexus_schedd.model import Job, JobStatus, Run
from nexus_schedd.store.base import ClaimingStore, StoreWakeup

if TYPE_CHECKING:
    from nexus_schedd.engine.core import EngineCore

TAKE_OVER_BATCH = 500
"""Expired leases taken over per transaction."""
TAKE_OVER_FLOOR = timedelta(seconds=1)
"""After a take-over, expired leases still locked by another node's take-over are
looked at again this much later instead of spinning on them."""
LOCKED_BACKOFF = timedelta(milliseconds=1)
"""A claim found only rows another node holds locked: yield this long."""

LEASE_LOST = "lease lost: another node changed or took over this job"

_AS_CLAIMED = operator.attrgetter(*(f.name for f in fields(Job) if f.name != "updated_at"))
"""A job's fields but ``updated_at``: a start that leaves these as the claim wrote
them needs no new job row (see :meth:`ClaimedWork._write_fenced`)."""


class ClaimedWork:
    """The shared-store :class:`~nexus_schedd.engine.source.DueWorkSource`: claims
    under leases, lease renewal, take-over of dead nodes' leases."""

    running_row_at_start = True
    """A start's running row is written with it: the claim wrote it under the
    lease, and the fenced write checks it (see :meth:`_write_fenced`)."""

    def __init__(self, core: EngineCore, store: ClaimingStore) -> None:
        self._core = core
        self._claiming = store
        self.writer: Writer | None = self._write_fenced
        self._leased: set[str] = set()
        """Jobs this node holds a lease on (claimed, running, or being written)."""
        self._claimed: dict[str, Job] = {}
        """Claimed jobs not written since, as the claim left their rows (running)."""
        self._leases_held = anyio.Event()
        self._due_at: datetime | None = None
        """The store's earliest pending run_at as last read or announced."""
        self._announced: datetime | None = None
        """The earliest run_at announced (an add here, a notification) since the
        last read of ``next_due_at`` began (see :meth:`_read_due_at`)."""
        self._takeover_at: datetime | None = None
        self._recheck_at: datetime | None = None
        self._reread = True

    # -- start-up and the loop's turn -------------------------------------------------

    async def start(self, tg: TaskGroup) -> None:
        """Take over expired leases of dead nodes (ours from a previous process
        included); listen for other nodes' news and keep leases, in ``tg``."""
        try:
            await self._take_over(self._core.clock.now())
        except StoreError as exc:
            if exc.permanent:
                raise  # the store is unusable for good: the engine cannot start
            # Not fatal at start: the first re-read looks for expired leases again.
            self._core.log.error("take_over_failed", error=exc.message)
        node = self._core.settings.node
        await tg.start(self._claiming.listen, self._on_wakeup, name=f"engine {node} store listener")
        tg.start_soon(self._keep_leases, name=f"engine {node} lease keeper")

    async def fetch(self, now: datetime, free: int) -> bool:
        """Re-read what notifications may have missed (at the safety re-check),
        take over expired leases, claim due jobs up to ``free``.

        Every store call of this source's part of the scheduler loop is made from
        here, behind the core's one error path (``EngineCore._fetch``); after a
        store error the next call re-reads the store's state first (notifications
        may have been lost with the connection)."""
        try:
            return await self._fetch(now, free)
        except StoreError:
            self._reread = True
            raise

    async def _fetch(self, now: datetime, free: int) -> bool:
        core = self._core
        if self._reread or self._recheck_at is None or now >= self._recheck_at:
            await self._reread_store(now)
            now = core.clock.now()
        if self._takeover_at is not None and self._takeover_at <= now:
            await self._take_over(now)
            expiry = await self._claiming.next_lease_expiry()
            floor = core.clock.now() + TAKE_OVER_FLOOR
            self._takeover_at = None if expiry is None else max(expiry, floor)
            return True
        due = self._due_at
        if free > 0 and due is not None and due <= now + core.start_ahead:
            return await self._claim(now, free)
        return False

    async def _reread_store(self, now: datetime) -> None:
        """Refresh what notifications may have missed: due time, leases, counts."""
        core = self._core
        self._reread = True  # until every read below succeeded
        await self._read_due_at()
        self._takeover_at = await self._claiming.next_lease_expiry()
        counts = await core.store.count_by_status()
        core.status_counts = dict.fromkeys(JobStatus, 0) | counts
        self._reread = False
        self._recheck_at = now + timedelta(seconds=core.settings.safety_recheck_s)

    async def _claim(self, now: datetime, free: int) -> bool:
        """Claim up to ``free`` due jobs; True when the loop should go round again."""
        core = self._core
        settings = core.settings
        claimed = await self._claiming.claim_due(
            settings.node, now + core.start_ahead, free, settings.lease_s
        )
        for job in claimed:
            self._take(job)
        if len(claimed) < free:
            # Everything due was claimed (by us or others): sleep until the next one.
            await self._read_due_at()
        if claimed:
            if self._takeover_at is None:
                self._takeover_at = now + timedelta(seconds=settings.lease_s)
            return True
        # Due rows that another node holds locked (SKIP LOCKED) are about to
        # become running; yield instead of spinning on them.
        await core.clock.sleep_until(core.clock.now() + LOCKED_BACKOFF)
        return self._due_at is not None and self._due_at <= core.clock.now() + core.start_ahead

    async def _read_due_at(self) -> None:
        """Read the store's earliest pending run_at into ``_due_at``.

        Invariant (issue 17, finding 5): a due time announced while the read is
        in flight (a job added through this node, a notification) is never
        overwritten by the read's older answer: the earlier of the two is kept.
        The read may have begun before the add committed and not see it; without
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

    def _take(self, job: Job) -> None:
        """A job claimed in the store: ready to start here (the claim's ``running``
        is only the lease; the core's dispatch makes the real transition).

        Invariant: a job changed here by a control operation whose write has not
        landed yet (a cancel, pause or reschedule, staged or being written) was
        claimed from its older row, and the change wins. The job is neither
        started nor held: unheld, its staged version is written as it is (not
        fenced, :meth:`_write_fenced`) over the claim's row, which ends the
        claim's lease. Before stop 40 the claim's start replaced the staged
        change in the checkpointer, so a cancel its caller was told of ran the job.
        """
        assert job.run_at is not None
        core = self._core
        staged = core.checkpoints.staged_job(job.id)
        if staged is not None and (
            staged.status is not JobStatus.PENDING
            or _AS_CLAIMED(staged.with_status(job.status)) != _AS_CLAIMED(job)
        ):
            core.log.info("claim_yields_to_change", job_id=job.id, status=staged.status.value)
            return
        self._hold(job.id)
        self._claimed[job.id] = job
        core.enqueue(job.with_status(JobStatus.PENDING), -job.priority, job.run_at)

    def _hold(self, job_id: str) -> None:
        """This node now holds a lease on ``job_id``: keep it renewed."""
        self._leased.add(job_id)
        self._leases_held.set()

    def wake_at(self, can_take: bool) -> datetime | None:
        """The store's next due time (if there is room for it), the next lease
        expiry, or the safety re-check, whichever comes first."""
        candidates: list[datetime] = []
        if can_take and self._due_at is not None:
            candidates.append(self._due_at - self._core.start_ahead)
        if self._takeover_at is not None:
            candidates.append(self._takeover_at)
        if self._recheck_at is not None:
            candidates.append(self._recheck_at)
        return min(candidates) if candidates else None

    def due_by(self, horizon: datetime) -> bool:
        """The store has a job due by ``horizon`` (a freed slot can take it)."""
        due = self._due_at
        return due is not None and due <= horizon

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
        self._core.wake_scheduler()

    def keeps_pending(self, job: Job) -> bool:
        """Never: pending jobs live in the store; only remember when one is due sooner."""
        assert job.run_at is not None
        self._announce(job.run_at)
        if self._due_at is None or job.run_at < self._due_at:
            self._due_at = job.run_at
            self._core.wake_scheduler()
        return False

    def known(self, job_id: str) -> Job | None:
        # Only jobs this node leases are newer here than in the store. Staged rows
        # first: this node's memory holds a claimed job as pending while its row
        # says running (the lease), and a failed start stages a version memory
        # never gets; what is staged is what this node will write under its lease.
        if job_id not in self._leased:
            return None
        core = self._core
        return core.checkpoints.staged_job(job_id) or core.jobs.get(job_id)

    async def take_for_trigger(self, job: Job) -> Job:
        """Claim the job first, so no other node runs it meanwhile."""
        core = self._core
        if job.id in self._leased:
            raise InvalidJobState(
                f"only a pending job can be triggered; job {job.id} is {job.status.value}",
                status=job.status,
            )
        claimed = await self._claiming.claim_job(
            core.settings.node, job.id, core.clock.now(), core.settings.lease_s
        )
        if claimed is None:
            raise InvalidJobState(
                f"job {job.id} is no longer pending (claimed or changed by another node)",
                status=JobStatus.RUNNING,
            )
        self._hold(job.id)
        self._claimed[job.id] = claimed
        return claimed.with_status(JobStatus.PENDING)

    def describe(self) -> tuple[datetime | None, dict[str, Any]]:
        """The store's next due time and this node's leases."""
        return self._due_at, {"shared": True, "leases": len(self._leased)}

    # -- leases -----------------------------------------------------------------------

    async def _write_fenced(self, jobs: Sequence[Job], runs: Sequence[Run]) -> None:
        """The checkpoint write: leased jobs fenced by the lease, others (control
        operations on jobs this node does not hold) written as they are.

        A claimed job's start leaves its row as the claim wrote it (running
        under this node's lease; only ``updated_at`` would change): it is
        checked and locked under the lease (``held``) instead of written again.
        That is one row version less per job: the claim and the start are one
        update of ``jobs`` (docs/performance.md, round 6).
        """
        core = self._core
        leased: list[Job] = []
        held: list[str] = []
        claimed_rows = self._claimed
        for job in jobs:
            if job.id not in self._leased:
                continue
            claimed = claimed_rows.pop(job.id, None)
            if (
                claimed is not None
                and job.status is JobStatus.RUNNING
                and _AS_CLAIMED(job) == _AS_CLAIMED(claimed)
            ):
                held.append(job.id)
            else:
                leased.append(job)
        # A running row is only ever written under this node's lease: one whose
        # lease was lost meanwhile must not overwrite the new owner (or leave a
        # running job without a lease that nobody could take over).
        plain = [
            job
            for job in jobs
            if job.id not in self._leased and job.status is not JobStatus.RUNNING
        ]
        if plain:
            await core.store.write(plain, ())
        refused = await self._claiming.write_leased(core.settings.node, leased, runs, held)
        for job_id in held:
            if job_id in refused:
                self._lease_lost(job_id, "write_refused")
        for job in leased:
            if job.id in refused:
                self._lease_lost(job.id, "write_refused")
            elif job.id not in core.jobs:
                # Out of running and not claimed again meanwhile: the lease is gone.
                self._leased.discard(job.id)

    async def _keep_leases(self) -> None:
        """Renew this node's leases every lease_s / 3, only while it holds any."""
        core = self._core
        clock = core.clock
        interval = timedelta(seconds=core.settings.lease_s / 3)
        while True:
            if not self._leased:
                self._leases_held = anyio.Event()
                await self._leases_held.wait()
            await clock.sleep_until(clock.now() + interval)
            ids = list(self._leased)
            if not ids:
                continue
            until = clock.now() + timedelta(seconds=core.settings.lease_s)
            try:
                kept = await self._claiming.extend_leases(core.settings.node, ids, until)
            except StoreError as exc:
                # Tried again at the next renewal, a third of a lease later.
                core.log.error("lease_renewal_failed", error=exc.message, jobs=len(ids))
                continue
            for job_id in ids:
                # A job that left running through our own write is not ours either,
                # but that is no loss: only jobs still held in memory count.
                if job_id not in kept and job_id in self._leased and job_id in core.jobs:
                    self._lease_lost(job_id, "renewal_refused")

    def _lease_lost(self, job_id: str, why: str) -> None:
        """Another node changed or took the job: cancel local attempts, record nothing
        more for it (their runs still go to the history)."""
        core = self._core
        self._leased.discard(job_id)
        self._claimed.pop(job_id, None)
        job = core.jobs.get(job_id)
        core.forget(job_id)
        cancelled = core.cancel_job_attempts(job_id, LEASE_LOST)
        if job is not None and job.status is JobStatus.RUNNING:
            core.count(JobStatus.RUNNING, JobStatus.PENDING)
        core.log.warning("lease_lost", job_id=job_id, reason=why, attempts=cancelled)

    async def _take_over(self, now: datetime) -> None:
        """Take over expired leases: open runs become ``crashed``, jobs follow the
        crash rules of single-node recovery (a claimed, unstarted job just runs)."""
        core = self._core
        node = core.settings.node
        lease_s = core.settings.lease_s
        while True:
            taken = await self._claiming.take_over_expired(node, now, TAKE_OVER_BATCH, lease_s)
            if not taken:
                return
            before: list[Job] = []
            jobs: list[Job] = []
            runs: list[Run] = []
            for job, run in taken:
                before.append(job)
                if run is not None:
                    runs.append(
                        crashed(
                            run,
                            now,
                            f"node {run.node or '?'} stopped renewing its lease "
                            "during this attempt (crash, kill or partition)",
                        )
                    )
                regular = run is not None and run.scheduled_for == job.scheduled_for
                jobs.append(
                    after_crash(job, now, core.settings.defaults, core.rng, regular=regular)
                )
            # Follow-ups and notifications of the crashed runs, in the same write.
            added = core.reactions.crashes_closed(before, jobs, runs, now)
            # Our lease on them expires too if this fails; another node (or we) retry.
            refused = await self._claiming.write_leased(node, [*jobs, *added], runs)
            core.log.warning(
                "leases_taken_over",
                jobs=len(jobs),
                crashed_runs=len(runs),
                refused=len(refused),
                added=len(added),
            )
            if len(taken) < TAKE_OVER_BATCH:
                return

    async def stop(self) -> None:
        """At shutdown: give claimed jobs that never started back to the others."""
        core = self._core
        unstarted = [job_id for job_id in self._leased if job_id not in core.running]
        if not unstarted:
            return
        try:
            await self._claiming.release(core.settings.node, unstarted)
        except StoreError as exc:
            # Their leases expire and another node takes them over.
            core.log.error("release_failed", error=exc.message, jobs=len(unstarted))
            return
        for job_id in unstarted:
            self._leased.discard(job_id)
            self._claimed.pop(job_id, None)
            core.forget(job_id)
