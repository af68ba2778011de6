"""The embedded store: SQLite in WAL mode, with group commit.

One writer connection owns every write, in a process of its own
(:mod:`.writer_process`, driven through :mod:`.writer_client`): in the daemon's
process SQLite's writer thread waited for the GIL after every step while the
event loop ran Python. Concurrent ``insert_jobs``/``write``/``prune_runs`` calls
share one transaction and one commit (one fsync with ``durability="full"``):
whoever finds fewer than two transactions in flight takes everything queued
and sends it as the next one; calls queued meanwhile share the transaction
after it. With two in flight the writer has the next transaction at hand when
a commit ends, and it handles them in the order sent, so writes land in order.
Each call still succeeds or fails as a whole: a batch first runs
optimistically as one transaction; only if that fails does the writer re-run
it with one SAVEPOINT per call, so one failing call rolls back only itself.

Reads go through a separate aiosqlite connection, so they never queue behind a
commit (WAL lets readers proceed while the writer commits).
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote

import aiosqlite
import anyio
import structlog

from nexus_schedd.errors import InvalidSpec, JobExists, SchedulerError, StoreError
from nexus_schedd.model import (
    Job,
    JobStatus,
    Run,
)
from nexus_schedd.model.queries import JobFilter, Page, RunFilter
from nexus_schedd.store.base import Durability, EncodedRow, Store
from nexus_schedd.store.keys import (
    check_limit,
    decode_job_cursor,
    decode_run_cursor,
    encode_job_cursor,
    encode_run_cursor,
    to_micros,
)
from nexus_schedd.store.migrations import FINAL_STATUSES_SQL
from nexus_schedd.store.rows import (
    JOB_COLUMNS,
    RUN_COLUMNS,
    job_from_row,
    job_row,
    run_from_row,
    run_row,
)
from nexus_schedd.store.sqlite.schema import migrations_after
from nexus_schedd.store.sqlite.writer_client import WriterProcess
from nexus_schedd.store.sqlite.writer_process import Call, Segment, Status, Write

_log = structlog.get_logger("nexus_schedd.store.sqlite")

_SQLITE_HEADER = b"SQLite format 3\x00"
_BUSY_TIMEOUT_MS = 5000
_CACHE_KIB = 16 * 1024
_WAL_CHECKPOINT_PAGES = 4000

_JOB_SELECT = f"SELECT {', '.join(JOB_COLUMNS)} FROM jobs"
_RUN_SELECT = f"SELECT {', '.join(RUN_COLUMNS)} FROM runs"
_JOB_INSERT = (
    f"INSERT INTO jobs ({', '.join(JOB_COLUMNS)}) VALUES ({', '.join('?' * len(JOB_COLUMNS))})"
)
_RUN_INSERT = (
    f"INSERT INTO runs ({', '.join(RUN_COLUMNS)}) VALUES ({', '.join('?' * len(RUN_COLUMNS))})"
)


def _upserts(insert: str, columns: tuple[str, ...], identity: tuple[str, ...]) -> tuple[str, str]:
    """The (guarded, full) upserts of a table.

    SQLite rewrites an index entry whenever an UPDATE names its column, even
    with an unchanged value. The guarded upsert leaves the ``identity`` columns
    (indexed, and never changed by the engine) out of its SET and skips rows
    whose identity differs; the caller re-runs the full upsert when fewer rows
    than given were written. That keeps the hot path off three indexes.
    """
    table = insert.split()[2]
    guarded = (
        f"{insert} ON CONFLICT (id) DO UPDATE SET "
        + ", ".join(f"{c} = excluded.{c}" for c in columns[1:] if c not in identity)
        + " WHERE "
        + " AND ".join(f"{table}.{c} IS excluded.{c}" for c in identity)
    )
    full = f"{insert} ON CONFLICT (id) DO UPDATE SET " + ", ".join(
        f"{c} = excluded.{c}" for c in columns[1:]
    )
    return guarded, full


_JOB_UPSERT, _JOB_UPSERT_FULL = _upserts(_JOB_INSERT, JOB_COLUMNS, ("job_type", "target_id"))
_RUN_UPSERT, _RUN_UPSERT_FULL = _upserts(_RUN_INSERT, RUN_COLUMNS, ("job_id", "started_at"))

SWITCH_INTERVAL_S = 0.0001
"""The interpreter switch interval for the daemon's process (``sys.setswitchinterval``;
Python's default is 5 ms). Threads that share the GIL with the event loop (the
store's reader, ``to_thread`` work) wait at most this long for it while the loop
runs Python. The daemon sets it at start."""

_LIVE_NAME_HOLDER = (
    f"SELECT id FROM jobs WHERE name = ? AND status NOT IN {FINAL_STATUSES_SQL} AND id != ?"
)
# Pruning reads what to delete on the reader connection, then deletes in small
# write calls, so a large prune never holds the writer (and the engine's
# checkpoints) for long.
_PRUNE_CHUNK = 2000
_PRUNE_BOUNDARIES = """
SELECT job_id,
       (SELECT started_at FROM runs AS x WHERE x.job_id = heavy.job_id
        ORDER BY started_at DESC, id DESC LIMIT 1 OFFSET :keep - 1),
       (SELECT id FROM runs AS x WHERE x.job_id = heavy.job_id
        ORDER BY started_at DESC, id DESC LIMIT 1 OFFSET :keep - 1)
