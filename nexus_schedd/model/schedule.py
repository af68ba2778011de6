"""The recurrence engine: when does a :class:`Recurrence` fire (SPEC section 3).

Interval kinds step from the job's *anchor* (its first occurrence):
``minutely``/``hourly`` in elapsed time, ``daily``/``weekly``/``monthly``/``yearly``
on the calendar of the recurrence's zone, keeping the anchor's wall-clock time
and day (clamped to the month's last day). Cron expressions are matched against
*naive local wall-clock times* by croniter; this module then maps each match to
real instants by the DST rules of SPEC section 3:

* fixed hour (calendar kinds, and cron whose hour field has no ``*``): a wall
  time inside a gap runs once at the first instant after the gap; a wall time
  that occurs twice runs once, at its first instant;
* wildcard hour cron: every real instant whose local time matches, so none in
  a gap and both instants of a repeated hour, in real-time order.

Every returned datetime is aware and carries the *fixed UTC offset* the
recurrence's zone has at that instant (so it prints as local time). A fixed
offset rather than the ``ZoneInfo`` itself is deliberate: two datetimes sharing
one ``ZoneInfo`` compare by wall-clock time and ignore ``fold``, which orders the
two passes of a repeated hour wrongly; fixed-offset values compare as instants.

Exclusion calendars (SPEC section 15): a recurrence whose ``exclude`` names
calendars loses every occurrence whose local date one of them holds; the
calendars come from the process's registry
(:data:`~nexus_schedd.model.calendars.CALENDARS`, whose docstring says why).
Excluded occurrences do not happen at all: they are not counted by
``max_occurrences``, and the schedule arithmetic (anchor, clamping, DST) is that
of the recurrence without exclusions. A recurrence without ``exclude`` takes
exactly the code path it took before exclusions existed.
"""

from __future__ import annotations

import calendar
import copy
import re
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, time, timedelta, timezone, tzinfo
from functools import lru_cache
from itertools import islice

from croniter import CroniterBadDateError, CroniterError, croniter

from nexus_schedd.errors import InvalidSpec
from nexus_schedd.model.calendars import CALENDARS, EXCLUDE_FIELD
from nexus_schedd.model.recurrence import Recurrence, RecurrenceKind
from nexus_schedd.model.times import format_instant, localize, resolve_zone

CRON_FIELD = "recurrence.cron"
ENDS_AT_FIELD = "recurrence.ends_at"

CRON_ALIASES: dict[str, str] = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
"""The ``@`` shorthands accepted, with the five fields they stand for."""

_HOUR = 1
_DAY_OF_MONTH = 2
_DAY_OF_WEEK = 4
_ONE_SECOND = timedelta(seconds=1)
# croniter's own search gives up after this many years without a match; every
# valid 5/6-field expression matches at least once in any 28-year span (Feb 29
# on a given weekday repeats within that), so 50 leaves room and stays fast.
_MAX_YEARS_BETWEEN_MATCHES = 50
# Upper bound on consecutive croniter matches that yield nothing (filtered, in
# a gap, duplicates): real schedules need a few thousand at most (a seconds
# expression across a repeated hour), so hitting it means the search is stuck.
_MAX_BARREN_MATCHES = 100_000
# A field made only of croniter's hashed (H) or random (R) forms: they depend on
# a hash id or on chance, which a durable schedule must not.
_HASHED_OR_RANDOM = re.compile(r"(^|[,\s])[hr](\(|/|$|[,\s])", re.IGNORECASE)

# How many periods back schedule_anchor looks for one with the asked-for local
# day and time: a monthly day-31 schedule needs at most a few, a yearly Feb 29
# one at most eight years; gaps never fall on the same wall time twice running.
_MAX_ANCHOR_PERIODS = 48

_CALENDAR_KINDS = frozenset(
    {RecurrenceKind.DAILY, RecurrenceKind.WEEKLY, RecurrenceKind.MONTHLY, RecurrenceKind.YEARLY}
)

_CLAMPED_KINDS = frozenset({RecurrenceKind.MONTHLY, RecurrenceKind.YEARLY})

