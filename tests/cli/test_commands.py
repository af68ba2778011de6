"""Every ``nexus-schedctl`` command, run as the real console script against a real
daemon: human output, the ``--json`` shape and the exit codes of SPEC section 7."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import anyio
import icalendar
import pytest

from nexus_schedd.model import Job
from tests.control.harness import Daemon, running_daemon
from tests.occurrences import walk

SCHEDCTL = str(Path(sys.executable).with_name("nexus-schedctl"))


async def schedctl(
    daemon: Daemon | None, *args: str, socket: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TZ": "Europe/Berlin"}
    env.pop("NEXUS_SCHEDD_SOCKET", None)
    if daemon is not None:
        env["NEXUS_SCHEDD_SOCKET"] = str(daemon.socket_path)
    if socket is not None:
        env["NEXUS_SCHEDD_SOCKET"] = socket
    done = await anyio.run_process([SCHEDCTL, *args], check=False, env=env)
    return subprocess.CompletedProcess(
        done.args, done.returncode, done.stdout.decode(), done.stderr.decode()
    )


async def json_of(daemon: Daemon, *args: str) -> Any:
    done = await schedctl(daemon, "--json", *args)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.mark.anyio
async def test_status_prints_a_summary_and_its_json(daemon: Daemon) -> None:
    human = await schedctl(daemon, "status")
    assert human.returncode == 0, human.stderr
    assert "jobs:" in human.stdout and "pending 0" in human.stdout
    status = (await json_of(daemon, "status"))["status"]
    assert set(status) >= {
        "counts",
        "running",
        "due_backlog",
        "next_due",
        "lateness_p50_ms",
        "lateness_p99_ms",
        "loop_lag_ms",
        "uptime_s",
        "version",
        "node",
    }


@pytest.mark.anyio
async def test_handlers_lists_the_loaded_handlers(daemon: Daemon) -> None:
    human = await schedctl(daemon, "handlers")
    assert human.stdout.split() == ["log"]
    assert await json_of(daemon, "handlers") == {"handlers": ["log"]}


@pytest.mark.anyio
async def test_reload_reports_the_reconciliation(tmp_path: Path) -> None:
    async def reload() -> dict[str, Any]:
        return {"added": ["nightly"], "updated": [], "removed": []}

    async with running_daemon(tmp_path / "db", reload=reload) as daemon:
        human = await schedctl(daemon, "reload")
        assert human.returncode == 0
        assert "added: nightly" in human.stdout
        assert (await json_of(daemon, "reload"))["result"]["added"] == ["nightly"]


@pytest.mark.anyio
async def test_reload_on_a_daemon_without_config_is_refused(daemon: Daemon) -> None:
    done = await schedctl(daemon, "reload")
    assert done.returncode == 1
    assert "MethodNotImplemented" in done.stderr


@pytest.mark.anyio
async def test_add_sends_every_flag(daemon: Daemon, tmp_path: Path) -> None:
    payload = tmp_path / "payload.json"
    payload.write_text('{"report": "sales"}')
    job = (
        await json_of(
            daemon,
            "add",
            "log",
            "--target",
            "t-9",
            "--payload",
            f"@{payload}",
            "--name",
            "sales",
            "--at",
            "2031-03-01T09:00",
            "--every",
            "2",
            "day",
            "--tz",
            "America/New_York",
            "--until",
            "2031-12-31T00:00",
            "--count",
            "5",
            "--priority",
            "7",
            "--max-retries",
            "1",
            "--timeout",
            "90s",
            "--misfire",
            "skip",
            "--overlap",
            "allow",
            "--jitter",
            "5",
        )
    )["job"]
    # The first occurrence is 09:00; jitter (up to 5 s) moves only its run_at.
    assert job["scheduled_for"] == "2031-03-01T09:00:00-05:00"
    delay = datetime.fromisoformat(job["run_at"]) - datetime.fromisoformat(job["scheduled_for"])
    assert 0 <= delay.total_seconds() <= 5
    assert job["recurrence"] == {
        "kind": "daily",
        "interval": 2,
        "cron": None,
        "timezone": "America/New_York",
        "ends_at": "2031-12-31T05:00:00+00:00",
        "max_occurrences": 5,
    }
    assert (job["target_id"], job["payload"], job["name"]) == ("t-9", {"report": "sales"}, "sales")
    assert (job["priority"], job["max_retries"], job["timeout_s"]) == (7, 1, 90.0)
    assert (job["misfire"], job["overlap"], job["jitter_s"]) == ("skip", "allow", 5.0)


@pytest.mark.anyio
async def test_add_reads_times_without_an_offset_in_local_time(daemon: Daemon) -> None:
    human = await schedctl(
        daemon,
        "add",
        "log",
        "--at",
        "2031-07-01T10:00",
        "--cron",
        "0 10 * * *",
        "--tz",
        "Europe/Berlin",
    )
    assert human.returncode == 0, human.stderr
    assert "next run: 2031-07-01 10:00:00 CEST" in human.stdout  # TZ=Europe/Berlin
    assert "cron 0 10 * * * (Europe/Berlin)" in human.stdout
    # Without --tz: --at is still read in the local zone (10:00 CEST = 08:00 UTC),
    # and the recurrence takes the daemon's default zone (UTC here, SPEC 3).
    local = await json_of(daemon, "add", "log", "--at", "2031-07-01T10:00", "--cron", "0 10 * * *")
    assert local["job"]["recurrence"]["timezone"] == "UTC"
    assert local["job"]["run_at"] == "2031-07-01T10:00:00+00:00"
    later = (await json_of(daemon, "add", "log", "--in", "2h"))["job"]
    assert later["status"] == "pending"


BAD_INPUT = (
    (["add", "log", "--cron", "0 0 30 2 *"], 1, "recurrence.cron"),
    (["add", "log", "--cron", "61 * * * *"], 1, "recurrence.cron"),
    (["add", "log", "--at", "soonish"], 1, "--at"),
    (["add", "log", "--tz", "Mars/Olympus"], 1, "--tz"),
    (["add", "log", "--every", "2", "fortnight"], 1, "--every"),
    (["add", "log", "--payload", "{not json"], 1, "payload"),
    (["add", "log", "--payload", '{"blob": "' + "x" * 70_000 + '"}'], 1, "payload"),
    (["add", "log", "--count", "3"], 1, "--until/--count"),
    (["add", "teleport"], 1, "no handler supports job type 'teleport'"),
    (["add", "log", "--at", "2031-01-01", "--in", "5m"], 2, "not allowed with"),
    (["add", "log", "--misfire", "sometimes"], 2, "invalid choice"),
    (["list", "--limit", "0"], 2, "must be >= 1"),
    (["frobnicate"], 2, "invalid choice"),
)


@pytest.mark.anyio
async def test_bad_input_exits_with_the_spec_codes_and_changes_nothing(daemon: Daemon) -> None:
    results: dict[int, subprocess.CompletedProcess[str]] = {}

    async def run(index: int, args: list[str]) -> None:
        results[index] = await schedctl(daemon, *args)

    async with anyio.create_task_group() as tg:
        for index, (args, _, _) in enumerate(BAD_INPUT):
            tg.start_soon(run, index, args)
    for index, (args, code, message) in enumerate(BAD_INPUT):
        done = results[index]
        assert (done.returncode, message in done.stderr) == (code, True), (args, done.stderr)
    assert (await json_of(daemon, "list"))["jobs"] == []


@pytest.mark.anyio
async def test_list_filters_pages_and_prints_a_table(daemon: Daemon) -> None:
    for index in range(3):
        await json_of(daemon, "add", "log", "--target", f"t{index % 2}", "--in", "1h")
    await json_of(daemon, "add", "log", "--name", "held", "--in", "1h")
    await json_of(daemon, "pause", "held")
    table = await schedctl(daemon, "list")
    header, *rows = table.stdout.splitlines()
    assert header.split() == ["ID", "NAME", "TYPE", "TARGET", "STATUS", "NEXT", "RUN", "RECURRENCE"]
    assert len(rows) == 4
    assert len({row.index("log") for row in rows}) == 1  # columns are aligned
    only_t0 = await json_of(daemon, "list", "--target", "t0")
    assert [job["target_id"] for job in only_t0["jobs"]] == ["t0", "t0"]
    paused = await json_of(daemon, "list", "--status", "paused", "--type", "log")
    assert [job["name"] for job in paused["jobs"]] == ["held"]
    first_two = await schedctl(daemon, "list", "--json", "--limit", "2")  # --json after the command
    page = json.loads(first_two.stdout)
    assert len(page["jobs"]) == 2 and page["next_cursor"] is not None
    assert (await json_of(daemon, "list", "--overdue"))["jobs"] == []


@pytest.mark.anyio
async def test_show_prints_a_job_by_id_or_name_and_a_calendar_link(daemon: Daemon) -> None:
    job = (
        await json_of(
            daemon,
            "add",
            "log",
            "--name",
            "weekly",
            "--every",
            "1",
            "week",
            "--at",
            "2031-01-06T08:00",
            "--tz",
            "Europe/Berlin",
        )
    )["job"]
    human = await schedctl(daemon, "show", "weekly")
    assert human.returncode == 0
    assert "id:" in human.stdout and job["id"] in human.stdout
    assert "every 1 week (Europe/Berlin)" in human.stdout
    assert (await json_of(daemon, "show", job["id"]))["job"]["name"] == "weekly"
    link = await schedctl(daemon, "show", "weekly", "--gcal-url")
    url = link.stdout.strip()
    assert url.startswith("https://calendar.google.com/calendar/render?action=TEMPLATE&text=weekly")
    assert "dates=20310106T070000Z%2F20310106T073000Z" in url
    assert "recur=RRULE%3AFREQ%3DWEEKLY" in url
    missing = await schedctl(daemon, "show", "nope")
    assert missing.returncode == 1
    assert "no job with id or name 'nope'" in missing.stderr


@pytest.mark.anyio
async def test_cancel_pause_resume_trigger_and_reschedule(daemon: Daemon) -> None:
    job_id = (
        await json_of(
            daemon, "add", "log", "--every", "1", "day", "--in", "1d", "--tz", "Europe/Berlin"
        )
    )["job"]["id"]
    assert (await json_of(daemon, "pause", job_id))["job"]["status"] == "paused"
    again = await schedctl(daemon, "pause", job_id)
    assert again.returncode == 1  # a paused job cannot be paused: invalid state
    human = await schedctl(daemon, "resume", job_id)
    assert human.returncode == 0 and "pending" in human.stdout
    moved = await json_of(daemon, "reschedule", job_id, "--at", "2032-05-05T12:00:00+00:00")
    assert moved["job"]["run_at"] == "2032-05-05T14:00:00+02:00"
    assert (await json_of(daemon, "trigger", job_id))["job"]["id"] == job_id
    canceled = await schedctl(daemon, "cancel", job_id, "--json")
    assert json.loads(canceled.stdout)["job"]["status"] == "canceled"


@pytest.mark.anyio
async def test_show_and_runs_find_a_job_by_name_after_it_has_run(daemon: Daemon) -> None:
    """Names are unique among live jobs only, but `show NAME` and `runs NAME` still
    find a one-shot job once it has run (the newest job that had the name)."""
    job_id = (await json_of(daemon, "add", "log", "--name", "once-only"))["job"]["id"]
    with anyio.fail_after(10):
        while True:
            if (await json_of(daemon, "show", job_id))["job"]["status"] == "completed":
                break
    shown = await json_of(daemon, "show", "once-only")
    assert (shown["job"]["id"], shown["job"]["status"]) == (job_id, "completed")
    runs = (await json_of(daemon, "runs", "once-only"))["runs"]
    assert [(run["job_id"], run["outcome"]) for run in runs] == [(job_id, "success")]
    # The name is free again: a new job takes it, and `show NAME` finds the live one.
    again = (await json_of(daemon, "add", "log", "--name", "once-only", "--in", "1h"))["job"]
    assert again["id"] != job_id
    assert (await json_of(daemon, "show", "once-only"))["job"]["id"] == again["id"]


@pytest.mark.anyio
async def test_runs_lists_the_history(daemon: Daemon) -> None:
    job_id = (await json_of(daemon, "add", "log", "--name", "now"))["job"]["id"]
    with anyio.fail_after(10):
        while True:
            runs = (await json_of(daemon, "runs", job_id))["runs"]
            if runs and runs[0]["outcome"] == "success":
                break
    assert runs[0]["job_id"] == job_id
    table = await schedctl(daemon, "runs", job_id, "--limit", "5")
    header, row = table.stdout.splitlines()
    assert header.split()[:3] == ["JOB", "TYPE", "ATTEMPT"]
    assert "success" in row
    everything = await json_of(daemon, "runs")
    assert set(everything) == {"runs", "next_cursor"}


@pytest.mark.anyio
async def test_watch_streams_events_as_lines(daemon: Daemon) -> None:
    env = {**os.environ, "NEXUS_SCHEDD_SOCKET": str(daemon.socket_path)}
    async with await anyio.open_process(
        [SCHEDCTL, "watch", "--json", "--type", "log"], env=env
    ) as watcher:
        assert watcher.stdout is not None and watcher.stderr is not None
        said = b""
        with anyio.fail_after(10):
            while b"watching" not in said:  # subscribed: every change from now on is seen
                said += await watcher.stderr.receive()
        await json_of(daemon, "add", "log", "--name", "seen")
        received = b""
        with anyio.fail_after(10):
            while b"\n" not in received:
                received += await watcher.stdout.receive()
        watcher.terminate()
    reply = json.loads(received.split(b"\n", 1)[0])
    assert set(reply) == {"event"}  # the protocol's Watch reply, one per line
    event = reply["event"]
    assert event["kind"] == "job_added"
    assert event["job"]["name"] == "seen"


@pytest.mark.anyio
async def test_export_writes_an_ical_file(daemon: Daemon, tmp_path: Path) -> None:
    await json_of(daemon, "add", "log", "--name", "daily", "--every", "1", "day", "--in", "1h")
    await json_of(daemon, "add", "log", "--name", "cron", "--cron", "0 9 * * 1-5")
    target = tmp_path / "schedule.ics"
    done = await schedctl(daemon, "export", "--ical", "--days", "7", "-o", str(target))
    assert done.returncode == 0, done.stderr
    calendar = icalendar.Calendar.from_ical(target.read_text())
    events = calendar.walk("VEVENT")
    daily = [event for event in events if str(event["summary"]) == "daily"]
    weekdays = [event for event in events if str(event["summary"]) == "cron"]
    assert len(daily) == 1 and daily[0]["rrule"]["FREQ"] == ["DAILY"]
    assert 4 <= len(weekdays) <= 6  # one per weekday occurrence within 7 days
    as_json = await json_of(daemon, "export", "--ical")
    assert as_json["ical"].startswith("BEGIN:VCALENDAR")


@pytest.mark.anyio
async def test_an_unreachable_daemon_exits_69_naming_the_socket(tmp_path: Path) -> None:
    path = str(tmp_path / "absent.sock")
    done = await schedctl(None, "status", socket=path)
    assert done.returncode == 69
    assert path in done.stderr
    flag = await schedctl(None, "--socket", path, "list")
    assert flag.returncode == 69 and path in flag.stderr


@pytest.mark.anyio
async def test_add_takes_a_negative_offset_zone_and_keeps_a_gap_wall_time(daemon: Daemon) -> None:
    negative = await json_of(
        daemon, "add", "log", "--cron", "30 23 * * *", "--tz", "-03:30",
        "--at", "2030-03-08T12:00", "--until", "2030-03-10T00:00",
    )  # fmt: skip
    job = negative["job"]
    assert job["recurrence"]["timezone"] == "-03:30"
    assert job["run_at"] == "2030-03-08T23:30:00-03:30"
    assert job["recurrence"]["ends_at"] == "2030-03-10T03:30:00+00:00"
    # Berlin skips 02:00-03:00 on 2030-03-31: the first run moves to 03:00, the
    # schedule keeps 02:30 (SPEC 3).
    added = await json_of(
        daemon, "add", "log", "--every", "1", "day", "--tz", "Europe/Berlin",
        "--at", "2030-03-31T02:30",
    )  # fmt: skip
    daily = added["job"]
    assert daily["run_at"] == "2030-03-31T03:00:00+02:00"
    assert walk(Job.from_json(daily), 3)[1:] == [
        "2030-04-01T02:30:00+02:00",
        "2030-04-02T02:30:00+02:00",
    ]


@pytest.mark.anyio
async def test_requeue_one_and_in_bulk_and_its_usage_errors(daemon: Daemon) -> None:
    later = ("--at", "2040-01-01T00:00:00+00:00")
    ids = [(await json_of(daemon, "add", "log", *later))["job"]["id"] for _ in range(3)]
    refused = await schedctl(daemon, "requeue", ids[0])
    assert refused.returncode == 1 and "is pending" in refused.stderr
    for job_id in ids:
        await json_of(daemon, "cancel", job_id)

    one = await schedctl(daemon, "requeue", ids[0], "--at", "2041-06-01T12:00")
    assert one.returncode == 0, one.stderr
    assert one.stdout.startswith(f"{ids[0]}: pending, next run 2041-06-01 12:00")  # TZ Berlin

    for args, text in [
        ((), "give a job ID, or --all"),
        ((ids[1], "--all"), "not both"),
        ((ids[1], "--type", "log"), "--type applies to a bulk requeue"),
        (("--all", "--at", "2041-01-01T00:00"), "--at applies to one job"),
        (("--all", "--status", "completed"), "invalid choice"),
    ]:
        usage = await schedctl(daemon, "requeue", *args)
        assert usage.returncode == 2 and text in usage.stderr, (args, usage.stderr)

    bulk = await schedctl(daemon, "requeue", "--all", "--status", "canceled", "--limit", "1")
    assert bulk.returncode == 0, bulk.stderr
    assert bulk.stdout.splitlines()[0] == "requeued 1 job(s)"
    assert "more jobs match" in bulk.stdout
    rest = await json_of(daemon, "requeue", "--all", "--status", "canceled", "--type", "log")
    assert rest["count"] == 1 and rest["more"] is False
    canceled = (await json_of(daemon, "list", "--status", "canceled"))["jobs"]
    assert canceled == []  # all three back (the bulk ones run now, the first in 2041)


@pytest.mark.anyio
async def test_pause_until_a_time_or_for_a_duration(daemon: Daemon) -> None:
    job = (await json_of(daemon, "add", "log", "--at", "2040-01-01T00:00:00+00:00"))["job"]
    until = await schedctl(daemon, "pause", job["id"], "--until", "2039-06-01T12:00")
    assert until.returncode == 0, until.stderr
    assert "paused until 2039-06-01 12:00" in until.stdout  # TZ Berlin
    shown = await schedctl(daemon, "show", job["id"])
    assert "paused until" in shown.stdout and "2039-06-01 12:00" in shown.stdout
    later = await json_of(daemon, "pause", job["id"], "--for", "2h")
    paused_until = datetime.fromisoformat(later["job"]["paused_until"])
    assert 7000 < (paused_until - datetime.now(paused_until.tzinfo)).total_seconds() <= 7200
    past = await schedctl(daemon, "pause", job["id"], "--until", "2001-01-01T00:00")
    assert past.returncode == 1 and "until" in past.stderr
    both = await schedctl(daemon, "pause", job["id"], "--until", "2039-01-01", "--for", "1h")
    assert both.returncode == 2 and "not allowed with" in both.stderr
    plain = await schedctl(daemon, "pause", job["id"])
    assert plain.returncode == 0 and "paused until resumed" in plain.stdout


@pytest.mark.anyio
async def test_backfill_queues_past_occurrences_and_its_refusals(daemon: Daemon) -> None:
    added = await json_of(
        daemon, "add", "log", "--at", "2025-01-01T00:00:00+01:00", "--every", "1", "day"
    )
    job_id = added["job"]["id"]
    done = await schedctl(
        daemon, "backfill", job_id, "--from", "2025-01-02T00:00", "--to", "2025-01-05T00:00"
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [  # TZ Berlin: the job's midnight
        f"queued 3 run(s) of {job_id} for its occurrences from 2025-01-02 00:00:00 CET to "
        "2025-01-04 00:00:00 CET (range [2025-01-02 00:00:00 CET, 2025-01-05 00:00:00 CET))"
    ]
    before_first = await json_of(
        daemon, "backfill", job_id, "--from", "2024-01-01T00:00", "--to", "2024-12-31T00:00"
    )
    assert before_first == {
        "count": 0,
        "ids": [],
        "first": None,
        "last": None,
        "already_queued": 0,
    }
    nothing = await schedctl(
        daemon, "backfill", job_id, "--from", "2024-01-01T00:00", "--to", "2024-12-31T00:00"
    )
    assert nothing.returncode == 0 and "queued no run" in nothing.stdout

    backwards = await schedctl(
        daemon, "backfill", job_id, "--from", "2025-01-05T00:00", "--to", "2025-01-02T00:00"
    )
    assert backwards.returncode == 1 and "to:" in backwards.stderr
    one_shot = (await json_of(daemon, "add", "log", "--at", "2040-01-01T00:00:00+00:00"))["job"]
    refused = await schedctl(
        daemon, "backfill", one_shot["id"], "--from", "2025-01-01", "--to", "2025-01-02"
    )
    assert refused.returncode == 1 and "id:" in refused.stderr and "one-shot" in refused.stderr
    usage = await schedctl(daemon, "backfill", job_id, "--from", "2025-01-01")
    assert usage.returncode == 2 and "--to" in usage.stderr
    helped = await schedctl(daemon, "backfill", "--help")
    assert "backfill nightly-export --from" in helped.stdout
