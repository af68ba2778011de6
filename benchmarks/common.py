"""Shared pieces of the benchmarks: a real daemon subprocess, /proc readings, the
APScheduler side as a subprocess, direct store population, and the report format.

Every workload prints one table (this daemon, APScheduler 3.11, the ratio) and one
JSON object; ``python -m benchmarks.run_all`` runs all five.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import structlog

REPO = Path(__file__).resolve().parent.parent
BIN_DIR = Path(sys.executable).parent


@dataclass(frozen=True)
class Row:
    """One measured quantity for both schedulers; ``better`` is "higher" or "lower"."""

    metric: str
    ours: float | None
    theirs: float | None
    better: str = "higher"
    theirs_label: str = "APScheduler"

    @property
    def ratio(self) -> float | None:
        """How many times better this daemon is (> 1 means better)."""
        if self.ours is None or self.theirs is None:
            return None
        if self.better == "higher":
            return self.ours / self.theirs if self.theirs else None
        return self.theirs / self.ours if self.ours else None


@dataclass
class Report:
    """A workload's rows plus free-form details for the JSON output."""

    workload: str
    rows: list[Row] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "workload": self.workload,
            "rows": [
                {
                    "metric": r.metric,
                    "ours": r.ours,
                    "apscheduler": r.theirs,
                    "apscheduler_setup": r.theirs_label,
                    "better": r.better,
                    "ratio": None if r.ratio is None else round(r.ratio, 2),
                }
                for r in self.rows
            ],
            "details": self.details,
        }


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def format_table(reports: Sequence[Report]) -> str:
    """One plain-text table for all ``reports``."""
    header = ("workload", "metric", "nexus-schedd", "APScheduler 3.11", "setup", "ratio")
    lines = [header]
    for report in reports:
        for row in report.rows:
            ratio = "-" if row.ratio is None else f"{row.ratio:.2f}x"
            lines.append(
                (
                    report.workload,
                    row.metric,
                    _fmt(row.ours),
                    _fmt(row.theirs),
                    row.theirs_label,
                    ratio,
                )
            )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    out = []
    for index, line in enumerate(lines):
        out.append("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(line)).rstrip())
        if index == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def emit(reports: Sequence[Report]) -> None:
    """Print the table, then the JSON (the benchmarks' output)."""
    print(format_table(reports))
    print(json.dumps([r.to_json() for r in reports], indent=2))


def count_at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type: an integer of at least ``minimum`` (a clear error otherwise)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, not {value}")
        return value

    return parse


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``values``, nearest rank."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def summary_ms(values: Sequence[float]) -> dict[str, float]:
    """p50, p99, max and mean of millisecond samples."""
    return {
        "count": len(values),
        "p50_ms": round(percentile(values, 0.50), 3),
        "p99_ms": round(percentile(values, 0.99), 3),
        "max_ms": round(max(values), 3) if values else float("nan"),
        "mean_ms": round(statistics.fmean(values), 3) if values else float("nan"),
    }


# -- /proc ----------------------------------------------------------------------------


def process_tree(pid: int) -> list[int]:
    """``pid`` and every process under it (the daemon and its SQLite writer process)."""
    found, queue = [], [pid]
    while queue:
        current = queue.pop()
        found.append(current)
        for task in Path(f"/proc/{current}/task").glob("*/children"):
            try:
                queue.extend(int(child) for child in task.read_text().split())
            except FileNotFoundError:
                continue  # a thread that just ended
    return found


def voluntary_switches(pid: int) -> int:
    """Voluntary context switches summed over every thread of ``pid`` and of the
    processes it started (wake-ups)."""
    total = 0
    for process in process_tree(pid):
        for task in Path(f"/proc/{process}/task").iterdir():
            try:
                text = (task / "status").read_text()
            except FileNotFoundError:
                continue  # a thread that just ended
            for line in text.splitlines():
                if line.startswith("voluntary_ctxt_switches:"):
                    total += int(line.split()[1])
    return total


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid`` and the processes it started (all threads)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for process in process_tree(pid):
        fields = Path(f"/proc/{process}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / ticks


def memory_mb(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM (peak resident) in MB, summed over ``pid`` and the processes
    it started (pages they share are counted in each)."""
    values: dict[str, float] = {"VmRSS": 0.0, "VmHWM": 0.0}
    for process in process_tree(pid):
        for line in Path(f"/proc/{process}/status").read_text().splitlines():
            key = line.split(":", 1)[0]
            if key in values:
                values[key] += int(line.split()[1]) / 1024
    return {key: round(value, 1) for key, value in values.items()}


@dataclass(frozen=True)
class IdleSample:
    """Wake-ups and CPU of a process over a quiet interval."""

    seconds: float
    wakeups: int
    cpu_s: float


def measure_idle(pid: int, seconds: float) -> IdleSample:
    """Count ``pid``'s wake-ups and CPU seconds over ``seconds``."""
    switches, cpu, started = voluntary_switches(pid), cpu_seconds(pid), time.monotonic()
    time.sleep(seconds)
    return IdleSample(
        seconds=round(time.monotonic() - started, 2),
        wakeups=voluntary_switches(pid) - switches,
        cpu_s=round(cpu_seconds(pid) - cpu, 3),
    )


# -- the daemon ---------------------------------------------------------------------


def daemon_config(*, extra: str = "", log_level: str = "warning", concurrency: int = 64) -> str:
    """A benchmark config: durable SQLite, the benchmark handlers, own uid only."""
    return f"""
[daemon]
log_level = "{log_level}"
log_format = "json"
max_concurrency = {concurrency}

[store]
durability = "full"

[control]
admin_group = ""

[handlers.bench]
factory = "benchmarks.bench_handlers:bench_handler"
{extra}
"""


class Daemon:
    """A real ``nexus-schedd`` subprocess, started the way systemd would (READY=1 on
    NOTIFY_SOCKET). Its stderr goes to a file so a chatty log never blocks it."""

    def __init__(self, workdir: Path, config_text: str, env: dict[str, str] | None = None):
        self.workdir = workdir
        self.sockdir = Path(tempfile.mkdtemp(prefix="nxb-", dir="/tmp"))
        self.socket_path = self.sockdir / "control.sock"
        self.notify_path = self.sockdir / "notify.sock"
        self.state_dir = workdir / "state"
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.config_path = workdir / "nexus-schedd.toml"
        self.config_path.write_text(config_text)
        self.stderr_path = workdir / "daemon.log"
        self.env = dict(env or {})
        self.proc: subprocess.Popen[bytes] | None = None
        self.ready_after_s: float | None = None

    @property
    def db_path(self) -> Path:
        """Where the daemon keeps its SQLite store (state_dir/schedd.db)."""
        return self.state_dir / "schedd.db"

    def start(self, timeout: float = 120.0) -> None:
        """Start and wait for READY=1; ``ready_after_s`` is spawn-to-READY."""
        notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        notify.bind(str(self.notify_path))
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("NOTIFY_", "WATCHDOG_", "LISTEN_", "NEXUS_SCHEDD_"))
        }
        env["NOTIFY_SOCKET"] = str(self.notify_path)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
        env.update(self.env)
        command = [
            str(BIN_DIR / "nexus-schedd"),
            "--config",
            str(self.config_path),
            "--socket",
            str(self.socket_path),
            "--state-dir",
            str(self.state_dir),
        ]
        try:
            with self.stderr_path.open("ab") as stderr:
                started = time.perf_counter()
                self.proc = subprocess.Popen(
                    command,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=stderr,
                    env=env,
                )
            deadline = time.monotonic() + timeout
            notify.settimeout(0.2)
            while time.monotonic() < deadline:
                try:
                    message = notify.recv(4096).decode()
                except TimeoutError:
                    if self.proc.poll() is not None:
                        raise RuntimeError(f"daemon exited: {self.tail()}") from None
                    continue
                if "READY=1" in message.splitlines():
                    self.ready_after_s = time.perf_counter() - started
                    return
            raise RuntimeError(f"daemon not ready after {timeout} s: {self.tail()}")
        finally:
            notify.close()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def tail(self, lines: int = 20) -> str:
        """The end of the daemon's log."""
        try:
            return "\n".join(self.stderr_path.read_text().splitlines()[-lines:])
        except FileNotFoundError:
            return ""

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it does not exit in time; remove the socket dir."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        shutil.rmtree(self.sockdir, ignore_errors=True)


@contextmanager
def running_daemon(
    workdir: Path, config_text: str, env: dict[str, str] | None = None
) -> Iterator[Daemon]:
    """A started daemon, stopped on exit."""
    daemon = Daemon(workdir, config_text, env)
    try:
        daemon.start()
        yield daemon
    finally:
        daemon.stop()


@contextmanager
def workdir(prefix: str) -> Iterator[Path]:
    """A scratch directory on the same disk the daemon would use (/tmp here)."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=os.environ.get("BENCH_TMP", "/tmp")))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


# -- direct store population ----------------------------------------------------------


async def populate_store(
    db_path: Path, count: int, first_at: datetime, spacing: timedelta, job_type: str = "bench"
) -> float:
    """Insert ``count`` pending one-shot jobs straight through the SQLite store
    (no engine, no socket): the fast way to a large store. Returns seconds taken."""
    from nexus_schedd.model import Job, JobStatus
    from nexus_schedd.model.job import new_id
    from nexus_schedd.store import SQLiteStore

    db_path.parent.mkdir(parents=True, exist_ok=True)
    # The store's own info events (migrated, opened) are noise in a benchmark table.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    store = SQLiteStore(db_path, durability="normal")
    await store.open()
    started = time.perf_counter()
    now = datetime.now(UTC)
    try:
        batch = 20_000
        for offset in range(0, count, batch):
            jobs = []
            for index in range(offset, min(count, offset + batch)):
                at = first_at + spacing * index
                jobs.append(
                    Job(
                        id=new_id(),
                        job_type=job_type,
                        status=JobStatus.PENDING,
                        run_at=at,
                        scheduled_for=at,
                        anchor_at=at,
                        created_at=now,
                        updated_at=now,
                    )
                )
            await store.insert_jobs(jobs)
    finally:
        await store.close()
    return time.perf_counter() - started


# -- the APScheduler side -------------------------------------------------------------


def apscheduler_available() -> bool:
    """True when APScheduler 3.x and SQLAlchemy import in this interpreter."""
    try:
        import apscheduler  # type: ignore[import-not-found,unused-ignore]
        import sqlalchemy  # type: ignore[import-not-found,unused-ignore]  # noqa: F401
    except ImportError:
        return False
    return str(getattr(apscheduler, "__version__", "3")).startswith("3.")


def run_apscheduler(mode: str, *args: str, timeout: float = 900.0) -> dict[str, Any] | None:
    """Run ``benchmarks.apscheduler_side MODE ARGS`` in a fresh process; its JSON result."""
    if not apscheduler_available():
        return None
    command = [sys.executable, "-m", "benchmarks.apscheduler_side", mode, *args]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=timeout, env=env, cwd=REPO, check=False
    )
    if done.returncode != 0:
        print(f"apscheduler {mode} failed:\n{done.stderr[-2000:]}", file=sys.stderr)
        return None
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


@contextmanager
def apscheduler_server(*args: str, timeout: float = 600.0) -> Iterator[tuple[int, float] | None]:
    """Start ``apscheduler_side serve ARGS``; yield (pid, seconds to READY) or None."""
    if not apscheduler_available():
        yield None
        return
    command = [sys.executable, "-m", "benchmarks.apscheduler_side", "serve", *args]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    started = time.perf_counter()
    proc = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
        env=env,
        cwd=REPO,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if line.strip() != "READY":
            yield None
            return
        yield proc.pid, time.perf_counter() - started
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()
