"""A real control server for tests: SQLiteStore + Engine + ControlServer on a short
Unix socket path, in the test's own event loop."""

from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio

from nexus_schedd.clock import SystemClock
from nexus_schedd.control.server import ControlServer, bind_control_socket
from nexus_schedd.control.settings import ControlSettings
from nexus_schedd.engine.engine import Engine
from nexus_schedd.engine.settings import EngineSettings
from nexus_schedd.handlers.log import LogHandler
from nexus_schedd.handlers.registry import HandlerRegistry
from nexus_schedd.store.sqlite import SQLiteStore

ReloadCallback = Callable[[], Awaitable[Mapping[str, Any]]]


@dataclass
class Daemon:
    """A running engine and control server."""

    socket_path: Path
    engine: Engine
    server: ControlServer
    store: SQLiteStore


@asynccontextmanager
async def running_daemon(
    db_path: Path,
    settings: ControlSettings | None = None,
    *,
    reload: ReloadCallback | None = None,
    socket_dir_mode: int = 0o700,
) -> AsyncIterator[Daemon]:
    """Serve a fresh engine over a socket in a new short /tmp directory."""
    directory = Path(tempfile.mkdtemp(prefix="nx", dir="/tmp"))
    os.chmod(directory, socket_dir_mode)
    settings = settings or ControlSettings()
    store = SQLiteStore(db_path)
    await store.open()
    try:
        engine = Engine(
            store, HandlerRegistry({"log": LogHandler()}), SystemClock(), EngineSettings()
        )
        server = ControlServer(engine, settings, reload=reload)
        path = directory / "c.sock"
        sock = bind_control_socket(path, settings.socket_mode, settings.admin_group)
        async with anyio.create_task_group() as tg:
            await tg.start(engine.run)
            await tg.start(server.serve, sock)
            yield Daemon(path, engine, server, store)
            await engine.stop(1.0)
            tg.cancel_scope.cancel()
    finally:
        with anyio.CancelScope(shield=True):
            await store.close()
        shutil.rmtree(directory, ignore_errors=True)


async def raw_exchange(path: Path, payload: bytes, *, replies: int = 1) -> list[Any]:
    """Send raw bytes and read up to ``replies`` NUL-terminated replies (fewer when the
    server closes the connection)."""
    async with await anyio.connect_unix(path) as stream:
        await stream.send(payload)
        return await read_replies(stream, replies)


async def read_replies(stream: Any, count: int) -> list[Any]:
    """Up to ``count`` replies from ``stream``; stops early at EOF."""
    buffer = b""
    found: list[Any] = []
    with anyio.fail_after(10):
        while len(found) < count:
            if b"\0" in buffer:
                raw, buffer = buffer.split(b"\0", 1)
                found.append(json.loads(raw))
                continue
            try:
                buffer += await stream.receive()
            except (anyio.EndOfStream, anyio.BrokenResourceError):
                break
    return found


def call_message(method: str, parameters: Mapping[str, Any] | None = None, **flags: Any) -> bytes:
    """One encoded request."""
    message: dict[str, Any] = {"method": method, "parameters": dict(parameters or {}), **flags}
    return json.dumps(message).encode() + b"\0"


def blocking_call(path: Path, method: str, parameters: Mapping[str, Any] | None = None) -> Any:
    """A call over a plain blocking socket (for worker threads and child processes)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(str(path))
        sock.sendall(call_message(method, parameters))
        buffer = b""
        while b"\0" not in buffer:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed")
            buffer += chunk
        return json.loads(buffer.split(b"\0", 1)[0])


async def wait_until(condition: Callable[[], bool]) -> None:
    """Wait until ``condition()`` holds (fail after 10 s). For state the server exposes
    no event for, such as its connection count after a peer hung up."""
    with anyio.fail_after(10):
        while not condition():  # noqa: ASYNC110 - no event to wait on; bounded above
            await anyio.sleep(0.01)
