"""The job model: spec validation, JSON form, creation from a recurrence, seed helpers."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from nexus_schedd.clock import VirtualClock
from nexus_schedd.errors import InvalidSpec
from nexus_schedd.model import (
    Job,
    JobDefaults,
    JobResult,
    JobSpec,
    JobStatus,
    LastResult,
    Recurrence,
    RecurrenceKind,
)
from nexus_schedd.model.schedule import next_occurrence

NOW = datetime(2025, 6, 2, 10, 17, 30, tzinfo=UTC)
BERLIN = ZoneInfo("Europe/Berlin")

SPEC_JOB_FIELDS = {
    "id",
    "name",
    "job_type",
    "target_id",
    "payload",
    "status",
    "run_at",
    "recurrence",
    "priority",
    "max_retries",
    "retry_count",
    "occurrence_count",
    "timeout_s",
    "misfire",
    "misfire_grace_s",
    "overlap",
    "jitter_s",
    "last_result",
    "created_at",
    "updated_at",
}


@pytest.mark.parametrize(
    ("data", "field", "reason"),
    [
        ({}, "job_type", ""),
        ({"job_type": "log", "payload": []}, "payload", "JSON object"),
        ({"job_type": "log", "payload": {"x": "y" * 70_000}}, "payload", "limit"),
        ({"job_type": "log", "priority": "high"}, "priority", "whole number"),
        ({"job_type": "log", "max_retries": -1}, "max_retries", "between"),
        ({"job_type": "log", "timeout_s": 0}, "timeout_s", "positive"),
        ({"job_type": "log", "misfire": "sometimes"}, "misfire", "run_once"),
        ({"job_type": "log", "overlap": "merge"}, "overlap", "forbid"),
        ({"job_type": "log", "run_at": "tomorrow"}, "run_at", "RFC 3339"),
        ({"job_type": "log", "colour": "red"}, "job", "colour"),
        ({"job_type": "log", "recurrence": {"kind": "fortnightly"}}, "recurrence.kind", "weekly"),
        (
            {"job_type": "log", "recurrence": {"kind": "daily", "interval": 0}},
            "recurrence.interval",
            ">= 1",
        ),
        (
            {"job_type": "log", "recurrence": {"kind": "daily", "interval": True}},
            "recurrence.interval",
            "whole",
        ),
        (
            {"job_type": "log", "recurrence": {"kind": "cron"}},
            "recurrence.cron",
            "needs an expression",
        ),
        (
            {"job_type": "log", "recurrence": {"kind": "daily", "cron": "* * * * *"}},
            "recurrence.cron",
            "only kind",
        ),
        (
            {"job_type": "log", "recurrence": {"kind": "daily", "timezone": "Mars/Base"}},
            "recurrence.timezone",
            "unknown time zone",
        ),
        (
            {"job_type": "log", "recurrence": {"kind": "daily", "ends_at": "soon"}},
            "recurrence.ends_at",
            "RFC 3339",
        ),
        (
            {"job_type": "log", "recurrence": {"kind": "daily", "max_occurrences": 0}},
            "recurrence.max_occurrences",
            ">= 1",
        ),
        ({"job_type": "log", "recurrence": {"kind": "daily", "every": 2}}, "recurrence", "every"),
    ],
)
def test_invalid_spec_names_field_and_reason(data: dict[str, Any], field: str, reason: str) -> None:
    with pytest.raises(InvalidSpec) as caught:
        JobSpec.from_json(data)
    assert caught.value.field == field
    assert reason in caught.value.reason


@pytest.mark.parametrize(
    ("cron", "reason"),
    [
        ("* * *", "5 fields"),
        ("* * * * * * *", "5 fields"),
        ("61 * * * *", "bad cron expression"),
        ("@reboot", "unknown shorthand"),
        ("H * * * *", "hashed"),
        ("0 0 30 2 *", "never fires"),
        ("0 0 31 4 *", "never fires"),
    ],
)
def test_job_with_unusable_cron_is_refused_naming_the_cron_field(cron: str, reason: str) -> None:
    spec = JobSpec(job_type="log", recurrence=Recurrence(RecurrenceKind.CRON, cron=cron))
    with pytest.raises(InvalidSpec) as caught:
        Job.create(spec, NOW, JobDefaults())
    assert caught.value.field == "recurrence.cron"
    assert reason in caught.value.reason


def test_job_ending_before_its_first_occurrence_is_refused_naming_ends_at() -> None:
    recurrence = Recurrence(RecurrenceKind.CRON, cron="0 9 * * *", ends_at=NOW + timedelta(hours=1))
    with pytest.raises(InvalidSpec) as caught:
        Job.create(JobSpec(job_type="log", recurrence=recurrence), NOW, JobDefaults())
    assert caught.value.field == "recurrence.ends_at"


def test_cron_job_added_now_first_runs_at_the_next_match() -> None:
    recurrence = Recurrence(RecurrenceKind.CRON, cron="0 9 * * *", timezone="Europe/Berlin")
    job = Job.create(JobSpec(job_type="log", recurrence=recurrence), NOW, JobDefaults())
    expected = datetime(2025, 6, 3, 9, tzinfo=BERLIN)
    assert job.run_at == job.scheduled_for == job.anchor_at == expected
    assert job.status is JobStatus.PENDING


def test_interval_job_first_runs_at_its_start() -> None:
    start = NOW + timedelta(minutes=5)
    recurrence = Recurrence(RecurrenceKind.DAILY, timezone="Europe/Berlin")
    job = Job.create(
        JobSpec(job_type="log", run_at=start, recurrence=recurrence), NOW, JobDefaults()
    )
    assert job.run_at == start
    assert job.next_run_time() == start + timedelta(days=1)


def test_next_run_time_follows_the_recurrence_and_stops_at_max_occurrences() -> None:
    recurrence = Recurrence(RecurrenceKind.HOURLY, max_occurrences=2)
    job = Job.create(JobSpec(job_type="log", recurrence=recurrence), NOW, JobDefaults())
    assert job.next_run_time() == NOW + timedelta(hours=1)
    assert replace(job, occurrence_count=1).next_run_time() is None
    one_shot = Job.create(JobSpec(job_type="log"), NOW, JobDefaults())
    assert one_shot.next_run_time() is None


def test_seed_helpers_read_the_injected_clock() -> None:
    job = Job.create(JobSpec(job_type="log", run_at=NOW), NOW, JobDefaults())
    clock = VirtualClock(NOW - timedelta(seconds=1))
    assert not job.is_due(clock)
    clock.advance(1)
    assert job.is_due(clock) and job.can_execute
    assert not job.is_overdue(clock)
    clock.advance(300)
    assert job.is_overdue(clock)
    paused = job.transition(JobStatus.PAUSED, NOW)
    assert not paused.is_due(clock) and not paused.is_overdue(clock) and not paused.can_execute


def test_job_json_has_the_spec_field_names_and_round_trips() -> None:
    recurrence = Recurrence(
        RecurrenceKind.CRON,
        cron="30 2 * * *",
        timezone="Europe/Berlin",
        ends_at=datetime(2026, 1, 1, tzinfo=UTC),
        max_occurrences=5,
    )
    spec = JobSpec(
        job_type="export_report",
        target_id="X",
        payload={"format": "pdf"},
        recurrence=recurrence,
        name="nightly",
        priority=3,
        timeout_s=12.5,
    )
    job = Job.create(spec, NOW, JobDefaults(), job_id="01JAAAAAAAAAAAAAAAAAAAAAAA")
    job = replace(
        job,
        last_result=LastResult(True, {"rows": 3}, None, NOW, NOW + timedelta(seconds=2), 2000.0),
    )
    data = job.to_json()
    assert set(data) >= SPEC_JOB_FIELDS
    assert set(data) - SPEC_JOB_FIELDS == {"scheduled_for", "anchor_at", "static", "paused_until"}
    assert set(data["recurrence"]) == {
        "kind",
        "interval",
        "cron",
        "timezone",
        "ends_at",
        "max_occurrences",
    }
    assert set(data["last_result"]) == {
        "success",
        "output",
        "error",
        "started_at",
        "finished_at",
        "duration_ms",
    }
    assert data["run_at"] == "2025-06-03T02:30:00+02:00"
    assert data["recurrence"]["ends_at"] == "2026-01-01T00:00:00+00:00"
    assert Job.from_json(data).to_json() == data
    assert Job.from_json(data).definition() == job.definition()


def test_paused_until_belongs_to_a_paused_job_only() -> None:
    job = Job.create(JobSpec(job_type="log"), NOW, JobDefaults())
    until = NOW + timedelta(hours=2)
    paused = job.transition(JobStatus.PAUSED, NOW, paused_until=until)
    assert paused.paused_until == until
    assert paused.to_json()["paused_until"] == "2025-06-02T12:17:30+00:00"
    assert Job.from_json(paused.to_json()) == paused
    for status in (JobStatus.PENDING, JobStatus.CANCELED):
        assert paused.transition(status, NOW).paused_until is None


def test_final_job_serialises_run_at_as_null() -> None:
    job = Job.create(JobSpec(job_type="log"), NOW, JobDefaults())
    assert job.transition(JobStatus.CANCELED, NOW).to_json()["run_at"] is None


def test_job_result_constructors() -> None:
    assert JobResult.success({"a": 1}) == JobResult(ok=True, output={"a": 1})
    failure = JobResult.failure("boom", should_retry=False, retry_delay_s=5)
    assert (failure.ok, failure.error, failure.should_retry, failure.retry_delay_s) == (
        False,
        "boom",
        False,
        5,
    )
    with pytest.raises(ValueError, match="retry_delay_s"):
        JobResult.failure("boom", retry_delay_s=-1)


def run_like_the_engine(job: Job, limit: int = 10_000) -> list[datetime]:
    """Run every occurrence of ``job`` the way the engine counts them."""
    ran: list[datetime] = []
    while job.status is JobStatus.PENDING and len(ran) < limit:
        assert job.scheduled_for is not None
        job = job.transition(JobStatus.RUNNING, NOW)
        ran.append(job.scheduled_for)
        following = job.next_run_time()
        job = replace(job, occurrence_count=job.occurrence_count + 1)
        if following is None:
            job = job.transition(JobStatus.COMPLETED, NOW)
        else:
            job = job.transition(JobStatus.PENDING, NOW, run_at=following, scheduled_for=following)
    return ran


@pytest.mark.parametrize("limit", [1, 2, 7])
@pytest.mark.parametrize(
    "recurrence",
    [
        Recurrence(RecurrenceKind.MINUTELY, interval=5),
        Recurrence(RecurrenceKind.MONTHLY, timezone="Europe/Berlin"),
        Recurrence(RecurrenceKind.CRON, cron="*/20 * * * *", timezone="Australia/Lord_Howe"),
    ],
)
def test_max_occurrences_runs_exactly_n_times(recurrence: Recurrence, limit: int) -> None:
    spec = JobSpec(job_type="log", recurrence=replace(recurrence, max_occurrences=limit))
    ran = run_like_the_engine(Job.create(spec, NOW, JobDefaults()))
    assert len(ran) == limit


@pytest.mark.parametrize("inclusive_end", [True, False])
def test_ends_at_bounds_the_last_occurrence_exactly(inclusive_end: bool) -> None:
    # Hourly from NOW: the 4th occurrence is at NOW + 3 h. An end exactly on it
    # keeps it; an end one second before drops it.
    end = NOW + timedelta(hours=3) - (timedelta(0) if inclusive_end else timedelta(seconds=1))
    spec = JobSpec(job_type="log", recurrence=Recurrence(RecurrenceKind.HOURLY, ends_at=end))
    ran = run_like_the_engine(Job.create(spec, NOW, JobDefaults()))
    assert len(ran) == (4 if inclusive_end else 3)
    assert ran[-1] <= end
    assert next_occurrence(spec.recurrence, NOW, ran[-1]) is None  # type: ignore[arg-type]
