"""Real ``nexus-schedd`` processes on PostgreSQL through a fault-injecting proxy (issue 17).

Each daemon's ``[store] url`` points at its own :class:`~tests.faultproxy.FaultProxy`
in front of the test server, in a database created for the test and dropped
after it. The tests drive the daemons from outside only (control socket, logs,
the database itself), so they hold whatever the engine's inside looks like:

- resets and refused connections: the daemon stays up, every acknowledged job runs;
- a node cut off for less than its lease keeps its job; for longer, another
  node takes over and records ``crashed``, and the returning node's late result
  is added beside that record (``<run id>-late``, ``lease_lost``), never over it;
- 200 ms per round trip: a 0.5 s exec job with ``timeout_s = 1`` succeeds;
- an add whose reply never comes is "outcome unknown" (exit 75), and a named
  add retried afterwards is the same job;
- a job added right after READY runs at once, not at the safety re-check;
- a store that became unusable for good ends the daemon saying so;
- a database down at start: the daemon exits saying it cannot open the store.

Some tests print what they measured (``pytest -s``); docs/multi-node.md quotes it.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import anyio
import asyncpg
import pytest

from nexus_schedd.client import Client
from nexus_schedd.clock import SystemClock
from nexus_schedd.errors import EXIT_OUTCOME_UNKNOWN, StoreError
from nexus_schedd.model import JobSpec
from tests.daemon.daemon_process import DaemonProcess, console_script
from tests.faultproxy import FaultProxy
from tests.store.factories import POSTGRES_DSN, check_postgres_reachable

pytestmark = [pytest.mark.e2e, pytest.mark.anyio, pytest.mark.timeout(150)]

UPSTREAM = ("127.0.0.1", 5432)
REPO = Path(__file__).resolve().parents[2]
SLEEP = shutil.which("sleep") or "/usr/bin/sleep"
ERROR_EVENTS = (
    "due_work_fetch_failed",
    "checkpoint_failed",
    "lease_renewal_failed",
    "take_over_failed",
    "store_listener_lost",
)


def database_url(port: int, database: str) -> str:
    base, _, _ = POSTGRES_DSN.rpartition("/")
    return f"{base.replace('127.0.0.1:5432', f'127.0.0.1:{port}')}/{database}"


@pytest.fixture
async def database() -> AsyncIterator[str]:
    """A database of its own for the test, dropped afterwards."""
    await check_postgres_reachable()
    name = f"nxs_fault_{secrets.token_hex(5)}"
    admin = await asyncpg.connect(POSTGRES_DSN, timeout=10)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        yield name
    finally:
        admin = await asyncpg.connect(POSTGRES_DSN, timeout=10)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


@pytest.fixture
async def db(database: str) -> AsyncIterator[asyncpg.Connection]:
    """A direct connection (no proxy) to the test's database, to look at the truth."""
    connection = await asyncpg.connect(database_url(UPSTREAM[1], database), timeout=10)
    try:
        yield connection
    finally:
        await connection.close()


@pytest.fixture
def workdir() -> Iterator[Path]:
    directory = Path(tempfile.mkdtemp(prefix="nxs-pf-", dir="/tmp"))
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def proxies() -> Iterator[Callable[[], FaultProxy]]:
    started: list[FaultProxy] = []

    def make() -> FaultProxy:
        proxy = FaultProxy(UPSTREAM).start()
        started.append(proxy)
        return proxy

    yield make
    for proxy in started:
        proxy.close()


