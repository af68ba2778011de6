"""Headline throughput through the real daemon (issue 21): N one-shot no-op jobs
added over the control socket before they fall due, run by a ``nexus-schedd``
subprocess (SQLite, durability full, the default ``max_concurrency`` 64, uvloop),
next to APScheduler 3.11's memory store in the same run, and CPU per job of each
process: the daemon (its event loop) and its SQLite writer process.

    python -m benchmarks.daemon_throughput [--jobs 100000 [N ...]] [--repeat 1]
        [--log-level warning] [--default-log-level] [--history 0] [--watch]

How it measures, and why the measuring does not load the daemon:

- The daemon runs from a temporary config: ``[store] durability = "full"``,
  ``max_concurrency = 64``, and the no-op handler loaded as a plugin
  (``[handlers.bench] factory = "benchmarks.bench_handlers:bench_handler"``).
- The jobs are added with the client library over the control socket, AddJobs
  of 1,000, all with one ``run_at``: ``LEAD_S`` plus the time the adds would take
  at ``ASSUMED_ADD_RATE`` after the first add. A run whose adds end less than
  ``MARGIN_S`` before that instant is refused (an error, not a figure).
- Nothing asks the daemon anything while the jobs run: no Watch stream (it
  would encode two events per job in the daemon) and no GetStatus polling.
  ``--watch`` (which ``make bench`` passes) adds a row with one Watch stream
  open from the adds' end to the last finish, as nexus-schedweb keeps one for
  its metrics and live pages: its jobs/s, the daemon's CPU per job, and how
  many of the runs' events (two per job) reached the stream (a subscriber
  that falls behind loses the oldest). The
  handler sends one datagram every 1,000 calls (``progress_every``); once
  they add up to N the benchmark opens the store file read-only from its own
  process and checks, every 10 ms, that no job is pending or running and no
  run is open: every finish is on disk.
- Jobs/s is N over the span from the first ``started_at`` to the last
  ``finished_at`` of the daemon's own run records (the ``runs`` table). A job
  whose start is checkpointed ahead (``start_ahead_ms``) records its ``run_at``
  as ``started_at``, so the span starts at the due instant.
- ``log_level = "warning"`` by default, as in the other workloads: at "info" the
  daemon writes a log event per run start and end, which would measure the log
  sink (``--log-level info`` shows that cost; ``--default-log-level``, which
  ``make bench`` passes, adds a row at "info", the default users run).
- CPU: user and system time of the daemon process and, separately, of its
  SQLite writer process (the daemon's child), from ``/proc/PID/stat``, read
  once the adds are done (before the due instant) and again once every finish
  is on disk, divided by N. The window also holds the idle wait before the
  due instant (an idle daemon uses no CPU: workload 4) and the last commit.

``--history H`` puts H finished runs (of H other, completed jobs of type
``history``, one run each, started within the last day so ``[history] keep_days``
keeps them; the figures count only the ``bench`` runs) into the
store before the daemon starts: the figures of a daemon that has been running
for a while, whose history prunes (every 10,000 finished runs) look at what it
keeps. Without it the store starts empty.

APScheduler 3.11: ``apscheduler_side throughput --store memory`` with the same N
(the jobs put into a paused AsyncIOScheduler, jobs/s from resume to the last
call) and its process's CPU per job over that span.

The ratio depends on N. APScheduler's memory store keeps its jobs in one list
sorted by next run time: each run removes its job from that list (``del`` at
the front, which moves every job behind it) and each wake-up lists every due
job, so its CPU per job grows with the jobs waiting (about 32 us at 20,000 jobs
and 61 at 100,000 on the round-6 machine), while the daemon's stays flat. Pass
several sizes (``--jobs 20000 50000 100000``) to see both sides at each.

``measure_daemons`` is also what the PostgreSQL row (``benchmarks.multinode``)
uses, with one daemon per node on a shared schema.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import socket
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any, Protocol

import anyio
import structlog

from benchmarks.common import (
    Daemon,
    Report,
    Row,
    count_at_least,
    emit,
    process_tree,
    run_apscheduler,
    workdir,
)
from nexus_schedd.control.client import Client
from nexus_schedd.model.times import format_instant
from nexus_schedd.store import SQLiteStore

BATCH = 1000
"""Jobs per AddJobs call."""
PROGRESS_EVERY = 1000
"""The handler reports every this many calls."""
LEAD_S = 2.0
ASSUMED_ADD_RATE = 5000.0
"""Adds/s assumed when choosing the due instant (workload 2 measures about 25,000
on a quiet 2-core machine; a busy one may do a fifth of that). If the adds end
too late, the measurement is made again with the due instant set from the
measured add rate (``AddsTooSlow``)."""
MARGIN_S = 0.5
POLL_S = 0.01
TICKS = os.sysconf("SC_CLK_TCK")


def process_cpu(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of one process, all its threads, from /proc/PID/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) / TICKS, int(fields[12]) / TICKS


def cpu_per_job(
    before: tuple[float, float], after: tuple[float, float], jobs: int
) -> dict[str, float]:
    """User, system and total microseconds per job between two ``process_cpu`` readings."""
    user = (after[0] - before[0]) / jobs * 1e6
    system = (after[1] - before[1]) / jobs * 1e6
    return {
        "user_us": round(user, 1),
        "sys_us": round(system, 1),
        "total_us": round(user + system, 1),
    }


def load_average() -> str:
    """The 1, 5 and 15 minute load averages (the machine is shared)."""
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


OPERATIONS_CONFIGURED = """
[limits.rates]
send_reminder = "100/minute"