_SINGLE_VALUE_RANGE = re.compile(r"(\w+)-\1(?:/\d+)?", re.IGNORECASE)

# Bounds on the search past excluded dates (SPEC 15): more excluded runs of
# dates in a row than this, or no allowed occurrence within this many years,
# and the schedule counts as never firing again. A calendar of every Monday for
# fifty years is 2,600 runs for a weekly job; a whole range is one.
MAX_EXCLUDED_RUNS = 5000
MAX_EXCLUDED_YEARS = 100

_ELAPSED_STEP = {
    RecurrenceKind.MINUTELY: timedelta(minutes=1),
    RecurrenceKind.HOURLY: timedelta(hours=1),
}


@dataclass(frozen=True, slots=True)
class CronExpression:
    """A parsed cron expression.

    ``templates`` are croniters positioned nowhere in particular; they are never
    advanced themselves: every search works on shallow copies (croniter copies
    its expanded fields before each step, so copies share them safely). There
    is one template when the day fields combine with AND, two when they combine
    with OR (one per day field, see :func:`parse_cron`): croniter's own OR
    mishandles ``L``, ``#`` and ``W`` and treats ``*/2`` as restricted.
    """

    text: str
    fields: tuple[str, ...]
    fixed_hour: bool
    templates: tuple[croniter, ...]
    days_combine_with_or: bool

    @property
    def has_seconds(self) -> bool:
        """True for six-field expressions (seconds last)."""
        return len(self.fields) == 6

    def search(self, wall_after: datetime) -> WallSearch:
        """Wall-clock matches strictly after the naive ``wall_after``, in order."""
        search = WallSearch(self.templates)
        search.set_current(wall_after)
        return search

    def matches(self, wall_time: datetime) -> bool:
        """Whether a naive local wall-clock time matches the expression."""
        step = _ONE_SECOND if self.has_seconds else timedelta(minutes=1)
        resolution = wall_time.replace(microsecond=0)
        if not self.has_seconds:
            resolution = resolution.replace(second=0)
        if resolution != wall_time:
            return False
        try:
            found = self.search(wall_time - step).next()
        except InvalidSpec:
            return False
        return found == wall_time


class WallSearch:
    """Naive wall-clock matches of one expression, in increasing order.

    Several croniters (one per day field when the day fields combine with OR)
    are merged: each match comes out once, the earliest first. A croniter that
    finds nothing within its search window drops out; only when every one has
    dropped out does the expression never fire.
    """

    __slots__ = ("_done", "_heads", "_never", "_searches")

    def __init__(self, templates: tuple[croniter, ...]) -> None:
        self._searches = [copy.copy(template) for template in templates]
        count = len(self._searches)
        self._heads: list[datetime | None] = [None] * count
        # A croniter that found nothing is not asked again: each failed search
        # scans decades of calendar.
        self._done = [False] * count
        self._never = [False] * count

    def set_current(self, wall: datetime) -> None:
        """Continue with the first match strictly after the naive ``wall``."""
        for search in self._searches:
            search.set_current(wall)
        count = len(self._searches)
        self._heads = [None] * count
        self._done = [False] * count
        self._never = [False] * count

    def next(self) -> datetime | None:
        """The next match; None once the calendar runs out (year 9999).

        Raises InvalidSpec("recurrence.cron") when the expression never fires.
        """
        for index, search in enumerate(self._searches):
            if self._heads[index] is None and not self._done[index]:
                try:
                    self._heads[index] = search.get_next(datetime)
                except CroniterBadDateError:
                    self._done[index] = self._never[index] = True
                except (OverflowError, ValueError):
                    self._done[index] = True
        found = [head for head in self._heads if head is not None]
        if not found:
            if all(self._never):
                raise InvalidSpec(
                    CRON_FIELD,
                    "the expression never fires "
                    f"(no match within {_MAX_YEARS_BETWEEN_MATCHES} years)",
                )
            return None
        earliest = min(found)
        self._heads = [None if head == earliest else head for head in self._heads]
        return earliest


