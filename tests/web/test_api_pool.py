"""The API's pool of control-socket connections (nexus_schedd.web.api.pool) against
a real Unix socket whose server answers every call and can close a connection
between calls, as a restarted daemon or its idle timeout does."""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import anyio.abc
import pytest

from nexus_schedd.clock import SystemClock
from nexus_schedd.control import unix_stream
from nexus_schedd.web.api.pool import DaemonPool

pytestmark = pytest.mark.anyio


@dataclass
class StubDaemon:
    """Answers each message with ``{"parameters": {"connection": n}}`` (n counts
    connections); ``close_after_reply`` makes it close the connection after answering."""

    connections: int = 0
    close_after_reply: bool = False
    closed: list[anyio.Event] = field(default_factory=list)

    async def serve(self, stream: anyio.abc.SocketStream) -> None:
        self.connections += 1
        number = self.connections
        done = anyio.Event()
        self.closed.append(done)
        buffer = b""
        async with stream:
            try:
                while True:
                    while b"\0" not in buffer:
                        buffer += await stream.receive()
                    _, buffer = buffer.split(b"\0", 1)
                    reply = {"parameters": {"connection": number}}
                    await stream.send(json.dumps(reply).encode() + b"\0")
                    if self.close_after_reply:
                        break
            except (anyio.EndOfStream, anyio.BrokenResourceError):
                pass
        done.set()


@asynccontextmanager
async def stub_daemon(path: Path) -> AsyncIterator[StubDaemon]:
    daemon = StubDaemon()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen()
    listener.setblocking(False)

    async def accept_forever() -> None:
        while True:
            stream = await unix_stream.accept(listener)
            tg.start_soon(daemon.serve, stream)

    with listener:
        async with anyio.create_task_group() as tg:
            tg.start_soon(accept_forever)
            yield daemon
            tg.cancel_scope.cancel()


async def test_an_idle_open_connection_is_reused(tmp_path: Path) -> None:
    path = tmp_path / "d.sock"
    async with stub_daemon(path) as daemon:
        pool = DaemonPool(str(path), timeout=10, clock=SystemClock())
        first = await pool.call("GetStatus")
        second = await pool.call("AddJob", {})
        await pool.aclose()
    assert first == second == {"connection": 1}
    assert daemon.connections == 1


async def test_a_connection_the_daemon_closed_while_idle_is_not_reused(tmp_path: Path) -> None:
    path = tmp_path / "d.sock"
    async with stub_daemon(path) as daemon:
        daemon.close_after_reply = True
        pool = DaemonPool(str(path), timeout=10, clock=SystemClock())
        assert await pool.call("GetStatus") == {"connection": 1}
        await daemon.closed[0].wait()  # closed by the daemon while the pool holds it idle
        # A write is never retried on a new connection (its outcome would be
        # unknown), so only the peek before sending keeps this from failing.
        assert await pool.call("AddJob", {}) == {"connection": 2}
        await pool.aclose()
    assert daemon.connections == 2
