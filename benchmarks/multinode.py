"""Multi-node throughput: N one-shot no-op jobs in one PostgreSQL schema, run by 1
and by 3 real ``nexus-schedd`` daemons (one node each, ``max_concurrency`` 64,
durability full, so ``synchronous_commit = on``), next to the SQLite daemon with the
same N in the same run (issue 21: PostgreSQL one node against SQLite, three nodes
against one).

    python -m benchmarks.multinode [--jobs 20000] [--nodes 1 3] [--dsn URL]

Measured as ``benchmarks.daemon_throughput`` measures the SQLite daemon: the jobs
are added over the first node's control socket (AddJobs of 1,000) before they fall
due, all due at one instant; jobs/s from the first start to the last finish in the
run records; the progress comes from the handlers (a datagram every 1,000 calls),
then the benchmark reads the schema until no job is pending or running and no run
is open. CPU per job is given per process kind: the node daemons (summed when
there are several) and the PostgreSQL server backends serving them (found by
their ``application_name``, read from /proc like the daemons; none for a server
on another machine). Once the nodes have stopped, the rows each table took per job come from
``pg_stat_user_tables`` (including the add's insert of each job).

Runs in a fresh schema per measurement (dropped afterwards). On a small machine
the nodes share its cores with PostgreSQL.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import anyio
import asyncpg

from benchmarks import daemon_throughput
from benchmarks.common import Daemon, Report, Row, emit
from benchmarks.daemon_throughput import Finished, StoreView, WindowHook
from nexus_schedd.errors import StoreError

DEFAULT_DSN = os.environ.get(
    "NEXUS_SCHEDD_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test"
)


def _with_schema(dsn: str, schema: str) -> str:
    return f"{dsn}{'&' if '?' in dsn else '?'}schema={schema}"


def node_config(url: str, node: str, progress_socket: Path) -> str:
    """A node daemon on the shared schema (the SQLite config with another store)."""
    sqlite = daemon_throughput.sqlite_config(progress_socket)
    return sqlite.replace(
        '[store]\ndurability = "full"\n',
        f'[store]\nurl = "{url}"\ndurability = "full"\nnode = "{node}"\n',
    )


class PostgresView:
    """The schema read over one connection of the benchmark's own."""

    def __init__(self, connection: asyncpg.Connection, node_prefix: str) -> None:
        self.connection = connection
        self.node_prefix = node_prefix

    async def finished(self) -> Finished | None:
        busy = await self.connection.fetchval(
            "SELECT count(*) FROM jobs WHERE status IN ('pending', 'running')"
        )
        open_runs = await self.connection.fetchval(
            "SELECT count(*) FROM runs WHERE outcome IS NULL"
        )
        if busy or open_runs:
            return None
        row = await self.connection.fetchrow(
            "SELECT count(*), min(started_at), max(finished_at) FROM runs WHERE outcome = 'success'"
        )
        assert row is not None
        return Finished(row[0], row[1], row[2])

    async def server_pids(self) -> list[int]:
        rows = await self.connection.fetch(
            "SELECT pid FROM pg_stat_activity WHERE application_name LIKE $1",
            f"nexus-schedd {self.node_prefix}-%",
        )
        return [row[0] for row in rows]


def postgres_view(
    dsn: str, schema: str, node_prefix: str
) -> Callable[[Daemon], contextlib.AbstractAsyncContextManager[StoreView]]:
    """A ``StoreView`` factory for ``measure_daemons``."""

    @contextlib.asynccontextmanager
    async def view(daemon: Daemon) -> AsyncIterator[StoreView]:
        connection = await asyncpg.connect(dsn)
        try:
            await connection.execute(f'SET search_path TO "{schema}"')
            yield PostgresView(connection, node_prefix)
        finally:
            await connection.close()

    return view


