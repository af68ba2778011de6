"""Engine throughput: N one-shot no-op jobs due now, SQLite store (durability full),
uvloop; jobs/s from the first start to the last checkpoint.

    python -m benchmarks.engine_throughput [--jobs 100000] [--concurrency 64]
        [--threads] [--store sqlite|discard] [--tracing off|on] [--trace-context] [--profile]
        [--log-level warning|info]

``--threads`` adds the CPU each thread spent per job while the jobs ran (user and
system time from /proc: the event loop, and the store's SQLite writer process). ``--store
discard`` runs the same engine on a store that keeps jobs in memory and throws
every checkpoint away: the engine's own ceiling, not a durable figure. ``--tracing
on`` makes each run a span (the OpenTelemetry SDK, a BatchSpanProcessor and an
exporter that drops what it is given); ``--trace-context`` adds the jobs with a
traceparent. ``benchmarks.tracing_overhead`` compares the modes. Logging is the
daemon's own set-up (JSON lines, ``configure_logging``) into a file in the scratch
directory; at ``--log-level info``, the daemon's default, each run writes its two
lines there.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import anyio

from nexus_schedd.clock import SystemClock
from nexus_schedd.daemon.logging import configure_logging
from nexus_schedd.engine import Engine, EngineSettings
from nexus_schedd.engine.rates import Rate
from nexus_schedd.handlers.base import HandlerContext
from nexus_schedd.handlers.registry import HandlerRegistry
from nexus_schedd.model import Job, JobResult, JobSpec, JobStatus, Run
from nexus_schedd.store import SQLiteStore, Store
from nexus_schedd.store.memory import MemoryStore
from nexus_schedd.store.sqlite import SWITCH_INTERVAL_S
from nexus_schedd.tracing import RunTracer


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


class DiscardStore(MemoryStore):
    """Jobs in memory; every checkpoint is thrown away (a diagnostic, never durable)."""

    async def write(self, jobs: Sequence[Job] = (), runs: Sequence[Run] = ()) -> None:
        await anyio.lowlevel.checkpoint()

    async def prune_runs(self, older_than: Any, keep_per_job: int, jobs: Any = None) -> int:
        return 0


TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def run_tracer(tracing: str) -> RunTracer | None:
    """None (tracing off), or the daemon's run tracer on an SDK provider whose batch
    processor hands spans to an exporter that drops them: everything the daemon
    pays per run but the network."""
    if tracing == "off":
        return None
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

    from nexus_schedd.tracing.otel import OtelRunTracer

    class Drop(SpanExporter):  # type: ignore[misc,unused-ignore]  # Any without the extra
        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    # A queue that holds every span of a run, as a collector that keeps up would.
    provider.add_span_processor(BatchSpanProcessor(Drop(), max_queue_size=1_000_000))
    return OtelRunTracer(provider)


_TICKS = os.sysconf("SC_CLK_TCK")


def thread_cpu() -> dict[int, tuple[str, float, float]]:
    """Each thread of this process: (name, user seconds, system seconds)."""
    names = {t.native_id: t.name for t in threading.enumerate()}
    found: dict[int, tuple[str, float, float]] = {}
    for entry in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue  # the thread ended meanwhile
        tid = int(entry)
        found[tid] = (names.get(tid, "?"), int(fields[11]) / _TICKS, int(fields[12]) / _TICKS)
    return found


def writer_cpu(store: Store) -> tuple[float, float]:
    """(user, system) seconds of the SQLite store's writer process, (0, 0) for others."""
    writer = getattr(store, "_writer", None)
    pid = getattr(writer, "pid", None)
    if pid is None:
        return 0.0, 0.0
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return int(fields[11]) / _TICKS, int(fields[12]) / _TICKS


def _per_job(
    before: dict[int, tuple[str, float, float]],
    after: dict[int, tuple[str, float, float]],
    jobs: int,
) -> dict[str, dict[str, float]]:
    """CPU per job of each thread that used at least 0.5 us of it."""
    loop_thread = threading.get_native_id()
    rows: dict[str, dict[str, float]] = {}
    for tid, (name, user, system) in after.items():
        _, user0, system0 = before.get(tid, (name, 0.0, 0.0))
        user_us, system_us = (user - user0) / jobs * 1e6, (system - system0) / jobs * 1e6
        if user_us + system_us >= 0.5:
            label = "event loop" if tid == loop_thread else f"thread {name}"
            rows[f"cpu {label}"] = {"user_us": round(user_us, 1), "sys_us": round(system_us, 1)}
    return rows