[[notify]]
on = ["failed_permanent", "retry", "crashed", "overdue", "misfire_skipped"]
job_types = ["send_reminder", "export_*"]
job_type = "bench"

[calendars.holidays-de]
holidays = "DE"

[calendars.shutdown]
ranges = [["2026-12-24", "2027-01-01"]]
"""
"""SPEC 15 operations configured but not hit by the benchmark's ``bench`` jobs: a
rate limit, [[notify]] rules (every event) for other job types, and exclusion
calendars no job names. Issue 20 asks
that ``make bench`` shows no regression with them configured."""


def sqlite_config(
    progress_socket: Path, *, log_level: str = "warning", operations: bool = False
) -> str:
    """A daemon on its own SQLite store (state_dir), durability full, 64 slots;
    ``operations`` adds :data:`OPERATIONS_CONFIGURED`."""
    extra = OPERATIONS_CONFIGURED if operations else ""
    return f"""
[daemon]
log_level = "{log_level}"
log_format = "json"
max_concurrency = 64

[store]
durability = "full"

[control]
admin_group = ""

[handlers.bench]
factory = "benchmarks.bench_handlers:bench_handler"
progress_socket = "{progress_socket}"
progress_every = {PROGRESS_EVERY}
{extra}"""


WindowHook = Callable[[dict[str, list[int]]], contextlib.AbstractContextManager[object]]
"""Entered with the measured pids ({"daemon": [...], "writer": [...]}) when the
measured window opens, left when it closes (profilers attach here)."""


class AddsTooSlow(RuntimeError):
    """The adds ended too close to the due instant: no figure from this run."""

    def __init__(self, message: str, adds_per_s: float) -> None:
        super().__init__(message)
        self.adds_per_s = adds_per_s


@dataclass(frozen=True)
class Finished:
    """What the store says once the jobs are done."""

    runs: int
    first_start_us: int
    last_finish_us: int


class StoreView(Protocol):
    """How the benchmark reads a store from its own process."""

    async def finished(self) -> Finished | None:
        """The run records once no job is pending or running and no run is open."""
        ...

    async def server_pids(self) -> list[int]:
        """Processes of a database server working for the daemons (none for SQLite)."""
        ...


class SQLiteView:
    """The daemon's SQLite file, opened read-only for each look."""

    def __init__(self, db_path: Path) -> None:
        self.db_path = db_path

    async def finished(self) -> Finished | None:
        connection = sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=5)
        try:
            (busy,) = connection.execute(
                "SELECT count(*) FROM jobs WHERE status IN ('pending', 'running')"
            ).fetchone()
            (open_runs,) = connection.execute(
                "SELECT count(*) FROM runs WHERE outcome IS NULL"
            ).fetchone()
            if busy or open_runs:
                return None
            runs, first, last = connection.execute(
                "SELECT count(*), min(started_at), max(finished_at) FROM runs"
                " WHERE outcome = 'success' AND job_type = 'bench'"
            ).fetchone()
        finally:
            connection.close()
        return Finished(runs, first, last)

    async def server_pids(self) -> list[int]:
        return []


