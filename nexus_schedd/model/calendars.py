"""Exclusion calendars (SPEC section 15): local dates on which a recurrence does not fire.

A calendar is a set of dates: listed ``dates``, inclusive ``ranges`` and, with
``holidays``, a country's (or a subdivision's) public holidays from the
`holidays` package. A recurrence names the calendars it honours in its
``exclude`` tuple; an occurrence whose local date (in the recurrence's zone) is
in any of them does not happen at all (:mod:`nexus_schedd.model.schedule`).

Where the definitions live
--------------------------
The calendars are daemon configuration (``[calendars.NAME]``), while the
occurrence arithmetic that honours them is called with a bare
:class:`~nexus_schedd.model.recurrence.Recurrence` from many places: the
engine's finish and misfire paths, the control methods, static-schedule
reconciliation, the iCal export, the model's own :class:`~nexus_schedd.model.job.Job`
helpers. A recurrence carries only the calendar *names* (its JSON, and so the
store, holds nothing else), and each process holds one :class:`CalendarRegistry`,
:data:`CALENDARS`, that maps the names to their definitions:

* the daemon installs its config's calendars at start-up and again on every
  reload (:meth:`CalendarRegistry.install`, one swap of an immutable mapping);
* the schedule functions consult it only for a recurrence whose ``exclude`` is
  not empty: a recurrence without exclusions never touches it;
* processes that do not read the daemon's config (``nexus-schedctl``,
  ``nexus-schedweb``) keep it empty and ask the daemon (the Preview method) for
  anything that involves exclusions.

It is the model's one piece of process-wide state, on purpose, like the tz
database behind :func:`~nexus_schedd.model.times.resolve_zone`: a table the
operator configures for the whole process and that the arithmetic needs at
every call site, which a parameter threaded through every caller would only
make easy to forget.

A name the registry does not know when an occurrence is computed (a reload
removed its calendar, or the store was written by a daemon with another
config) is ignored, with one ``calendar_missing`` warning per name and install:
the job keeps running as if it did not exclude that calendar. Adding or
rescheduling a job (and Preview) with an unknown name is refused
(``InvalidSpec("recurrence.exclude", ...)``).
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from types import MappingProxyType
from typing import Any

import structlog

from nexus_schedd.errors import InvalidSpec

EXCLUDE_FIELD = "recurrence.exclude"
MAX_EXCLUDE = 32
"""At most this many calendars in one recurrence's ``exclude``."""
MAX_NAME_LENGTH = 100

_ONE_DAY = timedelta(days=1)
# Distinct ``exclude`` tuples whose merged dates are kept; jobs share a handful.
_MAX_CACHED_UNIONS = 1024

log = structlog.get_logger("nexus_schedd.calendars")


class PublicHolidays:
    """The public holidays of one country (and optionally one subdivision), from
    the `holidays` package, computed one year at a time when first asked for.

    The package is imported only here, when a calendar uses ``holidays``.
    """

    __slots__ = ("_lock", "_years", "country", "last_year", "subdivision")

    def __init__(self, country: str, subdivision: str | None = None) -> None:
        self.country = country
        self.subdivision = subdivision
        self._years: dict[int, frozenset[date]] = {}
        self._lock = threading.Lock()
        # Refuses an unknown country or subdivision.
        self.last_year: int = _country_holidays(country, subdivision).end_year
        """The last year the package knows this country's holidays for (2100 today)."""

    def __contains__(self, day: object) -> bool:
        if not isinstance(day, date):
            return False
        dates = self._years.get(day.year)
        if dates is None:
            with self._lock:
                dates = self._years.get(day.year)
                if dates is None:
                    dates = self._years[day.year] = self._load(day.year)
        return day in dates

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PublicHolidays):
            return NotImplemented
        return (self.country, self.subdivision) == (other.country, other.subdivision)

    def __hash__(self) -> int:
        return hash((self.country, self.subdivision))

    def __repr__(self) -> str:
        return f"PublicHolidays({self.country!r}, {self.subdivision!r})"

    def _load(self, year: int) -> frozenset[date]:
        try:
            found = _country_holidays(self.country, self.subdivision, year)
        except (InvalidSpec, ValueError, OverflowError, NotImplementedError):
            # A year the package cannot compute (far past or future) has none.
            return frozenset()
        return frozenset(day for day in found if isinstance(day, date))


