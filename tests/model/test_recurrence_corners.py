"""Every corner SPEC section 3 decides, with the zones that exercise it.

Each expected list is written by hand from the tz database transitions
(``zdump -v``, quoted above each group) or from a calendar, never from the code
under test; every cron case is also checked against the minute-by-minute
oracle in :mod:`tests.model.cron_oracle`, a second implementation.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

import pytest

from nexus_schedd.model import Job, JobDefaults, JobSpec, Recurrence, RecurrenceKind
from nexus_schedd.model.schedule import occurrences, preview
from nexus_schedd.model.times import local_wall_time, parse_instant, resolve_zone
from tests.model.cron_oracle import reference_occurrences

K = RecurrenceKind


def at(text: str) -> datetime:
    return parse_instant(text)


def cron_listed(expression: str, zone: str, start: str, count: int) -> list[str]:
    begin = at(start)
    recurrence = Recurrence(K.CRON, cron=expression, timezone=zone)
    return [t.isoformat() for t in occurrences(recurrence, begin, begin, count)]


def oracle_listed(expression: str, zone: str, start: str, expected: list[str]) -> list[str]:
    """The oracle's occurrences from ``start`` up to the last expected one, in the
    offsets of ``expected`` (so the lists compare as text)."""
    last = at(expected[-1])
    found = reference_occurrences(expression, zone, at(start), last)
    return [t.astimezone(at(e).tzinfo).isoformat() for t, e in zip(found, expected, strict=False)]


def check_cron(expression: str, zone: str, start: str, expected: list[str]) -> None:
    assert cron_listed(expression, zone, start, len(expected)) == expected
    if zone.startswith(("+", "-")):
        return  # the oracle reads IANA zones; fixed offsets have no transitions
    five_fields = {"@daily": "0 0 * * *"}.get(expression, expression)
    assert oracle_listed(five_fields, zone, start, expected) == expected


def dates(expression: str, start: str, count: int) -> list[str]:
    return [t[:10] for t in cron_listed(expression, "UTC", start, count)]


# --- day fields: OR, AND, L / # / W, day 7 ------------------------------------------


@pytest.mark.parametrize(
    ("expression", "start", "expected"),
    [
        # The 1st, the 15th and every third Friday (Jan 17, Feb 21 in 2025).
        (
            "0 0 1,15 * 5#3",
            "2024-12-31T12:00:00Z",
            ["2025-01-01", "2025-01-15", "2025-01-17", "2025-02-01", "2025-02-15", "2025-02-21"],
        ),
        # Once refused as never firing: the 1st or the third Friday.
        ("0 0 1 * 5#3", "2024-12-31T12:00:00Z", ["2025-01-01", "2025-01-17", "2025-02-01"]),
        # L (last day) or any Friday; April 2025 ends on a Wednesday.
        (
            "0 0 L * 5",
            "2025-04-01T00:00:00Z",
            ["2025-04-04", "2025-04-11", "2025-04-18", "2025-04-25", "2025-04-30", "2025-05-02"],
        ),
        # 15W (Sunday June 15 -> Monday 16) or any Tuesday.
        (
            "0 0 15W * 2",
            "2025-06-01T00:00:00Z",
            ["2025-06-03", "2025-06-10", "2025-06-16", "2025-06-17", "2025-06-24"],
        ),
        # The 1st or the last Friday (L5).
        (
            "0 0 1 * L5",
            "2024-12-31T12:00:00Z",
            ["2025-01-01", "2025-01-31", "2025-02-01", "2025-02-28"],
        ),
    ],
)
def test_l_hash_and_w_forms_restrict_so_the_day_fields_combine_with_or(
    expression: str, start: str, expected: list[str]
) -> None:
    assert dates(expression, start, len(expected)) == expected
    found = reference_occurrences(expression, "UTC", at(start), at(expected[-1] + "T00:00:00Z"))
    assert [t.date().isoformat() for t in found] == expected


@pytest.mark.parametrize(
    ("expression", "start", "expected"),
    [
        # Odd days that are Mondays (Mondays of Jan 2025: 6, 13, 20, 27).
        (
            "0 0 */2 * 1",
            "2025-01-01T00:00:00Z",
            ["2025-01-13", "2025-01-27", "2025-02-03", "2025-02-17", "2025-03-03"],
        ),
        # The 1st when it is a Sunday, Tuesday, Thursday or Saturday (*/2 = 0,2,4,6).
        (
            "0 0 1 * */2",
            "2025-01-01T00:00:00Z",
            ["2025-02-01", "2025-03-01", "2025-04-01", "2025-05-01", "2025-06-01", "2025-07-01"],
        ),
        # "*" in one field: only the other restricts.
        ("0 0 13 * *", "2025-06-01T00:00:00Z", ["2025-06-13", "2025-07-13"]),
        ("0 0 * * 5", "2025-06-01T00:00:00Z", ["2025-06-06", "2025-06-13"]),
    ],
)
def test_a_day_field_beginning_with_a_star_combines_with_and(
    expression: str, start: str, expected: list[str]
) -> None:
    assert dates(expression, start, len(expected)) == expected
    found = reference_occurrences(expression, "UTC", at(start), at(expected[-1] + "T00:00:00Z"))
    assert [t.date().isoformat() for t in found] == expected


def test_both_day_fields_restricted_combine_with_or() -> None:
    # Sundays of January 2025 (5, 12, 19, 26) or the 13th (a Monday); 7 is Sunday.
    expected = ["2025-01-05", "2025-01-12", "2025-01-13", "2025-01-19", "2025-01-26"]
    assert dates("0 0 13 * 7", "2025-01-01T00:00:00Z", 5) == expected
    assert dates("0 0 13 * 0", "2025-01-01T00:00:00Z", 5) == expected


@pytest.mark.parametrize("sunday", ["0", "7", "sun", "7#1", "6-7"])
def test_day_of_week_0_and_7_are_both_sunday(sunday: str) -> None:
    found = cron_listed(f"0 9 * * {sunday}", "Europe/Berlin", "2025-06-01T00:00:00+02:00", 6)
    weekdays = {datetime.fromisoformat(t).strftime("%a") for t in found}
    assert "Sun" in weekdays
    assert weekdays <= {"Sat", "Sun"}
    if sunday in ("0", "7", "sun"):
        assert [t[:10] for t in found[:2]] == ["2025-06-01", "2025-06-08"]


@pytest.mark.parametrize(
    ("expression", "start", "expected"),
    [
        # Saturday the 15th -> Friday 14th (March and November 2025); Sunday 15
        # June -> Monday 16th.
        ("0 0 15W * *", "2025-03-01T00:00:00Z", ["2025-03-14", "2025-04-15", "2025-05-15", "2025-06-16"]),
        # Saturday the 1st -> Monday the 3rd (never back into the previous month).
        ("0 0 1W * *", "2025-01-15T00:00:00Z", ["2025-02-03", "2025-03-03", "2025-04-01"]),
    ],
)  # fmt: skip
def test_w_is_the_nearest_weekday_within_the_month(
    expression: str, start: str, expected: list[str]
) -> None:
    assert dates(expression, start, len(expected)) == expected


def test_w_on_a_month_ending_sunday_moves_back_to_friday() -> None:
    # 2025-08-31 is a Sunday: 31W -> Friday 29 (months without a 31st have no 31W).
    assert dates("0 0 31W 8 *", "2025-01-01T00:00:00Z", 1) == ["2025-08-29"]
    found = reference_occurrences(
        "0 0 31W 8 *", "UTC", at("2025-08-01T00:00:00Z"), at("2025-09-01T00:00:00Z")
    )
    assert [t.date().isoformat() for t in found] == ["2025-08-29"]


# --- DST: spring forward ----------------------------------------------------------------
# zdump -v:
#   Europe/Berlin       2025-03-30 01:59:59 CET    -> 03:00:00 CEST  (02:00-02:59 skipped)
#   America/New_York    2025-03-09 01:59:59 EST    -> 03:00:00 EDT
#   Australia/Lord_Howe 2025-10-05 01:59:59 +1030  -> 02:30:00 +11   (30 minutes)
#   Africa/Casablanca   2025-04-06 01:59:59 +00    -> 03:00:00 +01   (after Ramadan)
#   Europe/Dublin       2025-03-30 00:59:59 GMT    -> 02:00:00 IST   (negative DST in tzdata)
#   America/Havana      2025-03-08 23:59:59 CST    -> 2025-03-09 01:00:00 CDT (midnight)
#   America/Santiago    2025-09-06 23:59:59 -04    -> 2025-09-07 01:00:00 -03 (midnight)
#   Pacific/Apia        2011-12-29 23:59:59 -10    -> 2011-12-31 00:00:00 +14 (no Dec 30)

GAP_CASES = [
    ("Europe/Berlin", "30 2 * * *", "2025-03-29T12:00:00+01:00",
     ["2025-03-30T03:00:00+02:00", "2025-03-31T02:30:00+02:00"]),
    ("America/New_York", "30 2 * * *", "2025-03-08T12:00:00-05:00",
     ["2025-03-09T03:00:00-04:00", "2025-03-10T02:30:00-04:00"]),
    ("Australia/Lord_Howe", "15 2 * * *", "2025-10-04T12:00:00+10:30",
     ["2025-10-05T02:30:00+11:00", "2025-10-06T02:15:00+11:00"]),
    ("Africa/Casablanca", "30 2 * * *", "2025-04-05T12:00:00+00:00",
     ["2025-04-06T03:00:00+01:00", "2025-04-07T02:30:00+01:00"]),
    ("Europe/Dublin", "30 1 * * *", "2025-03-29T12:00:00+00:00",
     ["2025-03-30T02:00:00+01:00", "2025-03-31T01:30:00+01:00"]),
    # The midnight gaps: 00:30 and 00:00 do not exist that day.
    ("America/Havana", "30 0 * * *", "2025-03-08T12:00:00-05:00",
     ["2025-03-09T01:00:00-04:00", "2025-03-10T00:30:00-04:00"]),
    ("America/Havana", "@daily", "2025-03-08T12:00:00-05:00",
     ["2025-03-09T01:00:00-04:00", "2025-03-10T00:00:00-04:00"]),
    ("America/Santiago", "0 0 * * *", "2025-09-06T12:00:00-04:00",
     ["2025-09-07T01:00:00-03:00", "2025-09-08T00:00:00-03:00"]),
    # The whole skipped day: Dec 30's 09:00 runs at the first instant after
    # the gap, which is on the next date; Dec 31 keeps its own 09:00.
    ("Pacific/Apia", "0 9 * * *", "2011-12-29T00:00:00-10:00",
     ["2011-12-29T09:00:00-10:00", "2011-12-31T00:00:00+14:00", "2011-12-31T09:00:00+14:00",
      "2012-01-01T09:00:00+14:00"]),
    ("Pacific/Apia", "0 9 30 12 *", "2011-12-01T00:00:00-10:00",
     ["2011-12-31T00:00:00+14:00", "2012-12-30T09:00:00+14:00"]),
]  # fmt: skip


@pytest.mark.parametrize(("zone", "expression", "start", "expected"), GAP_CASES)
def test_fixed_hour_time_in_a_gap_runs_once_at_the_first_instant_after_it(
    zone: str, expression: str, start: str, expected: list[str]
) -> None:
    check_cron(expression, zone, start, expected)


SHIFT_ONTO_MATCH_CASES = [
    # 02:00 and 02:30 shift to 03:00, which matches anyway: one run at 03:00.
    ("Europe/Berlin", "0,30 2,3 * * *", "2025-03-30T00:00:00+01:00",
     ["2025-03-30T03:00:00+02:00", "2025-03-30T03:30:00+02:00", "2025-03-31T02:00:00+02:00"]),
    ("Africa/Casablanca", "0 2,3 * * *", "2025-04-06T00:00:00+00:00",
     ["2025-04-06T03:00:00+01:00", "2025-04-07T02:00:00+01:00"]),
    # 02:15 shifts to 02:30, the first instant after Lord Howe's 30-minute gap,
    # which the expression names anyway.
    ("Australia/Lord_Howe", "15,30 2 * * *", "2025-10-05T00:00:00+10:30",
     ["2025-10-05T02:30:00+11:00", "2025-10-06T02:15:00+11:00", "2025-10-06T02:30:00+11:00"]),
    # Havana: 00:00 and 00:30 both shift to 01:00, which matches too.
    ("America/Havana", "0,30 0,1 * * *", "2025-03-08T23:45:00-05:00",
     ["2025-03-09T01:00:00-04:00", "2025-03-09T01:30:00-04:00", "2025-03-10T00:00:00-04:00"]),
]  # fmt: skip


@pytest.mark.parametrize(("zone", "expression", "start", "expected"), SHIFT_ONTO_MATCH_CASES)
def test_a_shifted_time_landing_on_a_matching_instant_runs_once(
    zone: str, expression: str, start: str, expected: list[str]
) -> None:
    check_cron(expression, zone, start, expected)


# --- DST: fall back -----------------------------------------------------------------
# zdump -v:
#   Europe/Dublin       2025-10-26 01:59:59 IST    -> 01:00:00 GMT
#   Africa/Casablanca   2025-02-23 02:59:59 +01    -> 02:00:00 +00   (before Ramadan)
#   America/Havana      2025-11-02 00:59:59 CDT    -> 00:00:00 CST   (midnight)
#   America/Santiago    2025-04-05 23:59:59 -03    -> 23:00:00 -04   (into midnight)
#   Australia/Lord_Howe 2025-04-06 01:59:59 +11    -> 01:30:00 +1030 (30 minutes)

REPEAT_CASES = [
    ("Europe/Berlin", "30 2 * * *", "2025-10-25T12:00:00+02:00",
     ["2025-10-26T02:30:00+02:00", "2025-10-27T02:30:00+01:00"]),
    ("America/New_York", "30 1 * * *", "2025-11-01T12:00:00-04:00",
     ["2025-11-02T01:30:00-04:00", "2025-11-03T01:30:00-05:00"]),
    ("Europe/Dublin", "30 1 * * *", "2025-10-25T12:00:00+01:00",
     ["2025-10-26T01:30:00+01:00", "2025-10-27T01:30:00+00:00"]),
    ("Africa/Casablanca", "30 2 * * *", "2025-02-22T12:00:00+01:00",
     ["2025-02-23T02:30:00+01:00", "2025-02-24T02:30:00+00:00"]),
    ("America/Havana", "30 0 * * *", "2025-11-01T12:00:00-04:00",
     ["2025-11-02T00:30:00-04:00", "2025-11-03T00:30:00-05:00"]),
    ("America/Santiago", "30 23 * * *", "2025-04-05T12:00:00-03:00",
     ["2025-04-05T23:30:00-03:00", "2025-04-06T23:30:00-04:00"]),
    ("Australia/Lord_Howe", "45 1 * * *", "2025-04-05T12:00:00+11:00",
     ["2025-04-06T01:45:00+11:00", "2025-04-07T01:45:00+10:30"]),
]  # fmt: skip


@pytest.mark.parametrize(("zone", "expression", "start", "expected"), REPEAT_CASES)
def test_fixed_hour_time_that_occurs_twice_runs_once_at_its_first_instant(
    zone: str, expression: str, start: str, expected: list[str]
) -> None:
    check_cron(expression, zone, start, expected)


WILDCARD_CASES = [
    # Both passes of Dublin's repeated 01:xx, in real-time order.
    ("Europe/Dublin", "*/30 * * * *", "2025-10-26T01:10:00+01:00",
     ["2025-10-26T01:30:00+01:00", "2025-10-26T01:00:00+00:00", "2025-10-26T01:30:00+00:00",
      "2025-10-26T02:00:00+00:00"]),
    # Nothing in Havana's missing midnight hour.
    ("America/Havana", "*/30 * * * *", "2025-03-08T23:40:00-05:00",
     ["2025-03-09T01:00:00-04:00", "2025-03-09T01:30:00-04:00"]),
    # Nothing on Apia's missing day.
    ("Pacific/Apia", "0 */8 * * *", "2011-12-29T12:00:00-10:00",
     ["2011-12-29T16:00:00-10:00", "2011-12-31T00:00:00+14:00", "2011-12-31T08:00:00+14:00"]),
    ("Africa/Casablanca", "*/30 * * * *", "2025-04-06T01:40:00+00:00",
     ["2025-04-06T03:00:00+01:00", "2025-04-06T03:30:00+01:00"]),
    ("Africa/Casablanca", "30 * * * *", "2025-02-23T01:00:00+01:00",
     ["2025-02-23T01:30:00+01:00", "2025-02-23T02:30:00+01:00", "2025-02-23T02:30:00+00:00",
      "2025-02-23T03:30:00+00:00"]),
    ("America/Santiago", "0 * * * *", "2025-04-05T22:30:00-03:00",
     ["2025-04-05T23:00:00-03:00", "2025-04-05T23:00:00-04:00", "2025-04-06T00:00:00-04:00"]),
    # Lord Howe's repeated half hour 01:30-01:59.
    ("Australia/Lord_Howe", "*/20 * * * *", "2025-04-06T01:10:00+11:00",
     ["2025-04-06T01:20:00+11:00", "2025-04-06T01:40:00+11:00", "2025-04-06T01:40:00+10:30",
      "2025-04-06T02:00:00+10:30"]),
]  # fmt: skip


@pytest.mark.parametrize(("zone", "expression", "start", "expected"), WILDCARD_CASES)
def test_wildcard_hour_fires_at_every_real_instant_whose_local_time_matches(
    zone: str, expression: str, start: str, expected: list[str]
) -> None:
    check_cron(expression, zone, start, expected)


@pytest.mark.parametrize(
    ("zone", "expression", "start", "expected"),
    [
        ("-03:30", "30 23 * * *", "2025-03-08T12:00:00Z",
         ["2025-03-08T23:30:00-03:30", "2025-03-09T23:30:00-03:30"]),
        # Fixed offsets never change: no gap on Berlin's or New York's DST days.
        ("+01:00", "30 2 * * *", "2025-03-29T12:00:00Z",
         ["2025-03-30T02:30:00+01:00", "2025-03-31T02:30:00+01:00"]),
        ("-05:00", "*/30 1 * * *", "2025-11-02T00:00:00-05:00",
         ["2025-11-02T01:00:00-05:00", "2025-11-02T01:30:00-05:00", "2025-11-03T01:00:00-05:00"]),
    ],
)  # fmt: skip
def test_fixed_offsets_have_no_gaps_or_repeats(
    zone: str, expression: str, start: str, expected: list[str]
) -> None:
    check_cron(expression, zone, start, expected)


# --- calendar kinds: only the shifted occurrence moves ------------------------------------


FIRST_IN_GAP_CASES = [
    (K.DAILY, "Europe/Berlin", "2025-03-30T02:30",
     ["2025-03-30T03:00:00+02:00", "2025-03-31T02:30:00+02:00", "2025-04-01T02:30:00+02:00"]),
    (K.WEEKLY, "America/New_York", "2025-03-09T02:15",
     ["2025-03-09T03:00:00-04:00", "2025-03-16T02:15:00-04:00", "2025-03-23T02:15:00-04:00"]),
    (K.DAILY, "Australia/Lord_Howe", "2025-10-05T02:10",
     ["2025-10-05T02:30:00+11:00", "2025-10-06T02:10:00+11:00", "2025-10-07T02:10:00+11:00"]),
    # Berlin skipped 02:00-03:00 on 2024-03-31: monthly keeps the 31st and 02:30.
    (K.MONTHLY, "Europe/Berlin", "2024-03-31T02:30",
     ["2024-03-31T03:00:00+02:00", "2024-04-30T02:30:00+02:00", "2024-05-31T02:30:00+02:00"]),
    (K.YEARLY, "Europe/Berlin", "2025-03-30T02:30",
     ["2025-03-30T03:00:00+02:00", "2026-03-30T02:30:00+02:00", "2027-03-30T02:30:00+02:00"]),
    (K.DAILY, "America/Havana", "2025-03-09T00:30",
     ["2025-03-09T01:00:00-04:00", "2025-03-10T00:30:00-04:00", "2025-03-11T00:30:00-04:00"]),
    (K.DAILY, "Pacific/Apia", "2011-12-30T09:00",
     ["2011-12-31T00:00:00+14:00", "2011-12-31T09:00:00+14:00", "2012-01-01T09:00:00+14:00"]),
    (K.DAILY, "Africa/Casablanca", "2025-04-06T02:30",
     ["2025-04-06T03:00:00+01:00", "2025-04-07T02:30:00+01:00", "2025-04-08T02:30:00+01:00"]),
]  # fmt: skip


@pytest.mark.parametrize(("kind", "zone", "start", "expected"), FIRST_IN_GAP_CASES)
def test_first_occurrence_in_a_gap_moves_alone_the_schedule_keeps_its_wall_time(
    kind: K, zone: str, start: str, expected: list[str]
) -> None:
    recurrence = Recurrence(kind, timezone=zone)
    begin = parse_instant(start, resolve_zone(zone))
    found = preview(recurrence, begin, len(expected), local_wall_time(start))
    assert [t.isoformat() for t in found] == expected


@pytest.mark.parametrize(("kind", "zone", "start", "expected"), FIRST_IN_GAP_CASES)
def test_a_job_added_inside_a_gap_keeps_its_wall_time_through_a_store_round_trip(
    kind: K, zone: str, start: str, expected: list[str]
) -> None:
    spec = JobSpec.from_json(
        {"job_type": "log", "run_at": start, "recurrence": {"kind": kind.value, "timezone": zone}}
    )
    job = Job.create(spec, at("2000-01-01T00:00:00Z"), JobDefaults())
    seen = [job.scheduled_for]
    for _ in expected[1:]:
        # The protocol's JSON stands in for the store: only instants survive.
        job = Job.from_json(job.to_json())
        following = job.next_run_time()
        assert following is not None
        job = replace(job, scheduled_for=following, run_at=following)
        seen.append(following)
    local = resolve_zone(zone)
    assert [t.astimezone(local).isoformat() for t in seen if t is not None] == [
        at(e).astimezone(local).isoformat() for e in expected
    ]


def test_a_run_at_with_an_offset_or_outside_a_gap_anchors_on_itself() -> None:
    daily = {"kind": "daily", "timezone": "Europe/Berlin"}
    for run_at in ("2025-03-30T03:00", "2025-03-30T03:00:00+02:00", "2025-03-29T02:30"):
        spec = JobSpec.from_json({"job_type": "log", "run_at": run_at, "recurrence": daily})
        assert spec.anchor_at is None
        job = Job.create(spec, at("2000-01-01T00:00:00Z"), JobDefaults())
        assert job.anchor_at == job.run_at


def test_a_local_time_without_offset_means_the_instant_a_run_would_have() -> None:
    berlin = resolve_zone("Europe/Berlin")
    # Timestamps: an aware time inside a repeat never equals one in another zone.
    assert (
        parse_instant("2025-03-30T02:30", berlin).timestamp()
        == at("2025-03-30T03:00:00+02:00").timestamp()
    )
    assert (
        parse_instant("2025-10-26T02:30", berlin).timestamp()
        == at("2025-10-26T02:30:00+02:00").timestamp()
    )
    apia = resolve_zone("Pacific/Apia")
    assert (
        parse_instant("2011-12-30T09:00", apia).timestamp()
        == at("2011-12-31T00:00:00+14:00").timestamp()
    )


def test_daily_across_the_repeat_runs_once_at_the_first_instant() -> None:
    # Dublin's 01:30 occurs twice on 2025-10-26 (IST, then GMT).
    daily = Recurrence(K.DAILY, timezone="Europe/Dublin")
    start = at("2025-10-25T01:30:00+01:00")
    found = [t.isoformat() for t in preview(daily, start, 3)]
    assert found == [
        "2025-10-25T01:30:00+01:00",
        "2025-10-26T01:30:00+01:00",
        "2025-10-27T01:30:00+00:00",
    ]


# --- preview shows the end conditions -------------------------------------------------------


def test_preview_stops_at_max_occurrences_and_ends_at_across_a_dst_change() -> None:
    nightly = Recurrence(K.CRON, cron="30 2 * * *", timezone="Europe/Berlin", max_occurrences=2)
    start = at("2025-03-29T12:00:00+01:00")
    assert [t.isoformat() for t in preview(nightly, start, 10)] == [
        "2025-03-30T03:00:00+02:00",
        "2025-03-31T02:30:00+02:00",
    ]
    until = Recurrence(K.DAILY, timezone="Europe/Berlin", ends_at=at("2025-10-27T02:29:59+01:00"))
    assert [t.isoformat() for t in preview(until, at("2025-10-25T02:30:00+02:00"), 10)] == [
        "2025-10-25T02:30:00+02:00",
        "2025-10-26T02:30:00+02:00",
    ]
    # ends_at exactly on an occurrence includes it.
    until_on = Recurrence(K.HOURLY, ends_at=at("2025-01-01T02:00:00Z"))
    assert len(preview(until_on, at("2025-01-01T00:00:00Z"), 10)) == 3
