"""What only a file-backed store shows: durability, schema versions, refusing bad
files, and surviving failed writes. Real SQLite files in tmp_path throughout."""

from __future__ import annotations

import os
import sqlite3
from dataclasses import replace
from pathlib import Path

import anyio
import pytest

from nexus_schedd.errors import StoreError
from nexus_schedd.model import JobStatus
from nexus_schedd.model.queries import JobFilter, RunFilter
from nexus_schedd.store import MemoryStore, SQLiteStore, open_store
from nexus_schedd.store.sqlite.schema import SCHEMA_VERSION
from tests.store.factories import T0, make_job, make_run

pytestmark = pytest.mark.anyio


def siblings(path: Path) -> set[str]:
    """Every file in the database's directory."""
    return {p.name for p in path.parent.iterdir()}


@pytest.mark.parametrize("durability", ["full", "normal"])
async def test_jobs_and_runs_survive_close_and_reopen(tmp_path: Path, durability: str) -> None:
    path = tmp_path / "schedd.db"
    store = SQLiteStore(path, durability=durability)  # type: ignore[arg-type]
    await store.open()
    await store.insert_jobs([make_job(1, name="kept")])
    await store.write(jobs=[make_job(2)], runs=[make_run(1, "J0001")])
    await store.close()

    reopened = SQLiteStore(path, durability=durability)  # type: ignore[arg-type]
    await reopened.open()
    try:
        assert await reopened.get_job_by_name("kept") == make_job(1, name="kept")
        assert await reopened.get_job("J0002") == make_job(2)
        assert (await reopened.list_runs(RunFilter(), 5)).items == [make_run(1, "J0001")]
    finally:
        await reopened.close()


async def test_committed_writes_are_in_the_file_before_close(tmp_path: Path) -> None:
    path = tmp_path / "schedd.db"
    store = SQLiteStore(path)
    await store.open()
    try:
        await store.insert_jobs([make_job(1)])
        # Another process would see it now: read with a separate plain connection.
        other = sqlite3.connect(path)
        try:
            assert other.execute("SELECT id FROM jobs").fetchall() == [("J0001",)]
        finally:
            other.close()
    finally:
        await store.close()


async def test_a_new_database_is_in_wal_mode_at_the_current_schema_version(
    tmp_path: Path,
) -> None:
    path = tmp_path / "schedd.db"
    store = SQLiteStore(path)
    await store.open()
    await store.close()

    check = sqlite3.connect(path)
    try:
        assert check.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert check.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
        assert check.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    finally:
        check.close()


async def test_a_database_from_a_newer_version_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "schedd.db"
    store = SQLiteStore(path)
    await store.open()
    await store.close()
    newer = sqlite3.connect(path)
    newer.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 5}")
    newer.close()
    before = path.read_bytes()

    with pytest.raises(StoreError) as caught:
        await SQLiteStore(path).open()

    assert (
        f"schema version {SCHEMA_VERSION + 5} is newer than this nexus-schedd ({SCHEMA_VERSION})"
        in caught.value.message
    )
    assert "upgrade nexus-schedd" in caught.value.message
    assert path.read_bytes() == before


async def test_a_file_that_is_not_sqlite_is_refused_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "schedd.db"
    garbage = os.urandom(8192)
    path.write_bytes(garbage)

    with pytest.raises(StoreError) as caught:
        await SQLiteStore(path).open()

    assert str(path) in caught.value.message
    assert "not an SQLite database" in caught.value.message
    assert path.read_bytes() == garbage
    assert siblings(path) == {"schedd.db"}


async def test_a_corrupt_sqlite_file_is_refused_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "schedd.db"
    healthy = sqlite3.connect(path)
    healthy.execute("PRAGMA page_size = 1024")
    healthy.execute("CREATE TABLE filler (x)")
    healthy.execute("PRAGMA user_version = 1")
    healthy.commit()
    healthy.close()
    data = bytearray(path.read_bytes())
    data[100:] = b"\xa5" * (len(data) - 100)  # trash the schema page after the header
    path.write_bytes(bytes(data))

    with pytest.raises(StoreError) as caught:
        await SQLiteStore(path).open()

    assert str(path) in caught.value.message
    assert path.read_bytes() == bytes(data)
    assert siblings(path) == {"schedd.db"}


async def test_another_applications_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    foreign = sqlite3.connect(path)
    foreign.execute("CREATE TABLE customers (id INTEGER)")
    foreign.commit()
    foreign.close()
    before = path.read_bytes()

    with pytest.raises(StoreError) as caught:
        await SQLiteStore(path).open()

    assert "customers" in caught.value.message
    assert path.read_bytes() == before


