"""The APScheduler 3.11 side of the benchmarks, run in its own process by the workloads.

    python -m benchmarks.apscheduler_side throughput --jobs N --store memory|sqlalchemy
    python -m benchmarks.apscheduler_side add --jobs N
    python -m benchmarks.apscheduler_side lateness --rate R --seconds S --store ...
    python -m benchmarks.apscheduler_side populate --db PATH --jobs N
    python -m benchmarks.apscheduler_side serve --db PATH      (prints READY, runs until SIGTERM)

Each measuring mode prints one JSON line. AsyncIOScheduler on uvloop, like the daemon;
the SQLAlchemy job store on a SQLite file (SQLite's default synchronous=FULL, so
each job-store commit is fsynced, as the daemon's are). Large stores are filled with
one bulk INSERT of pickled job states (add_job commits each job on its own, far too
slow for 100,000 rows): the same rows add_job would write.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import pickle
import signal
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import uvloop
from apscheduler.job import Job as ApsJob  # type: ignore[import-not-found,unused-ignore]
from apscheduler.jobstores.memory import (  # type: ignore[import-not-found,unused-ignore]
    MemoryJobStore,
)
from apscheduler.jobstores.sqlalchemy import (  # type: ignore[import-not-found,unused-ignore]
    SQLAlchemyJobStore,
)
from apscheduler.schedulers.asyncio import (  # type: ignore[import-not-found,unused-ignore]
    AsyncIOScheduler,
)
from apscheduler.triggers.date import DateTrigger  # type: ignore[import-not-found,unused-ignore]
from apscheduler.util import datetime_to_utc_timestamp  # type: ignore[import-not-found,unused-ignore]


@dataclass
class Probe:
    """What the job functions report to the measuring coroutine."""

    expected: int = 0
    calls: int = 0
    first: float | None = None
    last: float = 0.0
    lateness_ms: list[float] = field(default_factory=list)
    done: asyncio.Event | None = None


# APScheduler stores a job's function as a "module:name" reference, so the job
# functions must be module-level and can only reach this process-wide probe.
PROBE = Probe()


def _count() -> None:
    now = time.perf_counter()
    if PROBE.first is None:
        PROBE.first = now
    PROBE.last = now
    PROBE.calls += 1
    if PROBE.calls == PROBE.expected and PROBE.done is not None:
        PROBE.done.set()


async def noop() -> None:
    """The no-op job."""
    _count()


async def late(scheduled_ts: float) -> None:
    """Records how late it started against its scheduled instant."""
    PROBE.lateness_ms.append((time.time() - scheduled_ts) * 1000.0)
    _count()


def _store(kind: str, db: Path) -> Any:
    if kind == "memory":
        return MemoryJobStore()
    return SQLAlchemyJobStore(url=f"sqlite:///{db}")


def _scheduler(kind: str, db: Path) -> Any:
    return AsyncIOScheduler(
        jobstores={"default": _store(kind, db)},
        job_defaults={"misfire_grace_time": None, "coalesce": False, "max_instances": 1},
        timezone=UTC,
    )


def _bulk_add(scheduler: Any, calls: list[tuple[Any, tuple[Any, ...], datetime]]) -> None:
    """Add jobs to the (started, paused) scheduler's default store in one transaction."""
    jobstore = scheduler._lookup_jobstore("default")
    jobs = [
        ApsJob(
            scheduler,
            id=uuid.uuid4().hex,
            func=func,
            args=args,
            kwargs={},
            trigger=DateTrigger(run_date=at, timezone=UTC),
            executor="default",
            name=func.__name__,
            misfire_grace_time=None,
            coalesce=False,
            max_instances=1,
            next_run_time=at,
        )
        for func, args, at in calls
    ]
    if isinstance(jobstore, MemoryJobStore):
        for job in jobs:
            jobstore.add_job(job)
        return
    rows = [
        {
            "id": job.id,
            "next_run_time": datetime_to_utc_timestamp(job.next_run_time),
            "job_state": pickle.dumps(job.__getstate__(), jobstore.pickle_protocol),
        }
        for job in jobs
    ]
    with jobstore.engine.begin() as connection:
        for offset in range(0, len(rows), 10_000):
            connection.execute(jobstore.jobs_t.insert(), rows[offset : offset + 10_000])


