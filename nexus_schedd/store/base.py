"""The store interface: durable jobs and run history behind one ABC.

Every backend (SQLite embedded, PostgreSQL multi-node) implements :class:`Store`
and passes the one behavioural suite in ``tests/store/``. Stores import only the
model. Every write method is durable before it returns (fsync'd when the store
was opened with ``durability="full"``); concurrent writes may share one
transaction and one commit (group commit), but each call succeeds or fails as a
whole.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Sequence
from datetime import datetime
from typing import Any, Literal, Protocol, runtime_checkable

from nexus_schedd.model import Job, JobStatus, Run
from nexus_schedd.model.queries import JobFilter, Page, RunFilter

Durability = Literal["full", "normal"]
"""``full``: every commit is fsync'd before it is acknowledged; ``normal``: the
backend's faster setting (SQLite synchronous=NORMAL, PostgreSQL synchronous_commit off)."""


class Store(ABC):
    """Durable storage of jobs and their run history."""

    @abstractmethod
    async def open(self) -> None:
        """Open (creating or migrating the schema as needed).

        Raises :class:`~nexus_schedd.errors.StoreError` for a database that is
        corrupt, unreadable, or from a newer schema version; it is never replaced.
        """

    @abstractmethod
    async def close(self) -> None:
        """Flush pending writes and close. Safe to call twice."""

    # -- writes -----------------------------------------------------------------

    @abstractmethod
    async def insert_jobs(self, jobs: Sequence[Job]) -> None:
        """Insert new jobs atomically: all or none.

        Raises :class:`~nexus_schedd.errors.JobExists` when a job's name is already
        held by a job that is not final (names are unique among non-final jobs).
        """

    @abstractmethod
    async def write(self, jobs: Sequence[Job] = (), runs: Sequence[Run] = ()) -> None:
        """Upsert whole job rows (by id) and run rows (by run id) in one transaction."""

    @abstractmethod
    async def prune_runs(
        self, older_than: datetime, keep_per_job: int, jobs: Collection[str] | None = None
    ) -> int:
        """Delete finished runs that finished before ``older_than`` or fall beyond the
        newest ``keep_per_job`` of their job. Returns how many were deleted.

        ``jobs`` limits the second part to those jobs' runs (the jobs whose runs
        ended since the last prune: none of the others can have gained one), so
        a prune costs what changed, not the size of the history; None looks at
        every job."""

    # -- reads ------------------------------------------------------------------

    @abstractmethod
    async def get_job(self, job_id: str) -> Job | None:
        """The job with this id, or None."""

    @abstractmethod
    async def get_job_by_name(self, name: str, *, include_final: bool = False) -> Job | None:
        """The non-final job holding this name, or None. With ``include_final``,
        when no live job holds it, the newest final job that had it (names are
        unique only among live jobs, so several final ones may share one)."""

    @abstractmethod
    async def list_jobs(self, where: JobFilter, limit: int, cursor: str | None = None) -> Page[Job]:
        """Jobs matching ``where``, ordered by id (creation order), one page at a time."""

    @abstractmethod
    async def next_pending(
        self,
        after: tuple[datetime, str] | None,
        limit: int,
        *,
        only_type: str | None = None,
        skip_types: Collection[str] = (),
    ) -> list[Job]:
        """Pending jobs ordered by (run_at, id), strictly after the ``after`` key;
        only those of ``only_type`` if given, none of ``skip_types``.

        The engine loads its in-memory heap window by window with this, so a
        store of millions of jobs never has to fit in memory. The type filters
        serve job types whose backlog waits in the store for their limit or
        rate (docs/engine.md, Window): the window reads past them, and each
        such type is read on its own as its jobs start.
        """

    @abstractmethod
    async def jobs_in_status(self, status: JobStatus) -> list[Job]:
        """Every job in ``status`` (the engine uses it for running jobs at recovery)."""

    @abstractmethod
    async def open_runs(self) -> list[Run]:
        """Runs that started and have no outcome yet (crash recovery)."""

    @abstractmethod
    async def list_runs(self, where: RunFilter, limit: int, cursor: str | None = None) -> Page[Run]:
        """Runs matching ``where``, newest first, one page at a time."""

    @abstractmethod
    async def count_by_status(self) -> dict[JobStatus, int]:
        """How many jobs are in each status (statuses with none may be absent)."""


