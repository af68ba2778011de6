"""Time faults: the wall clock stepped forward 2 h and back 1 h while the engine runs,
DST transitions crossed while running, and the timerfd that notices clock steps."""

from __future__ import annotations

import errno
import os
import random
import sys
import time
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import anyio
import pytest

from nexus_schedd.clock import SystemClock, VirtualClock, WallClockSteps, watch_clock_steps
from nexus_schedd.engine import Engine, EngineSettings
from nexus_schedd.handlers.registry import HandlerRegistry
from nexus_schedd.model import JobSpec, MisfirePolicy, Recurrence, RecurrenceKind
from tests.engine.harness import (
    EXACT,
    T0,
    ScriptedHandler,
    TrackedStore,
    at,
    engine_running,
    quiesce,
)

pytestmark = pytest.mark.anyio

MINUTE = 60
BERLIN = ZoneInfo("Europe/Berlin")


def every_ten_minutes(policy: MisfirePolicy) -> JobSpec:
    return JobSpec(
        job_type="work",
        run_at=at(10 * MINUTE),
        recurrence=Recurrence(RecurrenceKind.MINUTELY, interval=10),
        misfire=policy,
        misfire_grace_s=60,
    )


@pytest.mark.parametrize(
    ("policy", "catch_up_runs"),
    [(MisfirePolicy.RUN_ALL, 12), (MisfirePolicy.RUN_ONCE, 1), (MisfirePolicy.SKIP, 0)],
)
async def test_clock_jumping_forward_two_hours_runs_missed_occurrences_per_misfire_policy(
    store: TrackedStore, policy: MisfirePolicy, catch_up_runs: int
) -> None:
    clock = VirtualClock(T0)
    handler = ScriptedHandler(clock)
    async with engine_running(store, clock, handler, jump=False) as engine:
        job = await engine.add_job(every_ten_minutes(policy))
        clock.advance_to(at(10 * MINUTE))
        await quiesce(store)
        assert len(handler.calls) == 1
        # The wall clock steps 2 h forward (+5 min, so no occurrence is exactly now):
        # the occurrences at 20, 30, ..., 130 min were missed.
        clock.set_time(at(10 * MINUTE + 2 * 3600 + 5 * MINUTE))
        await quiesce(store)
        catch_up = handler.calls[1:]
        assert len(catch_up) == catch_up_runs
        scheduled = [call.scheduled_for for call in catch_up]
        assert len(set(scheduled)) == len(scheduled), "an occurrence ran twice"
        if policy is MisfirePolicy.RUN_ALL:
            assert scheduled == [at(m * MINUTE) for m in range(20, 140, 10)]
        after = await engine.get_job(job.id)
        assert after.run_at == at(140 * MINUTE), "the grid is kept after the jump"


async def test_clock_jumping_back_one_hour_runs_no_occurrence_twice(store: TrackedStore) -> None:
    clock = VirtualClock(T0)
    handler = ScriptedHandler(clock)
    async with engine_running(store, clock, handler, jump=False) as engine:
        job = await engine.add_job(every_ten_minutes(MisfirePolicy.RUN_ALL))
        for minute in (10, 20, 30, 40, 50, 60, 70):
            clock.advance_to(at(minute * MINUTE))
            await quiesce(store)
        assert len(handler.calls) == 7
        clock.set_time(at(10 * MINUTE))  # back 1 h
        await quiesce(store)
        # The hour is lived again, but its occurrences already ran: none repeats.
        for minute in range(15, 75, 5):
            clock.advance_to(at(minute * MINUTE))
            await quiesce(store)
        assert len(handler.calls) == 7
        clock.advance_to(at(80 * MINUTE))
        await quiesce(store)
        scheduled = [call.scheduled_for for call in handler.calls]
        assert scheduled == [at(m * MINUTE) for m in range(10, 90, 10)]
        assert (await engine.get_job(job.id)).run_at == at(90 * MINUTE)