async def _table_writes(dsn: str, schema: str, jobs: int) -> dict[str, float]:
    """Rows inserted and updated per job, by table (the nodes have disconnected, so
    their statistics are flushed)."""
    connection = await asyncpg.connect(dsn)
    try:
        rows = await connection.fetch(
            "SELECT relname, n_tup_ins, n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables"
            " WHERE schemaname = $1 AND relname IN ('jobs', 'runs')",
            schema,
        )
    finally:
        await connection.close()
    found: dict[str, float] = {}
    for name, inserted, updated, hot in rows:
        found[f"{name} inserted"] = round(inserted / jobs, 2)
        found[f"{name} updated"] = round(updated / jobs, 2)
        found[f"{name} updated (HOT)"] = round(hot / jobs, 2)
    return found


async def _drop(dsn: str, schema: str) -> None:
    connection = await asyncpg.connect(dsn)
    try:
        await connection.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await connection.close()


def measure(
    dsn: str, jobs: int, nodes: int, window_hook: WindowHook | None = None
) -> dict[str, Any]:
    """Jobs/s and CPU per job of ``nodes`` node daemons working off ``jobs`` jobs."""
    token = secrets.token_hex(4)
    schema, prefix = f"nxs_bench_{token}", f"bench{token}"
    url = _with_schema(dsn, schema)
    configs = [
        lambda progress, i=i: node_config(url, f"{prefix}-{i}", progress) for i in range(nodes)
    ]
    try:
        result = daemon_throughput.measure_daemons(
            configs, jobs, postgres_view(dsn, schema, prefix), window_hook
        )
        time.sleep(1.0)  # the statistics of the nodes' last transactions
        result["rows per job"] = anyio.run(_table_writes, dsn, schema, jobs)
    finally:
        anyio.run(_drop, dsn, schema)
    return {"nodes": nodes, **result}


def run(jobs: int, node_counts: list[int], dsn: str = DEFAULT_DSN) -> Report:
    """The SQLite daemon, then each node count; ratios against SQLite and one node."""
    report = Report("6 multi-node (PostgreSQL)")
    sqlite = daemon_throughput.measure_sqlite(jobs)
    report.rows.append(
        Row(
            f"durable jobs/s, SQLite daemon, {jobs:,} jobs [load {sqlite['load']}]",
            sqlite["jobs_per_s"],
            None,
            theirs_label="-",
        )
    )
    for key, label in (("cpu daemon", "SQLite daemon"), ("cpu writer", "SQLite writer process")):
        report.rows.append(
            Row(f"CPU us per job, {label}", sqlite[key]["total_us"], None, "lower", "-")
        )
    results: list[dict[str, Any]] = []
    baseline: float | None = None
    for nodes in node_counts:
        try:
            result = measure(dsn, jobs, nodes)
        except (OSError, asyncpg.PostgresError, RuntimeError, StoreError) as exc:
            result = {"nodes": nodes, "error": str(exc)}
        results.append(result)
        value = result.get("jobs_per_s")
        rate = float(value) if isinstance(value, int) else None
        plural = "s" if nodes > 1 else ""
        if baseline is None:
            theirs, theirs_label = sqlite["jobs_per_s"], "SQLite daemon, same run"
            baseline = rate
        else:
            theirs, theirs_label = baseline, f"PostgreSQL {node_counts[0]} node, same run"
        load = f" [load {result['load']}]" if "load" in result else ""
        report.rows.append(
            Row(
                f"durable jobs/s, PostgreSQL, {nodes} node{plural}{load}",
                rate,
                theirs,
                theirs_label=theirs_label,
            )
        )
        for key, label in (("cpu daemon", f"node daemon{plural}"), ("cpu server", "PG backends")):
            cpu = result.get(key)
            report.rows.append(
                Row(
                    f"CPU us per job, {label} ({nodes} node{plural})",
                    None if not cpu else cpu["total_us"],
                    None,
                    "lower",
                    "-",
                )
            )
    report.details = {"sqlite": sqlite, "runs": results, "dsn_host": dsn.rsplit("@", 1)[-1]}
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--nodes", type=int, nargs="+", default=[1, 3])
    parser.add_argument("--dsn", default=DEFAULT_DSN)
    args = parser.parse_args()
    started = time.monotonic()
    emit([run(args.jobs, args.nodes, args.dsn)])
    print(f"total {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
