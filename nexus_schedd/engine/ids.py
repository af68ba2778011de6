"""Run and job ids: ULID-format strings from the engine's clock, made cheaply.

Not a rule (it draws random bits and remembers the last millisecond), so it
lives apart from :mod:`.policies`.
"""

from __future__ import annotations

import random
from datetime import datetime

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
# Every 10-bit value as two Crockford characters: an id is 13 lookups, not 26.
_PAIRS = tuple(a + b for a in _CROCKFORD for b in _CROCKFORD)


class RunIds:
    """ULID-format run (and job) ids from the engine's clock, without the cost of the ulid
    package on the dispatch path (about 1 us instead of 15).

    48 bits of milliseconds then 80 bits, Crockford base32, 26 characters: they
    sort by start time like every other id in the store. Within one millisecond
    they count up from a random start (ULID's monotonic variant), so ids made
    together sort in the order they were made: jobs added in one call, and the
    runs of one start batch, are neighbours in the store's B-trees, and a
    checkpoint of 32 starts touches a few pages, not 32 (docs/performance.md,
    round 6). The start is 79 random bits, so counting up never carries into
    the time.
    """

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        self._millis = -1
        self._prefix = ""
        self._last = 0
        self._now: datetime | None = None

    def next(self, now: datetime) -> str:
        """A new id for a run starting at ``now``."""
        if now is self._now:
            # The jobs of one start batch (or one add) share their ``now``.
            r = self._last + 1
        else:
            self._now = now
            millis = int(now.timestamp() * 1000)
            if millis != self._millis:
                # 48 time bits as 10 characters: two zero pad bits then 5 pairs.
                self._millis, self._prefix = millis, _encode_pairs(millis, 5)
                r = self._rng.getrandbits(79)
            else:
                r = self._last + 1
        self._last = r
        # 80 bits as 16 characters, unrolled: a third of a join's cost.
        p = _PAIRS
        return (
            f"{self._prefix}{p[r >> 70]}{p[(r >> 60) & 1023]}{p[(r >> 50) & 1023]}"
            f"{p[(r >> 40) & 1023]}{p[(r >> 30) & 1023]}{p[(r >> 20) & 1023]}"
            f"{p[(r >> 10) & 1023]}{p[r & 1023]}"
        )


def _encode_pairs(value: int, pairs: int) -> str:
    """The low ``pairs * 10`` bits of ``value`` in Crockford base32."""
    pairs_table = _PAIRS
    return "".join(
        [pairs_table[(value >> shift) & 1023] for shift in range(pairs * 10 - 10, -1, -10)]
    )