async def test_a_missing_state_directory_is_created(tmp_path: Path) -> None:
    path = tmp_path / "var" / "lib" / "nexus-schedd" / "schedd.db"
    store = SQLiteStore(path)
    await store.open()
    await store.close()

    assert path.is_file()


async def test_a_state_directory_that_cannot_be_created_is_a_store_error(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")

    with pytest.raises(StoreError) as caught:
        await SQLiteStore(blocker / "schedd.db").open()

    assert "cannot create directory" in caught.value.message


async def test_a_failing_write_is_a_store_error_and_the_store_carries_on(tmp_path: Path) -> None:
    path = tmp_path / "schedd.db"
    store = SQLiteStore(path)
    await store.open()
    try:
        await store.insert_jobs([make_job(1)])
        saboteur = sqlite3.connect(path)
        saboteur.execute(
            "CREATE TRIGGER sabotage BEFORE INSERT ON runs "
            "BEGIN SELECT RAISE(ABORT, 'simulated I/O failure'); END"
        )
        saboteur.commit()

        with pytest.raises(StoreError) as caught:
            await store.write(jobs=[make_job(1, retry_count=1)], runs=[make_run(1, "J0001")])

        assert "simulated I/O failure" in caught.value.message
        assert await store.get_job("J0001") == make_job(1)  # the job half rolled back too
        saboteur.execute("DROP TRIGGER sabotage")
        saboteur.commit()
        saboteur.close()

        await store.write(jobs=[make_job(1, retry_count=1)], runs=[make_run(1, "J0001")])
        assert await store.get_job("J0001") == make_job(1, retry_count=1)
    finally:
        await store.close()


async def test_a_full_disk_refuses_writes_keeps_reads_and_recovers_when_space_returns(
    tmp_path: Path,
) -> None:
    store = SQLiteStore(tmp_path / "schedd.db", max_size_bytes=400 * 1024)
    await store.open()
    try:
        big = "x" * 4000
        filled = 0
        with pytest.raises(StoreError) as caught:
            for n in range(1000):
                await store.write(runs=[make_run(n, "J0001", error=big)])
                filled = n + 1
        assert "disk is full" in caught.value.message
        assert filled > 10

        # Reads still work and show exactly what was acknowledged.
        runs = (await store.list_runs(RunFilter(), 1000)).items
        assert len(runs) == filled
        job_write = make_job(1, payload={"blob": big * 20})
        with pytest.raises(StoreError):
            await store.write(jobs=[job_write])

        # Space returns (history pruned); the refused write now succeeds.
        assert await store.prune_runs(T0.replace(year=2100), keep_per_job=0) == filled
        await store.write(jobs=[job_write])
        assert await store.get_job("J0001") == job_write
    finally:
        await store.close()


async def test_reads_do_not_see_a_failed_group(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "schedd.db")
    await store.open()
    try:
        await store.insert_jobs([make_job(1, name="a")])
        with pytest.raises(StoreError):
            await store.insert_jobs([make_job(2), make_job(1)])
        assert await store.count_by_status() == {JobStatus.PENDING: 1}
        page = await store.list_jobs(JobFilter(), 10)
        assert [j.id for j in page.items] == ["J0001"]
    finally:
        await store.close()


def test_open_store_parses_store_urls(tmp_path: Path) -> None:
    absolute = open_store(f"sqlite://{tmp_path}/a.db", durability="normal")
    assert isinstance(absolute, SQLiteStore)
    assert absolute.path == tmp_path / "a.db"
    assert absolute.durability == "normal"
    for relative_url in ("sqlite:state/b.db", "sqlite://state/b.db"):
        relative = open_store(relative_url)
        assert isinstance(relative, SQLiteStore) and relative.path == Path("state/b.db")
    assert isinstance(open_store("memory:"), MemoryStore)


@pytest.mark.parametrize(
    "url", ["sqlite:", "sqlite://", "mysql:///x", "sqlite:dir/", "postgresql-x://db/x"]
)
def test_open_store_refuses_urls_it_cannot_serve(url: str) -> None:
    with pytest.raises(StoreError):
        open_store(url)


async def test_a_database_left_behind_by_a_killed_daemon_opens_with_every_commit(
    tmp_path: Path,
) -> None:
    live = tmp_path / "live"
    store = SQLiteStore(live / "schedd.db")
    await store.open()
    try:
        await store.insert_jobs([make_job(n) for n in range(1, 51)])
        # What kill -9 leaves: the main file plus the WAL and its index, copied mid-flight.
        crashed = tmp_path / "crashed"
        crashed.mkdir()
        for name in siblings(live / "schedd.db"):
            (crashed / name).write_bytes((live / name).read_bytes())
    finally:
        await store.close()
    assert {"schedd.db", "schedd.db-wal"} <= siblings(crashed / "schedd.db")

    recovered = SQLiteStore(crashed / "schedd.db")
    await recovered.open()
    try:
        assert len((await recovered.list_jobs(JobFilter(), 100)).items) == 50
    finally:
        await recovered.close()


async def test_writers_cancelled_mid_commit_still_land_and_leave_the_store_usable(
    tmp_path: Path,
) -> None:
    store = SQLiteStore(tmp_path / "schedd.db")
    await store.open()
    try:
        async with anyio.create_task_group() as tg:
            for n in range(50):
                tg.start_soon(store.write, [make_job(n)])
            await anyio.wait_all_tasks_blocked()  # a leader is committing, the rest queued
            tg.cancel_scope.cancel()

        # A queued write is shielded: it commits even though its caller was cancelled.
        assert len((await store.list_jobs(JobFilter(), 100)).items) == 50
        await store.write(jobs=[make_job(99)])
        assert await store.get_job("J0099") == make_job(99)
    finally:
        await store.close()


async def test_a_version_1_database_is_migrated_forward_and_keeps_its_jobs(
    tmp_path: Path,
) -> None:
    """A database written by the first release (schema 1) opens, gains migrations 2
    (the index for names of final jobs), 3 (paused_until) and 4 (extras) in place,
    and loses nothing."""
    from nexus_schedd.store.rows import JOB_COLUMNS, job_row
    from nexus_schedd.store.sqlite.schema import MIGRATIONS

    path = tmp_path / "old.db"
    old = sqlite3.connect(path)
    for statement in MIGRATIONS[0].statements:
        old.execute(statement)
    done = make_job(1, name="nightly", status=JobStatus.COMPLETED, run_at=None)
    # Schema 1 has every column but the last two: paused_until (migration 3)
    # and extras (migration 4).
    assert JOB_COLUMNS[-2:] == ("paused_until", "extras")
    columns, row = JOB_COLUMNS[:-2], job_row(done)[:-2]
    placeholders = ", ".join("?" * len(columns))
    old.execute(f"INSERT INTO jobs ({', '.join(columns)}) VALUES ({placeholders})", row)
    old.execute("PRAGMA user_version = 1")
    old.commit()
    old.close()

    store = SQLiteStore(path)
    await store.open()
    try:
        assert await store.get_job_by_name("nightly", include_final=True) == done
    finally:
        await store.close()
    check = sqlite3.connect(path)
    try:
        assert check.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
        indexes = {
            row[0] for row in check.execute("SELECT name FROM sqlite_master WHERE type='index'")
        }
        assert "jobs_name" in indexes
        assert check.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    finally:
        check.close()


@pytest.mark.parametrize("count", [1, 3, 4, 5, 17, 255, 256, 257, 341, 600])
async def test_writes_of_any_size_land_whole_across_statement_sizes(
    tmp_path: Path, count: int
) -> None:
    """Rows go in multi-row statements of a few fixed sizes: every count must split
    into them exactly, keep each row's values, and keep the newest version of a
    job written twice in one commit."""
    store = SQLiteStore(tmp_path / "schedd.db")
    await store.open()
    try:
        jobs = [make_job(n, name=f"job-{n}", priority=n % 7) for n in range(1, count + 1)]
        await store.insert_jobs(jobs)
        # One commit: every job moves on, the first also twice (newest wins), and
        # every job gets a run; a changed identity column (target_id) forces the
        # full upsert for the whole statement.
        moved = [replace(j, status=JobStatus.RUNNING, retry_count=1) for j in jobs]
        newest = replace(moved[0], retry_count=2, target_id="elsewhere")
        runs = [make_run(n, j.id) for n, j in enumerate(jobs, start=1)]
        await store.write(jobs=[*moved, newest], runs=runs)

        got = (await store.list_jobs(JobFilter(), count + 1)).items
        assert sorted(got, key=lambda j: j.id) == [newest, *moved[1:]]
        assert len((await store.list_runs(RunFilter(), count + 1)).items) == count
    finally:
        await store.close()
