"""iCalendar export and Google Calendar links."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlparse

import icalendar
import pytest

from nexus_schedd.control.calendar import build_calendar, gcal_url, rrule_for, upcoming_occurrences
from nexus_schedd.model import Job, JobDefaults, JobSpec, Recurrence, RecurrenceKind
from nexus_schedd.model.times import resolve_zone
from tests.calendars import dates, installed

NOW = datetime(2025, 1, 1, tzinfo=UTC)


def job(recurrence: Recurrence | None, run_at: datetime, **extra: object) -> Job:
    spec = JobSpec(job_type="report", run_at=run_at, recurrence=recurrence, **extra)  # type: ignore[arg-type]
    return Job.create(spec, NOW, JobDefaults())


def test_interval_kinds_map_to_an_rrule_with_count_and_until() -> None:
    every = Recurrence(
        kind=RecurrenceKind.WEEKLY,
        interval=2,
        timezone="Europe/Berlin",
        ends_at=datetime(2025, 6, 1, tzinfo=UTC),
        max_occurrences=4,
    )
    rule = rrule_for(job(every, datetime(2025, 1, 6, 8, tzinfo=UTC)))
    assert rule == {
        "freq": "WEEKLY",
        "interval": 2,
        "count": 4,
        "until": datetime(2025, 6, 1, tzinfo=UTC),
    }


def test_monthly_on_the_31st_clamps_to_the_last_day_like_the_scheduler() -> None:
    monthly = Recurrence(kind=RecurrenceKind.MONTHLY, timezone="UTC")
    rule = rrule_for(job(monthly, datetime(2025, 1, 31, 9, tzinfo=UTC)))
    assert rule is not None
    assert rule["bymonthday"] == [28, 29, 30, 31] and rule["bysetpos"] == -1
    calendar = icalendar.Calendar.from_ical(
        build_calendar([job(monthly, datetime(2025, 1, 31, 9, tzinfo=UTC))], NOW, 30)
    )
    [event] = calendar.walk("VEVENT")
    assert event["rrule"]["BYSETPOS"] == [-1]


def test_cron_and_one_shot_jobs_become_one_event_per_occurrence_in_the_window() -> None:
    cron = Recurrence(kind=RecurrenceKind.CRON, cron="0 9 * * *", timezone="Europe/Berlin")
    cron_job = job(cron, datetime(2025, 1, 1, 8, tzinfo=UTC))
    once = job(None, datetime(2025, 1, 3, 12, tzinfo=UTC), name="single")
    assert rrule_for(cron_job) is None
    times = upcoming_occurrences(cron_job, datetime(2025, 1, 5, tzinfo=UTC))
    assert [t.astimezone(UTC).hour for t in times] == [8, 8, 8, 8]
    calendar = icalendar.Calendar.from_ical(build_calendar([cron_job, once], NOW, 4))
    events = calendar.walk("VEVENT")
    assert len(events) == 5
    assert len({str(event["uid"]) for event in events}) == 5
    assert [str(e["summary"]) for e in events].count("single") == 1
    assert calendar.walk("VTIMEZONE")  # TZID references are defined


def test_occurrences_stop_at_max_occurrences_and_the_per_job_bound() -> None:
    cron = Recurrence(kind=RecurrenceKind.CRON, cron="* * * * *", max_occurrences=3)
    capped = job(cron, datetime(2025, 1, 1, tzinfo=UTC))
    assert len(upcoming_occurrences(capped, datetime(2025, 2, 1, tzinfo=UTC))) == 3
    busy = job(Recurrence(kind=RecurrenceKind.CRON, cron="* * * * *"), NOW)
    assert len(upcoming_occurrences(busy, datetime(2025, 2, 1, tzinfo=UTC), limit=120)) == 120


def test_gcal_url_is_a_template_link_with_the_recurrence() -> None:
    daily = Recurrence(kind=RecurrenceKind.DAILY, timezone="Europe/Berlin")
    url = gcal_url(job(daily, datetime(2025, 3, 1, 7, tzinfo=UTC), name="standup"))
    assert url is not None
    parts = urlparse(url)
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == (
        "https://calendar.google.com/calendar/render"
    )
    query = parse_qs(parts.query)
    assert query["action"] == ["TEMPLATE"]
    assert query["text"] == ["standup"]
    assert query["dates"] == ["20250301T070000Z/20250301T073000Z"]
    assert query["recur"] == ["RRULE:FREQ=DAILY;INTERVAL=1"]
    assert query["ctz"] == ["Europe/Berlin"]


# --- RRULE only where RFC 5545 means what the scheduler does (issue 22) --------------------


def _daily(zone: str, run_at: str) -> Job:
    spec = JobSpec.from_json(
        {"job_type": "report", "run_at": run_at, "recurrence": {"kind": "daily", "timezone": zone}}
    )
    return Job.create(spec, NOW, JobDefaults())


@pytest.mark.parametrize(
    ("zone", "run_at", "maps"),
    [
        # zdump: Berlin skips 02:00-02:59 each March, so 02:30 would be dropped by
        # RFC 5545 on those days; 09:00 is never skipped.
        ("Europe/Berlin", "2025-01-10T02:30", False),
        ("Europe/Berlin", "2025-01-10T09:00", True),
        # Lord Howe skips only 02:00-02:29.
        ("Australia/Lord_Howe", "2025-01-10T02:15", False),
        ("Australia/Lord_Howe", "2025-01-10T02:45", True),
        # Havana and Santiago skip their midnight hour.
        ("America/Havana", "2025-01-10T00:30", False),
        ("America/Santiago", "2025-01-10T00:00", False),
        ("America/Santiago", "2025-01-10T23:30", True),
        # Dublin (negative DST in tzdata) skips 01:00-01:59 in March.
        ("Europe/Dublin", "2025-01-10T01:30", False),
        ("Europe/Dublin", "2025-01-10T00:30", True),
        # Repeated times agree (first instant in both): New York's 01:30 occurs
        # twice each November and never falls in its 02:00-02:59 gap.
        ("America/New_York", "2025-01-10T01:30", True),
        # No DST at all, and fixed offsets.
        ("Asia/Kolkata", "2025-01-10T02:30", True),
        ("-03:30", "2025-01-10T02:30", True),
    ],
)
def test_a_daily_time_some_gap_covers_gets_listed_occurrences_not_an_rrule(
    zone: str, run_at: str, maps: bool
) -> None:
    assert (rrule_for(_daily(zone, run_at)) is not None) is maps


@pytest.mark.parametrize(
    ("zone", "run_at"),
    [
        ("Europe/Berlin", "2025-01-10T09:00"),
        ("America/New_York", "2025-01-10T01:30"),
        ("America/Santiago", "2025-01-10T23:30"),
        ("Australia/Lord_Howe", "2025-01-10T02:45"),
    ],
)
def test_where_an_rrule_is_chosen_every_occurrence_keeps_the_wall_time_it_repeats(
    zone: str, run_at: str
) -> None:
    # What an RRULE with a TZID DTSTART generates: the same local time every
    # day, at its first instant when it occurs twice.
    daily = _daily(zone, run_at)
    assert rrule_for(daily) is not None
    local = resolve_zone(zone)
    wall = datetime.fromisoformat(run_at).time()
    found = upcoming_occurrences(daily, datetime(2027, 1, 10, tzinfo=UTC), limit=800)
    assert len(found) >= 729  # two years, give or take the ends of the window
    for instant in found:
        naive = instant.astimezone(local).replace(tzinfo=None)
        assert naive.time() == wall
        assert naive.replace(tzinfo=local, fold=0).timestamp() == instant.timestamp()


def test_a_job_first_due_inside_the_gap_is_listed_with_its_shift_and_wall_time() -> None:
    moved = _daily("Europe/Berlin", "2025-03-30T02:30")
    assert rrule_for(moved) is None
    calendar = icalendar.Calendar.from_ical(build_calendar([moved], NOW, 100))
    starts = [event.decoded("dtstart").isoformat() for event in calendar.walk("VEVENT")][:3]
    assert starts == [
        "2025-03-30T03:00:00+02:00",
        "2025-03-31T02:30:00+02:00",
        "2025-04-01T02:30:00+02:00",
    ]


# --- exclusion calendars (SPEC section 15) -----------------------------------------


def _expanded(event: icalendar.Event) -> list[datetime]:
    """What a calendar app shows for an event: its RRULE expanded, minus EXDATEs."""
    from dateutil.rrule import rruleset, rrulestr

    start = event.decoded("dtstart")
    rules = rruleset()
    rules.rrule(rrulestr(event["rrule"].to_ical().decode(), dtstart=start))  # type: ignore[arg-type]
    exdates = event.get("exdate")
    for group in exdates if isinstance(exdates, list) else [exdates] if exdates else []:
        for value in group.dts:
            rules.exdate(value.dt)
    return [instant.astimezone(UTC) for instant in rules]


def test_an_rrule_with_exclusions_gets_exdates_and_ends_with_the_window() -> None:
    closed = {"closed": dates("closed", "2025-01-03", "2025-01-06")}
    with installed(closed):
        daily = Recurrence(kind=RecurrenceKind.DAILY, timezone="Europe/Berlin", exclude=("closed",))
        daily_job = job(daily, datetime(2025, 1, 2, 8, tzinfo=UTC))
        calendar = icalendar.Calendar.from_ical(build_calendar([daily_job], NOW, 7))
        [event] = calendar.walk("VEVENT")
        assert "rrule" in event and "exdate" in event
        # Expanded, the feed is exactly what the scheduler runs in the window.
        expected = [daily_job.run_at, *upcoming_occurrences(daily_job, NOW + timedelta(days=7))[1:]]
        assert _expanded(event) == [t.astimezone(UTC) for t in expected if t is not None]
        days = [t.day for t in _expanded(event)]
        assert days == [2, 4, 5, 7]
        assert "except on: closed" in str(event["description"])


def test_hourly_exclusion_on_a_dst_day_lists_that_local_dates_hours_as_exdates() -> None:
    with installed({"dst": dates("dst", "2025-10-26")}):
        hourly = Recurrence(kind=RecurrenceKind.HOURLY, timezone="Europe/Berlin", exclude=("dst",))
        hourly_job = job(hourly, datetime(2025, 10, 25, 12, tzinfo=UTC))
        now = datetime(2025, 10, 25, 0, tzinfo=UTC)
        calendar = icalendar.Calendar.from_ical(build_calendar([hourly_job], now, 3))
        [event] = calendar.walk("VEVENT")
        shown = _expanded(event)
        berlin = resolve_zone("Europe/Berlin")
        assert not [t for t in shown if t.astimezone(berlin).date().isoformat() == "2025-10-26"]
        # The 25 hours of the day clocks go back are the EXDATEs.
        assert sum(len(group.dts) for group in _exdate_groups(event)) == 25


def _exdate_groups(event: icalendar.Event) -> list[Any]:
    exdates = event.get("exdate")
    return exdates if isinstance(exdates, list) else [exdates]


def test_exclusions_with_max_occurrences_are_listed_not_an_rrule() -> None:
    with installed({"closed": dates("closed", "2025-01-03")}):
        daily = Recurrence(
            kind=RecurrenceKind.DAILY,
            timezone="UTC",
            exclude=("closed",),
            max_occurrences=3,
        )
        daily_job = job(daily, datetime(2025, 1, 2, 8, tzinfo=UTC))
        assert rrule_for(daily_job) is None
        calendar = icalendar.Calendar.from_ical(build_calendar([daily_job], NOW, 30))
        starts = sorted(event.decoded("dtstart").day for event in calendar.walk("VEVENT"))
        assert starts == [2, 4, 5]
        assert "recur" not in parse_qs(urlparse(gcal_url(daily_job) or "").query)


def test_cron_with_exclusions_lists_no_event_on_an_excluded_date() -> None:
    with installed({"closed": dates("closed", "2025-01-03")}):
        cron = Recurrence(
            kind=RecurrenceKind.CRON, cron="0 9 * * *", timezone="UTC", exclude=("closed",)
        )
        calendar = icalendar.Calendar.from_ical(
            build_calendar([job(cron, datetime(2025, 1, 1, 10, tzinfo=UTC))], NOW, 4)
        )
        starts = sorted(event.decoded("dtstart").day for event in calendar.walk("VEVENT"))
        assert starts == [2, 4]
