"""The recurrence engine: every rule of SPEC section 3, with concrete calendars."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from nexus_schedd.errors import InvalidSpec
from nexus_schedd.model import Recurrence, RecurrenceKind
from nexus_schedd.model.schedule import (
    first_occurrence,
    is_fixed_hour,
    next_occurrence,
    occurrences,
    parse_cron,
    validate_schedule,
)
from nexus_schedd.model.times import parse_instant

K = RecurrenceKind


def at(text: str) -> datetime:
    """An instant from RFC 3339 text with its offset."""
    return parse_instant(text)


def iso(times: list[datetime]) -> list[str]:
    return [t.isoformat() for t in times]


def cron(expression: str, zone: str = "UTC", **extra: object) -> Recurrence:
    return Recurrence(K.CRON, cron=expression, timezone=zone, **extra)  # type: ignore[arg-type]


def listed(recurrence: Recurrence, start: str, count: int) -> list[str]:
    """Like preview: --every lists the start itself, cron the matches after it."""
    begin = at(start)
    inclusive = recurrence.kind is not K.CRON
    return iso(occurrences(recurrence, begin, begin, count, inclusive=inclusive))


# --- interval kinds ---------------------------------------------------------------


def test_once_has_its_start_as_only_occurrence() -> None:
    once = Recurrence(K.ONCE)
    start = at("2025-05-01T10:00:00+00:00")
    assert first_occurrence(once, start) == start
    assert next_occurrence(once, start, start) is None
    assert not once.repeats


def test_minutely_steps_in_elapsed_time() -> None:
    every_five = Recurrence(K.MINUTELY, interval=5, timezone="Europe/Berlin")
    assert listed(every_five, "2025-05-01T10:00:00+02:00", 3) == [
        "2025-05-01T10:00:00+02:00",
        "2025-05-01T10:05:00+02:00",
        "2025-05-01T10:10:00+02:00",
    ]


@pytest.mark.parametrize(
    ("start", "expected"),
    [
        (
            "2025-03-30T00:30:00+01:00",
            ["2025-03-30T00:30:00+01:00", "2025-03-30T01:30:00+01:00", "2025-03-30T03:30:00+02:00"],
        ),
        (
            "2025-10-26T01:30:00+02:00",
            [
                "2025-10-26T01:30:00+02:00",
                "2025-10-26T02:30:00+02:00",
                "2025-10-26T02:30:00+01:00",
                "2025-10-26T03:30:00+01:00",
            ],
        ),
    ],
)
def test_hourly_steps_in_elapsed_time_across_dst(start: str, expected: list[str]) -> None:
    hourly = Recurrence(K.HOURLY, timezone="Europe/Berlin")
    assert listed(hourly, start, len(expected)) == expected


def test_daily_and_weekly_keep_wall_clock_time_across_dst() -> None:
    daily = Recurrence(K.DAILY, interval=2, timezone="Europe/Berlin")
    assert listed(daily, "2025-03-28T09:00:00+01:00", 3) == [
        "2025-03-28T09:00:00+01:00",
        "2025-03-30T09:00:00+02:00",
        "2025-04-01T09:00:00+02:00",
    ]
    weekly = Recurrence(K.WEEKLY, timezone="America/New_York")
    assert listed(weekly, "2025-10-27T08:00:00-04:00", 3) == [
        "2025-10-27T08:00:00-04:00",
        "2025-11-03T08:00:00-05:00",
        "2025-11-10T08:00:00-05:00",
    ]


def test_monthly_clamps_to_month_end_from_the_anchor_without_drifting() -> None:
    monthly = Recurrence(K.MONTHLY, timezone="Europe/Berlin")
    assert listed(monthly, "2024-01-31T09:00:00+01:00", 5) == [
        "2024-01-31T09:00:00+01:00",
        "2024-02-29T09:00:00+01:00",
        "2024-03-31T09:00:00+02:00",
        "2024-04-30T09:00:00+02:00",
        "2024-05-31T09:00:00+02:00",
    ]
    anchor = at("2025-01-31T09:00:00+01:00")
    assert iso([next_occurrence(monthly, anchor, at("2025-02-28T09:00:00+01:00"))]) == [  # type: ignore[list-item]
        "2025-03-31T09:00:00+02:00"
    ]


def test_monthly_interval_counts_months_from_the_anchor() -> None:
    quarterly = Recurrence(K.MONTHLY, interval=3)
    assert listed(quarterly, "2025-11-30T00:00:00+00:00", 3) == [
        "2025-11-30T00:00:00+00:00",
        "2026-02-28T00:00:00+00:00",
        "2026-05-30T00:00:00+00:00",
    ]


def test_yearly_from_feb_29_runs_on_feb_28_in_common_years() -> None:
    yearly = Recurrence(K.YEARLY, timezone="Europe/Berlin")
    assert listed(yearly, "2024-02-29T12:00:00+01:00", 5) == [
        "2024-02-29T12:00:00+01:00",
        "2025-02-28T12:00:00+01:00",
        "2026-02-28T12:00:00+01:00",
        "2027-02-28T12:00:00+01:00",
        "2028-02-29T12:00:00+01:00",
    ]


@pytest.mark.parametrize(
    ("kind", "interval"),
    [(K.MINUTELY, 7), (K.HOURLY, 5), (K.DAILY, 3), (K.WEEKLY, 2), (K.MONTHLY, 1), (K.YEARLY, 1)],
)
def test_next_occurrence_far_ahead_equals_stepping_one_by_one(kind: K, interval: int) -> None:
    recurrence = Recurrence(kind, interval=interval, timezone="Australia/Lord_Howe")
    anchor = at("2024-01-31T02:15:00+11:00")
    stepped = occurrences(recurrence, anchor, anchor, 400)
    for index in (0, 57, 123, 398):
        assert next_occurrence(recurrence, anchor, stepped[index]) == stepped[index + 1]
        just_before = stepped[index + 1] - timedelta(seconds=1)
        assert next_occurrence(recurrence, anchor, just_before) == stepped[index + 1]


def test_occurrences_before_the_anchor_start_at_the_anchor() -> None:
    daily = Recurrence(K.DAILY)
    anchor = at("2025-05-01T06:00:00+00:00")
    assert next_occurrence(daily, anchor, anchor - timedelta(days=30)) == anchor


def test_fixed_offset_zone_is_accepted() -> None:
    assert listed(cron("0 9 * * *", "+05:30"), "2025-01-01T00:00:00+00:00", 1) == [
        "2025-01-01T09:00:00+05:30"
    ]


# --- cron syntax -------------------------------------------------------------------


def test_cron_day_of_month_and_day_of_week_combine_with_or() -> None:
    thirteenth_or_friday = cron("0 0 13 * 5")
    days = [
        t.day
        for t in occurrences(
            thirteenth_or_friday, at("2025-06-01T00:00:00Z"), at("2025-06-01T00:00:00Z"), 6
        )
    ]
    assert days == [6, 13, 20, 27, 4, 11]  # Fridays of June, the 13th (a Friday), then July


def test_cron_with_one_day_field_restricted_uses_only_that_field() -> None:
    start = at("2025-06-01T00:00:00Z")
    assert [t.day for t in occurrences(cron("0 0 13 * *"), start, start, 2)] == [13, 13]
    assert [t.weekday() for t in occurrences(cron("0 0 * * 5"), start, start, 2)] == [4, 4]


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("0 0 L * *", ["2028-01-31", "2028-02-29", "2028-03-31", "2028-04-30"]),
        ("0 0 * * L5", ["2028-01-28", "2028-02-25", "2028-03-31", "2028-04-28"]),
        ("0 0 * * 1#2", ["2028-01-10", "2028-02-14", "2028-03-13", "2028-04-10"]),
        ("0 0 1W * *", ["2028-01-03", "2028-02-01", "2028-03-01", "2028-04-03"]),
    ],
)
def test_cron_last_nth_and_weekday_extensions(expression: str, expected: list[str]) -> None:
    start = at("2028-01-01T00:00:00Z")
    found = occurrences(cron(expression), start, start, 4)
    assert [t.date().isoformat() for t in found] == expected


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("@hourly", ["2025-01-01T01:00:00+00:00", "2025-01-01T02:00:00+00:00"]),
        ("@daily", ["2025-01-02T00:00:00+00:00", "2025-01-03T00:00:00+00:00"]),
        ("@midnight", ["2025-01-02T00:00:00+00:00", "2025-01-03T00:00:00+00:00"]),
        ("@weekly", ["2025-01-05T00:00:00+00:00", "2025-01-12T00:00:00+00:00"]),
        ("@monthly", ["2025-02-01T00:00:00+00:00", "2025-03-01T00:00:00+00:00"]),
        ("@yearly", ["2026-01-01T00:00:00+00:00", "2027-01-01T00:00:00+00:00"]),
        ("@annually", ["2026-01-01T00:00:00+00:00", "2027-01-01T00:00:00+00:00"]),
        ("0 0 * * * 30", ["2025-01-01T00:00:30+00:00", "2025-01-02T00:00:30+00:00"]),
        ("*/20 * * * * */15", ["2025-01-01T00:00:15+00:00", "2025-01-01T00:00:30+00:00"]),
        ("0 9 * jan-feb mon-fri", ["2025-01-01T09:00:00+00:00", "2025-01-02T09:00:00+00:00"]),
    ],
)
def test_cron_shorthands_seconds_field_and_names(expression: str, expected: list[str]) -> None:
    assert listed(cron(expression), "2025-01-01T00:00:00+00:00", 2) == expected


def test_cron_first_occurrence_includes_a_matching_start() -> None:
    start = at("2025-01-01T09:00:00+00:00")
    assert first_occurrence(cron("0 9 * * *"), start) == start
    assert next_occurrence(cron("0 9 * * *"), start, start) == start + timedelta(days=1)


@pytest.mark.parametrize(
    ("expression", "reason"),
    [
        ("", "empty"),
        ("* * * *", "expected 5 fields"),
        ("* * * * * * *", "expected 5 fields"),
        ("60 * * * *", "bad cron expression"),
        ("* 24 * * *", "bad cron expression"),
        ("* * 0 * *", "bad cron expression"),
        ("* * * 13 *", "bad cron expression"),
        ("* * * * funday", "bad cron expression"),
        ("@reboot", "unknown shorthand"),
        ("H * * * *", "hashed (H) and random (R)"),
        ("R 3 * * *", "hashed (H) and random (R)"),
    ],
)
def test_malformed_cron_is_refused_naming_the_field(expression: str, reason: str) -> None:
    with pytest.raises(InvalidSpec) as caught:
        parse_cron(expression)
    assert caught.value.field == "recurrence.cron"
    assert reason in caught.value.reason


@pytest.mark.timeout(5)
@pytest.mark.parametrize(
    "expression",
    # "0 0 30 2 */2": a day-of-week beginning with * combines with AND (SPEC 3).
    ["0 0 30 2 *", "0 0 31 4 *", "0 0 31 2,4,6,9,11 *", "0 0 30,31 2 * 0", "0 0 30 2 */2"],
)
def test_never_firing_cron_is_refused_promptly(expression: str) -> None:
    # The 5 s timeout proves the search is bounded; croniter answers in milliseconds.
    recurrence = cron(expression, "Europe/Berlin")
    with pytest.raises(InvalidSpec) as caught:
        validate_schedule(recurrence, at("2025-01-01T00:00:00Z"))
    assert caught.value.field == "recurrence.cron"
    assert "never fires" in caught.value.reason
    with pytest.raises(InvalidSpec):
        next_occurrence(recurrence, at("2025-01-01T00:00:00Z"), at("2025-01-01T00:00:00Z"))


def test_cron_that_fires_rarely_is_accepted() -> None:
    leap_day = cron("0 0 29 2 *")
    validate_schedule(leap_day, at("2097-01-01T00:00:00Z"))
    assert iso([first_occurrence(leap_day, at("2097-01-01T00:00:00Z"))]) == [  # type: ignore[list-item]
        "2104-02-29T00:00:00+00:00"
    ]


# --- end conditions ---------------------------------------------------------------


def test_ends_at_is_compared_with_the_next_occurrence() -> None:
    end = at("2025-01-01T03:00:00Z")
    hourly = Recurrence(K.HOURLY, ends_at=end)
    anchor = at("2025-01-01T00:00:00Z")
    assert len(occurrences(hourly, anchor, anchor, 100, inclusive=True)) == 4
    assert next_occurrence(hourly, anchor, at("2025-01-01T02:00:00Z")) == end
    assert next_occurrence(hourly, anchor, end) is None
    every_cron = cron("0 * * * *", ends_at=end)
    assert len(occurrences(every_cron, anchor, anchor, 100, inclusive=True)) == 4


def test_ends_at_before_the_first_occurrence_is_refused() -> None:
    start = at("2025-01-01T10:00:00Z")
    late_cron = cron("0 12 * * *", ends_at=at("2025-01-01T11:59:59Z"))
    assert first_occurrence(late_cron, start) is None
    with pytest.raises(InvalidSpec) as caught:
        validate_schedule(late_cron, start)
    assert caught.value.field == "recurrence.ends_at"
    daily = Recurrence(K.DAILY, ends_at=start - timedelta(seconds=1))
    with pytest.raises(InvalidSpec, match=r"recurrence\.ends_at"):
        validate_schedule(daily, start)
    validate_schedule(Recurrence(K.DAILY, ends_at=start), start)


# --- DST: fixed hour, wildcard hour, calendar kinds, in three zones -------------------

DST_CASES = [
    # Europe/Berlin: 2025-03-30 02:00 -> 03:00; 2025-10-26 03:00 -> 02:00.
    ("Europe/Berlin", "30 2 * * *", "2025-03-29T12:00:00+01:00",
     ["2025-03-30T03:00:00+02:00", "2025-03-31T02:30:00+02:00"]),
    ("Europe/Berlin", "30 2 * * *", "2025-10-25T12:00:00+02:00",
     ["2025-10-26T02:30:00+02:00", "2025-10-27T02:30:00+01:00"]),
    ("Europe/Berlin", "0,30 2,3 * * *", "2025-03-30T00:00:00+01:00",
     ["2025-03-30T03:00:00+02:00", "2025-03-30T03:30:00+02:00", "2025-03-31T02:00:00+02:00"]),
    ("Europe/Berlin", "0-59/20 2 * * *", "2025-10-26T00:00:00+02:00",
     ["2025-10-26T02:00:00+02:00", "2025-10-26T02:20:00+02:00", "2025-10-26T02:40:00+02:00",
      "2025-10-27T02:00:00+01:00"]),
    ("Europe/Berlin", "30 * * * *", "2025-03-30T00:00:00+01:00",
     ["2025-03-30T00:30:00+01:00", "2025-03-30T01:30:00+01:00", "2025-03-30T03:30:00+02:00"]),
    ("Europe/Berlin", "30 * * * *", "2025-10-26T01:00:00+02:00",
     ["2025-10-26T01:30:00+02:00", "2025-10-26T02:30:00+02:00", "2025-10-26T02:30:00+01:00",
      "2025-10-26T03:30:00+01:00"]),
    ("Europe/Berlin", "*/15 */2 * * *", "2025-10-26T01:50:00+02:00",
     ["2025-10-26T02:00:00+02:00", "2025-10-26T02:15:00+02:00", "2025-10-26T02:30:00+02:00",
      "2025-10-26T02:45:00+02:00", "2025-10-26T02:00:00+01:00", "2025-10-26T02:15:00+01:00",
      "2025-10-26T02:30:00+01:00", "2025-10-26T02:45:00+01:00", "2025-10-26T04:00:00+01:00"]),
    ("Europe/Berlin", "*/15 */2 * * *", "2025-03-30T01:50:00+01:00",
     ["2025-03-30T04:00:00+02:00", "2025-03-30T04:15:00+02:00"]),
    # America/New_York: 2025-03-09 02:00 -> 03:00; 2025-11-02 02:00 -> 01:00.
    ("America/New_York", "30 2 * * *", "2025-03-08T12:00:00-05:00",
     ["2025-03-09T03:00:00-04:00", "2025-03-10T02:30:00-04:00"]),
    ("America/New_York", "30 1 * * *", "2025-11-01T12:00:00-04:00",
     ["2025-11-02T01:30:00-04:00", "2025-11-03T01:30:00-05:00"]),
    ("America/New_York", "*/30 * * * *", "2025-03-09T01:15:00-05:00",
     ["2025-03-09T01:30:00-05:00", "2025-03-09T03:00:00-04:00", "2025-03-09T03:30:00-04:00"]),
    ("America/New_York", "*/30 * * * *", "2025-11-02T00:45:00-04:00",
     ["2025-11-02T01:00:00-04:00", "2025-11-02T01:30:00-04:00", "2025-11-02T01:00:00-05:00",
      "2025-11-02T01:30:00-05:00", "2025-11-02T02:00:00-05:00"]),
    # Australia/Lord_Howe: 2025-04-06 02:00 -> 01:30; 2025-10-05 02:00 -> 02:30.
    ("Australia/Lord_Howe", "45 1 * * *", "2025-04-05T12:00:00+11:00",
     ["2025-04-06T01:45:00+11:00", "2025-04-07T01:45:00+10:30"]),
    ("Australia/Lord_Howe", "15 2 * * *", "2025-10-04T12:00:00+10:30",
     ["2025-10-05T02:30:00+11:00", "2025-10-06T02:15:00+11:00"]),
    ("Australia/Lord_Howe", "*/20 * * * *", "2025-04-06T01:10:00+11:00",
     ["2025-04-06T01:20:00+11:00", "2025-04-06T01:40:00+11:00", "2025-04-06T01:40:00+10:30",
      "2025-04-06T02:00:00+10:30", "2025-04-06T02:20:00+10:30"]),
    ("Australia/Lord_Howe", "*/20 * * * *", "2025-10-05T01:30:00+10:30",
     ["2025-10-05T01:40:00+10:30", "2025-10-05T02:40:00+11:00", "2025-10-05T03:00:00+11:00"]),
]  # fmt: skip


@pytest.mark.parametrize(("zone", "expression", "start", "expected"), DST_CASES)
def test_cron_follows_the_dst_rules(
    zone: str, expression: str, start: str, expected: list[str]
) -> None:
    found = occurrences(cron(expression, zone), at(start), at(start), len(expected))
    assert iso(found) == expected
    stamps = [t.timestamp() for t in found]
    assert stamps == sorted(set(stamps))


CALENDAR_DST_CASES = [
    ("Europe/Berlin", "2025-03-29T02:30:00+01:00",
     ["2025-03-29T02:30:00+01:00", "2025-03-30T03:00:00+02:00", "2025-03-31T02:30:00+02:00"]),
    ("Europe/Berlin", "2025-10-25T02:30:00+02:00",
     ["2025-10-25T02:30:00+02:00", "2025-10-26T02:30:00+02:00", "2025-10-27T02:30:00+01:00"]),
    ("America/New_York", "2025-03-08T02:30:00-05:00",
     ["2025-03-08T02:30:00-05:00", "2025-03-09T03:00:00-04:00", "2025-03-10T02:30:00-04:00"]),
    ("America/New_York", "2025-11-01T01:30:00-04:00",
     ["2025-11-01T01:30:00-04:00", "2025-11-02T01:30:00-04:00", "2025-11-03T01:30:00-05:00"]),
    ("Australia/Lord_Howe", "2025-10-04T02:15:00+10:30",
     ["2025-10-04T02:15:00+10:30", "2025-10-05T02:30:00+11:00", "2025-10-06T02:15:00+11:00"]),
    ("Australia/Lord_Howe", "2025-04-05T01:45:00+11:00",
     ["2025-04-05T01:45:00+11:00", "2025-04-06T01:45:00+11:00", "2025-04-07T01:45:00+10:30"]),
]  # fmt: skip


@pytest.mark.parametrize(("zone", "start", "expected"), CALENDAR_DST_CASES)
def test_daily_follows_the_fixed_hour_dst_rules(zone: str, start: str, expected: list[str]) -> None:
    assert listed(Recurrence(K.DAILY, timezone=zone), start, 3) == expected


def test_fixed_hour_time_in_repeated_hour_runs_once_even_from_its_second_instant() -> None:
    nightly = cron("30 2 * * *", "Europe/Berlin")
    first_instant = at("2025-10-26T02:30:00+02:00")
    second_instant = at("2025-10-26T02:30:00+01:00")
    following = "2025-10-27T02:30:00+01:00"
    assert next_occurrence(nightly, first_instant, first_instant).isoformat() == following  # type: ignore[union-attr]
    assert next_occurrence(nightly, first_instant, second_instant).isoformat() == following  # type: ignore[union-attr]


def test_wildcard_hour_from_inside_repeated_hour_still_sees_the_second_pass() -> None:
    # 02:10 first pass: 02:05 of the second pass (an hour later in real time) is next.
    hourly_at_five = cron("5 * * * *", "Europe/Berlin")
    after = at("2025-10-26T02:10:00+02:00")
    assert next_occurrence(hourly_at_five, after, after).isoformat() == "2025-10-26T02:05:00+01:00"  # type: ignore[union-attr]


def test_fixed_hour_classification() -> None:
    assert is_fixed_hour(cron("30 2 * * *"))
    assert is_fixed_hour(cron("0 0-23 * * *"))
    assert is_fixed_hour(cron("@daily"))
    assert not is_fixed_hour(cron("@hourly"))
    assert not is_fixed_hour(cron("*/15 */2 * * *"))
    assert is_fixed_hour(Recurrence(K.MONTHLY))
    assert not is_fixed_hour(Recurrence(K.HOURLY))


def test_results_carry_the_zone_offset_and_compare_as_instants() -> None:
    found = first_occurrence(cron("0 9 * * *", "Asia/Kolkata"), at("2025-01-01T00:00:00Z"))
    assert found is not None
    assert found.utcoffset() == timedelta(hours=5, minutes=30)
    assert found.astimezone(UTC) == at("2025-01-01T03:30:00Z")
    # The two passes of Berlin's repeated hour must order by real time.
    first_pass, second_pass = occurrences(
        cron("5 2 * * *".replace("5 2", "5 *"), "Europe/Berlin"),
        at("2025-10-26T00:00:00Z"),
        at("2025-10-26T00:00:00Z"),
        2,
    )
    assert first_pass < second_pass
    assert first_pass.isoformat() == "2025-10-26T02:05:00+02:00"
    assert second_pass.isoformat() == "2025-10-26T02:05:00+01:00"
