"""Housekeeping around the engine core: closing what a crash left open, and
pruning the run history."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from nexus_schedd.clock import Clock
from nexus_schedd.engine.policies import after_crash
from nexus_schedd.engine.settings import EngineSettings
from nexus_schedd.model import Job, JobDefaults, Run, RunOutcome
from nexus_schedd.store.base import Store

PRUNE_EVERY_RUNS = 10_000
"""Finished runs between two history prunes."""
PRUNE_INTERVAL = timedelta(hours=1)
"""History is also pruned when a run finishes this long after the last prune, and
once soon after start. No timer: an idle engine never wakes to prune."""

CRASHED_HERE = "the daemon stopped during this attempt (crash or kill)"


def crashed(run: Run, now: datetime, error: str) -> Run:
    """An open run closed as ``crashed``."""
    return replace(run, finished_at=now, outcome=RunOutcome.CRASHED, error=error)


def recover_jobs(
    running: Sequence[Job],
    open_runs: Sequence[Run],
    now: datetime,
    defaults: JobDefaults,
    rng: Any,
) -> list[Job]:
    """Jobs left RUNNING by a dead process, moved on by the crash rules: a job whose
    open run was its own occurrence (or which has none) counts a failed attempt; a
    job whose open run was a triggered extra run just goes back to pending."""
    by_job: dict[str, list[Run]] = {}
    for run in open_runs:
        by_job.setdefault(run.job_id, []).append(run)
    recovered: list[Job] = []
    for job in running:
        runs = by_job.get(job.id, [])
        regular = not runs or any(run.scheduled_for == job.scheduled_for for run in runs)
        recovered.append(after_crash(job, now, defaults, rng, regular=regular))
    return recovered


class HistoryPruner:
    """Prunes finished runs (``history.keep_days``, ``history.keep_per_job``) every
    PRUNE_EVERY_RUNS finished runs or PRUNE_INTERVAL, and once after start."""

    def __init__(self, store: Store, clock: Clock, settings: EngineSettings, log: Any) -> None:
        self._store = store
        self._clock = clock
        self._settings = settings
        self._log = log
        self._finished = 0
        self._last = clock.now()
        self.due = False
        """The scheduler loop should prune when it next has nothing due."""

    def note_finished(self, now: datetime) -> None:
        """A run finished at ``now``: make a prune due when enough have."""
        self._finished += 1
        if self._finished >= PRUNE_EVERY_RUNS or now - self._last >= PRUNE_INTERVAL:
            self._finished = 0
            self.due = True

    async def prune(self) -> None:
        """Delete what history.* no longer keeps (a failure is logged, not raised)."""
        self.due = False
        self._last = self._clock.now()
        cutoff = self._last - timedelta(days=self._settings.history_keep_days)
        try:
            deleted = await self._store.prune_runs(cutoff, self._settings.history_keep_per_job)
        except Exception as exc:
            self._log.warning("prune_failed", error=str(exc))
        else:
            self._log.info("runs_pruned", deleted=deleted)
