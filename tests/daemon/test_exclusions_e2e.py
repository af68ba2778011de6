"""End-to-end, exclusion calendars (SPEC section 15) through the real daemon: a
config with ``[calendars.x]`` makes ``preview --exclude x``, an added job and a
static schedule honour it; a bad calendar at reload changes nothing; a reload
that removes the calendar leaves the job running and says so."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.daemon.test_daemon_e2e import base_config, schedctl, schedctl_json

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


def calendars_config(tmp_path: Path, calendars: str) -> str:
    static = """
[[schedules]]
name = "noon"
job_type = "log"
cron = "0 12 * * *"
timezone = "UTC"
exclude = ["x"]
"""
    return base_config(
        tmp_path, extra=calendars, schedules=static if "[calendars.x]" in calendars else ""
    )


def test_preview_add_and_static_schedules_honour_a_config_calendar(
    tmp_path: Path, daemon_factory: Any
) -> None:
    today = datetime.now(UTC).date()
    days = [today + timedelta(days=n) for n in range(3)]
    calendar = f"[calendars.x]\ndates = [{', '.join(day.isoformat() for day in days)}]\n"
    daemon = daemon_factory(calendars_config(tmp_path, calendar))
    daemon.start()
    first_allowed = today + timedelta(days=3)

    # preview --exclude x: the daemon's calendar leaves the three dates out.
    preview = [
        "preview",
        "--every",
        "1",
        "day",
        "--tz",
        "UTC",
        "--from",
        f"{today}T12:00",
        "--count",
        "3",
    ]
    shown = schedctl_json(daemon, *preview, "--exclude", "x")["occurrences"]
    assert [_day(text) for text in shown] == [first_allowed + timedelta(days=n) for n in range(3)]
    plain = schedctl_json(daemon, *preview)["occurrences"]
    assert _day(plain[0]) == today

    # An added job starts on the first allowed date and keeps its time of day.
    job = schedctl_json(
        daemon, "add", "log", "--every", "1", "day", "--tz", "UTC",
        "--at", f"{today}T12:00:00Z", "--exclude", "x",
    )["job"]  # fmt: skip
    assert job["run_at"] == f"{first_allowed}T12:00:00+00:00"
    assert job["recurrence"]["exclude"] == ["x"]
    # The static schedule from [[schedules]] too.
    noon = schedctl_json(daemon, "show", "noon")["job"]
    assert noon["run_at"] == f"{first_allowed}T12:00:00+00:00"
    assert noon["recurrence"]["exclude"] == ["x"]

    # An unknown name is refused, nothing added.
    refused = schedctl(daemon, "add", "log", "--every", "1", "day", "--exclude", "y", check=False)
    assert refused.returncode == 1 and "recurrence.exclude" in refused.stderr
    assert len(schedctl_json(daemon, "list")["jobs"]) == 2

    # A bad calendar in a reload is refused and changes nothing.
    daemon.write_config(calendars_config(tmp_path, '[calendars.x]\ndates = ["2026-02-30"]\n'))
    bad = schedctl(daemon, "reload", check=False)
    assert bad.returncode != 0
    assert "calendars.x.dates[0]" in bad.stderr
    assert schedctl_json(daemon, *preview, "--exclude", "x")["occurrences"] == shown

    # A reload without the calendar (and its static schedule): the added job keeps
    # running without the exclusion, and the daemon says so.
    daemon.write_config(calendars_config(tmp_path, ""))
    reloaded = schedctl_json(daemon, "reload")
    assert reloaded["result"]["removed"] == ["noon"]
    [removed] = daemon.wait_event("calendars_removed")
    assert removed["calendars"] == ["x"]
    again = schedctl_json(daemon, "show", job["id"])["job"]
    assert again["status"] == "pending" and again["run_at"] == job["run_at"]
    gone = schedctl(daemon, *preview, "--exclude", "x", check=False)
    assert gone.returncode == 1 and "unknown calendar 'x'" in gone.stderr
    assert schedctl_json(daemon, "status")["status"]["counts"]["pending"] >= 1


def _day(text: str) -> date:
    return datetime.fromisoformat(text).date()