EncodedRow = tuple[Any, ...]
"""A job or run row as a store that takes staged writes encodes it."""


@runtime_checkable
class StagedWrites(Protocol):
    """A store whose rows the engine's Checkpointer encodes as it stages them.

    The Checkpointer encodes each change while the previous write is in flight,
    so the encoding is off the path from one commit to the next, and keeps up to
    ``writes_in_flight`` writes in flight. A store without this protocol gets
    :meth:`Store.write` with the objects, one write at a time. (SQLite: rows are
    the tuples its writer process binds; two writes in flight, see
    :mod:`nexus_schedd.store.sqlite.store`.)
    """

    @property
    def writes_in_flight(self) -> int:
        """How many :meth:`write_encoded` calls may be in flight at once. More
        than one only for a store that applies its writes in the order they
        were made (the newest version of a row must win)."""
        ...

    def encode_job(self, job: Job) -> EncodedRow:
        """``job`` as :meth:`write_encoded` takes it."""
        ...

    def encode_run(self, run: Run) -> EncodedRow:
        """``run`` as :meth:`write_encoded` takes it."""
        ...

    async def write_encoded(self, jobs: Sequence[EncodedRow], runs: Sequence[EncodedRow]) -> None:
        """:meth:`Store.write` for rows made by :meth:`encode_job` and :meth:`encode_run`."""
        ...


class StoreWakeup(Protocol):
    """A cross-node notification: ``earliest`` newly due run_at, None = re-read the store."""

    @property
    def earliest(self) -> datetime | None: ...

    @property
    def node(self) -> str: ...


@runtime_checkable
class ClaimingStore(Protocol):
    """The extra primitives of a store shared by several nodes (PostgreSQL).

    An engine on such a store runs in shared mode: it claims due work under
    leases instead of marking jobs running by itself (docs/multi-node.md).
    """

    async def claim_due(self, node: str, now: datetime, limit: int, lease_s: float) -> list[Job]:
        """Claim up to ``limit`` due pending jobs under ``node``'s lease (now marked running)."""
        ...

    async def claim_job(self, node: str, job_id: str, now: datetime, lease_s: float) -> Job | None:
        """Claim one pending job, due or not (a trigger); None when it is not pending."""
        ...

    async def extend_leases(self, node: str, job_ids: Sequence[str], until: datetime) -> set[str]:
        """Renew ``node``'s leases; the ids it still holds."""
        ...

    async def release(self, node: str, job_ids: Sequence[str]) -> set[str]:
        """Give unstarted claims back (pending again)."""
        ...

    async def write_leased(
        self,
        node: str,
        jobs: Sequence[Job] = (),
        runs: Sequence[Run] = (),
        held: Sequence[str] = (),
    ) -> set[str]:
        """Write jobs only while ``node`` holds them; the ids it refused. ``held``:
        jobs whose stored row is already current, only checked and locked."""
        ...

    async def take_over_expired(
        self, node: str, now: datetime, limit: int, lease_s: float
    ) -> list[tuple[Job, Run | None]]:
        """Take running jobs whose lease expired, with their open run."""
        ...

    async def next_due_at(self) -> datetime | None:
        """The earliest pending run_at."""
        ...

    async def next_lease_expiry(self) -> datetime | None:
        """The earliest lease expiry among running jobs."""
        ...

    async def listen(self, callback: Callable[[Any], None], *, task_status: Any = ...) -> None:
        """Deliver notifications (:class:`StoreWakeup`) to ``callback`` until cancelled."""
        ...