@lru_cache(maxsize=1024)
def parse_cron(text: str) -> CronExpression:
    """Parse and check a cron expression, or raise ``InvalidSpec("recurrence.cron", ...)``.

    Accepted: five fields (minute hour day-of-month month day-of-week), or six
    with seconds as the last field; ``@hourly``, ``@daily``, ``@midnight``,
    ``@weekly``, ``@monthly``, ``@yearly``, ``@annually``; names (``mon``,
    ``jan``); ``L`` (last day of month, ``L5`` last Friday), ``#`` (``1#2``
    second Monday) and ``W`` (nearest weekday).
    """
    if not isinstance(text, str) or not text.strip():
        raise InvalidSpec(CRON_FIELD, "empty cron expression")
    normalized = " ".join(text.split())
    if normalized.startswith("@"):
        expanded = CRON_ALIASES.get(normalized.lower())
        if expanded is None:
            raise InvalidSpec(
                CRON_FIELD,
                f"unknown shorthand {normalized!r} (use one of {', '.join(CRON_ALIASES)})",
            )
        normalized = expanded
    fields = tuple(normalized.split(" "))
    if len(fields) not in (5, 6):
        raise InvalidSpec(
            CRON_FIELD,
            f"expected 5 fields (minute hour day month weekday) or 6 with seconds last, "
            f"got {len(fields)} in {text!r}",
        )
    if _HASHED_OR_RANDOM.search(normalized):
        raise InvalidSpec(
            CRON_FIELD, f"hashed (H) and random (R) fields are not supported: {text!r}"
        )
    # croniter 7 reads a one-value range ("1-1", "mon-mon/2") as "*": say the value.
    fields = tuple(_without_single_value_ranges(field) for field in fields)
    days_or = _restricts_days(fields[_DAY_OF_MONTH]) and _restricts_days(fields[_DAY_OF_WEEK])
    if days_or:
        # Vixie cron's OR: a day matches either field. One croniter per field,
        # the other field opened up, merged by WallSearch.
        variants = [
            _with_field(fields, _DAY_OF_WEEK, "*"),
            _with_field(fields, _DAY_OF_MONTH, "*"),
        ]
    else:
        variants = [fields]
    try:
        templates = tuple(
            croniter(
                " ".join(variant),
                datetime(2000, 1, 1),
                day_or=False,
                max_years_between_matches=_MAX_YEARS_BETWEEN_MATCHES,
            )
            for variant in variants
        )
    except (CroniterError, ValueError, TypeError, KeyError, IndexError) as exc:
        raise InvalidSpec(CRON_FIELD, f"bad cron expression {text!r}: {_reason(exc)}") from None
    if len(templates) > 1:
        # A day field that alone never fires ("30" in February) would make every
        # search scan decades again; its dates repeat within 28 years, so one
        # probe decides. If neither fires, both stay and the search says so.
        templates = tuple(t for t in templates if _fires(t)) or templates
    return CronExpression(
        text=normalized,
        fields=fields,
        fixed_hour="*" not in fields[_HOUR],
        templates=templates,
        days_combine_with_or=days_or,
    )


def _fires(template: croniter) -> bool:
    probe = copy.copy(template)
    probe.set_current(datetime(2000, 1, 1))
    try:
        probe.get_next(datetime)
    except CroniterBadDateError:
        return False
    return True


def _without_single_value_ranges(field: str) -> str:
    parts = []
    for part in field.split(","):
        match = _SINGLE_VALUE_RANGE.fullmatch(part)
        parts.append(match.group(1) if match else part)
    return ",".join(parts)


def _restricts_days(field: str) -> bool:
    """Vixie cron: a day field restricts unless it begins with ``*`` (``*``, ``*/2``);
    ``?`` (Quartz's "no value") is read as ``*``. ``L``, ``#`` and ``W`` restrict."""
    return not field.startswith(("*", "?"))


def _with_field(fields: tuple[str, ...], index: int, value: str) -> tuple[str, ...]:
    return (*fields[:index], value, *fields[index + 1 :])


