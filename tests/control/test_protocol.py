"""The control server over a real Unix socket, against a real engine and SQLite store.

Every reply a test receives is checked against the IDL it claims to follow.
"""

from __future__ import annotations

import contextlib
import json
import socket
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import anyio
import icalendar
import pytest

from nexus_schedd.control.server import SEND_PART_BYTES, bind_control_socket
from nexus_schedd.control.settings import ControlSettings
from nexus_schedd.control.unix_stream import UnixStream
from nexus_schedd.control.varlink import Interface, load_interface
from nexus_schedd.model import Job, JobSpec
from nexus_schedd.model.events import Event, EventKind
from nexus_schedd.model.times import format_instant
from tests.control.harness import (
    Daemon,
    call_message,
    raw_exchange,
    read_replies,
    running_daemon,
    wait_until,
)
from tests.occurrences import walk

SCHEDULER = load_interface("io.nexus.Scheduler")
LATER = "2040-01-01T00:00:00Z"
_LATER = datetime(2040, 1, 1, tzinfo=UTC)
SERVICE = load_interface("org.varlink.service")
S = "io.nexus.Scheduler."


def checked(method: str, message: dict[str, Any]) -> dict[str, Any]:
    """Assert ``message`` is a reply or error that the IDL allows for ``method``."""
    interface_name, name = method.rsplit(".", 1)
    interface = SCHEDULER if interface_name == "io.nexus.Scheduler" else SERVICE
    assert set(message) <= {"parameters", "error", "continues"}
    if "error" in message:
        error_interface, error_name = message["error"].rsplit(".", 1)
        owner: Interface = SCHEDULER if error_interface == "io.nexus.Scheduler" else SERVICE
        owner.check_error(error_name, message["parameters"])
    else:
        interface.check_returns(name, message["parameters"])
    return message


async def call(daemon: Daemon, method: str, parameters: dict[str, Any] | None = None) -> Any:
    method = method if "." in method else S + method
    [message] = await raw_exchange(daemon.socket_path, call_message(method, parameters))
    return checked(method, message)


async def job_count(daemon: Daemon) -> int:
    reply = await call(daemon, "ListJobs", {"limit": 1000})
    return len(reply["parameters"]["jobs"])


# -- introspection -------------------------------------------------------------------


@pytest.mark.anyio
async def test_get_info_lists_both_interfaces(daemon: Daemon) -> None:
    reply = await call(daemon, "org.varlink.service.GetInfo")
    info = reply["parameters"]
    assert info["product"] == "nexus-schedd"
    assert info["interfaces"] == ["org.varlink.service", "io.nexus.Scheduler"]


@pytest.mark.anyio
async def test_get_interface_description_returns_the_shipped_idl(daemon: Daemon) -> None:
    reply = await call(
        daemon, "org.varlink.service.GetInterfaceDescription", {"interface": "io.nexus.Scheduler"}
    )
    shipped = (
        resources.files("nexus_schedd.control").joinpath("io.nexus.Scheduler.varlink").read_text()
    )
    assert reply["parameters"]["description"] == shipped
    missing = await call(
        daemon, "org.varlink.service.GetInterfaceDescription", {"interface": "org.example.Nope"}
    )
    assert missing["error"] == "org.varlink.service.InterfaceNotFound"


@pytest.mark.anyio
async def test_unknown_interfaces_and_methods_get_standard_errors(daemon: Daemon) -> None:
    reply = await call(daemon, "org.example.Nope.Do")
    assert reply == {
        "error": "org.varlink.service.InterfaceNotFound",
        "parameters": {"interface": "org.example.Nope"},
    }
    reply = await call(daemon, "DropTables")
    assert reply == {
        "error": "org.varlink.service.MethodNotFound",
        "parameters": {"method": "io.nexus.Scheduler.DropTables"},
    }


# -- methods ---------------------------------------------------------------------------


