"""Follow-up jobs and [[notify]] notifications (SPEC 15), on the memory and SQLite
stores with the virtual clock (PostgreSQL: test_multinode; the real daemon and
kill -9: tests/daemon/test_reactions_e2e.py)."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Any

import anyio
import pytest

from nexus_schedd.clock import VirtualClock
from nexus_schedd.engine import EngineSettings
from nexus_schedd.engine.reactions import NotifyRule
from nexus_schedd.errors import InvalidSpec, UnknownJobType
from nexus_schedd.handlers.base import HandlerContext
from nexus_schedd.model import (
    Job,
    JobResult,
    JobSpec,
    JobStatus,
    MisfirePolicy,
    Recurrence,
    RecurrenceKind,
    Run,
    RunOutcome,
)
from nexus_schedd.model.queries import JobFilter
from tests.engine.harness import (
    EXACT,
    T0,
    ScriptedHandler,
    TrackedStore,
    at,
    crashing_engine,
    engine_running,
    is_final,
    sleeper,
    wait_until,
)

pytestmark = pytest.mark.anyio

TYPES = frozenset({"work", "after", "alert"})
HOURLY = Recurrence(RecurrenceKind.HOURLY, timezone="UTC")


def failing(error: str = "boom", *, retry: bool = True) -> Any:
    """``work`` jobs fail (``error``); every other type succeeds."""

    async def behave(job: Job, ctx: HandlerContext) -> JobResult:
        if job.job_type == "work":
            return JobResult.failure(error, should_retry=retry)
        return JobResult.success({"seen": job.payload})

    return behave


def notify(*on: str, job_types: tuple[str, ...] = ("*",), **payload: Any) -> NotifyRule:
    return NotifyRule(frozenset(on), job_types, JobSpec(job_type="alert", payload=payload))


def settings(*rules: NotifyRule, **changes: Any) -> EngineSettings:
    return EngineSettings(defaults=changes.pop("defaults", EXACT), notify=rules, **changes)


async def jobs_of_type(store: TrackedStore, job_type: str) -> list[Job]:
    page = await store.list_jobs(JobFilter(job_type=job_type), 1000)
    return sorted(page.items, key=lambda job: job.id)


async def settled(engine: Any, store: TrackedStore, job_id: str) -> Job:
    """The job once final, and every job it added final too."""
    job = await wait_until(engine, job_id, is_final, store)
    while True:
        changed = store.changed
        counts = await store.count_by_status()
        if not counts.get(JobStatus.PENDING) and not counts.get(JobStatus.RUNNING):
            return job
        await changed.wait()


# -- follow-ups ---------------------------------------------------------------------


async def test_a_success_adds_the_on_success_job_with_its_trigger(store: TrackedStore) -> None:
    clock = VirtualClock(T0)
    handler = ScriptedHandler(clock, types=TYPES)
    spec = JobSpec(
        job_type="work",
        run_at=at(10),
        on_success=JobSpec(job_type="after", payload={"report": "daily"}),
        on_failure=JobSpec(job_type="alert"),
    )
    async with engine_running(store, clock, handler) as engine:
        job = await engine.add_job(spec)
        assert job.extras is not None and job.extras.on_success == spec.on_success
        await settled(engine, store, job.id)
    [follow_up] = await jobs_of_type(store, "after")
    [run] = await store.runs_of(job.id)
    assert follow_up.payload == {
        "report": "daily",
        "trigger": {
            "job_id": job.id,
            "run_id": run.id,
            "outcome": "success",
            "error": None,
            "output": {"ok": True},
        },
    }
    assert follow_up.status is JobStatus.COMPLETED
    assert await jobs_of_type(store, "alert") == []  # on_failure: not this time


async def test_on_failure_waits_for_the_last_retry_and_is_added_once(store: TrackedStore) -> None:
    clock = VirtualClock(T0)
    handler = ScriptedHandler(clock, types=TYPES, behaviour=failing("disk full"))
    spec = JobSpec(
        job_type="work", run_at=at(0), max_retries=2, on_failure=JobSpec(job_type="alert")
    )
    async with engine_running(store, clock, handler) as engine:
        job = await engine.add_job(spec)
        final = await settled(engine, store, job.id)
    assert final.status is JobStatus.FAILED_PERMANENT
    runs = await store.runs_of(job.id)
    assert [run.outcome for run in runs] == [RunOutcome.FAILURE] * 3
    [alert] = await jobs_of_type(store, "alert")
    assert alert.payload["trigger"]["run_id"] == runs[-1].id
    assert alert.payload["trigger"]["error"] == "disk full"
    assert alert.created_at == runs[-1].finished_at


async def test_a_recurring_occurrence_that_used_up_its_retries_adds_on_failure_and_moves_on(
    store: TrackedStore,
) -> None:
    clock = VirtualClock(T0)
    handler = ScriptedHandler(clock, types=TYPES, behaviour=failing())
    spec = JobSpec(
        job_type="work",
        run_at=at(0),
        recurrence=replace(HOURLY, max_occurrences=2),
        max_retries=1,
        on_failure=JobSpec(job_type="alert"),
    )
    async with engine_running(store, clock, handler) as engine:
        job = await engine.add_job(spec)
        final = await settled(engine, store, job.id)
    assert final.status is JobStatus.COMPLETED  # a recurring job moves on
    alerts = await jobs_of_type(store, "alert")
    runs = await store.runs_of(job.id)
    # Two occurrences, two attempts each: one follow-up per occurrence, after its last.
    assert [run.attempt for run in runs] == [1, 2, 1, 2]
    assert [alert.payload["trigger"]["run_id"] for alert in alerts] == [runs[1].id, runs[3].id]


async def test_the_outcome_and_its_follow_up_are_one_write(store: TrackedStore) -> None:
    """Both rows reach the store in the same write (one transaction)."""
    clock = VirtualClock(T0)
    handler = ScriptedHandler(clock, types=TYPES, behaviour=failing(retry=False))
    writes: list[tuple[list[Job], list[Run]]] = []
    original = store.before_write

    async def spy(jobs: list[Job], runs: list[Run]) -> None:
        writes.append((list(jobs), list(runs)))
        await original(jobs, runs)

    store.before_write = spy  # type: ignore[method-assign]
    spec = JobSpec(job_type="work", run_at=at(0), on_failure=JobSpec(job_type="alert"))
    async with engine_running(store, clock, handler) as engine:
        job = await engine.add_job(spec)
        await settled(engine, store, job.id)
    closing = [
        (jobs, runs)
        for jobs, runs in writes
        if any(r.job_id == job.id and r.outcome is RunOutcome.FAILURE for r in runs)
    ]
    assert len(closing) == 1
    jobs, _ = closing[0]
    assert {j.job_type for j in jobs} >= {"work", "alert"}
    assert any(j.id == job.id and j.status is JobStatus.FAILED_PERMANENT for j in jobs)


async def test_a_crash_that_ends_the_occurrence_adds_on_failure_at_recovery(
    store: TrackedStore,
) -> None:
    clock = VirtualClock(T0)

    async def hang(job: Job, ctx: HandlerContext) -> JobResult:
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    handler = ScriptedHandler(clock, types=TYPES, behaviour=hang)
    spec = JobSpec(
        job_type="work", run_at=at(0), max_retries=0, on_failure=JobSpec(job_type="after")
    )
    rules = (notify("crashed", "failed_permanent"),)
    async with crashing_engine(store, clock, handler, settings=settings(*rules)) as engine:
        job = await engine.add_job(spec)
        await handler.started.wait()
    handler = ScriptedHandler(clock, types=TYPES)
    async with engine_running(store, clock, handler, settings=settings(*rules)) as engine:
        final = await settled(engine, store, job.id)
    assert final.status is JobStatus.FAILED_PERMANENT
    [run] = await store.runs_of(job.id)
    assert run.outcome is RunOutcome.CRASHED
    [after] = await jobs_of_type(store, "after")
    assert after.payload["trigger"]["outcome"] == "crashed"
    alerts = await jobs_of_type(store, "alert")
    assert sorted(a.payload["event"]["event"] for a in alerts) == ["crashed", "failed_permanent"]


@pytest.mark.parametrize(
    ("follow_up", "field"),
    [
        ({"job_type": "after", "on_success": {"job_type": "after"}}, "on_failure.on_success"),
        ({"job_type": "nobody-runs-this"}, "on_failure.job_type"),
        ({"job_type": "after", "name": "x"}, "on_failure.name"),
        ({"job_type": "after", "run_at": "soon"}, "on_failure.run_at"),
        ("after", "on_failure"),
    ],
)
async def test_bad_follow_ups_are_refused_naming_the_field_and_nothing_is_added(
    store: TrackedStore, follow_up: Any, field: str
) -> None:
    clock = VirtualClock(T0)
    handler = ScriptedHandler(clock, types=TYPES)
    async with engine_running(store, clock, handler) as engine:
        with pytest.raises(InvalidSpec) as caught:
            spec = JobSpec.from_json({"job_type": "work", "on_failure": follow_up})
            await engine.add_job(spec)
        assert caught.value.field == field
        assert (await store.list_jobs(JobFilter(), 10)).items == []


async def test_the_job_itself_still_needs_a_handler(store: TrackedStore) -> None:
    clock = VirtualClock(T0)
    handler = ScriptedHandler(clock, types=TYPES)
    async with engine_running(store, clock, handler) as engine:
        with pytest.raises(UnknownJobType):
            await engine.add_job(JobSpec(job_type="nope", on_success=JobSpec(job_type="after")))


# -- notifications --------------------------------------------------------------------


async def test_failed_permanent_and_retry_notify_with_the_event(store: TrackedStore) -> None:
    clock = VirtualClock(T0)
    handler = ScriptedHandler(clock, types=TYPES, behaviour=failing("exit 3"))
    rules = (
        notify("failed_permanent", url="http://hooks.example/fail"),
        notify("retry", job_types=("wo*",)),
        notify("failed_permanent", job_types=("other",)),  # matches nothing here
    )
    async with engine_running(store, clock, handler, settings=settings(*rules)) as engine:
        job = await engine.add_job(
            JobSpec(job_type="work", name="nightly", run_at=at(0), max_retries=1)
        )
        await settled(engine, store, job.id)
    alerts = await jobs_of_type(store, "alert")
    events = [a.payload["event"] for a in alerts]
    assert [e["event"] for e in events] == ["retry", "failed_permanent"]
    final = events[1]
    assert final["job"]["id"] == job.id and final["job"]["name"] == "nightly"
    assert final["job"]["status"] == "failed_permanent"
    assert final["run"]["error"] == "exit 3" and final["run"]["attempt"] == 2
    assert alerts[1].payload["url"] == "http://hooks.example/fail"
    assert all(a.extras is not None and a.extras.notification for a in alerts)


async def test_a_notification_never_notifies_about_itself(store: TrackedStore) -> None:
    """Notification jobs that fail for good add nothing (no loop of alerts)."""
    clock = VirtualClock(T0)

    async def all_fail(job: Job, ctx: HandlerContext) -> JobResult:
        return JobResult.failure("down", should_retry=False)

    handler = ScriptedHandler(clock, types=TYPES, behaviour=all_fail)
    async with engine_running(
        store, clock, handler, settings=settings(notify("failed_permanent"))
    ) as engine:
        job = await engine.add_job(JobSpec(job_type="work", run_at=at(0)))
        await settled(engine, store, job.id)
    [alert] = await jobs_of_type(store, "alert")
    assert alert.status is JobStatus.FAILED_PERMANENT  # it failed too, and said nothing


async def test_a_misfire_skip_notifies_once_with_the_count(store: TrackedStore) -> None:
    clock = VirtualClock(T0)
    handler = ScriptedHandler(clock, types=TYPES)
    spec = JobSpec(job_type="work", run_at=at(3600), recurrence=HOURLY, misfire=MisfirePolicy.SKIP)
    rules = (notify("misfire_skipped"),)
    async with engine_running(store, clock, handler, settings=settings(*rules)) as engine:
        job = await engine.add_job(spec)
        await engine.stop(grace_s=0)
    clock.advance_to(at(5 * 3600 + 1800))  # down for four occurrences and a half
    async with engine_running(store, clock, handler, settings=settings(*rules)) as engine:
        moved = await wait_until(engine, job.id, lambda j: j.scheduled_for == at(6 * 3600), store)
        await engine.stop(grace_s=0)
    assert moved.occurrence_count == 5
    [alert] = await jobs_of_type(store, "alert")
    event = alert.payload["event"]
    assert (event["event"], event["missed"]) == ("misfire_skipped", 5)
    assert event["run"]["outcome"] == "skipped"


async def test_a_job_waiting_past_overdue_after_s_notifies_once_by_timer(
    store: TrackedStore,
) -> None:
    """One slot, held for an hour: the next due job is overdue 300 s after its
    run_at (the default overdue_after_s), reported then and only once."""
    clock = VirtualClock(T0)
    handler = ScriptedHandler(clock, types=TYPES, behaviour=sleeper(clock, 3600))
    rules = (notify("overdue", job_types=("work",)), notify("overdue", job_types=("other",)))
    async with engine_running(
        store, clock, handler, settings=settings(*rules, max_concurrency=1)
    ) as engine:
        first = await engine.add_job(JobSpec(job_type="work", run_at=at(0), timeout_s=7200))
        second = await engine.add_job(JobSpec(job_type="work", run_at=at(10), timeout_s=7200))
        await settled(engine, store, second.id)
    [alert] = await jobs_of_type(store, "alert")
    event = alert.payload["event"]
    assert (event["event"], event["job"]["id"], event["run"]) == ("overdue", second.id, None)
    assert alert.created_at == at(10 + 300)
    assert handler.calls_of(first.id)[0].at == at(0)
    assert handler.calls_of(second.id)[0].at == at(3600)  # it did run, late


@pytest.mark.parametrize(
    "rule", [notify("retry"), notify("overdue", job_types=("other*",))], ids=["retry", "other"]
)
async def test_no_overdue_rule_for_the_type_watches_nothing(
    store: TrackedStore, rule: NotifyRule
) -> None:
    clock = VirtualClock(T0)
    handler = ScriptedHandler(clock, types=TYPES, behaviour=sleeper(clock, 3600))
    async with engine_running(
        store, clock, handler, settings=settings(rule, max_concurrency=1)
    ) as engine:
        await engine.add_job(JobSpec(job_type="work", run_at=at(0), timeout_s=7200))
        second = await engine.add_job(JobSpec(job_type="work", run_at=at(10), timeout_s=7200))
        await settled(engine, store, second.id)
        assert len(engine._core.overdue) == 0
    assert await jobs_of_type(store, "alert") == []


def test_a_notify_rule_naming_an_unknown_event_is_refused() -> None:
    with pytest.raises(InvalidSpec) as caught:
        notify("exploded")
    assert caught.value.field == "on" and "exploded" in caught.value.reason


async def test_an_overdue_deadline_is_measured_from_run_at(store: TrackedStore) -> None:
    """The timer is armed at run_at + overdue_after_s (EXACT's 300 s here)."""
    clock = VirtualClock(T0)
    handler = ScriptedHandler(clock, types=TYPES, behaviour=sleeper(clock, 200))
    rules = (notify("overdue"),)
    async with engine_running(
        store, clock, handler, settings=settings(*rules, max_concurrency=1)
    ) as engine:
        await engine.add_job(JobSpec(job_type="work", run_at=at(0)))
        second = await engine.add_job(JobSpec(job_type="work", run_at=at(10)))
        await settled(engine, store, second.id)
    # It waited 190 s, less than 300: not overdue.
    assert await jobs_of_type(store, "alert") == []
    assert handler.calls_of(second.id)[0].at == at(200)
    assert timedelta(seconds=EXACT.overdue_after_s) == timedelta(seconds=300)