def first_occurrence(recurrence: Recurrence, start: datetime) -> datetime | None:
    """The job's first occurrence when it starts at ``start``.

    Interval kinds: ``start`` itself. Cron: the first match at or after ``start``.
    None when that lies after ``ends_at``.
    """
    _require_aware(start, "start")
    if recurrence.exclude:
        return next(_iterate_excluding(recurrence, start, start, inclusive=True), None)
    if recurrence.kind is RecurrenceKind.CRON:
        return next(_iterate(recurrence, start, start, inclusive=True), None)
    first = _fixed_offset(start.astimezone(_zone(recurrence)))
    return None if _past_end(recurrence, first) else first


def next_occurrence(recurrence: Recurrence, anchor: datetime, after: datetime) -> datetime | None:
    """The first occurrence strictly after ``after``, or None past ``ends_at``.

    ``anchor`` is the job's first occurrence (ignored by cron). For ``once`` the
    only occurrence is the anchor, so once that has passed there is none.
    """
    if recurrence.exclude:
        return next(_iterate_excluding(recurrence, anchor, after, inclusive=False), None)
    return next(_iterate(recurrence, anchor, after, inclusive=False), None)


def occurrences(
    recurrence: Recurrence,
    anchor: datetime,
    after: datetime,
    count: int,
    *,
    inclusive: bool = False,
) -> list[datetime]:
    """Up to ``count`` occurrences after ``after`` (or at it, with ``inclusive``)."""
    if count <= 0:
        return []
    iterate = _iterate_excluding if recurrence.exclude else _iterate
    return list(islice(iterate(recurrence, anchor, after, inclusive=inclusive), count))


def preview(
    recurrence: Recurrence,
    start: datetime,
    count: int,
    requested_wall: datetime | None = None,
) -> list[datetime]:
    """The next ``count`` occurrences as ``preview`` shows them: interval kinds
    start at ``start`` itself (it is their anchor); cron lists matches strictly
    after ``start``. ``ends_at`` and ``max_occurrences`` end the list as they
    would end the job (the first listed is its first occurrence).
    ``requested_wall`` is ``start`` as the user wrote it when it carried no
    offset (see :func:`schedule_anchor`). The CLI and the protocol's Preview
    both use this."""
    if recurrence.max_occurrences is not None:
        count = min(count, recurrence.max_occurrences)
    inclusive = recurrence.kind is not RecurrenceKind.CRON
    anchor = schedule_anchor(recurrence, start, requested_wall)
    return occurrences(recurrence, anchor, start, count, inclusive=inclusive)


def schedule_anchor(
    recurrence: Recurrence, first: datetime, requested_wall: datetime | None = None
) -> datetime:
    """The instant a recurrence counts from (a job's ``anchor_at``): its first
    occurrence ``first``, with one exception.

    When a ``daily``/``weekly``/``monthly``/``yearly`` schedule's first
    occurrence was asked for as a naive local time (``requested_wall``) that a
    DST gap swallows, ``first`` is the instant after the gap, yet the schedule
    keeps the wall-clock time asked for: only that one occurrence moves (SPEC
    section 3; a daily 02:30 first due in the gap runs at 03:00 that day and at
    02:30 after). No instant has a local time inside a gap, so the anchor is
    then an earlier period of the same calendar whose local day and time are
    exactly the ones asked for; the occurrences before ``first`` that it
    implies are never produced (every search starts at or after ``first``).
    """
    if requested_wall is None or recurrence.kind not in _CALENDAR_KINDS:
        return first
    zone = _zone(recurrence)
    wall = requested_wall.replace(tzinfo=None, fold=0)
    shifted = localize(wall, zone)
    if shifted.replace(tzinfo=None) == wall or shifted != first:
        return first  # a real local time, or not the time ``first`` came from
    for periods in range(1, _MAX_ANCHOR_PERIODS + 1):
        earlier = _calendar_step(recurrence.kind, wall, -periods * recurrence.interval)
        if earlier is None:
            break
        if earlier.day != wall.day and recurrence.kind in _CLAMPED_KINDS:
            continue  # clamped to a shorter month: not the anchor day
        instant = localize(earlier, zone)
        if instant.replace(tzinfo=None) == earlier:
            return _fixed_offset(instant)
    return first


