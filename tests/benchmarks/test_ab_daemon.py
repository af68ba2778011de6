"""benchmarks.ab_daemon: what it reads from daemon_throughput's output, how it
sums pairs up, and the base tree it measures (a real git worktree)."""

from __future__ import annotations

import contextlib
import io
import subprocess
import sys

import pytest

from benchmarks.ab_daemon import Sample, base_tree, format_report, parse_output, summarize
from benchmarks.common import REPO, Report, emit


def daemon_output(jobs_per_s: float, aps: float, daemon_us: float, writer_us: float) -> str:
    """What ``daemon_throughput`` prints: its table, then its JSON."""
    report = Report("0 daemon throughput")
    report.details = {
        "nexus_schedd": [
            {
                "jobs_per_s": jobs_per_s,
                "load": "0.50 0.40 0.30",
                "cpu daemon": {"total_us": daemon_us},
                "cpu writer": {"total_us": writer_us},
            }
        ],
        "apscheduler_memory": [{"jobs_per_s": aps, "cpu_us_per_job": 60.0}],
    }
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        emit([report])
    return printed.getvalue()


def test_a_run_is_read_from_the_json_after_the_table() -> None:
    sample = parse_output("head", daemon_output(24_000, 20_000, 40.5, 20.25))
    assert sample == Sample("head", 24_000.0, 20_000.0, 40.5, 20.25, "0.50 0.40 0.30")
    assert sample.ratio == pytest.approx(1.2)


def test_output_without_a_figure_is_an_error_naming_the_side() -> None:
    with pytest.raises(ValueError, match="base: no JSON"):
        parse_output("base", "Traceback (most recent call last): ...")
    with pytest.raises(ValueError, match="head: the run gave no jobs/s"):
        parse_output(
            "head", daemon_output(0, 1, 1, 1).replace('"jobs_per_s": 0', '"jobs_per_s": null')
        )


def test_pairs_are_summed_up_side_by_side_and_pair_by_pair() -> None:
    pairs = [
        (
            Sample("base", 20_000, 20_000, 50.0, 30.0, ""),
            Sample("head", 25_000, 20_000, 45.0, 15.0, ""),
        ),
        (
            Sample("base", 10_000, 20_000, 70.0, 40.0, ""),
            Sample("head", 9_000, 18_000, 70.0, 20.0, ""),
        ),
    ]
    summary = summarize(pairs)
    assert summary["means"]["base"]["jobs_per_s"] == 15_000
    assert summary["means"]["head"]["ratio_to_apscheduler"] == pytest.approx((1.25 + 0.5) / 2)
    assert [change["jobs_per_s"] for change in summary["head_over_base_by_pair"]] == [1.25, 0.9]
    assert summary["head_over_base_of_means"]["writer_us"] == pytest.approx(17.5 / 35.0)
    assert summary["pairs_where_head_was_faster"] == 1
    report = format_report(pairs, summary)
    assert "   1  head    25,000       20,000   1.25x       45.0       15.0" in report
    assert "head faster in 1 of 2 pairs" in report


def test_the_base_is_a_worktree_of_the_revision_with_this_trees_benchmarks() -> None:
    head = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    with base_tree("HEAD", keep=False) as tree:
        checked_out = subprocess.run(
            ["git", "-C", str(tree), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        assert checked_out == head
        script = tree / "benchmarks" / "ab_daemon.py"
        assert script.read_bytes() == (REPO / "benchmarks" / "ab_daemon.py").read_bytes()
    assert not tree.exists()
    listed = subprocess.run(
        ["git", "-C", str(REPO), "worktree", "list"], capture_output=True, text=True, check=True
    ).stdout
    assert str(tree) not in listed


def test_an_unknown_revision_is_refused_before_anything_runs() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.ab_daemon", "--base", "no-such-revision-here"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2
    assert "--base: not a commit" in done.stderr
    assert "no-such-revision-here" in done.stderr
