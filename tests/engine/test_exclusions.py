"""Exclusion calendars in the engine (SPEC section 15), on a virtual clock: an
excluded date produces no run and no skipped run, also on DST days and after
downtime."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, datetime
from zoneinfo import ZoneInfo

import pytest

from nexus_schedd.clock import VirtualClock
from nexus_schedd.model import JobSpec, JobStatus, MisfirePolicy, Recurrence, RecurrenceKind
from nexus_schedd.model.calendars import CALENDARS
from tests.calendars import dates, installed
from tests.engine.harness import (
    ScriptedHandler,
    TrackedStore,
    engine_running,
    is_final,
    quiesce,
    wait_until,
)

pytestmark = pytest.mark.anyio

BERLIN = ZoneInfo("Europe/Berlin")
SPRING = date(2026, 3, 29)  # 02:00 -> 03:00 in Berlin
AUTUMN = date(2026, 10, 25)  # 03:00 -> 02:00 in Berlin
HOUR = 3600


@pytest.fixture(autouse=True)
def calendars() -> Iterator[None]:
    with installed({"dst": dates("dst", SPRING.isoformat(), AUTUMN.isoformat())}):
        yield


def local(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=BERLIN)


async def _run_to_completion(
    store: TrackedStore, start: datetime, spec: JobSpec
) -> tuple[list[datetime], list[str]]:
    """Run ``spec`` until its schedule ends; the occurrences run and every run's outcome."""
    clock = VirtualClock(start)
    handler = ScriptedHandler(clock)
    async with engine_running(store, clock, handler) as engine:
        job = await engine.add_job(spec)
        done = await wait_until(engine, job.id, is_final, store)
    assert done.status is JobStatus.COMPLETED
    runs = await store.runs_of(job.id)
    return [call.scheduled_for for call in handler.calls], [run.outcome.value for run in runs]


async def test_daily_0230_runs_around_the_spring_forward_day_but_not_on_it(
    store: TrackedStore,
) -> None:
    daily = Recurrence(
        RecurrenceKind.DAILY, timezone="Europe/Berlin", max_occurrences=4, exclude=("dst",)
    )
    spec = JobSpec(job_type="work", run_at=local("2026-03-27T02:30"), recurrence=daily)
    ran, outcomes = await _run_to_completion(store, local("2026-03-27T00:00"), spec)
    assert [t.astimezone(BERLIN).isoformat() for t in ran] == [
        "2026-03-27T02:30:00+01:00",
        "2026-03-28T02:30:00+01:00",
        "2026-03-30T02:30:00+02:00",
        "2026-03-31T02:30:00+02:00",
    ]
    # Excluded occurrences are not runs at all: no skipped run stands for them.
    assert outcomes == ["success"] * 4


async def test_hourly_job_has_no_run_in_the_25_hours_of_the_fall_back_day(
    store: TrackedStore,
) -> None:
    hourly = Recurrence(
        RecurrenceKind.HOURLY, timezone="Europe/Berlin", max_occurrences=5, exclude=("dst",)
    )
    spec = JobSpec(job_type="work", run_at=local("2026-10-24T22:00"), recurrence=hourly)
    ran, outcomes = await _run_to_completion(store, local("2026-10-24T21:00"), spec)
    assert [t.astimezone(BERLIN).isoformat() for t in ran] == [
        "2026-10-24T22:00:00+02:00",
        "2026-10-24T23:00:00+02:00",
        "2026-10-26T00:00:00+01:00",
        "2026-10-26T01:00:00+01:00",
        "2026-10-26T02:00:00+01:00",
    ]
    assert outcomes == ["success"] * 5


async def test_misfire_skip_after_downtime_records_no_run_for_excluded_dates(
    store: TrackedStore,
) -> None:
    """Down from before the excluded day to after it: the missed occurrences that
    would have run are recorded as skipped; the excluded one is not there at all."""
    daily = Recurrence(RecurrenceKind.DAILY, timezone="Europe/Berlin", exclude=("dst",))
    spec = JobSpec(
        job_type="work",
        run_at=local("2026-03-27T09:00"),
        recurrence=daily,
        misfire=MisfirePolicy.SKIP,
    )
    clock = VirtualClock(local("2026-03-27T08:00"))
    handler = ScriptedHandler(clock)
    async with engine_running(store, clock, handler, jump=False) as engine:
        job = await engine.add_job(spec)
        await quiesce(store)
    # Down until the 31st, 08:00: the 27th..30th are missed, the 29th excluded.
    clock.advance((local("2026-03-31T08:00") - clock.now()).total_seconds())
    async with engine_running(store, clock, handler) as engine:
        await wait_until(
            engine,
            job.id,
            lambda current: current.scheduled_for == local("2026-04-01T09:00"),
            store,
        )
    runs = await store.runs_of(job.id)
    summary = sorted(
        (run.scheduled_for.astimezone(BERLIN).date().day, run.outcome.value) for run in runs
    )
    assert summary == [(27, "skipped"), (28, "skipped"), (30, "skipped"), (31, "success")]
    assert [call.scheduled_for for call in handler.calls] == [local("2026-03-31T09:00")]


async def test_a_removed_calendar_does_not_stop_the_engine(store: TrackedStore) -> None:
    """A reload that drops a calendar jobs still name: they run without it."""
    daily = Recurrence(
        RecurrenceKind.DAILY, timezone="Europe/Berlin", max_occurrences=3, exclude=("dst",)
    )
    spec = JobSpec(job_type="work", run_at=local("2026-03-28T09:00"), recurrence=daily)
    clock = VirtualClock(local("2026-03-28T08:00"))
    handler = ScriptedHandler(clock)
    async with engine_running(store, clock, handler) as engine:
        job = await engine.add_job(spec)
        CALENDARS.install({})  # the calendars fixture puts them back afterwards
        done = await wait_until(engine, job.id, is_final, store)
    assert done.status is JobStatus.COMPLETED
    days = [call.scheduled_for.astimezone(BERLIN).day for call in handler.calls]
    assert days == [28, 29, 30]
