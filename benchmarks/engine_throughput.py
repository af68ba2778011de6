"""Engine throughput: N one-shot no-op jobs due now, SQLite store (durability full),
uvloop; jobs/s from the first start to the last checkpoint.

    python -m benchmarks.engine_throughput [--jobs 100000] [--concurrency 64]
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
import structlog

from nexus_schedd.clock import SystemClock
from nexus_schedd.engine import Engine, EngineSettings
from nexus_schedd.handlers.base import HandlerContext
from nexus_schedd.handlers.registry import HandlerRegistry
from nexus_schedd.model import Job, JobResult, JobSpec, JobStatus
from nexus_schedd.store import SQLiteStore


class NoOp:
    """Succeeds at once; counts calls and notes the first one."""

    def __init__(self, expected: int) -> None:
        self.calls = 0
        self.expected = expected
        self.first: float | None = None
        self.all_called = anyio.Event()

    def supports(self, job_type: str) -> bool:
        return job_type == "noop"

    async def handle(self, job: Job, ctx: HandlerContext) -> JobResult:
        if self.first is None:
            self.first = time.perf_counter()
        self.calls += 1
        if self.calls == self.expected:
            self.all_called.set()
        return JobResult.success()


async def measure(jobs: int, concurrency: int, path: Path) -> dict[str, Any]:
    """Add ``jobs`` jobs while the engine is stopped, then time their execution."""
    store = SQLiteStore(path, durability="full")
    await store.open()
    try:
        handler = NoOp(jobs)
        registry = HandlerRegistry({"noop": handler})
        settings = EngineSettings(max_concurrency=concurrency)
        clock = SystemClock()
        loader = Engine(store, registry, clock, settings)
        add_started = time.perf_counter()
        for start in range(0, jobs, 1000):
            await loader.add_jobs(
                [JobSpec(job_type="noop") for _ in range(min(1000, jobs - start))]
            )
        add_s = time.perf_counter() - add_started
        engine = Engine(store, registry, clock, settings)
        async with anyio.create_task_group() as tg:
            await tg.start(engine.run)
            await handler.all_called.wait()
            await engine.stop()  # returns after the last checkpoint
            finished = time.perf_counter()
        counts = await store.count_by_status()
        assert handler.first is not None
        elapsed = finished - handler.first
        return {
            "jobs": jobs,
            "max_concurrency": concurrency,
            "completed_on_disk": counts.get(JobStatus.COMPLETED, 0),
            "seconds": round(elapsed, 3),
            "jobs_per_s": round(jobs / elapsed),
            "add_jobs_per_s": round(jobs / add_s),
            "commits": store.commits,
        }
    finally:
        await store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--profile", action="store_true", help="cProfile the run")
    args = parser.parse_args()
    # Per-run log events cost more than the dispatch itself; measure the engine.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    with tempfile.TemporaryDirectory(dir="/tmp") as tmp:

        def run() -> dict[str, Any]:
            return anyio.run(
                measure,
                args.jobs,
                args.concurrency,
                Path(tmp) / "bench.db",
                backend_options={"use_uvloop": True},
            )

        if args.profile:
            import cProfile
            import pstats

            profiler = cProfile.Profile()
            result = profiler.runcall(run)
            pstats.Stats(profiler).sort_stats("tottime").print_stats(30)
        else:
            result = run()
    for key, value in result.items():
        print(f"{key:>20}: {value}")


if __name__ == "__main__":
    main()
