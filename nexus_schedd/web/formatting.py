"""How the dashboard writes times, durations, recurrences and outputs for people."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from nexus_schedd.model import Recurrence, RecurrenceKind
from nexus_schedd.model.times import resolve_zone

MAX_SHOWN_JSON = 8000

_UNITS = {
    RecurrenceKind.MINUTELY: "minute",
    RecurrenceKind.HOURLY: "hour",
    RecurrenceKind.DAILY: "day",
    RecurrenceKind.WEEKLY: "week",
    RecurrenceKind.MONTHLY: "month",
    RecurrenceKind.YEARLY: "year",
}


def local_zone() -> tzinfo:
    """The server's zone as an IANA zone ($TZ, else /etc/localtime), else UTC.

    An IANA zone, not a fixed offset, so a 24-hour timeline across a DST change
    labels its hours right.
    """
    name = os.environ.get("TZ", "").lstrip(":")
    if not name:
        target = str(Path("/etc/localtime").resolve())
        _, found, name = target.partition("/zoneinfo/")
        if not found:
            return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return UTC


def display_zone(configured: str) -> tzinfo:
    """The configured zone, or the server's local one when none is configured."""
    return resolve_zone(configured) if configured else local_zone()


def format_time(instant: datetime | None, zone: tzinfo) -> str:
    """``2026-11-27 17:22:08 CET`` in ``zone``; an em dash for no time."""
    if instant is None:
        return "—"
    return instant.astimezone(zone).strftime("%Y-%m-%d %H:%M:%S %Z").strip()


def format_relative(instant: datetime | None, now: datetime) -> str:
    """``in 5 min`` / ``3 s ago`` / ``now``."""
    if instant is None:
        return ""
    seconds = (instant - now).total_seconds()
    span = abs(seconds)
    if span < 1:
        return "now"
    if span < 90:
        text = f"{span:.0f} s"
    elif span < 90 * 60:
        text = f"{span / 60:.0f} min"
    elif span < 36 * 3600:
        text = f"{span / 3600:.1f} h"
    else:
        text = f"{span / 86400:.1f} d"
    return f"in {text}" if seconds > 0 else f"{text} ago"


def format_duration(milliseconds: float | None) -> str:
    """``850 µs``, ``12.3 ms``, ``4.2 s``, ``3 min 5 s``; empty for no duration."""
    if milliseconds is None:
        return ""
    if milliseconds < 1:
        return f"{milliseconds * 1000:.0f} µs"
    if milliseconds < 1000:
        return f"{milliseconds:.1f} ms"
    seconds = milliseconds / 1000
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {rest} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


def describe_recurrence(recurrence: Recurrence | None) -> str:
    """A one-line summary: ``every 2 hours``, ``cron 0 9 * * 1-5 (Europe/Berlin)``."""
    if recurrence is None or recurrence.kind is RecurrenceKind.ONCE:
        return "once"
    if recurrence.kind is RecurrenceKind.CRON:
        text = f"cron {recurrence.cron}"
    else:
        unit = _UNITS[recurrence.kind]
        interval = recurrence.interval
        text = f"every {unit}" if interval == 1 else f"every {interval} {unit}s"
    text += f" ({recurrence.timezone})"
    if recurrence.max_occurrences is not None:
        text += f", {recurrence.max_occurrences} times"
    if recurrence.ends_at is not None:
        text += f", until {recurrence.ends_at.isoformat()}"
    if recurrence.exclude:
        text += f", except on {', '.join(recurrence.exclude)}"
    return text


def format_json(value: Any) -> str:
    """Indented JSON, cut at a size a page can show."""
    text = json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str)
    if len(text) > MAX_SHOWN_JSON:
        return text[:MAX_SHOWN_JSON] + f"\n… ({len(text) - MAX_SHOWN_JSON} more characters)"
    return text
