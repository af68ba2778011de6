"""Where the real daemon's CPU goes per job: py-spy samples of the daemon process
and, separately, of its SQLite writer process, taken only during the measured
window of ``benchmarks.daemon_throughput`` (jobs added over the socket before they
fall due, SQLite, durability full, 64 slots).

    python -m benchmarks.profile_daemon [--jobs 50000] [--py-spy PATH] [--rate 250]
        [--out DIR] [--top 25] [--postgres DSN] [--syscalls] [--log-level warning]

``--postgres`` profiles one node daemon on a PostgreSQL schema instead (as
``benchmarks.multinode`` runs it; no writer process there). ``--syscalls`` counts,
instead of sampling, the system calls each process makes in the window (``perf
stat`` on the syscall tracepoints, cheap enough not to change the batching):
``fdatasync`` per job is the writer's commits per job, ``sendto``/``recvfrom`` the
messages between the loop and the writer (or PostgreSQL), ``epoll_pwait`` the
event loop's turns (uvloop polls once per turn), ``getpid`` the calls of
asyncio's ``get_running_loop`` (CPython checks the pid on each; about 100 ns).
py-spy's ``--native`` samples over-count system calls: count them here before
reading a syscall's share of a profile as its cost.

py-spy is not a dependency (``pip install py-spy`` into any venv and pass its
path); it attaches from outside, so the daemon runs unmodified. ``--native`` adds
the C frames (SQLite, uvloop, pickle). Each process gets a collapsed-stack file
in ``--out`` and a table of its top functions by self samples and by inclusive
samples, with the share of the process's busy samples and that share of the
CPU microseconds per job the process used (from /proc over the same window).
"""

from __future__ import annotations

import argparse
import contextlib
import re
import shutil
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

from benchmarks.daemon_throughput import measure_sqlite

_LINE_NUMBER = re.compile(r":\d+\)$")
_BLOCKING_LEAVES = (
    "epoll_pwait",
    "epoll_wait",
    "poll ",
    "select ",
    "nanosleep",
    "fdatasync",
    "fsync",
)


def _waiting(functions: list[str]) -> str | None:
    """What a sample waits on, or None when it is on the CPU.

    py-spy with ``--native`` keeps samples of threads blocked in the kernel, so
    they are sorted out here: lock and queue waits (idle worker threads), the
    event loop's epoll, fsync, and the writer's blocking read of the next request.
    """
    leaf = functions[-1]
    if leaf.startswith(("fdatasync", "fsync")):
        return "fsync (I/O wait)"
    if leaf.startswith(_BLOCKING_LEAVES):
        return "epoll/poll (idle loop)"
    if any(f.startswith("PyThread_acquire_lock_timed") for f in functions):
        return "lock or queue wait (idle thread)"
    if leaf.startswith("recv") and any(f.startswith("read_message") for f in functions):
        return "reading the next request (writer idle)"
    return None


def summarize(collapsed: Path, top: int) -> dict[str, Any]:
    """Samples of a py-spy raw profile: where the wall time went (waits by kind,
    CPU), and the CPU samples per function, self and inclusive (Python frames)."""
    self_counts: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    wall: Counter[str] = Counter()
    cpu = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        frames = [_LINE_NUMBER.sub(")", frame) for frame in stack.split(";")]
        thread = frames[0] if frames[0].startswith("thread") else ""
        functions = [frame for frame in frames if not frame.startswith(("process ", "thread"))]
        if not functions:
            continue
        waiting = _waiting(functions)
        if waiting is not None:
            wall[waiting] += count
            continue
        label = thread.split(": ", 1)[-1] if thread else "?"
        wall[f"CPU, thread {label}"] += count
        cpu += count
        self_counts[functions[-1]] += count
        for function in {f for f in functions if ".py)" in f}:
            inclusive[function] += count
    return {
        "cpu_samples": cpu,
        "wall": wall.most_common(),
        "self": self_counts.most_common(top),
        "inclusive": inclusive.most_common(top),
    }


