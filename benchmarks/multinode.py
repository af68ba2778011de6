"""Multi-node throughput: N one-shot no-op jobs due at once in one PostgreSQL schema,
run by 1 and by 3 node processes (each a shared-mode engine with its own pool,
max_concurrency 64, uvloop); jobs/s from the first start to the last finish,
read from the run history.

    python -m benchmarks.multinode [--jobs 20000] [--nodes 1 3] [--dsn URL]

Runs in a fresh schema per measurement (dropped afterwards). Every node is its
own process, as separate daemons would be; on a small machine they share its
cores with PostgreSQL.
"""

from __future__ import annotations

import argparse
import logging
import os
import secrets
import subprocess
import sys
import time
from datetime import timedelta

import anyio
import asyncpg
import structlog

from benchmarks.common import Report, Row, emit
from nexus_schedd.clock import SystemClock
from nexus_schedd.engine import Engine, EngineSettings
from nexus_schedd.errors import StoreError
from nexus_schedd.handlers.registry import HandlerRegistry
from nexus_schedd.model import Job, JobDefaults, JobSpec, JobStatus
from nexus_schedd.store.postgres import PostgresStore

DEFAULT_DSN = os.environ.get(
    "NEXUS_SCHEDD_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test"
)
START_DELAY_S = 3.0
"""The jobs fall due this long after they are added, once every node is up."""


async def _populate(dsn: str, schema: str, jobs: int) -> None:
    store = PostgresStore(dsn, schema=schema)
    await store.open()
    try:
        now = SystemClock().now()
        due = now + timedelta(seconds=START_DELAY_S)
        defaults = JobDefaults()
        batch = [
            Job.create(JobSpec(job_type="bench", run_at=due), now, defaults, f"{i:026d}")
            for i in range(jobs)
        ]
        for offset in range(0, jobs, 2000):
            await store.insert_jobs(batch[offset : offset + 2000])
    finally:
        await store.close()


async def _node(dsn: str, schema: str, name: str) -> None:
    """One node: serve until no job is pending or running, then stop."""
    from benchmarks.bench_handlers import BenchHandler

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    store = PostgresStore(dsn, schema=schema, node=name)
    await store.open()
    handler = BenchHandler(None)
    try:
        engine = Engine(
            store,
            HandlerRegistry({"bench": handler}),
            SystemClock(),
            EngineSettings(node=name, max_concurrency=64),
        )
        async with anyio.create_task_group() as tg:
            await tg.start(engine.run)
            while True:
                counts = await store.count_by_status()
                if not counts.get(JobStatus.PENDING) and not counts.get(JobStatus.RUNNING):
                    break
                await anyio.sleep(0.2)
            await engine.stop(grace_s=5)
            tg.cancel_scope.cancel()
    finally:
        await handler.aclose()
        await store.close()


async def _rate(dsn: str, schema: str) -> tuple[float, dict[str, int]]:
    connection = await asyncpg.connect(dsn)
    try:
        await connection.execute(f'SET search_path TO "{schema}"')
        row = await connection.fetchrow(
            "SELECT min(started_at), max(finished_at), count(*) FROM runs WHERE outcome = 'success'"
        )
        assert row is not None
        first, last, runs = row
        per_node = {
            row[0]: row[1]
            for row in await connection.fetch("SELECT node, count(*) FROM runs GROUP BY node")
        }
    finally:
        await connection.close()
    return runs / ((last - first) / 1e6), per_node


async def _drop(dsn: str, schema: str) -> None:
    connection = await asyncpg.connect(dsn)
    try:
        await connection.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await connection.close()


def measure(dsn: str, jobs: int, nodes: int) -> dict[str, object]:
    """Jobs/s of ``nodes`` node processes working off ``jobs`` due jobs."""
    schema = f"nxs_bench_{secrets.token_hex(4)}"
    try:
        anyio.run(_populate, dsn, schema, jobs)
        command = [sys.executable, "-m", "benchmarks.multinode", "--dsn", dsn, "--node-worker"]
        workers = [subprocess.Popen([*command, schema, f"n{i}"]) for i in range(nodes)]
        for worker in workers:
            if worker.wait(timeout=600) != 0:
                raise RuntimeError(f"node worker exited with {worker.returncode}")
        rate, per_node = anyio.run(_rate, dsn, schema, backend_options={"use_uvloop": True})
    finally:
        anyio.run(_drop, dsn, schema)
    return {"nodes": nodes, "jobs": jobs, "jobs_per_s": round(rate), "runs_per_node": per_node}


def run(jobs: int, node_counts: list[int], dsn: str = DEFAULT_DSN) -> Report:
    """Measure each node count; one table row per count."""
    report = Report("6 multi-node (PostgreSQL)")
    results = []
    for nodes in node_counts:
        try:
            result = measure(dsn, jobs, nodes)
        except (OSError, asyncpg.PostgresError, RuntimeError, StoreError) as exc:
            result = {"nodes": nodes, "error": str(exc)}
        results.append(result)
        value = result.get("jobs_per_s")
        report.rows.append(
            Row(
                f"durable jobs/s, {nodes} node{'s' if nodes > 1 else ''}",
                float(value) if isinstance(value, int) else None,
                None,
                theirs_label="(APScheduler 3 has no multi-node mode)",
            )
        )
    report.details = {"runs": results, "dsn_host": dsn.rsplit("@", 1)[-1]}
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--nodes", type=int, nargs="+", default=[1, 3])
    parser.add_argument("--dsn", default=DEFAULT_DSN)
    parser.add_argument(
        "--node-worker", nargs=2, metavar=("SCHEMA", "NAME"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.node_worker:
        schema, name = args.node_worker
        anyio.run(_node, args.dsn, schema, name, backend_options={"use_uvloop": True})
        return
    started = time.monotonic()
    emit([run(args.jobs, args.nodes, args.dsn)])
    print(f"total {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