@pytest.fixture
def daemons(workdir: Path) -> Iterator[Callable[..., DaemonProcess]]:
    started: list[DaemonProcess] = []
    env = {"PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}

    def make(url: str, node: str, **options: Any) -> DaemonProcess:
        directory = workdir / f"{node}-{len(started)}"
        directory.mkdir()
        daemon = DaemonProcess(
            directory, node_config(url, node, workdir / "records.log", **options), extra_env=env
        )
        started.append(daemon)
        return daemon

    yield make
    for daemon in started:
        daemon.close()


def node_config(
    url: str,
    node: str,
    records: Path,
    *,
    lease_s: float = 3.0,
    safety_recheck_s: float = 3.0,
    log_level: str = "info",
) -> str:
    return f"""
[daemon]
log_format = "json"
log_level = "{log_level}"
max_concurrency = 16
shutdown_grace_s = 5

[control]
admin_group = ""

[store]
url = "{url}"
lease_s = {lease_s}
safety_recheck_s = {safety_recheck_s}
node = "{node}"

[defaults]
backoff_base_s = 0.2
backoff_jitter = 0.0

[handlers.rec]
factory = "tests.daemon.multinode_handlers:make"
path = "{records}"

[handlers.exec]
allow = ["{SLEEP}"]
"""


def recorded_jobs(path: Path) -> set[str]:
    if not path.exists():
        return set()
    return {line.split(" ")[1] for line in path.read_text().splitlines() if line}


async def wait_for(check: Callable[[], Awaitable[bool]], *, within: float, what: str) -> float:
    """Poll ``check`` (bounded); return the seconds it took."""
    started = time.monotonic()
    with anyio.move_on_after(within):
        while True:
            if await check():
                return time.monotonic() - started
            await anyio.sleep(0.05)
    raise AssertionError(f"timed out after {within} s waiting for {what}")


def errors_logged(daemon: DaemonProcess) -> int:
    return sum(len(daemon.events(name)) for name in ERROR_EVENTS)


async def add_jobs(daemon: DaemonProcess, specs: list[JobSpec]) -> list[str]:
    async with Client(daemon.socket_path, timeout=60) as client:
        return [job.id for job in await client.add_jobs(specs)]


def rec(start_in_s: float = 0.0, sleep_s: float = 0.02, **extra: Any) -> JobSpec:
    at = SystemClock().now() + timedelta(seconds=start_in_s)
    return JobSpec(job_type="rec", run_at=at, payload={"sleep_s": sleep_s}, **extra)


# -- finding 1: resets and a refusing server ---------------------------------------


async def test_daemon_stays_up_through_resets_and_refusals_and_runs_every_acknowledged_job(
    database: str,
    db: asyncpg.Connection,
    proxies: Callable[[], FaultProxy],
    daemons: Callable[..., DaemonProcess],
    workdir: Path,
) -> None:
    proxy = proxies()
    node = daemons(database_url(proxy.port, database), "a")
    node.start(timeout=30)
    acknowledged: list[str] = []
    for batch in range(8):
        specs = [rec(1.0 + batch * 0.5 + i * 0.01) for i in range(50)]
        acknowledged += await add_jobs(node, specs)
    records = workdir / "records.log"
    await wait_for(
        lambda: anyio.to_thread.run_sync(lambda: len(recorded_jobs(records)) >= 50),
        within=30,
        what="the first jobs to run",
    )
    refused_adds = 0
    for _ in range(2):
        before = errors_logged(node)
        proxy.reset()
        proxy.refuse()
        # An add during the outage is acknowledged (then it must run) or refused.
        try:
            acknowledged += await add_jobs(node, [rec(0.0) for _ in range(10)])
        except StoreError:
            refused_adds += 1
        await wait_for(
            lambda before=before: anyio.to_thread.run_sync(lambda: errors_logged(node) > before),
            within=20,
            what="the daemon to notice the outage",
        )
        await anyio.sleep(2.0)  # the outage's length (a fault, not a synchronisation)
        proxy.pass_through()
    healed = time.monotonic()
    acknowledged += await add_jobs(node, [rec(0.0) for _ in range(20)])

    async def all_completed() -> bool:
        done = await db.fetchval(
            "SELECT count(*) FROM jobs WHERE id = ANY($1::text[]) AND status = 'completed'",
            acknowledged,
        )
        return bool(done == len(acknowledged))

    took = await wait_for(all_completed, within=90, what="every acknowledged job to complete")
    assert node.proc is not None and node.proc.poll() is None, node.stderr_tail()
    assert set(acknowledged) <= recorded_jobs(records)
    assert await db.fetchval("SELECT count(*) FROM runs WHERE outcome IS NULL") == 0
    print(
        f"\n[measured] resets+refusals: {len(acknowledged)} acknowledged jobs all completed "
        f"{took:.1f} s after the first check, {time.monotonic() - healed:.1f} s after healing; "
        f"adds refused during outages: {refused_adds}; error events logged: {errors_logged(node)}; "
        f"connections reset: {proxy.stats.resets}"
    )


# -- finding 2: a partition shorter and longer than the lease ------------------------


async def test_a_node_cut_off_past_its_lease_never_overwrites_the_take_overs_crash_record(
    database: str,
    db: asyncpg.Connection,
    proxies: Callable[[], FaultProxy],
    daemons: Callable[..., DaemonProcess],
) -> None:
    lease_s = 2.0
    link = {"a": proxies(), "b": proxies()}
    nodes = {
        name: daemons(database_url(link[name].port, database), name, lease_s=lease_s)
        for name in ("a", "b")
    }
    for daemon in nodes.values():
        daemon.start(timeout=30)

    async def open_run_of(job_id: str) -> asyncpg.Record | None:
        record: asyncpg.Record | None = await db.fetchrow(
            "SELECT id, node FROM runs WHERE job_id = $1 AND outcome IS NULL", job_id
        )
        return record

    # Shorter than the lease: the owner keeps its job, nothing is taken over.
    [short] = await add_jobs(nodes["a"], [rec(0.0, sleep_s=1.5)])
    await wait_for(
        lambda: _true(open_run_of(short)),
        within=20,
        what="the first job to start",
    )
    owner = (await open_run_of(short) or {"node": "?"})["node"]
    link[owner].blackhole()
    await anyio.sleep(lease_s / 2)  # the partition's length
    link[owner].pass_through()
    await wait_for(
        lambda: _status_is(db, short, "completed"), within=30, what="the short-cut job to complete"
    )
    assert await db.fetchval("SELECT count(*) FROM runs WHERE outcome = 'crashed'") == 0

    # Longer than the lease: the other node takes over and records the run crashed.
    [job_id] = await add_jobs(nodes["a"], [rec(0.0, sleep_s=0.5, max_retries=1)])
    await wait_for(lambda: _true(open_run_of(job_id)), within=20, what="the job to start")
    run = await open_run_of(job_id)
    assert run is not None
    run_id, owner = run["id"], run["node"]
    other = "b" if owner == "a" else "a"
    link[owner].blackhole()
    cut = time.monotonic()

    async def crashed() -> bool:
        outcome = await db.fetchval("SELECT outcome FROM runs WHERE id = $1", run_id)
        return bool(outcome == "crashed")

    await wait_for(crashed, within=30, what="the take-over's crashed record")
    taken_after = time.monotonic() - cut
    # The owner's handler (0.5 s) has finished meanwhile; its checkpoint waits
    # in the partition. Heal: the late result arrives.
    link[owner].pass_through()
    healed = time.monotonic()

    async def late_row() -> bool:
        return bool(await db.fetchval("SELECT count(*) FROM runs WHERE id = $1", run_id + "-late"))

    await wait_for(late_row, within=40, what="the returning node's late result")
    late_after = time.monotonic() - healed
    rows = {
        record["id"]: record
        for record in await db.fetch(
            "SELECT id, outcome, node, lease_lost, error FROM runs WHERE job_id = $1", job_id
        )
    }
    assert rows[run_id]["outcome"] == "crashed" and rows[run_id]["node"] == owner
    assert not rows[run_id]["lease_lost"]
    late = rows[run_id + "-late"]
    assert late["node"] == owner and late["lease_lost"] is True
    assert late["outcome"] in ("success", "canceled")
    await wait_for(lambda: _status_is(db, job_id, "completed"), within=30, what="the retry")
    async with Client(nodes[other].socket_path, timeout=30) as client:
        page = await client.list_runs(job_id)
    assert {run.id: run.lease_lost for run in page.items}[run_id + "-late"] is True
    for daemon in nodes.values():
        assert daemon.proc is not None and daemon.proc.poll() is None, daemon.stderr_tail()
    print(
        f"\n[measured] partition > lease ({lease_s} s): crashed recorded by {other} "
        f"{taken_after:.1f} s after the cut; late result ({late['outcome']}) written "
        f"{late_after:.1f} s after healing; partition {lease_s / 2} s < lease: no take-over"
    )


async def _true(value: Awaitable[object]) -> bool:
    return bool(await value)


async def _status_is(db: asyncpg.Connection, job_id: str, status: str) -> bool:
    return bool(await db.fetchval("SELECT status FROM jobs WHERE id = $1", job_id) == status)


# -- finding 3: latency is not charged to the handler ---------------------------------


async def test_a_half_second_exec_job_with_a_1s_timeout_succeeds_at_200ms_per_round_trip(
    database: str,
    db: asyncpg.Connection,
    proxies: Callable[[], FaultProxy],
    daemons: Callable[..., DaemonProcess],
) -> None:
    proxy = proxies()
    node = daemons(database_url(proxy.port, database), "a", lease_s=10.0, safety_recheck_s=10.0)
    node.start(timeout=30)
    proxy.latency(0.2)
    specs = [
        JobSpec(job_type="exec", payload={"argv": [SLEEP, "0.5"]}, timeout_s=1.0, max_retries=0)
        for _ in range(10)
    ]
    ids = await add_jobs(node, specs)

    async def all_final() -> bool:
        final = await db.fetchval(
            "SELECT count(*) FROM jobs WHERE id = ANY($1::text[])"
            " AND status IN ('completed', 'failed_permanent')",
            ids,
        )
        return bool(final == len(ids))

    await wait_for(all_final, within=60, what="the exec jobs to finish")
    outcomes = await db.fetch(
        "SELECT outcome, count(*) FROM runs WHERE job_id = ANY($1::text[]) GROUP BY outcome", ids
    )
    assert {row[0]: row[1] for row in outcomes} == {"success": len(ids)}
    lateness = [event["lateness_ms"] for event in node.events("run_started")]
    print(
        f"\n[measured] 200 ms per round trip: {len(ids)}/{len(ids)} exec jobs succeeded;"
        f" handler start lateness {min(lateness):.0f}-{max(lateness):.0f} ms"
    )


# -- finding 4: an add whose reply never comes ----------------------------------------


async def test_an_add_timed_out_on_a_silent_database_is_outcome_unknown_and_a_named_retry_is_safe(
    database: str,
    db: asyncpg.Connection,
    proxies: Callable[[], FaultProxy],
    daemons: Callable[..., DaemonProcess],
) -> None:
    proxy = proxies()
    node = daemons(database_url(proxy.port, database), "a")
    node.start(timeout=30)
    proxy.blackhole()
    env = {**os.environ, "NEXUS_SCHEDD_SOCKET": str(node.socket_path)}
    add = [
        console_script("nexus-schedctl"),
        "--timeout",
        "2",
        "add",
        "rec",
        "--name",
        "nightly-report",
        "--at",
        "2030-01-01T00:00:00Z",
    ]
    timed_out = await anyio.run_process(add, check=False, env=env)
    assert timed_out.returncode == EXIT_OUTCOME_UNKNOWN, timed_out.stderr
    assert b"outcome unknown" in timed_out.stderr
    proxy.pass_through()
    # Retried as it was (same name, same definition): one job, whether or not
    # the first add had happened.
    retried = await anyio.run_process([*add[:3], "--json", *add[3:]], check=False, env=env)
    assert retried.returncode == 0, retried.stderr
    assert await db.fetchval("SELECT count(*) FROM jobs WHERE name = 'nightly-report'") == 1


# -- finding 5: no add waits for the safety re-check -----------------------------------


async def test_a_job_added_right_after_ready_runs_at_once_every_time(
    database: str,
    db: asyncpg.Connection,
    daemons: Callable[..., DaemonProcess],
) -> None:
    url = database_url(UPSTREAM[1], database)
    tries = 10
    waited: list[float] = []
    for attempt in range(tries):
        node = daemons(url, f"r{attempt}", safety_recheck_s=60.0, log_level="warning")
        node.start(timeout=30)
        [job_id] = await add_jobs(node, [rec(0.0, sleep_s=0.0)])
        # 20 s: a correctness bound far below the 60 s safety re-check.
        waited.append(
            await wait_for(
                lambda job_id=job_id: _status_is(db, job_id, "completed"),
                within=20,
                what=f"try {attempt}: the job added right after READY to run",
            )
        )
        node.send(signal.SIGTERM)
        assert node.wait_exit(timeout=30) == 0
    print(
        f"\n[measured] added right after READY, {tries} tries: ran within "
        f"{min(waited) * 1000:.0f}-{max(waited) * 1000:.0f} ms"
    )


# -- the store unusable for good; down at start ----------------------------------------


async def test_a_store_that_becomes_unusable_ends_the_daemon_saying_what_happened(
    database: str,
    db: asyncpg.Connection,
    daemons: Callable[..., DaemonProcess],
) -> None:
    node = daemons(database_url(UPSTREAM[1], database), "a", safety_recheck_s=1.0)
    node.start(timeout=30)
    await db.execute("DROP SCHEMA public CASCADE")
    code = await anyio.to_thread.run_sync(lambda: node.wait_exit(timeout=30))
    assert code == 1
    tail = node.stderr_tail()
    assert "nexus-schedd: the store became unusable:" in tail, tail
    assert "cannot open the store" not in tail


async def test_a_database_down_at_start_is_reported_as_cannot_open_the_store(
    database: str,
    proxies: Callable[[], FaultProxy],
    daemons: Callable[..., DaemonProcess],
) -> None:
    proxy = proxies()
    proxy.refuse()
    node = daemons(database_url(proxy.port, database), "a")
    started = time.monotonic()
    node.start(wait_ready=False)
    code = await anyio.to_thread.run_sync(lambda: node.wait_exit(timeout=30))
    took = time.monotonic() - started
    assert code == 1
    assert "nexus-schedd: cannot open the store:" in node.stderr_tail()
    print(f"\n[measured] database refusing at start: exit 1 after {took:.1f} s")
