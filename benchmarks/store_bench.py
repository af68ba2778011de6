"""Store micro-benchmark: upsert job rows in batches, and group-commit single writes.

    python -m benchmarks.store_bench [--rows 100000] [--batch 1000] [--durability full]

Prints rows/s for batched upserts, rows/s for loading them back with
``next_pending``, and commits vs calls for concurrent single-job writes.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path

import anyio

from nexus_schedd.model import Job, JobStatus, Run, RunOutcome
from nexus_schedd.store import SQLiteStore


def _jobs(count: int, start: datetime) -> list[Job]:
    return [
        Job(
            id=f"{i:026d}",
            job_type="noop",
            status=JobStatus.PENDING,
            run_at=start + timedelta(milliseconds=i),
            scheduled_for=start + timedelta(milliseconds=i),
            anchor_at=start,
            created_at=start,
            updated_at=start,
            target_id=f"target-{i % 100}",
            payload={"n": i},
        )
        for i in range(count)
    ]


async def _main(rows: int, batch: int, durability: str) -> None:
    start = datetime(2030, 1, 1, tzinfo=UTC)
    jobs = _jobs(rows, start)
    with tempfile.TemporaryDirectory() as directory:
        store = SQLiteStore(Path(directory) / "bench.db", durability=durability)  # type: ignore[arg-type]
        await store.open()
        try:
            began = time.perf_counter()
            for offset in range(0, rows, batch):
                await store.write(jobs=jobs[offset : offset + batch])
            elapsed = time.perf_counter() - began
            print(f"upsert   {rows} rows in batches of {batch}: {rows / elapsed:,.0f} rows/s")

            updated = [
                Job(**{**{f: getattr(j, f) for f in Job.__slots__}, "retry_count": 1}) for j in jobs
            ]
            began = time.perf_counter()
            for offset in range(0, rows, batch):
                await store.write(jobs=updated[offset : offset + batch])
            elapsed = time.perf_counter() - began
            print(f"update   {rows} rows in batches of {batch}: {rows / elapsed:,.0f} rows/s")

            began = time.perf_counter()
            loaded = 0
            after = None
            while True:
                window = await store.next_pending(after, 10_000)
                if not window:
                    break
                loaded += len(window)
                last = window[-1]
                assert last.run_at is not None
                after = (last.run_at, last.id)
            elapsed = time.perf_counter() - began
            print(f"load     {loaded} rows with next_pending: {loaded / elapsed:,.0f} rows/s")

            writes = 2000
            commits_before = store.commits
            began = time.perf_counter()
            async with anyio.create_task_group() as tg:
                for job in updated[:writes]:
                    tg.start_soon(partial(store.write, jobs=[job]))
            elapsed = time.perf_counter() - began
            commits = store.commits - commits_before
            print(
                f"single   {writes} concurrent one-job writes: {writes / elapsed:,.0f} writes/s "
                f"in {commits} commits"
            )

            runs = [
                Run(
                    id=f"R{i:025d}",
                    job_id=jobs[i % rows].id,
                    job_type="noop",
                    scheduled_for=start,
                    attempt=1,
                    started_at=start + timedelta(seconds=i),
                    finished_at=start + timedelta(seconds=i, milliseconds=5),
                    outcome=RunOutcome.SUCCESS,
                )
                for i in range(3 * rows)
            ]
            began = time.perf_counter()
            for offset in range(0, len(runs), batch):
                await store.write(runs=runs[offset : offset + batch])
            elapsed = time.perf_counter() - began
            print(
                f"runs     {len(runs)} run rows in batches of {batch}: {len(runs) / elapsed:,.0f} rows/s"
            )

            began = time.perf_counter()
            deleted = await store.prune_runs(start + timedelta(seconds=rows), keep_per_job=2)
            elapsed = time.perf_counter() - began
            print(f"prune    {len(runs)} runs, {deleted} deleted in {elapsed:.2f} s")
        finally:
            await store.close()


def main() -> None:
    """Parse arguments and run the benchmark on asyncio."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=1_000)
    parser.add_argument("--durability", choices=("full", "normal"), default="full")
    args = parser.parse_args()
    anyio.run(_main, args.rows, args.batch, args.durability)


if __name__ == "__main__":
    main()
