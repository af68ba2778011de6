"""``[calendars.NAME]`` (SPEC section 15) and ``exclude`` in ``[[schedules]]``:
parsing, and every bad value refused naming file, key and reason."""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path

import pytest

from nexus_schedd.daemon.config import load_config
from nexus_schedd.errors import ConfigError

USER_ENV = {"HOME": "/home/ann", "XDG_RUNTIME_DIR": "/run/user/1000"}


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "schedd.toml"
    path.write_text(text)
    return path


def refused(tmp_path: Path, text: str) -> ConfigError:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config(path, env=USER_ENV)
    assert caught.value.file == str(path)
    return caught.value


def test_calendars_take_dates_ranges_and_holidays(tmp_path: Path) -> None:
    config = load_config(
        write(
            tmp_path,
            """
[calendars.closed]
dates = [2026-05-01, "2026-05-14"]
ranges = [["2026-12-24", "2027-01-01"], [2026-08-03, 2026-08-07]]

[calendars.holidays-by]
holidays = "DE"
subdivision = "BY"

[[schedules]]
name = "weekday-report"
job_type = "log"
cron = "0 8 * * 1-5"
timezone = "Europe/Berlin"
exclude = ["closed", "holidays-by"]
""",
        ),
        env=USER_ENV,
    )
    closed = config.calendars["closed"]
    assert date(2026, 5, 1) in closed and date(2026, 5, 14) in closed
    assert date(2026, 12, 31) in closed and date(2027, 1, 2) not in closed
    assert date(2026, 8, 5) in closed
    holidays = config.calendars["holidays-by"]
    assert date(2026, 1, 6) in holidays  # Epiphany, Bavarian
    recurrence = config.schedules[0].recurrence
    assert recurrence is not None
    assert recurrence.exclude == ("closed", "holidays-by")


def test_no_calendars_is_the_default(tmp_path: Path) -> None:
    assert load_config(None, env=USER_ENV).calendars == {}


@pytest.mark.parametrize(
    ("text", "key", "reason"),
    [
        (
            '[calendars.x]\ndates = ["2026-02-30"]',
            "calendars.x.dates[0]",
            "must be an ISO date",
        ),
        (
            "[calendars.x]\ndates = [2026-01-01, 2026-01-02T10:00:00]",
            "calendars.x.dates[1]",
            "must be an ISO date",
        ),
        ('[calendars.x]\ndates = "2026-01-01"', "calendars.x.dates", "must be an array"),
        (
            '[calendars.x]\nranges = [["2026-01-05", "2026-01-01"]]',
            "calendars.x.ranges[0]",
            "ends (2026-01-01) before it starts (2026-01-05)",
        ),
        (
            '[calendars.x]\nranges = [["2026-01-05"]]',
            "calendars.x.ranges[0]",
            "must be a pair",
        ),
        (
            '[calendars.x]\nranges = [["2026-01-05", "soon"]]',
            "calendars.x.ranges[0][1]",
            "must be an ISO date",
        ),
        ('[calendars.x]\nholidays = "XX"', "calendars.x.holidays", "unknown country code 'XX'"),
        (
            '[calendars.x]\nholidays = "DE"\nsubdivision = "ZZ"',
            "calendars.x.subdivision",
            "unknown subdivision 'ZZ'",
        ),
        ('[calendars.x]\nsubdivision = "BY"', "calendars.x.subdivision", "only applies"),
        ("[calendars.x]\nholidays = 49", "calendars.x.holidays", "must be a country code"),
        ('[calendars.x]\nday = ["2026-01-01"]', "calendars.x.day", "unknown key"),
        ("calendars = 3", "calendars", "must be a table"),
        ("[calendars]\nx = 3", "calendars.x", "must be a table"),
    ],
)
def test_bad_calendars_are_refused_naming_the_key(
    tmp_path: Path, text: str, key: str, reason: str
) -> None:
    error = refused(tmp_path, text)
    assert error.key == key
    assert reason in error.reason


def test_a_schedule_excluding_an_unknown_calendar_is_refused(tmp_path: Path) -> None:
    error = refused(
        tmp_path,
        """
[calendars.closed]
dates = [2026-05-01]

[[schedules]]
name = "s"
job_type = "log"
every = "1 day"
exclude = ["closed", "holidays"]
""",
    )
    assert error.key == "schedules[0].exclude"
    assert "unknown calendar 'holidays'" in error.reason
    assert "closed" in error.reason


def test_a_one_shot_schedule_takes_no_exclude(tmp_path: Path) -> None:
    error = refused(
        tmp_path,
        """
[calendars.closed]
dates = [2026-05-01]

[[schedules]]
name = "s"
job_type = "log"
at = 2030-01-01T00:00:00Z
exclude = ["closed"]
""",
    )
    assert error.key == "schedules[0].exclude"


def test_the_example_configs_commented_calendars_are_valid(tmp_path: Path) -> None:
    example = Path(__file__).resolve().parents[2] / "config" / "nexus-schedd.toml"
    assert load_config(example, env=USER_ENV).calendars == {}
    enabled = re.sub(r"(?m)^#(?=[^ #\n])", "", example.read_text())
    config = load_config(write(tmp_path, enabled), env=USER_ENV)
    assert sorted(config.calendars) == ["holidays-de", "shutdown"]
    assert date(2026, 12, 31) in config.calendars["shutdown"]
