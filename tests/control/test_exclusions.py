"""Exclusion calendars over the control protocol (SPEC section 15): Preview with
``exclude``, AddJob with ``recurrence.exclude``, and the refusals, each reply
checked against the IDL."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from nexus_schedd.model import JobStatus
from tests.calendars import dates, installed
from tests.control.harness import Daemon, running_daemon
from tests.control.test_protocol import call

CLOSED = {"closed": dates("closed", "2031-01-03", ranges=[("2031-01-06", "2031-01-07")])}


@pytest.fixture
def calendars() -> Iterator[None]:
    with installed(CLOSED):
        yield


@pytest.fixture
async def daemon(calendars: None, tmp_path: Path) -> AsyncIterator[Daemon]:
    async with running_daemon(tmp_path / "schedd.db") as running:
        yield running


def daily(**extra: Any) -> dict[str, Any]:
    return {"kind": "daily", "timezone": "Europe/Berlin", **extra}


@pytest.mark.anyio
async def test_preview_leaves_out_the_excluded_dates(daemon: Daemon) -> None:
    start = "2031-01-02T09:00:00"
    plain = await call(daemon, "Preview", {"recurrence": daily(), "start": start, "count": 4})
    assert [t[8:10] for t in plain["parameters"]["occurrences"]] == ["02", "03", "04", "05"]
    for parameters in (
        {"recurrence": daily(), "exclude": ["closed"]},
        {"recurrence": daily(exclude=["closed"])},
    ):
        reply = await call(daemon, "Preview", {**parameters, "start": start, "count": 4})
        assert reply["parameters"]["occurrences"] == [
            "2031-01-02T09:00:00+01:00",
            "2031-01-04T09:00:00+01:00",
            "2031-01-05T09:00:00+01:00",
            "2031-01-08T09:00:00+01:00",
        ]


@pytest.mark.anyio
async def test_preview_with_an_unknown_calendar_is_invalid_spec_naming_the_parameter(
    daemon: Daemon,
) -> None:
    for parameters, field in (
        ({"recurrence": daily(), "exclude": ["nope"]}, "exclude"),
        ({"recurrence": daily(exclude=["nope"])}, "recurrence.exclude"),
        ({"recurrence": daily(), "exclude": ["closed", "closed"]}, "exclude"),
    ):
        reply = await call(daemon, "Preview", parameters)
        assert reply["error"] == "io.nexus.Scheduler.InvalidSpec"
        assert reply["parameters"]["field"] == field


@pytest.mark.anyio
async def test_add_job_with_exclude_runs_on_allowed_dates_and_round_trips(daemon: Daemon) -> None:
    spec = {
        "job_type": "log",
        "run_at": "2031-01-03T09:00:00",
        "recurrence": daily(exclude=["closed"]),
    }
    job = (await call(daemon, "AddJob", {"job": spec}))["parameters"]["job"]
    # The first occurrence asked for is excluded: the job starts on the next allowed date.
    assert job["run_at"] == "2031-01-04T09:00:00+01:00"
    assert job["recurrence"]["exclude"] == ["closed"]
    again = (await call(daemon, "GetJob", {"id": job["id"]}))["parameters"]["job"]
    assert again["recurrence"] == job["recurrence"]
    assert again["status"] == JobStatus.PENDING.value


@pytest.mark.anyio
async def test_add_jobs_with_an_unknown_calendar_adds_nothing(daemon: Daemon) -> None:
    good = {"job_type": "log", "recurrence": daily(exclude=["closed"])}
    bad = {"job_type": "log", "recurrence": daily(exclude=["holidays-de"])}
    reply = await call(daemon, "AddJobs", {"jobs": [good, bad]})
    assert reply["error"] == "io.nexus.Scheduler.InvalidSpec"
    assert reply["parameters"]["field"] == "recurrence.exclude"
    assert "holidays-de" in reply["parameters"]["reason"]
    listed = await call(daemon, "ListJobs", {})
    assert listed["parameters"]["jobs"] == []


@pytest.mark.anyio
async def test_add_job_that_exclusions_never_let_fire_is_refused(daemon: Daemon) -> None:
    spec = {
        "job_type": "log",
        "run_at": "2031-01-06T09:00:00",
        "recurrence": daily(exclude=["closed"], ends_at="2031-01-07T23:00:00"),
    }
    reply = await call(daemon, "AddJob", {"job": spec})
    assert reply["error"] == "io.nexus.Scheduler.InvalidSpec"
    assert reply["parameters"]["field"] == "recurrence.exclude"
    assert "never fires" in reply["parameters"]["reason"]