def _country_holidays(country: str, subdivision: str | None, year: int | None = None) -> Any:
    """The package's holiday table (a dict of date to name) for ``year`` (or none yet)."""
    try:
        import holidays
    except ImportError:  # pragma: no cover - a dependency; kept for a clear message
        raise InvalidSpec(
            "holidays", "needs the Python package 'holidays' (pip install holidays)"
        ) from None
    if country not in holidays.list_supported_countries():
        raise InvalidSpec("holidays", f"unknown country code {country!r} (ISO 3166-1, e.g. 'DE')")
    try:
        found = holidays.country_holidays(
            country, subdiv=subdivision, years=() if year is None else year
        )
    except NotImplementedError as exc:
        if subdivision is not None:
            known = ", ".join(holidays.list_supported_countries()[country])
            raise InvalidSpec(
                "subdivision",
                f"unknown subdivision {subdivision!r} of {country!r} (known: {known})",
            ) from None
        raise InvalidSpec("holidays", str(exc)) from None
    return found


@dataclass(frozen=True, slots=True)
class ExclusionCalendar:
    """One ``[calendars.NAME]``: ``spans`` are the listed dates and inclusive
    ranges, sorted and merged; ``holidays`` a country's public holidays, if any."""

    name: str
    spans: tuple[tuple[date, date], ...] = ()
    holidays: PublicHolidays | None = None

    @classmethod
    def build(
        cls,
        name: str,
        dates: Iterable[date] = (),
        ranges: Iterable[tuple[date, date]] = (),
        holidays: PublicHolidays | None = None,
    ) -> ExclusionCalendar:
        """A calendar of ``dates``, the inclusive ``(first, last)`` ``ranges`` and ``holidays``."""
        spans = [(day, day) for day in dates]
        for first, last in ranges:
            if last < first:
                raise ValueError(f"range ends ({last}) before it starts ({first})")
            spans.append((first, last))
        return cls(name=name, spans=_merge(spans), holidays=holidays)

    def __contains__(self, day: object) -> bool:
        if not isinstance(day, date):
            return False
        if any(first <= day <= last for first, last in self.spans):
            return True
        return self.holidays is not None and day in self.holidays


@dataclass(frozen=True, slots=True)
class ExcludedDates:
    """The dates one recurrence's ``exclude`` names, merged: what the schedule
    functions ask ("is this local date excluded", "which is the next one that
    is not"), each in O(log n) for listed dates and ranges.

    ``known_until`` is the last date the union knows (the end of the last year
    the `holidays` package covers, when a calendar uses it), None when it knows
    every date: the schedule functions search no further than it.
    """

    names: tuple[str, ...]
    starts: tuple[date, ...] = ()
    ends: tuple[date, ...] = ()
    holidays: tuple[PublicHolidays, ...] = ()
    known_until: date | None = None

    @classmethod
    def union(cls, calendars: Sequence[ExclusionCalendar]) -> ExcludedDates:
        """All dates of ``calendars``."""
        spans = _merge([span for calendar in calendars for span in calendar.spans])
        holidays = tuple(dict.fromkeys(c.holidays for c in calendars if c.holidays is not None))
        return cls(
            names=tuple(c.name for c in calendars),
            starts=tuple(first for first, _ in spans),
            ends=tuple(last for _, last in spans),
            holidays=holidays,
            known_until=(
                date(min(source.last_year for source in holidays), 12, 31) if holidays else None
            ),
        )

    def __contains__(self, day: object) -> bool:
        if not isinstance(day, date):
            return False
        index = bisect.bisect_right(self.starts, day) - 1
        if index >= 0 and self.ends[index] >= day:
            return True
        return any(day in source for source in self.holidays)

    def next_allowed(self, day: date) -> date | None:
        """The first date after ``day`` that is not excluded; None past year 9999."""
        current = day
        while True:
            try:
                current += _ONE_DAY
            except OverflowError:
                return None
            index = bisect.bisect_right(self.starts, current) - 1
            if index >= 0 and self.ends[index] >= current:
                current = self.ends[index]  # jump over the whole span
                continue
            if any(current in source for source in self.holidays):
                continue  # holidays come one or two days at a time
            return current


