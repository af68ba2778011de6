"""The behaviour every store backend must show (run once per backend, see conftest)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

import anyio
import pytest

from nexus_schedd.errors import InvalidSpec, JobExists, StoreError
from nexus_schedd.model import (
    BackfillOf,
    Job,
    JobExtras,
    JobSpec,
    JobStatus,
    LastResult,
    MisfirePolicy,
    OverlapPolicy,
    Recurrence,
    RecurrenceKind,
    Run,
    RunOutcome,
)
from nexus_schedd.model.queries import JobFilter, RunFilter
from nexus_schedd.store import Store
from nexus_schedd.store.keys import encode_job_cursor
from tests.store.factories import T0, make_job, make_run

pytestmark = pytest.mark.anyio


async def all_jobs(store: Store, where: JobFilter, limit: int) -> list[Job]:
    """Every job of a listing, page by page, checking that pages are full until the last."""
    jobs: list[Job] = []
    cursor: str | None = None
    while True:
        page = await store.list_jobs(where, limit, cursor)
        jobs.extend(page.items)
        if page.next_cursor is None:
            return jobs
        assert len(page.items) == limit
        cursor = page.next_cursor


async def all_runs(store: Store, where: RunFilter, limit: int) -> list[Run]:
    """Every run of a listing, page by page."""
    runs: list[Run] = []
    cursor: str | None = None
    while True:
        page = await store.list_runs(where, limit, cursor)
        runs.extend(page.items)
        if page.next_cursor is None:
            return runs
        assert len(page.items) == limit
        cursor = page.next_cursor


# -- insert and lookup ----------------------------------------------------------------


async def test_inserted_jobs_are_found_by_id_and_by_name(store: Store) -> None:
    named = make_job(1, name="nightly")
    await store.insert_jobs([named, make_job(2)])

    assert await store.get_job("J0001") == named
    assert await store.get_job("J0002") == make_job(2)
    assert await store.get_job_by_name("nightly") == named
    assert await store.get_job("J9999") is None
    assert await store.get_job_by_name("nobody") is None


async def test_inserting_a_name_held_by_a_live_job_raises_job_exists(store: Store) -> None:
    await store.insert_jobs([make_job(1, name="report")])

    with pytest.raises(JobExists) as caught:
        await store.insert_jobs([make_job(2, name="report")])

    assert caught.value.name == "report"
    assert caught.value.job_id == "J0001"
    assert await store.get_job("J0002") is None


async def test_a_name_is_free_again_once_its_holder_is_final(store: Store) -> None:
    await store.insert_jobs([make_job(1, name="report")])
    await store.write(jobs=[make_job(1, name="report", status=JobStatus.COMPLETED, run_at=None)])

    await store.insert_jobs([make_job(2, name="report")])

    holder = await store.get_job_by_name("report")
    assert holder is not None and holder.id == "J0002"


async def test_final_jobs_may_share_a_name(store: Store) -> None:
    done = [make_job(n, name="old", status=JobStatus.CANCELED) for n in (1, 2, 3)]
    await store.insert_jobs(done)

    assert await store.get_job_by_name("old") is None
    assert [await store.get_job(j.id) for j in done] == done


async def test_a_batch_with_one_duplicate_name_inserts_nothing(store: Store) -> None:
    await store.insert_jobs([make_job(1, name="taken")])

    with pytest.raises(JobExists):
        await store.insert_jobs([make_job(2), make_job(3, name="taken"), make_job(4)])

    assert [await store.get_job(f"J000{n}") for n in (2, 3, 4)] == [None, None, None]


async def test_a_batch_naming_two_jobs_alike_inserts_nothing(store: Store) -> None:
    with pytest.raises(JobExists) as caught:
        await store.insert_jobs([make_job(1, name="twin"), make_job(2, name="twin")])

    assert caught.value.job_id == "J0001"
    assert await store.count_by_status() in ({}, {JobStatus.PENDING: 0})


async def test_inserting_an_existing_id_is_refused_and_changes_nothing(store: Store) -> None:
    original = make_job(1, job_type="first")
    await store.insert_jobs([original])

    with pytest.raises(StoreError):
        await store.insert_jobs([make_job(2), make_job(1, job_type="second")])

    assert await store.get_job("J0001") == original
    assert await store.get_job("J0002") is None


# -- write ------------------------------------------------------------------------------


async def test_write_inserts_and_then_replaces_whole_rows(store: Store) -> None:
    job = make_job(1, name="n")
    run = make_run(1, job.id, finished_at=None, outcome=None)
    await store.write(jobs=[job], runs=[run])
    assert await store.get_job(job.id) == job
    assert await store.open_runs() == [run]

    later = T0 + timedelta(hours=1)
    changed = replace(
        job,
        status=JobStatus.RUNNING,
        run_at=later,
        retry_count=2,
        payload={"now": "different"},
        updated_at=later,
    )
    finished = replace(run, finished_at=later, outcome=RunOutcome.FAILURE, error="boom")
    await store.write(jobs=[changed], runs=[finished])

    assert await store.get_job(job.id) == changed
    assert await store.open_runs() == []
    page = await store.list_runs(RunFilter(job_id=job.id), 10)
    assert page.items == [finished]


async def test_write_may_change_a_jobs_type_and_target(store: Store) -> None:
    job = make_job(1, job_type="a", target_id="x")
    await store.write(jobs=[job])

    moved = replace(job, job_type="b", target_id="y")
    await store.write(jobs=[moved])

    assert await store.get_job(job.id) == moved
    assert [j.id for j in await all_jobs(store, JobFilter(job_type="b"), 5)] == [job.id]
    assert await all_jobs(store, JobFilter(target_id="x"), 5) == []


async def test_write_refuses_to_give_a_live_name_to_a_second_job(store: Store) -> None:
    await store.insert_jobs([make_job(1, name="n"), make_job(2)])

    with pytest.raises(JobExists):
        await store.write(jobs=[make_job(2, name="n")], runs=[make_run(1, "J0002")])

    assert await store.get_job("J0002") == make_job(2)
    assert (await store.list_runs(RunFilter(), 10)).items == []


async def test_every_field_survives_a_round_trip(store: Store) -> None:
    berlin_anchor = datetime(2030, 3, 30, 2, 30, tzinfo=timezone(timedelta(hours=1)))
    full = Job(
        id="J0001",
        job_type="export_report",
        status=JobStatus.RUNNING,
        run_at=T0 + timedelta(microseconds=123_457),
        scheduled_for=T0,
        anchor_at=berlin_anchor,
        created_at=T0 - timedelta(days=3),
        updated_at=T0 + timedelta(seconds=1, microseconds=1),
        name="exports für Zoë 🚀",
        target_id="tenant-ß",
        payload={"text": "grüße 日本 🚀", "nested": {"list": [1, 2.5, None, True]}, "n": -7},
        recurrence=Recurrence(
            kind=RecurrenceKind.CRON,
            cron="30 2 * * 1-5",
            timezone="Europe/Berlin",
            ends_at=datetime(2031, 1, 1, tzinfo=UTC),
            max_occurrences=40,
        ),
        priority=-5,
        max_retries=7,
        retry_count=2,
        occurrence_count=11,
        timeout_s=12.5,
        misfire=MisfirePolicy.RUN_ALL,
        misfire_grace_s=0.0,
        overlap=OverlapPolicy.REPLACE,
        jitter_s=3.25,
        last_result=LastResult(
            success=False,
            output={"tail": "ünïcode"},
            error="exit 75",
            started_at=T0 - timedelta(minutes=5),
            finished_at=T0 - timedelta(minutes=4, microseconds=5),
            duration_ms=59999.995,
        ),
        static=True,
        extras=JobExtras(
            on_success=JobSpec(job_type="log", payload={"message": "done ✓"}),
            on_failure=JobSpec(
                job_type="http",
                payload={"url": "http://127.0.0.1:9/alert"},
                max_retries=1,
                recurrence=Recurrence(kind=RecurrenceKind.ONCE, timezone="Europe/Berlin"),
            ),
            trace_context={"traceparent": "00-" + "1" * 32 + "-" + "2" * 16 + "-01"},
            backfill_of=BackfillOf("J0000", 41),
            notification=True,
        ),
    )
    sparse = Job(
        id="J0002",
        job_type="noop",
        status=JobStatus.COMPLETED,
        run_at=None,
        scheduled_for=None,
        anchor_at=T0,
        created_at=T0,
        updated_at=T0,
        recurrence=Recurrence(kind=RecurrenceKind.WEEKLY, interval=2),
        timeout_s=None,
        last_result=LastResult(True, None, None, T0, T0, 0.0),
    )
    run = Run(
        id="R0001",
        job_id="J0001",
        scheduled_for=T0,
        attempt=3,
        started_at=T0 + timedelta(microseconds=1),
        finished_at=T0 + timedelta(seconds=2),
        outcome=RunOutcome.TIMEOUT,
        error="timed out after 12.5 s",
        output=["ok", {"ä": 1}],
        node="node-1",
        job_type="export_report",
    )
    open_run = Run(id="R0002", job_id="J0002", scheduled_for=T0, attempt=1, started_at=T0)
    await store.insert_jobs([full])
    await store.write(jobs=[sparse], runs=[run, open_run])

    assert await store.get_job("J0001") == full
    assert await store.get_job("J0002") == sparse
    assert (await store.list_runs(RunFilter(), 10)).items == [run, open_run]
    loaded = await store.get_job("J0001")
    assert loaded is not None and loaded.payload == full.payload
    assert loaded.static is True


# -- the engine's reads -------------------------------------------------------------


async def test_next_pending_orders_by_run_at_then_id_and_continues_after_a_key(
    store: Store,
) -> None:
    same_time = T0 + timedelta(minutes=5)
    jobs = [
        make_job(1, run_at=same_time),
        make_job(2, run_at=T0),
        make_job(3, run_at=same_time),
        make_job(4, run_at=T0 + timedelta(minutes=1)),
        make_job(5, status=JobStatus.PAUSED, run_at=T0 - timedelta(days=1)),
        make_job(6, status=JobStatus.RUNNING, run_at=T0 - timedelta(days=1)),
        make_job(7, status=JobStatus.COMPLETED),
    ]
    await store.insert_jobs(jobs)

    first = await store.next_pending(None, 3)
    assert [j.id for j in first] == ["J0002", "J0004", "J0001"]
    assert first[-1].run_at is not None
    rest = await store.next_pending((first[-1].run_at, first[-1].id), 10)
    assert [j.id for j in rest] == ["J0003"]
    assert await store.next_pending((same_time, "J0003"), 10) == []


async def test_next_pending_reads_one_type_or_past_others(store: Store) -> None:
    # A window reads past job types whose backlog waits in the store for their
    # limit or rate, and reads each such type on its own (docs/engine.md).
    await store.insert_jobs(
        [
            make_job(n, job_type="slow" if n % 2 else "fast", run_at=T0 + timedelta(seconds=n))
            for n in range(1, 9)
        ]
        + [make_job(9, job_type="other", run_at=T0 + timedelta(seconds=9))]
    )

    slow = await store.next_pending(None, 10, only_type="slow")
    assert [j.id for j in slow] == ["J0001", "J0003", "J0005", "J0007"]
    after = (slow[1].run_at, slow[1].id)
    assert [j.id for j in await store.next_pending(after, 1, only_type="slow")] == ["J0005"]
    rest = await store.next_pending(None, 10, skip_types={"slow"})
    assert [j.id for j in rest] == ["J0002", "J0004", "J0006", "J0008", "J0009"]
    only_other = await store.next_pending(None, 10, skip_types=["slow", "fast"])
    assert [j.id for j in only_other] == ["J0009"]
    assert await store.next_pending(None, 10, only_type="slow", skip_types={"slow"}) == []


async def test_jobs_in_status_returns_exactly_those(store: Store) -> None:
    await store.insert_jobs(
        [
            make_job(1, status=JobStatus.RUNNING),
            make_job(2),
            make_job(3, status=JobStatus.RUNNING),
        ]
    )

    assert [j.id for j in await store.jobs_in_status(JobStatus.RUNNING)] == ["J0001", "J0003"]
    assert await store.jobs_in_status(JobStatus.PAUSED) == []


async def test_open_runs_are_the_runs_without_an_outcome(store: Store) -> None:
    open_run = make_run(2, "J0001", finished_at=None, outcome=None)
    await store.write(runs=[make_run(1, "J0001"), open_run, make_run(3, "J0002")])

    assert await store.open_runs() == [open_run]


# -- listings -----------------------------------------------------------------------


async def test_list_jobs_applies_each_filter(store: Store) -> None:
    await store.insert_jobs(
        [
            make_job(1, job_type="a", target_id="t1"),
            make_job(2, job_type="b", target_id="t1", status=JobStatus.PAUSED),
            make_job(3, job_type="a", target_id="t2", status=JobStatus.COMPLETED, run_at=None),
            make_job(4, job_type="a", run_at=T0 + timedelta(days=1)),
        ]
    )

    async def ids(where: JobFilter) -> list[str]:
        return [j.id for j in await all_jobs(store, where, 10)]

    assert await ids(JobFilter()) == ["J0001", "J0002", "J0003", "J0004"]
    assert await ids(JobFilter(statuses=frozenset({JobStatus.PENDING}))) == ["J0001", "J0004"]
    assert await ids(JobFilter(statuses=frozenset({JobStatus.PAUSED, JobStatus.COMPLETED}))) == [
        "J0002",
        "J0003",
    ]
    assert await ids(JobFilter(job_type="a")) == ["J0001", "J0003", "J0004"]
    assert await ids(JobFilter(target_id="t1")) == ["J0001", "J0002"]
    assert await ids(JobFilter(job_type="a", target_id="t1")) == ["J0001"]
    assert await ids(JobFilter(due_before=T0 + timedelta(hours=1))) == ["J0001"]
    assert await ids(JobFilter(due_before=T0 + timedelta(seconds=1))) == ["J0001"]
    assert await ids(JobFilter(due_before=T0)) == []
    assert await ids(JobFilter(job_type="zzz")) == []


async def test_list_jobs_pages_through_every_match_once_in_id_order(store: Store) -> None:
    jobs = [make_job(n, job_type="even" if n % 2 == 0 else "odd") for n in range(1, 41)]
    await store.insert_jobs(jobs)

    listed = await all_jobs(store, JobFilter(), 7)
    assert [j.id for j in listed] == [j.id for j in jobs]

    evens = await all_jobs(store, JobFilter(job_type="even"), 3)
    assert [j.id for j in evens] == [j.id for j in jobs if j.job_type == "even"]

    exact = await store.list_jobs(JobFilter(), 40)
    assert len(exact.items) == 40 and exact.next_cursor is None


async def test_list_runs_is_newest_first_filtered_and_paged(store: Store) -> None:
    runs = [
        make_run(
            n, f"J{n % 3:04d}", outcome=RunOutcome.FAILURE if n % 4 == 0 else RunOutcome.SUCCESS
        )
        for n in range(1, 30)
    ]
    tie = make_run(99, "J0001", started_at=runs[10].started_at)
    await store.write(runs=[*runs, tie])
    newest_first = sorted([*runs, tie], key=lambda r: (r.started_at, r.id), reverse=True)

    assert await all_runs(store, RunFilter(), 4) == newest_first
    assert await all_runs(store, RunFilter(job_id="J0001"), 2) == [
        r for r in newest_first if r.job_id == "J0001"
    ]
    failures = RunFilter(outcomes=frozenset({RunOutcome.FAILURE}))
    assert await all_runs(store, failures, 3) == [
        r for r in newest_first if r.outcome is RunOutcome.FAILURE
    ]
    assert await all_runs(store, RunFilter(job_id="J0404"), 3) == []


@pytest.mark.parametrize(
    "cursor", ["", "not base64 !!", "e30", "bm90IGpzb24", encode_job_cursor("J0001") + "x"]
)
async def test_a_malformed_cursor_is_an_invalid_spec(store: Store, cursor: str) -> None:
    with pytest.raises(InvalidSpec) as caught:
        await store.list_runs(RunFilter(), 5, cursor)
    assert caught.value.field == "cursor"
    if cursor.startswith(encode_job_cursor("J0001")):
        return
    with pytest.raises(InvalidSpec) as caught:
        await store.list_jobs(JobFilter(), 5, cursor)
    assert caught.value.field == "cursor"


async def test_a_job_cursor_is_refused_by_the_run_listing(store: Store) -> None:
    await store.insert_jobs([make_job(1), make_job(2)])
    page = await store.list_jobs(JobFilter(), 1)
    assert page.next_cursor is not None

    with pytest.raises(InvalidSpec):
        await store.list_runs(RunFilter(), 1, page.next_cursor)


@pytest.mark.parametrize("limit", [0, -1])
async def test_a_page_size_below_one_is_refused(store: Store, limit: int) -> None:
    with pytest.raises(InvalidSpec):
        await store.list_jobs(JobFilter(), limit)
    with pytest.raises(InvalidSpec):
        await store.next_pending(None, limit)


async def test_count_by_status_counts_each_status(store: Store) -> None:
    await store.insert_jobs(
        [
            make_job(1),
            make_job(2),
            make_job(3, status=JobStatus.PAUSED),
            make_job(4, status=JobStatus.CANCELED),
        ]
    )

    counts = await store.count_by_status()
    assert {s: n for s, n in counts.items() if n} == {
        JobStatus.PENDING: 2,
        JobStatus.PAUSED: 1,
        JobStatus.CANCELED: 1,
    }


# -- pruning --------------------------------------------------------------------------


async def test_prune_drops_finished_runs_older_than_the_cut_off(store: Store) -> None:
    old = make_run(1, "J0001")
    old_but_open = make_run(2, "J0001", finished_at=None, outcome=None)
    recent = make_run(30, "J0001")
    await store.write(runs=[old, old_but_open, recent])

    deleted = await store.prune_runs(T0 + timedelta(minutes=10), keep_per_job=100)

    assert deleted == 1
    assert await all_runs(store, RunFilter(), 10) == [recent, old_but_open]


async def test_prune_keeps_only_the_newest_runs_of_each_job(store: Store) -> None:
    a_runs = [make_run(n, "J000A") for n in range(1, 6)]
    b_runs = [make_run(n, "J000B") for n in range(10, 12)]
    await store.write(runs=[*a_runs, *b_runs])

    deleted = await store.prune_runs(T0 - timedelta(days=1), keep_per_job=2)

    assert deleted == 3
    assert await all_runs(store, RunFilter(job_id="J000A"), 10) == [a_runs[4], a_runs[3]]
    assert await all_runs(store, RunFilter(job_id="J000B"), 10) == [b_runs[1], b_runs[0]]


async def test_prune_of_named_jobs_applies_keep_per_job_to_those_jobs_only(store: Store) -> None:
    """The engine names the jobs whose runs ended since its last prune: only their
    runs are counted against keep_per_job; the age limit still applies to all."""
    a_runs = [make_run(n, "J000A") for n in range(100, 105)]
    b_runs = [make_run(n, "J000B") for n in range(110, 115)]
    b_old = make_run(1, "J000B")
    await store.write(runs=[*a_runs, *b_runs, b_old])

    deleted = await store.prune_runs(T0 + timedelta(minutes=10), keep_per_job=2, jobs={"J000A"})

    assert deleted == 3 + 1
    assert await all_runs(store, RunFilter(job_id="J000A"), 10) == [a_runs[4], a_runs[3]]
    assert await all_runs(store, RunFilter(job_id="J000B"), 10) == b_runs[::-1]

    assert await store.prune_runs(T0, keep_per_job=2, jobs=()) == 0
    assert len(await all_runs(store, RunFilter(), 20)) == 2 + 5


async def test_prune_scales_to_many_runs(store: Store) -> None:
    runs = [make_run(n, f"J{n % 50:04d}") for n in range(5000)]
    for offset in range(0, len(runs), 1000):
        await store.write(runs=runs[offset : offset + 1000])

    deleted = await store.prune_runs(T0 + timedelta(minutes=2500), keep_per_job=10)

    remaining = await all_runs(store, RunFilter(), 1000)
    assert deleted == 5000 - len(remaining)
    assert len(remaining) == 500
    assert all(r.started_at >= T0 + timedelta(minutes=2500) for r in remaining)


# -- concurrency ----------------------------------------------------------------------


async def test_concurrent_writes_from_many_tasks_all_land(store: Store) -> None:
    commits_before = getattr(store, "commits", None)

    async with anyio.create_task_group() as tg:
        for n in range(200):
            job = make_job(n)
            tg.start_soon(lambda job=job, n=n: store.write(jobs=[job], runs=[make_run(n, job.id)]))

    assert len(await all_jobs(store, JobFilter(), 1000)) == 200
    assert len(await all_runs(store, RunFilter(), 1000)) == 200
    if commits_before is not None:
        # Group commit: the 200 writes shared a handful of transactions.
        assert store.commits - commits_before <= 20  # type: ignore[attr-defined]


async def test_one_failing_call_does_not_fail_the_calls_committed_with_it(store: Store) -> None:
    await store.insert_jobs([make_job(0, name="taken")])
    outcomes: dict[int, BaseException | None] = {}

    async def insert(n: int, name: str | None) -> None:
        # Two jobs a call: a failing call must not leave its first job behind.
        try:
            await store.insert_jobs([make_job(n), make_job(100 + n, name=name)])
        except JobExists as exc:
            outcomes[n] = exc
        else:
            outcomes[n] = None

    async with anyio.create_task_group() as tg:
        for n in range(1, 31):
            tg.start_soon(insert, n, "taken" if n in (7, 19) else f"free-{n}")

    assert {n for n, error in outcomes.items() if error is not None} == {7, 19}
    stored = await all_jobs(store, JobFilter(), 100)
    assert sorted(j.id for j in stored) == sorted(
        ["J0000"]
        + [f"J{n:04d}" for n in range(1, 31) if n not in (7, 19)]
        + [f"J{100 + n:04d}" for n in range(1, 31) if n not in (7, 19)]
    )
    if hasattr(store, "commits"):
        assert store.commits < 31


async def test_close_is_safe_twice_and_writes_after_it_are_refused(store: Store) -> None:
    await store.close()
    await store.close()

    with pytest.raises(StoreError):
        await store.write(jobs=[make_job(1)])


async def test_a_final_job_is_found_by_name_only_when_asked_and_the_newest_wins(
    store: Store,
) -> None:
    done = [make_job(n, name="old", status=JobStatus.COMPLETED, run_at=None) for n in (1, 2)]
    await store.insert_jobs(done)
    assert await store.get_job_by_name("old") is None  # names bind live jobs only
    assert await store.get_job_by_name("old", include_final=True) == done[1]
    live = make_job(3, name="old")
    await store.insert_jobs([live])
    assert await store.get_job_by_name("old", include_final=True) == live  # a live holder first
    assert await store.get_job_by_name("nobody", include_final=True) is None
