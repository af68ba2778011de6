"""The upcoming schedule as a calendar: RFC 5545 iCalendar and Google Calendar links.

A job whose recurrence maps to an RRULE becomes one VEVENT with that rule,
starting at its current occurrence; any other job (cron, one-shot) becomes one
VEVENT per upcoming occurrence within the export window. Interval kinds map as
follows: ``minutely``/``hourly`` step in elapsed time, so their events are
written in UTC; ``daily`` and longer keep the wall-clock time in the job's zone
(TZID); ``monthly`` and ``yearly`` anchored on a day that some months lack use
``BYMONTHDAY=28,...;BYSETPOS=-1`` to clamp to the month's last day as the
scheduler does.

RFC 5545 and SPEC section 3 differ on one corner: a recurrence instance whose
local time falls in a DST gap is *dropped* by RFC 5545 (3.3.10), while the
scheduler runs it at the first instant after the gap. So a calendar kind whose
wall-clock time some gap of its zone covers (a daily 02:30 in Europe/Berlin)
gets no RRULE, which would lose those runs, but listed occurrences. Repeated
times agree (both take the first instant), and fixed offsets have no gaps.

Exclusion calendars (SPEC section 15): a job whose recurrence excludes
calendars keeps its RRULE, cut with UNTIL at the end of the export window, and
gets one EXDATE per occurrence the calendars remove within it, so what a
calendar app expands is exactly what will run. Its RRULE could not be right
past the window (EXDATEs are listed, not rules), and a COUNT would count the
excluded occurrences that the scheduler does not: with ``max_occurrences`` such
a job is listed occurrence by occurrence instead. A Google Calendar link for it
carries the next occurrence only.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, time, timedelta
from functools import lru_cache
from typing import Any
from urllib.parse import quote, urlencode
from zoneinfo import ZoneInfo

import icalendar

from nexus_schedd import __version__
from nexus_schedd.model import Job, RecurrenceKind
from nexus_schedd.model.schedule import excluded_occurrences, occurrences
from nexus_schedd.model.times import resolve_zone

PRODID = f"-//nexus-schedd//nexus-schedd {__version__}//EN"
MAX_EVENTS_PER_JOB = 500
"""Bound on the VEVENTs one job without an RRULE contributes to an export."""
MAX_EXDATES_PER_JOB = 2000
"""Bound on the EXDATEs of one job's RRULE; past it the RRULE ends earlier."""

_FREQUENCIES = {
    RecurrenceKind.MINUTELY: "MINUTELY",
    RecurrenceKind.HOURLY: "HOURLY",
    RecurrenceKind.DAILY: "DAILY",
    RecurrenceKind.WEEKLY: "WEEKLY",
    RecurrenceKind.MONTHLY: "MONTHLY",
    RecurrenceKind.YEARLY: "YEARLY",
}
_ELAPSED_KINDS = frozenset({RecurrenceKind.MINUTELY, RecurrenceKind.HOURLY})
_GCAL_BASE = "https://calendar.google.com/calendar/render"
_OCCURRENCE_CHUNK = 50
# How far ahead an open-ended schedule is checked for DST gaps; the tz database
# repeats each zone's yearly rule beyond its listed transitions.
_GAP_HORIZON_YEARS = 80


def current_occurrence(job: Job) -> datetime | None:
    """The instant of the job's next (or running) occurrence, None when it is final."""
    if job.status.is_final:
        return None
    return job.scheduled_for or job.run_at


def rrule_for(job: Job) -> dict[str, Any] | None:
    """The RRULE (as icalendar's dict form) starting at the job's current occurrence,
    or None when its recurrence has no RRULE equivalent (cron, once, none)."""
    recurrence = job.recurrence
    start = current_occurrence(job)
    if recurrence is None or start is None or recurrence.kind not in _FREQUENCIES:
        return None
    if recurrence.exclude and recurrence.max_occurrences is not None:
        return None  # COUNT would count excluded occurrences (see the module doc)
    if recurrence.kind not in _ELAPSED_KINDS and _gap_can_move_an_occurrence(job, start):
        return None
    rule: dict[str, Any] = {"freq": _FREQUENCIES[recurrence.kind], "interval": recurrence.interval}
    local_start = _event_start(job, start)
    if (
        recurrence.kind is RecurrenceKind.MONTHLY
        and job.anchor_at.astimezone(resolve_zone(recurrence.timezone)).day > 28
    ):
        anchor_day = job.anchor_at.astimezone(resolve_zone(recurrence.timezone)).day
        rule["bymonthday"] = list(range(28, anchor_day + 1))
        rule["bysetpos"] = -1
    elif recurrence.kind is RecurrenceKind.YEARLY and (local_start.month, local_start.day) in (
        (2, 28),
        (2, 29),
    ):
        anchor = job.anchor_at.astimezone(resolve_zone(recurrence.timezone))
        if (anchor.month, anchor.day) == (2, 29):
            rule["bymonth"] = [2]
            rule["bymonthday"] = [28, 29]
            rule["bysetpos"] = -1
    if recurrence.max_occurrences is not None:
        rule["count"] = max(1, recurrence.max_occurrences - job.occurrence_count)
    if recurrence.ends_at is not None:
        rule["until"] = recurrence.ends_at.astimezone(UTC)
    return rule


