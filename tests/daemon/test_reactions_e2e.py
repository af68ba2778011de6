"""End-to-end, SPEC 15 follow-ups and notifications through the real daemon: what
they add, and kill -9 at random moments never leaving a failed occurrence without
its follow-up and notification, or either without the failure."""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest

from nexus_schedd.control.client import Client
from nexus_schedd.daemon.config import DB_FILE
from nexus_schedd.model import JobSpec
from tests.daemon.test_daemon_e2e import base_config, schedctl, schedctl_json, wait_status

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

NOTIFY = """
[[notify]]
on = ["failed_permanent", "crashed"]
job_types = ["exec"]
job_type = "log"
payload = { message = "exec job failed" }
"""


def failing_script(tmp_path: Path) -> Path:
    script = tmp_path / "fail.sh"
    script.write_text('#!/bin/sh\necho "no space left" >&2\nexit 3\n')
    script.chmod(0o755)
    return script


def test_follow_ups_and_a_notification_are_added_and_shown(
    tmp_path: Path, daemon_factory: Any
) -> None:
    daemon = daemon_factory(base_config(tmp_path, extra=NOTIFY))
    daemon.start()
    on_failure = json.dumps({"job_type": "log", "payload": {"message": "clean up"}})
    on_success = json.dumps({"job_type": "log", "payload": {"message": "publish"}})
    payload = json.dumps({"argv": [str(failing_script(tmp_path))]})
    job = schedctl_json(
        daemon,
        "add",
        "exec",
        "--payload",
        payload,
        "--max-retries",
        "0",
        "--on-failure",
        on_failure,
        "--on-success",
        on_success,
    )["job"]
    assert job["on_failure"]["payload"] == {"message": "clean up"}
    shown = schedctl(daemon, "show", job["id"]).stdout
    assert "on failure" in shown and "clean up" in shown
    wait_status(daemon, job["id"], "failed_permanent")
    [run] = schedctl_json(daemon, "runs", job["id"])["runs"]

    def added() -> list[dict[str, Any]]:
        jobs = schedctl_json(daemon, "list", "--type", "log", "--status", "completed")["jobs"]
        return [j for j in jobs if "trigger" in j["payload"] or "event" in j["payload"]]

    daemon.wait_until(lambda: len(added()) == 2, timeout=30, what="follow-up and notification")
    by_kind = {("event" if "event" in j["payload"] else "trigger"): j for j in added()}
    trigger = by_kind["trigger"]["payload"]["trigger"]
    assert trigger["job_id"] == job["id"] and trigger["run_id"] == run["id"]
    assert trigger["outcome"] == "failure"
    assert by_kind["trigger"]["payload"]["message"] == "clean up"  # not on_success
    event = by_kind["event"]["payload"]["event"]
    assert (event["event"], event["job"]["id"], event["run"]["id"]) == (
        "failed_permanent",
        job["id"],
        run["id"],
    )
    assert by_kind["event"]["notification"] is True


def test_a_follow_up_naming_a_type_without_a_handler_is_refused(
    tmp_path: Path, daemon_factory: Any
) -> None:
    daemon = daemon_factory(base_config(tmp_path))
    daemon.start()
    bad = json.dumps({"job_type": "pager"})
    refused = schedctl(daemon, "add", "log", "--on-failure", bad, check=False)
    assert refused.returncode != 0
    assert "on_failure.job_type" in refused.stderr and "pager" in refused.stderr
    assert schedctl_json(daemon, "list")["jobs"] == []


async def add_all(socket_path: Path, specs: list[JobSpec]) -> None:
    async with Client(socket_path, timeout=10) as client:
        await client.add_jobs(specs)


def check_pairs(db: Path) -> tuple[int, int]:
    """Every exec job that ended failed has exactly one follow-up and one
    notification, each naming the run that ended it; and neither exists without
    that run closed on disk. Returns (failed jobs, follow-ups)."""
    connection = sqlite3.connect(db)
    try:
        rows = connection.execute(
            "SELECT id, job_type, status, payload, extras FROM jobs"
        ).fetchall()
        runs = {
            run_id: (job_id, outcome)
            for run_id, job_id, outcome in connection.execute(
                "SELECT id, job_id, outcome FROM runs"
            )
        }
    finally:
        connection.close()
    failed = {job_id for job_id, job_type, status, _, _ in rows if status == "failed_permanent"}
    failed &= {job_id for job_id, job_type, *_ in rows if job_type == "exec"}
    follow_ups: dict[str, str] = {}
    notified: dict[str, str] = {}
    for _, job_type, _, payload_text, _ in rows:
        payload = json.loads(payload_text)
        if job_type != "log":
            continue
        if "trigger" in payload:
            trigger = payload["trigger"]
            assert trigger["job_id"] not in follow_ups, "two follow-ups for one occurrence"
            follow_ups[trigger["job_id"]] = trigger["run_id"]
        if "event" in payload and payload["event"]["event"] == "failed_permanent":
            event = payload["event"]
            assert event["job"]["id"] not in notified, "two notifications for one failure"
            notified[event["job"]["id"]] = event["run"]["id"]
    assert set(follow_ups) == failed, "a failure without its follow-up, or the reverse"
    assert set(notified) == failed, "a failure without its notification, or the reverse"
    for job_id, run_id in [*follow_ups.items(), *notified.items()]:
        assert runs[run_id][0] == job_id and runs[run_id][1] in ("failure", "crashed")
    return len(failed), len(follow_ups)


def test_kill_9_never_separates_a_failure_from_its_follow_up_and_notification(
    tmp_path: Path, daemon_factory: Any
) -> None:
    """Cycles of: start, add failing jobs due over the next second, kill -9 at a
    random moment, then read the database as the kill left it."""
    rng = random.Random(20)
    config = base_config(tmp_path, extra=NOTIFY)
    script = failing_script(tmp_path)
    db = tmp_path / "state" / DB_FILE
    follow_up = JobSpec(job_type="log", payload={"message": "after"})
    for _cycle in range(5):
        daemon = daemon_factory(config)
        daemon.start()
        now = datetime.now(UTC)
        specs = [
            JobSpec(
                job_type="exec",
                payload={"argv": [str(script)]},
                run_at=now + timedelta(seconds=rng.uniform(0.0, 1.0)),
                max_retries=0,
                on_failure=follow_up,
            )
            for _ in range(40)
        ]
        anyio.run(add_all, daemon.socket_path, specs)
        time.sleep(rng.uniform(0.2, 1.2))  # a random moment to kill at, not a wait
        assert daemon.proc is not None
        os.kill(daemon.proc.pid, signal.SIGKILL)
        daemon.wait_exit(timeout=10)
        daemon.close()
        check_pairs(db)
    # Finally let the survivors run (crashed runs close, their follow-ups follow).
    daemon = daemon_factory(config)
    daemon.start()

    def drained() -> bool:
        counts = schedctl_json(daemon, "status")["status"]["counts"]
        return counts.get("pending", 0) == 0 and counts.get("running", 0) == 0

    daemon.wait_until(drained, timeout=120, what="every job and follow-up final")
    daemon.send(signal.SIGTERM)
    assert daemon.wait_exit() == 0
    failed, follow_ups = check_pairs(db)
    assert failed == follow_ups == 5 * 40  # each one failed for good, once
