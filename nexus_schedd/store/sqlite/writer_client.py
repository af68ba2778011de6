"""The SQLite store's handle on its writer process (:mod:`.writer_process`); runs
in the daemon.

Starts the process, sends it requests over a Unix socket pair and waits for the
replies without blocking the event loop, and stops it. Requests may be sent
while earlier ones are still being handled: the writer answers them in order,
and whichever caller waits first reads the replies for everyone (no task of its
own). A writer process that dies fails every request in flight with a clear
error (whether those transactions committed is unknown, as after any crash) and
is started again for the next one.
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
from nexus_schedd.store.sqlite import writer_process
from nexus_schedd.store.sqlite.writer_process import (
    Close,
    Open,
    Reply,
    Request,
    Status,
    decode_reply,
    encode_request,
)

_log = structlog.get_logger("nexus_schedd.store.sqlite")

_SCRIPT = Path(writer_process.__file__)
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
        self._header = bytearray(writer_process.HEADER.size)
        # Not a bound on writes in flight (SQLiteStore owns that): request
        # numbers, to match replies, which come in the order sent, to requests.
        self._sent = 0
        """Requests sent so far (the next request's number)."""
        self._answered = 0
        """Requests answered or failed so far."""
        self._replies: dict[int, Reply | StoreError] = {}
        self._reading = False
        self._arrived = anyio.Event()
        self._sending = anyio.Lock()

    @property
    def pid(self) -> int | None:
        """The writer process's pid while it runs."""
        return None if self._process is None else self._process.pid

    async def start(self) -> None:
        """Start the process and open its connection (raises what opening raised)."""
        with anyio.CancelScope(shield=True):
            async with self._sending:
                await self._start()

    async def _start(self) -> None:
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
        number = await self._send_message(ours, Open(self.database, self.pragmas))
        reply = await self.reply(number)
        if reply.status is not Status.OK:
            await self._reap()
            if isinstance(reply.value, sqlite3.Error):
                raise reply.value
            raise StoreError(
                f"{self.path}: the SQLite writer cannot open the database: {reply.value}"
            )

    async def request(self, message: Request) -> Reply:
        """Send ``message`` and return the writer's reply (shielded throughout, as
        :meth:`send` and :meth:`reply` are: one cancel scope instead of two)."""
        with anyio.CancelScope(shield=True):
            number = await self._send_shielded(message)
            reply = await self._reply_shielded(number)
        return reply

    async def send(self, message: Request) -> int:
        """Send ``message`` (starting the writer if it is not running); its number,
        for :meth:`reply`. Shielded: a request half sent would garble the next."""
        with anyio.CancelScope(shield=True):
            number = await self._send_shielded(message)
        return number

    async def _send_shielded(self, message: Request) -> int:
        """:meth:`send`'s work; the caller holds the shield."""
        async with self._sending:
            if self._socket is None:
                await self._start()
            sock = self._socket
            assert sock is not None
            return await self._send_message(sock, message)

    async def _send_message(self, sock: socket.socket, message: Request) -> int:
        number = self._sent
        self._sent += 1
        try:
            await self._send(sock, encode_request(message))
        except OSError as exc:
            await self._lost(exc)
        return number

    async def reply(self, number: int) -> Reply:
        """The reply to request ``number``; raises StoreError if the writer died first.

        Shielded: a reply left unread would be taken as the answer to the next
        request."""
        with anyio.CancelScope(shield=True):
            reply = await self._reply_shielded(number)
        return reply

    async def _reply_shielded(self, number: int) -> Reply:
        """:meth:`reply`'s work; the caller holds the shield."""
        while number not in self._replies:
            if self._reading:
                arrived = self._arrived
                await arrived.wait()
                continue
            self._reading = True
            try:
                await self._read_one()
            finally:
                self._reading = False
                self._arrived.set()
                self._arrived = anyio.Event()
        reply = self._replies.pop(number)
        if isinstance(reply, StoreError):
            raise reply
        return reply

    async def _read_one(self) -> None:
        """Read the next reply into ``_replies`` (or fail every request in flight)."""
        sock = self._socket
        if sock is None:  # lost after these requests were sent (normally failed already)
            self._fail_in_flight(StoreError(f"{self.path}: the SQLite writer is not running"))
            return
        try:
            reply = decode_reply(await self._receive(sock))
        except (OSError, EOFError, anyio.ClosedResourceError) as exc:
            if self._socket is sock:  # not already handled by a sender
                await self._lost(exc)
            return
        self._replies[self._answered] = reply
        self._answered += 1

    async def _lost(self, exc: BaseException) -> None:
        """The writer is gone: every request in flight fails; the next one starts a
        new writer."""
        code = await self._reap()
        detail = f"exit status {code}" if code is not None else str(exc)
        _log.error("sqlite_writer_died", path=str(self.path), detail=detail)
        error = StoreError(
            f"{self.path}: the SQLite writer process ended ({detail}); "
            "the outcome of the last write is unknown"
        )
        self._fail_in_flight(error)

    def _fail_in_flight(self, error: StoreError) -> None:
        """Every request sent and not yet answered gets ``error`` as its reply."""
        for number in range(self._answered, self._sent):
            self._replies[number] = error
        self._answered = self._sent

    async def stop(self) -> None:
        """Close the connection and wait for the process to exit (after answering
        every request sent before)."""
        if self._socket is None:
            return
        try:
            await self.request(Close())
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
        (size,) = writer_process.HEADER.unpack(header)
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
            anyio.notify_closing(sock)  # wakes a reader waiting on it
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