def validate_schedule(recurrence: Recurrence, first: datetime) -> None:
    """Check that a recurrence starting at ``first`` can fire, or raise InvalidSpec.

    ``recurrence.cron`` for an expression that is malformed or never matches
    (``0 0 30 2 *``); ``recurrence.ends_at`` when no occurrence falls at or
    before ``ends_at``; ``recurrence.exclude`` for a calendar name this process
    does not know, or when the exclusions leave no occurrence (up to ``ends_at``,
    else within :data:`MAX_EXCLUDED_YEARS` years and :data:`MAX_EXCLUDED_RUNS`
    excluded runs of dates). Bounded: answers in milliseconds whatever the input.
    """
    _require_aware(first, "start")
    base = without_exclusions(recurrence)
    if base.kind is RecurrenceKind.CRON:
        earliest = first_occurrence(replace(base, ends_at=None), first)
        if earliest is None:
            # Only when the search runs off the calendar (year 9999); a
            # never-matching expression raised in the search already.
            raise InvalidSpec(CRON_FIELD, f"no occurrence at or after {first.isoformat()}")
    else:
        earliest = first.astimezone(_zone(base))
    if _past_end(base, earliest):
        assert base.ends_at is not None
        raise InvalidSpec(
            ENDS_AT_FIELD,
            f"no occurrence at or before {format_instant(base.ends_at)} "
            f"(the first would be {earliest.isoformat()})",
        )
    if recurrence.exclude:
        CALENDARS.check(recurrence.exclude)
        if first_occurrence(recurrence, first) is None:
            names = ", ".join(recurrence.exclude)
            span = (
                f"up to ends_at {format_instant(recurrence.ends_at)}"
                if recurrence.ends_at is not None
                else f"within {MAX_EXCLUDED_YEARS} years"
            )
            raise InvalidSpec(
                EXCLUDE_FIELD,
                f"the recurrence never fires: every occurrence from {earliest.isoformat()} "
                f"{span} falls on a date excluded by {names}",
            )


def without_exclusions(recurrence: Recurrence) -> Recurrence:
    """``recurrence`` with an empty ``exclude`` (itself when it has none)."""
    return replace(recurrence, exclude=()) if recurrence.exclude else recurrence


def excluded_occurrences(
    recurrence: Recurrence, anchor: datetime, start: datetime, end: datetime, limit: int
) -> list[datetime]:
    """The occurrences in [``start``, ``end``] that ``recurrence``'s exclusions
    remove (they would happen without them), in order, at most ``limit``.

    For the iCal export's EXDATEs. Walks the local dates of the span (so its
    cost follows the span's length in days, and the occurrences found).
    """
    _require_aware(start, "start")
    excluded = CALENDARS.excluded_dates(recurrence.exclude) if recurrence.exclude else None
    if excluded is None or limit <= 0 or end < start:
        return []
    base = without_exclusions(recurrence)
    zone = _zone(recurrence)
    found: list[datetime] = []
    day = start.astimezone(zone).date()
    last_day = end.astimezone(zone).date()
    while day <= last_day and len(found) < limit:
        if day in excluded:
            after = max(start, _start_of_day(day, zone) or start)
            for instant in _iterate(base, anchor, after, inclusive=True):
                if instant > end or instant.date() > day or len(found) >= limit:
                    break
                if instant.date() == day:
                    found.append(instant)
        if day == date.max:
            break
        day += timedelta(days=1)
    return found


def is_fixed_hour(recurrence: Recurrence) -> bool:
    """Whether DST gaps shift and repeated hours run once (SPEC section 3)."""
    if recurrence.kind is RecurrenceKind.CRON:
        assert recurrence.cron is not None
        return parse_cron(recurrence.cron).fixed_hour
    return recurrence.kind not in _ELAPSED_STEP