FROM (SELECT job_id FROM runs GROUP BY job_id HAVING count(*) > :keep) AS heavy
"""
# The same for the jobs named in :jobs (a JSON array): index seeks on
# runs_job_newest instead of a scan of the whole history.
_PRUNE_BOUNDARIES_OF = _PRUNE_BOUNDARIES.replace(
    "FROM runs GROUP BY", "FROM runs WHERE job_id IN (SELECT value FROM json_each(:jobs)) GROUP BY"
)
_PRUNE_BEYOND_NEWEST = (
    "DELETE FROM runs WHERE job_id = ? AND (started_at, id) < (?, ?) AND outcome IS NOT NULL"
)
# A run finishes after it starts, so the started_at index bounds the scan.
_PRUNE_OLDER = """
DELETE FROM runs WHERE rowid IN (
    SELECT rowid FROM runs
    WHERE started_at < :cutoff AND finished_at < :cutoff AND outcome IS NOT NULL
    LIMIT :chunk
)
"""
_PRUNE_ALL_FINISHED = (
    "DELETE FROM runs WHERE rowid IN"
    " (SELECT rowid FROM runs WHERE outcome IS NOT NULL LIMIT :chunk)"
)


# -- the write queue ----------------------------------------------------------------

_Kind = Literal["insert", "write", "delete"]

_WRITES_IN_FLIGHT = 2
"""Transactions sent to the writer process and not yet answered: one committing,
the next one waiting there, so the writer goes from one commit to the next
without waiting for the event loop. Requests queued meanwhile share the next."""


@dataclass(eq=False, slots=True)
class _Request:
    """One caller's write, queued for the next group commit."""

    kind: _Kind
    jobs: Sequence[Job] = ()
    job_rows: list[tuple[Any, ...]] = field(default_factory=list)
    run_rows: list[tuple[Any, ...]] = field(default_factory=list)
    delete_sql: str = ""
    delete_rows: Sequence[Sequence[Any] | dict[str, Any]] = ()
    done: anyio.Event = field(default_factory=anyio.Event)
    taken: bool = False
    """Sent in a transaction (``done`` is set once it is answered)."""
    error: SchedulerError | None = None
    deleted: int = 0


