"""Run ids: ULID format, decodable by the ulid package, sorted by start time and,
within a millisecond, by the order they were made."""

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


def test_ids_of_one_millisecond_count_up_from_the_generators_random_start() -> None:
    # ULID's monotonic variant: ids made together sort in the order they were
    # made, so a batch's rows are neighbours in the store's B-trees.
    ids, twin = RunIds(random.Random(11)), random.Random(11)
    for millisecond in range(3):
        now = T0 + timedelta(milliseconds=millisecond)
        start = twin.getrandbits(79)
        made = [ids.next(now) for _ in range(500)]
        assert made == sorted(made)
        counters = [int.from_bytes(ULID.from_str(i).bytes[6:], "big") for i in made]
        assert counters == list(range(start, start + 500))


def test_each_millisecond_starts_at_a_new_random_point() -> None:
    ids = RunIds(random.Random(5))
    firsts = {ids.next(T0 + timedelta(milliseconds=i))[10:] for i in range(200)}
    assert len(firsts) == 200