@contextlib.asynccontextmanager
async def sqlite_view(daemon: Daemon) -> AsyncIterator[StoreView]:
    """A ``StoreView`` of the first daemon's own SQLite store."""
    yield SQLiteView(daemon.db_path)


@contextlib.contextmanager
def _progress_socket(path: Path) -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    try:
        yield sock
    finally:
        sock.close()


async def _wait_progress(sock: socket.socket, jobs: int, nodes: int) -> None:
    """Wait until the handlers' reports show (nearly) every job called."""
    reported = 0
    # Each node reports whole thousands; the rest is what the store probe sees.
    needed = jobs - nodes * (PROGRESS_EVERY - 1)
    while reported < needed:
        await anyio.wait_readable(sock)
        while True:
            try:
                sock.recv(64, socket.MSG_DONTWAIT)
            except BlockingIOError:
                break
            reported += PROGRESS_EVERY


def _readable_cpu(pids: list[int]) -> dict[int, tuple[float, float]]:
    """``process_cpu`` of each of ``pids`` that this machine has (and still has)."""
    found = {}
    for pid in pids:
        with contextlib.suppress(FileNotFoundError):
            found[pid] = process_cpu(pid)
    return found


async def _add(socket_path: Path, jobs: int, run_at: str) -> None:
    async with Client(socket_path, timeout=120) as client:
        for offset in range(0, jobs, BATCH):
            count = min(BATCH, jobs - offset)
            await client.add_jobs([{"job_type": "bench", "run_at": run_at}] * count)


