"""The third-party ``varlink`` client from PyPI (``python -m varlink.cli``) against the
real engine: introspection works and every method of io.nexus.Scheduler is callable."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import anyio
import pytest

from nexus_schedd.control.varlink import load_interface
from tests.control.harness import Daemon

CLI = [sys.executable, "-m", "varlink.cli"]


async def varlink_cli(*args: str) -> subprocess.CompletedProcess[bytes]:
    return await anyio.run_process([*CLI, *args], check=False)


async def varlink_call(daemon: Daemon, method: str, parameters: dict[str, Any]) -> Any:
    """Call through the third-party client; return its decoded reply, or raise with stderr."""
    address = f"unix:{daemon.socket_path}/io.nexus.Scheduler.{method}"
    done = await varlink_cli("call", address, json.dumps(parameters))
    if not done.stdout.strip():
        raise AssertionError(f"{method}: {done.stderr.decode()}")
    return json.loads(done.stdout)


@pytest.mark.anyio
async def test_varlink_info_lists_the_interfaces(daemon: Daemon) -> None:
    done = await varlink_cli("info", f"unix:{daemon.socket_path}")
    out = done.stdout.decode()
    assert done.returncode == 0, done.stderr
    assert "Product: nexus-schedd" in out
    assert "io.nexus.Scheduler" in out and "org.varlink.service" in out


@pytest.mark.anyio
async def test_varlink_help_prints_the_interface_description(daemon: Daemon) -> None:
    done = await varlink_cli("help", f"unix:{daemon.socket_path}/io.nexus.Scheduler")
    out = done.stdout.decode()
    assert done.returncode == 0, done.stderr
    assert "interface io.nexus.Scheduler" in out
    assert "method AddJob(job: JobSpec, trace_context: ?object) -> (job: Job)" in out


@pytest.mark.anyio
async def test_every_method_is_callable_with_the_third_party_client(daemon: Daemon) -> None:
    called: set[str] = set()

    async def call(method: str, parameters: dict[str, Any]) -> Any:
        called.add(method)
        return await varlink_call(daemon, method, parameters)

    status = await call("GetStatus", {})
    assert set(status["status"]["counts"]) >= {"pending", "canceled"}
    job = (
        await call(
            "AddJob", {"job": {"job_type": "log", "name": "v", "run_at": "2031-01-01T00:00:00Z"}}
        )
    )["job"]
    jobs = (
        await call("AddJobs", {"jobs": [{"job_type": "log", "run_at": "2031-01-01T00:00:00Z"}]})
    )["jobs"]
    assert len(jobs) == 1
    assert (await call("GetJob", {"id": "v"}))["job"]["id"] == job["id"]
    assert len((await call("ListJobs", {"limit": 10}))["jobs"]) == 2
    assert (await call("PauseJob", {"id": job["id"]}))["job"]["status"] == "paused"
    assert (await call("ResumeJob", {"id": job["id"]}))["job"]["status"] == "pending"
    moved = await call("RescheduleJob", {"id": job["id"], "run_at": "2032-01-01T00:00:00Z"})
    assert moved["job"]["run_at"] == "2032-01-01T00:00:00+00:00"
    await call("TriggerJob", {"id": job["id"]})
    assert "runs" in await call("ListRuns", {"job_id": job["id"]})
    preview = await call(
        "Preview", {"recurrence": {"kind": "hourly"}, "start": "2030-01-01T00:00:00Z", "count": 2}
    )
    assert preview["occurrences"] == ["2030-01-01T00:00:00+00:00", "2030-01-01T01:00:00+00:00"]
    assert (await call("ListHandlers", {}))["handlers"] == ["log"]
    assert "BEGIN:VCALENDAR" in (await call("ExportCalendar", {"days": 3}))["ical"]
    assert (await call("CancelJob", {"id": jobs[0]["id"]}))["job"]["status"] == "canceled"
    requeued = await call("RequeueJob", {"id": jobs[0]["id"], "run_at": "2033-01-01T00:00:00Z"})
    assert requeued["job"]["status"] == "pending"
    await call("CancelJob", {"id": jobs[0]["id"]})
    bulk = await call("RequeueJobs", {"status": ["canceled"]})
    assert (bulk["count"], bulk["ids"]) == (1, [jobs[0]["id"]])
    daily = {"job_type": "log", "run_at": "2031-01-01T00:00:00Z", "recurrence": {"kind": "daily"}}
    recurring = (await call("AddJob", {"job": daily}))["job"]
    before_first = {"id": recurring["id"], "from": "2030-01-01T00:00", "to": "2030-02-01T00:00"}
    backfilled = await call("BackfillJob", before_first)
    assert (backfilled["count"], backfilled["first"]) == (0, None)

    # Reload has no callback in this daemon: the client still calls it and gets the error.
    called.add("Reload")
    done = await varlink_cli("call", f"unix:{daemon.socket_path}/io.nexus.Scheduler.Reload", "{}")
    assert "MethodNotImplemented" in done.stderr.decode()

    # Watch streams with --more: read the first event, then hang up.
    called.add("Watch")
    address = f"unix:{daemon.socket_path}/io.nexus.Scheduler.Watch"
    watch = [*CLI, "call", "--more", address, '{"announce": true}']
    async with await anyio.open_process(watch) as watcher:
        assert watcher.stdout is not None
        received = b""
        with anyio.fail_after(10):
            while b"subscribed" not in received:
                received += await watcher.stdout.receive()
        await call("AddJob", {"job": {"job_type": "log", "run_at": "2031-01-01T00:00:00Z"}})
        received = b""
        with anyio.fail_after(10):
            while b"job_added" not in received:
                received += await watcher.stdout.receive()
        watcher.kill()
    assert called == set(load_interface("io.nexus.Scheduler").methods)


@pytest.mark.anyio
async def test_third_party_client_sees_spec_errors(daemon: Daemon) -> None:
    done = await varlink_cli(
        "call", f"unix:{daemon.socket_path}/io.nexus.Scheduler.GetJob", '{"id": "nope"}'
    )
    assert "io.nexus.Scheduler.JobNotFound" in done.stderr.decode()
