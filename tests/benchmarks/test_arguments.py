"""The benchmarks' count arguments refuse what they cannot measure, saying why."""

from __future__ import annotations

import argparse

import pytest

from benchmarks.common import count_at_least


def test_a_count_takes_whole_numbers_from_its_minimum() -> None:
    parse = count_at_least(1)
    assert parse("1") == 1
    assert parse("20000") == 20_000


@pytest.mark.parametrize(
    ("text", "reason"),
    [("0", "must be at least 1, not 0"), ("-3", "must be at least 1"), ("2.5", "not a whole")],
)
def test_a_count_refuses_what_is_not_one(text: str, reason: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match=reason):
        count_at_least(1)(text)
