"""The third-party ``varlink`` client from PyPI (``python -m varlink.cli``) against the
real ``nexus-schedd`` process: introspection, and every io.nexus.Scheduler method."""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from nexus_schedd.control.varlink import load_interface
from tests.daemon.daemon_process import DaemonProcess

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
    assert "method AddJob(job: JobSpec) -> (job: Job)" in described.stdout


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
    assert call("ListHandlers", {})["handlers"] == ["exec", "http", "log"]
    assert "BEGIN:VCALENDAR" in call("ExportCalendar", {"days": 3})["ical"]
    assert call("CancelJob", {"id": other["id"]})["job"]["status"] == "canceled"
    assert "result" in call("Reload", {})

    called.add("Watch")
    address = f"unix:{daemon.socket_path}/io.nexus.Scheduler.Watch"
    with subprocess.Popen(
        [sys.executable, "-m", "varlink.cli", "call", "--more", address, "{}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    ) as watcher:
        try:
            assert watcher.stdout is not None
            # Keep changing something until the subscription reports it (the
            # client needs a moment to subscribe; every wait here is bounded).
            received = ""
            for _ in range(20):
                call("AddJob", {"job": {"job_type": "log", "run_at": "2031-01-01T00:00:00Z"}})
                readable, _, _ = select.select([watcher.stdout], [], [], 0.5)
                if readable:
                    received += os.read(watcher.stdout.fileno(), 65536).decode()
                if "job_added" in received:
                    break
            assert "job_added" in received
        finally:
            watcher.kill()
    assert called == set(load_interface("io.nexus.Scheduler").methods)

    error = varlink(
        "call", f"unix:{daemon.socket_path}/io.nexus.Scheduler.GetJob", '{"id": "nope"}'
    )
    assert "io.nexus.Scheduler.JobNotFound" in error.stderr
