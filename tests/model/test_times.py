"""format_instant keeps the strings of recent instants: what it returns must be
what formatting would give, whichever instants came before."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from nexus_schedd.model import times
from nexus_schedd.model.times import format_instant

PARIS = ZoneInfo("Europe/Paris")


def test_the_two_wall_times_of_a_night_the_clocks_go_back_format_apart() -> None:
    # 2030-10-27 02:30 happens twice in Paris: +02:00, then +01:00. The two
    # datetimes compare and hash equal (same tzinfo: wall time, fold ignored).
    first = datetime(2030, 10, 27, 2, 30, tzinfo=PARIS)
    second = first.replace(fold=1)
    assert first == second and hash(first) == hash(second)
    assert format_instant(first, PARIS) == "2030-10-27T02:30:00+02:00"
    assert format_instant(second, PARIS) == "2030-10-27T02:30:00+01:00"
    assert format_instant(first) == "2030-10-27T00:30:00+00:00"
    assert format_instant(second) == "2030-10-27T01:30:00+00:00"


def test_one_instant_formats_in_each_zone_it_is_shown_in() -> None:
    instant = datetime(2030, 1, 1, 12, 0, 0, 250_000, tzinfo=UTC)
    same_elsewhere = instant.astimezone(timezone(timedelta(hours=-5)))
    assert format_instant(instant) == "2030-01-01T12:00:00.250000+00:00"
    assert format_instant(same_elsewhere) == "2030-01-01T12:00:00.250000+00:00"
    assert format_instant(instant, PARIS) == "2030-01-01T13:00:00.250000+01:00"
    assert format_instant(same_elsewhere, PARIS) == "2030-01-01T13:00:00.250000+01:00"


def test_the_kept_strings_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(times, "_FORMATTED", {})
    monkeypatch.setattr(times, "_FORMATTED_KEPT", 8)
    start = datetime(2030, 1, 1, tzinfo=UTC)
    for n in range(100):
        instant = start + timedelta(seconds=n)
        assert format_instant(instant) == instant.isoformat()
        assert len(times._FORMATTED) <= 8