async def measure(
    jobs: int,
    concurrency: int,
    path: Path,
    *,
    store_kind: str = "sqlite",
    threads: bool = False,
    rates_elsewhere: bool = False,
    tracing: str = "off",
    trace_context: bool = False,
) -> dict[str, Any]:
    """Add ``jobs`` jobs while the engine is stopped, then time their execution."""
    sys.setswitchinterval(SWITCH_INTERVAL_S)  # as the daemon does
    store: Store = (
        SQLiteStore(path, durability="full") if store_kind == "sqlite" else DiscardStore()
    )
    await store.open()
    try:
        handler = NoOp(jobs)
        registry = HandlerRegistry({"noop": handler})
        # The daemon's default commit interval ([store] commit_interval_ms).
        settings = EngineSettings(
            max_concurrency=concurrency,
            commit_interval_ms=5.0,
            # Rate limits configured but not hit: another type has one.
            type_rates={"send_reminder": Rate(100, 60.0)} if rates_elsewhere else {},
        )
        clock = SystemClock()
        loader = Engine(store, registry, clock, settings)
        context = {"traceparent": TRACEPARENT} if trace_context else None
        add_started = time.perf_counter()
        for start in range(0, jobs, 1000):
            await loader.add_jobs(
                [
                    JobSpec(job_type="noop", trace_context=context)
                    for _ in range(min(1000, jobs - start))
                ]
            )
        add_s = time.perf_counter() - add_started
        engine = Engine(store, registry, clock, settings, tracer=run_tracer(tracing))
        async with anyio.create_task_group() as tg:
            await tg.start(engine.run)  # recovery and the window load happen here
            cpu_before, writer_before = thread_cpu(), writer_cpu(store)
            await handler.all_called.wait()
            await engine.stop()  # returns after the last checkpoint
            finished = time.perf_counter()
            cpu_after, writer_after = thread_cpu(), writer_cpu(store)
        counts = await store.count_by_status()
        assert handler.first is not None
        elapsed = finished - handler.first
        return (
            {
                "jobs": jobs,
                "max_concurrency": concurrency,
                "completed_on_disk": counts.get(JobStatus.COMPLETED, 0),
                "seconds": round(elapsed, 3),
                "jobs_per_s": round(jobs / elapsed),
                "add_jobs_per_s": round(jobs / add_s),
                "commits": getattr(store, "commits", "-"),
                "store": store_kind,
                "tracing": tracing,
            }
            | (_per_job(cpu_before, cpu_after, jobs) if threads else {})
            | (
                {
                    "cpu SQLite writer process": {
                        "user_us": round((writer_after[0] - writer_before[0]) / jobs * 1e6, 1),
                        "sys_us": round((writer_after[1] - writer_before[1]) / jobs * 1e6, 1),
                    }
                }
                if threads and store_kind == "sqlite"
                else {}
            )
        )
    finally:
        await store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--profile", action="store_true", help="cProfile the run")
    parser.add_argument(
        "--threads", action="store_true", help="CPU per job of each thread while the jobs ran"
    )
    parser.add_argument(
        "--rates-elsewhere",
        action="store_true",
        help="configure a rate limit for another job type (configured, not hit)",
    )
    parser.add_argument(
        "--tracing",
        choices=("off", "on"),
        default="off",
        help="on: each run is an OpenTelemetry span (exported to nowhere)",
    )
    parser.add_argument(
        "--trace-context", action="store_true", help="add the jobs with a traceparent"
    )
    parser.add_argument(
        "--store",
        choices=("sqlite", "discard"),
        default="sqlite",
        help="discard: a store that throws checkpoints away (the engine's own ceiling)",
    )
    parser.add_argument(
        "--log-level",
        choices=("warning", "info"),
        default="warning",
        help="the daemon's logging at this level into a scratch file "
        "(info, the daemon's default: two lines per run)",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir="/tmp") as tmp, open(Path(tmp) / "log", "w") as log:
        configure_logging(args.log_level, "json", stream=log)

        def run() -> dict[str, Any]:
            return anyio.run(
                partial(
                    measure,
                    store_kind=args.store,
                    threads=args.threads,
                    rates_elsewhere=args.rates_elsewhere,
                    tracing=args.tracing,
                    trace_context=args.trace_context,
                ),
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
