"""The SQLite store's writer process: it writes beside the daemon, ends with the
store (or with the daemon when that is killed), shrugs off the signals sent to
the daemon's process group, and a writer that dies costs one write, not the store.
Real SQLite files, real processes."""

from __future__ import annotations

import io
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import datetime
from pathlib import Path

import anyio
import pytest

from nexus_schedd.errors import StoreError
from nexus_schedd.model.queries import JobFilter
from nexus_schedd.store import SQLiteStore
from nexus_schedd.store.sqlite import writer_process
from tests.daemon.daemon_process import running
from tests.store.factories import make_job, make_run

pytestmark = pytest.mark.anyio


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    """An open store on a real file; closed after the test."""
    opened = SQLiteStore(tmp_path / "schedd.db")
    await opened.open()
    try:
        yield opened
    finally:
        await opened.close()


def wait_gone(pid: int, timeout: float = 10.0) -> bool:
    """Wait up to ``timeout`` seconds for ``pid`` to end (a bound, not a measurement)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not running(pid):
            return True
        time.sleep(0.02)
    return False


def command_line(pid: int) -> bytes:
    with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
        return cmdline.read()


def writer_pid(store: SQLiteStore) -> int:
    assert store._writer is not None
    pid = store._writer.pid
    assert pid is not None
    return pid


async def test_writes_go_through_a_process_of_their_own_that_ends_with_the_store(
    tmp_path: Path,
) -> None:
    store = SQLiteStore(tmp_path / "schedd.db")
    await store.open()
    pid = writer_pid(store)
    try:
        assert pid != os.getpid() and running(pid)
        assert b"sqlite/writer_process.py" in command_line(pid)
        await store.insert_jobs([make_job(1)])
        assert await store.get_job("J0001") == make_job(1)
    finally:
        await store.close()
    assert not running(pid)  # reaped by close(), not left as a zombie


async def test_a_writer_killed_fails_one_write_clearly_and_the_next_one_lands(
    store: SQLiteStore,
) -> None:
    await store.insert_jobs([make_job(1)])
    pid = writer_pid(store)
    os.kill(pid, signal.SIGKILL)
    assert wait_gone(pid)

    with pytest.raises(StoreError) as caught:
        await store.write(jobs=[make_job(2)])
    assert "writer process ended" in caught.value.message
    assert "unknown" in caught.value.message

    await store.write(jobs=[make_job(2)], runs=[make_run(1, "J0002")])
    assert writer_pid(store) != pid
    page = await store.list_jobs(JobFilter(), 10)
    assert [j.id for j in page.items] == ["J0001", "J0002"]


async def test_the_writer_ignores_the_signals_sent_to_the_daemons_process_group(
    store: SQLiteStore,
) -> None:
    # Ctrl-C in a terminal signals the whole group; the daemon then shuts down and
    # writes its last checkpoint through the writer, which must still be there.
    pid = writer_pid(store)
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        os.kill(pid, signum)
    await store.insert_jobs([make_job(1)])
    assert running(pid) and writer_pid(store) == pid


async def test_a_value_sqlite_cannot_store_fails_that_write_and_changes_nothing(
    store: SQLiteStore,
) -> None:
    await store.insert_jobs([make_job(1)])
    with pytest.raises(StoreError) as caught:
        await store.write(jobs=[make_job(2), replace(make_job(1), priority=2**70)])
    assert "OverflowError" in caught.value.message
    page = await store.list_jobs(JobFilter(), 10)
    assert page.items == [make_job(1)]
    await store.write(jobs=[make_job(2)])
    assert await store.get_job("J0002") == make_job(2)


def test_the_writer_ends_when_the_process_that_owns_the_store_is_killed(tmp_path: Path) -> None:
    owner = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                f"""
                import anyio, sys, time
                from nexus_schedd.store import SQLiteStore

                async def main():
                    store = SQLiteStore({str(tmp_path / "schedd.db")!r})
                    await store.open()
                    print("writer", store._writer.pid, flush=True)
                    await anyio.sleep(60)

                anyio.run(main)
                """
            ),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    with owner:
        assert owner.stdout is not None
        # The store's own log lines come first on stdout.
        try:
            line = next(line for line in owner.stdout if line.startswith("writer "))
            pid = int(line.split()[1])
            assert running(pid)
        finally:
            owner.kill()  # what kill -9 of the daemon does
            owner.wait()
        assert wait_gone(pid), "the writer process outlived the daemon that owned it"


async def test_a_write_goes_to_the_writer_while_the_previous_one_commits_and_lands_after_it(
    tmp_path: Path,
) -> None:
    path = tmp_path / "schedd.db"
    store = SQLiteStore(path)
    await store.open()
    blocker = sqlite3.connect(path, isolation_level=None)
    try:
        blocker.execute("BEGIN IMMEDIATE")  # the writer's next commit waits for this lock
        async with anyio.create_task_group() as tg:
            tg.start_soon(store.write, [make_job(1)])
            await anyio.wait_all_tasks_blocked()
            tg.start_soon(store.write, [make_job(1, retry_count=1)])
            await anyio.wait_all_tasks_blocked()
            writer = store._writer
            assert writer is not None
            assert writer._sent - writer._answered == 2  # both sent, neither answered
            blocker.execute("ROLLBACK")
        assert await store.get_job("J0001") == make_job(1, retry_count=1)
    finally:
        blocker.close()
        await store.close()


@pytest.mark.parametrize(
    "request_",
    [
        writer_process.Write([("INSERT", None, [(1, "a", None, 2.5, 10**15, "\u00e9")])], None),
        writer_process.Write(
            None, [writer_process.Call(many_sql="DELETE", many_rows=[{"chunk": 2000}])]
        ),
        # Not a plain built-in: pickled instead of marshalled.
        writer_process.Write(
            None, [writer_process.Call(many_sql="DELETE", many_rows=[(datetime(2025, 1, 1),)])]
        ),
        writer_process.Open("file:x.db", ["PRAGMA synchronous = FULL"]),
        writer_process.Close(),
    ],
)
def test_every_request_survives_its_frame(request_: writer_process.Request) -> None:
    frame = writer_process.encode_request(request_)
    message = writer_process.read_message(io.BytesIO(frame))
    assert writer_process.decode_request(message) == request_