@dataclass(frozen=True, slots=True)
class _Installed:
    calendars: Mapping[str, ExclusionCalendar]
    unions: dict[tuple[str, ...], ExcludedDates | None] = field(default_factory=dict)
    warned: set[str] = field(default_factory=set)


class CalendarRegistry:
    """The exclusion calendars in force in this process (see the module doc)."""

    __slots__ = ("_installed",)

    def __init__(self) -> None:
        self._installed = _Installed(MappingProxyType({}))

    def install(self, calendars: Mapping[str, ExclusionCalendar]) -> None:
        """Put ``calendars`` in force, replacing the ones before (start-up, reload)."""
        self._installed = _Installed(MappingProxyType(dict(calendars)))

    @property
    def calendars(self) -> Mapping[str, ExclusionCalendar]:
        """The calendars in force, by name (read-only)."""
        return self._installed.calendars

    def check(self, names: Sequence[str]) -> None:
        """Refuse names no installed calendar has (``InvalidSpec("recurrence.exclude")``)."""
        known = self._installed.calendars
        for name in names:
            if name not in known:
                defined = ", ".join(sorted(known)) if known else "none are defined"
                raise InvalidSpec(
                    EXCLUDE_FIELD,
                    f"unknown calendar {name!r} (the daemon config's [calendars.NAME]: {defined})",
                )

    def excluded_dates(self, names: tuple[str, ...]) -> ExcludedDates | None:
        """The merged dates of the calendars ``names``, None when none of them is
        installed; a name not installed is skipped with one warning."""
        installed = self._installed
        cached = installed.unions.get(names, _MISSING)
        if cached is not _MISSING:
            return cached  # type: ignore[return-value]
        found = []
        for name in names:
            calendar = installed.calendars.get(name)
            if calendar is None:
                if name not in installed.warned:
                    installed.warned.add(name)
                    log.warning(
                        "calendar_missing",
                        calendar=name,
                        effect="recurrences that exclude it run as if they did not",
                    )
                continue
            found.append(calendar)
        union = ExcludedDates.union(found) if found else None
        if len(installed.unions) >= _MAX_CACHED_UNIONS:
            installed.unions.clear()
        installed.unions[names] = union
        return union


_MISSING = object()

CALENDARS = CalendarRegistry()
"""This process's registry: the daemon installs its config's calendars here."""


def check_exclude(value: object) -> tuple[str, ...]:
    """A recurrence's ``exclude`` as a tuple of calendar names, or InvalidSpec.

    The empty tuple is shared by every recurrence without exclusions.
    """
    if value is None or value == ():
        return ()
    if isinstance(value, str) or not isinstance(value, list | tuple):
        raise InvalidSpec(EXCLUDE_FIELD, "must be a list of calendar names")
    if len(value) > MAX_EXCLUDE:
        raise InvalidSpec(EXCLUDE_FIELD, f"at most {MAX_EXCLUDE} calendars, got {len(value)}")
    names: list[str] = []
    for name in value:
        if not isinstance(name, str) or not name.strip():
            raise InvalidSpec(
                EXCLUDE_FIELD, f"a calendar name must be a non-empty string, got {name!r}"
            )
        if len(name) > MAX_NAME_LENGTH:
            raise InvalidSpec(
                EXCLUDE_FIELD, f"calendar name longer than {MAX_NAME_LENGTH} characters"
            )
        if name in names:
            raise InvalidSpec(EXCLUDE_FIELD, f"calendar {name!r} is named twice")
        names.append(name)
    return tuple(names) if names else ()


def _merge(spans: Iterable[tuple[date, date]]) -> tuple[tuple[date, date], ...]:
    """Sorted spans, overlapping and adjacent ones joined."""
    merged: list[tuple[date, date]] = []
    for first, last in sorted(spans):
        if merged:
            previous_first, previous_last = merged[-1]
            if previous_last == date.max or first <= previous_last + _ONE_DAY:
                merged[-1] = (previous_first, max(previous_last, last))
                continue
        merged.append((first, last))
    return tuple(merged)


__all__ = [
    "CALENDARS",
    "EXCLUDE_FIELD",
    "CalendarRegistry",
    "ExcludedDates",
    "ExclusionCalendar",
    "PublicHolidays",
    "check_exclude",
]
