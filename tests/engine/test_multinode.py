"""Shared mode: several engines (nodes) in one process on one real PostgreSQL schema."""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import anyio
import pytest

from nexus_schedd.clock import SystemClock
from nexus_schedd.engine import Engine, EngineSettings, engine_for
from nexus_schedd.engine.reactions import NotifyRule
from nexus_schedd.errors import InvalidJobState, StoreError
from nexus_schedd.handlers.base import HandlerContext
from nexus_schedd.handlers.registry import HandlerRegistry
from nexus_schedd.model import (
    Job,
    JobDefaults,
    JobResult,
    JobSpec,
    JobStatus,
    Recurrence,
    RecurrenceKind,
    RunOutcome,
)
from nexus_schedd.model.queries import JobFilter, RequeueFilter, RunFilter
from nexus_schedd.store import MemoryStore
from nexus_schedd.store.postgres import PostgresStore
from tests.store.factories import (
    POSTGRES_DSN,
    check_postgres_reachable,
    drop_schema,
    fresh_schema_name,
)

pytestmark = pytest.mark.anyio

FAST_RETRY = JobDefaults(backoff_base_s=0.2, backoff_jitter=0.0)
LIMIT_S = 30.0
"""Upper bound for a wait that normally takes well under a second (not an assertion)."""


@pytest.fixture
def anyio_backend() -> str:
    # Real I/O and a real clock: one event loop is enough here (the engine's own
    # tests cover uvloop).
    return "asyncio"


@dataclass
class Recorder:
    """Records (node, job id, scheduled_for, attempt) of every call; ``work`` succeeds
    after a few ms, ``block`` runs until cancelled."""

    calls: list[tuple[str, str, datetime, int]] = field(default_factory=list)
    started: dict[str, anyio.Event] = field(default_factory=dict)

    def bound(self, node: str) -> _NodeHandler:
        return _NodeHandler(self, node)

    def started_event(self, job_id: str) -> anyio.Event:
        return self.started.setdefault(job_id, anyio.Event())


@dataclass
class _NodeHandler:
    recorder: Recorder
    node: str

    def supports(self, job_type: str) -> bool:
        return job_type in ("work", "block", "fail", "after")

    async def handle(self, job: Job, ctx: HandlerContext) -> JobResult:
        self.recorder.calls.append((self.node, job.id, ctx.scheduled_for, ctx.attempt))
        self.recorder.started_event(job.id).set()
        if job.job_type == "block":
            await anyio.sleep_forever()
        await anyio.sleep(0.002)
        if job.job_type == "fail":
            return JobResult.failure("refused", should_retry=False)
        return JobResult.success()


@dataclass
class Cluster:
    """Nodes sharing one schema; ``engines[i]`` runs as node ``n{i}``."""

    schema: str
    recorder: Recorder
    engines: list[Engine]
    stores: list[PostgresStore]
    scopes: list[anyio.CancelScope]

    def crash(self, index: int) -> None:
        """Abandon node ``index`` like kill -9: no stop(), no final checkpoint."""
        self.scopes[index].cancel()


@contextlib.asynccontextmanager
async def cluster(
    size: int,
    *,
    lease_s: float = 30.0,
    recheck_s: float = 60.0,
    concurrency: int = 8,
    notify: tuple[NotifyRule, ...] = (),
) -> AsyncIterator[Cluster]:
    await check_postgres_reachable()
    schema = fresh_schema_name()
    recorder = Recorder()
    stores = [
        PostgresStore(POSTGRES_DSN, schema=schema, node=f"n{i}", pool_size=3) for i in range(size)
    ]
    engines: list[Engine] = []
    scopes: list[anyio.CancelScope] = []
    try:
        for store in stores:
            await store.open()
        async with anyio.create_task_group() as tg:
            for i, store in enumerate(stores):
                settings = EngineSettings(
                    node=f"n{i}",
                    max_concurrency=concurrency,
                    defaults=FAST_RETRY,
                    lease_s=lease_s,
                    safety_recheck_s=recheck_s,
                    notify=notify,
                )
                engine = engine_for(
                    store,
                    HandlerRegistry({"rec": recorder.bound(f"n{i}")}),
                    SystemClock(),
                    settings,
                )
                assert engine.shared
                scope = anyio.CancelScope()
                engines.append(engine)
                scopes.append(scope)
                await tg.start(_serve, engine, scope)
            yield Cluster(schema, recorder, engines, stores, scopes)
            for engine, scope in zip(engines, scopes, strict=True):
                if not scope.cancel_called:
                    await engine.stop(grace_s=0)
            tg.cancel_scope.cancel()
    finally:
        for store in stores:
            await store.close()
        await drop_schema(schema)


