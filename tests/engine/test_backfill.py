"""Backfill (SPEC 15): past occurrences of a recurring job run once more as extra
one-shot jobs with their own scheduled_for and idempotency key; on the memory and
SQLite stores, in virtual time (PostgreSQL: test_multinode)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import pytest

from nexus_schedd.clock import VirtualClock
from nexus_schedd.engine import Engine, EngineSettings
from nexus_schedd.engine.backfill import (
    MAX_BACKFILL_OCCURRENCES,
    BackfillOccurrence,
    backfill_occurrences,
    backfill_spec,
    job_for_occurrence,
)
from nexus_schedd.errors import InvalidSpec, JobNotFound
from nexus_schedd.model import (
    Job,
    JobResult,
    JobSpec,
    JobStatus,
    MisfirePolicy,
    Recurrence,
    RecurrenceKind,
)
from nexus_schedd.model.queries import JobFilter
from nexus_schedd.model.schedule import occurrences
from nexus_schedd.model.times import resolve_zone
from tests.engine.harness import (
    EXACT,
    T0,
    ScriptedHandler,
    TrackedStore,
    at,
    engine_running,
    is_final,
    quiesce,
    sleeper,
    wait_until,
)

pytestmark = pytest.mark.anyio

HOUR = 3600
HOURLY = Recurrence(RecurrenceKind.HOURLY, timezone="UTC")
BERLIN = "Europe/Berlin"


async def all_jobs(engine: Engine) -> list[Job]:
    return (await engine.list_jobs(JobFilter(), 1000)).items


async def run_to_completion(engine: Engine, store: TrackedStore, jobs: list[Job]) -> None:
    for job in jobs:
        await wait_until(engine, job.id, is_final, store)


def keys_by_occurrence(handler: ScriptedHandler, job_id: str) -> dict[datetime, str]:
    return {call.scheduled_for: call.key for call in handler.calls_of(job_id)}


async def test_each_occurrence_in_the_range_runs_once_more_with_the_key_its_own_run_had(
    store: TrackedStore,
) -> None:
    clock = VirtualClock(T0)
    handler = ScriptedHandler(clock)
    async with engine_running(store, clock, handler, jump=False) as engine:
        parent = await engine.add_job(JobSpec(job_type="work", run_at=at(0), recurrence=HOURLY))
        for hour in range(5):
            clock.advance_to(at(hour * HOUR))
            await quiesce(store)
        clock.advance_to(at(4 * HOUR + 1800))
        before = await engine.get_job(parent.id)
        assert (before.scheduled_for, before.occurrence_count) == (at(5 * HOUR), 5)

        report = await engine.backfill_job(parent.id, at(HOUR), at(4 * HOUR))

        assert (await engine.get_job(parent.id)) == before  # the schedule does not move
        assert (await store.get_job(parent.id)) == before
        added = report.jobs
        assert [job.scheduled_for for job in added] == [at(h * HOUR) for h in (1, 2, 3)]
        assert all((j.run_at, j.recurrence, j.name) == (clock.now(), None, None) for j in added)
        for job in added:  # on disk when it returns (maybe started already)
            stored = await store.get_job(job.id)
            assert stored is not None and stored.extras == job.extras
        await run_to_completion(engine, store, added)
    own = keys_by_occurrence(handler, parent.id)
    for job in added:
        [call] = handler.calls_of(job.id)
        assert call.scheduled_for == job.scheduled_for
        assert call.key == own[job.scheduled_for] == f"{parent.id}:{job.scheduled_for.hour - 8}"
        assert call.at == at(4 * HOUR + 1800)  # due when queued, however old the occurrence


async def test_occurrences_a_misfire_skipped_keep_the_numbers_the_job_counted(
    store: TrackedStore,
) -> None:
    clock = VirtualClock(T0)
    handler = ScriptedHandler(clock)
    spec = JobSpec(job_type="work", run_at=at(0), recurrence=HOURLY, misfire=MisfirePolicy.RUN_ONCE)
    async with engine_running(store, clock, handler, jump=False) as engine:
        parent = await engine.add_job(spec)
        await quiesce(store)
    clock.advance(5 * HOUR + 600)  # down: 01:00..05:00 missed, run_once runs 05:00
    async with engine_running(store, clock, handler, jump=False) as engine:
        await quiesce(store)
        report = await engine.backfill_job(parent.id, at(0), clock.now())
        await run_to_completion(engine, store, report.jobs)
    own = keys_by_occurrence(handler, parent.id)
    assert sorted(own) == [at(0), at(5 * HOUR)]
    backfilled = {job.scheduled_for: handler.calls_of(job.id)[0].key for job in report.jobs}
    assert sorted(backfilled) == [at(h * HOUR) for h in range(6)]
    assert backfilled[at(0)] == own[at(0)]
    assert backfilled[at(5 * HOUR)] == own[at(5 * HOUR)] == f"{parent.id}:5"
    assert [backfilled[at(h * HOUR)] for h in range(6)] == [f"{parent.id}:{h}" for h in range(6)]


async def test_backfill_jobs_queue_under_the_type_limit_and_number_a_completed_schedule(
    store: TrackedStore,
) -> None:
    clock = VirtualClock(T0)
    handler = ScriptedHandler(clock, behaviour=sleeper(clock, 60))
    settings = EngineSettings(max_concurrency=10, type_limits={"work": 1}, defaults=EXACT)
    recurrence = Recurrence(RecurrenceKind.HOURLY, max_occurrences=4)
    async with engine_running(store, clock, handler, settings=settings) as engine:
        parent = await engine.add_job(
            JobSpec(job_type="work", run_at=at(0), recurrence=recurrence, priority=5)
        )
        done = await wait_until(engine, parent.id, is_final, store)
        assert (done.status, done.occurrence_count) == (JobStatus.COMPLETED, 4)
        queued_at = clock.now()
        # The range runs past the schedule's end: only its four occurrences exist.
        report = await engine.backfill_job(parent.id, at(-HOUR), at(10 * HOUR))
        assert [job.priority for job in report.jobs] == [5] * 4
        await run_to_completion(engine, store, report.jobs)
        assert (await engine.get_job(parent.id)) == done
    assert handler.max_running == {"work": 1}
    calls = [handler.calls_of(job.id)[0] for job in report.jobs]
    assert [call.at for call in calls] == [queued_at + timedelta(seconds=60 * i) for i in range(4)]
    own = keys_by_occurrence(handler, parent.id)
    assert [(call.scheduled_for, call.key) for call in calls] == sorted(own.items())


@pytest.mark.parametrize(
    ("first_run_at", "expected_local"),
    [
        # The job's own first run the day before the gap.
        (
            "2025-03-28T02:30:00",
            ["2025-03-28T02:30+01:00", "2025-03-29T02:30+01:00", "2025-03-30T03:00+02:00"],
        ),
        # First run asked for inside the gap: it ran at 03:00, then 02:30 again;
        # its anchor (2025-03-29 02:30) is an instant it never ran at.
        (
            "2025-03-30T02:30:00",
            ["2025-03-30T03:00+02:00", "2025-03-31T02:30+02:00", "2025-04-01T02:30+02:00"],
        ),
    ],
)
async def test_a_dst_day_gives_the_instants_and_keys_of_the_jobs_own_schedule(
    store: TrackedStore, first_run_at: str, expected_local: list[str]
) -> None:
    clock = VirtualClock(datetime(2025, 3, 27, 12, 0, tzinfo=UTC))
    handler = ScriptedHandler(clock)
    recurrence = {"kind": "daily", "timezone": BERLIN, "max_occurrences": 3}
    spec = JobSpec.from_json({"job_type": "work", "run_at": first_run_at, "recurrence": recurrence})
    async with engine_running(store, clock, handler) as engine:
        parent = await engine.add_job(spec)
        await wait_until(engine, parent.id, is_final, store)
        start = datetime(2025, 3, 27, 0, 0, tzinfo=resolve_zone(BERLIN))
        report = await engine.backfill_job(parent.id, start, start + timedelta(days=6))
        await run_to_completion(engine, store, report.jobs)
    instants = [job.scheduled_for for job in report.jobs]
    assert [t.isoformat(timespec="minutes") for t in instants] == expected_local
    own = keys_by_occurrence(handler, parent.id)
    assert sorted(own) == instants
    assert [handler.calls_of(job.id)[0].key for job in report.jobs] == [own[t] for t in instants]


async def test_bad_input_is_refused_naming_the_field_and_changes_nothing(
    store: TrackedStore,
) -> None:
    clock = VirtualClock(T0)
    handler = ScriptedHandler(clock)
    async with engine_running(store, clock, handler, jump=False) as engine:
        minutely = await engine.add_job(
            JobSpec(
                job_type="work",
                run_at=at(60),
                recurrence=Recurrence(RecurrenceKind.MINUTELY, timezone="UTC"),
            )
        )
        cron = await engine.add_job(
            JobSpec(
                job_type="work",
                run_at=at(60),
                recurrence=Recurrence(RecurrenceKind.CRON, cron="* * * * *", timezone="UTC"),
            )
        )
        one_shot = await engine.add_job(JobSpec(job_type="work", run_at=at(HOUR)))
        for job in (minutely, cron, one_shot):
            await engine.pause_job(job.id)
        clock.advance_to(at(8 * 86400))
        await quiesce(store)
        before = await all_jobs(engine)

        refusals: list[tuple[str, datetime, datetime, str, str]] = [
            (one_shot.id, at(0), at(HOUR), "id", "one-shot"),
            (minutely.id, at(HOUR), at(HOUR), "to", "is not after from"),
            (minutely.id, at(2 * HOUR), at(HOUR), "to", "is not after from"),
            # 8 days of minutes from 00:01 on day 0: 11,520 occurrences up to now.
            (minutely.id, at(0), at(9 * 86400), "to", "holds 11,520 occurrences"),
            (cron.id, at(0), at(8 * 86400), "to", "holds more than 10,000 occurrences"),
        ]
        for ref, start, end, field_name, text in refusals:
            with pytest.raises(InvalidSpec) as refused:
                await engine.backfill_job(ref, start, end)
            assert refused.value.field == field_name, refused.value
            assert text in refused.value.reason
            if "occurrences" in text:
                assert f"at most {MAX_BACKFILL_OCCURRENCES:,}" in refused.value.reason
                assert "split the range" in refused.value.reason
        with pytest.raises(JobNotFound):
            await engine.backfill_job("no-such-job", at(0), at(HOUR))
        await quiesce(store)
        assert (await all_jobs(engine)) == before
        assert handler.calls == []


async def test_a_range_without_occurrences_adds_nothing(store: TrackedStore) -> None:
    clock = VirtualClock(T0)
    async with engine_running(store, clock, ScriptedHandler(clock), jump=False) as engine:
        parent = await engine.add_job(JobSpec(job_type="work", run_at=at(600), recurrence=HOURLY))
        await engine.pause_job(parent.id)
        clock.advance_to(at(2 * 86400))
        # Before the job's first occurrence, inside one hour, and not yet come.
        for start, end in [(at(0), at(600)), (at(700), at(800)), (at(3 * 86400), at(4 * 86400))]:
            report = await engine.backfill_job(parent.id, start, end)
            assert (report.jobs, report.already_queued) == ([], 0)
        assert len(await all_jobs(engine)) == 1


async def test_a_retried_backfill_adds_nothing_for_occurrences_still_queued(
    store: TrackedStore,
) -> None:
    clock = VirtualClock(T0)
    release = anyio.Event()

    async def hold(job: Job, ctx: Any) -> JobResult:
        if job.extras is not None:  # the backfill jobs wait; the parent runs
            await release.wait()
        return JobResult.success()

    handler = ScriptedHandler(clock, behaviour=hold)
    async with engine_running(store, clock, handler, jump=False) as engine:
        parent = await engine.add_job(JobSpec(job_type="work", run_at=at(0), recurrence=HOURLY))
        for hour in range(4):
            clock.advance_to(at(hour * HOUR))
            await quiesce(store)
        first = await engine.backfill_job(parent.id, at(0), at(3 * HOUR))
        await quiesce(store)
        assert len(first.jobs) == 3 and len(handler.calls) == 4 + 3  # all three running
        again = await engine.backfill_job(parent.id, at(0), at(4 * HOUR))
        assert [job.scheduled_for for job in again.jobs] == [at(3 * HOUR)]
        assert again.already_queued == 3
        release.set()
        await run_to_completion(engine, store, first.jobs + again.jobs)
        # Once they have run, asking again is a new backfill: they run once more.
        rerun = await engine.backfill_job(parent.id, at(0), at(HOUR))
        assert (len(rerun.jobs), rerun.already_queued) == (1, 0)
        await run_to_completion(engine, store, rerun.jobs)
    assert handler.calls_of(rerun.jobs[0].id)[0].key == f"{parent.id}:0"


def test_a_backfill_job_copies_what_its_occurrence_runs_with() -> None:
    follow_up = JobSpec(job_type="mail", payload={"to": "ops"})
    parent = Job.create(
        JobSpec(
            job_type="work",
            target_id="t-1",
            payload={"report": "daily"},
            recurrence=HOURLY,
            priority=3,
            max_retries=7,
            timeout_s=12.5,
            misfire=MisfirePolicy.SKIP,
            jitter_s=30,
            name="daily-report",
            on_failure=follow_up,
            trace_context={"traceparent": "00-" + "a" * 32 + "-" + "b" * 16 + "-01"},
        ),
        T0,
        EXACT,
        "parent",
    )
    occurrence = BackfillOccurrence(T0 - timedelta(hours=3), 42)
    job = job_for_occurrence(parent, backfill_spec(parent), occurrence, T0, EXACT, "child")
    assert (job.job_type, job.target_id, job.payload) == ("work", "t-1", {"report": "daily"})
    assert (job.priority, job.max_retries, job.timeout_s) == (3, 7, 12.5)
    assert (job.name, job.recurrence, job.jitter_s) == (None, None, 0.0)
    assert (job.run_at, job.scheduled_for, job.status) == (
        T0,
        occurrence.scheduled_for,
        JobStatus.PENDING,
    )
    assert job.misfire is MisfirePolicy.RUN_ALL  # never skipped for being late
    assert job.idempotency_key == "parent:42"
    assert job.extras is not None and parent.extras is not None
    assert job.extras.on_failure == follow_up and job.extras.on_success is None
    assert job.extras.trace_context == parent.extras.trace_context


def test_numbering_a_frequent_schedule_far_from_its_anchor_is_arithmetic() -> None:
    """Minutely for four years: numbered without walking two million occurrences."""
    minutely = Recurrence(RecurrenceKind.MINUTELY, timezone="UTC")
    parent = Job.create(JobSpec(job_type="work", recurrence=minutely), T0, EXACT, "p")
    now = T0 + timedelta(days=4 * 365)
    current = occurrences(minutely, T0, now, 1, inclusive=True)[0]
    count = int((current - T0).total_seconds() // 60)
    parent = replace(parent, scheduled_for=current, occurrence_count=count)
    found = backfill_occurrences(parent, T0 + timedelta(days=365), T0 + timedelta(days=366), now)
    assert len(found) == 1440
    assert found[0] == BackfillOccurrence(T0 + timedelta(days=365), 365 * 1440)
