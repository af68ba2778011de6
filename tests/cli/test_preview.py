"""``nexus-schedctl preview`` through the real console script, with no daemon running."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCHEDCTL = Path(sys.executable).with_name("nexus-schedctl")


def schedctl(*args: str, tz: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if key != "TZ"}
    if tz is not None:
        env["TZ"] = tz
    env["NEXUS_SCHEDD_SOCKET"] = "/nonexistent/control.sock"  # prove no daemon is needed
    return subprocess.run(
        [str(SCHEDCTL), *args], capture_output=True, text=True, env=env, timeout=30, check=False
    )


def test_berlin_nightly_cron_runs_once_in_the_repeated_hour() -> None:
    result = schedctl(
        "preview", "--cron", "30 2 * * *", "--tz", "Europe/Berlin",
        "--from", "2025-10-25T12:00", "--count", "2",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert [line.split()[0] for line in lines] == [
        "2025-10-26T02:30:00+02:00",
        "2025-10-27T02:30:00+01:00",
    ]
    assert lines[0].split()[1:] == ["Sun", "CEST"]
    assert result.stderr == ""


@pytest.mark.parametrize("json_flag_first", [True, False])
def test_json_output_is_exactly_a_times_list(json_flag_first: bool) -> None:
    args = ["preview", "--every", "1", "months", "--tz", "Europe/Berlin",
            "--from", "2024-01-31T09:00", "--count", "3"]  # fmt: skip
    args = ["--json", *args] if json_flag_first else [*args, "--json"]
    result = schedctl(*args)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {
        "occurrences": [
            "2024-01-31T09:00:00+01:00",
            "2024-02-29T09:00:00+01:00",
            "2024-03-31T09:00:00+02:00",
        ]
    }


def test_every_lists_from_itself_and_cron_strictly_after() -> None:
    every = schedctl("--json", "preview", "--every", "15", "minute", "--from", "2025-01-01T00:00Z",
                     "--count", "2")  # fmt: skip
    assert json.loads(every.stdout)["occurrences"] == [
        "2025-01-01T00:00:00+00:00",
        "2025-01-01T00:15:00+00:00",
    ]
    cron = schedctl("--json", "preview", "--cron", "*/15 * * * *", "--from", "2025-01-01T00:00Z",
                    "--count", "2", "--tz", "UTC")  # fmt: skip
    assert json.loads(cron.stdout)["occurrences"] == [
        "2025-01-01T00:15:00+00:00",
        "2025-01-01T00:30:00+00:00",
    ]


def test_default_zone_comes_from_tz_and_count_defaults_to_ten() -> None:
    result = schedctl("--json", "preview", "--cron", "0 9 * * *", "--from", "2025-01-01T00:00",
                      tz="Asia/Kolkata")  # fmt: skip
    times = json.loads(result.stdout)["occurrences"]
    assert len(times) == 10
    assert times[0] == "2025-01-01T09:00:00+05:30"


def test_default_start_is_now() -> None:
    result = schedctl("--json", "preview", "--every", "1", "hour", "--count", "1", "--tz", "UTC")
    assert result.returncode == 0, result.stderr
    assert len(json.loads(result.stdout)["occurrences"]) == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--tz", "Mars/Olympus", "--cron", "* * * * *"], "unknown time zone"),
        (["--cron", "61 * * * *"], "bad cron expression"),
        (["--cron", "* * *"], "expected 5 fields"),
        (["--cron", "0 0 30 2 *"], "never fires"),
        (["--cron", "0 0 31 4 *"], "never fires"),
        (["--every", "0", "day"], "interval must be >= 1"),
        (["--every", "x", "day"], "whole number"),
        (["--every", "5", "fortnight"], "unknown unit"),
        (["--cron", "* * * * *", "--from", "next tuesday"], "RFC 3339"),
        (["--cron", "* * * * *", "--count", "0"], "--count"),
        (["--cron", "* * * * *", "--count", "1001"], "--count"),
        (["--cron", "* * * * *", "--count", "ten"], "--count"),
    ],
)
def test_bad_input_exits_1_with_a_one_line_reason(args: list[str], message: str) -> None:
    result = schedctl("preview", *args)
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith("nexus-schedctl: ")
    assert message in result.stderr


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["--cron", "* * * * *", "--every", "1", "day"],
        ["--every", "1"],
    ],
)
def test_usage_errors_exit_2(args: list[str]) -> None:
    result = schedctl("preview", *args)
    assert result.returncode == 2
    assert "usage:" in result.stderr


# --- values that start with "-" (issue 22) ------------------------------------------------


@pytest.mark.parametrize("spelling", [["--tz", "-03:30"], ["--tz=-03:30"], ["--tz", "-0330"]])
def test_a_negative_offset_after_tz_is_a_value_not_an_option(spelling: list[str]) -> None:
    result = schedctl(
        "preview", "--cron", "30 23 * * *", *spelling,
        "--from", "2025-03-08T12:00", "--count", "2",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert [line.split()[0] for line in result.stdout.splitlines()] == [
        "2025-03-08T23:30:00-03:30",
        "2025-03-09T23:30:00-03:30",
    ]


@pytest.mark.parametrize("option", ["--from", "--until", "--tz", "--count", "--max-occurrences"])
def test_every_value_option_reads_a_dash_digit_word_as_its_value(option: str) -> None:
    # "-03:30" is no time and no count: the option's own check refuses it (exit
    # 1, naming the option), which proves argparse handed it over as the value.
    args = ["--cron", "* * * * *", option, "-03:30"]
    if option == "--tz":
        args = ["--cron", "* * * * *", "--tz", "-33:30"]
    result = schedctl("preview", *args)
    assert result.returncode == 1, result.stderr
    assert "expected one argument" not in result.stderr
    assert result.stderr.startswith("nexus-schedctl: ")


# --- end conditions and the DST gap (issue 22) -----------------------------------------------


def test_until_and_max_occurrences_end_the_preview_across_spring_forward() -> None:
    base = [
        "preview",
        "--cron",
        "30 2 * * *",
        "--tz",
        "Europe/Berlin",
        "--from",
        "2025-03-29T12:00",
    ]
    until = schedctl(*base, "--until", "2025-04-01T00:00", "--count", "10")
    assert until.returncode == 0, until.stderr
    assert [line.split()[0] for line in until.stdout.splitlines()] == [
        "2025-03-30T03:00:00+02:00",
        "2025-03-31T02:30:00+02:00",
    ]
    capped = schedctl(*base, "--max-occurrences", "1", "--json")
    assert json.loads(capped.stdout) == {"occurrences": ["2025-03-30T03:00:00+02:00"]}
    too_early = schedctl(*base, "--until", "2025-03-29T13:00")
    assert too_early.returncode == 1
    assert too_early.stderr.startswith("nexus-schedctl: --until: no occurrence")


def test_every_day_from_inside_the_gap_moves_only_the_first_occurrence() -> None:
    result = schedctl(
        "preview", "--every", "1", "day", "--tz", "Europe/Berlin",
        "--from", "2025-03-30T02:30", "--count", "3",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert [line.split()[0] for line in result.stdout.splitlines()] == [
        "2025-03-30T03:00:00+02:00",
        "2025-03-31T02:30:00+02:00",
        "2025-04-01T02:30:00+02:00",
    ]
