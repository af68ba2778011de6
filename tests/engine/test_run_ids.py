"""Run ids: ULID format, decodable by the ulid package, sorted by start time."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from ulid import ULID

from nexus_schedd.engine.ids import RunIds

T0 = datetime(2031, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)


def test_run_ids_decode_as_ulids_carrying_the_start_millisecond() -> None:
    ids = RunIds(random.Random(7))
    for offset_ms in (0, 1, 999, 86_400_000):
        now = T0 + timedelta(milliseconds=offset_ms)
        run_id = ids.next(now)
        assert len(run_id) == 26
        decoded = ULID.from_str(run_id)
        assert str(decoded) == run_id
        assert decoded.milliseconds == int(now.timestamp() * 1000)


def test_run_ids_sort_by_start_time_and_do_not_repeat() -> None:
    ids = RunIds(random.Random(7))
    made = [ids.next(T0 + timedelta(milliseconds=i // 3)) for i in range(3000)]
    assert len(set(made)) == len(made)
    by_time = [ULID.from_str(i).milliseconds for i in made]
    assert by_time == sorted(by_time)
    assert sorted(made, key=lambda i: ULID.from_str(i).milliseconds) == made
    assert [i[:10] for i in made] == sorted(i[:10] for i in made)


def test_the_random_part_carries_the_generators_80_bits_exactly() -> None:
    ids, twin = RunIds(random.Random(11)), random.Random(11)
    for _ in range(200):
        decoded = ULID.from_str(ids.next(T0))
        assert int.from_bytes(decoded.bytes[6:], "big") == twin.getrandbits(80)