class Watcher:
    """A raw Watch stream on the daemon's socket, as a dashboard keeps one: it reads
    every byte and counts the replies (events), so what it costs the daemon is
    the daemon's, and how many events arrived says whether the stream kept up."""

    def __init__(self) -> None:
        self.events = 0

    async def run(self, socket_path: Path, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        async with await anyio.connect_unix(socket_path) as stream:
            await stream.send(
                b'{"method":"io.nexus.Scheduler.Watch","parameters":{"announce":true},'
                b'"more":true}\0'
            )
            announced = await stream.receive()
            self.events = announced.count(b"\0") - 1  # the announcement is no event
            task_status.started()
            while True:
                self.events += (await stream.receive()).count(b"\0")


async def _run_window(
    daemons: Sequence[Daemon],
    jobs: int,
    view: StoreView,
    progress: socket.socket,
    add_rate: float,
    window_hook: WindowHook | None = None,
    watched: bool = False,
) -> dict[str, Any]:
    """Add the jobs through the first daemon, then measure until all are on disk
    (``watched``: with a Watch stream open on the first daemon meanwhile)."""
    added_at = time.monotonic()
    due = datetime.now(UTC) + timedelta(seconds=LEAD_S + jobs / add_rate)
    await _add(daemons[0].socket_path, jobs, format_instant(due))
    add_s = time.monotonic() - added_at
    slack_s = (due - datetime.now(UTC)).total_seconds()
    if slack_s < MARGIN_S:
        raise AddsTooSlow(
            f"adds took {add_s:.1f} s and ended {slack_s:.2f} s before the due instant",
            jobs / add_s,
        )
    await anyio.sleep(min(0.3, slack_s / 2))  # the adds' last commit settles
    pids = {
        "daemon": [d.pid for d in daemons],
        "writer": [p for d in daemons for p in process_tree(d.pid) if p != d.pid],
    }
    hooked = ExitStack()
    if window_hook is not None:
        hooked.enter_context(window_hook(pids))
    watcher = Watcher()
    async with anyio.create_task_group() as watching:
        if watched:
            await watching.start(watcher.run, daemons[0].socket_path)
        before = {pid: process_cpu(pid) for group in pids.values() for pid in group}
        extra_before = _readable_cpu(await view.server_pids())
        with anyio.fail_after(slack_s + 60 + jobs / 1000):
            await _wait_progress(progress, jobs, len(daemons))
        deadline = time.monotonic() + 60
        while (finished := await view.finished()) is None:
            if time.monotonic() > deadline:
                raise RuntimeError("jobs still pending or running 60 s after the last report")
            await anyio.sleep(POLL_S)
        on_disk = datetime.now(UTC)
        if watched:
            await anyio.sleep(0.2)  # the last events on their way
        watching.cancel_scope.cancel()
    assert finished is not None  # the loop above ended with it (the task group hides that)
    hooked.close()
    after = {pid: process_cpu(pid) for pid in before}
    extra_after = _readable_cpu(await view.server_pids())
    span_s = (finished.last_finish_us - finished.first_start_us) / 1e6

    def summed(group: list[int], start: dict[int, tuple[float, float]], end: dict[int, Any]) -> Any:
        if not group:
            return None
        user0 = sum(start.get(p, (0.0, 0.0))[0] for p in group)
        sys0 = sum(start.get(p, (0.0, 0.0))[1] for p in group)
        user1 = sum(end[p][0] for p in group if p in end)
        sys1 = sum(end[p][1] for p in group if p in end)
        return cpu_per_job((user0, sys0), (user1, sys1), jobs)

    return {
        "jobs": jobs,
        "runs_succeeded": finished.runs,
        "jobs_per_s": round(finished.runs / span_s) if span_s > 0 else None,
        "seconds": round(span_s, 3),
        "add_jobs_per_s": round(jobs / add_s),
        "first_start_after_due_ms": round(
            finished.first_start_us / 1000 - due.timestamp() * 1000, 1
        ),
        "on_disk_after_last_finish_ms": round(
            on_disk.timestamp() * 1000 - finished.last_finish_us / 1000, 1
        ),
        "cpu daemon": summed(pids["daemon"], before, after),
        "cpu writer": summed(pids["writer"], before, after),
        "cpu server": summed(list(extra_after), extra_before, extra_after),
        "load": load_average(),
        **({"watch_events": watcher.events, "watch_events_expected": 2 * jobs} if watched else {}),
    }


def measure_daemons(
    configs: Sequence[Callable[[Path], str]],
    jobs: int,
    view: Callable[[Daemon], contextlib.AbstractAsyncContextManager[StoreView]],
    window_hook: WindowHook | None = None,
    history: int = 0,
    watched: bool = False,
) -> dict[str, Any]:
    """Start one daemon per config (each called with the progress socket path),
    add ``jobs`` due jobs through the first, and measure (see the module doc);
    ``history``: finished runs in each SQLite store before its daemon starts;
    ``watched``: a Watch stream open on the first daemon while the jobs run."""
    measure = partial(_measure_once, configs, jobs, view)
    try:
        return measure(ASSUMED_ADD_RATE, window_hook, history, watched)
    except AddsTooSlow as exc:
        return measure(exc.adds_per_s / 2, window_hook, history, watched)


def fill_history(db_path: Path, runs: int) -> None:
    """Create the daemon's SQLite store at ``db_path`` (the store's own schema) and
    put ``runs`` finished runs of as many completed jobs into it, as a daemon that
    ran them would have left them."""

    # The store's own info lines (migrations) would mix with the table on stdout.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))

    async def create() -> None:
        store = SQLiteStore(db_path)
        await store.open()
        await store.close()

    anyio.run(create)
    now = datetime.now(UTC)
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    now_us = (now - epoch) // timedelta(microseconds=1)
    day_us = 86_400 * 1_000_000
    job_sql = (
        "INSERT INTO jobs (id, job_type, status, run_at, scheduled_for, anchor_at,"
        " created_at, updated_at, payload, priority, max_retries, retry_count,"
        " occurrence_count, misfire, misfire_grace_s, overlap, jitter_s, static)"
        " VALUES (?, 'history', 'completed', NULL, ?, ?, ?, ?, '{}', 0, 3, 0, 1,"
        " 'run_once', 60.0, 'forbid', 0.0, 0)"
    )
    run_sql = (
        "INSERT INTO runs (id, job_id, job_type, scheduled_for, attempt, started_at,"
        " finished_at, outcome, error, output, node) VALUES (?, ?, 'history', ?, 1, ?, ?,"
        " 'success', NULL, NULL, '')"
    )
    connection = sqlite3.connect(db_path)
    try:
        for offset in range(0, runs, 10_000):
            batch = range(offset, min(runs, offset + 10_000))
            # Spread over the last day, oldest first, as they would have run.
            at = [now_us - day_us + day_us * n // runs for n in batch]
            connection.executemany(
                job_sql, ((f"h{n:012d}", t, t, t, t) for n, t in zip(batch, at, strict=True))
            )
            connection.executemany(
                run_sql,
                (
                    (f"r{n:012d}", f"h{n:012d}", t, t, t + 1000)
                    for n, t in zip(batch, at, strict=True)
                ),
            )
            connection.commit()
    finally:
        connection.close()


def _measure_once(
    configs: Sequence[Callable[[Path], str]],
    jobs: int,
    view: Callable[[Daemon], contextlib.AbstractAsyncContextManager[StoreView]],
    add_rate: float,
    window_hook: WindowHook | None,
    history: int = 0,
    watched: bool = False,
) -> dict[str, Any]:
    with workdir("nxb-dthr-") as tmp, ExitStack() as stack:
        progress_path = tmp / "progress.sock"
        progress = stack.enter_context(_progress_socket(progress_path))
        daemons = []
        for index, config in enumerate(configs):
            node_dir = tmp / f"node{index}"
            node_dir.mkdir()
            daemon = Daemon(node_dir, config(progress_path))
            if history:
                fill_history(daemon.db_path, history)
            stack.callback(daemon.stop)
            daemon.start()
            daemons.append(daemon)

        async def window() -> dict[str, Any]:
            async with view(daemons[0]) as store_view:
                return await _run_window(
                    daemons, jobs, store_view, progress, add_rate, window_hook, watched
                )

        return anyio.run(window, backend_options={"use_uvloop": True})


def measure_sqlite(
    jobs: int,
    *,
    log_level: str = "warning",
    window_hook: WindowHook | None = None,
    operations: bool = False,
    history: int = 0,
    watched: bool = False,
) -> dict[str, Any]:
    """The SQLite daemon's figures for ``jobs`` jobs (see the module doc)."""
    result = measure_daemons(
        [lambda progress: sqlite_config(progress, log_level=log_level, operations=operations)],
        jobs,
        sqlite_view,
        window_hook,
        history,
        watched,
    )
    result["log_level"] = log_level
    result["operations_configured"] = operations
    result["history_runs"] = history
    return result


def _against(
    rate_title: str,
    cpu_title: str,
    ours: dict[str, Any],
    theirs: dict[str, Any] | None,
    label: str,
) -> list[Row]:
    """A daemon measurement's jobs/s and event-loop CPU rows beside APScheduler's."""
    return [
        Row(
            f"{rate_title} [load {ours['load']}]",
            ours["jobs_per_s"],
            None if theirs is None else round(theirs["jobs_per_s"]),
            theirs_label=label,
        ),
        Row(
            cpu_title,
            ours["cpu daemon"]["total_us"],
            None if theirs is None else theirs.get("cpu_us_per_job"),
            better="lower",
            theirs_label=label,
        ),
    ]


def run(
    jobs: int,
    repeat: int = 1,
    log_level: str = "warning",
    *,
    operations: bool = True,
    history: int = 0,
    default_log_level: bool = False,
    watched: bool = False,
) -> Report:
    """The headline row: the daemon (with ``operations``: rate limits and [[notify]]
    rules configured for other types; ``history`` finished runs in its store
    before it starts), then APScheduler's memory store, ``repeat`` times. With
    ``default_log_level`` (and ``log_level`` not info already), a row more: the
    same daemon at the default ``info``, two log lines per run. With ``watched``,
    a row more: the daemon with a Watch stream open (a dashboard's), and how many
    of the run events reached it."""
    ours_runs: list[dict[str, Any]] = []
    theirs_runs: list[dict[str, Any] | None] = []
    info_runs: list[dict[str, Any]] = []
    watched_runs: list[dict[str, Any]] = []
    for _ in range(repeat):
        ours_runs.append(
            measure_sqlite(jobs, log_level=log_level, operations=operations, history=history)
        )
        theirs_runs.append(run_apscheduler("throughput", "--jobs", str(jobs), "--store", "memory"))
        if default_log_level and log_level != "info":
            info_runs.append(
                measure_sqlite(jobs, log_level="info", operations=operations, history=history)
            )
        if watched:
            watched_runs.append(
                measure_sqlite(
                    jobs, log_level=log_level, operations=operations, history=history, watched=True
                )
            )
    report = Report("0 daemon throughput")
    label = f"memory store, {jobs:,} jobs"
    headline = (
        f"durable jobs/s, real daemon, SQLite, 64 slots, {jobs:,} jobs"
        f"{', rates, notify, calendars configured' if operations else ''}"
        f"{f', {history:,} runs of history' if history else ''}"
    )
    for ours, theirs in zip(ours_runs, theirs_runs, strict=True):
        report.rows += _against(
            headline,
            "CPU us per job, daemon process (event loop) vs APScheduler's process",
            ours,
            theirs,
            label,
        )
        writer = ours["cpu writer"]
        report.rows.append(
            Row(
                "CPU us per job, SQLite writer process",
                None if writer is None else writer["total_us"],
                None,
                better="lower",
                theirs_label="-",
            )
        )
    for info, theirs in zip(info_runs, theirs_runs, strict=False):
        report.rows += _against(
            "durable jobs/s as above at the default log level (info: two lines per run)",
            "CPU us per job at info, daemon process (event loop)",
            info,
            theirs,
            label,
        )
    for watching, theirs in zip(watched_runs, theirs_runs, strict=False):
        report.rows += _against(
            "durable jobs/s as above with a Watch stream open (a dashboard's)",
            "CPU us per job with a Watch stream open, daemon process (event loop)",
            watching,
            theirs,
            label,
        )
        report.rows.append(
            Row(
                "Watch events delivered of the runs' events (2 per job)",
                watching["watch_events"],
                watching["watch_events_expected"],
                theirs_label="sent by the engine",
            )
        )
    report.details = {"nexus_schedd": ours_runs, "apscheduler_memory": theirs_runs}
    if info_runs:
        report.details["nexus_schedd_info"] = info_runs
    if watched_runs:
        report.details["nexus_schedd_watched"] = watched_runs
    return report


def arguments() -> argparse.ArgumentParser:
    """The command line (``main``'s)."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--jobs",
        type=count_at_least(1),
        nargs="+",
        default=[100_000],
        metavar="N",
        help=(
            "jobs per run (default 100000); several sizes measure each in turn, both"
            " schedulers, one report per size: the ratio depends on the size"
            " (APScheduler's memory store keeps its jobs in one sorted list)"
        ),
    )
    parser.add_argument("--repeat", type=int, default=1, help="interleaved pairs")
    parser.add_argument("--log-level", default="warning", choices=["info", "warning"])
    parser.add_argument(
        "--plain",
        action="store_true",
        help="without the rate limit and [[notify]] rules configured for other types",
    )
    parser.add_argument(
        "--default-log-level",
        action="store_true",
        help="also measure the daemon at the default log level, info (two lines per run)",
    )
    parser.add_argument(
        "--history",
        type=count_at_least(0),
        default=0,
        metavar="RUNS",
        help="finished runs in the store before the daemon starts (default 0)",
    )
    parser.add_argument(
        "--watch",
        action="store_true",
        help="also measure the daemon with a Watch stream open, as nexus-schedweb keeps one",
    )
    return parser


def main() -> None:
    args = arguments().parse_args()
    emit(
        [
            run(
                jobs,
                args.repeat,
                args.log_level,
                operations=not args.plain,
                history=args.history,
                default_log_level=args.default_log_level,
                watched=args.watch,
            )
            for jobs in args.jobs
        ]
    )


if __name__ == "__main__":
    main()