async def run_until(clock: VirtualClock, store: TrackedStore, end: datetime) -> None:
    """Move the clock from deadline to deadline, letting the engine settle at each."""
    while True:
        await quiesce(store)
        upcoming = clock.next_deadline()
        if upcoming is None or upcoming > end:
            return
        clock.advance_to(upcoming)


@pytest.mark.parametrize(
    ("start", "end", "expected_utc"),
    [
        pytest.param(
            datetime(2025, 3, 29, 0, 0, tzinfo=UTC),
            datetime(2025, 3, 31, 12, 0, tzinfo=UTC),
            # 02:30 does not exist on 30 March: it runs once at 03:00 CEST (01:00 UTC).
            [
                datetime(2025, 3, 29, 1, 30, tzinfo=UTC),
                datetime(2025, 3, 30, 1, 0, tzinfo=UTC),
                datetime(2025, 3, 31, 0, 30, tzinfo=UTC),
            ],
            id="spring-forward",
        ),
        pytest.param(
            datetime(2025, 10, 25, 0, 0, tzinfo=UTC),
            datetime(2025, 10, 27, 12, 0, tzinfo=UTC),
            # 02:30 happens twice on 26 October: it runs once, at its first instant (CEST).
            [
                datetime(2025, 10, 25, 0, 30, tzinfo=UTC),
                datetime(2025, 10, 26, 0, 30, tzinfo=UTC),
                datetime(2025, 10, 27, 1, 30, tzinfo=UTC),
            ],
            id="fall-back",
        ),
    ],
)
async def test_daily_job_crossing_a_berlin_dst_transition_runs_once_per_day(
    store: TrackedStore, start: datetime, end: datetime, expected_utc: list[datetime]
) -> None:
    clock = VirtualClock(start)
    handler = ScriptedHandler(clock)
    first = expected_utc[0]
    recurrence = Recurrence(RecurrenceKind.DAILY, timezone="Europe/Berlin")
    async with engine_running(store, clock, handler, jump=False) as engine:
        await engine.add_job(JobSpec(job_type="work", run_at=first, recurrence=recurrence))
        await run_until(clock, store, end)
    assert [call.scheduled_for for call in handler.calls] == expected_utc
    assert [call.at for call in handler.calls] == expected_utc


async def test_hourly_cron_fires_at_both_instants_of_the_repeated_hour_and_none_in_the_gap(
    store: TrackedStore,
) -> None:
    # "30 * * * *" has '*' in the hour field: every real instant whose local time matches.
    clock = VirtualClock(datetime(2025, 10, 25, 22, 0, tzinfo=UTC))
    handler = ScriptedHandler(clock)
    recurrence = Recurrence(RecurrenceKind.CRON, cron="30 * * * *", timezone="Europe/Berlin")
    end = datetime(2025, 10, 26, 4, 0, tzinfo=UTC)
    async with engine_running(store, clock, handler, jump=False) as engine:
        await engine.add_job(JobSpec(job_type="work", recurrence=recurrence))
        await run_until(clock, store, end)
    local = [call.scheduled_for.astimezone(BERLIN) for call in handler.calls]
    hours = [(moment.hour, moment.utcoffset()) for moment in local]
    assert hours == [
        (0, timedelta(hours=2)),
        (1, timedelta(hours=2)),
        (2, timedelta(hours=2)),
        (2, timedelta(hours=1)),  # the repeated 02:30, second instant
        (3, timedelta(hours=1)),
        (4, timedelta(hours=1)),
    ]


class SteppableClock(SystemClock):
    """The real clock plus an offset that a test steps, as ``date -s`` would: the
    engine's sleeps (on the loop's monotonic clock) are not told."""

    def __init__(self) -> None:
        self.offset = timedelta()

    def now(self) -> datetime:
        return super().now() + self.offset


