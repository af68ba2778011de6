"""The checkpointer encodes each change when it is staged (while the previous write
is in flight) and hands the store those encodings; the newest version of a row
wins, and rows of a failed write are kept for the next one."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import timedelta
from typing import Any

import anyio
import pytest
import structlog

from nexus_schedd.clock import VirtualClock
from nexus_schedd.engine.checkpoint import Checkpointer
from nexus_schedd.errors import StoreError
from nexus_schedd.model import Job, JobStatus, Run
from nexus_schedd.store.memory import MemoryStore
from tests.engine.harness import T0
from tests.store.factories import make_job, make_run

pytestmark = pytest.mark.anyio


class EncodingStore(MemoryStore):
    """A memory store with the staged write path (StagedWrites) whose rows are
    tagged tuples; it records when it encodes and what it is asked to write, and
    can fail its next write."""

    writes_in_flight = 1

    def __init__(self) -> None:
        super().__init__()
        self.encoded: list[tuple[str, str]] = []
        self.written: list[tuple[list[Any], list[Any]]] = []
        self.fail_next = False
        self.wrote = anyio.Event()
        """Set by the first write."""

    def encode_job(self, job: Job) -> Any:
        self.encoded.append(("job", job.id))
        return ("job-row", job)

    def encode_run(self, run: Run) -> Any:
        self.encoded.append(("run", run.id))
        return ("run-row", run)

    async def write_encoded(self, jobs: Sequence[Any], runs: Sequence[Any]) -> None:
        self.written.append((list(jobs), list(runs)))
        self.wrote.set()
        if self.fail_next:
            self.fail_next = False
            raise StoreError("simulated write failure")
        await self.write([row[1] for row in jobs], [row[1] for row in runs])


async def test_changes_are_encoded_when_staged_and_written_as_encoded() -> None:
    store = EncodingStore()
    await store.open()
    checkpointer = Checkpointer(store, structlog.get_logger())
    first = make_job(1)
    newer = replace(first, status=JobStatus.RUNNING)
    run = make_run(1, first.id)
    checkpointer.stage([first], [run])
    assert store.encoded == [("job", first.id), ("run", run.id)]  # before any write
    checkpointer.stage([newer])
    async with anyio.create_task_group() as tg:
        await tg.start(checkpointer.run)
        with anyio.fail_after(5):
            await checkpointer.flush()
        tg.cancel_scope.cancel()
    assert store.written == [([("job-row", newer)], [("run-row", run)])]
    assert await store.get_job(first.id) == newer


async def test_rows_of_a_failed_write_are_written_next_unless_a_newer_version_came() -> None:
    store = EncodingStore()
    await store.open()
    store.fail_next = True
    clock = VirtualClock(T0)
    checkpointer = Checkpointer(store, structlog.get_logger(), clock=clock)
    kept, superseded = make_job(1), make_job(2)
    newer = replace(superseded, status=JobStatus.RUNNING)
    async with anyio.create_task_group() as tg:
        tg.start_soon(clock.autojump)  # the retry pause passes in virtual time
        await tg.start(checkpointer.run)
        with anyio.fail_after(5), pytest.raises(StoreError):
            await checkpointer.commit([kept, superseded])
        checkpointer.stage([newer])
        with anyio.fail_after(5):
            await checkpointer.flush()  # the retry waits out RETRY_AFTER_FAILURE
        tg.cancel_scope.cancel()
    retried_jobs = store.written[-1][0]
    assert sorted(row[1].id for row in retried_jobs) == [kept.id, superseded.id]
    assert ("job-row", newer) in retried_jobs and ("job-row", superseded) not in retried_jobs
    assert await store.get_job(superseded.id) == newer
    assert await store.get_job(kept.id) == kept


async def test_a_custom_writer_gets_the_objects_unencoded() -> None:
    store = EncodingStore()
    received: list[tuple[list[Job], list[Run]]] = []

    async def writer(jobs: Sequence[Job], runs: Sequence[Run]) -> None:
        received.append((list(jobs), list(runs)))

    checkpointer = Checkpointer(store, structlog.get_logger(), writer=writer)
    job, run = make_job(1), make_run(1, "J0001")
    async with anyio.create_task_group() as tg:
        await tg.start(checkpointer.run)
        with anyio.fail_after(5):
            await checkpointer.commit([job], [run])
        tg.cancel_scope.cancel()
    assert received == [([job], [run])]
    assert store.encoded == []


class PipelinedStore(EncodingStore):
    """Takes a second write while the first is in flight (as SQLite's writer does);
    each write waits for its own release event."""

    writes_in_flight = 2

    def __init__(self) -> None:
        super().__init__()
        self.releases: list[anyio.Event] = []
        self.started = anyio.Event()
        self.fail_first = False

    async def write_encoded(self, jobs: Sequence[Any], runs: Sequence[Any]) -> None:
        release = anyio.Event()
        self.releases.append(release)
        number = len(self.releases)
        self.started.set()
        self.started = anyio.Event()
        await release.wait()
        if number == 1 and self.fail_first:
            raise StoreError("simulated write failure")
        await super().write_encoded(jobs, runs)


async def next_write(store: PipelinedStore) -> None:
    started = store.started
    with anyio.fail_after(5):
        await started.wait()


async def test_a_second_write_starts_while_the_first_is_in_flight_and_reports_after_it() -> None:
    store = PipelinedStore()
    await store.open()
    checkpointer = Checkpointer(store, structlog.get_logger())
    reports: list[str] = []
    async with anyio.create_task_group() as tg:
        await tg.start(checkpointer.run)
        checkpointer.stage([make_job(1)], on_durable=lambda error: reports.append("first"))
        await next_write(store)
        checkpointer.stage([make_job(2)], on_durable=lambda error: reports.append("second"))
        await next_write(store)  # the second write is under way; the first is not done
        assert len(store.releases) == 2 and reports == []
        store.releases[1].set()  # the second finishes first ...
        await anyio.wait_all_tasks_blocked()
        assert reports == []  # ... but is reported only after the first
        store.releases[0].set()
        with anyio.fail_after(5):
            await checkpointer.flush()
        tg.cancel_scope.cancel()
    assert reports == ["first", "second"]


async def test_a_failed_write_does_not_bring_back_a_row_a_later_write_carries_newer() -> None:
    store = PipelinedStore()
    store.fail_first = True
    await store.open()
    clock = VirtualClock(T0)
    checkpointer = Checkpointer(store, structlog.get_logger(), clock=clock)
    older, other = make_job(1), make_job(2)
    newer = replace(older, status=JobStatus.RUNNING)
    async with anyio.create_task_group() as tg:
        tg.start_soon(clock.autojump)  # the retry pause passes in virtual time
        await tg.start(checkpointer.run)
        checkpointer.stage([older, other])
        await next_write(store)
        checkpointer.stage([newer])
        await next_write(store)
        store.releases[0].set()  # the first write fails while the second carries newer
        store.releases[1].set()
        await next_write(store)  # the retry, after the pause
        store.releases[2].set()
        with anyio.fail_after(5):
            await checkpointer.flush()
        tg.cancel_scope.cancel()
    retried = [row[1] for row in store.written[-1][0]]
    assert retried == [other]
    assert await store.get_job(older.id) == newer


async def test_rows_nobody_waits_for_wait_out_the_commit_interval_for_company() -> None:
    """A finished run alone is written once the interval has passed (one timer);
    until then a start that arrives takes it along in the same write."""
    store = EncodingStore()
    await store.open()
    clock = VirtualClock(T0)
    checkpointer = Checkpointer(
        store, structlog.get_logger(), clock=clock, commit_interval=timedelta(milliseconds=5)
    )
    finished, started, alone = make_job(1), make_job(2), make_job(3)
    durable: list[BaseException | None] = []
    async with anyio.create_task_group() as tg:
        await tg.start(checkpointer.run)
        checkpointer.stage([finished])
        await anyio.wait_all_tasks_blocked()
        assert store.written == []  # waiting for company
        assert clock.next_deadline() == T0 + timedelta(milliseconds=5)
        checkpointer.stage([started], on_durable=durable.append)  # a start: write now
        with anyio.fail_after(5):
            while not durable:
                await anyio.wait_all_tasks_blocked()
        assert durable == [None]
        assert [[row[1] for row in jobs] for jobs, _ in store.written] == [[finished, started]]

        checkpointer.stage([alone])
        await anyio.wait_all_tasks_blocked()
        assert len(store.written) == 1
        clock.advance(0.005)  # the interval ends: written without company
        with anyio.fail_after(5):
            while len(store.written) < 2:
                await anyio.wait_all_tasks_blocked()
        assert [row[1] for row in store.written[1][0]] == [alone]
        tg.cancel_scope.cancel()


async def test_a_change_someone_waits_for_is_not_held_by_the_commit_interval() -> None:
    store = EncodingStore()
    await store.open()
    clock = VirtualClock(T0)  # never advanced: a wait on the interval would hang
    checkpointer = Checkpointer(
        store, structlog.get_logger(), clock=clock, commit_interval=timedelta(seconds=10)
    )
    job = make_job(1)
    async with anyio.create_task_group() as tg:
        await tg.start(checkpointer.run)
        checkpointer.stage([make_job(2)])  # nobody waits for this one: it goes along
        with anyio.fail_after(5):
            await checkpointer.commit([job])
        tg.cancel_scope.cancel()
    assert await store.get_job(job.id) == job
    assert len(store.written) == 1


async def test_a_lazily_staged_version_skips_one_write_and_a_newer_one_replaces_it() -> None:
    """A start's running version (stage_lazily) is passed over by the next write
    taken, goes with the one after if still the newest, and is never encoded
    when the run's finish replaced it first."""
    store = EncodingStore()
    await store.open()
    checkpointer = Checkpointer(store, structlog.get_logger())
    replaced, kept = make_job(1), make_job(2)
    running_replaced = replace(replaced, status=JobStatus.RUNNING)
    running_kept = replace(kept, status=JobStatus.RUNNING)
    finished = replace(replaced, status=JobStatus.COMPLETED)
    other, later = make_run(1, replaced.id), make_run(2, kept.id)
    async with anyio.create_task_group() as tg:
        await tg.start(checkpointer.run)
        checkpointer.stage_lazily([running_replaced, running_kept])
        assert checkpointer.staged_job(kept.id) == running_kept
        checkpointer.stage(runs=[other])  # the write that passes them over
        with anyio.fail_after(5):
            await store.wrote.wait()
        checkpointer.stage([finished])  # the finish replaces one of them
        with anyio.fail_after(5):
            await checkpointer.commit(runs=[later])
        tg.cancel_scope.cancel()
    first, second = store.written
    assert first == ([], [("run-row", other)])
    assert sorted(second[0], key=lambda row: row[1].id) == [
        ("job-row", finished),
        ("job-row", running_kept),
    ]
    assert second[1] == [("run-row", later)]
    assert store.encoded.count(("job", replaced.id)) == 1  # the finish only
    assert await store.get_job(kept.id) == running_kept


async def test_flush_writes_lazily_staged_versions_at_once() -> None:
    store = EncodingStore()
    await store.open()
    checkpointer = Checkpointer(store, structlog.get_logger())
    running = replace(make_job(1), status=JobStatus.RUNNING)
    async with anyio.create_task_group() as tg:
        await tg.start(checkpointer.run)
        checkpointer.stage_lazily([running])
        with anyio.fail_after(5):
            await checkpointer.flush()
        tg.cancel_scope.cancel()
    assert store.written == [([("job-row", running)], [])]
    assert await store.get_job(running.id) == running


async def test_flush_returns_only_once_a_failed_earlier_writes_rows_are_on_disk() -> None:
    """A flush whose own write was taken while an earlier one was in flight, and
    that earlier write then failed: its rows are staged again, and the flush
    returns only once they are written (a window load reads the store after it)."""
    store = PipelinedStore()
    store.fail_first = True
    await store.open()
    clock = VirtualClock(T0)
    checkpointer = Checkpointer(store, structlog.get_logger(), clock=clock)
    job, other = make_job(1), make_job(2)
    flushed = anyio.Event()

    async def flush() -> None:
        await checkpointer.flush()
        flushed.set()

    async with anyio.create_task_group() as tg:
        await tg.start(checkpointer.run)
        checkpointer.stage([job])
        await next_write(store)  # the first write is in flight
        checkpointer.stage([other])
        tg.start_soon(flush)
        await next_write(store)  # the flush's write is taken too
        store.releases[1].set()
        store.releases[0].set()  # the first fails after the flush's was taken
        await anyio.wait_all_tasks_blocked()
        assert not flushed.is_set()  # the first write's rows are not on disk yet
        assert await store.get_job(job.id) is None
        tg.start_soon(clock.autojump)  # the retry pause passes in virtual time
        await next_write(store)  # the retry
        store.releases[2].set()
        with anyio.fail_after(5):
            await flushed.wait()
        tg.cancel_scope.cancel()
    assert await store.get_job(job.id) == job
    assert await store.get_job(other.id) == other


async def test_flush_raises_when_a_failed_earlier_writes_retry_fails_too() -> None:
    store = PipelinedStore()
    store.fail_first = True
    await store.open()
    clock = VirtualClock(T0)
    checkpointer = Checkpointer(store, structlog.get_logger(), clock=clock)
    outcome: list[BaseException | None] = []
    flushed = anyio.Event()

    async def flush() -> None:
        try:
            await checkpointer.flush()
        except StoreError as exc:
            outcome.append(exc)
        else:
            outcome.append(None)
        flushed.set()

    async with anyio.create_task_group() as tg:
        await tg.start(checkpointer.run)
        checkpointer.stage([make_job(1)])
        await next_write(store)
        checkpointer.stage([make_job(2)])
        tg.start_soon(flush)
        await next_write(store)
        store.releases[1].set()
        store.releases[0].set()
        tg.start_soon(clock.autojump)
        await next_write(store)  # the retry ...
        store.fail_next = True  # ... fails as well
        store.releases[2].set()
        # An event, not wait_all_tasks_blocked(): that, beside the autojump
        # (which waits for the same), took seconds under load (5 s once).
        with anyio.fail_after(5):
            await flushed.wait()
        tg.cancel_scope.cancel()
    assert isinstance(outcome[0], StoreError)
