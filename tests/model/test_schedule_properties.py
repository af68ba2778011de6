"""Hypothesis properties of the recurrence engine over random zones, expressions and starts."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, reject, settings
from hypothesis import strategies as st

from nexus_schedd.errors import InvalidSpec
from nexus_schedd.model import Recurrence, RecurrenceKind
from nexus_schedd.model.schedule import next_occurrence, occurrences, preview
from nexus_schedd.model.times import localize, resolve_zone
from tests.model.cron_oracle import Oracle, reference_occurrences

IANA_ZONES = [
    "UTC",
    "Europe/Berlin",
    "Europe/London",
    "America/New_York",
    "America/Sao_Paulo",
    "America/Santiago",
    "Australia/Lord_Howe",
    "Pacific/Chatham",
    "Asia/Kolkata",
    "America/Havana",
    "Pacific/Apia",
    "Africa/Casablanca",
    "Europe/Dublin",
]
ZONES = [*IANA_ZONES, "+05:30", "-03:30"]
PROPERTY_SETTINGS = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
COUNT = 20
# The oracle walks every minute of the window: a day and two hours keeps an example
# cheap (croniter itself, at ~0.3 ms a match, is the slower side), and the
# examples fewer than elsewhere.
WINDOW = timedelta(hours=26)
ORACLE_SETTINGS = settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


def _field(low: int, high: int) -> st.SearchStrategy[str]:
    value = st.integers(low, high)
    return st.one_of(
        st.just("*"),
        st.integers(2, max(2, (high - low) // 2)).map(lambda step: f"*/{step}"),
        value.map(str),
        st.lists(value, min_size=2, max_size=3, unique=True).map(
            lambda values: ",".join(map(str, sorted(values)))
        ),
        st.tuples(value, value).map(lambda pair: f"{min(pair)}-{max(pair)}"),
    )


_DAY_OF_MONTH = st.one_of(
    _field(1, 28),
    st.just("L"),
    st.integers(1, 28).map(lambda day: f"{day}W"),
    st.tuples(st.integers(1, 28), st.just("L")).map(lambda p: f"{p[0]},{p[1]}"),
)
_DAY_OF_WEEK = st.one_of(
    _field(0, 7),
    st.sampled_from(["7", "5-7", "mon-fri", "sun"]),
    st.tuples(st.integers(0, 7), st.integers(1, 4)).map(lambda p: f"{p[0]}#{p[1]}"),
    st.integers(0, 6).map(lambda day: f"L{day}"),
)


@st.composite
def cron_expressions(draw: st.DrawFn) -> str:
    """Five-field expressions over every day-field form of SPEC section 3. Days of
    month stay <= 28 so that no expression is refused as never firing."""
    minute = draw(_field(0, 59))
    hour = draw(_field(0, 23))
    day = draw(_DAY_OF_MONTH)
    month = draw(st.one_of(st.just("*"), st.just("*"), _field(1, 12)))
    weekday = draw(_DAY_OF_WEEK)
    return " ".join([minute, hour, day, month, weekday])


# Starts spread over the years, and starts in the months where most zones change.
starts = st.one_of(
    st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2037, 12, 31)),
    st.builds(
        datetime,
        st.integers(2015, 2035),
        st.sampled_from([3, 4, 9, 10, 11]),
        st.integers(1, 28),
        st.integers(0, 23),
        st.integers(0, 59),
    ),
).map(lambda naive: naive.replace(tzinfo=UTC))


def _near_transition(zone_name: str, start: datetime, lead_minutes: int) -> datetime:
    """``lead_minutes`` before the zone's next offset change after ``start`` (if any
    within a year), so that the occurrences cross a DST gap or repeated hour."""
    zone = resolve_zone(zone_name)
    offset = start.astimezone(zone).utcoffset()
    low = start
    for _ in range(400):
        high = low + timedelta(days=1)
        if high.astimezone(zone).utcoffset() != offset:
            break
        low = high
    else:
        return start
    while high - low > timedelta(seconds=1):
        middle = low + (high - low) / 2
        if middle.astimezone(zone).utcoffset() == offset:
            low = middle
        else:
            high = middle
    return high.replace(microsecond=0) - timedelta(minutes=lead_minutes)


def _series(recurrence: Recurrence, start: datetime, count: int) -> list[datetime]:
    """``count`` occurrences after ``start``; an expression that never fires is
    not an example of these properties (its refusal is pinned below)."""
    try:
        return occurrences(recurrence, start, start, count)
    except InvalidSpec as exc:
        if "never fires" not in exc.reason:
            raise
        reject()


def test_a_day_of_month_starting_with_a_star_intersects_with_the_weekday() -> None:
    """Vixie cron: ``*/11`` does not restrict, so it combines with ``L4`` by AND;
    days 1, 12, 23 are never a month's last Thursday, so the expression never
    fires (the hypothesis strategies generate such expressions now and then)."""
    recurrence = Recurrence(
        RecurrenceKind.CRON, cron="38,41 11-22 */11 7,9 L4", timezone="Australia/Lord_Howe"
    )
    start = datetime(2033, 5, 22, 19, 46, 35, tzinfo=UTC)
    with pytest.raises(InvalidSpec, match="never fires"):
        occurrences(recurrence, start, start, 1)
    either = Recurrence(RecurrenceKind.CRON, cron="38 11 1,12,23 7,9 L4", timezone="UTC")
    assert occurrences(either, start, start, 2) == [
        datetime(2033, 7, 1, 11, 38, tzinfo=UTC),
        datetime(2033, 7, 12, 11, 38, tzinfo=UTC),
    ]


def _within(recurrence: Recurrence, after: datetime, until: datetime) -> list[datetime]:
    """The engine's occurrences in (after, until] (none for an expression that
    never fires: the oracle must then find none either)."""
    found: list[datetime] = []
    try:
        series = occurrences(recurrence, after, after, 5000)
    except InvalidSpec as exc:
        if "never fires" not in exc.reason:
            raise
        return found
    for instant in series:
        if instant > until:
            break
        found.append(instant)
    return found


# A bound for a loaded machine, not a speed claim: the examples take ~15 s idle.
@pytest.mark.timeout(300)
@ORACLE_SETTINGS
@given(
    expression=cron_expressions(),
    zone=st.sampled_from(IANA_ZONES),
    start=starts,
    lead=st.one_of(st.none(), st.integers(0, 180)),
)
def test_cron_occurrences_equal_the_minute_by_minute_oracle(
    expression: str, zone: str, start: datetime, lead: int | None
) -> None:
    if lead is not None:
        start = _near_transition(zone, start, lead)
    recurrence = Recurrence(RecurrenceKind.CRON, cron=expression, timezone=zone)
    found = _within(recurrence, start, start + WINDOW)
    expected = reference_occurrences(expression, zone, start, start + WINDOW)
    assert [t.astimezone(UTC) for t in found] == expected


@PROPERTY_SETTINGS
@given(
    expression=cron_expressions(),
    zone=st.sampled_from(ZONES),
    start=starts,
    lead=st.one_of(st.none(), st.integers(0, 180)),
)
def test_cron_occurrences_strictly_increase_and_respect_gaps_and_repeats(
    expression: str, zone: str, start: datetime, lead: int | None
) -> None:
    if lead is not None:
        start = _near_transition(zone, start, lead)
    recurrence = Recurrence(RecurrenceKind.CRON, cron=expression, timezone=zone)
    found = _series(recurrence, start, COUNT)
    assert len(found) == COUNT
    stamps = [t.timestamp() for t in found]
    assert stamps[0] > start.timestamp()
    assert all(a < b for a, b in itertools.pairwise(stamps))
    local_zone = resolve_zone(zone)
    oracle = Oracle(expression)
    walls = [t.astimezone(local_zone).replace(tzinfo=None) for t in found]
    for instant, wall in zip(found, walls, strict=True):
        # The offset carried is the zone's offset at that instant.
        assert instant.utcoffset() == instant.astimezone(local_zone).utcoffset()
        if not oracle.fixed_hour:
            # Never inside a gap: a real instant whose own local time matches.
            assert oracle.matches(wall)
        else:
            # Never the second pass of a repeated time: fold=0 is the first instant.
            assert wall.replace(tzinfo=local_zone, fold=0).timestamp() == instant.timestamp()
    if oracle.fixed_hour:
        # Never twice for one local time.
        assert len(set(walls)) == len(walls)


@PROPERTY_SETTINGS
@given(
    expression=cron_expressions(),
    zone=st.sampled_from(ZONES),
    start=starts,
    lead=st.integers(0, 180),
    fractions=st.lists(st.floats(0, 1, exclude_max=True), min_size=6, max_size=6),
)
def test_cron_next_occurrence_is_the_same_from_any_point_between_two(
    expression: str, zone: str, start: datetime, lead: int, fractions: list[float]
) -> None:
    start = _near_transition(zone, start, lead)
    recurrence = Recurrence(RecurrenceKind.CRON, cron=expression, timezone=zone)
    series = _series(recurrence, start, len(fractions) + 1)
    for (earlier, later), fraction in zip(itertools.pairwise(series), fractions, strict=False):
        # Rounding to microseconds may reach ``later`` itself: stay before it.
        between = min(earlier + (later - earlier) * fraction, later - timedelta(microseconds=1))
        assert next_occurrence(recurrence, start, between) == later
        assert next_occurrence(recurrence, start, earlier) == later


@PROPERTY_SETTINGS
@given(
    kind=st.sampled_from(
        [
            RecurrenceKind.MINUTELY,
            RecurrenceKind.HOURLY,
            RecurrenceKind.DAILY,
            RecurrenceKind.WEEKLY,
            RecurrenceKind.MONTHLY,
            RecurrenceKind.YEARLY,
        ]
    ),
    interval=st.integers(1, 5),
    zone=st.sampled_from(ZONES),
    anchor=starts,
    lead=st.one_of(st.none(), st.integers(0, 3000)),
    skip=st.integers(0, 60),
    fraction=st.floats(0, 1, exclude_max=True),
)
def test_interval_kinds_never_drift_from_the_anchor(
    kind: RecurrenceKind,
    interval: int,
    zone: str,
    anchor: datetime,
    lead: int | None,
    skip: int,
    fraction: float,
) -> None:
    if lead is not None:
        anchor = _near_transition(zone, anchor, lead)
    recurrence = Recurrence(kind, interval=interval, timezone=zone)
    series = occurrences(recurrence, anchor, anchor, skip + 2, inclusive=True)
    stamps = [t.timestamp() for t in series]
    assert stamps[0] == anchor.timestamp()
    assert all(a < b for a, b in itertools.pairwise(stamps))
    # Jumping straight to a late point gives what stepping reached.
    assert next_occurrence(recurrence, anchor, series[skip]) == series[skip + 1]
    # And from any point between two occurrences.
    between = min(
        series[skip] + (series[skip + 1] - series[skip]) * fraction,
        series[skip + 1] - timedelta(microseconds=1),
    )
    assert next_occurrence(recurrence, anchor, between) == series[skip + 1]
    local_anchor = anchor.astimezone(resolve_zone(zone))
    for instant in series:
        if kind in (RecurrenceKind.MINUTELY, RecurrenceKind.HOURLY):
            unit = 60 if kind is RecurrenceKind.MINUTELY else 3600
            assert (instant.timestamp() - anchor.timestamp()) % (unit * interval) == 0
        elif instant.replace(tzinfo=None).time() != local_anchor.replace(tzinfo=None).time():
            # Only a DST gap may move the wall-clock time, and only forwards to its end.
            wall = local_anchor.replace(tzinfo=None).time()
            shifted = localize(
                instant.replace(tzinfo=None).replace(
                    hour=wall.hour,
                    minute=wall.minute,
                    second=wall.second,
                    microsecond=wall.microsecond,
                ),
                resolve_zone(zone),
            )
            assert shifted == instant
        if kind is RecurrenceKind.MONTHLY or kind is RecurrenceKind.YEARLY:
            assert instant.day == min(local_anchor.day, _month_length(instant.year, instant.month))


def _month_length(year: int, month: int) -> int:
    import calendar

    return calendar.monthrange(year, month)[1]


@PROPERTY_SETTINGS
@given(
    kind=st.sampled_from(
        [RecurrenceKind.DAILY, RecurrenceKind.WEEKLY, RecurrenceKind.MONTHLY, RecurrenceKind.YEARLY]
    ),
    zone=st.sampled_from(IANA_ZONES),
    start=starts,
    fraction=st.floats(0, 1, exclude_max=True),
)
def test_a_first_occurrence_asked_for_inside_a_gap_moves_alone(
    kind: RecurrenceKind, zone: str, start: datetime, fraction: float
) -> None:
    local_zone = resolve_zone(zone)
    transition = _near_transition(zone, start, 0)
    before = (transition - timedelta(seconds=1)).astimezone(local_zone).utcoffset()
    after = transition.astimezone(local_zone).utcoffset()
    assert before is not None and after is not None
    if after <= before:
        return  # a repeat (or no change within a year): no gap to ask into
    gap_start = (transition + before).replace(tzinfo=None)
    minutes = int((after - before).total_seconds() // 60)
    wanted = gap_start + timedelta(minutes=int(minutes * fraction))
    first = localize(wanted, local_zone)
    found = preview(Recurrence(kind, timezone=zone), first, 4, wanted)
    # The first runs at the first instant after the gap, exactly once ...
    assert found[0].timestamp() == transition.timestamp()
    assert all(a < b for a, b in itertools.pairwise(found))
    # ... and every later one keeps the wall-clock time asked for (moved only
    # when a gap swallows it too).
    for instant in found[1:]:
        local = instant.astimezone(local_zone).replace(tzinfo=None)
        asked = datetime.combine(local.date(), wanted.time())
        assert localize(asked, local_zone).timestamp() == instant.timestamp()
