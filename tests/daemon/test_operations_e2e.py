"""End-to-end, SPEC 15 operations through the real daemon: requeue of a job that
failed for good once its cause is fixed, and a pause until a time that outlives
a restart of the daemon."""

from __future__ import annotations

import json
import signal
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.daemon.test_daemon_e2e import base_config, schedctl, schedctl_json, wait_status

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


def test_a_failed_job_requeued_after_its_cause_is_fixed_completes(
    tmp_path: Path, daemon_factory: Any
) -> None:
    marker = tmp_path / "fixed"
    script = tmp_path / "export.sh"
    script.write_text(f'#!/bin/sh\n[ -e "{marker}" ] || {{ echo "disk full" >&2; exit 3; }}\n')
    script.chmod(0o755)
    daemon = daemon_factory(base_config(tmp_path))
    daemon.start()
    payload = json.dumps({"argv": [str(script)]})
    job = schedctl_json(daemon, "add", "exec", "--payload", payload, "--max-retries", "0")["job"]
    failed = wait_status(daemon, job["id"], "failed_permanent")
    assert "exit" in failed["last_result"]["error"]

    marker.touch()  # the operator fixes the cause, then requeues what failed
    bulk = schedctl_json(daemon, "requeue", "--all", "--type", "exec", "--error", "exit")
    assert bulk["ids"] == [job["id"]]
    done = wait_status(daemon, job["id"], "completed")
    assert done["retry_count"] == 0
    runs = schedctl_json(daemon, "runs", job["id"])["runs"]
    assert [run["outcome"] for run in runs] == ["success", "failure"]  # newest first
    again = schedctl(daemon, "requeue", job["id"], check=False)
    assert again.returncode == 1 and "completed" in again.stderr


def test_a_pause_until_outlives_a_restart_and_resumes_on_time(
    tmp_path: Path, daemon_factory: Any
) -> None:
    config = base_config(tmp_path)
    first = daemon_factory(config)
    first.start()
    # Due only once paused, whatever the machine's load: added far ahead, paused,
    # then moved to a time already past (a paused job keeps its pause).
    later = datetime.now(UTC) + timedelta(hours=1)
    job = schedctl_json(first, "add", "log", "--at", later.isoformat(), "--name", "p")["job"]
    until = datetime.now(UTC) + timedelta(seconds=4)
    paused = schedctl_json(first, "pause", "p", "--until", until.isoformat())["job"]
    assert paused["status"] == "paused" and paused["paused_until"] is not None
    due = schedctl_json(first, "reschedule", "p", "--at", datetime.now(UTC).isoformat())["job"]
    assert due["status"] == "paused"
    first.send(signal.SIGTERM)
    assert first.wait_exit() == 0

    second = daemon_factory(config)
    second.start()
    [resumed] = second.wait_event("paused_job_resumed", timeout=30, job_id=job["id"])
    assert resumed["late_ms"] >= 0
    done = wait_status(second, job["id"], "completed")
    started = datetime.fromisoformat(done["last_result"]["started_at"])
    assert started >= until  # never before its time


def test_a_rate_limit_spreads_the_starts_of_its_type_only(
    tmp_path: Path, daemon_factory: Any
) -> None:
    config = base_config(tmp_path, extra='[limits.rates]\nlog = "2/second"\n')
    daemon = daemon_factory(config)
    daemon.start()
    due = (datetime.now(UTC) + timedelta(seconds=2)).isoformat()
    ids = [schedctl_json(daemon, "add", "log", "--at", due)["job"]["id"] for _ in range(6)]
    for job_id in ids:
        wait_status(daemon, job_id, "completed")
    starts = sorted(
        datetime.fromisoformat(
            schedctl_json(daemon, "show", job_id)["job"]["last_result"]["started_at"]
        )
        for job_id in ids
    )
    # A burst of two, then one every 0.5 s: the sixth starts at least 2 s after the first.
    assert (starts[-1] - starts[0]).total_seconds() >= 1.95
    assert (starts[2] - starts[0]).total_seconds() >= 0.45
    status = schedctl_json(daemon, "status")["status"]
    assert status["counts"].get("failed_permanent", 0) == 0


def test_backfill_runs_past_days_once_more_with_their_keys_and_the_schedule_stays(
    tmp_path: Path, daemon_factory: Any
) -> None:
    keys = tmp_path / "keys"
    script = tmp_path / "export.sh"
    script.write_text(f'#!/bin/sh\necho "$NEXUS_SCHEDD_IDEMPOTENCY_KEY" >> "{keys}"\n')
    script.chmod(0o755)
    daemon = daemon_factory(base_config(tmp_path))
    daemon.start()
    first = (datetime.now(UTC) - timedelta(days=3)).replace(microsecond=0)
    payload = json.dumps({"argv": [str(script)]})
    added = schedctl_json(
        daemon,
        "add",
        "exec",
        "--payload",
        payload,
        "--at",
        first.isoformat(),
        "--every",
        "1",
        "day",
    )
    job_id = added["job"]["id"]
    # Three days missed: run_once runs the latest (occurrence 3) now.
    seen: list[dict[str, Any]] = []

    def moved_on() -> bool:
        seen.append(schedctl_json(daemon, "show", job_id)["job"])
        return bool(seen[-1]["status"] == "pending" and seen[-1]["occurrence_count"] == 4)

    daemon.wait_until(moved_on, timeout=30, what="the job's own run of occurrence 3")
    assert keys.read_text().split() == [f"{job_id}:3"]
    before = seen[-1]

    end = (first + timedelta(days=3)).isoformat()
    reply = schedctl_json(daemon, "backfill", job_id, "--from", first.isoformat(), "--to", end)
    assert reply["count"] == 3 and reply["already_queued"] == 0
    for backfill_id in reply["ids"]:
        wait_status(daemon, backfill_id, "completed")
    assert sorted(keys.read_text().split()) == [f"{job_id}:{n}" for n in range(4)]
    scheduled = [
        schedctl_json(daemon, "runs", backfill_id)["runs"][0]["scheduled_for"]
        for backfill_id in reply["ids"]
    ]
    expected = [first + timedelta(days=n) for n in range(3)]
    assert [datetime.fromisoformat(text) for text in scheduled] == expected
    after = schedctl_json(daemon, "show", job_id)["job"]
    for field in ("status", "run_at", "scheduled_for", "occurrence_count", "anchor_at"):
        assert after[field] == before[field], field
