"""The seam between the engine core and where its due work comes from.

The core (:mod:`.core`) dispatches, runs, times out and records attempts the same
way whatever the store. What differs is how due work reaches it, and that is a
:class:`DueWorkSource`:

- :class:`~nexus_schedd.engine.local.LocalWindow`: one node owns the store; pending
  jobs are loaded window by window into the core's timer heap.
- :class:`~nexus_schedd.engine.shared.ClaimedWork`: several nodes share a
  :class:`~nexus_schedd.store.base.ClaimingStore`; pending jobs stay in the store
  and a node claims due ones under a lease.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any, Protocol

from anyio.abc import TaskGroup

from nexus_schedd.model import Job, Run

Writer = Callable[[Sequence[Job], Sequence[Run]], Awaitable[None]]
"""A checkpoint write of job and run objects (see :class:`DueWorkSource.writer`)."""


class DueWorkSource(Protocol):
    """Where the engine core's due work comes from (one per engine).

    Every ``async`` method may raise :class:`~nexus_schedd.errors.StoreError`; in
    :meth:`fetch` the core logs it, backs off and calls again, so a source keeps
    whatever state makes the next call retry the step that failed.
    """

    writer: Writer | None
    """How checkpoints reach the store: None for the store's own write path
    (staged rows, see :class:`~nexus_schedd.store.base.StagedWrites`), or a
    writer of objects (shared: fenced by this node's leases)."""

    running_row_at_start: bool
    """True if a start's running job version must be written with its open run
    (shared: the write is fenced by the lease and keeps the claim's row); False
    lets the core leave it to a later write, which a fast run's finish makes
    unneeded (local: recovery reads the open runs)."""

    async def start(self, tg: TaskGroup) -> None:
        """Settle what a previous process left running (crash recovery, or taking
        over expired leases), load the first due work, and start the source's own
        background tasks in ``tg``."""
        ...

    async def fetch(self, now: datetime, free: int) -> bool:
        """Bring due work into the core (load the next window, claim up to
        ``free`` due jobs); True when the core should go round its loop again at
        once instead of sleeping."""
        ...

    def wake_at(self, can_take: bool) -> datetime | None:
        """The earliest instant the source needs the loop awake for (the core's
        own timers aside); ``can_take``: the core has free slots for more work."""
        ...

    def due_by(self, horizon: datetime) -> bool:
        """Work due by ``horizon`` waits in the source for a free slot."""
        ...

    def keeps_pending(self, job: Job) -> bool:
        """``job`` became pending: True if the core keeps it in memory on a timer,
        False if it waits in the store (the source notes when it is due)."""
        ...

    def known(self, job_id: str) -> Job | None:
        """This node's newest version of a job when it may be newer than the
        store's (in memory or staged for the next checkpoint), else None."""
        ...

    async def take_for_trigger(self, job: Job) -> Job:
        """Make a pending job this node's to run now (a trigger): the job to start.
        Raises :class:`~nexus_schedd.errors.InvalidJobState` when it cannot be."""
        ...

    async def stop(self) -> None:
        """The scheduler loop ended: give back work taken and not started."""
        ...

    def describe(self) -> tuple[datetime | None, dict[str, Any]]:
        """For the status snapshot: the earliest due time the source knows that
        the core's timers do not, and extra fields."""
        ...
