"""Exclusion calendars (SPEC section 15) in the occurrence arithmetic: interval,
calendar and cron kinds, DST days, never-firing detection, and the recurrence's
JSON and stored form."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nexus_schedd.errors import InvalidSpec
from nexus_schedd.model import Job, JobDefaults, JobSpec, Recurrence, RecurrenceKind
from nexus_schedd.model.calendars import (
    CALENDARS,
    ExcludedDates,
    ExclusionCalendar,
    PublicHolidays,
    check_exclude,
)
from nexus_schedd.model.schedule import (
    excluded_occurrences,
    first_occurrence,
    next_occurrence,
    occurrences,
    preview,
    validate_schedule,
    without_exclusions,
)
from nexus_schedd.model.times import parse_instant
from nexus_schedd.store.rows import job_from_row, job_row
from tests.calendars import dates, installed
from tests.occurrences import walk

K = RecurrenceKind
BERLIN = ZoneInfo("Europe/Berlin")
SPRING = date(2026, 3, 29)  # Europe/Berlin: 02:00 -> 03:00
AUTUMN = date(2026, 10, 25)  # Europe/Berlin: 03:00 -> 02:00


@pytest.fixture(autouse=True)
def calendars() -> Iterator[None]:
    with installed(
        {
            "dst": dates("dst", SPRING.isoformat(), AUTUMN.isoformat()),
            "xmas": dates("xmas", ranges=[("2026-12-24", "2027-01-01")]),
            "wed": dates("wed", "2026-05-06"),
        }
    ):
        yield


def at(text: str) -> datetime:
    return parse_instant(text)


def iso(times: list[datetime]) -> list[str]:
    return [t.isoformat() for t in times]


def listed(recurrence: Recurrence, start: str, count: int) -> list[str]:
    begin = at(start)
    return iso(preview(recurrence, begin, count))


# --- interval and calendar kinds ---------------------------------------------------


def test_daily_job_skips_an_excluded_date_and_keeps_its_time() -> None:
    daily = Recurrence(K.DAILY, timezone="Europe/Berlin", exclude=("wed",))
    assert listed(daily, "2026-05-05T09:00:00+02:00", 3) == [
        "2026-05-05T09:00:00+02:00",
        "2026-05-07T09:00:00+02:00",
        "2026-05-08T09:00:00+02:00",
    ]


def test_minutely_job_jumps_a_whole_range_to_the_first_allowed_midnight() -> None:
    every_minute = Recurrence(K.MINUTELY, timezone="Europe/Berlin", exclude=("xmas",))
    after = at("2026-12-23T23:58:30+01:00")
    assert iso(occurrences(every_minute, after, after, 3)) == [
        "2026-12-23T23:59:30+01:00",
        # Elapsed-time steps from the anchor: the first step on Jan 2.
        "2027-01-02T00:00:30+01:00",
        "2027-01-02T00:01:30+01:00",
    ]


def test_first_occurrence_on_an_excluded_date_moves_to_the_next_allowed_one() -> None:
    weekly = Recurrence(K.WEEKLY, timezone="Europe/Berlin", exclude=("wed",))
    start = at("2026-05-06T08:00:00+02:00")
    assert first_occurrence(weekly, start) == at("2026-05-13T08:00:00+02:00")
    assert first_occurrence(without_exclusions(weekly), start) == start


def test_monthly_anchor_stays_on_its_day_when_the_first_occurrence_is_excluded() -> None:
    with installed({"jan31": dates("jan31", "2027-01-31")}):
        monthly = Recurrence(K.MONTHLY, timezone="Europe/Berlin", exclude=("jan31",))
        spec = JobSpec(job_type="t", run_at=at("2027-01-31T10:00:00+01:00"), recurrence=monthly)
        job = Job.create(spec, at("2027-01-01T00:00:00+00:00"), JobDefaults())
        assert job.anchor_at == at("2027-01-31T10:00:00+01:00")
        assert walk(job, 3) == [
            "2027-02-28T10:00:00+01:00",
            "2027-03-31T10:00:00+02:00",
            "2027-04-30T10:00:00+02:00",
        ]


def test_excluded_occurrences_do_not_count_towards_max_occurrences() -> None:
    daily = Recurrence(K.DAILY, timezone="Europe/Berlin", exclude=("wed",), max_occurrences=3)
    assert listed(daily, "2026-05-05T09:00:00+02:00", 10) == [
        "2026-05-05T09:00:00+02:00",
        "2026-05-07T09:00:00+02:00",
        "2026-05-08T09:00:00+02:00",
    ]


def test_ends_at_still_ends_a_schedule_with_exclusions() -> None:
    daily = Recurrence(
        K.DAILY,
        timezone="Europe/Berlin",
        exclude=("wed",),
        ends_at=at("2026-05-07T09:00:00+02:00"),
    )
    assert listed(daily, "2026-05-05T09:00:00+02:00", 10) == [
        "2026-05-05T09:00:00+02:00",
        "2026-05-07T09:00:00+02:00",
    ]


# --- cron --------------------------------------------------------------------------


def test_cron_weekdays_skip_public_holidays() -> None:
    with installed({"de": ExclusionCalendar.build("de", holidays=PublicHolidays("DE"))}):
        weekdays = Recurrence(K.CRON, cron="0 8 * * 1-5", timezone="Europe/Berlin", exclude=("de",))
        found = iso(
            occurrences(
                weekdays, at("2026-04-01T12:00:00+02:00"), at("2026-04-01T12:00:00+02:00"), 4
            )
        )
    # Good Friday (Apr 3) and Easter Monday (Apr 6) are public holidays in Germany.
    assert found == [
        "2026-04-02T08:00:00+02:00",
        "2026-04-07T08:00:00+02:00",
        "2026-04-08T08:00:00+02:00",
        "2026-04-09T08:00:00+02:00",
    ]


def test_holidays_of_a_subdivision_add_to_the_country_ones() -> None:
    bavaria = PublicHolidays("DE", "BY")
    assert date(2026, 1, 6) in bavaria  # Epiphany: Bavaria, not Berlin
    assert date(2026, 1, 6) not in PublicHolidays("DE", "BE")
    assert date(2026, 12, 25) in bavaria


def test_wildcard_hour_cron_drops_both_passes_of_a_repeated_hour_on_an_excluded_day() -> None:
    half_hourly = Recurrence(
        K.CRON, cron="*/30 * * * *", timezone="Europe/Berlin", exclude=("dst",)
    )
    start = at("2026-10-24T23:00:00+02:00")
    found = occurrences(half_hourly, start, start, 3)
    assert iso(found) == [
        "2026-10-24T23:30:00+02:00",
        "2026-10-26T00:00:00+01:00",
        "2026-10-26T00:30:00+01:00",
    ]


# --- DST days ------------------------------------------------------------------------


def _excluded_by_difference(recurrence: Recurrence, start: datetime, end: datetime) -> set[str]:
    """The occurrences in [start, end) the exclusions remove: without minus with."""

    def upto(rule: Recurrence) -> set[str]:
        found = occurrences(rule, start, start, 10_000, inclusive=True)
        return {t.isoformat() for t in found if t < end}

    return upto(without_exclusions(recurrence)) - upto(recurrence)


@pytest.mark.parametrize("day", [SPRING, AUTUMN], ids=["spring-forward", "fall-back"])
def test_daily_0230_on_a_dst_day_loses_exactly_that_days_occurrence(day: date) -> None:
    daily = Recurrence(K.DAILY, timezone="Europe/Berlin", exclude=("dst",))
    start = at(f"{day - timedelta(days=3)}T02:30:00+01:00")
    start = start.astimezone(BERLIN).replace(hour=2, minute=30)
    removed = _excluded_by_difference(daily, start, start + timedelta(days=7))
    # Spring: the 02:30 that does not exist runs at 03:00 (SPEC 3); it is that date's.
    expected = "2026-03-29T03:00:00+02:00" if day == SPRING else "2026-10-25T02:30:00+02:00"
    assert removed == {expected}


@pytest.mark.parametrize(
    ("day", "hours"), [(SPRING, 23), (AUTUMN, 25)], ids=["spring-forward", "fall-back"]
)
def test_hourly_on_a_dst_day_loses_exactly_the_hours_of_that_local_date(
    day: date, hours: int
) -> None:
    hourly = Recurrence(K.HOURLY, timezone="Europe/Berlin", exclude=("dst",))
    start = datetime(day.year, day.month, day.day - 2, 0, 15, tzinfo=BERLIN)
    end = start + timedelta(days=5)
    removed = _excluded_by_difference(hourly, start, end)
    assert len(removed) == hours
    assert {parse_instant(t).date() for t in removed} == {day}
    # Nothing that remains is on that date, and the days around it are complete.
    kept = [t for t in occurrences(hourly, start, start, 200, inclusive=True) if t < end]
    assert all(t.date() != day for t in kept)
    assert sum(1 for t in kept if t.date() == day + timedelta(days=1)) == 24
    # The EXDATE helper of the iCal export finds the same ones.
    assert {t.isoformat() for t in excluded_occurrences(hourly, start, start, end, 1000)} == removed


# --- never firing, bounded -------------------------------------------------------------


def test_weekly_job_whose_every_monday_is_excluded_until_its_end_is_refused() -> None:
    mondays = [date(2026, 6, 1) + timedelta(weeks=n) for n in range(10)]
    with installed({"mondays": ExclusionCalendar.build("mondays", dates=mondays)}):
        weekly = Recurrence(
            K.WEEKLY,
            timezone="Europe/Berlin",
            exclude=("mondays",),
            ends_at=at("2026-08-03T23:00:00+02:00"),
        )
        with pytest.raises(InvalidSpec) as caught:
            validate_schedule(weekly, at("2026-06-01T09:00:00+02:00"))
        assert caught.value.field == "recurrence.exclude"
        assert "never fires" in caught.value.reason
        # One Monday more in its life and it fires.
        longer = replace(weekly, ends_at=at("2026-08-10T23:00:00+02:00"))
        validate_schedule(longer, at("2026-06-01T09:00:00+02:00"))


def test_cron_whose_every_match_before_ends_at_is_excluded_is_refused() -> None:
    new_year = Recurrence(
        K.CRON,
        cron="0 9 * * *",
        timezone="Europe/Berlin",
        exclude=("xmas",),
        ends_at=at("2027-01-01T23:00:00+01:00"),
    )
    with pytest.raises(InvalidSpec) as caught:
        validate_schedule(new_year, at("2026-12-24T00:00:00+01:00"))
    assert caught.value.field == "recurrence.exclude"


def test_a_calendar_excluding_every_date_to_the_end_of_time_is_refused_at_once() -> None:
    with installed({"all": dates("all", ranges=[("2026-01-01", "9999-12-31")])}):
        minutely = Recurrence(K.MINUTELY, exclude=("all",))
        with pytest.raises(InvalidSpec) as caught:
            validate_schedule(minutely, at("2026-06-01T00:00:00+00:00"))
        assert caught.value.field == "recurrence.exclude"


def test_yearly_job_on_a_holiday_is_refused_and_the_search_stays_bounded() -> None:
    with installed({"de": ExclusionCalendar.build("de", holidays=PublicHolidays("DE"))}):
        christmas = Recurrence(K.YEARLY, timezone="Europe/Berlin", exclude=("de",))
        with pytest.raises(InvalidSpec) as caught:
            validate_schedule(christmas, at("2026-12-25T09:00:00+01:00"))
        assert caught.value.field == "recurrence.exclude"


def test_a_huge_calendar_of_single_dates_cannot_hang_an_add() -> None:
    # Every Monday for 300 years, one date each: more excluded runs than the bound.
    mondays = [date(2026, 6, 1) + timedelta(weeks=n) for n in range(300 * 52)]
    with installed({"mondays": ExclusionCalendar.build("mondays", dates=mondays)}):
        weekly = Recurrence(K.CRON, cron="0 9 * * 1", exclude=("mondays",))
        with pytest.raises(InvalidSpec) as caught:
            validate_schedule(weekly, at("2026-06-01T00:00:00+00:00"))
        assert caught.value.field == "recurrence.exclude"


def test_an_unknown_calendar_name_is_refused_naming_the_field() -> None:
    daily = Recurrence(K.DAILY, exclude=("nope",))
    with pytest.raises(InvalidSpec) as caught:
        validate_schedule(daily, at("2026-06-01T00:00:00+00:00"))
    assert caught.value.field == "recurrence.exclude"
    assert "'nope'" in caught.value.reason


def test_a_calendar_removed_after_the_add_is_ignored_not_fatal() -> None:
    daily = Recurrence(K.DAILY, timezone="Europe/Berlin", exclude=("wed",))
    start = at("2026-05-05T09:00:00+02:00")
    with installed({}):
        found = next_occurrence(daily, start, start)
    assert found == at("2026-05-06T09:00:00+02:00")


# --- the value and its stored form ----------------------------------------------------


def test_recurrences_without_exclusions_share_one_empty_tuple() -> None:
    first, second = Recurrence(K.DAILY), Recurrence.from_json({"kind": "hourly"})
    assert first.exclude == () and first.exclude is second.exclude
    assert "exclude" not in first.to_json()


def test_exclude_round_trips_through_json_and_the_store_row() -> None:
    daily = Recurrence(K.DAILY, timezone="Europe/Berlin", exclude=["wed", "dst"])  # type: ignore[arg-type]
    assert daily.exclude == ("wed", "dst")
    assert daily.to_json()["exclude"] == ["wed", "dst"]
    assert Recurrence.from_json(daily.to_json()) == daily
    spec = JobSpec(job_type="t", run_at=at("2026-05-05T09:00:00+02:00"), recurrence=daily)
    job = Job.create(spec, at("2026-05-01T00:00:00+00:00"), JobDefaults())
    assert job_from_row(job_row(job)).recurrence == daily
    assert Job.from_json(job.to_json()).recurrence == daily


@pytest.mark.parametrize(
    "value",
    ["wed", [""], [1], ["a", "a"], ["x" * 101], [f"c{n}" for n in range(33)], {"a": 1}],
)
def test_bad_exclude_values_are_invalid_spec(value: object) -> None:
    with pytest.raises(InvalidSpec) as caught:
        Recurrence.from_json({"kind": "daily", "exclude": value})
    assert caught.value.field == "recurrence.exclude"


def test_ranges_are_inclusive_and_merged() -> None:
    calendar = dates(
        "c", "2026-01-05", ranges=[("2026-01-01", "2026-01-03"), ("2026-01-04", "2026-01-04")]
    )
    assert calendar.spans == ((date(2026, 1, 1), date(2026, 1, 5)),)
    union = ExcludedDates.union([calendar])
    assert date(2026, 1, 5) in union and date(2026, 1, 6) not in union
    assert union.next_allowed(date(2026, 1, 1)) == date(2026, 1, 6)
    with pytest.raises(ValueError, match="before it starts"):
        dates("bad", ranges=[("2026-01-02", "2026-01-01")])


@pytest.mark.parametrize(
    ("country", "subdivision", "field"), [("XX", None, "holidays"), ("DE", "ZZ", "subdivision")]
)
def test_unknown_holiday_country_or_subdivision_is_refused(
    country: str, subdivision: str | None, field: str
) -> None:
    with pytest.raises(InvalidSpec) as caught:
        PublicHolidays(country, subdivision)
    assert caught.value.field == field


def test_check_exclude_keeps_the_order_given() -> None:
    assert check_exclude(["b", "a"]) == ("b", "a")
    assert check_exclude(None) == ()
    assert CALENDARS.calendars.keys() >= {"dst", "xmas", "wed"}


# --- property: exclusions are a filter on local dates ----------------------------------

_KINDS = st.sampled_from(
    [
        Recurrence(K.HOURLY, interval=5, timezone="Europe/Berlin"),
        Recurrence(K.DAILY, timezone="America/New_York"),
        Recurrence(K.WEEKLY, interval=2, timezone="Europe/Berlin"),
        Recurrence(K.MONTHLY, timezone="Australia/Sydney"),
        Recurrence(K.CRON, cron="30 2 * * *", timezone="Europe/Berlin"),
        Recurrence(K.CRON, cron="*/45 * * * 1-5", timezone="Europe/Berlin"),
    ]
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    base=_KINDS,
    offset_days=st.integers(0, 700),
    excluded=st.lists(st.integers(0, 40), max_size=20),
    spans=st.lists(st.tuples(st.integers(0, 40), st.integers(0, 6)), max_size=3),
)
def test_exclusions_remove_exactly_the_occurrences_on_excluded_local_dates(
    base: Recurrence,
    offset_days: int,
    excluded: list[int],
    spans: list[tuple[int, int]],
) -> None:
    start = datetime(2025, 1, 1, 1, 30, tzinfo=UTC) + timedelta(days=offset_days, minutes=7)
    first_day = start.date()
    calendar = ExclusionCalendar.build(
        "p",
        dates=[first_day + timedelta(days=n) for n in excluded],
        ranges=[
            (first_day + timedelta(days=a), first_day + timedelta(days=a + length))
            for a, length in spans
        ],
    )
    union = ExcludedDates.union([calendar])
    with installed({"p": calendar}):
        rule = replace(base, exclude=("p",))
        end = start + timedelta(days=30)
        expected = [
            t
            for t in occurrences(base, start, start, 5000, inclusive=True)
            if t < end and t.date() not in union
        ]
        found = [
            t for t in occurrences(rule, start, start, len(expected) + 1, inclusive=True) if t < end
        ]
    assert found == expected
