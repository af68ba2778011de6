"""Rate limits per job type (SPEC 15): token buckets on starts, on top of the
concurrency limits; jobs over the rate are late, not failed, and other types are
not held up. Virtual time, memory and SQLite stores."""

from __future__ import annotations

from datetime import timedelta

import pytest

from nexus_schedd.clock import VirtualClock
from nexus_schedd.engine import EngineSettings
from nexus_schedd.engine.rates import Rate, TokenBucket
from nexus_schedd.errors import InvalidSpec
from nexus_schedd.model import JobSpec, JobStatus
from tests.engine.harness import (
    EXACT,
    T0,
    ScriptedHandler,
    TrackedStore,
    at,
    engine_running,
    is_final,
    wait_until,
)

pytestmark = pytest.mark.anyio


def test_rates_parse_and_refuse_with_the_field_named() -> None:
    assert Rate.parse("100/minute", "f") == Rate(100, 60.0)
    assert Rate.parse(" 2 / second ", "f") == Rate(2, 1.0)
    assert str(Rate.parse("5/hour", "f")) == "5/hour"
    for bad in ("100", "0/minute", "10/day", "-1/second", "ten/second", 5, None):
        with pytest.raises(InvalidSpec) as refused:
            Rate.parse(bad, "limits.rates.mail")
        assert refused.value.field == "limits.rates.mail"


def test_a_bucket_allows_a_burst_then_one_token_per_interval() -> None:
    bucket = TokenBucket(Rate(2, 1.0), T0)
    assert bucket.take(T0) and bucket.take(T0) and not bucket.take(T0)
    assert bucket.next_token_at() == at(0.5)
    assert not bucket.take(at(0.4))
    assert bucket.take(at(0.5)) and not bucket.take(at(0.5))
    assert bucket.take(at(10)) and bucket.take(at(10)) and not bucket.take(at(10))  # capped


@pytest.mark.parametrize("rate", [Rate(3, 1.0), Rate(7, 60.0), Rate(7, 3600.0)], ids=str)
def test_a_bucket_holds_a_whole_token_at_the_time_it_names(rate: Rate) -> None:
    """next_token_at rounded to the nearest microsecond named an instant a
    little before the token was whole (3/second: 0.999999 of one at
    08:00:00.333333), and the scheduler, woken then, found none and was told
    the same instant again: on a virtual clock a loop that never slept."""
    bucket = TokenBucket(rate, T0)
    now = T0
    for _ in range(500):
        while bucket.take(now):
            pass
        now = bucket.next_token_at()
        assert bucket.take(now), (now, bucket.tokens)


async def test_a_rate_of_three_a_second_starts_each_job_on_its_token(store: TrackedStore) -> None:
    clock = VirtualClock(T0)
    handler = ScriptedHandler(clock, types=frozenset({"mail"}))
    settings = EngineSettings(defaults=EXACT, type_rates={"mail": Rate(3, 1.0)})
    async with engine_running(store, clock, handler, settings=settings) as engine:
        mails = await engine.add_jobs([JobSpec(job_type="mail", run_at=at(10)) for _ in range(9)])
        for job in mails:
            done = await wait_until(engine, job.id, is_final, store)
            assert done.status is JobStatus.COMPLETED
        passes = engine.loop_iterations
    assert len(handler.calls) == 9 and max(call.at for call in handler.calls) <= at(12.01)
    assert passes < 100  # a token each third of a second, not a spin


async def test_jobs_over_their_types_rate_start_late_and_other_types_on_time(
    store: TrackedStore,
) -> None:
    clock = VirtualClock(T0)
    handler = ScriptedHandler(clock, types=frozenset({"mail", "work"}))
    settings = EngineSettings(defaults=EXACT, type_rates={"mail": Rate(2, 1.0)})
    async with engine_running(store, clock, handler, settings=settings) as engine:
        mails = await engine.add_jobs([JobSpec(job_type="mail", run_at=at(10)) for _ in range(6)])
        works = await engine.add_jobs([JobSpec(job_type="work", run_at=at(10)) for _ in range(6)])
        for job in mails + works:
            done = await wait_until(engine, job.id, is_final, store)
            assert done.status is JobStatus.COMPLETED  # late, never failed
    mail_starts = sorted(call.at for call in handler.calls if call.job_type == "mail")
    assert mail_starts == [at(10), at(10), at(10.5), at(11), at(11.5), at(12)]
    assert {call.at for call in handler.calls if call.job_type == "work"} == {at(10)}


async def test_a_rate_limited_type_shows_in_the_backlog_and_status(store: TrackedStore) -> None:
    clock = VirtualClock(T0)
    handler = ScriptedHandler(clock, types=frozenset({"mail"}))
    settings = EngineSettings(defaults=EXACT, type_rates={"mail": Rate(1, 3600.0)})
    async with engine_running(store, clock, handler, settings=settings, jump=False) as engine:
        jobs = await engine.add_jobs([JobSpec(job_type="mail", run_at=T0) for _ in range(3)])
        await wait_until(engine, jobs[0].id, is_final, store)  # the one token
        status = engine.status()
        assert status.extra["waiting_for_rate"] == {"mail": 2}
        assert status.due_backlog == 2
        # A reload that lifts the rate lets them go at once.
        engine.set_type_limits({}, {})
        for job in jobs:
            await wait_until(engine, job.id, is_final, store)
    assert len(handler.calls) == 3
    assert clock.now() - T0 < timedelta(seconds=1)