async def _serve(
    engine: Engine,
    scope: anyio.CancelScope,
    *,
    task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    with scope:
        async with anyio.create_task_group() as tg:
            await tg.start(engine.run)
            task_status.started()


async def wait_for(check: Callable[[], Any]) -> None:
    """Poll an async condition until it holds (bounded by LIMIT_S)."""
    with anyio.fail_after(LIMIT_S):
        while True:
            if await check():
                return
            await anyio.sleep(0.05)


async def all_final(store: PostgresStore) -> bool:
    counts = await store.count_by_status()
    return not any(counts.get(s) for s in (JobStatus.PENDING, JobStatus.RUNNING))


async def test_an_engine_on_a_plain_store_stays_single_node() -> None:
    store = MemoryStore()
    engine = engine_for(store, HandlerRegistry({}), SystemClock(), EngineSettings())
    assert not engine.shared


async def test_three_nodes_run_every_occurrence_once_and_share_the_work() -> None:
    async with cluster(3) as nodes:
        a = nodes.engines[0]
        now = SystemClock().now()
        specs = [JobSpec(job_type="work", run_at=now) for _ in range(300)]
        every_second = Recurrence(kind=RecurrenceKind.CRON, cron="* * * * * *", max_occurrences=3)
        specs += [JobSpec(job_type="work", recurrence=every_second) for _ in range(5)]
        await a.add_jobs(specs)
        await wait_for(lambda: all_final(nodes.stores[0]))
        occurrences = Counter((job_id, when) for _, job_id, when, _ in nodes.recorder.calls)
        per_node = Counter(node for node, *_ in nodes.recorder.calls)
    assert len(occurrences) == 300 + 5 * 3
    assert max(occurrences.values()) == 1
    assert set(per_node) == {"n0", "n1", "n2"}


async def test_a_job_added_through_one_node_is_read_and_canceled_through_another() -> None:
    async with cluster(2) as nodes:
        a, b = nodes.engines
        later = SystemClock().now() + timedelta(hours=1)
        job = await a.add_job(JobSpec(job_type="work", run_at=later, name="report"))
        assert (await b.get_job("report")).id == job.id
        listed = await b.list_jobs(JobFilter(statuses=frozenset({JobStatus.PENDING})), 10)
        assert [j.id for j in listed.items] == [job.id]
        canceled = await b.cancel_job(job.id)
        assert canceled.status is JobStatus.CANCELED
        assert (await a.get_job(job.id)).status is JobStatus.CANCELED


async def test_a_cancel_through_another_node_stops_the_running_attempt() -> None:
    async with cluster(2, lease_s=1.5) as nodes:
        a, b = nodes.engines
        job = await a.add_job(JobSpec(job_type="block"))
        await nodes.recorder.started_event(job.id).wait()
        runner = next(node for node, job_id, *_ in nodes.recorder.calls if job_id == job.id)
        other = b if runner == "n0" else a
        await other.cancel_job(job.id)

        async def run_canceled() -> bool:
            runs = await nodes.stores[0].list_runs(RunFilter(job_id=job.id), 10)
            return any(run.outcome is RunOutcome.CANCELED for run in runs.items)

        await wait_for(run_canceled)
        assert (await other.get_job(job.id)).status is JobStatus.CANCELED


async def test_a_dead_nodes_running_job_is_taken_over_after_its_lease_and_retried() -> None:
    async with cluster(1, lease_s=1.0, recheck_s=1.0) as nodes:
        job = await nodes.engines[0].add_job(JobSpec(job_type="block", max_retries=2))
        await nodes.recorder.started_event(job.id).wait()
        nodes.crash(0)
        store = PostgresStore(POSTGRES_DSN, schema=nodes.schema, node="n1", pool_size=3)
        await store.open()
        try:
            survivor = Engine(
                store,
                HandlerRegistry({"rec": nodes.recorder.bound("n1")}),
                SystemClock(),
                EngineSettings(node="n1", defaults=FAST_RETRY, lease_s=1.0, safety_recheck_s=1.0),
            )
            async with anyio.create_task_group() as tg:
                await tg.start(survivor.run)

                async def retried_on_survivor() -> bool:
                    return any(
                        node == "n1" and job_id == job.id
                        for node, job_id, *_ in nodes.recorder.calls
                    )

                await wait_for(retried_on_survivor)
                runs = await store.list_runs(RunFilter(job_id=job.id), 10)
                crashed = [run for run in runs.items if run.outcome is RunOutcome.CRASHED]
                assert [run.node for run in crashed] == ["n0"]
                retried = await survivor.get_job(job.id)
                assert retried.status is JobStatus.RUNNING
                assert retried.retry_count == 1
                await survivor.cancel_job(job.id)
                await survivor.stop(grace_s=1)
        finally:
            await store.close()


async def test_trigger_through_a_node_runs_the_job_there_once() -> None:
    async with cluster(2) as nodes:
        a, b = nodes.engines
        later = SystemClock().now() + timedelta(hours=1)
        job = await a.add_job(JobSpec(job_type="work", run_at=later))
        await b.trigger_job(job.id)

        async def back_to_its_schedule() -> bool:
            current = await a.get_job(job.id)
            return current.status is JobStatus.PENDING and current.last_result is not None

        await wait_for(back_to_its_schedule)
        assert [(node, job_id) for node, job_id, *_ in nodes.recorder.calls] == [("n1", job.id)]
        # An extra run: the one-shot's own occurrence is still ahead, unmoved.
        assert (await a.get_job(job.id)).run_at == job.run_at


async def test_a_trigger_whose_start_write_failed_leaves_the_schedule_where_it_was() -> None:
    """The trigger is refused to its caller; its run is closed as crashed, and
    the job goes back to its own occurrence under the lease (before stop 39 it
    went back pending at once, and its occurrence an hour ahead ran then)."""
    async with cluster(1) as nodes:
        (node,) = nodes.engines
        store = nodes.stores[0]
        write_leased = store.write_leased
        failed: list[str] = []

        async def fail_the_first_start(
            node_name: str, jobs: Any = (), runs: Any = (), held: Any = ()
        ) -> set[str]:
            if not failed and any(run.finished_at is None for run in runs):
                failed.append(node_name)
                raise StoreError("simulated: connection lost")
            return await write_leased(node_name, jobs, runs, held)

        store.write_leased = fail_the_first_start  # type: ignore[method-assign]
        later = SystemClock().now() + timedelta(hours=1)
        job = await node.add_job(JobSpec(job_type="work", run_at=later))
        with pytest.raises(StoreError):
            await node.trigger_job(job.id)

        async def crash_recorded_and_job_back() -> bool:
            runs = (await store.list_runs(RunFilter(job_id=job.id), 10)).items
            stored = await store.get_job(job.id)
            assert stored is not None
            return [run.outcome for run in runs] == [RunOutcome.CRASHED] and (
                stored.status is JobStatus.PENDING
            )

        await wait_for(crash_recorded_and_job_back)
        stored = await store.get_job(job.id)
        assert stored is not None
        assert (stored.run_at, stored.scheduled_for) == (job.run_at, job.scheduled_for)
        assert failed and nodes.recorder.calls == []


async def test_a_job_claimed_here_before_its_add_returned_runs() -> None:
    """The add commits; this node's loop claims the new row before the add has
    put the job in memory (the commit's notification wakes it first). The add
    must not overwrite the claimed job with its pending version: before stop 40
    it did, the claimed job left memory, and its lease was renewed for good, so
    it never ran (the flaky follow-up test above, 1 run in 70 under load)."""
    async with cluster(1) as nodes:
        (node,) = nodes.engines
        store = nodes.stores[0]
        insert_jobs, claim_due = store.insert_jobs, store.claim_due
        added: set[str] = set()
        claimed_here = anyio.Event()

        async def claim_noting(*arguments: Any) -> list[Job]:
            claimed = await claim_due(*arguments)
            if added & {job.id for job in claimed}:
                claimed_here.set()
            return claimed

        async def insert_then_let_the_claim_in(jobs: Any) -> None:
            added.update(job.id for job in jobs)
            await insert_jobs(jobs)
            with anyio.fail_after(LIMIT_S):
                await claimed_here.wait()  # the loop claimed it: now the add goes on

        store.claim_due = claim_noting  # type: ignore[method-assign]
        store.insert_jobs = insert_then_let_the_claim_in  # type: ignore[method-assign]
        job = await node.add_job(JobSpec(job_type="work"))

        async def ran() -> bool:
            stored = await store.get_job(job.id)
            return stored is not None and stored.status is JobStatus.COMPLETED

        await wait_for(ran)
    assert [call[1] for call in nodes.recorder.calls] == [job.id]


async def test_a_cancel_is_not_overwritten_by_this_nodes_own_claim() -> None:
    """Found in review at stop 40 (older): a cancel waits for its write behind
    one in flight; meanwhile this node's loop claims the job's row, still
    pending on disk. Before, the claim's start replaced the staged cancel, and
    the job ran although its cancel had been acknowledged."""
    async with cluster(1, concurrency=1) as nodes:
        (node,) = nodes.engines
        store = nodes.stores[0]
        blocker = await node.add_job(JobSpec(job_type="block"))
        await nodes.recorder.started_event(blocker.id).wait()  # the one slot is taken
        job = await node.add_job(JobSpec(job_type="work"))  # due, waits for the slot
        later = await node.add_job(JobSpec(job_type="work", run_at=_in(86400)))
        write, claim_due = store.write, store.claim_due
        gate, in_flight, claimed_here = anyio.Event(), anyio.Event(), anyio.Event()

        async def held_write(*arguments: Any) -> None:
            in_flight.set()
            await gate.wait()
            await write(*arguments)

        async def claim_noting(*arguments: Any) -> list[Job]:
            claimed = await claim_due(*arguments)
            if any(one.id == job.id for one in claimed):
                claimed_here.set()
            return claimed

        store.write = held_write  # type: ignore[method-assign]
        store.claim_due = claim_noting  # type: ignore[method-assign]
        cancelled: list[Job] = []
        async with anyio.create_task_group() as tg:
            tg.start_soon(node.pause_job, later.id)  # its write stays in flight
            await in_flight.wait()
            store.write = write  # type: ignore[method-assign]

            async def cancel() -> None:
                cancelled.append(await node.cancel_job(job.id))

            tg.start_soon(cancel)

            async def cancel_staged() -> bool:
                return node._core.checkpoints.staged_job(job.id) is not None

            await wait_for(cancel_staged)
            tg.start_soon(node.cancel_job, blocker.id)  # the slot frees: the loop claims
            with anyio.fail_after(LIMIT_S):
                await claimed_here.wait()
            gate.set()

        async def settled() -> bool:
            stored = await store.get_job(job.id)
            return stored is not None and stored.status.is_final

        await wait_for(settled)
        stored = await store.get_job(job.id)
    assert [one.status for one in cancelled] == [JobStatus.CANCELED]
    assert stored is not None and stored.status is JobStatus.CANCELED
    assert [call for call in nodes.recorder.calls if call[1] == job.id] == []


def _in(seconds: float) -> datetime:
    return SystemClock().now() + timedelta(seconds=seconds)


class _StaleDueReads(PostgresStore):
    """A store whose ``next_due_at`` answers with what it read, but only once the
    test lets it: an add lands while the read is in flight (issue 17, finding 5)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.reading = anyio.Event()
        self.go_on = anyio.Event()

    async def next_due_at(self) -> datetime | None:
        answer = await super().next_due_at()
        if not self.go_on.is_set():
            self.reading.set()
            await self.go_on.wait()
        return answer


async def test_a_job_added_while_the_due_time_is_read_runs_without_the_safety_recheck() -> None:
    await check_postgres_reachable()
    schema = fresh_schema_name()
    store = _StaleDueReads(POSTGRES_DSN, schema=schema, node="n0", pool_size=3)
    recorder = Recorder()
    settings = EngineSettings(node="n0", max_concurrency=4, defaults=FAST_RETRY, lease_s=30.0)
    assert settings.safety_recheck_s >= 60
    try:
        await store.open()
        engine = engine_for(
            store, HandlerRegistry({"rec": recorder.bound("n0")}), SystemClock(), settings
        )
        async with anyio.create_task_group() as tg:
            await tg.start(engine.run)
            with anyio.fail_after(LIMIT_S):
                await store.reading.wait()  # the start-up read saw no due job
            job = await engine.add_job(JobSpec(job_type="work"))
            store.go_on.set()  # ... and now answers "nothing due"
            # Far below the 60 s safety re-check the job would otherwise wait for.
            await wait_for(lambda: _completed(store, job.id))
            await engine.stop(grace_s=0)
            tg.cancel_scope.cancel()
    finally:
        await store.close()
        await drop_schema(schema)


async def _completed(store: PostgresStore, job_id: str) -> bool:
    job = await store.get_job(job_id)
    return job is not None and job.status is JobStatus.COMPLETED


async def test_requeue_one_and_in_bulk_through_another_node_runs_each_once_more() -> None:
    """SPEC 15 on PostgreSQL: jobs canceled on one node come back to pending
    through another, singly and in bulk (one commit), and run on the cluster."""
    async with cluster(2) as nodes:
        a, b = nodes.engines
        later = SystemClock().now() + timedelta(hours=1)
        jobs = [await a.add_job(JobSpec(job_type="work", run_at=later)) for _ in range(4)]
        for job in jobs:
            await a.cancel_job(job.id)
        single = await b.requeue_job(jobs[0].id)
        assert single.status is JobStatus.PENDING and single.retry_count == 0
        with pytest.raises(InvalidJobState):
            await a.requeue_job(jobs[0].id)  # pending (or already run): not requeued twice
        report = await b.requeue_jobs(RequeueFilter(statuses=frozenset({JobStatus.CANCELED})))
        assert sorted(report.ids) == sorted(job.id for job in jobs[1:])
        await wait_for(lambda: all_final(nodes.stores[0]))
        ran = Counter(job_id for _, job_id, _, _ in nodes.recorder.calls)
        stored = [await nodes.stores[0].get_job(job.id) for job in jobs]
    assert ran == Counter({job.id: 1 for job in jobs})
    assert all(job is not None and job.status is JobStatus.COMPLETED for job in stored)


async def test_a_job_paused_through_a_node_that_died_is_resumed_by_another() -> None:
    """SPEC 15 on PostgreSQL: the time is on disk, and the other nodes read the
    paused jobs again every safety_recheck_s, so the job resumes on time even
    though the node that paused it is gone."""
    async with cluster(2, recheck_s=1) as nodes:
        a = nodes.engines[0]
        start = SystemClock().now()
        job = await a.add_job(JobSpec(job_type="work", run_at=start + timedelta(seconds=3)))
        until = start + timedelta(seconds=1.5)
        paused = await a.pause_job(job.id, until=until)
        assert paused.paused_until == until
        nodes.crash(0)

        async def completed() -> bool:
            stored = await nodes.stores[1].get_job(job.id)
            return stored is not None and stored.status is JobStatus.COMPLETED

        await wait_for(completed)
        [(node, _job_id, _at, _attempt)] = [c for c in nodes.recorder.calls if c[1] == job.id]
    assert node == "n1"


async def test_follow_ups_and_notifications_are_written_with_the_outcome_on_postgresql() -> None:
    """SPEC 15 on PostgreSQL: each failed occurrence's on_failure job and its
    notification land in the transaction that records the failure (one fenced
    write), and any node runs them."""
    rule = NotifyRule(
        frozenset({"failed_permanent"}), ("fail",), JobSpec(job_type="work", payload={"n": 1})
    )
    async with cluster(2, notify=(rule,)) as nodes:
        a = nodes.engines[0]
        jobs = [
            await a.add_job(
                JobSpec(job_type="fail", on_failure=JobSpec(job_type="after", payload={"i": i}))
            )
            for i in range(6)
        ]
        await wait_for(lambda: all_final(nodes.stores[0]))
        store = nodes.stores[1]
        after = (await store.list_jobs(JobFilter(job_type="after"), 100)).items
        alerts = (await store.list_jobs(JobFilter(job_type="work"), 100)).items
        runs = {job.id: (await store.list_runs(RunFilter(job_id=job.id), 10)).items for job in jobs}
    by_trigger = {job.payload["trigger"]["job_id"]: job for job in after}
    assert set(by_trigger) == {job.id for job in jobs}
    for job in jobs:
        [run] = runs[job.id]
        follow_up = by_trigger[job.id]
        assert follow_up.payload["trigger"]["run_id"] == run.id
        assert follow_up.created_at == run.finished_at  # staged by the same finish
        assert follow_up.status is JobStatus.COMPLETED
    assert sorted(alert.payload["event"]["job"]["id"] for alert in alerts) == sorted(
        job.id for job in jobs
    )
    assert all(alert.extras is not None and alert.extras.notification for alert in alerts)


async def test_a_take_over_adds_the_crashed_notification_with_the_crash_record() -> None:
    """A node dies during an attempt; the node that takes the job over records
    the run crashed and adds the crashed / failed_permanent notifications and
    the on_failure job in the same write."""
    rule = NotifyRule(
        frozenset({"crashed", "failed_permanent"}), ("block",), JobSpec(job_type="work")
    )
    async with cluster(2, lease_s=1.0, recheck_s=1.0, notify=(rule,)) as nodes:
        a = nodes.engines[0]
        job = await a.add_job(
            JobSpec(job_type="block", max_retries=0, on_failure=JobSpec(job_type="after"))
        )
        await nodes.recorder.started_event(job.id).wait()
        [(node, *_)] = [c for c in nodes.recorder.calls if c[1] == job.id]
        nodes.crash(0 if node == "n0" else 1)
        survivor = nodes.stores[1 if node == "n0" else 0]

        async def settled() -> bool:
            stored = await survivor.get_job(job.id)
            if stored is None or stored.status is not JobStatus.FAILED_PERMANENT:
                return False
            return await all_final(survivor)

        await wait_for(settled)
        [run] = (await survivor.list_runs(RunFilter(job_id=job.id), 10)).items
        alerts = (await survivor.list_jobs(JobFilter(job_type="work"), 10)).items
        [after] = (await survivor.list_jobs(JobFilter(job_type="after"), 10)).items
    assert run.outcome is RunOutcome.CRASHED
    assert sorted(a.payload["event"]["event"] for a in alerts) == ["crashed", "failed_permanent"]
    assert after.payload["trigger"] == {
        "job_id": job.id,
        "run_id": run.id,
        "outcome": "crashed",
        "error": run.error,
        "output": None,
    }


async def test_backfill_through_a_node_runs_each_occurrence_once_and_a_retry_adds_nothing() -> None:
    """SPEC 15 on PostgreSQL: the jobs a backfill adds are claimed across the
    cluster, each run once with its occurrence; a retried call through another
    node, while they still run, adds only what is missing (the store's query)."""
    async with cluster(2) as nodes:
        a, b = nodes.engines
        start = SystemClock().now().replace(second=0, microsecond=0) - timedelta(minutes=10)
        minutely = Recurrence(RecurrenceKind.MINUTELY, timezone="UTC")
        parent = await a.add_job(JobSpec(job_type="block", run_at=start, recurrence=minutely))
        minute = timedelta(minutes=1)
        report = await b.backfill_job(parent.id, start, start + 5 * minute)
        jobs = report.jobs
        assert [job.scheduled_for for job in jobs] == [start + i * minute for i in range(5)]
        assert [job.idempotency_key for job in jobs] == [f"{parent.id}:{i}" for i in range(5)]
        with anyio.fail_after(LIMIT_S):
            for job in jobs:
                await nodes.recorder.started_event(job.id).wait()  # running: still live
        again = await a.backfill_job(parent.id, start, start + 6 * minute)
        assert (len(again.jobs), again.already_queued) == (1, 5)
        assert again.jobs[0].scheduled_for == start + 5 * minute
        with anyio.fail_after(LIMIT_S):
            await nodes.recorder.started_event(again.jobs[0].id).wait()
        stored = await nodes.stores[1].get_job(parent.id)
        assert stored is not None and stored.extras is None
        ran = Counter(job_id for _, job_id, _, _ in nodes.recorder.calls)
        scheduled = {job_id: at for _, job_id, at, _ in nodes.recorder.calls}
    for job in [*jobs, *again.jobs]:
        assert ran[job.id] == 1
        assert scheduled[job.id] == job.scheduled_for