@pytest.mark.anyio
async def test_job_lifecycle_through_the_protocol(daemon: Daemon) -> None:
    added = await call(
        daemon,
        "AddJob",
        {
            "job": {
                "job_type": "log",
                "name": "nightly",
                "target_id": "t-1",
                "run_at": "2031-01-01T09:00:00",
                "recurrence": {"kind": "daily", "timezone": "Europe/Berlin"},
            }
        },
    )
    job = added["parameters"]["job"]
    assert job["run_at"] == "2031-01-01T09:00:00+01:00"  # no offset: the recurrence's zone
    by_name = await call(daemon, "GetJob", {"id": "nightly"})
    assert by_name["parameters"]["job"]["id"] == job["id"]
    paused = await call(daemon, "PauseJob", {"id": job["id"]})
    assert paused["parameters"]["job"]["status"] == "paused"
    resumed = await call(daemon, "ResumeJob", {"id": job["id"]})
    assert resumed["parameters"]["job"]["status"] == "pending"
    moved = await call(
        daemon, "RescheduleJob", {"id": job["id"], "run_at": "2032-02-02T10:00:00+00:00"}
    )
    assert moved["parameters"]["job"]["run_at"] == "2032-02-02T11:00:00+01:00"
    canceled = await call(daemon, "CancelJob", {"id": job["id"]})
    assert canceled["parameters"]["job"]["status"] == "canceled"
    again = await call(daemon, "ResumeJob", {"id": job["id"]})
    assert again["error"] == "io.nexus.Scheduler.InvalidJobState"


@pytest.mark.anyio
async def test_refusals_use_the_spec_error_names(daemon: Daemon) -> None:
    missing = await call(daemon, "GetJob", {"id": "nope"})
    assert missing["error"] == "io.nexus.Scheduler.JobNotFound"
    assert missing["parameters"]["id"] == "nope"
    unknown = await call(daemon, "AddJob", {"job": {"job_type": "teleport"}})
    assert unknown["error"] == "io.nexus.Scheduler.UnknownJobType"
    first = {"job_type": "log", "name": "once", "run_at": "2031-01-01T00:00:00Z"}
    await call(daemon, "AddJob", {"job": first})
    same = await call(daemon, "AddJob", {"job": first})
    assert "error" not in same  # an equal definition returns the existing job
    clash = await call(daemon, "AddJob", {"job": {**first, "payload": {"x": 1}}})
    assert clash["error"] == "io.nexus.Scheduler.JobExists"
    assert clash["parameters"]["name"] == "once"


@pytest.mark.anyio
async def test_add_jobs_is_atomic(daemon: Daemon) -> None:
    good = {"job_type": "log", "run_at": "2031-01-01T00:00:00Z"}
    bad = {"job_type": "log", "recurrence": {"kind": "cron", "cron": "0 0 30 2 *"}}
    refused = await call(daemon, "AddJobs", {"jobs": [good, good, bad]})
    assert refused["error"] == "io.nexus.Scheduler.InvalidSpec"
    assert await job_count(daemon) == 0
    added = await call(daemon, "AddJobs", {"jobs": [good, good]})
    assert len(added["parameters"]["jobs"]) == 2
    assert await job_count(daemon) == 2


