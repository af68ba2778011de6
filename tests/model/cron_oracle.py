"""A reference oracle for SPEC section 3 cron schedules, independent of the code under test.

It shares nothing with :mod:`nexus_schedd.model.schedule` or croniter: it reads
the five fields itself and walks real time minute by minute in UTC, reading
each minute's local wall-clock time from ``zoneinfo``. The rules, stated as
plainly as possible:

* day-of-month and day-of-week: OR when both restrict, AND when either begins
  with ``*`` (or ``?``); ``L``, ``nW``, ``d#n`` and ``Ld`` restrict; 0 and 7 are Sunday;
* wildcard hour (``*`` in the hour field): every minute whose local time matches;
* fixed hour: a minute runs when its local time matches and that local time has
  not been seen before (first instant of a repeated time), or when it is the
  first minute after a gap that swallowed a matching local time (once, even if
  the minute itself matches too).

Slow and obvious on purpose; five-field expressions only.
"""

from __future__ import annotations

import calendar
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

MINUTE = timedelta(minutes=1)
_MONTH_NAMES = {
    name: number
    for number, name in enumerate(
        ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"], 1
    )
}
_DAY_NAMES = {
    name: number for number, name in enumerate(["sun", "mon", "tue", "wed", "thu", "fri", "sat"])
}


def _number(text: str, names: dict[str, int]) -> int:
    return names[text.lower()] if text.lower() in names else int(text)


def _values(field: str, low: int, high: int, names: dict[str, int] | None = None) -> set[int]:
    """``*``, ``a``, ``a-b``, ``*/s``, ``a-b/s`` and comma lists of them."""
    names = names or {}
    found: set[int] = set()
    for part in field.split(","):
        base, _, step_text = part.partition("/")
        step = int(step_text) if step_text else 1
        if base in ("*", "?"):
            first, last = low, high
        elif "-" in base:
            first_text, last_text = base.split("-")
            first, last = _number(first_text, names), _number(last_text, names)
        else:
            first = _number(base, names)
            last = high if step_text else first
        found.update(range(first, last + 1, step))
    return found


def _nearest_weekday(year: int, month: int, day: int) -> int:
    """The weekday (Mon-Fri) nearest to ``day``, never leaving the month."""
    last = calendar.monthrange(year, month)[1]
    weekday = date(year, month, day).weekday()  # Monday = 0
    if weekday == 5:  # Saturday: Friday before, unless that is last month
        return day - 1 if day > 1 else day + 2
    if weekday == 6:  # Sunday: Monday after, unless that is next month
        return day + 1 if day < last else day - 2
    return day


def _cron_weekday(day: date) -> int:
    return (day.weekday() + 1) % 7  # Sunday = 0


@dataclass
class Oracle:
    """One five-field expression, matched by hand."""

    expression: str
    fields: list[str] = field(init=False)
    _times: tuple[set[int], set[int], set[int]] = field(init=False)
    _days: dict[date, bool] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        self.fields = self.expression.split()
        minute, hour, _, month, _ = self.fields
        self._times = (
            _values(minute, 0, 59),
            _values(hour, 0, 23),
            _values(month, 1, 12, _MONTH_NAMES),
        )

    @property
    def fixed_hour(self) -> bool:
        return "*" not in self.fields[1]

    def _day_of_month(self, day: date) -> bool:
        last = calendar.monthrange(day.year, day.month)[1]
        for part in self.fields[2].split(","):
            if part.upper() == "L":
                if day.day == last:
                    return True
            elif part.upper().endswith("W"):
                if day.day == _nearest_weekday(day.year, day.month, int(part[:-1])):
                    return True
            elif day.day in _values(part, 1, 31):
                return True
        return False

    def _day_of_week(self, day: date) -> bool:
        weekday = _cron_weekday(day)
        last = calendar.monthrange(day.year, day.month)[1]
        for part in self.fields[4].split(","):
            if "#" in part:
                wanted, nth = part.split("#")
                if _number(wanted, _DAY_NAMES) % 7 == weekday and (day.day - 1) // 7 + 1 == int(
                    nth
                ):
                    return True
            elif part.upper().startswith("L"):
                if _number(part[1:], _DAY_NAMES) % 7 == weekday and day.day + 7 > last:
                    return True
            elif weekday in {value % 7 for value in _values(part, 0, 7, _DAY_NAMES)}:
                return True
        return False

    def day_matches(self, day: date) -> bool:
        """Vixie cron: OR when both day fields restrict, else AND."""
        known = self._days.get(day)
        if known is None:
            known = self._days[day] = self._day_matches(day)
        return known

    def _day_matches(self, day: date) -> bool:
        by_month_day = self._day_of_month(day)
        by_week_day = self._day_of_week(day)
        if not self.fields[2].startswith(("*", "?")) and not self.fields[4].startswith(("*", "?")):
            return by_month_day or by_week_day
        return by_month_day and by_week_day

    def matches(self, wall: datetime) -> bool:
        """Whether a naive local time matches."""
        minutes, hours, months = self._times
        return (
            wall.second == 0
            and wall.minute in minutes
            and wall.hour in hours
            and wall.month in months
            and self.day_matches(wall.date())
        )


def _wall(instant: datetime, zone: ZoneInfo) -> datetime:
    return instant.astimezone(zone).replace(tzinfo=None)


def reference_occurrences(
    expression: str, zone_name: str, after: datetime, until: datetime
) -> list[datetime]:
    """Every occurrence in (after, until], in UTC, by walking each minute."""
    oracle = Oracle(expression)
    zone = ZoneInfo(zone_name)
    # Start a day early so the first pass over a repeated hour is known.
    instant = after.astimezone(UTC).replace(second=0, microsecond=0) - timedelta(days=1)
    seen: set[datetime] = set()
    previous = _wall(instant - MINUTE, zone)
    found: list[datetime] = []
    while instant <= until:
        wall = _wall(instant, zone)
        if oracle.fixed_hour:
            runs = oracle.matches(wall) and wall not in seen
            if not runs and wall - previous > MINUTE:
                runs = any(oracle.matches(skipped) for skipped in _between(previous, wall))
        else:
            runs = oracle.matches(wall)
        if runs and instant > after:
            found.append(instant)
        seen.add(wall)
        previous = wall
        instant += MINUTE
    return found


def _between(low: datetime, high: datetime) -> Iterator[datetime]:
    """The local minutes strictly between two consecutive minutes' wall times (a gap)."""
    wall = low + MINUTE
    while wall < high:
        yield wall
        wall += MINUTE


def gaps(zone_name: str, start: datetime, end: datetime) -> list[tuple[datetime, datetime]]:
    """The local [first skipped, first after) spans of every gap between two instants."""
    zone = ZoneInfo(zone_name)
    found = []
    instant = start.astimezone(UTC).replace(second=0, microsecond=0)
    previous = _wall(instant, zone)
    while instant <= end:
        instant += MINUTE
        wall = _wall(instant, zone)
        if wall - previous > MINUTE:
            found.append((previous + MINUTE, wall))
        previous = wall
    return found