@contextlib.contextmanager
def _sampling(py_spy: str, pids: dict[str, list[int]], *, out: Path, rate: int) -> Iterator[None]:
    """py-spy record on the daemon and on its writer process for the window."""
    recorders = []
    for role in ("daemon", "writer"):
        for pid in pids.get(role, []):
            command = [
                py_spy,
                "record",
                "--pid",
                str(pid),
                "--rate",
                str(rate),
                "--format",
                "raw",
                "--native",
                "--threads",
                "--output",
                str(out / f"{role}.txt"),
            ]
            recorders.append(
                subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            )
    time.sleep(0.5)  # attached before the jobs fall due
    try:
        yield
    finally:
        for recorder in recorders:
            recorder.send_signal(signal.SIGINT)
        for recorder in recorders:
            recorder.wait(timeout=60)


_SYSCALLS = (
    "fdatasync",
    "sendto",
    "recvfrom",
    "sendmsg",
    "recvmsg",
    "write",
    "read",
    "pwrite64",
    "getpid",
    "epoll_pwait",
)


@contextlib.contextmanager
def _counting(pids: dict[str, list[int]], *, out: Path) -> Iterator[None]:
    """perf stat of the syscall tracepoints on each process for the window."""
    events = ",".join(f"syscalls:sys_enter_{name}" for name in _SYSCALLS)
    counters = []
    for role in ("daemon", "writer"):
        for pid in pids.get(role, []):
            command = ["perf", "stat", "-x", ",", "-e", events, "-p", str(pid)]
            command += ["-o", str(out / f"{role}.syscalls")]
            counters.append(subprocess.Popen(command, stderr=subprocess.DEVNULL))
    time.sleep(0.5)
    try:
        yield
    finally:
        for counter in counters:
            counter.send_signal(signal.SIGINT)
        for counter in counters:
            counter.wait(timeout=60)


def _syscall_counts(path: Path) -> dict[str, int]:
    counts = {}
    for line in path.read_text().splitlines():
        fields = line.split(",")
        if len(fields) > 2 and "sys_enter_" in fields[2] and fields[0].isdigit():
            counts[fields[2].rsplit("sys_enter_", 1)[1]] = int(fields[0])
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=50_000)
    parser.add_argument("--py-spy", default=shutil.which("py-spy") or "py-spy")
    parser.add_argument("--rate", type=int, default=250, help="samples per second")
    parser.add_argument("--out", type=Path, default=Path("/tmp/nxb-profile"))
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--postgres", metavar="DSN", help="profile one PostgreSQL node")
    parser.add_argument("--syscalls", action="store_true", help="count system calls instead")
    parser.add_argument(
        "--log-level",
        default="warning",
        choices=["info", "warning"],
        help="the daemon's log level (info: two lines per run, the default level)",
    )
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.syscalls:
        hook: Any = partial(_counting, out=args.out)
    else:
        hook = partial(_sampling, args.py_spy, out=args.out, rate=args.rate)
    if args.postgres:
        from benchmarks.multinode import measure

        result = measure(args.postgres, args.jobs, 1, window_hook=hook)
        print(f"PostgreSQL backends: {result['cpu server']} per job")
    else:
        result = measure_sqlite(args.jobs, log_level=args.log_level, window_hook=hook)
    tool = "perf stat" if args.syscalls else f"py-spy at {args.rate}/s"
    print(
        f"{args.jobs:,} jobs, {result['jobs_per_s']:,} jobs/s under {tool}, load {result['load']}"
    )
    if args.syscalls:
        for role in ("daemon", "writer"):
            path = args.out / f"{role}.syscalls"
            if path.exists():
                per_job = {k: round(v / args.jobs, 4) for k, v in _syscall_counts(path).items()}
                print(f"{role}: system calls per job {per_job}")
        return
    for role, key in (("daemon", "cpu daemon"), ("writer", "cpu writer")):
        path = args.out / f"{role}.txt"
        if not path.exists():
            continue
        if not result[key]:
            continue
        cpu_us = result[key]["total_us"]
        summary = summarize(path, args.top)
        all_samples = sum(count for _, count in summary["wall"])
        print(f"\n== {role}: {cpu_us} us CPU per job (/proc); {all_samples} samples")
        print("-- wall time: share of samples")
        for what, count in summary["wall"]:
            print(f"{count / all_samples:6.1%}  {what}")
        for kind in ("self", "inclusive"):
            print(f"-- CPU by {kind} samples: share of CPU samples, us/job, function")
            for function, count in summary[kind]:
                share = count / summary["cpu_samples"]
                print(f"{share:6.1%} {share * cpu_us:6.1f}  {function}")


if __name__ == "__main__":
    main()
