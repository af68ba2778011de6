"""Exclusion calendars in tests: install some into the process's registry for the
duration of a test, and put back what was there before."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import date

from nexus_schedd.model.calendars import CALENDARS, ExclusionCalendar


@contextmanager
def installed(calendars: Mapping[str, ExclusionCalendar]) -> Iterator[None]:
    """``calendars`` in force inside the block (the daemon installs its config's)."""
    before = CALENDARS.calendars
    CALENDARS.install(calendars)
    try:
        yield
    finally:
        CALENDARS.install(before)


def dates(name: str, *days: str, ranges: Iterable[tuple[str, str]] = ()) -> ExclusionCalendar:
    """A calendar of ISO ``days`` and inclusive ``ranges``."""
    return ExclusionCalendar.build(
        name,
        dates=[date.fromisoformat(day) for day in days],
        ranges=[(date.fromisoformat(a), date.fromisoformat(b)) for a, b in ranges],
    )
