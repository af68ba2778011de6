"""Rate limits per job type (SPEC 15): a token bucket on starts, on top of the
concurrency limits. A job over its type's rate waits (it is late, not failed) in
a queue of its type; the scheduler sleeps until the next token of the earliest
such type, so nothing polls and other types are not held up."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from nexus_schedd.errors import InvalidSpec

_PERIODS = {"second": 1.0, "minute": 60.0, "hour": 3600.0}
_WHOLE = 1.0 - 1e-9
"""A token, allowing for the float error of refilling at ``count / period`` (a
bucket refilled exactly to its next token's time may hold 0.9999999999)."""
_RATE = re.compile(r"\s*(\d{1,9})\s*/\s*(second|minute|hour)\s*")


@dataclass(frozen=True, slots=True)
class Rate:
    """At most ``count`` starts per ``period_s`` seconds, in bursts of up to ``count``."""

    count: int
    period_s: float

    @classmethod
    def parse(cls, text: Any, field: str) -> Rate:
        """``"100/minute"`` (second, minute or hour), else InvalidSpec naming ``field``."""
        found = _RATE.fullmatch(text) if isinstance(text, str) else None
        if found is None:
            raise InvalidSpec(
                field, f"must be like '100/minute' (second|minute|hour), got {text!r}"
            )
        count = int(found.group(1))
        if count < 1:
            raise InvalidSpec(field, "the count must be at least 1")
        return cls(count, _PERIODS[found.group(2)])

    def __str__(self) -> str:
        unit = next(name for name, seconds in _PERIODS.items() if seconds == self.period_s)
        return f"{self.count}/{unit}"


class TokenBucket:
    """``rate.count`` tokens at most, refilled continuously at count / period."""

    __slots__ = ("capacity", "per_s", "tokens", "updated")

    def __init__(self, rate: Rate, now: datetime) -> None:
        self.capacity = float(rate.count)
        self.per_s = rate.count / rate.period_s
        self.tokens = self.capacity
        self.updated = now

    def take(self, now: datetime) -> bool:
        """Take a token if there is one (refilling up to ``now`` first)."""
        if now > self.updated:
            elapsed = (now - self.updated).total_seconds()
            self.tokens = min(self.capacity, self.tokens + elapsed * self.per_s)
            self.updated = now
        if self.tokens >= _WHOLE:
            self.tokens -= 1.0
            return True
        return False

    def give_back(self) -> None:
        """A token taken for a start that did not happen."""
        self.tokens = min(self.capacity, self.tokens + 1.0)

    def next_token_at(self) -> datetime:
        """When the bucket holds a whole token again."""
        missing = max(0.0, 1.0 - self.tokens)
        # Rounded up to the microsecond (a datetime's resolution): rounded to the
        # nearest, the loop woke a little before the token was whole, found none,
        # and was told the same instant again (a loop that never slept on a
        # virtual clock, a few extra passes on the real one).
        return self.updated + timedelta(microseconds=math.ceil(missing / self.per_s * 1e6))


class RateLimits:
    """The buckets of the types that have a rate, and the jobs waiting for a token."""

    def __init__(self, rates: Mapping[str, Rate]) -> None:
        self.rates = dict(rates)
        self._buckets: dict[str, TokenBucket] = {}
        self.waiting: dict[str, list[Any]] = {}
        """Ready entries per type, waiting for a token (first come, first served)."""

    def __bool__(self) -> bool:
        return bool(self.rates)

    def take(self, job_type: str, now: datetime) -> bool:
        """True if a job of ``job_type`` may start now (a token taken, or no rate)."""
        rate = self.rates.get(job_type)
        if rate is None:
            return True
        bucket = self._buckets.get(job_type)
        if bucket is None:
            bucket = self._buckets[job_type] = TokenBucket(rate, now)
        return bucket.take(now)

    def give_back(self, job_type: str) -> None:
        bucket = self._buckets.get(job_type)
        if bucket is not None:
            bucket.give_back()

    def wake_at(self) -> datetime | None:
        """The earliest next token of a type with jobs waiting for one."""
        times = [self._buckets[t].next_token_at() for t, queue in self.waiting.items() if queue]
        return min(times) if times else None

    def due(self, now: datetime) -> list[Any]:
        """Take the waiting entries of every type with a token by ``now``: they go
        back to the ready heap (dispatch takes the tokens; the rest wait again)."""
        released: list[Any] = []
        for job_type in [t for t, queue in self.waiting.items() if queue]:
            if self._buckets[job_type].next_token_at() <= now:
                released.extend(self.waiting.pop(job_type))
        return released

    def release_all(self) -> list[Any]:
        """Every waiting entry (the rates changed)."""
        released = [entry for queue in self.waiting.values() for entry in queue]
        self.waiting.clear()
        return released