# --- internals -----------------------------------------------------------------


def _iterate(
    recurrence: Recurrence, anchor: datetime, after: datetime, *, inclusive: bool
) -> Iterator[datetime]:
    """Occurrences after ``after`` in increasing real time, stopping at ``ends_at``."""
    _require_aware(anchor, "anchor")
    _require_aware(after, "after")
    zone = _zone(recurrence)
    after_utc = after.astimezone(UTC)
    kind = recurrence.kind
    if kind is RecurrenceKind.CRON:
        assert recurrence.cron is not None
        source = _cron_instants(parse_cron(recurrence.cron), zone, after_utc, inclusive)
    elif kind is RecurrenceKind.ONCE:
        source = iter((anchor.astimezone(UTC),))
    elif kind in _ELAPSED_STEP:
        source = _elapsed_instants(anchor, _ELAPSED_STEP[kind] * recurrence.interval, after_utc)
    else:
        source = _calendar_instants(kind, recurrence.interval, anchor, zone, after_utc)
    ends_at = None if recurrence.ends_at is None else recurrence.ends_at.astimezone(UTC)
    for instant in source:
        if instant < after_utc or (instant == after_utc and not inclusive):
            continue
        if ends_at is not None and instant > ends_at:
            return
        yield _fixed_offset(instant.astimezone(zone))


def _iterate_excluding(
    recurrence: Recurrence, anchor: datetime, after: datetime, *, inclusive: bool
) -> Iterator[datetime]:
    """:func:`_iterate` without the occurrences whose local date ``exclude`` names.

    On an excluded date the search restarts at the first instant of the next
    date that is not excluded, so a long range costs one step, not one per
    occurrence in it. It ends (as a schedule past its end) after
    :data:`MAX_EXCLUDED_RUNS` excluded runs of dates in a row, or when the next
    allowed occurrence would be more than :data:`MAX_EXCLUDED_YEARS` years
    after the previous one (or ``after``): a search that cannot hang. Nor does
    it go past the last date the calendars know (``known_until``: the `holidays`
    package covers years up to 2100).
    """
    excluded = CALENDARS.excluded_dates(recurrence.exclude)
    if excluded is None:
        # No calendar of the names is installed (each was warned about).
        yield from _iterate(recurrence, anchor, after, inclusive=inclusive)
        return
    zone = _zone(recurrence)
    source = _iterate(recurrence, anchor, after, inclusive=inclusive)
    horizon = _years_later(after)
    runs = 0
    while True:
        instant = next(source, None)
        if instant is None:
            return
        # The instant carries the zone's offset then: its date is the local date.
        day = instant.date()
        if excluded.known_until is not None and day > excluded.known_until:
            return  # past the years the holiday data covers (2100): not searched
        if day not in excluded:
            runs = 0
            horizon = _years_later(instant)
            yield instant
            continue
        runs += 1
        resume = excluded.next_allowed(day)
        if resume is None or runs > MAX_EXCLUDED_RUNS:
            return
        restart = _start_of_day(resume, zone)
        if restart is None or (horizon is not None and restart > horizon):
            return
        if restart > instant:
            source = _iterate(recurrence, anchor, restart, inclusive=True)


def _start_of_day(day: date, zone: tzinfo) -> datetime | None:
    """The first instant of the local date ``day`` (after a gap at midnight)."""
    try:
        return localize(datetime.combine(day, time()), zone)
    except (OverflowError, ValueError):
        return None


def _years_later(instant: datetime) -> datetime | None:
    try:
        return instant + timedelta(days=365.25 * MAX_EXCLUDED_YEARS)
    except OverflowError:
        return None


