"""The headline (``daemon_throughput``) for two versions of the code, in
interleaved pairs on one machine: a git revision against the working tree.

    python -m benchmarks.ab_daemon --base REV [--jobs 100000] [--pairs 4]
        [--log-level warning] [--plain] [--keep]

On a machine whose speed moves by a third from one hour to the next, a figure
taken before a change and one taken after it say little; runs of the two
versions back to back, pair after pair, say more (docs/performance.md).

How it runs:

- ``REV`` is checked out with ``git worktree add --detach`` into a scratch
  directory, and this tree's ``benchmarks/*.py`` are copied over its own, so
  both sides are measured by the same benchmark (the same jobs, config and
  window); only the daemon they start differs. A run started from a tree's
  directory imports that tree's ``nexus_schedd`` (the daemon subprocess gets
  it on ``PYTHONPATH``), with this interpreter and its installed dependencies.
- Each pair runs ``python -m benchmarks.daemon_throughput --jobs N`` in the
  base tree, then in this one (APScheduler's memory store runs in each, so
  each side has its own same-run ratio).
- It prints each run (jobs/s, APScheduler's jobs/s, the ratio, CPU us per job
  of the daemon process and of its writer process, the load average), then
  the means of each side and this tree's figures over the base's, pair by
  pair and in the mean; ``--json`` adds them as JSON. The worktree is removed
  at the end unless ``--keep``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from statistics import fmean
from typing import Any

from benchmarks.common import REPO, count_at_least


@dataclass(frozen=True)
class Sample:
    """One run of ``daemon_throughput`` for one side."""

    side: str
    jobs_per_s: float
    apscheduler_jobs_per_s: float | None
    daemon_us: float | None
    writer_us: float | None
    load: str

    @property
    def ratio(self) -> float | None:
        """This run's jobs/s over APScheduler's memory store's in the same run."""
        if not self.apscheduler_jobs_per_s:
            return None
        return self.jobs_per_s / self.apscheduler_jobs_per_s


def parse_output(side: str, output: str) -> Sample:
    """The sample in ``daemon_throughput``'s output (its JSON follows the table)."""
    start = output.find("\n[")
    if start < 0:
        raise ValueError(f"{side}: no JSON in daemon_throughput's output:\n{output[-2000:]}")
    reports = json.loads(output[start + 1 :])
    details = reports[0]["details"]
    ours = details["nexus_schedd"][0]
    theirs = (details.get("apscheduler_memory") or [None])[0]
    daemon, writer = ours.get("cpu daemon"), ours.get("cpu writer")
    if ours.get("jobs_per_s") is None:
        raise ValueError(f"{side}: the run gave no jobs/s: {ours}")
    return Sample(
        side=side,
        jobs_per_s=float(ours["jobs_per_s"]),
        apscheduler_jobs_per_s=None if theirs is None else float(theirs["jobs_per_s"]),
        daemon_us=None if daemon is None else float(daemon["total_us"]),
        writer_us=None if writer is None else float(writer["total_us"]),
        load=str(ours.get("load", "")),
    )


def _mean(values: Sequence[float | None]) -> float | None:
    present = [value for value in values if value is not None]
    return fmean(present) if present else None


def _over(after: float | None, before: float | None) -> float | None:
    return None if after is None or not before else after / before


def summarize(pairs: Sequence[tuple[Sample, Sample]]) -> dict[str, Any]:
    """Each side's means, and the head's figures over the base's: pair by pair
    and of the means (jobs/s: above 1 is faster; CPU: below 1 is cheaper)."""
    sides: dict[str, dict[str, float | None]] = {}
    for index, name in ((0, "base"), (1, "head")):
        runs = [pair[index] for pair in pairs]
        sides[name] = {
            "jobs_per_s": _mean([run.jobs_per_s for run in runs]),
            "ratio_to_apscheduler": _mean([run.ratio for run in runs]),
            "daemon_us": _mean([run.daemon_us for run in runs]),
            "writer_us": _mean([run.writer_us for run in runs]),
        }
    fields = ("jobs_per_s", "daemon_us", "writer_us")
    by_pair = [
        {field: _over(getattr(head, field), getattr(base, field)) for field in fields}
        for base, head in pairs
    ]
    of_means = {field: _over(sides["head"][field], sides["base"][field]) for field in fields}
    faster = sum(1 for change in by_pair if (change["jobs_per_s"] or 0) > 1)
    return {
        "pairs": len(pairs),
        "means": sides,
        "head_over_base_by_pair": by_pair,
        "head_over_base_of_means": of_means,
        "pairs_where_head_was_faster": faster,
    }


def _number(value: float | None, digits: int = 1) -> str:
    if value is None:
        return "-"
    return f"{value:,.0f}" if digits == 0 else f"{value:.{digits}f}"


