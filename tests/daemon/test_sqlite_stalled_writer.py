"""The SQLite counterpart of the PostgreSQL fault proxy: a stalled writer (issue 17).

SQLite has no network link to break; what can stall between the engine and the
disk is the writer process (a slow fsync, a stalled disk, a process stopped by a
debugger). The test stops it with SIGSTOP while a job's start is due to be
checkpointed and while an add is waiting, then lets it go on (SIGCONT): the
stall is charged to no handler's time limit, and the waiting add is committed
and runs. (Resets, refusals and partitions have no SQLite equivalent: there is
no connection to lose; a writer that dies is restarted, see
tests/store/test_sqlite_writer_process.py, and the daemon's kill -9 cycles are
``make soak``.)
"""

from __future__ import annotations

import json
import os
import shutil
import signal
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import anyio
import pytest

from nexus_schedd.client import Client
from nexus_schedd.clock import SystemClock
from nexus_schedd.model import JobSpec
from tests.daemon.daemon_process import DaemonProcess, sqlite_writers

pytestmark = [pytest.mark.e2e, pytest.mark.anyio, pytest.mark.timeout(90)]

SLEEP = shutil.which("sleep") or "/usr/bin/sleep"


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[DaemonProcess]:
    process = DaemonProcess(
        tmp_path,
        f"""
[daemon]
log_format = "json"
shutdown_grace_s = 5

[control]
admin_group = ""

[handlers.exec]
allow = ["{SLEEP}"]
""",
    )
    try:
        yield process
    finally:
        process.close()


async def test_a_stalled_sqlite_writer_is_not_charged_to_the_handler_and_loses_no_add(
    daemon: DaemonProcess,
) -> None:
    daemon.start(timeout=30)
    assert daemon.proc is not None
    writers = sqlite_writers(daemon.proc.pid)
    assert writers, "no SQLite writer process found"
    stall_s = 2.5
    due = SystemClock().now() + timedelta(seconds=1)
    timed = JobSpec(
        job_type="exec",
        run_at=due,
        payload={"argv": [SLEEP, "0.5"]},
        timeout_s=1.0,
        max_retries=0,
    )
    late_add = JobSpec(job_type="exec", payload={"argv": [SLEEP, "0"]}, max_retries=0)
    async with Client(daemon.socket_path, timeout=60) as client:
        job = await client.add_job(timed)
        added: list[str] = []
        for pid in writers:
            os.kill(pid, signal.SIGSTOP)
        try:
            async with anyio.create_task_group() as tg:

                async def add_during_the_stall() -> None:
                    async with Client(daemon.socket_path, timeout=60) as other:
                        added.append((await other.add_job(late_add)).id)

                tg.start_soon(add_during_the_stall)
                # The stall's length (a fault, not a synchronisation): past the
                # job's run_at + timeout_s, so its start commits only after it.
                await anyio.sleep(stall_s)
                assert not added, "an add was acknowledged while the writer was stopped"
                for pid in writers:
                    os.kill(pid, signal.SIGCONT)
        finally:
            for pid in writers:
                os.kill(pid, signal.SIGCONT)
        assert len(added) == 1

        async def final(job_id: str) -> str:
            with anyio.fail_after(30):
                while True:
                    status = (await client.get_job(job_id)).status.value
                    if status in ("completed", "failed_permanent"):
                        return status
                    await anyio.sleep(0.05)

        assert await final(job.id) == "completed"
        assert await final(added[0]) == "completed"
        runs = (await client.list_runs(job.id)).items
    assert [run.outcome.value if run.outcome else None for run in runs] == ["success"]
    assert daemon.proc.poll() is None
    starts = [event for event in daemon.events("run_started") if event.get("job_id") == job.id]
    print(
        "\n[measured] SQLite writer stopped "
        f"{stall_s} s: handler started {json.dumps(starts[0].get('lateness_ms'))} ms late, "
        "succeeded within its 1 s limit; the add made during the stall ran"
    )
