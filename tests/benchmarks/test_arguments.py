"""The benchmarks' count arguments refuse what they cannot measure, saying why."""

from __future__ import annotations

import argparse

import pytest

from benchmarks.common import count_at_least
from benchmarks.daemon_throughput import arguments


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


def test_the_daemon_benchmark_takes_one_size_or_several_in_order() -> None:
    assert arguments().parse_args([]).jobs == [100_000]
    assert arguments().parse_args(["--jobs", "20000", "100000"]).jobs == [20_000, 100_000]


def test_the_daemon_benchmark_refuses_a_size_it_cannot_measure(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        arguments().parse_args(["--jobs", "20000", "0"])
    assert exit_info.value.code == 2
    assert "must be at least 1, not 0" in capsys.readouterr().err
