"""``nexus-schedctl add --exclude`` and ``preview --exclude`` (SPEC section 15), run
as the real console script against a real daemon whose calendars are installed."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.calendars import dates, installed
from tests.cli.test_commands import json_of, schedctl
from tests.control.harness import Daemon, running_daemon

CALENDARS = {
    "holidays-de": dates("holidays-de", "2031-04-18", "2031-04-21"),
    "works-outing": dates("works-outing", "2031-04-23"),
}


@pytest.fixture
def calendars() -> Iterator[None]:
    with installed(CALENDARS):
        yield


@pytest.fixture
async def daemon(calendars: None, tmp_path: Path) -> AsyncIterator[Daemon]:
    async with running_daemon(tmp_path / "schedd.db") as running:
        yield running


@pytest.mark.anyio
async def test_add_with_exclude_sends_the_names_and_show_displays_them(daemon: Daemon) -> None:
    added = await json_of(
        daemon,
        "add", "log", "--every", "1", "day", "--tz", "Europe/Berlin",
        "--at", "2031-04-17T09:00", "--exclude", "holidays-de,works-outing",
    )  # fmt: skip
    job = added["job"]
    assert job["recurrence"]["exclude"] == ["holidays-de", "works-outing"]
    shown = await schedctl(daemon, "show", job["id"])
    assert shown.returncode == 0, shown.stderr
    assert "every 1 day (Europe/Berlin) except holidays-de, works-outing" in shown.stdout


@pytest.mark.anyio
async def test_exclude_is_repeatable_and_each_name_counts_once(daemon: Daemon) -> None:
    added = await json_of(
        daemon,
        "add", "log", "--cron", "0 9 * * *", "--tz", "Europe/Berlin",
        "--exclude", "works-outing", "--exclude", "holidays-de", "--exclude", "works-outing",
    )  # fmt: skip
    assert added["job"]["recurrence"]["exclude"] == ["works-outing", "holidays-de"]


@pytest.mark.anyio
async def test_add_with_an_unknown_calendar_exits_1_naming_the_field(daemon: Daemon) -> None:
    done = await schedctl(daemon, "add", "log", "--every", "1", "day", "--exclude", "nope")
    assert done.returncode == 1
    assert "recurrence.exclude" in done.stderr and "'nope'" in done.stderr
    listed = await json_of(daemon, "list")
    assert listed["jobs"] == []


@pytest.mark.anyio
async def test_exclude_without_a_recurrence_is_refused(daemon: Daemon) -> None:
    done = await schedctl(daemon, "add", "log", "--exclude", "holidays-de")
    assert done.returncode == 1
    assert "--exclude" in done.stderr


@pytest.mark.anyio
async def test_preview_exclude_asks_the_daemon_and_leaves_the_dates_out(daemon: Daemon) -> None:
    args = ["preview", "--every", "1", "day", "--tz", "Europe/Berlin",
            "--from", "2031-04-17T09:00", "--count", "4"]  # fmt: skip
    plain = await schedctl(None, *args)  # no daemon needed without --exclude
    assert [line.split()[0][8:10] for line in plain.stdout.splitlines()] == ["17", "18", "19", "20"]
    human = await schedctl(daemon, *args, "--exclude", "holidays-de", "--exclude", "works-outing")
    assert human.returncode == 0, human.stderr
    assert [line.split()[0] for line in human.stdout.splitlines()] == [
        "2031-04-17T09:00:00+02:00",
        "2031-04-19T09:00:00+02:00",
        "2031-04-20T09:00:00+02:00",
        "2031-04-22T09:00:00+02:00",
    ]
    as_json = await schedctl(daemon, "--json", *args, "--exclude", "holidays-de")
    assert json.loads(as_json.stdout)["occurrences"][:2] == [
        "2031-04-17T09:00:00+02:00",
        "2031-04-19T09:00:00+02:00",
    ]


@pytest.mark.anyio
async def test_preview_exclude_errors_name_the_option(daemon: Daemon) -> None:
    args = ["preview", "--cron", "0 9 * * *", "--exclude"]
    unknown = await schedctl(daemon, *args, "nope")
    assert unknown.returncode == 1
    assert "--exclude" in unknown.stderr and "'nope'" in unknown.stderr
    empty = await schedctl(daemon, *args, "holidays-de,")
    assert empty.returncode == 1 and "--exclude" in empty.stderr
    # The calendars are the daemon's: without one, preview --exclude cannot answer.
    down = await schedctl(None, *args, "holidays-de", socket="/nonexistent/control.sock")
    assert down.returncode == 69