class SQLiteStore(Store):
    """Jobs and runs in one SQLite file (WAL), with group commit.

    ``durability="full"`` fsyncs every commit (``synchronous=FULL``); ``"normal"``
    survives a daemon crash but may lose the last commits on power loss.
    ``max_size_bytes`` caps the database file (a quota): writes that would grow
    it further fail exactly as on a full disk. ``commits`` counts committed write
    transactions (group commit shares them).
    """

    def __init__(
        self,
        path: str | Path,
        *,
        durability: Durability = "full",
        max_size_bytes: int | None = None,
    ) -> None:
        if durability not in ("full", "normal"):
            raise InvalidSpec("store.durability", f"must be 'full' or 'normal', not {durability!r}")
        if max_size_bytes is not None and max_size_bytes < 1:
            raise InvalidSpec("store.max_size_bytes", "must be a positive number of bytes")
        self.path = Path(path)
        self.durability: Durability = durability
        self.max_size_bytes = max_size_bytes
        self.commits = 0
        self._writer: WriterProcess | None = None
        self._reader: aiosqlite.Connection | None = None
        self._page_size = 0
        self._read_only = False
        self._queue: list[_Request] = []
        self._in_flight = 0
        self._room = anyio.Event()
        """Set (and replaced) whenever a transaction was answered."""
        self._closed = False

    # -- lifecycle ------------------------------------------------------------------

    async def open(self) -> None:
        if self._writer is not None:
            return
        self._closed = False
        where = str(self.path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(
                f"{where}: cannot create directory {self.path.parent}: {exc.strerror or exc}"
            ) from None
        self._read_only = self._cannot_write_beside()
        if self._read_only:
            _log.warning(
                "store_read_only",
                path=where,
                reason="the database's directory is not writable: reads are served, "
                "mutations refused",
            )
        version = await anyio.to_thread.run_sync(self._inspect_existing)
        migrations_after(version, where)  # refuse a newer schema before writing anything
        try:
            # Migrations run here, on a connection of this process; every later
            # write goes to the writer process.
            migrator = await self._connect()
            try:
                await self._prepare(migrator)
                await self._migrate(migrator)
            finally:
                await migrator.close()
            self._writer = WriterProcess(self.path, self._database(), self._writer_pragmas())
            await self._writer.start()
            self._reader = await self._connect()
            await self._reader.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
            await self._reader.execute(f"PRAGMA cache_size = -{_CACHE_KIB}")
            await self._reader.execute("PRAGMA query_only = ON")
        except sqlite3.Error as exc:
            await self._close_connections()
            raise StoreError(f"{where}: cannot open the database: {_reason(exc)}") from None
        except BaseException:
            await self._close_connections()
            raise
        _log.info("store_opened", path=where, durability=self.durability)

    async def close(self) -> None:
        if self._writer is None:
            self._closed = True
            return
        with anyio.CancelScope(shield=True):
            while self._queue or self._in_flight:  # everything queued before us lands
                room = self._room
                await room.wait()
        self._closed = True
        await self._close_connections()

    def _inspect_existing(self) -> int:
        """The schema version of an existing file, checked without modifying it (0 if new)."""
        where = str(self.path)
        try:
            with self.path.open("rb") as file:
                header = file.read(len(_SQLITE_HEADER))
        except FileNotFoundError:
            return 0
        except OSError as exc:
            raise StoreError(f"{where}: cannot read the database: {exc.strerror or exc}") from None
        if not header:
            return 0
        if header != _SQLITE_HEADER:
            raise StoreError(
                f"{where}: not an SQLite database (unrecognised file header); "
                "refusing to open or replace it"
            )
        uri = self._database() if self._read_only else self._database() + "?mode=ro"
        try:
            connection = sqlite3.connect(uri, uri=True)
        except sqlite3.Error as exc:
            raise StoreError(f"{where}: cannot read the database: {_reason(exc)}") from None
        try:
            version = int(connection.execute("PRAGMA user_version").fetchone()[0])
            tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master")}
        except sqlite3.Error as exc:
            raise StoreError(
                f"{where}: the database is corrupt or unreadable: {_reason(exc)}"
            ) from None
        finally:
            connection.close()
        if version == 0 and tables:
            raise StoreError(
                f"{where}: an SQLite database that nexus-schedd did not create "
                f"(tables: {', '.join(sorted(tables)[:5])}); refusing to use it"
            )
        return version

    def _cannot_write_beside(self) -> bool:
        """True for an existing WAL database that SQLite could not open normally: its
        directory is not writable (a read-only mount, say), so the ``-shm`` index
        cannot be created. Such a database is opened ``immutable``: read, never written."""
        directory = self.path.parent
        return (
            self.path.exists()
            and not os.access(directory, os.W_OK)
            and not self.path.with_name(self.path.name + "-shm").exists()
        )

    def _database(self) -> str:
        """The URI every connection opens (``immutable`` when :meth:`_cannot_write_beside`)."""
        uri = f"file:{quote(str(self.path.resolve()))}"
        return uri + "?immutable=1" if self._read_only else uri

    async def _connect(self) -> aiosqlite.Connection:
        # isolation_level=None: transactions are begun and ended explicitly below.
        return await aiosqlite.connect(self._database(), uri=True, isolation_level=None)

    async def _prepare(self, migrator: aiosqlite.Connection) -> None:
        """WAL mode (kept in the file) and what the migrations need of a writer."""
        for pragma in self._writer_pragmas():
            await migrator.execute(pragma)
        if self._read_only:
            return  # writes are refused by SQLite; the file stays as it is
        rows = await migrator.execute_fetchall("PRAGMA journal_mode = WAL")
        mode = next(iter(rows))[0]
        if str(mode).lower() != "wal":
            raise StoreError(f"{self.path}: cannot switch the database to WAL mode (got {mode})")
        if self.max_size_bytes is not None:
            rows = await migrator.execute_fetchall("PRAGMA page_size")
            self._page_size = int(next(iter(rows))[0])
            await migrator.execute(self._max_page_count())

    def _writer_pragmas(self) -> list[str]:
        """The settings of a writer connection (they last as long as the connection)."""
        synchronous = "FULL" if self.durability == "full" else "NORMAL"
        pragmas = [
            f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}",
            f"PRAGMA synchronous = {synchronous}",
            f"PRAGMA cache_size = -{_CACHE_KIB}",
            "PRAGMA temp_store = MEMORY",
            f"PRAGMA wal_autocheckpoint = {_WAL_CHECKPOINT_PAGES}",
        ]
        if self.max_size_bytes is not None and self._page_size:
            pragmas.append(self._max_page_count())
        return pragmas

    def _max_page_count(self) -> str:
        """The quota as a page count: writes that would grow the file further fail
        exactly as on a full disk."""
        assert self.max_size_bytes is not None
        return f"PRAGMA max_page_count = {max(1, -(-self.max_size_bytes // self._page_size))}"

    async def _migrate(self, writer: aiosqlite.Connection) -> None:
        rows = await writer.execute_fetchall("PRAGMA user_version")
        version = int(next(iter(rows))[0])
        for migration in migrations_after(version, str(self.path)):
            await writer.execute("BEGIN IMMEDIATE")
            try:
                for statement in migration.statements:
                    await writer.execute(statement)
                await writer.execute(f"PRAGMA user_version = {migration.version}")
                await writer.execute("COMMIT")
            except BaseException:
                await self._rollback(writer)
                raise
            _log.info(
                "store_migrated",
                path=str(self.path),
                version=migration.version,
                description=migration.description,
            )

    async def _close_connections(self) -> None:
        writer, reader = self._writer, self._reader
        self._writer = self._reader = None
        if reader is not None:
            await reader.close()
        if writer is not None:
            await writer.stop()

    # -- writes ---------------------------------------------------------------------

    async def insert_jobs(self, jobs: Sequence[Job]) -> None:
        if not jobs:
            return
        await self._submit(_Request("insert", jobs=jobs, job_rows=[job_row(j) for j in jobs]))

    async def write(self, jobs: Sequence[Job] = (), runs: Sequence[Run] = ()) -> None:
        if not jobs and not runs:
            return
        await self._submit(
            _Request(
                "write",
                jobs=jobs,
                job_rows=[job_row(j) for j in jobs],
                run_rows=[run_row(r) for r in runs],
            )
        )

    # -- the staged write path (StagedWrites: the engine's Checkpointer) ---------------

    writes_in_flight = _WRITES_IN_FLIGHT
    """The one bound on writes in flight: this queue sends at most this many
    transactions, and the Checkpointer keeps as many writes going. (The writer
    process handles requests in the order they were sent.)"""

    def encode_job(self, job: Job) -> EncodedRow:
        return job_row(job)

    def encode_run(self, run: Run) -> EncodedRow:
        return run_row(run)

    async def write_encoded(self, jobs: Sequence[EncodedRow], runs: Sequence[EncodedRow]) -> None:
        if not jobs and not runs:
            return
        await self._submit(_Request("write", job_rows=list(jobs), run_rows=list(runs)))

    async def prune_runs(
        self, older_than: datetime, keep_per_job: int, jobs: Collection[str] | None = None
    ) -> int:
        if keep_per_job < 0:
            raise InvalidSpec("history.keep_per_job", "must be >= 0")
        if keep_per_job == 0:
            return await self._delete_in_chunks(_PRUNE_ALL_FINISHED, {"chunk": _PRUNE_CHUNK})
        deleted = await self._delete_in_chunks(
            _PRUNE_OLDER, {"cutoff": to_micros(older_than), "chunk": _PRUNE_CHUNK}
        )
        if jobs is None:
            boundaries = list(await self._fetch(_PRUNE_BOUNDARIES, {"keep": keep_per_job}))
        elif jobs:
            named = {"keep": keep_per_job, "jobs": json.dumps(list(jobs))}
            boundaries = list(await self._fetch(_PRUNE_BOUNDARIES_OF, named))
        else:
            boundaries = []
        for offset in range(0, len(boundaries), _PRUNE_CHUNK // 10):
            request = _Request(
                "delete",
                delete_sql=_PRUNE_BEYOND_NEWEST,
                delete_rows=boundaries[offset : offset + _PRUNE_CHUNK // 10],
            )
            await self._submit(request)
            deleted += request.deleted
        return deleted

    async def _delete_in_chunks(self, sql: str, parameters: dict[str, Any]) -> int:
        """Run a ``LIMIT :chunk`` delete as separate write calls until nothing is left."""
        deleted = 0
        while True:
            request = _Request("delete", delete_sql=sql, delete_rows=[parameters])
            await self._submit(request)
            deleted += request.deleted
            if request.deleted < parameters["chunk"]:
                return deleted

    async def _submit(self, request: _Request) -> None:
        """Queue ``request`` and wait until a transaction has carried it."""
        if self._writer is None or self._closed:
            raise StoreError(f"{self.path}: the store is not open")
        # Shielded: once queued, a write either commits or fails; a caller
        # cancelled half-way must not strand the requests it sent for others.
        with anyio.CancelScope(shield=True):
            self._queue.append(request)
            while not request.taken:
                if self._in_flight < _WRITES_IN_FLIGHT:
                    await self._send_queued()
                else:
                    room = self._room
                    await room.wait()
            await request.done.wait()
        self._raise_for(request)

    @staticmethod
    def _raise_for(request: _Request) -> None:
        if request.error is not None:
            raise request.error

    async def _send_queued(self) -> None:
        """Send everything queued as one transaction and record how each call went."""
        batch, self._queue = self._queue, []
        for request in batch:
            request.taken = True
        self._in_flight += 1
        try:
            await self._commit_batch(batch)
        except BaseException as exc:
            error = exc if isinstance(exc, StoreError) else StoreError(f"{self.path}: {exc!r}")
            for request in batch:
                request.error = request.error or error
            if not isinstance(exc, Exception):
                raise
        finally:
            self._in_flight -= 1
            for request in batch:
                request.done.set()
            self._room.set()
            self._room = anyio.Event()

    async def _commit_batch(self, batch: list[_Request]) -> None:
        """One transaction for ``batch``: merged into as few statements as possible,
        and only if that fails, each call in a SAVEPOINT of its own (in the writer,
        before it takes the next transaction, so writes land in the order sent)."""
        writer = self._writer
        assert writer is not None
        deletes = any(r.kind == "delete" for r in batch)
        segments = None if deletes else _segments(batch)
        calls = [_call(r) for r in batch] if deletes or len(batch) > 1 else None
        reply = await writer.request(Write(segments, calls))
        value = reply.value
        if reply.status is Status.OK:
            self.commits += 1
            for request, result in zip(batch, value or (), strict=value is not None):
                if isinstance(result, sqlite3.Error):
                    request.error = await self._error_for(request, result)
                else:
                    request.deleted = result
            return
        exc = self._sqlite_error(reply.status, value)
        if calls is None:
            batch[0].error = await self._error_for(batch[0], exc)
            return
        # The whole transaction failed, or SQLite abandoned it (disk full, I/O error).
        error = self._write_error(exc)
        for request in batch:
            request.error = error

    def _sqlite_error(self, status: Status, value: Any) -> sqlite3.Error:
        """The SQLite error a writer reply carries; other failures raise StoreError."""
        if status in (Status.ERROR, Status.ABORTED) and isinstance(value, sqlite3.Error):
            return value
        raise StoreError(f"{self.path}: write failed: {value}")

    async def _error_for(self, request: _Request, exc: sqlite3.Error) -> SchedulerError:
        """The user-facing error for a call that failed with ``exc`` (rolled back)."""
        if isinstance(exc, sqlite3.IntegrityError):
            message = str(exc)
            if "jobs.name" in message:
                return await self._name_conflict(request) or self._write_error(exc)
            if "jobs.id" in message:
                return StoreError(f"{self.path}: a job with the same id already exists")
        return self._write_error(exc)

    async def _name_conflict(self, request: _Request) -> JobExists | None:
        """Which job holds a name ``request`` wanted. Read after the failed call was
        rolled back, so the holder is a job on disk (or one of the same request)."""
        seen: dict[str, str] = {}
        for job in request.jobs:
            if job.name is None or job.status.is_final:
                continue
            if job.name in seen:
                return JobExists(job.name, seen[job.name])
            seen[job.name] = job.id
            rows = list(await self._fetch(_LIVE_NAME_HOLDER, (job.name, job.id)))
            if rows:
                return JobExists(job.name, rows[0][0])
        return None

    def _write_error(self, exc: sqlite3.Error) -> StoreError:
        reason = _reason(exc)
        code = getattr(exc, "sqlite_errorname", "")
        if code.startswith("SQLITE_FULL"):
            reason = "the disk is full (database or disk is full)"
        elif code.startswith("SQLITE_READONLY"):
            reason = f"the database is read-only ({reason})"
        elif code.startswith("SQLITE_BUSY"):
            reason = f"the database is locked by another process ({reason})"
        return StoreError(f"{self.path}: write failed, nothing was changed: {reason}")

    @staticmethod
    async def _rollback(writer: aiosqlite.Connection) -> None:
        # SQLite may already have rolled back on its own (disk full, I/O error).
        if writer.in_transaction:
            try:
                await writer.execute("ROLLBACK")
            except sqlite3.Error as exc:
                _log.warning("store_rollback_failed", error=str(exc))

    # -- reads ----------------------------------------------------------------------

    async def _fetch(
        self, sql: str, parameters: Sequence[Any] | dict[str, Any] = ()
    ) -> Iterable[sqlite3.Row]:
        reader = self._reader
        if reader is None:
            raise StoreError(f"{self.path}: the store is not open")
        try:
            return await reader.execute_fetchall(sql, parameters)
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: read failed: {_reason(exc)}") from None

    async def get_job(self, job_id: str) -> Job | None:
        rows = await self._fetch(f"{_JOB_SELECT} WHERE id = ?", (job_id,))
        return next((job_from_row(row) for row in rows), None)

    async def get_job_by_name(self, name: str, *, include_final: bool = False) -> Job | None:
        rows = await self._fetch(
            f"{_JOB_SELECT} WHERE name = ? AND status NOT IN {FINAL_STATUSES_SQL}", (name,)
        )
        live = next((job_from_row(row) for row in rows), None)
        if live is not None or not include_final:
            return live
        rows = await self._fetch(f"{_JOB_SELECT} WHERE name = ? ORDER BY id DESC LIMIT 1", (name,))
        return next((job_from_row(row) for row in rows), None)

    async def list_jobs(self, where: JobFilter, limit: int, cursor: str | None = None) -> Page[Job]:
        check_limit(limit)
        clauses: list[str] = []
        parameters: list[Any] = []
        if where.statuses:
            clauses.append(f"status IN ({', '.join('?' * len(where.statuses))})")
            parameters.extend(sorted(s.value for s in where.statuses))
        if where.job_type is not None:
            clauses.append("job_type = ?")
            parameters.append(where.job_type)
        if where.target_id is not None:
            clauses.append("target_id = ?")
            parameters.append(where.target_id)
        if where.due_before is not None:
            clauses.append("status = 'pending' AND run_at <= ?")
            parameters.append(to_micros(where.due_before))
        if where.static is not None:
            clauses.append("static = ?")
            parameters.append(1 if where.static else 0)
        if where.backfill_of is not None:
            clauses.append("json_extract(extras, '$.backfill_of.job_id') = ?")
            parameters.append(where.backfill_of)
        if cursor is not None:
            clauses.append("id > ?")
            parameters.append(decode_job_cursor(cursor))
        sql = _JOB_SELECT
        if clauses:
            sql += " WHERE " + " AND ".join(clauses)
        sql += " ORDER BY id LIMIT ?"
        parameters.append(limit + 1)
        jobs = [job_from_row(row) for row in await self._fetch(sql, parameters)]
        if len(jobs) > limit:
            del jobs[limit:]
            return Page(jobs, encode_job_cursor(jobs[-1].id))
        return Page(jobs, None)

    async def next_pending(
        self,
        after: tuple[datetime, str] | None,
        limit: int,
        *,
        only_type: str | None = None,
        skip_types: Collection[str] = (),
    ) -> list[Job]:
        check_limit(limit)
        where = ["status = 'pending'"]
        parameters: list[Any] = []
        if after is not None:
            where.append("(run_at, id) > (?, ?)")
            parameters += [to_micros(after[0]), after[1]]
        if only_type is not None:
            where.append("job_type = ?")
            parameters.append(only_type)
        if skip_types:
            where.append(f"job_type NOT IN ({', '.join('?' * len(skip_types))})")
            parameters += sorted(skip_types)
        # In (run_at, id) order along jobs_pending; the type filters are checked
        # on the way (they serve a window that reads past held-back types).
        rows = await self._fetch(
            f"{_JOB_SELECT} INDEXED BY jobs_pending WHERE {' AND '.join(where)}"
            " ORDER BY run_at, id LIMIT ?",
            (*parameters, limit),
        )
        return [job_from_row(row) for row in rows]

    async def jobs_in_status(self, status: JobStatus) -> list[Job]:
        rows = await self._fetch(f"{_JOB_SELECT} WHERE status = ? ORDER BY id", (status.value,))
        return [job_from_row(row) for row in rows]

    async def open_runs(self) -> list[Run]:
        rows = await self._fetch(f"{_RUN_SELECT} WHERE outcome IS NULL ORDER BY started_at, id")
        return [run_from_row(row) for row in rows]

    async def list_runs(self, where: RunFilter, limit: int, cursor: str | None = None) -> Page[Run]:
        check_limit(limit)
        clauses: list[str] = []
        parameters: list[Any] = []
        if where.job_id is not None:
            clauses.append("job_id = ?")
            parameters.append(where.job_id)
        if where.outcomes:
            clauses.append(f"outcome IN ({', '.join('?' * len(where.outcomes))})")
            parameters.extend(sorted(o.value for o in where.outcomes))
        if cursor is not None:
            clauses.append("(started_at, id) < (?, ?)")
            parameters.extend(decode_run_cursor(cursor))
        sql = _RUN_SELECT
        if clauses:
            sql += " WHERE " + " AND ".join(clauses)
        sql += " ORDER BY started_at DESC, id DESC LIMIT ?"
        parameters.append(limit + 1)
        runs = [run_from_row(row) for row in await self._fetch(sql, parameters)]
        if len(runs) > limit:
            del runs[limit:]
            last = runs[-1]
            return Page(runs, encode_run_cursor(to_micros(last.started_at), last.id))
        return Page(runs, None)

    async def count_by_status(self) -> dict[JobStatus, int]:
        rows = await self._fetch("SELECT status, count(*) FROM jobs GROUP BY status")
        return {JobStatus(status): count for status, count in rows}


def _segments(batch: list[_Request]) -> list[Segment]:
    """The statements of ``batch`` as few segments as possible, order kept per table.

    Job rows keep the order of the calls (an insert then an upsert of one job
    must stay in that order); adjacent calls of one kind share a statement.
    Runs only ever conflict with runs, so they all go last in one statement.
    """
    segments: list[Segment] = []
    run_rows: list[tuple[Any, ...]] = []
    for request in batch:
        if request.job_rows:
            sql, full = (
                (_JOB_INSERT, None) if request.kind == "insert" else (_JOB_UPSERT, _JOB_UPSERT_FULL)
            )
            if segments and segments[-1][0] == sql:
                segments[-1][2].extend(request.job_rows)
            else:
                segments.append((sql, full, list(request.job_rows)))
        run_rows.extend(request.run_rows)
    if run_rows:
        segments.append((_RUN_UPSERT, _RUN_UPSERT_FULL, run_rows))
    return segments


def _call(request: _Request) -> Call:
    """``request`` as one :class:`Call` of a write (see :mod:`.writer_process`)."""
    if request.kind == "delete":
        return Call(many_sql=request.delete_sql, many_rows=list(request.delete_rows))
    segments: list[Segment] = []
    if request.kind == "insert":
        segments.append((_JOB_INSERT, None, request.job_rows))
    elif request.job_rows:
        segments.append((_JOB_UPSERT, _JOB_UPSERT_FULL, request.job_rows))
    if request.run_rows:
        segments.append((_RUN_UPSERT, _RUN_UPSERT_FULL, request.run_rows))
    return Call(segments=segments)


def _reason(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


def sqlite_path_from_url(url: str) -> Path:
    """The database file a SQLite store URL names: the one grammar of such URLs.

    ``sqlite:`` then an optional ``//``, then the path: ``sqlite:///abs/path.db``
    and ``sqlite:/abs/path.db`` are absolute; ``sqlite://state/schedd.db`` and
    ``sqlite:state/schedd.db`` are relative (the config resolves them against its
    own directory, a caller of :func:`~nexus_schedd.store.open_store` against the
    working directory).
    """
    if not url.startswith("sqlite:"):
        raise StoreError(f"store URL {url!r} is not a sqlite: URL")
    rest = url.removeprefix("sqlite:").removeprefix("//")
    if not rest or rest.endswith("/"):
        raise StoreError(f"store URL {url!r} names no database file")
    return Path(rest)
