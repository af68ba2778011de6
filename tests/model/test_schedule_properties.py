"""Hypothesis properties of the recurrence engine over random zones, expressions and starts."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nexus_schedd.model import Recurrence, RecurrenceKind
from nexus_schedd.model.schedule import next_occurrence, occurrences, parse_cron
from nexus_schedd.model.times import localize, resolve_zone

ZONES = [
    "UTC",
    "Europe/Berlin",
    "Europe/London",
    "America/New_York",
    "America/Sao_Paulo",
    "America/Santiago",
    "Australia/Lord_Howe",
    "Pacific/Chatham",
    "Asia/Kolkata",
    "+05:30",
]
PROPERTY_SETTINGS = settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
COUNT = 20


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


@st.composite
def cron_expressions(draw: st.DrawFn) -> str:
    """Expressions that always fire: days <= 28 (or L), # only with a free day of month."""
    minute = draw(_field(0, 59))
    hour = draw(_field(0, 23))
    day = draw(st.one_of(_field(1, 28), st.just("L")))
    month = draw(st.one_of(st.just("*"), st.just("*"), _field(1, 12)))
    if day == "*":
        weekday = draw(
            st.one_of(
                _field(0, 6),
                st.tuples(st.integers(0, 6), st.integers(1, 4)).map(lambda p: f"{p[0]}#{p[1]}"),
            )
        )
    else:
        weekday = draw(st.one_of(st.just("*"), _field(0, 6)))
    fields = [minute, hour, day, month, weekday]
    if draw(st.integers(0, 5)) == 0:
        fields.append(draw(st.sampled_from(["0", "30", "15,45"])))
    return " ".join(fields)


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


def _reference(expression: str, zone_name: str, after: datetime, last: datetime) -> list[float]:
    """The SPEC rules stated plainly: map every wall-clock match between ``after``
    and ``last`` to its instants (all real ones for a wildcard hour; the localized
    one for a fixed hour), then sort. Slow, obvious, independent of the engine's order.
    Instants are compared as timestamps: two datetimes sharing a ZoneInfo compare
    by wall-clock time, which is wrong inside a repeated hour."""
    cron = parse_cron(expression)
    zone = resolve_zone(zone_name)
    margin = timedelta(hours=3)
    wall = after.astimezone(zone).replace(tzinfo=None, microsecond=0) - margin
    end = last.astimezone(zone).replace(tzinfo=None) + margin
    found: set[float] = set()
    for candidate in _wall_matches(cron.text, wall, end):
        if cron.fixed_hour:
            instants = [localize(candidate, zone)]
        else:
            instants = [candidate.replace(tzinfo=zone, fold=fold) for fold in (0, 1)]
            instants = [
                i
                for i in instants
                if i.astimezone(UTC).astimezone(zone).replace(tzinfo=None) == candidate
            ]
        found.update(
            i.timestamp() for i in instants if after.timestamp() < i.timestamp() <= last.timestamp()
        )
    return sorted(found)


def _wall_matches(expression: str, start: datetime, end: datetime) -> list[datetime]:
    from croniter import croniter

    matches = []
    search = croniter(expression, start - timedelta(seconds=1))
    while (found := search.get_next(datetime)) <= end:
        matches.append(found)
    return matches


@PROPERTY_SETTINGS
@given(
    expression=cron_expressions(),
    zone=st.sampled_from(ZONES),
    start=starts,
    lead=st.one_of(st.none(), st.integers(0, 180)),
)
def test_cron_occurrences_increase_match_locally_and_equal_the_plain_rules(
    expression: str, zone: str, start: datetime, lead: int | None
) -> None:
    if lead is not None:
        start = _near_transition(zone, start, lead)
    recurrence = Recurrence(RecurrenceKind.CRON, cron=expression, timezone=zone)
    found = occurrences(recurrence, start, start, COUNT)
    assert len(found) == COUNT
    stamps = [t.timestamp() for t in found]
    assert stamps[0] > start.timestamp()
    assert all(a < b for a, b in itertools.pairwise(stamps))
    cron = parse_cron(expression)
    for instant in found:
        wall = instant.replace(tzinfo=None)
        # The offset carried is the zone's offset at that instant.
        assert instant.utcoffset() == instant.astimezone(resolve_zone(zone)).utcoffset()
        if cron.fixed_hour:
            # Either the wall time itself, or the first instant after a gap it fell in.
            just_before = instant - timedelta(seconds=1)
            assert cron.matches(wall) or (
                just_before.astimezone(resolve_zone(zone)).utcoffset() != instant.utcoffset()
            )
        else:
            # Every wildcard-hour occurrence is a real instant with a matching wall time.
            assert cron.matches(wall)
            assert localize(wall, instant.tzinfo).replace(tzinfo=None) == wall  # type: ignore[arg-type]
    assert stamps == _reference(expression, zone, start, found[-1])


@PROPERTY_SETTINGS
@given(
    expression=cron_expressions(),
    zone=st.sampled_from(ZONES),
    start=starts,
    lead=st.integers(0, 180),
)
def test_stepping_one_occurrence_at_a_time_gives_the_same_schedule(
    expression: str, zone: str, start: datetime, lead: int
) -> None:
    start = _near_transition(zone, start, lead)
    recurrence = Recurrence(RecurrenceKind.CRON, cron=expression, timezone=zone)
    batch = occurrences(recurrence, start, start, 8)
    stepped: list[datetime] = []
    after = start
    for _ in range(8):
        following = next_occurrence(recurrence, start, after)
        assert following is not None
        stepped.append(following)
        after = following
    assert [t.timestamp() for t in stepped] == [t.timestamp() for t in batch]


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
)
def test_interval_kinds_never_drift_from_the_anchor(
    kind: RecurrenceKind,
    interval: int,
    zone: str,
    anchor: datetime,
    lead: int | None,
    skip: int,
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
