"""The async client library against a real daemon: typed results, mapped errors."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import anyio
import pytest

from nexus_schedd.client import Client, default_socket_path
from nexus_schedd.errors import (
    DaemonUnreachable,
    InvalidJobState,
    InvalidSpec,
    JobExists,
    JobNotFound,
    PermissionDenied,
    ProtocolError,
    UnknownJobType,
    error_from_reply,
)
from nexus_schedd.model import JobSpec, JobStatus, Recurrence, RecurrenceKind
from nexus_schedd.model.events import EventKind
from tests.control.harness import Daemon

FUTURE = datetime(2031, 1, 1, 9, tzinfo=UTC)


@pytest.mark.anyio
async def test_typed_methods_round_trip_jobs(daemon: Daemon) -> None:
    async with Client(daemon.socket_path, timeout=10) as client:
        job = await client.add_job(JobSpec(job_type="log", name="c", run_at=FUTURE))
        assert job.run_at == FUTURE and job.status is JobStatus.PENDING
        more = await client.add_jobs([{"job_type": "log", "run_at": "2031-01-02T00:00:00Z"}])
        assert len(more) == 1
        assert (await client.get_job("c")).id == job.id
        page = await client.list_jobs(limit=1)
        assert len(page.items) == 1 and page.next_cursor is not None
        rest = await client.list_jobs(limit=10, cursor=page.next_cursor)
        assert [j.id for j in page.items + rest.items] == [job.id, more[0].id]
        assert (await client.pause_job(job.id)).status is JobStatus.PAUSED
        assert (await client.resume_job(job.id)).status is JobStatus.PENDING
        moved = await client.reschedule_job(job.id, datetime(2032, 1, 1, tzinfo=UTC))
        assert moved.run_at == datetime(2032, 1, 1, tzinfo=UTC)
        assert (await client.cancel_job(more[0].id)).status is JobStatus.CANCELED
        assert (await client.list_runs(job.id)).items == []
        assert await client.list_handlers() == ["log"]
        status = await client.status()
        assert status["counts"]["pending"] == 1
        times = await client.preview(Recurrence(kind=RecurrenceKind.DAILY), start=FUTURE, count=2)
        assert times == [FUTURE, datetime(2031, 1, 2, 9, tzinfo=UTC)]
        assert "BEGIN:VCALENDAR" in await client.export_calendar(days=2)
        assert (await client.call("ListHandlers")) == {"handlers": ["log"]}


@pytest.mark.anyio
async def test_varlink_errors_become_the_projects_exceptions(daemon: Daemon) -> None:
    async with Client(daemon.socket_path) as client:
        with pytest.raises(JobNotFound):
            await client.get_job("nope")
        with pytest.raises(UnknownJobType):
            await client.add_job({"job_type": "teleport"})
        with pytest.raises(InvalidSpec) as bad:
            await client.add_job({"job_type": "log", "run_at": "tomorrow"})
        assert bad.value.field == "run_at"
        await client.add_job({"job_type": "log", "name": "n", "run_at": "2031-01-01T00:00:00Z"})
        with pytest.raises(JobExists):
            await client.add_job({"job_type": "log", "name": "n", "priority": 3})
        with pytest.raises(InvalidJobState):
            await client.resume_job("n")
        with pytest.raises(ProtocolError, match="InvalidParameter"):
            await client.call("GetJob", {"id": 5})
        with pytest.raises(ProtocolError, match="MethodNotImplemented"):
            await client.reload()
        # The connection is still usable after errors.
        assert await client.list_handlers() == ["log"]


def test_standard_permission_denied_maps_to_the_project_exception() -> None:
    assert isinstance(
        error_from_reply("org.varlink.service.PermissionDenied", {}), PermissionDenied
    )
    assert isinstance(
        error_from_reply("io.nexus.Scheduler.PermissionDenied", {"message": "no"}),
        PermissionDenied,
    )


@pytest.mark.anyio
async def test_watch_yields_typed_events(daemon: Daemon) -> None:
    async with Client(daemon.socket_path) as client, anyio.create_task_group() as tg:
        seen: list[EventKind] = []
        subscribed = anyio.Event()

        async def watch() -> None:
            async for event in client.watch(job_type="log", subscribed=subscribed):
                seen.append(event.kind)
                if event.kind is EventKind.RUN_FINISHED:
                    return

        tg.start_soon(watch)
        await subscribed.wait()
        await client.add_job({"job_type": "log"})
    assert seen[0] is EventKind.JOB_ADDED and seen[-1] is EventKind.RUN_FINISHED


@pytest.mark.anyio
async def test_an_unreachable_socket_names_its_path(tmp_path: Path) -> None:
    path = tmp_path / "nothing.sock"
    with pytest.raises(DaemonUnreachable, match=str(path)) as caught:
        async with Client(path):
            pass
    assert caught.value.exit_code == 69


def test_default_socket_path_follows_the_spec_order() -> None:
    assert default_socket_path({"NEXUS_SCHEDD_SOCKET": "/x.sock"}, uid=0) == Path("/x.sock")
    assert default_socket_path({}, uid=0) == Path("/run/nexus-schedd/control.sock")
    assert default_socket_path({"XDG_RUNTIME_DIR": "/run/user/1000"}, uid=1000) == Path(
        "/run/user/1000/nexus-schedd/control.sock"
    )
    assert default_socket_path({}, uid=1000) == Path("/run/user/1000/nexus-schedd/control.sock")
