"""The PostgreSQL schema and its forward migrations.

The applied migrations are rows of ``schema_migrations`` in the store's schema
(one row per version, so a migration applied twice would fail on its primary
key instead of going unnoticed). Migrations run under a session advisory lock
keyed on the schema, so nodes that start together take turns: the first
creates the schema, the others find it current.

Columns use the encoding of the SQLite store: instants are ``bigint``
microseconds since the Unix epoch (UTC), JSON is compact text. Rows convert with
the same functions on both backends, and pagination keys compare the same way.
Two columns exist only here: ``lease_owner`` and ``lease_expires_at`` (the
multi-node claim of a running job; the model's ``Job`` has no lease fields).
"""

from __future__ import annotations

import re

from nexus_schedd.errors import StoreError
from nexus_schedd.store.migrations import FINAL_STATUSES_SQL, Migration

ADVISORY_LOCK_CLASS = 0x6E78_7364
"""First key of ``pg_advisory_lock(int4, int4)`` ("nxsd"); the second is ``hashtext(schema)``."""

SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,46}")
"""Schema names the store accepts: plain lower-case identifiers, short enough that the
notification channel ``nexus_schedd_<schema>`` stays within PostgreSQL's 63 bytes."""

MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        version=1,
        description="jobs and runs with leases",
        statements=(
            """
            CREATE TABLE jobs (
                id text NOT NULL PRIMARY KEY,
                name text,
                job_type text NOT NULL,
                target_id text,
                status text NOT NULL,
                run_at bigint,
                scheduled_for bigint,
                anchor_at bigint NOT NULL,
                created_at bigint NOT NULL,
                updated_at bigint NOT NULL,
                payload text NOT NULL,
                recurrence text,
                priority integer NOT NULL,
                max_retries integer NOT NULL,
                retry_count integer NOT NULL,
                occurrence_count bigint NOT NULL,
                timeout_s double precision,
                misfire text NOT NULL,
                misfire_grace_s double precision NOT NULL,
                overlap text NOT NULL,
                jitter_s double precision NOT NULL,
                last_result text,
                static smallint NOT NULL,
                lease_owner text,
                lease_expires_at bigint
            )
            """,
            # The engine's heap window and next_due_at: pending jobs by (run_at, id).
            "CREATE INDEX jobs_pending ON jobs (run_at, id) WHERE status = 'pending'",
            # claim_due's order when more jobs are due than a node takes at once.
            "CREATE INDEX jobs_claim ON jobs (priority DESC, run_at, id) WHERE status = 'pending'",
            # Names are unique among jobs that are not final (reported as JobExists).
            f"""
            CREATE UNIQUE INDEX jobs_live_name ON jobs (name)
            WHERE name IS NOT NULL AND status NOT IN {FINAL_STATUSES_SQL}
            """,
            "CREATE INDEX jobs_status ON jobs (status, id)",
            "CREATE INDEX jobs_job_type ON jobs (job_type, id)",
            "CREATE INDEX jobs_target ON jobs (target_id, id) WHERE target_id IS NOT NULL",
            # take_over_expired: running jobs by lease expiry.
            "CREATE INDEX jobs_leases ON jobs (lease_expires_at) WHERE status = 'running'",
            """
            CREATE TABLE runs (
                id text NOT NULL PRIMARY KEY,
                job_id text NOT NULL,
                job_type text NOT NULL,
                scheduled_for bigint NOT NULL,
                attempt integer NOT NULL,
                started_at bigint NOT NULL,
                finished_at bigint,
                outcome text,
                error text,
                output text,
                node text NOT NULL
            )
            """,
            "CREATE INDEX runs_newest ON runs (started_at, id)",
            "CREATE INDEX runs_job_newest ON runs (job_id, started_at, id)",
            "CREATE INDEX runs_open ON runs (job_id, started_at) WHERE outcome IS NULL",
        ),
    ),
    Migration(
        version=2,
        description="names of final jobs",
        statements=(
            # GetJob by name finds a final job too (the newest that had the name).
            "CREATE INDEX jobs_name ON jobs (name, id) WHERE name IS NOT NULL",
        ),
    ),
    Migration(
        version=3,
        description="runs finished after their lease was lost",
        statements=(
            # A node cut off for longer than its lease may finish an attempt the
            # take-over already recorded crashed: its result is a row of its own.
            "ALTER TABLE runs ADD COLUMN lease_lost boolean NOT NULL DEFAULT false",
        ),
    ),
    Migration(
        version=4,
        description="pause until",
        statements=(
            # When a paused job resumes by itself (SPEC 15); null otherwise.
            "ALTER TABLE jobs ADD COLUMN paused_until int8",
        ),
    ),
    Migration(
        version=5,
        description="follow-ups, trace context, backfill and notification marks",
        statements=(
            # JSON of the job's JobExtras (SPEC 15); null for most jobs.
            "ALTER TABLE jobs ADD COLUMN extras text",
        ),
    ),
    Migration(
        version=6,
        description="less index work per run: byte-order keys, narrower indexes",
        statements=(
            # Keys compare byte by byte, as SQLite's BINARY collation does (the
            # same order for the ids nexus-schedd makes): B-tree comparisons
            # through the database's locale (strcoll) were 9 % of the backends'
            # CPU per run in the round-6 profile (docs/performance.md).
            """
            ALTER TABLE jobs
                ALTER COLUMN id TYPE text COLLATE "C",
                ALTER COLUMN name TYPE text COLLATE "C",
                ALTER COLUMN job_type TYPE text COLLATE "C",
                ALTER COLUMN target_id TYPE text COLLATE "C",
                ALTER COLUMN status TYPE text COLLATE "C"
            """,
            """
            ALTER TABLE runs
                ALTER COLUMN id TYPE text COLLATE "C",
                ALTER COLUMN job_id TYPE text COLLATE "C"
            """,
            # Pending and running jobs have indexes of their own (jobs_pending,
            # jobs_claim, jobs_leases); leaving them out of this one spares a
            # run two of its three insertions into it (the add, the claim).
            "DROP INDEX jobs_status",
            "CREATE INDEX jobs_status ON jobs (status, id) WHERE status NOT IN ('pending', 'running')",
            # Open runs are found by job (runs_job_newest) when a node takes
            # over; without an index on outcome, a run's finish can be a HOT
            # update (no index insertions) when its page has room, which the
            # fill factor keeps for it.
            "DROP INDEX runs_open",
            "ALTER TABLE runs SET (fillfactor = 80)",
        ),
    ),
    Migration(
        version=7,
        description="row types for batch writes",
        statements=(
            # A batch goes to the server as one array of these rows per table
            # instead of one array per column: the driver checks each array
            # element in Python, which cost the node 9 us per run in the round-6
            # profile; a row array is checked per row (docs/performance.md).
            # Attributes in the order of store/rows.py's JOB_COLUMNS and
            # RUN_COLUMNS, keys with the tables' collation.
            """
            CREATE TYPE job_row AS (
                id text COLLATE "C",
                name text COLLATE "C",
                job_type text COLLATE "C",
                target_id text COLLATE "C",
                status text COLLATE "C",
                run_at bigint,
                scheduled_for bigint,
                anchor_at bigint,
                created_at bigint,
                updated_at bigint,
                payload text,
                recurrence text,
                priority integer,
                max_retries integer,
                retry_count integer,
                occurrence_count bigint,
                timeout_s double precision,
                misfire text,
                misfire_grace_s double precision,
                overlap text,
                jitter_s double precision,
                last_result text,
                static smallint,
                paused_until bigint,
                extras text
            )
            """,
            """
            CREATE TYPE run_row AS (
                id text COLLATE "C",
                job_id text COLLATE "C",
                job_type text,
                scheduled_for bigint,
                attempt integer,
                started_at bigint,
                finished_at bigint,
                outcome text,
                error text,
                output text,
                node text
            )
            """,
        ),
    ),
    Migration(
        version=8,
        description="room on each runs page for its runs' finishes",
        statements=(
            # A run is inserted at its start and updated once at its finish,
            # which adds its outcome and end time. The update is HOT (no
            # index insertions) only when the new version fits on the same
            # page: at a fill factor of 80, inserts left room for about a third
            # of their page's finishes (0.37 HOT updates per run); at 50, for
            # nearly all (0.95), and the backends' CPU per run fell by about a
            # tenth (docs/performance.md, round 6, stop 38). Pages written
            # before keep their layout; new pages use the new factor.
            "ALTER TABLE runs SET (fillfactor = 50)",
        ),
    ),
)

SCHEMA_VERSION = MIGRATIONS[-1].version
"""The schema version this code writes."""


def check_schema_name(schema: str) -> str:
    """Return ``schema`` if the store accepts it as a schema name, else raise StoreError."""
    if not isinstance(schema, str) or SCHEMA_NAME.fullmatch(schema) is None:
        raise StoreError(
            f"PostgreSQL schema {schema!r}: use a lower-case identifier of at most 47 "
            "characters (letters, digits, underscores; not starting with a digit)"
        )
    return schema


def pending_migrations(version: int, where: str) -> tuple[Migration, ...]:
    """The migrations a schema at ``version`` still needs; StoreError if it is newer."""
    if version > SCHEMA_VERSION:
        raise StoreError(
            f"{where}: schema version {version} is newer than this nexus-schedd "
            f"({SCHEMA_VERSION}); upgrade nexus-schedd"
        )
    return tuple(m for m in MIGRATIONS if m.version > version)
