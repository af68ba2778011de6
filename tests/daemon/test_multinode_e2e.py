"""End-to-end multi-node: three real ``nexus-schedd`` processes on one PostgreSQL schema.

20,000 jobs (one-shot and recurring) are added through the nodes' control
sockets; a plugin handler records every call in a shared O_APPEND file. While
all nodes are healthy no occurrence runs twice and every node does a share of
the work; then one node is killed with SIGKILL mid-run, its leased occurrences
are taken over once the (5 s) lease expires, and every job completes.
"""

from __future__ import annotations

import os
import signal
import socket
import tempfile
from collections import Counter, defaultdict
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import anyio
import asyncpg
import pytest

from nexus_schedd.client import Client
from nexus_schedd.clock import SystemClock
from nexus_schedd.model import JobSpec, JobStatus, Recurrence, RecurrenceKind
from tests.daemon.daemon_process import DaemonProcess
from tests.store.factories import (
    POSTGRES_DSN,
    check_postgres_reachable,
    drop_schema,
    fresh_schema_name,
)

pytestmark = [pytest.mark.e2e, pytest.mark.anyio, pytest.mark.timeout(150)]

ONE_SHOT = 19_000
RECURRING = 1_000
OCCURRENCES_EACH = 3
BATCH = 500
REPO = Path(__file__).resolve().parents[2]


def node_config(url: str, records: Path) -> str:
    return f"""
[daemon]
log_format = "json"
log_level = "warning"
max_concurrency = 64
shutdown_grace_s = 5

[control]
admin_group = ""

[store]
url = "{url}"
lease_s = 5
safety_recheck_s = 5

[defaults]
backoff_base_s = 0.2
backoff_jitter = 0.0

[handlers.rec]
factory = "tests.daemon.multinode_handlers:make"
path = "{records}"
"""


@pytest.fixture
def workdir() -> Iterator[Path]:
    directory = Path(tempfile.mkdtemp(prefix="nxs-mn-", dir="/tmp"))
    yield directory
    for path in sorted(directory.rglob("*"), reverse=True):
        if path.is_file() or path.is_symlink():
            path.unlink()
        else:
            path.rmdir()
    directory.rmdir()


def read_records(path: Path) -> list[tuple[int, str, str]]:
    """(pid, job id, scheduled_for) of every recorded call."""
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        pid, job_id, scheduled_for, _attempt = line.split(" ")
        records.append((int(pid), job_id, scheduled_for))
    return records


async def add_through(socket_path: Path, specs: list[JobSpec]) -> None:
    async with Client(socket_path, timeout=60) as client:
        for start in range(0, len(specs), BATCH):
            await client.add_jobs(specs[start : start + BATCH])


async def test_three_daemons_share_20000_jobs_and_take_over_a_killed_node(workdir: Path) -> None:
    await check_postgres_reachable()
    schema = fresh_schema_name()
    url = f"{POSTGRES_DSN}?schema={schema}"
    records = workdir / "records.log"
    env = {"PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    nodes: list[DaemonProcess] = []
    try:
        for index in range(3):
            node_dir = workdir / f"n{index}"
            node_dir.mkdir()
            nodes.append(DaemonProcess(node_dir, node_config(url, records), extra_env=env))
        for node in nodes:
            node.start(timeout=30)

        start = SystemClock().now() + timedelta(seconds=2)
        one_shots = [
            JobSpec(job_type="rec", run_at=start, payload={"sleep_s": 0.05})
            for _ in range(ONE_SHOT)
        ]
        every_second = Recurrence(
            kind=RecurrenceKind.CRON, cron="* * * * * *", max_occurrences=OCCURRENCES_EACH
        )
        recurring = [
            JobSpec(job_type="rec", run_at=start, recurrence=every_second) for _ in range(RECURRING)
        ]
        specs = one_shots + recurring
        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:
                for index, node in enumerate(nodes):
                    tg.start_soon(add_through, node.socket_path, specs[index::3])

        # Kill -9 one node mid-run, while it holds leases on running occurrences.
        victim = nodes[0]
        assert victim.proc is not None
        victim_pid = victim.proc.pid
        with anyio.fail_after(60):
            while True:
                if len(read_records(records)) >= 6_000:
                    break
                await anyio.sleep(0.05)
        victim.proc.send_signal(signal.SIGKILL)
        victim.wait_exit(timeout=10)
        healthy_records = read_records(records)

        connection = await asyncpg.connect(POSTGRES_DSN, timeout=10)
        try:
            await connection.execute(f'SET search_path TO "{schema}"')
            with anyio.fail_after(90):
                while True:
                    rows = await connection.fetch(
                        "SELECT status, count(*) FROM jobs GROUP BY status"
                    )
                    counts = {row[0]: row[1] for row in rows}
                    if set(counts) == {JobStatus.COMPLETED.value}:
                        break
                    await anyio.sleep(0.2)
            victim_node = f"{socket.gethostname()}-{victim_pid}"
            crashed = await connection.fetch(
                "SELECT job_id FROM runs WHERE outcome = 'crashed' AND node = $1", victim_node
            )
            open_runs = await connection.fetchval("SELECT count(*) FROM runs WHERE outcome IS NULL")
        finally:
            await connection.close()

        assert counts == {JobStatus.COMPLETED.value: ONE_SHOT + RECURRING}
        assert open_runs == 0

        # While all three were healthy: every occurrence ran at most once.
        before_kill = Counter((job_id, when) for _, job_id, when in healthy_records)
        assert max(before_kill.values()) == 1

        all_records = read_records(records)
        runners: dict[tuple[str, str], list[int]] = defaultdict(list)
        for pid, job_id, when in all_records:
            runners[(job_id, when)].append(pid)
        assert len(runners) == ONE_SHOT + RECURRING * OCCURRENCES_EACH
        # Only occurrences the killed node was running ran again (at-least-once).
        repeated = {key for key, pids in runners.items() if len(pids) > 1}
        assert all(victim_pid in runners[key] for key in repeated)
        # The killed node's leased occurrences were taken over as crashed attempts.
        assert crashed
        assert {job_id for (job_id, _) in repeated} <= {row[0] for row in crashed}

        per_node = Counter(pid for pid, _, _ in all_records)
        assert len(per_node) == 3
        assert min(per_node.values()) >= 1_000, per_node
        survivors = nodes[1:]
        assert any(node.events("leases_taken_over") for node in survivors)
    finally:
        for node in nodes:
            node.close()
        await drop_schema(schema)