def _gap_can_move_an_occurrence(job: Job, start: datetime) -> bool:
    """Whether a DST gap of the job's zone, from ``start`` to the end of its schedule
    (at most ``_GAP_HORIZON_YEARS``), covers the schedule's wall-clock time."""
    recurrence = job.recurrence
    assert recurrence is not None
    zone = resolve_zone(recurrence.timezone)
    if not isinstance(zone, ZoneInfo):
        return False
    # The anchor carries the schedule's wall-clock time, also when the first
    # occurrence was moved by a gap (schedule_anchor).
    wall = job.anchor_at.astimezone(zone).time().replace(tzinfo=None)
    last_year = start.year + _GAP_HORIZON_YEARS
    if recurrence.ends_at is not None:
        last_year = min(last_year, recurrence.ends_at.year)
    return any(_covers(gap, wall) for gap in _gaps(zone.key, start.year, last_year))


def _covers(gap: tuple[datetime, datetime], wall: time) -> bool:
    first_skipped, first_after = gap
    for day in (first_skipped.date(), first_skipped.date() + timedelta(days=1)):
        if first_skipped <= datetime.combine(day, wall) < first_after:
            return True
    return first_after - first_skipped >= timedelta(days=1)


@lru_cache(maxsize=64)
def _gaps(zone_key: str, first_year: int, last_year: int) -> tuple[tuple[datetime, datetime], ...]:
    """The naive local spans [first skipped, first after) of the zone's gaps."""
    zone = ZoneInfo(zone_key)
    found = []
    instant = datetime(first_year, 1, 1, tzinfo=UTC)
    end = datetime(last_year + 1, 1, 1, tzinfo=UTC)
    # No zone of the tz database changes its offset twice within 12 hours.
    step = timedelta(hours=12)
    offset = instant.astimezone(zone).utcoffset()
    while instant < end:
        following = instant + step
        later = following.astimezone(zone).utcoffset()
        if later != offset and offset is not None and later is not None:
            if later > offset:
                low, high = instant, following
                while high - low > timedelta(seconds=1):
                    middle = low + (high - low) / 2
                    if middle.astimezone(zone).utcoffset() == offset:
                        low = middle
                    else:
                        high = middle
                change = high.replace(microsecond=0, tzinfo=None)
                found.append((change + offset, change + later))
            offset = later
        instant = following
    return tuple(found)


def upcoming_occurrences(
    job: Job, until: datetime, limit: int = MAX_EVENTS_PER_JOB
) -> list[datetime]:
    """The job's occurrences from its current one up to ``until`` (at most ``limit``)."""
    start = current_occurrence(job)
    if start is None or start > until:
        return []
    found = [start]
    recurrence = job.recurrence
    if recurrence is None or not recurrence.repeats:
        return found
    remaining = limit - 1
    if recurrence.max_occurrences is not None:
        remaining = min(remaining, recurrence.max_occurrences - job.occurrence_count - 1)
    after = start
    while remaining > 0:
        chunk = occurrences(recurrence, job.anchor_at, after, min(_OCCURRENCE_CHUNK, remaining))
        for instant in chunk:
            if instant > until or (recurrence.ends_at is not None and instant > recurrence.ends_at):
                return found
            found.append(instant)
        if len(chunk) < min(_OCCURRENCE_CHUNK, remaining):
            break
        remaining -= len(chunk)
        after = chunk[-1]
    return found