def _elapsed_instants(anchor: datetime, step: timedelta, after: datetime) -> Iterator[datetime]:
    """anchor + k * step for k from the first that can be at or after ``after``."""
    start = anchor.astimezone(UTC)
    k = max(0, (after - start) // step)
    while True:
        yield start + k * step
        k += 1


def _calendar_instants(
    kind: RecurrenceKind, interval: int, anchor: datetime, zone: tzinfo, after: datetime
) -> Iterator[datetime]:
    """The anchor's wall-clock time on every interval-th day/week/month/year."""
    local_anchor = anchor.astimezone(zone)
    wall_anchor = local_anchor.replace(tzinfo=None, fold=0)
    local_after = after.astimezone(zone).replace(tzinfo=None)

    def at(k: int) -> datetime | None:
        if k == 0:
            # The anchor itself, even when it is the second pass of a repeated hour.
            return anchor.astimezone(UTC)
        wall = _calendar_step(kind, wall_anchor, k * interval)
        return None if wall is None else localize(wall, zone).astimezone(UTC)

    # Estimate k from the calendar distance, then correct by a step or two: the
    # estimate is off only by the fraction of a period and by DST offsets.
    if kind is RecurrenceKind.DAILY or kind is RecurrenceKind.WEEKLY:
        period_days = interval * (7 if kind is RecurrenceKind.WEEKLY else 1)
        k = (local_after.date() - wall_anchor.date()).days // period_days
    elif kind is RecurrenceKind.MONTHLY:
        months = (local_after.year - wall_anchor.year) * 12 + local_after.month - wall_anchor.month
        k = months // interval
    else:
        k = (local_after.year - wall_anchor.year) // interval
    k = max(0, k - 1)
    while k > 0:
        earlier = at(k - 1)
        if earlier is None or earlier < after:
            break
        k -= 1
    previous: datetime | None = None
    while True:
        instant = at(k)
        if instant is None:
            return
        # A wall time swallowed by a gap can land on the next period's instant
        # only in pathological zones; never emit the same instant twice.
        if previous is None or instant > previous:
            yield instant
            previous = instant
        k += 1


def _calendar_step(kind: RecurrenceKind, wall: datetime, steps: int) -> datetime | None:
    """``wall`` moved by ``steps`` periods, the day clamped to the month; None past year 9999."""
    try:
        if kind is RecurrenceKind.DAILY:
            return wall + timedelta(days=steps)
        if kind is RecurrenceKind.WEEKLY:
            return wall + timedelta(weeks=steps)
        if kind is RecurrenceKind.MONTHLY:
            month_index = wall.month - 1 + steps
            year, month = wall.year + month_index // 12, month_index % 12 + 1
        else:
            year, month = wall.year + steps, wall.month
        if not 1 <= year <= 9999:
            return None
        day = min(wall.day, calendar.monthrange(year, month)[1])
        return wall.replace(year=year, month=month, day=day)
    except (OverflowError, ValueError):
        return None


def _cron_instants(
    cron: CronExpression, zone: tzinfo, after: datetime, inclusive: bool
) -> Iterator[datetime]:
    """Real instants (UTC) of a cron expression from about ``after`` on, increasing.

    Candidates a little before ``after`` may come out; the caller filters them.
    """
    wall_after = after.astimezone(zone).replace(tzinfo=None, microsecond=0)
    # croniter finds matches strictly after its start. A match on ``after``'s own
    # wall time maps to ``after`` or earlier, so only an inclusive search needs it.
    wall_start = wall_after - _ONE_SECOND if inclusive else wall_after
    if not cron.fixed_hour:
        # Inside a repeated hour the second pass over it is still to come even
        # for wall times before ``after``'s: start from the top of that hour.
        window = _fold_window(wall_after, zone)
        if window is not None:
            wall_start = window[0] - _ONE_SECOND
    search = cron.search(wall_start)
    if cron.fixed_hour:
        return _fixed_hour_instants(search, zone)
    return _wildcard_hour_instants(search, zone)


def _fixed_hour_instants(search: WallSearch, zone: tzinfo) -> Iterator[datetime]:
    """Each wall-time match at one instant: gap -> end of the gap, repeated -> first."""
    previous: datetime | None = None
    barren = 0
    while True:
        wall = search.next()
        if wall is None:
            return
        local = localize(wall, zone)
        instant = local.astimezone(UTC)
        if local.replace(tzinfo=None) != wall:
            # Swallowed by a gap: every later match inside the gap maps to the
            # same instant, so resume the search at the end of the gap.
            search.set_current(local.replace(tzinfo=None) - _ONE_SECOND)
        if previous is None or instant > previous:
            previous = instant
            barren = 0
            yield instant
        else:
            barren = _count_barren(barren)


def _wildcard_hour_instants(search: WallSearch, zone: tzinfo) -> Iterator[datetime]:
    """Every real instant whose local time matches, in real-time order."""
    barren = 0
    pending: datetime | None = None
    while True:
        wall, pending = (pending, None) if pending is not None else (search.next(), None)
        if wall is None:
            return
        first = wall.replace(tzinfo=zone, fold=0)
        second = wall.replace(tzinfo=zone, fold=1)
        if first.utcoffset() == second.utcoffset():
            barren = 0
            yield first.astimezone(UTC)
            continue
        window = _fold_window(wall, zone)
        if window is None:
            # Inside a gap: no real instant has this local time; jump past it.
            gap_end = localize(wall, zone).replace(tzinfo=None)
            search.set_current(gap_end - _ONE_SECOND)
            barren = _count_barren(barren)
            continue
        # A repeated hour: all first instants of its matches, then all second
        # ones; only that is increasing real time.
        matches = [wall]
        while True:
            following = search.next()
            if following is None:
                break
            if following >= window[1]:
                pending = following
                break
            matches.append(following)
        for fold in (0, 1):
            for match in matches:
                yield match.replace(tzinfo=zone, fold=fold).astimezone(UTC)
        barren = 0


def _fold_window(wall: datetime, zone: tzinfo) -> tuple[datetime, datetime] | None:
    """The naive span [start, end) of the repeated wall times around ``wall``, if any."""
    first = wall.replace(tzinfo=zone, fold=0)
    second = wall.replace(tzinfo=zone, fold=1)
    early_offset, late_offset = first.utcoffset(), second.utcoffset()
    if early_offset == late_offset or early_offset is None or late_offset is None:
        return None
    low, high = first.astimezone(UTC), second.astimezone(UTC)
    if low >= high or low.astimezone(zone).replace(tzinfo=None) != wall:
        return None  # a gap, not a repeat
    # Bisect for the transition: the first instant already on the late offset.
    while high - low > _ONE_SECOND:
        middle = low + (high - low) / 2
        if middle.astimezone(zone).utcoffset() == early_offset:
            low = middle
        else:
            high = middle
    transition = high.replace(microsecond=0)
    naive_transition = transition.replace(tzinfo=None)
    return naive_transition + late_offset, naive_transition + early_offset


def _count_barren(barren: int) -> int:
    barren += 1
    if barren > _MAX_BARREN_MATCHES:
        raise InvalidSpec(CRON_FIELD, "the expression finds no real instant to fire at")
    return barren


def _fixed_offset(local: datetime) -> datetime:
    """``local`` with its zone replaced by the fixed offset in force (see module doc)."""
    offset = local.utcoffset()
    assert offset is not None
    return local.replace(tzinfo=timezone(offset), fold=0)


def _past_end(recurrence: Recurrence, instant: datetime) -> bool:
    return recurrence.ends_at is not None and instant.astimezone(UTC) > recurrence.ends_at


def _zone(recurrence: Recurrence) -> tzinfo:
    return resolve_zone(recurrence.timezone, "recurrence.timezone")


def _require_aware(value: datetime, name: str) -> None:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be a timezone-aware datetime")


def _reason(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


__all__ = [
    "CRON_ALIASES",
    "MAX_EXCLUDED_RUNS",
    "MAX_EXCLUDED_YEARS",
    "CronExpression",
    "WallSearch",
    "excluded_occurrences",
    "first_occurrence",
    "is_fixed_hour",
    "next_occurrence",
    "occurrences",
    "parse_cron",
    "preview",
    "schedule_anchor",
    "validate_schedule",
    "without_exclusions",
]
