"""The SQLite writer's work per job, on its own: the daemon's row writes replayed.

``python -m benchmarks.writer_replay [--jobs 20000] [--batch 32] [--dir DIR]``

Builds the rows the engine stages for one-shot no-op jobs (the insert at add
time, then, per checkpoint, ``--batch`` starts and the finishes of the batch
before, as under load at 64 slots) with the store's own encoders and segment
builder, and runs them through the writer process's own transaction code
(``writer_process.commit_segments``) on a real database file made by
:class:`SQLiteStore` (schema, WAL, ``synchronous = FULL``), in this process.
It prints the writer's CPU microseconds per job over the start/finish phase and
what SQLite wrote meanwhile (``/proc/self/io``): bytes and write calls per job,
the WAL frames of every commit and the pages its automatic checkpoints copy
back into the database file.

There is no event loop, no socket and no pickling here, so the figure is the
row statements and the commits alone, the part of the writer process that
changes with the schema and the statements. Run it under callgrind for a
count that does not move with the machine's load::

    valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.out \\
        .venv/bin/python -m benchmarks.writer_replay --jobs 4000
"""

from __future__ import annotations

import argparse
import os
import random
import sqlite3
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import anyio

from benchmarks.common import count_at_least
from nexus_schedd.engine.ids import RunIds
from nexus_schedd.model import (
    Job,
    JobDefaults,
    JobSpec,
    JobStatus,
    LastResult,
    Run,
    RunOutcome,
)
from nexus_schedd.store.sqlite.store import SQLiteStore, _Request, _segments
from nexus_schedd.store.sqlite.writer_process import bind_none_fast, commit_segments


def _prepare(path: Path) -> list[str]:
    """A fresh store file (schema, WAL); the writer connection's pragmas."""

    async def make() -> list[str]:
        store = SQLiteStore(path, durability="full")
        await store.open()
        pragmas = store._writer_pragmas()
        await store.close()
        return pragmas

    return anyio.run(make)


def _io() -> tuple[int, int]:
    """Bytes and system calls this process has written so far (``/proc/self/io``):
    the WAL frames of each commit and the pages its checkpoints copy back."""
    fields = dict(line.split(": ") for line in Path("/proc/self/io").read_text().splitlines())
    return int(fields["wchar"]), int(fields["syscw"])


def replay(jobs: int, batch: int, directory: Path) -> dict[str, float]:
    path = directory / "replay.db"
    bind_none_fast()  # as the writer process does
    pragmas = _prepare(path)
    connection = sqlite3.connect(f"file:{path}", uri=True, isolation_level=None)
    for pragma in pragmas:
        connection.execute(pragma)
    store = SQLiteStore(path)
    now = datetime(2026, 1, 1, tzinfo=UTC)
    due = now + timedelta(seconds=10)
    ids = RunIds(random.Random(7))
    spec = JobSpec(job_type="bench", run_at=due)
    pending = [Job.create(spec, now, JobDefaults(), ids.next(now)) for _ in range(jobs)]
    for start in range(0, jobs, 1000):
        chunk = pending[start : start + 1000]
        request = _Request("insert", jobs=chunk, job_rows=[store.encode_job(j) for j in chunk])
        commit_segments(connection, _segments([request]))
    connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    run_ids = RunIds(random.Random(8))
    commits = 0
    written = writes = 0
    cpu = 0.0
    previous: list[tuple[Job, Run]] = []
    clock = due
    for start in range(0, jobs + batch, batch):
        clock += timedelta(milliseconds=2)
        job_rows, run_rows = [], []
        for job, run in previous:  # the batch before: finished
            finished = run.closed(clock, RunOutcome.SUCCESS)
            last = LastResult(True, None, None, run.started_at, clock, 0.05)
            done = job.transition(JobStatus.COMPLETED, clock, run_at=None, last_result=last)
            job_rows.append(store.encode_job(done))
            run_rows.append(store.encode_run(finished))
        started = []
        for job in pending[start : start + batch]:
            running = job.transition(JobStatus.RUNNING, clock)
            run = Run(
                id=run_ids.next(clock),
                job_id=job.id,
                scheduled_for=due,
                attempt=1,
                started_at=clock,
                node="bench",
                job_type=job.job_type,
            )
            started.append((running, run))
            job_rows.append(store.encode_job(running))
            run_rows.append(store.encode_run(run))
        previous = started
        if not job_rows:
            continue
        segments = _segments([_Request("write", job_rows=job_rows, run_rows=run_rows)])
        io_before, begun = _io(), time.process_time()
        commit_segments(connection, segments)
        cpu += time.process_time() - begun
        io_after = _io()
        commits += 1
        written += io_after[0] - io_before[0]
        writes += io_after[1] - io_before[1]
    connection.close()
    return {
        "jobs": jobs,
        "batch": batch,
        "commits": commits,
        "cpu_us_per_job": cpu / jobs * 1e6,
        "kib_written_per_job": written / jobs / 1024,
        "write_calls_per_job": writes / jobs,
        "file_kib": os.path.getsize(path) / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=count_at_least(1), default=20_000)
    parser.add_argument("--batch", type=count_at_least(1), default=32)
    parser.add_argument("--dir", type=Path, default=None, help="where the file goes (a tmp dir)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as directory:
        result = replay(args.jobs, args.batch, Path(directory))
    for key, value in result.items():
        print(f"{key:>22}: {value:,.2f}" if isinstance(value, float) else f"{key:>22}: {value:,}")


if __name__ == "__main__":
    main()
