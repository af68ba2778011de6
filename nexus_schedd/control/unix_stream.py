"""Unix stream sockets for the control protocol, as anyio byte streams.

The client's connections and the server's accepted ones are :class:`UnixStream`
objects, not the streams of :func:`anyio.connect_unix` or anyio's Unix listener.
Those (anyio 4.14 to 4.16, asyncio backend) wait for a socket by registering a
future's ``set_result`` as the selector callback. When the waiting task is
cancelled in the same loop iteration as the socket turns readable (a watcher
stopped while an event arrives, a server stopping while a client connects),
the callback still runs on the cancelled future and raises ``InvalidStateError``
into the event loop's exception handler: an error in the daemon's log that
means nothing, and a failed test under anyio's pytest runner.

A :class:`UnixStream` waits with :func:`anyio.wait_readable` and
:func:`anyio.wait_writable`, which tolerate that race, and otherwise behaves as
anyio's own: each call is a checkpoint, a closed peer ends the stream with
:class:`anyio.EndOfStream`, a stream closed under a waiting task wakes it with
:class:`anyio.ClosedResourceError`, and a second task receiving (or sending)
at once gets :class:`anyio.BusyResourceError`.
"""

from __future__ import annotations

import os
import socket

import anyio
import anyio.abc
import anyio.lowlevel


class UnixStream(anyio.abc.SocketStream):
    """A connected ``AF_UNIX`` stream socket (owned: closed by :meth:`aclose`)."""

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        self._socket = sock
        self._closing = False

    @property
    def _raw_socket(self) -> socket.socket:
        return self._socket

    async def receive(self, max_bytes: int = 65536) -> bytes:
        await anyio.lowlevel.checkpoint()
        while True:
            self._check_open()
            try:
                data = self._socket.recv(max_bytes)
            except BlockingIOError:
                await anyio.wait_readable(self._socket)
            except OSError as exc:
                raise self._failed() from exc
            else:
                if not data:
                    raise anyio.EndOfStream
                return data

    async def send(self, item: bytes) -> None:
        await anyio.lowlevel.checkpoint()
        view = memoryview(item)
        while view:
            self._check_open()
            try:
                sent = self._socket.send(view)
            except BlockingIOError:
                await anyio.wait_writable(self._socket)
            except OSError as exc:
                raise self._failed() from exc
            else:
                view = view[sent:]

    def peer_closed(self) -> bool:
        """True when this stream is closed, an error is waiting, or the peer has
        closed its end and nothing is left to read (EOF is next); a peek that
        neither blocks nor consumes data. Data still waiting counts as open.

        For an idle connection about to be reused: one the peer closed meanwhile
        would fail the next call after sending it.
        """
        if self._closing:
            return True
        try:
            return self._socket.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
        except BlockingIOError:
            return False  # nothing to read: open and idle
        except OSError:
            return True

    async def send_eof(self) -> None:
        self._check_open()
        self._socket.shutdown(socket.SHUT_WR)

    async def aclose(self) -> None:
        if not self._closing:
            self._closing = True
            if self._socket.fileno() != -1:
                # Wakes a task waiting on this socket with ClosedResourceError.
                anyio.notify_closing(self._socket)
            self._socket.close()
        await anyio.lowlevel.checkpoint()

    def _check_open(self) -> None:
        if self._closing:
            raise anyio.ClosedResourceError

    def _failed(self) -> Exception:
        return anyio.ClosedResourceError() if self._closing else anyio.BrokenResourceError()


async def connect(path: str | os.PathLike[str]) -> UnixStream:
    """A stream connected to the Unix socket at ``path`` (OSError when refused)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        await anyio.lowlevel.checkpoint()
        while True:
            try:
                sock.connect(os.fspath(path))
            except BlockingIOError:
                # The listener's backlog is full: try again once it may have room.
                await anyio.wait_writable(sock)
            else:
                return UnixStream(sock)
    except BaseException:
        sock.close()
        raise


async def accept(listener: socket.socket) -> UnixStream:
    """The next connection on a listening Unix socket, which must be
    non-blocking. OSError (out of descriptors and the like) propagates."""
    await anyio.lowlevel.checkpoint()
    while True:
        try:
            connection, _ = listener.accept()
        except BlockingIOError:
            await anyio.wait_readable(listener)
        else:
            return UnixStream(connection)