@pytest.mark.anyio
async def test_list_jobs_filters_and_pages_with_a_cursor(daemon: Daemon) -> None:
    specs = [
        {"job_type": "log", "target_id": f"t{i % 2}", "run_at": "2031-01-01T00:00:00Z"}
        for i in range(5)
    ]
    await call(daemon, "AddJobs", {"jobs": specs})
    seen: list[str] = []
    cursor = None
    while True:
        parameters: dict[str, Any] = {"limit": 2, "target_id": "t0"}
        if cursor:
            parameters["cursor"] = cursor
        page = (await call(daemon, "ListJobs", parameters))["parameters"]
        seen += [job["id"] for job in page["jobs"]]
        assert all(job["target_id"] == "t0" for job in page["jobs"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == len(set(seen)) == 3
    overdue = await call(daemon, "ListJobs", {"overdue": True})
    assert overdue["parameters"]["jobs"] == []
    paused = await call(daemon, "ListJobs", {"status": ["paused"]})
    assert paused["parameters"]["jobs"] == []
    too_many = await call(daemon, "ListJobs", {"limit": 100_000})
    assert too_many["error"] == "org.varlink.service.InvalidParameter"
    assert too_many["parameters"] == {"parameter": "limit"}


@pytest.mark.anyio
async def test_trigger_runs_now_and_list_runs_shows_the_run(daemon: Daemon) -> None:
    added = await call(
        daemon, "AddJob", {"job": {"job_type": "log", "run_at": "2031-01-01T00:00:00Z"}}
    )
    job_id = added["parameters"]["job"]["id"]
    triggered = await call(daemon, "TriggerJob", {"id": job_id})
    assert "error" not in triggered
    with anyio.fail_after(10):
        while True:
            runs = (await call(daemon, "ListRuns", {"job_id": job_id}))["parameters"]["runs"]
            if runs and runs[0]["outcome"] is not None:
                break
            await anyio.sleep(0.02)
    assert runs[0]["outcome"] == "success"
    everything = await call(daemon, "ListRuns", {"limit": 10})
    assert [run["id"] for run in everything["parameters"]["runs"]] == [runs[0]["id"]]


@pytest.mark.anyio
async def test_status_handlers_preview_and_calendar(daemon: Daemon) -> None:
    await call(
        daemon,
        "AddJob",
        {"job": {"job_type": "log", "name": "weekly", "recurrence": {"kind": "weekly"}}},
    )
    status = (await call(daemon, "GetStatus"))["parameters"]["status"]
    assert status["counts"]["pending"] + status["counts"]["running"] >= 1
    handlers = await call(daemon, "ListHandlers")
    assert handlers["parameters"]["handlers"] == ["log"]
    preview = await call(
        daemon,
        "Preview",
        {
            "recurrence": {"kind": "cron", "cron": "30 2 * * *", "timezone": "Europe/Berlin"},
            "start": "2025-03-29T00:00:00",
            "count": 2,
        },
    )
    assert preview["parameters"]["occurrences"] == [
        "2025-03-29T02:30:00+01:00",
        "2025-03-30T03:00:00+02:00",  # the DST gap runs at its end, never skipped
    ]
    # Like `nexus-schedctl preview`: cron lists matches strictly after the start.
    exact = await call(
        daemon,
        "Preview",
        {
            "recurrence": {"kind": "cron", "cron": "30 2 * * *", "timezone": "UTC"},
            "start": "2027-03-27T02:30:00Z",
            "count": 1,
        },
    )
    assert exact["parameters"]["occurrences"] == ["2027-03-28T02:30:00+00:00"]
    export = await call(daemon, "ExportCalendar", {"days": 7})
    calendar = icalendar.Calendar.from_ical(export["parameters"]["ical"])
    [event] = calendar.walk("VEVENT")
    assert str(event["summary"]) == "weekly"
    assert event["rrule"]["FREQ"] == ["WEEKLY"]


@pytest.mark.anyio
async def test_reload_without_a_callback_is_not_implemented(daemon: Daemon) -> None:
    reply = await call(daemon, "Reload")
    assert reply == {
        "error": "org.varlink.service.MethodNotImplemented",
        "parameters": {"method": "io.nexus.Scheduler.Reload"},
    }


@pytest.mark.anyio
async def test_reload_returns_the_callbacks_summary(tmp_path: Path) -> None:
    async def reload() -> dict[str, Any]:
        return {"added": ["a"], "updated": [], "removed": ["b"]}

    async with running_daemon(tmp_path / "db", reload=reload) as daemon:
        reply = await call(daemon, "Reload")
    assert reply["parameters"] == {"result": {"added": ["a"], "updated": [], "removed": ["b"]}}


@pytest.mark.anyio
async def test_watch_streams_events_until_the_client_leaves(daemon: Daemon) -> None:
    async with await anyio.connect_unix(daemon.socket_path) as watcher:
        await watcher.send(
            call_message(S + "Watch", {"job_type": "log", "announce": True}, more=True)
        )
        (announced,) = await read_replies(watcher, 1)
        assert announced["parameters"] == {"subscribed": True}
        await call(daemon, "AddJob", {"job": {"job_type": "log", "name": "w"}})
        events = await read_replies(watcher, 3)
    for message in events:
        assert message["continues"] is True
        checked(S + "Watch", message)
    kinds = [message["parameters"]["event"]["kind"] for message in events]
    assert kinds[0] == "job_added"
    assert "run_started" in kinds
    await wait_until(lambda: daemon.server.connections == 0)


@pytest.mark.anyio
async def test_watch_writes_the_events_ready_together_with_one_send(
    daemon: Daemon, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The 50 job_added events of one AddJobs are published in one loop turn: the
    server writes them with one send, each still its own reply, in order."""
    events_per_send: list[int] = []
    send = UnixStream.send

    async def counted(self: UnixStream, item: bytes) -> None:
        # Only the server's streams are UnixStreams here (the watcher is anyio's).
        events_per_send.append(bytes(item).count(b'"kind":"job_added"'))
        await send(self, item)

    monkeypatch.setattr(UnixStream, "send", counted)
    names = [f"batch-{i}" for i in range(50)]
    async with await anyio.connect_unix(daemon.socket_path) as watcher:
        await watcher.send(call_message(S + "Watch", {"announce": True}, more=True))
        (announced,) = await read_replies(watcher, 1)
        assert announced["parameters"] == {"subscribed": True}
        jobs = [{"job_type": "log", "name": name, "run_at": LATER} for name in names]
        await call(daemon, "AddJobs", {"jobs": jobs})
        events = await read_replies(watcher, len(names))
    for message in events:
        assert message["continues"] is True
        checked(S + "Watch", message)
    assert [message["parameters"]["event"]["job"]["name"] for message in events] == names
    assert [count for count in events_per_send if count] == [len(names)]


@pytest.mark.anyio
async def test_a_large_watch_batch_goes_out_in_parts_a_slow_reader_takes_in_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """40 events of 16 KB published in one turn (640 KB): written in parts of
    about SEND_PART_BYTES, each under the idle timeout, so a reader that keeps
    reading at 640 KB/s stays connected although the whole batch takes it about
    a second, twice the timeout (found in review: one send per batch cut it off)."""
    part_sizes: list[int] = []
    send = UnixStream.send

    async def measured(self: UnixStream, item: bytes) -> None:
        part_sizes.append(len(item))
        await send(self, item)

    monkeypatch.setattr(UnixStream, "send", measured)
    settings = ControlSettings(idle_timeout_s=0.5)
    async with running_daemon(tmp_path / "db", settings) as daemon:
        job = await daemon.engine.add_job(
            JobSpec(job_type="log", payload={"blob": "x" * 16_000}, run_at=_LATER)
        )
        async with await anyio.connect_unix(daemon.socket_path) as watcher:
            await watcher.send(call_message(S + "Watch", {"announce": True}, more=True))
            (announced,) = await read_replies(watcher, 1)
            assert announced["parameters"] == {"subscribed": True}
            part_sizes.clear()
            for n in range(40):
                daemon.engine._core.events.publish(
                    Event(EventKind.JOB_UPDATED, _LATER + timedelta(seconds=n), job=job)
                )
            buffer, at = b"", []
            with anyio.fail_after(30):
                while len(at) < 40:
                    try:
                        buffer += await watcher.receive(32_768)
                    except (anyio.EndOfStream, anyio.BrokenResourceError):
                        break
                    *complete, buffer = buffer.split(b"\0")
                    at += [json.loads(raw)["parameters"]["event"]["at"] for raw in complete]
                    await anyio.sleep(0.05)  # 32 KB per 50 ms
    assert at == [format_instant(_LATER + timedelta(seconds=n)) for n in range(40)]
    assert len(part_sizes) > 1
    assert max(part_sizes) < SEND_PART_BYTES + 20_000  # a part ends after the message that fills it


@pytest.mark.anyio
async def test_watch_without_more_is_refused(daemon: Daemon) -> None:
    reply = await call(daemon, "Watch")
    assert reply == {"error": "org.varlink.service.ExpectedMore", "parameters": {}}


@pytest.mark.anyio
async def test_oneway_calls_run_without_a_reply(daemon: Daemon) -> None:
    async with await anyio.connect_unix(daemon.socket_path) as stream:
        job = {"job_type": "log", "run_at": "2031-01-01T00:00:00Z"}
        await stream.send(call_message(S + "AddJob", {"job": job}, oneway=True))
        await stream.send(call_message(S + "ListJobs"))
        [only] = await read_replies(stream, 1)
    assert len(only["parameters"]["jobs"]) == 1


# -- bad input ---------------------------------------------------------------------------


@pytest.mark.anyio
async def test_invalid_json_gets_an_error_and_the_connection_stays_usable(daemon: Daemon) -> None:
    async with await anyio.connect_unix(daemon.socket_path) as stream:
        await stream.send(b'{"method": "io.nexus.Sch\0')
        await stream.send(b"[1, 2]\0")
        await stream.send(b"\xff\xfe\0")
        await stream.send(b'{"method": 5}\0')
        await stream.send(b'{"method": "io.nexus.Scheduler.GetJob", "parameters": []}\0')
        await stream.send(call_message(S + "ListHandlers"))
        replies = await read_replies(stream, 6)
    assert [r.get("error") for r in replies[:5]] == ["org.varlink.service.InvalidParameter"] * 5
    assert [r["parameters"]["parameter"] for r in replies[:5]] == [
        "message",
        "message",
        "message",
        "method",
        "parameters",
    ]
    assert replies[5] == {"parameters": {"handlers": ["log"]}}


@pytest.mark.anyio
async def test_a_message_without_its_nul_is_dropped_and_the_connection_closed(
    daemon: Daemon,
) -> None:
    async with await anyio.connect_unix(daemon.socket_path) as stream:
        job = {"job_type": "log", "run_at": "2031-01-01T00:00:00Z"}
        await stream.send(call_message(S + "AddJob", {"job": job})[:-1])
        await stream.send_eof()
        assert await read_replies(stream, 1) == []
    assert await job_count(daemon) == 0


@pytest.mark.anyio
async def test_a_message_over_the_size_limit_gets_an_error_then_the_connection_closes(
    tmp_path: Path,
) -> None:
    settings = ControlSettings(max_message_bytes=4096)
    async with running_daemon(tmp_path / "db", settings) as daemon:
        job = {"job_type": "log", "payload": {"blob": "x" * 10_000}}
        async with await anyio.connect_unix(daemon.socket_path) as stream:
            # The server may close before it has read all of it.
            with contextlib.suppress(anyio.BrokenResourceError, OSError):
                await stream.send(call_message(S + "AddJob", {"job": job}) * 3)
            replies = await read_replies(stream, 5)
        assert replies == [
            {
                "error": "org.varlink.service.InvalidParameter",
                "parameters": {"parameter": "message"},
            }
        ]
        assert await job_count(daemon) == 0
        assert (await call(daemon, "ListHandlers"))["parameters"] == {"handlers": ["log"]}


@pytest.mark.anyio
async def test_an_oversized_message_is_answered_before_closing(tmp_path: Path) -> None:
    settings = ControlSettings(max_message_bytes=4096)
    async with running_daemon(tmp_path / "db", settings) as daemon:
        [answer] = await raw_exchange(daemon.socket_path, b"x" * 5000)
    assert answer == {
        "error": "org.varlink.service.InvalidParameter",
        "parameters": {"parameter": "message"},
    }


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("job", "parameter"),
    [
        ({"job_type": 7}, "job.job_type"),
        ({"job_type": "log", "payload": "text"}, None),
        ({"job_type": "log", "priority": "high"}, "job.priority"),
        ({"job_type": "log", "recurrence": {"kind": "fortnightly"}}, "job.recurrence.kind"),
        ({"job_type": "log", "max_retries": [3]}, "job.max_retries"),
    ],
)
async def test_wrong_parameter_types_are_invalid_parameters(
    daemon: Daemon, job: dict[str, Any], parameter: str | None
) -> None:
    reply = await call(daemon, "AddJob", {"job": job})
    if parameter is None:  # the IDL's object takes any JSON; the model refuses a non-object
        assert reply["error"] == "io.nexus.Scheduler.InvalidSpec"
        assert reply["parameters"]["field"] == "payload"
    else:
        assert reply == {
            "error": "org.varlink.service.InvalidParameter",
            "parameters": {"parameter": parameter},
        }
    assert await job_count(daemon) == 0


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("job", "field"),
    [
        ({"job_type": "log", "run_at": "next tuesday"}, "run_at"),
        ({"job_type": "log", "run_at": "2031-02-30T00:00:00Z"}, "run_at"),
        (
            {"job_type": "log", "recurrence": {"kind": "daily", "timezone": "Mars/Olympus"}},
            "recurrence.timezone",
        ),
        (
            {"job_type": "log", "recurrence": {"kind": "cron", "cron": "61 * * * *"}},
            "recurrence.cron",
        ),
        (
            {"job_type": "log", "recurrence": {"kind": "cron", "cron": "0 0 30 2 *"}},
            "recurrence.cron",
        ),
        (
            {"job_type": "log", "recurrence": {"kind": "daily", "interval": 0}},
            "recurrence.interval",
        ),
        ({"job_type": "log", "payload": {"blob": "x" * (64 * 1024)}}, "payload"),
    ],
)
async def test_bad_times_zones_cron_and_payloads_are_invalid_specs(
    daemon: Daemon, job: dict[str, Any], field: str
) -> None:
    reply = await call(daemon, "AddJob", {"job": job})
    assert reply["error"] == "io.nexus.Scheduler.InvalidSpec"
    assert reply["parameters"]["field"] == field
    assert reply["parameters"]["reason"]
    assert await job_count(daemon) == 0


@pytest.mark.anyio
async def test_500_connections_at_once_leave_the_daemon_serving(tmp_path: Path) -> None:
    settings = ControlSettings(max_connections=128)
    async with running_daemon(tmp_path / "db", settings) as daemon:
        streams = []
        try:
            for _ in range(500):
                streams.append(await anyio.connect_unix(daemon.socket_path))  # noqa: PERF401
            served = 0
            async with anyio.create_task_group() as tg:

                async def ask(stream: Any) -> None:
                    nonlocal served
                    try:
                        await stream.send(call_message(S + "ListHandlers"))
                    except (anyio.BrokenResourceError, OSError):
                        return
                    if await read_replies(stream, 1):
                        served += 1

                for stream in streams:
                    tg.start_soon(ask, stream)
            assert 0 < served <= 128
        finally:
            for stream in streams:
                await stream.aclose()
        await wait_until(lambda: daemon.server.connections == 0)
        reply = await call(daemon, "ListHandlers")
        assert reply["parameters"] == {"handlers": ["log"]}


@pytest.mark.anyio
async def test_idle_connections_are_closed(tmp_path: Path) -> None:
    settings = ControlSettings(idle_timeout_s=0.2)
    async with (
        running_daemon(tmp_path / "db", settings) as daemon,
        await anyio.connect_unix(daemon.socket_path) as stream,
    ):
        assert await read_replies(stream, 1) == []


# -- the socket file ---------------------------------------------------------------------


def test_bind_replaces_a_stale_socket_but_not_a_live_one(tmp_path: Path) -> None:
    path = tmp_path / "run" / "c.sock"
    first = bind_control_socket(path, 0o660, "no-such-group-here")
    assert oct(path.stat().st_mode & 0o777) == oct(0o660)
    try:
        with pytest.raises(OSError, match="already listening"):
            bind_control_socket(path, 0o660, "")
    finally:
        first.close()
    second = bind_control_socket(path, 0o600, "")  # the first is gone: stale file replaced
    second.close()
    path.unlink()
    path.write_text("not a socket")
    with pytest.raises(OSError, match="not a socket"):
        bind_control_socket(path, 0o660, "")


def test_bind_gives_the_socket_to_the_admin_group_when_it_exists(tmp_path: Path) -> None:
    path = tmp_path / "c.sock"
    sock = bind_control_socket(path, 0o660, "nogroup")
    try:
        import grp

        assert path.stat().st_gid == grp.getgrnam("nogroup").gr_gid
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        probe.connect(str(path))
        probe.close()
    finally:
        sock.close()


def test_json_encoding_of_the_idl_check_helper_is_strict() -> None:
    with pytest.raises(Exception):  # noqa: B017 - any IDL mismatch must fail the helper
        checked(S + "GetJob", {"parameters": {"job": {"id": 1}}})
    assert json.loads(json.dumps(checked(S + "ListHandlers", {"parameters": {"handlers": []}})))


@pytest.mark.anyio
async def test_times_without_an_offset_are_read_in_the_daemons_zone_for_one_shots(
    tmp_path: Path,
) -> None:
    """The IDL: a time without an offset is read in the recurrence's zone, else in
    the daemon's default zone, in AddJob and RescheduleJob alike."""
    settings = ControlSettings(default_timezone="Europe/Berlin")
    async with running_daemon(tmp_path / "schedd.db", settings) as daemon:
        added = await call(
            daemon, "AddJob", {"job": {"job_type": "log", "run_at": "2033-01-01T10:00:00"}}
        )
        job = added["parameters"]["job"]
        assert job["run_at"] == "2033-01-01T09:00:00+00:00"  # 10:00 in Berlin
        moved = await call(
            daemon, "RescheduleJob", {"id": job["id"], "run_at": "2034-07-01T10:00:00"}
        )
        assert moved["parameters"]["job"]["run_at"] == "2034-07-01T08:00:00+00:00"
        lower = await call(
            daemon, "RescheduleJob", {"id": job["id"], "run_at": "2035-01-01t10:00:00z"}
        )
        assert (
            lower["parameters"]["job"]["run_at"] == "2035-01-01T10:00:00+00:00"
        )  # RFC 3339 lowercase


@pytest.mark.anyio
async def test_reschedule_into_a_gap_moves_only_that_run_and_keeps_the_wall_time(
    tmp_path: Path,
) -> None:
    """Berlin skips 02:00-03:00 on 2030-03-31 (tzdata). A daily job rescheduled
    to 02:30 that day, written without offset (read in the job's zone), runs at
    03:00 CEST once and at 02:30 after (SPEC 3), as an AddJob would."""
    async with running_daemon(tmp_path / "schedd.db") as daemon:
        daily = {"kind": "daily", "timezone": "Europe/Berlin"}
        added = await call(
            daemon,
            "AddJob",
            {"job": {"job_type": "log", "run_at": "2030-01-01T12:00:00Z", "recurrence": daily}},
        )
        job_id = added["parameters"]["job"]["id"]
        moved = await call(daemon, "RescheduleJob", {"id": job_id, "run_at": "2030-03-31T02:30:00"})
        assert walk(Job.from_json(moved["parameters"]["job"]), 3) == [
            "2030-03-31T03:00:00+02:00",
            "2030-04-01T02:30:00+02:00",
            "2030-04-02T02:30:00+02:00",
        ]
        # With an offset the instant is the anchor: 03:00 every day.
        fixed = await call(
            daemon, "RescheduleJob", {"id": job_id, "run_at": "2030-03-31T03:00:00+02:00"}
        )
        again = Job.from_json(fixed["parameters"]["job"])
        assert again.anchor_at == again.run_at


@pytest.mark.anyio
async def test_requeue_over_varlink_one_and_in_bulk_with_its_refusals(tmp_path: Path) -> None:
    """SPEC 15: RequeueJob / RequeueJobs, and each bad input named, nothing changed."""
    async with running_daemon(tmp_path / "schedd.db") as daemon:
        later = {"job_type": "log", "run_at": "2040-01-01T00:00:00Z"}
        ids = []
        for _ in range(3):
            added = await call(daemon, "AddJob", {"job": later})
            ids.append(added["parameters"]["job"]["id"])
        pending = await call(daemon, "RequeueJob", {"id": ids[0]})
        assert pending["error"] == S + "InvalidJobState"
        assert pending["parameters"]["status"] == "pending"
        for job_id in ids:
            await call(daemon, "CancelJob", {"id": job_id})
        back = await call(
            daemon, "RequeueJob", {"id": ids[0], "run_at": "2041-01-01T00:00:00+00:00"}
        )
        job = back["parameters"]["job"]
        assert (job["status"], job["run_at"]) == ("pending", "2041-01-01T00:00:00+00:00")

        refusals = [
            ({}, "all"),
            ({"status": ["completed"]}, "status"),
            ({"all": True, "limit": 0}, "limit"),
            ({"all": True, "limit": 10_001}, "limit"),
            ({"since": "yesterday"}, "since"),
        ]
        for parameters, field_name in refusals:
            refused = await call(daemon, "RequeueJobs", parameters)
            assert refused["error"] in (S + "InvalidSpec", "org.varlink.service.InvalidParameter")
            assert field_name in json.dumps(refused["parameters"]), (parameters, refused)
        assert await job_count(daemon) == 3
        statuses = await call(daemon, "ListJobs", {"status": ["canceled"]})
        assert len(statuses["parameters"]["jobs"]) == 2  # nothing changed

        # failed_permanent is the default: the canceled ones stay unless asked for.
        none = await call(daemon, "RequeueJobs", {"all": True})
        assert none["parameters"] == {"count": 0, "ids": [], "skipped": [], "more": False}
        bulk = await call(daemon, "RequeueJobs", {"status": ["canceled"], "limit": 1})
        assert bulk["parameters"]["count"] == 1 and bulk["parameters"]["more"] is True
        rest = await call(daemon, "RequeueJobs", {"status": ["canceled"], "job_type": "log"})
        assert rest["parameters"]["count"] == 1 and rest["parameters"]["more"] is False
        assert sorted(bulk["parameters"]["ids"] + rest["parameters"]["ids"]) == sorted(ids[1:])


@pytest.mark.anyio
async def test_pause_until_over_varlink(tmp_path: Path) -> None:
    """SPEC 15: PauseJob(id, until); a time in the past is InvalidSpec on until."""
    async with running_daemon(tmp_path / "schedd.db") as daemon:
        added = await call(daemon, "AddJob", {"job": {"job_type": "log", "run_at": LATER}})
        job_id = added["parameters"]["job"]["id"]
        past = await call(daemon, "PauseJob", {"id": job_id, "until": "2001-01-01T00:00:00Z"})
        assert past["error"] == S + "InvalidSpec" and past["parameters"]["field"] == "until"
        paused = await call(daemon, "PauseJob", {"id": job_id, "until": "2039-01-01T00:00:00Z"})
        job = paused["parameters"]["job"]
        assert (job["status"], job["paused_until"]) == ("paused", "2039-01-01T00:00:00+00:00")
        again = await call(daemon, "PauseJob", {"id": job_id})
        assert again["parameters"]["job"]["paused_until"] is None
        resumed = await call(daemon, "ResumeJob", {"id": job_id})
        assert resumed["parameters"]["job"]["status"] == "pending"


@pytest.mark.anyio
async def test_backfill_over_varlink_reads_times_in_the_jobs_zone_and_names_bad_input(
    tmp_path: Path,
) -> None:
    """SPEC 15: BackfillJob queues one job per occurrence of [from, to) with its own
    scheduled_for; each refusal names its field and changes nothing."""
    tokyo = ZoneInfo("Asia/Tokyo")  # no DST: a local time names one instant
    anchor = (datetime.now(UTC) - timedelta(hours=6)).replace(minute=0, second=0, microsecond=0)

    def local(instant: datetime) -> str:
        return instant.astimezone(tokyo).replace(tzinfo=None).isoformat()

    async with running_daemon(tmp_path / "schedd.db") as daemon:
        hourly = {"kind": "hourly", "timezone": "Asia/Tokyo"}
        added = await call(
            daemon,
            "AddJob",
            {"job": {"job_type": "log", "run_at": anchor.isoformat(), "recurrence": hourly}},
        )
        parent = added["parameters"]["job"]
        hour = timedelta(hours=1)
        range_ = {"id": parent["id"], "from": local(anchor + hour), "to": local(anchor + 3 * hour)}
        reply = (await call(daemon, "BackfillJob", range_))["parameters"]
        assert (reply["count"], reply["already_queued"]) == (2, 0)
        assert reply["first"] == (anchor + hour).astimezone(tokyo).isoformat()
        assert reply["last"] == (anchor + 2 * hour).astimezone(tokyo).isoformat()
        first = Job.from_json(
            (await call(daemon, "GetJob", {"id": reply["ids"][0]}))["parameters"]["job"]
        )
        assert first.scheduled_for == anchor + hour and first.recurrence is None
        assert first.idempotency_key == f"{parent['id']}:1"

        minutely = {
            "job_type": "log",
            "run_at": (anchor - timedelta(days=8)).isoformat(),
            "recurrence": {"kind": "minutely"},
        }
        frequent = (await call(daemon, "AddJob", {"job": minutely}))["parameters"]["job"]
        one_shot = await call(daemon, "AddJob", {"job": {"job_type": "log", "run_at": LATER}})
        before = await job_count(daemon)
        refusals = [
            ({**range_, "to": range_["from"]}, "to"),
            ({**range_, "from": "yesterday"}, "from"),
            ({**range_, "id": one_shot["parameters"]["job"]["id"]}, "id"),
            (
                {"id": frequent["id"], "from": minutely["run_at"], "to": anchor.isoformat()},
                "to",
            ),
        ]
        for parameters, field_name in refusals:
            refused = await call(daemon, "BackfillJob", parameters)
            assert refused["error"] == S + "InvalidSpec", refused
            assert refused["parameters"]["field"] == field_name, refused
        assert "10,000" in refused["parameters"]["reason"]
        unknown = await call(daemon, "BackfillJob", {**range_, "id": "no-such-job"})
        assert unknown["error"] == S + "JobNotFound"
        assert await job_count(daemon) == before
