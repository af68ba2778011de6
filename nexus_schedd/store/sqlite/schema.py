"""The SQLite schema and its forward migrations, versioned with ``PRAGMA user_version``.

Migration N brings a database from version N-1 to N. A new database runs them
all; an older one runs those it lacks, each in its own transaction together
with the bump of ``user_version``, so a crash mid-upgrade leaves a database at
one consistent version. Never edit a released migration: append a new one.

Instants are INTEGER microseconds since the Unix epoch (UTC): they sort
correctly, compare in the index without parsing, and convert back to a
``datetime`` with one addition.
"""

from __future__ import annotations

from nexus_schedd.errors import StoreError
from nexus_schedd.store.migrations import FINAL_STATUSES_SQL, Migration

MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        version=1,
        description="jobs and runs",
        statements=(
            """
            CREATE TABLE jobs (
                id TEXT NOT NULL PRIMARY KEY,
                name TEXT,
                job_type TEXT NOT NULL,
                target_id TEXT,
                status TEXT NOT NULL,
                run_at INTEGER,
                scheduled_for INTEGER,
                anchor_at INTEGER NOT NULL,
                created_at INTEGER NOT NULL,
                updated_at INTEGER NOT NULL,
                payload TEXT NOT NULL,
                recurrence TEXT,
                priority INTEGER NOT NULL,
                max_retries INTEGER NOT NULL,
                retry_count INTEGER NOT NULL,
                occurrence_count INTEGER NOT NULL,
                timeout_s REAL,
                misfire TEXT NOT NULL,
                misfire_grace_s REAL NOT NULL,
                overlap TEXT NOT NULL,
                jitter_s REAL NOT NULL,
                last_result TEXT,
                static INTEGER NOT NULL
            )
            """,
            # The engine's heap window: pending jobs by (run_at, id).
            "CREATE INDEX jobs_pending ON jobs (run_at, id) WHERE status = 'pending'",
            # Names are unique among jobs that are not final; this index is
            # what makes a duplicate insert fail (reported as JobExists).
            f"""
            CREATE UNIQUE INDEX jobs_live_name ON jobs (name)
            WHERE name IS NOT NULL AND status NOT IN {FINAL_STATUSES_SQL}
            """,
            "CREATE INDEX jobs_status ON jobs (status, id)",
            "CREATE INDEX jobs_job_type ON jobs (job_type, id)",
            "CREATE INDEX jobs_target ON jobs (target_id, id) WHERE target_id IS NOT NULL",
            """
            CREATE TABLE runs (
                id TEXT NOT NULL PRIMARY KEY,
                job_id TEXT NOT NULL,
                job_type TEXT NOT NULL,
                scheduled_for INTEGER NOT NULL,
                attempt INTEGER NOT NULL,
                started_at INTEGER NOT NULL,
                finished_at INTEGER,
                outcome TEXT,
                error TEXT,
                output TEXT,
                node TEXT NOT NULL
            )
            """,
            "CREATE INDEX runs_newest ON runs (started_at, id)",
            "CREATE INDEX runs_job_newest ON runs (job_id, started_at, id)",
            "CREATE INDEX runs_open ON runs (started_at, id) WHERE outcome IS NULL",
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
        description="pause until",
        statements=(
            # When a paused job resumes by itself (SPEC 15); null otherwise.
            "ALTER TABLE jobs ADD COLUMN paused_until INTEGER",
        ),
    ),
    Migration(
        version=4,
        description="follow-ups, trace context, backfill and notification marks",
        statements=(
            # JSON of the job's JobExtras (SPEC 15); null for most jobs.
            "ALTER TABLE jobs ADD COLUMN extras TEXT",
        ),
    ),
)

SCHEMA_VERSION = MIGRATIONS[-1].version
"""The schema version this code writes."""


def migrations_after(version: int, path: str) -> tuple[Migration, ...]:
    """The migrations a database at ``version`` still needs, in order.

    Raises :class:`StoreError` for a database written by a newer nexus-schedd.
    """
    if version > SCHEMA_VERSION:
        raise StoreError(
            f"{path}: schema version {version} is newer than this nexus-schedd "
            f"({SCHEMA_VERSION}); upgrade nexus-schedd"
        )
    if version < 0:
        raise StoreError(f"{path}: invalid schema version {version}")
    return tuple(m for m in MIGRATIONS if m.version > version)
