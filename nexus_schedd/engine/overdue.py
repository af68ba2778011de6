"""Overdue jobs (SPEC 15 notifications, ``on = ["overdue"]``): found by a timer, not
by polling.

A job that comes due is watched while it waits to start; if it has still not
started ``overdue_after_s`` (``[defaults]``) after its run_at (every slot busy,
its type at its limit or over its rate, the node stalled), the ``[[notify]]``
rules on ``overdue`` add their jobs. Jobs come due in run_at order, so the
waiting jobs are kept in that order and one timer, armed at the oldest one's
deadline, serves them all (like :mod:`.pauses`); a job that starts leaves the
watch at once, so only the backlog is held. Nothing is watched unless a rule
asks for ``overdue``. In shared mode a node watches the jobs it has claimed.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from datetime import datetime, timedelta

import anyio
from anyio.abc import TaskStatus

from nexus_schedd.clock import Clock

Check = Callable[[str, datetime], None]
"""Notify about job ``id`` if it is still waiting at the run_at it was watched for."""


class OverdueTimers:
    """Calls ``check(job_id, run_at)`` for a watched job still waiting ``after``
    past its ``run_at``."""

    def __init__(self, clock: Clock, after: timedelta, check: Check) -> None:
        self._clock = clock
        self.after = after
        self._check = check
        self._waiting: OrderedDict[str, datetime] = OrderedDict()
        """Due jobs not started yet, oldest first: job id -> its run_at."""
        self._armed: datetime | None = None
        self._changed = anyio.Event()

    def watch(self, job_id: str, run_at: datetime) -> None:
        """A job came due at ``run_at`` and waits to start."""
        waiting = self._waiting
        waiting[job_id] = run_at
        waiting.move_to_end(job_id)
        if self._armed is None:
            self._changed.set()

    def started(self, job_id: str) -> None:
        """The job started (or left the queue): stop watching it."""
        self._waiting.pop(job_id, None)

    def rearm(self) -> None:
        """Work the timer out again (the wall clock stepped)."""
        self._changed.set()

    def __len__(self) -> int:
        return len(self._waiting)

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Check each watched job once it is overdue, until cancelled."""
        task_status.started()
        waiting = self._waiting
        while True:
            now = self._clock.now()
            armed = None
            while waiting:
                job_id, run_at = next(iter(waiting.items()))
                if run_at + self.after > now:
                    armed = run_at + self.after
                    break
                del waiting[job_id]
                self._check(job_id, run_at)
            self._armed = armed
            changed = self._changed = anyio.Event()
            with self._clock.deadline_scope(armed):
                await changed.wait()
