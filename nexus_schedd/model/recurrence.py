"""The recurrence value of a job: what repeats, how often, in which zone, until when.

This module holds the value and its validation; the calendar arithmetic (DST,
month-end clamping, cron) lives in :mod:`nexus_schedd.model.schedule`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from nexus_schedd.errors import InvalidSpec
from nexus_schedd.model.calendars import check_exclude
from nexus_schedd.model.times import format_instant, parse_instant, resolve_zone


class RecurrenceKind(StrEnum):
    """How a job repeats."""

    ONCE = "once"
    MINUTELY = "minutely"
    HOURLY = "hourly"
    DAILY = "daily"
    WEEKLY = "weekly"
    MONTHLY = "monthly"
    YEARLY = "yearly"
    CRON = "cron"


UNIT_KINDS: dict[str, RecurrenceKind] = {
    "minute": RecurrenceKind.MINUTELY,
    "hour": RecurrenceKind.HOURLY,
    "day": RecurrenceKind.DAILY,
    "week": RecurrenceKind.WEEKLY,
    "month": RecurrenceKind.MONTHLY,
    "year": RecurrenceKind.YEARLY,
}

_FIELDS = ("kind", "interval", "cron", "timezone", "ends_at", "max_occurrences", "exclude")


@dataclass(frozen=True, slots=True)
class Recurrence:
    """One recurrence rule. ``cron`` is set exactly when ``kind`` is ``cron``.

    ``exclude`` names exclusion calendars (SPEC section 15, see
    :mod:`nexus_schedd.model.calendars`): occurrences on their dates do not happen.
    Its default, the empty tuple, is one shared value for every recurrence
    without exclusions.
    """

    kind: RecurrenceKind
    interval: int = 1
    cron: str | None = None
    timezone: str = "UTC"
    ends_at: datetime | None = None
    max_occurrences: int | None = None
    exclude: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.kind, RecurrenceKind):
            raise InvalidSpec("recurrence.kind", f"unknown kind {self.kind!r}")
        if isinstance(self.interval, bool) or not isinstance(self.interval, int):
            raise InvalidSpec("recurrence.interval", "must be a whole number >= 1")
        if self.interval < 1:
            raise InvalidSpec("recurrence.interval", f"must be >= 1, got {self.interval}")
        if self.kind is RecurrenceKind.CRON:
            if not isinstance(self.cron, str) or not self.cron.strip():
                raise InvalidSpec("recurrence.cron", "a cron recurrence needs an expression")
        elif self.cron is not None:
            raise InvalidSpec(
                "recurrence.cron", f"only kind 'cron' takes an expression, not {self.kind.value!r}"
            )
        resolve_zone(self.timezone, "recurrence.timezone")
        if self.ends_at is not None and self.ends_at.tzinfo is None:
            raise InvalidSpec("recurrence.ends_at", "must carry a UTC offset")
        if self.max_occurrences is not None and (
            isinstance(self.max_occurrences, bool)
            or not isinstance(self.max_occurrences, int)
            or self.max_occurrences < 1
        ):
            raise InvalidSpec("recurrence.max_occurrences", "must be a whole number >= 1")
        if self.exclude != ():
            # Checked names, as a tuple (hashable, shared empty value).
            object.__setattr__(self, "exclude", check_exclude(self.exclude))

    @property
    def repeats(self) -> bool:
        """False for ``once``: the job runs one occurrence."""
        return self.kind is not RecurrenceKind.ONCE

    def to_json(self) -> dict[str, Any]:
        """The JSON form of SPEC section 2; ``exclude`` only when it names calendars
        (so a recurrence without exclusions reads and is stored as before)."""
        data: dict[str, Any] = {
            "kind": self.kind.value,
            "interval": self.interval,
            "cron": self.cron,
            "timezone": self.timezone,
            "ends_at": None if self.ends_at is None else format_instant(self.ends_at),
            "max_occurrences": self.max_occurrences,
        }
        if self.exclude:
            data["exclude"] = list(self.exclude)
        return data

    @classmethod
    def from_json(cls, data: Any, default_timezone: str = "UTC") -> Recurrence:
        """Build from the JSON form, naming the field and reason of any problem."""
        if not isinstance(data, dict):
            raise InvalidSpec("recurrence", "must be an object or null")
        unknown = set(data) - set(_FIELDS)
        if unknown:
            raise InvalidSpec("recurrence", f"unknown field(s): {', '.join(sorted(unknown))}")
        kind_value = data.get("kind")
        if kind_value is None and data.get("cron") is not None:
            kind_value = "cron"
        try:
            kind = RecurrenceKind(str(kind_value))
        except ValueError:
            choices = ", ".join(k.value for k in RecurrenceKind)
            raise InvalidSpec(
                "recurrence.kind", f"unknown kind {kind_value!r} (use one of {choices})"
            ) from None
        timezone = data.get("timezone") or default_timezone
        if not isinstance(timezone, str):
            raise InvalidSpec("recurrence.timezone", "must be a string")
        zone = resolve_zone(timezone, "recurrence.timezone")
        ends_at_raw = data.get("ends_at")
        if ends_at_raw is not None and not isinstance(ends_at_raw, str):
            raise InvalidSpec("recurrence.ends_at", "must be an RFC 3339 string or null")
        cron = data.get("cron")
        if cron is not None and not isinstance(cron, str):
            raise InvalidSpec("recurrence.cron", "must be a string")
        interval = data.get("interval", 1)
        if interval is None:
            interval = 1
        return cls(
            kind=kind,
            interval=interval,
            cron=cron,
            timezone=timezone,
            ends_at=None
            if ends_at_raw is None
            else parse_instant(ends_at_raw, zone, "recurrence.ends_at"),
            max_occurrences=data.get("max_occurrences"),
            exclude=check_exclude(data.get("exclude")),
        )
