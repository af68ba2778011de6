"""Kill -9 soak: a child process runs Engine + SQLiteStore + SystemClock on a real
file while adding jobs; the driver SIGKILLs it at random moments and restarts it.
At the end every acknowledged job must have run at least once and the database
must pass ``PRAGMA integrity_check``.

    python -m benchmarks.crash_soak --kills 20

The child logs a job id to ``acked.log`` only after ``add_jobs`` returned (the
add is durable then), and its handler appends the job id to ``ran.log`` with an
fsync before returning, so both logs survive the kill.
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path

import anyio
import structlog

from nexus_schedd.clock import SystemClock
from nexus_schedd.engine import Engine, EngineSettings
from nexus_schedd.handlers.base import HandlerContext
from nexus_schedd.handlers.registry import HandlerRegistry
from nexus_schedd.model import Job, JobDefaults, JobResult, JobSpec, JobStatus
from nexus_schedd.store import SQLiteStore

FINAL = (JobStatus.COMPLETED, JobStatus.FAILED_PERMANENT, JobStatus.CANCELED)


class AppendingHandler:
    """Appends each job id it runs to a file, fsync'd, then succeeds."""

    def __init__(self, path: Path) -> None:
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def supports(self, job_type: str) -> bool:
        return job_type == "soak"

    async def handle(self, job: Job, ctx: HandlerContext) -> JobResult:
        os.write(self._fd, f"{job.id}\n".encode())
        os.fsync(self._fd)
        await anyio.sleep(random.uniform(0, 0.005))
        return JobResult.success()


async def child(workdir: Path, drain: bool) -> None:
    """Serve the store; add jobs until killed (or, with ``drain``, run everything due)."""
    store = SQLiteStore(workdir / "soak.db", durability="full")
    await store.open()
    handler = AppendingHandler(workdir / "ran.log")
    clock = SystemClock()
    settings = EngineSettings(
        max_concurrency=32,
        defaults=JobDefaults(max_retries=1000, backoff_base_s=0.05, backoff_max_s=0.2),
    )
    engine = Engine(store, HandlerRegistry({"soak": handler}), clock, settings)
    acked = os.open(workdir / "acked.log", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        async with anyio.create_task_group() as tg:
            await tg.start(engine.run)
            if drain:
                while True:
                    counts = await store.count_by_status()
                    if not any(counts.get(s, 0) for s in (JobStatus.PENDING, JobStatus.RUNNING)):
                        break
                    await anyio.sleep(0.05)
            else:
                while True:
                    now = clock.now()
                    specs = [
                        JobSpec(
                            job_type="soak",
                            run_at=now + timedelta(seconds=random.uniform(0, 0.5)),
                        )
                        for _ in range(random.randint(1, 50))
                    ]
                    jobs = await engine.add_jobs(specs)
                    os.write(acked, "".join(f"{job.id}\n" for job in jobs).encode())
                    os.fsync(acked)
                    await anyio.sleep(random.uniform(0, 0.01))
            await engine.stop(grace_s=5)
    finally:
        os.close(acked)
        await store.close()


def read_ids(path: Path) -> list[str]:
    if not path.exists():
        return []
    # A kill can cut the last line short; only whole ULIDs count.
    return [line for line in path.read_text().splitlines() if len(line) == 26]


def drive(kills: int, workdir: Path, seed: int) -> int:
    """Run the soak; returns the process exit code (0 when nothing was lost)."""
    rng = random.Random(seed)
    command = [sys.executable, "-m", "benchmarks.crash_soak", "--child", str(workdir)]
    started = time.monotonic()
    for _ in range(kills):
        process = subprocess.Popen(command)
        time.sleep(rng.uniform(0.4, 1.5))
        process.send_signal(signal.SIGKILL)
        process.wait()
    drain = subprocess.run([*command, "--drain"], check=False, timeout=300)
    acked = read_ids(workdir / "acked.log")
    ran = Counter(read_ids(workdir / "ran.log"))
    lost = [job_id for job_id in acked if job_id not in ran]
    with sqlite3.connect(workdir / "soak.db") as db:
        integrity = db.execute("PRAGMA integrity_check").fetchone()[0]
        statuses = dict(db.execute("SELECT status, COUNT(*) FROM jobs GROUP BY status").fetchall())
        crashed = db.execute("SELECT COUNT(*) FROM runs WHERE outcome = ?", ("crashed",))
        crashed_runs = crashed.fetchone()[0]
    duplicates = sum(1 for job_id in acked if ran[job_id] > 1)
    print(f"kills:        {kills}")
    print(f"jobs acked:   {len(acked)}")
    print(f"ran:          {sum(1 for job_id in acked if job_id in ran)}")
    print(f"lost:         {len(lost)}")
    print(f"duplicates:   {duplicates} (ran more than once: at-least-once delivery)")
    print(f"crashed runs: {crashed_runs}")
    print(f"job statuses: {statuses}")
    print(f"integrity:    {integrity}")
    print(f"drain exit:   {drain.returncode}")
    print(f"seconds:      {time.monotonic() - started:.1f}")
    ok = not lost and integrity == "ok" and drain.returncode == 0 and acked
    print("RESULT:       " + ("PASS" if ok else "FAIL"))
    return 0 if ok else 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument("--child", metavar="DIR", help=argparse.SUPPRESS)
    parser.add_argument("--drain", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    if args.child:
        anyio.run(child, Path(args.child), args.drain, backend_options={"use_uvloop": True})
        return
    seed = args.seed if args.seed is not None else random.randrange(2**32)
    workdir = Path(tempfile.mkdtemp(prefix="crash-soak-", dir="/tmp"))
    print(f"seed {seed}, work directory {workdir}")
    code = drive(args.kills, workdir, seed)
    if not args.keep and code == 0:
        for name in ("soak.db", "soak.db-wal", "soak.db-shm", "acked.log", "ran.log"):
            (workdir / name).unlink(missing_ok=True)
        workdir.rmdir()
    sys.exit(code)


if __name__ == "__main__":
    main()
