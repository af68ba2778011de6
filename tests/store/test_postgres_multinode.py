"""The multi-node primitives of the PostgreSQL store, with two stores as two nodes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import timedelta

import anyio
import pytest

from nexus_schedd.errors import InvalidSpec
from nexus_schedd.model import JobStatus, RunOutcome
from nexus_schedd.model.queries import RunFilter
from nexus_schedd.store.postgres import PostgresStore, Wakeup
from tests.store.factories import (
    POSTGRES_DSN,
    T0,
    check_postgres_reachable,
    drop_schema,
    fresh_schema_name,
    make_job,
    make_run,
)

pytestmark = pytest.mark.anyio

LEASE_S = 30.0


@pytest.fixture
async def nodes() -> AsyncIterator[tuple[PostgresStore, PostgresStore]]:
    """Two open stores on one fresh schema, as nodes "a" and "b"."""
    await check_postgres_reachable()
    schema = fresh_schema_name()
    a = PostgresStore(POSTGRES_DSN, schema=schema, node="a", pool_size=4)
    b = PostgresStore(POSTGRES_DSN, schema=schema, node="b", pool_size=4)
    try:
        await a.open()
        await b.open()
        yield a, b
    finally:
        await a.close()
        await b.close()
        await drop_schema(schema)


async def test_two_nodes_claiming_together_split_all_due_jobs_without_overlap(
    nodes: tuple[PostgresStore, PostgresStore],
) -> None:
    a, b = nodes
    jobs = [make_job(n, run_at=T0 + timedelta(milliseconds=n)) for n in range(2000)]
    future = make_job(5000, run_at=T0 + timedelta(days=1))
    await a.insert_jobs([*jobs, future])
    claimed: dict[str, list[str]] = {"a": [], "b": []}

    async def drain(store: PostgresStore) -> None:
        while batch := await store.claim_due(store.node, T0 + timedelta(hours=1), 50, LEASE_S):
            claimed[store.node].extend(j.id for j in batch)
            await anyio.lowlevel.checkpoint()

    async with anyio.create_task_group() as tg:
        tg.start_soon(drain, a)
        tg.start_soon(drain, b)

    together = claimed["a"] + claimed["b"]
    assert len(together) == len(set(together)) == 2000
    assert set(together) == {j.id for j in jobs}
    assert claimed["a"] and claimed["b"]
    counts = await a.count_by_status()
    assert counts[JobStatus.RUNNING] == 2000 and counts[JobStatus.PENDING] == 1


async def test_claimed_jobs_are_running_under_the_nodes_lease_in_priority_order(
    nodes: tuple[PostgresStore, PostgresStore],
) -> None:
    a, _ = nodes
    await a.insert_jobs(
        [
            make_job(1),
            make_job(2, priority=5),
            make_job(3),
            make_job(4, run_at=T0 + timedelta(hours=2)),
            make_job(5, status=JobStatus.PAUSED),
        ]
    )
    now = T0 + timedelta(minutes=1)

    claimed = await a.claim_due("a", now, 10, LEASE_S)

    assert [j.id for j in claimed] == ["J0002", "J0001", "J0003"]
    assert all(j.status is JobStatus.RUNNING and j.updated_at == now for j in claimed)
    assert claimed[1] == replace(make_job(1), status=JobStatus.RUNNING, updated_at=now)
    assert await a.lease_of("J0001") == ("a", now + timedelta(seconds=LEASE_S))
    assert await a.lease_of("J0004") is None
    assert await a.claim_due("a", now, 10, LEASE_S) == []


async def test_a_claim_takes_no_more_than_its_limit(
    nodes: tuple[PostgresStore, PostgresStore],
) -> None:
    a, _ = nodes
    await a.insert_jobs([make_job(n) for n in range(1, 6)])

    first = await a.claim_due("a", T0 + timedelta(minutes=1), 2, LEASE_S)

    assert [j.id for j in first] == ["J0001", "J0002"]
    with pytest.raises(InvalidSpec):
        await a.claim_due("a", T0, 0, LEASE_S)
    with pytest.raises(InvalidSpec):
        await a.claim_due("a", T0, 1, 0)


async def test_an_expired_lease_is_taken_over_once_with_its_open_run(
    nodes: tuple[PostgresStore, PostgresStore],
) -> None:
    a, b = nodes
    await a.insert_jobs([make_job(1), make_job(2)])
    now = T0 + timedelta(seconds=10)
    claimed = await a.claim_due("a", now, 10, LEASE_S)
    open_run = make_run(1, "J0001", finished_at=None, outcome=None, node="a")
    older_run = make_run(0, "J0001", outcome=RunOutcome.FAILURE, node="a")
    await a.write(jobs=[claimed[0]], runs=[older_run, open_run])
    expiry = now + timedelta(seconds=LEASE_S)

    assert await b.take_over_expired("b", expiry - timedelta(microseconds=1), 10, LEASE_S) == []

    taken: list[list[tuple[str, str | None]]] = []

    async def take(store: PostgresStore) -> None:
        pairs = await store.take_over_expired(store.node, expiry, 10, LEASE_S)
        taken.append([(job.id, None if run is None else run.id) for job, run in pairs])

    async with anyio.create_task_group() as tg:
        tg.start_soon(take, a)
        tg.start_soon(take, b)

    assert sorted(pair for pairs in taken for pair in pairs) == [
        ("J0001", "R0001"),
        ("J0002", None),
    ]
    lease = await a.lease_of("J0001")
    assert lease is not None and lease[1] == expiry + timedelta(seconds=LEASE_S)
    assert await b.take_over_expired("b", expiry, 10, LEASE_S) == []


async def test_extending_a_lease_keeps_the_job_from_being_taken_over(
    nodes: tuple[PostgresStore, PostgresStore],
) -> None:
    a, b = nodes
    await a.insert_jobs([make_job(1), make_job(2)])
    await a.claim_due("a", T0 + timedelta(seconds=5), 10, LEASE_S)
    later = T0 + timedelta(minutes=10)

    assert await a.extend_leases("a", ["J0001", "J0404"], later) == {"J0001"}
    assert await b.extend_leases("b", ["J0002"], later) == set()

    taken = await b.take_over_expired("b", T0 + timedelta(minutes=5), 10, LEASE_S)
    assert [job.id for job, _ in taken] == ["J0002"]
    assert await a.extend_leases("a", ["J0001", "J0002"], later) == {"J0001"}


async def test_released_claims_are_pending_again_and_wake_the_other_node(
    nodes: tuple[PostgresStore, PostgresStore],
) -> None:
    a, b = nodes
    await a.insert_jobs([make_job(1), make_job(2)])
    await a.claim_due("a", T0 + timedelta(seconds=5), 10, LEASE_S)
    wakeups: list[Wakeup] = []
    got_one = anyio.Event()

    def heard(wakeup: Wakeup) -> None:
        wakeups.append(wakeup)
        got_one.set()

    async with anyio.create_task_group() as tg:
        await tg.start(b.listen, heard)
        assert await b.release("b", ["J0001"]) == set()
        assert await a.release("a", ["J0001"]) == {"J0001"}
        with anyio.fail_after(10):
            await got_one.wait()
        tg.cancel_scope.cancel()

    assert wakeups == [Wakeup(T0 + timedelta(seconds=1), "a")]
    released = await b.get_job("J0001")
    assert released is not None and released.status is JobStatus.PENDING
    assert await b.lease_of("J0001") is None
    assert await b.next_due_at() == T0 + timedelta(seconds=1)


async def test_a_write_that_moves_a_job_out_of_running_drops_its_lease(
    nodes: tuple[PostgresStore, PostgresStore],
) -> None:
    a, b = nodes
    await a.insert_jobs([make_job(1), make_job(2)])
    first, second = await a.claim_due("a", T0 + timedelta(seconds=5), 10, LEASE_S)

    await a.write(
        jobs=[
            replace(first, retry_count=1),
            replace(second, status=JobStatus.COMPLETED, run_at=None),
        ]
    )

    assert await a.lease_of("J0001") is not None
    assert await a.lease_of("J0002") is None
    never = T0 + timedelta(days=365)
    assert [j.id for j, _ in await b.take_over_expired("b", never, 10, LEASE_S)] == ["J0001"]


async def test_next_due_at_and_next_lease_expiry_follow_the_schedule(
    nodes: tuple[PostgresStore, PostgresStore],
) -> None:
    a, b = nodes
    assert await a.next_due_at() is None
    assert await a.next_lease_expiry() is None

    await a.insert_jobs([make_job(3), make_job(9), make_job(1, status=JobStatus.PAUSED)])
    assert await b.next_due_at() == T0 + timedelta(seconds=3)

    await a.claim_due("a", T0 + timedelta(seconds=3), 10, LEASE_S)
    assert await b.next_due_at() == T0 + timedelta(seconds=9)
    assert await b.next_lease_expiry() == T0 + timedelta(seconds=3 + LEASE_S)


async def test_notifications_reach_the_other_node_only_for_earlier_work(
    nodes: tuple[PostgresStore, PostgresStore],
) -> None:
    a, b = nodes
    send, receive = anyio.create_memory_object_stream[Wakeup](100)

    async with send, receive, anyio.create_task_group() as tg:
        await tg.start(b.listen, send.send_nowait)

        await a.insert_jobs([make_job(50), make_job(20), make_job(30, status=JobStatus.PAUSED)])
        with anyio.fail_after(10):
            assert await receive.receive() == Wakeup(T0 + timedelta(seconds=20), "a")

        # Later, then earlier, then a resumed job: only the moves that make work
        # due sooner are announced (the marker tells the quiet write was seen).
        await a.write(jobs=[make_job(20, run_at=T0 + timedelta(hours=1))])
        await a.write(jobs=[make_job(50, run_at=T0 + timedelta(seconds=5))])
        await a.write(jobs=[make_job(30)])
        await a.notify_changed(T0 + timedelta(days=9))
        with anyio.fail_after(10):
            heard = [await receive.receive() for _ in range(3)]
        tg.cancel_scope.cancel()

    assert heard == [
        Wakeup(T0 + timedelta(seconds=5), "a"),
        Wakeup(T0 + timedelta(seconds=30), "a"),
        Wakeup(T0 + timedelta(days=9), "a"),
    ]


async def test_a_rolled_back_insert_sends_no_notification(
    nodes: tuple[PostgresStore, PostgresStore],
) -> None:
    a, b = nodes
    await a.insert_jobs([make_job(1, name="taken", status=JobStatus.PAUSED)])
    send, receive = anyio.create_memory_object_stream[Wakeup](100)

    async with send, receive, anyio.create_task_group() as tg:
        await tg.start(b.listen, send.send_nowait)
        with pytest.raises(Exception, match="taken"):
            await a.insert_jobs([make_job(2), make_job(3, name="taken")])
        await a.notify_changed(T0 + timedelta(days=1))
        with anyio.fail_after(10):
            first = await receive.receive()
        tg.cancel_scope.cancel()

    assert first == Wakeup(T0 + timedelta(days=1), "a")


async def test_a_listener_whose_connection_is_killed_reconnects_and_asks_for_a_reread(
    nodes: tuple[PostgresStore, PostgresStore],
) -> None:
    a, b = nodes
    send, receive = anyio.create_memory_object_stream[Wakeup](100)

    async with send, receive, anyio.create_task_group() as tg:
        await tg.start(
            lambda task_status: b.listen(
                send.send_nowait, reconnect_delay_s=0.05, task_status=task_status
            )
        )
        # The listener's connection is the one LISTENing on b's channel.
        killed = await a._fetch(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE query LIKE 'LISTEN%' AND query LIKE $1",
            f"%{b.channel}%",
        )
        assert [row[0] for row in killed] == [True]
        with anyio.fail_after(10):
            assert await receive.receive() == Wakeup(None, "")
        await a.insert_jobs([make_job(7)])
        with anyio.fail_after(10):
            assert await receive.receive() == Wakeup(T0 + timedelta(seconds=7), "a")
        tg.cancel_scope.cancel()


async def test_a_node_that_lost_its_lease_cannot_overwrite_the_new_owner(
    nodes: tuple[PostgresStore, PostgresStore],
) -> None:
    a, b = nodes
    await a.insert_jobs([make_job(1), make_job(2)])
    now = T0 + timedelta(seconds=5)
    first, second = await a.claim_due("a", now, 10, LEASE_S)
    expiry = now + timedelta(seconds=LEASE_S)
    [(taken, _)] = await b.take_over_expired("b", expiry, 1, LEASE_S)
    assert taken.id == "J0001"

    stale = replace(first, status=JobStatus.COMPLETED, run_at=None, occurrence_count=1)
    done = replace(second, status=JobStatus.COMPLETED, run_at=None, occurrence_count=1)
    history = make_run(1, "J0001", node="a")
    refused = await a.write_leased("a", jobs=[stale, done, make_job(3)], runs=[history])

    assert refused == {"J0001"}
    assert await b.get_job("J0001") == taken
    assert await b.lease_of("J0001") is not None
    assert await b.get_job("J0002") == done
    assert await b.get_job("J0003") == make_job(3)
    assert (await b.list_runs(RunFilter(job_id="J0001"), 5)).items == [history]
    finished = replace(taken, status=JobStatus.COMPLETED, run_at=None)
    assert await b.write_leased("b", jobs=[finished]) == set()
    assert await a.get_job("J0001") == finished
    assert await a.lease_of("J0001") is None


async def test_a_late_result_never_overwrites_the_take_overs_crash_record(
    nodes: tuple[PostgresStore, PostgresStore],
) -> None:
    a, b = nodes
    await a.insert_jobs([make_job(1)])
    now = T0 + timedelta(seconds=5)
    [claimed] = await a.claim_due("a", now, 1, LEASE_S)
    started = make_run(1, "J0001", node="a", finished_at=None, outcome=None)
    assert await a.write_leased("a", runs=[started]) == set()

    expiry = now + timedelta(seconds=LEASE_S)
    [(taken, open_run)] = await b.take_over_expired("b", expiry, 1, LEASE_S)
    assert open_run == started
    # Closed in the take-over's own transaction, before the engine writes its text.
    [recorded] = (await b.list_runs(RunFilter(job_id="J0001"), 5)).items
    assert recorded.outcome is RunOutcome.CRASHED and recorded.finished_at == expiry

    # Node a comes back and checkpoints its attempt's real result (twice: a retry).
    success = replace(
        started, finished_at=expiry + timedelta(seconds=1), outcome=RunOutcome.SUCCESS
    )
    done = replace(claimed, status=JobStatus.COMPLETED, run_at=None, occurrence_count=1)
    for _ in range(2):
        assert await a.write_leased("a", jobs=[done], runs=[success]) == {"J0001"}
    # The take-over's own record of the same close fills in its text.
    crash = replace(started, finished_at=expiry, outcome=RunOutcome.CRASHED, error="taken over")
    assert await b.write_leased("b", runs=[crash]) == set()

    runs = {run.id: run for run in (await b.list_runs(RunFilter(job_id="J0001"), 5)).items}
    assert runs == {
        started.id: crash,
        f"{started.id}-late": replace(success, id=f"{started.id}-late", lease_lost=True),
    }
    assert runs[f"{started.id}-late"].to_json()["lease_lost"] is True
    assert await b.get_job("J0001") == taken
    # A closed run is never reopened by a stale start checkpoint either.
    assert await a.write_leased("a", runs=[started]) == set()
    after = (await b.list_runs(RunFilter(job_id="J0001"), 5)).items
    assert len(after) == 2 and all(run.outcome is not None for run in after)
