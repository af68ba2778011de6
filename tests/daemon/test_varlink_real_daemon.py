"""The third-party ``varlink`` client from PyPI (``python -m varlink.cli``) against the
real ``nexus-schedd`` process: introspection, and every io.nexus.Scheduler method."""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from nexus_schedd.control.varlink import load_interface
from tests.daemon.daemon_process import DaemonProcess, console_script

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

CONFIG = """
[daemon]
log_format = "json"

[control]
admin_group = ""

[[schedules]]
name = "static-hourly"
job_type = "log"
cron = "0 * * * *"
"""


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[DaemonProcess]:
    process = DaemonProcess(tmp_path, CONFIG)
    process.start()
    yield process
    process.close()


def varlink(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "varlink.cli", *args], capture_output=True, text=True, timeout=30
    )


def test_introspection_with_the_third_party_client(daemon: DaemonProcess) -> None:
    info = varlink("info", f"unix:{daemon.socket_path}")
    assert info.returncode == 0, info.stderr
    assert "Product: nexus-schedd" in info.stdout
    assert "io.nexus.Scheduler" in info.stdout and "org.varlink.service" in info.stdout
    described = varlink("help", f"unix:{daemon.socket_path}/io.nexus.Scheduler")
    assert described.returncode == 0, described.stderr
    assert "method AddJob(job: JobSpec, trace_context: ?object) -> (job: Job)" in described.stdout


def test_every_method_is_callable_on_the_real_daemon(daemon: DaemonProcess) -> None:
    called: set[str] = set()

    def call(method: str, parameters: dict[str, Any]) -> Any:
        called.add(method)
        done = varlink(
            "call", f"unix:{daemon.socket_path}/io.nexus.Scheduler.{method}", json.dumps(parameters)
        )
        assert done.returncode == 0 and done.stdout.strip(), f"{method}: {done.stderr}"
        return json.loads(done.stdout)

    assert "pending" in call("GetStatus", {})["status"]["counts"]
    job = call(
        "AddJob", {"job": {"job_type": "log", "name": "v", "run_at": "2031-01-01T00:00:00Z"}}
    )["job"]
    [other] = call("AddJobs", {"jobs": [{"job_type": "log", "run_at": "2031-01-01T00:00:00Z"}]})[
        "jobs"
    ]
    assert call("GetJob", {"id": "v"})["job"]["id"] == job["id"]
    assert len(call("ListJobs", {"limit": 10})["jobs"]) == 3  # with the static schedule
    assert call("PauseJob", {"id": job["id"]})["job"]["status"] == "paused"
    assert call("ResumeJob", {"id": job["id"]})["job"]["status"] == "pending"
    moved = call("RescheduleJob", {"id": job["id"], "run_at": "2032-01-01T00:00:00Z"})
    assert moved["job"]["run_at"] == "2032-01-01T00:00:00+00:00"
    call("TriggerJob", {"id": job["id"]})
    daemon.wait_event("run_finished", job_id=job["id"])
    assert [run["outcome"] for run in call("ListRuns", {"job_id": job["id"]})["runs"]] == [
        "success"
    ]
    preview = call(
        "Preview",
        {
            "recurrence": {"kind": "cron", "cron": "0 9 * * *"},
            "start": "2030-01-01T09:00:00Z",
            "count": 1,
        },
    )
    assert preview["occurrences"] == ["2030-01-02T09:00:00+00:00"]
    # The built-ins: exec, http, log and the four queue handlers (unconfigured here).
    assert call("ListHandlers", {})["handlers"] == [
        "amqp",
        "celery",
        "exec",
        "http",
        "log",
        "nats",
        "redis",
    ]
    assert "BEGIN:VCALENDAR" in call("ExportCalendar", {"days": 3})["ical"]
    assert call("CancelJob", {"id": other["id"]})["job"]["status"] == "canceled"
    requeued = call("RequeueJob", {"id": other["id"], "run_at": "2033-01-01T00:00:00Z"})
    assert requeued["job"]["status"] == "pending"
    call("CancelJob", {"id": other["id"]})
    bulk = call("RequeueJobs", {"status": ["canceled"]})
    assert (bulk["count"], bulk["ids"]) == (1, [other["id"]])
    daily = {"job_type": "log", "run_at": "2031-01-01T00:00:00Z", "recurrence": {"kind": "daily"}}
    recurring = call("AddJob", {"job": daily})["job"]
    before_first = {"id": recurring["id"], "from": "2030-01-01T00:00", "to": "2030-02-01T00:00"}
    assert call("BackfillJob", before_first)["count"] == 0
    assert "result" in call("Reload", {})

    called.add("Watch")
    address = f"unix:{daemon.socket_path}/io.nexus.Scheduler.Watch"
    with subprocess.Popen(
        [sys.executable, "-m", "varlink.cli", "call", "--more", address, '{"announce": true}'],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    ) as watcher:
        try:
            assert watcher.stdout is not None
            received = read_until(watcher.stdout.fileno(), "subscribed", "")
            # Subscribed: the next change is reported.
            call("AddJob", {"job": {"job_type": "log", "run_at": "2031-01-01T00:00:00Z"}})
            received = read_until(watcher.stdout.fileno(), "job_added", received)
            assert "job_added" in received
        finally:
            watcher.kill()
    assert called == set(load_interface("io.nexus.Scheduler").methods)

    error = varlink(
        "call", f"unix:{daemon.socket_path}/io.nexus.Scheduler.GetJob", '{"id": "nope"}'
    )
    assert "io.nexus.Scheduler.JobNotFound" in error.stderr


