"""Parsing and formatting of instants, zones and durations, shared by the CLI,
the config file and the control protocol.

Every function raises :class:`~nexus_schedd.errors.InvalidSpec` naming the field
it was given, so a caller can pass user input straight in.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from nexus_schedd.errors import InvalidSpec

_OFFSET = re.compile(r"^(?:UTC|GMT)?([+-])(\d{1,2})(?::?(\d{2}))?$")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w)\s*$")
_DURATION_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
UNITS = ("minute", "hour", "day", "week", "month", "year")


@lru_cache(maxsize=512)
def resolve_zone(name: str, field: str = "timezone") -> tzinfo:
    """An IANA zone name (``Europe/Berlin``), ``UTC``, or a fixed offset (``+05:30``)."""
    text = name.strip()
    if not text:
        raise InvalidSpec(field, "empty time zone")
    if text.upper() in ("UTC", "Z", "GMT"):
        return UTC
    match = _OFFSET.match(text)
    if match:
        sign, hours, minutes = match.groups()
        delta = timedelta(hours=int(hours), minutes=int(minutes or 0))
        if delta >= timedelta(hours=24):
            raise InvalidSpec(field, f"offset {text!r} is out of range")
        return timezone(-delta if sign == "-" else delta)
    try:
        return ZoneInfo(text)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise InvalidSpec(field, f"unknown time zone {text!r}") from None


def zone_name(zone: tzinfo) -> str:
    """The name under which ``zone`` round-trips through :func:`resolve_zone`."""
    if isinstance(zone, ZoneInfo):
        return zone.key
    if zone is UTC:
        return "UTC"
    offset = zone.utcoffset(None) or timedelta()
    sign = "-" if offset < timedelta() else "+"
    total = abs(int(offset.total_seconds())) // 60
    return f"{sign}{total // 60:02d}:{total % 60:02d}"


def parse_instant(text: str, default_zone: tzinfo | None = None, field: str = "time") -> datetime:
    """Parse RFC 3339 / ISO 8601. Without an offset, the time is read in ``default_zone``
    (the local zone when that is None). Returns an aware datetime."""
    value = text.strip()
    if not value:
        raise InvalidSpec(field, "empty time")
    if value[-1:] == "z":
        value = value[:-1] + "Z"  # RFC 3339 allows a lowercase z; fromisoformat does not
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidSpec(field, f"not an RFC 3339 / ISO 8601 time: {text!r}") from None
    if parsed.tzinfo is None:
        # No offset: read it in the given zone, else in the machine's local zone.
        parsed = parsed.astimezone() if default_zone is None else localize(parsed, default_zone)
    return parsed


def local_wall_time(text: str) -> datetime | None:
    """The naive local date and time ``text`` names when it carries no offset, else
    None (also for text that is not a time; :func:`parse_instant` reports that).

    A recurrence keeps the wall-clock time a user asked for even when a DST gap
    moves its first occurrence (SPEC section 3), which the parsed instant alone
    cannot tell."""
    try:
        parsed = datetime.fromisoformat(text.strip())
    except ValueError:
        return None
    return parsed if parsed.tzinfo is None else None


def localize(naive: datetime, zone: tzinfo) -> datetime:
    """Attach ``zone`` to a naive wall-clock time by the rules of SPEC section 3: a
    time inside a DST gap becomes the first instant after the gap; a time that
    occurs twice takes its first instant."""
    candidate = naive.replace(tzinfo=zone, fold=0)
    if candidate.astimezone(UTC).astimezone(zone).replace(tzinfo=None) == naive:
        return candidate
    return _gap_end(naive, zone)


def _gap_end(naive: datetime, zone: tzinfo) -> datetime:
    """The first real instant after the DST gap that swallows ``naive``."""
    # fold=0 and fold=1 read the wall time with the offsets from either side of
    # the gap; the transition lies between the two instants. Bisect to the second.
    low = naive.replace(tzinfo=zone, fold=1).astimezone(UTC)
    high = naive.replace(tzinfo=zone, fold=0).astimezone(UTC)
    if low > high:
        low, high = high, low
    before = low.astimezone(zone).utcoffset()
    while high - low > timedelta(seconds=1):
        middle = low + (high - low) / 2
        if middle.astimezone(zone).utcoffset() == before:
            low = middle
        else:
            high = middle
    return high.replace(microsecond=0).astimezone(zone)


_FORMATTED: dict[tuple[datetime, int, tzinfo], str] = {}
"""Recently formatted instants, by (instant, fold, zone): the jobs of one AddJobs reply
share their created_at and often their run_at, and formatting is ten times the
cost of the lookup. Emptied when it holds ``_FORMATTED_KEPT``."""
_FORMATTED_KEPT = 4096


def format_instant(instant: datetime, zone: tzinfo | None = None) -> str:
    """RFC 3339 with an explicit offset, in ``zone`` (UTC when None)."""
    # The text depends only on the instant and the zone it is shown in. Aware
    # datetimes with different tzinfos are equal when they are one instant, but
    # two with the same tzinfo compare (and hash) by wall time, fold ignored: the
    # two 01:30 of a night the clocks go back are equal. The fold keeps them apart.
    shown_in = zone or UTC
    key = (instant, instant.fold, shown_in)
    text = _FORMATTED.get(key)
    if text is None:
        if len(_FORMATTED) >= _FORMATTED_KEPT:
            _FORMATTED.clear()
        text = _FORMATTED[key] = instant.astimezone(shown_in).isoformat()
    return text


def parse_duration(text: str, field: str = "duration") -> float:
    """``90s``, ``5m``, ``2h``, ``1d``, ``1w`` (a bare number is seconds) -> seconds."""
    value = text.strip()
    try:
        seconds = float(value)
    except ValueError:
        match = _DURATION.match(value)
        if not match:
            raise InvalidSpec(
                field, f"not a duration: {text!r} (use e.g. 90s, 5m, 2h, 1d, 1w)"
            ) from None
        seconds = float(match.group(1)) * _DURATION_SECONDS[match.group(2)]
    if seconds < 0 or seconds != seconds:
        raise InvalidSpec(field, f"duration must be a non-negative number: {text!r}")
    return seconds


def parse_every(text: str, field: str = "every") -> tuple[int, str]:
    """``"5 minute"`` (or ``"5 minutes"``) -> ``(5, "minute")``."""
    parts = text.split()
    if len(parts) != 2:
        raise InvalidSpec(field, f"expected 'N UNIT', e.g. '5 minute', got {text!r}")
    return parse_interval(parts[0], field), parse_unit(parts[1], field)


def parse_interval(text: str, field: str = "interval") -> int:
    """A whole number >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise InvalidSpec(field, f"interval must be a whole number >= 1, got {text!r}") from None
    if value < 1:
        raise InvalidSpec(field, f"interval must be >= 1, got {value}")
    return value


def parse_unit(text: str, field: str = "unit") -> str:
    """minute | hour | day | week | month | year (a plural ``s`` is accepted)."""
    unit = text.strip().lower()
    if unit.endswith("s") and unit[:-1] in UNITS:
        unit = unit[:-1]
    if unit not in UNITS:
        raise InvalidSpec(field, f"unknown unit {text!r} (use one of {', '.join(UNITS)})")
    return unit