def build_calendar(jobs: Iterable[Job], now: datetime, days: int) -> bytes:
    """RFC 5545 text for ``jobs`` over the ``days`` from ``now``."""
    calendar = icalendar.Calendar()
    calendar.add("prodid", PRODID)
    calendar.add("version", "2.0")
    calendar.add("x-wr-calname", "nexus-schedd")
    until = now + timedelta(days=days)
    for job in jobs:
        rule = rrule_for(job)
        start = current_occurrence(job)
        if rule is not None and start is not None:
            event = _event(job, start, now, uid=f"{job.id}@nexus-schedd")
            if job.recurrence is not None and job.recurrence.exclude:
                exdates = _exclude_within(job, rule, start, until)
                if exdates:
                    event.add("exdate", [_event_start(job, instant) for instant in exdates])
            event.add("rrule", rule)
            calendar.add_component(event)
            continue
        for index, instant in enumerate(upcoming_occurrences(job, until)):
            uid = f"{job.id}-{job.occurrence_count + index}@nexus-schedd"
            calendar.add_component(_event(job, instant, now, uid=uid))
    calendar.add_missing_timezones()
    result: bytes = calendar.to_ical()
    return result


def _exclude_within(
    job: Job, rule: dict[str, Any], start: datetime, until: datetime
) -> list[datetime]:
    """Cut ``rule`` at the end of the window (or earlier, where the EXDATEs would
    pass :data:`MAX_EXDATES_PER_JOB`) and return the occurrences its exclusion
    calendars remove up to there."""
    recurrence = job.recurrence
    assert recurrence is not None
    end = min(until, rule["until"]) if "until" in rule else until
    removed = excluded_occurrences(recurrence, job.anchor_at, start, end, MAX_EXDATES_PER_JOB + 1)
    if len(removed) > MAX_EXDATES_PER_JOB:
        end = removed[MAX_EXDATES_PER_JOB] - timedelta(seconds=1)
        removed = removed[:MAX_EXDATES_PER_JOB]
    rule["until"] = end.astimezone(UTC)
    return removed


def gcal_url(job: Job) -> str | None:
    """A Google Calendar "add event" link for the job's next occurrence (with its
    recurrence where one maps), or None when the job is final."""
    start = current_occurrence(job)
    if start is None:
        return None
    params = {
        "action": "TEMPLATE",
        "text": title(job),
        "dates": f"{_gcal_time(start)}/{_gcal_time(start + timedelta(minutes=30))}",
        "details": description(job),
    }
    # A recurrence with exclusions has no rule a link can carry (no EXDATEs).
    rule = None if job.recurrence is not None and job.recurrence.exclude else rrule_for(job)
    if rule is not None:
        params["recur"] = "RRULE:" + icalendar.vRecur(rule).to_ical().decode()  # type: ignore[no-untyped-call]
        if job.recurrence is not None and job.recurrence.kind not in _ELAPSED_KINDS:
            params["ctz"] = job.recurrence.timezone
    return f"{_GCAL_BASE}?{urlencode(params, quote_via=quote)}"


def title(job: Job) -> str:
    """The event title: the job's name, else its type and target."""
    if job.name:
        return job.name
    return f"{job.job_type} {job.target_id}" if job.target_id else job.job_type


def description(job: Job) -> str:
    """The event description: what the job is."""
    lines = [f"nexus-schedd job {job.id}", f"type: {job.job_type}"]
    if job.target_id:
        lines.append(f"target: {job.target_id}")
    if job.recurrence is not None:
        recurrence = job.recurrence
        what = (
            recurrence.cron
            if recurrence.cron
            else f"every {recurrence.interval} {recurrence.kind.value}"
        )
        lines.append(f"recurrence: {what} ({recurrence.timezone})")
        if recurrence.exclude:
            lines.append(f"except on: {', '.join(recurrence.exclude)}")
    return "\n".join(lines)


def _event(job: Job, start: datetime, now: datetime, *, uid: str) -> icalendar.Event:
    event = icalendar.Event()
    event.add("uid", uid)
    event.add("dtstamp", now.astimezone(UTC))
    event.add("dtstart", _event_start(job, start))
    event.add("summary", title(job))
    event.add("description", description(job))
    event.add("categories", [job.job_type])
    return event


def _event_start(job: Job, start: datetime) -> datetime:
    """In the job's IANA zone for calendar kinds (wall-clock rules), else UTC."""
    recurrence = job.recurrence
    if recurrence is None or recurrence.kind in _ELAPSED_KINDS:
        return start.astimezone(UTC)
    zone = resolve_zone(recurrence.timezone)
    return start.astimezone(zone) if isinstance(zone, ZoneInfo) else start.astimezone(UTC)


def _gcal_time(instant: datetime) -> str:
    return instant.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