def format_report(pairs: Sequence[tuple[Sample, Sample]], summary: dict[str, Any]) -> str:
    lines = [
        f"{'pair':>4}  {'side':<4}  {'jobs/s':>8}  {'APScheduler':>11}  {'ratio':>6}"
        f"  {'daemon us':>9}  {'writer us':>9}  load"
    ]
    for number, pair in enumerate(pairs, 1):
        for run in pair:
            ratio = "-" if run.ratio is None else f"{run.ratio:.2f}x"
            lines.append(
                f"{number:>4}  {run.side:<4}  {_number(run.jobs_per_s, 0):>8}"
                f"  {_number(run.apscheduler_jobs_per_s, 0):>11}  {ratio:>6}"
                f"  {_number(run.daemon_us):>9}  {_number(run.writer_us):>9}  {run.load}"
            )
    for name in ("base", "head"):
        means = summary["means"][name]
        ratio = means["ratio_to_apscheduler"]
        lines.append(
            f"mean  {name:<4}  {_number(means['jobs_per_s'], 0):>8}  {'':>11}"
            f"  {'-' if ratio is None else f'{ratio:.2f}x':>6}"
            f"  {_number(means['daemon_us']):>9}  {_number(means['writer_us']):>9}"
        )
    of_means = summary["head_over_base_of_means"]
    lines.append(
        "head / base, of the means: "
        + ", ".join(
            f"{label} {_number(of_means[field], 2)}"
            for field, label in (
                ("jobs_per_s", "jobs/s"),
                ("daemon_us", "daemon CPU"),
                ("writer_us", "writer CPU"),
            )
        )
        + f"; head faster in {summary['pairs_where_head_was_faster']} of {summary['pairs']} pairs"
    )
    return "\n".join(lines)


@contextmanager
def base_tree(revision: str, *, keep: bool) -> Iterator[Path]:
    """``revision`` checked out beside this tree, with this tree's benchmark scripts."""
    scratch = Path(tempfile.mkdtemp(prefix="nexus-ab-"))
    tree = scratch / "base"
    added = subprocess.run(
        ["git", "-C", str(REPO), "worktree", "add", "--detach", str(tree), revision],
        capture_output=True,
        text=True,
        check=False,
    )
    if added.returncode != 0:
        shutil.rmtree(scratch, ignore_errors=True)
        raise RuntimeError(f"git worktree add {revision}: {added.stderr.strip()}")
    try:
        for script in (REPO / "benchmarks").glob("*.py"):
            shutil.copy2(script, tree / "benchmarks" / script.name)
        yield tree
    finally:
        if keep:
            print(f"kept the base worktree: {tree}", file=sys.stderr)
        else:
            subprocess.run(
                ["git", "-C", str(REPO), "worktree", "remove", "--force", str(tree)],
                check=False,
                capture_output=True,
            )
            shutil.rmtree(scratch, ignore_errors=True)


def measure(tree: Path, side: str, arguments: Sequence[str]) -> Sample:
    """One ``daemon_throughput`` run started from ``tree``."""
    environment = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.daemon_throughput", *arguments],
        cwd=tree,
        env=environment,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"{side}: daemon_throughput exited {done.returncode}:\n{done.stderr[-3000:]}"
        )
    return parse_output(side, done.stdout)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--base", required=True, metavar="REV", help="the git revision to compare")
    parser.add_argument("--jobs", type=count_at_least(1000), default=100_000)
    parser.add_argument("--pairs", type=count_at_least(1), default=4)
    parser.add_argument("--log-level", default="warning", choices=["info", "warning"])
    parser.add_argument(
        "--plain",
        action="store_true",
        help="without the rate limit and [[notify]] rules configured for other types",
    )
    parser.add_argument("--keep", action="store_true", help="keep the base worktree")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON too")
    args = parser.parse_args(argv)
    known = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--verify", "--quiet", f"{args.base}^{{commit}}"],
        capture_output=True,
        check=False,
    )
    if known.returncode != 0:
        parser.error(f"--base: not a commit in {REPO}: {args.base!r}")
    arguments = ["--jobs", str(args.jobs), "--log-level", args.log_level]
    if args.plain:
        arguments.append("--plain")
    pairs: list[tuple[Sample, Sample]] = []
    with base_tree(args.base, keep=args.keep) as tree:
        for number in range(1, args.pairs + 1):
            base = measure(tree, "base", arguments)
            head = measure(REPO, "head", arguments)
            pairs.append((base, head))
            print(
                f"pair {number}: base {base.jobs_per_s:,.0f}, head {head.jobs_per_s:,.0f} jobs/s",
                file=sys.stderr,
            )
    summary = summarize(pairs)
    print(f"base {args.base} against this tree, {args.jobs:,} jobs, {args.log_level}")
    print(format_report(pairs, summary))
    if args.json:
        runs = [[asdict(base), asdict(head)] for base, head in pairs]
        print(json.dumps({"runs": runs, "summary": summary}, indent=2))


if __name__ == "__main__":
    main()