@pytest.mark.parametrize("step_hours", [2, -1])
async def test_engine_told_of_a_clock_step_reevaluates_due_times_at_once(
    store: TrackedStore, step_hours: int
) -> None:
    clock = SteppableClock()
    handler = ScriptedHandler(VirtualClock(T0))  # only its call log is used
    engine = Engine(
        store,
        HandlerRegistry({"scripted": handler}),
        clock,
        EngineSettings(defaults=EXACT),
        rng=random.Random(7),
    )
    due = clock.now() + timedelta(hours=1)
    async with anyio.create_task_group() as tg:
        await tg.start(engine.run)
        await engine.add_job(JobSpec(job_type="work", run_at=due))
        await quiesce(store)
        clock.offset = timedelta(hours=step_hours)
        engine.clock_stepped()
        if step_hours > 0:
            # Without the step notice the engine would sleep for an hour of real time.
            with anyio.fail_after(10):
                await handler.started.wait()
            assert len(handler.calls) == 1
        else:
            await quiesce(store)
            assert handler.calls == [], "a step back must not run anything early"
        await engine.stop(grace_s=0)
        tg.cancel_scope.cancel()


def step_wall_clock_by_a_microsecond() -> None:
    """A real clock_settime(CLOCK_REALTIME): +1 us, harmless but a genuine step."""
    try:
        time.clock_settime_ns(
            time.CLOCK_REALTIME, time.clock_gettime_ns(time.CLOCK_REALTIME) + 1000
        )
    except PermissionError:
        pytest.skip("setting CLOCK_REALTIME is not permitted here (needs CAP_SYS_TIME)")
    except OSError as exc:
        if exc.errno == errno.EPERM:
            pytest.skip("setting CLOCK_REALTIME is not permitted here")
        raise


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="timerfd is Linux-only")
async def test_timerfd_watcher_reports_a_real_clock_step_and_nothing_otherwise() -> None:
    watcher = WallClockSteps.open()
    assert watcher is not None
    try:
        assert watcher.consume() is False, "no step yet"
        step_wall_clock_by_a_microsecond()
        with anyio.fail_after(5):
            await watcher.wait()
        assert watcher.consume() is False, "one step is reported once; the timer is re-armed"
        step_wall_clock_by_a_microsecond()
        with anyio.fail_after(5):
            await watcher.wait()
    finally:
        watcher.close()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="timerfd is Linux-only")
async def test_a_step_while_the_watcher_re_arms_is_reported_and_watching_goes_on() -> None:
    """Two steps close together: the second lands between the read that reported
    the first and the re-arm. The kernel then refuses the re-arm (ECANCELED) and
    leaves the timer unarmed; the watcher must count that as a step and arm again,
    not end the daemon (a CI run saw exactly that) nor stop seeing steps."""
    watcher = WallClockSteps.open()
    assert watcher is not None
    try:
        step_wall_clock_by_a_microsecond()
        with anyio.fail_after(5):
            await anyio.wait_readable(watcher.fileno)
        # The read that reports the first step, then the second step before the re-arm.
        with pytest.raises(OSError) as read:
            os.read(watcher.fileno, 8)
        assert read.value.errno == errno.ECANCELED
        step_wall_clock_by_a_microsecond()
        assert watcher._arm() is True  # refused once (the second step), then armed
        assert watcher.consume() is False, "both steps are reported; nothing is pending"
        step_wall_clock_by_a_microsecond()
        with anyio.fail_after(5):
            await watcher.wait()  # still watching
    finally:
        watcher.close()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="timerfd is Linux-only")
async def test_watch_clock_steps_calls_back_once_per_step() -> None:
    steps: list[int] = []
    stepped = anyio.Event()

    def on_step() -> None:
        steps.append(1)
        stepped.set()

    async with anyio.create_task_group() as tg:
        assert await tg.start(watch_clock_steps, on_step) is True
        step_wall_clock_by_a_microsecond()
        with anyio.fail_after(5):
            await stepped.wait()
        tg.cancel_scope.cancel()
    assert steps == [1]


async def test_clock_step_watching_falls_back_cleanly_where_unavailable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sys, "platform", "darwin")
    assert WallClockSteps.open() is None
    async with anyio.create_task_group() as tg:
        assert await tg.start(watch_clock_steps, lambda: None) is False
