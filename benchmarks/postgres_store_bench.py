"""PostgreSQL store micro-benchmark: batched upserts, loading, and claiming by N nodes.

    python -m benchmarks.postgres_store_bench [--dsn URL] [--rows 100000] [--batch 1000]
        [--claim-batch 100] [--nodes 1 3]

Runs in a fresh schema (dropped afterwards). Prints rows/s for new and updated
job rows in batches, for loading them with ``next_pending``, for concurrent
one-job writes, and jobs/s for claiming every job with ``claim_due`` by one
node and by several nodes at once (each node its own store and pool, as
separate daemons would have).
"""

from __future__ import annotations

import argparse
import secrets
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from functools import partial

import anyio
import asyncpg

from nexus_schedd.model import Job, JobStatus
from nexus_schedd.store.postgres import PostgresStore


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


async def _write_batches(store: PostgresStore, jobs: list[Job], batch: int) -> float:
    began = time.perf_counter()
    for offset in range(0, len(jobs), batch):
        await store.write(jobs=jobs[offset : offset + batch])
    return len(jobs) / (time.perf_counter() - began)


async def _claim_all(dsn: str, schema: str, nodes: int, limit: int, now: datetime) -> None:
    stores = [PostgresStore(dsn, schema=schema, node=f"n{i}", pool_size=2) for i in range(nodes)]
    claimed = [0] * nodes
    for store in stores:
        await store.open()
    try:
        total = sum((await stores[0].count_by_status()).values())
        # Every job pending and due again, so each round claims the same work.
        await stores[0]._fetch(
            "UPDATE jobs SET status = 'pending', lease_owner = NULL, lease_expires_at = NULL"
        )

        async def drain(index: int) -> None:
            store = stores[index]
            while batch := await store.claim_due(store.node, now, limit, 60.0):
                claimed[index] += len(batch)

        began = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for index in range(nodes):
                tg.start_soon(drain, index)
        elapsed = time.perf_counter() - began
        assert sum(claimed) == total, (claimed, total)
        print(
            f"claim    {total} jobs by {nodes} node(s) in batches of {limit}: "
            f"{total / elapsed:,.0f} jobs/s (per node: {', '.join(map(str, claimed))})"
        )
    finally:
        for store in stores:
            await store.close()


async def _main(dsn: str, rows: int, batch: int, claim_batch: int, nodes: list[int]) -> None:
    start = datetime(2030, 1, 1, tzinfo=UTC)
    schema = f"nxs_bench_{secrets.token_hex(4)}"
    jobs = _jobs(rows, start)
    store = PostgresStore(dsn, schema=schema)
    await store.open()
    try:
        rate = await _write_batches(store, jobs, batch)
        print(f"upsert   {rows} new rows in batches of {batch}: {rate:,.0f} rows/s")
        rate = await _write_batches(store, [replace(j, retry_count=1) for j in jobs], batch)
        print(f"update   {rows} rows in batches of {batch}: {rate:,.0f} rows/s")

        began = time.perf_counter()
        loaded = 0
        after = None
        while window := await store.next_pending(after, 10_000):
            loaded += len(window)
            last = window[-1]
            assert last.run_at is not None
            after = (last.run_at, last.id)
        print(
            f"load     {loaded} rows with next_pending: {loaded / (time.perf_counter() - began):,.0f} rows/s"
        )

        writes = 2000
        began = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for job in jobs[:writes]:
                tg.start_soon(partial(store.write, jobs=[replace(job, retry_count=2)]))
        print(
            f"single   {writes} concurrent one-job writes (pool of {store.pool_size}): "
            f"{writes / (time.perf_counter() - began):,.0f} writes/s"
        )
    finally:
        await store.close()
    try:
        for count in nodes:
            await _claim_all(dsn, schema, count, claim_batch, start + timedelta(days=1))
    finally:
        connection = await asyncpg.connect(dsn)
        try:
            await connection.execute(f'DROP SCHEMA "{schema}" CASCADE')
        finally:
            await connection.close()


def main() -> None:
    """Parse arguments and run the benchmark on asyncio."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dsn", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=1_000)
    parser.add_argument("--claim-batch", type=int, default=100)
    parser.add_argument("--nodes", type=int, nargs="+", default=[1, 3])
    args = parser.parse_args()
    anyio.run(_main, args.dsn, args.rows, args.batch, args.claim_batch, args.nodes)


if __name__ == "__main__":
    main()
