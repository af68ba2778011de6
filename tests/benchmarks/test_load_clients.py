"""The benchmarks' own clients against real sockets: the raw Watch reader of
``daemon_throughput --watch`` and the lean HTTP client of ``api_rate``."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import anyio
import anyio.abc
import pytest

from benchmarks.api_rate import LeanHttpClient
from benchmarks.daemon_throughput import Watcher
from nexus_schedd.model import JobSpec
from tests.control.harness import running_daemon, wait_until

pytestmark = pytest.mark.anyio


async def test_the_watcher_counts_every_event_after_the_announcement(tmp_path: Path) -> None:
    async with running_daemon(tmp_path / "db") as daemon, anyio.create_task_group() as tg:
        watcher = Watcher()
        await tg.start(watcher.run, daemon.socket_path)
        assert watcher.events == 0
        later = datetime(2040, 1, 1, tzinfo=UTC)
        await daemon.engine.add_jobs(  # three job_added events
            [JobSpec(job_type="log", name=f"w{i}", run_at=later) for i in range(3)]
        )
        await wait_until(lambda: watcher.events >= 3)
        tg.cancel_scope.cancel()
    assert watcher.events == 3


async def test_the_lean_client_reads_responses_split_and_joined_anyhow() -> None:
    """Responses arrive as the server's sends fall: a head split in two, a body
    after its head, and the next response in the same read as the last body."""
    requests: list[bytes] = []

    async def serve(stream: anyio.abc.SocketStream) -> None:
        async with stream:
            for chunks in (
                [b"HTTP/1.1 201 Created\r\nContent-Le", b"ngth: 2\r\n\r\n", b"{}"],
                [b"HTTP/1.1 409 Conflict\r\ncontent-length: 3\r\n\r\nabc" + b"HTTP/1.1 201 OK\r\n"],
                [b"Content-Length: 0\r\n\r\n"],
            ):
                requests.append(await stream.receive())
                for chunk in chunks:
                    await stream.send(chunk)
                    await anyio.sleep(0.01)

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, serve)
        url = f"http://127.0.0.1:{port}/api/v1"
        async with LeanHttpClient(url, "/api/v1/jobs", {"X-A": "1"}, b'{"a":1}') as http:
            statuses = [await http.post(), await http.post()]
            # The third response's head began in the second's read; it completes here.
            statuses.append(await http.post())
        tg.cancel_scope.cancel()
    assert statuses == [201, 409, 201]
    assert requests[0].startswith(b"POST /api/v1/jobs HTTP/1.1\r\n")
    assert b"\r\nX-A: 1\r\n" in requests[0] and requests[0].endswith(b'\r\n\r\n{"a":1}')