async def throughput(jobs: int, kind: str, db: Path) -> dict[str, Any]:
    """Jobs/s from resume to the last call of ``jobs`` no-op jobs due now."""
    PROBE.expected, PROBE.done = jobs, asyncio.Event()
    scheduler = _scheduler(kind, db)
    scheduler.start(paused=True)
    now = datetime.now(UTC)
    _bulk_add(scheduler, [(noop, (), now) for _ in range(jobs)])
    # From resume, not from the first call: APScheduler commits each job's
    # removal from the store before the event loop runs any of the calls.
    started, cpu_started = time.perf_counter(), time.process_time()
    scheduler.resume()
    await PROBE.done.wait()
    cpu_s = time.process_time() - cpu_started  # user + system, every thread
    scheduler.shutdown(wait=False)
    elapsed = PROBE.last - started
    return {
        "jobs": jobs,
        "store": kind,
        "seconds": round(elapsed, 3),
        "jobs_per_s": jobs / elapsed,
        "cpu_us_per_job": round(cpu_s / jobs * 1e6, 1),
    }


async def add_rate(jobs: int, db: Path) -> dict[str, Any]:
    """add_job into a running scheduler's SQLAlchemy store: each call commits."""
    scheduler = _scheduler("sqlalchemy", db)
    scheduler.start()
    future = datetime.now(UTC) + timedelta(days=30)
    round_trips = []
    started = time.perf_counter()
    for _ in range(jobs):
        one = time.perf_counter()
        scheduler.add_job(noop, "date", run_date=future)
        round_trips.append((time.perf_counter() - one) * 1000.0)
    elapsed = time.perf_counter() - started
    scheduler.shutdown(wait=False)
    round_trips.sort()
    return {
        "jobs": jobs,
        "jobs_per_s": jobs / elapsed,
        "p50_ms": round_trips[len(round_trips) // 2],
        "p99_ms": round_trips[int(len(round_trips) * 0.99)],
    }


async def lateness(rate: int, seconds: float, kind: str, db: Path) -> dict[str, Any]:
    """``rate`` jobs/s spread evenly over ``seconds``; start lateness per job."""
    count = int(rate * seconds)
    PROBE.expected, PROBE.done = count, asyncio.Event()
    scheduler = _scheduler(kind, db)
    scheduler.start(paused=True)
    first = datetime.now(UTC) + timedelta(seconds=3)
    calls = []
    for index in range(count):
        at = first + timedelta(seconds=index / rate)
        calls.append((late, (at.timestamp(),), at))
    _bulk_add(scheduler, calls)
    scheduler.resume()
    with contextlib.suppress(TimeoutError):  # report what ran by then
        await asyncio.wait_for(PROBE.done.wait(), timeout=seconds + 60)
    scheduler.shutdown(wait=False)
    return {"store": kind, "jobs": count, "ran": PROBE.calls, "lateness_ms": PROBE.lateness_ms}


async def serve(db: Path) -> None:
    """Start a scheduler on an existing store, print READY, idle until SIGTERM."""
    scheduler = _scheduler("sqlalchemy", db)
    scheduler.start()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    print("READY", flush=True)
    await stop.wait()
    scheduler.shutdown(wait=False)


async def populate(db: Path, jobs: int) -> dict[str, Any]:
    """Fill a SQLAlchemy job store with ``jobs`` jobs a day or more ahead."""
    scheduler = _scheduler("sqlalchemy", db)
    scheduler.start(paused=True)
    started = time.perf_counter()
    first = datetime.now(UTC) + timedelta(days=1)
    for offset in range(0, jobs, 50_000):
        batch = range(offset, min(jobs, offset + 50_000))
        _bulk_add(scheduler, [(noop, (), first + timedelta(seconds=i)) for i in batch])
    scheduler.shutdown(wait=False)
    return {"jobs": jobs, "seconds": time.perf_counter() - started}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("mode", choices=["throughput", "add", "lateness", "populate", "serve"])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--store", choices=["memory", "sqlalchemy"], default="sqlalchemy")
    parser.add_argument("--rate", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--db", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir="/tmp") as tmp:
        db = args.db or Path(tmp) / "aps.db"
        if args.mode == "throughput":
            result = uvloop.run(throughput(args.jobs, args.store, db))
        elif args.mode == "add":
            result = uvloop.run(add_rate(args.jobs, db))
        elif args.mode == "lateness":
            result = uvloop.run(lateness(args.rate, args.seconds, args.store, db))
        elif args.mode == "populate":
            result = uvloop.run(populate(db, args.jobs))
        else:
            uvloop.run(serve(db))
            return
    print(json.dumps(result))


if __name__ == "__main__":
    main()
