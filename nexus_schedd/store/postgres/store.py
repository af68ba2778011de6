"""The multi-node store: PostgreSQL through an asyncpg connection pool.

Several daemons share one database. Besides the :class:`Store` interface (with
the SQLite store's semantics, rows encoded the same way) it offers the
primitives the engine needs to share the schedule between nodes:

- :meth:`PostgresStore.claim_due` takes due jobs under a lease with
  ``FOR UPDATE SKIP LOCKED``, so two nodes never claim one job;
- :meth:`~PostgresStore.extend_leases` keeps the leases of running jobs alive,
  :meth:`~PostgresStore.release` gives unstarted claims back, and a
  :meth:`~PostgresStore.write` that moves a job out of ``running`` clears its lease;
- :meth:`~PostgresStore.take_over_expired` hands the running jobs of a dead node
  (lease expired) to a survivor, with the run that was open;
- :meth:`~PostgresStore.write_leased` replaces a job row only while the writing
  node still holds its lease, so a node that lost it cannot undo the new
  owner's work;
- inserts and writes that make a job due earlier send a notification in their
  own transaction, and :meth:`~PostgresStore.listen` delivers them, so nodes
  wake each other without polling.

Concurrent calls run on separate pooled connections, each in its own
transaction; PostgreSQL merges the WAL flushes of concurrent commits by itself,
so there is no group-commit queue here. Batches go to the server as one
``unnest`` statement per table instead of one statement per row, their rows as
one array of the table's row type (``job_row``, ``run_row``; schema version 7).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Awaitable, Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, TypeAlias, TypeVar, cast
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import anyio
import asyncpg
import structlog
from anyio.abc import TaskStatus
from asyncpg.pool import PoolConnectionProxy

from nexus_schedd.errors import InvalidSpec, JobExists, SchedulerError, StoreError
from nexus_schedd.model import Job, JobStatus, Run
from nexus_schedd.model.queries import JobFilter, Page, RunFilter
from nexus_schedd.store.base import Durability, Store
from nexus_schedd.store.keys import (
    check_limit,
    decode_job_cursor,
    decode_run_cursor,
    encode_job_cursor,
    encode_run_cursor,
    from_micros,
    to_micros,
)
from nexus_schedd.store.migrations import FINAL_STATUSES_SQL
from nexus_schedd.store.postgres.schema import (
    ADVISORY_LOCK_CLASS,
    check_schema_name,
    pending_migrations,
)
from nexus_schedd.store.rows import (
    JOB_COLUMNS,
    RUN_COLUMNS,
    job_from_row,
    job_row,
    run_from_row,
    run_row,
)

_log = structlog.get_logger("nexus_schedd.store.postgres")

T = TypeVar("T")

Connection: TypeAlias = "asyncpg.Connection[asyncpg.Record] | PoolConnectionProxy[asyncpg.Record]"

_STATUS = {s.value: s for s in JobStatus}


def _typed_columns(names: tuple[str, ...], types: str) -> tuple[tuple[str, str], ...]:
    """(column, PostgreSQL type) pairs in the shared row order ``names`` (rows.py);
    ``types`` is ``"name type, ..."`` and must type exactly those columns. They are
    the attributes of the row types batches are sent as (``job_row``, ``run_row``,
    made by schema migration 7; tests/store checks that they match)."""
    by_name = dict(part.split() for part in types.split(","))
    if set(by_name) != set(names):
        mismatch = sorted(set(by_name) ^ set(names))
        raise RuntimeError(f"PostgreSQL column types do not match the row shape: {mismatch}")
    return tuple((name, by_name[name]) for name in names)


_JOB_COLUMNS = _typed_columns(
    JOB_COLUMNS,
    "id text, name text, job_type text, target_id text, status text, run_at int8,"
    " scheduled_for int8, anchor_at int8, created_at int8, updated_at int8, payload text,"
    " recurrence text, priority int4, max_retries int4, retry_count int4,"
    " occurrence_count int8, timeout_s float8, misfire text, misfire_grace_s float8,"
    " overlap text, jitter_s float8, last_result text, static int2, paused_until int8,"
    " extras text",
)
_RUN_COLUMNS = _typed_columns(
    RUN_COLUMNS,
    "id text, job_id text, job_type text, scheduled_for int8, attempt int4, started_at int8,"
    " finished_at int8, outcome text, error text, output text, node text",
)


def _names(columns: tuple[tuple[str, str], ...], prefix: str = "") -> str:
    return ", ".join(f"{prefix}{name}" for name, _ in columns)


def _set_all(columns: tuple[tuple[str, str], ...]) -> str:
    return ", ".join(f"{name} = excluded.{name}" for name, _ in columns[1:])


_JOB_SELECT = f"SELECT {_names(_JOB_COLUMNS)} FROM jobs"
_RUN_SELECT = f"SELECT {_names(_RUN_COLUMNS)}, lease_lost FROM runs"
_JOB_INSERT = f"INSERT INTO jobs ({_names(_JOB_COLUMNS)}) SELECT * FROM unnest($1::job_row[])"
# An insert and its notification, one statement (so one implicit transaction).
_JOB_INSERT_NOTIFY = f"WITH added AS ({_JOB_INSERT}) SELECT pg_notify($2, $3)"
_RUN_CLOSE_OF = "SELECT id, outcome FROM runs WHERE id = ANY($1::text[])"
LATE_SUFFIX = "-late"
"""Id suffix of the row that keeps a result finished after its lease was lost."""


class _Parameters:
    """Numbers the ``$n`` placeholders of a statement as its parts are written."""

    def __init__(self) -> None:
        self.count = 0

    def next(self, cast: str = "") -> str:
        self.count += 1
        return f"${self.count}{cast}"

    def rows(self, row_type: str, alias: str) -> str:
        """``unnest`` of one parameter, an array of ``row_type``, as ``alias``."""
        return f"unnest({self.next(f'::{row_type}[]')}) AS {alias}"


@functools.cache
def _write_sql(*, jobs: bool, runs: bool, fenced: bool, held: bool) -> str:
    """The one statement of a checkpoint write (:meth:`PostgresStore._write`).

    One statement is one implicit transaction and one round trip; the round-6
    profile counted six per write before (BEGIN, a read of the rows' previous
    state, one upsert per table, COMMIT, the pool's reset). Parameters, in
    order: the job rows, the run rows (arrays of job_row, run_row); when fenced,
    the held ids (if any) and the fencing node; with jobs, the notification
    channel and this node's name.

    Result rows ``(kind, id)``: ``job`` for each job row written (fenced),
    ``held`` for each held job still running under the lease, ``skipped`` for
    each run the fence left alone (fenced), ``notified`` when a notification
    was sent.

    Lock order: job rows first, in id order (``locked``, which every later part
    depends on, so it runs to completion first), then run rows, as a take-over
    and a lease renewal take them; so none of them deadlock with a checkpoint.
    """
    parameters = _Parameters()
    ctes: list[str] = []
    selects: list[str] = []
    job_source = parameters.rows("job_row", "j") if jobs else ""
    run_source = parameters.rows("run_row", "r") if runs else ""
    job_rows = "$1::job_row[]"
    run_rows = f"${2 if jobs else 1}::run_row[]"
    if fenced and (jobs or held):
        held_ids = parameters.next("::text[]") if held else ""
        node = parameters.next("::text")
        # The jobs written and the held ones, read from the parameters they
        # are in (a separate id array costs the driver a check per element).
        lock_ids = " UNION ALL ".join(
            ([f"SELECT b.id FROM unnest({job_rows}) AS b"] if jobs else [])
            + ([f"SELECT unnest({held_ids})"] if held else [])
        )
        # The rows' state as they are when locked (after any transaction that
        # held them committed): the fence and the notification read it.
        ctes.append(
            "locked AS MATERIALIZED (SELECT id, status, run_at, lease_owner FROM jobs"
            f" WHERE id IN ({lock_ids}) ORDER BY id FOR NO KEY UPDATE)"
        )
        before = "locked"
        step = "locked"
        if held:
            selects.append(
                f"SELECT 'held'::text, id FROM locked WHERE id = ANY({held_ids})"
                f" AND status = 'running' AND lease_owner = {node}"
            )
    elif fenced:
        node = parameters.next("::text")
        before = step = ""
    else:
        node = ""
        before = "before"
        step = "written" if jobs else ""
        if jobs:
            ctes.append(
                "before AS (SELECT id, status, run_at FROM jobs"
                f" WHERE id IN (SELECT b.id FROM unnest({job_rows}) AS b))"
            )
    if jobs:
        # A job that stays running keeps its lease; one that leaves running drops it.
        upsert = (
            f"INSERT INTO jobs ({_names(_JOB_COLUMNS)}) SELECT {_names(_JOB_COLUMNS, 'j.')}"
            f" FROM {job_source}"
        )
        if fenced:
            upsert += (
                " WHERE j.id NOT IN (SELECT id FROM locked WHERE status <> 'running'"
                f" OR lease_owner IS DISTINCT FROM {node})"
            )
        upsert += (
            f" ON CONFLICT (id) DO UPDATE SET {_set_all(_JOB_COLUMNS)},"
            " lease_owner = CASE WHEN excluded.status = 'running' THEN jobs.lease_owner END,"
            " lease_expires_at = CASE WHEN excluded.status = 'running'"
            " THEN jobs.lease_expires_at END"
        )
        if fenced:
            upsert += f" WHERE jobs.status = 'running' AND jobs.lease_owner = {node}"
        ctes.append(f"written AS ({upsert} RETURNING jobs.id, jobs.status, jobs.run_at)")
        channel, sender = parameters.next("::text"), parameters.next("::text")
        # Sent when a job became pending or moved earlier (not for one that
        # stays pending at the same or a later time), in this transaction.
        ctes.append(
            f"notified AS (SELECT pg_notify({channel}, json_build_object("
            f"'earliest', min(w.run_at), 'node', {sender})::text)"
            f" FROM written AS w LEFT JOIN {before} AS b ON b.id = w.id"
            " WHERE w.status = 'pending' AND w.run_at IS NOT NULL"
            " AND NOT coalesce(b.status = 'pending' AND b.run_at <= w.run_at, false)"
            " HAVING count(*) > 0)"
        )
        if fenced:
            selects.insert(0, "SELECT 'job'::text, id FROM written")
        selects.append("SELECT 'notified'::text, NULL FROM notified")
    if runs:
        upsert = (
            f"INSERT INTO runs ({_names(_RUN_COLUMNS)}) SELECT {_names(_RUN_COLUMNS, 'r.')}"
            f" FROM {run_source}"
        )
        if step:
            # Always true; makes the job rows' step run first (the lock order above).
            upsert += f" WHERE (SELECT count(*) FROM {step}) >= 0"
        upsert += f" ON CONFLICT (id) DO UPDATE SET {_set_all(_RUN_COLUMNS)}"
        if fenced:
            # A run is written unless its row is closed differently (a retried
            # write, or the take-over's own record closing it the same way, is).
            upsert += (
                " WHERE runs.outcome IS NULL OR (runs.outcome, runs.finished_at)"
                " IS NOT DISTINCT FROM (excluded.outcome, excluded.finished_at)"
            )
            ctes.append(f"ran AS ({upsert} RETURNING runs.id)")
            # This node's own different close of a run another node closed (a
            # take-over's crashed) is kept as a row of its own, <id>-late.
            late_columns = ", ".join(
                f"r.id || '{LATE_SUFFIX}'" if name == "id" else f"r.{name}"
                for name, _ in _RUN_COLUMNS
            )
            ctes.append(
                f"late AS (INSERT INTO runs ({_names(_RUN_COLUMNS)}, lease_lost)"
                f" SELECT {late_columns}, true FROM {run_source}"
                f" WHERE r.outcome IS NOT NULL AND r.node = {node}"
                " AND r.id NOT IN (SELECT id FROM ran) ON CONFLICT (id) DO NOTHING)"
            )
            selects.append(
                f"SELECT 'skipped'::text, s.id FROM unnest({run_rows}) AS s"
                " WHERE s.id NOT IN (SELECT id FROM ran)"
            )
        elif ctes:
            ctes.append(f"ran AS ({upsert})")
        else:
            return upsert
    return "WITH " + ", ".join(ctes) + " " + " UNION ALL ".join(selects)


# take_over_expired closes the open runs it hands over in its own transaction,
# so a late write of the old owner can never land before the crash record.
_CLOSE_TAKEN_OVER = """
UPDATE runs SET outcome = 'crashed', finished_at = $2,
    error = 'node ' || node || ' lost its lease during this attempt; taken over by ' || $3
WHERE id = ANY($1::text[]) AND outcome IS NULL
"""
_LIVE_NAME_HOLDER = (
    f"SELECT id FROM jobs WHERE name = $1 AND status NOT IN {FINAL_STATUSES_SQL}"
    " AND id <> ALL($2::text[])"
)
_CLAIM_DUE = f"""
WITH due AS (
    SELECT id FROM jobs
    WHERE status = 'pending' AND run_at <= $1
    ORDER BY priority DESC, run_at, id
    LIMIT $2
    FOR UPDATE SKIP LOCKED
)
UPDATE jobs SET status = 'running', lease_owner = $3, lease_expires_at = $4, updated_at = $1
FROM due WHERE jobs.id = due.id
RETURNING {_names(_JOB_COLUMNS, "jobs.")}
"""
_TAKE_OVER = f"""
WITH expired AS (
    SELECT id FROM jobs
    WHERE status = 'running' AND lease_expires_at <= $1
    ORDER BY lease_expires_at, id
    LIMIT $2
    FOR UPDATE SKIP LOCKED
)
UPDATE jobs SET lease_owner = $3, lease_expires_at = $4
FROM expired WHERE jobs.id = expired.id
RETURNING {_names(_JOB_COLUMNS, "jobs.")}
"""
_OPEN_RUN_OF = f"""
SELECT DISTINCT ON (job_id) {_names(_RUN_COLUMNS)}, lease_lost FROM runs
WHERE job_id = ANY($1::text[]) AND outcome IS NULL
ORDER BY job_id, started_at DESC, id DESC
"""
_CLAIM_ONE = f"""
UPDATE jobs SET status = 'running', lease_owner = $2, lease_expires_at = $3, updated_at = $4
WHERE id = $1 AND status = 'pending'
RETURNING {_names(_JOB_COLUMNS)}
"""
# Row locks are taken in id order, like every batch write here (their rows are
# sorted by id), so a node's lease renewal and its own checkpoint never deadlock
# (PostgreSQL would abort one after deadlock_timeout, delaying the renewal).
_EXTEND = """
WITH held AS (
    SELECT id FROM jobs
    WHERE id = ANY($2::text[]) AND lease_owner = $1 AND status = 'running'
    ORDER BY id
    FOR UPDATE
)
UPDATE jobs SET lease_expires_at = $3 FROM held WHERE jobs.id = held.id
RETURNING jobs.id
"""
_RELEASE = """
WITH held AS (
    SELECT id FROM jobs
    WHERE id = ANY($2::text[]) AND lease_owner = $1 AND status = 'running'
    ORDER BY id
    FOR UPDATE
)
UPDATE jobs SET status = 'pending', lease_owner = NULL, lease_expires_at = NULL
FROM held WHERE jobs.id = held.id
RETURNING jobs.id, jobs.run_at
"""
# Pruning deletes in chunks, each its own transaction, so a large prune never
# holds locks (and the nodes' checkpoints) for long.
_PRUNE_CHUNK = 2000
_PRUNE_JOBS_PER_CHUNK = 200
_PRUNE_OLDER = """
DELETE FROM runs WHERE id IN (
    SELECT id FROM runs
    WHERE started_at < $1 AND finished_at < $1 AND outcome IS NOT NULL
    LIMIT $2
)
"""
_PRUNE_ALL_FINISHED = (
    "DELETE FROM runs WHERE id IN (SELECT id FROM runs WHERE outcome IS NOT NULL LIMIT $1)"
)
_PRUNE_BOUNDARIES = """
SELECT job_id, started_at, id FROM (
    SELECT job_id, started_at, id,
           row_number() OVER (PARTITION BY job_id ORDER BY started_at DESC, id DESC) AS rank
    FROM runs
    WHERE job_id IN (SELECT job_id FROM runs GROUP BY job_id HAVING count(*) > $1)
) AS ranked
WHERE rank = $1
"""
# The same for the jobs named in $2: index scans of runs_job_newest instead of
# the whole history.
_PRUNE_BOUNDARIES_OF = _PRUNE_BOUNDARIES.replace(
    "FROM runs GROUP BY", "FROM runs WHERE job_id = ANY($2::text[]) GROUP BY"
)
_PRUNE_BEYOND_NEWEST = """
DELETE FROM runs USING unnest($1::text[], $2::int8[], $3::text[]) AS b(job_id, started_at, id)
WHERE runs.job_id = b.job_id AND (runs.started_at, runs.id) < (b.started_at, b.id)
  AND runs.outcome IS NOT NULL
"""


ANALYZE_AFTER_ADDS = 10_000
"""Jobs added through one store before it refreshes the planner's statistics
of ``jobs`` itself (and then only once the table grew by a fifth since)."""

CONNECT_TIMEOUT_S = 10.0
COMMAND_TIMEOUT_S = 15.0
"""Per statement. A silent server (a partition, a stalled disk) fails a call
after this, so a control call answers with a StoreError well before a client's
default timeout (60 s, ``control.client.DEFAULT_TIMEOUT_S``) and "outcome
unknown" on the client stays the exception."""


@dataclass(frozen=True, slots=True)
class Wakeup:
    """A notification from another node (or this one) that the schedule changed.

    ``earliest`` is the earliest run_at the change made due. None means
    notifications may have been lost (the listening connection was re-made):
    re-read the store instead of trusting the in-memory heap.
    """

    earliest: datetime | None
    node: str


WakeupCallback = Callable[[Wakeup], object]
"""Called on the event loop for each :class:`Wakeup`; it must not block."""


def postgres_options_from_url(url: str) -> tuple[str, str]:
    """Split a ``postgresql://`` store URL into (DSN for the driver, schema).

    The schema is the ``schema`` query parameter (default ``public``); every
    other part of the URL goes to asyncpg unchanged.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("postgresql", "postgres"):
        raise StoreError(f"store URL {_redact(url)!r} is not a postgresql:// URL")
    query = parse_qsl(parts.query, keep_blank_values=True)
    schemas = [value for key, value in query if key == "schema"]
    if len(schemas) > 1:
        raise StoreError(f"store URL {_redact(url)!r} names more than one schema")
    rest = urlencode([(key, value) for key, value in query if key != "schema"])
    dsn = urlunsplit(parts._replace(query=rest))
    return dsn, check_schema_name(schemas[0] if schemas else "public")


def _redact(dsn: str) -> str:
    """``dsn`` without its password, for messages and logs."""
    parts = urlsplit(dsn)
    if parts.password is None:
        return dsn
    host = parts.netloc.rpartition("@")[2]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def _columns(rows: Sequence[Sequence[Any]], width: int) -> list[list[Any]]:
    """The rows as one list per column (the arrays ``unnest`` takes)."""
    if not rows:
        return [[] for _ in range(width)]
    return [list(column) for column in zip(*rows, strict=True)]


def _literal(status: str) -> str:
    """A job status as an SQL literal (only ever a JobStatus value)."""
    return "'" + _STATUS[status].value + "'"


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _deleted(status: str) -> int:
    """The row count of a ``DELETE n`` command tag."""
    return int(status.rsplit(" ", 1)[-1])


def _became_due_earlier(
    jobs: Iterable[Job], before: dict[str, tuple[str, int | None]]
) -> int | None:
    """The earliest run_at (micros) of ``jobs`` that became pending or moved earlier."""
    earliest: int | None = None
    for job in jobs:
        if job.status is not JobStatus.PENDING or job.run_at is None:
            continue
        run_at = to_micros(job.run_at)
        old = before.get(job.id)
        if old is not None and old[0] == "pending" and old[1] is not None and old[1] <= run_at:
            continue
        if earliest is None or run_at < earliest:
            earliest = run_at
    return earliest


class PostgresStore(Store):
    """Jobs and runs in one PostgreSQL schema, shared by every node.

    ``dsn`` is a ``postgresql://`` URL for asyncpg (no ``schema`` parameter:
    use :func:`postgres_options_from_url` on a store URL). ``schema`` is
    created and migrated on :meth:`open`. ``node`` names this daemon in the
    notifications it sends. ``durability="normal"`` turns ``synchronous_commit``
    off for this store's connections: a crash of the database server may then
    lose the last commits; ``"full"`` (default) waits for the WAL flush.
    """

    def __init__(
        self,
        dsn: str,
        *,
        schema: str = "public",
        pool_size: int = 10,
        node: str = "",
        durability: Durability = "full",
        connect_timeout_s: float = CONNECT_TIMEOUT_S,
        command_timeout_s: float = COMMAND_TIMEOUT_S,
    ) -> None:
        if durability not in ("full", "normal"):
            raise InvalidSpec("store.durability", f"must be 'full' or 'normal', not {durability!r}")
        if pool_size < 1:
            raise InvalidSpec("store.pool_size", "must be >= 1")
        self.dsn = dsn
        self.schema = check_schema_name(schema)
        self.pool_size = pool_size
        self.node = node
        self.durability: Durability = durability
        self.channel = f"nexus_schedd_{schema}"
        """The LISTEN/NOTIFY channel of this schema."""
        self._connect_timeout_s = connect_timeout_s
        self._command_timeout_s = command_timeout_s
        self._where = f"{_redact(dsn)} (schema {schema})"
        self._pool: asyncpg.Pool | None = None
        self._added_since_analyze = 0
        self._analyzed_rows = 0.0

    # -- lifecycle ------------------------------------------------------------------

    def _server_settings(self) -> dict[str, str]:
        return {
            "search_path": _quote_ident(self.schema),
            "synchronous_commit": "on" if self.durability == "full" else "off",
            "application_name": f"nexus-schedd {self.node}".strip(),
        }

    async def _connect(self) -> asyncpg.Connection:
        try:
            return await asyncpg.connect(
                self.dsn,
                timeout=self._connect_timeout_s,
                command_timeout=self._command_timeout_s,
                server_settings=self._server_settings(),
            )
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise StoreError(
                f"{self._where}: cannot connect to PostgreSQL: {_reason(exc)}"
            ) from None

    async def open(self) -> None:
        if self._pool is not None:
            return
        connection = await self._connect()
        try:
            await self._migrate(connection)
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
            raise StoreError(f"{self._where}: cannot open the store: {_reason(exc)}") from None
        finally:
            with anyio.CancelScope(shield=True):
                await _close_quietly(connection)
        try:
            self._pool = await asyncpg.create_pool(
                self.dsn,
                min_size=1,
                max_size=self.pool_size,
                timeout=self._connect_timeout_s,
                command_timeout=self._command_timeout_s,
                server_settings=self._server_settings(),
                reset=_keep_session,
            )
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise StoreError(
                f"{self._where}: cannot connect to PostgreSQL: {_reason(exc)}"
            ) from None
        _log.info("store_opened", store=self._where, durability=self.durability, node=self.node)

    async def _migrate(self, connection: Connection) -> None:
        """Create or upgrade the schema, one node at a time (advisory lock)."""
        lock = (ADVISORY_LOCK_CLASS, self.schema)
        await connection.execute("SELECT pg_advisory_lock($1, hashtext($2))", *lock)
        try:
            quoted = _quote_ident(self.schema)
            has_versions = await connection.fetchval(
                "SELECT to_regclass($1) IS NOT NULL", f"{quoted}.schema_migrations"
            )
            if has_versions:
                version = await connection.fetchval(
                    "SELECT coalesce(max(version), 0) FROM schema_migrations"
                )
            else:
                foreign = await connection.fetchval(
                    "SELECT to_regclass($1) IS NOT NULL OR to_regclass($2) IS NOT NULL",
                    f"{quoted}.jobs",
                    f"{quoted}.runs",
                )
                if foreign:
                    raise StoreError(
                        f"{self._where}: the schema holds jobs/runs tables that nexus-schedd "
                        "did not create (no schema_migrations); refusing to use it"
                    )
                version = 0
            for migration in pending_migrations(int(version), self._where):
                async with connection.transaction():
                    await connection.execute(f"CREATE SCHEMA IF NOT EXISTS {quoted}")
                    await connection.execute(
                        "CREATE TABLE IF NOT EXISTS schema_migrations ("
                        " version integer PRIMARY KEY,"
                        " description text NOT NULL,"
                        " applied_at timestamptz NOT NULL DEFAULT now())"
                    )
                    for statement in migration.statements:
                        await connection.execute(statement)
                    await connection.execute(
                        "INSERT INTO schema_migrations (version, description) VALUES ($1, $2)",
                        migration.version,
                        migration.description,
                    )
                _log.info(
                    "store_migrated",
                    store=self._where,
                    version=migration.version,
                    description=migration.description,
                )
        finally:
            with anyio.CancelScope(shield=True):
                await connection.execute("SELECT pg_advisory_unlock($1, hashtext($2))", *lock)

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            # Waits for the calls in flight to give their connections back.
            with anyio.CancelScope(shield=True):
                await pool.close()

    # -- plumbing -------------------------------------------------------------------

    def _require_pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise StoreError(f"{self._where}: the store is not open")
        return self._pool

    async def _transaction(self, action: str, body: Callable[[Connection], Awaitable[T]]) -> T:
        """Run ``body`` in one transaction on a pooled connection.

        Shielded: once started, a write commits or fails as a whole; a caller
        cancelled half-way cannot leave it undecided (``command_timeout_s``
        bounds a server that stopped answering).
        """
        pool = self._require_pool()
        with anyio.CancelScope(shield=True):
            try:
                async with pool.acquire() as connection, connection.transaction():
                    result = await body(connection)
            except SchedulerError:
                raise
            except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError) as exc:
                raise _write_failed(self._where, action, exc) from None
        return result

    async def _fetch(self, sql: str, *parameters: Any) -> list[asyncpg.Record]:
        pool = self._require_pool()
        try:
            return await pool.fetch(sql, *parameters)
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError) as exc:
            raise StoreError(
                f"{self._where}: read failed: {_reason(exc)}", permanent=_permanent(exc)
            ) from None

    def _wakeup_payload(self, earliest_us: int) -> str:
        return json.dumps({"earliest": earliest_us, "node": self.node}, separators=(",", ":"))

    async def _notify(self, connection: Connection, earliest_us: int) -> None:
        payload = self._wakeup_payload(earliest_us)
        await connection.execute("SELECT pg_notify($1, $2)", self.channel, payload)

    # -- writes ---------------------------------------------------------------------

    async def insert_jobs(self, jobs: Sequence[Job]) -> None:
        if not jobs:
            return
        rows = [job_row(j) for j in jobs]
        earliest = _became_due_earlier(jobs, {})
        if earliest is None:
            await self._guarded("insert", _JOB_INSERT, [rows], list(jobs))
        else:
            notify = [self.channel, self._wakeup_payload(earliest)]
            await self._guarded("insert", _JOB_INSERT_NOTIFY, [rows, *notify], list(jobs))
        self._added_since_analyze += len(jobs)
        if self._added_since_analyze >= max(ANALYZE_AFTER_ADDS, self._analyzed_rows / 5):
            await self._analyze_jobs()

    async def _analyze_jobs(self) -> None:
        """Refresh the planner's statistics of ``jobs`` after many adds.

        Without them (a new table, or a burst of adds before autovacuum's next
        look, up to a minute later) the planner takes ``status = 'pending'`` for
        0.5 % of the rows and claims by sorting every due job instead of
        walking ``jobs_claim``: 34 ms instead of 0.5 ms per claim of 32 jobs
        with 60,000 due (round 6). Only the columns the claim's plan reads.
        The add has committed already: a failure here is only logged.
        """
        self._added_since_analyze = 0
        try:
            await self._fetch("ANALYZE jobs (status, run_at, priority)")
            rows = await self._fetch("SELECT reltuples FROM pg_class WHERE oid = 'jobs'::regclass")
        except StoreError as exc:
            _log.warning("store_analyze_failed", error=exc.message)
            return
        self._analyzed_rows = float(rows[0][0]) if rows else 0.0

    async def write(self, jobs: Sequence[Job] = (), runs: Sequence[Run] = ()) -> None:
        await self._write(jobs, runs, None)

    async def write_leased(
        self,
        node: str,
        jobs: Sequence[Job] = (),
        runs: Sequence[Run] = (),
        held: Sequence[str] = (),
    ) -> set[str]:
        """Like :meth:`write`, but a job row is only replaced while ``node`` holds it.

        A job that exists and is not running under ``node``'s lease (taken over
        by another node after the lease expired, or cancelled through another
        node) is left as it is; the ids of those jobs are returned. New jobs and
        runs are written, but a run already closed is never closed differently:
        ``node``'s late result of a run another node closed (a take-over's
        ``crashed``) becomes a row of its own, ``<run id>-late`` with
        ``lease_lost`` set. The engine checkpoints the jobs it claimed with
        this, so a node that lost its lease cannot overwrite the new owner's
        state or the take-over's record.

        ``held`` names jobs whose stored row is already what ``node`` would write
        (a claimed job at its start: the claim made it running under the lease):
        they are checked and locked like written jobs, without a new row
        version, and returned among the refused ids when ``node`` lost them.
        """
        return await self._write(jobs, runs, node, held)

    async def _write(
        self,
        jobs: Sequence[Job],
        runs: Sequence[Run],
        fence: str | None,
        held: Sequence[str] = (),
    ) -> set[str]:
        if not jobs and not runs and not held:
            return set()
        # One upsert cannot touch a row twice: the last version of a job or run wins,
        # as it would with one statement per row.
        # Sorted by id: concurrent writers then lock shared rows in one order.
        unique_jobs = sorted({job.id: job for job in jobs}.values(), key=lambda job: job.id)
        unique_runs = sorted({run.id: run for run in runs}.values(), key=lambda run: run.id)
        job_ids = [job.id for job in unique_jobs]
        held_ids = sorted(set(held).difference(job_ids)) if fence is not None else []
        parameters: list[Any] = []
        if unique_jobs:
            parameters.append([job_row(j) for j in unique_jobs])
        if unique_runs:
            parameters.append([run_row(r) for r in unique_runs])
        if fence is not None:
            if held_ids:
                parameters.append(held_ids)
            parameters.append(fence)
        if unique_jobs:
            parameters += [self.channel, self.node]
        sql = _write_sql(
            jobs=bool(unique_jobs),
            runs=bool(unique_runs),
            fenced=fence is not None,
            held=bool(held_ids),
        )
        rows = await self._guarded("write", sql, parameters, unique_jobs)
        if fence is None:
            return set()
        answered: dict[str, set[str]] = {"job": set(), "held": set(), "skipped": set()}
        for kind, row_id in rows:
            if kind in answered:
                answered[kind].add(row_id)
        refused = set(job_ids).difference(answered["job"])
        refused.update(set(held_ids).difference(answered["held"]))
        if answered["skipped"]:
            await self._log_late_runs(
                [run for run in unique_runs if run.id in answered["skipped"]], fence
            )
        return refused

    async def _log_late_runs(self, skipped: list[Run], node: str) -> None:
        """Log the results ``node`` finished after another node closed their run.

        Invariant (issue 17, finding 2): a closed run row (an outcome set) is
        only rewritten by the same close (same outcome and finished_at: a retried
        write, or the take-over's own crash record, which fills in its text). A
        different close of a run ``node`` itself ran, arriving after another node
        closed it (the take-over's ``crashed``), is the attempt's late result:
        the write added it as its own row, id ``<run id>-late``, flagged
        ``lease_lost``. Any other different close, and any attempt to reopen a
        closed run, was dropped.
        """
        late = [run for run in skipped if run.outcome is not None and run.node == node]
        if not late:
            return
        try:
            recorded = {
                record[0]: record[1]
                for record in await self._fetch(_RUN_CLOSE_OF, [run.id for run in late])
            }
        except StoreError:
            recorded = {}  # only for the log: the write itself committed
        for run in late:
            assert run.outcome is not None
            _log.warning(
                "run_finished_after_lease_lost",
                run_id=run.id,
                job_id=run.job_id,
                outcome=run.outcome.value,
                recorded=recorded.get(run.id),
            )

    async def _guarded(
        self, action: str, sql: str, parameters: Sequence[Any], jobs: list[Job]
    ) -> list[asyncpg.Record]:
        """Run one job-writing statement (its own transaction), reporting a
        live-name clash as JobExists."""
        pool = self._require_pool()
        with anyio.CancelScope(shield=True):
            try:
                return await pool.fetch(sql, *parameters)
            except asyncpg.UniqueViolationError as exc:
                error = exc
            except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError) as exc:
                raise _write_failed(self._where, action, exc) from None
        raise await self._unique_error(error, jobs) from None

    async def _unique_error(
        self, exc: asyncpg.UniqueViolationError, jobs: Sequence[Job]
    ) -> SchedulerError:
        """The user-facing error for a call rolled back on a unique index."""
        constraint = getattr(exc, "constraint_name", None)
        if constraint == "jobs_pkey":
            return StoreError(f"{self._where}: a job with the same id already exists")
        if constraint == "jobs_live_name":
            conflict = await self._name_conflict(jobs)
            if conflict is not None:
                return conflict
        return StoreError(f"{self._where}: write failed, nothing was changed: {_reason(exc)}")

    async def _name_conflict(self, jobs: Sequence[Job]) -> JobExists | None:
        ids = [job.id for job in jobs]
        seen: dict[str, str] = {}
        for job in jobs:
            if job.name is None or job.status.is_final:
                continue
            if job.name in seen:
                return JobExists(job.name, seen[job.name])
            seen[job.name] = job.id
            holders = await self._fetch(_LIVE_NAME_HOLDER, job.name, ids)
            if holders:
                return JobExists(job.name, holders[0][0])
        return None

    async def prune_runs(
        self, older_than: datetime, keep_per_job: int, jobs: Collection[str] | None = None
    ) -> int:
        if keep_per_job < 0:
            raise InvalidSpec("history.keep_per_job", "must be >= 0")
        if keep_per_job == 0:
            return await self._delete_in_chunks(_PRUNE_ALL_FINISHED, _PRUNE_CHUNK)
        deleted = await self._delete_in_chunks(_PRUNE_OLDER, to_micros(older_than), _PRUNE_CHUNK)
        if jobs is None:
            boundaries = await self._fetch(_PRUNE_BOUNDARIES, keep_per_job)
        elif jobs:
            boundaries = await self._fetch(_PRUNE_BOUNDARIES_OF, keep_per_job, list(jobs))
        else:
            boundaries = []
        for offset in range(0, len(boundaries), _PRUNE_JOBS_PER_CHUNK):
            chunk = _columns(
                [tuple(b) for b in boundaries[offset : offset + _PRUNE_JOBS_PER_CHUNK]], 3
            )
            deleted += await self._delete(_PRUNE_BEYOND_NEWEST, *chunk)
        return deleted

    async def _delete(self, sql: str, *parameters: Any) -> int:
        async def body(connection: Connection) -> int:
            return _deleted(await connection.execute(sql, *parameters))

        return await self._transaction("prune", body)

    async def _delete_in_chunks(self, sql: str, *parameters: Any) -> int:
        """Run a ``LIMIT chunk`` delete (chunk is the last parameter) until nothing is left."""
        deleted = 0
        while True:
            count = await self._delete(sql, *parameters)
            deleted += count
            if count < parameters[-1]:
                return deleted

    # -- multi-node primitives ------------------------------------------------------

    async def claim_due(self, node: str, now: datetime, limit: int, lease_s: float) -> list[Job]:
        """Claim up to ``limit`` due pending jobs for ``node`` until ``now + lease_s``.

        In one transaction: the due jobs (highest priority first, then earliest
        run_at, then id) that no other transaction holds are set ``running``
        with this node's lease, and returned in that order. Two nodes claiming
        at once never get the same job (``FOR UPDATE SKIP LOCKED``).
        """
        check_limit(limit)
        if lease_s <= 0:
            raise InvalidSpec("lease_s", "must be > 0")
        now_us = to_micros(now)
        until_us = to_micros(now + timedelta(seconds=lease_s))

        # One statement, its own transaction: no BEGIN and COMMIT round trips.
        rows = await self._guarded("claim", _CLAIM_DUE, (now_us, limit, node, until_us), [])
        claimed = [_job(row) for row in rows]
        claimed.sort(key=lambda j: (-j.priority, to_micros(j.run_at or now), j.id))
        return claimed

    async def claim_job(self, node: str, job_id: str, now: datetime, lease_s: float) -> Job | None:
        """Claim one pending job for ``node`` whether due or not (a trigger runs it now).

        Returns it, now ``running`` under the lease, or None when it is not pending
        (claimed by another node, paused, final or unknown).
        """
        if lease_s <= 0:
            raise InvalidSpec("lease_s", "must be > 0")
        until_us = to_micros(now + timedelta(seconds=lease_s))

        rows = await self._guarded(
            "claim", _CLAIM_ONE, (job_id, node, until_us, to_micros(now)), []
        )
        return _job(rows[0]) if rows else None

    async def extend_leases(self, node: str, job_ids: Sequence[str], until: datetime) -> set[str]:
        """Extend ``node``'s leases on ``job_ids`` to ``until``.

        Returns the ids whose lease was extended; a running job missing from it
        is no longer this node's (taken over after its lease expired, or moved
        out of ``running`` by another node): stop treating it as ours.
        """
        if not job_ids:
            return set()

        rows = await self._guarded(
            "extend leases", _EXTEND, (node, list(job_ids), to_micros(until)), []
        )
        return {row[0] for row in rows}

    async def release(self, node: str, job_ids: Sequence[str]) -> set[str]:
        """Give claimed jobs that ``node`` did not start back: pending again, no lease.

        Only jobs still running under ``node``'s lease change; their ids are
        returned, and other nodes are notified that they are due. A job that ran
        is not released but written (a write leaving ``running`` drops the lease).
        """
        if not job_ids:
            return set()

        async def body(connection: Connection) -> set[str]:
            rows = await connection.fetch(_RELEASE, node, list(job_ids))
            due = [row[1] for row in rows if row[1] is not None]
            if due:
                await self._notify(connection, min(due))
            return {row[0] for row in rows}

        return await self._transaction("release", body)

    async def take_over_expired(
        self, node: str, now: datetime, limit: int, lease_s: float
    ) -> list[tuple[Job, Run | None]]:
        """Take over up to ``limit`` running jobs whose lease expired by ``now``.

        Their node died (or lost the database for longer than its lease). Each
        job moves to ``node`` with a lease until ``now + lease_s`` and comes with
        its open run as it was (no outcome yet), if any, so the engine records
        that run as ``crashed`` and retries per policy. The store closes those
        runs as ``crashed`` (finished at ``now``) in the same transaction, so the
        old owner's late result can never overwrite the crash record, however the
        writes interleave. Claimed atomically: two survivors never take the same job.
        """
        check_limit(limit)
        if lease_s <= 0:
            raise InvalidSpec("lease_s", "must be > 0")
        now_us = to_micros(now)
        until_us = to_micros(now + timedelta(seconds=lease_s))

        async def body(connection: Connection) -> list[tuple[Job, Run | None]]:
            jobs = [
                _job(row)
                for row in await connection.fetch(_TAKE_OVER, now_us, limit, node, until_us)
            ]
            if not jobs:
                return []
            open_runs = {
                run.job_id: run
                for run in (
                    _run(row) for row in await connection.fetch(_OPEN_RUN_OF, [j.id for j in jobs])
                )
            }
            if open_runs:
                await connection.execute(
                    _CLOSE_TAKEN_OVER, sorted(run.id for run in open_runs.values()), now_us, node
                )
            return [(job, open_runs.get(job.id)) for job in sorted(jobs, key=lambda j: j.id)]

        return await self._transaction("take over", body)

    async def next_due_at(self) -> datetime | None:
        """The earliest run_at of any pending job (a node sleeps until then), or None."""
        rows = await self._fetch("SELECT min(run_at) FROM jobs WHERE status = 'pending'")
        value = rows[0][0]
        return None if value is None else from_micros(value)

    async def next_lease_expiry(self) -> datetime | None:
        """The earliest lease expiry among running jobs (when a take-over may be due), or None."""
        rows = await self._fetch("SELECT min(lease_expires_at) FROM jobs WHERE status = 'running'")
        value = rows[0][0]
        return None if value is None else from_micros(value)

    async def lease_of(self, job_id: str) -> tuple[str, datetime] | None:
        """The (node, expiry) lease on a job, or None when it has none."""
        rows = await self._fetch(
            "SELECT lease_owner, lease_expires_at FROM jobs WHERE id = $1", job_id
        )
        if not rows or rows[0][0] is None or rows[0][1] is None:
            return None
        return rows[0][0], from_micros(rows[0][1])

    async def notify_changed(self, earliest: datetime) -> None:
        """Tell every listening node that a job is due at ``earliest``.

        Inserts, writes and releases already notify in their own transaction;
        this is for changes made outside the store's write methods.
        """

        async def body(connection: Connection) -> None:
            await self._notify(connection, to_micros(earliest))

        await self._transaction("notify", body)

    async def listen(
        self,
        callback: WakeupCallback,
        *,
        reconnect_delay_s: float = 1.0,
        task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Deliver this schema's notifications to ``callback`` until cancelled.

        Start it with ``await task_group.start(store.listen, callback)``: it
        reports started once LISTEN is in effect (a failure to connect then is a
        StoreError). It holds its own connection, outside the pool. When that
        connection is lost it reconnects (delay doubling up to 30 s) and then
        calls ``callback(Wakeup(None, ""))``: notifications sent meanwhile are
        lost, so the node must re-read the store.
        """
        delay = reconnect_delay_s
        started = False
        while True:
            lost = anyio.Event()
            failed = False
            try:
                connection = await self._connect()
            except StoreError as exc:
                if not started:
                    raise
                _log.warning("store_listener_reconnect_failed", error=exc.message, delay_s=delay)
                await anyio.sleep(delay)
                delay = min(delay * 2, 30.0)
                continue
            try:

                def on_notification(
                    _connection: object, _pid: int, _channel: str, payload: object
                ) -> None:
                    callback(_decode_wakeup(payload))

                connection.add_termination_listener(lambda _connection, lost=lost: lost.set())
                await connection.add_listener(self.channel, on_notification)
                if started:
                    _log.info("store_listener_reconnected", channel=self.channel)
                    callback(Wakeup(None, ""))
                else:
                    started = True
                    task_status.started()
                delay = reconnect_delay_s
                await lost.wait()
                _log.warning("store_listener_lost", channel=self.channel)
            except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
                if not started:
                    raise StoreError(f"{self._where}: cannot listen: {_reason(exc)}") from None
                _log.warning("store_listener_failed", error=_reason(exc), delay_s=delay)
                failed = True
            finally:
                with anyio.CancelScope(shield=True):
                    await _close_quietly(connection)
            if failed:
                await anyio.sleep(delay)
                delay = min(delay * 2, 30.0)

    # -- reads ----------------------------------------------------------------------

    async def get_job(self, job_id: str) -> Job | None:
        rows = await self._fetch(f"{_JOB_SELECT} WHERE id = $1", job_id)
        return next((_job(row) for row in rows), None)

    async def get_job_by_name(self, name: str, *, include_final: bool = False) -> Job | None:
        rows = await self._fetch(
            f"{_JOB_SELECT} WHERE name = $1 AND status NOT IN {FINAL_STATUSES_SQL}", name
        )
        live = next((_job(row) for row in rows), None)
        if live is not None or not include_final:
            return live
        rows = await self._fetch(f"{_JOB_SELECT} WHERE name = $1 ORDER BY id DESC LIMIT 1", name)
        return next((_job(row) for row in rows), None)

    async def list_jobs(self, where: JobFilter, limit: int, cursor: str | None = None) -> Page[Job]:
        check_limit(limit)
        clauses: list[str] = []
        parameters: list[Any] = []

        def parameter(value: Any) -> str:
            parameters.append(value)
            return f"${len(parameters)}"

        if where.statuses:
            statuses = sorted(s.value for s in where.statuses)
            # Literals (enum values), not a parameter: the planner can then prove
            # that the partial index jobs_status covers them.
            clauses.append(f"status IN ({', '.join(_literal(s) for s in statuses)})")
        if where.job_type is not None:
            clauses.append(f"job_type = {parameter(where.job_type)}")
        if where.target_id is not None:
            clauses.append(f"target_id = {parameter(where.target_id)}")
        if where.due_before is not None:
            clauses.append(
                f"status = 'pending' AND run_at <= {parameter(to_micros(where.due_before))}"
            )
        if where.backfill_of is not None:
            clauses.append(
                f"(extras::jsonb -> 'backfill_of' ->> 'job_id') = {parameter(where.backfill_of)}"
            )
        if cursor is not None:
            clauses.append(f"id > {parameter(decode_job_cursor(cursor))}")
        sql = _JOB_SELECT
        if clauses:
            sql += " WHERE " + " AND ".join(clauses)
        sql += f" ORDER BY id LIMIT {parameter(limit + 1)}"
        jobs = [_job(row) for row in await self._fetch(sql, *parameters)]
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
            where.append(f"(run_at, id) > (${len(parameters) + 1}, ${len(parameters) + 2})")
            parameters += [to_micros(after[0]), after[1]]
        if only_type is not None:
            parameters.append(only_type)
            where.append(f"job_type = ${len(parameters)}")
        if skip_types:
            parameters.append(sorted(skip_types))
            where.append(f"job_type <> ALL(${len(parameters)}::text[])")
        parameters.append(limit)
        rows = await self._fetch(
            f"{_JOB_SELECT} WHERE {' AND '.join(where)} ORDER BY run_at, id LIMIT ${len(parameters)}",
            *parameters,
        )
        return [_job(row) for row in rows]

    async def jobs_in_status(self, status: JobStatus) -> list[Job]:
        # A literal, as in list_jobs: the partial index jobs_status applies.
        rows = await self._fetch(
            f"{_JOB_SELECT} WHERE status = {_literal(status.value)} ORDER BY id"
        )
        return [_job(row) for row in rows]

    async def open_runs(self) -> list[Run]:
        rows = await self._fetch(f"{_RUN_SELECT} WHERE outcome IS NULL ORDER BY started_at, id")
        return [_run(row) for row in rows]

    async def list_runs(self, where: RunFilter, limit: int, cursor: str | None = None) -> Page[Run]:
        check_limit(limit)
        clauses: list[str] = []
        parameters: list[Any] = []

        def parameter(value: Any) -> str:
            parameters.append(value)
            return f"${len(parameters)}"

        if where.job_id is not None:
            clauses.append(f"job_id = {parameter(where.job_id)}")
        if where.outcomes:
            outcomes = sorted(o.value for o in where.outcomes)
            clauses.append(f"outcome = ANY({parameter(outcomes)}::text[])")
        if cursor is not None:
            started_us, run_id = decode_run_cursor(cursor)
            clauses.append(f"(started_at, id) < ({parameter(started_us)}, {parameter(run_id)})")
        sql = _RUN_SELECT
        if clauses:
            sql += " WHERE " + " AND ".join(clauses)
        sql += f" ORDER BY started_at DESC, id DESC LIMIT {parameter(limit + 1)}"
        runs = [_run(row) for row in await self._fetch(sql, *parameters)]
        if len(runs) > limit:
            del runs[limit:]
            last = runs[-1]
            return Page(runs, encode_run_cursor(to_micros(last.started_at), last.id))
        return Page(runs, None)

    async def count_by_status(self) -> dict[JobStatus, int]:
        rows = await self._fetch("SELECT status, count(*) FROM jobs GROUP BY status")
        return {_STATUS[status]: count for status, count in rows}


def _job(row: asyncpg.Record) -> Job:
    return job_from_row(cast(Sequence[Any], row))


def _run(row: asyncpg.Record) -> Run:
    values = tuple(row)
    run = run_from_row(values[: len(_RUN_COLUMNS)])
    # The lease_lost column follows the shared row shape (rows.py has no such column).
    return replace(run, lease_lost=True) if values[len(_RUN_COLUMNS)] else run


def _decode_wakeup(payload: object) -> Wakeup:
    """A notification's payload as a Wakeup; anything unreadable asks for a re-read."""
    try:
        data = json.loads(str(payload))
        earliest, node = data["earliest"], data["node"]
        if isinstance(earliest, int) and not isinstance(earliest, bool) and isinstance(node, str):
            return Wakeup(from_micros(earliest), node)
    except (ValueError, TypeError, KeyError, OverflowError):
        pass
    return Wakeup(None, "")


async def _close_quietly(connection: asyncpg.Connection) -> None:
    """Close a connection, giving up (and dropping it) if the server does not answer."""
    if connection.is_closed():
        return
    try:
        await connection.close(timeout=5)
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
        connection.terminate()


async def _keep_session(connection: asyncpg.Connection) -> None:
    """The pool's reset of a connection given back: nothing to undo.

    asyncpg's default sends ``SELECT pg_advisory_unlock_all(); CLOSE ALL;
    UNLISTEN *; RESET ALL`` on every release: a fifth of the statements of a
    node in the round-6 profile. Pooled connections here never change their
    session: no SET, LISTEN, advisory lock or cursor (the migration and the
    listener use connections of their own). The pool still rolls back a
    transaction left open before calling this.
    """


def _reason(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


_PERMANENT = (
    asyncpg.InsufficientPrivilegeError,
    asyncpg.UndefinedTableError,
    asyncpg.UndefinedColumnError,
    asyncpg.InvalidSchemaNameError,
    asyncpg.InvalidCatalogNameError,
)
"""Server errors that retrying cannot cure: the schema changed or vanished under
the daemon, or its user lost a privilege (see ``StoreError.permanent``)."""


def _permanent(exc: BaseException) -> bool:
    return isinstance(exc, _PERMANENT)


def _write_failed(where: str, action: str, exc: BaseException) -> StoreError:
    """The StoreError of a failed write transaction, saying whether it changed anything.

    An error the server reported rolled the transaction back. A lost connection
    or a timeout (``command_timeout_s``) may have struck after COMMIT was sent:
    then the change may or may not have been made, and the message says so.
    """
    if isinstance(exc, asyncpg.PostgresError):
        return StoreError(
            f"{where}: {action} failed, nothing was changed: {_reason(exc)}",
            permanent=_permanent(exc),
        )
    return StoreError(
        f"{where}: {action} failed, outcome unknown (the connection was lost or timed out;"
        f" the change may have been made): {_reason(exc)}"
    )


__all__ = [
    "Durability",
    "PostgresStore",
    "Wakeup",
    "WakeupCallback",
    "postgres_options_from_url",
]
