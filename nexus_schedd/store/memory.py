"""An in-memory store with the semantics of the SQLite one, for fast engine tests.

It passes the same behavioural suite (``tests/store/``) as every durable
backend. Nothing survives ``close()``; it is not meant for production.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Sequence
from datetime import datetime

import anyio.lowlevel

from nexus_schedd.errors import InvalidSpec, JobExists, StoreError
from nexus_schedd.model import Job, JobStatus, Run
from nexus_schedd.model.queries import JobFilter, Page, RunFilter
from nexus_schedd.store.base import Store
from nexus_schedd.store.keys import (
    check_limit,
    decode_job_cursor,
    decode_run_cursor,
    encode_job_cursor,
    encode_run_cursor,
)
from nexus_schedd.store.keys import to_micros as _micros


class MemoryStore(Store):
    """Jobs and runs in plain dicts; every call is atomic because it never yields mid-way."""

    def __init__(self) -> None:
        self._jobs: dict[str, Job] = {}
        self._runs: dict[str, Run] = {}
        self._open = False

    async def open(self) -> None:
        self._open = True

    async def close(self) -> None:
        self._open = False

    def _ensure_open(self) -> None:
        if not self._open:
            raise StoreError("memory store: the store is not open")

    # -- writes ---------------------------------------------------------------------

    async def insert_jobs(self, jobs: Sequence[Job]) -> None:
        await anyio.lowlevel.checkpoint()
        self._ensure_open()
        batch: dict[str, Job] = {}
        for job in jobs:
            if job.id in self._jobs or job.id in batch:
                raise StoreError("memory store: a job with the same id already exists")
            batch[job.id] = job
        self._check_names(jobs)
        self._jobs.update(batch)

    async def write(self, jobs: Sequence[Job] = (), runs: Sequence[Run] = ()) -> None:
        await anyio.lowlevel.checkpoint()
        self._ensure_open()
        self._check_names(jobs)
        for job in jobs:
            self._jobs[job.id] = job
        for run in runs:
            self._runs[run.id] = run

    def _check_names(self, jobs: Sequence[Job]) -> None:
        """Raise JobExists if ``jobs`` would give one name to two non-final jobs."""
        holders = {
            job.name: job.id
            for job in self._jobs.values()
            if job.name is not None and not job.status.is_final
        }
        incoming = {job.id for job in jobs}
        # Jobs rewritten by this call no longer hold their old names.
        holders = {name: job_id for name, job_id in holders.items() if job_id not in incoming}
        for job in jobs:
            if job.name is None or job.status.is_final:
                continue
            holder = holders.get(job.name)
            if holder is not None and holder != job.id:
                raise JobExists(job.name, holder)
            holders[job.name] = job.id

    async def prune_runs(
        self, older_than: datetime, keep_per_job: int, jobs: Collection[str] | None = None
    ) -> int:
        await anyio.lowlevel.checkpoint()
        self._ensure_open()
        if keep_per_job < 0:
            raise InvalidSpec("history.keep_per_job", "must be >= 0")
        if keep_per_job == 0:
            jobs = None  # keeping none: every finished run goes, whichever its job
        by_job: defaultdict[str, list[Run]] = defaultdict(list)
        for run in self._runs.values():
            by_job[run.job_id].append(run)
        doomed: list[str] = []
        for job_id, runs in by_job.items():
            if jobs is not None and job_id not in jobs:
                # Only the age limit applies to the jobs not named.
                doomed.extend(
                    run.id
                    for run in runs
                    if run.outcome is not None
                    and run.finished_at is not None
                    and run.finished_at < older_than
                )
                continue
            runs.sort(key=lambda r: (r.started_at, r.id), reverse=True)
            doomed.extend(
                run.id
                for rank, run in enumerate(runs, start=1)
                if run.outcome is not None
                and (
                    (run.finished_at is not None and run.finished_at < older_than)
                    or rank > keep_per_job
                )
            )
        for run_id in doomed:
            del self._runs[run_id]
        return len(doomed)

    # -- reads ----------------------------------------------------------------------

    async def get_job(self, job_id: str) -> Job | None:
        await anyio.lowlevel.checkpoint()
        self._ensure_open()
        return self._jobs.get(job_id)

    async def get_job_by_name(self, name: str, *, include_final: bool = False) -> Job | None:
        await anyio.lowlevel.checkpoint()
        self._ensure_open()
        named = [j for j in self._jobs.values() if j.name == name]
        live = next((j for j in named if not j.status.is_final), None)
        if live is not None or not include_final:
            return live
        return max(named, key=lambda j: j.id, default=None)

    async def list_jobs(self, where: JobFilter, limit: int, cursor: str | None = None) -> Page[Job]:
        await anyio.lowlevel.checkpoint()
        self._ensure_open()
        check_limit(limit)
        after = None if cursor is None else decode_job_cursor(cursor)
        due_before = where.due_before
        matches = sorted(
            (
                job
                for job in self._jobs.values()
                if (after is None or job.id > after)
                and (not where.statuses or job.status in where.statuses)
                and (where.job_type is None or job.job_type == where.job_type)
                and (where.target_id is None or job.target_id == where.target_id)
                and (
                    due_before is None
                    or (
                        job.status is JobStatus.PENDING
                        and job.run_at is not None
                        and job.run_at <= due_before
                    )
                )
            ),
            key=lambda j: j.id,
        )
        if len(matches) > limit:
            page = matches[:limit]
            return Page(page, encode_job_cursor(page[-1].id))
        return Page(matches, None)

    async def next_pending(
        self,
        after: tuple[datetime, str] | None,
        limit: int,
        *,
        only_type: str | None = None,
        skip_types: Collection[str] = (),
    ) -> list[Job]:
        await anyio.lowlevel.checkpoint()
        self._ensure_open()
        check_limit(limit)
        pending = sorted(
            (
                (_micros(j.run_at), j.id, j)
                for j in self._jobs.values()
                if j.status is JobStatus.PENDING
                and j.run_at is not None
                and (only_type is None or j.job_type == only_type)
                and j.job_type not in skip_types
            ),
            key=lambda entry: (entry[0], entry[1]),
        )
        if after is not None:
            key = (_micros(after[0]), after[1])
            pending = [entry for entry in pending if (entry[0], entry[1]) > key]
        return [entry[2] for entry in pending[:limit]]

    async def jobs_in_status(self, status: JobStatus) -> list[Job]:
        await anyio.lowlevel.checkpoint()
        self._ensure_open()
        return sorted((j for j in self._jobs.values() if j.status is status), key=lambda j: j.id)

    async def open_runs(self) -> list[Run]:
        await anyio.lowlevel.checkpoint()
        self._ensure_open()
        return sorted(
            (r for r in self._runs.values() if r.outcome is None),
            key=lambda r: (_micros(r.started_at), r.id),
        )

    async def list_runs(self, where: RunFilter, limit: int, cursor: str | None = None) -> Page[Run]:
        await anyio.lowlevel.checkpoint()
        self._ensure_open()
        check_limit(limit)
        before = None if cursor is None else decode_run_cursor(cursor)
        keyed = sorted(
            (
                ((_micros(r.started_at), r.id), r)
                for r in self._runs.values()
                if (where.job_id is None or r.job_id == where.job_id)
                and (not where.outcomes or r.outcome in where.outcomes)
            ),
            key=lambda entry: entry[0],
            reverse=True,
        )
        runs = [run for key, run in keyed if before is None or key < before]
        if len(runs) > limit:
            page = runs[:limit]
            return Page(page, encode_run_cursor(_micros(page[-1].started_at), page[-1].id))
        return Page(runs, None)

    async def count_by_status(self) -> dict[JobStatus, int]:
        await anyio.lowlevel.checkpoint()
        self._ensure_open()
        counts: dict[JobStatus, int] = {}
        for job in self._jobs.values():
            counts[job.status] = counts.get(job.status, 0) + 1
        return counts
