"""PostgreSQL store behaviour beyond the shared suite: schema, migrations, URLs, errors."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace

import anyio
import asyncpg
import pytest

from nexus_schedd.errors import StoreError
from nexus_schedd.model import JobStatus, RunOutcome
from nexus_schedd.model.queries import JobFilter, RunFilter
from nexus_schedd.store import open_store
from nexus_schedd.store.postgres import PostgresStore, postgres_options_from_url
from nexus_schedd.store.postgres import store as postgres_store
from nexus_schedd.store.postgres.schema import MIGRATIONS, SCHEMA_VERSION
from nexus_schedd.store.rows import JOB_COLUMNS, RUN_COLUMNS, job_row, run_row
from tests.store.factories import (
    POSTGRES_DSN,
    check_postgres_reachable,
    drop_schema,
    fresh_schema_name,
    make_job,
    make_run,
)

pytestmark = pytest.mark.anyio


@pytest.fixture
async def schema() -> AsyncIterator[str]:
    """A schema name nobody uses yet; dropped after the test."""
    await check_postgres_reachable()
    name = fresh_schema_name()
    try:
        yield name
    finally:
        await drop_schema(name)


async def sql(statement: str) -> list[asyncpg.Record]:
    connection = await asyncpg.connect(POSTGRES_DSN)
    try:
        return await connection.fetch(statement)
    finally:
        await connection.close()


async def test_stores_opening_a_fresh_schema_together_create_it_once(schema: str) -> None:
    stores = [PostgresStore(POSTGRES_DSN, schema=schema, pool_size=2) for _ in range(5)]
    try:
        async with anyio.create_task_group() as tg:
            for store in stores:
                tg.start_soon(store.open)
        await stores[0].insert_jobs([make_job(1)])
        assert [await s.get_job("J0001") for s in stores] == [make_job(1)] * 5
    finally:
        for store in stores:
            await store.close()

    applied = await sql(f"SELECT version FROM {schema}.schema_migrations ORDER BY version")
    assert [row[0] for row in applied] == list(range(1, SCHEMA_VERSION + 1))


async def test_reopening_keeps_the_data_and_migrates_nothing(schema: str) -> None:
    first = PostgresStore(POSTGRES_DSN, schema=schema)
    await first.open()
    await first.insert_jobs([make_job(1, name="kept")])
    await first.close()

    second = PostgresStore(POSTGRES_DSN, schema=schema)
    await second.open()
    try:
        assert await second.get_job_by_name("kept") == make_job(1, name="kept")
    finally:
        await second.close()
    applied = await sql(f"SELECT count(*) FROM {schema}.schema_migrations")
    assert applied[0][0] == SCHEMA_VERSION


async def test_a_version_5_schema_with_data_migrates_forward(schema: str) -> None:
    # A schema as the release before version 6 left it, with rows as it wrote them.
    done = make_job(2, status=JobStatus.COMPLETED, name="done")
    run = make_run(1, "J0002", outcome=RunOutcome.SUCCESS)
    connection = await asyncpg.connect(POSTGRES_DSN)
    try:
        await connection.execute(f"CREATE SCHEMA {schema}; SET search_path TO {schema}")
        await connection.execute(
            "CREATE TABLE schema_migrations (version integer PRIMARY KEY,"
            " description text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        for migration in MIGRATIONS:
            if migration.version > 5:
                break
            for statement in migration.statements:
                await connection.execute(statement)
            await connection.execute(
                "INSERT INTO schema_migrations (version, description) VALUES ($1, $2)",
                migration.version,
                migration.description,
            )
        for table, columns, rows in (
            ("jobs", JOB_COLUMNS, [job_row(make_job(1)), job_row(done)]),
            ("runs", RUN_COLUMNS, [run_row(run)]),
        ):
            values = ", ".join(f"${n}" for n in range(1, len(columns) + 1))
            await connection.executemany(
                f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({values})", rows
            )
    finally:
        await connection.close()

    store = PostgresStore(POSTGRES_DSN, schema=schema)
    await store.open()
    try:
        assert await store.get_job("J0001") == make_job(1)
        assert await store.get_job_by_name("done", include_final=True) == done
        assert (await store.list_runs(RunFilter(), 10)).items == [run]
        completed = await store.list_jobs(JobFilter(statuses=frozenset({JobStatus.COMPLETED})), 10)
        assert completed.items == [done]
        assert await store.jobs_in_status(JobStatus.PENDING) == [make_job(1)]
    finally:
        await store.close()
    applied = await sql(f"SELECT max(version) FROM {schema}.schema_migrations")
    assert applied[0][0] == SCHEMA_VERSION == 8
    collations = await sql(
        "SELECT table_name, column_name, collation_name FROM information_schema.columns"
        f" WHERE table_schema = '{schema}' AND column_name IN ('id', 'job_id', 'status')"
        " ORDER BY table_name, column_name"
    )
    assert [tuple(row) for row in collations] == [
        ("jobs", "id", "C"),
        ("jobs", "status", "C"),
        ("runs", "id", "C"),
        ("runs", "job_id", "C"),
    ]
    indexes = await sql(f"SELECT indexname FROM pg_indexes WHERE schemaname = '{schema}'")
    assert "runs_open" not in {row[0] for row in indexes}
    options = await sql(
        "SELECT c.reloptions FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace"
        f" WHERE n.nspname = '{schema}' AND c.relname = 'runs'"
    )
    assert options[0][0] == ["fillfactor=50"]


async def test_a_runs_finish_stays_on_its_page_so_it_needs_no_index_insertions(
    schema: str,
) -> None:
    # Schema 8 leaves half of each runs page for the finishes of the runs
    # inserted there. A finish changes no indexed column, so one that fits on
    # its page is a HOT update (no index insertions): its ctid keeps the block.
    # At the fill factor of schema 6 (80), about a third of finishes fit.
    store = PostgresStore(POSTGRES_DSN, schema=schema)
    await store.open()
    try:
        started = [
            replace(
                make_run(n, f"01JDJOB{n:019d}"),
                id=f"01JDRUN{n:019d}",
                finished_at=None,
                outcome=None,
                node="node-a",
            )
            for n in range(1, 401)
        ]
        for first in range(0, len(started), 50):  # start batches, as a node writes them
            await store.write(runs=started[first : first + 50])
        blocks = f"SELECT id, ctid FROM {schema}.runs"
        before = {row["id"]: row["ctid"][0] for row in await sql(blocks)}
        for first in range(0, len(started), 50):
            await store.write(
                runs=[
                    run.closed(run.started_at, RunOutcome.SUCCESS)
                    for run in started[first : first + 50]
                ]
            )
        after = {row["id"]: row["ctid"][0] for row in await sql(blocks)}
    finally:
        await store.close()
    assert set(after) == set(before)
    in_place = sum(after[run_id] == block for run_id, block in before.items())
    assert in_place >= 0.9 * len(before), f"{in_place} of {len(before)} finishes in place"


async def test_a_schema_from_a_newer_version_is_refused_untouched(schema: str) -> None:
    store = PostgresStore(POSTGRES_DSN, schema=schema)
    await store.open()
    await store.close()
    await sql(
        f"INSERT INTO {schema}.schema_migrations (version, description)"
        f" VALUES ({SCHEMA_VERSION + 1}, 'from the future')"
    )

    newer = PostgresStore(POSTGRES_DSN, schema=schema)
    with pytest.raises(StoreError, match="newer than this nexus-schedd"):
        await newer.open()
    with pytest.raises(StoreError, match="not open"):
        await newer.get_job("J0001")


async def test_a_schema_with_foreign_jobs_tables_is_refused(schema: str) -> None:
    await sql(f"CREATE SCHEMA {schema}")
    await sql(f"CREATE TABLE {schema}.jobs (id int)")

    with pytest.raises(StoreError, match="did not create"):
        await PostgresStore(POSTGRES_DSN, schema=schema).open()
    columns = await sql(
        "SELECT column_name FROM information_schema.columns"
        f" WHERE table_schema = '{schema}' AND table_name = 'jobs'"
    )
    assert [row[0] for row in columns] == ["id"]


async def test_an_unreachable_server_is_a_store_error_without_the_password() -> None:
    # Port 1 on loopback refuses at once.
    store = PostgresStore("postgresql://someone:s3cret@127.0.0.1:1/test", schema="x")

    with pytest.raises(StoreError) as caught:
        await store.open()

    assert "cannot connect to PostgreSQL" in caught.value.message
    assert "s3cret" not in caught.value.message
    assert "someone:***@127.0.0.1:1" in caught.value.message


@pytest.mark.parametrize("bad", ["Upper", "1digit", "has-dash", "a" * 48, "x;drop", ""])
def test_schema_names_that_are_not_plain_identifiers_are_refused(bad: str) -> None:
    with pytest.raises(StoreError, match="schema"):
        PostgresStore(POSTGRES_DSN, schema=bad)


def test_a_store_url_names_its_schema_in_the_query() -> None:
    assert postgres_options_from_url("postgresql://u@h:5432/db?schema=nodes&sslmode=disable") == (
        "postgresql://u@h:5432/db?sslmode=disable",
        "nodes",
    )
    assert postgres_options_from_url("postgres://h/db") == ("postgres://h/db", "public")
    with pytest.raises(StoreError):
        postgres_options_from_url("postgresql://h/db?schema=a&schema=b")

    store = open_store("postgresql://u@h/db?schema=nodes", durability="normal")
    assert isinstance(store, PostgresStore)
    assert (store.dsn, store.schema, store.durability) == ("postgresql://u@h/db", "nodes", "normal")
    assert store.channel == "nexus_schedd_nodes"


async def test_a_store_opened_from_its_url_works_in_its_schema(schema: str) -> None:
    store = open_store(f"{POSTGRES_DSN}?schema={schema}")
    await store.open()
    try:
        await store.insert_jobs([make_job(1)])
    finally:
        await store.close()

    rows = await sql(f"SELECT id FROM {schema}.jobs")
    assert [row[0] for row in rows] == ["J0001"]


async def test_durability_normal_turns_synchronous_commit_off_for_the_store_only(
    schema: str,
) -> None:
    relaxed = PostgresStore(POSTGRES_DSN, schema=schema, durability="normal")
    strict = PostgresStore(POSTGRES_DSN, schema=schema)
    await relaxed.open()
    await strict.open()
    try:
        assert [tuple(r) for r in await relaxed._fetch("SHOW synchronous_commit")] == [("off",)]
        assert [tuple(r) for r in await strict._fetch("SHOW synchronous_commit")] == [("on",)]
    finally:
        await relaxed.close()
        await strict.close()


async def test_the_row_types_batches_are_sent_as_match_the_rows_the_code_writes(
    schema: str,
) -> None:
    store = PostgresStore(POSTGRES_DSN, schema=schema)
    await store.open()
    await store.close()
    for row_type, columns in (
        ("job_row", postgres_store._JOB_COLUMNS),
        ("run_row", postgres_store._RUN_COLUMNS),
    ):
        attributes = await sql(
            "SELECT a.attname, format_type(a.atttypid, NULL), c.collname"
            " FROM pg_attribute AS a JOIN pg_type AS t ON t.typrelid = a.attrelid"
            " JOIN pg_namespace AS n ON n.oid = t.typnamespace"
            " LEFT JOIN pg_collation AS c ON c.oid = a.attcollation"
            f" WHERE n.nspname = '{schema}' AND t.typname = '{row_type}' AND a.attnum > 0"
            " ORDER BY a.attnum"
        )
        expected = await sql(
            "SELECT " + ", ".join(f"format_type('{kind}'::regtype, NULL)" for _, kind in columns)
        )
        assert [(name, kind) for name, kind, _ in attributes] == list(
            zip((name for name, _ in columns), expected[0], strict=True)
        )
        # Keys compare as the tables' columns do (byte order), so joins need no COLLATE.
        table = "jobs" if row_type == "job_row" else "runs"
        table_collations = await sql(
            "SELECT column_name, collation_name FROM information_schema.columns"
            f" WHERE table_schema = '{schema}' AND table_name = '{table}'"
            " AND collation_name IS NOT NULL"
        )
        for column, collation in table_collations:
            assert (column, collation) in [(name, c) for name, _, c in attributes]
