"""Jobs and runs for store tests, with fixed times and explicit, sortable ids."""

from __future__ import annotations

import os
import secrets
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from nexus_schedd.model import Job, JobStatus, Run, RunOutcome

T0 = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)


def make_job(number: int, **changes: Any) -> Job:
    """Pending job ``J{number:04d}`` due ``number`` seconds after T0."""
    due = T0 + timedelta(seconds=number)
    job = Job(
        id=f"J{number:04d}",
        job_type="noop",
        status=JobStatus.PENDING,
        run_at=due,
        scheduled_for=due,
        anchor_at=due,
        created_at=T0,
        updated_at=T0,
    )
    return replace(job, **changes)


def make_run(number: int, job_id: str, **changes: Any) -> Run:
    """Finished successful run ``R{number:04d}`` of ``job_id`` started ``number`` minutes after T0."""
    started = T0 + timedelta(minutes=number)
    run = Run(
        id=f"R{number:04d}",
        job_id=job_id,
        job_type="noop",
        scheduled_for=started,
        attempt=1,
        started_at=started,
        finished_at=started + timedelta(seconds=1),
        outcome=RunOutcome.SUCCESS,
    )
    return replace(run, **changes)


# -- PostgreSQL ---------------------------------------------------------------------

POSTGRES_DSN = os.environ.get(
    "NEXUS_SCHEDD_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test"
)
"""The server the PostgreSQL tests use (CI starts it before the tests run)."""


def skip_postgres() -> bool:
    """True when NEXUS_SCHEDD_SKIP_POSTGRES=1 asks to skip the PostgreSQL tests."""
    return os.environ.get("NEXUS_SCHEDD_SKIP_POSTGRES") == "1"


def fresh_schema_name() -> str:
    """A schema name no other test run uses."""
    return f"nxs_test_{secrets.token_hex(6)}"


async def check_postgres_reachable() -> None:
    """Skip when asked to; otherwise fail clearly if the test server is unreachable."""
    if skip_postgres():
        pytest.skip("NEXUS_SCHEDD_SKIP_POSTGRES=1")
    try:
        connection = await asyncpg.connect(POSTGRES_DSN, timeout=5)
    except (OSError, asyncpg.PostgresError) as exc:
        pytest.fail(
            f"PostgreSQL at {POSTGRES_DSN} is unreachable ({exc}); start it, point "
            "NEXUS_SCHEDD_TEST_POSTGRES_DSN at one, or set NEXUS_SCHEDD_SKIP_POSTGRES=1",
            pytrace=False,
        )
    await connection.close()


async def drop_schema(schema: str) -> None:
    """Drop a test schema and everything in it."""
    connection = await asyncpg.connect(POSTGRES_DSN, timeout=5)
    try:
        await connection.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await connection.close()