def schedctl(daemon: DaemonProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [console_script("nexus-schedctl"), "--socket", str(daemon.socket_path), *args],
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_every_schedctl_command_against_the_real_daemon(
    daemon: DaemonProcess, tmp_path: Path
) -> None:
    def ok(*args: str) -> Any:
        done = schedctl(daemon, "--json", *args)
        assert done.returncode == 0, f"{args}: {done.stderr}"
        return json.loads(done.stdout) if done.stdout.strip() else None

    assert "counts" in json.dumps(ok("status"))
    assert "log" in json.dumps(ok("handlers"))
    assert "result" in json.dumps(ok("reload")) or ok("reload") is not None
    job = ok(
        "add",
        "log",
        "--name",
        "cli",
        "--every",
        "2",
        "hour",
        "--tz",
        "Europe/Berlin",
        "--at",
        "2031-06-01T09:00",
    )["job"]
    assert job["recurrence"]["kind"] == "hourly" and job["run_at"] == "2031-06-01T09:00:00+02:00"
    assert ok("show", "cli")["job"]["id"] == job["id"]
    assert [j["name"] for j in ok("list", "--status", "pending", "--type", "log")["jobs"]] == [
        "static-hourly",
        "cli",
    ]
    assert ok("pause", "cli")["job"]["status"] == "paused"
    assert ok("resume", "cli")["job"]["status"] == "pending"
    assert ok("reschedule", "cli", "--at", "2032-01-01T00:00:00Z")["job"]["run_at"].startswith(
        "2032-01-01T01:00:00"
    )
    ok("trigger", "cli")
    daemon.wait_event("run_finished", job_id=job["id"])
    assert [run["outcome"] for run in ok("runs", "cli")["runs"]] == ["success"]
    assert len(ok("preview", "--cron", "0 9 * * *", "--count", "3")["occurrences"]) == 3
    calendar = tmp_path / "jobs.ics"
    done = schedctl(daemon, "export", "--ical", "--days", "2", "-o", str(calendar))
    assert done.returncode == 0, done.stderr
    assert calendar.read_text().startswith("BEGIN:VCALENDAR")
    watcher = subprocess.Popen(
        [
            console_script("nexus-schedctl"),
            "--socket",
            str(daemon.socket_path),
            "--json",
            "watch",
            "--job",
            job["id"],
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert watcher.stdout is not None
        received = ""
        for _ in range(20):
            ok("trigger", "cli")
            readable, _, _ = select.select([watcher.stdout], [], [], 0.5)
            if readable:
                received += os.read(watcher.stdout.fileno(), 65536).decode()
            if "run_finished" in received:
                break
        assert "run_finished" in received
    finally:
        watcher.kill()
        watcher.wait()
        watcher.stdout.close()  # type: ignore[union-attr]
    assert ok("cancel", "cli")["job"]["status"] == "canceled"
    refused = schedctl(daemon, "cancel", job["id"])  # a final job: refused, exit 1
    assert refused.returncode == 1 and "canceled" in refused.stderr


def read_until(fd: int, text: str, received: str, limit_s: float = 10.0) -> str:
    """Read ``fd`` until ``text`` has arrived (bounded by ``limit_s``)."""
    deadline = time.monotonic() + limit_s
    while text not in received:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"timed out waiting for {text!r}; got {received!r}"
        readable, _, _ = select.select([fd], [], [], remaining)
        if readable:
            chunk = os.read(fd, 65536).decode()
            assert chunk, f"stream ended before {text!r}; got {received!r}"
            received += chunk
    return received
