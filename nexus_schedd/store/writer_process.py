"""The SQLite store's handle on its writer process (:mod:`.sqlite_writer`).

Starts the process, sends it one request at a time over a Unix socket pair and
waits for the reply without blocking the event loop, and stops it. A writer
process that dies fails the request in flight with a clear error (whether that
transaction committed is unknown, as after any crash) and is started again for
the next one.
"""

from __future__ import annotations

import pickle
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import structlog
from anyio.abc import Process

from nexus_schedd.errors import StoreError
from nexus_schedd.store import sqlite_writer

_log = structlog.get_logger("nexus_schedd.store.sqlite")

_SCRIPT = Path(sqlite_writer.__file__)
_SOCKET_BUFFER = 4 * 1024 * 1024
_EXIT_WAIT_S = 10.0


class WriterProcess:
    """One writer process for the database at ``path``: it opens the URI ``database``
    and runs ``pragmas``."""

    def __init__(self, path: Path, database: str, pragmas: list[str]) -> None:
        self.path = path
        self.database = database
        self.pragmas = pragmas
        self._process: Process | None = None
        self._socket: socket.socket | None = None
        self._header = bytearray(sqlite_writer.HEADER.size)

    @property
    def pid(self) -> int | None:
        """The writer process's pid while it runs."""
        return None if self._process is None else self._process.pid

    async def start(self) -> None:
        """Start the process and open its connection (raises what opening raised)."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            for sock in (ours, theirs):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _SOCKET_BUFFER)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _SOCKET_BUFFER)
            # -I: the writer needs nothing but the standard library, and no
            # PYTHON* variable or user site directory should change it.
            self._process = await anyio.open_process(
                [sys.executable, "-I", str(_SCRIPT), str(theirs.fileno())],
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
                stdout=None,
                stderr=None,
            )
        except OSError as exc:
            ours.close()
            raise StoreError(
                f"{self.path}: cannot start the SQLite writer process: {exc.strerror or exc}"
            ) from None
        finally:
            theirs.close()
        ours.setblocking(False)
        self._socket = ours
        _log.debug("sqlite_writer_started", path=str(self.path), pid=self._process.pid)
        status, value = await self._exchange(("open", self.database, self.pragmas))
        if status != "ok":
            await self.stop()
            if isinstance(value, sqlite3.Error):
                raise value
            raise StoreError(f"{self.path}: the SQLite writer cannot open the database: {value}")

    async def request(self, message: tuple[Any, ...]) -> tuple[str, Any]:
        """Send ``message`` and return the writer's reply ``(status, value)``.

        Not cancellable half-way (the caller shields it): a reply left unread
        would be taken as the answer to the next request.
        """
        with anyio.CancelScope(shield=True):
            if self._socket is None:
                await self.start()
            reply = await self._exchange(message)
        return reply

    async def _exchange(self, message: tuple[Any, ...]) -> tuple[str, Any]:
        sock = self._socket
        assert sock is not None
        try:
            await self._send(sock, sqlite_writer.encode(message))
            reply: tuple[str, Any] = await self._receive(sock)
        except (OSError, EOFError) as exc:
            code = await self._reap()
            detail = f"exit status {code}" if code is not None else str(exc)
            _log.error("sqlite_writer_died", path=str(self.path), detail=detail)
            raise StoreError(
                f"{self.path}: the SQLite writer process ended ({detail}); "
                "the outcome of the last write is unknown"
            ) from None
        return reply

    async def stop(self) -> None:
        """Close the connection and wait for the process to exit."""
        if self._socket is None:
            return
        try:
            await self.request(("close",))
        except StoreError:
            pass  # already gone; _reap has run
        else:
            await self._reap()

    @staticmethod
    async def _send(sock: socket.socket, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                sent = sock.send(view)
            except BlockingIOError:
                await anyio.wait_writable(sock)
                continue
            view = view[sent:]

    async def _receive(self, sock: socket.socket) -> Any:
        header = self._header
        await self._receive_into(sock, memoryview(header))
        (size,) = sqlite_writer.HEADER.unpack(header)
        body = bytearray(size)
        await self._receive_into(sock, memoryview(body))
        return pickle.loads(body)

    @staticmethod
    async def _receive_into(sock: socket.socket, view: memoryview) -> None:
        while view:
            try:
                received = sock.recv_into(view)
            except BlockingIOError:
                await anyio.wait_readable(sock)
                continue
            if received == 0:
                raise EOFError("the writer process closed its socket")
            view = view[received:]

    async def _reap(self) -> int | None:
        """Close our end and wait for the process; its exit status (None if killed
        here after not exiting in time)."""
        sock, process = self._socket, self._process
        self._socket = self._process = None
        if sock is not None:
            sock.close()
        if process is None:
            return None
        code: int | None = None
        with anyio.CancelScope(shield=True):
            with anyio.move_on_after(_EXIT_WAIT_S):
                code = await process.wait()
            if code is None:
                _log.warning("sqlite_writer_kill", path=str(self.path), pid=process.pid)
                process.kill()
                await process.wait()
        return code
